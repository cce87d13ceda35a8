/**
 * src/analysis/rollout.ts: attention rollout against a direct float64 re-computation written here
 * (fusion, residual, row normalisation, matrix products as plain loops), a hand-computed case, and
 * the discard ratio zeroing exactly the smallest off-diagonal, unmasked fused weights.
 */
import { describe, expect, it } from 'vitest';
import { attentionGraph, attentionRollout, fusedAttention, rolloutOfMatrices } from '../src/analysis/rollout.js';
import type { Trace } from '../src/core/trace.js';
import { handTrace, randomTrace } from './helpers/hand-trace.js';

/** The rollout as NumPy would do it: fuse, 0.5·A + 0.5·I, rows / sums, R = A'_l @ R. */
function referenceRollout(trace: Trace, fusion: 'mean' | 'max' | 'min', residual = 0.5): number[][][] {
  const s = trace.attention.self!;
  const [H, n] = s.dims;
  let R: number[][] | null = null;
  const out: number[][][] = [];
  for (const layer of s.layers) {
    const A: number[][] = [];
    for (let i = 0; i < n; i++) {
      A.push([]);
      for (let j = 0; j < n; j++) {
        const vals = Array.from({ length: H }, (_, h) => layer[h * n * n + i * n + j]!);
        const f = fusion === 'mean' ? vals.reduce((a, b) => a + b, 0) / H : fusion === 'max' ? Math.max(...vals) : Math.min(...vals);
        A[i]!.push((1 - residual) * f + (i === j ? residual : 0));
      }
      const sum = A[i]!.reduce((a, b) => a + b, 0);
      A[i] = A[i]!.map((v) => v / sum);
    }
    if (R === null) R = A;
    else {
      const prev: number[][] = R;
      R = A.map((row) => Array.from({ length: n }, (_, j) => row.reduce((acc, a, k) => acc + a * prev[k]![j]!, 0)));
    }
    out.push(R);
  }
  return out;
}

