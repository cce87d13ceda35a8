/** Top-k predictions from a prediction head's logits. */
import type { Prediction } from '../core/trace.js';

/** Logits over the vocabulary, row-major [rows, vocab]. */
export interface VocabLogits {
  rows: number;
  vocab: number;
  data: Float32Array;
}

/** Softmax of each requested row, and its k most probable tokens (ties: lower id first, as torch.topk). */
export function topKPredictions(
  logits: VocabLogits,
  positions: readonly number[],
  k: number,
  kind: Prediction['kind'],
  tokenText: (id: number) => string,
): Prediction[] {
  const { vocab, data } = logits;
  return positions.map((position) => {
    const row = data.subarray(position * vocab, (position + 1) * vocab);
    let max = Number.NEGATIVE_INFINITY;
    for (const v of row) if (v > max) max = v;
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    // The k best ids so far, best first; a strictly greater value is needed to pass an equal one.
    const order: number[] = [];
    const keep = Math.min(k, vocab);
    for (let id = 0; id < vocab; id++) {
      const v = row[id]!;
      if (order.length === keep && v <= row[order[keep - 1]!]!) continue;
      let at = order.length;
      while (at > 0 && row[order[at - 1]!]! < v) at--;
      order.splice(at, 0, id);
      if (order.length > keep) order.pop();
    }
    return {
      position,
      kind,
      candidates: order.map((id) => ({ id, token: tokenText(id), probability: Math.exp(row[id]! - max) / sum })),
    };
  });
}
