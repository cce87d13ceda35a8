/**
 * StarCoder2 decoders (model_type `starcoder2`, transformers' Starcoder2ForCausalLM): pre-norm
 * blocks with LayerNorm (weight and bias, norm_epsilon), grouped-query attention with q/k/v/o
 * biases (`use_bias`), rotate_half RoPE on every head dim, scores q·kᵀ / √head_dim with a causal
 * mask (and `sliding_window` when set), a plain MLP c_proj(act(c_fc(x))) with biases, `norm` at
 * the end and the LM head tied to the token embeddings unless tie_word_embeddings is false.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { causalMaskInput, splitHeads } from './attention.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import { layerNormLayer, preNormBlock } from './layers.js';
import type { ModelConfig } from './config.js';
import { causalMask } from './masks.js';
import { stackScoring } from './scoring.js';
import { applyRotary, ropeFromConfig, type RopeSpec, type Rotary, rotaryFeeds, rotaryInputs } from './rope.js';

const ROPE_TYPES = new Set(['default', 'linear', 'dynamic', 'llama3']);

interface Starcoder2Spec {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  bias: boolean;
  act: string;
  tied: boolean;
  maxPositions: number;
  /** Keys a query sees with the sliding window (null: all earlier keys). */
  window: number | null;
  rope: RopeSpec;
}

function starcoder2Spec(config: ModelConfig): Starcoder2Spec {
  const hidden = config.int('hidden_size');
  const heads = config.int('num_attention_heads');
  const layers = config.int('num_hidden_layers');
  const kvHeads = config.int('num_key_value_heads', 2);
  if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
  if (heads % kvHeads !== 0) throw new AttnscopeError(`${config.source}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  const headDim = hidden / heads;
  if (headDim % 2 !== 0) throw new AttnscopeError(`${config.source}: head size ${headDim} should be even for rotary embeddings`);
  const rope = ropeFromConfig(config, headDim);
  const type = rope.scaling ? String(rope.scaling.rope_type ?? rope.scaling.type ?? 'default') : 'default';
  if (!ROPE_TYPES.has(type)) throw new AttnscopeError(`${config.source}: rope scaling type '${type}' is not supported (supported: ${[...ROPE_TYPES].join(', ')})`);
  const maxPositions = config.int('max_position_embeddings', 4096);
  // Starcoder2Config's default sliding_window is 4096; an explicit null turns it off.
  const rawWindow = config.raw.sliding_window;
  const configured = rawWindow === null ? null : config.int('sliding_window', 4096);
  if (configured !== null && configured < 1) throw new AttnscopeError(`${config.source}: sliding_window should be ≥ 1, got ${configured}`);
  const window = configured === null ? null : windowKeys(configured);
  return {
    hidden, layers, heads, kvHeads, headDim,
    eps: config.num('norm_epsilon', 1e-5),
    bias: config.bool('use_bias', true),
    act: config.str('hidden_act', 'gelu_pytorch_tanh'),
    tied: config.bool('tie_word_embeddings', true),
    maxPositions,
    // A window at least as long as any input changes nothing.
    window: window !== null && window >= maxPositions ? null : window,
    rope,
  };
}

/**
 * Keys a query sees under `sliding_window` w in transformers 4.40's eager mask
 * (_prepare_4d_causal_attention_mask: tril(diagonal = past − w − 1) masked, so keys
 * qPos − w … qPos stay visible): w + 1.
 */
function windowKeys(slidingWindow: number): number {
  return slidingWindow + 1;
}

function describe(config: ModelConfig): ArchitectureInfo {
  const s = starcoder2Spec(config);
  return {
    kind: 'decoder',
    numLayers: s.layers,
    numHeads: s.heads,
    numKeyValueHeads: s.kvHeads,
    headDim: s.headDim,
    maxPositions: s.maxPositions,
    stacks: { self: s.layers },
    scoring: {
      self: stackScoring(s.layers, { scale: 1 / Math.sqrt(s.headDim), causal: true, windows: new Array<number | null>(s.layers).fill(s.window) }),
    },
    contributions: { norm: 'pre' },
  };
}

async function linear(ctx: BuildContext, x: Value, prefix: string, bias: boolean): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`), bias ? await ctx.weight(`${prefix}.bias`) : undefined);
}

async function decoderLayer(ctx: BuildContext, s: Starcoder2Spec, x: Value, p: string, layer: number, rotary: Rotary, mask: Value): Promise<Value> {
  const { g } = ctx;
  return preNormBlock(ctx, x, {
    layer, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim,
    scale: 1 / Math.sqrt(s.headDim), scaleStyle: 'scores-div', mask,
    inputNorm: (y) => layerNormLayer(ctx, y, `${p}.input_layernorm`, s.eps),
    qkv: async (h) => ({
      q: applyRotary(g, splitHeads(g, await linear(ctx, h, `${p}.self_attn.q_proj`, s.bias), s.heads, s.headDim), rotary.cos, rotary.sin, s.rope),
      k: applyRotary(g, splitHeads(g, await linear(ctx, h, `${p}.self_attn.k_proj`, s.bias), s.kvHeads, s.headDim), rotary.cos, rotary.sin, s.rope),
      v: splitHeads(g, await linear(ctx, h, `${p}.self_attn.v_proj`, s.bias), s.kvHeads, s.headDim),
    }),
    outProj: `${p}.self_attn.o_proj`,
    outBias: s.bias ? await ctx.weight(`${p}.self_attn.o_proj.bias`) : null,
    postNorm: (y) => layerNormLayer(ctx, y, `${p}.post_attention_layernorm`, s.eps),
    mlp: async (h, tap) => linear(ctx, tap(activation(g, s.act, await linear(ctx, h, `${p}.mlp.c_fc`, s.bias))), `${p}.mlp.c_proj`, s.bias),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = starcoder2Spec(config);
  const base = ctx.findPrefix(['model.', ''], 'embed_tokens.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const rotary = rotaryInputs(g, s.rope);
  const mask = causalMaskInput(ctx, 'attention_bias', s.window);
  const embed = await ctx.weight(`${base}embed_tokens.weight`);
  let x = g.gather(embed, ids);
  tapEmbeddings(ctx, 'self', { token: x });
  for (let l = 0; l < s.layers; l++) {
    x = await decoderLayer(ctx, s, x, `${base}layers.${l}`, l, rotary, mask);
  }
  x = await layerNormLayer(ctx, x, `${base}norm`, s.eps);
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  const head = async (): Promise<Value> => (!s.tied && ctx.hasWeight('lm_head.weight') ? ctx.weight('lm_head.weight') : embed);
  if (ctx.taps.logits) g.output(g.linear(x, await head()), 'logits');
  await tapLogitLens(ctx, 'self', async (h) => g.linear(await layerNormLayer(ctx, h, `${base}norm`, s.eps), await head()));
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const s = starcoder2Spec(config);
  const n = inputs.inputIds.length;
  const past = inputs.pastLength ?? 0;
  return {
    input_ids: int64Tensor(inputs.inputIds),
    ...rotaryFeeds(s.rope, n, past),
    attention_bias: causalMask(n, { pastLength: past, window: s.window ?? undefined }),
  };
}

export const starcoder2Family: Architecture = { modelTypes: ['starcoder2'], describe, build, feeds };
