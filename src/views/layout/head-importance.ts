/**
 * Head-importance grid, computed once as plain data: one cell per (layer, head) — layers as rows
 * (L0 on top), heads as columns — coloured by the head's importance for a named target. Unsigned
 * importance (Michel et al. 2019: |∂target/∂gate|, normalised per layer) reads on the sequential
 * scale from 0 to the largest value; signed values (∂target/∂gate itself, or an ablation's effect)
 * on the symmetric diverging scale, zero neutral. Large cells also print the value; a vertical
 * legend sits right of the grid and a note says what the values are. Cells carry data-layer /
 * data-head / data-value, so that the page can report a head on hover and open it on a click (the
 * wiring of the head-type grid).
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../../core/errors.js';
import type { StackName } from '../../core/trace.js';
import { divergingScale, textOn, weightScale } from '../colors.js';
import { LAYOUT, type Theme } from '../theme.js';
import { type Item, type Picture, layerHeadGrid, legendItems, scaleSpec, targetItem, wrapText } from './common.js';
import { fmtScore } from './saliency.js';

/** What the head-importance grid shows: plain data. */
export interface HeadImportanceData {
  /** Importance per head, [layer][head]. */
  values: readonly (readonly number[])[];
  /** The target the importance is of (e.g. "log p(“Paris” | position 7)"). */
  target: string;
  /** Signed values (diverging scale) rather than magnitudes (sequential scale from 0). */
  signed: boolean;
  /** What the values are, for the note (e.g. "|∂target/∂gate| (Michel et al. 2019), each layer divided by its L2 norm"). */
  method: string;
  /** The attention stack the heads belong to (encoder-decoders); absent: the trace's first. */
  stack?: StackName;
}

export interface HeadImportancePlace {
  top?: number;
  /** Space to fill (default: cells of at most 48 px in a 560 px grid). */
  frame?: { width?: number; height?: number };
  /** A head drawn outlined (the page's current head). */
  selected?: { layer: number; head: number } | null;
}

export interface ImportanceCell {
  layer: number;
  head: number;
  value: number;
  color: string;
  x: number;
  y: number;
  size: number;
}

export interface HeadImportanceLayout extends Picture {
  cells: ImportanceCell[];
  grid: { x: number; y: number; width: number; height: number };
  layers: number;
  heads: number;
  cell: number;
  /** The colour scale's domain. */
  domain: [number, number];
}

export const IMPORTANCE_GRID = { side: 560, maxCell: 48, minCell: 10 } as const;

export function checkHeadImportanceData(data: HeadImportanceData): void {
  const v = data.values;
  if (v.length === 0 || v[0]!.length === 0) throw new AttnscopeError('head-importance view: no heads');
  const heads = v[0]!.length;
  v.forEach((row, l) => {
    if (row.length !== heads) throw new AttnscopeError(`head-importance view: layer ${l} has ${row.length} heads, layer 0 has ${heads}`);
  });
}

/** Lays out the grid (see the file comment). */
export function headImportanceLayout(data: HeadImportanceData, theme: Theme, place: HeadImportancePlace = {}): HeadImportanceLayout {
  checkHeadImportanceData(data);
  const m = LAYOUT.margin;
  const fs = LAYOUT.fontSize;
  const sfs = LAYOUT.smallFontSize;
  const top = place.top ?? m;
  const layers = data.values.length;
  const heads = data.values[0]!.length;
  let maxAbs = 0;
  for (const row of data.values) for (const v of row) if (Number.isFinite(v)) maxAbs = Math.max(maxAbs, Math.abs(v));
  const scale = data.signed ? divergingScale(theme, maxAbs) : weightScale(theme, { max: maxAbs > 0 ? maxAbs : 1 });
  const caption = data.signed ? 'importance (signed)' : 'importance';

  const items: Item[] = [];
  let y = top + fs;
  items.push(targetItem(m, y, data.target, theme, 'importance-target'));
  y += 12;

  const legendW = 90;
  const { cell, grid, axes } = layerHeadGrid(layers, heads, y, IMPORTANCE_GRID, legendW, theme, place.frame);
  items.push(...axes);

  const cells: ImportanceCell[] = [];
  const showValue = cell >= 30;
  const valueFont = Math.min(sfs, Math.max(8, Math.floor(cell / 3.4)));
  const sel = place.selected;
  for (let l = 0; l < layers; l++) {
    for (let h = 0; h < heads; h++) {
      const v = data.values[l]![h]!;
      const finite = Number.isFinite(v);
      const x = grid.x + h * cell;
      const cy = grid.y + l * cell;
      const color = finite ? scale.color(v) : theme.panel;
      cells.push({ layer: l, head: h, value: v, color, x, y: cy, size: cell });
      const selected = sel != null && sel.layer === l && sel.head === h;
      items.push({
        kind: 'rect',
        x: x + 0.5,
        y: cy + 0.5,
        width: cell - 1,
        height: cell - 1,
        fill: color,
        stroke: selected ? theme.text : theme.background,
        strokeWidth: selected ? 2.5 : 1,
        className: `importance-cell${selected ? ' selected' : ''}`,
        data: { layer: l, head: h, value: finite ? v : 'NaN' },
        tip: `L${l} H${h} · ${caption} ${fmtScore(v)}`,
      });
      if (showValue && finite) {
        items.push({ kind: 'text', x: x + cell / 2, y: cy + cell / 2 + valueFont * 0.35, text: fmtCell(v), size: valueFont, fill: textOn(color), anchor: 'middle', className: 'cell-value', data: { layer: l, head: h } });
      }
    }
  }

  const lx = grid.x + grid.width + 28;
  const legend = legendItems(scale, lx, grid.y - sfs - 12, caption, theme, Math.max(100, Math.min(240, grid.height)));
  items.push(...legend.items);
  const right = Math.max(grid.x + grid.width, lx + legend.width);
  const width = Math.max(right + m, 360);
  y = Math.max(grid.y + grid.height, grid.y - sfs - 12 + legend.height) + 6;
  const note = `${data.method}${showValue ? '; the number is the value' : ''}`;
  for (const line of wrapText(note, sfs, width - 2 * m)) {
    y += sfs + 4;
    items.push({ kind: 'text', x: m, y, text: line, size: sfs, fill: theme.muted, className: 'importance-note' });
  }
  const spec = scaleSpec(scale, data.signed ? 'diverging' : 'sequential');
  return { width, height: y + m, background: theme.background, items, cells, grid, layers, heads, cell, domain: [spec.min, spec.max] };
}

/** A value inside a cell: 2 decimals, or 2 significant digits when small. */
function fmtCell(v: number): string {
  const a = Math.abs(v);
  const s = a === 0 ? '0' : a >= 0.1 ? v.toFixed(2) : a >= 1e-3 ? String(Number(v.toPrecision(2))) : v.toExponential(0);
  return s.replace(/^-/, '−').replace(/^(−?)0\./, '$1.');
}
