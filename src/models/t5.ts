/**
 * T5 encoder-decoders as transformers' eager implementations compute them: t5 (original and
 * v1.1 / flan-t5), mt5 and umt5.
 *
 *   encoder: x = shared[ids]; per block: x += o(attn(rms(x)) + position_bias); x += ff(rms(x))
 *            encoder_last_hidden_state = rms(x)
 *   decoder: y = shared[decoder_ids]; per block: y += o(self-attn(rms(y)) + position_bias + causal mask);
 *            y += o(cross-attn(q = rms(y), k/v = encoder_last_hidden_state)); y += ff(rms(y))
 *            last_hidden_state = rms(y)
 *
 * No 1/√d scaling of q·k. RMS layer norms without mean subtraction or bias ("T5LayerNorm").
 * Positions enter only as a learned per-head bias indexed by bucketed relative distance
 * (key position − query position): bidirectional buckets in the encoder, unidirectional in the
 * decoder. In t5/mt5 the table lives in block 0 of each stack and its bias is added to every
 * block of that stack; umt5 has a table in every block. Cross-attention has no bias. The
 * feed-forward is relu (`wi`, `wo`) or gated (`act(wi_0(x)) · wi_1(x)`, then `wo`).
 *
 * Graph inputs: `input_ids` [1, enc], `decoder_input_ids` [1, dec], `encoder_position_buckets`
 * int64 [2·enc − 1], `decoder_position_buckets` int64 [2·dec − 1] (the bucket of each offset j − i
 * of key j from query i, from −(queries − 1) up, offsetBuckets: computed in JS with the float32
 * arithmetic PyTorch uses) and `decoder_attention_bias` [1, 1, dec, dec]. The bias [heads, queries,
 * keys] is gathered from the table in the graph (models/attention.ts positionBias): whole, or on
 * demand for each band of query rows, whose causal mask is built there too (no
 * `decoder_attention_bias`), so nothing of size queries × keys is fed or held.
 *
 * With `taps.cache` the graph is one decoder step of incremental decoding, without the encoder:
 * `decoder_input_ids` [1, n] are the new tokens at positions past…past+n−1, `encoder_hidden_states`
 * [1, enc, d_model] the encoder's output (cross-attention keys/values are projected from it at
 * every step), `decoder_position_buckets` [n + past + n − 1] (queries past… against keys 0…),
 * `decoder_attention_bias` [1, 1, n, past+n], plus the self-attention cache inputs.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import { tapName, type Architecture, type ArchitectureInfo, type BuildContext, type ModelInputs } from './architecture.js';
import { attention, causalMaskInput, mergeHeads, positionBias, relativeBiasOutput, splitHeads, tapBlockContributions } from './attention.js';
import { tapEmbeddings, tapLayer, tapLogitLens, tapMlp } from './layer-taps.js';
import type { ModelConfig } from './config.js';
import { causalMask } from './masks.js';
import { stackScoring } from './scoring.js';

const MODEL_TYPES = ['t5', 'mt5', 'umt5'] as const;

/** Everything the graph and the feeds need, read once from config.json with HF's defaults. */
export interface T5Spec {
  modelType: string;
  dModel: number;
  dKv: number;
  heads: number;
  encoderLayers: number;
  decoderLayers: number;
  numBuckets: number;
  maxDistance: number;
  eps: number;
  /** Activation of the feed-forward (config dense_act_fn, derived from feed_forward_proj). */
  act: string;
  /** Gated feed-forward (wi_0, wi_1) as in t5 v1.1, flan-t5, mt5. */
  gated: boolean;
  /** umt5: every block has its own relative attention bias table. */
  perLayerBias: boolean;
  tied: boolean;
}

/** HF config-class defaults that differ between the family members. */
const DEFAULTS: Record<string, { ffProj: string; dFf: number; layers: number; heads: number; tied: boolean }> = {
  t5: { ffProj: 'relu', dFf: 2048, layers: 6, heads: 8, tied: true },
  mt5: { ffProj: 'gated-gelu', dFf: 1024, layers: 8, heads: 6, tied: false },
  umt5: { ffProj: 'gated-gelu', dFf: 1024, layers: 8, heads: 6, tied: true },
};

