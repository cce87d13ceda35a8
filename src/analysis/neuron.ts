/**
 * The numbers of the neuron view, recomputed from a trace: for one stack, layer, head and query,
 * the query vector, each key vector, q ⊙ k, q · k, the scores the softmax read, and the softmax
 * next to the model's attention.
 *
 * The scores use the terms the model recorded in `trace.scores` (its scale per layer, its causal
 * mask and sliding windows, its additive bias such as T5's relative position bias), so the softmax
 * equals the model's attention to float32 precision for every architecture. Traces without score
 * terms (files written by PyTorch) fall back to q·k/√headDim with the masks read from the
 * attention's zeros and no bias, and say so in `note`.
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../core/errors.js';
import { biasRows, checkScoreBias } from '../core/position-bias.js';
import type { LayerStack, ScoreTerms, StackName, Trace } from '../core/trace.js';

export interface NeuronOptions {
  stack: StackName;
  layer: number;
  head: number;
  /** Query position (in the stack's query tokens). */
  query: number;
  /**
   * Keys taken into account: the first `keys` key positions (default: all). A generation trace
   * at a step shows the keys the model had then.
   */
  keys?: number;
}

/** Every number the neuron view shows for one query of one head. */
export interface NeuronScores {
  stack: StackName;
  layer: number;
  head: number;
  query: number;
  /** Key head the query head reads (grouped-query attention). */
  kvHead: number;
  numHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  /** Multiplier of q·k in this layer. */
  scale: number;
  /** The scale for people, e.g. "scaled by 1/√8 = 0.3536". */
  scaleNote: string;
  /** The query vector [headDim] (a view into the trace). */
  q: Float32Array;
  /** Key vectors, one per key position [headDim] (views into the trace). */
  keys: Float32Array[];
  /** q ⊙ k_j per key. */
  products: Float64Array[];
  /** q · k_j. */
  dots: Float64Array;
  /** q · k_j × scale. */
  scaled: Float64Array;
  /** The additive term the model put on each scaled score (relative position bias, ...), or null when it has none. */
  bias: Float64Array | null;
  /** What the bias is ('relative position bias', ...), or null. */
  biasKind: string | null;
  /** What the softmax reads: scaled + bias, −∞ where masked. */
  scores: Float64Array;
  /** Keys the model masked out (causal mask, sliding window; or, without score terms, zero attention). */
  masked: boolean[];
  /** Some shown key is masked because it comes after the query (a causal mask at work). */
  causal: boolean;
  /** Sliding window of the layer (query i sees keys i − window + 1 … i), or null. */
  window: number | null;
  /** softmax of the scores. */
  softmax: Float64Array;
  /** The model's attention row from the trace. */
  attention: Float32Array;
  /** max |softmax − attention| over the keys. */
  maxSoftmaxError: number;
  /** 'recorded': the score terms come from the trace; 'assumed': the trace has none (see `note`). */
  terms: 'recorded' | 'assumed';
  /** What was assumed when the trace records no score terms; null otherwise. */
  note: string | null;
}

/** Key head a query head reads under grouped-query attention: ⌊h·kv/heads⌋. */
export function keyHeadFor(head: number, numHeads: number, numKeyValueHeads: number): number {
  return Math.floor((head * numKeyValueHeads) / numHeads);
}

function checkIndex(value: number, count: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value >= count) {
    throw new AttnscopeError(`${what} ${value} is out of range (the trace has ${count}: 0–${count - 1})`);
  }
  return value;
}

const sig = (v: number): string => String(Number(v.toPrecision(4)));

/** "scaled by 1/√8 = 0.3536", "scaled by 1/(√8·2) = 0.1768", "not scaled", or the bare number. */
export function describeScale(scale: number, headDim: number): string {
  if (scale === 1) return 'not scaled';
  const root = Math.sqrt(headDim);
  const k = 1 / (scale * root);
  const kInt = Math.round(k);
  if (kInt === 1 && Math.abs(k - 1) < 1e-6) return `scaled by 1/√${headDim} = ${sig(scale)}`;
  if (kInt > 1 && Math.abs(k - kInt) < 1e-6 * kInt) return `scaled by 1/(√${headDim}·${kInt}) = ${sig(scale)}`;
  return `scaled by ${sig(scale)}`;
}

