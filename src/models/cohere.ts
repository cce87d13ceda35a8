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
import type { RuntimeTensor } from '../runtime/runtime.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { attention, mergeHeads, tapBlockContributions } from './attention.js';
import { tapLayer, tapMlp } from './layer-taps.js';
import { checkConfigValue, type ModelConfig } from './config.js';
import {
  type BlockSite, buildLlamaStyle, decoderInfo, type DecoderShape, decoderShape, gatedMlp, projection, rotaryDecoderFeeds, rotaryQkv, tiedHead,
} from './decoder-blocks.js';
import { ropeFromConfig, type RopeSpec } from './rope.js';

interface CohereSpec extends DecoderShape {
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
  const shape = decoderShape(config, { defaults: { hidden: 8192, heads: 64, layers: 40 }, evenHeadDim: true });
  const rope = ropeFromConfig(config, shape.headDim);
  // transformers 4.40's CohereRotaryEmbedding has no scaling: a rope_scaling would be ignored there.
  if (rope.scaling) throw new AttnscopeError(`${config.source}: rope_scaling is not supported for cohere (transformers 4.40's Cohere has no rope scaling)`);
  const logitScale = config.num('logit_scale', 0.0625);
  checkConfigValue(config.source, 'logit_scale', logitScale);
  return {
    ...shape,
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
  return decoderInfo(s, { scale: s.headDim ** -0.5 });
}

/** CohereLayerNorm: (x − mean) · rsqrt(var + eps) · weight over the last axis, no bias. */
async function cohereNorm(ctx: BuildContext, s: CohereSpec, x: Value, prefix: string): Promise<Value> {
  const { g } = ctx;
  const centred = g.sub(x, g.reduceMean(x, [-1]));
  const variance = g.reduceMean(g.mul(centred, centred), [-1]);
  const normed = g.mul(centred, g.reciprocal(g.sqrt(g.add(variance, g.scalar(s.eps)))));
  return g.mul(await ctx.weight(`${prefix}.weight`), normed);
}

/** [1, seq, n·headDim] → [1, n, seq, headDim], q and k through their per-head LayerNorm (weight [n, headDim]) with use_qk_norm. */
async function heads(ctx: BuildContext, s: CohereSpec, x: Value, n: number, norm: string | null): Promise<Value> {
  const { g } = ctx;
  let h = g.reshape(x, [0, 0, n, s.headDim]);
  if (norm) h = await cohereNorm(ctx, s, h, norm);
  return g.transpose(h, [0, 2, 1, 3]);
}

/** Parallel block: x + attn(norm(x)) + mlp(norm(x)), the attention's residual sum first. */
async function block(ctx: BuildContext, s: CohereSpec, x: Value, at: BlockSite): Promise<Value> {
  const { g } = ctx;
  const { prefix: p, layer, rotary, mask } = at;
  const h = await cohereNorm(ctx, s, x, `${p}.input_layernorm`);
  const a = `${p}.self_attn`;
  const { q, k, v } = await rotaryQkv(ctx, h, {
    ...s, prefix: a, rotary,
    project: (y, proj) => projection(ctx, y, proj.prefix, s.attentionBias),
    split: (y, proj) => heads(ctx, s, y, proj.heads, s.qkNorm && proj.name !== 'v_proj' ? `${a}.${proj.name === 'q_proj' ? 'q' : 'k'}_norm` : null),
  });
  const context = attention(ctx, {
    stack: 'self', layer, q, k, v,
    numHeads: s.heads, numKvHeads: s.kvHeads, headDim: s.headDim,
    scale: s.headDim ** -0.5, scaleStyle: 'scores-div',
    mask,
    outputProjection: { weight: await ctx.weight(`${a}.o_proj.weight`), layout: 'out-in' },
  });
  const attnOut = await projection(ctx, mergeHeads(g, context, s.heads, s.headDim), `${a}.o_proj`, s.attentionBias);
  // Parallel block: the attention block's output (for ALTI) is x + attn(norm(x)), the MLP branch aside.
  const x1 = g.add(x, attnOut);
  tapBlockContributions(ctx, 'self', layer, { input: x, residualSum: x1, outputBias: s.attentionBias ? await ctx.weight(`${a}.o_proj.bias`) : null });
  const mlpOut = await gatedMlp(ctx, h, { prefix: `${p}.mlp`, act: s.act }, (act) => tapMlp(ctx, 'self', layer, act));
  const output = g.add(x1, mlpOut);
  tapLayer(ctx, 'self', layer, { input: x, attention: x1, output });
  return output;
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = cohereSpec(config);
  await buildLlamaStyle(ctx, {
    ...s,
    norm: (x, prefix) => cohereNorm(ctx, s, x, prefix),
    block: (x, at) => block(ctx, s, x, at),
    // Logits scaled by logit_scale.
    readout: async (h, embed) => g.mul(g.linear(h, await tiedHead(ctx, embed, s.tied)), g.scalar(s.logitScale)),
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  return rotaryDecoderFeeds(cohereSpec(config), inputs);
}

export const cohereFamily: Architecture = { modelTypes: ['cohere'], describe, build, feeds };
