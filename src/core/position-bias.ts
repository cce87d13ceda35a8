/**
 * Score biases that depend on positions only, held compactly and read row by row:
 *
 *   dense      bias [heads, queries, keys]      bias[h, i, j] = b[(h·queries + i)·keys + j]
 *   broadcast  bias [heads, 1, keys]            bias[h, i, j] = b[h·keys + j]            (ALiBi)
 *   relative   positionBias [heads, q + k − 1]  bias[h, i, j] = r[h·(q + k − 1) + j − i + q − 1]  (T5, MPNet)
 *
 * Every form is "row i of head h starts at `base + i·stride`" (stride keys, 0 and −1), which is how
 * attention on demand, generation and the trace readers use them. `compactScoreTerms` turns a dense
 * bias into the smallest form that holds exactly its values (compared bit for bit), so a long ALiBi
 * or T5 trace keeps O(heads · n) per distinct layer instead of O(heads · n²).
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from './errors.js';
import type { LayerStack, ScoreMap, ScoreTerms, StackName } from './trace.js';

/** Where a head's bias rows are in one layer's array: row i is `data[base + i·stride …]` (keys values). */
export interface BiasRows {
  data: Float32Array;
  base: number;
  stride: number;
}

/** Length of one head's relative vector for `queries` × `keys`. */
export function relativeWidth(queries: number, keys: number): number {
  return queries + keys - 1;
}

/**
 * The rows of the additive term of (layer, head) for a stack of `queries` × `keys`, or null when
 * the terms have none. Checks nothing (see checkScoreBias).
 */
export function biasRows(terms: ScoreTerms, layer: number, head: number, queries: number, keys: number): BiasRows | null {
  const pb = terms.positionBias;
  if (pb) {
    const w = relativeWidth(queries, keys);
    return { data: pb.layers[layer]!, base: head * w + queries - 1, stride: -1 };
  }
  const b = terms.bias;
  if (!b) return null;
  if (b.dims[1] === 1 && queries !== 1) return { data: b.layers[layer]!, base: head * keys, stride: 0 };
  return { data: b.layers[layer]!, base: head * queries * keys, stride: keys };
}

/** The bias of (layer, head) at (i, j), or 0 without one. */
export function biasAt(terms: ScoreTerms, layer: number, head: number, queries: number, keys: number, i: number, j: number): number {
  const r = biasRows(terms, layer, head, queries, keys);
  return r ? r.data[r.base + i * r.stride + j]! : 0;
}

/**
 * One clear line when the terms' bias does not fit a stack of `layers` × [heads, queries, keys]:
 * a dense bias of that shape (or of one query row, broadcast), or a relative one of q + k − 1 per head.
 */
export function checkScoreBias(terms: ScoreTerms, layers: number, heads: number, queries: number, keys: number, where: string): void {
  const b = terms.bias;
  const pb = terms.positionBias;
  if (b && pb) throw new AttnscopeError(`${where}: score terms with both a bias and a position bias (one or the other)`);
  if (b) {
    const d = b.dims;
    if (b.layers.length !== layers || d[0] !== heads || (d[1] !== queries && d[1] !== 1) || d[2] !== keys) {
      throw new AttnscopeError(`${where}: score bias [${b.layers.length} × ${d.join(', ')}] does not fit its queries and keys [${layers} × ${heads}, ${queries} (or 1), ${keys}]`);
    }
    for (let l = 0; l < layers; l++) {
      if (b.layers[l]!.length !== d[0] * d[1] * d[2]) throw new AttnscopeError(`${where}: layer ${l}'s score bias has ${b.layers[l]!.length} values, not [${d.join(', ')}]`);
    }
  }
  if (pb) {
    const d = pb.dims;
    if (pb.kind !== 'relative') throw new AttnscopeError(`${where}: position bias kind '${String(pb.kind)}' is not 'relative'`);
    if (pb.layers.length !== layers || d[0] !== heads || d[1] !== queries || d[2] !== keys) {
      throw new AttnscopeError(`${where}: position bias [${pb.layers.length} × ${d.join(', ')}] does not fit its queries and keys [${layers} × ${heads}, ${queries}, ${keys}]`);
    }
    const w = heads * relativeWidth(queries, keys);
    for (let l = 0; l < layers; l++) {
      if (pb.layers[l]!.length !== w) throw new AttnscopeError(`${where}: layer ${l}'s position bias has ${pb.layers[l]!.length} values, not ${heads} × ${relativeWidth(queries, keys)}`);
    }
  }
}

