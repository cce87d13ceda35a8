/**
 * StarCoder2 decoders (model_type `starcoder2`, transformers' Starcoder2ForCausalLM): pre-norm
 * blocks with LayerNorm (weight and bias, norm_epsilon), grouped-query attention with q/k/v/o
 * biases (`use_bias`), rotate_half RoPE on every head dim, scores q·kᵀ / √head_dim with a causal
 * mask (and `sliding_window` when set), a plain MLP c_proj(act(c_fc(x))) with biases, `norm` at
 * the end and the LM head tied to the token embeddings unless tie_word_embeddings is false.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import type { ModelConfig } from './config.js';
import {
  checkRopeScaling, decoderInfo, decoderShape, decoderTrunk, layerMasks, projection, rotaryDecoderFeeds, rotaryQkv, tiedHead,
} from './decoder-blocks.js';
import { layerNormLayer, preNormBlock } from './layers.js';
import { ropeFromConfig, type RopeSpec, type Rotary, rotaryInputs } from './rope.js';

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
  /** Keys a query sees with the sliding window in every layer (null: all earlier keys). */
  windows: (number | null)[];
  rope: RopeSpec;
}

function starcoder2Spec(config: ModelConfig): Starcoder2Spec {
  const shape = decoderShape(config, { defaults: { kvHeads: 2 }, evenHeadDim: true });
  const rope = ropeFromConfig(config, shape.headDim);
  checkRopeScaling(config, rope.scaling, ROPE_TYPES);
  const maxPositions = config.int('max_position_embeddings', 4096);
  // Starcoder2Config's default sliding_window is 4096; an explicit null turns it off.
  const rawWindow = config.raw.sliding_window;
  const configured = rawWindow === null ? null : config.int('sliding_window', 4096);
  if (configured !== null && configured < 1) throw new AttnscopeError(`${config.source}: sliding_window should be ≥ 1, got ${configured}`);
  const window = configured === null ? null : windowKeys(configured);
  return {
    ...shape,
    eps: config.num('norm_epsilon', 1e-5),
    bias: config.bool('use_bias', true),
    act: config.str('hidden_act', 'gelu_pytorch_tanh'),
    tied: config.bool('tie_word_embeddings', true),
    maxPositions,
    // A window at least as long as any input changes nothing.
    windows: new Array<number | null>(shape.layers).fill(window !== null && window >= maxPositions ? null : window),
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
  return decoderInfo(s, { scale: 1 / Math.sqrt(s.headDim), windows: s.windows });
}

async function decoderLayer(ctx: BuildContext, s: Starcoder2Spec, x: Value, p: string, layer: number, rotary: Rotary, mask: Value): Promise<Value> {
  const { g } = ctx;
  return preNormBlock(ctx, x, {
    layer, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim,
    scale: 1 / Math.sqrt(s.headDim), scaleStyle: 'scores-div', mask,
    inputNorm: (y) => layerNormLayer(ctx, y, `${p}.input_layernorm`, s.eps),
    qkv: (h) => rotaryQkv(ctx, h, { ...s, prefix: `${p}.self_attn`, rotary, project: (y, name) => projection(ctx, y, `${p}.self_attn.${name}`, s.bias) }),
    outProj: `${p}.self_attn.o_proj`,
    outBias: s.bias ? await ctx.weight(`${p}.self_attn.o_proj.bias`) : null,
    postNorm: (y) => layerNormLayer(ctx, y, `${p}.post_attention_layernorm`, s.eps),
    // A plain MLP: c_proj(act(c_fc(h))).
    mlp: async (h, tap) => projection(ctx, tap(activation(g, s.act, await projection(ctx, h, `${p}.mlp.c_fc`, s.bias))), `${p}.mlp.c_proj`, s.bias),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const s = starcoder2Spec(ctx.config);
  const base = ctx.findPrefix(['model.', ''], 'embed_tokens.weight');
  const rotary = rotaryInputs(ctx.g, s.rope);
  const masks = layerMasks(ctx, s.windows);
  await decoderTrunk(ctx, {
    embedding: `${base}embed_tokens.weight`,
    layers: s.layers,
    block: (x, l) => decoderLayer(ctx, s, x, `${base}layers.${l}`, l, rotary, masks[l]!),
    finalNorm: (x) => layerNormLayer(ctx, x, `${base}norm`, s.eps),
    readout: async (h, embed) => ctx.g.linear(h, await tiedHead(ctx, embed, s.tied)),
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const s = starcoder2Spec(config);
  return rotaryDecoderFeeds(s.rope, s.windows, inputs);
}

export const starcoder2Family: Architecture = { modelTypes: ['starcoder2'], describe, build, feeds };