export function t5Spec(config: ModelConfig): T5Spec {
  const modelType = config.modelType;
  const defaults = DEFAULTS[modelType];
  if (!defaults) throw new AttnscopeError(`${config.source}: model_type '${modelType}' is not a T5-family model`);
  // T5Config: feed_forward_proj is 'act' or 'gated-act'; 'gated-gelu' means gelu_new for
  // backwards compatibility. Explicit dense_act_fn / is_gated_act in config.json win (HF sets them last).
  const ffProj = config.str('feed_forward_proj', defaults.ffProj);
  const parts = ffProj.split('-');
  if ((parts.length > 1 && parts[0] !== 'gated') || parts.length > 2) {
    throw new AttnscopeError(`${config.source}: feed_forward_proj '${ffProj}' is not a valid activation (use 'gated-{act}' or '{act}')`);
  }
  const derivedAct = ffProj === 'gated-gelu' ? 'gelu_new' : parts[parts.length - 1]!;
  const layers = config.int('num_layers', defaults.layers);
  const spec: T5Spec = {
    modelType,
    dModel: config.int('d_model', 512),
    dKv: config.int('d_kv', 64),
    heads: config.int('num_heads', defaults.heads),
    encoderLayers: layers,
    decoderLayers: config.int('num_decoder_layers', layers),
    numBuckets: config.int('relative_attention_num_buckets', 32),
    maxDistance: config.int('relative_attention_max_distance', 128),
    eps: config.num('layer_norm_epsilon', 1e-6),
    act: config.str('dense_act_fn', derivedAct),
    gated: config.bool('is_gated_act', parts[0] === 'gated'),
    perLayerBias: modelType === 'umt5',
    tied: config.bool('tie_word_embeddings', defaults.tied),
  };
  if (spec.numBuckets < 4) throw new AttnscopeError(`${config.source}: relative_attention_num_buckets should be ≥ 4, got ${spec.numBuckets}`);
  return spec;
}

function describe(config: ModelConfig): ArchitectureInfo {
  const s = t5Spec(config);
  const bias = s.perLayerBias ? 'per-layer' : 'shared';
  return {
    kind: 'encoder-decoder',
    numLayers: s.encoderLayers,
    numHeads: s.heads,
    numKeyValueHeads: s.heads,
    headDim: s.dKv,
    maxPositions: Number.POSITIVE_INFINITY,
    stacks: { encoder: s.encoderLayers, decoder: s.decoderLayers, cross: s.decoderLayers },
    // Unscaled q·k plus the relative position bias (block 0's on every layer for t5/mt5, each
    // block's own for umt5); cross-attention has neither bias nor mask.
    scoring: {
      encoder: stackScoring(s.encoderLayers, { scale: 1, causal: false, bias, biasKind: 'relative position bias' }),
      decoder: stackScoring(s.decoderLayers, { scale: 1, causal: true, bias, biasKind: 'relative position bias' }),
      cross: stackScoring(s.decoderLayers, { scale: 1, causal: false }),
    },
    // Pre-norm (T5LayerNorm, an RMSNorm) self-attention of both stacks; not the cross attention.
    contributions: { norm: 'pre' },
  };
}

// --- relative position buckets -------------------------------------------------------------

const f32 = Math.fround;

/**
 * T5's `_relative_position_bucket` for one relative position (key − query), with PyTorch's
 * float32 arithmetic for the logarithmic buckets: log(n / maxExact) in float32, divided by
 * log(maxDistance / maxExact) (a Python double cast to float32), times the number of log
 * buckets, truncated toward zero. A bucket off by one would change the bias a lot.
 */
export function relativePositionBucket(relative: number, bidirectional: boolean, numBuckets: number, maxDistance: number): number {
  let bucket = 0;
  let buckets = numBuckets;
  let n: number;
  if (bidirectional) {
    buckets = Math.floor(buckets / 2);
    if (relative > 0) bucket += buckets;
    n = Math.abs(relative);
  } else {
    n = -Math.min(relative, 0);
  }
  const maxExact = Math.floor(buckets / 2);
  if (n < maxExact) return bucket + n;
  const ratio = f32(f32(n) / f32(maxExact));
  const logRatio = f32(Math.log(ratio));
  const scaled = f32(f32(logRatio / f32(Math.log(maxDistance / maxExact))) * f32(buckets - maxExact));
  const large = Math.min(maxExact + Math.trunc(scaled), buckets - 1);
  return bucket + large;
}

