/**
 * The heatmap at any length: a query × key matrix read through an AttentionSource a block at a
 * time, shown as a pyramid of tiles. Level z bins 2^z × 2^z cells into one tile pixel, reduced by
 * their max or their mean (the user's choice; both are kept, so switching costs nothing); level 0
 * holds the exact weights. The top level (the overview) is one tile of at most OVERVIEW_BINS bins
 * a side, computed by streaming over row strips of the source; every other tile is computed on
 * request from the block it covers. Nothing of size queries × keys is ever held.
 *
 * Also the viewport arithmetic of the page (zoom about a point, pan, clamping, which tiles and
 * which labels a view shows), kept here as plain functions so that it is tested without a browser.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { AttentionSource } from '../../core/attention-source.js';
import type { ScoreTerms, StackName } from '../../core/trace.js';

/** Above this many query or key tokens the views read attention in blocks (tiles, thumbnails, top-k). */
export const LONG_TOKENS = 1024;
/** Side of a tile in bins. */
export const TILE = 256;
/** Largest side of the overview in bins. */
export const OVERVIEW_BINS = 512;
/** Cells read per block while streaming (one block is at most this many floats). */
export const BLOCK_CELLS = 1 << 20;

/** Whether views should read this source in blocks rather than as whole matrices. */
export function isLongSource(source: Pick<AttentionSource, 'onDemand' | 'numQueries' | 'numKeys'>): boolean {
  return source.onDemand || Math.max(source.numQueries, source.numKeys) > LONG_TOKENS;
}

/** What one heatmap cell is: one head's weight, or the mean or max over the layer's heads. */
export type CellWhich = number | 'mean' | 'max';
/** How tile pixels summarise the cells they cover. */
export type Reduce = 'max' | 'mean';

/** Rows [r0, r1) × columns [c0, c1) of the shown matrix, row-major. */
export type BlockReader = (r0: number, r1: number, c0: number, c1: number) => Float32Array;

/** Reads one head's blocks, or the mean / max over every head of the layer. */
export function blockReader(source: AttentionSource, layer: number, which: CellWhich): BlockReader {
  if (typeof which === 'number') return (r0, r1, c0, c1) => source.block(layer, which, r0, r1, c0, c1);
  return (r0, r1, c0, c1) => {
    const out = source.block(layer, 0, r0, r1, c0, c1);
    for (let h = 1; h < source.numHeads; h++) {
      const b = source.block(layer, h, r0, r1, c0, c1);
      if (which === 'max') for (let i = 0; i < out.length; i++) out[i] = Math.max(out[i]!, b[i]!);
      else for (let i = 0; i < out.length; i++) out[i]! += b[i]!;
    }
    if (which === 'mean') for (let i = 0; i < out.length; i++) out[i]! /= source.numHeads;
    return out;
  };
}

/**
 * The keys each query may see, from a stack's recorded score terms: row q sees keys
 * [lo(q), hi(q)). Null when every key is visible (no terms, or no causal mask or window).
 */
export interface KeyRange {
  lo(q: number): number;
  hi(q: number): number;
}

export function keyRange(terms: ScoreTerms | undefined, stack: StackName, layer: number, nq: number, nk: number): KeyRange | null {
  if (!terms) return null;
  const window = terms.window[layer] ?? null;
  if (!terms.causal && window === null) return null;
  // Cached queries: the query rows are the last nq of nk positions (as analysis/aggregate.ts maskedEntries).
  const shift = nk - nq > 0 && stack !== 'cross' ? nk - nq : 0;
  return {
    lo: (q) => (window === null ? 0 : Math.max(0, q + shift - window + 1)),
    hi: (q) => (terms.causal ? Math.min(nk, q + shift + 1) : nk),
  };
}

/** Bins of a region: max and mean of the unmasked cells each bin covers; `blank` where it covers none. */
export interface Bins {
  /** Bins down and across. */
  rows: number;
  cols: number;
  max: Float32Array;
  mean: Float32Array;
  blank: Uint8Array;
  /** Largest and smallest positive value of any unmasked cell covered. */
  peak: number;
  minPositive: number;
}

