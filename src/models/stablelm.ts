/**
 * StableLM decoders (model_type `stablelm`, transformers' StableLmForCausalLM): Llama-like blocks
 * with LayerNorm (weight and bias, layer_norm_eps), optional q/k/v biases (`use_qkv_bias`; o_proj
 * has none), optional per-head LayerNorm of queries and keys before the rotation
 * (`qk_layernorm`), rotate_half RoPE on the first head_dim·partial_rotary_factor dims of each
 * head (the rest pass through), scores q·kᵀ / √head_dim with a causal mask, SwiGLU MLP, and a
 * sequential or parallel (`use_parallel_residual`: x + attn(ln(x)) + mlp(ln(x))) residual.
 */
import type { Value } from '../graph/builder.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { splitHeads } from './attention.js';
import type { ModelConfig } from './config.js';
import {
  buildLlamaStyleModel, checkRopeScaling, decoderInfo, type DecoderShape, decoderShape, gatedMlp,
  partialRotaryDims, projection, rotaryDecoderFeeds,
} from './decoder-blocks.js';
import { layerNormLayer } from './layers.js';
import { ropeFromConfig, type RopeSpec } from './rope.js';

const ROPE_TYPES = new Set(['default', 'linear', 'dynamic']);

interface StableLmSpec extends DecoderShape {
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
  const shape = decoderShape(config);
  const rope = ropeFromConfig(config, shape.headDim, partialRotaryDims(config, shape.headDim, 0.25));
  checkRopeScaling(config, rope.scaling, ROPE_TYPES);
  return {
    ...shape,
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
  return decoderInfo(s, { scale: 1 / Math.sqrt(s.headDim) });
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

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = stableLmSpec(config);
  const norm = (x: Value, prefix: string): Promise<Value> => layerNormLayer(ctx, x, prefix, s.eps);
  await buildLlamaStyleModel(ctx, {
    ...s,
    norm,
    scale: 1 / Math.sqrt(s.headDim), scaleStyle: 'scores-div',
    parts: (at) => ({
      project: (y, p) => projection(ctx, y, p.prefix, s.qkvBias),
      // qk_layernorm: queries and keys normalised per head before the rotation.
      split: async (y, p) => {
        const heads = splitHeads(g, y, p.heads, s.headDim);
        return s.qkNorm && p.name !== 'v_proj' ? perHeadNorm(ctx, s, heads, `${at.prefix}.self_attn.${p.name === 'q_proj' ? 'q' : 'k'}_layernorm`, p.heads) : heads;
      },
      outBias: false,
      // use_parallel_residual: x + attn(ln(x)) + mlp(ln(x)).
      parallel: s.parallel,
      mlp: (h, tap) => gatedMlp(ctx, h, { prefix: `${at.prefix}.mlp`, act: s.act }, tap),
    }),
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  return rotaryDecoderFeeds(stableLmSpec(config), inputs);
}

export const stablelmFamily: Architecture = { modelTypes: ['stablelm'], describe, build, feeds };
