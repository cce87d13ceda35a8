/**
 * The one message type and handler of the page's worker jobs (attention flow, web/flow-worker.ts;
 * the compare panel's ranking, web/compare-worker-side.ts; the head clusters,
 * web/clusters-worker-side.ts; the flow views' drawing, web/flow-layout-worker-side.ts): the
 * worker side posts progress, then the result or the error's message, through `runJob`; the page
 * side (flow-worker.ts `startWorkerJob`, flow-layout-worker.ts) reads the same `JobReply`. Imports
 * nothing, so both sides can share it without a cycle.
 */

/**
 * One message type for every job a page worker runs (attention flow, the compare panel's ranking,
 * the head clusters, the flow views' drawing): progress, the result, or the error's message. `id`
 * ties a reply to its request on a worker that takes several (flow-layout-worker.ts).
 */
export type JobReply<P, R> =
  | { type: 'progress'; id?: number; progress: P }
  | { type: 'done'; id?: number; result: R }
  | { type: 'error'; id?: number; message: string };

/** How the worker side posts a job's replies. */
export type JobPost<P, R> = (m: JobReply<P, R>, transfer?: Transferable[]) => void;

/** Progress of `total` steps. */
export interface Steps {
  done: number;
  total: number;
}

/**
 * The worker side of every job: runs `work`, posting its progress, then its result (transferring
 * the buffers it names) or the error's message. One handler for every job's replies.
 */
export function runJob<P, R>(post: JobPost<P, R>, work: (progress: (p: P) => void) => { result: R; transfer?: Transferable[] }, id?: number): void {
  const tag = id === undefined ? {} : { id };
  try {
    const { result, transfer } = work((progress) => post({ type: 'progress', ...tag, progress }));
    post({ type: 'done', ...tag, result }, transfer);
  } catch (err) {
    post({ type: 'error', ...tag, message: (err as Error).message });
  }
}

/** An onProgress(done, total) that passes on at most one report per percent. */
export function perPercent(report: (p: Steps) => void): (done: number, total: number) => void {
  let last = -1;
  return (done, total) => {
    const pct = Math.floor((100 * done) / total);
    if (pct === last) return;
    last = pct;
    report({ done, total });
  };
}

