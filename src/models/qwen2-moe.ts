/**
 * Qwen2-MoE: a Qwen2 decoder (GQA, RoPE, RMSNorm, q/k/v biases) whose MLP is, in the layers
 * transformers makes sparse, a mixture of experts plus a shared expert, as Qwen2MoeSparseMoeBlock
 * computes it:
 *
 *   p = softmax(gate(h)) over num_experts; keep the top num_experts_per_tok of p (divided by their
 *   sum when norm_topk_prob); out = Σ_e w_e · expert_e(h) + sigmoid(shared_expert_gate(h)) · shared_expert(h)
 *   with expert(x) = down(act(gate(x)) · up(x)) and w_e = 0 for experts not routed to.
 *
 * Layers listed in mlp_only_layers, or not on the decoder_sparse_step grid, have a plain MLP of
 * intermediate_size. The routing is inside the graph: every expert runs on every token (dense)
 * and the outputs are added in expert order with the top-k weights (zeros elsewhere), which is
 * what index_add_ in expert order gives in float32 (adding an exact zero changes nothing).
 *
 * Graph inputs: `input_ids`, `rope_cos`/`rope_sin` [1, 1, seq, headDim], `attention_bias`
 * [1, 1, seq, keys] (plus `attention_bias_sliding` when sliding-window and full layers are mixed).
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { causalMaskInput, splitHeads } from './attention.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import type { ModelConfig } from './config.js';
import { mixtureOfExperts, preNormBlock, requiredBias, rmsNormLayer } from './layers.js';
import { causalMask } from './masks.js';
import { applyRotary, ropeFromConfig, type RopeSpec, type Rotary, rotaryFeeds, rotaryInputs } from './rope.js';
import { stackScoring } from './scoring.js';

interface Qwen2MoeSpec {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  act: string;
  experts: number;
  topK: number;
  normTopK: boolean;
  /** Per layer: a sparse MoE block (true) or a plain MLP of intermediate_size (false). */
  sparse: boolean[];
  tied: boolean;
  maxPositions: number;
  /** Sliding window of each layer (query i sees keys j with i − w < j ≤ i), null for full causal attention. */
  windows: (number | null)[];
  rope: RopeSpec;
}

function qwen2MoeSpec(config: ModelConfig): Qwen2MoeSpec {
  const hidden = config.int('hidden_size', 2048);
  const heads = config.int('num_attention_heads', 16);
  const layers = config.int('num_hidden_layers', 24);
  const kvHeads = config.int('num_key_value_heads', heads);
  if (!config.has('head_dim') && hidden % heads !== 0) {
    throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads} (and there is no head_dim)`);
  }
  const headDim = config.int('head_dim', hidden / heads);
  if (heads % kvHeads !== 0) {
    throw new AttnscopeError(`${config.source}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  }
  if (headDim % 2 !== 0) throw new AttnscopeError(`${config.source}: head_dim ${headDim} should be even for rotary embeddings`);
  const experts = config.int('num_experts', 60);
  const topK = config.int('num_experts_per_tok', 4);
  if (experts < 0) throw new AttnscopeError(`${config.source}: num_experts should be ≥ 0, got ${experts}`);
  if (experts > 0 && (topK < 1 || topK > experts)) {
    throw new AttnscopeError(`${config.source}: num_experts_per_tok should be in 1…${experts} (num_experts), got ${topK}`);
  }
  const step = config.int('decoder_sparse_step', 1);
  if (step < 1) throw new AttnscopeError(`${config.source}: decoder_sparse_step should be ≥ 1, got ${step}`);
  const rawOnly = config.raw.mlp_only_layers;
  if (rawOnly !== undefined && rawOnly !== null && !(Array.isArray(rawOnly) && rawOnly.every((v) => Number.isInteger(v)))) {
    throw new AttnscopeError(`${config.source}: mlp_only_layers should be a list of layer indices`);
  }
  const mlpOnly = new Set<number>(Array.isArray(rawOnly) ? (rawOnly as number[]) : []);
  // Qwen2MoeDecoderLayer: sparse unless listed in mlp_only_layers, when there are experts and (i + 1) % step == 0.
  const sparse = Array.from({ length: layers }, (_, i) => !mlpOnly.has(i) && experts > 0 && (i + 1) % step === 0);
  const maxPositions = config.int('max_position_embeddings', 32768);
  const rope = ropeFromConfig(config, headDim);
  if (rope.scaling) throw new AttnscopeError(`${config.source}: rope_scaling is not supported for qwen2_moe`);
  return {
    hidden,
    layers,
    heads,
    kvHeads,
    headDim,
    eps: config.num('rms_norm_eps', 1e-6),
    act: config.str('hidden_act', 'silu'),
    experts,
    topK,
    normTopK: config.bool('norm_topk_prob', false),
    sparse,
    tied: config.bool('tie_word_embeddings', false),
    maxPositions,
    windows: readWindows(config, layers, maxPositions),
    rope,
  };
}

