/**
 * Scaled dot-product attention as Hugging Face's eager implementations compute it, with the
 * probabilities, queries and keys tapped as graph outputs when requested.
 */
import type { StackName } from '../core/trace.js';
import type { GraphBuilder, Value } from '../graph/builder.js';
import type { BuildContext } from './architecture.js';

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
}

/** Repeats each of kvHeads heads numHeads/kvHeads times: [1, kv, s, d] → [1, heads, s, d]. */
function repeatKv(g: GraphBuilder, x: Value, numHeads: number, numKvHeads: number, headDim: number): Value {
  if (numHeads === numKvHeads) return x;
  const groups = numHeads / numKvHeads;
  const expanded = g.expand(g.unsqueeze(x, [2]), g.ints([1, 1, groups, 1, 1]));
  return g.reshape(expanded, [1, numHeads, -1, headDim]);
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

/** Returns the attention output [1, heads, q, headDim] and taps probabilities, queries, keys. */
export function attention(ctx: BuildContext, a: AttentionArgs): Value {
  const { g } = ctx;
  tap(ctx, ctx.taps.qk, a.q, `queries.${a.stack}.${a.layer}`);
  tap(ctx, ctx.taps.qk, a.k, `keys.${a.stack}.${a.layer}`);
  const { k: allK, v: allV } = withCache(ctx, a);
  const k = repeatKv(g, allK, a.numHeads, a.numKvHeads, a.headDim);
  const v = repeatKv(g, allV, a.numHeads, a.numKvHeads, a.headDim);
  const kT = g.transpose(k, [0, 1, 3, 2]);
  let scores: Value;
  if (a.scaleStyle === 'query-mul') {
    scores = g.matMul(a.scaledQ ?? (a.scale === 1 ? a.q : g.mul(a.q, g.scalar(a.scale))), kT);
  } else {
    scores = g.matMul(a.q, kT);
    if (a.scale !== 1) {
      scores = a.scaleStyle === 'scores-div' ? g.div(scores, g.scalar(1 / a.scale)) : g.mul(scores, g.scalar(a.scale));
    }
  }
  if (a.bias) scores = g.add(scores, a.bias);
  const probs = g.softmax(scores, -1);
  tap(ctx, ctx.taps.attention, probs, `attention.${a.stack}.${a.layer}`);
  return g.matMul(probs, v);
}
