/**
 * The post-LayerNorm encoder block that BERT, ALBERT, DistilBERT, MPNet and DeBERTa-v2 share
 * (Vaswani et al.'s "add & norm" after each sub-layer), with its taps; each family gives its
 * module names, the scale of q·k and any score bias (MPNet's relative buckets, DeBERTa's
 * disentangled terms).
 *
 *   h = LN(x + out(attn(q(x), k(x), v(x))));  y = LN(h + ffn_out(act(ffn_in(h))))
 *
 * Model files import this, never another model file.
 */
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { BuildContext } from './architecture.js';
import type { ModelConfig } from './config.js';
import { attention, mergeHeads, splitHeads, tapBlockContributions, type AttentionArgs } from './attention.js';
import { tapLayer, tapMlp } from './layer-taps.js';
import { layerNormLayer, linearLayer } from './layers.js';

/** Per-head q, k, v [1, heads, seq, headDim] of x through the linear layers `names` (with biases). */
export async function splitQkv(
  ctx: BuildContext, x: Value, names: readonly [string, string, string], heads: number, headDim: number,
): Promise<{ q: Value; k: Value; v: Value }> {
  const { g } = ctx;
  const [q, k, v] = names;
  return {
    q: splitHeads(g, await linearLayer(ctx, x, q), heads, headDim),
    k: splitHeads(g, await linearLayer(ctx, x, k), heads, headDim),
    v: splitHeads(g, await linearLayer(ctx, x, v), heads, headDim),
  };
}

export interface PostNormBlock {
  layer: number;
  heads: number;
  headDim: number;
  /** Per-head queries, keys and values (splitQkv, or the family's own). */
  q: Value;
  k: Value;
  v: Value;
  /** Multiplier of q·k and where it is applied (see AttentionArgs). */
  scale: number;
  scaleStyle: AttentionArgs['scaleStyle'];
  /** Added to the scores (relative position terms), when the family has one. */
  bias?: Value | null;
  /** The attention's output projection (linear with bias) and the LayerNorm after its residual sum. */
  attnOut: string;
  attnNorm: string;
  /** The feed-forward's two linear layers and the LayerNorm after its residual sum. */
  ffnIn: string;
  ffnOut: string;
  ffnNorm: string;
  act: string;
  eps: number;
  /** What the layer does to its output before handing it on (DeBERTa's ConvLayer after layer 0). */
  finish?: ((y: Value) => Promise<Value>) | null;
}

/** One post-LN block of the self stack, with its contributions, MLP and layer taps. */
export async function postNormBlock(ctx: BuildContext, x: Value, b: PostNormBlock): Promise<Value> {
  const { g } = ctx;
  const context = attention(ctx, {
    stack: 'self', layer: b.layer, q: b.q, k: b.k, v: b.v,
    numHeads: b.heads, numKvHeads: b.heads, headDim: b.headDim,
    scale: b.scale, scaleStyle: b.scaleStyle,
    ...(b.bias ? { bias: b.bias } : {}),
    outputProjection: { weight: await ctx.weight(`${b.attnOut}.weight`), layout: 'out-in' },
  });
  const attnOut = await linearLayer(ctx, mergeHeads(g, context, b.heads, b.headDim), b.attnOut);
  const residualSum = g.add(attnOut, x);
  const h = await layerNormLayer(ctx, residualSum, b.attnNorm, b.eps);
  tapBlockContributions(ctx, 'self', b.layer, {
    input: x, residualSum, outputBias: await ctx.weight(`${b.attnOut}.bias`),
    norm: { weight: await ctx.weight(`${b.attnNorm}.weight`), bias: await ctx.weight(`${b.attnNorm}.bias`) },
  });
  const inner = tapMlp(ctx, 'self', b.layer, activation(g, b.act, await linearLayer(ctx, h, b.ffnIn)));
  const ffn = await linearLayer(ctx, inner, b.ffnOut);
  let output = await layerNormLayer(ctx, g.add(ffn, h), b.ffnNorm, b.eps);
  if (b.finish) output = await b.finish(output);
  tapLayer(ctx, 'self', b.layer, { input: x, attention: h, output });
  return output;
}

/** A post-LN block whose q, k and v are the linear layers `qkv` (with biases), scores scaled by 1/√headDim. */
export interface LinearQkvBlock extends Omit<PostNormBlock, 'q' | 'k' | 'v' | 'scale' | 'scaleStyle'> {
  qkv: readonly [string, string, string];
  /** Where 1/√headDim is applied (default: dividing the scores, as BERT). */
  scaleStyle?: AttentionArgs['scaleStyle'];
}

/** postNormBlock on splitQkv(x, b.qkv) with the scale 1/√headDim (BERT, ALBERT, DistilBERT, MPNet). */
export async function linearQkvBlock(ctx: BuildContext, x: Value, b: LinearQkvBlock): Promise<Value> {
  const { qkv, scaleStyle, ...rest } = b;
  return postNormBlock(ctx, x, {
    ...rest,
    ...(await splitQkv(ctx, x, qkv, b.heads, b.headDim)),
    scale: 1 / Math.sqrt(b.headDim), scaleStyle: scaleStyle ?? 'scores-div',
  });
}

/**
 * The feed-forward half of BERT's layer under module prefix `p` (BertIntermediate, BertOutput:
 * `intermediate.dense`, `output.dense`, `output.LayerNorm`) with its config fields hidden_act and
 * layer_norm_eps; MPNet's layer copies it.
 */
export function bertFeedForward(config: ModelConfig, p: string): Pick<PostNormBlock, 'ffnIn' | 'ffnOut' | 'ffnNorm' | 'act' | 'eps'> {
  return {
    ffnIn: `${p}.intermediate.dense`, ffnOut: `${p}.output.dense`, ffnNorm: `${p}.output.LayerNorm`,
    act: config.str('hidden_act', 'gelu'), eps: config.num('layer_norm_eps', 1e-12),
  };
}

/** The feeds `input_ids` and `position_ids`, positions counted from `offset` (RoBERTa and MPNet: padding_idx + 1). */
export function idFeeds(ids: readonly number[], offset: number): { input_ids: RuntimeTensor; position_ids: RuntimeTensor } {
  return {
    input_ids: int64Tensor(ids),
    position_ids: int64Tensor(Array.from({ length: ids.length }, (_, i) => i + offset)),
  };
}
