/**
 * Flow diagram and influence tree layouts (src/views/layout/flow.ts, influence-tree.ts) on
 * hand-made traces: pruning (top-k per receiving token, threshold) against a full sort of the
 * head-fused weights computed here, the highlight's input values against a float64 rollout
 * written here, the highlighted edges leading into the clicked token, caller matrices, and the
 * influence tree's children, depth and path weights.
 */
import { describe, expect, it } from 'vitest';
import type { Trace } from '../src/core/trace.js';
import { flowLayout } from '../src/views/layout/flow.js';
import { influenceTreeLayout } from '../src/views/layout/influence-tree.js';
import { renderFlowView, renderInfluenceTree } from '../src/views/svg/flow.js';
import { handTrace } from './helpers/hand-trace.js';

const N = 6;
const L = 3;
const H = 2;
const weight = (l: number, h: number, q: number, k: number) => (k <= q ? 1 + ((l * 7 + h * 5 + q * 3 + k * 11) % 13) : 0);
const trace: Trace = handTrace(['<s>', 'The', 'cat', 'sat', 'on', 'it'], { layers: L, heads: H, weight, special: [0] });

/** Mean over heads of layer l, computed from the trace's arrays (float64). */
function fused(l: number): number[] {
  const a = trace.attention.self!.layers[l]!;
  return Array.from({ length: N * N }, (_, i) => (a[i]! + a[N * N + i]!) / 2);
}
/** 0.5·F + 0.5·I, rows normalised. */
function residual(l: number): number[] {
  const f = fused(l);
  const out = f.map((v, i) => 0.5 * v + (Math.floor(i / N) === i % N ? 0.5 : 0));
  for (let q = 0; q < N; q++) {
    const s = out.slice(q * N, q * N + N).reduce((a, b) => a + b, 0);
    for (let k = 0; k < N; k++) out[q * N + k]! /= s;
  }
  return out;
}

