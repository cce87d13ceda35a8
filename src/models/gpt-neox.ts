/**
 * GPT-NeoX decoders (model_type `gpt_neox`: Pythia, GPT-NeoX-20B, ...): pre-LayerNorm blocks
 * with a parallel (x + attn(ln1(x)) + mlp(ln2(x))) or sequential residual, a fused
 * `query_key_value` projection laid out per head as [q | k | v], rotary embedding on the first
 * rotary_ndims = headDim·rotary_pct dims of each head, scores q·kᵀ·headDim^-0.5, causal mask,
 * and `final_layer_norm` at the end.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { float32Tensor, int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { lmHead } from './heads.js';
import { layerNormLayer, linearLayer, preNormBlock, requiredBias } from './layers.js';
import { checkConfigValue, type ModelConfig } from './config.js';
import { decoderInfo, decoderTrunk, layerMasks } from './decoder-blocks.js';
import { causalMask } from './masks.js';
import { applyRotary, ropeFromConfig, ropeTables, type RopeSpec, rotaryInputs } from './rope.js';

/** Rope scaling types whose tables within max_position_embeddings `ropeTables` computes as transformers does. */
const SUPPORTED_ROPE_TYPES = new Set(['default', 'linear', 'dynamic', 'llama3']);

function describe(config: ModelConfig): ArchitectureInfo {
  const hidden = config.int('hidden_size');
  const heads = config.int('num_attention_heads');
  const layers = config.int('num_hidden_layers');
  if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not divisible by num_attention_heads ${heads}`);
  const shape = { layers, heads, kvHeads: heads, headDim: hidden / heads, maxPositions: config.int('max_position_embeddings', 2048) };
  const info = decoderInfo(shape, { scale: Math.pow(hidden / heads, -0.5) });
  ropeSpec(config, info.headDim); // validates the rotary settings
  return info;
}

/**
 * Rotary settings: the rotated fraction is `rotary_pct` (transformers ≥ 4.48 also reads
 * `partial_rotary_factor`, and v5 `rope_parameters`), the base `rotary_emb_base` / `rope_theta`.
 */
function ropeSpec(config: ModelConfig, headDim: number): RopeSpec {
  const params = config.object('rope_parameters');
  const paramNum = (key: string): number | undefined => (params && typeof params[key] === 'number' ? params[key] : undefined);
  const fraction = paramNum('partial_rotary_factor') ?? config.num(['partial_rotary_factor', 'rotary_pct'], 0.25);
  const base = paramNum('rope_theta') ?? config.num(['rope_theta', 'rotary_emb_base'], 10000);
  checkConfigValue(config.source, 'rope_theta', base);
  checkConfigValue(config.source, 'partial_rotary_factor', fraction);
  const rotaryDims = Math.trunc(headDim * fraction);
  if (rotaryDims % 2 !== 0 || rotaryDims < 0 || rotaryDims > headDim) {
    throw new AttnscopeError(`${config.source}: rotary dims ${rotaryDims} (head size ${headDim} × ${fraction}) should be even and at most the head size`);
  }
  const spec: RopeSpec = { ...ropeFromConfig(config, headDim, rotaryDims), base };
  const scaling = spec.scaling ?? (params && params.rope_type !== undefined ? params : undefined);
  const type = scaling ? String(scaling.rope_type ?? scaling.type ?? 'default') : 'default';
  if (!SUPPORTED_ROPE_TYPES.has(type)) throw new AttnscopeError(`${config.source}: rope scaling type '${type}' is not supported`);
  return { ...spec, scaling };
}

export interface QKV {
  /** [1, heads, seq, headDim] each; q and k already rotated. */
  q: Value;
  k: Value;
  v: Value;
}

interface Rope {
  spec: RopeSpec;
  cos: Value;
  sin: Value;
}

/**
 * The per-layer projection of (already normalised) hidden states to per-head queries, keys
 * (both rotated) and values: what a key/value cache would store for k and v.
 */
async function projectQkv(ctx: BuildContext, h: Value, p: string, info: ArchitectureInfo, rope: Rope | null): Promise<QKV> {
  const { g } = ctx;
  const { numHeads: heads, headDim } = info;
  // [1, seq, heads·3·headDim] → [1, seq, heads, 3·headDim] → three [1, seq, heads, headDim].
  const fused = g.reshape(await linearLayer(ctx, h, `${p}.attention.query_key_value`), [0, 0, heads, 3 * headDim]);
  const [q, k, v] = g.split(fused, [headDim, headDim, headDim], 3).map((t) => g.transpose(t, [0, 2, 1, 3])) as [Value, Value, Value];
  if (!rope) return { q, k, v };
  return {
    q: applyRotary(g, q, rope.cos, rope.sin, rope.spec),
    k: applyRotary(g, k, rope.cos, rope.sin, rope.spec),
    v,
  };
}

async function block(ctx: BuildContext, x: Value, p: string, layer: number, info: ArchitectureInfo, mask: Value, rope: Rope | null): Promise<Value> {
  const { g, config } = ctx;
  const eps = config.num('layer_norm_eps', 1e-5);
  const postNorm = (y: Value): Promise<Value> => layerNormLayer(ctx, y, `${p}.post_attention_layernorm`, eps);
  return preNormBlock(ctx, x, {
    layer, heads: info.numHeads, kvHeads: info.numHeads, headDim: info.headDim,
    scale: Math.pow(info.headDim, -0.5), scaleStyle: 'scores-mul', mask,
    inputNorm: (y) => layerNormLayer(ctx, y, `${p}.input_layernorm`, eps),
    qkv: (h) => projectQkv(ctx, h, p, info, rope),
    outProj: `${p}.attention.dense`,
    outBias: await requiredBias(ctx, `${p}.attention.dense`),
    // use_parallel_residual: x + (mlp(ln_2(x)) + attn(ln_1(x))); else sequential.
    ...(config.bool('use_parallel_residual', true) ? { parallel: true, mlpNorm: postNorm } : { postNorm }),
    mlp: async (h, tap) => linearLayer(ctx, tap(activation(g, config.str('hidden_act', 'gelu'), await linearLayer(ctx, h, `${p}.mlp.dense_h_to_4h`))), `${p}.mlp.dense_4h_to_h`),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const info = describe(config);
  const spec = ropeSpec(config, info.headDim);
  const base = ctx.findPrefix(['gpt_neox.', ''], 'embed_in.weight');
  const [mask] = layerMasks(ctx, [null]);
  const rope: Rope | null = spec.rotaryDims > 0 ? { spec, ...rotaryInputs(g, spec) } : null;
  const eps = config.num('layer_norm_eps', 1e-5);
  await decoderTrunk(ctx, {
    embedding: `${base}embed_in.weight`,
    layers: info.numLayers,
    block: (x, l) => block(ctx, x, `${base}layers.${l}`, l, info, mask!, rope),
    finalNorm: (x) => layerNormLayer(ctx, x, `${base}final_layer_norm`, eps),
    readout: (h) => lmHead(ctx, h, ['embed_out.weight', `${base}embed_in.weight`]),
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const n = inputs.inputIds.length;
  const past = inputs.pastLength ?? 0;
  const positions = Array.from({ length: n }, (_, i) => past + i);
  const spec = ropeSpec(config, describe(config).headDim);
  const { cos, sin } = ropeTables(spec, positions);
  return {
    input_ids: int64Tensor(inputs.inputIds),
    position_ids: int64Tensor(positions),
    attention_bias: causalMask(n, { pastLength: past }),
    rope_cos: float32Tensor(cos, [1, 1, n, spec.rotaryDims]),
    rope_sin: float32Tensor(sin, [1, 1, n, spec.rotaryDims]),
  };
}

export const gptNeoxFamily: Architecture = { modelTypes: ['gpt_neox'], describe, build, feeds };
