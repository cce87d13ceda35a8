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
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { causalMaskInput, splitHeads } from './attention.js';
import { preNormBlock } from './layers.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import type { ModelConfig } from './config.js';
import { causalMask } from './masks.js';
import { stackScoring } from './scoring.js';
import { applyRotary, ropeFromConfig, ropeTables, type RopeSpec } from './rope.js';

/** Everything the graph and the feeds need, read once from config.json with HF's defaults. */
export interface LlamaSpec {
  modelType: string;
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
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

function ropeType(scaling: Readonly<Record<string, unknown>> | undefined): string {
  return scaling ? String(scaling.rope_type ?? scaling.type ?? 'default') : 'default';
}

function readRope(config: ModelConfig, headDim: number): RopeSpec {
  const spec = ropeFromConfig(config, headDim);
  // transformers 5 writes the scaling into `rope_parameters` (with rope_theta) instead of `rope_scaling`.
  const params = config.object('rope_parameters');
  const scaling = spec.scaling ?? (params && ropeType(params) !== 'default' ? params : undefined);
  const type = ropeType(scaling);
  if (!ROPE_TYPES.has(type)) {
    throw new AttnscopeError(`${config.source}: rope scaling type '${type}' is not supported (supported: ${[...ROPE_TYPES].join(', ')})`);
  }
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
  const hidden = config.int('hidden_size');
  const heads = config.int('num_attention_heads');
  const layers = config.int('num_hidden_layers');
  const kvHeads = config.int('num_key_value_heads', modelType === 'mistral' ? 8 : heads);
  // Without an explicit head_dim it is hidden_size / num_attention_heads, which must divide.
  if (!gemma && !config.has('head_dim') && hidden % heads !== 0) {
    throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads} (and there is no head_dim)`);
  }
  const headDim = config.int('head_dim', gemma ? 256 : hidden / heads);
  if (heads % kvHeads !== 0) {
    throw new AttnscopeError(`${config.source}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  }
  if (headDim % 2 !== 0) throw new AttnscopeError(`${config.source}: head_dim ${headDim} should be even for rotary embeddings`);
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
  return {
    kind: 'decoder',
    numLayers: s.layers,
    numHeads: s.heads,
    numKeyValueHeads: s.kvHeads,
    headDim: s.headDim,
    maxPositions: s.maxPositions,
    stacks: { self: s.layers },
    // q·k · head_dim^-0.5 (Gemma's explicit head_dim too), causal, with each layer's sliding window.
    scoring: { self: stackScoring(s.layers, { scale: s.headDim ** -0.5, causal: true, windows: s.windows }) },
    contributions: { norm: 'pre' },
  };
}

// --- masks -------------------------------------------------------------------------------

const FULL_MASK = 'attention_bias';
const SLIDING_MASK = 'attention_bias_sliding';

/**
 * The graph input carrying each layer's mask: one `attention_bias` when all layers share the same
 * pattern; with full and sliding layers mixed, the sliding ones read `attention_bias_sliding`.
 */