describe('flow diagram layout', () => {
  it('keeps the k strongest edges per receiving token (attention, fused by mean)', () => {
    const layout = flowLayout(trace, { method: 'attention', keep: 2 });
    expect(layout.columns).toBe(L + 1);
    expect(layout.highlight).toBeNull();
    for (let c = 1; c <= L; c++) {
      const f = fused(c - 1);
      for (let q = 0; q < N; q++) {
        const mine = layout.edges.filter((e) => e.column === c && e.q === q);
        const expected = Array.from({ length: N }, (_, k) => k)
          .filter((k) => f[q * N + k]! > 0)
          .sort((a, b) => f[q * N + b]! - f[q * N + a]! || a - b)
          .slice(0, 2);
        expect(mine.map((e) => e.k)).toEqual(expected);
        for (const e of mine) expect(e.weight).toBeCloseTo(f[q * N + e.k]!, 6);
      }
    }
    // Causal: every nonzero edge counted; the first token has only itself.
    expect(layout.totalEdges).toBe(L * ((N * (N + 1)) / 2));
    expect(layout.edges.filter((e) => e.q === 0).every((e) => e.k === 0)).toBe(true);
    // One line item per kept edge.
    expect(layout.lines.filter((it) => it.className === 'flow-edge')).toHaveLength(layout.edges.length);
  });

  it('a threshold drops weaker edges', () => {
    const layout = flowLayout(trace, { method: 'attention', keep: N, threshold: 0.2 });
    let expected = 0;
    for (let l = 0; l < L; l++) expected += fused(l).filter((v) => v >= 0.2).length;
    expect(layout.edges).toHaveLength(expected);
    expect(layout.edges.every((e) => e.weight >= 0.2 - 1e-7)).toBe(true);
  });

  it('highlighting a token: the input column holds its rollout; the highlighted edges flow into it', () => {
    const layout = flowLayout(trace, { method: 'rollout', query: 4 });
    // Rollout row 4 = e4ᵀ · A'_2 · A'_1 · A'_0, pushed down here by hand.
    let v: number[] = Array.from({ length: N }, (_, i) => (i === 4 ? 1 : 0));
    for (let l = L - 1; l >= 0; l--) {
      const a = residual(l);
      v = Array.from({ length: N }, (_, k) => v.reduce((acc, vq, q) => acc + vq * a[q * N + k]!, 0));
    }
    const hl = layout.highlight!;
    expect([hl.column, hl.token]).toEqual([L, 4]);
    v.forEach((x, k) => expect(hl.inputValues[k]).toBeCloseTo(x, 6));
    expect(v[5]).toBe(0); // causal: nothing from a later token
    // Edges into the clicked token at the top column start at it; every highlighted edge's upper end carries mass.
    expect(hl.edges.filter((e) => e.column === L).every((e) => e.q === 4)).toBe(true);
    expect(hl.edges.filter((e) => e.column === L).length).toBeGreaterThan(0);
    for (const e of hl.edges) expect(hl.mass[e.column]![e.q]).toBeGreaterThan(0);
    const lines = layout.lines.filter((it) => it.className === 'flow-edge highlighted');
    expect(lines).toHaveLength(hl.edges.length);
    // The selected node is marked; the input values are written.
    expect(layout.nodes.filter((it) => it.className === 'flow-node selected').map((it) => it.data)).toEqual([{ column: L, token: 4, mass: 1 }]);
    expect(layout.nodes.filter((it) => it.className === 'input-value')).toHaveLength(N);
  });

  it('attention flow: with one layer the input values are the residual graph row', () => {
    const one = handTrace(['a', 'b', 'c'], { layers: 1, heads: 1, weight: (_l, _h, q, k) => (k <= q ? 1 : 0) });
    const layout = flowLayout(one, { method: 'flow', query: 2 });
    // A' row 2 = 0.5·[1/3, 1/3, 1/3] + 0.5·[0, 0, 1].
    [1 / 6, 1 / 6, 4 / 6].forEach((x, k) => expect(layout.highlight!.inputValues[k]).toBeCloseTo(x, 6));
  });

  it('draws caller matrices (e.g. another measure) and checks their size', () => {
    const m = Float32Array.from({ length: N * N }, (_, i) => (i % N === 0 ? 1 : 0));
    const layout = flowLayout(trace, { matrices: { size: N, layers: [m, m] }, measure: 'to-first matrices', keep: 1 });
    expect(layout.columns).toBe(3);
    expect(layout.edges.every((e) => e.k === 0 && e.weight === 1)).toBe(true);
    expect(layout.nodes.some((it) => it.kind === 'text' && it.text === 'edges: to-first matrices')).toBe(true);
    expect(() => flowLayout(trace, { matrices: { size: 3, layers: [m] } })).toThrow(/3 × 3, the trace has 6 tokens/);
  });

  it('one clear line for bad options', () => {
    expect(() => flowLayout(trace, { keep: 0 })).toThrow(/keep .* positive integer/);
    expect(() => flowLayout(trace, { threshold: 2 })).toThrow(/threshold must be in \[0, 1\]/);
    expect(() => flowLayout(trace, { query: 6 })).toThrow(/token 6 is out of range/);
    expect(() => flowLayout(trace, { hideSpecial: true })).toThrow(/do not apply/);
    expect(() => flowLayout(trace, { method: 'attention', discard: 0.1 })).toThrow(/discard and residual apply to rollout and flow/);
  });

  it('escapes token text in the SVG', () => {
    const evil = handTrace(['<s>', '</text><b>x', 'a&b'], { layers: 1, heads: 1 });
    for (const svg of [renderFlowView(evil, { query: 2 }), renderInfluenceTree(evil, { method: 'attention' })]) {
      expect(svg).not.toContain('<b>');
      expect(svg).toContain('&lt;/text&gt;&lt;b&gt;x');
      expect(svg).toContain('a&amp;b');
    }
  });
});

describe('influence tree layout', () => {
  it('from the last token: its k strongest sources, recursively, with path products', () => {
    const layout = influenceTreeLayout(trace, { method: 'attention', keep: 2, depth: 2 });
    const root = layout.nodes[0]!;
    expect([root.column, root.token, root.depth, root.path]).toEqual([L, N - 1, 0, 1]);
    for (const [i, node] of layout.nodes.entries()) {
      const kids = layout.nodes.filter((c) => c.parent === i);
      if (node.depth === 2) {
        expect(kids).toHaveLength(0);
        continue;
      }
      const f = fused(node.column - 1);
      const expected = Array.from({ length: N }, (_, k) => k)
        .filter((k) => f[node.token * N + k]! > 0)
        .sort((a, b) => f[node.token * N + b]! - f[node.token * N + a]! || a - b)
        .slice(0, 2);
      expect(kids.map((c) => c.token)).toEqual(expected);
      for (const c of kids) {
        expect(c.column).toBe(node.column - 1);
        expect(c.weight).toBeCloseTo(f[node.token * N + c.token]!, 6);
        expect(c.path).toBeCloseTo(node.path * c.weight, 12);
      }
    }
    // A parent sits between its first and last child.
    for (const [i, node] of layout.nodes.entries()) {
      const kids = layout.nodes.filter((c) => c.parent === i);
      if (kids.length) expect(node.y).toBeCloseTo((kids[0]!.y + kids[kids.length - 1]!.y) / 2, 6);
    }
    expect(() => influenceTreeLayout(trace, { depth: L + 1 })).toThrow(/depth must be 1–3/);
  });
});
