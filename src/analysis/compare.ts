/**
 * How two traces differ, head by head: one model on two texts of equal token length, two layers
 * or two heads of one trace, or two models on one text (also with different tokenisers).
 *
 * Alignment of rows and columns:
 * - 'positions': position i of A against position i of B (equal query and key counts). Chosen by
 *   `align: 'auto'` when both traces tokenise alike (the same token texts), or come from the same
 *   model (two texts of equal token length).
 * - 'words': each model's tokens are mapped by character offsets to the words of the shared text
 *   (`alignedUnits` in words.ts: Intl.Segmenter words, merged where a token of either model spans
 *   several, so each unit is a union of whole tokens in both), and every head is summarised to
 *   word × word by the word rule (keys summed, queries averaged). Specials have no text and are
 *   left out, so a row holds the attention the word pays to the text's words. Needs the text.
 *
 * Matching of heads:
 * - 'layer-head': (layer, head) of A against the same (layer, head) of B, when both have as many
 *   layers and heads.
 * - 'depth': models of different shapes. Heads are not identifiable across models, so each layer's
 *   mean over heads is compared at the same layer-normalised depth: A's layer l against B's layer
 *   round(l · (L_B − 1) / (L_A − 1)) (0 when A has one layer); `head` is null in the rows.
 * - 'selected': the layers and/or heads the caller named (`layers`, `heads`).
 *
 * Divergence per head: the Jensen–Shannon divergence of each query row, in bits (base-2
 * logarithms, so 0 ≤ JS ≤ 1: 0 for identical rows, 1 for rows with disjoint support), averaged
 * over the rows. Each row is first normalised to sum 1 (rows of a word alignment miss the mass on
 * specials; a row with no mass in either trace is left out of the mean). JS(P, Q) = ½ KL(P‖M) +
 * ½ KL(Q‖M), M = ½(P + Q), terms with P = 0 contribute 0. Computed in float64; identical rows give
 * exactly 0, so a trace compared with itself reports 0 everywhere. The difference matrix is A − B
 * (unnormalised); max_abs_diff and mean_abs_diff summarise it.
 *
 * Pure functions of Traces. Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../core/errors.js';
import type { StackName, Token, Trace } from '../core/trace.js';
import { type Unit, alignedUnits, bareTokenText, groupMatrix, stackTokens, traceMatrix } from './words.js';

export type Alignment = 'positions' | 'words';
export type Matching = 'layer-head' | 'depth' | 'selected';

export interface CompareOptions {
  /** Stack of both traces (default: 'self', or 'encoder' for encoder-decoders). */
  stack?: StackName;
  /** Compare layer la of A with layer lb of B (all their heads, matched by index, or the means when head counts differ). */
  layers?: readonly [number, number];
  /** Compare head ha of A with head hb of B: in `layers` when given, else in every layer. */
  heads?: readonly [number, number];
  /** How rows and columns are paired (default 'auto', see the file comment). */
  align?: 'auto' | Alignment;
  /** The text both traces were made from (needed to align through words). */
  text?: string;
  /** Locale of the word segmenter (default 'en'). */
  locale?: string;
  /** Called after each pair is ranked (pairs done, pairs in all). */
  onProgress?: (done: number, total: number) => void;
  /**
   * The ranking of these same traces and options, computed elsewhere (the app's page ranks in a
   * Web Worker, where `matrices` cannot come back from): used as it is instead of ranking again.
   */
  ranking?: readonly HeadDifference[];
}

/** Which matrix of A is compared with which of B; null heads: the mean over the layer's heads. */
export interface HeadPair {
  layer: number;
  head: number | null;
  layerB: number;
  headB: number | null;
}

export interface HeadDifference extends HeadPair {
  /** 1 = changed most. */
  rank: number;
  /** Mean over query rows of the Jensen–Shannon divergence in bits, in [0, 1]. */
  jsDivergence: number;
  /** Largest |A − B| over the aligned matrix. */
  maxAbsDiff: number;
  /** Mean |A − B| over the aligned matrix. */
  meanAbsDiff: number;
}

