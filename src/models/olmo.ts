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
  buildLlamaStyleModel, checkRopeScaling, decoderInfo, type DecoderShape, decoderShape, gatedMlp, projection,
  rotaryDecoderFeeds,
} from './decoder-blocks.js';
import { ropeFromConfig, type RopeSpec } from './rope.js';

const EPS = 1e-5;
const ROPE_TYPES = new Set(['default', 'linear', 'dynamic', 'llama3']);

interface OlmoSpec extends DecoderShape {
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

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = olmoSpec(config);
  // The non-parametric LayerNorm as ONNX LayerNormalization with a unit scale and no bias.
  const ones = g.initializer('olmo.layer_norm.unit_scale', new Float32Array(s.hidden).fill(1), [s.hidden]);
  const norm = async (x: Value): Promise<Value> => g.layerNorm(x, ones, null, EPS);
  await buildLlamaStyleModel(ctx, {
    ...s,
    norm,
    scale: 1 / Math.sqrt(s.headDim), scaleStyle: 'scores-div',
    parts: (at) => ({
      // q, k and v clamped to ±clip_qkv before the rotation.
      project: async (y, p) => {
        const out = await projection(ctx, y, p.prefix, s.bias);
        return s.clip === null ? out : g.op('Clip', [out, g.scalar(-s.clip), g.scalar(s.clip)]);
      },
      outBias: s.bias,
      mlp: (h, tap) => gatedMlp(ctx, h, { prefix: `${at.prefix}.mlp`, act: s.act }, tap),
    }),
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  return rotaryDecoderFeeds(olmoSpec(config), inputs);
}

export const olmoFamily: Architecture = { modelTypes: ['olmo'], describe, build, feeds };