/** The score terms of a stack checked against its attention; undefined when the trace has none. */
function stackTerms(trace: Trace, stack: StackName, att: LayerStack): ScoreTerms | undefined {
  const terms = trace.scores?.[stack];
  if (!terms) return undefined;
  const layers = att.layers.length;
  if (terms.scale.length !== layers || terms.window.length !== layers) {
    throw new AttnscopeError(`score terms of the '${stack}' stack have ${terms.scale.length} scales and ${terms.window.length} windows for ${layers} layers`);
  }
  // Dense, broadcast over the queries (ALiBi) or relative (T5): each row read through biasRows.
  checkScoreBias(terms, layers, att.dims[0], att.dims[1], att.dims[2], `the '${stack}' stack`);
  return terms;
}

/** The neuron view's numbers for one query of one head (see NeuronScores). */
export function neuronScores(trace: Trace, options: NeuronOptions): NeuronScores {
  const { stack } = options;
  const att = trace.attention[stack];
  if (!att) throw new AttnscopeError(`the trace has no '${stack}' attention`);
  if (!trace.queries || !trace.keys) {
    throw new AttnscopeError('the neuron view needs the queries and keys: trace with --qk (or export from a model, which asks for them)');
  }
  const qs = trace.queries[stack];
  const ks = trace.keys[stack];
  if (!qs || !ks) throw new AttnscopeError(`the trace has no queries/keys for the '${stack}' stack`);
  const [numHeads, nq, nk] = att.dims;
  const layer = checkIndex(options.layer, att.layers.length, 'layer');
  const head = checkIndex(options.head, numHeads, 'head');
  const query = checkIndex(options.query, nq, 'query token');
  const nkShown = options.keys ?? nk;
  if (!Number.isInteger(nkShown) || nkShown < 1 || nkShown > nk) throw new AttnscopeError(`keys ${nkShown} is out of range (the trace has ${nk} keys)`);
  const [qHeads, qPositions, headDim] = qs.dims;
  const [kvHeads, kPositions, kDim] = ks.dims;
  if (qHeads !== numHeads || qPositions !== nq || kPositions !== nk || kDim !== headDim || numHeads % kvHeads !== 0) {
    throw new AttnscopeError(
      `queries [${qs.dims.join(', ')}] / keys [${ks.dims.join(', ')}] do not fit attention [${att.dims.join(', ')}] of the '${stack}' stack`,
    );
  }
  const terms = stackTerms(trace, stack, att);
  const kvHead = keyHeadFor(head, numHeads, kvHeads);
  const scale = terms ? terms.scale[layer]! : 1 / Math.sqrt(headDim);
  const window = terms ? terms.window[layer]! : null;

  const qLayer = qs.layers[layer]!;
  const kLayer = ks.layers[layer]!;
  const q = qLayer.subarray((head * nq + query) * headDim, (head * nq + query + 1) * headDim);
  const attention = att.layers[layer]!.subarray((head * nq + query) * nk, (head * nq + query) * nk + nkShown);
  const rows = terms ? biasRows(terms, layer, head, nq, nk) : null;
  const biasRow = rows ? rows.data.subarray(rows.base + query * rows.stride, rows.base + query * rows.stride + nkShown) : null;
  const bias = biasRow ? Float64Array.from(biasRow) : null;

  const keys: Float32Array[] = [];
  const products: Float64Array[] = [];
  const dots = new Float64Array(nkShown);
  const scaled = new Float64Array(nkShown);
  const scores = new Float64Array(nkShown);
  const masked: boolean[] = [];
  for (let j = 0; j < nkShown; j++) {
    const k = kLayer.subarray((kvHead * nk + j) * headDim, (kvHead * nk + j + 1) * headDim);
    keys.push(k);
    const p = new Float64Array(headDim);
    let d = 0;
    for (let i = 0; i < headDim; i++) {
      p[i] = q[i]! * k[i]!;
      d += p[i]!;
    }
    products.push(p);
    dots[j] = d;
    scaled[j] = d * scale;
    const m = terms
      ? (terms.causal && j > query) || (window !== null && query - j >= window)
      : attention[j] === 0;
    masked.push(m);
    scores[j] = m ? Number.NEGATIVE_INFINITY : scaled[j]! + (bias ? bias[j]! : 0);
  }
  const causal = terms
    ? terms.causal && query < nkShown - 1
    : stack !== 'cross' && query < nkShown - 1 && masked.every((mk, j) => mk === j > query);

  let max = Number.NEGATIVE_INFINITY;
  for (let j = 0; j < nkShown; j++) if (scores[j]! > max) max = scores[j]!;
  const softmax = new Float64Array(nkShown);
  let sum = 0;
  for (let j = 0; j < nkShown; j++) {
    softmax[j] = masked[j] ? 0 : Math.exp(scores[j]! - max);
    sum += softmax[j]!;
  }
  let maxSoftmaxError = 0;
  for (let j = 0; j < nkShown; j++) {
    if (sum > 0) softmax[j]! /= sum;
    maxSoftmaxError = Math.max(maxSoftmaxError, Math.abs(softmax[j]! - attention[j]!));
  }
  return {
    stack,
    layer,
    head,
    query,
    kvHead,
    numHeads,
    numKeyValueHeads: kvHeads,
    headDim,
    scale,
    scaleNote: describeScale(scale, headDim),
    q,
    keys,
    products,
    dots,
    scaled,
    bias,
    biasKind: bias ? (terms?.biasKind ?? 'additive bias') : null,
    scores,
    masked,
    causal,
    window,
    softmax,
    attention,
    maxSoftmaxError,
    terms: terms ? 'recorded' : 'assumed',
    note: terms
      ? null
      : `this trace records no score terms (e.g. written by PyTorch): assumed q·k/√${headDim}, masks read from the zero attention weights, no position bias`,
  };
}

