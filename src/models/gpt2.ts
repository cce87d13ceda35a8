/**
 * GPT-2 decoders (model_type `gpt2`): pre-LayerNorm blocks, learned absolute positions (`wpe`),
 * fused `c_attn` Conv1D projection split into q/k/v, causal self-attention, `ln_f` at the end.
 *
 * Conv1D stores its weight [in, out], so a projection is x·W + b with no transpose.
 * Scores are divided by √headDim when `scale_attn_weights` (transformers divides by a float32
 * scalar holding √headDim) and, with `scale_attn_by_inverse_layer_idx`, by layer_idx + 1 too.
 * `reorder_and_upcast_attn` only changes mixed-precision behaviour, so at float32 it is the same.
 * The MLP width (`n_inner`, default 4·n_embd) is the one of the checkpoint's `c_fc` weight.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { attention, causalMaskInput, mergeHeads, splitHeads, tapBlockContributions } from './attention.js';
import { lmHead } from './heads.js';
import { layerNormLayer, requiredBias } from './layers.js';
import { tapEmbeddings, tapLayer, tapLogitLens, tapMlp } from './layer-taps.js';
import type { ModelConfig } from './config.js';
import { decoderInfo } from './decoder-blocks.js';
import { causalMask } from './masks.js';

function hiddenSize(config: ModelConfig): number {
  return config.int(['n_embd', 'hidden_size']);
}

/**
 * What transformers divides the scores of `layer` by: √headDim when `scale_attn_weights`, times
 * layer_idx + 1 with `scale_attn_by_inverse_layer_idx` (both divisions folded into one here).
 */
function scoreDivisor(config: ModelConfig, headDim: number, layer: number): number {
  let divisor = 1;
  if (config.bool('scale_attn_weights', true)) divisor *= Math.sqrt(headDim);
  if (config.bool('scale_attn_by_inverse_layer_idx', false)) divisor *= layer + 1;
  return divisor;
}

function describe(config: ModelConfig): ArchitectureInfo {
  const hidden = hiddenSize(config);
  const heads = config.int(['n_head', 'num_attention_heads']);
  const layers = config.int(['n_layer', 'num_hidden_layers']);
  if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: n_embd ${hidden} is not a multiple of n_head ${heads}`);
  const headDim = hidden / heads;
  const maxPositions = config.int(['n_positions', 'max_position_embeddings'], 1024);
  return decoderInfo({ layers, heads, kvHeads: heads, headDim, maxPositions }, { scale: (l) => 1 / scoreDivisor(config, headDim, l) });
}

/** transformers' Conv1D `prefix.weight` [in, out] / `prefix.bias`: x·W + b. */
async function conv1d(ctx: BuildContext, x: Value, prefix: string): Promise<Value> {
  const y = ctx.g.matMul(x, await ctx.weight(`${prefix}.weight`));
  return ctx.g.add(y, await requiredBias(ctx, prefix));
}

export interface QKV {
  /** [1, heads, seq, headDim] each. */
  q: Value;
  k: Value;
  v: Value;
}

/**
 * The per-layer projection of (already normalised) hidden states to per-head queries, keys and
 * values: what a key/value cache would store for k and v.
 */
async function projectQkv(ctx: BuildContext, h: Value, p: string, info: ArchitectureInfo): Promise<QKV> {
  const { g } = ctx;
  const { numHeads: heads, headDim } = info;
  const width = heads * headDim;
  const fused = await conv1d(ctx, h, `${p}.attn.c_attn`);
  const [q, k, v] = g.split(fused, [width, width, width], 2) as [Value, Value, Value];
  return {
    q: splitHeads(g, q, heads, headDim),
    k: splitHeads(g, k, heads, headDim),
    v: splitHeads(g, v, heads, headDim),
  };
}

/** One pre-LN block: x + attn(ln_1(x)), then + mlp(ln_2(·)). */
async function block(ctx: BuildContext, x: Value, p: string, layer: number, info: ArchitectureInfo, mask: Value): Promise<Value> {
  const { g, config } = ctx;
  const eps = config.num('layer_norm_epsilon', 1e-5);
  const { numHeads: heads, headDim } = info;
  const { q, k, v } = await projectQkv(ctx, await layerNormLayer(ctx, x, `${p}.ln_1`, eps), p, info);
  const divisor = scoreDivisor(config, headDim, layer);
  const context = attention(ctx, {
    stack: 'self', layer, q, k, v,
    numHeads: heads, numKvHeads: heads, headDim,
    scale: 1 / divisor, scaleStyle: 'scores-div',
    mask,
    outputProjection: { weight: await ctx.weight(`${p}.attn.c_proj.weight`), layout: 'in-out' },
  });
  const attnOut = await conv1d(ctx, mergeHeads(g, context, heads, headDim), `${p}.attn.c_proj`);
  const h = g.add(attnOut, x);
  tapBlockContributions(ctx, 'self', layer, { input: x, residualSum: h, outputBias: await ctx.weight(`${p}.attn.c_proj.bias`) });
  const inner = tapMlp(ctx, 'self', layer, activation(g, config.str('activation_function', 'gelu_new'), await conv1d(ctx, await layerNormLayer(ctx, h, `${p}.ln_2`, eps), `${p}.mlp.c_fc`)));
  const mlpOut = await conv1d(ctx, inner, `${p}.mlp.c_proj`);
  const out = g.add(h, mlpOut);
  tapLayer(ctx, 'self', layer, { input: x, attention: h, output: out });
  return out;
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const info = describe(config);
  const base = ctx.findPrefix(['transformer.', ''], 'wte.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const positions = g.input('position_ids', 'int64', [1, 'seq']);
  const mask = causalMaskInput(ctx, 'attention_bias', null);
  const token = g.gather(await ctx.weight(`${base}wte.weight`), ids);
  const position = g.gather(await ctx.weight(`${base}wpe.weight`), positions);
  tapEmbeddings(ctx, 'self', { token, position });
  let x = g.add(token, position);
  for (let l = 0; l < info.numLayers; l++) {
    x = await block(ctx, x, `${base}h.${l}`, l, info, mask);
  }
  x = await layerNormLayer(ctx, x, `${base}ln_f`, config.num('layer_norm_epsilon', 1e-5));
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  if (ctx.taps.logits) g.output(await lmHead(ctx, x, ['lm_head.weight', `${base}wte.weight`]), 'logits');
  await tapLogitLens(ctx, 'self', async (h) => lmHead(ctx, await layerNormLayer(ctx, h, `${base}ln_f`, config.num('layer_norm_epsilon', 1e-5)), ['lm_head.weight', `${base}wte.weight`]));
}

function feeds(_config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const n = inputs.inputIds.length;
  const past = inputs.pastLength ?? 0;
  return {
    input_ids: int64Tensor(inputs.inputIds),
    position_ids: int64Tensor(Array.from({ length: n }, (_, i) => past + i)),
    attention_bias: causalMask(n, { pastLength: past }),
  };
}

export const gpt2Family: Architecture = { modelTypes: ['gpt2'], describe, build, feeds };
