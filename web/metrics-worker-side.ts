/**
 * The worker side of the page's head table (metrics-worker.ts starts it): the page's own script
 * running as a Web Worker (flow-worker.ts `runFlowWorker` hands these requests here) computes the
 * head table of one range of layers (src/analysis/head-table-parts.ts) and posts each layer's rows
 * as soon as the layer is done, then 'done' (or the error's message).
 */
import type { HeadTableRow } from '../src/analysis/head-types.js';
import { type HeadTablePart, runHeadTablePart } from '../src/analysis/head-table-parts.js';

export interface MetricsRequest {
  kind: 'head-table';
  part: HeadTablePart;
}

export type MetricsReply = { type: 'layer'; rows: HeadTableRow[] } | { type: 'done' } | { type: 'error'; message: string };

export function isMetricsRequest(data: unknown): data is MetricsRequest {
  return typeof data === 'object' && data !== null && (data as { kind?: unknown }).kind === 'head-table';
}

/** Computes the request's part, replying per layer through `post`. */
export function runMetricsRequest(req: MetricsRequest, post: (m: MetricsReply, transfer?: Transferable[]) => void): void {
  try {
    runHeadTablePart(req.part, (rows) => post({ type: 'layer', rows }));
    post({ type: 'done' });
  } catch (err) {
    post({ type: 'error', message: (err as Error).message });
  }
}
