/**
 * Assembling per-step outputs of incremental decoding into whole-sequence layer stacks: each
 * step produced rows for positions start … start+n−1 of every layer.
 */
import type { LayerStack } from '../core/trace.js';

export interface StepRows {
  /** Position of the step's first row. */
  start: number;
  /** Rows of this step. */
  rows: number;
  /** Per layer, [d0, rows, width] with width ≤ the stack's columns (attention: keys seen so far). */
  layers: Float32Array[];
  width: number;
}

/**
 * One [d0, total, cols] array per layer from the steps' rows; attention rows shorter than `cols`
 * (the keys a position could not see yet) are zero-padded on the right.
 */
export function assembleRows(steps: readonly StepRows[], d0: number, total: number, cols: number): LayerStack {
  const numLayers = steps[0]?.layers.length ?? 0;
  const layers: Float32Array[] = [];
  for (let l = 0; l < numLayers; l++) {
    const out = new Float32Array(d0 * total * cols);
    for (const step of steps) {
      const src = step.layers[l]!;
      for (let h = 0; h < d0; h++) {
        for (let r = 0; r < step.rows; r++) {
          const from = (h * step.rows + r) * step.width;
          out.set(src.subarray(from, from + step.width), (h * total + step.start + r) * cols);
        }
      }
    }
    layers.push(out);
  }
  return { dims: [d0, total, cols], layers };
}
