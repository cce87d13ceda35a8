/**
 * Scaled dot-product attention as Hugging Face's eager implementations compute it, with the
 * probabilities, queries and keys tapped as graph outputs when requested.
 */
import { AttnscopeError } from '../core/errors.js';
import type { StackName } from '../core/trace.js';
import { FloatAttr, type GraphBuilder, type Value } from '../graph/builder.js';
import { tapName, type BuildContext, type TapRequest } from './architecture.js';

/** [1, seq, heads·headDim] → [1, heads, seq, headDim]. */
export function splitHeads(g: GraphBuilder, x: Value, heads: number, headDim: number): Value {
  return g.transpose(g.reshape(x, [0, 0, heads, headDim]), [0, 2, 1, 3]);
}

/** [1, heads, seq, headDim] → [1, seq, heads·headDim]. */
export function mergeHeads(g: GraphBuilder, x: Value, heads: number, headDim: number): Value {
  return g.reshape(g.transpose(x, [0, 2, 1, 3]), [0, 0, heads * headDim]);
}

/** Taps `value` as output `name` if `enabled`. */
export function tap(ctx: BuildContext, enabled: boolean, value: Value, name: string): void {
  if (!enabled) return;
  ctx.g.output(value, name, 'float32');
}

export interface AttentionArgs {
  stack: StackName;
  layer: number;
  /** Per-head queries [1, heads, q, headDim], keys and values [1, kvHeads, k, headDim], as they enter q·k. */
  q: Value;
  k: Value;
  v: Value;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Multiplier of q·k (1/√headDim for most models, 1 for T5). */
  scale: number;
  /**
   * Where the scale is applied, as the reference implementation does it: on the scores
   * ('scores-mul', 'scores-div' dividing by 1/scale), or on the queries before the product
   * ('query-mul': BART, DistilBERT). All are the same maths; the order changes float rounding.
   */
  scaleStyle: 'scores-mul' | 'scores-div' | 'query-mul';
  /**
   * Added to the scores (masks, relative position bias), broadcastable to [1, heads, q, k]: a graph
   * value, or a bias built from positions (`positionBias`: each band's rows in a banded graph).
   */
  bias?: Value | null;
  /**
   * The causal (or sliding-window) mask, added after `bias` ((scores + (bias + mask)) as before):
   * from `causalMaskInput` (built in the graph for each band of rows when attention runs banded),
   * or any additive mask value broadcastable to [1, heads, q, k].
   */
  mask?: Value | null;
  /**
   * With 'query-mul': the queries already multiplied by the scale, as the model computes them
   * (e.g. BART scales q_proj's output before splitting heads). Used for the product instead of
   * q · scale; `q` is still what is tapped.
   */
  scaledQ?: Value;
  /**
   * The product q·kᵀ ([1, heads, q, headDim] × [1, heads, headDim, k]) when the model's float
   * rounding needs another summation order than MatMul's (see sequentialProduct in layers.ts).
   */
  product?: (q: Value, kT: Value) => Value;
  /**
   * The output projection W_O the merged heads go through (without its bias), for the
   * `contributions` taps: `weight` as the checkpoint stores it, [hidden, heads·headDim] for
   * nn.Linear ('out-in'), [heads·headDim, hidden] for GPT-2's Conv1D ('in-out').
   */
  outputProjection?: { weight: Value; layout: 'out-in' | 'in-out' };
}

/** Repeats each of kvHeads heads numHeads/kvHeads times: [b, kv, s, d] → [b, heads, s, d] (any batch b). */
function repeatKv(g: GraphBuilder, x: Value, numHeads: number, numKvHeads: number, headDim: number): Value {
  if (numHeads === numKvHeads) return x;
  const groups = numHeads / numKvHeads;
  const expanded = g.expand(g.unsqueeze(x, [2]), g.ints([1, 1, groups, 1, 1]));
  return g.reshape(expanded, [0, numHeads, -1, headDim]);
}

/** Stacks whose keys and values grow token by token when decoding incrementally. */
const CACHED_STACKS = new Set<StackName>(['self', 'decoder']);