export interface Comparison {
  alignment: Alignment;
  matching: Matching;
  stack: StackName;
  /** Units of A's and B's rows and columns (one per token for 'positions'); the same count on both sides. */
  rowsA: Unit[];
  colsA: Unit[];
  rowsB: Unit[];
  colsB: Unit[];
  /** Every compared pair, changed most first. */
  ranking: HeadDifference[];
  /** The aligned matrices of a pair (rows × cols each). */
  matrices(pair: HeadPair): { a: Float32Array; b: Float32Array };
  /** How the pairs were chosen, for people. */
  note: string;
}

/** Jensen–Shannon divergence in bits of two non-negative vectors (each normalised to sum 1); NaN when either has no mass. */
export function jsDivergence(p: ArrayLike<number>, q: ArrayLike<number>, n = p.length, pOffset = 0, qOffset = 0): number {
  let sp = 0;
  let sq = 0;
  for (let j = 0; j < n; j++) {
    sp += Math.max(0, p[pOffset + j]!);
    sq += Math.max(0, q[qOffset + j]!);
  }
  if (!(sp > 0) || !(sq > 0)) return Number.NaN;
  let d = 0;
  for (let j = 0; j < n; j++) {
    const a = Math.max(0, p[pOffset + j]!) / sp;
    const b = Math.max(0, q[qOffset + j]!) / sq;
    if (a === b) continue; // log2(1) = 0 exactly
    const m = 0.5 * (a + b);
    if (a > 0) d += a * Math.log2(a / m);
    if (b > 0) d += b * Math.log2(b / m);
  }
  return Math.min(1, Math.max(0, 0.5 * d));
}

/** Mean over rows of the rows' JS divergence (rows without mass on either side left out; 0 when none has). */
export function meanRowJsDivergence(a: ArrayLike<number>, b: ArrayLike<number>, rows: number, cols: number): number {
  let sum = 0;
  let count = 0;
  for (let r = 0; r < rows; r++) {
    const d = jsDivergence(a, b, cols, r * cols, r * cols);
    if (Number.isNaN(d)) continue;
    sum += d;
    count++;
  }
  return count ? sum / count : 0;
}

/** A − B. */
export function differenceMatrix(a: ArrayLike<number>, b: ArrayLike<number>): Float32Array {
  if (a.length !== b.length) throw new AttnscopeError(`difference: matrices of ${a.length} and ${b.length} values`);
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! - b[i]!;
  return out;
}

function defaultStack(trace: Trace): StackName {
  return trace.attention.self ? 'self' : trace.attention.encoder ? 'encoder' : (Object.keys(trace.attention)[0] as StackName);
}

function tokenUnits(tokens: readonly Token[]): Unit[] {
  return tokens.map((t, i) => ({ tokens: [i], label: t.special ? t.text : bareTokenText(t.text), special: t.special, segment: t.segment, start: t.start, end: t.end }));
}

function sameTokens(a: readonly Token[], b: readonly Token[]): boolean {
  return a.length === b.length && a.every((t, i) => t.text === b[i]!.text && t.id === b[i]!.id);
}

function checkIndex(v: number, n: number, what: string): void {
  if (!Number.isInteger(v) || v < 0 || v >= n) throw new AttnscopeError(`${what} ${v} is out of range (0–${n - 1})`);
}

