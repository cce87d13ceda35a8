/**
 * The head-metrics WebAssembly SIMD kernel (src/analysis/wasm/head-kernel.as) and the plain
 * JavaScript loops it replaces: both against a float64 re-computation written here (one head and
 * one row at a time, straight from the definitions, Math.log, quantiles by sorting) on a
 * hand-computable trace and on random causal, sliding-window, bidirectional and holed traces (rows of
 * odd and even length, supports with holes, forced rows), with and without excludeFirstToken;
 * the two against each other; the kernel's logarithm against Math.log.
 */
import { describe, expect, it } from 'vitest';
import { HEAD_METRIC_NAMES, type HeadMetrics, headMetrics, isPunctuationToken, type MetricValues, quantiles } from '../src/analysis/head-metrics.js';
import { HEAD_COLUMNS, headTable } from '../src/analysis/head-types.js';
import { headKernel, headKernelStatus } from '../src/analysis/wasm/head-kernel.js';
import { mulberry32 } from '../src/core/random.js';
import type { Trace } from '../src/core/trace.js';
import { handTrace } from './helpers/hand-trace.js';

/** Which keys query i of layer l sees: the recorded masks, else the entries non-zero in some head. */
function visible(trace: Trace, l: number, i: number, j: number): boolean {
  const s = trace.attention.self!;
  const [H, n] = s.dims;
  const terms = trace.scores?.self;
  if (terms) return !((terms.causal && j > i) || (terms.window[l] != null && i - j >= terms.window[l]!));
  for (let h = 0; h < H; h++) if (s.layers[l]![(h * n + i) * n + j] !== 0) return true;
  return false;
}

interface RefRow {
  /** The row over all n keys, renormalised over its support, 0 elsewhere. */
  full: number[];
  support: number[];
}

/** The rows of a head that count (null: left out), from the definitions. */
function rowsOf(trace: Trace, l: number, h: number, exclude: boolean): (RefRow | null)[] {
  const s = trace.attention.self!;
  const n = s.dims[1];
  const W = s.layers[l]!;
  return Array.from({ length: n }, (_, i) => {
    if (exclude && i === 0) return null;
    const support = Array.from({ length: n }, (_, j) => j).filter((j) => visible(trace, l, i, j) && !(exclude && j === 0));
    let total = 0;
    for (const j of support) total += W[(h * n + i) * n + j]!;
    if (support.length < 2 || !(total > 0)) return null;
    const full = new Array<number>(n).fill(0);
    for (const j of support) full[j] = W[(h * n + i) * n + j]! / total;
    return { full, support };
  });
}

const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const entropy = (p: readonly number[]): number => p.reduce((a, x) => (x > 0 ? a - x * Math.log(x) : a), 0);
/** Jensen–Shannon divergence in bits from the entropies of the mixture and of both sides. */
const jsBits = (p: readonly number[], q: readonly number[]): number => (entropy(p.map((x, i) => (x + q[i]!) / 2)) - (entropy(p) + entropy(q)) / 2) / Math.LN2;
/** NumPy's default quantile, by sorting. */
function quantileOf(xs: readonly number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const r = q * (s.length - 1);
  const lo = Math.floor(r);
  return s[lo]! + (s[Math.ceil(r)]! - s[lo]!) * (r - lo);
}