/**
 * With `taps.cache`, prepends the past keys/values (graph inputs) to this step's and returns
 * the whole as `present_*` outputs; otherwise returns the keys/values unchanged.
 */
function withCache(ctx: BuildContext, a: AttentionArgs): { k: Value; v: Value } {
  if (!ctx.taps.cache || !CACHED_STACKS.has(a.stack)) return { k: a.k, v: a.v };
  const { g } = ctx;
  const shape = [1, a.numKvHeads, 'past', a.headDim] as const;
  const id = `${a.stack}.${a.layer}`;
  const k = g.concat([g.input(`past_key.${id}`, 'float32', shape), a.k], 2);
  const v = g.concat([g.input(`past_value.${id}`, 'float32', shape), a.v], 2);
  g.output(k, `present_key.${id}`);
  g.output(v, `present_value.${id}`);
  return { k, v };
}

/**
 * Returns the attention output [1, heads, q, headDim] (with `taps.headGates`, each head's times its
 * gate) and taps probabilities, queries, keys.
 */
export function attention(ctx: BuildContext, a: AttentionArgs): Value {
  const { g } = ctx;
  tap(ctx, ctx.taps.qk, a.q, `queries.${a.stack}.${a.layer}`);
  tap(ctx, ctx.taps.qk, a.k, `keys.${a.stack}.${a.layer}`);
  tap(ctx, ctx.taps.values ?? false, a.v, tapName('values', a.stack, a.layer));
  const { k: allK, v: allV } = withCache(ctx, a);
  const banded = bandedAttention(ctx.taps);
  const built = a.bias ? POSITION_BIASES.get(a.bias) : undefined;
  if (built) tapPositionBias(ctx, built, a.q, allK, banded);
  // Not banded, scores that are q·k times a scale plus at most a whole mask: onnxruntime's fused op.
  const fusedScale = banded ? undefined : fusableScale(ctx, a);
  if (fusedScale !== undefined) {
    if (ctx.taps.contributions && a.stack !== 'cross') tapTransformedValues(ctx, a, repeatKv(g, allV, a.numHeads, a.numKvHeads, a.headDim));
    // 'query-mul': the model's scaled queries (scale 1), else the queries with the scale as the
    // product's, as onnxruntime folds the separate ops' Mul into their FusedMatMul.
    const context = fusedAttention(ctx, a, a.scaleStyle === 'query-mul' ? (a.scaledQ ?? a.q) : a.q, allK, allV, fusedScale);
    return ctx.taps.headGates ? g.mul(context, headGate(ctx, a)) : context;
  }
  // The queries the product reads ('query-mul': already scaled).
  const qIn = a.scaleStyle === 'query-mul' ? (a.scaledQ ?? (a.scale === 1 ? a.q : g.mul(a.q, g.scalar(a.scale)))) : a.q;
  const k = repeatKv(g, allK, a.numHeads, a.numKvHeads, a.headDim);
  const v = repeatKv(g, allV, a.numHeads, a.numKvHeads, a.headDim);
  const kT = g.transpose(k, [0, 1, 3, 2]);
  /**
   * softmax(scores)·V of the queries `q` (all, or a band of rows) with their rows of the bias; with
   * `keyEnd`, over the keys before it only (a causal band: the keys after its last row are masked,
   * their weights exactly 0).
   */
  const rows = (q: Value, bias: Value | null | undefined, tapProbs: boolean, keyEnd?: Value): Value => {
    const kTi = keyEnd ? g.slice(kT, g.ints([0]), keyEnd, [3]) : kT;
    const vi = keyEnd ? g.slice(v, g.ints([0]), keyEnd, [2]) : v;
    let scores: Value;
    if (a.scaleStyle === 'query-mul') {
      scores = a.product ? a.product(q, kTi) : g.matMul(q, kTi);
    } else {
      scores = g.matMul(q, kTi);
      if (a.scale !== 1) {
        scores = a.scaleStyle === 'scores-div' ? g.div(scores, g.scalar(1 / a.scale)) : g.mul(scores, g.scalar(a.scale));
      }
    }
    if (bias) scores = g.add(scores, bias);
    const probs = g.softmax(scores, -1);
    tap(ctx, tapProbs, probs, `attention.${a.stack}.${a.layer}`);
    return g.matMul(probs, vi);
  };
  // Cross attention is not decomposed: its keys are the encoder's tokens, not the stream it adds to.
  if (ctx.taps.contributions && a.stack !== 'cross') tapTransformedValues(ctx, a, v);
  // Attention on demand (queries and keys tapped, no probabilities): the queries go through in bands
  // of rows, so the [heads, queries, keys] scores are never held whole (each row is computed as before).
  // With a key/value cache only where asked (TapRequest.queryBands: generation's long prompt pass).
  if (banded) {
    const context = queryBands(g, qIn, allK, a.bias ?? null, a.mask ?? null, ctx.taps.queryBandCount ?? QUERY_BANDS, rows);
    return ctx.taps.headGates ? g.mul(context, headGate(ctx, a)) : context;
  }
  if (a.mask && CAUSAL_MASKS.has(a.mask)) throw new Error(`attention ${a.stack}.${a.layer}: a causal mask built for banded attention reached a graph that is not banded`);
  // Not banded: a bias built from positions is built whole ([1, heads, queries or 1, keys]), once.
  const bias = built ? wholeBias(g, built, a.q, allK, a.mask ?? null) : a.bias && a.mask ? g.add(a.bias, a.mask) : (a.bias ?? a.mask);
  const context = rows(qIn, bias, ctx.taps.attention);
  return ctx.taps.headGates ? g.mul(context, headGate(ctx, a)) : context;
}

