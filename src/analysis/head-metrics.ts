/**
 * Per-head attention metrics: what each head's attention looks like, as numbers, per layer and
 * head, aggregated per layer and over the model.
 *
 * Rows and support. A row is one query's weights over the keys. Its *support* is the set of keys
 * the query can see: keys the model masked (causal mask, sliding window, from the trace's recorded
 * score terms, or entries that are exactly 0 in every head of the layer when the trace has none,
 * see `maskedEntries`) are not in it. With `excludeFirstToken` (TransformerLens' `exclude_bos`)
 * key 0 leaves every support and each row is renormalised over what is left, and query 0 is
 * dropped. Rows whose support holds a single key (a causal model's first query, or its second with
 * `excludeFirstToken`) are forced — the model had no choice — and are left out of every metric;
 * so are rows with no weight left on their support. A head with no row left gets NaN.
 *
 * Every per-row quantity is averaged over the head's rows (queries), each row counting once;
 * distribution statistics (sparsity, quantiles, standard deviation) pool every (row, key) entry of
 * the support. Per layer, each metric is the mean over the layer's heads (max_weight: the max);
 * over the model, the mean over every head (max_weight: the max).
 *
 * Pure functions of a Trace; isomorphic (imports nothing from Node). One pass per head over its
 * supported entries (row sums apart), float64 accumulation: two logarithms per entry (row entropy,
 * and the Jensen–Shannon term against the first layer) are most of the cost. The per-weight loops
 * run on a WebAssembly SIMD kernel where WebAssembly runs (wasm/head-kernel.as: four keys per step,
 * each row in a few short loops while it is in the L1 cache — the two logarithms and the layer
 * mean; the counts and the max; Σ w², the distance and the quantiles' histogram — a head's whole
 * row loop in one call, the first layer's rows read as float32 with their row sums; the few keys per row — self,
 * sink, separators, punctuation — are read here), else on the JavaScript loops below (float64
 * throughout; their logarithm is fast-log.ts: absolute error ≤ 4.1e-16 · max(1, |log x|));
 * `kernel` chooses.
 *
 * Precision of the kernel. Its logarithms are float32 ones (f32x4 lanes, within about one float32
 * rounding) of the weights renormalised in float32, the products x · log x summed in float64: the
 * traced weights are float32, each known to 2^−24 ≈ 6e-8 relative, and the kernel's entropies are
 * within ≈ 1e-7 relative of float64 ones — the change a rounding of the weights themselves makes.
 * So `entropy` is within 1e-6 relative and `js_from_first` (a difference of entropies of at most
 * log n nats) within 1e-6 bits of a float64 computation (test/analysis-head-kernel.test.ts; measured
 * ≤ 1e-8 relative and ≤ 2e-8 bits on BERT-shaped traces); every other column is float64 arithmetic
 * as in the JavaScript loops (counts below a threshold compare the float32 weight with an exact
 * float32 cut-off, so they are float64's counts; the row max is max(w) · inv; the pooled weights
 * for the quantiles are the float64 products w · inv), within 1e-12 relative. On both paths equal
 * rows give exactly 0 divergence (both terms of a row summed in the same order by the same
 * logarithm). Figures in BENCHMARKS.md (bench/analysis-heads.ts).
 */
import type { LayerStack, StackName, Token, Trace } from '../core/trace.js';
import { maskedEntries } from './aggregate.js';
import { fastLog } from './fast-log.js';
import { type HeadKernelExports, headKernel, headKernelStatus } from './wasm/head-kernel.js';

/** The metric columns, in table order (snake_case, as CSV/JSON name them). */
export const HEAD_METRIC_NAMES = [
  'max_weight',
  'confidence',
  'entropy',
  'sparsity',
  'sparsity_uniform',
  'p25',
  'p50',
  'p75',
  'p90',
  'std',
  'distance',
  'self',
  'sink',
  'separator',
  'punctuation',
  'long_range',
  'js_from_first',
] as const;
export type HeadMetricName = (typeof HEAD_METRIC_NAMES)[number];

/** One value per metric. */
export type MetricValues = Record<HeadMetricName, number>;

export interface HeadMetricOptions {
  /** Drop key 0 (renormalising each row) and query 0, as TransformerLens' exclude_bos (default false). */
  excludeFirstToken?: boolean;
  /** `sparsity` counts weights below this (default 0.01). */
  sparsityThreshold?: number;
  /** `long_range` counts keys at least this far from the query (default 5). */
  longRange?: number;
  /**
   * Columns not computed (left NaN), for callers that do not show them (computing lazily what a
   * view needs): 'js_from_first' saves one logarithm per weight (and the first layer's copy),
   * 'quantiles' (p25 … p90) a histogram and a gather pass per head. Every other value is unchanged.
   */
  omit?: readonly OmittableMetric[];
  /**
   * Which code runs the per-weight pass: 'auto' (default) the WebAssembly SIMD kernel
   * (wasm/head-kernel.as) where WebAssembly runs, else plain JavaScript; 'js' or 'wasm' to choose
   * (tests, benchmarks; 'wasm' throws where the kernel cannot run). Both give the same values to
   * within a few float64 roundings, but `entropy` and `js_from_first`, which the kernel takes
   * through float32 logarithms: within 1e-6 relative / 1e-6 bits (see the module comment).
   */
  kernel?: 'auto' | 'js' | 'wasm';
  /**
   * Only the layers from … to − 1 (default every layer): their rows, their `layerMeans`, and
   * `model` aggregated over them. The first layer is still read when `js_from_first` is wanted
   * (every layer is compared with it), so the values of a layer are the same whatever range holds
   * it: the head table of a model is the concatenation of the tables of its layer ranges, which is
   * how it is split over threads (`headTableRanges`).
   */
  layers?: { from: number; to: number };
  /**
   * Called with a layer's index just before the pass first reads that layer (each layer it reads
   * once, in the order it reads them: the first layer first when `js_from_first` is computed, then
   * the range): a caller whose layers are still arriving (a worker thread fed layer by layer,
   * runtime/head-table-threads.ts) waits there until that layer is in.
   */
  beforeLayer?: (layer: number) => void;
  /**
   * Up to three groups of keys (bit g of keyGroups[k] set: key k is in group g), for a caller that
   * scores each row's share on them (head-types.ts: the word classes' focus): `HeadPass.groupSums`.
   */
  keyGroups?: Uint8Array;
}

/** What `HeadMetricOptions.omit` can leave out. */
export type OmittableMetric = 'js_from_first' | 'quantiles';
export const OMITTABLE_METRICS: readonly OmittableMetric[] = ['js_from_first', 'quantiles'];

export const DEFAULT_SPARSITY_THRESHOLD = 0.01;
export const DEFAULT_LONG_RANGE = 5;

export interface HeadMetricRow extends MetricValues {
  layer: number;
  head: number;
}

export interface HeadMetrics {
  stack: StackName;
  layers: number;
  heads: number;
  excludeFirstToken: boolean;
  /** One row per (layer, head), layer-major. */
  rows: HeadMetricRow[];
  /** Per layer: the mean over its heads (max_weight: max; js_from_first: of the layers' head-mean matrices). */
  layerMeans: ({ layer: number } & MetricValues)[];
  /** Over the model: the mean over every head (max_weight: max; js_from_first: first vs last layer's head-mean matrices). */
  model: MetricValues;
  /** Per head index: Jensen–Shannon divergence (bits) between that head in the first and in the last layer. */
  jsChange: number[];
}