/** Per-layer sliding windows as for Qwen2: only with use_sliding_window, on layers ≥ max_window_layers. */
function readWindows(config: ModelConfig, layers: number, maxPositions: number): (number | null)[] {
  const configured = config.has('sliding_window') ? config.int('sliding_window') : null;
  const window = config.bool('use_sliding_window', false) ? configured : null;
  if (window !== null && window < 1) throw new AttnscopeError(`${config.source}: sliding_window should be ≥ 1, got ${window}`);
  const from = config.int('max_window_layers', 28);
  // A window at least as long as any input changes nothing.
  return Array.from({ length: layers }, (_, i) => (window !== null && i >= from && window < maxPositions ? window : null));
}

const FULL_MASK = 'attention_bias';
const SLIDING_MASK = 'attention_bias_sliding';

/** The mask input each layer reads: `attention_bias`, or `attention_bias_sliding` for sliding layers when both kinds exist. */
function maskNames(windows: readonly (number | null)[]): string[] {
  const uniform = new Set(windows).size <= 1;
  return windows.map((w) => (uniform || w === null ? FULL_MASK : SLIDING_MASK));
}

function describe(config: ModelConfig): ArchitectureInfo {
  const s = qwen2MoeSpec(config);
  return {
    kind: 'decoder',
    numLayers: s.layers,
    numHeads: s.heads,
    numKeyValueHeads: s.kvHeads,
    headDim: s.headDim,
    maxPositions: s.maxPositions,
    stacks: { self: s.layers },
    scoring: { self: stackScoring(s.layers, { scale: s.headDim ** -0.5, causal: true, windows: s.windows }) },
    // Routed layers only (none when num_experts is 0: the model is then dense).
    ...(s.sparse.some(Boolean)
      ? { routing: { experts: s.experts, topK: s.topK, normalized: s.normTopK, layers: s.sparse.flatMap((sparse, l) => (sparse ? [l] : [])) } }
      : {}),
    contributions: { norm: 'pre' },
  };
}

// --- graph pieces ------------------------------------------------------------------------

async function linear(ctx: BuildContext, x: Value, prefix: string): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`));
}

/** Linear layer that always has a bias (Qwen2's q/k/v projections). */
async function biasedLinear(ctx: BuildContext, x: Value, prefix: string): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`), await requiredBias(ctx, prefix));
}

/** Qwen2MoeMLP: down(act(gate(x)) · up(x)). */
async function mlp(ctx: BuildContext, act: string, x: Value, prefix: string, tap: (activation: Value) => Value = (a) => a): Promise<Value> {
  const { g } = ctx;
  const gate = activation(g, act, await linear(ctx, x, `${prefix}.gate_proj`));
  return linear(ctx, tap(g.mul(gate, await linear(ctx, x, `${prefix}.up_proj`))), `${prefix}.down_proj`);
}

