/**
 * Attention flow off the page's thread. The page's own bundled script (the standalone page's one
 * inline <script>, read once at start-up through document.currentScript) is started again as a
 * Web Worker from a blob: URL (`attnscope serve`'s page: from its script URL, /app.js); the entry
 * point (web/main.ts, web/app/main.ts) sees no `document` there and calls `runFlowWorker`, which
 * routes each request to its handler: here, the exact max-flows of src/analysis/flow.ts for one
 * token, reporting progress as it goes. One-shot jobs (attention flow, the compare panel's ranking,
 * the head clusters) start through `startWorkerJob` and reply with web/job-worker.ts's one message
 * type. Cancelling terminates the worker. The standalone page's Content-Security-Policy allows
 * exactly this (`worker-src blob:`, src/views/html/standalone.ts); the served page's
 * `script-src 'self'` covers /app.js as a worker.
 */
import { attentionFlowOfMatrices, checkFlowSize } from '../src/analysis/flow.js';
import { type JobPost, type JobReply, type Steps, perPercent, runJob } from './job-worker.js';
import { type LongRequest, isLongRequest, onLongRequest } from './long-worker-side.js';
import { type MetricsRequest, isMetricsRequest, runMetricsRequest } from './metrics-worker-side.js';
import { type CompareRequest, isCompareRequest, runCompareRequest } from './compare-worker-side.js';
import { type ClustersRequest, isClustersRequest, runClustersRequest } from './clusters-worker-side.js';
import { type FlowLayoutRequest, isFlowLayoutRequest, onFlowLayoutRequest } from './flow-layout-worker-side.js';

/**
 * The largest graph the page computes, (layers + 1) × tokens: 13 × 256, bert-base-sized at 256
 * tokens (about 10–20 s of one core there; BENCHMARKS.md). Above it the page says so and shows
 * rollout only.
 */
export const PAGE_FLOW_MAX_NODES = 13 * 256;

export interface FlowRequest {
  kind: 'flow';
  matrices: Float32Array[];
  n: number;
  token: number;
}

export function isFlowRequest(data: unknown): data is FlowRequest {
  return typeof data === 'object' && data !== null && (data as { kind?: unknown }).kind === 'flow';
}

/** Attention flow of one token (its row of input values), posting progress at most once a percent. */
export function runFlowRequest(req: FlowRequest, post: JobPost<Steps, Float32Array>): void {
  const { matrices, n, token } = req;
  runJob(post, (progress) => {
    const f = attentionFlowOfMatrices(matrices, n, { targets: [token], maxNodes: PAGE_FLOW_MAX_NODES, onProgress: perPercent(progress) });
    const values = f.values[0]!.slice(token * n, (token + 1) * n);
    return { result: values, transfer: [values.buffer] };
  });
}

export type WorkerRequest = FlowRequest | FlowLayoutRequest | MetricsRequest | LongRequest | CompareRequest | ClustersRequest;

interface WorkerScope {
  onmessage: ((e: MessageEvent<WorkerRequest>) => void) | null;
  postMessage(message: unknown, transfer?: Transferable[]): void;
}

/**
 * The worker side: the page's script started as a worker routes each request to its handler —
 * attention flow (below), the flow views' drawing (flow-layout-worker-side.ts), the head table
 * (metrics-worker-side.ts), long traces' blocks (long-worker-side.ts), the compare panel's ranking
 * (compare-worker-side.ts), the head clusters (clusters-worker-side.ts).
 */
export function runFlowWorker(): void {
  const scope = globalThis as unknown as WorkerScope;
  const post = (m: unknown, transfer?: Transferable[]) => scope.postMessage(m, transfer);
  scope.onmessage = (e) => {
    const req = e.data;
    if (isFlowRequest(req)) runFlowRequest(req, post);
    else if (isFlowLayoutRequest(req)) onFlowLayoutRequest(req, post);
    else if (isMetricsRequest(req)) runMetricsRequest(req, post);
    else if (isLongRequest(req)) onLongRequest(req, post);
    else if (isCompareRequest(req)) runCompareRequest(req, post);
    else if (isClustersRequest(req)) runClustersRequest(req, post);
    else post({ type: 'error', message: 'unknown worker request' } satisfies JobReply<never, never>);
  };
}

