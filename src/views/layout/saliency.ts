/**
 * Saliency view, computed once as plain data: the input tokens as coloured boxes, one row per
 * attribution method (gradient, gradient × input, integrated gradients, …), coloured by each
 * token's attribution to a named target on a symmetric diverging scale — positive (raises the
 * target) and negative (lowers it) in different hues, zero neutral (white on the light theme).
 * Tokens are columns shared by every row, so a token's methods line up; long inputs wrap into
 * blocks of columns that each repeat the method names. The target position is outlined. A
 * horizontal legend and a note (each row's scale, sum and the method's remarks such as the
 * integrated-gradients completeness error) sit under the rows.
 *
 * Scale: `per-row` (default) divides each row by its own largest |score| (methods differ in
 * magnitude: a gradient is not a gradient × input), so colour t = ½ + ½·score/max|row|; `shared`
 * uses the largest |score| of all rows. The legend then reads in units of the row's maximum, or in
 * the scores' own units when there is one scale.
 *
 * The SVG writer (src/views/svg/saliency.ts) and the page (web/views/saliency.ts) paint it; token
 * cells carry data-row / data-position / data-value.
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../../core/errors.js';
import { divergingScale, textOn } from '../colors.js';
import { LAYOUT, type Theme } from '../theme.js';
import { type Item, type Picture, fitText, targetItem, textWidth, wrapText } from './common.js';

/** One method's token scores. */
export interface SaliencyRow {
  /** The method as the row names it ("gradient × input", "integrated gradients (zero baseline, 50 steps)"). */
  method: string;
  /** One score per token (NaN: no score). */
  scores: readonly number[];
  /** Remarks printed in the note (e.g. "completeness error 0.4 %"). */
  detail?: string;
}

/** What the saliency view shows: plain data, from an attribution run or a trace file. */
export interface SaliencyData {
  /** Token labels as shown (prettified); escaped by the painters. */
  tokens: readonly string[];
  /** The target named, e.g. "log p(“Paris” | position 7)". */
  target: string;
  /** The position whose output the target reads (outlined); absent: none. */
  targetPosition?: number;
  rows: readonly SaliencyRow[];
}

export type SaliencyScale = 'per-row' | 'shared';

export interface SaliencyPlace {
  /** y where the picture starts (below a heading). */
  top?: number;
  /** Widest picture (default 1100 px); columns wrap into blocks within it. */
  maxWidth?: number;
  scale?: SaliencyScale;
}

