/**
 * Building blocks shared by the architecture files: linear and LayerNorm layers read from the
 * checkpoint, what a plain multi-head encoder tells about itself, token type ids from segments.
 * Model files import these, never another model file.
 */
import { AttnscopeError, quote } from '../core/errors.js';
import type { GraphBuilder, Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import { tapName, type ArchitectureInfo, type BuildContext, type ModelInputs } from './architecture.js';
import { attention, inRowBands, mergeHeads, mlpBandCount, positionBias, splitHeads, tapBlockContributions, type AttentionArgs } from './attention.js';
import { tapEmbeddings, tapLayer, tapLogitLens, tapMlp } from './layer-taps.js';
import type { ModelConfig } from './config.js';
import { causalMask } from './masks.js';
import { stackScoring } from './scoring.js';

/**
 * `prefix.bias` of a layer the architecture always builds with a bias. A checkpoint without it is
 * refused, naming the tensor: run with a zero bias it would give wrong attention without a word
 * (transformers warns that the weight is newly initialised).
 */
export async function requiredBias(ctx: BuildContext, prefix: string): Promise<Value> {
  if (!ctx.hasWeight(`${prefix}.bias`)) {
    throw new AttnscopeError(
      `checkpoint has ${quote(`${prefix}.weight`)} but not ${quote(`${prefix}.bias`)}, which every ${ctx.config.modelType} checkpoint has: it is damaged or incomplete`,
    );
  }
  return ctx.weight(`${prefix}.bias`);
}

/** Linear layer `prefix.weight` / `prefix.bias`. */
export async function linearLayer(ctx: BuildContext, x: Value, prefix: string): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`), await requiredBias(ctx, prefix));
}

/** nn.LayerNorm `prefix.weight` / `prefix.bias`. */
export async function layerNormLayer(ctx: BuildContext, x: Value, prefix: string, eps: number): Promise<Value> {
  return ctx.g.layerNorm(x, await ctx.weight(`${prefix}.weight`), await requiredBias(ctx, prefix), eps);
}

/** What an encoder with multi-head self-attention (no grouped keys) tells about itself. */
export function encoderInfo(config: ModelConfig, layers: number, heads: number, hidden: number, maxPositions: number): ArchitectureInfo {
  if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: hidden size ${hidden} is not a multiple of ${heads} heads`);
  const headDim = hidden / heads;
  return {
    kind: 'encoder',
    numLayers: layers,
    numHeads: heads,
    numKeyValueHeads: heads,
    headDim,
    maxPositions,
    stacks: { self: layers },
    // Bidirectional, q·k / √headDim (BERT, ALBERT, ELECTRA divide the scores; DistilBERT the queries).
    scoring: { self: stackScoring(layers, { scale: 1 / Math.sqrt(headDim), causal: false }) },
  };
}

/**
 * Token type ids from segments. Models with a single token type (RoBERTa) get zeros for both
 * sentences of a pair, as their tokenizers produce.
 */
export function segmentTypeIds(config: ModelConfig, segments: readonly number[] | undefined, n: number): number[] {
  const types = config.int('type_vocab_size', 2);
  if (!segments || types <= 1) return new Array<number>(n).fill(0);
  return [...segments];
}

/**
 * ALiBi slopes as transformers' `build_alibi_tensor` (BLOOM, Falcon) computes them, in float32:
 * for the largest power of two n ≤ heads, base 2^(−8/n) raised to 1..n; the remaining heads take
 * the odd powers 1, 3, 5, ... of 2^(−8/2n) (interleaving the slopes of 2n heads).
 */
export function alibiSlopes(heads: number): Float32Array {
  const f = Math.fround;
  const closest = Math.pow(2, Math.floor(Math.log2(heads)));
  const base = f(Math.pow(2, -Math.pow(2, -(Math.log2(closest) - 3))));
  const slopes = new Float32Array(heads);
  for (let i = 0; i < closest; i++) slopes[i] = f(Math.pow(base, i + 1));
  if (closest !== heads) {
    const extraBase = f(Math.pow(2, -Math.pow(2, -(Math.log2(2 * closest) - 3))));
    const remaining = Math.min(closest, heads - closest);
    for (let i = 0; i < remaining; i++) slopes[closest + i] = f(Math.pow(extraBase, 2 * i + 1));
  }
  return slopes;
}