/**
 * The scale onnxruntime's fused `Attention` op (ONNX opset 23) is given for `a`, or undefined where
 * attention stays separate ops: with TapRequest.decomposedAttention (autodiff, batched graphs), a product of its
 * own, an additive bias, a mask other than a whole one from causalMaskInput (the op reads one
 * [queries, keys] block per head, not a row broadcast over the queries), or a division by a
 * number that is not a power of two (x / d and x · (1/d) then round differently). Attention in bands
 * of query rows (on demand) keeps them too: one graph serves every length, a band can be empty
 * (fewer tokens than bands), and the op refuses zero queries.
 *
 * The op computes what the separate ops do, in the same order: per head, MLAS's product of the
 * queries and the transposed keys times the scale (the scale applied to the float32 sum, as the
 * MatMul + Mul that onnxruntime fuses into FusedMatMul), the mask added (0 or the most negative
 * float32: the same sums), MLAS's softmax, and the product with the values; grouped key/value heads
 * are read in place (query head h reads key head ⌊h·kvHeads/heads⌋, as repeat_kv copies them). On
 * the fixtures the probabilities and the context are the separate ops' bit for bit
 * (test/graph-fused-attention.test.ts). It runs each head's scores while they sit in the cache
 * instead of one pass over all heads per op, and needs no copy of the keys and values per query head.
 */
function fusableScale(ctx: BuildContext, a: AttentionArgs): number | undefined {
  if (ctx.taps.decomposedAttention || a.product || a.bias || (a.mask && !WHOLE_MASKS.has(a.mask))) return undefined;
  if (a.numHeads % a.numKvHeads !== 0) return undefined;
  if (a.scaleStyle === 'query-mul') return a.scaledQ ? 1 : a.scale;
  if (a.scaleStyle === 'scores-mul') return a.scale;
  // 'scores-div': x / d with d = 1/scale, exact as x · 2^-k only for d a power of two.
  const d = Math.fround(1 / a.scale);
  return Number.isFinite(d) && d > 0 && 2 ** Math.round(Math.log2(d)) === d ? 1 / d : undefined;
}

/**
 * softmax(q·kᵀ·scale + mask)·v as one onnxruntime `Attention` node (see fusableScale): the context
 * [1, heads, queries, headDim], and the probabilities tapped as `attention.<stack>.<layer>` with
 * `taps.attention` (the op's fourth output, qk_matmul_output_mode 3: after the softmax).
 */
