/**
 * src/analysis/compare.ts: Jensen–Shannon divergence against a hand computation and against the
 * entropy form H(M) − ½H(P) − ½H(Q) written here in float64; a real trace compared with itself
 * reports exactly zero; a copy with chosen heads perturbed by known amounts ranks exactly those
 * heads first, in the order of the perturbation; two heads of one trace; two models with
 * different tokenisers (the BERT and GPT-2 fixtures) aligned through the words of one text, the
 * word × word matrices checked against loops over each model's token matrix; models of different
 * shapes compared at equal relative depth.
 */
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { comparisonCsv, compareHeads, compareTraces, jsDivergence, meanRowJsDivergence } from '../src/analysis/compare.js';
import type { Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';

const ROOT = join(import.meta.dirname, '..');
const TEXT = 'Hello world, the cat sat on the mat. It was tired!';

async function traceOf(dir: string | undefined, text: string): Promise<Trace> {
  const model = await loadModel(dir === undefined ? undefined : join(ROOT, 'test', 'fixtures', dir));
  try {
    return await model.trace(text);
  } finally {
    await model.dispose();
  }
}

/** JS in bits from entropies: H(M) − (H(P) + H(Q)) / 2, float64. */
function jsByEntropy(p: readonly number[], q: readonly number[]): number {
  const sp = p.reduce((a, b) => a + b, 0);
  const sq = q.reduce((a, b) => a + b, 0);
  const H = (v: readonly number[]) => -v.reduce((s, x) => (x > 0 ? s + x * Math.log(x) : s), 0) / Math.LN2;
  const P = p.map((x) => x / sp);
  const Q = q.map((x) => x / sq);
  const M = P.map((x, i) => (x + Q[i]!) / 2);
  return H(M) - (H(P) + H(Q)) / 2;
}

function cloneTrace(t: Trace): Trace {
  const s = t.attention.self!;
  return { ...t, attention: { self: { dims: s.dims, layers: s.layers.map((l) => Float32Array.from(l)) } } };
}

describe('Jensen–Shannon divergence', () => {
  it('hand cases, in bits', () => {
    expect(jsDivergence([1, 0], [0, 1])).toBe(1);
    expect(jsDivergence([0.3, 0.7], [0.3, 0.7])).toBe(0);
    // P = (½, ½), Q = (1, 0), M = (¾, ¼): ½[½log2(⅔) + ½log2(2)] + ½[log2(4/3)] = 0.311278124459…
    expect(jsDivergence([0.5, 0.5], [1, 0])).toBeCloseTo(0.5 * (0.5 * Math.log2(2 / 3) + 0.5) + 0.5 * Math.log2(4 / 3), 12);
    expect(jsDivergence([0.5, 0.5], [1, 0])).toBeCloseTo(0.311278124459, 10);
    // Unnormalised rows are normalised first.
    expect(jsDivergence([1, 1], [2, 0])).toBeCloseTo(0.311278124459, 10);
    expect(Number.isNaN(jsDivergence([0, 0], [1, 0]))).toBe(true);
  });

  it('agrees with the entropy form on random rows', () => {
    let seed = 11;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let t = 0; t < 50; t++) {
      const n = 2 + (t % 9);
      const p = Array.from({ length: n }, () => (rand() < 0.2 ? 0 : rand()));
      const q = Array.from({ length: n }, () => (rand() < 0.2 ? 0 : rand()));
      if (p.every((x) => x === 0) || q.every((x) => x === 0)) continue;
      expect(jsDivergence(p, q)).toBeCloseTo(jsByEntropy(p, q), 12);
    }
    // Row means: rows without mass left out.
    const a = [0.5, 0.5, 0, 0, 1, 0];
    const b = [1, 0, 0, 0, 1, 0];
    expect(meanRowJsDivergence(a, b, 3, 2)).toBeCloseTo((jsByEntropy([0.5, 0.5], [1, 0]) + 0) / 2, 12);
  });
});

