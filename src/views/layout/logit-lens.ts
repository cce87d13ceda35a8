/**
 * Logit-lens grid, computed once as plain data: rows are the layers (the residual stream after
 * each layer read through the final norm and the unembedding; the first row on top), columns the
 * input positions, each cell the top token of that layer's distribution at that position and its
 * probability, the cell coloured by the probability on the sequential scale from 0 to 1. Input
 * tokens head the columns; when the data gives the token that actually follows a position, cells
 * whose top token is it are written in bold. Hovering a cell gives its top-k (tooltip; the page
 * shows them in its readout). A vertical probability legend sits right of the grid.
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../../core/errors.js';
import { textOn, weightScale } from '../colors.js';
import { LAYOUT, type Theme } from '../theme.js';
import { type Item, type Picture, fitText, legendItems, textWidth, wrapText } from './common.js';
import { fmtProb } from './ablation.js';

/** One candidate of a layer's distribution. */
export interface LensCandidate {
  /** Token label as shown (prettified); escaped by the painters. */
  token: string;
  probability: number;
}

/** What the logit-lens grid shows: plain data. */
export interface LogitLensData {
  /** Input token labels (the columns). */
  tokens: readonly string[];
  /** Row labels, one per layer read (e.g. "L0" … "L11", or "embeddings" first). */
  layers: readonly string[];
  /** [row][position]: the top-k candidates, most probable first. */
  cells: readonly (readonly (readonly LensCandidate[])[])[];
  /** What each cell predicts: "next token" (causal LMs) or "token at the position" (masked LMs). */
  predicts: string;
  /** The token that follows each position in the input (bold where a cell's top token equals it); null where none. */
  actual?: readonly (string | null)[];
}

export interface LogitLensPlace {
  top?: number;
  /** Widest cell (default 96 px); cells shrink to their longest top token, at least 44 px. */
  maxCell?: number;
  /** Widest picture (the page's width): cells narrow down to 34 px to fit it, labels cut to fit them. */
  maxWidth?: number;
}

