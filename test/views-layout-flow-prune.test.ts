/**
 * The flow diagram's pruning (src/views/layout/flow.ts: one pass per row for the nonzero count and
 * the top k) against a full sort written here, on caller matrices with exact zeros, ties and a
 * threshold, for several k: the kept edges per receiving token (strongest first, ties by the lower
 * index), and the count of nonzero edges.
 */
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../src/core/random.js';
import type { Token, Trace } from '../src/core/trace.js';
import { flowLayout } from '../src/views/layout/flow.js';

const n = 37;
const L = 3;
const r = mulberry32(77);
// Few distinct values (many ties), a third of them 0.
const layers = Array.from({ length: L }, () => Float32Array.from({ length: n * n }, () => (r() < 0.33 ? 0 : Math.ceil(r() * 6) / 8)));
const tokens: Token[] = Array.from({ length: n }, (_, i) => ({ id: i, text: `t${i}`, start: 0, end: 0, special: false, segment: 0, word: i }));
const trace: Trace = {
  model: { name: 'm', modelType: 'test', numLayers: L, numHeads: 1, numKeyValueHeads: 1, headDim: 1 },
  tokens,
  attention: { self: { dims: [1, n, n], layers } },
};

describe('flow diagram pruning', () => {
  for (const keep of [1, 3, 8])
    for (const threshold of [0, 0.3]) {
      it(`top ${keep}, threshold ${threshold}: a full sort's choice per token`, () => {
        const layout = flowLayout(trace, { keep, threshold, matrices: { size: n, layers } });
        let nonzero = 0;
        const want: { column: number; q: number; k: number; weight: number }[] = [];
        layers.forEach((a, l) => {
          for (let q = 0; q < n; q++) {
            const row = Array.from({ length: n }, (_, k) => ({ k, v: a[q * n + k]! }));
            nonzero += row.filter((e) => e.v > 0).length;
            const sorted = row.filter((e) => e.v > 0 && e.v >= threshold).sort((x, y) => y.v - x.v || x.k - y.k);
            for (const e of sorted.slice(0, keep)) want.push({ column: l + 1, q, k: e.k, weight: e.v });
          }
        });
        expect(layout.totalEdges).toBe(nonzero);
        expect(layout.edges).toEqual(want);
      });
    }
});
