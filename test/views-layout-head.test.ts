/**
 * Head-view layout on small hand-made traces: filling a frame, label fonts, the line cap (the
 * strongest lines, checked against a float64 re-computation of the weights) and its caption,
 * focus, per-head offsets, sentence-pair marks, and the SVG writer's escaping.
 */
import { describe, expect, it } from 'vitest';
import { type Item, type LineItem, type TextItem, extent } from '../src/views/layout/common.js';
import { DEFAULT_MAX_LINES, headFocus, headViewLayout } from '../src/views/layout/head-view.js';
import { renderHeadView } from '../src/views/svg/head-view.js';
import { handTrace } from './helpers/hand-trace.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

const words = (n: number) => Array.from({ length: n }, (_, i) => `w${i}`);

/** Causal weight q → k of head h, float64 (the hand trace's rule). */
function causal(h: number, q: number, k: number): number {
  if (k > q) return 0;
  let s = 0;
  for (let j = 0; j <= q; j++) s += j + 1 + h;
  return (k + 1 + h) / s;
}

const labels = (items: readonly Item[], side: 'query' | 'key') =>
  items.filter((it): it is TextItem => it.kind === 'text' && (it.className ?? '').split(' ').includes('token') && (it.className ?? '').split(' ').includes(side));

describe('head-view layout', () => {
  it('fills the frame it is given: the full width, rows grown to the height, the gap widened', () => {
    const trace = handTrace(words(16), { heads: 4 });
    const L = headViewLayout(trace, {}, { width: 1400, height: 900, minRow: 12, maxRow: 30, blocksBothSides: true });
    expect(L.width).toBe(1400);
    expect(L.rowHeight).toBe(30);
    expect(L.fontSize).toBe(15);
    // The diagram spans most of the width, centred.
    const xs = L.frame.flatMap((it) => (it.kind === 'text' && it.className?.startsWith('token') ? [it.anchor === 'end' ? it.x - 40 : it.x + 40] : []));
    const left = Math.min(...xs);
    const right = Math.max(...xs);
    expect(right - left).toBeGreaterThan(0.55 * 1400);
    expect(Math.abs(left - (1400 - right))).toBeLessThan(0.15 * 1400);
    expect(L.lineX2 - L.lineX1).toBeGreaterThan(600);
    expect(extent(L.items).right).toBeLessThanOrEqual(1400);
    // A long input in the same frame: rows at the page's minimum, every token labelled.
    const long = headViewLayout(handTrace(words(200), { heads: 1, layers: 1 }), {}, { width: 1400, height: 900, minRow: 12, maxRow: 30 });
    expect(long.rowHeight).toBe(12);
    expect(labels(long.frame, 'query')).toHaveLength(200);
  });

  it('exports: 22 px rows and a 13.2 px font for short inputs; long inputs in one picture with every n-th label', () => {
    const L = headViewLayout(handTrace(words(10), { heads: 2 }), {});
    expect(L.rowHeight).toBe(22);
    expect(L.fontSize).toBeCloseTo(13.2, 9);
    expect(labels(L.frame, 'query').every((t) => t.size === L.fontSize)).toBe(true);
    const long = headViewLayout(handTrace(words(512), { heads: 1, layers: 1, weight: (_l, _h, q, k) => (k <= q ? 1 : 0) }), {});
    expect(long.rowHeight).toBe(3);
    expect(long.fontSize).toBe(8);
    const shown = labels(long.frame, 'key');
    const step = Math.ceil((8 * 1.1) / 3);
    expect(shown).toHaveLength(Math.ceil(512 / step));
    for (let i = 1; i < shown.length; i++) expect(shown[i]!.y - shown[i - 1]!.y).toBeGreaterThanOrEqual(8);
    expect(long.height).toBeLessThan(1700);
  });

  it('draws at most maxLines lines, the strongest, weakest first, and says so in the caption; allLines draws every one', () => {
    const n = 30;
    const H = 2;
    const trace = handTrace(words(n), { heads: H, layers: 1 });
    const all: { w: number; key: string }[] = [];
    for (let h = 0; h < H; h++) for (let q = 0; q < n; q++) for (let k = 0; k <= q; k++) all.push({ w: causal(h, q, k), key: `${h}:${q}:${k}` });
    expect(all).toHaveLength(930);
    const L = headViewLayout(trace, { maxLines: 100 });
    expect(L.lines).toHaveLength(100);
    expect(L.stats).toMatchObject({ drawn: 100, total: 930, capped: true });
    const sorted = all.map((x) => x.w).sort((a, b) => b - a);
    const cutoff = sorted[99]!;
    for (const l of L.lines) {
      const w = causal(Number(l.data!.head), Number(l.data!.q), Number(l.data!.k));
      expect(w).toBeGreaterThanOrEqual(cutoff - 1e-6);
      expect(l.opacity).toBeCloseTo(w, 6);
    }
    const ops = L.lines.map((l) => l.opacity!);
    expect(ops.every((o, i) => i === 0 || o >= ops[i - 1]!)).toBe(true);
    expect(L.caption).toMatch(/^lines: the 100 strongest of 930 weights \(≥ 0\.\d+\) · opacity = weight$/);
    expect(L.frame.some((it) => it.kind === 'text' && it.className === 'lines-caption' && it.text === L.caption)).toBe(true);
    // The default cap, and allLines.
    expect(DEFAULT_MAX_LINES).toBe(1000);
    expect(headViewLayout(trace, {}).lines).toHaveLength(930);
    expect(headViewLayout(trace, {}).caption).toBe('lines: all 930 nonzero weights · opacity = weight');
    const big = handTrace(words(40), { heads: 2, layers: 1 });
    expect(headViewLayout(big, {}).lines).toHaveLength(1000);
    expect(headViewLayout(big, { allLines: true }).lines).toHaveLength(2 * (40 * 41) / 2);
  });

  it('a focused token gets all of its lines, a highlight and per-head weight blocks (values with one head)', () => {
    const trace = handTrace(words(12), { heads: 3, layers: 1 });
    const L = headViewLayout(trace, { query: 7, maxLines: 5 });
    expect(L.lines).toHaveLength(3 * 8); // causal: keys 0..7, every head, not capped
    expect(L.lines.every((l) => l.data!.q === 7)).toBe(true);
    expect(L.under.filter((it) => it.className === 'focus-highlight')).toHaveLength(1);
    expect(L.over.filter((it) => it.className === 'weight-block')).toHaveLength(3 * 12);
    expect(L.over.filter((it) => it.className === 'weight-value')).toHaveLength(0);
    const key = headFocus(L, { side: 'key', index: 2 });
    expect(key.lines).toHaveLength(3 * 10); // queries 2..11 see key 2
    const one = headViewLayout(trace, { query: 4, heads: [1] });
    const values = one.over.filter((it): it is TextItem => it.className === 'weight-value');
    expect(values).toHaveLength(12);
    for (const v of values) expect(Number(v.data!.value)).toBeCloseTo(causal(1, 4, Number(v.data!.k)), 6);
  });

  it('gives each head its own offset within a row, so that their lines do not lie on top of each other', () => {
    const trace = handTrace(words(6), { heads: 4, layers: 1 });
    const L = headViewLayout(trace, {});
    const offsets = [0, 1, 2, 3].map((h) => L.headOffset[h]!);
    expect(new Set(offsets).size).toBe(4);
    expect(Math.max(...offsets) - Math.min(...offsets)).toBeLessThanOrEqual(L.rowHeight * 0.55 + 1e-9);
    const byHead = new Map<number, LineItem>();
    for (const l of L.lines) if (l.data!.q === 3 && l.data!.k === 1) byHead.set(Number(l.data!.head), l);
    expect(new Set([...byHead.values()].map((l) => l.y1)).size).toBe(4);
    // One head: no offset.
    expect(headViewLayout(trace, { heads: [2] }).headOffset[2]).toBe(0);
  });

  it('marks the sentences of a pair beside both columns', () => {
    const trace = handTrace(['[CLS]', 'a', '[SEP]', 'b', '[SEP]'], { heads: 1, layers: 1, special: [0, 2, 4], segments: [0, 0, 0, 1, 1], weight: () => 1 });
    const L = headViewLayout(trace, {});
    const bars = L.frame.filter((it) => it.className === 'segment-bar');
    expect(bars.map((b) => b.data!.segment)).toEqual(['A', 'B', 'A', 'B']);
    expect(headViewLayout(trace, { pair: 'A→B', allLines: true }).lines.every((l) => Number(l.data!.q) <= 2 && Number(l.data!.k) >= 3)).toBe(true);
  });
});

describe('head-view SVG', () => {
  it('escapes token text and draws the caption', () => {
    const trace = handTrace(['<script>&', 'b', '"c\'', 'd'], { heads: 2, layers: 1 });
    const svg = renderHeadView(trace, {});
    expect(svg).not.toContain('<script');
    expect(svg).toContain('&lt;script&gt;&amp;');
    const root = parseXml(svg);
    expect(findAll(root, 'text', (a) => a.class === 'token query').map(textOf)[0]).toBe('<script>&');
    expect(findAll(root, 'text', (a) => a.class === 'lines-caption').map(textOf)).toEqual(['lines: all 20 nonzero weights · opacity = weight']);
  });
});
