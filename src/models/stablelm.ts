/**
 * StableLM decoders (model_type `stablelm`, transformers' StableLmForCausalLM): Llama-like blocks
 * with LayerNorm (weight and bias, layer_norm_eps), optional q/k/v biases (`use_qkv_bias`; o_proj
 * has none), optional per-head LayerNorm of queries and keys before the rotation
 * (`qk_layernorm`), rotate_half RoPE on the first head_dim·partial_rotary_factor dims of each
 * head (the rest pass through), scores q·kᵀ / √head_dim with a causal mask, SwiGLU MLP, and a
 * sequential or parallel (`use_parallel_residual`: x + attn(ln(x)) + mlp(ln(x))) residual.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { causalMaskInput, splitHeads } from './attention.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import { layerNormLayer, preNormBlock } from './layers.js';
import { checkConfigValue, type ModelConfig } from './config.js';
import { causalMask } from './masks.js';
import { stackScoring } from './scoring.js';
import { applyRotary, ropeFromConfig, type RopeSpec, type Rotary, rotaryFeeds, rotaryInputs } from './rope.js';

const ROPE_TYPES = new Set(['default', 'linear', 'dynamic']);

interface StableLmSpec {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  qkvBias: boolean;
  qkNorm: boolean;
  parallel: boolean;
  act: string;
  tied: boolean;
  maxPositions: number;
  rope: RopeSpec;
}

function stableLmSpec(config: ModelConfig): StableLmSpec {
  const hidden = config.int('hidden_size');
  const heads = config.int('num_attention_heads');
  const layers = config.int('num_hidden_layers');
  const kvHeads = config.int('num_key_value_heads', heads);
  if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
  if (heads % kvHeads !== 0) throw new AttnscopeError(`${config.source}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  const headDim = hidden / heads;
  const fraction = config.num('partial_rotary_factor', 0.25);
  checkConfigValue(config.source, 'partial_rotary_factor', fraction);
  const rotaryDims = Math.trunc(headDim * fraction);
  if (rotaryDims % 2 !== 0 || rotaryDims < 2 || rotaryDims > headDim) {
    throw new AttnscopeError(`${config.source}: rotary dims ${rotaryDims} (head size ${headDim} × partial_rotary_factor ${fraction}) should be even, at least 2 and at most the head size`);
  }
  const rope = ropeFromConfig(config, headDim, rotaryDims);
  const type = rope.scaling ? String(rope.scaling.rope_type ?? rope.scaling.type ?? 'default') : 'default';
  if (!ROPE_TYPES.has(type)) throw new AttnscopeError(`${config.source}: rope scaling type '${type}' is not supported (supported: ${[...ROPE_TYPES].join(', ')})`);
  return {
    hidden, layers, heads, kvHeads, headDim,
    eps: config.num('layer_norm_eps', 1e-5),
    qkvBias: config.bool('use_qkv_bias', false),
    qkNorm: config.bool('qk_layernorm', false),
    parallel: config.bool('use_parallel_residual', false),
    act: config.str('hidden_act', 'silu'),
    tied: config.bool('tie_word_embeddings', false),
    maxPositions: config.int('max_position_embeddings', 4096),
    rope,
  };
}

function describe(config: ModelConfig): ArchitectureInfo {
  const s = stableLmSpec(config);
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

/**
 * StableLmLayerNormPerHead on x [1, heads, seq, headDim]: head h normalised by its own
 * nn.LayerNorm(headDim, bias=False) `prefix.norms.<h>.weight`.
 */
async function perHeadNorm(ctx: BuildContext, s: StableLmSpec, x: Value, prefix: string, heads: number): Promise<Value> {
  const { g } = ctx;
  const parts = g.split(x, new Array<number>(heads).fill(1), 1);
  const normed: Value[] = [];
  for (let h = 0; h < heads; h++) normed.push(g.layerNorm(parts[h]!, await ctx.weight(`${prefix}.norms.${h}.weight`), null, s.eps));
  return heads === 1 ? normed[0]! : g.concat(normed, 1);
}

async function decoderLayer(ctx: BuildContext, s: StableLmSpec, x: Value, p: string, layer: number, rotary: Rotary, mask: Value): Promise<Value> {
  const { g } = ctx;
  return preNormBlock(ctx, x, {
    layer, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim,
    scale: 1 / Math.sqrt(s.headDim), scaleStyle: 'scores-div', mask,
    inputNorm: (y) => layerNormLayer(ctx, y, `${p}.input_layernorm`, s.eps),
    qkv: async (h) => {
      let q = splitHeads(g, await linear(ctx, h, `${p}.self_attn.q_proj`, s.qkvBias), s.heads, s.headDim);
      let k = splitHeads(g, await linear(ctx, h, `${p}.self_attn.k_proj`, s.qkvBias), s.kvHeads, s.headDim);
      const v = splitHeads(g, await linear(ctx, h, `${p}.self_attn.v_proj`, s.qkvBias), s.kvHeads, s.headDim);
      if (s.qkNorm) {
        q = await perHeadNorm(ctx, s, q, `${p}.self_attn.q_layernorm`, s.heads);
        k = await perHeadNorm(ctx, s, k, `${p}.self_attn.k_layernorm`, s.kvHeads);
      }
      return { q: applyRotary(g, q, rotary.cos, rotary.sin, s.rope), k: applyRotary(g, k, rotary.cos, rotary.sin, s.rope), v };
    },
    outProj: `${p}.self_attn.o_proj`,
    outBias: null,
    ...(s.parallel ? { parallel: true } : { postNorm: (y: Value) => layerNormLayer(ctx, y, `${p}.post_attention_layernorm`, s.eps) }),
    mlp: async (h, tap) => {
      const gate = activation(g, s.act, await linear(ctx, h, `${p}.mlp.gate_proj`, false));
      const up = await linear(ctx, h, `${p}.mlp.up_proj`, false);
      return linear(ctx, tap(g.mul(gate, up)), `${p}.mlp.down_proj`, false);
    },
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = stableLmSpec(config);
  const base = ctx.findPrefix(['model.', ''], 'embed_tokens.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const rotary = rotaryInputs(g, s.rope);
  const mask = causalMaskInput(ctx, 'attention_bias', null);
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
  const s = stableLmSpec(config);
  const n = inputs.inputIds.length;
  const past = inputs.pastLength ?? 0;
  return {
    input_ids: int64Tensor(inputs.inputIds),
    ...rotaryFeeds(s.rope, n, past),
    attention_bias: causalMask(n, { pastLength: past }),
  };
}

export const stablelmFamily: Architecture = { modelTypes: ['stablelm'], describe, build, feeds };