/** Every metric of one head, plus the previous-token, next-token and local scores. */
function reference(trace: Trace, l: number, h: number, exclude: boolean): MetricValues & { previous_token: number; next_token: number; local: number } {
  const s = trace.attention.self!;
  const n = s.dims[1];
  const W = s.layers[l]!;
  const rows = rowsOf(trace, l, h, exclude);
  const first = rowsOf(trace, 0, h, exclude);
  const pooled: number[] = [];
  const per = { max: [] as number[], ent: [] as number[], dist: [] as number[], self: [] as number[], sink: [] as number[], sep: [] as number[], punct: [] as number[], long: [] as number[], prev: [] as number[], next: [] as number[], local: [] as number[], js: [] as number[] };
  let below = 0;
  let belowUniform = 0;
  rows.forEach((r, i) => {
    if (!r) return;
    const w = r.support.map((j) => r.full[j]!);
    pooled.push(...w);
    below += w.filter((x) => x < 0.01).length;
    belowUniform += w.filter((x) => x < 1 / w.length).length;
    per.max.push(Math.max(...w));
    per.ent.push(entropy(w) / Math.log(w.length));
    const sum = (f: (j: number) => boolean) => r.support.filter(f).reduce((a, j) => a + r.full[j]!, 0);
    per.dist.push(r.support.reduce((a, j) => a + r.full[j]! * Math.abs(i - j), 0));
    per.self.push(sum((j) => j === i));
    per.sep.push(sum((j) => j > 0 && trace.tokens[j]!.special));
    per.punct.push(sum((j) => isPunctuationToken(trace.tokens[j]!)));
    per.long.push(sum((j) => Math.abs(i - j) >= 5));
    per.prev.push(sum((j) => j === i - 1));
    per.next.push(sum((j) => j === i + 1));
    per.local.push(sum((j) => Math.abs(i - j) <= 2));
    // Key 0's share of the row over its support with key 0 kept, where the model let the row see it.
    if (visible(trace, l, i, 0)) {
      let total = W[(h * n + i) * n]!;
      for (const j of r.support) if (j !== 0) total += W[(h * n + i) * n + j]!;
      per.sink.push(W[(h * n + i) * n]! / total);
    } else per.sink.push(0);
    const f = first[i];
    if (f) per.js.push(l === 0 ? 0 : jsBits(f.full, r.full));
  });
  const m = mean(pooled);
  return {
    max_weight: Math.max(...per.max),
    confidence: mean(per.max),
    entropy: mean(per.ent),
    sparsity: below / pooled.length,
    sparsity_uniform: belowUniform / pooled.length,
    p25: quantileOf(pooled, 0.25),
    p50: quantileOf(pooled, 0.5),
    p75: quantileOf(pooled, 0.75),
    p90: quantileOf(pooled, 0.9),
    std: Math.sqrt(mean(pooled.map((x) => (x - m) ** 2))),
    distance: mean(per.dist),
    self: mean(per.self),
    sink: mean(per.sink),
    separator: mean(per.sep),
    punctuation: mean(per.punct),
    long_range: mean(per.long),
    js_from_first: per.js.length ? mean(per.js) : NaN,
    previous_token: mean(per.prev),
    next_token: mean(per.next),
    local: mean(per.local),
  };
}

/** js_from_first of each layer's head mean (rows counted in head 0 of both layers) against the first layer's. */
function referenceLayerJs(trace: Trace, exclude: boolean): number[] {
  const s = trace.attention.self!;
  const [H, n] = s.dims;
  const meanRows = (l: number) => {
    const heads = Array.from({ length: H }, (_, h) => rowsOf(trace, l, h, exclude));
    return Array.from({ length: n }, (_, i) => ({
      counted: heads[0]![i] !== null,
      m: Array.from({ length: n }, (_, j) => heads.reduce((a, rows) => a + (rows[i] ? rows[i]!.full[j]! : 0), 0) / H),
    }));
  };
  const first = meanRows(0);
  return s.layers.map((_, l) => {
    const rows = meanRows(l);
    const js = rows.flatMap((r, i) => (r.counted && first[i]!.counted ? [l === 0 ? 0 : jsBits(first[i]!.m, r.m)] : []));
    return js.length ? mean(js) : NaN;
  });
}

const TEXTS = ['<s>', '▁Once', '▁upon', ',', '▁a', 'Ġtime', '##s', '.', '</s>', '▁the', '!?', '▁end'];
const texts = (n: number) => Array.from({ length: n }, (_, i) => (i < TEXTS.length ? TEXTS[i]! : `▁w${i}`));

/**
 * Random traces: causal (a sliding window in layer 1), bidirectional, bidirectional with holes
 * (entries 0 in every head) and forced rows, or bidirectional with weights of few digits (ties:
 * runs of equal values, many zeros, as a page's attention stored with few digits).
 */
