/**
 * Head-type grid layout on hand traces with planted heads (previous-token, sink, self, broad, a
 * weak previous-token head and one of no type): every cell's type, colour and shade against the top
 * types computed independently here in float64 from the hand-written weights (scores of the types
 * these traces can show, top type = largest score / threshold at or above 1), the legend's counts,
 * the grid geometry and data attributes the page reads, the selected outline, and what the SVG
 * writer makes of it (names escaped, renderSvg('types')).
 */
import { describe, expect, it } from 'vitest';
import { HEAD_TYPE_NAMES, HEAD_TYPE_THRESHOLDS, type HeadTypeName, headTable } from '../src/analysis/head-types.js';
import { type Item, type RectItem, type TextItem } from '../src/views/layout/common.js';
import { HEAD_TYPE_COLORS, TYPE_MIN_OPACITY, headTypesLayout } from '../src/views/layout/head-types.js';
import { renderSvg } from '../src/views/svg/index.js';
import { renderHeadTypeGrid } from '../src/views/svg/head-types.js';
import { DARK, LIGHT } from '../src/views/theme.js';
import { handTrace } from './helpers/hand-trace.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

const N = 10;
const LAYERS = 2;
const HEADS = 3;

/** Planted heads: [layer][head] → unnormalised weight of q on k ≤ q (every visible key gets at least 0.01). */
function planted(l: number, h: number, q: number, k: number): number {
  if (k > q) return 0;
  const base = 0.01;
  const kind = PLAN[l]![h]!;
  switch (kind) {
    case 'prev':
      return base + (k === q - 1 ? 1 : 0);
    case 'sink':
      return base + (k === 0 ? 1 : 0);
    case 'uniform':
      return 1;
    case 'self':
      return base + (k === q ? 1 : 0);
    case 'weak-prev':
      // Half on the previous token, the rest spread evenly.
      return k === q - 1 ? Math.max(1, q - 1) : 1;
    case 'far':
      // Mostly on the key four back (key 0 while q < 4), a little everywhere: no type.
      return base + (k === Math.max(0, q - 4) ? 0.5 : 0) + 0.08;
  }
}
type Plan = 'prev' | 'sink' | 'uniform' | 'self' | 'weak-prev' | 'far';
const PLAN: Plan[][] = [
  ['prev', 'sink', 'uniform'],
  ['self', 'weak-prev', 'far'],
];

/** Independent float64 scores of the types a causal trace without specials, punctuation or repeats can show. */
function expectedTop(l: number, h: number): { type: HeadTypeName | null; score: number } {
  const s: Record<string, number> = { previous_token: 0, self: 0, sink: 0, local: 0, broad: 0 };
  let rows = 0;
  for (let q = 1; q < N; q++) {
    let sum = 0;
    for (let k = 0; k <= q; k++) sum += planted(l, h, q, k);
    const w = (k: number) => (k >= 0 && k <= q ? planted(l, h, q, k) / sum : 0);
    s.previous_token! += w(q - 1);
    s.self! += w(q);
    s.sink! += w(0);
    for (let k = q - 2; k <= q + 2; k++) s.local! += w(k);
    let ent = 0;
    for (let k = 0; k <= q; k++) if (w(k) > 0) ent -= w(k) * Math.log(w(k));
    s.broad! += ent / Math.log(q + 1);
    rows++;
  }
  let best: HeadTypeName | null = null;
  let ratio = 1;
  for (const t of HEAD_TYPE_NAMES) {
    if (!(t in s)) continue;
    const v = s[t]! / rows;
    const r = v / HEAD_TYPE_THRESHOLDS[t];
    if (r >= ratio && !(best !== null && r === ratio)) {
      best = t;
      ratio = r;
    }
  }
  return { type: best, score: best === null ? NaN : s[best]! / rows };
}

const words = ['once', 'upon', 'a', 'time', 'there', 'was', 'little', 'girl', 'named', 'lily'];
const trace = (name?: string) => handTrace(words.slice(0, N), { layers: LAYERS, heads: HEADS, weight: planted, ...(name ? { name } : {}) });

const cellsOf = (items: readonly Item[]) => items.filter((it): it is RectItem => it.kind === 'rect' && (it.className ?? '').split(' ').includes('type-cell'));
const texts = (items: readonly Item[], cls: string) => items.filter((it): it is TextItem => it.kind === 'text' && it.className === cls);

