/**
 * Attention flow off the page's thread. The page's own bundled script (the standalone page's one
 * inline <script>, read once at start-up through document.currentScript) is started again as a
 * Web Worker from a blob: URL (`attnscope serve`'s page: from its script URL, /app.js); the entry
 * point (web/main.ts, web/app/main.ts) sees no `document` there and calls `runFlowWorker`, which
 * computes the exact max-flows of src/analysis/flow.ts for one token and reports progress as it
 * goes. Cancelling terminates the worker. The standalone page's Content-Security-Policy allows
 * exactly this (`worker-src blob:`, src/views/html/standalone.ts); the served page's
 * `script-src 'self'` covers /app.js as a worker.
 */
import { attentionFlowOfMatrices, checkFlowSize } from '../src/analysis/flow.js';
import { type LongRequest, isLongRequest, onLongRequest } from './long-worker-side.js';
import { type MetricsRequest, isMetricsRequest, runMetricsRequest } from './metrics-worker-side.js';
import { type CompareRequest, isCompareRequest, runCompareRequest } from './compare-worker-side.js';
import { type ClustersRequest, isClustersRequest, runClustersRequest } from './clusters-worker-side.js';

/**
 * The largest graph the page computes, (layers + 1) × tokens: 13 × 256, bert-base-sized at 256
 * tokens (about 10–20 s of one core there; BENCHMARKS.md). Above it the page says so and shows
 * rollout only.
 */
export const PAGE_FLOW_MAX_NODES = 13 * 256;

export interface FlowRequest {
  matrices: Float32Array[];
  n: number;
  token: number;
}

export type FlowReply =
  | { type: 'progress'; done: number; total: number }
  | { type: 'done'; values: Float32Array }
  | { type: 'error'; message: string };

interface WorkerScope {
  onmessage: ((e: MessageEvent<FlowRequest | MetricsRequest | LongRequest | CompareRequest | ClustersRequest>) => void) | null;
  postMessage(message: FlowReply, transfer?: Transferable[]): void;
}

/**
 * The worker side: one request, progress messages (at most one per percent), then the row or an
 * error. The same worker script also takes the head table's requests (metrics-worker.ts).
 */
export function runFlowWorker(): void {
  const scope = globalThis as unknown as WorkerScope;
  scope.onmessage = (e) => {
    if (isMetricsRequest(e.data)) {
      runMetricsRequest(e.data, (m, transfer) => scope.postMessage(m as unknown as FlowReply, transfer));
      return;
    }
    if (isLongRequest(e.data)) {
      onLongRequest(e.data, (m, transfer) => scope.postMessage(m as unknown as FlowReply, transfer));
      return;
    }
    // The compare panel's ranking (web/app/compare-panel.ts).
    if (isCompareRequest(e.data)) {
      runCompareRequest(e.data, (m) => scope.postMessage(m as unknown as FlowReply));
      return;
    }
    // The head clusters view's clustering (web/clusters-worker.ts).
    if (isClustersRequest(e.data)) {
      runClustersRequest(e.data, (m) => scope.postMessage(m as unknown as FlowReply));
      return;
    }
    const { matrices, n, token } = e.data;
    try {
      let last = -1;
      const f = attentionFlowOfMatrices(matrices, n, {
        targets: [token],
        maxNodes: PAGE_FLOW_MAX_NODES,
        onProgress: (done, total) => {
          const pct = Math.floor((100 * done) / total);
          if (pct !== last) {
            last = pct;
            scope.postMessage({ type: 'progress', done, total });
          }
        },
      });
      const values = f.values[0]!.slice(token * n, (token + 1) * n);
      scope.postMessage({ type: 'done', values }, [values.buffer]);
    } catch (err) {
      scope.postMessage({ type: 'error', message: (err as Error).message });
    }
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

export interface FlowJob {
  /** Resolves with the row (input values), or null when cancelled. */
  result: Promise<Float32Array | null>;
  cancel(): void;
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

/** Starts attention flow for one token in a Worker built from the page's own script. */
export function startFlowJob(req: FlowRequest, onProgress: (done: number, total: number) => void): FlowJob {
  const { worker, finish } = startPageWorker('attention flow');
  let settle: (v: Float32Array | null) => void = () => undefined;
  let fail: (e: Error) => void = () => undefined;
  const result = new Promise<Float32Array | null>((resolve, reject) => {
    settle = resolve;
    fail = reject;
  });
  worker.onmessage = (e: MessageEvent<FlowReply>) => {
    const m = e.data;
    if (m.type === 'progress') onProgress(m.done, m.total);
    else if (m.type === 'done') {
      finish();
      settle(m.values);
    } else {
      finish();
      fail(new Error(m.message));
    }
  };
  worker.onerror = (e) => {
    e.preventDefault();
    finish();
    fail(new Error(`attention flow worker failed: ${e.message || 'unknown error'}`));
  };
  worker.postMessage(req, req.matrices.map((m) => m.buffer));
  return {
    result,
    cancel() {
      finish();
      settle(null);
    },
  };
}