/** Bucket indices [queries, keys] for query positions offset.., key positions 0.. . */
export function relativePositionBuckets(
  queries: number, keys: number, bidirectional: boolean, numBuckets: number, maxDistance: number, queryOffset = 0,
): Int32Array {
  const perOffset = offsetBuckets(queries, keys, bidirectional, numBuckets, maxDistance, queryOffset);
  const out = new Int32Array(queries * keys);
  for (let i = 0; i < queries; i++) for (let j = 0; j < keys; j++) out[i * keys + j] = perOffset[j - i + queries - 1]!;
  return out;
}

/**
 * The same buckets once per offset j − i (they depend on nothing else): [queries + keys − 1], entry
 * t for offset t − (queries − 1), i.e. relative position t − (queries − 1) − queryOffset; the
 * bucket of (i, j) is entry j − i + queries − 1. What the graph is fed.
 */
export function offsetBuckets(
  queries: number, keys: number, bidirectional: boolean, numBuckets: number, maxDistance: number, queryOffset = 0,
): Int32Array {
  const out = new Int32Array(queries + keys - 1);
  for (let t = 0; t < out.length; t++) out[t] = relativePositionBucket(t - (queries - 1) - queryOffset, bidirectional, numBuckets, maxDistance);
  return out;
}

// --- graph pieces ------------------------------------------------------------------------

/** T5LayerNorm: x · rsqrt(mean(x²) + eps), then weight · x (no mean subtraction, no bias). */
async function rmsNorm(ctx: BuildContext, s: T5Spec, x: Value, prefix: string): Promise<Value> {
  const { g } = ctx;
  const weight = await ctx.weight(`${prefix}.weight`);
  const variance = g.reduceMean(g.mul(x, x), [-1]);
  return g.mul(weight, g.mul(x, g.reciprocal(g.sqrt(g.add(variance, g.scalar(s.eps))))));
}