function randomTrace(kind: 'causal' | 'bidirectional' | 'holes' | 'ties', n: number, seed: number): Trace {
  const r = mulberry32(seed);
  const hole = new Set<string>();
  if (kind === 'holes') {
    for (let l = 0; l < 3; l++) for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) if (r() < 0.15 || (i === 3 && j !== 2)) hole.add(`${l},${i},${j}`);
  }
  const cache = new Map<string, number>();
  const trace = handTrace(texts(n), {
    layers: 3,
    heads: 3,
    special: [0, 8],
    weight: (l, h, q, k) => {
      if (kind === 'causal' && (k > q || (l === 1 && q - k >= 4))) return 0;
      if (hole.has(`${l},${q},${k}`)) return 0;
      const key = `${l},${h},${q},${k}`;
      if (!cache.has(key)) cache.set(key, kind === 'ties' ? Math.round(r() ** 3 * 8) / 8 + (k === q ? 0.125 : 0) : r() ** 3 + (k === 0 && h === 0 ? 2 : 0) + (k === q - 1 && h === 1 ? 3 : 0));
      return cache.get(key)!;
    },
  });
  if (kind === 'causal') trace.scores = { self: { scale: [1, 1, 1], causal: true, window: [null, 4, null] } };
  return trace;
}

const close = (a: number, b: number, rel: number) => (Number.isNaN(b) ? Number.isNaN(a) : Math.abs(a - b) <= rel * Math.abs(b) + 1e-16);

/**
 * How close the kernel's columns come to float64: its logarithms are float32 ones, of the float32
 * weights renormalised in float32 (head-kernel.as), within about one float32 rounding (2^−24 ≈ 6e-8,
 * the precision of the traced weights themselves). An entropy (a sum of terms of one sign) keeps that
 * relative error: allowed 1e-6 (16 roundings). A Jensen–Shannon divergence is a difference of
 * entropies of at most log n nats: allowed 1e-6 bits absolute (a rounding of the float32 weights
 * moves it by up to ≈ 6e-8 · log n). Every other column is float64 arithmetic: 1e-12 relative.
 */
function closeColumn(kernel: 'wasm' | 'js', column: string, a: number, b: number): boolean {
  if (kernel === 'js') return close(a, b, 1e-12);
  if (column === 'entropy') return close(a, b, 1e-6);
  if (column === 'js_from_first') return Number.isNaN(b) ? Number.isNaN(a) : Math.abs(a - b) <= 1e-6;
  return close(a, b, 1e-12);
}

function expectReference(trace: Trace, exclude: boolean, kernel: 'wasm' | 'js', where: string): HeadMetrics {
  const got = headMetrics(trace, undefined, { excludeFirstToken: exclude, kernel });
  const table = headTable(trace, undefined, { excludeFirstToken: exclude, kernel });
  for (const row of got.rows) {
    const ref = reference(trace, row.layer, row.head, exclude);
    for (const m of HEAD_METRIC_NAMES) expect(closeColumn(kernel, m, row[m], ref[m]), `${where} ${kernel} L${row.layer}H${row.head} ${m}: ${row[m]} vs ${ref[m]}`).toBe(true);
    const t = table[row.layer * got.heads + row.head]!;
    for (const c of ['previous_token', 'next_token', 'local'] as const) expect(close(t[c], ref[c], 1e-12), `${where} ${kernel} L${row.layer}H${row.head} ${c}`).toBe(true);
  }
  const layerJs = referenceLayerJs(trace, exclude);
  got.layerMeans.forEach((m, l) => expect(kernel === 'js' ? close(m.js_from_first, layerJs[l]!, 1e-11) : closeColumn(kernel, 'js_from_first', m.js_from_first, layerJs[l]!), `${where} ${kernel} layer mean ${l} js_from_first: ${m.js_from_first} vs ${layerJs[l]}`).toBe(true));
  return got;
}