export interface SaliencyCell {
  row: number;
  position: number;
  value: number;
  /** Position on the colour ramp, 0 (most negative) … ½ (zero) … 1 (most positive). */
  t: number;
  color: string;
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface SaliencyLayout extends Picture {
  cells: SaliencyCell[];
  /** The largest |score| each row is scaled by. */
  rowMax: number[];
  /** Blocks of columns: [first position, end) each. */
  blocks: [number, number][];
}

export const SALIENCY = { cellHeight: 26, minCell: 30, pad: 10, rowGap: 4, blockGap: 18, legendWidth: 240, legendSteps: 48 } as const;

/** Largest |v| over finite values (0 when none). */
function maxAbsOf(values: readonly number[]): number {
  let m = 0;
  for (const v of values) if (Number.isFinite(v)) m = Math.max(m, Math.abs(v));
  return m;
}

/** A score as printed: 3 significant digits, a real minus sign. */
export function fmtScore(v: number): string {
  if (!Number.isFinite(v)) return '–';
  if (v === 0) return '0';
  const a = Math.abs(v);
  const s = a >= 1e-3 && a < 1e4 ? String(Number(v.toPrecision(3))) : v.toExponential(2);
  return s.replace(/^-/, '−');
}

/** Checks a saliency data object: as many scores as tokens in every row, a target position in range. */
export function checkSaliencyData(data: SaliencyData): void {
  if (data.tokens.length === 0) throw new AttnscopeError('saliency view: no tokens');
  if (data.rows.length === 0) throw new AttnscopeError('saliency view: no attribution rows');
  for (const r of data.rows) {
    if (r.scores.length !== data.tokens.length) {
      throw new AttnscopeError(`saliency view: row '${r.method}' has ${r.scores.length} scores for ${data.tokens.length} tokens`);
    }
  }
  const p = data.targetPosition;
  if (p !== undefined && (!Number.isInteger(p) || p < 0 || p >= data.tokens.length)) {
    throw new AttnscopeError(`saliency view: target position ${p} is out of range (0–${data.tokens.length - 1})`);
  }
}

/** Lays out the saliency rows (see the file comment). */
export function saliencyLayout(data: SaliencyData, theme: Theme, place: SaliencyPlace = {}): SaliencyLayout {
  checkSaliencyData(data);
  const m = LAYOUT.margin;
  const fs = LAYOUT.fontSize;
  const sfs = LAYOUT.smallFontSize;
  const top = place.top ?? m;
  const maxWidth = Math.max(400, place.maxWidth ?? 1100);
  const mode: SaliencyScale = place.scale ?? 'per-row';
  const n = data.tokens.length;
  const ch = SALIENCY.cellHeight;

  const rowMaxRaw = data.rows.map((r) => maxAbsOf(r.scores));
  const sharedMax = Math.max(0, ...rowMaxRaw);
  const rowMax = rowMaxRaw.map((v) => (mode === 'shared' ? sharedMax : v));
  const relative = mode === 'per-row' && data.rows.length > 1;

  const items: Item[] = [];
  let y = top;
  // The target, named.
  y += fs;
  items.push(targetItem(m, y, data.target, theme, 'saliency-target'));
  y += 14;

  // Columns: each token's box as wide as its label (at least minCell), labels cut at 24 characters.
  const labels = data.tokens.map((t) => fitText(t, fs, textWidth('M'.repeat(14), fs)));
  const colW = labels.map((l) => Math.max(SALIENCY.minCell, Math.ceil(textWidth(l.text, fs)) + SALIENCY.pad));
  const labelW = Math.ceil(Math.max(...data.rows.map((r) => textWidth(r.method, fs)))) + 12;
  const gridX = m + labelW;
  const avail = maxWidth - gridX - m;
  const blocks: [number, number][] = [];
  for (let i = 0; i < n; ) {
    let w = 0;
    let j = i;
    while (j < n && (j === i || w + colW[j]! <= avail)) w += colW[j++]!;
    blocks.push([i, j]);
    i = j;
  }

  const cells: SaliencyCell[] = [];
  const scales = rowMax.map((mx) => divergingScale(theme, mx));
  let right = gridX;
  for (const [b0, b1] of blocks) {
    const blockTop = y;
    // Position numbers over the columns.
    let x = gridX;
    const xs: number[] = [];
    for (let p = b0; p < b1; p++) {
      xs.push(x);
      items.push({ kind: 'text', x: x + colW[p]! / 2, y: y + sfs, text: String(p), size: sfs, fill: theme.muted, anchor: 'middle', className: 'position-label', data: { position: p } });
      x += colW[p]!;
    }
    right = Math.max(right, x);
    y += sfs + 5;
    data.rows.forEach((r, ri) => {
      items.push({ kind: 'text', x: gridX - 12, y: y + ch / 2 + fs * 0.35, text: r.method, size: fs, fill: theme.text, anchor: 'end', className: 'method-label', data: { row: ri } });
      for (let p = b0; p < b1; p++) {
        const v = r.scores[p]!;
        const finite = Number.isFinite(v);
        const sc = scales[ri]!;
        const t = finite ? sc.t(v) : 0.5;
        const color = finite ? sc.color(v) : theme.panel;
        const cx = xs[p - b0]!;
        const w = colW[p]!;
        cells.push({ row: ri, position: p, value: v, t, color, x: cx, y, width: w, height: ch });
        items.push({
          kind: 'rect',
          x: cx + 1,
          y,
          width: w - 2,
          height: ch,
          rx: 3,
          fill: color,
          stroke: theme.grid,
          strokeWidth: 0.5,
          className: 'saliency-cell',
          data: { row: ri, position: p, value: finite ? v : 'NaN' },
          tip: `${data.tokens[p]} (position ${p}) · ${r.method}: ${fmtScore(v)}${rowMax[ri]! > 0 && finite ? ` (${fmtScore(v / rowMax[ri]!)} of the ${mode === 'shared' ? 'largest |score|' : "row's largest |score|"})` : ''}`,
        });
        items.push({ kind: 'text', x: cx + w / 2, y: y + ch / 2 + fs * 0.35, text: labels[p]!.text, size: fs, fill: finite ? textOn(color) : theme.muted, anchor: 'middle', className: 'saliency-token', data: { row: ri, position: p } });
      }
      y += ch + SALIENCY.rowGap;
    });
    // The target position, outlined over every row.
    const tp = data.targetPosition;
    if (tp !== undefined && tp >= b0 && tp < b1) {
      items.push({
        kind: 'rect',
        x: xs[tp - b0]! - 0.5,
        y: blockTop + sfs + 2,
        width: colW[tp]! + 1,
        height: y - SALIENCY.rowGap - (blockTop + sfs + 2) + 3,
        rx: 4,
        fill: null,
        stroke: theme.text,
        strokeWidth: 2,
        className: 'target-outline',
        data: { position: tp },
      });
    }
    y += SALIENCY.blockGap - SALIENCY.rowGap;
  }

  // Legend: a horizontal diverging bar with ticks, "lowers" on the left, "raises" on the right.
  const legendScale = divergingScale(theme, relative ? 1 : rowMax[0]! || 1);
  const lw = SALIENCY.legendWidth;
  const caption = relative ? "attribution ÷ the row's largest |score|" : mode === 'shared' && data.rows.length > 1 ? 'attribution (one scale for every row)' : 'attribution';
  const lx = m;
  y += 2;
  items.push({ kind: 'text', x: lx, y: y + sfs, text: caption, size: sfs, fill: theme.muted, className: 'legend-caption' });
  y += sfs + 6;
  const barY = y;
  const steps = SALIENCY.legendSteps;
  const [lo, hi] = legendScale.domain;
  for (let i = 0; i < steps; i++) {
    const v = lo + ((i + 0.5) / steps) * (hi - lo);
    items.push({ kind: 'rect', x: lx + (i * lw) / steps, y: barY, width: lw / steps + 0.3, height: 10, fill: legendScale.color(v), className: 'legend-step' });
  }
  items.push({ kind: 'rect', x: lx, y: barY, width: lw, height: 10, fill: null, stroke: theme.grid, strokeWidth: 1, className: 'legend-bar' });
  for (const tv of legendScale.ticks(4)) {
    const tx = lx + legendScale.t(tv) * lw;
    items.push({ kind: 'line', x1: tx, y1: barY + 10, x2: tx, y2: barY + 14, stroke: theme.muted, width: 1 });
    items.push({ kind: 'text', x: tx, y: barY + 15 + sfs, text: fmtScore(tv), size: sfs, fill: theme.muted, anchor: 'middle', className: 'legend-tick' });
  }
  const sides = '◀ negative: lowers the target · positive: raises the target ▶';
  y = barY + 15 + sfs + 6;
  if (lx + lw + 12 + textWidth(sides, sfs) + m <= maxWidth) {
    items.push({ kind: 'text', x: lx + lw + 12, y: barY + 9, text: sides, size: sfs, fill: theme.muted, className: 'legend-sides' });
    right = Math.max(right, lx + lw + 12 + textWidth(sides, sfs));
  } else {
    for (const line of wrapText(sides, sfs, maxWidth - 2 * m)) {
      y += sfs;
      items.push({ kind: 'text', x: lx, y, text: line, size: sfs, fill: theme.muted, className: 'legend-sides' });
      right = Math.max(right, lx + textWidth(line, sfs));
      y += 4;
    }
  }

  // Note: each row's scale and sum, the method's remarks, the outline.
  const width = Math.min(Math.max(right + m, 420), Math.max(maxWidth, right + m));
  const notes = data.rows.map((r, i) => {
    let sum = 0;
    for (const v of r.scores) if (Number.isFinite(v)) sum += v;
    return `${r.method}: largest |score| ${fmtScore(rowMaxRaw[i]!)}, sum ${fmtScore(sum)}${r.detail ? `, ${r.detail}` : ''}`;
  });
  if (data.targetPosition !== undefined) notes.push(`outlined: position ${data.targetPosition} “${data.tokens[data.targetPosition]}”, where the target is read`);
  for (const note of notes) {
    for (const line of wrapText(note, sfs, width - 2 * m)) {
      y += sfs + 4;
      items.push({ kind: 'text', x: m, y, text: line, size: sfs, fill: theme.muted, className: 'saliency-note' });
    }
  }
  return { width, height: y + m, background: theme.background, items, cells, rowMax, blocks };
}
