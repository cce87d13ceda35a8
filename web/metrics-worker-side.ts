/**
 * The worker side of the page's head table (metrics-worker.ts starts it): the page's own script
 * running as a Web Worker (flow-worker.ts `runFlowWorker` hands these requests here) computes the
 * head table of one range of layers (src/analysis/head-table-parts.ts) and posts each layer's rows
 * as soon as the layer is done, then 'done' (or the error's message).
 */
import type { HeadTableRow } from '../src/analysis/head-types.js';
import { type HeadTablePart, runHeadTablePart } from '../src/analysis/head-table-parts.js';

/**
 * A part without its layers' data ('head-table'), then each layer in a message of its own
 * ('head-table-layer', in layerIndex order: the page copies one layer per task); the part is
 * computed when the last layer is in.
 */
export type MetricsRequest = { kind: 'head-table'; part: HeadTablePart } | { kind: 'head-table-layer'; data: Float32Array };

export type MetricsReply = { type: 'layer'; rows: HeadTableRow[] } | { type: 'done' } | { type: 'error'; message: string };

export function isMetricsRequest(data: unknown): data is MetricsRequest {
  const kind = typeof data === 'object' && data !== null ? (data as { kind?: unknown }).kind : undefined;
  return kind === 'head-table' || kind === 'head-table-layer';
}

/** The part whose layers are arriving. */
let pending: HeadTablePart | null = null;

/** Takes a request; when a part's last layer is in, computes it, replying per layer through `post`. */
export function runMetricsRequest(req: MetricsRequest, post: (m: MetricsReply, transfer?: Transferable[]) => void): void {
  if (req.kind === 'head-table') {
    pending = { ...req.part, layers: [] };
    if (req.part.layerIndex.length > 0) return;
  } else if (pending) pending.layers.push(req.data);
  const part = pending;
  if (!part || part.layers.length < part.layerIndex.length) return;
  pending = null;
  try {
    runHeadTablePart(part, (rows) => post({ type: 'layer', rows }));
    post({ type: 'done' });
  } catch (err) {
    post({ type: 'error', message: (err as Error).message });
  }
}