describe('head-metrics kernel', () => {
  it('runs in this engine', () => {
    expect(headKernelStatus()).toEqual({ available: true, reason: '' });
  });

  it('its logarithm (float32): within 2 float32 roundings of Math.log relative to the value (every exponent, near 1 from both sides, the √2/2 split, weights); 0 gives a finite value', () => {
    const r = mulberry32(7);
    const xs: number[] = [1, 2, 0.5, Math.fround(Math.SQRT2), Math.fround(Math.SQRT1_2), 2 ** -126, Math.fround(3.4e38)];
    for (let i = 0; i < 20000; i++) xs.push(Math.fround(2 ** Math.floor(r() * 252 - 126) * (1 + r())));
    for (let i = 1; i < 4000; i++) xs.push(1 + i * 2 ** -23, 1 - i * 2 ** -24);
    for (let i = -2000; i < 2000; i++) xs.push(Math.fround(Math.SQRT1_2) + i * 2 ** -24, Math.fround(Math.SQRT1_2 * 2 ** -20) + i * 2 ** -44);
    for (let i = 0; i < 20000; i++) xs.push(Math.fround(r() ** 6), Math.fround(r() / 512));
    xs.push(0);
    const n = xs.length + ((4 - (xs.length % 4)) % 4);
    let from = 0;
    let to = 0;
    const got = headKernel((lay) => {
      from = lay.take(n * 4);
      to = lay.take(n * 4);
    })!;
    expect(got).not.toBeNull();
    try {
      new Float32Array(got.k.memory.buffer, from, n).set(xs);
      got.k.logArray(from, to, n);
      const out = new Float32Array(got.k.memory.buffer, to, n);
      let worst = 0;
      xs.forEach((x, i) => {
        if (x === 0) return;
        const want = Math.log(Math.fround(x));
        const err = want === 0 ? Math.abs(out[i]!) : Math.abs(out[i]! - want) / Math.abs(want);
        if (err > worst) worst = err;
      });
      expect(out[0]).toBe(0);
      expect(Number.isFinite(out[xs.length - 1]!)).toBe(true);
      expect(worst).toBeLessThan(2 ** -22);
    } finally {
      got.release();
    }
  });

  it('a hand-computable trace: uniform causal attention in identical layers', () => {
    const n = 23;
    const trace = handTrace(texts(n), { layers: 2, heads: 2, weight: (_l, _h, q, k) => (k <= q ? 1 : 0) });
    trace.scores = { self: { scale: [1, 1], causal: true, window: [null, null] } };
    for (const kernel of ['wasm', 'js'] as const) {
      const m = headMetrics(trace, undefined, { kernel });
      // Rows i = 1 … n − 1 count (row 0 is forced): weights 1/(i + 1) over i + 1 keys (stored as
      // float32 and renormalised: equal to within a few float64 roundings).
      const rows = Array.from({ length: n - 1 }, (_, k) => k + 1);
      for (const r of m.rows) {
        // (The kernel's entropy: float32 logarithms, see closeColumn.)
        expect(closeColumn(kernel, 'entropy', r.entropy, 1)).toBe(true);
        expect(r.max_weight).toBe(0.5);
        expect(r.confidence).toBeCloseTo(mean(rows.map((i) => 1 / (i + 1))), 13);
        expect(r.self).toBeCloseTo(mean(rows.map((i) => 1 / (i + 1))), 13);
        expect(r.sink).toBeCloseTo(mean(rows.map((i) => 1 / (i + 1))), 13);
        expect(r.distance).toBeCloseTo(mean(rows.map((i) => i / 2)), 13);
        expect(r.long_range).toBeCloseTo(mean(rows.map((i) => Math.max(0, i - 4) / (i + 1))), 13);
        // Identical layers: exactly 0, not a rounding away from it.
        expect(r.js_from_first).toBe(0);
      }
      expect(m.layerMeans[1]!.js_from_first).toBe(0);
      expect(m.model.js_from_first).toBe(0);
    }
  });

  for (const [kind, n] of [['causal', 37], ['bidirectional', 21], ['holes', 30], ['bidirectional', 70], ['ties', 72]] as const) {
    it(`equals the float64 re-computation on a random ${kind} trace of ${n} tokens, both exclude settings, on the kernel and on the JavaScript loops`, () => {
      const trace = randomTrace(kind, n, n * 31 + kind.length);
      for (const exclude of [false, true]) for (const kernel of ['wasm', 'js'] as const) expectReference(trace, exclude, kernel, `${kind} ${n} exclude=${exclude}`);
    });
  }

  it('the kernel and the JavaScript loops agree on every column and top type (long rows: the histogram counted in the scan)', () => {
    for (const [kind, n] of [['causal', 130], ['bidirectional', 97], ['holes', 81]] as const) {
      const trace = randomTrace(kind, n, 5 + n);
      for (const excludeFirstToken of [false, true]) {
        const a = headTable(trace, undefined, { excludeFirstToken, kernel: 'wasm' });
        const b = headTable(trace, undefined, { excludeFirstToken, kernel: 'js' });
        a.forEach((row, i) => {
          expect(row.top_type, `${kind} ${i}`).toBe(b[i]!.top_type);
          for (const c of HEAD_COLUMNS) expect(closeColumn('wasm', c, row[c], b[i]![c]), `${kind} exclude=${excludeFirstToken} row ${i} ${c}: ${row[c]} vs ${b[i]![c]}`).toBe(true);
        });
      }
    }
  });

  it('cached queries (the last nq of nk positions, query q at q + nk − nq): the kernel and the JavaScript loops agree on every column (the distance read from its table at the query\'s place; long rows: the histogram in the scan, no pooled copy)', () => {
    for (const [kind, nk, nq] of [['causal', 90, 31], ['bidirectional', 350, 150]] as const) {
      const whole = randomTrace(kind, nk, 11 + nk);
      const trace: Trace = { ...whole, attention: { self: { dims: [3, nq, nk], layers: whole.attention.self!.layers.map((w) => {
        const out = new Float32Array(3 * nq * nk);
        for (let h = 0; h < 3; h++) out.set(w.subarray((h * nk + nk - nq) * nk, (h + 1) * nk * nk), h * nq * nk);
        return out;
      }) } } };
      for (const excludeFirstToken of [false, true]) {
        const a = headTable(trace, undefined, { excludeFirstToken, kernel: 'wasm' });
        const b = headTable(trace, undefined, { excludeFirstToken, kernel: 'js' });
        expect(a.length).toBe(9);
        a.forEach((row, i) => {
          expect(row.distance, `${kind} ${i}`).toBeGreaterThan(0);
          for (const c of HEAD_COLUMNS) expect(closeColumn('wasm', c, row[c], b[i]![c]), `${kind} exclude=${excludeFirstToken} row ${i} ${c}: ${row[c]} vs ${b[i]![c]}`).toBe(true);
        });
      }
    }
  });

  it('quantiles by selection in the histogram bins equal a sort: values of few digits (runs of ties, zeros), neighbouring and repeated ranks', () => {
    const r = mulberry32(3);
    for (let t = 0; t < 60; t++) {
      const n = 4096 + Math.floor(r() * 9000);
      const digits = [1, 2, 3, 5, 9][t % 5]!;
      const v = Float64Array.from({ length: n }, () => Math.round(r() ** 4 * 10 ** digits) / 10 ** digits);
      const qs = [0.25, 0.5, 0.75, 0.9, 0.1, 0.1 + 1 / (n - 1), 0.1 + 2 / (n - 1), 0.5];
      const got = quantiles(v, n, qs);
      expect(got, `${n} values of ${digits} digits`).toEqual(qs.map((q) => quantileOf([...v], q)));
    }
  });

  it('rejects an unknown kernel', () => {
    const trace = randomTrace('causal', 8, 1);
    expect(() => headMetrics(trace, undefined, { kernel: 'gpu' as 'js' })).toThrow("kernel: expected auto, js or wasm, got 'gpu'");
  });
});
