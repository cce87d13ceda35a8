/**
 * Falcon decoders (model_type `falcon`):
 * - new_decoder_architecture (Falcon-40B/180B, Falcon2): a fused `query_key_value` laid out per
 *   key/value group as [q_0 … q_{g−1} | k | v], grouped-query attention, two LayerNorms
 *   (ln_attn, ln_mlp) feeding attention and MLP in parallel;
 * - the original layout: fused per head as [q | k | v], or multi_query [q_0 … q_{h−1} | k | v]
 *   with one key/value head; parallel (input_layernorm feeding both) or sequential blocks.
 * Positions are rotary on every head dim (scores q·kᵀ / √headDim), or with `alibi` (falcon-rw)
 * softmax((q·kᵀ + slope·key position)·headDim^-0.5 + mask), the slopes and products rounded to
 * bfloat16 as transformers' Falcon build_alibi_tensor does; the term recorded for the neuron
 * view is headDim^-0.5·ALiBi. Linear layers carry biases when `bias` is set; LM head tied.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { float32Tensor, int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import { type Architecture, type ArchitectureInfo, type BuildContext, type ModelInputs } from './architecture.js';
import { causalMaskInput } from './attention.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import { lmHead } from './heads.js';
import { alibiBias, layerNormLayer, preNormBlock, requiredBias } from './layers.js';
import type { ModelConfig } from './config.js';
import { causalMask } from './masks.js';
import { stackScoring } from './scoring.js';
import { applyRotary, ropeFromConfig, ropeTables, type RopeSpec } from './rope.js';

/** Rope scaling types transformers 4.40's Falcon implements. */
const SUPPORTED_ROPE_TYPES = new Set(['default', 'linear', 'dynamic']);

interface Layout {
  newArch: boolean;
  multiQuery: boolean;
  alibi: boolean;
  parallel: boolean;
  bias: boolean;
}

function layout(config: ModelConfig): Layout {
  return {
    newArch: config.bool('new_decoder_architecture', false),
    multiQuery: config.bool('multi_query', true),
    alibi: config.bool('alibi', false),
    parallel: config.bool('parallel_attn', true),
    bias: config.bool('bias', false),
  };
}

