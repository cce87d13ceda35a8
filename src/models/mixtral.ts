/**
 * Mixtral: a Llama-like pre-norm decoder (GQA, RoPE, RMSNorm, sliding window when set) whose MLP
 * is a sparse mixture of experts, as transformers' MixtralSparseMoeBlock computes it:
 *
 *   p = softmax(gate(h)) over num_local_experts; keep the top num_experts_per_tok of p, divide them
 *   by their sum; out = Σ_e w_e · w2(act(w1(h)) · w3(h)) with w_e = 0 for experts not routed to.
 *
 * The routing is inside the graph: every expert runs on every token (dense) and the outputs are
 * added in expert order with the renormalised top-k weights (zeros elsewhere), which is what
 * index_add_ in expert order gives in float32 (adding an exact zero changes nothing).
 *
 * Graph inputs: `input_ids`, `rope_cos`/`rope_sin` [1, 1, seq, headDim], `attention_bias` [1, 1, seq, keys].
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { causalMaskInput, splitHeads } from './attention.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import type { ModelConfig } from './config.js';
import { mixtureOfExperts, preNormBlock, rmsNormLayer } from './layers.js';
import { causalMask } from './masks.js';
import { applyRotary, ropeFromConfig, type RopeSpec, type Rotary, rotaryFeeds, rotaryInputs } from './rope.js';
import { stackScoring } from './scoring.js';

interface MixtralSpec {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  eps: number;
  act: string;
  experts: number;
  topK: number;
  tied: boolean;
  maxPositions: number;
  window: number | null;
  rope: RopeSpec;
}

function mixtralSpec(config: ModelConfig): MixtralSpec {
  const hidden = config.int('hidden_size', 4096);
  const heads = config.int('num_attention_heads', 32);
  const layers = config.int('num_hidden_layers', 32);
  const kvHeads = config.int('num_key_value_heads', 8);
  if (!config.has('head_dim') && hidden % heads !== 0) {
    throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads} (and there is no head_dim)`);
  }
  const headDim = config.int('head_dim', hidden / heads);
  if (heads % kvHeads !== 0) {
    throw new AttnscopeError(`${config.source}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  }
  if (headDim % 2 !== 0) throw new AttnscopeError(`${config.source}: head_dim ${headDim} should be even for rotary embeddings`);
  const experts = config.int('num_local_experts', 8);
  const topK = config.int('num_experts_per_tok', 2);
  if (experts < 1) throw new AttnscopeError(`${config.source}: num_local_experts should be ≥ 1, got ${experts}`);
  if (topK < 1 || topK > experts) {
    throw new AttnscopeError(`${config.source}: num_experts_per_tok should be in 1…${experts} (num_local_experts), got ${topK}`);
  }
  const maxPositions = config.int('max_position_embeddings', 4096 * 32);
  const configured = config.has('sliding_window') ? config.int('sliding_window') : null;
  if (configured !== null && configured < 1) throw new AttnscopeError(`${config.source}: sliding_window should be ≥ 1, got ${configured}`);
  const rope = ropeFromConfig(config, headDim);
  if (rope.scaling) throw new AttnscopeError(`${config.source}: rope_scaling is not supported for mixtral`);
  return {
    hidden,
    layers,
    heads,
    kvHeads,
    headDim,
    eps: config.num('rms_norm_eps', 1e-5),
    act: config.str('hidden_act', 'silu'),
    experts,
    topK,
    tied: config.bool('tie_word_embeddings', false),
    maxPositions,
    // MixtralModel builds a sliding-window causal mask for every layer when sliding_window is set;
    // a window at least as long as any input changes nothing.
    window: configured !== null && configured < maxPositions ? configured : null,
    rope,
  };
}

function describe(config: ModelConfig): ArchitectureInfo {
  const s = mixtralSpec(config);
  return {
    kind: 'decoder',
    numLayers: s.layers,
    numHeads: s.heads,
    numKeyValueHeads: s.kvHeads,
    headDim: s.headDim,
    maxPositions: s.maxPositions,
    stacks: { self: s.layers },
    scoring: { self: stackScoring(s.layers, { scale: s.headDim ** -0.5, causal: true, windows: new Array<number | null>(s.layers).fill(s.window) }) },
    // Every layer is routed; the top-k weights are always renormalised.
    routing: { experts: s.experts, topK: s.topK, normalized: true, layers: Array.from({ length: s.layers }, (_, l) => l) },
    contributions: { norm: 'pre' },
  };
}

// --- graph pieces ------------------------------------------------------------------------

async function linear(ctx: BuildContext, x: Value, prefix: string): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`));
}

/** One gated expert: w2(act(w1(x)) · w3(x)). */
async function expert(ctx: BuildContext, act: string, x: Value, prefix: string): Promise<Value> {
  const { g } = ctx;
  const gate = activation(g, act, await linear(ctx, x, `${prefix}.w1`));
  return linear(ctx, g.mul(gate, await linear(ctx, x, `${prefix}.w3`)), `${prefix}.w2`);
}

