/**
 * The saliency tab's gradient-weighted rollout at the target position (analysis/attribution.ts
 * gradientRolloutRow, which attentionAttributions uses so that 512 tokens take milliseconds, not
 * seconds) against the definition written out here in float64: Ā_l = mean over heads of
 * max(0, α ⊙ ∂T/∂α), R = I, R ← R + Ā_l·R for each layer, then row p of R.
 */
import { describe, expect, it } from 'vitest';
import { gradientRolloutRow } from '../src/analysis/attribution.js';
import { mulberry32 } from '../src/core/random.js';
import type { LayerStack, Trace } from '../src/core/trace.js';

/** Causal attention rows (softmax of random scores over keys ≤ query) and signed random gradients. */
function stacks(layers: number, heads: number, n: number, seed: number): { attention: LayerStack; gradient: LayerStack } {
  const r = mulberry32(seed);
  const att: Float32Array[] = [];
  const grad: Float32Array[] = [];
  for (let l = 0; l < layers; l++) {
    const a = new Float32Array(heads * n * n);
    const g = new Float32Array(heads * n * n);
    for (let h = 0; h < heads; h++) {
      for (let q = 0; q < n; q++) {
        let z = 0;
        for (let k = 0; k <= q; k++) z += a[(h * n + q) * n + k] = Math.exp(3 * r());
        for (let k = 0; k <= q; k++) a[(h * n + q) * n + k]! /= z;
        for (let k = 0; k < n; k++) g[(h * n + q) * n + k] = r() * 2 - 1;
      }
    }
    att.push(a);
    grad.push(g);
  }
  return { attention: { dims: [heads, n, n], layers: att }, gradient: { dims: [heads, n, n], layers: grad } };
}

/** Row p of R by the definition, full n × n products in float64. */
function definition(attention: LayerStack, gradient: LayerStack, p: number): number[] {
  const [heads, n] = attention.dims;
  let R: number[][] = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? 1 : 0)));
  attention.layers.forEach((a, l) => {
    const g = gradient.layers[l]!;
    const A = Array.from({ length: n }, (_, i) =>
      Array.from({ length: n }, (_, j) => {
        let s = 0;
        for (let h = 0; h < heads; h++) s += Math.max(0, a[(h * n + i) * n + j]! * g[(h * n + i) * n + j]!);
        return s / heads;
      }),
    );
    R = R.map((row, i) => row.map((v, j) => v + A[i]!.reduce((s, x, t) => s + x * R[t]![j]!, 0)));
  });
  return R[p]!;
}

describe('gradient-weighted rollout at one position', () => {
  for (const [layers, heads, n, seed] of [
    [1, 1, 5, 1],
    [3, 2, 9, 2],
    [4, 3, 16, 3],
  ] as const) {
    it(`equals row p of the full rollout (${layers} layers, ${heads} heads, ${n} tokens), every p`, () => {
      const { attention, gradient } = stacks(layers, heads, n, seed);
      for (let p = 0; p < n; p++) {
        const got = gradientRolloutRow(attention, gradient, p);
        const want = definition(attention, gradient, p);
        for (let j = 0; j < n; j++) expect(Math.abs(got[j]! - want[j]!)).toBeLessThan(1e-12 * Math.max(1, Math.abs(want[j]!)));
      }
    });
  }

  it('refuses a position out of range', () => {
    const { attention, gradient } = stacks(1, 1, 4, 9);
    expect(() => gradientRolloutRow(attention, gradient, 4)).toThrow(/position 4 is out of range \(0–3\)/);
  });
});

describe('the analysis worker', () => {
  it('runs a task off the main thread, and a task whose signal fires is refused with its worker gone', async () => {
    const { runInWorker, runningWorkers } = await import('../src/server/analysis-worker.js');
    const n = 4;
    // One head: attention rows by hand, gradient 1 everywhere; rollout row 3 = e_3 + Ā row 3 = [.25, .25, .25, 1.25].
    const a = new Float32Array([1, 0, 0, 0, 0.5, 0.5, 0, 0, 0.2, 0.3, 0.5, 0, 0.25, 0.25, 0.25, 0.25]);
    const trace: Trace = {
      model: { name: 'x', modelType: 'gpt2', numLayers: 1, numHeads: 1, numKeyValueHeads: 1, headDim: 4 },
      tokens: [0, 1, 2, 3].map((i) => ({ id: i, text: 't', start: 0, end: 0, special: false, segment: 0, word: null })),
      attention: { self: { dims: [1, n, n] as [number, number, number], layers: [a] } },
      attributions: { target: { kind: 'token', position: 3, tokenId: 1, value: 0 }, scores: {}, attentionGrad: { self: { dims: [1, n, n] as [number, number, number], layers: [new Float32Array(16).fill(1)] } } },
    };
    const out = await runInWorker('attentionAttributions', trace);
    expect(Array.from(out.gradientRollout!.scores)).toEqual([0.25, 0.25, 0.25, 1.25]);
    // attention × gradient: column sums of α.
    expect(Array.from(out.attentionXGradient!.scores).map((v) => Math.round(v * 1e6) / 1e6)).toEqual([1.95, 1.05, 0.75, 0.25]);
    const c = new AbortController();
    const p = runInWorker('attentionAttributions', trace, { signal: c.signal });
    c.abort();
    await expect(p).rejects.toThrow(/went away/);
    expect(runningWorkers()).toBe(0);
  });
});
