/**
 * Head-importance grid on hand-made values: one cell per (layer, head) at grid.x + head·cell,
 * grid.y + layer·cell (cells of min(48, ⌊560 / heads⌋) px), unsigned values on the light theme's
 * Blues from 0 to the largest value (ends #f7fbff-ish and #08306b), signed values on a symmetric
 * diverging scale, data attributes the page reads, the selected outline, ragged input refused, and
 * the SVG well-formed with a hostile target escaped.
 */
import { describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import type { TextItem } from '../src/views/layout/common.js';
import { type HeadImportanceData, headImportanceLayout } from '../src/views/layout/head-importance.js';
import { renderHeadImportance } from '../src/views/svg/head-importance.js';
import { parseColor } from '../src/views/colors.js';
import { LIGHT } from '../src/views/theme.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

const HOSTILE = `<script>&"'`;
const DATA: HeadImportanceData = {
  values: [
    [0, 1, 0.5],
    [0.25, 0.75, 0.1],
  ],
  target: `log p(${HOSTILE})`,
  signed: false,
  method: '|∂T/∂gate|, each layer divided by its L2 norm',
};

describe('head-importance layout', () => {
  it('places every head at (head, layer) of the grid and colours it from 0 to the largest value', () => {
    const lay = headImportanceLayout(DATA, LIGHT);
    expect(lay.layers).toBe(2);
    expect(lay.heads).toBe(3);
    expect(lay.cell).toBe(48);
    expect(lay.domain).toEqual([0, 1]);
    expect(lay.cells.map((c) => [c.layer, c.head, c.value])).toEqual([
      [0, 0, 0], [0, 1, 1], [0, 2, 0.5], [1, 0, 0.25], [1, 1, 0.75], [1, 2, 0.1],
    ]);
    for (const c of lay.cells) {
      expect(c.x).toBe(lay.grid.x + c.head * 48);
      expect(c.y).toBe(lay.grid.y + c.layer * 48);
    }
    // Blues: the largest value darkest (#08306b at the top of the ramp), 0 the lightest.
    expect(parseColor(lay.cells[1]!.color)).toEqual([8, 48, 107]);
    const zero = parseColor(lay.cells[0]!.color);
    expect(Math.min(...zero)).toBeGreaterThan(230);
    // Values in the cells, hover text, data attributes.
    const values = lay.items.filter((i) => i.className === 'cell-value').map((i) => (i as TextItem).text);
    expect(values).toEqual(['0', '1.00', '.50', '.25', '.75', '.10']);
    const rects = lay.items.filter((i) => i.className?.startsWith('importance-cell'));
    expect(rects.map((r) => r.data)).toEqual(lay.cells.map((c) => ({ layer: c.layer, head: c.head, value: c.value })));
    expect(rects[4]!.tip).toBe('L1 H1 · importance 0.75');
  });

  it('uses a symmetric diverging scale for signed values: −m white-ish middle +m', () => {
    const lay = headImportanceLayout({ ...DATA, signed: true, values: [[-2, 0, 1]] }, LIGHT);
    expect(lay.domain).toEqual([-2, 2]);
    expect(parseColor(lay.cells[0]!.color)).toEqual([5, 48, 97]);
    const mid = parseColor(lay.cells[1]!.color);
    expect(Math.min(...mid)).toBeGreaterThanOrEqual(235);
  });

  it('outlines the selected head; cells shrink to fit a frame', () => {
    const lay = headImportanceLayout(DATA, LIGHT, { selected: { layer: 1, head: 2 } });
    const sel = lay.items.filter((i) => i.className === 'importance-cell selected');
    expect(sel.map((s) => s.data)).toEqual([{ layer: 1, head: 2, value: 0.1 }]);
    const big = headImportanceLayout({ ...DATA, values: Array.from({ length: 24 }, () => Array.from({ length: 16 }, () => 1)) }, LIGHT);
    expect(big.cell).toBe(Math.floor(560 / 24));
  });

  it('refuses ragged or empty input in one line', () => {
    expect(() => headImportanceLayout({ ...DATA, values: [[1, 2], [1]] }, LIGHT)).toThrow(new AttnscopeError('head-importance view: layer 1 has 1 heads, layer 0 has 2'));
    expect(() => headImportanceLayout({ ...DATA, values: [] }, LIGHT)).toThrow(AttnscopeError);
  });

  it('writes well-formed SVG with the target escaped', () => {
    const svg = renderHeadImportance(DATA, { title: `m ${HOSTILE}` });
    expect(svg).not.toContain('<script>');
    const doc = parseXml(svg);
    expect(findAll(doc, 'rect', (a) => (a.class ?? '').startsWith('importance-cell'))).toHaveLength(6);
    const target = findAll(doc, 'text', (a) => a.class === 'importance-target').map(textOf);
    expect(target).toEqual([`target: log p(${HOSTILE})`]);
  });
});
