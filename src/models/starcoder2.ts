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
  buildLlamaStyleModel, checkRopeScaling, decoderInfo, type DecoderShape, decoderShape, projection,
  rotaryDecoderFeeds,
} from './decoder-blocks.js';
import { layerNormLayer } from './layers.js';
import { ropeFromConfig, type RopeSpec } from './rope.js';

const ROPE_TYPES = new Set(['default', 'linear', 'dynamic', 'llama3']);

interface Starcoder2Spec extends DecoderShape {
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

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = starcoder2Spec(config);
  const norm = (x: Value, prefix: string): Promise<Value> => layerNormLayer(ctx, x, prefix, s.eps);
  await buildLlamaStyleModel(ctx, {
    ...s,
    norm,
    scale: 1 / Math.sqrt(s.headDim), scaleStyle: 'scores-div',
    parts: (at) => ({
      project: (y, p) => projection(ctx, y, p.prefix, s.bias),
      outBias: s.bias,
      // A plain MLP: c_proj(act(c_fc(h))).
      mlp: async (h, tap) => projection(ctx, tap(activation(g, s.act, await projection(ctx, h, `${at.prefix}.mlp.c_fc`, s.bias))), `${at.prefix}.mlp.c_proj`, s.bias),
    }),
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  return rotaryDecoderFeeds(starcoder2Spec(config), inputs);
}

export const starcoder2Family: Architecture = { modelTypes: ['starcoder2'], describe, build, feeds };
