/**
 * head-metrics.ts `omit` (computing lazily what a view shows): the omitted columns are NaN, every
 * other metric, aggregate and type score is exactly what the full computation gives (same
 * arithmetic, bit for bit), on causal and bidirectional traces, with and without excludeFirstToken.
 */
import { describe, expect, it } from 'vitest';
import { HEAD_METRIC_NAMES, headMetrics } from '../src/analysis/head-metrics.js';
import { HEAD_COLUMNS, headTable } from '../src/analysis/head-types.js';
import { mulberry32 as seededRandom } from '../src/core/random.js';
import { handTrace } from './helpers/hand-trace.js';

function trace(causal: boolean, seed: number) {
  const r = seededRandom(seed);
  const table = new Map<string, number>();
  return handTrace(['<s>', 'the', 'cat', ',', 'sat', 'on', 'the', 'mat', '.', '</s>'], {
    layers: 3,
    heads: 2,
    special: [0, 9],
    weight: (l, h, q, k) => {
      if (causal && k > q) return 0;
      const key = `${l},${h},${q},${k}`;
      if (!table.has(key)) table.set(key, Math.exp(3 * r()));
      return table.get(key)!;
    },
  });
}

const QUANTILES = ['p25', 'p50', 'p75', 'p90'] as const;

describe('head metrics: omit', () => {
  for (const causal of [true, false]) {
    for (const excludeFirstToken of [false, true]) {
      it(`leaves only the omitted columns out (${causal ? 'causal' : 'bidirectional'}, exclude first ${excludeFirstToken})`, () => {
        const t = trace(causal, causal ? 3 : 4);
        const full = headMetrics(t, undefined, { excludeFirstToken });
        const lazy = headMetrics(t, undefined, { excludeFirstToken, omit: ['js_from_first', 'quantiles'] });
        const kept = HEAD_METRIC_NAMES.filter((m) => m !== 'js_from_first' && !(QUANTILES as readonly string[]).includes(m));
        full.rows.forEach((r, i) => {
          for (const m of kept) expect(lazy.rows[i]![m]).toBe(r[m]);
          for (const m of [...QUANTILES, 'js_from_first'] as const) expect(lazy.rows[i]![m]).toBeNaN();
          // The full run has numbers there.
          expect(Number.isFinite(r.p50) && Number.isFinite(r.js_from_first)).toBe(true);
        });
        full.layerMeans.forEach((r, l) => {
          for (const m of kept) expect(lazy.layerMeans[l]![m]).toBe(r[m]);
          expect(lazy.layerMeans[l]!.js_from_first).toBeNaN();
        });
        for (const m of kept) expect(lazy.model[m]).toBe(full.model[m]);
        expect(lazy.jsChange.every(Number.isNaN)).toBe(true);
        // One at a time: only that one is left out.
        const noQ = headMetrics(t, undefined, { excludeFirstToken, omit: ['quantiles'] });
        full.rows.forEach((r, i) => expect(noQ.rows[i]!.js_from_first).toBe(r.js_from_first));
        const noJs = headMetrics(t, undefined, { excludeFirstToken, omit: ['js_from_first'] });
        full.rows.forEach((r, i) => expect(noJs.rows[i]!.p75).toBe(r.p75));
        // The head table: every type score unchanged, so the top types too.
        const tFull = headTable(t, undefined, { excludeFirstToken });
        const tLazy = headTable(t, undefined, { excludeFirstToken, omit: ['js_from_first', 'quantiles'] });
        tFull.forEach((r, i) => {
          for (const c of HEAD_COLUMNS) if (c !== 'js_from_first' && !(QUANTILES as readonly string[]).includes(c)) expect(Object.is(tLazy[i]![c], r[c])).toBe(true);
          expect(tLazy[i]!.top_type).toBe(r.top_type);
        });
      });
    }
  }

  it('refuses an unknown column in one line', () => {
    // @ts-expect-error: not an omittable metric
    expect(() => headMetrics(trace(true, 1), undefined, { omit: ['entropy'] })).toThrow("omit: expected js_from_first, quantiles, got 'entropy'");
  });
});
