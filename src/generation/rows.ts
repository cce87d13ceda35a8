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

/**
 * Rows of one tap kind (e.g. queries, [d0, rows, width] per layer and step) written straight into
 * per-layer arrays allocated once for `capacity` positions, so decoding holds them and nothing per
 * step. `stack(total)` gives [d0, total, width] per layer (copied only when fewer than `capacity`
 * positions were decoded, e.g. stopped at an end-of-sequence token).
 */
export class GrowingRows {
  private layers: Float32Array[] | null = null;
  private d0 = 0;
  private width = 0;

  constructor(
    /** Positions the arrays hold. */
    readonly capacity: number,
  ) {}

  /** Writes one step's rows (positions start … start + rows − 1) of every layer. */
  add(layers: readonly Float32Array[], d0: number, rows: number, width: number, start: number): void {
    if (!this.layers) {
      this.d0 = d0;
      this.width = width;
      this.layers = layers.map(() => new Float32Array(d0 * this.capacity * width));
    }
    if (d0 !== this.d0 || width !== this.width || layers.length !== this.layers.length) {
      throw new Error(`decoding step rows [${layers.length} × ${d0}, ${rows}, ${width}] differ from the first step's [${this.layers.length} × ${this.d0}, ·, ${this.width}]`);
    }
    if (start + rows > this.capacity) throw new Error(`decoding step rows ${start}…${start + rows - 1} exceed the ${this.capacity} positions allocated`);
    layers.forEach((src, l) => {
      const out = this.layers![l]!;
      for (let h = 0; h < d0; h++) out.set(src.subarray(h * rows * width, (h + 1) * rows * width), (h * this.capacity + start) * width);
    });
  }

  /** Positions 0 … total − 1 as a layer stack. */
  stack(total: number): LayerStack {
    const layers = this.layers ?? [];
    if (total === this.capacity) return { dims: [this.d0, total, this.width], layers };
    const w = this.width;
    const cut = layers.map((src) => {
      const out = new Float32Array(this.d0 * total * w);
      for (let h = 0; h < this.d0; h++) out.set(src.subarray(h * this.capacity * w, (h * this.capacity + total) * w), h * total * w);
      return out;
    });
    return { dims: [this.d0, total, w], layers: cut };
  }
}