async function sparseMoe(ctx: BuildContext, s: Qwen2MoeSpec, h: Value, prefix: string, layer: number): Promise<Value> {
  const { g } = ctx;
  const routed = await mixtureOfExperts(ctx, h, `${prefix}.gate`, layer, s.experts, s.topK, s.normTopK, (e) => mlp(ctx, s.act, h, `${prefix}.experts.${e}`));
  const shared = g.mul(g.sigmoid(await linear(ctx, h, `${prefix}.shared_expert_gate`)), await mlp(ctx, s.act, h, `${prefix}.shared_expert`));
  return g.add(routed, shared);
}

async function decoderLayer(
  ctx: BuildContext, s: Qwen2MoeSpec, x: Value, prefix: string, layer: number, rotary: Rotary, mask: Value,
): Promise<Value> {
  const { g } = ctx;
  const a = `${prefix}.self_attn`;
  const m = `${prefix}.mlp`;
  return preNormBlock(ctx, x, {
    layer, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim,
    scale: s.headDim ** -0.5, scaleStyle: 'scores-mul', mask, mlpRowBands: false,
    inputNorm: (y) => rmsNormLayer(ctx, y, `${prefix}.input_layernorm`, s.eps),
    qkv: async (h) => ({
      q: applyRotary(g, splitHeads(g, await biasedLinear(ctx, h, `${a}.q_proj`), s.heads, s.headDim), rotary.cos, rotary.sin, s.rope),
      k: applyRotary(g, splitHeads(g, await biasedLinear(ctx, h, `${a}.k_proj`), s.kvHeads, s.headDim), rotary.cos, rotary.sin, s.rope),
      v: splitHeads(g, await biasedLinear(ctx, h, `${a}.v_proj`), s.kvHeads, s.headDim),
    }),
    outProj: `${a}.o_proj`,
    outBias: null,
    postNorm: (y) => rmsNormLayer(ctx, y, `${prefix}.post_attention_layernorm`, s.eps),
    // A dense layer's MLP activation is tapped; routed layers' experts are not.
    mlp: (h, tap) => (s.sparse[layer] ? sparseMoe(ctx, s, h, m, layer) : mlp(ctx, s.act, h, m, tap)),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = qwen2MoeSpec(config);
  const base = ctx.findPrefix(['model.', ''], 'embed_tokens.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const rotary = rotaryInputs(g, s.rope);
  const names = maskNames(s.windows);
  const masks = new Map<string, Value>();
  names.forEach((name, l) => masks.has(name) || masks.set(name, causalMaskInput(ctx, name, s.windows[l]!)));
  const embed = await ctx.weight(`${base}embed_tokens.weight`);
  let x = g.gather(embed, ids);
  tapEmbeddings(ctx, 'self', { token: x });
  for (let l = 0; l < s.layers; l++) x = await decoderLayer(ctx, s, x, `${base}layers.${l}`, l, rotary, masks.get(names[l]!)!);
  x = await rmsNormLayer(ctx, x, `${base}norm`, s.eps);
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  const head = async (): Promise<Value> => (!s.tied && ctx.hasWeight('lm_head.weight') ? ctx.weight('lm_head.weight') : embed);
  if (ctx.taps.logits) g.output(g.linear(x, await head()), 'logits');
  await tapLogitLens(ctx, 'self', async (h) => g.linear(await rmsNormLayer(ctx, h, `${base}norm`, s.eps), await head()));
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const s = qwen2MoeSpec(config);
  const n = inputs.inputIds.length;
  const pastLength = inputs.pastLength ?? 0;
  const out: Record<string, RuntimeTensor> = {
    input_ids: int64Tensor(inputs.inputIds),
    ...rotaryFeeds(s.rope, n, pastLength),
  };
  const names = maskNames(s.windows);
  s.windows.forEach((w, l) => {
    out[names[l]!] ??= causalMask(n, { pastLength, window: w ?? undefined });
  });
  return out;
}

export const qwen2MoeFamily: Architecture = {
  modelTypes: ['qwen2_moe'],
  describe,
  build,
  feeds,
};
