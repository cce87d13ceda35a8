/**
 * The head table of a long trace off the page's thread: the layers are cut into ranges of nearly
 * equal cost (src/analysis/head-table-parts.ts), each range goes to a Web Worker running the page's
 * own script (flow-worker.ts startPageWorker; metrics-worker-side.ts computes it there), and every
 * layer's rows come back as soon as that layer is done, so a view fills in while the rest is
 * computed. The table is the one `headTable` gives on the page's thread (the same code, value for
 * value). Only the copies of the layers a worker reads are made on the page's thread (then
 * transferred); cancelling terminates the workers.
 */
import type { StackName, Trace } from '../src/core/trace.js';
import type { HeadTableOptions, HeadTableRow } from '../src/analysis/head-types.js';
import { headTableParts } from '../src/analysis/head-table-parts.js';
import { pageWorkersAvailable, startPageWorker } from './flow-worker.js';
import type { MetricsReply, MetricsRequest } from './metrics-worker-side.js';

/** From this many attention weights in a stack (layers × heads × queries × keys) the page computes its head table in workers: bert-base at ≈ 170 tokens. */
export const PAGE_TABLE_WORKER_FROM = 4_000_000;

export interface HeadTableJob {
  /** The whole table in headTable's order, or null when cancelled. */
  result: Promise<HeadTableRow[] | null>;
  cancel(): void;
}

/** Whether a stack is large enough that the page computes its table in workers (and can). */
export function tableInWorkers(trace: Trace, stack: StackName): boolean {
  const s = trace.attention[stack];
  if (!s || !pageWorkersAvailable()) return false;
  const [heads, nq, nk] = s.dims;
  return s.layers.length * heads * nq * nk >= PAGE_TABLE_WORKER_FROM;
}

/** How many workers: the machine's cores (at most 4), at least 2 (one per core on a 2-core machine). */
function workerCount(): number {
  const cores = typeof navigator !== 'undefined' && navigator.hardwareConcurrency ? navigator.hardwareConcurrency : 2;
  return Math.max(2, Math.min(4, cores));
}

/**
 * Starts the head table of a stack in workers; `onRows` gets each layer's rows as they arrive (in
 * any order across ranges), the result the whole table in order.
 */
export function startHeadTableJob(trace: Trace, stack: StackName, options: Omit<HeadTableOptions, 'onLayer' | 'layers'>, onRows: (rows: HeadTableRow[]) => void): HeadTableJob {
  // The trace's own arrays: each layer is copied in a task of its own just before it is sent.
  const parts = headTableParts(trace, stack, options, workerCount(), false);
  const finishes: (() => void)[] = [];
  let settled = false;
  let settle: (v: HeadTableRow[] | null) => void = () => undefined;
  let fail: (e: Error) => void = () => undefined;
  const result = new Promise<HeadTableRow[] | null>((resolve, reject) => {
    settle = resolve;
    fail = reject;
  });
  const stopAll = () => {
    for (const f of finishes) f();
  };
  const byPart: HeadTableRow[][] = parts.map(() => []);
  let left = parts.length;
  parts.forEach((part, i) => {
    let w: ReturnType<typeof startPageWorker>;
    try {
      w = startPageWorker('head table');
    } catch (e) {
      settled = true;
      stopAll();
      fail(e as Error);
      return;
    }
    finishes.push(w.finish);
    w.worker.onmessage = (e: MessageEvent<MetricsReply>) => {
      if (settled) return;
      const m = e.data;
      if (m.type === 'layer') {
        byPart[i]!.push(...m.rows);
        onRows(m.rows);
      } else if (m.type === 'done') {
        w.finish();
        if (--left === 0) {
          settled = true;
          settle(byPart.flat());
        }
      } else {
        settled = true;
        stopAll();
        fail(new Error(m.message));
      }
    };
    w.worker.onerror = (e) => {
      e.preventDefault();
      if (settled) return;
      settled = true;
      stopAll();
      fail(new Error(`head table worker failed: ${e.message || 'unknown error'}`));
    };
    const head: MetricsRequest = { kind: 'head-table', part: { ...part, layers: [] } };
    w.worker.postMessage(head);
    // One layer per task (a copy, transferred): no long task on the page's thread.
    let j = 0;
    const next = () => {
      if (settled || j >= part.layers.length) return;
      const data = part.layers[j++]!.slice();
      const req: MetricsRequest = { kind: 'head-table-layer', data };
      w.worker.postMessage(req, [data.buffer]);
      setTimeout(next, 0);
    };
    next();
  });
  return {
    result,
    cancel() {
      if (settled) return;
      settled = true;
      stopAll();
      settle(null);
    },
  };
}