/** How the recorded score terms reproduce a stack's attention, checked on the exact trace. */
export interface ScoreCheck {
  /** The model added a bias (relative position, ALiBi) to q·k: the neuron view shows it. */
  bias: boolean;
  /** max |softmax(scale · q·k + bias + mask) − attention| over the rows checked. */
  maxSoftmaxError: number | null;
}

/**
 * For each stack with queries and keys: whether it has an additive bias, and how far the neuron
 * view's softmax is from the model's attention on a few queries of every layer and head (the
 * last, which sees every key under a causal mask, the middle and a quarter in).
 */
export function scoreChecks(trace: Trace): Partial<Record<StackName, ScoreCheck>> {
  const checks: Partial<Record<StackName, ScoreCheck>> = {};
  for (const stack of ['self', 'encoder', 'decoder', 'cross'] as const) {
    const att = trace.attention[stack];
    if (!att || !trace.queries?.[stack] || !trace.keys?.[stack]) continue;
    const [heads, nq] = att.dims;
    const queries = [...new Set([nq - 1, Math.floor(nq / 2), Math.floor(nq / 4)])];
    let bias = false;
    let maxErr = 0;
    try {
      for (let layer = 0; layer < att.layers.length; layer++) {
        for (let head = 0; head < heads; head++) {
          for (const query of queries) {
            const d = neuronScores(trace, { stack, layer, head, query });
            if (d.bias) bias = true;
            maxErr = Math.max(maxErr, d.maxSoftmaxError);
          }
        }
      }
      checks[stack] = { bias, maxSoftmaxError: maxErr };
    } catch {
      // Queries/keys that do not fit the attention: the neuron view says so itself.
    }
  }
  return checks;
}
