/**
 * The native rollout kernel (src/analysis/kernels.ts on onnxruntime-node) and rollout rows on
 * demand (rollout.ts rolloutRows) against a direct float64 re-computation written here (fusion,
 * residual, row normalisation, products as plain loops), and against the JavaScript float64 path
 * for discard (whose graph is built in JavaScript either way); discard's selection of the cut
 * (kthSmallest) against a sort. Tolerances: max/min fusion and the
 * products are float64 (the result is float32: 1 ulp); mean fusion sums the heads in float32
 * (documented bound k · 2⁻²⁴ relative per fused weight).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { runtimeKernel } from '../src/analysis/kernels.js';
import { attentionRollout, attentionRolloutWith, kthSmallest, rolloutRows } from '../src/analysis/rollout.js';
import { mulberry32 as rng } from '../src/core/random.js';
import type { Trace } from '../src/core/trace.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { randomTrace } from './helpers/hand-trace.js';

const kernel = runtimeKernel(nodeRuntime, { threads: 2 });
afterAll(() => kernel.release());

/** Rollout as NumPy would do it (fuse the chosen heads, (1 − w)·F + w·I, rows / sums, R = A'_l @ R), every layer. */
function reference(trace: Trace, fusion: 'mean' | 'max' | 'min', residual: number, heads?: number[]): number[][][] {
  const s = trace.attention.self!;
  const [H, n] = s.dims;
  const hs = heads ?? Array.from({ length: H }, (_, h) => h);
  let R: number[][] | null = null;
  const out: number[][][] = [];
  for (const layer of s.layers) {
    const A = Array.from({ length: n }, (_, i) => {
      const row = Array.from({ length: n }, (_, j) => {
        const vals = hs.map((h) => layer[h * n * n + i * n + j]!);
        const f = fusion === 'mean' ? vals.reduce((a, b) => a + b, 0) / vals.length : fusion === 'max' ? Math.max(...vals) : Math.min(...vals);
        return (1 - residual) * f + (i === j ? residual : 0);
      });
      const sum = row.reduce((a, b) => a + b, 0);
      return sum > 0 ? row.map((v) => v / sum) : row;
    });
    const prev: number[][] | null = R;
    R = prev === null ? A : A.map((row) => Array.from({ length: n }, (_, j) => row.reduce((acc, a, k) => acc + a * prev[k]![j]!, 0)));
    out.push(R);
  }
  return out;
}

function expectClose(got: ArrayLike<number>, want: number[][], rel: number): void {
  const n = want.length;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const w = want[i]![j]!;
      expect(Math.abs(got[i * n + j]! - w)).toBeLessThanOrEqual(rel * Math.abs(w) + 1e-12);
    }
  }
}

describe('native rollout kernel', () => {
  const cases = [
    { fusion: 'mean', causal: false, residual: 0.5 },
    { fusion: 'mean', causal: true, residual: 0.5 },
    { fusion: 'max', causal: true, residual: 0.5 },
    { fusion: 'min', causal: false, residual: 0.3 },
    { fusion: 'mean', causal: false, residual: 0, heads: [0, 2] },
    { fusion: 'max', causal: false, residual: 1, heads: [1] },
  ] as const;
  for (const c of cases) {
    it(`matches a float64 re-computation (${JSON.stringify(c)})`, async () => {
      const trace = randomTrace(9, 4, 3, c.causal, c.fusion.length * 7 + c.residual * 10, 5);
      const heads = 'heads' in c ? [...c.heads] : undefined;
      const ref = reference(trace, c.fusion, c.residual, heads);
      const got = await attentionRolloutWith(trace, { fusion: c.fusion, residual: c.residual, heads }, kernel);
      // Float32 results: 2⁻²⁴ for the float64 steps; the float32 mean of k heads adds ≤ k · 2⁻²⁴ per weight.
      const rel = c.fusion === 'mean' ? 2e-6 : 1.2e-7;
      expect(got.layers).toHaveLength(4);
      got.layers.forEach((r, l) => expectClose(r, ref[l]!, rel));
      // The graph it returns: A'_l (the last reference layer is R, so compare A'_0 = R_0).
      expectClose(got.graph.layers[0]!, ref[0]!, c.fusion === 'mean' ? 2e-6 : 1e-15);
      expect(got.graph.discarded).toEqual([0, 0, 0, 0]);
    });
  }

  it('with discard, multiplies the graph built in JavaScript (equal to the float64 path)', async () => {
    const trace = randomTrace(12, 3, 2, true, 5, 5);
    const js = attentionRollout(trace, { discard: 0.6 });
    const native = await attentionRolloutWith(trace, { discard: 0.6 }, kernel);
    expect(native.graph.discarded).toEqual(js.graph.discarded);
    js.layers.forEach((r, l) => r.forEach((v, i) => expect(Math.abs(native.layers[l]![i]! - v)).toBeLessThanOrEqual(1.2e-7 * Math.abs(v) + 1e-12)));
  });

  it('one session serves several token counts; layer ranges and errors as the JavaScript path', async () => {
    for (const n of [5, 17]) {
      const trace = randomTrace(n, 3, 2, false, n, 5);
      const ref = reference(trace, 'max', 0.5);
      const got = await attentionRolloutWith(trace, { fusion: 'max', startLayer: 0, endLayer: 2 }, kernel);
      expectClose(got.layers[2]!, ref[2]!, 1.2e-7);
    }
    const trace = randomTrace(6, 3, 2, false, 1, 5);
    const ranged = await attentionRolloutWith(trace, { startLayer: 1, endLayer: 2 }, kernel);
    expect([ranged.startLayer, ranged.endLayer, ranged.layers.length]).toEqual([1, 2, 2]);
    await expect(attentionRolloutWith(trace, { endLayer: 3 }, kernel)).rejects.toThrow(/end layer 3 is out of range/);
    await expect(attentionRolloutWith(trace, { heads: [2] }, kernel)).rejects.toThrow(/head 2 is out of range/);
  });
});

describe('rollout rows on demand', () => {
  it("row i of the last cumulative rollout, for chosen tokens, equals the re-computation's", () => {
    for (const causal of [false, true]) {
      const trace = randomTrace(10, 4, 3, causal, causal ? 3 : 4, 5);
      const ref = reference(trace, 'mean', 0.5);
      const rows = rolloutRows(trace, [9, 0, 4]);
      [9, 0, 4].forEach((t, i) => rows[i]!.forEach((v, j) => expect(v).toBeCloseTo(ref[3]![t]![j]!, 14)));
      expect(rows[0]!.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 14);
    }
    expect(() => rolloutRows(randomTrace(4, 1, 1, false, 1, 5), [4])).toThrow(/token 4 is out of range/);
  });
});

describe('kthSmallest (discard\'s cut)', () => {
  it('equals the k-th value of a sorted copy, on random, few-valued, sorted and constant inputs', () => {
    const r = rng(11);
    for (let t = 0; t < 400; t++) {
      const n = 1 + Math.floor(r() * 70);
      const kind = t % 4;
      const a = Float64Array.from({ length: n }, (_, i) => (kind === 0 ? r() : kind === 1 ? Math.floor(r() * 3) : kind === 2 ? n - i : 0.25));
      const k = Math.floor(r() * n);
      const sorted = Array.from(a).sort((x, y) => x - y);
      expect(kthSmallest(a.slice(), k)).toBe(sorted[k]);
    }
    expect(() => kthSmallest(new Float64Array(3), 3)).toThrow(/rank 3 outside 0–2/);
  });
});
