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
import type { Value } from '../graph/builder.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import type { ModelConfig } from './config.js';
import { checkRopeScaling, decoderInfo, decoderShape, decoderTrunk, layerMasks, partialRotaryDims, rotaryDecoderFeeds, rotaryQkv } from './decoder-blocks.js';
import { lmHead } from './heads.js';
import { layerNormLayer, linearLayer, preNormBlock, requiredBias } from './layers.js';
import { ropeFromConfig, type RopeSpec, type Rotary, rotaryInputs } from './rope.js';

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
  const { layers, heads, kvHeads, headDim } = decoderShape(config);
  const rope = ropeFromConfig(config, headDim, partialRotaryDims(config, headDim, 0.5));
  checkRopeScaling(config, rope.scaling, ROPE_TYPES);
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
  return decoderInfo(s, { scale: s.headDim ** -0.5 });
}

async function block(ctx: BuildContext, s: PhiSpec, x: Value, p: string, layer: number, rotary: Rotary, mask: Value): Promise<Value> {
  const { g } = ctx;
  const a = `${p}.self_attn`;
  return preNormBlock(ctx, x, {
    layer, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim,
    scale: s.headDim ** -0.5, scaleStyle: 'scores-div', mask,
    inputNorm: (y) => layerNormLayer(ctx, y, `${p}.input_layernorm`, s.eps),
    qkv: (h) => rotaryQkv(ctx, h, {
      ...s, prefix: a, rotary,
      project: async (y, name, n) => {
        const out = await linearLayer(ctx, y, `${a}.${name}`);
        if (!s.qkLayerNorm || name === 'v_proj') return out;
        // PhiAttention: LayerNorm(head_dim) on each head of q and k before the rotation.
        const norm = `${a}.${name === 'q_proj' ? 'q' : 'k'}_layernorm`;
        return g.reshape(await layerNormLayer(ctx, g.reshape(out, [0, 0, n, s.headDim]), norm, s.eps), [0, 0, n * s.headDim]);
      },
    }),
    outProj: `${a}.dense`,
    outBias: await requiredBias(ctx, `${a}.dense`),
    // Parallel block: x + (mlp(ln(x)) + attn(ln(x))).
    parallel: true,
    mlp: async (h, tap) => linearLayer(ctx, tap(activation(g, s.act, await linearLayer(ctx, h, `${p}.mlp.fc1`))), `${p}.mlp.fc2`),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const s = phiSpec(ctx.config);
  const base = ctx.findPrefix(['model.', ''], 'embed_tokens.weight');
  const masks = layerMasks(ctx, new Array<null>(s.layers).fill(null));
  const rotary = rotaryInputs(ctx.g, s.rope);
  await decoderTrunk(ctx, {
    embedding: `${base}embed_tokens.weight`,
    layers: s.layers,
    block: (x, l) => block(ctx, s, x, `${base}layers.${l}`, l, rotary, masks[l]!),
    finalNorm: (x) => layerNormLayer(ctx, x, `${base}final_layernorm`, s.eps),
    // lm_head with a bias (the embeddings when it is absent).
    readout: (h) => lmHead(ctx, h, ['lm_head.weight', `${base}embed_tokens.weight`], 'lm_head.bias'),
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const s = phiSpec(config);
  return rotaryDecoderFeeds(s.rope, new Array<null>(s.layers).fill(null), inputs);
}

export const phiFamily: Architecture = { modelTypes: ['phi'], describe, build, feeds };
