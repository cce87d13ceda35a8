/**
 * Prediction heads on top of the final hidden states: masked-LM heads (a dense transform,
 * activation and LayerNorm, then a decoder usually tied to the input embeddings) and plain
 * language-model heads. Each returns logits [1, positions, vocab].
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { activation } from './activations.js';
import type { BuildContext } from './architecture.js';

export interface MaskedLmHeadSpec {
  /** Linear transform before the activation (e.g. `cls.predictions.transform.dense`). */
  dense: string;
  /** Activation name (hidden_act, or the head's own fixed one). */
  act: string;
  /** LayerNorm after the activation (e.g. `cls.predictions.transform.LayerNorm`). */
  norm: string;
  eps: number;
  /** Decoder weight names to try in order: its own, then the tied input embeddings. */
  decoder: readonly string[];
  /** Output bias names to try in order (none found → no bias). */
  bias: readonly string[];
  /** Name of the head for error messages (e.g. 'masked-LM'). */
  what?: string;
}

async function firstWeight(ctx: BuildContext, names: readonly string[]): Promise<Value | null> {
  for (const name of names) {
    const w = await ctx.optionalWeight(name);
    if (w) return w;
  }
  return null;
}

export async function maskedLmHead(ctx: BuildContext, x: Value, spec: MaskedLmHeadSpec): Promise<Value> {
  const { g } = ctx;
  if (!ctx.hasWeight(`${spec.dense}.weight`)) {
    throw new AttnscopeError(`this ${ctx.config.modelType} checkpoint has no ${spec.what ?? 'masked-LM'} head (no '${spec.dense}.weight'): it cannot predict tokens`);
  }
  let h = g.linear(x, await ctx.weight(`${spec.dense}.weight`), (await ctx.optionalWeight(`${spec.dense}.bias`)) ?? undefined);
  h = activation(g, spec.act, h);
  h = g.layerNorm(h, await ctx.weight(`${spec.norm}.weight`), await ctx.optionalWeight(`${spec.norm}.bias`), spec.eps);
  const decoder = await firstWeight(ctx, spec.decoder);
  if (!decoder) throw new AttnscopeError(`this ${ctx.config.modelType} checkpoint has no decoder weight for its prediction head (tried ${spec.decoder.join(', ')})`);
  return g.linear(h, decoder, (await firstWeight(ctx, spec.bias)) ?? undefined);
}

/** A language-model head: x · Wᵀ (+ bias), W from the first of `weights` present (its own, or the tied embeddings). */
export async function lmHead(ctx: BuildContext, x: Value, weights: readonly string[], bias?: string): Promise<Value> {
  const w = await firstWeight(ctx, weights);
  if (!w) throw new AttnscopeError(`this ${ctx.config.modelType} checkpoint has no language-model head (tried ${weights.join(', ')})`);
  const b = bias ? await ctx.optionalWeight(bias) : null;
  return ctx.g.linear(x, w, b ?? undefined);
}