describe('comparing traces', () => {
  let stories: Trace;
  let bert: Trace;
  let gpt2: Trace;
  beforeAll(async () => {
    stories = await traceOf(undefined, TEXT);
    bert = await traceOf('bert', TEXT);
    gpt2 = await traceOf('gpt2', TEXT);
  });

  it('a model compared with itself: exactly zero everywhere', () => {
    for (const t of [stories, bert]) {
      const c = compareTraces(t, cloneTrace(t));
      expect(c.alignment).toBe('positions');
      expect(c.matching).toBe('layer-head');
      expect(c.ranking.length).toBe(t.model.numLayers * t.model.numHeads);
      for (const r of c.ranking) {
        expect(r.jsDivergence).toBe(0);
        expect(r.maxAbsDiff).toBe(0);
        expect(r.meanAbsDiff).toBe(0);
      }
    }
  });

  it('a copy with perturbed heads: exactly those heads first, in the order of the perturbation', () => {
    const b = cloneTrace(stories);
    const s = b.attention.self!;
    const [, n] = s.dims;
    // Mix each row of the chosen heads towards all attention on token 0 (allowed under the causal mask).
    const perturbed: [number, number, number][] = [
      [3, 6, 0.9],
      [1, 2, 0.5],
      [4, 0, 0.2],
    ];
    for (const [l, h, t] of perturbed) {
      const W = s.layers[l]!;
      for (let i = 0; i < n; i++) {
        for (let j = 0; j <= i; j++) {
          const idx = (h * n + i) * n + j;
          W[idx] = (1 - t) * W[idx]! + (j === 0 ? t : 0);
        }
      }
    }
    const c = compareTraces(stories, b);
    expect(c.ranking.slice(0, 3).map((r) => [r.layer, r.head])).toEqual(perturbed.map(([l, h]) => [l, h]));
    for (const r of c.ranking.slice(0, 3)) expect(r.jsDivergence).toBeGreaterThan(0);
    for (const r of c.ranking.slice(3)) {
      expect(r.jsDivergence).toBe(0);
      expect(r.maxAbsDiff).toBe(0);
    }
    // The divergence of the top head against the float64 entropy form, row by row.
    const top = c.ranking[0]!;
    const { a: ma, b: mb } = c.matrices(top);
    let sum = 0;
    for (let i = 0; i < n; i++) sum += jsByEntropy(Array.from(ma.subarray(i * n, (i + 1) * n)), Array.from(mb.subarray(i * n, (i + 1) * n)));
    expect(top.jsDivergence).toBeCloseTo(sum / n, 9);
    const csv = comparisonCsv(c).trim().split('\n');
    expect(csv[0]).toBe('layer,head,layer_b,head_b,rank,js_divergence,max_abs_diff,mean_abs_diff');
    expect(csv[1]!.startsWith('3,6,3,6,1,')).toBe(true);
  });

  it('two heads of one trace, and two layers', () => {
    const c = compareHeads(bert, { layer: 0, head: 1 }, { layer: 1, head: 3 });
    expect(c.ranking.length).toBe(1);
    const n = bert.tokens.length;
    const s = bert.attention.self!;
    const A = s.layers[0]!.subarray(1 * n * n, 2 * n * n);
    const B = s.layers[1]!.subarray(3 * n * n, 4 * n * n);
    let sum = 0;
    for (let i = 0; i < n; i++) sum += jsByEntropy(Array.from(A.subarray(i * n, (i + 1) * n)), Array.from(B.subarray(i * n, (i + 1) * n)));
    expect(c.ranking[0]!.jsDivergence).toBeCloseTo(sum / n, 9);
    let max = 0;
    for (let i = 0; i < n * n; i++) max = Math.max(max, Math.abs(A[i]! - B[i]!));
    expect(c.ranking[0]!.maxAbsDiff).toBe(max);
    const layers = compareHeads(bert, { layer: 0 }, { layer: 1 });
    expect(layers.ranking.map((r) => [r.layer, r.layerB, r.head === r.headB]).every(([l, lb, same]) => l === 0 && lb === 1 && same)).toBe(true);
    expect(layers.ranking.length).toBe(4);
  });

  it('BERT and GPT-2 tokenise differently: aligned through the words of the text', () => {
    expect(() => compareTraces(bert, gpt2)).toThrow(/tokenise differently: give the text/);
    const c = compareTraces(bert, gpt2, { text: TEXT });
    expect(c.alignment).toBe('words');
    expect(c.matching).toBe('layer-head');
    expect(c.rowsA.map((u) => u.label)).toEqual(['Hello', 'world', ',', 'the', 'cat', 'sat', 'on', 'the', 'mat', '.', 'It', 'was', 'tired', '!']);
    expect(c.rowsB.map((u) => u.label)).toEqual(c.rowsA.map((u) => u.label));
    // Each unit's tokens cover exactly its characters (besides spaces) in both models.
    for (const [units, trace] of [
      [c.rowsA, bert],
      [c.rowsB, gpt2],
    ] as const) {
      for (const u of units) {
        const covered = u.tokens.map((i) => TEXT.slice(trace.tokens[i]!.start, trace.tokens[i]!.end)).join('').trim();
        expect(covered.replace(/\s/g, '')).toBe(u.label.replace(/\s/g, ''));
      }
    }
    // The word × word matrices of layer 1 head 2 against loops over each model's token matrix.
    const pair = c.ranking.find((r) => r.layer === 1 && r.head === 2)!;
    const { a, b } = c.matrices(pair);
    const U = c.rowsA.length;
    for (const [units, trace, got] of [
      [c.rowsA, bert, a],
      [c.rowsB, gpt2, b],
    ] as const) {
      const n = trace.tokens.length;
      const W = trace.attention.self!.layers[1]!.subarray(2 * n * n, 3 * n * n);
      for (let x = 0; x < U; x++) {
        for (let y = 0; y < U; y++) {
          let s = 0;
          for (const i of units[x]!.tokens) for (const j of units[y]!.tokens) s += W[i * n + j]!;
          expect(got[x * U + y]).toBeCloseTo(s / units[x]!.tokens.length, 6);
        }
      }
    }
    let js = 0;
    for (let x = 0; x < U; x++) js += jsByEntropy(Array.from(a.subarray(x * U, (x + 1) * U)), Array.from(b.subarray(x * U, (x + 1) * U)));
    expect(pair.jsDivergence).toBeCloseTo(js / U, 9);
    for (const r of c.ranking) expect(r.jsDivergence).toBeGreaterThan(0);
    // The same text, the same tokeniser: words of a model against itself are exactly zero.
    const self = compareTraces(gpt2, cloneTrace(gpt2), { align: 'words', text: TEXT });
    for (const r of self.ranking) expect(r.jsDivergence).toBe(0);
  });

  it('models of different shapes: layer means at equal relative depth', () => {
    const c = compareTraces(stories, bert, { text: TEXT });
    expect(c.matching).toBe('depth');
    expect(c.alignment).toBe('words');
    // stories260k has 5 layers, the BERT fixture 2: layer l against round(l / 4).
    expect(c.ranking.map((r) => [r.layer, r.layerB, r.head, r.headB]).sort((x, y) => x[0]! - y[0]!)).toEqual([
      [0, 0, null, null],
      [1, 0, null, null],
      [2, 1, null, null],
      [3, 1, null, null],
      [4, 1, null, null],
    ]);
    expect(c.note).toMatch(/differ in shape \(5 × 8 and 2 × 4/);
  });

  it('one model on two texts of equal token length: position by position', () => {
    return (async () => {
      const other = await traceOf('bert', 'Hello world, the mat sat on the cat. It was tired!');
      expect(other.tokens.length).toBe(bert.tokens.length);
      const c = compareTraces(bert, other);
      expect(c.alignment).toBe('positions');
      expect(c.rowsB.map((u) => u.label).join(' ')).not.toBe(c.rowsA.map((u) => u.label).join(' '));
      expect(c.ranking[0]!.jsDivergence).toBeGreaterThan(0);
      const short = await traceOf('bert', 'Hi.');
      expect(() => compareTraces(bert, short)).toThrow(/cannot compare position by position: A's attention is \d+ × \d+ tokens, B's 5 × 5 \(give the text to align them through words, or texts of equal token length\)/);
    })();
  });
});
