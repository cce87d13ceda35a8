/**
 * The heatmap's tile pyramid over an AttentionSource read in blocks: bins (max and mean of the
 * unmasked cells) against a float64 recomputation of softmax(q·k·scale) from the same queries and
 * keys, level 0 equal to the exact weights, masked regions never read, blocks never larger than
 * BLOCK_CELLS, the same bins whatever the block size; and the viewport arithmetic (fit, zoom about a
 * point, clamping, levels, visible tiles, hit-testing, label thinning) on hand-computed cases.
 */
import { describe, expect, it } from 'vitest';
import { denseAttentionSource } from '../src/core/attention-source.js';
import {
  BLOCK_CELLS,
  MAX_CELL,
  TILE,
  binAll,
  binRegion,
  blockReader,
  cellAtPoint,
  clampView,
  fitView,
  isLongSource,
  keyRange,
  labelIndices,
  levelFor,
  overviewRegion,
  runBins,
  splitColumns,
  thumbnailBins,
  thumbnailRowsPerBin,
  tileRegion,
  topLevel,
  viewOf,
  visibleTiles,
  zoomAt,
} from '../src/views/layout/heatmap-tiles.js';
import { qkSource } from './helpers/qk-source.js';

/** The whole float64 matrix of one head from the source's reference (independent of block()). */
function referenceMatrix(src: ReturnType<typeof qkSource>, layer: number, head: number): Float64Array {
  const n = src.numQueries;
  const out = new Float64Array(n * n);
  for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) out[q * n + k] = src.reference(layer, head, q, k);
  return out;
}

/** Max and mean of the visible cells of bin (y, x) of side f, from a float64 matrix and a visibility rule. */
function refBin(m: Float64Array, n: number, f: number, y: number, x: number, visible: (q: number, k: number) => boolean) {
  let max = 0;
  let sum = 0;
  let count = 0;
  for (let q = y * f; q < Math.min(n, (y + 1) * f); q++) {
    for (let k = x * f; k < Math.min(n, (x + 1) * f); k++) {
      if (!visible(q, k)) continue;
      max = Math.max(max, m[q * n + k]!);
      sum += m[q * n + k]!;
      count++;
    }
  }
  return { max, mean: count ? sum / count : 0, blank: count === 0 };
}

