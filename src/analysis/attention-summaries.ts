/**
 * Summaries that need every head, computed by streaming over an AttentionSource with bounded
 * memory: a head is read in bands of rows (at most `blockCells` values at a time) and folded into
 * its summary before the next band is read, so an 8k-token trace kept as queries and keys (whose
 * heads are 256 MB each, 137 GB in all for a 1B model) is summarised in a few MB.
 *
 * - Thumbnails (the model view's small multiples): each head downsampled to at most size × size
 *   bins by the max or the mean of the cells a bin covers (masked cells count as 0 in the mean:
 *   the bin's average weight).
 * - Head metrics (head-metrics.ts) one head at a time: each head goes through `headMetrics` as a
 *   trace of one layer and one head, so the memory is one head's matrix, not the model's.
 * - Attention rollout (rollout.ts) at reduced resolution: each layer's head-mean attention coarsened
 *   to bins × bins (a bin's rows averaged, its columns summed: rows still sum to 1, the chain of
 *   token groups), the residual added and the layers multiplied as rollout does; bins = tokens is
 *   the exact rollout.
 *
 * Isomorphic: imports nothing from Node.
 */
import { checkBlock, type AttentionSource } from '../core/attention-source.js';
import { attentionSource } from '../core/attention-on-demand.js';
import { AttnscopeError } from '../core/errors.js';
import { headScoreTerms } from '../core/position-bias.js';
import type { ScoreTerms, StackName, Trace } from '../core/trace.js';
import { headMetrics, HEAD_METRIC_NAMES, type HeadMetricOptions, type HeadMetricRow } from './head-metrics.js';
import { rolloutOfMatrices } from './rollout.js';

/** Values read from a source at a time by the streaming passes (4 MB of float32). */
export const STREAM_BLOCK_CELLS = 1 << 20;

export type ThumbnailReduce = 'max' | 'mean';

export interface ThumbnailOptions {
  /** Bins per side at most (default 64); a side with fewer tokens keeps one bin per token. */
  size?: number;
  /** How a bin summarises its cells (default 'max'). */
  reduce?: ThumbnailReduce;
  /** Values read at a time (default STREAM_BLOCK_CELLS). */
  blockCells?: number;
}

/** One head downsampled: [rows, cols] row-major. */
export interface HeadThumbnail {
  layer: number;
  head: number;
  rows: number;
  cols: number;
  data: Float32Array;
}

/** The bin of each of n positions over `bins` bins: position i → ⌊i · bins / n⌋. */
function binOf(n: number, bins: number): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor((i * bins) / n);
  return out;
}

/** The row and column bins of a thumbnail of size `size` for a source. */
export function thumbnailShape(source: Pick<AttentionSource, 'numQueries' | 'numKeys'>, size = 64): { rows: number; cols: number } {
  if (!Number.isInteger(size) || size < 1) throw new AttnscopeError(`thumbnail size ${size} is not a whole number ≥ 1`);
  return { rows: Math.min(size, source.numQueries), cols: Math.min(size, source.numKeys) };
}

