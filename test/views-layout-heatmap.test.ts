/**
 * Heatmap layout on small hand-made traces: the values it paints against a float64
 * re-computation, masked cells, the sentence-pair and prompt | generation boundaries, the cell
 * and label-font rules, filling a frame, and what the SVG writer makes of it (masked cells blank
 * with a "masked" tooltip, token text escaped).
 */
import { describe, expect, it } from 'vitest';
import { CELL_FONT, type Item, type MatrixItem, type TextItem, extent } from '../src/views/layout/common.js';
import { heatmapLayout, matrixGridLayout } from '../src/views/layout/heatmap.js';
import { renderHeatmap } from '../src/views/svg/heatmap.js';
import { LAYOUT, LIGHT } from '../src/views/theme.js';
import { handTrace } from './helpers/hand-trace.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

const WORDS = ['The', 'cat', 'sat', 'down', 'today'];
const words40 = () => Array.from({ length: 40 }, (_, i) => `w${i}`);

/** Causal weight q → k of head h, float64: (k + 1 + h) / Σ_{j ≤ q} (j + 1 + h). */
function causal(h: number, q: number, k: number): number {
  if (k > q) return 0;
  let s = 0;
  for (let j = 0; j <= q; j++) s += j + 1 + h;
  return (k + 1 + h) / s;
}

const matrices = (items: readonly Item[]) => items.filter((it): it is MatrixItem => it.kind === 'matrix');
const texts = (items: readonly Item[], cls: string) => items.filter((it): it is TextItem => it.kind === 'text' && (it.className ?? '').split(' ').includes(cls));
const lines = (items: readonly Item[], cls: string) => items.filter((it) => it.kind === 'line' && it.className === cls);

describe('heatmap layout', () => {
  it('paints one head: the trace weights, masked cells where the causal mask is, labels at 0.62 of a cell', () => {
    const trace = handTrace(WORDS, { heads: 2 });
    const L = heatmapLayout(trace, { layer: 1, head: 1 });
    const [m] = matrices(L.items);
    expect(m).toBeDefined();
    const n = WORDS.length;
    expect([m!.rows, m!.cols]).toEqual([n, n]);
    for (let q = 0; q < n; q++) {
      for (let k = 0; k < n; k++) {
        expect(m!.values[q * n + k]).toBeCloseTo(causal(1, q, k), 6);
        expect(m!.masked![q * n + k]).toBe(k > q ? 1 : 0);
      }
    }
    // 5 tokens: full-size cells (22 px), the label font is 0.62 of a cell capped at the body font.
    expect(L.cell).toBe(LAYOUT.heatmap.cell);
    expect(L.labelFont).toBe(Math.min(LAYOUT.fontSize, 22 * CELL_FONT.label));
    expect(L.labelStep).toBe(1);
    expect(texts(L.items, 'query').map((t) => t.text)).toEqual(WORDS);
    expect(texts(L.items, 'key').every((t) => t.rotate === -90 && t.size === L.labelFont)).toBe(true);
    // Cells large enough carry their value; masked cells never do (the writer skips them).
    expect(m!.valueFont).toBeCloseTo(22 * CELL_FONT.value, 9);
    expect(texts(L.items, 'masked-note')).toHaveLength(1);
    // The matrix sits inside the picture.
    const e = extent(L.items);
    expect(e.right).toBeLessThanOrEqual(L.width);
    expect(e.bottom).toBeLessThanOrEqual(L.height);
  });

  it('long inputs: smaller cells, labels no smaller than 8 px and thinned so that they never overlap', () => {
    const words = Array.from({ length: 200 }, (_, i) => `w${i}`);
    const trace = handTrace(words, { heads: 1, layers: 1 });
    const L = heatmapLayout(trace, { head: 0 });
    expect(L.cell).toBeCloseTo(LAYOUT.heatmap.maxMatrix / 200, 9);
    expect(L.labelFont).toBe(CELL_FONT.minLabel);
    const qs = texts(L.items, 'query');
    expect(L.labelStep).toBe(Math.ceil((CELL_FONT.minLabel * 1.1) / L.cell));
    expect(qs).toHaveLength(Math.ceil(200 / L.labelStep));
    for (let i = 1; i < qs.length; i++) expect(qs[i]!.y - qs[i - 1]!.y).toBeGreaterThanOrEqual(qs[i]!.size);
  });

  it('fills a frame: cells grow to maxCell or to what the frame holds, and stay inside it', () => {
    const trace = handTrace(WORDS, { heads: 2 });
    const big = heatmapLayout(trace, { head: 0 }, { frame: { width: 1400, height: 900 }, maxCell: 36 });
    expect(big.cell).toBe(36);
    expect(big.labelFont).toBe(LAYOUT.fontSize);
    expect(big.width).toBeLessThanOrEqual(1400);
    const words = Array.from({ length: 40 }, (_, i) => `w${i}`);
    const tight = heatmapLayout(handTrace(words, { heads: 1, layers: 1 }), { head: 0 }, { frame: { width: 1400, height: 700 }, maxCell: 36 });
    expect(tight.cell).toBeLessThan(36);
    expect(tight.originY + tight.mh).toBeLessThanOrEqual(700);
  });

  it('marks where sentence B starts on both axes, in every matrix', () => {
    const trace = handTrace(['[CLS]', 'a', 'b', '[SEP]', 'c', 'd', '[SEP]'], { heads: 3, layers: 1, special: [0, 3, 6], segments: [0, 0, 0, 0, 1, 1, 1], weight: () => 1 });
    const one = heatmapLayout(trace, { head: 2 });
    const pair = lines(one.items, 'pair-boundary');
    expect(pair.map((l) => l.data!.axis).sort()).toEqual(['key', 'query']);
    const m = matrices(one.items)[0]!;
    for (const l of pair) {
      if (l.kind !== 'line') continue;
      if (l.data!.axis === 'query') expect(l.y1).toBeCloseTo(m.y + 4 * one.cell, 9);
      else expect(l.x1).toBeCloseTo(m.x + 4 * one.cell, 9);
    }
    // No mask in a bidirectional encoder: nothing blank.
    expect(m.masked).toBeUndefined();
    const all = heatmapLayout(trace, {});
    expect(lines(all.items, 'pair-boundary')).toHaveLength(2 * 3);
    expect(matrices(all.items)).toHaveLength(3);
    // Small multiples: labels at least 8 px (thinned rather than shrunk).
    expect(all.labelFont).toBeGreaterThanOrEqual(CELL_FONT.minSmallLabel);
    const many = heatmapLayout(handTrace(words40(), { heads: 4, layers: 1 }), {});
    expect(many.labelFont).toBe(CELL_FONT.minSmallLabel);
    expect(texts(many.items, 'query')).toHaveLength(Math.ceil(40 / many.labelStep));
  });

  it('marks where the generated tokens start (dashed) and outlines the newest row at a step', () => {
    const trace = handTrace(['a', 'b', 'c', 'd', 'e', 'f'], {
      heads: 1,
      layers: 1,
      generatedFrom: 3,
      generation: { strategy: 'greedy', promptLength: 3, steps: [0.5, 0.25, 0.125].map((probability, i) => ({ id: i, probability })), stoppedBy: 'length' },
    });
    const L = heatmapLayout(trace, { head: 0 });
    const b = lines(L.items, 'prompt-boundary');
    expect(b.map((l) => l.data!.axis).sort()).toEqual(['key', 'query']);
    expect(b.every((l) => l.kind === 'line' && l.dash !== undefined)).toBe(true);
  });

  it('mean over heads: the float64 mean of the heads', () => {
    const trace = handTrace(WORDS, { heads: 3 });
    const m = matrices(heatmapLayout(trace, { layer: 0, aggregate: 'mean' }).items)[0]!;
    const n = WORDS.length;
    for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) expect(m.values[q * n + k]).toBeCloseTo((causal(0, q, k) + causal(1, q, k) + causal(2, q, k)) / 3, 6);
  });

  it('the grid layout the page uses gives the same geometry as the export for the same input', () => {
    const trace = handTrace(WORDS, { heads: 2 });
    const L = heatmapLayout(trace, { head: 0 });
    const m = matrices(L.items)[0]!;
    const again = matrixGridLayout({
      matrices: [{ values: m.values as Float32Array }],
      rows: WORDS.map((label) => ({ label, special: false, generated: false, segment: 0 })),
      cols: WORDS.map((label) => ({ label, special: false, generated: false, segment: 0 })),
      theme: LIGHT,
      log: false,
      caption: 'attention weight',
      axes: { query: 'queries', key: 'keys' },
      newest: null,
      masked: m.masked,
    });
    expect([again.cell, again.originX, again.originY, again.labelFont, again.width, again.height]).toEqual([L.cell, L.originX, L.originY, L.labelFont, L.width, L.height]);
  });
});

