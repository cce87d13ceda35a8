/**
 * Logit-lens grid on a hand-made 3-layer × 2-position lens: one cell per (layer, position) with the
 * top candidate and its probability, cells at grid.x + position·cellWidth, grid.y + row·cellHeight,
 * colour from the light theme's Blues by probability (1 → #08306b), bold where the top token is the
 * actual next token, the top-k in the hover text, bad shapes refused, hostile tokens escaped.
 */
import { describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import type { TextItem } from '../src/views/layout/common.js';
import { type LogitLensData, fmtCellProb, logitLensLayout } from '../src/views/layout/logit-lens.js';
import { renderLogitLens } from '../src/views/svg/logit-lens.js';
import { parseColor } from '../src/views/colors.js';
import { LIGHT } from '../src/views/theme.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

const HOSTILE = `<script>&"'`;
const c = (token: string, probability: number) => ({ token, probability });
const DATA: LogitLensData = {
  tokens: ['The', HOSTILE],
  layers: ['embeddings', 'layer 0', 'layer 1'],
  predicts: 'next token',
  actual: [HOSTILE, null],
  cells: [
    [[c('the', 0.1), c('a', 0.05)], [c('x', 0.2), c('y', 0.1)]],
    [[c(HOSTILE, 0.4), c('the', 0.2)], [c('x', 0.5), c('z', 0.25)]],
    [[c(HOSTILE, 1), c('the', 0)], [c('end', 0.003), c('x', 0.002)]],
  ],
};

describe('logit-lens layout', () => {
  it('puts each layer’s top token and probability in its cell', () => {
    const lay = logitLensLayout(DATA, LIGHT);
    expect(lay.cells.map((x) => [x.row, x.position, x.token, x.probability, x.hit])).toEqual([
      [0, 0, 'the', 0.1, false],
      [0, 1, 'x', 0.2, false],
      [1, 0, HOSTILE, 0.4, true],
      [1, 1, 'x', 0.5, false],
      [2, 0, HOSTILE, 1, true],
      [2, 1, 'end', 0.003, false],
    ]);
    for (const x of lay.cells) {
      expect(x.x).toBe(lay.grid.x + x.position * lay.cellWidth);
      expect(x.y).toBe(lay.grid.y + x.row * lay.cellHeight);
    }
    expect(parseColor(lay.cells[4]!.color)).toEqual([8, 48, 107]);
    const probs = lay.items.filter((i) => i.className === 'lens-probability').map((i) => (i as TextItem).text);
    expect(probs).toEqual(['.10', '.20', '.40', '.50', '1', '<.01']);
    const bold = lay.items.filter((i) => i.className === 'lens-token' && (i as TextItem).bold).map((i) => i.data);
    expect(bold).toEqual([{ row: 1, position: 0 }, { row: 2, position: 0 }]);
    const tip = lay.items.find((i) => i.className === 'lens-cell' && i.data?.row === 1 && i.data?.position === 1)!.tip;
    expect(tip).toBe(`layer 0 · position 1 “${HOSTILE}” · 1. “x” 0.500 · 2. “z” 0.250`);
    expect(fmtCellProb(0.995)).toBe('1');
  });

  it('refuses shapes that do not match the tokens and layers, in one line', () => {
    expect(() => logitLensLayout({ ...DATA, layers: ['a'] }, LIGHT)).toThrow(new AttnscopeError('logit-lens view: 3 rows of cells for 1 layers'));
    expect(() => logitLensLayout({ ...DATA, tokens: ['a'] }, LIGHT)).toThrow(/layer row 0 has 2 positions for 1 tokens/);
    expect(() => logitLensLayout({ ...DATA, cells: [[[], []], DATA.cells[1]!, DATA.cells[2]!] }, LIGHT)).toThrow(/has no candidates/);
  });

  it('writes well-formed SVG with input and predicted tokens escaped', () => {
    const svg = renderLogitLens(DATA, { title: 'lens', theme: 'dark' });
    expect(svg).not.toContain('<script>');
    const doc = parseXml(svg);
    expect(findAll(doc, 'text', (a) => a.class === 'input-token').map(textOf)).toEqual(['The', HOSTILE]);
    expect(findAll(doc, 'text', (a) => a.class === 'lens-token').map(textOf)).toEqual(['the', 'x', HOSTILE, 'x', HOSTILE, 'end']);
    expect(findAll(doc, 'rect', (a) => (a.class ?? '').startsWith('lens-cell'))).toHaveLength(6);
  });
});

describe('logit-lens layout in a narrow frame', () => {
  it('narrows the cells to fit maxWidth, never below 34 px', () => {
    const tokens = Array.from({ length: 20 }, (_, i) => `tok${i}`);
    const data: LogitLensData = { tokens, layers: ['L0'], predicts: 'next token', cells: [tokens.map(() => [c('longer-token', 0.5)])] };
    const wide = logitLensLayout(data, LIGHT);
    const fit = logitLensLayout(data, LIGHT, { maxWidth: 1000 });
    expect(fit.cellWidth).toBeLessThan(wide.cellWidth);
    expect(fit.width).toBeLessThanOrEqual(1000);
    expect(logitLensLayout(data, LIGHT, { maxWidth: 300 }).cellWidth).toBe(34);
  });
});
