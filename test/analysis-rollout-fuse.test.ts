/**
 * Head fusion (rollout.ts fuseHeads) on the WebAssembly SIMD kernel (from 65,536 weights; below it,
 * JavaScript): mean, max and min against a float64 re-computation written here (heads summed in
 * the given order, then divided), entry for entry and bit for bit, on layers of odd and even size,
 * every head or a subset in another order; the same values below the kernel's threshold.
 */
import { describe, expect, it } from 'vitest';
import { fuseHeads } from '../src/analysis/rollout.js';
import { headKernelStatus } from '../src/analysis/wasm/head-kernel.js';
import { mulberry32 } from '../src/core/random.js';

function layer(H: number, n: number, seed: number): Float32Array {
  const r = mulberry32(seed);
  // Softmax-like values with exact zeros and ties.
  return Float32Array.from({ length: H * n * n }, () => (r() < 0.1 ? 0 : r() < 0.05 ? 0.25 : Math.fround(r() ** 3)));
}

function reference(w: Float32Array, n: number, heads: readonly number[], how: 'mean' | 'max' | 'min'): Float64Array {
  const size = n * n;
  const out = new Float64Array(size);
  for (let i = 0; i < size; i++) {
    const vals = heads.map((h) => w[h * size + i]!);
    if (how === 'mean') {
      let s = 0;
      for (const v of vals) s += v;
      out[i] = s / heads.length;
    } else out[i] = how === 'max' ? Math.max(...vals) : Math.min(...vals);
  }
  return out;
}

describe('fuseHeads', () => {
  it('the kernel runs here', () => expect(headKernelStatus().available).toBe(true));
  for (const n of [161, 170, 9, 10]) {
    for (const how of ['mean', 'max', 'min'] as const) {
      it(`${how} over ${n} × ${n} (${n * n * 4 >= 65536 ? 'kernel' : 'JavaScript'}): the float64 re-computation, bit for bit`, () => {
        const H = 4;
        const w = layer(H, n, n * 7 + how.length);
        for (const heads of [undefined, [2, 0, 3]]) {
          const got = fuseHeads(w, H, n, n, how, heads);
          const want = reference(w, n, heads ?? [0, 1, 2, 3], how);
          expect(got.length).toBe(want.length);
          let same = true;
          for (let i = 0; i < want.length; i++) if (!Object.is(got[i], want[i])) same = false;
          expect(same).toBe(true);
        }
      });
    }
  }
});
