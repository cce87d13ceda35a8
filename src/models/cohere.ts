/**
 * Cohere decoders (model_type `cohere`: Command-R), as transformers 4.40's eager CohereModel:
 *
 *   x = embed(ids)
 *   per layer: h = input_layernorm(x); x = x + o_proj(attn(rope(q), rope(k), v)) + down(act(gate(h)) · up(h))
 *   last_hidden_state = norm(x); logits = (last_hidden_state · (lm_head | embed)ᵀ) · logit_scale
 *
 * LayerNorm with a weight and no bias, grouped key/value heads, RoPE over the whole head in the
 * interleaved layout (pairs (x0, x1), (x2, x3), ...), optional per-head q/k LayerNorm
 * (use_qk_norm), scores q·kᵀ / √head_dim, causal mask.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { attention, causalMaskInput, mergeHeads, tapBlockContributions } from './attention.js';
import { tapEmbeddings, tapLayer, tapLogitLens, tapMlp } from './layer-taps.js';
import { checkConfigValue, type ModelConfig } from './config.js';
import { causalMask } from './masks.js';
import { stackScoring } from './scoring.js';
import { applyRotary, ropeFromConfig, type RopeSpec, type Rotary, rotaryFeeds, rotaryInputs } from './rope.js';

interface CohereSpec {
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  act: string;
  attentionBias: boolean;
  qkNorm: boolean;
  logitScale: number;
  tied: boolean;
  maxPositions: number;
  rope: RopeSpec;
}

function cohereSpec(config: ModelConfig): CohereSpec {
  const hidden = config.int('hidden_size', 8192);
  const heads = config.int('num_attention_heads', 64);
  const layers = config.int('num_hidden_layers', 40);
  const kvHeads = config.int('num_key_value_heads', heads);
  if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
  if (heads % kvHeads !== 0) throw new AttnscopeError(`${config.source}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  const headDim = hidden / heads;
  if (headDim % 2 !== 0) throw new AttnscopeError(`${config.source}: head size ${headDim} (hidden_size / num_attention_heads) should be even for rotary embeddings`);
  const rope = ropeFromConfig(config, headDim);
  // transformers 4.40's CohereRotaryEmbedding has no scaling: a rope_scaling would be ignored there.
  if (rope.scaling) throw new AttnscopeError(`${config.source}: rope_scaling is not supported for cohere (transformers 4.40's Cohere has no rope scaling)`);
  const logitScale = config.num('logit_scale', 0.0625);
  checkConfigValue(config.source, 'logit_scale', logitScale);
  return {
    layers,
    heads,
    kvHeads,
    headDim,
    eps: config.num('layer_norm_eps', 1e-5),
    act: config.str('hidden_act', 'silu'),
    attentionBias: config.bool('attention_bias', false),
    qkNorm: config.bool('use_qk_norm', false),
    logitScale,
    tied: config.bool('tie_word_embeddings', true),
    maxPositions: config.int('max_position_embeddings', 8192),
    rope: { ...rope, style: 'interleaved' },
  };
}

function describe(config: ModelConfig): ArchitectureInfo {
  const s = cohereSpec(config);
  return {
    kind: 'decoder',
    numLayers: s.layers,
    numHeads: s.heads,
    numKeyValueHeads: s.kvHeads,
    headDim: s.headDim,
    maxPositions: s.maxPositions,
    stacks: { self: s.layers },
    scoring: { self: stackScoring(s.layers, { scale: s.headDim ** -0.5, causal: true }) },
    contributions: { norm: 'pre' },
  };
}

/** CohereLayerNorm: (x − mean) · rsqrt(var + eps) · weight over the last axis, no bias. */
async function cohereNorm(ctx: BuildContext, s: CohereSpec, x: Value, prefix: string): Promise<Value> {
  const { g } = ctx;
  const centred = g.sub(x, g.reduceMean(x, [-1]));
  const variance = g.reduceMean(g.mul(centred, centred), [-1]);
  const normed = g.mul(centred, g.reciprocal(g.sqrt(g.add(variance, g.scalar(s.eps)))));
  return g.mul(await ctx.weight(`${prefix}.weight`), normed);
}