describe('heatmap tiles: bins over a source read in blocks', () => {
  const n = 150;
  const src = qkSource({ tokens: n, layers: 2, heads: 3, headDim: 8, causal: true, seed: 5 });
  const ref = referenceMatrix(src, 1, 2);
  const mask = keyRange(src.terms, 'self', 1, n, n);

  it('the overview: each bin the max and the mean of its unmasked cells; bins above the diagonal blank', () => {
    const region = overviewRegion(n, n, 32); // 150 tokens at most 32 bins a side: f = 8
    expect(region.f).toBe(8);
    const bins = binAll(blockReader(src, 1, 2), region, mask);
    expect([bins.rows, bins.cols]).toEqual([19, 19]);
    let peak = 0;
    for (let y = 0; y < bins.rows; y++) {
      for (let x = 0; x < bins.cols; x++) {
        const r = refBin(ref, n, 8, y, x, (q, k) => k <= q);
        const i = y * bins.cols + x;
        expect(bins.blank[i]).toBe(r.blank ? 1 : 0);
        expect(bins.max[i]).toBeCloseTo(r.max, 6);
        expect(bins.mean[i]).toBeCloseTo(r.mean, 6);
        peak = Math.max(peak, r.max);
      }
    }
    expect(bins.peak).toBeCloseTo(peak, 6);
  });

  it('the same bins whatever the block size (rows and columns split across blocks), and no block larger than asked', () => {
    const region = tileRegion(2, 0, 0, n, n, 16); // 16 × 16 bins of 4 × 4: rows and columns 0–64
    const big = binAll(blockReader(src, 1, 2), region, mask);
    const sizes: number[] = [];
    const read = blockReader(src, 1, 2);
    const small = binAll((r0, r1, c0, c1) => {
      sizes.push((r1 - r0) * (c1 - c0));
      return read(r0, r1, c0, c1);
    }, region, mask, 40);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(40);
    expect(Array.from(small.max)).toEqual(Array.from(big.max));
    for (let i = 0; i < big.mean.length; i++) expect(small.mean[i]).toBeCloseTo(big.mean[i]!, 12);
    expect(Array.from(small.blank)).toEqual(Array.from(big.blank));
  });

  it('level 0 is the exact weights (max = mean = the weight); masked cells blank', () => {
    const region = tileRegion(0, 0, 0, n, n, 64);
    const bins = binAll(blockReader(src, 1, 2), region, mask);
    expect([bins.rows, bins.cols]).toEqual([64, 64]);
    for (let q = 0; q < 64; q++) {
      for (let k = 0; k < 64; k++) {
        const i = q * 64 + k;
        expect(bins.blank[i]).toBe(k > q ? 1 : 0);
        if (k <= q) {
          expect(Math.abs(bins.max[i]! - ref[q * n + k]!)).toBeLessThan(1e-6);
          expect(bins.mean[i]).toBe(bins.max[i]);
        }
      }
    }
  });

  it('a tile at the edge is clipped to the matrix', () => {
    const region = tileRegion(1, 1, 0, n, n, 64); // rows 128–150, columns 0–128, bins of 2
    expect(region).toEqual({ r0: 128, r1: 150, c0: 0, c1: 128, f: 2 });
    const bins = binAll(blockReader(src, 1, 2), region, mask);
    expect([bins.rows, bins.cols]).toEqual([11, 64]);
    const r = refBin(ref, n, 2, 64 + 10, 5, (q, k) => k <= q);
    expect(bins.max[10 * 64 + 5]).toBeCloseTo(r.max, 6);
  });

  it('a row band of tiles computed at once splits into the tiles computed one by one', () => {
    const read = blockReader(src, 1, 2);
    const band = binAll(read, { ...tileRegion(1, 1, 0, n, n, 32), c1: n }, mask);
    const parts = splitColumns(band, 32);
    expect(parts).toHaveLength(3); // 150 columns in bins of 2: 75 bins, tiles of 32 bins
    parts.forEach((p, tx) => {
      const one = binAll(read, tileRegion(1, 1, tx, n, n, 32), mask);
      expect([p.rows, p.cols]).toEqual([one.rows, one.cols]);
      expect(Array.from(p.max)).toEqual(Array.from(one.max));
      expect(Array.from(p.blank)).toEqual(Array.from(one.blank));
      for (let i = 0; i < p.mean.length; i++) expect(p.mean[i]).toBeCloseTo(one.mean[i]!, 12);
      expect(p.peak).toBe(one.peak);
    });
  });

  it('streaming a causal matrix never reads blocks the mask hides, and yields its progress', () => {
    const big = qkSource({ tokens: 1024, layers: 1, heads: 1, headDim: 4, causal: true, seed: 2 });
    const it = binRegion(blockReader(big, 0, 0), overviewRegion(1024, 1024, 64), keyRange(big.terms, 'self', 0, 1024, 1024), 16 * 1024);
    const progress: number[] = [];
    for (let r = it.next(); !r.done; r = it.next()) progress.push(r.value);
    expect(progress.at(-1)).toBe(1);
    expect(progress).toEqual([...progress].sort((a, b) => a - b));
    // Blocks of 16 rows read the columns up to the diagonal only: strip s reads 16 × 16 (s + 1) cells.
    let expected = 0;
    for (let s = 0; s < 64; s++) expected += 16 * 16 * (s + 1);
    expect(big.reads.cells).toBe(expected);
    const windowed = qkSource({ tokens: 1024, layers: 1, heads: 1, headDim: 4, causal: true, window: 32, seed: 2 });
    binAll(blockReader(windowed, 0, 0), { r0: 0, r1: 1024, c0: 0, c1: 1024, f: 16 }, keyRange(windowed.terms, 'self', 0, 1024, 1024), 16 * 16);
    // Bins of 16 × 16 one block each: only the blocks on the band are read (≤ 3 per bin row), not 64 per row.
    expect(windowed.reads.blocks).toBeLessThanOrEqual(3 * 64);
  });

  it('mean and max over heads: the float64 mean and max of the heads', () => {
    const m = [0, 1, 2].map((h) => referenceMatrix(src, 0, h));
    const mean = blockReader(src, 0, 'mean')(100, 102, 40, 60);
    const max = blockReader(src, 0, 'max')(100, 102, 40, 60);
    for (let r = 0; r < 2; r++) {
      for (let c = 0; c < 20; c++) {
        const vals = m.map((x) => x[(100 + r) * n + 40 + c]!);
        expect(mean[r * 20 + c]).toBeCloseTo((vals[0]! + vals[1]! + vals[2]!) / 3, 6);
        expect(max[r * 20 + c]).toBeCloseTo(Math.max(...vals), 6);
      }
    }
  });

  it('a dense source bins as the matrix it holds (hand-computed 4 × 4, no mask)', () => {
    const values = Float32Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    const dense = denseAttentionSource('self', { dims: [1, 4, 4], layers: [values] });
    const bins = binAll(blockReader(dense, 0, 0), { r0: 0, r1: 4, c0: 0, c1: 4, f: 2 }, null);
    expect(Array.from(bins.max)).toEqual([6, 8, 14, 16]);
    expect(Array.from(bins.mean)).toEqual([3.5, 5.5, 11.5, 13.5]);
    expect(bins.minPositive).toBe(1);
    expect(isLongSource(dense)).toBe(false);
    expect(isLongSource({ onDemand: false, numQueries: 4096, numKeys: 4096 })).toBe(true);
    expect(isLongSource({ onDemand: true, numQueries: 10, numKeys: 10 })).toBe(true);
  });

  it('key ranges: causal, windowed, cached queries (the last nq of nk positions), cross attention unshifted', () => {
    const terms = { scale: [1, 1], causal: true, window: [null, 4] };
    const a = keyRange(terms, 'self', 0, 10, 10)!;
    expect([a.lo(3), a.hi(3)]).toEqual([0, 4]);
    const w = keyRange(terms, 'self', 1, 10, 10)!;
    expect([w.lo(6), w.hi(6)]).toEqual([3, 7]);
    const cached = keyRange(terms, 'decoder', 0, 2, 10)!;
    expect([cached.lo(0), cached.hi(0)]).toEqual([0, 9]);
    expect(keyRange({ scale: [1], causal: false, window: [null] }, 'cross', 0, 2, 10)).toBeNull();
    expect(keyRange(undefined, 'self', 0, 2, 2)).toBeNull();
  });
});