async function sparseMoe(ctx: BuildContext, s: MixtralSpec, h: Value, prefix: string, layer: number): Promise<Value> {
  return mixtureOfExperts(ctx, h, `${prefix}.gate`, layer, s.experts, s.topK, true, (e) => expert(ctx, s.act, h, `${prefix}.experts.${e}`));
}

async function decoderLayer(
  ctx: BuildContext, s: MixtralSpec, x: Value, prefix: string, layer: number, rotary: Rotary, mask: Value,
): Promise<Value> {
  const { g } = ctx;
  const a = `${prefix}.self_attn`;
  return preNormBlock(ctx, x, {
    layer, heads: s.heads, kvHeads: s.kvHeads, headDim: s.headDim,
    scale: s.headDim ** -0.5, scaleStyle: 'scores-mul', mask, mlpRowBands: false,
    inputNorm: (y) => rmsNormLayer(ctx, y, `${prefix}.input_layernorm`, s.eps),
    qkv: async (h) => ({
      q: applyRotary(g, splitHeads(g, await linear(ctx, h, `${a}.q_proj`), s.heads, s.headDim), rotary.cos, rotary.sin, s.rope),
      k: applyRotary(g, splitHeads(g, await linear(ctx, h, `${a}.k_proj`), s.kvHeads, s.headDim), rotary.cos, rotary.sin, s.rope),
      v: splitHeads(g, await linear(ctx, h, `${a}.v_proj`), s.kvHeads, s.headDim),
    }),
    outProj: `${a}.o_proj`,
    outBias: null,
    postNorm: (y) => rmsNormLayer(ctx, y, `${prefix}.post_attention_layernorm`, s.eps),
    // Routed experts: no single MLP activation to tap.
    mlp: (h) => sparseMoe(ctx, s, h, `${prefix}.block_sparse_moe`, layer),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = mixtralSpec(config);
  const base = ctx.findPrefix(['model.', ''], 'embed_tokens.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const rotary = rotaryInputs(g, s.rope);
  const mask = causalMaskInput(ctx, 'attention_bias', s.window);
  const embed = await ctx.weight(`${base}embed_tokens.weight`);
  let x = g.gather(embed, ids);
  tapEmbeddings(ctx, 'self', { token: x });
  for (let l = 0; l < s.layers; l++) x = await decoderLayer(ctx, s, x, `${base}layers.${l}`, l, rotary, mask);
  x = await rmsNormLayer(ctx, x, `${base}norm`, s.eps);
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  const head = async (): Promise<Value> => (!s.tied && ctx.hasWeight('lm_head.weight') ? ctx.weight('lm_head.weight') : embed);
  if (ctx.taps.logits) g.output(g.linear(x, await head()), 'logits');
  await tapLogitLens(ctx, 'self', async (h) => g.linear(await rmsNormLayer(ctx, h, `${base}norm`, s.eps), await head()));
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const s = mixtralSpec(config);
  const n = inputs.inputIds.length;
  const pastLength = inputs.pastLength ?? 0;
  return {
    input_ids: int64Tensor(inputs.inputIds),
    ...rotaryFeeds(s.rope, n, pastLength),
    attention_bias: causalMask(n, { pastLength, window: s.window ?? undefined }),
  };
}

export const mixtralFamily: Architecture = {
  modelTypes: ['mixtral'],
  describe,
  build,
  feeds,
};
