/**
 * Scaled dot-product attention as Hugging Face's eager implementations compute it, with the
 * probabilities, queries and keys tapped as graph outputs when requested.
 */
import { AttnscopeError } from '../core/errors.js';
import type { StackName } from '../core/trace.js';
import type { GraphBuilder, Value } from '../graph/builder.js';
import { tapName, type BuildContext } from './architecture.js';

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
  /** Added to the scores (masks, relative position bias), broadcastable to [1, heads, q, k]. */
  bias?: Value | null;
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
  const k = repeatKv(g, allK, a.numHeads, a.numKvHeads, a.headDim);
  const v = repeatKv(g, allV, a.numHeads, a.numKvHeads, a.headDim);
  const kT = g.transpose(k, [0, 1, 3, 2]);
  // The queries the product reads ('query-mul': already scaled).
  const qIn = a.scaleStyle === 'query-mul' ? (a.scaledQ ?? (a.scale === 1 ? a.q : g.mul(a.q, g.scalar(a.scale)))) : a.q;
  /** softmax(scores)·V of the queries `q` (all, or a band of rows) with their rows of the bias. */
  const rows = (q: Value, bias: Value | null | undefined, tapProbs: boolean): Value => {
    let scores: Value;
    if (a.scaleStyle === 'query-mul') {
      scores = a.product ? a.product(q, kT) : g.matMul(q, kT);
    } else {
      scores = g.matMul(q, kT);
      if (a.scale !== 1) {
        scores = a.scaleStyle === 'scores-div' ? g.div(scores, g.scalar(1 / a.scale)) : g.mul(scores, g.scalar(a.scale));
      }
    }
    if (bias) scores = g.add(scores, bias);
    const probs = g.softmax(scores, -1);
    tap(ctx, tapProbs, probs, `attention.${a.stack}.${a.layer}`);
    return g.matMul(probs, v);
  };
  // Cross attention is not decomposed: its keys are the encoder's tokens, not the stream it adds to.
  if (ctx.taps.contributions && a.stack !== 'cross') tapTransformedValues(ctx, a, v);
  // Attention on demand (queries and keys tapped, no probabilities): the queries go through in bands
  // of rows, so the [heads, queries, keys] scores are never held whole (each row is computed as before).
  // With a key/value cache only where asked (TapRequest.queryBands: generation's long prompt pass).
  const banded = ctx.taps.qk && !ctx.taps.attention && (!ctx.taps.cache || ctx.taps.queryBands === true);
  const context = banded ? queryBands(g, qIn, a.bias ?? null, rows) : rows(qIn, a.bias, ctx.taps.attention);
  return ctx.taps.headGates ? g.mul(context, headGate(ctx, a)) : context;
}

/** Bands of query rows attention is computed in when no probabilities are tapped (row i goes to band ⌊i·bands/n⌋). */
export const QUERY_BANDS = 16;

/**
 * `rows` of each band of the queries [1, heads, n, d] (bands of ⌊n/QUERY_BANDS⌋ or so rows, empty
 * ones when n < QUERY_BANDS), concatenated along the query axis. The bias is cut to the band's rows
 * where it has a query axis, and read whole where that axis is 1 (broadcast).
 */
function queryBands(g: BuildContext['g'], q: Value, bias: Value | null, rows: (q: Value, bias: Value | null, tapProbs: boolean) => Value): Value {
  const n = g.shape(q, 2, 3);
  const biasRows = bias ? g.shape(bias, -2, -1) : null;
  const bound = (i: number): Value => g.op('Div', [g.mul(n, g.ints([i])), g.ints([QUERY_BANDS])]);
  const parts: Value[] = [];
  let start = bound(0);
  for (let i = 1; i <= QUERY_BANDS; i++) {
    const end = i === QUERY_BANDS ? n : bound(i);
    let b: Value | null = null;
    if (bias && biasRows) {
      // A query axis of 1 (broadcast) keeps its one row: [min(start, size − 1), max(min(end, size), 1)).
      const last = g.sub(biasRows, g.ints([1]));
      b = g.slice(bias, g.op('Min', [start, last]), g.op('Max', [g.op('Min', [end, biasRows]), g.ints([1])]), [-2]);
    }
    parts.push(rows(g.slice(q, start, end, [2]), b, false));
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