/** Maps each distinct array of `layers` once (layers that share an array share the result). */
function mapShared(layers: readonly Float32Array[], f: (a: Float32Array) => Float32Array | null): Float32Array[] | null {
  const done = new Map<Float32Array, Float32Array>();
  const out: Float32Array[] = [];
  for (const a of layers) {
    let r = done.get(a);
    if (!r) {
      const m = f(a);
      if (!m) return null;
      done.set(a, m);
      r = m;
    }
    out.push(r);
  }
  return out;
}

/** Layers whose values equal an earlier layer's (bit for bit) share its array. */
function shareEqual(layers: Float32Array[]): Float32Array[] {
  const distinct: Float32Array[] = [];
  return layers.map((a) => {
    const same = distinct.find((d) => d === a || (d.length === a.length && d.every((x, i) => Object.is(x, a[i]))));
    if (same) return same;
    distinct.push(a);
    return a;
  });
}

/**
 * The keys query row i sees: all, or with `causal` those up to i + keys − queries (the last queries
 * of the keys, as a decoder's with a cache); cells beyond are masked and never read.
 */
function seen(i: number, q: number, k: number, causal: boolean): number {
  return causal ? Math.min(k, Math.max(0, i + k - q + 1)) : k;
}

/**
 * One row over the keys per head, [heads, k], when every query row of `a` [heads, q, k] is that row
 * where it sees the keys (bit for bit; `causal`: masked cells are not compared, and the row is the
 * last query's, which sees every key), else null.
 */
export function keyRow(a: Float32Array, heads: number, q: number, k: number, causal = false): Float32Array | null {
  const ref = causal ? q - 1 : 0;
  if (seen(ref, q, k, causal) !== k) return null;
  for (let h = 0; h < heads; h++) {
    const first = (h * q + ref) * k;
    for (let i = 0; i < q; i++) {
      const row = (h * q + i) * k;
      const e = seen(i, q, k, causal);
      for (let j = 0; j < e; j++) if (!Object.is(a[row + j], a[first + j])) return null;
    }
  }
  const out = new Float32Array(heads * k);
  for (let h = 0; h < heads; h++) out.set(a.subarray((h * q + ref) * k, (h * q + ref + 1) * k), h * k);
  return out;
}

/**
 * One value per offset j − i of each head, [heads, q + k − 1], when `a` [heads, q, k] is constant
 * along every diagonal (bit for bit, over the cells the queries see: `causal` skips masked ones,
 * whose offsets take row 0's values), else null.
 */
export function relativeVector(a: Float32Array, heads: number, q: number, k: number, causal = false): Float32Array | null {
  const w = relativeWidth(q, k);
  const out = new Float32Array(heads * w);
  for (let h = 0; h < heads; h++) {
    const at = h * q * k;
    const r = h * w + q - 1;
    // Offset d ≥ 0 from row 0 (j = d), d < 0 from column 0 (i = −d).
    for (let j = 0; j < k; j++) out[r + j] = a[at + j]!;
    for (let i = 1; i < q; i++) out[r - i] = a[at + i * k]!;
    for (let i = 1; i < q; i++) {
      const row = at + i * k;
      const e = seen(i, q, k, causal);
      for (let j = 1; j < e; j++) if (!Object.is(a[row + j], out[r + j - i])) return null;
    }
    // Row 0's own cells beyond what it sees were taken as they are: nothing to compare.
  }
  return out;
}

/**
 * The terms with a dense [heads, queries, keys] bias held in its smallest exact form: one row over
 * the keys ([heads, 1, keys], broadcast) when every query row is the same (ALiBi), one vector over
 * the offsets j − i (positionBias) when every diagonal is constant (relative position buckets);
 * otherwise as they are (DeBERTa's disentangled terms depend on the content). Every layer must fit
 * the same form; equal layers share one array. Exact on every cell a query sees; in a causal stack
 * the masked cells (never read) are not compared, so rows a cache decoded, zero beyond the keys they
 * had, compact too.
 */
export function compactScoreTerms(terms: ScoreTerms): ScoreTerms {
  const b = terms.bias;
  if (!b || terms.positionBias) return terms;
  const [heads, q, k] = b.dims;
  if (q <= 1) return terms;
  const { bias: _dense, ...rest } = terms;
  const rows = mapShared(b.layers, (a) => keyRow(a, heads, q, k, terms.causal));
  if (rows) return { ...rest, bias: { dims: [heads, 1, k], layers: shareEqual(rows) } };
  const relative = mapShared(b.layers, (a) => relativeVector(a, heads, q, k, terms.causal));
  if (relative) return { ...rest, positionBias: { kind: 'relative', dims: [heads, q, k], layers: shareEqual(relative) } };
  return terms;
}

