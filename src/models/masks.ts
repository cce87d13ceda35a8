/**
 * Additive attention masks fed to the graph: 0 where a query may attend, the most negative
 * float32 where it may not (what transformers adds to the scores).
 */
import type { RuntimeTensor } from '../runtime/runtime.js';

const MASKED = -3.4028234663852886e38;

export interface CausalMaskOptions {
  /** Keys already in the cache before the first query (incremental decoding). */
  pastLength?: number;
  /** Sliding window: query i sees keys j with i − window < j ≤ i (Mistral's sliding_window). */
  window?: number;
}

/**
 * A causal mask [1, 1, queries, pastLength + queries] as a float32 feed. Its values are made when
 * first read: graphs whose attention builds the mask band by band (models/attention.ts
 * causalMaskInput) have no such input, so the feed is dropped unread and its queries × keys floats
 * (4.3 GB at 32,768 tokens) are never allocated.
 */
export function causalMask(queries: number, options: CausalMaskOptions = {}): RuntimeTensor {
  const past = options.pastLength ?? 0;
  const keys = past + queries;
  const window = options.window ?? Number.POSITIVE_INFINITY;
  let data: Float32Array | undefined;
  const make = (): Float32Array => {
    const d = new Float32Array(queries * keys);
    for (let i = 0; i < queries; i++) {
      const qPos = past + i;
      for (let j = 0; j < keys; j++) {
        if (j > qPos || qPos - j >= window) d[i * keys + j] = MASKED;
      }
    }
    return d;
  };
  return {
    type: 'float32',
    dims: [1, 1, queries, keys],
    get data(): Float32Array {
      return (data ??= make());
    },
  };
}