async function linear(ctx: BuildContext, x: Value, prefix: string): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`));
}

/**
 * A layer's relative position bias (no mask) for `attention` (models/attention.ts positionBias): the
 * table's value per head and offset j − i, [heads, queries + keys − 1], from the stack's bucket of
 * each offset; rows [start, end) of [1, heads, queries, keys] gather from it (key j of query i: offset
 * entry j − i + queries − 1). Recorded as `score_bias.<stack>.<tapLayer>`, or on demand as the vector
 * itself, `score_bias_relative.<stack>.<tapLayer>` [1, heads, queries + keys − 1].
 */
async function relativeBias(ctx: BuildContext, buckets: Value, tablePrefix: string, stack: 'encoder' | 'decoder', tapLayer: number): Promise<Value> {
  const { g } = ctx;
  const table = await ctx.weight(`${tablePrefix}.relative_attention_bias.weight`); // [buckets, heads]
  const perOffset = g.transpose(g.gather(table, buckets), [1, 0]); // [heads, offsets]
  const scalar = (v: Value): Value => g.squeeze(v, [0]);
  const range = (from: Value, to: Value): Value => g.op('Range', [scalar(from), scalar(to), scalar(g.ints([1]))]);
  return positionBias(`${stack} relative position bias`, {
    rows: (start, end, queries, keys) => {
      // Offset entries j − i + queries − 1 of rows i in [start, end), keys j: [rows, keys] (Reshape, not
      // Unsqueeze, so that the rank is known without Range's: graph/autodiff.ts needs it for gradients).
      const offsets = g.add(g.sub(g.reshape(range(g.ints([0]), keys), [1, -1]), g.reshape(range(start, end), [-1, 1])), g.sub(queries, g.ints([1])));
      return g.unsqueeze(g.gather(perOffset, offsets, 1), [0]);
    },
    tap: {
      dense: tapName('score_bias', stack, tapLayer),
      compact: { name: relativeBiasOutput(stack, tapLayer), value: () => g.unsqueeze(perOffset, [0]) },
    },
  });
}

/** T5Attention: q from `h`, k/v from `kv`, scores = q·kᵀ (+ (bias + mask)), no scaling; returns o(context). */
async function t5Attention(
  ctx: BuildContext, s: T5Spec, h: Value, kv: Value, prefix: string,
  stack: 'encoder' | 'decoder' | 'cross', layer: number, bias: Value | null, mask: Value | null,
): Promise<Value> {
  const { g } = ctx;
  const q = splitHeads(g, await linear(ctx, h, `${prefix}.q`), s.heads, s.dKv);
  const k = splitHeads(g, await linear(ctx, kv, `${prefix}.k`), s.heads, s.dKv);
  const v = splitHeads(g, await linear(ctx, kv, `${prefix}.v`), s.heads, s.dKv);
  const context = attention(ctx, {
    stack, layer, q, k, v,
    numHeads: s.heads, numKvHeads: s.heads, headDim: s.dKv,
    scale: 1, scaleStyle: 'scores-mul',
    bias,
    mask,
    outputProjection: stack === 'cross' ? undefined : { weight: await ctx.weight(`${prefix}.o.weight`), layout: 'out-in' },
  });
  return linear(ctx, mergeHeads(g, context, s.heads, s.dKv), `${prefix}.o`);
}

/** T5DenseActDense (wi, wo) or T5DenseGatedActDense (act(wi_0) · wi_1, wo). */
async function feedForward(ctx: BuildContext, s: T5Spec, x: Value, prefix: string, stack: 'encoder' | 'decoder', layer: number): Promise<Value> {
  const { g } = ctx;
  const h = s.gated
    ? g.mul(activation(g, s.act, await linear(ctx, x, `${prefix}.wi_0`)), await linear(ctx, x, `${prefix}.wi_1`))
    : activation(g, s.act, await linear(ctx, x, `${prefix}.wi`));
  return linear(ctx, tapMlp(ctx, stack, layer, h), `${prefix}.wo`);
}

interface StackOptions {
  stack: 'encoder' | 'decoder';
  /** Weight prefix of the stack, e.g. 'encoder'. */
  prefix: string;
  layers: number;
  /** The bucket of each offset j − i (offsetBuckets). */
  buckets: Value;
  /** Added to the position bias (decoder causal mask, from causalMaskInput). */
  mask: Value | null;
  /** Decoder: the encoder's output, for cross-attention. */
  encoderOutput: Value | null;
}

async function runStack(ctx: BuildContext, s: T5Spec, x: Value, o: StackOptions): Promise<Value> {
  const { g } = ctx;
  let bias: Value | null = null;
  tapEmbeddings(ctx, o.stack, { token: x });
  for (let l = 0; l < o.layers; l++) {
    const block = `${o.prefix}.block.${l}`;
    const self = `${block}.layer.0.SelfAttention`;
    // HF adds the mask to the bias once, then the sum to the scores of every layer (attention adds
    // bias + mask). The additive position term the trace records, without the mask: every layer's
    // for umt5, block 0's (shared by all layers) for t5/mt5.
    if (l === 0 || (s.perLayerBias && ctx.hasWeight(`${self}.relative_attention_bias.weight`))) bias = await relativeBias(ctx, o.buckets, self, o.stack, l);
    const h = await rmsNorm(ctx, s, x, `${block}.layer.0.layer_norm`);
    const input = x;
    x = g.add(x, await t5Attention(ctx, s, h, h, self, o.stack, l, bias, o.mask));
    tapBlockContributions(ctx, o.stack, l, { input, residualSum: x, outputBias: null });
    const afterSelf = x;
    let afterCross: Value | undefined;
    let ff = 1;
    if (o.encoderOutput) {
      const hc = await rmsNorm(ctx, s, x, `${block}.layer.1.layer_norm`);
      x = g.add(x, await t5Attention(ctx, s, hc, o.encoderOutput, `${block}.layer.1.EncDecAttention`, 'cross', l, null, null));
      afterCross = x;
      ff = 2;
    }
    const hf = await rmsNorm(ctx, s, x, `${block}.layer.${ff}.layer_norm`);
    x = g.add(x, await feedForward(ctx, s, hf, `${block}.layer.${ff}.DenseReluDense`, o.stack, l));
    tapLayer(ctx, o.stack, l, { input, attention: afterSelf, ...(afterCross ? { cross: afterCross } : {}), output: x });
  }
  return rmsNorm(ctx, s, x, `${o.prefix}.final_layer_norm`);
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = t5Spec(config);
  const base = ctx.findPrefix(['', 'model.', 'transformer.'], 'encoder.block.0.layer.0.SelfAttention.q.weight');
  if (!ctx.hasWeight(`${base}decoder.block.0.layer.0.SelfAttention.q.weight`)) {
    throw new AttnscopeError(`${config.source}: the checkpoint has no decoder (an encoder-only ${s.modelType} checkpoint is not supported)`);
  }
  // A decoder step (taps.cache) sees past + new keys; the full graph sees the new ones only.
  const step = ctx.taps.cache ?? false;
  const decoderKeys = step ? 'dec_keys' : 'dec_seq';
  const ids = step ? null : g.input('input_ids', 'int64', [1, 'enc_seq']);
  const decoderIds = g.input('decoder_input_ids', 'int64', [1, 'dec_seq']);
  const encoderBuckets = step ? null : g.input('encoder_position_buckets', 'int64', ['enc_offsets']);
  const decoderBuckets = g.input('decoder_position_buckets', 'int64', ['dec_offsets']);
  const causal = causalMaskInput(ctx, 'decoder_attention_bias', null, ['dec_seq', decoderKeys]);

  // encoder.embed_tokens and decoder.embed_tokens are tied to `shared`.
  const embedding = async (stack: string): Promise<Value> => {
    const name = [`${base}shared.weight`, `${base}${stack}.embed_tokens.weight`].find((n) => ctx.hasWeight(n));
    if (!name) throw new AttnscopeError(`checkpoint has no '${base}shared.weight' (is it a ${s.modelType} checkpoint?)`);
    return ctx.weight(name);
  };

  let encoderOutput: Value;
  if (!ids || !encoderBuckets) {
    // Decoder step: the encoder ran once before; its final hidden states come in as an input.
    encoderOutput = g.input('encoder_hidden_states', 'float32', [1, 'enc_seq', s.dModel]);
  } else {
    encoderOutput = await runStack(ctx, s, g.gather(await embedding('encoder'), ids), {
      stack: 'encoder', prefix: `${base}encoder`, layers: s.encoderLayers, buckets: encoderBuckets, mask: null, encoderOutput: null,
    });
    if (ctx.taps.lastHiddenState) g.output(encoderOutput, 'encoder_last_hidden_state');
  }
  const decoderEmbedding = await embedding('decoder');
  const decoderOutput = await runStack(ctx, s, g.gather(decoderEmbedding, decoderIds), {
    stack: 'decoder', prefix: `${base}decoder`, layers: s.decoderLayers, buckets: decoderBuckets, mask: causal, encoderOutput,
  });
  if (ctx.taps.lastHiddenState) g.output(decoderOutput, 'last_hidden_state');
  // Tied head: the decoder output is rescaled by d_model^-0.5 before the shared embedding.
  const untied = !s.tied && ctx.hasWeight(`${base}lm_head.weight`);
  const head = async (out: Value): Promise<Value> => {
    const x = untied ? out : g.mul(out, g.scalar(s.dModel ** -0.5));
    return g.linear(x, untied ? await ctx.weight(`${base}lm_head.weight`) : decoderEmbedding);
  };
  if (ctx.taps.logits) g.output(await head(decoderOutput), 'logits');
  await tapLogitLens(ctx, 'decoder', async (h) => head(await rmsNorm(ctx, s, h, `${base}decoder.final_layer_norm`)));
}

function toInt64(values: Int32Array, dims: readonly number[]): RuntimeTensor {
  return { type: 'int64', dims, data: BigInt64Array.from(values, (v) => BigInt(v)) };
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const s = t5Spec(config);
  const decoderIds = inputs.decoderInputIds;
  if (!decoderIds || decoderIds.length === 0) throw new AttnscopeError(`${s.modelType} is an encoder-decoder model: decoder input ids are required`);
  const m = decoderIds.length;
  // Incremental decoding: the new decoder tokens sit at positions past…past+m−1 and see keys 0…past+m−1.
  const past = inputs.pastLength ?? 0;
  const keys = past + m;
  const result: Record<string, RuntimeTensor> = {
    decoder_input_ids: int64Tensor(decoderIds),
    decoder_position_buckets: toInt64(offsetBuckets(m, keys, false, s.numBuckets, s.maxDistance, past), [m + keys - 1]),
    decoder_attention_bias: causalMask(m, { pastLength: past }),
  };
  // Later decoder steps run a graph without the encoder: skip its buckets.
  if (past === 0) {
    const n = inputs.inputIds.length;
    result.input_ids = int64Tensor(inputs.inputIds);
    result.encoder_position_buckets = toInt64(offsetBuckets(n, n, true, s.numBuckets, s.maxDistance), [2 * n - 1]);
  }
  return result;
}

export const t5Family: Architecture = {
  modelTypes: MODEL_TYPES,
  describe,
  build,
  feeds,
};