/** Bytes the terms' bias holds (distinct arrays only), for readouts and tests. */
export function scoreBiasBytes(terms: ScoreTerms): number {
  const arrays = new Set<Float32Array>([...(terms.bias?.layers ?? []), ...(terms.positionBias?.layers ?? [])]);
  let bytes = 0;
  for (const a of arrays) bytes += a.byteLength;
  return bytes;
}

/**
 * The terms' bias as a dense [heads, queries, keys] stack (layers that share a compact array share
 * the expanded one), for code that reads whole matrices (the neuron view, page payloads); undefined
 * without a bias. O(heads · queries · keys) per distinct layer: not for long inputs.
 */
export function denseScoreBias(terms: ScoreTerms, queries: number, keys: number): LayerStack | undefined {
  const b = terms.bias;
  if (b && (b.dims[1] === queries || queries === 1)) return b;
  const heads = b ? b.dims[0] : terms.positionBias?.dims[0];
  if (heads === undefined) return undefined;
  const layers = b ? b.layers : terms.positionBias!.layers;
  return { dims: [heads, queries, keys], layers: mapShared(layers, (a) => expandBias(a, b ? 'broadcast' : 'relative', heads, queries, keys))! };
}

/**
 * One layer's compact bias `a` — a row over the keys per head ('broadcast', [heads, keys]) or one
 * value per offset j − i ('relative', [heads, queries + keys − 1]) — as [heads, queries, keys].
 */
export function expandBias(a: Float32Array, form: 'broadcast' | 'relative', heads: number, queries: number, keys: number): Float32Array {
  const out = new Float32Array(heads * queries * keys);
  for (let h = 0; h < heads; h++) {
    const r = form === 'broadcast' ? { base: h * keys, stride: 0 } : { base: h * relativeWidth(queries, keys) + queries - 1, stride: -1 };
    for (let i = 0; i < queries; i++) {
      const from = r.base + i * r.stride;
      out.set(a.subarray(from, from + keys), (h * queries + i) * keys);
    }
  }
  return out;
}

/**
 * The terms with their bias dense ([heads, queries, keys]), for consumers that read `bias` as whole
 * matrices; terms without a compact bias come back as they are.
 */
export function withDenseBias(terms: ScoreTerms, queries: number, keys: number): ScoreTerms {
  if (!terms.positionBias && !(terms.bias && terms.bias.dims[1] !== queries)) return terms;
  const { positionBias: _pb, bias: _b, ...rest } = terms;
  const bias = denseScoreBias(terms, queries, keys);
  return bias ? { ...rest, bias } : rest;
}

/** The terms of one layer and one head, as a one-layer, one-head stack's (compact forms kept compact). */
export function headScoreTerms(terms: ScoreTerms, layer: number, head: number, queries: number, keys: number): ScoreTerms {
  const one: ScoreTerms = { scale: [terms.scale[layer]!], causal: terms.causal, window: [terms.window[layer] ?? null] };
  const b = terms.bias;
  const pb = terms.positionBias;
  if (pb) {
    const w = relativeWidth(queries, keys);
    one.positionBias = { kind: pb.kind, dims: [1, queries, keys], layers: [pb.layers[layer]!.subarray(head * w, (head + 1) * w)] };
  } else if (b) {
    const rows = b.dims[1];
    one.bias = { dims: [1, rows, keys], layers: [b.layers[layer]!.subarray(head * rows * keys, (head + 1) * rows * keys)] };
  }
  if ((b || pb) && terms.biasKind !== undefined) one.biasKind = terms.biasKind;
  return one;
}

/**
 * The terms with a relative bias expanded to a dense [heads, queries, keys] one (for readers that
 * know only `bias`, e.g. the page's payload); other terms as they are (a broadcast row stays one).
 */
export function withoutPositionBias(terms: ScoreTerms): ScoreTerms {
  const pb = terms.positionBias;
  if (!pb) return terms;
  const { positionBias: _pb, ...rest } = terms;
  return { ...rest, bias: denseScoreBias(terms, pb.dims[1], pb.dims[2])! };
}

/** A score map with every relative bias expanded (withoutPositionBias). */
export function scoresWithoutPositionBias(scores: ScoreMap): ScoreMap {
  const out: ScoreMap = {};
  for (const [stack, terms] of Object.entries(scores) as [StackName, ScoreTerms][]) out[stack] = withoutPositionBias(terms);
  return out;
}
