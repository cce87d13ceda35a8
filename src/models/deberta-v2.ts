/**
 * DeBERTa-v2 and DeBERTa-v3 encoders (He et al., "DeBERTa: Decoding-enhanced BERT with Disentangled
 * Attention") as transformers 4.40's DebertaV2Model / DebertaV2ForMaskedLM compute them.
 *
 * Each token is represented by its content H_i alone (position_biased_input: false, as in every
 * released v2/v3 checkpoint; absolute positions are added only when the config asks for them);
 * where tokens are is told to attention by relative position embeddings P, one table for the
 * whole encoder, shared by all layers after its own LayerNorm (norm_rel_ebd: layer_norm):
 *
 *   x = LayerNorm(word[ids] (+ position[i]) (+ type[t]))
 *   P = LayerNorm(rel_embeddings)[0 : 2k]                  k = position_buckets (else max_relative_positions)
 *
 * Disentangled attention, per layer and head (Q = H Wq, K = H Wk, V = H Wv; Qr = P Wq, Kr = P Wk with
 * share_att_key, else P's own pos_query_proj / pos_key_proj):
 *
 *   A_ij = ( Q_i·K_j  +  Q_i·Kr_δ(i,j)  +  K_j·Qr_δ'(j,i) ) / √(d · s)
 *          content→content  content→position (c2p)  position→content (p2c)
 *
 *   s = 1 + the number of c2p / p2c terms in pos_att_type (3 for v3: scale 1/√(3d))
 *   δ(i,j)  = clamp(bucket(i − j) + k, 0, 2k − 1)            c2p: row of Kr for query i, key j
 *   δ'(j,i) = clamp(−bucket(j − i) + k, 0, 2k − 1)           p2c: row of Qr for key j, query i
 *
 * where bucket(r) = r for |r| ≤ k/2 and sign(r)·(k/2 + ⌈log(|r|/(k/2)) / log((m − 1)/(k/2)) · (k/2 − 1)⌉)
 * beyond (make_log_bucket_position, m = max_relative_positions or max_position_embeddings; with
 * position_buckets ≤ 0 no bucketing). Then o = softmax(A)·V; x = LayerNorm(x + o Wo);
 * x = LayerNorm(x + ff(x)) as in BERT; with conv_kernel_size > 0 (v2 xlarge/xxlarge) the first
 * layer's output becomes LayerNorm(x + act(conv1d(embeddings))). The masked-LM head is BERT's
 * (dense, act, LayerNorm, the word embeddings transposed, bias), as `cls.predictions` or the v3
 * release's `lm_predictions.lm_head`.
 *
 * The relative term (c2p + p2c)/√(d·s) is tapped as `score_bias.self.<layer>`: it depends on the
 * layer (each layer projects P with its own Wq, Wk), so the neuron view reads
 * softmax(q·k / √(d·s) + bias), exactly the model's attention. Queries and keys are Q and K as they
 * enter Q·Kᵀ (after projection and bias, before the scale). The norm-based attention / ALTI taps
 * are BERT's post-LN ones (not built with the ConvLayer, which mixes positions outside attention).
 *
 * Graph inputs: `input_ids` [1, seq]; `c2p_index` and `p2c_index` int64 [seq, seq] (δ in HF's
 * layout, computed in JS with PyTorch's float32 arithmetic for the log buckets); `position_ids`
 * and `token_type_ids` when the embeddings have those tables.
 */
import { AttnscopeError, quote } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import { tapName, type Architecture, type ArchitectureInfo, type BuildContext, type ModelInputs } from './architecture.js';
import { splitHeads, tap } from './attention.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import type { ModelConfig } from './config.js';
import { postNormBlock, splitQkv } from './encoder-blocks.js';
import { maskedLmHead } from './heads.js';
import { encoderInfo, layerNormLayer, linearLayer, requiredBias, segmentTypeIds } from './layers.js';
import { stackScoring } from './scoring.js';

/** The disentangled-attention settings of a config, with DebertaV2Config's defaults. */
interface Disentangled {
  /** relative_attention: the c2p/p2c terms are computed at all. */
  relative: boolean;
  c2p: boolean;
  p2c: boolean;
  /** 1 + number of relative terms named in pos_att_type (counted even without relative_attention, as HF does). */
  scaleFactor: number;
  /** k: half the rows of the relative embedding table used (att_span). */
  span: number;
  /** position_buckets > 0: log buckets. */
  buckets: number;
  /** max_relative_positions (or max_position_embeddings when < 1). */
  maxRelative: number;
  shareKey: boolean;
  normRel: boolean;
}

