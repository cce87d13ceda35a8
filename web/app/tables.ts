/** The app's tables as flat rows (CSV / JSON downloads). */
import type { Trace } from '../../src/core/trace.js';

export interface PredictionRow {
  /** Position of the token the prediction is made at. */
  position: number;
  token: string;
  /** 1 = the most probable candidate. */
  rank: number;
  candidate: string;
  probability: number;
}

/** Every candidate of every prediction, in position then rank order. */
export function predictionRows(trace: Trace): PredictionRow[] {
  const tokens = trace.decoderTokens ?? trace.tokens;
  return (trace.predictions ?? []).flatMap((p) =>
    p.candidates.map((c, i) => ({ position: p.position, token: tokens[p.position]?.text ?? '', rank: i + 1, candidate: c.token, probability: c.probability })),
  );
}