export interface LensCell {
  row: number;
  position: number;
  token: string;
  probability: number;
  /** The top token is the actual next token. */
  hit: boolean;
  color: string;
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface LogitLensLayout extends Picture {
  cells: LensCell[];
  grid: { x: number; y: number; width: number; height: number };
  cellWidth: number;
  cellHeight: number;
}

export const LENS = { cellHeight: 36, minCell: 44, maxCell: 96, fitCell: 34 } as const;

export function checkLogitLensData(data: LogitLensData): void {
  const n = data.tokens.length;
  if (n === 0) throw new AttnscopeError('logit-lens view: no tokens');
  if (data.layers.length === 0) throw new AttnscopeError('logit-lens view: no layers');
  if (data.cells.length !== data.layers.length) throw new AttnscopeError(`logit-lens view: ${data.cells.length} rows of cells for ${data.layers.length} layers`);
  data.cells.forEach((row, r) => {
    if (row.length !== n) throw new AttnscopeError(`logit-lens view: layer row ${r} has ${row.length} positions for ${n} tokens`);
    row.forEach((c, p) => {
      if (c.length === 0) throw new AttnscopeError(`logit-lens view: layer row ${r}, position ${p} has no candidates`);
    });
  });
  if (data.actual && data.actual.length !== n) throw new AttnscopeError(`logit-lens view: ${data.actual.length} actual tokens for ${n} positions`);
}

/** "“ Paris” 0.412 · “ London” 0.101 · …" */
export function lensTopK(c: readonly LensCandidate[]): string {
  return c.map((x, i) => `${i + 1}. “${x.token}” ${fmtProb(x.probability)}`).join(' · ');
}

/** A probability inside a cell: ".62", "1", "<.01". */
export function fmtCellProb(p: number): string {
  if (!(p >= 0.005)) return '<.01';
  return p >= 0.995 ? '1' : p.toFixed(2).replace(/^0/, '');
}

/** Lays out the grid (see the file comment). */
export function logitLensLayout(data: LogitLensData, theme: Theme, place: LogitLensPlace = {}): LogitLensLayout {
  checkLogitLensData(data);
  const m = LAYOUT.margin;
  const fs = LAYOUT.fontSize;
  const sfs = LAYOUT.smallFontSize;
  const top = place.top ?? m;
  const n = data.tokens.length;
  const rows = data.layers.length;
  const scale = weightScale(theme, { max: 1 });
  const maxCell = Math.max(LENS.minCell, place.maxCell ?? LENS.maxCell);
  const cellFont = sfs;
  const probFont = 9;

  // Cell width: the longest top token (or input token) at the cell font, within [minCell, maxCell].
  let longest = 0;
  for (const row of data.cells) for (const c of row) longest = Math.max(longest, textWidth(c[0]!.token, cellFont));
  for (const t of data.tokens) longest = Math.max(longest, textWidth(t, fs));
  let cw = Math.round(Math.max(LENS.minCell, Math.min(maxCell, longest + 10)));
  const ch = LENS.cellHeight;
  const rowLabelW = Math.ceil(Math.max(...data.layers.map((l) => textWidth(l, sfs)))) + 10;
  const legendW = textWidth('top-token probability', sfs);
  const gridX = m + rowLabelW + sfs + 8;
  if (place.maxWidth !== undefined) cw = Math.max(LENS.fitCell, Math.min(cw, Math.floor((place.maxWidth - gridX - 24 - legendW - m) / n)));

  const items: Item[] = [];
  let width = Math.max(gridX + n * cw + 24 + legendW + m, 420);
  const caption = `each cell: the top ${data.predicts} read from that layer's residual stream (logit lens), and its probability`;
  let y = top;
  for (const line of wrapText(caption, sfs, width - 2 * m)) {
    y += sfs + 4;
    items.push({ kind: 'text', x: m, y, text: line, size: sfs, fill: theme.muted, className: 'lens-caption' });
  }
  y += 6;
  // Input tokens over the columns, with their positions.
  y += sfs;
  for (let p = 0; p < n; p++) items.push({ kind: 'text', x: gridX + (p + 0.5) * cw, y, text: String(p), size: sfs - 1, fill: theme.muted, anchor: 'middle', className: 'position-label', data: { position: p } });
  y += fs + 4;
  for (let p = 0; p < n; p++) {
    const label = fitText(data.tokens[p]!, fs, cw - 4);
    items.push({ kind: 'text', x: gridX + (p + 0.5) * cw, y, text: label.text, size: fs, fill: theme.text, anchor: 'middle', bold: true, className: 'input-token', data: { position: p }, tip: label.cut ? data.tokens[p] : undefined });
  }
  const gridY = y + 8;
  const grid = { x: gridX, y: gridY, width: n * cw, height: rows * ch };
  items.push({ kind: 'text', x: m + sfs, y: gridY + grid.height / 2, text: 'layer', size: sfs, fill: theme.muted, anchor: 'middle', rotate: -90, className: 'axis-name' });

  const cells: LensCell[] = [];
  for (let r = 0; r < rows; r++) {
    const cy = gridY + r * ch;
    items.push({ kind: 'text', x: gridX - 6, y: cy + ch / 2 + sfs * 0.35, text: data.layers[r]!, size: sfs, fill: theme.muted, anchor: 'end', className: 'row-label', data: { row: r } });
    for (let p = 0; p < n; p++) {
      const cands = data.cells[r]![p]!;
      const best = cands[0]!;
      const color = scale.color(best.probability);
      const actual = data.actual?.[p];
      const hit = actual != null && actual === best.token;
      const cx = gridX + p * cw;
      cells.push({ row: r, position: p, token: best.token, probability: best.probability, hit, color, x: cx, y: cy, width: cw, height: ch });
      items.push({
        kind: 'rect',
        x: cx,
        y: cy,
        width: cw,
        height: ch,
        fill: color,
        stroke: theme.background,
        strokeWidth: 1,
        className: `lens-cell${hit ? ' hit' : ''}`,
        data: { row: r, position: p, token: best.token, value: best.probability },
        tip: `${data.layers[r]} · position ${p} “${data.tokens[p]}” · ${lensTopK(cands)}`,
      });
      const label = fitText(best.token, cellFont, cw - 6);
      const ink = textOn(color);
      items.push({ kind: 'text', x: cx + cw / 2, y: cy + ch / 2 - 1, text: label.text, size: cellFont, fill: ink, anchor: 'middle', mono: true, bold: hit, className: 'lens-token', data: { row: r, position: p } });
      items.push({ kind: 'text', x: cx + cw / 2, y: cy + ch / 2 + probFont + 1, text: fmtCellProb(best.probability), size: probFont, fill: ink, anchor: 'middle', className: 'lens-probability', data: { row: r, position: p } });
    }
  }

  const lx = grid.x + grid.width + 24;
  const legend = legendItems(scale, lx, gridY - sfs - 12, 'top-token probability', theme, Math.max(90, Math.min(200, grid.height)));
  items.push(...legend.items);
  width = Math.max(width, lx + legend.width + m);
  y = Math.max(gridY + grid.height, gridY - sfs - 12 + legend.height) + 6;
  const note = data.actual ? `bold: the top token is the input's actual ${data.predicts}; hover a cell for its top ${Math.max(...data.cells.flat().map((c) => c.length))}` : `hover a cell for its top ${Math.max(...data.cells.flat().map((c) => c.length))}`;
  for (const line of wrapText(note, sfs, width - 2 * m)) {
    y += sfs + 4;
    items.push({ kind: 'text', x: m, y, text: line, size: sfs, fill: theme.muted, className: 'lens-note' });
  }
  return { width, height: y + m, background: theme.background, items, cells, grid, cellWidth: cw, cellHeight: ch };
}