function fusedAttention(ctx: BuildContext, a: AttentionArgs, q: Value, k: Value, v: Value, scale: number): Value {
  const { g } = ctx;
  const probs = ctx.taps.attention;
  const attributes = { scale: new FloatAttr(scale), ...(probs ? { qk_matmul_output_mode: 3 } : {}) };
  const [context, , , p] = g.nodeWith('Attention', a.mask ? [q, k, v, a.mask] : [q, k, v], attributes, [true, false, false, probs]);
  if (p) tap(ctx, true, p, `attention.${a.stack}.${a.layer}`);
  return context!;
}

/**
 * Whether attention runs in bands of query rows: queries and keys tapped and no probabilities
 * (attention on demand), with a key/value cache only where asked (TapRequest.queryBands:
 * generation's long prompt pass). Every attention of a graph decides alike.
 */
export function bandedAttention(taps: TapRequest): boolean {
  return taps.qk && !taps.attention && (!taps.cache || taps.queryBands === true);
}

/** Bands of query rows attention is computed in when no probabilities are tapped, unless TapRequest.queryBandCount says otherwise (row i goes to band ⌊i·bands/n⌋). */
export const QUERY_BANDS = 16;

/** What one band's [heads, rows, keys] scores may take, about (queryBandCount). */
const BAND_BYTES = 256 * 2 ** 20;

/** The most bands a graph is built with (rows of 32,768 tokens × 14 heads need 256 for BAND_BYTES). */
export const MAX_QUERY_BANDS = 1024;

/**
 * Bands of query rows for `n` tokens attended by `heads` heads (each band's float32 scores
 * [heads, rows, n] within about BAND_BYTES): QUERY_BANDS, or the power of two above that the
 * length needs, so a graph is built for few band counts (one per power of two; its weights are
 * shared through the graph cache). Llama-3.2-1B's 32 heads: 16 up to 5,792 tokens, 32 at 8,192;
 * 14 heads at 32,768 tokens: 256.
 */
export function queryBandCount(heads: number, n: number): number {
  const needed = (heads * n * n * 4) / BAND_BYTES;
  let bands = QUERY_BANDS;
  while (bands < needed && bands < MAX_QUERY_BANDS) bands *= 2;
  return bands;
}

/**
 * Bands of token rows a banded graph runs each pre-norm block's MLP in: an eighth of its query
 * bands (2 by default, 4 for Llama-3.2-1B at 8,192 tokens, 32 for 32,768 tokens and 14 heads), as
 * its [rows, inner] intermediates are a long input's largest values after the scores (268 MB each
 * for that 1B shape at 8,192 tokens, 637 MB for Qwen2.5-0.5B's at 32,768). 1 when attention is not
 * banded, with a key/value cache, or when taps read inside the MLP (its activations, the router).
 */
export function mlpBandCount(taps: TapRequest): number {
  // Not with a key/value cache: generation's steps are one token each (and its prompt pass keeps the MLP whole).
  if (!bandedAttention(taps) || taps.cache || taps.mlpActivations || taps.routing || taps.routerInput) return 1;
  return Math.max(1, Math.floor((taps.queryBandCount ?? QUERY_BANDS) / 8));
}

/**
 * `f` of each of `bands` bands of the rows of `x` [b, rows, width] (⌊rows·i/bands⌋ …), concatenated
 * along the rows: f must treat rows independently (a per-token MLP), so each row is as before.
 */
export async function inRowBands(g: BuildContext['g'], x: Value, bands: number, f: (rows: Value) => Promise<Value>): Promise<Value> {
  if (bands <= 1) return f(x);
  const n = g.shape(x, 1, 2);
  const bound = (i: number): Value => g.op('Div', [g.mul(n, g.ints([i])), g.ints([bands])]);
  const parts: Value[] = [];
  let start = bound(0);
  for (let i = 1; i <= bands; i++) {
    const end = i === bands ? n : bound(i);
    parts.push(await f(g.slice(x, start, end, [1])));
    start = end;
  }
  return g.concat(parts, 1);
}

const MASKED = -3.4028234663852886e38;

/** Causal masks that attention builds in the graph band by band (causalMaskInput in a banded graph), with their windows. */
const CAUSAL_MASKS = new WeakMap<Value, { window: number | null }>();

/** Masks fed whole, [1, 1, queries, keys] (causalMaskInput in a graph that is not banded): one row per query. */
const WHOLE_MASKS = new WeakSet<Value>();