describe('head types grid layout', () => {
  const table = headTable(trace(), 'self');
  const expected = Array.from({ length: LAYERS * HEADS }, (_, i) => expectedTop(Math.floor(i / HEADS), i % HEADS));

  it('the planted heads get their types (independent float64 scores), one of none', () => {
    expect(expected.map((e) => e.type)).toEqual(['previous_token', 'sink', 'broad', 'self', 'previous_token', null]);
    // And the table the grid paints agrees with them.
    table.forEach((r, i) => {
      expect(r.top_type).toBe(expected[i]!.type);
      if (expected[i]!.type) expect(r.top_score).toBeCloseTo(expected[i]!.score, 5);
    });
  });

  it('cells: one per head, layer rows and head columns, coloured and shaded by the top type', () => {
    const L = headTypesLayout(table, LIGHT);
    expect(L.layers).toBe(LAYERS);
    expect(L.heads).toBe(HEADS);
    const rects = cellsOf(L.items);
    expect(rects).toHaveLength(LAYERS * HEADS);
    rects.forEach((r, i) => {
      const layer = Math.floor(i / HEADS);
      const head = i % HEADS;
      const e = expected[i]!;
      expect(r.data).toEqual({ layer, head, type: e.type ?? '' });
      expect(r.x).toBeCloseTo(L.grid.x + head * L.cell + 0.5, 9);
      expect(r.y).toBeCloseTo(L.grid.y + layer * L.cell + 0.5, 9);
      if (e.type === null) {
        // Neutral: not filled over the panel-coloured ground, a grid-coloured frame.
        expect(r.fill).toBeNull();
        expect(r.className).toContain('untyped');
        expect(r.stroke).toBe(LIGHT.grid);
      } else {
        expect(r.fill).toBe(HEAD_TYPE_COLORS[e.type]);
        const thr = HEAD_TYPE_THRESHOLDS[e.type];
        const strength = Math.min(1, Math.max(0, (e.score - thr) / (1 - thr)));
        expect(r.fillOpacity).toBeCloseTo(TYPE_MIN_OPACITY + (1 - TYPE_MIN_OPACITY) * strength, 3);
        expect(r.tip).toContain(`${e.type} ${e.score.toFixed(2)}`);
      }
    });
    // The strong previous-token head is shaded more than the weak one.
    expect(rects[0]!.fillOpacity!).toBeGreaterThan(rects[4]!.fillOpacity!);
    // Large cells name the type and write its score; untyped cells a dash.
    expect(texts(L.items, 'cell-type').map((t) => t.text)).toEqual(['prev', 'sink', 'broad', 'self', 'prev', '–']);
    expect(texts(L.items, 'cell-score').map((t) => t.text)).toEqual(expected.filter((e) => e.type).map((e) => e.score.toFixed(2)));
    // Axis labels.
    expect(texts(L.items, 'row-label').map((t) => t.text)).toEqual(['L0', 'L1']);
    expect(texts(L.items, 'col-label').map((t) => t.text)).toEqual(['H0', 'H1', 'H2']);
    // Type colours are distinct from each other and from the neutral panel.
    const colours = HEAD_TYPE_NAMES.map((t) => HEAD_TYPE_COLORS[t].toLowerCase());
    expect(new Set(colours).size).toBe(HEAD_TYPE_NAMES.length);
    expect(colours).not.toContain(LIGHT.panel.toLowerCase());
  });

  it('legend: every type with its threshold and count ("none" too), and the untyped heads', () => {
    const L = headTypesLayout(table, DARK);
    const lines = texts(L.items, 'type-name').map((t) => t.text);
    expect(lines).toHaveLength(HEAD_TYPE_NAMES.length + 1);
    const count = (t: HeadTypeName | null) => expected.filter((e) => e.type === t).length;
    HEAD_TYPE_NAMES.forEach((t, i) => {
      const n = count(t);
      expect(lines[i]).toBe(`${t} ≥ ${HEAD_TYPE_THRESHOLDS[t]}${t === 'broad' ? ' (entropy)' : ''} · ${n === 0 ? 'none' : `${n} head${n === 1 ? '' : 's'}`}`);
    });
    expect(lines.at(-1)).toBe('no type (nothing reaches its threshold) · 1 head');
    expect(L.untyped).toBe(1);
    expect(L.counts.previous_token).toBe(2);
    const swatches = L.items.filter((it): it is RectItem => it.kind === 'rect' && (it.className ?? '').startsWith('legend-swatch'));
    expect(swatches.map((s) => s.fill)).toEqual([...HEAD_TYPE_NAMES.map((t) => HEAD_TYPE_COLORS[t]), DARK.panel]);
    // Legend right of the grid, inside the picture.
    for (const s of swatches) expect(s.x).toBeGreaterThan(L.grid.x + L.grid.width);
    for (const t of texts(L.items, 'type-name')) expect(t.x).toBeLessThan(L.width);
  });

  it('the selected head is outlined; small frames shrink the cells and drop the cell texts', () => {
    const L = headTypesLayout(table, LIGHT, { selected: { layer: 1, head: 2 } });
    const sel = cellsOf(L.items).filter((r) => (r.className ?? '').includes('selected'));
    expect(sel.map((r) => r.data)).toEqual([{ layer: 1, head: 2, type: '' }]);
    expect(sel[0]!.stroke).toBe(LIGHT.text);
    const small = headTypesLayout(table, LIGHT, { frame: { width: 380, height: 300 } });
    expect(small.cell).toBeLessThan(24);
    expect(texts(small.items, 'cell-type')).toHaveLength(0);
    expect(cellsOf(small.items)).toHaveLength(LAYERS * HEADS);
  });

  it('SVG: title escaped, cells with their data and tooltips; renderSvg("types") on a trace', () => {
    const svg = renderHeadTypeGrid(table, { title: 'T <1> & "x"' });
    const doc = parseXml(svg);
    expect(findAll(doc, 'text').map(textOf)).toContain('T <1> & "x"');
    expect(svg).not.toContain('T <1>');
    const rects = findAll(doc, 'rect', (a) => (a.class ?? '').startsWith('type-cell'));
    expect(rects.map((r) => `${r.attrs['data-layer']}.${r.attrs['data-head']}.${r.attrs['data-type']}`)).toEqual(
      expected.map((e, i) => `${Math.floor(i / HEADS)}.${i % HEADS}.${e.type ?? ''}`),
    );
    // Tooltips (<title> beside each cell).
    const tips = findAll(doc, 'title').map(textOf);
    expect(tips.some((t) => t.startsWith('L0 H0 · previous_token '))).toBe(true);
    expect(tips).toContain('L1 H2 · no type');

    const named = renderSvg('types', trace('m<o>del & co'));
    const d2 = parseXml(named);
    expect(findAll(d2, 'text').map(textOf)[0]).toBe(`m<o>del & co · self-attention · head types on the text (${N} tokens)`);
    expect(named).not.toContain('m<o>');
    expect(findAll(d2, 'rect', (a) => (a.class ?? '').startsWith('type-cell'))).toHaveLength(LAYERS * HEADS);
  });
});