describe('model-view thumbnails streamed from a source', () => {
  const n = 150;
  const src = qkSource({ tokens: n, layers: 1, heads: 2, headDim: 8, causal: true, seed: 9 });
  const ref = referenceMatrix(src, 0, 1);
  const mask = keyRange(src.terms, 'self', 0, n, n);

  it('every row read: the exact max and mean of each bin (the same bins as the tile pyramid)', () => {
    const thumb = runBins(thumbnailBins(blockReader(src, 0, 1), n, n, mask, 5, 32)); // 150 / 32 → bins of 5
    const tile = binAll(blockReader(src, 0, 1), { r0: 0, r1: n, c0: 0, c1: n, f: 5 }, mask);
    expect([thumb.rows, thumb.cols]).toEqual([30, 30]);
    expect(Array.from(thumb.max)).toEqual(Array.from(tile.max));
    expect(Array.from(thumb.blank)).toEqual(Array.from(tile.blank));
    for (let i = 0; i < thumb.mean.length; i++) expect(thumb.mean[i]).toBeCloseTo(tile.mean[i]!, 12);
  });

  it('sampled rows: one row per bin, the middle one (floor(0.5 · 5) = 2), its cells only', () => {
    const thumb = runBins(thumbnailBins(blockReader(src, 0, 1), n, n, mask, 1, 32));
    for (const [y, x] of [[0, 0], [7, 3], [29, 29], [29, 0], [10, 12]] as const) {
      const r = y * 5 + 2;
      let max = 0;
      let sum = 0;
      let count = 0;
      for (let k = x * 5; k < x * 5 + 5; k++) {
        if (k > r) continue;
        max = Math.max(max, ref[r * n + k]!);
        sum += ref[r * n + k]!;
        count++;
      }
      expect(thumb.blank[y * 30 + x]).toBe(count ? 0 : 1);
      expect(thumb.max[y * 30 + x]).toBeCloseTo(max, 6);
      expect(thumb.mean[y * 30 + x]).toBeCloseTo(count ? sum / count : 0, 6);
    }
  });

  it('rows per bin: every row when the budget allows it, fewer (at least one) when it does not', () => {
    // 8 heads × 2,048² / 2 × 16 = 2.7e8 multiply-adds: within 2e9, every row (bins of 32).
    expect(thumbnailRowsPerBin(8, 2048, 2048, 16, true)).toBe(32);
    // 8 heads at 8,192: 4.3e9 > 2e9; a row costs 8,192 · 16 / 2 per head, 64 bin rows: 2e9 / (8 · 65,536 · 64) = 59.6 → 59 of 128.
    expect(thumbnailRowsPerBin(8, 8192, 8192, 16, true)).toBe(59);
    // 16 × 32 heads × 8,192 keys × 64 / 2 per row: 2e9 / (512 · 262,144 · 64 bin rows) → 0 → at least 1.
    expect(thumbnailRowsPerBin(512, 8192, 8192, 64, true)).toBe(1);
    expect(thumbnailRowsPerBin(144, 2048, 2048, 64, false)).toBe(Math.floor(2e9 / (144 * 2048 * 64 * 64)));
  });
});