/** pos_att_type as DebertaV2Config reads it: a list, or a 'p2c|c2p' string, or null. */
function posAttTypes(config: ModelConfig): string[] {
  const raw = config.raw.pos_att_type;
  if (raw === undefined || raw === null) return [];
  if (typeof raw === 'string') return raw.toLowerCase().split('|').map((s) => s.trim());
  if (Array.isArray(raw) && raw.every((s) => typeof s === 'string')) return raw as string[];
  throw new AttnscopeError(`${config.source}: pos_att_type should be a list of 'c2p' / 'p2c' or a string such as 'p2c|c2p', got ${quote(raw, 60)}`);
}

function disentangled(config: ModelConfig): Disentangled {
  const types = posAttTypes(config);
  const c2p = types.includes('c2p');
  const p2c = types.includes('p2c');
  const relative = config.bool('relative_attention', false);
  const maxRelativeRaw = config.int('max_relative_positions', -1);
  const maxRelative = maxRelativeRaw < 1 ? config.int('max_position_embeddings', 512) : maxRelativeRaw;
  const buckets = config.int('position_buckets', -1);
  const normRel = config.str('norm_rel_ebd', 'none').toLowerCase().split('|').map((s) => s.trim());
  const unknownNorm = normRel.find((n) => n !== 'none' && n !== 'layer_norm');
  if (unknownNorm !== undefined) {
    throw new AttnscopeError(`${config.source}: norm_rel_ebd ${quote(unknownNorm)} is not supported (allowed: 'none', 'layer_norm')`);
  }
  return {
    relative, c2p, p2c,
    scaleFactor: 1 + (c2p ? 1 : 0) + (p2c ? 1 : 0),
    span: buckets > 0 ? buckets : maxRelative,
    buckets, maxRelative,
    shareKey: config.bool('share_att_key', false),
    normRel: normRel.includes('layer_norm'),
  };
}

/** ConvLayer settings (conv_kernel_size > 0: DeBERTa-v2 xlarge/xxlarge), or null. */
interface ConvSpec {
  kernel: number;
  groups: number;
  act: string;
}

function convSpec(config: ModelConfig): ConvSpec | null {
  const kernel = config.int('conv_kernel_size', 0);
  if (kernel <= 0) return null;
  return { kernel, groups: config.int('conv_groups', 1), act: config.str('conv_act', 'tanh') };
}

/** Options transformers' DeBERTa-v2 can switch on that this family does not build: refused by name. */
function refuseUnsupported(config: ModelConfig, hidden: number, heads: number): void {
  const conv = convSpec(config);
  if (conv && conv.kernel % 2 === 0) {
    // Padding (k − 1) / 2 shortens the sequence by one: transformers fails on the residual sum.
    throw new AttnscopeError(`${config.source}: conv_kernel_size ${conv.kernel} is even; transformers' ConvLayer needs an odd kernel (its padding keeps the length only then)`);
  }
  if (conv && (conv.groups < 1 || hidden % conv.groups !== 0)) {
    throw new AttnscopeError(`${config.source}: conv_groups ${conv.groups} should be a positive divisor of hidden_size ${hidden}`);
  }
  if (config.has('attention_head_size') && config.int('attention_head_size') * heads !== hidden) {
    throw new AttnscopeError(`${config.source}: attention_head_size ${config.int('attention_head_size')} × ${heads} heads ≠ hidden_size ${hidden}; only attention_head_size = hidden_size / num_attention_heads is supported`);
  }
}

