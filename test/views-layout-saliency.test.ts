/**
 * Saliency layout on hand-made scores: every token cell's ramp position t = ½ + ½·score/max|row|
 * (per row) or over every row (shared), the end and middle colours of the light theme's diverging
 * ramp (RdBu: #67001f, near-white, #053061), column blocks when the width runs out (every method
 * repeated in each block), the target outline, the note's sums, bad input refused in one line, and
 * the SVG well-formed with a hostile token escaped.
 */
import { describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import type { RectItem, TextItem } from '../src/views/layout/common.js';
import { type SaliencyData, saliencyLayout } from '../src/views/layout/saliency.js';
import { renderSaliency } from '../src/views/svg/saliency.js';
import { parseColor } from '../src/views/colors.js';
import { DARK, LIGHT } from '../src/views/theme.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

const HOSTILE = `<script>&"'`;
const DATA: SaliencyData = {
  tokens: ['The', 'cat', HOSTILE, 'sat'],
  target: 'log p(“ mat” | position 3)',
  targetPosition: 3,
  rows: [
    { method: 'gradient × input', scores: [2, -1, 0, 1] },
    { method: 'integrated gradients', scores: [1, 1, -4, Number.NaN], detail: 'completeness error 0.5%' },
  ],
};

const hex = (c: string) => `#${parseColor(c).map((v) => v.toString(16).padStart(2, '0')).join('')}`;

describe('saliency layout', () => {
  it('scales each row by its own largest |score|: t = 1/2 + score / (2 max)', () => {
    const lay = saliencyLayout(DATA, LIGHT);
    expect(lay.rowMax).toEqual([2, 4]);
    const t = (row: number) => lay.cells.filter((c) => c.row === row).map((c) => c.t);
    expect(t(0)).toEqual([1, 0.25, 0.5, 0.75]);
    expect(t(1).slice(0, 3)).toEqual([0.625, 0.625, 0]);
    // NaN: neutral panel, t = 1/2.
    const nan = lay.cells.find((c) => c.row === 1 && c.position === 3)!;
    expect(nan.t).toBe(0.5);
    expect(nan.color).toBe(LIGHT.panel);
    // RdBu ends and middle: positive = dark red, zero = near white, most negative = dark blue.
    const cell = (row: number, p: number) => lay.cells.find((c) => c.row === row && c.position === p)!;
    expect(hex(cell(0, 0).color)).toBe('#67001f');
    const mid = parseColor(cell(0, 2).color);
    expect(Math.min(...mid)).toBeGreaterThanOrEqual(235);
    expect(Math.max(...mid) - Math.min(...mid)).toBeLessThanOrEqual(6);
    expect(hex(cell(1, 2).color)).toBe('#053061');
  });

  it('shares one scale when asked: t = 1/2 + score / (2 · 4)', () => {
    const lay = saliencyLayout(DATA, LIGHT, { scale: 'shared' });
    expect(lay.rowMax).toEqual([4, 4]);
    expect(lay.cells.filter((c) => c.row === 0).map((c) => c.t)).toEqual([0.75, 0.375, 0.5, 0.625]);
    const caption = lay.items.find((i) => i.className === 'legend-caption') as TextItem;
    expect(caption.text).toBe('attribution (one scale for every row)');
  });

  it('names the target, outlines its position, sums each row in the note; the legend is symmetric', () => {
    const lay = saliencyLayout(DATA, LIGHT);
    const target = lay.items.find((i) => i.className === 'saliency-target') as TextItem;
    expect(target.text).toBe('target: log p(“ mat” | position 3)');
    const outline = lay.items.filter((i) => i.className === 'target-outline') as RectItem[];
    expect(outline).toHaveLength(1);
    const col = lay.cells.filter((c) => c.position === 3);
    expect(outline[0]!.x).toBeLessThanOrEqual(col[0]!.x);
    expect(outline[0]!.x + outline[0]!.width).toBeGreaterThanOrEqual(col[0]!.x + col[0]!.width);
    expect(outline[0]!.y + outline[0]!.height).toBeGreaterThanOrEqual(col[1]!.y + col[1]!.height);
    const notes = lay.items.filter((i) => i.className === 'saliency-note').map((i) => (i as TextItem).text).join(' ');
    expect(notes).toContain('gradient × input: largest |score| 2, sum 2');
    expect(notes).toContain('integrated gradients: largest |score| 4, sum −2, completeness error 0.5%');
    const ticks = lay.items.filter((i) => i.className === 'legend-tick').map((i) => (i as TextItem).text);
    expect(ticks).toEqual(['−1', '−0.5', '0', '0.5', '1']);
  });

  it('wraps columns into blocks within maxWidth, each block with every method', () => {
    const tokens = Array.from({ length: 30 }, (_, i) => `token${i}`);
    const data: SaliencyData = { tokens, target: 'T', rows: [{ method: 'g', scores: tokens.map((_, i) => i - 15) }, { method: 'h', scores: tokens.map(() => 1) }] };
    const lay = saliencyLayout(data, LIGHT, { maxWidth: 500 });
    expect(lay.blocks.length).toBeGreaterThan(1);
    expect(lay.blocks[0]![0]).toBe(0);
    expect(lay.blocks.at(-1)![1]).toBe(30);
    for (let i = 1; i < lay.blocks.length; i++) expect(lay.blocks[i]![0]).toBe(lay.blocks[i - 1]![1]);
    for (const c of lay.cells) expect(c.x + c.width).toBeLessThanOrEqual(500);
    const labels = lay.items.filter((i) => i.className === 'method-label');
    expect(labels).toHaveLength(2 * lay.blocks.length);
    expect(lay.cells).toHaveLength(60);
    expect(lay.width).toBeLessThanOrEqual(500);
  });

  it('refuses rows of the wrong length and a target position out of range, in one line', () => {
    expect(() => saliencyLayout({ ...DATA, rows: [{ method: 'g', scores: [1, 2] }] }, LIGHT)).toThrow(new AttnscopeError("saliency view: row 'g' has 2 scores for 4 tokens"));
    expect(() => saliencyLayout({ ...DATA, targetPosition: 4 }, LIGHT)).toThrow(/target position 4 is out of range \(0–3\)/);
    expect(() => saliencyLayout({ ...DATA, rows: [] }, LIGHT)).toThrow(AttnscopeError);
  });

  it('writes well-formed SVG with every token as escaped text, in both themes', () => {
    for (const theme of ['light', 'dark'] as const) {
      const svg = renderSaliency(DATA, { theme, title: `model ${HOSTILE}` });
      expect(svg).not.toContain('<script>');
      const doc = parseXml(svg);
      const tokens = findAll(doc, 'text', (a) => a.class === 'saliency-token').map(textOf);
      expect(tokens).toEqual([...DATA.tokens, ...DATA.tokens]);
      const cells = findAll(doc, 'rect', (a) => a.class === 'saliency-cell');
      expect(cells.map((c) => c.attrs['data-value'])).toEqual(['2', '-1', '0', '1', '1', '1', '-4', 'NaN']);
      expect(svg).toContain(theme === 'dark' ? DARK.background : LIGHT.background);
    }
  });
});