/** One head's thumbnail, read in bands of rows of at most `blockCells` values. */
export function headThumbnail(source: AttentionSource, layer: number, head: number, options: ThumbnailOptions = {}): HeadThumbnail {
  const { numQueries: nq, numKeys: nk } = source;
  checkBlock(source, layer, head, 0, nq, 0, nk);
  const { rows, cols } = thumbnailShape(source, options.size ?? 64);
  const reduce = options.reduce ?? 'max';
  if (reduce !== 'max' && reduce !== 'mean') throw new AttnscopeError(`thumbnail reduce '${String(reduce)}' is not max or mean`);
  const blockCells = options.blockCells ?? STREAM_BLOCK_CELLS;
  const band = Math.max(1, Math.floor(blockCells / Math.max(1, nk)));
  const rowBin = binOf(nq, rows);
  const colBin = binOf(nk, cols);
  const acc = new Float64Array(rows * cols);
  for (let r0 = 0; r0 < nq; r0 += band) {
    const r1 = Math.min(nq, r0 + band);
    const block = source.block(layer, head, r0, r1, 0, nk);
    for (let r = r0; r < r1; r++) {
      const base = rowBin[r]! * cols;
      const o = (r - r0) * nk;
      if (reduce === 'max') {
        for (let c = 0; c < nk; c++) {
          const v = block[o + c]!;
          const b = base + colBin[c]!;
          if (v > acc[b]!) acc[b] = v;
        }
      } else {
        for (let c = 0; c < nk; c++) acc[base + colBin[c]!]! += block[o + c]!;
      }
    }
  }
  const data = new Float32Array(rows * cols);
  if (reduce === 'max') data.set(acc);
  else {
    // Cells per bin: (rows of the row bin) × (columns of the column bin).
    const rowCount = new Float64Array(rows);
    const colCount = new Float64Array(cols);
    for (let r = 0; r < nq; r++) rowCount[rowBin[r]!]!++;
    for (let c = 0; c < nk; c++) colCount[colBin[c]!]!++;
    for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) data[i * cols + j] = acc[i * cols + j]! / (rowCount[i]! * colCount[j]!);
  }
  return { layer, head, rows, cols, data };
}

/** Every head's thumbnail, layer by layer, one head in memory at a time (yielded as it is done). */
export function* headThumbnailsEach(source: AttentionSource, options: ThumbnailOptions = {}): Generator<HeadThumbnail> {
  for (let l = 0; l < source.numLayers; l++) for (let h = 0; h < source.numHeads; h++) yield headThumbnail(source, l, h, options);
}

/** Every head's thumbnail: `[layer][head]`. */
export function headThumbnails(source: AttentionSource, options: ThumbnailOptions = {}): HeadThumbnail[][] {
  const out: HeadThumbnail[][] = Array.from({ length: source.numLayers }, () => []);
  for (const t of headThumbnailsEach(source, options)) out[t.layer]!.push(t);
  return out;
}

/** The score terms of one layer and head of a stack, as a one-layer, one-head stack's (a compact bias stays compact). */
function headTerms(terms: ScoreTerms | undefined, layer: number, head: number, queries: number, keys: number): ScoreTerms | undefined {
  return terms ? headScoreTerms(terms, layer, head, queries, keys) : undefined;
}

/**
 * Per-head metrics (head-metrics.ts's columns) of every head of a stack, computed one head at a time
 * from the trace's attention source (dense or on demand): each head goes through `headMetrics` as a
 * trace of one layer and one head, so the memory is one head's matrix. `js_from_first` compares
 * layers, so it is NaN here (the other columns are the whole-trace values). `each` sees every row as
 * it is done (a caller can show progress or stop by throwing).
 */
export function streamedHeadMetrics(trace: Trace, stack: StackName, options: Omit<HeadMetricOptions, 'omit'> = {}, each?: (row: HeadMetricRow) => void): HeadMetricRow[] {
  const source = attentionSource(trace, stack);
  const { numQueries: nq, numKeys: nk } = source;
  const terms = trace.scores?.[stack];
  const rows: HeadMetricRow[] = [];
  for (let l = 0; l < source.numLayers; l++) {
    for (let h = 0; h < source.numHeads; h++) {
      const one: Trace = {
        model: { ...trace.model, numLayers: 1, numHeads: 1 },
        tokens: trace.tokens,
        ...(trace.decoderTokens ? { decoderTokens: trace.decoderTokens } : {}),
        attention: { [stack]: { dims: [1, nq, nk], layers: [source.block(l, h, 0, nq, 0, nk)] } },
      };
      const t = headTerms(terms, l, h, nq, nk);
      if (t) one.scores = { [stack]: t };
      const m = headMetrics(one, stack, { ...options, omit: ['js_from_first'] });
      const row: HeadMetricRow = { ...m.rows[0]!, layer: l, head: h };
      rows.push(row);
      each?.(row);
    }
  }
  return rows;
}

