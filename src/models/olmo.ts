/**
 * OLMo decoders (model_type `olmo`, transformers' OlmoForCausalLM): Llama-like pre-norm blocks
 * whose norms are non-parametric LayerNorms (no weight, no bias, eps 1e-5), q/k/v optionally
 * clamped to ±clip_qkv before the rotation, RoPE on every head dim, SwiGLU MLP, scores
 * q·kᵀ / √head_dim, causal mask; `attention_bias` adds biases to q/k/v/o.
 */
import type { Value } from '../graph/builder.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { checkConfigValue, type ModelConfig } from './config.js';
import {
  checkRopeScaling, decoderInfo, decoderShape, decoderTrunk, gatedMlp, layerMasks, projection, rotaryDecoderFeeds, rotaryQkv, tiedHead,
} from './decoder-blocks.js';
import { preNormBlock } from './layers.js';
import { ropeFromConfig, type RopeSpec, type Rotary, rotaryInputs } from './rope.js';

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
  const shape = decoderShape(config, { evenHeadDim: true });
  const clip = typeof config.raw.clip_qkv === 'number' ? config.num('clip_qkv') : null;
  if (clip !== null) checkConfigValue(config.source, 'clip_qkv', clip);
  const rope = ropeFromConfig(config, shape.headDim);
  checkRopeScaling(config, rope.scaling, ROPE_TYPES);
  return {
    ...shape,
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
  return decoderInfo(s, { scale: 1 / Math.sqrt(s.headDim) });
}

async function decoderLayer(ctx: BuildContext, s: OlmoSpec, x: Value, p: string, layer: number, rotary: Rotary, mask: Value, ones: Value): Promise<Value> {
  const { g } = ctx;
  return preNormBlock(ctx, x, {
    layer, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim,
    scale: 1 / Math.sqrt(s.headDim), scaleStyle: 'scores-div', mask,
    inputNorm: async (y) => g.layerNorm(y, ones, null, EPS),
    qkv: (h) => rotaryQkv(ctx, h, {
      ...s, prefix: `${p}.self_attn`, rotary,
      // q, k and v clamped to ±clip_qkv before the rotation.
      project: async (y, name) => {
        const out = await projection(ctx, y, `${p}.self_attn.${name}`, s.bias);
        return s.clip === null ? out : g.op('Clip', [out, g.scalar(-s.clip), g.scalar(s.clip)]);
      },
    }),
    outProj: `${p}.self_attn.o_proj`,
    outBias: s.bias ? await ctx.weight(`${p}.self_attn.o_proj.bias`) : null,
    postNorm: async (y) => g.layerNorm(y, ones, null, EPS),
    mlp: (h, tap) => gatedMlp(ctx, h, { prefix: `${p}.mlp`, act: s.act }, tap),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = olmoSpec(config);
  const base = ctx.findPrefix(['model.', ''], 'embed_tokens.weight');
  const rotary = rotaryInputs(g, s.rope);
  const masks = layerMasks(ctx, new Array<null>(s.layers).fill(null));
  // The non-parametric LayerNorm as ONNX LayerNormalization with a unit scale and no bias.
  const ones = g.initializer('olmo.layer_norm.unit_scale', new Float32Array(s.hidden).fill(1), [s.hidden]);
  await decoderTrunk(ctx, {
    embedding: `${base}embed_tokens.weight`,
    layers: s.layers,
    block: (x, l) => decoderLayer(ctx, s, x, `${base}layers.${l}`, l, rotary, masks[l]!, ones),
    finalNorm: async (x) => g.layerNorm(x, ones, null, EPS),
    readout: async (h, embed) => g.linear(h, await tiedHead(ctx, embed, s.tied)),
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const s = olmoSpec(config);
  return rotaryDecoderFeeds(s.rope, new Array<null>(s.layers).fill(null), inputs);
}

export const olmoFamily: Architecture = { modelTypes: ['olmo'], describe, build, feeds };