/**
 * A stack's causal mask for `attention`'s `mask`: key j is masked for the query at position i (the
 * queries following `past = keys − queries` cached keys) when j > i, or when `window` is a number
 * and i − j ≥ window (models/masks.ts causalMask's rule). In a graph that is not banded, the fed
 * input `name` [1, 1, queries, keys] (`dims` its two last dimension names); in a banded one no
 * input: attention builds each band's [rows, keys] mask from positions (the same values, so
 * nothing of size queries × keys is fed or held). The value returned must only be given to
 * `attention` as `mask` (in a banded graph it is not a graph value).
 */
export function causalMaskInput(ctx: BuildContext, name: string, window: number | null, dims: readonly [string, string] = ['seq', 'keys']): Value {
  if (!bandedAttention(ctx.taps)) {
    const whole = ctx.g.input(name, 'float32', [1, 1, ...dims]);
    WHOLE_MASKS.add(whole);
    return whole;
  }
  const marker: Value = { name: `${name} (built per band)` };
  CAUSAL_MASKS.set(marker, { window });
  return marker;
}

/**
 * A score bias that depends on positions only (ALiBi, T5's relative buckets), built in the graph:
 * `rows` gives the rows [start, end) of it for `queries` queries that are the last of `keys` keys
 * (a cache holds keys − queries before them), broadcastable to [1, heads, end − start, keys] (a
 * query axis of 1 when every row is the same). Each argument is an int64 [1]. `tap`: what the trace
 * records of it with `taps.qk`, tapped by the first attention that adds it (layers that share the
 * bias share one output): in a graph that is not banded `dense`, the whole bias [1, heads, queries,
 * keys]; in a banded one `compact`'s output, one row over the keys [1, heads, 1, keys] or one value
 * per offset j − i [1, heads, queries + keys − 1] (engine/scores.ts reads either).
 */
export interface PositionBiasSpec {
  rows(start: Value, end: Value, queries: Value, keys: Value): Value;
  tap?: { dense: string; compact: { name: string; value(queries: Value, keys: Value): Value } };
}

/**
 * The on-demand record of a relative position bias: `score_bias_relative.<stack>.<layer>` [1, heads,
 * queries + keys − 1], one value per offset j − i (engine/scores.ts collectScores reads it).
 */
export function relativeBiasOutput(stack: StackName, layer: number): string {
  return `score_bias_relative.${stack}.${layer}`;
}

/** Position biases given to `attention` as `bias` (positionBias), with whether the trace's output was tapped. */
/** A position bias as attention holds it: whether its trace output was tapped, its whole value (and with each mask) once built. */
type BuiltBias = PositionBiasSpec & { tapped: boolean; whole?: Value; masked: Map<Value, Value> };

const POSITION_BIASES = new WeakMap<Value, BuiltBias>();

/**
 * A bias built from positions for `attention`'s `bias`: in a banded graph each band's rows only (so
 * nothing of size queries × keys is fed or held), else the whole bias. The value returned is not a
 * graph value: it must only be given to `attention` as `bias`.
 */
export function positionBias(name: string, spec: PositionBiasSpec): Value {
  const marker: Value = { name: `${name} (built from positions)` };
  POSITION_BIASES.set(marker, { ...spec, tapped: false, masked: new Map() });
  return marker;
}

/** The number of queries of q [1, heads, q, d] and of keys of k [1, kv, k, d], as int64 [1]. */
function queriesAndKeys(g: GraphBuilder, q: Value, k: Value): [Value, Value] {
  return [g.shape(q, 2, 3), g.shape(k, 2, 3)];
}

/**
 * A position bias's whole value [1, heads, queries or 1, keys] plus `mask` (a graph that is not
 * banded), built once for every layer that adds it (one stack's, whose queries and keys are alike).
 */
function wholeBias(g: GraphBuilder, spec: BuiltBias, q: Value, k: Value, mask: Value | null): Value {
  if (!spec.whole) {
    const [queries, keys] = queriesAndKeys(g, q, k);
    spec.whole = spec.rows(g.ints([0]), queries, queries, keys);
  }
  if (!mask) return spec.whole;
  let sum = spec.masked.get(mask);
  if (!sum) spec.masked.set(mask, (sum = g.add(spec.whole, mask)));
  return sum;
}