function describe(config: ModelConfig): ArchitectureInfo {
  const hidden = config.int(['hidden_size', 'n_embed']);
  const heads = config.int(['num_attention_heads', 'n_head']);
  const layers = config.int(['num_hidden_layers', 'n_layer']);
  if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not divisible by num_attention_heads ${heads}`);
  const o = layout(config);
  const kvHeads = o.newArch ? config.int(['num_kv_heads', 'n_head_kv'], heads) : o.multiQuery ? 1 : heads;
  if (kvHeads < 1 || heads % kvHeads !== 0) throw new AttnscopeError(`${config.source}: num_kv_heads ${kvHeads} does not divide num_attention_heads ${heads}`);
  const headDim = hidden / heads;
  const scale = 1 / Math.sqrt(headDim);
  const info: ArchitectureInfo = {
    kind: 'decoder',
    numLayers: layers,
    numHeads: heads,
    numKeyValueHeads: kvHeads,
    headDim,
    maxPositions: o.alibi ? Number.POSITIVE_INFINITY : config.int('max_position_embeddings', 2048),
    stacks: { self: layers },
    scoring: {
      self: o.alibi
        ? // One ALiBi value for every layer: tapped once (layer 0's), not one [heads, n, n] output per layer.
          stackScoring(layers, { scale, causal: true, bias: 'shared', biasKind: 'ALiBi' })
        : stackScoring(layers, { scale, causal: true }),
    },
    contributions: { norm: 'pre' },
  };
  if (!o.alibi) ropeSpec(config, headDim); // validates the rotary settings
  return info;
}

function ropeSpec(config: ModelConfig, headDim: number): RopeSpec {
  const spec = ropeFromConfig(config, headDim);
  const type = spec.scaling ? String(spec.scaling.rope_type ?? spec.scaling.type ?? 'default') : 'default';
  if (!SUPPORTED_ROPE_TYPES.has(type)) throw new AttnscopeError(`${config.source}: rope scaling type '${type}' is not supported for falcon (supported: linear, dynamic)`);
  return spec;
}

/** FalconLinear `prefix.weight`, with `prefix.bias` when the config says the model has biases. */
async function falconLinear(ctx: BuildContext, x: Value, prefix: string, bias: boolean): Promise<Value> {
  const w = await ctx.weight(`${prefix}.weight`);
  return bias ? ctx.g.linear(x, w, await requiredBias(ctx, prefix)) : ctx.g.linear(x, w);
}

interface Positions {
  rope: { spec: RopeSpec; cos: Value; sin: Value } | null;
  /** ALiBi in score units (headDim^-0.5 · slope · key position), built from positions (layers.ts alibiBias). */
  alibi: Value | null;
  mask: Value;
}

/** Per-head q [1, heads, s, d], k and v [1, kvHeads, s, d] from the fused projection. */
function splitFused(ctx: BuildContext, fused: Value, o: Layout, info: ArchitectureInfo): [Value, Value, Value] {
  const { g } = ctx;
  const { numHeads: heads, numKeyValueHeads: kv, headDim: d } = info;
  const toHeads = (t: Value, n: number): Value => g.transpose(g.reshape(t, [0, 0, n, d]), [0, 2, 1, 3]);
  if (o.newArch) {
    const group = heads / kv;
    const [q, k, v] = g.split(g.reshape(fused, [0, 0, kv, group + 2, d]), [group, 1, 1], 3) as [Value, Value, Value];
    return [toHeads(q, heads), toHeads(k, kv), toHeads(v, kv)];
  }
  if (o.multiQuery) {
    const [q, k, v] = g.split(g.reshape(fused, [0, 0, heads + 2, d]), [heads, 1, 1], 2) as [Value, Value, Value];
    return [toHeads(q, heads), toHeads(k, 1), toHeads(v, 1)];
  }
  const [q, k, v] = g.split(g.reshape(fused, [0, 0, heads, 3 * d]), [d, d, d], 3) as [Value, Value, Value];
  return [g.transpose(q, [0, 2, 1, 3]), g.transpose(k, [0, 2, 1, 3]), g.transpose(v, [0, 2, 1, 3])];
}

async function block(ctx: BuildContext, x: Value, p: string, layer: number, info: ArchitectureInfo, o: Layout, pos: Positions): Promise<Value> {
  const { g, config } = ctx;
  const eps = config.num('layer_norm_epsilon', 1e-5);
  const twoNorms = o.newArch && ctx.hasWeight(`${p}.ln_attn.weight`);
  const norm = (name: string) => (y: Value): Promise<Value> => layerNormLayer(ctx, y, `${p}.${name}`, eps);
  // Parallel blocks (new_decoder_architecture or `parallel_attn`): one shared norm, or ln_attn and ln_mlp.
  const parallel = o.newArch || o.parallel;
  return preNormBlock(ctx, x, {
    layer, heads: info.numHeads, kvHeads: info.numKeyValueHeads, headDim: info.headDim,
    // Rotary: scores /= √headDim; ALiBi: (q·k + alibi) · inv_norm_factor.
    scale: 1 / Math.sqrt(info.headDim), scaleStyle: pos.alibi ? 'scores-mul' : 'scores-div', bias: pos.alibi, mask: pos.mask,
    inputNorm: norm(twoNorms ? 'ln_attn' : 'input_layernorm'),
    qkv: async (h) => {
      let [q, k, v] = splitFused(ctx, await falconLinear(ctx, h, `${p}.self_attention.query_key_value`, o.bias), o, info);
      if (pos.rope) {
        q = applyRotary(g, q, pos.rope.cos, pos.rope.sin, pos.rope.spec);
        k = applyRotary(g, k, pos.rope.cos, pos.rope.sin, pos.rope.spec);
      }
      return { q, k, v };
    },
    outProj: `${p}.self_attention.dense`,
    outBias: o.bias ? await requiredBias(ctx, `${p}.self_attention.dense`) : null,
    ...(parallel ? { parallel: true, ...(twoNorms ? { mlpNorm: norm('ln_mlp') } : {}) } : { postNorm: norm('post_attention_layernorm') }),
    mlp: async (h, tapActivation) => {
      const inner = tapActivation(activation(g, config.str('activation', 'gelu'), await falconLinear(ctx, h, `${p}.mlp.dense_h_to_4h`, o.bias)));
      return falconLinear(ctx, inner, `${p}.mlp.dense_4h_to_h`, o.bias);
    },
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const info = describe(config);
  const o = layout(config);
  const base = ctx.findPrefix(['transformer.', ''], 'word_embeddings.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const mask = causalMaskInput(ctx, 'attention_bias', null);
  let pos: Positions;
  if (o.alibi) {
    // Built in the graph from the key positions (one row over the keys; tapped by layer 0's attention).
    pos = { rope: null, alibi: alibiBias(ctx, info.numHeads, { bfloat16: true, scale: 1 / Math.sqrt(info.headDim) }), mask };
  } else {
    const spec = ropeSpec(config, info.headDim);
    pos = {
      rope: { spec, cos: g.input('rope_cos', 'float32', [1, 1, 'seq', spec.rotaryDims]), sin: g.input('rope_sin', 'float32', [1, 1, 'seq', spec.rotaryDims]) },
      alibi: null,
      mask,
    };
  }
  let x = g.gather(await ctx.weight(`${base}word_embeddings.weight`), ids);
  tapEmbeddings(ctx, 'self', { token: x });
  for (let l = 0; l < info.numLayers; l++) x = await block(ctx, x, `${base}h.${l}`, l, info, o, pos);
  x = await layerNormLayer(ctx, x, `${base}ln_f`, config.num('layer_norm_epsilon', 1e-5));
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  if (ctx.taps.logits) g.output(await lmHead(ctx, x, ['lm_head.weight', `${base}word_embeddings.weight`]), 'logits');
  await tapLogitLens(ctx, 'self', async (h) => lmHead(ctx, await layerNormLayer(ctx, h, `${base}ln_f`, config.num('layer_norm_epsilon', 1e-5)), ['lm_head.weight', `${base}word_embeddings.weight`]));
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const n = inputs.inputIds.length;
  const past = inputs.pastLength ?? 0;
  const info = describe(config);
  const out: Record<string, RuntimeTensor> = {
    input_ids: int64Tensor(inputs.inputIds),
    attention_bias: causalMask(n, { pastLength: past }),
  };
  if (!layout(config).alibi) {
    const spec = ropeSpec(config, info.headDim);
    const { cos, sin } = ropeTables(spec, Array.from({ length: n }, (_, i) => past + i));
    out.rope_cos = float32Tensor(cos, [1, 1, n, spec.rotaryDims]);
    out.rope_sin = float32Tensor(sin, [1, 1, n, spec.rotaryDims]);
  }
  return out;
}

export const falconFamily: Architecture = { modelTypes: ['falcon'], describe, build, feeds };