/** The page's script: its text (the standalone page's inline script) or its URL (`attnscope serve`'s /app.js). */
let source: { text: string } | { url: string } | null = null;

/** Keeps the page's script (called by the entry point while its script runs: currentScript is set only then). */
export function rememberScript(): void {
  const el = document.currentScript as HTMLScriptElement | null;
  if (!el) return;
  source = el.src ? { url: el.src } : { text: el.textContent ?? '' };
}

/** Why the page computes no attention flow for (layers + 1) × n nodes, or null when it does. */
export function pageFlowLimit(layers: number, n: number): string | null {
  try {
    checkFlowSize(layers, n, PAGE_FLOW_MAX_NODES);
    return null;
  } catch {
    return `attention flow is computed in the page up to ${PAGE_FLOW_MAX_NODES} graph nodes ((layers + 1) × tokens); this one has ${(layers + 1) * n} (${layers + 1} × ${n}): the input column shows rollout. 'attnscope flow --method flow --max-nodes' computes it outside the page`;
  }
}

/** Whether the page can start workers from its own script (rememberScript ran). */
export function pageWorkersAvailable(): boolean {
  return source !== null && typeof Worker === 'function';
}

/**
 * A Worker running the page's own script (the entry point sees no document there and calls
 * runFlowWorker): the standalone page's from a blob: URL of its inline script (CSP worker-src
 * blob:), the served app's from its script URL ('self'). `finish` terminates it.
 */
export function startPageWorker(what: string): { worker: Worker; finish: () => void } {
  if (source === null) throw new Error(`${what}: the page script is not available to start a worker`);
  const blob = 'text' in source ? URL.createObjectURL(new Blob([source.text], { type: 'text/javascript' })) : null;
  const worker = new Worker(blob ?? (source as { url: string }).url);
  return {
    worker,
    finish: () => {
      worker.terminate();
      if (blob) URL.revokeObjectURL(blob);
    },
  };
}

/** A job in a worker of its own: its result (null when cancelled), and cancel (terminates the worker). */
export interface WorkerJob<R> {
  result: Promise<R | null>;
  cancel(): void;
}

/**
 * The page side of every one-shot job (attention flow, the compare panel's ranking, the head
 * clusters: clusters-worker.ts): a worker
 * running the page's script gets `request` (transferring `transfer`), progress goes to
 * `onProgress`, the result or the error settles `result`, and the worker ends with the job.
 */
export function startWorkerJob<P, R>(what: string, request: WorkerRequest, transfer: Transferable[], onProgress: (p: P) => void): WorkerJob<R> {
  const { worker, finish } = startPageWorker(what);
  let settled = false;
  let settle: (v: R | null) => void = () => undefined;
  let fail: (e: Error) => void = () => undefined;
  const result = new Promise<R | null>((resolve, reject) => {
    settle = resolve;
    fail = reject;
  });
  const end = () => {
    settled = true;
    finish();
  };
  worker.onmessage = (e: MessageEvent<JobReply<P, R>>) => {
    if (settled) return;
    const m = e.data;
    if (m.type === 'progress') onProgress(m.progress);
    else if (m.type === 'done') {
      end();
      settle(m.result);
    } else {
      end();
      fail(new Error(m.message));
    }
  };
  worker.onerror = (e) => {
    e.preventDefault();
    if (settled) return;
    end();
    fail(new Error(`${what} worker failed: ${e.message || 'unknown error'}`));
  };
  worker.postMessage(request, transfer);
  return {
    result,
    cancel() {
      if (settled) return;
      end();
      settle(null);
    },
  };
}

export type FlowJob = WorkerJob<Float32Array>;

/** Starts attention flow for one token in a Worker built from the page's own script. */
export function startFlowJob(req: Omit<FlowRequest, 'kind'>, onProgress: (done: number, total: number) => void): FlowJob {
  return startWorkerJob<Steps, Float32Array>('attention flow', { kind: 'flow', ...req }, req.matrices.map((m) => m.buffer), (p) => onProgress(p.done, p.total));
}