/** A region of the matrix binned f × f cells per bin, its bins aligned to multiples of f. */
export interface BinRegion {
  r0: number;
  r1: number;
  c0: number;
  c1: number;
  /** Cells per bin side. */
  f: number;
}

/**
 * Bins a region by streaming blocks of whole bin rows from `read` (each at most BLOCK_CELLS
 * values), yielding after each block the fraction done, and returning the bins. Callers in a page
 * run a few steps per frame; others run it to the end (`binAll`).
 */
export function* binRegion(read: BlockReader, region: BinRegion, mask: KeyRange | null, blockCells = BLOCK_CELLS): Generator<number, Bins> {
  const { r0, r1, c0, c1, f } = region;
  const rows = Math.ceil((r1 - r0) / f);
  const cols = Math.ceil((c1 - c0) / f);
  const width = c1 - c0;
  const sum = new Float64Array(rows * cols);
  const count = new Float64Array(rows * cols);
  const max = new Float32Array(rows * cols);
  let peak = 0;
  let minPositive = Infinity;
  // Whole bin rows per block (at least one), columns in chunks when one bin row is too wide.
  const binRowsPerBlock = Math.max(1, Math.floor(blockCells / (f * width)));
  const colChunk = f * width > blockCells ? Math.max(f, Math.floor(blockCells / f / f) * f) : width;
  for (let by = 0; by < rows; by += binRowsPerBlock) {
    const ra = r0 + by * f;
    const rb = Math.min(r1, ra + binRowsPerBlock * f);
    for (let cc = c0; cc < c1; cc += colChunk) {
      let ca = cc;
      let cb = Math.min(c1, cc + colChunk);
      // Read only the columns some row of the block sees (none above the diagonal of a causal matrix).
      if (mask) {
        let lo = Infinity;
        let hi = -Infinity;
        for (let r = ra; r < rb; r++) {
          lo = Math.min(lo, mask.lo(r));
          hi = Math.max(hi, mask.hi(r));
        }
        ca = Math.max(ca, lo);
        cb = Math.min(cb, hi);
        if (cb <= ca) continue;
      }
      const w = cb - ca;
      const block = read(ra, rb, ca, cb);
      for (let r = ra; r < rb; r++) {
        const y = Math.floor((r - r0) / f);
        const lo = mask ? Math.max(ca, mask.lo(r)) : ca;
        const hi = mask ? Math.min(cb, mask.hi(r)) : cb;
        const base = (r - ra) * w - ca;
        for (let c = lo; c < hi; ) {
          const x = Math.floor((c - c0) / f);
          const end = Math.min(hi, c0 + (x + 1) * f);
          const bi = y * cols + x;
          const start = c;
          let s = 0;
          let m = max[bi]!;
          for (; c < end; c++) {
            const v = block[base + c]!;
            s += v;
            if (v > m) m = v;
            if (v > 0 && v < minPositive) minPositive = v;
          }
          sum[bi]! += s;
          count[bi]! += end - start;
          max[bi] = m;
          if (m > peak) peak = m;
        }
      }
    }
    yield Math.min(1, (by + binRowsPerBlock) / rows);
  }
  const mean = new Float32Array(rows * cols);
  const blank = new Uint8Array(rows * cols);
  for (let i = 0; i < rows * cols; i++) {
    if (count[i]! > 0) mean[i] = sum[i]! / count[i]!;
    else blank[i] = 1;
  }
  return { rows, cols, max, mean, blank, peak, minPositive: Number.isFinite(minPositive) ? minPositive : 0 };
}

/** Runs binRegion to the end. */
export function binAll(read: BlockReader, region: BinRegion, mask: KeyRange | null, blockCells = BLOCK_CELLS): Bins {
  const it = binRegion(read, region, mask, blockCells);
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
  }
}

// --- the pyramid ------------------------------------------------------------------------------------