/** The metric columns `streamedHeadMetrics` fills (every one but js_from_first). */
export const STREAMED_METRIC_NAMES = HEAD_METRIC_NAMES.filter((n) => n !== 'js_from_first');

export interface StreamedRolloutOptions {
  /** Token groups per side at most (default 256); the tokens when fewer. */
  bins?: number;
  /** Weight of the identity added to each layer (default 0.5, as rollout.ts). */
  residual?: number;
  /** Values read at a time (default STREAM_BLOCK_CELLS). */
  blockCells?: number;
}

export interface StreamedRollout {
  stack: StackName;
  /** Token groups per side: group b holds the tokens i with ⌊i · bins / n⌋ = b. */
  bins: number;
  /** Cumulative rollout after each layer, [bins, bins] row-major: layers[l][I, J] is how much group I after layer l draws on input group J. */
  layers: Float32Array[];
}

/**
 * Attention rollout (Abnar & Zuidema 2020; rollout.ts, mean over heads, no discarding) of a
 * self-attention stack at reduced resolution, streamed: per layer, every head is read in bands of
 * rows and folded into the coarse head-mean matrix F[I, J] = Σ_{i∈I, j∈J} A[i, j] / (heads · |I|)
 * (rows sum to 1); then A' = (1 − w)·F + w·I with rows renormalised, and R_l = A'_l · R_(l−1).
 * Memory: one band and the bins × bins matrices. With bins equal to the tokens it is rollout.ts's
 * attentionRollout (fusion 'mean', discard 0).
 */
export function streamedRollout(trace: Trace, stack: StackName, options: StreamedRolloutOptions = {}): StreamedRollout {
  const source = attentionSource(trace, stack);
  const { numQueries: n, numKeys, numHeads: H, numLayers: L } = source;
  if (stack === 'cross' || numKeys !== n) throw new AttnscopeError(`rollout needs a self-attention stack (queries and keys the same tokens); '${stack}' has ${n} queries and ${numKeys} keys`);
  const size = options.bins ?? 256;
  if (!Number.isInteger(size) || size < 1) throw new AttnscopeError(`rollout bins ${size} is not a whole number ≥ 1`);
  const w = options.residual ?? 0.5;
  if (!(w >= 0 && w <= 1)) throw new AttnscopeError(`rollout residual ${w} is out of range (0–1)`);
  const m = Math.min(size, n);
  const bin = binOf(n, m);
  const rowsIn = new Float64Array(m);
  for (let i = 0; i < n; i++) rowsIn[bin[i]!]!++;
  const band = Math.max(1, Math.floor((options.blockCells ?? STREAM_BLOCK_CELLS) / n));
  const graph: Float64Array[] = [];
  for (let l = 0; l < L; l++) {
    const f = new Float64Array(m * m);
    for (let h = 0; h < H; h++) {
      for (let r0 = 0; r0 < n; r0 += band) {
        const r1 = Math.min(n, r0 + band);
        const block = source.block(l, h, r0, r1, 0, n);
        for (let r = r0; r < r1; r++) {
          const base = bin[r]! * m;
          const o = (r - r0) * n;
          for (let c = 0; c < n; c++) f[base + bin[c]!]! += block[o + c]!;
        }
      }
    }
    for (let I = 0; I < m; I++) {
      let sum = 0;
      for (let J = 0; J < m; J++) {
        const v = (1 - w) * (f[I * m + J]! / (H * rowsIn[I]!)) + (I === J ? w : 0);
        f[I * m + J] = v;
        sum += v;
      }
      if (sum > 0) for (let J = 0; J < m; J++) f[I * m + J]! /= sum;
    }
    graph.push(f);
  }
  return { stack, bins: m, layers: rolloutOfMatrices(graph, m) };
}
