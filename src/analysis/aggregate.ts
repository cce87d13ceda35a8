/**
 * Aggregates of attention that views show: one head's matrix, the mean or max over heads, the
 * entries the model masked, where a sentence pair's second segment starts, and the strongest
 * weights of a layer (what a head view draws when it cannot draw every line).
 *
 * Pure functions of a Trace (or of its [heads, queries, keys] arrays). Isomorphic: imports nothing
 * from Node.
 */
import type { StackName, Trace } from '../core/trace.js';

/** One head's [rows × cols] matrix of a [heads, rows, cols] layer (a view, not a copy). */
export function headMatrix(layer: Float32Array, head: number, rows: number, cols: number): Float32Array {
  const size = rows * cols;
  return layer.subarray(head * size, (head + 1) * size);
}

/**
 * The mean or max over `heads` (default all) of a [numHeads, rows, cols] layer, per (row, col).
 * The mean is accumulated in float64.
 */
export function aggregateHeads(layer: Float32Array, numHeads: number, rows: number, cols: number, how: 'mean' | 'max', heads?: readonly number[]): Float32Array {
  const size = rows * cols;
  const hs = heads ?? Array.from({ length: numHeads }, (_, h) => h);
  const out = new Float32Array(size);
  if (hs.length === 0) return out;
  if (how === 'max') {
    out.set(layer.subarray(hs[0]! * size, (hs[0]! + 1) * size));
    for (const h of hs.slice(1)) {
      const off = h * size;
      for (let i = 0; i < size; i++) if (layer[off + i]! > out[i]!) out[i] = layer[off + i]!;
    }
    return out;
  }
  const acc = new Float64Array(size);
  for (const h of hs) {
    const off = h * size;
    for (let i = 0; i < size; i++) acc[i]! += layer[off + i]!;
  }
  for (let i = 0; i < size; i++) out[i] = acc[i]! / hs.length;
  return out;
}

/** Facts about one stack of a trace that views and analyses ask for. */
export interface StackFacts {
  stack: StackName;
  layers: number;
  heads: number;
  queries: number;
  keys: number;
  /** Keys after the query are masked (recorded score terms, or every weight above the diagonal is exactly 0). */
  causal: boolean;
}

export function stackFacts(trace: Trace, stack: StackName): StackFacts {
  const s = trace.attention[stack];
  if (!s) throw new Error(`the trace has no '${stack}' attention`);
  const [heads, queries, keys] = s.dims;
  const terms = trace.scores?.[stack];
  let causal = terms ? terms.causal : false;
  if (!terms && stack !== 'cross' && queries === keys && queries > 1 && s.layers.length > 0) {
    causal = true;
    const W = s.layers[0]!;
    check: for (let h = 0; h < heads; h++) {
      for (let q = 0; q < queries; q++) {
        const base = (h * queries + q) * keys;
        for (let k = q + 1; k < keys; k++) {
          if (W[base + k] !== 0) {
            causal = false;
            break check;
          }
        }
      }
    }
  }
  return { stack, layers: s.layers.length, heads, queries, keys, causal };
}

/**
 * Which (query position, key position) entries of a layer the model masked (weight exactly 0 by
 * construction, not by underflow), as 1 in a [queries × keys] array of the trace's positions.
 * From the recorded score terms (causal mask, sliding window) when the trace has them; otherwise
 * the entries whose weight is exactly 0 in every head. Null when nothing is masked.
 */
export function maskedEntries(trace: Trace, stack: StackName, layer: number): Uint8Array | null {
  const s = trace.attention[stack];
  if (!s) throw new Error(`the trace has no '${stack}' attention`);
  const [heads, nq, nk] = s.dims;
  const out = new Uint8Array(nq * nk);
  let any = false;
  const terms = trace.scores?.[stack];
  if (terms) {
    const window = terms.window[layer] ?? null;
    // Cached queries: the query rows are the last nq of nk positions.
    const shift = nk - nq > 0 && stack !== 'cross' ? nk - nq : 0;
    for (let q = 0; q < nq; q++) {
      const qp = q + shift;
      for (let k = 0; k < nk; k++) {
        if ((terms.causal && k > qp) || (window !== null && qp - k >= window)) {
          out[q * nk + k] = 1;
          any = true;
        }
      }
    }
    return any ? out : null;
  }
  const W = s.layers[layer];
  if (!W || W.length === 0) return null;
  const size = nq * nk;
  for (let i = 0; i < size; i++) {
    let zero = true;
    for (let h = 0; h < heads && zero; h++) if (W[h * size + i] !== 0) zero = false;
    if (zero) {
      out[i] = 1;
      any = true;
    }
  }
  return any ? out : null;
}

