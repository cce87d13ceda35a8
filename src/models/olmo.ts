/**
 * OLMo decoders (model_type `olmo`, transformers' OlmoForCausalLM): Llama-like pre-norm blocks
 * whose norms are non-parametric LayerNorms (no weight, no bias, eps 1e-5), q/k/v optionally
 * clamped to ±clip_qkv before the rotation, RoPE on every head dim, SwiGLU MLP, scores
 * q·kᵀ / √head_dim, causal mask; `attention_bias` adds biases to q/k/v/o.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { causalMaskInput, splitHeads } from './attention.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import { checkConfigValue, type ModelConfig } from './config.js';
import { preNormBlock } from './layers.js';
import { causalMask } from './masks.js';
import { stackScoring } from './scoring.js';
import { applyRotary, ropeFromConfig, type RopeSpec, type Rotary, rotaryFeeds, rotaryInputs } from './rope.js';

const EPS = 1e-5;
const ROPE_TYPES = new Set(['default', 'linear', 'dynamic', 'llama3']);

interface OlmoSpec {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  bias: boolean;
  clip: number | null;
  act: string;
  tied: boolean;
  maxPositions: number;
  rope: RopeSpec;
}

function olmoSpec(config: ModelConfig): OlmoSpec {
  const hidden = config.int('hidden_size');
  const heads = config.int('num_attention_heads');
  const layers = config.int('num_hidden_layers');
  const kvHeads = config.int('num_key_value_heads', heads);
  if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
  if (heads % kvHeads !== 0) throw new AttnscopeError(`${config.source}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  const headDim = hidden / heads;
  if (headDim % 2 !== 0) throw new AttnscopeError(`${config.source}: head size ${headDim} should be even for rotary embeddings`);
  const clip = typeof config.raw.clip_qkv === 'number' ? config.num('clip_qkv') : null;
  if (clip !== null) checkConfigValue(config.source, 'clip_qkv', clip);
  const rope = ropeFromConfig(config, headDim);
  const type = rope.scaling ? String(rope.scaling.rope_type ?? rope.scaling.type ?? 'default') : 'default';
  if (!ROPE_TYPES.has(type)) throw new AttnscopeError(`${config.source}: rope scaling type '${type}' is not supported (supported: ${[...ROPE_TYPES].join(', ')})`);
  return {
    hidden, layers, heads, kvHeads, headDim,
    bias: config.bool('attention_bias', false),
    clip,
    act: config.str('hidden_act', 'silu'),
    tied: config.bool('tie_word_embeddings', false),
    maxPositions: config.int('max_position_embeddings', 2048),
    rope,
  };
}

function describe(config: ModelConfig): ArchitectureInfo {
  const s = olmoSpec(config);
  return {
    kind: 'decoder',
    numLayers: s.layers,
    numHeads: s.heads,
    numKeyValueHeads: s.kvHeads,
    headDim: s.headDim,
    maxPositions: s.maxPositions,
    stacks: { self: s.layers },
    scoring: { self: stackScoring(s.layers, { scale: 1 / Math.sqrt(s.headDim), causal: true }) },
    contributions: { norm: 'pre' },
  };
}

async function linear(ctx: BuildContext, x: Value, prefix: string, bias: boolean): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`), bias ? await ctx.weight(`${prefix}.bias`) : undefined);
}

async function decoderLayer(ctx: BuildContext, s: OlmoSpec, x: Value, p: string, layer: number, rotary: Rotary, mask: Value, ones: Value): Promise<Value> {
  const { g } = ctx;
  const project = async (h: Value, name: string, heads: number): Promise<Value> => {
    let y = await linear(ctx, h, `${p}.self_attn.${name}`, s.bias);
    if (s.clip !== null) y = g.op('Clip', [y, g.scalar(-s.clip), g.scalar(s.clip)]);
    return splitHeads(g, y, heads, s.headDim);
  };
  return preNormBlock(ctx, x, {
    layer, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim,
    scale: 1 / Math.sqrt(s.headDim), scaleStyle: 'scores-div', mask,
    inputNorm: async (y) => g.layerNorm(y, ones, null, EPS),
    qkv: async (h) => ({
      q: applyRotary(g, await project(h, 'q_proj', s.heads), rotary.cos, rotary.sin, s.rope),
      k: applyRotary(g, await project(h, 'k_proj', s.kvHeads), rotary.cos, rotary.sin, s.rope),
      v: await project(h, 'v_proj', s.kvHeads),
    }),
    outProj: `${p}.self_attn.o_proj`,
    outBias: s.bias ? await ctx.weight(`${p}.self_attn.o_proj.bias`) : null,
    postNorm: async (y) => g.layerNorm(y, ones, null, EPS),
    mlp: async (h, tap) => {
      const gate = activation(g, s.act, await linear(ctx, h, `${p}.mlp.gate_proj`, false));
      const up = await linear(ctx, h, `${p}.mlp.up_proj`, false);
      return linear(ctx, tap(g.mul(gate, up)), `${p}.mlp.down_proj`, false);
    },
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = olmoSpec(config);
  const base = ctx.findPrefix(['model.', ''], 'embed_tokens.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const rotary = rotaryInputs(g, s.rope);
  const mask = causalMaskInput(ctx, 'attention_bias', null);
  // The non-parametric LayerNorm as ONNX LayerNormalization with a unit scale and no bias.
  const ones = g.initializer('olmo.layer_norm.unit_scale', new Float32Array(s.hidden).fill(1), [s.hidden]);
  const embed = await ctx.weight(`${base}embed_tokens.weight`);
  let x = g.gather(embed, ids);
  tapEmbeddings(ctx, 'self', { token: x });
  for (let l = 0; l < s.layers; l++) {
    x = await decoderLayer(ctx, s, x, `${base}layers.${l}`, l, rotary, mask, ones);
  }
  x = g.layerNorm(x, ones, null, EPS);
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  const head = async (): Promise<Value> => (!s.tied && ctx.hasWeight('lm_head.weight') ? ctx.weight('lm_head.weight') : embed);
  if (ctx.taps.logits) g.output(g.linear(x, await head()), 'logits');
  await tapLogitLens(ctx, 'self', async (h) => g.linear(g.layerNorm(h, ones, null, EPS), await head()));
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const s = olmoSpec(config);
  const n = inputs.inputIds.length;
  const past = inputs.pastLength ?? 0;
  return {
    input_ids: int64Tensor(inputs.inputIds),
    ...rotaryFeeds(s.rope, n, past),
    attention_bias: causalMask(n, { pastLength: past }),
  };
}

export const olmoFamily: Architecture = { modelTypes: ['olmo'], describe, build, feeds };