describe('attention rollout', () => {
  for (const [fusion, causal] of [['mean', false], ['max', true], ['min', false], ['mean', true]] as const) {
    it(`matches a direct float64 re-computation (${fusion}, ${causal ? 'causal' : 'bidirectional'})`, () => {
      const trace = randomTrace(7, 4, 3, causal, fusion.length * 13 + (causal ? 1 : 0));
      const ref = referenceRollout(trace, fusion);
      const got = attentionRollout(trace, { fusion });
      expect(got.layers.length).toBe(4);
      got.layers.forEach((m, l) => {
        for (let i = 0; i < 7; i++) {
          let rowSum = 0;
          for (let j = 0; j < 7; j++) {
            expect(m[i * 7 + j]).toBeCloseTo(ref[l]![i]![j]!, 6);
            rowSum += m[i * 7 + j]!;
            if (causal && j > i) expect(m[i * 7 + j]).toBe(0);
          }
          expect(rowSum).toBeCloseTo(1, 5);
        }
      });
    });
  }

  it('start and end layers, and a residual weight', () => {
    const trace = randomTrace(5, 4, 2, false, 99);
    const ref = referenceRollout({ ...trace, attention: { self: { dims: trace.attention.self!.dims, layers: trace.attention.self!.layers.slice(1, 3) } } }, 'mean', 0.3);
    const got = attentionRollout(trace, { startLayer: 1, endLayer: 2, residual: 0.3 });
    expect([got.startLayer, got.endLayer, got.layers.length]).toEqual([1, 2, 2]);
    for (let i = 0; i < 25; i++) expect(got.layers[1]![i]).toBeCloseTo(ref[1]![Math.floor(i / 5)]![i % 5]!, 6);
    expect(() => attentionRollout(trace, { startLayer: 3, endLayer: 1 })).toThrow(/end layer 1 is before start layer 3/);
    expect(() => attentionRollout(trace, { endLayer: 4 })).toThrow(/end layer 4 is out of range/);
    expect(() => attentionRollout(trace, { residual: 1.5 })).toThrow(/residual: expected a weight in \[0, 1\]/);
    expect(() => attentionRollout(trace, { discard: 1 })).toThrow(/discard: expected a share in \[0, 1\)/);
  });

  it('a hand case: two tokens, two layers', () => {
    // A = [[1, 0], [0.5, 0.5]] in both layers; A' = 0.5·A + 0.5·I = [[1, 0], [0.25, 0.75]];
    // R = A' · A' = [[1, 0], [0.25 + 0.75·0.25, 0.75·0.75]] = [[1, 0], [0.4375, 0.5625]].
    const trace = handTrace(['a', 'b'], { layers: 2, heads: 1, weight: (_l, _h, q, k) => (k <= q ? 1 : 0) });
    const r = attentionRollout(trace);
    expect(Array.from(r.layers[0]!)).toEqual([1, 0, 0.25, 0.75]);
    expect(Array.from(r.layers[1]!)).toEqual([1, 0, 0.4375, 0.5625]);
    expect(Array.from(rolloutOfMatrices([[1, 0, 0.25, 0.75], [1, 0, 0.25, 0.75]], 2)[1]!)).toEqual([1, 0, 0.4375, 0.5625]);
  });

  it('discard really discards: the smallest off-diagonal unmasked fused weights become 0', () => {
    // One head, 3 tokens, bidirectional: off-diagonal weights (row-normalised) are distinct.
    const w = [
      [5, 1, 2],
      [3, 6, 4],
      [7, 0.5, 8],
    ];
    const trace = handTrace(['a', 'b', 'c'], { layers: 1, heads: 1, weight: (_l, _h, q, k) => w[q]![k]! });
    const fused = fusedAttention(trace).layers[0]!;
    const offDiag = [1, 2, 3, 5, 6, 7].sort((a, b) => fused[a]! - fused[b]!);
    const g = attentionGraph(trace, { discard: 0.5, residual: 0 });
    expect(g.discarded).toEqual([3]);
    const m = g.layers[0]!;
    for (const f of offDiag.slice(0, 3)) expect(m[f]).toBe(0);
    for (const f of [...offDiag.slice(3), 0, 4, 8]) expect(m[f]).toBeGreaterThan(0);
    // What is left is renormalised per row.
    for (let i = 0; i < 3; i++) expect(m[i * 3] + m[i * 3 + 1]! + m[i * 3 + 2]!).toBeCloseTo(1, 12);
    // Causal: the masked upper triangle is not counted (3 candidates below the diagonal, floor(0.7·3) = 2 zeroed).
    const causal = randomTrace(3, 1, 2, true, 5);
    const gc = attentionGraph(causal, { discard: 0.7, residual: 0 });
    expect(gc.discarded).toEqual([2]);
    const lower = [3, 6, 7].map((f) => gc.layers[0]![f]!);
    expect(lower.filter((v) => v === 0).length).toBe(2);
    // The diagonal is never discarded, even when it is the smallest weight.
    const tiny = handTrace(['a', 'b'], { layers: 1, heads: 1, weight: (_l, _h, q, k) => (q === k ? 0.01 : 1) });
    const gt = attentionGraph(tiny, { discard: 0.5, residual: 0 });
    expect(gt.layers[0]![0]).toBe(1); // row 0: its only off-diagonal weight (the smaller of the two) went
    expect(gt.layers[0]![1]).toBe(0);
    // Ties at the cut: the lower flat index goes first (uniform rows: off-diagonal flat indices 1, 2, 3, 5, 6, 7).
    const flat = handTrace(['a', 'b', 'c'], { layers: 1, heads: 1, weight: () => 1 });
    const gf = attentionGraph(flat, { discard: 0.5, residual: 0 });
    expect(Array.from(gf.layers[0]!).map((v) => (v === 0 ? 0 : 1))).toEqual([1, 0, 0, 0, 1, 1, 1, 1, 1]);
  });

  it('refuses cross attention and partial query rows', () => {
    const trace = randomTrace(3, 1, 1, false, 1);
    expect(() => attentionRollout({ ...trace, attention: { cross: trace.attention.self! } }, { stack: 'cross' })).toThrow(/cross stack/);
    const partial: Trace = { ...trace, attention: { self: { dims: [1, 1, 3], layers: [new Float32Array(3).fill(1 / 3)] } } };
    expect(() => attentionRollout(partial)).toThrow(/1 queries × 3 keys/);
  });
});