function maskInputs(windows: readonly (number | null)[]): { perLayer: string[]; windows: Map<string, number | null> } {
  const distinct = [...new Set(windows)];
  if (distinct.length > 2 || (distinct.length === 2 && !distinct.includes(null))) {
    throw new AttnscopeError(`layers use several different sliding windows (${distinct.join(', ')}); not supported`);
  }
  const uniform = distinct.length <= 1;
  const perLayer = windows.map((w) => (uniform || w === null ? FULL_MASK : SLIDING_MASK));
  const map = new Map<string, number | null>();
  windows.forEach((w, i) => map.set(perLayer[i]!, w));
  return { perLayer, windows: map };
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

async function linear(ctx: BuildContext, x: Value, prefix: string, bias: boolean): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`), bias ? await ctx.weight(`${prefix}.bias`) : undefined);
}

export interface Rotary {
  cos: Value;
  sin: Value;
}

/**
 * Per-head queries [1, heads, seq, headDim] and keys/values [1, kvHeads, seq, headDim] of one
 * layer for the (normalised) hidden states `h`, with the rotation applied to q and k. A
 * key/value cache would concatenate past keys/values onto what this returns.
 */
export async function projectQkv(
  ctx: BuildContext, s: LlamaSpec, h: Value, prefix: string, rotary: Rotary,
): Promise<{ q: Value; k: Value; v: Value }> {
  const { g } = ctx;
  const q = splitHeads(g, await linear(ctx, h, `${prefix}.q_proj`, s.qkvBias), s.heads, s.headDim);
  const k = splitHeads(g, await linear(ctx, h, `${prefix}.k_proj`, s.qkvBias), s.kvHeads, s.headDim);
  const v = splitHeads(g, await linear(ctx, h, `${prefix}.v_proj`, s.qkvBias), s.kvHeads, s.headDim);
  return {
    q: applyRotary(g, q, rotary.cos, rotary.sin, s.rope),
    k: applyRotary(g, k, rotary.cos, rotary.sin, s.rope),
    v,
  };
}

/** SwiGLU / GeGLU feed-forward: down(act(gate(x)) · up(x)). */
async function mlp(ctx: BuildContext, s: LlamaSpec, x: Value, prefix: string, tap: (activation: Value) => Value): Promise<Value> {
  const { g } = ctx;
  const gate = activation(g, s.act, await linear(ctx, x, `${prefix}.gate_proj`, s.mlpBias));
  const up = await linear(ctx, x, `${prefix}.up_proj`, s.mlpBias);
  return linear(ctx, tap(g.mul(gate, up)), `${prefix}.down_proj`, s.mlpBias);
}

async function decoderLayer(
  ctx: BuildContext, s: LlamaSpec, x: Value, prefix: string, layer: number, rotary: Rotary, mask: Value,
): Promise<Value> {
  return preNormBlock(ctx, x, {
    layer, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim,
    scale: s.headDim ** -0.5, scaleStyle: 'scores-mul', mask,
    inputNorm: (y) => rmsNorm(ctx, s, y, `${prefix}.input_layernorm`),
    qkv: (h) => projectQkv(ctx, s, h, `${prefix}.self_attn`, rotary),
    outProj: `${prefix}.self_attn.o_proj`,
    outBias: s.outBias ? await ctx.weight(`${prefix}.self_attn.o_proj.bias`) : null,
    postNorm: (y) => rmsNorm(ctx, s, y, `${prefix}.post_attention_layernorm`),
    mlp: (h, tap) => mlp(ctx, s, h, `${prefix}.mlp`, tap),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = llamaSpec(config);
  const base = ctx.findPrefix(['model.', ''], 'embed_tokens.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const rotary: Rotary = {
    cos: g.input('rope_cos', 'float32', [1, 1, 'seq', s.rope.rotaryDims]),
    sin: g.input('rope_sin', 'float32', [1, 1, 'seq', s.rope.rotaryDims]),
  };
  const masks = maskInputs(s.windows);
  const maskValues = new Map<string, Value>();
  for (const [name, window] of masks.windows) maskValues.set(name, causalMaskInput(ctx, name, window));

  const embed = await ctx.weight(`${base}embed_tokens.weight`);
  let x = g.gather(embed, ids);
  tapEmbeddings(ctx, 'self', { token: x });
  if (s.embedScale !== null) x = g.mul(x, g.scalar(s.embedScale));
  for (let l = 0; l < s.layers; l++) {
    x = await decoderLayer(ctx, s, x, `${base}layers.${l}`, l, rotary, maskValues.get(masks.perLayer[l]!)!);
  }
  x = await rmsNorm(ctx, s, x, `${base}norm`);
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  const head = async (): Promise<Value> => (!s.tied && ctx.hasWeight('lm_head.weight') ? ctx.weight('lm_head.weight') : embed);
  if (ctx.taps.logits) g.output(g.linear(x, await head()), 'logits');
  await tapLogitLens(ctx, 'self', async (h) => g.linear(await rmsNorm(ctx, s, h, `${base}norm`), await head()));
}

/** Feeds for `inputIds` at positions pastLength, pastLength + 1, ... (pastLength > 0: incremental decoding). */
export function llamaFeeds(s: LlamaSpec, inputIds: readonly number[], pastLength = 0): Record<string, RuntimeTensor> {
  const n = inputIds.length;
  const positions = Array.from({ length: n }, (_, i) => pastLength + i);
  const { cos, sin } = ropeTables(s.rope, positions);
  const dims = [1, 1, n, s.rope.rotaryDims];
  const feeds: Record<string, RuntimeTensor> = {
    input_ids: int64Tensor(inputIds),
    rope_cos: { type: 'float32', dims, data: cos },
    rope_sin: { type: 'float32', dims, data: sin },
  };
  for (const [name, window] of maskInputs(s.windows).windows) {
    feeds[name] = causalMask(n, { pastLength, window: window ?? undefined });
  }
  return feeds;
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  return llamaFeeds(llamaSpec(config), inputs.inputIds, inputs.pastLength ?? 0);
}

export const llamaFamily: Architecture = {
  modelTypes: MODEL_TYPES,
  describe,
  build,
  feeds,
};
