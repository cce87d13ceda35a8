/**
 * Attention read a head, a block of rows or a single cell at a time.
 *
 * A short trace holds every probability (`Trace.attention`, dense [heads, queries, keys] per
 * layer). A long one cannot: all heads of a 1B model at 8,192 tokens are 137 GB of float32, while
 * the queries and keys that produce them are about 1 GB. Views and analyses that must work at
 * any length read attention through an AttentionSource and never assume the whole stack is in
 * memory. `denseAttentionSource` wraps a dense stack; sources computed on demand from queries,
 * keys and the recorded score terms implement the same interface.
 */
import { AttnscopeError } from './errors.js';
import type { LayerStack, StackName } from './trace.js';

export interface AttentionSource {
  readonly stack: StackName;
  readonly numLayers: number;
  readonly numHeads: number;
  /** Query positions (rows) and key positions (columns). */
  readonly numQueries: number;
  readonly numKeys: number;
  /** True when the probabilities are computed on request (nothing dense is held). */
  readonly onDemand: boolean;
  /**
   * Rows [r0, r1) × columns [c0, c1) of one head, row-major, (r1 − r0) · (c1 − c0) values.
   * Masked entries are exactly 0. The result is a new array the caller may keep or modify.
   */
  block(layer: number, head: number, r0: number, r1: number, c0: number, c1: number): Float32Array;
}

/** Rows [r0, r1) of one head (every key). */
export function attentionRows(source: AttentionSource, layer: number, head: number, r0: number, r1: number): Float32Array {
  return source.block(layer, head, r0, r1, 0, source.numKeys);
}

/** One head's whole [queries, keys] matrix. */
export function attentionHead(source: AttentionSource, layer: number, head: number): Float32Array {
  return source.block(layer, head, 0, source.numQueries, 0, source.numKeys);
}

/** Throws one clear line when (layer, head, rows, columns) is outside the source. */
export function checkBlock(source: AttentionSource, layer: number, head: number, r0: number, r1: number, c0: number, c1: number): void {
  const range = (name: string, value: number, lo: number, hi: number): void => {
    if (!Number.isInteger(value) || value < lo || value > hi) {
      throw new AttnscopeError(`${source.stack} attention: ${name} ${value} is out of range (${lo}–${hi})`);
    }
  };
  range('layer', layer, 0, source.numLayers - 1);
  range('head', head, 0, source.numHeads - 1);
  range('first row', r0, 0, source.numQueries);
  range('end row', r1, r0, source.numQueries);
  range('first column', c0, 0, source.numKeys);
  range('end column', c1, c0, source.numKeys);
}

/** An AttentionSource of this shape whose block checks its arguments (checkBlock) before `read` reads them. */
export function checkedAttentionSource(shape: Omit<AttentionSource, 'block'>, read: AttentionSource['block']): AttentionSource {
  const source: AttentionSource = {
    ...shape,
    block(layer, head, r0, r1, c0, c1) {
      checkBlock(source, layer, head, r0, r1, c0, c1);
      return read(layer, head, r0, r1, c0, c1);
    },
  };
  return source;
}

/** An AttentionSource over a dense stack (every probability in memory). */
export function denseAttentionSource(stack: StackName, attention: LayerStack): AttentionSource {
  const [numHeads, numQueries, numKeys] = attention.dims;
  const shape = { stack, numLayers: attention.layers.length, numHeads, numQueries, numKeys, onDemand: false };
  return checkedAttentionSource(shape, (layer, head, r0, r1, c0, c1) => {
    const data = attention.layers[layer]!;
    const width = c1 - c0;
    const out = new Float32Array((r1 - r0) * width);
    for (let r = r0; r < r1; r++) {
      const from = (head * numQueries + r) * numKeys + c0;
      out.set(data.subarray(from, from + width), (r - r0) * width);
    }
    return out;
  });
}