/** The top level: the smallest power-of-two bin side that makes the whole matrix at most OVERVIEW_BINS bins a side. */
export function topLevel(nq: number, nk: number, overviewBins = OVERVIEW_BINS): number {
  let z = 0;
  while (Math.ceil(Math.max(nq, nk) / 2 ** z) > overviewBins) z++;
  return z;
}

/** The overview's region (level topLevel). */
export function overviewRegion(nq: number, nk: number, overviewBins = OVERVIEW_BINS): BinRegion {
  return { r0: 0, r1: nq, c0: 0, c1: nk, f: 2 ** topLevel(nq, nk, overviewBins) };
}

/** Tile (ty, tx) of level z: TILE × TILE bins of 2^z cells a side, clipped to the matrix. */
export function tileRegion(z: number, ty: number, tx: number, nq: number, nk: number, tile = TILE): BinRegion {
  const f = 2 ** z;
  const span = tile * f;
  return { r0: ty * span, r1: Math.min(nq, (ty + 1) * span), c0: tx * span, c1: Math.min(nk, (tx + 1) * span), f };
}

// --- the viewport -----------------------------------------------------------------------------------

/** What the page shows: `scale` CSS pixels per cell, the cell coordinates (x: key, y: query) at the viewport's top-left. */
export interface TileView {
  scale: number;
  x: number;
  y: number;
}

/** Largest zoom: cells this many CSS pixels a side. */
export const MAX_CELL = 40;

/** The scale that shows the whole matrix in a w × h viewport. */
export function fitScale(nq: number, nk: number, w: number, h: number): number {
  return Math.min(w / nk, h / nq);
}

/** The whole matrix, centred. */
export function fitView(nq: number, nk: number, w: number, h: number): TileView {
  return clampView({ scale: fitScale(nq, nk, w, h), x: 0, y: 0 }, nq, nk, w, h);
}

/** Keeps the scale between fitting the matrix and MAX_CELL, and the matrix in view (centred on an axis it does not fill). */
export function clampView(v: TileView, nq: number, nk: number, w: number, h: number): TileView {
  const scale = Math.min(MAX_CELL, Math.max(fitScale(nq, nk, w, h), v.scale));
  const axis = (pos: number, n: number, px: number) => {
    const shown = px / scale;
    if (shown >= n) return -(shown - n) / 2;
    return Math.min(n - shown, Math.max(0, pos));
  };
  return { scale, x: axis(v.x, nk, w), y: axis(v.y, nq, h) };
}

/** Zooms by `factor` keeping the cell under viewport point (px, py) in place. */
export function zoomAt(v: TileView, factor: number, px: number, py: number, nq: number, nk: number, w: number, h: number): TileView {
  const cx = v.x + px / v.scale;
  const cy = v.y + py / v.scale;
  const scale = Math.min(MAX_CELL, Math.max(fitScale(nq, nk, w, h), v.scale * factor));
  return clampView({ scale, x: cx - px / scale, y: cy - py / scale }, nq, nk, w, h);
}

/** Shows rows [q0, q1) × columns [k0, k1) as large as they fit, centred. */
export function viewOf(q0: number, q1: number, k0: number, k1: number, nq: number, nk: number, w: number, h: number): TileView {
  const scale = Math.min(MAX_CELL, w / Math.max(1, k1 - k0), h / Math.max(1, q1 - q0));
  const clamped = Math.min(MAX_CELL, Math.max(fitScale(nq, nk, w, h), scale));
  return clampView({ scale: clamped, x: (k0 + k1) / 2 - w / 2 / clamped, y: (q0 + q1) / 2 - h / 2 / clamped }, nq, nk, w, h);
}

/** The pyramid level a view draws from: tile pixels no smaller than device pixels (2^z ≤ 1 / (scale · dpr)). */
export function levelFor(scale: number, dpr: number, top: number): number {
  const cellsPerPixel = 1 / (scale * dpr);
  const z = cellsPerPixel < 1 ? 0 : Math.floor(Math.log2(cellsPerPixel) + 1e-9);
  return Math.max(0, Math.min(top, z));
}

