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
import {
  type BlockSite, buildLlamaStyle, checkRopeScaling, decoderInfo, type DecoderShape, decoderShape, partialRotaryDims,
  rotaryDecoderFeeds, rotaryQkv, tiedHead,
} from './decoder-blocks.js';
import { layerNormLayer, linearLayer, preNormBlock, requiredBias } from './layers.js';
import { ropeFromConfig, type RopeSpec } from './rope.js';

interface PhiSpec extends DecoderShape {
  eps: number;
  act: string;
  qkLayerNorm: boolean;
  maxPositions: number;
  rope: RopeSpec;
}

/** transformers 4.40's PhiAttention supports these rope_scaling types; ropeTables computes default and linear exactly. */
const ROPE_TYPES = new Set(['default', 'linear', 'dynamic']);

function phiSpec(config: ModelConfig): PhiSpec {
  const shape = decoderShape(config);
  const rope = ropeFromConfig(config, shape.headDim, partialRotaryDims(config, shape.headDim, 0.5));
  checkRopeScaling(config, rope.scaling, ROPE_TYPES);
  return {
    ...shape,
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

/** Parallel block: x + (mlp(ln(x)) + attn(ln(x))). */
async function block(ctx: BuildContext, s: PhiSpec, x: Value, at: BlockSite): Promise<Value> {
  const { g } = ctx;
  const a = `${at.prefix}.self_attn`;
  return preNormBlock(ctx, x, {
    layer: at.layer, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim,
    scale: s.headDim ** -0.5, scaleStyle: 'scores-div', mask: at.mask,
    inputNorm: (y) => layerNormLayer(ctx, y, `${at.prefix}.input_layernorm`, s.eps),
    qkv: (h) => rotaryQkv(ctx, h, {
      ...s, prefix: a, rotary: at.rotary,
      project: async (y, p) => {
        const out = await linearLayer(ctx, y, p.prefix);
        if (!s.qkLayerNorm || p.name === 'v_proj') return out;
        // PhiAttention: LayerNorm(head_dim) on each head of q and k before the rotation.
        const norm = `${a}.${p.name === 'q_proj' ? 'q' : 'k'}_layernorm`;
        return g.reshape(await layerNormLayer(ctx, g.reshape(out, [0, 0, p.heads, s.headDim]), norm, s.eps), [0, 0, p.heads * s.headDim]);
      },
    }),
    outProj: `${a}.dense`,
    outBias: await requiredBias(ctx, `${a}.dense`),
    parallel: true,
    mlp: async (h, tap) => linearLayer(ctx, tap(activation(g, s.act, await linearLayer(ctx, h, `${at.prefix}.mlp.fc1`))), `${at.prefix}.mlp.fc2`),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const s = phiSpec(ctx.config);
  await buildLlamaStyle(ctx, {
    ...s,
    tied: false,
    finalNorm: 'final_layernorm',
    norm: (x, prefix) => layerNormLayer(ctx, x, prefix, s.eps),
    block: (x, at) => block(ctx, s, x, at),
    // lm_head with a bias (the embeddings when it is absent).
    readout: async (h, embed) => ctx.g.linear(h, await tiedHead(ctx, embed, false), (await ctx.optionalWeight('lm_head.bias')) ?? undefined),
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  return rotaryDecoderFeeds(phiSpec(config), inputs);
}

export const phiFamily: Architecture = { modelTypes: ['phi'], describe, build, feeds };