describe('heatmap SVG', () => {
  it('masked cells are blank, say "masked" in their tooltip and carry no value', () => {
    const trace = handTrace(WORDS, { heads: 2 });
    const root = parseXml(renderHeatmap(trace, { layer: 0, head: 0 }));
    const cells = findAll(root, 'rect', (a) => a['data-q'] !== undefined && a['data-k'] !== undefined && a.class === undefined);
    expect(cells).toHaveLength(25);
    for (const c of cells) {
      const q = Number(c.attrs['data-q']);
      const k = Number(c.attrs['data-k']);
      const title = textOf(c.children.find((x) => x.name === 'title')!);
      if (k > q) {
        expect(c.attrs['data-masked']).toBe('true');
        expect(c.attrs.fill).toBe(LIGHT.background);
        expect(title).toBe('masked');
      } else {
        expect(c.attrs['data-masked']).toBeUndefined();
        expect(Number(title)).toBeCloseTo(causal(0, q, k), 3);
      }
    }
    // One value per unmasked cell of at least 0.005 (all of them here), none in masked cells.
    const values = findAll(root, 'text', (a) => a['text-anchor'] === 'middle' && a['pointer-events'] === 'none');
    expect(values).toHaveLength(15);
  });

  it('escapes token text', () => {
    const trace = handTrace(['<script>&', 'b', '"c\'', 'd'], { heads: 1, layers: 1 });
    const svg = renderHeatmap(trace, { head: 0 });
    expect(svg).not.toContain('<script');
    expect(svg).toContain('&lt;script&gt;&amp;');
    const root = parseXml(svg);
    expect(findAll(root, 'text', (a) => a.class === 'token query').map(textOf)[0]).toBe('<script>&');
  });
});