function describe(config: ModelConfig): ArchitectureInfo {
  const hidden = config.int('hidden_size');
  const heads = config.int('num_attention_heads');
  const layers = config.int('num_hidden_layers');
  refuseUnsupported(config, hidden, heads);
  const d = disentangled(config);
  // Relative positions reach any length; only absolute position embeddings bound it.
  const maxPositions = config.bool('position_biased_input', true) ? config.int('max_position_embeddings', 512) : Number.POSITIVE_INFINITY;
  const info = encoderInfo(config, layers, heads, hidden, maxPositions);
  const hasBias = d.relative && (d.c2p || d.p2c);
  const kind = [d.c2p ? 'c2p' : '', d.p2c ? 'p2c' : ''].filter(Boolean).join(' + ');
  // Norm-based attention / ALTI: post-LN blocks like BERT's (not with the ConvLayer, which mixes
  // positions between layers 0 and 1 outside the attention).
  if (!convSpec(config)) info.contributions = { norm: 'post', eps: config.num('layer_norm_eps', 1e-7) };
  info.scoring = {
    self: stackScoring(layers, {
      scale: 1 / Math.sqrt(info.headDim * d.scaleFactor),
      causal: false,
      ...(hasBias ? { bias: 'per-layer' as const, biasKind: `disentangled position (${kind})` } : {}),
    }),
  };
  return info;
}

const f32 = Math.fround;

/**
 * make_log_bucket_position for one relative position r = query − key, with PyTorch's float32
 * arithmetic (abs/mid, log, the ratio and its product are float32; a bucket off by one changes
 * the term).
 */
function logBucket(r: number, bucketSize: number, maxPosition: number): number {
  const mid = Math.floor(bucketSize / 2);
  const abs = Math.abs(r) < mid ? mid - 1 : Math.abs(r);
  if (abs <= mid) return r;
  const logPos = f32(Math.ceil(f32(f32(f32(Math.log(f32(abs / mid))) / f32(Math.log(f32((maxPosition - 1) / mid)))) * (mid - 1))) + mid);
  return Math.sign(r) * logPos;
}

/** build_relative_position's value for query i, key j. */
function relativePosition(d: Disentangled, i: number, j: number): number {
  return d.buckets > 0 ? logBucket(i - j, d.buckets, d.maxRelative) : i - j;
}

/**
 * The c2p and p2c gather indices [n, n] in HF's layout: c2p[i][j] = clamp(rel(i, j) + k) picks, for
 * query i, the column of Q·Krᵀ for key j; p2c[j][i] = clamp(−rel(j, i) + k) picks, for key j, the
 * column of K·Qrᵀ for query i (the result is transposed afterwards).
 */
function relativeIndices(d: Disentangled, n: number): { c2p: RuntimeTensor; p2c: RuntimeTensor } {
  const k = d.span;
  const clamp = (v: number): bigint => BigInt(Math.min(Math.max(v + k, 0), 2 * k - 1));
  const rel: number[] = [];
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) rel.push(relativePosition(d, i, j));
  const c2p = new BigInt64Array(n * n);
  const p2c = new BigInt64Array(n * n);
  for (let a = 0; a < n; a++) {
    for (let b = 0; b < n; b++) {
      c2p[a * n + b] = clamp(rel[a * n + b]!);
      p2c[a * n + b] = clamp(-rel[a * n + b]!);
    }
  }
  return { c2p: { type: 'int64', dims: [n, n], data: c2p }, p2c: { type: 'int64', dims: [n, n], data: p2c } };
}

/** What every layer's relative terms read: P [1, 2k, hidden] and the gather indices. */
interface RelativeInputs {
  embeddings: Value;
  c2pIndex: Value;
  p2cIndex: Value;
}

/** Per-head projections of the relative embeddings P [1, 2k, hidden] → [1, heads, 2k, headDim]. */
interface RelativeProjections {
  /** Kr: P through the key projection (c2p). */
  key?: Value;
  /** Qr: P through the query projection (p2c). */
  query?: Value;
}

/** `index` [n, n] broadcast to the shape of scores [1, heads, n, ·] with n columns, for GatherElements. */
function expandIndex(ctx: BuildContext, index: Value, like: Value): Value {
  const { g } = ctx;
  return g.expand(index, g.concat([g.shape(like, 0, 3), g.shape(index, 1, 2)], 0));
}

/**
 * disentangled_attention_bias: (c2p + p2c) / √(d·s) [1, heads, n, n], each term divided by the
 * float32 √(d·s) as HF does before the sum.
 */