/** Taps what the trace records of a position bias (PositionBiasSpec.tap), once per graph. */
function tapPositionBias(ctx: BuildContext, spec: BuiltBias, q: Value, k: Value, banded: boolean): void {
  if (!spec.tap || !ctx.taps.qk || spec.tapped) return;
  spec.tapped = true;
  const { g } = ctx;
  const [queries, keys] = queriesAndKeys(g, q, k);
  if (banded) {
    ctx.g.output(spec.tap.compact.value(queries, keys), spec.tap.compact.name, 'float32');
    return;
  }
  // [1, heads, queries, keys]: a row over the keys repeated for every query, as the dense trace reads it.
  const whole = g.expand(wholeBias(g, spec, q, k, null), g.concat([g.ints([1, 1]), queries, g.ints([1])], 0));
  ctx.g.output(whole, spec.tap.dense, 'float32');
}

/**
 * Rows [start, end) of a causal mask with `window` for `queries` queries after `keys − queries`
 * cached keys: 0 where the query may read key j, the most negative float32 where not (what the fed
 * mask holds), as [rows, keys] (or over the keys before `keyEnd` only: [rows, keyEnd]).
 */
function bandMask(g: BuildContext['g'], start: Value, end: Value, queries: Value, keys: Value, window: number | null, keyEnd: Value = keys): Value {
  const past = g.sub(keys, queries);
  const scalar = (v: Value): Value => g.squeeze(v, [0]);
  const one = scalar(g.ints([1]));
  const qPos = g.unsqueeze(g.op('Range', [scalar(g.add(start, past)), scalar(g.add(end, past)), one]), [1]);
  const kPos = g.unsqueeze(g.op('Range', [scalar(g.ints([0])), scalar(keyEnd), one]), [0]);
  let masked = g.op('Greater', [kPos, qPos]);
  if (window !== null) masked = g.op('Or', [masked, g.op('GreaterOrEqual', [g.sub(qPos, kPos), g.ints([window])])]);
  return g.where(masked, g.scalar(MASKED), g.scalar(0));
}

/**
 * `rows` of each band of the queries [1, heads, n, d] (`bands` bands of ⌊n/bands⌋ or so rows, empty
 * ones when n < bands), concatenated along the query axis. The bias and a fed mask are cut to the
 * band's rows where they have a query axis, and read whole where that axis is 1 (broadcast); a
 * causal mask from causalMaskInput and a bias from positionBias are built for the band's rows
 * (keys: the keys `k` [1, kv, keys, d]). Under a causal mask a band reads only the keys up to its
 * last row's position (a query's later keys are masked: their weights are exactly 0 and add
 * nothing), so a causal input's bands do about half the work of reading every key.
 */
function queryBands(
  g: BuildContext['g'], q: Value, k: Value, bias: Value | null, mask: Value | null, bands: number,
  rows: (q: Value, bias: Value | null, tapProbs: boolean, keyEnd?: Value) => Value,
): Value {
  const n = g.shape(q, 2, 3);
  const causal = mask ? CAUSAL_MASKS.get(mask) : undefined;
  const keys = causal ? g.shape(k, 2, 3) : null;
  const rowsOf = (x: Value | null): ((start: Value, end: Value) => Value) | null => {
    if (!x) return null;
    const size = g.shape(x, -2, -1);
    const last = g.sub(size, g.ints([1]));
    // A query axis of 1 (broadcast) keeps its one row: [min(start, size − 1), max(min(end, size), 1)).
    return (start, end) => g.slice(x, g.op('Min', [start, last]), g.op('Max', [g.op('Min', [end, size]), g.ints([1])]), [-2]);
  };
  const built = bias ? POSITION_BIASES.get(bias) : undefined;
  const allKeys = built ? (keys ?? g.shape(k, 2, 3)) : null;
  const biasRows = built ? (start: Value, end: Value) => built.rows(start, end, n, allKeys!) : rowsOf(bias);
  const bound = (i: number): Value => g.op('Div', [g.mul(n, g.ints([i])), g.ints([bands])]);
  // A causal band's keys end after its last row's position (a cache's keys − n before the queries).
  const past = keys ? g.sub(keys, n) : null;
  const parts: Value[] = [];
  let start = bound(0);
  for (let i = 1; i <= bands; i++) {
    const end = i === bands ? n : bound(i);
    const keyEnd = past ? g.add(end, past) : undefined;
    let b = biasRows?.(start, end) ?? null;
    if (b && keyEnd) b = g.slice(b, g.ints([0]), g.op('Min', [keyEnd, g.shape(b, -1)]), [-1]);
    const m = causal ? bandMask(g, start, end, n, keys!, causal.window, keyEnd) : (rowsOf(mask)?.(start, end) ?? null);
    parts.push(rows(g.slice(q, start, end, [2]), b && m ? g.add(b, m) : (b ?? m), false, keyEnd));
    start = end;
  }
  return g.concat(parts, 2);
}

