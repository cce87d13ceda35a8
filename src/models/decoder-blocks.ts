/**
 * The plumbing that the rotary decoder-only families (Llama, OLMo, StableLM, StarCoder2, Mixtral,
 * Qwen2-MoE, Cohere, GPT-J, Phi, GPT-NeoX) share, named so that each family file keeps only what
 * its paper says differs:
 *
 * - decoderShape / partialRotaryDims / checkRopeScaling: the attention shape and rotary settings
 *   read from config.json, with the checks every such family makes;
 * - decoderInfo: what such a decoder tells about itself (describe; GPT-2's and OPT's too);
 * - projection, rotaryQkv, gatedMlp: a linear layer with or without a bias, the q/k/v projections
 *   split into heads and rotated, the gated feed-forward down(act(gate(x)) · up(x));
 * - layerMasks / layerMaskFeeds: each layer's causal (or sliding-window) mask input;
 * - decoderTrunk / tiedHead: embeddings → blocks → final norm → LM head, with the taps;
 * - rotaryDecoderFeeds: input ids, rotary tables and masks for a run;
 * - buildLlamaStyle / buildLlamaStyleModel: a whole model with the module names of transformers'
 *   LlamaModel (and LlamaDecoderLayer blocks), which most of these checkpoints use.
 *
 * Model files import these, never another model file.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { ArchitectureInfo, BuildContext, ModelInputs, RoutingInfo } from './architecture.js';
import { causalMaskInput, splitHeads, type AttentionArgs } from './attention.js';
import { checkConfigValue, type ModelConfig } from './config.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import { preNormBlock, type PreNormBlock, rmsNormLayer } from './layers.js';
import { causalMask } from './masks.js';
import { applyRotary, type RopeSpec, type Rotary, rotaryFeeds, rotaryInputs } from './rope.js';
import { stackScoring } from './scoring.js';

// --- config ------------------------------------------------------------------------------------

/** The attention shape of a decoder with (possibly) grouped key/value heads. */
export interface DecoderShape {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

export interface DecoderShapeOptions {
  /** Config-class defaults of hidden_size, num_attention_heads, num_hidden_layers, num_key_value_heads (kvHeads: heads when unset). */
  defaults?: { hidden?: number; heads?: number; layers?: number; kvHeads?: number };
  /**
   * An explicit `head_dim` is read (Llama, Mixtral, Qwen2-MoE), its default given here (Gemma:
   * 256, the divisibility of hidden_size then not required); absent: head_dim = hidden / heads.
   */
  headDim?: { default?: number };
  /** Rotary on the whole head: head_dim must be even. */
  evenHeadDim?: boolean;
}

/** hidden_size, num_attention_heads, num_hidden_layers, num_key_value_heads and the head size, checked. */
export function decoderShape(config: ModelConfig, o: DecoderShapeOptions = {}): DecoderShape {
  const d = o.defaults ?? {};
  const hidden = config.int('hidden_size', d.hidden);
  const heads = config.int('num_attention_heads', d.heads);
  const layers = config.int('num_hidden_layers', d.layers);
  const kvHeads = config.int('num_key_value_heads', d.kvHeads ?? heads);
  let headDim: number;
  if (o.headDim) {
    // Without an explicit head_dim it is hidden_size / num_attention_heads, which must divide.
    if (o.headDim.default === undefined && !config.has('head_dim') && hidden % heads !== 0) {
      throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads} (and there is no head_dim)`);
    }
    headDim = config.int('head_dim', o.headDim.default ?? hidden / heads);
  } else {
    if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
    headDim = hidden / heads;
  }
  if (heads % kvHeads !== 0) {
    throw new AttnscopeError(`${config.source}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  }
  if (o.evenHeadDim && headDim % 2 !== 0) {
    throw new AttnscopeError(`${config.source}: ${o.headDim ? 'head_dim' : 'head size'} ${headDim} should be even for rotary embeddings`);
  }
  return { hidden, layers, heads, kvHeads, headDim };
}

/** The rotated dims of a head under `partial_rotary_factor` (StableLM, Phi): an even number from 2 to the head size. */
export function partialRotaryDims(config: ModelConfig, headDim: number, defaultFactor: number): number {
  const fraction = config.num('partial_rotary_factor', defaultFactor);
  checkConfigValue(config.source, 'partial_rotary_factor', fraction);
  const rotaryDims = Math.trunc(headDim * fraction);
  if (rotaryDims % 2 !== 0 || rotaryDims < 2 || rotaryDims > headDim) {
    throw new AttnscopeError(`${config.source}: partial_rotary_factor ${fraction} gives ${rotaryDims} rotary dims of head size ${headDim}; allowed: an even number from 2 to the head size`);
  }
  return rotaryDims;
}

/** The type of a rope_scaling (or rope_parameters) object: rope_type, else type, else 'default'. */
export function ropeScalingType(scaling: Readonly<Record<string, unknown>> | undefined): string {
  return scaling ? String(scaling.rope_type ?? scaling.type ?? 'default') : 'default';
}

/** Refuses a rope scaling type the family's tables are not computed for. */
export function checkRopeScaling(config: ModelConfig, scaling: Readonly<Record<string, unknown>> | undefined, supported: ReadonlySet<string>): void {
  const type = ropeScalingType(scaling);
  if (!supported.has(type)) {
    throw new AttnscopeError(`${config.source}: rope scaling type '${type}' is not supported (supported: ${[...supported].join(', ')})`);
  }
}

// --- describe ----------------------------------------------------------------------------------

export interface DecoderScoring {
  /** Multiplier of q·k (per layer, or a function of the layer), written as the family's reference computes it (1/√d and d^-0.5 can differ in the last bit). */
  scale: number | ((layer: number) => number);
  /** Sliding window of each layer (null: full causal); omitted: none. */
  windows?: readonly (number | null)[];
  /** Mixture-of-experts layers, when there are any. */
  routing?: RoutingInfo;
  /** Where the blocks normalise (default pre-norm: x + attn(norm(x))), with the post-LN epsilon. */
  contributions?: ArchitectureInfo['contributions'];
}

/** What a decoder-only model with one causal self-attention stack tells about itself. */
export function decoderInfo(s: Omit<DecoderShape, 'hidden'> & { maxPositions: number }, o: DecoderScoring): ArchitectureInfo {
  return {
    kind: 'decoder',
    numLayers: s.layers,
    numHeads: s.heads,
    numKeyValueHeads: s.kvHeads,
    headDim: s.headDim,
    maxPositions: s.maxPositions,
    stacks: { self: s.layers },
    scoring: { self: stackScoring(s.layers, { scale: o.scale, causal: true, ...(o.windows ? { windows: o.windows } : {}) }) },
    ...(o.routing ? { routing: o.routing } : {}),
    contributions: o.contributions ?? { norm: 'pre' },
  };
}

// --- graph pieces ------------------------------------------------------------------------------

/** nn.Linear `prefix` with its bias when the family's config gives it one (`bias`), else without. */
export async function projection(ctx: BuildContext, x: Value, prefix: string, bias: boolean): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`), bias ? await ctx.weight(`${prefix}.bias`) : undefined);
}

export type QkvName = 'q_proj' | 'k_proj' | 'v_proj';

/** One of the q/k/v projections: its module name, full prefix and number of heads. */
export interface QkvProjection {
  name: QkvName;
  /** `<attention module>.<name>` (its `.weight`, `.bias`). */
  prefix: string;
  heads: number;
}

export interface RotaryQkv {
  /** The attention module (`…layers.<l>.self_attn`): projections `<prefix>.q_proj`, `k_proj`, `v_proj`. */
  prefix: string;
  heads: number;
  kvHeads: number;
  headDim: number;
  rope: RopeSpec;
  rotary: Rotary;
  /** One projection [1, seq, heads·headDim] of h: its bias, clipping, per-head norm before the split. */
  project(h: Value, p: QkvProjection): Promise<Value>;
  /** The per-head form [1, heads, seq, headDim] of a projection (default splitHeads): per-head q/k norms after the split. */
  split?(x: Value, p: QkvProjection): Promise<Value>;
}

/**
 * Queries [1, heads, seq, headDim] and keys/values [1, kvHeads, seq, headDim] of one layer for the
 * normed hidden states `h`, q and k rotated: what enters q·k (a key/value cache holds k and v).
 */
export async function rotaryQkv(ctx: BuildContext, h: Value, a: RotaryQkv): Promise<{ q: Value; k: Value; v: Value }> {
  const { g } = ctx;
  const perHead = async (name: QkvName, heads: number): Promise<Value> => {
    const p: QkvProjection = { name, prefix: `${a.prefix}.${name}`, heads };
    const x = await a.project(h, p);
    return a.split ? a.split(x, p) : splitHeads(g, x, heads, a.headDim);
  };
  const q = await perHead('q_proj', a.heads);
  const k = await perHead('k_proj', a.kvHeads);
  const v = await perHead('v_proj', a.kvHeads);
  return { q: applyRotary(g, q, a.rotary.cos, a.rotary.sin, a.rope), k: applyRotary(g, k, a.rotary.cos, a.rotary.sin, a.rope), v };
}

export interface GatedMlp {
  /** The MLP module (`…layers.<l>.mlp`, an expert). */
  prefix: string;
  act: string;
  /** Names of the gate, up and down projections (default gate_proj, up_proj, down_proj; Mixtral's experts w1, w3, w2). */
  names?: readonly [string, string, string];
  /** Biases on all three (Llama's mlp_bias). */
  bias?: boolean;
}

/** The gated feed-forward (SwiGLU, GeGLU) down(act(gate(x)) · up(x)); `tap` marks its hidden activation. */
export async function gatedMlp(ctx: BuildContext, x: Value, m: GatedMlp, tap: (activation: Value) => Value = (a) => a): Promise<Value> {
  const { g } = ctx;
  const [gate, up, down] = m.names ?? ['gate_proj', 'up_proj', 'down_proj'];
  const bias = m.bias ?? false;
  const gated = activation(g, m.act, await projection(ctx, x, `${m.prefix}.${gate}`, bias));
  return projection(ctx, tap(g.mul(gated, await projection(ctx, x, `${m.prefix}.${up}`, bias))), `${m.prefix}.${down}`, bias);
}

// --- masks -------------------------------------------------------------------------------------

const FULL_MASK = 'attention_bias';
const SLIDING_MASK = 'attention_bias_sliding';

/**
 * The graph input carrying each layer's mask: one `attention_bias` when all layers share one
 * window (or none); with full and sliding layers mixed, the sliding ones read
 * `attention_bias_sliding`. Returns each layer's input name and each input's window.
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

/** The mask each layer's attention adds, for these per-layer sliding windows (null: full causal). */
export function layerMasks(ctx: BuildContext, windows: readonly (number | null)[]): Value[] {
  const masks = maskInputs(windows);
  const values = new Map<string, Value>();
  for (const [name, window] of masks.windows) values.set(name, causalMaskInput(ctx, name, window));
  return masks.perLayer.map((name) => values.get(name)!);
}

/** The feeds of layerMasks for `n` queries after `pastLength` cached keys. */
export function layerMaskFeeds(windows: readonly (number | null)[], n: number, pastLength: number): Record<string, RuntimeTensor> {
  const feeds: Record<string, RuntimeTensor> = {};
  for (const [name, window] of maskInputs(windows).windows) feeds[name] = causalMask(n, { pastLength, window: window ?? undefined });
  return feeds;
}

/** Per-layer windows, all null (full causal) when the family has none. */
function windowsOf(s: { layers: number; windows?: readonly (number | null)[] }): readonly (number | null)[] {
  return s.windows ?? new Array<null>(s.layers).fill(null);
}

/**
 * Feeds of a rotary decoder: `input_ids`, the rotary tables and the masks of layerMasks (with the
 * sliding `windows` of each layer, none when absent), at positions past, past + 1, …
 */
export function rotaryDecoderFeeds(s: { layers: number; rope: RopeSpec; windows?: readonly (number | null)[] }, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const n = inputs.inputIds.length;
  const past = inputs.pastLength ?? 0;
  return { input_ids: int64Tensor(inputs.inputIds), ...rotaryFeeds(s.rope, n, past), ...layerMaskFeeds(windowsOf(s), n, past) };
}

// --- the whole stack ---------------------------------------------------------------------------

export interface DecoderTrunk {
  /** The token embedding table (`model.embed_tokens.weight`). */
  embedding: string;
  layers: number;
  /** Multiplier of the embeddings after they are tapped (Gemma: √hidden), or null. */
  embedScale?: number | null;
  /** Layer `layer`'s block on the residual stream. */
  block(x: Value, layer: number): Promise<Value>;
  /** The norm after the last block (also before the logit lens' readout). */
  finalNorm(x: Value): Promise<Value>;
  /** Logits of normed hidden states; `embed` is the token embedding table (tied heads). */
  readout(h: Value, embed: Value): Promise<Value>;
}

/**
 * input_ids → embeddings → blocks → final norm → logits, with the embedding, last-hidden-state,
 * logits and logit-lens taps.
 */
export async function decoderTrunk(ctx: BuildContext, t: DecoderTrunk): Promise<void> {
  const { g } = ctx;
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const embed = await ctx.weight(t.embedding);
  let x = g.gather(embed, ids);
  tapEmbeddings(ctx, 'self', { token: x });
  if (t.embedScale != null) x = g.mul(x, g.scalar(t.embedScale));
  for (let l = 0; l < t.layers; l++) x = await t.block(x, l);
  x = await t.finalNorm(x);
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  if (ctx.taps.logits) g.output(await t.readout(x, embed), 'logits');
  await tapLogitLens(ctx, 'self', async (h) => t.readout(await t.finalNorm(h), embed));
}

/** The LM head's weight: `lm_head.weight` unless tied (or absent), else the token embeddings. */
export async function tiedHead(ctx: BuildContext, embed: Value, tied: boolean): Promise<Value> {
  return !tied && ctx.hasWeight('lm_head.weight') ? ctx.weight('lm_head.weight') : embed;
}

// --- transformers' LlamaDecoderLayer / LlamaModel layout ---------------------------------------

/** Where a block stands: its layer, module prefix (`model.layers.<l>`), the rotary tables and its mask. */
export interface BlockSite {
  layer: number;
  prefix: string;
  rotary: Rotary;
  mask: Value;
}

/** What differs between the LlamaDecoderLayer-style blocks of one model, per layer. */
export interface LlamaStyleParts {
  /** q_proj, k_proj or v_proj (`<block>.self_attn.<name>`) of the normed input: its bias, clipping, ... */
  project: RotaryQkv['project'];
  /** Per-head q/k norms after the split (default: none). */
  split?: RotaryQkv['split'];
  /** o_proj has a bias. */
  outBias: boolean;
  mlp: PreNormBlock['mlp'];
  mlpRowBands?: boolean;
  /** The MLP beside the attention on the same normed input (no post_attention_layernorm). */
  parallel?: boolean;
}

interface LlamaStyleBlock extends BlockSite, LlamaStyleParts {
  heads: number;
  kvHeads: number;
  headDim: number;
  rope: RopeSpec;
  scale: number;
  scaleStyle: AttentionArgs['scaleStyle'];
  norm(x: Value, prefix: string): Promise<Value>;
}

/**
 * A pre-norm block with the module names of transformers' LlamaDecoderLayer: input_layernorm,
 * self_attn.{q,k,v}_proj (q and k rotated), self_attn.o_proj, post_attention_layernorm, mlp.
 */
async function llamaStyleBlock(ctx: BuildContext, x: Value, b: LlamaStyleBlock): Promise<Value> {
  const a = `${b.prefix}.self_attn`;
  return preNormBlock(ctx, x, {
    layer: b.layer, heads: b.heads, kvHeads: b.kvHeads, headDim: b.headDim,
    scale: b.scale, scaleStyle: b.scaleStyle, mask: b.mask,
    ...(b.mlpRowBands === undefined ? {} : { mlpRowBands: b.mlpRowBands }),
    inputNorm: (y) => b.norm(y, `${b.prefix}.input_layernorm`),
    qkv: (h) => rotaryQkv(ctx, h, { ...b, prefix: a }),
    outProj: `${a}.o_proj`,
    outBias: b.outBias ? await ctx.weight(`${a}.o_proj.bias`) : null,
    ...(b.parallel ? { parallel: true } : { postNorm: (y: Value) => b.norm(y, `${b.prefix}.post_attention_layernorm`) }),
    mlp: b.mlp,
  });
}

export interface LlamaStyleDecoder {
  layers: number;
  rope: RopeSpec;
  /** Sliding window of each layer (null: full causal); omitted: none. */
  windows?: readonly (number | null)[];
  /** The LM head is the token embeddings (else `lm_head.weight` when the checkpoint has it). */
  tied: boolean;
  embedScale?: number | null;
  /** The final norm's module name under `model.` (default `norm`). */
  finalNorm?: string;
  block(x: Value, at: BlockSite): Promise<Value>;
  /** The norm module `prefix` (the final one). */
  norm(x: Value, prefix: string): Promise<Value>;
  /** Logits of the normed hidden states (default: the tied or own LM head without bias). */
  readout?(h: Value, embed: Value): Promise<Value>;
}

/**
 * A whole decoder with the module names of transformers' LlamaModel and its CausalLM head:
 * `model.embed_tokens`, `model.layers.<l>`, `model.norm`, `lm_head`; graph inputs `input_ids`,
 * `rope_cos` / `rope_sin` and the masks of layerMasks.
 */
export async function buildLlamaStyle(ctx: BuildContext, d: LlamaStyleDecoder): Promise<void> {
  const base = ctx.findPrefix(['model.', ''], 'embed_tokens.weight');
  const rotary = rotaryInputs(ctx.g, d.rope);
  const masks = layerMasks(ctx, windowsOf(d));
  const finalNorm = `${base}${d.finalNorm ?? 'norm'}`;
  await decoderTrunk(ctx, {
    embedding: `${base}embed_tokens.weight`,
    layers: d.layers,
    embedScale: d.embedScale ?? null,
    block: (x, layer) => d.block(x, { layer, prefix: `${base}layers.${layer}`, rotary, mask: masks[layer]! }),
    finalNorm: (x) => d.norm(x, finalNorm),
    readout: d.readout ?? (async (h, embed) => ctx.g.linear(h, await tiedHead(ctx, embed, d.tied))),
  });
}

export interface LlamaStyleModel extends Omit<LlamaStyleDecoder, 'block'> {
  heads: number;
  kvHeads: number;
  headDim: number;
  /** The multiplier of q·k and where it is applied, as the family's reference does. */
  scale: number;
  scaleStyle: AttentionArgs['scaleStyle'];
  /** The parts of the block at `at` (its layer and module prefix `model.layers.<l>`). */
  parts(at: BlockSite): LlamaStyleParts;
}

/**
 * buildLlamaStyle with LlamaDecoderLayer-style blocks throughout: input_layernorm,
 * self_attn.{q,k,v}_proj (q and k rotated), self_attn.o_proj, post_attention_layernorm (unless
 * parallel), mlp; `norm` is each norm module, the family's `parts` the rest.
 */
export async function buildLlamaStyleModel(ctx: BuildContext, m: LlamaStyleModel): Promise<void> {
  await buildLlamaStyle(ctx, { ...m, block: (x, at) => llamaStyleBlock(ctx, x, { ...m, ...at, ...m.parts(at) }) });
}

export interface MoeLlamaStyleModel extends Omit<LlamaStyleModel, 'norm' | 'scale' | 'scaleStyle' | 'parts'> {
  /** rms_norm_eps. */
  eps: number;
  /** The q/k/v projections and the (routed or dense) MLP of the block at `at`. */
  parts(at: BlockSite): Pick<LlamaStyleParts, 'project' | 'mlp'>;
}

/**
 * buildLlamaStyleModel for the mixture-of-experts families (Mixtral, Qwen2-MoE): RMSNorm, scores
 * q·kᵀ · headDim^-0.5, o_proj without bias, and the MLP never in row bands (onnxruntime stops
 * the process, SIGFPE, routing a band without rows, as a one-token input gives).
 */
export async function buildMoeLlamaStyleModel(ctx: BuildContext, m: MoeLlamaStyleModel): Promise<void> {
  await buildLlamaStyleModel(ctx, {
    ...m,
    norm: (x, prefix) => rmsNormLayer(ctx, x, prefix, m.eps),
    scale: m.headDim ** -0.5, scaleStyle: 'scores-mul',
    parts: (at) => ({ ...m.parts(at), outBias: false, mlpRowBands: false }),
  });
}
