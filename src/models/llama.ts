/**
 * The Llama family of pre-norm decoders, as transformers' eager implementations compute them:
 * llama, mistral (sliding window), qwen2 (q/k/v biases, per-layer sliding window) and gemma
 * (explicit head_dim, embeddings × √hidden, (1 + w) RMSNorm, gelu-tanh MLP).
 *
 *   x = embed(ids) [× √hidden for gemma]
 *   per layer: x += o_proj(attn(rope(q), rope(k), v)) of rmsNorm(x); x += down(act(gate(h)) · up(h)) of h = rmsNorm(x)
 *   last_hidden_state = rmsNorm(x); logits = last_hidden_state · (lm_head | embed)ᵀ
 *
 * Graph inputs: `input_ids`, `rope_cos`/`rope_sin` [1, 1, seq, headDim], and `attention_bias`
 * [1, 1, seq, seq] (plus `attention_bias_sliding` when sliding-window and full layers are mixed).
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import type { ModelConfig } from './config.js';
import {
  buildLlamaStyleModel, checkRopeScaling, decoderInfo, type DecoderShape, decoderShape, gatedMlp, projection,
  ropeScalingType, rotaryDecoderFeeds,
} from './decoder-blocks.js';
import { ropeFromConfig, type RopeSpec } from './rope.js';

/** Everything the graph and the feeds need, read once from config.json with HF's defaults. */
export interface LlamaSpec extends DecoderShape {
  modelType: string;
  eps: number;
  act: string;
  /** Gemma: RMSNorm multiplies by (1 + weight) instead of weight. */
  onePlusNormWeight: boolean;
  /** Gemma: embeddings are multiplied by √hidden_size (as a float32 constant). */
  embedScale: number | null;
  qkvBias: boolean;
  outBias: boolean;
  mlpBias: boolean;
  tied: boolean;
  maxPositions: number;
  /** Sliding window of each layer (query i sees keys j with i − w < j ≤ i), null for full causal attention. */
  windows: (number | null)[];
  rope: RopeSpec;
}

const MODEL_TYPES = ['llama', 'mistral', 'qwen2', 'gemma'] as const;

/** HF config-class defaults that differ between the family members. */
const DEFAULTS: Record<string, { maxPositions: number; act: string; tied: boolean; eps: number }> = {
  llama: { maxPositions: 2048, act: 'silu', tied: false, eps: 1e-6 },
  mistral: { maxPositions: 4096 * 32, act: 'silu', tied: false, eps: 1e-6 },
  qwen2: { maxPositions: 32768, act: 'silu', tied: false, eps: 1e-6 },
  gemma: { maxPositions: 8192, act: 'gelu_pytorch_tanh', tied: true, eps: 1e-6 },
};

/** RoPE types whose tables `ropeTables` reproduces (dynamic NTK equals the default up to max_position_embeddings). */
const ROPE_TYPES = new Set(['default', 'linear', 'llama3', 'dynamic']);

function readRope(config: ModelConfig, headDim: number): RopeSpec {
  const spec = ropeFromConfig(config, headDim);
  // transformers 5 writes the scaling into `rope_parameters` (with rope_theta) instead of `rope_scaling`.
  const params = config.object('rope_parameters');
  const scaling = spec.scaling ?? (params && ropeScalingType(params) !== 'default' ? params : undefined);
  checkRopeScaling(config, scaling, ROPE_TYPES);
  return { ...spec, scaling };
}

/** Per-layer sliding windows, as transformers decides them. */
function readWindows(config: ModelConfig, layers: number, maxPositions: number): (number | null)[] {
  const type = config.modelType;
  let windows: (number | null)[] = new Array<number | null>(layers).fill(null);
  const configured = config.has('sliding_window') ? config.int('sliding_window') : null;
  if (type === 'mistral') {
    // MistralModel builds a sliding-window causal mask for every layer whenever sliding_window is set.
    windows = windows.map(() => configured);
  } else if (type === 'qwen2') {
    // Qwen2Config: sliding_window only counts with use_sliding_window; layer_types (explicit, or
    // sliding for layers ≥ max_window_layers) say which layers use it.
    const window = config.bool('use_sliding_window', false) ? configured : null;
    const raw = config.raw.layer_types;
    const layerTypes = Array.isArray(raw)
      ? raw.map(String)
      : Array.from({ length: layers }, (_, i) => (window !== null && i >= config.int('max_window_layers', 28) ? 'sliding_attention' : 'full_attention'));
    if (layerTypes.length !== layers) {
      throw new AttnscopeError(`${config.source}: layer_types has ${layerTypes.length} entries for ${layers} layers`);
    }
    windows = layerTypes.map((t) => (t === 'sliding_attention' ? window : null));
  }
  for (const w of windows) {
    if (w !== null && w < 1) throw new AttnscopeError(`${config.source}: sliding_window should be ≥ 1, got ${w}`);
  }
  // A window at least as long as any input changes nothing.
  return windows.map((w) => (w !== null && w >= maxPositions ? null : w));
}