/** The graph input of a stack's head gates (see TapRequest.headGates): `head_gates.<stack>`. */
export function headGatesInput(stack: StackName): string {
  return `head_gates.${stack}`;
}

/**
 * Layer `a.layer`'s row of the stack's gate input `head_gates.<stack>` [layers, heads] (declared by
 * the first layer that reads it), as [1, heads, 1, 1] to multiply each head's context with.
 */
function headGate(ctx: BuildContext, a: AttentionArgs): Value {
  const { g } = ctx;
  const name = headGatesInput(a.stack);
  const gates = g.describeValue(name) ? { name } : g.input(name, 'float32', [`${a.stack}_gate_layers`, a.numHeads]);
  return g.reshape(g.gather(gates, g.ints([a.layer]), 0), [1, a.numHeads, 1, 1]);
}

/**
 * Taps f_h(x_j) = v_{j,h} · W_O[h] (Kobayashi et al. 2020's transformed vectors) as
 * `transformed_values.<stack>.<layer>` [1, heads, keys, hidden]: each head's value vectors (kv
 * heads repeated for grouped queries) through its headDim rows of the output projection.
 */
function tapTransformedValues(ctx: BuildContext, a: AttentionArgs, v: Value): void {
  const { g } = ctx;
  const proj = a.outputProjection;
  if (!proj) throw new AttnscopeError(`${ctx.config.modelType}: the contributions taps are not wired for this family's ${a.stack} attention`);
  // W_O as [heads·headDim, hidden] (in → out), then one [headDim, hidden] block per head.
  const inOut = proj.layout === 'in-out' ? proj.weight : g.transposed2d(proj.weight);
  const perHead = g.reshape(inOut, [a.numHeads, a.headDim, -1]);
  g.output(g.matMul(v, perHead), tapName('transformed_values', a.stack, a.layer), 'float32');
}

/** What a block gives the `contributions` taps besides the transformed values (see ContributionTaps in core/trace.ts). */
export interface BlockContributionTaps {
  /** The block's input x (the residual stream entering the layer) [1, seq, hidden]. */
  input: Value;
  /** x + W_O·attn + b_O [1, seq, hidden]: what the post-LN norm reads, or the pre-norm residual stream after attention. */
  residualSum: Value;
  /** b_O [hidden], or null when the projection has no bias. */
  outputBias: Value | null;
  /** Post-LN blocks: the LayerNorm applied to residualSum (γ, β [hidden]). */
  norm?: { weight: Value; bias: Value };
}

/** Taps the block tensors norm-based attention and ALTI need, when `taps.contributions`. */
export function tapBlockContributions(ctx: BuildContext, stack: StackName, layer: number, t: BlockContributionTaps): void {
  if (!ctx.taps.contributions) return;
  const { g } = ctx;
  g.output(t.input, tapName('layer_input', stack, layer), 'float32');
  g.output(t.residualSum, tapName('residual_sum', stack, layer), 'float32');
  if (t.outputBias) g.output(t.outputBias, tapName('output_bias', stack, layer), 'float32');
  if (t.norm) {
    g.output(t.norm.weight, tapName('norm_weight', stack, layer), 'float32');
    g.output(t.norm.bias, tapName('norm_bias', stack, layer), 'float32');
  }
}