/** Sub-word markers stripped before a token's text is looked at: Ġ (byte-level BPE), ▁ (SentencePiece), ## (WordPiece). */
const MARKERS = /^(?:##)|[Ġ▁]/gu;
/** Unicode punctuation, and the ASCII punctuation characters (BERT counts $ + < = > ^ ` | ~ as punctuation too). */
const PUNCT = /^[\p{P}!-/:-@[-`{-~]+$/u;

/** Token text without sub-word markers and surrounding white space. */
export function bareTokenText(text: string): string {
  return text.replace(MARKERS, '').trim();
}

/** A token that is only punctuation once its sub-word markers are stripped (specials never are). */
export function isPunctuationToken(t: Pick<Token, 'text' | 'special'>): boolean {
  return !t.special && PUNCT.test(bareTokenText(t.text));
}

/** A separator: a special token other than the first ([SEP], </s>, ...). */
export function isSeparatorToken(t: Pick<Token, 'special'>, index: number): boolean {
  return t.special && index > 0;
}

/** The tokens of a stack's keys and queries. */
export function stackTokens(trace: Trace, stack: StackName): { queries: Token[]; keys: Token[] } {
  if (stack === 'cross') return { queries: trace.decoderTokens ?? [], keys: trace.tokens };
  if (stack === 'decoder') return { queries: trace.decoderTokens ?? trace.tokens, keys: trace.decoderTokens ?? trace.tokens };
  return { queries: trace.tokens, keys: trace.tokens };
}

/** The stack of a trace analyses read by default: self, else encoder (what the text went into), else decoder. */
export function defaultStack(trace: Trace): StackName {
  for (const s of ['self', 'encoder', 'decoder', 'cross'] as const) if (trace.attention[s]) return s;
  throw new Error('the trace has no attention');
}

/** Shape and positions shared by the loops of the analyses. */
export interface RowGeometry {
  heads: number;
  nq: number;
  nk: number;
  /** Position of query q among the keys is q + shift (cached queries: the last nq of nk positions; cross: 0). */
  shift: number;
}

export function rowGeometry(stackData: LayerStack, stack: StackName): RowGeometry {
  const [heads, nq, nk] = stackData.dims;
  return { heads, nq, nk, shift: stack !== 'cross' && nk > nq ? nk - nq : 0 };
}

/**
 * The support of every row of a layer, as 1 in a [nq × nk] array (see the module comment), and
 * the support's size per row, whether the model let each row see key 0 (for the sink), and
 * each row's first and past-the-last supported key (lo, hi: loops run over that range only).
 */
export function layerSupport(
  trace: Trace,
  stack: StackName,
  layer: number,
  excludeFirstToken: boolean,
): { support: Uint8Array; rowSize: Int32Array; firstVisible: Uint8Array; lo: Int32Array; hi: Int32Array } {
  const s = trace.attention[stack]!;
  const [, nq, nk] = s.dims;
  // Without score terms an entry is masked when it is 0 in every head: none is when the first head has no 0.
  const W = s.layers[layer];
  const none = !trace.scores?.[stack] && W !== undefined && W.length > 0 && W.subarray(0, nq * nk).indexOf(0) < 0;
  const masked = none ? null : maskedEntries(trace, stack, layer);
  const support = new Uint8Array(nq * nk);
  const rowSize = new Int32Array(nq);
  const firstVisible = new Uint8Array(nq);
  const lo = new Int32Array(nq);
  const hi = new Int32Array(nq);
  if (masked === null) {
    // Every row sees every key (but key 0 with excludeFirstToken, and query 0 is dropped then).
    const from = excludeFirstToken ? 1 : 0;
    firstVisible.fill(1);
    for (let q = excludeFirstToken ? 1 : 0; q < nq && from < nk; q++) {
      support.fill(1, q * nk + from, (q + 1) * nk);
      lo[q] = from;
      hi[q] = nk;
      rowSize[q] = nk - from;
    }
    return { support, rowSize, firstVisible, lo, hi };
  }
  for (let q = 0; q < nq; q++) {
    const base = q * nk;
    firstVisible[q] = masked && masked[base] === 1 ? 0 : 1;
    if (excludeFirstToken && q === 0) continue;
    let n = 0;
    for (let k = excludeFirstToken ? 1 : 0; k < nk; k++) {
      if (masked && masked[base + k] === 1) continue;
      if (n === 0) lo[q] = k;
      hi[q] = k + 1;
      support[base + k] = 1;
      n++;
    }
    rowSize[q] = n;
  }
  return { support, rowSize, firstVisible, lo, hi };
}

/** Whether this machine stores the high word of a float64 second (little-endian: every engine we run on). */
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;
/** Histogram bins: the float64's top 20 bits after the sign (11 exponent, 8 mantissa: 1/256 of an octave). */
const BIN_SHIFT = 12;
/** Bin 0 holds everything below 2^−100 (zeros too), the last bin everything from 2^100 up. */
const BIN_BASE = (1023 - 100) << 8;
const BINS = 200 * 256 + 2;

let histScratch: Uint32Array | undefined;
let binScratch: Int32Array | undefined;
let binsScratch: Uint16Array | undefined;

const wordCell = new Float64Array(1);
const wordView = new Uint32Array(wordCell.buffer);
/** The high 32 bits of a float64. */
function highWord(x: number): number {
  wordCell[0] = x;
  return wordView[HI]!;
}

/** The histogram bin of a value given its float64 high word (order-preserving for values ≥ 0; −0 goes with 0). */
function binOf(hi: number): number {
  const b = ((hi & 0x7fffffff) >>> BIN_SHIFT) - BIN_BASE + 1;
  return b < 0 ? 0 : b >= BINS ? BINS - 1 : b;
}

/** Counts values per bin, reading the high words `words[2i + HI]`, and keeps each value's bin in `bins`. */
function histogram(words: Uint32Array, n: number, hist: Uint32Array, bins: Uint16Array): void {
  for (let i = 0, j = HI; i < n; i++, j += 2) {
    const b = binOf(words[j]!);
    bins[i] = b;
    hist[b]!++;
  }
}

/**
 * The values of the `wanted` bins (marked: firstRankOfBin ≥ 0) into `out` by bin: bin wanted[j]'s
 * values in input order from starts[j] on.
 */
function gather(values: Float64Array, bins: Uint16Array, n: number, firstRankOfBin: Int32Array, wanted: readonly number[], starts: Int32Array, out: Float64Array): Float64Array {
  const cursor = starts.slice();
  for (let i = 0; i < n; i++) {
    const b = bins[i]!;
    if (firstRankOfBin[b]! < 0) continue;
    const j = wanted.indexOf(b);
    out[cursor[j]!++] = values[i]!;
  }
  return out;
}

/**
 * Quantiles of `values[0..n)` with linear interpolation between order statistics (NumPy's default:
 * rank q·(n − 1)). Exact and linear-time: a histogram of the values' float64 high words (bins of
 * 1/256 of an octave, order-preserving for non-negative floats, read through a view of the same
 * memory, no conversion) finds the bins holding the wanted ranks, and only the values in those
 * bins are sorted. Values must be ≥ 0.
 */
export function quantiles(values: Float64Array, n: number, qs: readonly number[]): number[] {
  if (n === 0) return qs.map(() => NaN);
  // Few values: sorting them is cheaper than walking the histogram.
  if (n < HISTOGRAM_FROM) {
    const sorted = values.slice(0, n).sort();
    return interpolated(n, qs, (r) => sorted[r]!);
  }
  const words = new Uint32Array(values.buffer, values.byteOffset, 2 * n);
  // Both scratch arrays are all zeros / all −1 between calls (only the used range is touched and reset).
  const hist = (histScratch ??= new Uint32Array(BINS));
  const firstRankOfBin = (binScratch ??= new Int32Array(BINS).fill(-1));
  if (binsScratch === undefined || binsScratch.length < n) binsScratch = new Uint16Array(n);
  const bins = binsScratch;
  histogram(words, n, hist, bins);
  return quantilesOfHistogram(values, n, qs, hist, firstRankOfBin, (m, wanted, starts) => gather(values, bins, n, firstRankOfBin, wanted, starts, new Float64Array(m)));
}

/** `quantiles` sorts fewer values than this, and takes the histogram's way from this many on. */
const HISTOGRAM_FROM = 4096;

/** The quantiles of a head's weights in the table (p25, p50, p75, p90). */
const QUANTILES: readonly number[] = [0.25, 0.5, 0.75, 0.9];

/** The quantiles qs of n values given order statistic `at(r)` (rank r from 0), interpolated linearly (NumPy's default: rank q·(n − 1)). */
function interpolated(n: number, qs: readonly number[], at: (r: number) => number): number[] {
  return qs.map((q) => {
    const r = q * (n - 1);
    const lo = Math.floor(r);
    const hi = Math.ceil(r);
    const a = at(lo);
    return lo === hi ? a : a + (at(hi) - a) * (r - lo);
  });
}

/** The operations on a bin's run of values that quantilesOfHistogram needs (here, or in the kernel). */
interface RunOps {
  allEqual(run: Float64Array): boolean;
  /** The least of run[from …]. */
  leastFrom(run: Float64Array, from: number): number;
  /** The k-th smallest of the run, reordering it so that every value after position k is at least that. */
  select(run: Float64Array, k: number): number;
}

const JS_RUNS: RunOps = {
  allEqual: (run) => {
    for (let i = 1; i < run.length; i++) if (run[i] !== run[0]) return false;
    return true;
  },
  leastFrom: (run, from) => {
    let least = run[from]!;
    for (let i = from + 1; i < run.length; i++) if (run[i]! < least) least = run[i]!;
    return least;
  },
  select: (run, k) => selectInPlace(run, k),
};

/**
 * The k-th smallest value of `a` (k from 0), reordering `a`: quickselect with a three-way partition
 * (runs of equal values end the search at once), pivot the median of the first, middle and last.
 */
function selectInPlace(a: Float64Array, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    const x = a[lo]!;
    const y = a[(lo + hi) >>> 1]!;
    const z = a[hi]!;
    const pivot = x < y ? (y < z ? y : x < z ? z : x) : x < z ? x : y < z ? z : y;
    // [lo, lt) < pivot, [lt, i) = pivot, (gt, hi] > pivot.
    let lt = lo;
    let i = lo;
    let gt = hi;
    while (i <= gt) {
      const v = a[i]!;
      if (v < pivot) {
        a[i++] = a[lt]!;
        a[lt++] = v;
      } else if (v > pivot) {
        a[i] = a[gt]!;
        a[gt--] = v;
      } else i++;
    }
    if (k < lt) hi = lt - 1;
    else if (k > gt) lo = gt + 1;
    else return pivot;
  }
  return a[lo]!;
}

/**
 * The rest of `quantiles` once `hist` counts the n values per bin: finds the bins holding the
 * wanted ranks (marking them in `firstRankOfBin`: the rank of the bin's first value), takes their
 * values from `pick(count, bins, starts)` (bin bins[j]'s from starts[j] on), selects each wanted
 * rank in its bin's run (no sort: attention stored with few digits gives runs of many thousand
 * values, mostly equal), and leaves `hist` all zeros and `firstRankOfBin` all −1 again.
 */
function quantilesOfHistogram(
  values: Float64Array, n: number, qs: readonly number[], hist: Uint32Array, firstRankOfBin: Int32Array,
  pick: (count: number, bins: readonly number[], starts: Int32Array) => Float64Array,
  runs: RunOps = JS_RUNS,
  binRange?: () => [number, number],
): number[] {
  // The used bin range: for many values a walk over the bins is cheaper than tracking it per
  // value (in the kernel where it runs: `binRange`); for fewer, the bins of the smallest and largest value.
  let minBin = 0;
  let maxBin = BINS - 1;
  if (n >= BINS && binRange) [minBin, maxBin] = binRange();
  else if (n >= BINS) {
    while (hist[minBin] === 0) minBin++;
    while (hist[maxBin] === 0) maxBin--;
  } else {
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = 0; i < n; i++) {
      const v = values[i]!;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
      if (v !== v) hi = Infinity; // NaN (last bin)
    }
    minBin = binOf(highWord(lo));
    maxBin = binOf(highWord(hi));
  }
  const ranks = [...new Set(qs.flatMap((q) => [Math.floor(q * (n - 1)), Math.ceil(q * (n - 1))]))].sort((a, b) => a - b);
  // Mark the bins holding a wanted rank (firstRankOfBin ≥ 0: the rank of the bin's first value).
  const wantedBins: number[] = [];
  let acc = 0;
  let ri = 0;
  for (let b = minBin; b <= maxBin && ri < ranks.length; b++) {
    const c = hist[b]!;
    if (ranks[ri]! < acc + c) {
      firstRankOfBin[b] = acc;
      wantedBins.push(b);
      while (ri < ranks.length && ranks[ri]! < acc + c) ri++;
    }
    acc += c;
  }
  // The values of the marked bins, each bin's in a run of its own (bins are in value order).
  const starts = new Int32Array(wantedBins.length + 1);
  wantedBins.forEach((b, j) => (starts[j + 1] = starts[j]! + hist[b]!));
  const picked = pick(starts[wantedBins.length]!, wantedBins, starts);
  // Rank r in bin b is the (r − first rank of b)-th smallest of b's run: a run of equal values
  // answers at once; after the k-th smallest is selected, the (k + 1)-th is the least of what
  // follows it (interpolation asks for neighbours).
  const constant = new Int8Array(wantedBins.length).fill(-1);
  let last = { j: -1, k: -1, run: picked };
  const at = (r: number): number => {
    for (let j = 0; j < wantedBins.length; j++) {
      const b = wantedBins[j]!;
      if (r >= firstRankOfBin[b]! + hist[b]!) continue;
      const run = picked.subarray(starts[j]!, starts[j + 1]!);
      const k = r - firstRankOfBin[b]!;
      if (constant[j] === -1) constant[j] = runs.allEqual(run) ? 1 : 0;
      if (constant[j] === 1) return run[0]!;
      if (last.j === j && k === last.k + 1) {
        // (Not moved to position k: the next rank must be selected.)
        last = { j: -1, k: -1, run };
        return runs.leastFrom(run, k);
      }
      last = { j, k, run };
      return runs.select(run, k);
    }
    return NaN;
  };
  const out = interpolated(n, qs, at);
  for (const b of wantedBins) firstRankOfBin[b] = -1;
  hist.fill(0, minBin, maxBin + 1);
  return out;
}

const LOG2 = Math.log(2);

/** Jensen–Shannon divergence in bits (within [0, 1]) of two distributions over `n` entries. */
export function jensenShannon(p: ArrayLike<number>, pOff: number, q: ArrayLike<number>, qOff: number, n: number): number {
  let js = 0;
  for (let i = 0; i < n; i++) {
    const a = p[pOff + i]!;
    const b = q[qOff + i]!;
    const m = (a + b) / 2;
    if (a > 0) js += a * Math.log(a / m);
    if (b > 0) js += b * Math.log(b / m);
  }
  return js / 2 / LOG2;
}

/** Where a layer's rows can look: the support (layerSupport) and each row's key range. */
interface LayerRows {
  support: Uint8Array;
  rowSize: Int32Array;
  lo: Int32Array;
  hi: Int32Array;
}

/** Each row's sum over its support, and which rows count (support > 1 and positive mass). */
function rowSumsOf(W: Float32Array, head: number, g: RowGeometry, r: LayerRows, counts: Uint8Array, sums: Float64Array): void {
  const { nq, nk } = g;
  const { support, rowSize, lo, hi } = r;
  const off = head * nq * nk;
  for (let q = 0; q < nq; q++) {
    const base = q * nk;
    let s = 0;
    const a = base + lo[q]!;
    const end = base + hi[q]!;
    // Every key of the range in the support (no causal hole, the common case): the same sum, no tests.
    if (rowSize[q] === end - a) for (let k = a; k < end; k++) s += W[off + k]!;
    else for (let k = a; k < end; k++) if (support[k] === 1) s += W[off + k]!;
    sums[q] = s;
    counts[q] = rowSize[q]! > 1 && s > 0 ? 1 : 0;
  }
}

/** Entropy (nats) of each row of a [nq × nk] matrix of distributions. */
function rowEntropies(m: Float64Array, nq: number, nk: number, r: LayerRows, out: Float64Array): Float64Array {
  for (let q = 0; q < nq; q++) {
    let e = 0;
    for (let k = q * nk + r.lo[q]!, end = q * nk + r.hi[q]!; k < end; k++) {
      const v = m[k]!;
      if (v > 0) e -= v * fastLog(v);
    }
    out[q] = e;
  }
  return out;
}

/**
 * Mean over rows counted in both of the Jensen–Shannon divergence (bits) between two [nq × nk]
 * matrices of distributions, given their row entropies (nats): JS = H((a + b)/2) − (H(a) + H(b))/2,
 * one logarithm per entry.
 */
function meanRowJs(a: Float64Array, ca: Uint8Array, ha: Float64Array, ra: LayerRows, b: Float64Array, cb: Uint8Array, hb: Float64Array, rb: LayerRows, nq: number, nk: number): number {
  let sum = 0;
  let rows = 0;
  for (let q = 0; q < nq; q++) {
    if (ca[q] !== 1 || cb[q] !== 1) continue;
    let hm = 0;
    // Both rows are 0 outside the union of their ranges.
    for (let k = q * nk + Math.min(ra.lo[q]!, rb.lo[q]!), end = q * nk + Math.max(ra.hi[q]!, rb.hi[q]!); k < end; k++) {
      const m = (a[k]! + b[k]!) / 2;
      if (m > 0) hm -= m * fastLog(m);
    }
    sum += Math.max(0, hm - (ha[q]! + hb[q]!) / 2) / LOG2;
    rows++;
  }
  return rows ? sum / rows : NaN;
}

/**
 * What scanHead and scanHeadKernel add per counted row q (at position qp, n keys in its support)
 * besides their scan, into the head's sums at `out` (module comment of scanHead): 0 the largest row
 * max, 1 Σ row max, 2 Σ entropy / log n, 9 self, 10 sink, 11 separators, 12 punctuation (the few
 * keys each reads, renormalised where they are in the support); the row's entropy into rowEnt[q].
 */
function addRowKeys(
  W: Float32Array, off: number, q: number, qp: number, n: number, support: Uint8Array, firstVisible: Uint8Array, rowSums: Float64Array, g: RowGeometry,
  sepKeys: Int32Array, punctKeys: Int32Array, rowMax: number, ent: number, rowEnt: Float64Array, out: Float64Array,
): void {
  const { nk } = g;
  const base = q * nk;
  const inv = 1 / rowSums[q]!;
  for (let j = 0; j < sepKeys.length; j++) {
    const i = base + sepKeys[j]!;
    if (support[i] === 1) out[11] += W[off + i]! * inv;
  }
  for (let j = 0; j < punctKeys.length; j++) {
    const i = base + punctKeys[j]!;
    if (support[i] === 1) out[12] += W[off + i]! * inv;
  }
  if (qp < nk && support[base + qp] === 1) out[9] += W[off + base + qp]! * inv;
  // The sink: key 0's share of the row renormalised over what the model let it see, key 0 included.
  if (firstVisible[q] === 1) {
    const total = rowSums[q]!;
    const w0 = W[off + base]!;
    out[10] += support[base] === 1 ? w0 / total : w0 / (total + w0);
  }
  out[1] += rowMax;
  if (rowMax > out[0]!) out[0] = rowMax;
  out[2] += ent / Math.log(n);
  rowEnt[q] = ent;
}

/**
 * One pass over a head's counted rows (renormalised; in the first layer, `first` null, also into
 * `w` with 0 off the support when `keep`, for the later layers' js_from_first): the accumulators of every metric, into
 * `out` (max, Σ row max, Σ normalised entropy, # below threshold, # below 1/support, # entries,
 * Σ w, Σ w², Σ w·|i−j|, self, sink, separator, punctuation, long range, # rows); pooled weights
 * into `pooled`, row entropies (nats) into `rowEnt`, w / heads added to `layerMean` when `mean`. Its own
 * function so that the engine optimises the hot loop on its own.
 */
function scanHead(
  W: Float32Array, off: number, w: Float64Array, counted: Uint8Array, r: LayerRows, firstVisible: Uint8Array, rowSums: Float64Array,
  g: RowGeometry, threshold: number, longRange: number, sepKeys: Int32Array, punctKeys: Int32Array,
  layerMean: Float64Array, pooled: Float64Array, rowEnt: Float64Array,
  first: { w: Float64Array; counted: Uint8Array; ent: Float64Array; rows: LayerRows } | null,
  keep: boolean,
  mean: boolean,
  out: Float64Array,
): Float64Array {
  const { support, rowSize, lo, hi } = r;
  let jsSum = 0;
  let jsRows = 0;
  const { heads, nq, nk, shift } = g;
  const invHeads = 1 / heads;
  out.fill(0);
  let below = 0;
  let belowUniform = 0;
  let entries = 0;
  let sum = 0;
  let sumSq = 0;
  let dist = 0;
  let long = 0;
  let nRows = 0;
  for (let q = 0; q < nq; q++) {
    const base = q * nk;
    const a = lo[q]!;
    const b = hi[q]!;
    // In the first layer the renormalised row goes to w (0 off the support), kept for js_from_first.
    if (keep) {
      w.fill(0, base, base + a);
      w.fill(0, base + b, base + nk);
      if (counted[q] !== 1) w.fill(0, base + a, base + b);
    }
    if (counted[q] !== 1) continue;
    nRows++;
    const qp = q + shift;
    const n = rowSize[q]!;
    const uniform = 1 / n;
    const inv = 1 / rowSums[q]!;
    // JS against the first layer's row in the same pass when both rows span the same keys.
    const js = first !== null && first.counted[q] === 1;
    const fw = first === null ? w : first.w;
    // (Rows with holes in their support take the union loop: their holes may differ from the first layer's.)
    const inline = js && n === b - a && first.rows.lo[q] === a && first.rows.hi[q] === b && first.rows.rowSize[q] === n;
    let hm = 0;
    let rowMax = 0;
    // Summed in the same order as the Jensen–Shannon term's entropy, so that equal rows give exactly 0.
    let ent = 0;
    let rowV = 0;
    if (n === b - a) {
      // Every key of [a, b) in the support (no causal hole, the common case): the same arithmetic
      // in the same order, in loops without the per-key tests (rowScan; in the first layer it keeps w too).
      acc[3] = below;
      acc[4] = belowUniform;
      acc[6] = sumSq;
      acc[7] = dist;
      acc[8] = long;
      entries = rowScan(W, off + base, inline ? fw : null, base, a, b, inv, qp, threshold, uniform, longRange, pooled, entries, mean ? layerMean : null, invHeads, keep ? w : null, acc);
      hm = acc[0]!;
      rowMax = acc[1]!;
      ent = acc[2]!;
      below = acc[3]!;
      belowUniform = acc[4]!;
      rowV = acc[5]!;
      sumSq = acc[6]!;
      dist = acc[7]!;
      long = acc[8]!;
    } else for (let k = a; k < b; k++) {
      const i = base + k;
      if (support[i] !== 1) {
        if (keep) w[i] = 0;
        continue;
      }
      const v = W[off + i]! * inv;
      if (keep) w[i] = v;
      if (inline) {
        const m = (fw[i]! + v) / 2;
        if (m > 0) hm -= m * fastLog(m);
      }
      if (v > rowMax) rowMax = v;
      if (v > 0) ent -= v * fastLog(v);
      below += v < threshold ? 1 : 0;
      belowUniform += v < uniform ? 1 : 0;
      pooled[entries++] = v;
      rowV += v;
      sumSq += v * v;
      const d = qp > k ? qp - k : k - qp;
      dist += v * d;
      if (d >= longRange) long += v;
      if (mean) layerMean[i] = layerMean[i]! + v * invHeads;
    }
    sum += rowV;
    addRowKeys(W, off, q, qp, n, support, firstVisible, rowSums, g, sepKeys, punctKeys, rowMax, ent, rowEnt, out);
    if (js) {
      if (!inline) {
        // Rows over different keys (a sliding window in one layer): the union of both ranges.
        hm = 0;
        for (let k = base + Math.min(a, first.rows.lo[q]!), end = base + Math.max(b, first.rows.hi[q]!); k < end; k++) {
          const m = (fw[k]! + (support[k] === 1 ? W[off + k]! * inv : 0)) / 2;
          if (m > 0) hm -= m * fastLog(m);
        }
      }
      jsSum += Math.max(0, hm - (first.ent[q]! + ent) / 2) / LOG2;
      jsRows++;
    }
  }
  out[3] = below;
  out[4] = belowUniform;
  out[5] = entries;
  out[6] = sum;
  out[7] = sumSq;
  out[8] = dist;
  out[13] = long;
  out[14] = nRows;
  out[15] = jsSum;
  out[16] = jsRows;
  return out;
}

/** Accumulators rowScan reads and writes: hm, row max, entropy, below, below uniform, row sum, Σ w², distance, long range. */
const acc = new Float64Array(9);

/**
 * scanHead's inner loop over a row whose keys a … b − 1 are all in the support: the weight
 * W[wo + k] · inv of each, the Jensen–Shannon mixture term against `fw[fo + k]` (null: none),
 * the accumulators of `out` (module comment of scanHead; per-head ones continue from their values
 * in `out`), pooled weights from `entries` on (returned: the new count) and w / heads into
 * `layerMean` (null: not wanted), and w into `keepW` (the first layer's copy; null: not kept).
 * Same operations in the same order as the general loop, so the
 * results are bit-identical; the engine optimises this loop on its own, without the tests.
 */
function rowScan(
  W: Float32Array, wo: number, fw: Float64Array | null, fo: number, a: number, b: number, inv: number, qp: number,
  threshold: number, uniform: number, longRange: number, pooled: Float64Array, entries: number,
  layerMean: Float64Array | null, invHeads: number, keepW: Float64Array | null, out: Float64Array,
): number {
  let hm = 0;
  let rowMax = 0;
  let ent = 0;
  let below = out[3]!;
  let belowUniform = out[4]!;
  let rowV = 0;
  let sumSq = out[6]!;
  let dist = out[7]!;
  let long = out[8]!;
  if (fw !== null) {
    for (let k = a; k < b; k++) {
      const v = W[wo + k]! * inv;
      const m = (fw[fo + k]! + v) / 2;
      if (m > 0) hm -= m * fastLog(m);
      if (v > rowMax) rowMax = v;
      if (v > 0) ent -= v * fastLog(v);
      below += v < threshold ? 1 : 0;
      belowUniform += v < uniform ? 1 : 0;
      pooled[entries++] = v;
      rowV += v;
      sumSq += v * v;
      const d = qp > k ? qp - k : k - qp;
      dist += v * d;
      if (d >= longRange) long += v;
    }
  } else {
    for (let k = a; k < b; k++) {
      const v = W[wo + k]! * inv;
      if (v > rowMax) rowMax = v;
      if (v > 0) ent -= v * fastLog(v);
      below += v < threshold ? 1 : 0;
      belowUniform += v < uniform ? 1 : 0;
      pooled[entries++] = v;
      rowV += v;
      sumSq += v * v;
      const d = qp > k ? qp - k : k - qp;
      dist += v * d;
      if (d >= longRange) long += v;
    }
  }
  if (layerMean !== null) for (let k = a; k < b; k++) layerMean[fo + k] = layerMean[fo + k]! + W[wo + k]! * inv * invHeads;
  if (keepW !== null) for (let k = a; k < b; k++) keepW[fo + k] = W[wo + k]! * inv;
  out[0] = hm;
  out[1] = rowMax;
  out[2] = ent;
  out[3] = below;
  out[4] = belowUniform;
  out[5] = rowV;
  out[6] = sumSq;
  out[7] = dist;
  out[8] = long;
  return entries;
}

/** The pass's arrays in the kernel's memory (byte addresses; see `kernelPass`). */
interface KernelArrays {
  /**
   * The current head's weights (float32, as in the trace), copied in just before its row sums and
   * scan: one head's room, reused (a copy into the same place finds it in the cache).
   */
  W: number;
  /** The first layer's weights (float32, as in the trace) and support (bytes), for js_from_first. */
  W0: number;
  supp0: number;
  /** A head's pooled weights (float64), their bins (uint16), the histogram (uint32), marks (int32), picked values (float64). */
  pooled: number;
  bins: number;
  hist: number;
  mark: number;
  picked: number;
  /** The layer's support (bytes), key ranges and sizes (int32). */
  supp: number;
  lo: number;
  hi: number;
  size: number;
  /** A head's row sums (float64) and counted rows (bytes). */
  sums: number;
  counted: number;
  /** Head means of the current and of the first layer (float32). */
  layerMean: number;
  firstMean: number;
  /** scanRow's accumulators (9 float64). */
  acc: number;
  /** The quantiles' wanted bins (8 uint16). */
  list: number;
  /** gatherBins' write positions (8 int32). */
  cursor: number;
  /** scanHead's arguments (27 float64). */
  args: number;
  /** scanHead's distance table (nq + nk + 4 float64, written by it). */
  dist: number;
  /** The first layer's counted rows (bytes), row sums (float64) and key ranges and sizes (int32), for the head being scanned. */
  fcounted: number;
  fsums: number;
  flo: number;
  fhi: number;
  fsize: number;
  /** scanHead's per-row results (4 float64 per row). */
  rowOut: number;
  /** Key groups as int32 lane masks (3 × nk) and groupSums' three float64. */
  groups: number;
  groupOut: number;
}

/** The kernel, its arrays and views of its memory (taken after the memory's last growth). */
interface KernelPass {
  k: HeadKernelExports;
  P: KernelArrays;
  f32: Float32Array;
  f64: Float64Array;
  u8: Uint8Array;
  i32: Int32Array;
  u32: Uint32Array;
  release: () => void;
}

/** An instance of the kernel with room for a pass over a stack of `heads` × nq × nk (null where it cannot run). */
function kernelPass(heads: number, nq: number, nk: number, wantJs: boolean, wantQuantiles: boolean): KernelPass | null {
  const size = nq * nk;
  let P: KernelArrays | undefined;
  const got = headKernel((lay) => {
    P = {
      W: lay.take(size * 4),
      W0: wantJs ? lay.take(heads * size * 4) : 0,
      supp0: wantJs ? lay.take(size) : 0,
      pooled: lay.take(size * 8 + 32),
      bins: wantQuantiles ? lay.take(size * 2) : 0,
      hist: lay.take((BINS + 1) * 4),
      mark: lay.take(BINS * 4),
      picked: wantQuantiles ? lay.take(size * 8) : 0,
      supp: lay.take(size),
      lo: lay.take(nq * 4),
      hi: lay.take(nq * 4),
      size: lay.take(nq * 4),
      sums: lay.take(nq * 8),
      counted: lay.take(nq),
      layerMean: wantJs ? lay.take(size * 4) : 0,
      firstMean: wantJs ? lay.take(size * 4) : 0,
      acc: lay.take(9 * 8),
      list: lay.take(16),
      cursor: lay.take(8 * 4),
      args: lay.take(27 * 8),
      dist: lay.take((nq + nk + 4) * 8),
      fcounted: lay.take(nq),
      fsums: lay.take(nq * 8),
      flo: lay.take(nq * 4),
      fhi: lay.take(nq * 4),
      fsize: lay.take(nq * 4),
      rowOut: lay.take(nq * 4 * 8),
      groups: lay.take(3 * nk * 4),
      groupOut: lay.take(3 * 8),
    };
  });
  if (got === null || P === undefined) return null;
  const buf = got.k.memory.buffer;
  const pass: KernelPass = { k: got.k, P, f32: new Float32Array(buf), f64: new Float64Array(buf), u8: new Uint8Array(buf), i32: new Int32Array(buf), u32: new Uint32Array(buf), release: got.release };
  // A kept instance's memory holds the last pass's values: the histogram must start at 0, the marks at −1.
  pass.u32.fill(0, P.hist >> 2, (P.hist >> 2) + BINS + 1);
  pass.i32.fill(-1, P.mark >> 2, (P.mark >> 2) + BINS);
  return pass;
}

/**
 * scanHead on the kernel: the same per-row logic, the per-weight loops in WebAssembly (scanRow,
 * mixRowEntropy for rows whose range differs from the first layer's). The head's weights, the layer's support
 * and ranges are in the kernel's memory, and the first layer's weights and support (its rows are
 * renormalised on the fly by their sums, `first.sums`: the same float64 products its own scan
 * made); W (the trace's array) serves the few keys per row read here (self, sink, separators,
 * punctuation). Pooled weights at P.pooled.
 */
function scanHeadKernel(
  kp: KernelPass, h: number, W: Float32Array, off: number, counted: Uint8Array, r: LayerRows, firstVisible: Uint8Array, rowSums: Float64Array,
  g: RowGeometry, threshold: number, longRange: number, sepKeys: Int32Array, punctKeys: Int32Array,
  rowEnt: Float64Array, first: { counted: Uint8Array; ent: Float64Array; sums: Float64Array; rows: LayerRows } | null, mean: boolean, hist: boolean, noPool: boolean, out: Float64Array,
): Float64Array {
  const { k, P, f64 } = kp;
  const { support, rowSize, lo, hi } = r;
  const { heads, nq, nk, shift } = g;
  const accAt = P.acc >> 3;
  out.fill(0);
  const outAt = P.rowOut >> 3;
  // Per-head sums the kernel continues: # below threshold, # below 1/support, Σ w², Σ w·|i − j|, long range.
  f64[accAt + 3] = 0;
  f64[accAt + 4] = 0;
  f64[accAt + 6] = 0;
  f64[accAt + 7] = 0;
  f64[accAt + 8] = 0;
  if (first) {
    kp.u8.set(first.counted, P.fcounted);
    f64.set(first.sums, P.fsums >> 3);
  }
  // scanHead's arguments through memory (one argument per call).
  const at = P.args >> 3;
  f64[at] = P.W;
  f64[at + 1] = first ? P.W0 + off * 4 : 0;
  f64[at + 2] = P.supp;
  f64[at + 3] = P.lo;
  f64[at + 4] = P.hi;
  f64[at + 5] = P.size;
  f64[at + 6] = P.sums;
  f64[at + 7] = P.counted;
  f64[at + 8] = P.fcounted;
  f64[at + 9] = P.fsums;
  f64[at + 10] = P.flo;
  f64[at + 11] = P.fhi;
  f64[at + 12] = P.fsize;
  f64[at + 13] = nq;
  f64[at + 14] = nk;
  f64[at + 15] = shift;
  f64[at + 16] = threshold;
  f64[at + 17] = longRange;
  f64[at + 18] = P.pooled;
  f64[at + 19] = P.acc;
  f64[at + 20] = mean ? P.layerMean : 0;
  f64[at + 21] = 1 / heads;
  f64[at + 22] = hist ? P.hist : 0;
  f64[at + 23] = P.bins;
  f64[at + 24] = P.rowOut;
  f64[at + 25] = noPool ? 1 : 0;
  f64[at + 26] = P.dist;
  const entries = k.scanHead(P.args);
  let jsSum = 0;
  let jsRows = 0;
  let sum = 0;
  let nRows = 0;
  for (let q = 0; q < nq; q++) {
    if (counted[q] !== 1) continue;
    const base = q * nk;
    const a = lo[q]!;
    const b = hi[q]!;
    nRows++;
    const qp = q + shift;
    const n = rowSize[q]!;
    const inv = 1 / rowSums[q]!;
    const js = first !== null && first.counted[q] === 1;
    // (Rows with holes in their support take the union loop: their holes may differ from the first layer's.)
    const inline = js && n === b - a && first.rows.lo[q] === a && first.rows.hi[q] === b && first.rows.rowSize[q] === n;
    const o = outAt + 4 * q;
    const ent = f64[o]!;
    let hm = f64[o + 1]!;
    const rowMax = f64[o + 2]!;
    sum += f64[o + 3]!;
    addRowKeys(W, off, q, qp, n, support, firstVisible, rowSums, g, sepKeys, punctKeys, rowMax, ent, rowEnt, out);
    if (js) {
      // Rows over different keys (a sliding window in one layer): the union of both ranges.
      if (!inline) hm = k.mixRowEntropy(P.W + base * 4, P.W0 + (off + base) * 4, P.supp + base, P.supp0 + base, Math.min(a, first.rows.lo[q]!), Math.max(b, first.rows.hi[q]!), inv, 1 / first.sums[q]!);
      jsSum += Math.max(0, hm - (first.ent[q]! + ent) / 2) / LOG2;
      jsRows++;
    }
  }
  out[3] = f64[accAt + 3]!;
  out[4] = f64[accAt + 4]!;
  out[5] = entries;
  out[6] = sum;
  out[7] = f64[accAt + 6]!;
  out[8] = f64[accAt + 7]!;
  out[13] = f64[accAt + 8]!;
  out[14] = nRows;
  out[15] = jsSum;
  out[16] = jsRows;
  return out;
}

/**
 * A head of the first layer as the full pass (scanHead) keeps it for js_from_first, without the
 * metrics: its renormalised rows into `w` (0 off the support and in rows not counted), w / heads
 * added to `layerMean`, the row entropies (nats) into `ent`; the same float64 operations in the
 * same order, so the same values.
 */
function firstHeadJs(W: Float32Array, off: number, w: Float64Array, counted: Uint8Array, r: LayerRows, rowSums: Float64Array, g: RowGeometry, layerMean: Float64Array, ent: Float64Array): void {
  const { support, lo, hi } = r;
  const { heads, nq, nk } = g;
  const invHeads = 1 / heads;
  for (let q = 0; q < nq; q++) {
    const base = q * nk;
    const a = lo[q]!;
    const b = hi[q]!;
    w.fill(0, base, base + a);
    w.fill(0, base + b, base + nk);
    if (counted[q] !== 1) {
      w.fill(0, base + a, base + b);
      continue;
    }
    const inv = 1 / rowSums[q]!;
    let e = 0;
    for (let i = base + a, end = base + b; i < end; i++) {
      if (support[i] !== 1) {
        w[i] = 0;
        continue;
      }
      const v = W[off + i]! * inv;
      w[i] = v;
      if (v > 0) e -= v * fastLog(v);
      layerMean[i] = layerMean[i]! + v * invHeads;
    }
    ent[q] = e;
  }
}

/** firstHeadJs on the kernel: the layer mean, and the row entropies in scanRow's order of summation (its rows stay as float32 in W0). */
function firstHeadKernel(kp: KernelPass, h: number, counted: Uint8Array, r: LayerRows, rowSums: Float64Array, g: RowGeometry, ent: Float64Array): void {
  const { k, P } = kp;
  const { rowSize, lo, hi } = r;
  const { heads, nq, nk } = g;
  const invHeads = 1 / heads;
  for (let q = 0; q < nq; q++) {
    if (counted[q] !== 1) continue;
    const base = q * nk;
    const a = lo[q]!;
    const b = hi[q]!;
    const inv = 1 / rowSums[q]!;
    const w = P.W + base * 4;
    const supp = rowSize[q] === b - a ? 0 : P.supp + base;
    k.putRow(w, supp, a, b, inv, invHeads, P.layerMean + base * 4);
    ent[q] = k.rowEntropy(w, supp, a, b, inv);
  }
}

/** The keys k with `bit` set in groups[k], in order. */
function keysWithBit(groups: Uint8Array, bit: number): number[] {
  const out: number[] = [];
  for (let k = 0; k < groups.length; k++) if (groups[k]! & bit) out.push(k);
  return out;
}

/**
 * HeadPass.groupSums of one head into `totals`: the rows without holes by the kernel (groupSums;
 * the head's weights and row sums are in its memory), the others (every row without the kernel)
 * here, on each group's keys in order (`row`: scratch).
 */
function headGroupSums(
  kp: KernelPass | null, W: Float32Array, off: number, counted: Uint8Array, r: LayerRows, rowSums: Float64Array, g: RowGeometry,
  groupKeys: readonly Int32Array[], row: Float64Array, totals: Float64Array,
): void {
  const { nq, nk } = g;
  const { support, rowSize, lo, hi } = r;
  if (kp) {
    const { P } = kp;
    kp.k.groupSums(P.W, P.lo, P.hi, P.size, P.counted, P.sums, nq, nk, P.groups, P.groupOut);
    totals.set(kp.f64.subarray(P.groupOut >> 3, (P.groupOut >> 3) + 3));
  } else totals.fill(0);
  for (let q = 0; q < nq; q++) {
    const whole = rowSize[q] === hi[q]! - lo[q]!;
    if (counted[q] !== 1 || (kp && whole)) continue;
    const base = q * nk;
    groupWeights(W, off + base, support, base, lo[q]!, hi[q]!, whole, groupKeys, row);
    const inv = 1 / rowSums[q]!;
    for (let i = 0; i < 3; i++) totals[i] += row[i]! * inv;
  }
}

/**
 * A row's weights (at W[at + k]) summed on each group's keys (sorted lists) from `lo` to `hi` − 1
 * in the row's support (support[sBase + k]; every one of them when `whole`), into out.
 */
function groupWeights(W: Float32Array, at: number, support: Uint8Array, sBase: number, lo: number, hi: number, whole: boolean, groupKeys: readonly Int32Array[], out: Float64Array): void {
  for (let c = 0; c < groupKeys.length; c++) {
    const keys = groupKeys[c]!;
    // The first key at or after lo (binary search), then the keys before hi.
    let i = 0;
    for (let j = keys.length; i < j; ) {
      const mid = (i + j) >> 1;
      if (keys[mid]! < lo) i = mid + 1;
      else j = mid;
    }
    let sum = 0;
    for (; i < keys.length; i++) {
      const k = keys[i]!;
      if (k >= hi) break;
      if (whole || support[sBase + k] === 1) sum += W[at + k]!;
    }
    out[c] = sum;
  }
}

/** rowEntropies of a [nq × nk] float32 matrix at byte address m in the kernel's memory (as the kernel sums them: mixEntropy of a row with itself). */
function kernelRowEntropies(kp: KernelPass, m: number, nq: number, nk: number, r: LayerRows, out: Float64Array): Float64Array {
  for (let q = 0; q < nq; q++) out[q] = kp.k.mixEntropy(m + q * nk * 4, m + q * nk * 4, r.lo[q]!, r.hi[q]!);
  return out;
}

/** meanRowJs of the first layer's and the current layer's head means in the kernel's memory. */
function kernelMeanRowJs(kp: KernelPass, ca: Uint8Array, ha: Float64Array, ra: LayerRows, cb: Uint8Array, hb: Float64Array, rb: LayerRows, nq: number, nk: number): number {
  const { k, P } = kp;
  let sum = 0;
  let rows = 0;
  for (let q = 0; q < nq; q++) {
    if (ca[q] !== 1 || cb[q] !== 1) continue;
    const base = q * nk * 4;
    const hm = k.mixEntropy(P.firstMean + base, P.layerMean + base, Math.min(ra.lo[q]!, rb.lo[q]!), Math.max(ra.hi[q]!, rb.hi[q]!));
    sum += Math.max(0, hm - (ha[q]! + hb[q]!) / 2) / LOG2;
    rows++;
  }
  return rows ? sum / rows : NaN;
}

/** RunOps on runs held in the kernel's memory (views of it), by the kernel. */
function kernelRuns(kp: KernelPass): RunOps {
  return {
    allEqual: (run) => kp.k.allEqual(run.byteOffset, run.length) === 1,
    leastFrom: (run, from) => kp.k.leastFrom(run.byteOffset, from, run.length),
    select: (run, k) => kp.k.selectRun(run.byteOffset, run.length, k),
  };
}

/**
 * `quantiles` of the kernel's pooled weights: the histogram (counted during the scan when
 * `counted`, else here), the gather pass and the selections in the kernel, the rank walk here.
 */
function kernelQuantiles(kp: KernelPass, n: number, qs: readonly number[], counted: boolean, noPool: boolean): number[] {
  const { k, P, f64, u32, i32 } = kp;
  const values = f64.subarray(P.pooled >> 3, (P.pooled >> 3) + n);
  if (n < HISTOGRAM_FROM) {
    if (counted) u32.fill(0, P.hist >> 2, (P.hist >> 2) + BINS + 1);
    return quantiles(values, n, qs);
  }
  if (!counted) k.histogram(P.pooled, n, P.hist, P.bins);
  const hist = u32.subarray(P.hist >> 2, (P.hist >> 2) + BINS);
  const mark = i32.subarray(P.mark >> 2, (P.mark >> 2) + BINS);
  const out = quantilesOfHistogram(values, n, qs, hist, mark, (m, wanted, starts) => {
    // Up to 8 wanted bins (4 quantiles: at most 8 ranks) in the kernel, 8 values at a time; more here.
    if (wanted.length > 8) {
      if (noPool) throw new Error(`internal: ${wanted.length} quantile bins wanted from a head scanned without its pooled weights (at most 8)`);
      const bins = new Uint16Array(kp.u8.buffer, P.bins, n);
      return gather(values, bins, n, mark, wanted, starts, new Float64Array(m));
    }
    // Bin 0 holding only exact zeros (counted apart by the kernel) is filled, not gathered.
    const zeros = u32[(P.hist >> 2) + BINS]!;
    const list = wanted[0] === 0 && hist[0] === zeros ? wanted.slice(1) : wanted;
    const from = list.length < wanted.length ? 1 : 0;
    if (from === 1) f64.fill(0, P.picked >> 3, (P.picked >> 3) + starts[1]!);
    new Uint16Array(kp.u8.buffer, P.list, 8).set(list);
    kp.i32.set(starts.subarray(from, wanted.length), P.cursor >> 2);
    if (noPool) k.gatherRows(P.args, P.bins, P.list, list.length, P.picked, P.cursor);
    else k.gatherBins(P.pooled, P.bins, n, P.list, list.length, P.picked, P.cursor);
    return f64.subarray(P.picked >> 3, (P.picked >> 3) + m);
  }, kernelRuns(kp), () => {
    k.binRange(P.hist, P.cursor);
    return [i32[P.cursor >> 2]!, i32[(P.cursor >> 2) + 1]!];
  });
  u32[(P.hist >> 2) + BINS] = 0;
  return out;
}

function emptyValues(): MetricValues {
  return Object.fromEntries(HEAD_METRIC_NAMES.map((m) => [m, NaN])) as MetricValues;
}

/**
 * Every metric of every head of a stack (default: `defaultStack`).
 *
 * - `max_weight`: the largest weight of any row; `confidence`: the mean of the row maxima.
 * - `entropy`: row entropy −Σ w log w divided by log(support size) (0: one key, 1: uniform over what it can see).
 * - `sparsity`: share of support entries below `sparsityThreshold` (0.01); `sparsity_uniform`: below 1/support.
 * - `p25`, `p50`, `p75`, `p90`, `std`: quantiles and standard deviation (population) of the support entries.
 * - `distance`: mean over rows of Σ_j w_ij |i − j| (in positions).
 * - `self`: weight on the query's own position; `sink`: on the first token (position 0: BOS, [CLS]) —
 *   with `excludeFirstToken` too (which then only drops query 0), since key 0 is exactly what that
 *   switch removes: key 0's share of the row over its support with key 0 kept; `separator`: on special tokens
 *   other than the first ([SEP], </s>); `punctuation`: on tokens that are only punctuation
 *   (`isPunctuationToken`); `long_range`: on keys with |i − j| ≥ `longRange` (5).
 * - `js_from_first`: mean over rows of the Jensen–Shannon divergence (bits, [0, 1]) between this head
 *   and the head with the same index in the first layer (0 in the first layer); in the last layer it
 *   is the first-to-last change (also in `jsChange`). Needs equal shapes across layers (always).
 */
export function headMetrics(trace: Trace, stackName?: StackName, options: HeadMetricOptions = {}): HeadMetrics {
  return headMetricsEach(trace, stackName, options);
}

/**
 * One head as `headMetrics` reads it, for a caller that scores more on the same pass (head-types.ts):
 * the layer's weights W (head h at offset `off`, rows of nk), the layer's support and key ranges,
 * each row's sum over its support and whether the row counts. Valid during the call only (the
 * arrays are reused).
 */
export interface HeadPass {
  layer: number;
  head: number;
  W: Float32Array;
  off: number;
  support: Uint8Array;
  lo: Int32Array;
  hi: Int32Array;
  /** Keys in each row's support (hi − lo where the row has no holes). */
  rowSize: Int32Array;
  rowSums: Float64Array;
  counted: Uint8Array;
  /**
   * With `keyGroups`: over the counted rows, Σ of each row's renormalised weight on the keys of
   * groups 0, 1 and 2 in its support (else null).
   */
  groupSums: Float64Array | null;
}

/**
 * `headMetrics`, calling `each` for every head after its row sums are known, and `layerDone` with
 * each layer's rows when the layer is done.
 */
export function headMetricsEach(
  trace: Trace, stackName: StackName | undefined, options: HeadMetricOptions, each?: (p: HeadPass) => void, layerDone?: (layer: number, rows: readonly HeadMetricRow[]) => void,
): HeadMetrics {
  const stack = stackName ?? defaultStack(trace);
  const s = trace.attention[stack];
  if (!s) throw new Error(`the trace has no '${stack}' attention`);
  const exclude = options.excludeFirstToken ?? false;
  const threshold = options.sparsityThreshold ?? DEFAULT_SPARSITY_THRESHOLD;
  const longRange = options.longRange ?? DEFAULT_LONG_RANGE;
  for (const o of options.omit ?? []) if (!OMITTABLE_METRICS.includes(o)) throw new Error(`omit: expected ${OMITTABLE_METRICS.join(', ')}, got '${String(o)}'`);
  const wantJs = !options.omit?.includes('js_from_first');
  const wantQuantiles = !options.omit?.includes('quantiles');
  const kernelChoice = options.kernel ?? 'auto';
  if (kernelChoice !== 'auto' && kernelChoice !== 'js' && kernelChoice !== 'wasm') throw new Error(`kernel: expected auto, js or wasm, got '${String(kernelChoice)}'`);
  const g = rowGeometry(s, stack);
  const { heads, nq, nk, shift } = g;
  const L = s.layers.length;
  const { keys } = stackTokens(trace, stack);
  const sepList: number[] = [];
  const punctList: number[] = [];
  for (let k = 0; k < nk; k++) {
    const t = keys[k];
    if (!t) continue;
    if (isSeparatorToken(t, k)) sepList.push(k);
    if (isPunctuationToken(t)) punctList.push(k);
  }
  const sepKeys = Int32Array.from(sepList);
  const punctKeys = Int32Array.from(punctList);
  const size = nq * nk;
  // The WebAssembly kernel where it runs (its arrays live in its memory), else the JavaScript loops.
  const from = options.layers?.from ?? 0;
  const to = options.layers?.to ?? L;
  if (!(Number.isInteger(from) && Number.isInteger(to) && from >= 0 && from < to && to <= L)) {
    throw new Error(`layers: expected a range from … to − 1 within 0–${L - 1} (from < to ≤ ${L}), got ${from} … ${to - 1}`);
  }
  const groups = options.keyGroups;
  if (groups && groups.length !== nk) throw new Error(`keyGroups has ${groups.length} entries for ${nk} keys`);
  const kp = kernelChoice === 'js' ? null : kernelPass(heads, nq, nk, wantJs, wantQuantiles);
  if (kernelChoice === 'wasm' && kp === null) throw new Error(`kernel 'wasm': the WebAssembly kernel cannot run here (${headKernelStatus().reason})`);
  try {
    return passes(trace, stack, s, g, L, kp, exclude, threshold, longRange, wantJs, wantQuantiles, sepKeys, punctKeys, each, from, to, layerDone, options.beforeLayer, groups);
  } finally {
    kp?.release();
  }
}

/** The passes of `headMetricsEach` over every layer and head, on the kernel (`kp`) or in JavaScript (`kp` null). */
function passes(
  trace: Trace, stack: StackName, s: LayerStack, g: RowGeometry, L: number, kp: KernelPass | null, exclude: boolean, threshold: number, longRange: number,
  wantJs: boolean, wantQuantiles: boolean, sepKeys: Int32Array, punctKeys: Int32Array, each: ((p: HeadPass) => void) | undefined,
  from: number, to: number, layerDone: ((layer: number, rows: readonly HeadMetricRow[]) => void) | undefined, beforeLayer: ((layer: number) => void) | undefined,
  groups: Uint8Array | undefined,
): HeadMetrics {
  const { heads, nq, nk } = g;
  const size = nq * nk;
  // Key groups: each group's keys in order (the rows with holes, and every row without the kernel),
  // and as int32 lane masks in the kernel's memory (its groupSums, for the other rows).
  const groupKeys = groups ? [1, 2, 4].map((bit) => Int32Array.from(keysWithBit(groups, bit))) : null;
  const groupTotals = new Float64Array(3);
  const groupRow = new Float64Array(3);
  if (groups && kp) {
    for (let gi = 0; gi < 3; gi++) for (let k = 0; k < nk; k++) kp.i32[(kp.P.groups >> 2) + gi * nk + k] = groups[k]! & (1 << gi) ? -1 : 0;
  }
  const js = kp === null;
  const pooled = new Float64Array(js ? size : 0);
  const counted = new Uint8Array(nq);
  // The first layer's renormalised heads, and head means of the first layer and of the current one
  // (in the kernel's memory when it runs).
  const first = Array.from({ length: heads }, () => ({ w: new Float64Array(wantJs && js ? size : 0), c: new Uint8Array(nq), e: new Float64Array(nq), s: new Float64Array(nq) }));
  const rowEnt = new Float64Array(nq);
  const rowSums = new Float64Array(nq);
  const stats = new Float64Array(17);
  let firstRows: LayerRows | undefined;
  const firstMeanEnt = new Float64Array(nq);
  const layerMeanEnt = new Float64Array(nq);
  const firstMean = new Float64Array(js ? size : 0);
  const layerMean = new Float64Array(js ? size : 0);
  let firstMeanRows = new Uint8Array(nq);
  const rows: HeadMetricRow[] = [];
  const layerMeans: HeadMetrics['layerMeans'] = [];
  const jsChange: number[] = new Array<number>(heads).fill(NaN);
  // The first layer is read for js_from_first even when it is not in the range (its rows are not kept).
  for (let l = wantJs ? 0 : from; l < to; l++) {
    if (l > 0 && l < from) continue;
    const kept = l >= from;
    const layerStart = rows.length;
    beforeLayer?.(l);
    const W = s.layers[l]!;
    const rowsOfLayer = layerSupport(trace, stack, l, exclude);
    const { firstVisible } = rowsOfLayer;
    if (l === 0) firstRows = rowsOfLayer;
    layerMean.fill(0);
    if (kp) {
      // The layer's support and key ranges into the kernel's memory (its weights head by head below,
      // each into the same place just before its scan reads it: a copy of the whole layer first left it out of the caches).
      const { P } = kp;
      kp.u8.set(rowsOfLayer.support, P.supp);
      // The first layer stays in the kernel's memory for js_from_first (read as float32 with its row sums).
      if (l === 0 && wantJs) {
        kp.u8.set(rowsOfLayer.support, P.supp0);
        kp.i32.set(rowsOfLayer.lo, P.flo >> 2);
        kp.i32.set(rowsOfLayer.hi, P.fhi >> 2);
        kp.i32.set(rowsOfLayer.rowSize, P.fsize >> 2);
      }
      kp.i32.set(rowsOfLayer.lo, P.lo >> 2);
      kp.i32.set(rowsOfLayer.hi, P.hi >> 2);
      kp.i32.set(rowsOfLayer.rowSize, P.size >> 2);
      if (wantJs) kp.f32.fill(0, P.layerMean >> 2, (P.layerMean >> 2) + size);
    }
    let meanRows = new Uint8Array(nq);
    for (let h = 0; h < heads; h++) {
      const off = h * size;
      if (kp) {
        const { P } = kp;
        const head = W.subarray(off, off + size);
        kp.f32.set(head, P.W >> 2);
        if (l === 0 && wantJs) kp.f32.set(head, (P.W0 >> 2) + off);
        kp.k.rowSums(P.W, P.supp, P.lo, P.hi, P.size, nq, nk, P.sums, P.counted);
        rowSums.set(kp.f64.subarray(P.sums >> 3, (P.sums >> 3) + nq));
        counted.set(kp.u8.subarray(P.counted, P.counted + nq));
      } else rowSumsOf(W, h, g, rowsOfLayer, counted, rowSums);
      if (!kept) {
        // The first layer outside the range, read for js_from_first only: what the later layers
        // compare with (renormalised rows, counted rows, row entropies, the head mean), the same
        // operations in the same order as the full pass keeps them, without the metrics' scan.
        if (kp) firstHeadKernel(kp, h, counted, rowsOfLayer, rowSums, g, first[h]!.e);
        else firstHeadJs(W, off, first[h]!.w, counted, rowsOfLayer, rowSums, g, layerMean, first[h]!.e);
        first[h]!.c.set(counted);
        first[h]!.s.set(rowSums);
        if (h === 0) meanRows = counted.slice();
        continue;
      }
      if (groupKeys) headGroupSums(kp, W, off, counted, rowsOfLayer, rowSums, g, groupKeys, groupRow, groupTotals);
      each?.({ layer: l, head: h, W, off, support: rowsOfLayer.support, lo: rowsOfLayer.lo, hi: rowsOfLayer.hi, rowSize: rowsOfLayer.rowSize, rowSums, counted, groupSums: groupKeys ? groupTotals : null });
      const firstHead = l === 0 || !wantJs ? null : { w: first[h]!.w, counted: first[h]!.c, ent: first[h]!.e, sums: first[h]!.s, rows: firstRows! };
      // The kernel counts the quantiles' histogram during its scan when the head has enough entries.
      // With the used bin range from the kernel (BINS entries or more) and at most 8 wanted bins
      // (2 ranks per quantile), the quantiles read the wanted bins' weights from the rows
      // (gatherRows) and the scan writes no pooled copy of the head's weights.
      let histInScan = false;
      let noPool = false;
      if (kp && wantQuantiles) {
        let n = 0;
        for (let q = 0; q < nq; q++) if (counted[q] === 1) n += rowsOfLayer.rowSize[q]!;
        histInScan = n >= HISTOGRAM_FROM;
        noPool = n >= BINS && 2 * QUANTILES.length <= 8;
      }
      const acc = kp
        ? scanHeadKernel(kp, h, W, off, counted, rowsOfLayer, firstVisible, rowSums, g, threshold, longRange, sepKeys, punctKeys, rowEnt, firstHead, wantJs, histInScan, noPool, stats)
        : scanHead(W, off, first[h]!.w, counted, rowsOfLayer, firstVisible, rowSums, g, threshold, longRange, sepKeys, punctKeys, layerMean, pooled, rowEnt, firstHead, l === 0 && wantJs, wantJs, stats);
      const [maxW, sumMax, sumEnt, below, belowUniform, entries, sum, sumSq, dist, self, sink, sep, punct, long, nRows, jsSum, jsRows] = acc;
      const values = emptyValues();
      if (nRows! > 0) {
        const mean = sum! / entries!;
        const [p25, p50, p75, p90] = !wantQuantiles ? [NaN, NaN, NaN, NaN] : kp ? kernelQuantiles(kp, entries!, QUANTILES, histInScan, noPool) : quantiles(pooled, entries!, QUANTILES);
        Object.assign(values, {
          max_weight: maxW!,
          confidence: sumMax! / nRows!,
          entropy: sumEnt! / nRows!,
          sparsity: below! / entries!,
          sparsity_uniform: belowUniform! / entries!,
          p25, p50, p75, p90,
          std: Math.sqrt(Math.max(0, sumSq! / entries! - mean * mean)),
          distance: dist! / nRows!,
          self: self! / nRows!,
          sink: sink! / nRows!,
          separator: sep! / nRows!,
          punctuation: punct! / nRows!,
          long_range: long! / nRows!,
        });
      }
      if (l === 0) {
        first[h]!.c.set(counted);
        first[h]!.e.set(rowEnt);
        first[h]!.s.set(rowSums);
        values.js_from_first = nRows! > 0 && wantJs ? 0 : NaN;
      } else {
        values.js_from_first = jsRows! > 0 ? jsSum! / jsRows! : NaN;
      }
      if (l === L - 1) jsChange[h] = values.js_from_first;
      if (h === 0) meanRows = counted.slice();
      rows.push({ layer: l, head: h, ...values });
    }
    const agg = aggregate(rows.slice(layerStart));
    if (!kept) rows.length = layerStart;
    if (!wantJs) agg.js_from_first = NaN;
    else if (l === 0) {
      if (kp) {
        kp.f32.copyWithin(kp.P.firstMean >> 2, kp.P.layerMean >> 2, (kp.P.layerMean >> 2) + size);
        kernelRowEntropies(kp, kp.P.firstMean, nq, nk, rowsOfLayer, firstMeanEnt);
      } else {
        firstMean.set(layerMean);
        rowEntropies(firstMean, nq, nk, rowsOfLayer, firstMeanEnt);
      }
      firstMeanRows = meanRows;
      agg.js_from_first = meanRows.some((c) => c === 1) ? 0 : NaN;
    } else if (kp) {
      agg.js_from_first = kernelMeanRowJs(kp, firstMeanRows, firstMeanEnt, firstRows!, meanRows, kernelRowEntropies(kp, kp.P.layerMean, nq, nk, rowsOfLayer, layerMeanEnt), rowsOfLayer, nq, nk);
    } else {
      agg.js_from_first = meanRowJs(firstMean, firstMeanRows, firstMeanEnt, firstRows!, layerMean, meanRows, rowEntropies(layerMean, nq, nk, rowsOfLayer, layerMeanEnt), rowsOfLayer, nq, nk);
    }
    if (kept) {
      layerMeans.push({ layer: l, ...agg });
      layerDone?.(l, rows.slice(layerStart));
    }
  }
  const model = aggregate(rows);
  model.js_from_first = to === L && layerMeans.length ? layerMeans[layerMeans.length - 1]!.js_from_first : NaN;
  return { stack, layers: L, heads, excludeFirstToken: exclude, rows, layerMeans, model, jsChange };
}

/** Mean of each metric over rows (NaN entries skipped), max for max_weight. */
export function aggregate(rows: readonly MetricValues[]): MetricValues {
  const out = emptyValues();
  for (const m of HEAD_METRIC_NAMES) {
    let sum = 0;
    let n = 0;
    let max = -Infinity;
    for (const r of rows) {
      const v = r[m];
      if (Number.isNaN(v)) continue;
      sum += v;
      n++;
      if (v > max) max = v;
    }
    out[m] = n === 0 ? NaN : m === 'max_weight' ? max : sum / n;
  }
  return out;
}