function disentangledBias(ctx: BuildContext, q: Value, k: Value, rel: RelativeProjections, d: Disentangled, headDim: number, inputs: RelativeInputs): Value {
  const { g } = ctx;
  const scale = g.scalar(Math.sqrt(headDim * d.scaleFactor));
  const terms: Value[] = [];
  if (d.c2p) {
    const c2pAll = g.matMul(q, g.transpose(rel.key!, [0, 1, 3, 2]));
    const c2p = g.op('GatherElements', [c2pAll, expandIndex(ctx, inputs.c2pIndex, c2pAll)], { axis: 3 });
    terms.push(g.div(c2p, scale));
  }
  if (d.p2c) {
    const p2cAll = g.matMul(k, g.transpose(rel.query!, [0, 1, 3, 2]));
    const p2c = g.transpose(g.op('GatherElements', [p2cAll, expandIndex(ctx, inputs.p2cIndex, p2cAll)], { axis: 3 }), [0, 1, 3, 2]);
    terms.push(g.div(p2c, scale));
  }
  return terms.length === 2 ? g.add(terms[0]!, terms[1]!) : terms[0]!;
}

/** One post-LN DeBERTa block: disentangled self-attention, add & norm, feed-forward, add & norm. */
async function debertaLayer(
  ctx: BuildContext, x: Value, p: string, layer: number, info: ArchitectureInfo, d: Disentangled, relative: RelativeInputs | null,
  finish: ((y: Value) => Promise<Value>) | null,
): Promise<Value> {
  const { g, config } = ctx;
  const eps = config.num('layer_norm_eps', 1e-7);
  const { numHeads: heads, headDim } = info;
  const a = `${p}.attention.self`;
  const { q, k, v } = await splitQkv(ctx, x, [`${a}.query_proj`, `${a}.key_proj`, `${a}.value_proj`], heads, headDim);
  let bias: Value | null = null;
  if (relative) {
    const project = async (proj: string): Promise<Value> => splitHeads(g, await linearLayer(ctx, relative.embeddings, `${a}.${proj}`), heads, headDim);
    const rel: RelativeProjections = {};
    if (d.c2p) rel.key = await project(d.shareKey ? 'key_proj' : 'pos_key_proj');
    if (d.p2c) rel.query = await project(d.shareKey ? 'query_proj' : 'pos_query_proj');
    bias = disentangledBias(ctx, q, k, rel, d, headDim, relative);
    tap(ctx, ctx.taps.qk, bias, tapName('score_bias', 'self', layer));
  }
  return postNormBlock(ctx, x, {
    layer, heads, headDim, q, k, v,
    scale: 1 / Math.sqrt(headDim * d.scaleFactor), scaleStyle: 'scores-div',
    bias,
    attnOut: `${p}.attention.output.dense`, attnNorm: `${p}.attention.output.LayerNorm`,
    ffnIn: `${p}.intermediate.dense`, ffnOut: `${p}.output.dense`, ffnNorm: `${p}.output.LayerNorm`,
    act: config.str('hidden_act', 'gelu'), eps,
    // The ConvLayer after layer 0 is part of what the layer hands on (PyTorch's hidden_states[1]).
    finish,
  });
}

/**
 * ConvLayer, applied once after the first layer: LayerNorm(x + act(conv1d(embeddings))), a
 * same-length 1-D convolution over positions of the encoder's input (kernel k, padding (k − 1)/2,
 * conv_groups). With no padding tokens its masks are all ones.
 */
async function convLayer(ctx: BuildContext, embedded: Value, x: Value, p: string, conv: ConvSpec, eps: number): Promise<Value> {
  const { g } = ctx;
  const pad = (conv.kernel - 1) / 2;
  const out = g.op('Conv', [g.transpose(embedded, [0, 2, 1]), await ctx.weight(`${p}.conv.weight`), await requiredBias(ctx, `${p}.conv`)], {
    kernel_shape: [conv.kernel], pads: [pad, pad], group: conv.groups,
  });
  return layerNormLayer(ctx, g.add(x, activation(g, conv.act, g.transpose(out, [0, 2, 1]))), `${p}.LayerNorm`, eps);
}

