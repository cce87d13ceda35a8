/**
 * Work a view computes ahead while the page is idle (web/views/head-types.ts: the head tables;
 * web/views/flow.ts: the flow diagram), so that opening its tab only draws. One rule for both: only
 * a stack whose probabilities are all in (not a trace still streaming in with fewer layers than the
 * model, not one on demand), of at most AHEAD_WEIGHTS_MAX weights.
 */
import type { StackName, Trace } from '../src/core/trace.js';

/** At most this many attention weights are worked on ahead (≈ 0.7 s of CPU for the head tables; BERT-base at 512 tokens is 37.7 M). */
export const AHEAD_WEIGHTS_MAX = 50_000_000;

/** The weights (layers × heads × queries × keys) of a stack a view may work on ahead, or 0 where it may not. */
export function aheadWeights(trace: Trace, stack: StackName): number {
  const s = trace.attention[stack];
  if (!s || s.layers.length < trace.model.numLayers) return 0;
  const weights = s.layers.length * s.dims[0] * s.dims[1] * s.dims[2];
  return weights <= AHEAD_WEIGHTS_MAX ? weights : 0;
}

/** Runs `run` when the page's thread is next idle (at most `ms` from now). */
export function whenIdle(run: () => void, ms: number): void {
  const w = window as Window & { requestIdleCallback?: (cb: () => void, o: { timeout: number }) => number };
  if (w.requestIdleCallback) w.requestIdleCallback(run, { timeout: ms });
  else setTimeout(run, ms);
}
