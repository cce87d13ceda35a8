/**
 * src/analysis/flow.ts: Dinic's max-flow against the minimum cut found by enumerating every s–t
 * cut (random small layered graphs and random digraphs, fast-check), and attention flow on hand
 * cases where the max-flow is worked out on paper.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FlowNetwork, attentionFlow, attentionFlowOfMatrices, layeredNetwork, layeredNode } from '../src/analysis/flow.js';
import { handTrace } from './helpers/hand-trace.js';

/** The minimum over all node sets S ∋ s, ∌ t of the capacity leaving S (brute force). */
function minCut(numNodes: number, edges: readonly (readonly [number, number, number])[], s: number, t: number): number {
  const others = Array.from({ length: numNodes }, (_, i) => i).filter((i) => i !== s && i !== t);
  let best = Infinity;
  for (let mask = 0; mask < 1 << others.length; mask++) {
    const inS = new Set([s, ...others.filter((_, b) => (mask >> b) & 1)]);
    let cut = 0;
    for (const [u, v, c] of edges) if (inS.has(u) && !inS.has(v)) cut += c;
    best = Math.min(best, cut);
  }
  return best;
}

/** Edges of a layered graph built the way flow.ts documents it, written out here independently. */
function layeredEdges(layers: number[][], n: number): [number, number, number][] {
  const edges: [number, number, number][] = [];
  layers.forEach((a, l) => {
    for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) if (a[q * n + k]! > 0) edges.push([(l + 1) * n + q, l * n + k, a[q * n + k]!]);
  });
  return edges;
}

const capacity = fc.oneof(fc.constant(0), fc.double({ min: 0.01, max: 1, noNaN: true }));

describe('max-flow', () => {
  it('a textbook graph', () => {
    const net = new FlowNetwork(4, [
      [0, 1, 3],
      [0, 2, 2],
      [1, 2, 1],
      [1, 3, 2],
      [2, 3, 3],
    ]);
    expect(net.maxFlow(0, 3)).toBeCloseTo(5, 12);
    expect(net.maxFlow(3, 0)).toBe(0);
    expect(net.maxFlow(1, 3)).toBeCloseTo(3, 12);
  });

  it('equals the minimum cut of random layered graphs (every cut enumerated)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 3 }).chain((n) =>
          fc.record({
            n: fc.constant(n),
            layers: fc.array(fc.array(capacity, { minLength: n * n, maxLength: n * n }), { minLength: 1, maxLength: 3 }),
            i: fc.nat(n - 1),
            j: fc.nat(n - 1),
          }),
        ),
        ({ n, layers, i, j }) => {
          const L = layers.length;
          const net = layeredNetwork(layers, n);
          const s = layeredNode(L, i, n);
          const t = layeredNode(0, j, n);
          const expected = minCut((L + 1) * n, layeredEdges(layers, n), s, t);
          expect(net.maxFlow(s, t)).toBeCloseTo(expected, 10);
        },
      ),
      { numRuns: 300, seed: 20260 },
    );
  });

  it('equals the minimum cut of random digraphs with cycles and parallel edges', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 7 }).chain((nodes) =>
          fc.record({
            nodes: fc.constant(nodes),
            edges: fc.array(fc.tuple(fc.nat(nodes - 1), fc.nat(nodes - 1), fc.double({ min: 0, max: 5, noNaN: true })), { maxLength: 20 }),
          }),
        ),
        ({ nodes, edges }) => {
          const net = new FlowNetwork(nodes, edges);
          expect(net.maxFlow(0, nodes - 1)).toBeCloseTo(minCut(nodes, edges, 0, nodes - 1), 9);
        },
      ),
      { numRuns: 300, seed: 7 },
    );
  });
});

describe('attention flow', () => {
  it('one layer: the flow is the edge itself', () => {
    const a = [0.7, 0.3, 0.2, 0.8];
    const f = attentionFlowOfMatrices([a], 2);
    expect(Array.from(f.raw[0]!)).toEqual(a);
    expect(Array.from(f.values[0]!).map((v) => Number(v.toFixed(6)))).toEqual(a);
  });

  it('two layers worked by hand (and unlike rollout)', () => {
    // A' = [[1, 0], [0.5, 0.5]] in both layers. From (2, 1): to (0, 0) along (2,1)→(1,0)→(0,0) (0.5)
    // and (2,1)→(1,1)→(0,0) (0.5): 1; to (0, 1) only along (2,1)→(1,1)→(0,1): 0.5.
    // Normalised: [2/3, 1/3] (rollout would say [0.75, 0.25]). From (2, 0): [1, 0].
    const a = [1, 0, 0.5, 0.5];
    const f = attentionFlowOfMatrices([a, a], 2, { allLayers: true });
    expect(f.columns).toEqual([1, 2]);
    expect(Array.from(f.raw[1]!)).toEqual([1, 0, 1, 0.5]);
    expect(f.values[1]![2]).toBeCloseTo(2 / 3, 6);
    expect(f.values[1]![3]).toBeCloseTo(1 / 3, 6);
    expect(Array.from(f.raw[0]!)).toEqual(a);
  });

  it('from a trace: the residual graph of a causal model, masks respected', () => {
    // One head, causal uniform attention: A' = 0.5·A + 0.5·I; one layer: flow = A' rows.
    const trace = handTrace(['a', 'b', 'c'], { layers: 1, heads: 1, weight: (_l, _h, q, k) => (k <= q ? 1 : 0) });
    const f = attentionFlow(trace);
    const expected = [1, 0, 0, 0.25, 0.75, 0, 1 / 6, 1 / 6, 4 / 6];
    expected.forEach((v, i) => expect(f.layers[0]![i]).toBeCloseTo(v, 6));
    // Two causal layers: token 0 only ever reaches token 0.
    const two = attentionFlow(handTrace(['a', 'b', 'c', 'd'], { layers: 2, heads: 2 }));
    for (let i = 0; i < 4; i++) for (let j = i + 1; j < 4; j++) expect(two.layers[0]![i * 4 + j]).toBe(0);
    expect(two.layerOf).toEqual([1]);
  });

  it('refuses graphs above maxNodes with one clear line', () => {
    const trace = handTrace(Array.from({ length: 10 }, (_, i) => `t${i}`), { layers: 3, heads: 1 });
    expect(() => attentionFlow(trace, { maxNodes: 39 })).toThrow(/the graph has 40 nodes \(4 columns × 10 tokens\), above the limit of 39/);
    expect(attentionFlow(trace, { maxNodes: 40 }).layers[0]!.length).toBe(100);
    expect(() => attentionFlowOfMatrices([[1]], 1, { targets: [1] })).toThrow(/token 1 is out of range/);
  });
});
