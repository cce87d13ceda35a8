/**
 * Building blocks for `ArchitectureInfo.scoring`: how a stack turns q·k into the scores its
 * softmax reads (see ScoreTerms in core/trace.ts). Each architecture states its own values here,
 * computed from the same expressions its graph uses.
 */
import type { StackScoring } from './architecture.js';

export interface ScoringOptions {
  /** Multiplier of q·k per layer: one number for every layer, or a function of the layer. */
  scale: number | ((layer: number) => number);
  causal: boolean;
  /** Sliding window per layer (null: none); omitted: no window anywhere. */
  windows?: readonly (number | null)[];
  bias?: StackScoring['bias'];
  biasKind?: string;
}

/** The scoring of a stack of `layers` layers. */
export function stackScoring(layers: number, o: ScoringOptions): StackScoring {
  const scale = Array.from({ length: layers }, (_, l) => (typeof o.scale === 'number' ? o.scale : o.scale(l)));
  const window = o.windows ? [...o.windows] : new Array<number | null>(layers).fill(null);
  const scoring: StackScoring = { scale, causal: o.causal, window, bias: o.bias ?? 'none' };
  if (o.biasKind !== undefined) scoring.biasKind = o.biasKind;
  return scoring;
}