describe('heatmap tiles: the viewport', () => {
  const n = 8192;
  const w = 800;
  const h = 600;

  it('fits the whole matrix, centred on the axis it does not fill', () => {
    const v = fitView(n, n, w, h);
    expect(v.scale).toBeCloseTo(600 / 8192, 12);
    expect(v.y).toBeCloseTo(0, 9);
    // 800 px show 800 / scale cells across; the matrix is centred: x = −(shown − n) / 2.
    expect(v.x).toBeCloseTo(-((800 / v.scale - n) / 2), 6);
  });

  it('zooms about a point: the cell under the pointer stays under it; never past MAX_CELL or out to less than fit', () => {
    const v0 = fitView(n, n, w, h);
    const px = 500;
    const py = 200;
    const before = cellAtPoint(v0, px, py, n, n)!;
    const v1 = zoomAt(v0, 8, px, py, n, n, w, h);
    expect(v1.scale).toBeCloseTo(v0.scale * 8, 12);
    const cx0 = v0.x + px / v0.scale;
    const cx1 = v1.x + px / v1.scale;
    expect(cx1).toBeCloseTo(cx0, 6);
    expect(cellAtPoint(v1, px, py, n, n)).toEqual(before);
    expect(zoomAt(v1, 1e9, px, py, n, n, w, h).scale).toBe(MAX_CELL);
    expect(zoomAt(v1, 1e-9, px, py, n, n, w, h).scale).toBeCloseTo(v0.scale, 12);
  });

  it('clamps pans to the matrix', () => {
    const v = clampView({ scale: 10, x: -500, y: 1e6 }, n, n, w, h);
    expect(v.x).toBe(0);
    expect(v.y).toBe(n - h / 10);
  });

  it('shows a block: rows 4096–4160 × keys 100–164 fill the smaller side, centred', () => {
    const v = viewOf(4096, 4160, 100, 164, n, n, w, h);
    expect(v.scale).toBeCloseTo(600 / 64, 12);
    expect(cellAtPoint(v, w / 2, h / 2, n, n)).toEqual({ q: 4128, k: 132 });
    // Past MAX_CELL a small block is shown at MAX_CELL.
    expect(viewOf(10, 11, 10, 11, n, n, w, h).scale).toBe(MAX_CELL);
  });

  it('levels: tile pixels no smaller than device pixels, between 0 and the top', () => {
    const top = topLevel(n, n);
    expect(top).toBe(4); // 8192 / 16 = 512 bins
    expect(levelFor(600 / 8192, 1, top)).toBe(3); // 13.65 cells per pixel → 8
    expect(levelFor(600 / 8192, 2, top)).toBe(2); // 6.8 → 4
    expect(levelFor(1, 1, top)).toBe(0);
    expect(levelFor(1e-6, 1, top)).toBe(top);
  });

  it('visible tiles: the ones the view covers, the centre one first', () => {
    const v = viewOf(1000, 1100, 3000, 3100, n, n, 512, 512);
    const tiles = visibleTiles(v, 512, 512, 0, n, n);
    // 512 / 5.12 = 100 cells: rows 1000–1100 (tile 3 and 4 of 256), keys 3000–3100 (tile 11 and 12).
    expect(tiles.map((t) => `${t.ty},${t.tx}`).sort()).toEqual(['3,11', '4,11', '3,12', '4,12'].sort());
    // The view centre (1050, 3050) is nearest the centre of tile (4, 11) (1152, 2944).
    expect(tiles[0]).toEqual({ ty: 4, tx: 11 });
    // The whole matrix at level 4: tiles span 4,096 cells, 2 × 2 of them.
    expect(visibleTiles(fitView(n, n, w, h), w, h, 4, n, n)).toHaveLength(4);
    expect(TILE).toBe(256);
  });

  it('labels: every step-th row so that labels never overlap, all at full zoom', () => {
    expect(labelIndices(10, 20, 100, n, 12)).toEqual([10, 11, 12, 13, 14, 15]);
    const thin = labelIndices(0, 3, 300, n, 12);
    expect(thin[1]! - thin[0]!).toBe(8); // 14 px labels over 3 px rows: every 8th (a power of two)
    expect(thin.every((i) => i % 8 === 0)).toBe(true);
    expect(labelIndices(8180, 40, 800, n, 12).at(-1)).toBe(n - 1);
  });

  it('BLOCK_CELLS keeps one block at 4 MB of float32', () => {
    expect(BLOCK_CELLS * 4).toBe(4 * 1024 * 1024);
  });
});
