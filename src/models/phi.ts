/**
 * Phi decoders (model_type `phi`: phi-1, phi-1.5, phi-2), as transformers 4.40's eager PhiModel:
 *
 *   x = embed(ids)
 *   per layer: h = input_layernorm(x); x = x + dense(attn(rope(q), rope(k), v)) + fc2(act(fc1(h)))
 *   last_hidden_state = final_layernorm(x); logits = lm_head(last_hidden_state) (with bias)
 *
 * q/k/v/dense projections with biases, optional q/k LayerNorm per head (qk_layernorm), partial
 * rotary (rotate_half) on the first head_dim·partial_rotary_factor dims of each head, scores
 * q·kᵀ / √head_dim in float32, causal mask, grouped key/value heads when configured.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { causalMaskInput, splitHeads } from './attention.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import { checkConfigValue, type ModelConfig } from './config.js';
import { lmHead } from './heads.js';
import { layerNormLayer, linearLayer, preNormBlock, requiredBias } from './layers.js';
import { causalMask } from './masks.js';
import { stackScoring } from './scoring.js';
import { applyRotary, ropeFromConfig, type RopeSpec, type Rotary, rotaryFeeds, rotaryInputs } from './rope.js';

interface PhiSpec {
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  act: string;
  qkLayerNorm: boolean;
  maxPositions: number;
  rope: RopeSpec;
}

/** transformers 4.40's PhiAttention supports these rope_scaling types; ropeTables computes default and linear exactly. */
const ROPE_TYPES = new Set(['default', 'linear', 'dynamic']);

function phiSpec(config: ModelConfig): PhiSpec {
  const hidden = config.int('hidden_size');
  const heads = config.int('num_attention_heads');
  const layers = config.int('num_hidden_layers');
  const kvHeads = config.int('num_key_value_heads', heads);
  if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
  if (heads % kvHeads !== 0) throw new AttnscopeError(`${config.source}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  const headDim = hidden / heads;
  const fraction = config.num('partial_rotary_factor', 0.5);
  checkConfigValue(config.source, 'partial_rotary_factor', fraction);
  const rotaryDims = Math.trunc(headDim * fraction);
  if (rotaryDims % 2 !== 0 || rotaryDims <= 0 || rotaryDims > headDim) {
    throw new AttnscopeError(`${config.source}: partial_rotary_factor ${fraction} gives ${rotaryDims} rotary dims of head size ${headDim}; allowed: an even number from 2 to the head size`);
  }
  const rope = ropeFromConfig(config, headDim, rotaryDims);
  const type = rope.scaling ? String(rope.scaling.rope_type ?? rope.scaling.type ?? 'default') : 'default';
  if (!ROPE_TYPES.has(type)) {
    throw new AttnscopeError(`${config.source}: rope_scaling type '${type}' is not supported for phi (supported: ${[...ROPE_TYPES].join(', ')})`);
  }
  return {
    layers,
    heads,
    kvHeads,
    headDim,
    eps: config.num('layer_norm_eps', 1e-5),
    act: config.str('hidden_act', 'gelu_new'),
    qkLayerNorm: config.bool('qk_layernorm', false),
    maxPositions: config.int('max_position_embeddings', 2048),
    rope,
  };
}

function describe(config: ModelConfig): ArchitectureInfo {
  const s = phiSpec(config);
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

async function block(ctx: BuildContext, s: PhiSpec, x: Value, p: string, layer: number, rotary: Rotary, mask: Value): Promise<Value> {
  const { g } = ctx;
  return preNormBlock(ctx, x, {
    layer, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim,
    scale: s.headDim ** -0.5, scaleStyle: 'scores-div', mask,
    inputNorm: (y) => layerNormLayer(ctx, y, `${p}.input_layernorm`, s.eps),
    qkv: async (h) => {
      let q = await linearLayer(ctx, h, `${p}.self_attn.q_proj`);
      let k = await linearLayer(ctx, h, `${p}.self_attn.k_proj`);
      if (s.qkLayerNorm) {
        // PhiAttention: LayerNorm(head_dim) on each head of q and k before the rotation.
        q = g.reshape(await layerNormLayer(ctx, g.reshape(q, [0, 0, s.heads, s.headDim]), `${p}.self_attn.q_layernorm`, s.eps), [0, 0, s.heads * s.headDim]);
        k = g.reshape(await layerNormLayer(ctx, g.reshape(k, [0, 0, s.kvHeads, s.headDim]), `${p}.self_attn.k_layernorm`, s.eps), [0, 0, s.kvHeads * s.headDim]);
      }
      const v = splitHeads(g, await linearLayer(ctx, h, `${p}.self_attn.v_proj`), s.kvHeads, s.headDim);
      return {
        q: applyRotary(g, splitHeads(g, q, s.heads, s.headDim), rotary.cos, rotary.sin, s.rope),
        k: applyRotary(g, splitHeads(g, k, s.kvHeads, s.headDim), rotary.cos, rotary.sin, s.rope),
        v,
      };
    },
    outProj: `${p}.self_attn.dense`,
    outBias: await requiredBias(ctx, `${p}.self_attn.dense`),
    // Parallel block: x + (mlp(ln(x)) + attn(ln(x))).
    parallel: true,
    mlp: async (h, tap) => linearLayer(ctx, tap(activation(g, s.act, await linearLayer(ctx, h, `${p}.mlp.fc1`))), `${p}.mlp.fc2`),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = phiSpec(config);
  const base = ctx.findPrefix(['model.', ''], 'embed_tokens.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const mask = causalMaskInput(ctx, 'attention_bias', null);
  const rotary = rotaryInputs(g, s.rope);
  let x = g.gather(await ctx.weight(`${base}embed_tokens.weight`), ids);
  tapEmbeddings(ctx, 'self', { token: x });
  for (let l = 0; l < s.layers; l++) x = await block(ctx, s, x, `${base}layers.${l}`, l, rotary, mask);
  x = await layerNormLayer(ctx, x, `${base}final_layernorm`, s.eps);
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  if (ctx.taps.logits) g.output(await lmHead(ctx, x, ['lm_head.weight', `${base}embed_tokens.weight`], 'lm_head.bias'), 'logits');
  await tapLogitLens(ctx, 'self', async (h) => lmHead(ctx, await layerNormLayer(ctx, h, `${base}final_layernorm`, s.eps), ['lm_head.weight', `${base}embed_tokens.weight`], 'lm_head.bias'));
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const s = phiSpec(config);
  const n = inputs.inputIds.length;
  const past = inputs.pastLength ?? 0;
  return {
    input_ids: int64Tensor(inputs.inputIds),
    attention_bias: causalMask(n, { pastLength: past }),
    ...rotaryFeeds(s.rope, n, past),
  };
}

export const phiFamily: Architecture = { modelTypes: ['phi'], describe, build, feeds };