/** Compares two traces head by head (see the file comment). `a` and `b` may be the same trace. */
export function compareTraces(a: Trace, b: Trace, options: CompareOptions = {}): Comparison {
  const stack = options.stack ?? defaultStack(a);
  const sa = a.attention[stack];
  const sb = b.attention[stack];
  if (!sa) throw new AttnscopeError(`trace A has no '${stack}' attention`);
  if (!sb) throw new AttnscopeError(`trace B has no '${stack}' attention`);
  const ta = stackTokens(a, stack);
  const tb = stackTokens(b, stack);
  const [headsA, nqA, nkA] = sa.dims;
  const [headsB, nqB, nkB] = sb.dims;
  const layersA = sa.layers.length;
  const layersB = sb.layers.length;

  // Alignment.
  const sameShape = nqA === nqB && nkA === nkB;
  const sameModel = a.model.name === b.model.name && a.model.modelType === b.model.modelType;
  const align = options.align ?? 'auto';
  if (align !== 'auto' && align !== 'positions' && align !== 'words') throw new AttnscopeError(`align: expected auto, positions or words, got '${String(align)}'`);
  let alignment: Alignment;
  if (align === 'auto') {
    const positions = sameShape && (a === b || (sameTokens(ta.queries, tb.queries) && sameTokens(ta.keys, tb.keys)) || sameModel);
    // One model on two texts of different lengths: say what position-by-position needs.
    alignment = positions || (sameModel && options.text === undefined) ? 'positions' : 'words';
  } else alignment = align;
  let rowsA: Unit[];
  let colsA: Unit[];
  let rowsB: Unit[];
  let colsB: Unit[];
  if (alignment === 'positions') {
    if (!sameShape) {
      throw new AttnscopeError(`cannot compare position by position: A's attention is ${nqA} × ${nkA} tokens, B's ${nqB} × ${nkB} (give the text to align them through words, or texts of equal token length)`);
    }
    rowsA = tokenUnits(ta.queries);
    colsA = ta.keys === ta.queries ? rowsA : tokenUnits(ta.keys);
    rowsB = tokenUnits(tb.queries);
    colsB = tb.keys === tb.queries ? rowsB : tokenUnits(tb.keys);
  } else {
    if (stack === 'cross') throw new AttnscopeError('alignment through words compares self-attention stacks (not cross)');
    if (options.text === undefined) {
      throw new AttnscopeError('the two traces tokenise differently: give the text both were made from (--text) to align them through words');
    }
    const [ua, ub] = alignedUnits([ta.queries, tb.queries], options.text, options.locale);
    if (ua!.length === 0) throw new AttnscopeError('alignment through words: the text has no word both tokenisations cover');
    rowsA = colsA = ua!;
    rowsB = colsB = ub!;
  }
  const rows = rowsA.length;
  const cols = colsA.length;

  // Pairs.
  let matching: Matching;
  const pairs: HeadPair[] = [];
  let note: string;
  if (options.layers || options.heads) {
    matching = 'selected';
    if (options.layers) {
      checkIndex(options.layers[0], layersA, 'layer (A)');
      checkIndex(options.layers[1], layersB, 'layer (B)');
    }
    if (options.heads) {
      checkIndex(options.heads[0], headsA, 'head (A)');
      checkIndex(options.heads[1], headsB, 'head (B)');
    }
    const layerPairs: [number, number][] = options.layers
      ? [[options.layers[0], options.layers[1]]]
      : layersA === layersB
        ? Array.from({ length: layersA }, (_, l) => [l, l] as [number, number])
        : Array.from({ length: layersA }, (_, l) => [l, depthLayer(l, layersA, layersB)] as [number, number]);
    for (const [la, lb] of layerPairs) {
      if (options.heads) pairs.push({ layer: la, head: options.heads[0], layerB: lb, headB: options.heads[1] });
      else if (headsA === headsB) for (let h = 0; h < headsA; h++) pairs.push({ layer: la, head: h, layerB: lb, headB: h });
      else pairs.push({ layer: la, head: null, layerB: lb, headB: null });
    }
    note = options.heads
      ? `head ${options.heads[0]} of A against head ${options.heads[1]} of B${options.layers ? ` in layers ${options.layers[0]} / ${options.layers[1]}` : ''}`
      : `layer ${options.layers![0]} of A against layer ${options.layers![1]} of B${headsA === headsB ? ', heads matched by index' : ', means over heads (head counts differ)'}`;
  } else if (layersA === layersB && headsA === headsB) {
    matching = 'layer-head';
    for (let l = 0; l < layersA; l++) for (let h = 0; h < headsA; h++) pairs.push({ layer: l, head: h, layerB: l, headB: h });
    note = 'heads matched by (layer, head)';
  } else {
    matching = 'depth';
    for (let l = 0; l < layersA; l++) pairs.push({ layer: l, head: null, layerB: depthLayer(l, layersA, layersB), headB: null });
    note = `the models differ in shape (${layersA} × ${headsA} and ${layersB} × ${headsB} layers × heads): each layer's mean over heads is compared at the same relative depth`;
  }

  const matrixOf = (t: Trace, nq: number, nk: number, r: readonly Unit[], c: readonly Unit[], layer: number, head: number | null): Float32Array => {
    const m = traceMatrix(t, stack, layer, head ?? 'mean');
    if (alignment === 'positions') return m;
    return groupMatrix(m, nq, nk, r, c, { query: 'mean', key: 'sum' });
  };
  const matrices = (p: HeadPair) => ({
    a: matrixOf(a, nqA, nkA, rowsA, colsA, p.layer, p.head),
    b: matrixOf(b, nqB, nkB, rowsB, colsB, p.layerB, p.headB),
  });
  if (options.ranking) {
    if (options.ranking.length !== pairs.length) throw new AttnscopeError(`ranking: ${options.ranking.length} pairs given, these traces have ${pairs.length}`);
    return { alignment, matching, stack, rowsA, colsA, rowsB, colsB, ranking: options.ranking.map((r) => ({ ...r })), matrices, note: alignment === 'words' ? `${note}; aligned through ${rows} words of the text` : note };
  }
  const ranking: HeadDifference[] = pairs.map((p, i) => {
    options.onProgress?.(i, pairs.length);
    const { a: ma, b: mb } = matrices(p);
    let maxAbs = 0;
    let sumAbs = 0;
    for (let i = 0; i < ma.length; i++) {
      const d = Math.abs(ma[i]! - mb[i]!);
      if (d > maxAbs) maxAbs = d;
      sumAbs += d;
    }
    return { ...p, rank: 0, jsDivergence: meanRowJsDivergence(ma, mb, rows, cols), maxAbsDiff: maxAbs, meanAbsDiff: ma.length ? sumAbs / ma.length : 0 };
  });
  ranking.sort((x, y) => y.jsDivergence - x.jsDivergence || y.maxAbsDiff - x.maxAbsDiff || x.layer - y.layer || (x.head ?? -1) - (y.head ?? -1));
  ranking.forEach((r, i) => (r.rank = i + 1));
  if (alignment === 'words') note += `; aligned through ${rows} words of the text`;
  return { alignment, matching, stack, rowsA, colsA, rowsB, colsB, ranking, matrices, note };
}