async function linear(ctx: BuildContext, x: Value, prefix: string, bias: boolean): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`), bias ? await ctx.weight(`${prefix}.bias`) : undefined);
}

/** [1, seq, n·headDim] → [1, n, seq, headDim], with the per-head LayerNorm `norm` (weight [n, headDim]) when given. */
async function heads(ctx: BuildContext, s: CohereSpec, x: Value, n: number, norm: string | null): Promise<Value> {
  const { g } = ctx;
  let h = g.reshape(x, [0, 0, n, s.headDim]);
  if (norm) h = await cohereNorm(ctx, s, h, norm);
  return g.transpose(h, [0, 2, 1, 3]);
}

async function block(ctx: BuildContext, s: CohereSpec, x: Value, p: string, layer: number, rotary: Rotary, mask: Value): Promise<Value> {
  const { g } = ctx;
  const h = await cohereNorm(ctx, s, x, `${p}.input_layernorm`);
  const a = `${p}.self_attn`;
  const q = await heads(ctx, s, await linear(ctx, h, `${a}.q_proj`, s.attentionBias), s.heads, s.qkNorm ? `${a}.q_norm` : null);
  const k = await heads(ctx, s, await linear(ctx, h, `${a}.k_proj`, s.attentionBias), s.kvHeads, s.qkNorm ? `${a}.k_norm` : null);
  const v = await heads(ctx, s, await linear(ctx, h, `${a}.v_proj`, s.attentionBias), s.kvHeads, null);
  const context = attention(ctx, {
    stack: 'self', layer,
    q: applyRotary(g, q, rotary.cos, rotary.sin, s.rope),
    k: applyRotary(g, k, rotary.cos, rotary.sin, s.rope),
    v,
    numHeads: s.heads, numKvHeads: s.kvHeads, headDim: s.headDim,
    scale: s.headDim ** -0.5, scaleStyle: 'scores-div',
    mask,
    outputProjection: { weight: await ctx.weight(`${a}.o_proj.weight`), layout: 'out-in' },
  });
  const attnOut = await linear(ctx, mergeHeads(g, context, s.heads, s.headDim), `${a}.o_proj`, s.attentionBias);
  // Parallel block: the attention block's output (for ALTI) is x + attn(norm(x)), the MLP branch aside.
  const x1 = g.add(x, attnOut);
  tapBlockContributions(ctx, 'self', layer, { input: x, residualSum: x1, outputBias: s.attentionBias ? await ctx.weight(`${a}.o_proj.bias`) : null });
  const gate = activation(g, s.act, await linear(ctx, h, `${p}.mlp.gate_proj`, false));
  const mlpOut = await linear(ctx, tapMlp(ctx, 'self', layer, g.mul(gate, await linear(ctx, h, `${p}.mlp.up_proj`, false))), `${p}.mlp.down_proj`, false);
  const output = g.add(x1, mlpOut);
  tapLayer(ctx, 'self', layer, { input: x, attention: x1, output });
  return output;
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = cohereSpec(config);
  const base = ctx.findPrefix(['model.', ''], 'embed_tokens.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const mask = causalMaskInput(ctx, 'attention_bias', null);
  const rotary = rotaryInputs(g, s.rope);
  const embed = await ctx.weight(`${base}embed_tokens.weight`);
  let x = g.gather(embed, ids);
  tapEmbeddings(ctx, 'self', { token: x });
  for (let l = 0; l < s.layers; l++) x = await block(ctx, s, x, `${base}layers.${l}`, l, rotary, mask);
  x = await cohereNorm(ctx, s, x, `${base}norm`);
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  const head = async (): Promise<Value> => (!s.tied && ctx.hasWeight('lm_head.weight') ? ctx.weight('lm_head.weight') : embed);
  if (ctx.taps.logits) g.output(g.mul(g.linear(x, await head()), g.scalar(s.logitScale)), 'logits');
  await tapLogitLens(ctx, 'self', async (h) => g.mul(g.linear(await cohereNorm(ctx, s, h, `${base}norm`), await head()), g.scalar(s.logitScale)));
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const s = cohereSpec(config);
  const n = inputs.inputIds.length;
  const past = inputs.pastLength ?? 0;
  return {
    input_ids: int64Tensor(inputs.inputIds),
    attention_bias: causalMask(n, { pastLength: past }),
    ...rotaryFeeds(s.rope, n, past),
  };
}

export const cohereFamily: Architecture = { modelTypes: ['cohere'], describe, build, feeds };