/** DebertaV2Embeddings: word (+ absolute position) (+ token type) embeddings, projected if narrower, LayerNorm. */
async function embeddings(ctx: BuildContext, base: string, eps: number): Promise<Value> {
  const { g, config } = ctx;
  const e = `${base}embeddings`;
  const token = g.gather(await ctx.weight(`${e}.word_embeddings.weight`), g.input('input_ids', 'int64', [1, 'seq']));
  let x = token;
  let position: Value | null = null;
  if (config.bool('position_biased_input', true)) {
    position = g.gather(await ctx.weight(`${e}.position_embeddings.weight`), g.input('position_ids', 'int64', [1, 'seq']));
    x = g.add(x, position);
  }
  let segment: Value | null = null;
  if (config.int('type_vocab_size', 0) > 0) {
    segment = g.gather(await ctx.weight(`${e}.token_type_embeddings.weight`), g.input('token_type_ids', 'int64', [1, 'seq']));
    x = g.add(x, segment);
  }
  tapEmbeddings(ctx, 'self', { token, position, segment });
  if (ctx.hasWeight(`${e}.embed_proj.weight`)) x = g.linear(x, await ctx.weight(`${e}.embed_proj.weight`));
  // With no padding the mask HF multiplies the embeddings by is all ones.
  return layerNormLayer(ctx, x, `${e}.LayerNorm`, eps);
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const info = describe(config);
  const d = disentangled(config);
  const conv = convSpec(config);
  const eps = config.num('layer_norm_eps', 1e-7);
  const base = ctx.findPrefix(['deberta.', ''], 'embeddings.word_embeddings.weight');
  const embedded = await embeddings(ctx, base, eps);
  let x = embedded;
  let relative: RelativeInputs | null = null;
  if (d.relative && (d.c2p || d.p2c)) {
    // P = LayerNorm(rel_embeddings)[0 : 2k], as one [1, 2k, hidden] batch for the projections.
    let table = await ctx.weight(`${base}encoder.rel_embeddings.weight`);
    if (d.normRel) table = await layerNormLayer(ctx, table, `${base}encoder.LayerNorm`, eps);
    relative = {
      embeddings: g.unsqueeze(g.slice(table, [0], [2 * d.span], [0]), [0]),
      c2pIndex: g.input('c2p_index', 'int64', ['seq', 'seq']),
      p2cIndex: g.input('p2c_index', 'int64', ['seq', 'seq']),
    };
  }
  for (let l = 0; l < info.numLayers; l++) {
    const finish = l === 0 && conv ? (y: Value): Promise<Value> => convLayer(ctx, embedded, y, `${base}encoder.conv`, conv, eps) : null;
    x = await debertaLayer(ctx, x, `${base}encoder.layer.${l}`, l, info, d, relative, finish);
  }
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  if (ctx.taps.logits) g.output(await predictionHead(ctx, x, base, eps), 'logits');
  await tapLogitLens(ctx, 'self', (h) => predictionHead(ctx, h, base, eps));
}

/**
 * The masked-LM head: transformers 4.40's `cls.predictions` (BERT's layout), or the
 * `lm_predictions.lm_head` the microsoft/deberta-v3-* releases ship; both decode with the word
 * embeddings.
 */
async function predictionHead(ctx: BuildContext, x: Value, base: string, eps: number): Promise<Value> {
  const act = ctx.config.str('hidden_act', 'gelu');
  const words = `${base}embeddings.word_embeddings.weight`;
  if (ctx.hasWeight('lm_predictions.lm_head.dense.weight') && !ctx.hasWeight('cls.predictions.transform.dense.weight')) {
    return maskedLmHead(ctx, x, {
      dense: 'lm_predictions.lm_head.dense', act, norm: 'lm_predictions.lm_head.LayerNorm', eps,
      decoder: [words], bias: ['lm_predictions.lm_head.bias'],
    });
  }
  return maskedLmHead(ctx, x, {
    dense: 'cls.predictions.transform.dense', act, norm: 'cls.predictions.transform.LayerNorm', eps,
    decoder: ['cls.predictions.decoder.weight', words], bias: ['cls.predictions.bias', 'cls.predictions.decoder.bias'],
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const n = inputs.inputIds.length;
  const { c2p, p2c } = relativeIndices(disentangled(config), n);
  return {
    input_ids: int64Tensor(inputs.inputIds),
    position_ids: int64Tensor(Array.from({ length: n }, (_, i) => i)),
    token_type_ids: int64Tensor(segmentTypeIds(config, inputs.typeIds, n)),
    c2p_index: c2p,
    p2c_index: p2c,
  };
}

export const debertaV2Family: Architecture = {
  modelTypes: ['deberta-v2'],
  describe,
  build,
  feeds,
};