/** The tiles of level z a view covers, nearest the centre first. */
export function visibleTiles(v: TileView, w: number, h: number, z: number, nq: number, nk: number, tile = TILE): { ty: number; tx: number }[] {
  const span = tile * 2 ** z;
  const k0 = Math.max(0, v.x);
  const k1 = Math.min(nk, v.x + w / v.scale);
  const q0 = Math.max(0, v.y);
  const q1 = Math.min(nq, v.y + h / v.scale);
  if (k1 <= k0 || q1 <= q0) return [];
  const out: { ty: number; tx: number; d: number }[] = [];
  const cy = (q0 + q1) / 2;
  const cx = (k0 + k1) / 2;
  for (let ty = Math.floor(q0 / span); ty * span < q1; ty++) {
    for (let tx = Math.floor(k0 / span); tx * span < k1; tx++) {
      out.push({ ty, tx, d: Math.hypot((ty + 0.5) * span - cy, (tx + 0.5) * span - cx) });
    }
  }
  return out.sort((a, b) => a.d - b.d).map(({ ty, tx }) => ({ ty, tx }));
}

/** The cell under viewport point (px, py), or null outside the matrix. */
export function cellAtPoint(v: TileView, px: number, py: number, nq: number, nk: number): { q: number; k: number } | null {
  const k = Math.floor(v.x + px / v.scale);
  const q = Math.floor(v.y + py / v.scale);
  return q >= 0 && q < nq && k >= 0 && k < nk ? { q, k } : null;
}

/** The rows (or columns) a view labels: every `step`-th visible one, so that labels `font` px high never overlap. */
export function labelIndices(pos: number, scale: number, px: number, n: number, font: number): number[] {
  const step = Math.max(1, 2 ** Math.ceil(Math.log2(Math.max(1, (font + 2) / scale))));
  const first = Math.max(0, Math.ceil(pos / step) * step);
  const last = Math.min(n - 1, Math.floor(pos + px / scale));
  const out: number[] = [];
  for (let i = first; i <= last; i += step) out.push(i);
  return out;
}

/**
 * Splits the bins of a band of tiles (a region across several tiles of one row of the pyramid,
 * starting at a tile boundary) into one Bins per tile, left to right. A source computed on demand
 * pays for whole rows whatever columns are asked, so the page computes a row band of tiles at once.
 */
export function splitColumns(bins: Bins, tile = TILE): Bins[] {
  const count = Math.ceil(bins.cols / tile);
  return Array.from({ length: count }, (_, t) => {
    const x0 = t * tile;
    const w = Math.min(bins.cols, x0 + tile) - x0;
    const size = bins.rows * w;
    const out: Bins = { rows: bins.rows, cols: w, max: new Float32Array(size), mean: new Float32Array(size), blank: new Uint8Array(size), peak: 0, minPositive: bins.minPositive };
    for (let y = 0; y < bins.rows; y++) {
      const from = y * bins.cols + x0;
      out.max.set(bins.max.subarray(from, from + w), y * w);
      out.mean.set(bins.mean.subarray(from, from + w), y * w);
      out.blank.set(bins.blank.subarray(from, from + w), y * w);
    }
    for (let i = 0; i < size; i++) if (out.blank[i] === 0 && out.max[i]! > out.peak) out.peak = out.max[i]!;
    return out;
  });
}

// --- thumbnails (the model view) ----------------------------------------------------------------------

/** Side of a model-view thumbnail in bins. */
export const THUMB_BINS = 64;

/**
 * Multiply-adds a page spends on all thumbnails before it samples rows instead of reading every one
 * (about 5 s of one core in JavaScript: bench/long-views.ts).
 */
export const THUMB_BUDGET = 2e9;

/**
 * Rows read per bin row of a thumbnail so that every head of a source fits `budget` multiply-adds
 * (rows × keys × headDim each, halved when causal): all of them (exact max and mean) when it fits,
 * else that many rows spread evenly over each bin (at least one).
 */