/**
 * Regroups a mask of trace positions to display rows and columns (tokens standing for several
 * positions after merging sub-words): a display cell is masked when every entry it stands for is.
 */
export function regroupMask(mask: Uint8Array, nkPositions: number, queryPositions: readonly (readonly number[])[], keyPositions: readonly (readonly number[])[]): Uint8Array {
  const nq = queryPositions.length;
  const nk = keyPositions.length;
  const out = new Uint8Array(nq * nk);
  for (let q = 0; q < nq; q++) {
    for (let k = 0; k < nk; k++) {
      let all = true;
      for (const qp of queryPositions[q]!) {
        for (const kp of keyPositions[k]!) {
          if (mask[qp * nkPositions + kp] !== 1) {
            all = false;
            break;
          }
        }
        if (!all) break;
      }
      out[q * nk + k] = all ? 1 : 0;
    }
  }
  return out;
}

/** Index of the first token of the second segment (sentence B), or null without a pair. */
export function pairBoundary(segments: readonly number[]): number | null {
  const i = segments.findIndex((s) => s === 1);
  return i > 0 ? i : null;
}

/** The strongest entries of a set of weights: their indices (strongest last) and the smallest weight kept. */
export interface Strongest {
  /** Indices into the weights, weakest first. */
  indices: Int32Array;
  /** How many candidates there were (weights > floor that the filter accepted). */
  total: number;
  /** The smallest weight kept (0 when none). */
  cutoff: number;
}

/**
 * The at most `limit` largest weights among `candidates` (indices into `weights`, all of them when
 * omitted) that are greater than `floor`, sorted weakest first (so that painters put the strong
 * ones on top). Ties at the cutoff are broken by index.
 */
export function strongestWeights(weights: ArrayLike<number>, limit: number, floor = 0, candidates?: Int32Array): Strongest {
  const n = candidates ? candidates.length : weights.length;
  // Pass 1: count the candidates above the floor, and a histogram of their float32 bit patterns'
  // top 16 bits (order-preserving for positive floats), to find the cutoff without sorting them all.
  const bits = new Uint32Array(1);
  const asFloat = new Float32Array(bits.buffer);
  const hist = new Uint32Array(65536);
  let total = 0;
  for (let j = 0; j < n; j++) {
    const v = weights[candidates ? candidates[j]! : j]!;
    if (!(v > floor)) continue;
    total++;
    if (v > 0) {
      asFloat[0] = v;
      hist[bits[0]! >>> 16]!++;
    } else hist[0]!++; // negative floors: non-positive values share the lowest bin
  }
  let lowBin = 0;
  if (total > limit) {
    let acc = 0;
    for (let b = 65535; b >= 0; b--) {
      acc += hist[b]!;
      if (acc >= limit) {
        lowBin = b;
        break;
      }
    }
  }
  // Pass 2: the candidates in or above the cutoff's bin, then the exact top `limit` of those.
  const keep: number[] = [];
  for (let j = 0; j < n; j++) {
    const i = candidates ? candidates[j]! : j;
    const v = weights[i]!;
    if (!(v > floor)) continue;
    if (lowBin > 0) {
      asFloat[0] = v;
      if (bits[0]! >>> 16 < lowBin) continue;
    }
    keep.push(i);
  }
  // Strongest first (ties by index), cut to the limit, then weakest first.
  keep.sort((a, b) => weights[b]! - weights[a]! || a - b);
  const out = Int32Array.from(keep.length > limit ? keep.slice(0, limit) : keep).reverse();
  return { indices: out, total, cutoff: out.length ? weights[out[0]!]! : 0 };
}
