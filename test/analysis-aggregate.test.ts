/**
 * src/analysis/aggregate.ts on hand-made traces: head aggregates against float64 sums, masks from
 * recorded score terms (causal, sliding window) and inferred from exact zeros, regrouped masks,
 * the pair boundary, and the strongest weights against a full sort.
 */
import { describe, expect, it } from 'vitest';
import { aggregateHeads, maskedEntries, pairBoundary, regroupMask, stackFacts, strongestWeights } from '../src/analysis/aggregate.js';
import { handTrace } from './helpers/hand-trace.js';

describe('aggregate', () => {
  it('mean and max over heads', () => {
    const layer = Float32Array.from([0.1, 0.9, 0.5, 0.5, /* head 1 */ 0.3, 0.7, 0.2, 0.8, /* head 2 */ 0.6, 0.4, 0.9, 0.1]);
    const mean = aggregateHeads(layer, 3, 2, 2, 'mean');
    const max = aggregateHeads(layer, 3, 2, 2, 'max');
    const expectMean = [(0.1 + 0.3 + 0.6) / 3, (0.9 + 0.7 + 0.4) / 3, (0.5 + 0.2 + 0.9) / 3, (0.5 + 0.8 + 0.1) / 3];
    expectMean.forEach((v, i) => expect(mean[i]).toBeCloseTo(v, 6));
    expect(Array.from(max)).toEqual([0.6, 0.9, 0.9, 0.8].map(Math.fround));
    expect(Array.from(aggregateHeads(layer, 3, 2, 2, 'max', [0, 1]))).toEqual([0.3, 0.9, 0.5, 0.8].map(Math.fround));
  });

  it('masks: from the score terms (causal, sliding window), else exact zeros in every head', () => {
    const trace = handTrace(['a', 'b', 'c', 'd', 'e'], { heads: 2, layers: 2 });
    const inferred = maskedEntries(trace, 'self', 0)!;
    for (let q = 0; q < 5; q++) for (let k = 0; k < 5; k++) expect(inferred[q * 5 + k]).toBe(k > q ? 1 : 0);
    expect(stackFacts(trace, 'self')).toMatchObject({ layers: 2, heads: 2, queries: 5, keys: 5, causal: true });
    trace.scores = { self: { scale: [0.5, 0.5], causal: true, window: [null, 2] } };
    const win = maskedEntries(trace, 'self', 1)!;
    for (let q = 0; q < 5; q++) for (let k = 0; k < 5; k++) expect(win[q * 5 + k]).toBe(k > q || q - k >= 2 ? 1 : 0);
    const bidirectional = handTrace(['a', 'b', 'c'], { heads: 1, layers: 1, weight: () => 1 });
    expect(maskedEntries(bidirectional, 'self', 0)).toBeNull();
    expect(stackFacts(bidirectional, 'self').causal).toBe(false);
  });

  it('regroups a mask to merged tokens: masked only when every entry is', () => {
    // 3 positions, causal; display: [0], [1, 2].
    const mask = Uint8Array.from([0, 1, 1, 0, 0, 1, 0, 0, 0]);
    expect(Array.from(regroupMask(mask, 3, [[0], [1, 2]], [[0], [1, 2]]))).toEqual([0, 1, 0, 0]);
  });

  it('pair boundary: the first token of sentence B', () => {
    expect(pairBoundary([0, 0, 0, 1, 1])).toBe(3);
    expect(pairBoundary([0, 0])).toBeNull();
  });

  it('strongest weights: the top n of a full sort, weakest first, ties by index, floor and candidates respected', () => {
    let seed = 11;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const w = Float32Array.from({ length: 5000 }, () => (rand() < 0.3 ? 0 : rand() ** 3));
    w[10] = w[20] = w[30] = 0.999; // ties
    const s = strongestWeights(w, 100);
    const ref = Array.from(w.keys()).filter((i) => w[i]! > 0).sort((a, b) => w[b]! - w[a]! || a - b).slice(0, 100);
    expect(Array.from(s.indices).sort((a, b) => a - b)).toEqual([...ref].sort((a, b) => a - b));
    expect(s.total).toBe(Array.from(w).filter((v) => v > 0).length);
    expect(s.cutoff).toBe(w[ref[99]!]);
    for (let i = 1; i < s.indices.length; i++) expect(w[s.indices[i]!]! >= w[s.indices[i - 1]!]!).toBe(true);
    const floor = strongestWeights(w, 1e9, 0.5);
    expect(floor.indices.length).toBe(Array.from(w).filter((v) => v > 0.5).length);
    const cands = Int32Array.from([10, 20, 30, 40]);
    expect(Array.from(strongestWeights(w, 2, 0, cands).indices).sort()).toEqual([10, 20]);
  });
});