export function llamaSpec(config: ModelConfig): LlamaSpec {
  const modelType = config.modelType;
  const defaults = DEFAULTS[modelType];
  if (!defaults) throw new AttnscopeError(`${config.source}: model_type '${modelType}' is not a Llama-family model`);
  const gemma = modelType === 'gemma';
  const { hidden, layers, heads, kvHeads, headDim } = decoderShape(config, {
    defaults: { kvHeads: modelType === 'mistral' ? 8 : undefined },
    headDim: { default: gemma ? 256 : undefined },
    evenHeadDim: true,
  });
  if (gemma && config.bool('use_bidirectional_attention', false)) {
    throw new AttnscopeError(`${config.source}: use_bidirectional_attention is not supported`);
  }
  const maxPositions = config.int('max_position_embeddings', defaults.maxPositions);
  // Gemma: transformers 4.38–4.5x read `hidden_activation` (gelu-tanh when unset); later ones `hidden_act`.
  const act = gemma
    ? config.str('hidden_activation', config.str('hidden_act', defaults.act))
    : config.str('hidden_act', defaults.act);
  const attentionBias = config.bool('attention_bias', false);
  return {
    modelType,
    hidden,
    layers,
    heads,
    kvHeads,
    headDim,
    eps: config.num('rms_norm_eps', defaults.eps),
    act,
    onePlusNormWeight: gemma,
    embedScale: gemma ? Math.sqrt(hidden) : null,
    qkvBias: modelType === 'qwen2' || attentionBias,
    outBias: modelType !== 'qwen2' && attentionBias,
    mlpBias: config.bool('mlp_bias', false),
    tied: config.bool('tie_word_embeddings', defaults.tied),
    maxPositions,
    windows: readWindows(config, layers, maxPositions),
    rope: readRope(config, headDim),
  };
}

function describe(config: ModelConfig): ArchitectureInfo {
  const s = llamaSpec(config);
  // q·k · head_dim^-0.5 (Gemma's explicit head_dim too), causal, with each layer's sliding window.
  return decoderInfo(s, { scale: s.headDim ** -0.5, windows: s.windows });
}

// --- graph pieces ------------------------------------------------------------------------

/** RMSNorm: x · rsqrt(mean(x²) + eps), then weight · x (Llama) or x · (1 + weight) (Gemma). */
async function rmsNorm(ctx: BuildContext, s: LlamaSpec, x: Value, prefix: string): Promise<Value> {
  const { g } = ctx;
  const weight = await ctx.weight(`${prefix}.weight`);
  const meanSquare = g.reduceMean(g.mul(x, x), [-1]);
  const normed = g.mul(x, g.reciprocal(g.sqrt(g.add(meanSquare, g.scalar(s.eps)))));
  return s.onePlusNormWeight ? g.mul(normed, g.add(g.scalar(1), weight)) : g.mul(weight, normed);
}

async function build(ctx: BuildContext): Promise<void> {
  const s = llamaSpec(ctx.config);
  const norm = (x: Value, prefix: string): Promise<Value> => rmsNorm(ctx, s, x, prefix);
  await buildLlamaStyleModel(ctx, {
    ...s,
    norm,
    scale: s.headDim ** -0.5, scaleStyle: 'scores-mul',
    parts: (at) => ({
      project: (y, p) => projection(ctx, y, p.prefix, s.qkvBias),
      outBias: s.outBias,
      // SwiGLU / GeGLU: down(act(gate(h)) · up(h)).
      mlp: (h, tap) => gatedMlp(ctx, h, { prefix: `${at.prefix}.mlp`, act: s.act, bias: s.mlpBias }, tap),
    }),
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  return rotaryDecoderFeeds(llamaSpec(config), inputs);
}

export const llamaFamily: Architecture = {
  modelTypes: MODEL_TYPES,
  describe,
  build,
  feeds,
};