/** B's layer at A's layer l's relative depth. */
export function depthLayer(l: number, layersA: number, layersB: number): number {
  return layersA <= 1 ? 0 : Math.round((l * (layersB - 1)) / (layersA - 1));
}

/** Case (b): two heads (or two layers' heads) of one trace. */
export function compareHeads(trace: Trace, a: { layer: number; head?: number }, b: { layer: number; head?: number }, stack?: StackName): Comparison {
  if ((a.head === undefined) !== (b.head === undefined)) throw new AttnscopeError('compare heads: give a head on both sides or on neither');
  return compareTraces(trace, trace, { stack, layers: [a.layer, b.layer], heads: a.head !== undefined ? [a.head, b.head!] : undefined, align: 'positions' });
}

/** The ranking as flat rows (snake_case keys) for CSV and JSON. */
export interface ComparisonRow {
  rank: number;
  layer: number;
  head: number | null;
  layer_b: number;
  head_b: number | null;
  js_divergence: number;
  max_abs_diff: number;
  mean_abs_diff: number;
}

export const COMPARISON_COLUMNS = ['layer', 'head', 'layer_b', 'head_b', 'rank', 'js_divergence', 'max_abs_diff', 'mean_abs_diff'] as const;

export function comparisonRows(c: Comparison): ComparisonRow[] {
  return c.ranking.map((r) => ({
    rank: r.rank,
    layer: r.layer,
    head: r.head,
    layer_b: r.layerB,
    head_b: r.headB,
    js_divergence: r.jsDivergence,
    max_abs_diff: r.maxAbsDiff,
    mean_abs_diff: r.meanAbsDiff,
  }));
}

/** The ranking as CSV (header COMPARISON_COLUMNS; a mean over heads has an empty head). */
export function comparisonCsv(c: Comparison): string {
  const lines = [COMPARISON_COLUMNS.join(',')];
  for (const r of comparisonRows(c)) lines.push(COMPARISON_COLUMNS.map((k) => (r[k] === null ? '' : String(r[k]))).join(','));
  return `${lines.join('\n')}\n`;
}
