/**
 * src/analysis/head-metrics.ts: every metric on a hand-computable causal trace, against a
 * straightforward float64 re-implementation written here (one head, one row at a time, masks from
 * the recorded score terms, quantiles by sorting), with and without excludeFirstToken, causal
 * and sliding-window masks; ranges as fast-check properties; the quantiles' histogram path
 * against a sort.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { HEAD_METRIC_NAMES, headMetrics, isPunctuationToken, quantiles, type MetricValues } from '../src/analysis/head-metrics.js';
import type { Trace } from '../src/core/trace.js';
import { mulberry32 as seededRandom } from '../src/core/random.js';
import { handTrace } from './helpers/hand-trace.js';

const ln = Math.log;

/** NumPy's default quantile (linear interpolation at rank q·(n − 1)) by sorting. */
function npQuantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const r = q * (s.length - 1);
  const lo = Math.floor(r);
  const hi = Math.ceil(r);
  return s[lo]! + (s[hi]! - s[lo]!) * (r - lo);
}

/** JS divergence in bits of two distributions, directly from the definition. */
function jsBits(p: number[], q: number[]): number {
  const kl = (a: number[], b: number[]) => a.reduce((s, x, i) => (x > 0 ? s + x * Math.log2(x / b[i]!) : s), 0);
  const m = p.map((x, i) => (x + q[i]!) / 2);
  return (kl(p, m) + kl(q, m)) / 2;
}

interface RefOptions {
  exclude: boolean;
  threshold?: number;
}

/** The renormalised rows of one head (null: row left out), support from the score terms. */
function refRows(trace: Trace, l: number, h: number, exclude: boolean): ({ w: number[]; support: number[] } | null)[] {
  const s = trace.attention.self!;
  const [, n] = s.dims;
  const terms = trace.scores?.self;
  const W = s.layers[l]!;
  const rows: ({ w: number[]; support: number[] } | null)[] = [];
  for (let i = 0; i < n; i++) {
    if (exclude && i === 0) {
      rows.push(null);
      continue;
    }
    const support: number[] = [];
    for (let j = 0; j < n; j++) {
      const causalMasked = terms ? terms.causal && j > i : false;
      const windowMasked = terms?.window[l] != null && i - j >= terms.window[l]!;
      if (causalMasked || windowMasked || (exclude && j === 0)) continue;
      support.push(j);
    }
    const total = support.reduce((a, j) => a + W[(h * n + i) * n + j]!, 0);
    if (support.length < 2 || total <= 0) {
      rows.push(null);
      continue;
    }
    rows.push({ support, w: support.map((j) => W[(h * n + i) * n + j]! / total) });
  }
  return rows;
}