/** Rounds a float32 value to bfloat16 (round to nearest, ties to even), returned as a number. */
export function toBfloat16(x: number): number {
  const bits = new Uint32Array(new Float32Array([x]).buffer);
  const u = bits[0]!;
  if ((u & 0x7f800000) === 0x7f800000) return x;
  bits[0] = ((u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000) >>> 0;
  return new Float32Array(bits.buffer)[0]!;
}

/**
 * The ALiBi term `slope[h] · key position` as `attention`'s bias (models/attention.ts positionBias),
 * built in the graph as one row over the keys [1, heads, 1, keys] (the same for every query; no
 * mask), so nothing of size queries × keys is fed, held or (on demand) tapped: transformers'
 * build_alibi_tensor, slopes (float32) times the key positions 0 … keys − 1 (an int64 arange cast to
 * the slopes' type). With `bfloat16` (Falcon) the slopes are bfloat16, so the positions are cast to
 * bfloat16 as well (exact up to 256, then to 8 significant bits) and each product is rounded to
 * bfloat16 (onnxruntime's Cast rounds to nearest even, as torch does). `scale` multiplies the row
 * (Falcon records headDim^-0.5 · ALiBi). The trace's record, with taps.qk: `score_bias.self.0`.
 */
export function alibiBias(ctx: BuildContext, heads: number, options: AlibiOptions = {}): Value {
  // One row per attention (its keys' count); the layers of a dense graph share one (attention.ts).
  const rows = new Map<Value, Value>();
  const row = (keys: Value): Value => {
    let r = rows.get(keys);
    if (!r) rows.set(keys, (r = alibiRow(ctx.g, heads, keys, options)));
    return r;
  };
  return positionBias('alibi', {
    rows: (_start, _end, _queries, keys) => row(keys),
    tap: { dense: tapName('score_bias', 'self', 0), compact: { name: tapName('score_bias', 'self', 0), value: (_queries, keys) => row(keys) } },
  });
}

export interface AlibiOptions {
  /** Falcon: slopes, positions and products in bfloat16. */
  bfloat16?: boolean;
  /** A factor on the row (Falcon: headDim^-0.5). */
  scale?: number;
}

/** The ALiBi row [1, heads, 1, keys] of alibiBias for `keys` keys (int64 [1]). */
export function alibiRow(g: GraphBuilder, heads: number, keys: Value, options: AlibiOptions = {}): Value {
  const bf16 = options.bfloat16 ?? false;
  const slopes = alibiSlopes(heads).map((v) => (bf16 ? toBfloat16(v) : v));
  const name = `alibi_slopes${bf16 ? '_bf16' : ''}.${heads}`;
  const slope = g.describeValue(name) ? { name } : g.initializer(name, slopes, [1, heads, 1, 1]);
  const toBf16 = (x: Value): Value => g.op('Cast', [g.op('Cast', [x], { to: BFLOAT16 })], { to: FLOAT32 });
  const scalar = (v: Value): Value => g.squeeze(v, [0]);
  const positions = g.op('Cast', [g.op('Range', [scalar(g.ints([0])), scalar(keys), scalar(g.ints([1]))])], { to: FLOAT32 });
  let r = g.mul(slope, g.reshape(bf16 ? toBf16(positions) : positions, [1, 1, 1, -1]));
  if (bf16) r = toBf16(r);
  return options.scale === undefined ? r : g.mul(r, g.scalar(options.scale));
}

/** ONNX TensorProto data types of Cast's `to`. */
const FLOAT32 = 1;
const BFLOAT16 = 16;

// --- BART-style encoder-decoders (marian, pegasus, m2m_100) -----------------------------------

/**
 * What a BART-style encoder-decoder (BartAttention, fc1/fc2 feed-forward, nn.LayerNorm 1e-5) needs:
 * pre-LN or post-LN blocks, an optional `layernorm_embedding` and final `layer_norm` per stack.
 */
export interface Seq2SeqSpec {
  modelType: string;
  dModel: number;
  encoderLayers: number;
  decoderLayers: number;
  encoderHeads: number;
  decoderHeads: number;
  act: string;
  /** √d_model with scale_embedding, else null (× 1.0). */
  embedScale: number | null;
  /** Layer norm before each sub-layer (x + f(LN(x))) rather than after (LN(x + f(x))). */
  preNorm: boolean;
  /** `layernorm_embedding` after the embeddings. */
  embeddingNorm: boolean;
  /** A final `layer_norm` at the end of each stack. */
  finalNorm: boolean;
  maxPositions: number;
  tied: boolean;
  /**
   * q_proj, k_proj and q·k summed left to right in float32 (sequentialLinear, sequentialProduct)
   * instead of by MatMul, for families whose references are that sensitive to summation order.
   */
  sequentialDots?: boolean;
}

/** The BART-style config fields (BartConfig names and defaults) plus the family's block layout. */
export function seq2seqSpec(
  config: ModelConfig,
  layout: { preNorm: boolean; embeddingNorm: boolean; finalNorm: boolean; act: string; maxPositions: number },
): Seq2SeqSpec {
  const dModel = config.int('d_model', 1024);
  const s: Seq2SeqSpec = {
    modelType: config.modelType,
    dModel,
    encoderLayers: config.int('encoder_layers', 12),
    decoderLayers: config.int('decoder_layers', 12),
    encoderHeads: config.int('encoder_attention_heads', 16),
    decoderHeads: config.int('decoder_attention_heads', 16),
    act: config.str('activation_function', layout.act),
    embedScale: config.bool('scale_embedding', false) ? Math.sqrt(dModel) : null,
    preNorm: layout.preNorm,
    embeddingNorm: layout.embeddingNorm,
    finalNorm: layout.finalNorm,
    maxPositions: config.int('max_position_embeddings', layout.maxPositions),
    tied: config.bool('tie_word_embeddings', true),
  };
  for (const heads of [s.encoderHeads, s.decoderHeads]) {
    if (dModel % heads !== 0) throw new AttnscopeError(`${config.source}: d_model ${dModel} is not a multiple of the number of attention heads ${heads}`);
  }
  return s;
}

/** describe() of a BART-style encoder-decoder: queries × head_dim^-0.5, causal decoder self-attention. */
export function seq2seqInfo(s: Seq2SeqSpec): ArchitectureInfo {
  return {
    kind: 'encoder-decoder',
    numLayers: s.encoderLayers,
    numHeads: s.encoderHeads,
    numKeyValueHeads: s.encoderHeads,
    headDim: s.dModel / s.encoderHeads,
    maxPositions: s.maxPositions,
    stacks: { encoder: s.encoderLayers, decoder: s.decoderLayers, cross: s.decoderLayers },
    ...(s.decoderHeads !== s.encoderHeads ? { stackHeads: { decoder: s.decoderHeads, cross: s.decoderHeads } } : {}),
    scoring: {
      encoder: stackScoring(s.encoderLayers, { scale: (s.dModel / s.encoderHeads) ** -0.5, causal: false }),
      decoder: stackScoring(s.decoderLayers, { scale: (s.dModel / s.decoderHeads) ** -0.5, causal: true }),
      cross: stackScoring(s.decoderLayers, { scale: (s.dModel / s.decoderHeads) ** -0.5, causal: false }),
    },
    // The encoder's and the decoder's self-attention (not the cross attention).
    contributions: { norm: s.preNorm ? 'pre' : 'post', eps: 1e-5 },
  };
}

/**
 * Marian's and Pegasus' sinusoidal position table [rows, dim] as transformers builds it (float64
 * angles pos / 10000^(2·⌊j/2⌋/dim), rounded to float32): sin of the even columns in the first half,
 * cos of the odd ones in the second half (not interleaved).
 */
export function sinusoidalPositionTable(rows: number, dim: number): Float32Array {
  const out = new Float32Array(rows * dim);
  const sentinel = dim % 2 === 0 ? dim / 2 : (dim + 1) / 2;
  for (let pos = 0; pos < rows; pos++) {
    for (let j = 0; j < dim; j++) {
      const angle = pos / Math.pow(10000, (2 * Math.floor(j / 2)) / dim);
      if (j % 2 === 0) out[pos * dim + j / 2] = Math.sin(angle);
      else out[pos * dim + sentinel + (j - 1) / 2] = Math.cos(angle);
    }
  }
  return out;
}

async function seq2seqLinear(ctx: BuildContext, x: Value, prefix: string): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`), await requiredBias(ctx, prefix));
}

async function seq2seqLayerNorm(ctx: BuildContext, x: Value, prefix: string): Promise<Value> {
  return ctx.g.layerNorm(x, await ctx.weight(`${prefix}.weight`), await requiredBias(ctx, prefix), 1e-5);
}

/** BartAttention: q from `h` (q_proj output × head_dim^-0.5), k/v from `kv`, + mask; returns out_proj(context). */
export async function seq2seqAttention(
  ctx: BuildContext, h: Value, kv: Value, prefix: string, heads: number, headDim: number,
  stack: 'encoder' | 'decoder' | 'cross', layer: number, mask: Value | null, sequential = false,
): Promise<Value> {
  const { g } = ctx;
  const scale = headDim ** -0.5;
  // Attention projections map d_model = heads · headDim features to as many.
  const project = sequential ? (c: BuildContext, x: Value, p: string) => sequentialLinear(c, x, p, heads * headDim) : seq2seqLinear;
  const projected = await project(ctx, h, `${prefix}.q_proj`);
  const q = splitHeads(g, projected, heads, headDim);
  // Scaled before splitting heads, as HF does (keeps onnxruntime from folding the scale into q·k).
  const scaledQ = splitHeads(g, g.mul(projected, g.scalar(scale)), heads, headDim);
  const k = splitHeads(g, await project(ctx, kv, `${prefix}.k_proj`), heads, headDim);
  const v = splitHeads(g, await seq2seqLinear(ctx, kv, `${prefix}.v_proj`), heads, headDim);
  const context = attention(ctx, {
    stack, layer, q, k, v,
    numHeads: heads, numKvHeads: heads, headDim,
    scale, scaleStyle: 'query-mul', scaledQ,
    product: sequential ? (q, kT) => sequentialProduct(ctx, q, kT, headDim) : undefined,
    bias: mask,
    outputProjection: stack === 'cross' ? undefined : { weight: await ctx.weight(`${prefix}.out_proj.weight`), layout: 'out-in' },
  });
  return seq2seqLinear(ctx, mergeHeads(g, context, heads, headDim), `${prefix}.out_proj`);
}

/**
 * Builds a BART-style encoder-decoder graph. `positionTable(stack)` gives the table the position
 * ids index (a checkpoint weight or a computed initializer). Graph inputs as bart's: `input_ids`,
 * `position_ids`, `decoder_input_ids`, `decoder_position_ids`, `decoder_attention_bias`; with
 * `taps.cache` one decoder step with `encoder_hidden_states` and the self-attention cache inputs.
 */
export async function buildSeq2Seq(ctx: BuildContext, s: Seq2SeqSpec, positionTable: (stack: 'encoder' | 'decoder', prefix: string) => Promise<Value>): Promise<void> {
  const { g, config } = ctx;
  const base = ctx.findPrefix(['model.', ''], 'encoder.layers.0.self_attn.q_proj.weight');
  if (!ctx.hasWeight(`${base}decoder.layers.0.self_attn.q_proj.weight`)) {
    throw new AttnscopeError(`${config.source}: the checkpoint has no decoder (an encoder-only ${s.modelType} checkpoint is not supported)`);
  }
  const step = ctx.taps.cache ?? false;
  if (step && s.decoderHeads !== s.encoderHeads) {
    throw new AttnscopeError(`${config.source}: incremental decoding needs as many decoder as encoder attention heads (${s.decoderHeads} vs ${s.encoderHeads})`);
  }
  const ids = step ? null : g.input('input_ids', 'int64', [1, 'enc_seq']);
  const positions = step ? null : g.input('position_ids', 'int64', [1, 'enc_seq']);
  const decoderIds = g.input('decoder_input_ids', 'int64', [1, 'dec_seq']);
  const decoderPositions = g.input('decoder_position_ids', 'int64', [1, 'dec_seq']);
  const causal = g.input('decoder_attention_bias', 'float32', [1, 1, 'dec_seq', step ? 'dec_keys' : 'dec_seq']);

  // encoder.embed_tokens and decoder.embed_tokens are tied to `shared`: one initializer for all three.
  const embedding = async (stack: string): Promise<Value> => {
    const name = [`${base}shared.weight`, `${base}${stack}.embed_tokens.weight`].find((n) => ctx.hasWeight(n));
    if (!name) throw new AttnscopeError(`checkpoint has no '${base}shared.weight' (is it a ${s.modelType} checkpoint?)`);
    return ctx.weight(name);
  };

  const runStack = async (stack: 'encoder' | 'decoder', tokens: Value, pos: Value, embed: Value, heads: number, layers: number, mask: Value | null, encoderOutput: Value | null): Promise<Value> => {
    const prefix = `${base}${stack}`;
    const headDim = s.dModel / heads;
    let x = g.gather(embed, tokens);
    const position = g.gather(await positionTable(stack, prefix), pos);
    tapEmbeddings(ctx, stack, { token: x, position });
    if (s.embedScale !== null) x = g.mul(x, g.scalar(s.embedScale));
    x = g.add(x, position);
    if (s.embeddingNorm) x = await seq2seqLayerNorm(ctx, x, `${prefix}.layernorm_embedding`);
    // `tapLayer`: the self-attention block of that layer, whose contributions taps are recorded.
    const residual = async (v: Value, norm: string, f: (h: Value) => Promise<Value>, tapLayer?: number): Promise<Value> => {
      const sum = g.add(v, await f(s.preNorm ? await seq2seqLayerNorm(ctx, v, norm) : v));
      if (tapLayer !== undefined && ctx.taps.contributions) {
        tapBlockContributions(ctx, stack, tapLayer, {
          input: v, residualSum: sum, outputBias: await ctx.weight(`${prefix}.layers.${tapLayer}.self_attn.out_proj.bias`),
          ...(s.preNorm ? {} : { norm: { weight: await ctx.weight(`${norm}.weight`), bias: await ctx.weight(`${norm}.bias`) } }),
        });
      }
      return s.preNorm ? sum : seq2seqLayerNorm(ctx, sum, norm);
    };
    for (let l = 0; l < layers; l++) {
      const p = `${prefix}.layers.${l}`;
      const input = x;
      x = await residual(x, `${p}.self_attn_layer_norm`, (h) => seq2seqAttention(ctx, h, h, `${p}.self_attn`, heads, headDim, stack, l, mask, s.sequentialDots), l);
      const afterSelf = x;
      let afterCross: Value | undefined;
      if (encoderOutput) {
        x = await residual(x, `${p}.encoder_attn_layer_norm`, (h) =>
          seq2seqAttention(ctx, h, encoderOutput, `${p}.encoder_attn`, heads, headDim, 'cross', l, null, s.sequentialDots));
        afterCross = x;
      }
      x = await residual(x, `${p}.final_layer_norm`, async (h) =>
        seq2seqLinear(ctx, tapMlp(ctx, stack, l, activation(g, s.act, await seq2seqLinear(ctx, h, `${p}.fc1`))), `${p}.fc2`));
      tapLayer(ctx, stack, l, { input, attention: afterSelf, ...(afterCross ? { cross: afterCross } : {}), output: x });
    }
    if (s.finalNorm) x = await seq2seqLayerNorm(ctx, x, `${prefix}.layer_norm`);
    return x;
  };

  let encoderOutput: Value;
  if (!ids || !positions) {
    encoderOutput = g.input('encoder_hidden_states', 'float32', [1, 'enc_seq', s.dModel]);
  } else {
    encoderOutput = await runStack('encoder', ids, positions, await embedding('encoder'), s.encoderHeads, s.encoderLayers, null, null);
    if (ctx.taps.lastHiddenState) g.output(encoderOutput, 'encoder_last_hidden_state');
  }
  const decoderEmbedding = await embedding('decoder');
  const decoderOutput = await runStack('decoder', decoderIds, decoderPositions, decoderEmbedding, s.decoderHeads, s.decoderLayers, causal, encoderOutput);
  if (ctx.taps.lastHiddenState) g.output(decoderOutput, 'last_hidden_state');
  const head = async (out: Value): Promise<Value> => {
    const w = !s.tied && ctx.hasWeight('lm_head.weight') ? await ctx.weight('lm_head.weight') : decoderEmbedding;
    const logits = g.linear(out, w);
    const finalBias = await ctx.optionalWeight('final_logits_bias'); // [1, vocab]
    return finalBias ? g.add(logits, finalBias) : logits;
  };
  if (ctx.taps.logits) g.output(await head(decoderOutput), 'logits');
  await tapLogitLens(ctx, 'decoder', async (h) => head(s.finalNorm ? await seq2seqLayerNorm(ctx, h, `${base}decoder.layer_norm`) : h));
}

/** The feeds of buildSeq2Seq; `positionIds(n, past)` gives the table rows of positions past…past+n−1. */
export function seq2seqFeeds(
  s: Seq2SeqSpec, inputs: ModelInputs, positionIds: (ids: readonly number[], past: number) => RuntimeTensor,
): Record<string, RuntimeTensor> {
  const decoderIds = inputs.decoderInputIds;
  if (!decoderIds || decoderIds.length === 0) throw new AttnscopeError(`${s.modelType} is an encoder-decoder model: decoder input ids are required`);
  const past = inputs.pastLength ?? 0;
  for (const [what, n] of [['input', inputs.inputIds.length], ['decoder input', past + decoderIds.length]] as const) {
    if (n > s.maxPositions) throw new AttnscopeError(`${what} too long: ${n} tokens, but the model accepts at most ${s.maxPositions}`);
  }
  return {
    input_ids: int64Tensor(inputs.inputIds),
    position_ids: positionIds(inputs.inputIds, 0),
    decoder_input_ids: int64Tensor(decoderIds),
    decoder_position_ids: positionIds(decoderIds, past),
    decoder_attention_bias: causalMask(decoderIds.length, { pastLength: past }),
  };
}

// --- pre-norm decoder blocks -------------------------------------------------------------------

/** What a pre-norm decoder block is made of (see preNormBlock); each family gives its own pieces. */
export interface PreNormBlock {
  layer: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  /** The multiplier of q·k and where it is applied (see AttentionArgs). */
  scale: number;
  scaleStyle: AttentionArgs['scaleStyle'];
  /** The additive mask of the scores (causal, sliding window; models/attention.ts causalMaskInput). */
  mask: Value;
  /** A term added to the scores before the mask (Falcon's ALiBi), or null. */
  bias?: Value | null;
  /**
   * Whether the MLP may run in bands of rows on demand (mlpBandCount; default true). Mixture-of-experts
   * MLPs: false (onnxruntime stops the process on the routing of a band without rows, SIGFPE).
   */
  mlpRowBands?: boolean;
  /** The norm before attention (and before the MLP, in parallel blocks). */
  inputNorm(x: Value): Promise<Value>;
  /** Per-head queries [1, heads, seq, headDim], keys and values [1, kvHeads, seq, headDim] of the normed input, as they enter q·k (rotary applied). */
  qkv(h: Value): Promise<{ q: Value; k: Value; v: Value }>;
  /** The output projection's weight prefix (`<outProj>.weight`, [hidden, heads·headDim]). */
  outProj: string;
  /** Its bias, or null when it has none. */
  outBias: Value | null;
  /** The MLP on its normed input; `tap` marks its hidden activation (tapMlp), where it has one. */
  mlp(h: Value, tap: (activation: Value) => Value): Promise<Value>;
  /** Sequential blocks: the norm before the MLP (x1 = x + attn(norm(x)); y = x1 + mlp(postNorm(x1))). */
  postNorm?: (x1: Value) => Promise<Value>;
  /** Parallel blocks (no postNorm): y = x + (mlp(norm(x)) + attn(norm(x))). */
  parallel?: boolean;
  /** Parallel blocks whose MLP has a norm of its own (GPT-NeoX, Falcon's two-norm layout): y = x + (mlp(mlpNorm(x)) + attn(norm(x))). */
  mlpNorm?: (x: Value) => Promise<Value>;
}

/**
 * One pre-norm decoder block of the self stack — the llama family, OLMo, StableLM, StarCoder2,
 * Mixtral, Qwen2-MoE (sequential), GPT-J, Phi (parallel), GPT-NeoX and Falcon (either) — with its contributions and layer taps: attention of
 * norm(x) through the output projection, then the MLP after the residual sum or beside it.
 */
export async function preNormBlock(ctx: BuildContext, x: Value, b: PreNormBlock): Promise<Value> {
  const { g } = ctx;
  const h = await b.inputNorm(x);
  const { q, k, v } = await b.qkv(h);
  const outWeight = await ctx.weight(`${b.outProj}.weight`);
  const context = attention(ctx, {
    stack: 'self', layer: b.layer, q, k, v,
    numHeads: b.heads, numKvHeads: b.kvHeads, headDim: b.headDim,
    scale: b.scale, scaleStyle: b.scaleStyle,
    bias: b.bias ?? null,
    mask: b.mask,
    outputProjection: { weight: outWeight, layout: 'out-in' },
  });
  const attnOut = g.linear(mergeHeads(g, context, b.heads, b.headDim), outWeight, b.outBias ?? undefined);
  const tap = (a: Value): Value => tapMlp(ctx, 'self', b.layer, a);
  // On demand (banded attention) the MLP runs in bands of rows too: its intermediates are the largest values left.
  const mlpBands = b.mlpRowBands === false ? 1 : mlpBandCount(ctx.taps);
  if (b.parallel || !b.postNorm) {
    // The attention block's output (for ALTI) is x + attn(norm(x)); the parallel MLP branch is not part of it.
    if (ctx.taps.contributions) tapBlockContributions(ctx, 'self', b.layer, { input: x, residualSum: g.add(x, attnOut), outputBias: b.outBias });
    const output = g.add(x, g.add(await inRowBands(g, b.mlpNorm ? await b.mlpNorm(x) : h, mlpBands, (rows) => b.mlp(rows, tap)), attnOut));
    tapLayer(ctx, 'self', b.layer, { input: x, attention: () => g.add(x, attnOut), output });
    return output;
  }
  const x1 = g.add(x, attnOut);
  tapBlockContributions(ctx, 'self', b.layer, { input: x, residualSum: x1, outputBias: b.outBias });
  const output = g.add(x1, await inRowBands(g, await b.postNorm(x1), mlpBands, (rows) => b.mlp(rows, tap)));
  tapLayer(ctx, 'self', b.layer, { input: x, attention: x1, output });
  return output;
}

/** RMSNorm as Llama/Mixtral/Qwen2 compute it: weight · (x · 1/√(mean(x²) + eps)). */
export async function rmsNormLayer(ctx: BuildContext, x: Value, prefix: string, eps: number): Promise<Value> {
  const { g } = ctx;
  const weight = await ctx.weight(`${prefix}.weight`);
  const meanSquare = g.reduceMean(g.mul(x, x), [-1]);
  return g.mul(weight, g.mul(x, g.reciprocal(g.sqrt(g.add(meanSquare, g.scalar(eps))))));
}

/**
 * A sparse mixture-of-experts MLP, routed inside the graph: the router (`routerPrefix`, no bias)
 * gives logits over `experts`; their softmax's top `k` weights are kept (divided by their sum
 * when `renormalise`), the rest set to zero; every expert runs on every token and the outputs are
 * added in expert order, each times its weight — exactly zero for unrouted experts, as
 * transformers' index_add_ leaves them. With `taps.routing` the router's softmax, the chosen
 * experts and their weights are graph outputs `router_*.self.<layer>` (see architecture.ts).
 */
export async function mixtureOfExperts(
  ctx: BuildContext, h: Value, routerPrefix: string, layer: number, experts: number, k: number, renormalise: boolean,
  expert: (e: number) => Promise<Value>,
): Promise<Value> {
  const { g } = ctx;
  const probs = g.softmax(g.linear(h, await ctx.weight(`${routerPrefix}.weight`)), -1);
  const [values, indices] = g.node('TopK', [probs, g.ints([k])], { axis: -1, largest: 1, sorted: 1 }, 2) as [Value, Value];
  const kept = renormalise ? g.div(values, g.op('ReduceSum', [values, g.ints([-1])], { keepdims: 1 })) : values;
  if (ctx.taps.routing) {
    g.output(probs, tapName('router_probabilities', 'self', layer));
    g.output(indices, tapName('router_selected', 'self', layer), 'int64');
    g.output(kept, tapName('router_weights', 'self', layer));
  }
  if (ctx.taps.routerInput) g.output(h, tapName('router_input', 'self', layer));
  const weights = g.op('ScatterElements', [g.mul(probs, g.scalar(0)), indices, kept], { axis: -1 });
  const perExpert = g.split(weights, new Array<number>(experts).fill(1), -1);
  let out: Value | null = null;
  for (let e = 0; e < experts; e++) {
    const y = g.mul(await expert(e), perExpert[e]!);
    out = out === null ? y : g.add(out, y);
  }
  return out!;
}

// --- float32 dot products summed left to right ------------------------------------------------

/** Columns of the input summed per CumSum in sequentialLinear (bounds its [seq, chunk, out] temporary). */
const SEQUENTIAL_CHUNK = 32;

/**
 * nn.Linear `prefix` (x · Wᵀ + b, x [1, seq, in]) with each output's dot product summed left to
 * right in float32, every product rounded before it is added (no fused multiply-add, no blocked
 * partial sums), and the bias added last: the order a plain BLAS loop sums in. The products of
 * SEQUENTIAL_CHUNK input columns at a time go through one CumSum, the running sum carried in
 * front of the next chunk, so the order stays strictly sequential.
 */
export async function sequentialLinear(ctx: BuildContext, x: Value, prefix: string, inFeatures: number): Promise<Value> {
  const { g } = ctx;
  const weight = await ctx.weight(`${prefix}.weight`);
  const bias = await requiredBias(ctx, prefix);
  const sizes: number[] = [];
  for (let start = 0; start < inFeatures; start += SEQUENTIAL_CHUNK) sizes.push(Math.min(SEQUENTIAL_CHUNK, inFeatures - start));
  // Chunks of the input columns [1, seq, c, 1] and of the weight's rows [c, out] (one Split each).
  const xs = sizes.length === 1 ? [g.unsqueeze(x, [3])] : g.split(g.unsqueeze(x, [3]), sizes, 2);
  const ws = sizes.length === 1 ? [g.transposed2d(weight)] : g.split(g.transposed2d(weight), sizes, 0);
  let sum: Value | null = null;
  for (let c = 0; c < sizes.length; c++) {
    // [1, seq, c, 1] · [c, out] → [1, seq, c, out]: the products, each rounded to float32.
    let terms = g.mul(xs[c]!, ws[c]!);
    if (sum) terms = g.concat([g.unsqueeze(sum, [2]), terms], 2);
    const running = g.op('CumSum', [terms, g.ints([2])]);
    sum = g.squeeze(g.slice(running, [-1], [Number.MAX_SAFE_INTEGER], [2]), [2]);
  }
  return g.add(sum!, bias);
}

/** q·kᵀ ([1, h, q, d] × [1, h, d, k]) summed left to right over d in float32, each product rounded first. */
export function sequentialProduct(ctx: BuildContext, q: Value, kT: Value, headDim: number): Value {
  const { g } = ctx;
  const ones = new Array<number>(headDim).fill(1);
  const qs = g.split(q, ones, 3);
  const ks = g.split(kT, ones, 2);
  let sum = g.mul(qs[0]!, ks[0]!);
  for (let i = 1; i < headDim; i++) sum = g.add(sum, g.mul(qs[i]!, ks[i]!));
  return sum;
}