export function thumbnailRowsPerBin(numHeadsTotal: number, nq: number, nk: number, headDim: number, causal: boolean, side = THUMB_BINS, budget = THUMB_BUDGET): number {
  const f = Math.ceil(nq / side);
  const perRow = nk * headDim * (causal ? 0.5 : 1);
  const affordable = Math.floor(budget / (numHeadsTotal * perRow * Math.ceil(nq / f)));
  return Math.max(1, Math.min(f, affordable));
}

/**
 * A thumbnail of one matrix: `side` × `side` bins at most (ceil(n / side) cells each), the max and
 * mean of the unmasked cells of the rows read — every row when `rowsPerBin` is the bin height,
 * otherwise that many rows spread evenly over each bin. Streams one bin row at a time (yielding the
 * fraction done), reading runs of consecutive rows as one block.
 */
export function* thumbnailBins(read: BlockReader, nq: number, nk: number, mask: KeyRange | null, rowsPerBin: number, side = THUMB_BINS): Generator<number, Bins> {
  const fy = Math.ceil(nq / side);
  const fx = Math.ceil(nk / side);
  const rows = Math.ceil(nq / fy);
  const cols = Math.ceil(nk / fx);
  const sum = new Float64Array(rows * cols);
  const count = new Float64Array(rows * cols);
  const max = new Float32Array(rows * cols);
  let peak = 0;
  let minPositive = Infinity;
  const s = Math.max(1, Math.min(fy, rowsPerBin));
  for (let y = 0; y < rows; y++) {
    const r0 = y * fy;
    const r1 = Math.min(nq, r0 + fy);
    const picked = new Set<number>();
    for (let i = 0; i < s; i++) picked.add(Math.min(r1 - 1, r0 + Math.floor(((i + 0.5) * (r1 - r0)) / s)));
    const list = [...picked].sort((a, b) => a - b);
    // Runs of consecutive rows, each one block (limited to BLOCK_CELLS values).
    for (let i = 0; i < list.length; ) {
      let j = i + 1;
      while (j < list.length && list[j] === list[j - 1]! + 1 && (j - i + 1) * nk <= BLOCK_CELLS) j++;
      const ra = list[i]!;
      const rb = list[j - 1]! + 1;
      let lo = 0;
      let hi = nk;
      if (mask) {
        lo = Infinity;
        hi = -Infinity;
        for (let r = ra; r < rb; r++) {
          lo = Math.min(lo, mask.lo(r));
          hi = Math.max(hi, mask.hi(r));
        }
      }
      if (hi > lo) {
        const w = hi - lo;
        const block = read(ra, rb, lo, hi);
        for (let r = ra; r < rb; r++) {
          const a = mask ? Math.max(lo, mask.lo(r)) : lo;
          const b = mask ? Math.min(hi, mask.hi(r)) : hi;
          const base = (r - ra) * w - lo;
          for (let c = a; c < b; c++) {
            const v = block[base + c]!;
            const bi = y * cols + Math.floor(c / fx);
            sum[bi]! += v;
            count[bi]!++;
            if (v > max[bi]!) max[bi] = v;
            if (v > peak) peak = v;
            if (v > 0 && v < minPositive) minPositive = v;
          }
        }
      }
      i = j;
    }
    yield (y + 1) / rows;
  }
  const mean = new Float32Array(rows * cols);
  const blank = new Uint8Array(rows * cols);
  for (let i = 0; i < rows * cols; i++) {
    if (count[i]! > 0) mean[i] = sum[i]! / count[i]!;
    else blank[i] = 1;
  }
  return { rows, cols, max, mean, blank, peak, minPositive: Number.isFinite(minPositive) ? minPositive : 0 };
}

/** Runs a generator of bins to the end. */
export function runBins(it: Generator<number, Bins>): Bins {
  for (;;) {
    const r = it.next();
    if (r.done) return r.value;
  }
}