/** Every metric of one head, written out plainly. */
function refHead(trace: Trace, l: number, h: number, o: RefOptions): MetricValues {
  const s = trace.attention.self!;
  const [, n] = s.dims;
  const W = s.layers[l]!;
  const thr = o.threshold ?? 0.01;
  const rows = refRows(trace, l, h, o.exclude);
  const all: number[] = [];
  const perRow: Record<string, number[]> = { max: [], ent: [], dist: [], self: [], sink: [], sep: [], punct: [], long: [] };
  let belowT = 0;
  let belowU = 0;
  rows.forEach((r, i) => {
    if (!r) return;
    const { w, support } = r;
    perRow.max!.push(Math.max(...w));
    perRow.ent!.push(-w.reduce((a, x) => (x > 0 ? a + x * ln(x) : a), 0) / ln(support.length));
    let dist = 0;
    let self = 0;
    let sep = 0;
    let punct = 0;
    let long = 0;
    support.forEach((j, idx) => {
      const x = w[idx]!;
      all.push(x);
      if (x < thr) belowT++;
      if (x < 1 / support.length) belowU++;
      dist += x * Math.abs(i - j);
      if (i === j) self += x;
      const t = trace.tokens[j]!;
      if (t.special && j > 0) sep += x;
      if (isPunctuationToken(t)) punct += x;
      if (Math.abs(i - j) >= 5) long += x;
    });
    perRow.dist!.push(dist);
    perRow.self!.push(self);
    // Key 0's share of the row over what the model let it see (key 0 kept even when excluded).
    const win = trace.scores?.self?.window[l] ?? null;
    const key0Visible = !(win !== null && i >= win);
    const seen = [...(o.exclude && key0Visible ? [0] : []), ...support];
    const total = seen.reduce((a, j) => a + W[(h * n + i) * n + j]!, 0);
    perRow.sink!.push(key0Visible ? W[(h * n + i) * n + 0]! / total : 0);
    perRow.sep!.push(sep);
    perRow.punct!.push(punct);
    perRow.long!.push(long);
  });
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const m = mean(all);
  // js_from_first: rows counted in both layers.
  const firstRows = refRows(trace, 0, h, o.exclude);
  const js: number[] = [];
  rows.forEach((r, i) => {
    const f = firstRows[i];
    if (!r || !f) return;
    // Full rows (0 off the support): the supports differ when one layer has a window.
    const full = (x: { w: number[]; support: number[] }) => {
      const v = new Array<number>(n).fill(0);
      x.support.forEach((j, idx) => (v[j] = x.w[idx]!));
      return v;
    };
    js.push(jsBits(full(f), full(r)));
  });
  return {
    max_weight: Math.max(...perRow.max!),
    confidence: mean(perRow.max!),
    entropy: mean(perRow.ent!),
    sparsity: belowT / all.length,
    sparsity_uniform: belowU / all.length,
    p25: npQuantile(all, 0.25),
    p50: npQuantile(all, 0.5),
    p75: npQuantile(all, 0.75),
    p90: npQuantile(all, 0.9),
    std: Math.sqrt(mean(all.map((x) => (x - m) ** 2))),
    distance: mean(perRow.dist!),
    self: mean(perRow.self!),
    sink: mean(perRow.sink!),
    separator: mean(perRow.sep!),
    punctuation: mean(perRow.punct!),
    long_range: mean(perRow.long!),
    js_from_first: l === 0 ? 0 : mean(js),
  };
}

/** A causal trace of random weights over tokens with specials and punctuation, masks recorded. */
function randomTrace(seed: number, n = 12, window: number | null = null): Trace {
  const r = seededRandom(seed);
  const texts = ['<s>', '▁Once', '▁upon', ',', '▁a', 'Ġtime', '##s', '.', '</s>', '▁the', '!?', '▁end', '▁x', '▁y'].slice(0, n);
  const cache = new Map<string, number>();
  const trace = handTrace(texts, {
    layers: 3,
    heads: 3,
    special: [0, 8],
    weight: (l, h, q, k) => {
      if (k > q || (window !== null && l === 1 && q - k >= window)) return 0;
      const key = `${l},${h},${q},${k}`;
      if (!cache.has(key)) cache.set(key, r() ** 3 + (k === 0 && h === 0 ? 2 : 0));
      return cache.get(key)!;
    },
  });
  trace.scores = { self: { scale: [1, 1, 1], causal: true, window: [null, window, null] } };
  return trace;
}

function expectClose(actual: MetricValues, expected: MetricValues, where: string): void {
  for (const m of HEAD_METRIC_NAMES) {
    expect(Math.abs(actual[m] - expected[m]), `${where} ${m}: ${actual[m]} vs ${expected[m]}`).toBeLessThan(2e-6);
  }
}

