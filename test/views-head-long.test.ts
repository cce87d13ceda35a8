/**
 * The long head view's plain parts: which rows a scrolled strip renders, centring a row, the top-k
 * keys of each row (against a sort of the row), and the token search (text and #position).
 */
import { describe, expect, it } from 'vitest';
import { STRIP_OVERSCAN, STRIP_ROW, scrollToRow, searchTokens, stripRange, topKeys } from '../src/views/layout/head-long.js';
import { mulberry32 } from '../src/core/random.js';

describe('long head view', () => {
  it('renders the rows in view and the overscan either side, clamped to the strip', () => {
    expect(stripRange(0, 10 * STRIP_ROW, 8192)).toEqual({ first: 0, last: 10 + STRIP_OVERSCAN });
    expect(stripRange(1000 * STRIP_ROW, 40 * STRIP_ROW, 8192)).toEqual({ first: 1000 - STRIP_OVERSCAN, last: 1040 + STRIP_OVERSCAN });
    expect(stripRange(8190 * STRIP_ROW, 40 * STRIP_ROW, 8192).last).toBe(8192);
  });

  it('centres a row, clamped at both ends', () => {
    expect(scrollToRow(4000, 360, 8192)).toBe(4000.5 * STRIP_ROW - 180);
    expect(scrollToRow(0, 360, 8192)).toBe(0);
    expect(scrollToRow(8191, 360, 8192)).toBe(8192 * STRIP_ROW - 360);
  });

  it('top-k keys of each row: the k largest weights, strongest first, lower key first on ties; zeros never listed', () => {
    const r = mulberry32(4);
    const rows = 5;
    const nk = 300;
    const block = Float32Array.from({ length: rows * nk }, () => (r() < 0.3 ? 0 : Math.round(r() * 50) / 50));
    const { index, value } = topKeys(block, rows, nk, 7);
    for (let q = 0; q < rows; q++) {
      const sorted = Array.from({ length: nk }, (_, k) => k)
        .filter((k) => block[q * nk + k]! > 0)
        .sort((a, b) => block[q * nk + b]! - block[q * nk + a]! || a - b)
        .slice(0, 7);
      expect(Array.from(index.subarray(q * 7, q * 7 + 7))).toEqual(sorted);
      expect(Array.from(value.subarray(q * 7, q * 7 + 7))).toEqual(sorted.map((k) => block[q * nk + k]!));
    }
    const sparse = topKeys(Float32Array.from([0, 0.5, 0, 0]), 1, 4, 3);
    expect(Array.from(sparse.index)).toEqual([1, -1, -1]);
  });

  it('search: labels containing the text (any case), a number also as a position, #n as a position only', () => {
    const labels = ['<s>', 'The', 'cat', 'the', 'theme', '12', 'x'];
    expect(searchTokens(labels, 'the')).toEqual([1, 3, 4]);
    expect(searchTokens(labels, '  ')).toEqual([]);
    expect(searchTokens(labels, '#2')).toEqual([2]);
    expect(searchTokens(labels, '12')).toEqual([5]);
    expect(searchTokens(labels, '5')).toEqual([5]);
    expect(searchTokens(labels, '#99')).toEqual([]);
  });
});