describe('head metrics', () => {
  it('a hand-computable causal head: weights ∝ key + 1', () => {
    // Head 0 of handTrace's default: row i has weights (1, 2, …, i+1)/Σ. Row 0 is forced (support 1).
    const trace = handTrace(['a', 'b', ','], { layers: 1, heads: 1 });
    const m = headMetrics(trace).rows[0]!;
    // Rows: [1/3, 2/3] and [1/6, 2/6, 3/6].
    expect(m.max_weight).toBeCloseTo(2 / 3, 6);
    expect(m.confidence).toBeCloseTo((2 / 3 + 1 / 2) / 2, 6);
    const h1 = -(1 / 3) * ln(1 / 3) - (2 / 3) * ln(2 / 3);
    const h2 = -(1 / 6) * ln(1 / 6) - (2 / 6) * ln(2 / 6) - (3 / 6) * ln(3 / 6);
    expect(m.entropy).toBeCloseTo((h1 / ln(2) + h2 / ln(3)) / 2, 6);
    expect(m.distance).toBeCloseTo((1 / 3 + (2 / 6 + 2 * (1 / 6))) / 2, 6);
    expect(m.self).toBeCloseTo((2 / 3 + 1 / 2) / 2, 6);
    expect(m.sink).toBeCloseTo((1 / 3 + 1 / 6) / 2, 6);
    expect(m.punctuation).toBeCloseTo((0 + 1 / 2) / 2, 6); // ',' is key 2, seen by row 2 only
    expect(m.long_range).toBe(0);
    // Pooled weights 1/3, 2/3, 1/6, 1/3, 1/2: below 1/support: 1/3 (of 2), 1/6 (of 3); sorted 1/6 1/3 1/3 1/2 2/3.
    expect(m.sparsity).toBe(0);
    expect(m.sparsity_uniform).toBeCloseTo(2 / 5, 9);
    expect(m.p50).toBeCloseTo(1 / 3, 6);
    expect(m.p25).toBeCloseTo(1 / 3, 6);
    expect(m.p90).toBeCloseTo(1 / 2 + 0.6 * (2 / 3 - 1 / 2), 6);
    expect(m.js_from_first).toBe(0);
  });

  it('excludeFirstToken drops key 0 (renormalising) and query 0; the sink is read from the rows as written', () => {
    const trace = handTrace(['<s>', 'b', 'c', 'd'], { layers: 1, heads: 1, special: [0] });
    const m = headMetrics(trace, 'self', { excludeFirstToken: true }).rows[0]!;
    // Rows left: 2 → keys 1,2 ∝ (2, 3); 3 → keys 1,2,3 ∝ (2, 3, 4). Row 1 has support {1}: forced.
    expect(m.self).toBeCloseTo((3 / 5 + 4 / 9) / 2, 6);
    expect(m.confidence).toBeCloseTo((3 / 5 + 4 / 9) / 2, 6);
    expect(m.sink).toBeCloseTo((1 / 6 + 1 / 10) / 2, 6);
    expect(m.separator).toBe(0); // the first special is the sink, not a separator
  });

  it('equals the plain re-implementation on random causal traces (window masks too), both exclude settings', () => {
    for (const [seed, window] of [[1, null], [2, 3], [3, 2]] as const) {
      const trace = randomTrace(seed, 12, window);
      for (const exclude of [false, true]) {
        const got = headMetrics(trace, 'self', { excludeFirstToken: exclude });
        expect(got.rows).toHaveLength(9);
        for (const row of got.rows) expectClose(row, refHead(trace, row.layer, row.head, { exclude }), `seed ${seed} L${row.layer}H${row.head} exclude=${exclude}`);
        // Aggregates: mean over heads (max_weight: max).
        for (let l = 0; l < 3; l++) {
          const heads = got.rows.filter((r) => r.layer === l);
          expect(got.layerMeans[l]!.entropy).toBeCloseTo(heads.reduce((a, r) => a + r.entropy, 0) / 3, 9);
          expect(got.layerMeans[l]!.max_weight).toBe(Math.max(...heads.map((r) => r.max_weight)));
        }
        expect(got.model.sink).toBeCloseTo(got.rows.reduce((a, r) => a + r.sink, 0) / 9, 9);
        expect(got.jsChange).toEqual(got.rows.filter((r) => r.layer === 2).map((r) => r.js_from_first));
      }
    }
  });

  it('respects causal masks: a causal trace equals its bidirectional twin with the upper triangle removed', () => {
    // Bidirectional attention with weight on future keys: the recorded causal mask is what counts,
    // so a trace whose scores say causal measures only keys ≤ query (renormalised).
    const bi = handTrace(['a', 'b', 'c', 'd', 'e'], { layers: 1, heads: 1, weight: (_l, _h, q, k) => 1 + ((q * 7 + k * 3) % 5) });
    const causal = handTrace(['a', 'b', 'c', 'd', 'e'], { layers: 1, heads: 1, weight: (_l, _h, q, k) => (k <= q ? 1 + ((q * 7 + k * 3) % 5) : 0) });
    bi.scores = { self: { scale: [1], causal: true, window: [null] } };
    expectClose(headMetrics(bi).rows[0]!, headMetrics(causal).rows[0]!, 'causal');
    // The causal twin without recorded terms: the mask is inferred from the exact zeros.
    expectClose(headMetrics(causal).rows[0]!, refHead({ ...causal, scores: { self: { scale: [1], causal: true, window: [null] } } }, 0, 0, { exclude: false }), 'inferred');
  });

  it('Jensen–Shannon change: 0 for identical layers, the definition for different ones, per head and for the layer means', () => {
    const same = handTrace(['a', 'b', 'c', 'd'], { layers: 3, heads: 2 });
    const m = headMetrics(same);
    expect(m.jsChange).toEqual([0, 0]);
    expect(m.model.js_from_first).toBeCloseTo(0, 12);
    // Layer 1 head 0 attends to key 0 only where layer 0 is ∝ key + 1.
    const diff = handTrace(['a', 'b', 'c', 'd'], { layers: 2, heads: 1, weight: (l, _h, q, k) => (k > q ? 0 : l === 0 ? k + 1 : k === 0 ? 1 : 1e-30) });
    const d = headMetrics(diff);
    const expected = [1, 2, 3].map((q) => {
      const p = Array.from({ length: q + 1 }, (_, k) => (k + 1) / (((q + 1) * (q + 2)) / 2));
      const onehot = p.map((_, k) => (k === 0 ? 1 : 0));
      return jsBits(p, onehot);
    });
    expect(d.jsChange[0]).toBeCloseTo(expected.reduce((a, b) => a + b) / 3, 5);
    expect(d.model.js_from_first).toBeCloseTo(expected.reduce((a, b) => a + b) / 3, 5); // one head: the layer mean is the head
  });

  it('punctuation tokens: only punctuation once Ġ, ▁ and ## are stripped; specials never', () => {
    const t = (text: string, special = false) => ({ text, special });
    for (const p of [',', 'Ġ.', '▁!', '##?', '...', '«', '—', '$']) expect(isPunctuationToken(t(p)), p).toBe(true);
    for (const p of ['Ġthe', '▁a', '##s', 'a,', '', 'Ġ', '3']) expect(isPunctuationToken(t(p)), p).toBe(false);
    expect(isPunctuationToken(t('[SEP]', true))).toBe(false);
  });

  it('ranges (fast-check): entropy and shares within [0, 1], quantiles ordered', () => {
    fc.assert(
      fc.property(fc.integer({ min: 2, max: 9 }), fc.integer({ min: 0, max: 1e6 }), fc.boolean(), fc.boolean(), (n, seed, causal, exclude) => {
        const r = seededRandom(seed);
        const raw = Array.from({ length: 2 * 2 * n * n }, () => r() ** 4);
        const trace = handTrace(Array.from({ length: n }, (_, i) => (i % 3 === 2 ? ',' : `t${i}`)), {
          layers: 2,
          heads: 2,
          special: [0],
          weight: (l, h, q, k) => (causal && k > q ? 0 : raw[((l * 2 + h) * n + q) * n + k]!),
        });
        const got = headMetrics(trace, 'self', { excludeFirstToken: exclude });
        for (const row of got.rows) {
          if (Number.isNaN(row.entropy)) continue; // no row with a choice left (e.g. n = 2, causal, exclude)
          for (const k of ['entropy', 'sparsity', 'sparsity_uniform', 'self', 'sink', 'separator', 'punctuation', 'long_range', 'confidence', 'max_weight', 'js_from_first'] as const) {
            expect(row[k]).toBeGreaterThanOrEqual(-1e-9);
            expect(row[k]).toBeLessThanOrEqual(1 + 1e-9);
          }
          expect(row.p25).toBeLessThanOrEqual(row.p50);
          expect(row.p50).toBeLessThanOrEqual(row.p75);
          expect(row.p75).toBeLessThanOrEqual(row.p90);
          expect(row.distance).toBeLessThanOrEqual(n - 1);
        }
      }),
      { numRuns: 60 },
    );
  });

  it('longer traces (the quantiles\' histogram path: over 4,096 entries per head; from 51,202 on, bidirectional and causal at 330 tokens, the wanted bins\' weights read back from the rows) equal the plain re-implementation: causal, window and bidirectional rows, both exclude settings', () => {
    for (const n of [96, 330]) {
      const texts = Array.from({ length: n }, (_, i) => (i === 0 ? '<s>' : i % 11 === 5 ? ',' : i === n - 1 ? '</s>' : `▁w${i}`));
      const r = seededRandom(5);
      const raw = Float64Array.from({ length: 2 * 2 * n * n }, () => r() ** 4 + (r() < 0.05 ? 1e-9 : 0));
      for (const causal of [true, false]) {
        const window = causal ? 80 : null;
        const trace = handTrace(texts, {
          layers: 2,
          heads: 2,
          special: [0, n - 1],
          weight: (l, h, q, k) => ((causal && k > q) || (window !== null && l === 1 && q - k >= window) ? 0 : raw[((l * 2 + h) * n + q) * n + k]!),
        });
        trace.scores = { self: { scale: [1, 1], causal, window: [null, window] } };
        for (const exclude of [false, true]) {
          const got = headMetrics(trace, 'self', { excludeFirstToken: exclude });
          for (const row of got.rows) {
            const ref = refHead(trace, row.layer, row.head, { exclude });
            expectClose(row, ref, `causal=${causal} L${row.layer}H${row.head} exclude=${exclude}`);
            // The quantiles are order statistics: equal up to the renormalisation's rounding.
            for (const k of ['p25', 'p50', 'p75', 'p90'] as const) expect(Math.abs(row[k] - ref[k])).toBeLessThanOrEqual(1e-14 * ref[k]);
            // Entropy and Jensen–Shannon on the WebAssembly kernel: float32 logarithms of the float32
            // weights renormalised in float32 (≈ 6e-8 relative each, the traced weights' own precision):
            // an entropy within 1e-6 relative, a divergence (a difference of entropies ≤ log n nats)
            // within 1e-6 bits; still inside expectClose's 2e-6.
            expect(Math.abs(row.entropy - ref.entropy), `entropy L${row.layer}H${row.head}`).toBeLessThanOrEqual(1e-6 * ref.entropy);
            expect(Math.abs(row.js_from_first - ref.js_from_first), `js_from_first L${row.layer}H${row.head}`).toBeLessThanOrEqual(1e-6);
          }
        }
      }
    }
  });

  it('quantiles: the histogram path (many values, ties, zeros) equals a sort', () => {
    const r = seededRandom(11);
    for (const n of [5000, 20000]) {
      const xs = new Float64Array(n);
      for (let i = 0; i < n; i++) xs[i] = i % 7 === 0 ? 0 : i % 5 === 0 ? 0.25 : r() ** 6;
      const arr = Array.from(xs);
      const qs = [0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.999, 1];
      const got = quantiles(xs, n, qs);
      qs.forEach((q, i) => expect(got[i]).toBe(npQuantile(arr, q)));
      // Again (scratch state is reset between calls).
      expect(quantiles(xs, n, qs)).toEqual(got);
    }
  });
});
