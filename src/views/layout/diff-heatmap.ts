/**
 * Comparison layout, computed once as plain data: trace A's and trace B's matrices of one compared
 * pair side by side (one sequential scale for both), their difference A − B on a diverging scale
 * centred on 0 (symmetric: ±max |A − B|), each panel with its own row and column labels, the two
 * legends, and optionally the ranked list of the pairs that changed most (the selected one marked).
 * The SVG writer (src/views/svg/diff-heatmap.ts) and the comparison page (web/views/compare.ts)
 * paint it.
 *
 * Isomorphic: imports nothing from Node.
 */
import { divergingScale, weightScale } from '../colors.js';
import { LAYOUT, type Theme } from '../theme.js';
import { type Item, type Picture, cellLabelFont, labelStep, legendItems, scaleSpec, textWidth, truncate } from './common.js';

/** One entry of the ranked list. */
export interface RankedEntry {
  /** "layer 3 · head 6" (B's side too when it differs). */
  label: string;
  jsDivergence: number;
  maxAbsDiff: number;
}

export interface DiffLabels {
  rows: readonly string[];
  cols: readonly string[];
  /** Special tokens (drawn in the theme's special colour). */
  rowSpecial?: readonly boolean[];
  colSpecial?: readonly boolean[];
}

export interface DiffInput {
  /** Panel titles, e.g. "A · bert · layer 1 · head 2". */
  titleA: string;
  titleB: string;
  labelsA: DiffLabels;
  labelsB: DiffLabels;
  /** rows × cols each, row-major. */
  a: Float32Array;
  b: Float32Array;
  rows: number;
  cols: number;
  theme: Theme;
  /** Heading line above the panels (none when empty). */
  heading?: string;
  /** A second, muted line (how rows were aligned and heads matched). */
  subheading?: string;
  /** Ranked list drawn below the panels (the page draws its own). */
  ranking?: readonly RankedEntry[];
  /** Index into `ranking` of the pair shown. */
  selected?: number;
  /** Entries of the ranking drawn (default 12). */
  listLength?: number;
  /** Width to fit the three panels in (default 1500). */
  frameWidth?: number;
  /** Largest cell side (default LAYOUT.heatmap.cell). */
  maxCell?: number;
}

export interface DiffPanel {
  /** 'a', 'b' or 'diff'. */
  name: 'a' | 'b' | 'diff';
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface DiffLayout extends Picture {
  cell: number;
  panels: DiffPanel[];
  /** The A − B matrix shown. */
  difference: Float32Array;
  maxAbsDiff: number;
}

function maxOf(a: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) if (a[i]! > m) m = a[i]!;
  return m;
}

/** Layout of the comparison figure (see the file comment). */
export function diffHeatmapLayout(o: DiffInput): DiffLayout {
  const theme = o.theme;
  const m = LAYOUT.margin;
  const sfs = LAYOUT.smallFontSize;
  const { rows, cols } = o;
  const difference = new Float32Array(rows * cols);
  let maxAbs = 0;
  for (let i = 0; i < difference.length; i++) {
    const d = o.a[i]! - o.b[i]!;
    difference[i] = d;
    if (Math.abs(d) > maxAbs) maxAbs = Math.abs(d);
  }
  // Cells where both traces hold exactly 0 (masked keys) stay blank.
  const masked = new Uint8Array(rows * cols);
  let anyMasked = false;
  for (let i = 0; i < masked.length; i++) {
    if (o.a[i] === 0 && o.b[i] === 0) {
      masked[i] = 1;
      anyMasked = true;
    }
  }

  const items: Item[] = [];
  let y = m;
  if (o.heading) {
    y += LAYOUT.titleFontSize;
    items.push({ kind: 'text', x: m, y, text: o.heading, size: LAYOUT.titleFontSize, fill: theme.text, bold: true, className: 'title' });
    y += 8;
  }
  if (o.subheading) {
    y += sfs + 2;
    items.push({ kind: 'text', x: m, y, text: o.subheading, size: sfs, fill: theme.muted, className: 'subtitle' });
    y += 6;
  }

  // Cell size: three panels with their labels and two legends within the frame width.
  const frameWidth = o.frameWidth ?? 1500;
  const legendW = 70;
  const maxCell = o.maxCell ?? LAYOUT.heatmap.cell;
  const guessFont = cellLabelFont(Math.min(maxCell, 14));
  const labelWidth = (ls: readonly string[], fs: number) => Math.max(20, ...ls.map((l) => textWidth(truncate(l), fs))) + 8;
  const guessRowW = Math.max(labelWidth(o.labelsA.rows, guessFont), labelWidth(o.labelsB.rows, guessFont));
  const avail = frameWidth - 2 * m - 3 * guessRowW - 2 * legendW - 3 * 24;
  const cell = Math.max(2, Math.min(maxCell, avail / (3 * cols), 560 / rows));
  const fs = cellLabelFont(cell);
  const step = labelStep(cell, fs);
  const showLabels = cell >= 4;
  const mw = cols * cell;
  const mh = rows * cell;
  const rowW = (l: DiffLabels) => (showLabels ? labelWidth(l.rows.filter((_, i) => i % step === 0), fs) : 0);
  const colH = Math.max(...[o.labelsA, o.labelsB].map((l) => (showLabels ? labelWidth(l.cols.filter((_, i) => i % step === 0), fs) : 0)));
  const titleY = y + sfs + 4;
  const top = titleY + 8 + colH;

  const weightMax = Math.max(maxOf(o.a), maxOf(o.b)) || 1;
  const wScale = weightScale(theme, { max: weightMax });
  const dScale = divergingScale(theme, maxAbs > 0 ? maxAbs : 1);
  const panels: DiffPanel[] = [];
  let x = m;
  const panel = (name: DiffPanel['name'], title: string, labels: DiffLabels, values: Float32Array, diverging: boolean) => {
    const lw = rowW(labels);
    const x0 = x + lw;
    items.push({ kind: 'text', x: x0, y: titleY, text: title, size: sfs, fill: theme.text, bold: true, className: 'panel-title', data: { panel: name } });
    items.push({
      kind: 'matrix', x: x0, y: top, width: mw, height: mh, rows, cols, values,
      scale: scaleSpec(diverging ? dScale : wScale, diverging ? 'diverging' : 'sequential'),
      masked: anyMasked ? masked : undefined, maskedFill: theme.background, className: 'matrix', data: { panel: name },
    });
    items.push({ kind: 'rect', x: x0 - 0.5, y: top - 0.5, width: mw + 1, height: mh + 1, fill: null, stroke: theme.grid, strokeWidth: 1, className: 'matrix-frame' });
    if (showLabels) {
      labels.rows.forEach((l, q) => {
        if (q % step) return;
        items.push({ kind: 'text', x: x0 - 6, y: top + (q + 0.5) * cell + fs * 0.36, text: truncate(l), size: fs, anchor: 'end', fill: labels.rowSpecial?.[q] ? theme.special : theme.text, className: 'token query', data: { index: q }, tip: l });
      });
      labels.cols.forEach((l, k) => {
        if (k % step) return;
        items.push({ kind: 'text', x: x0 + (k + 0.5) * cell + fs * 0.36, y: top - 6, text: truncate(l), size: fs, rotate: -90, fill: labels.colSpecial?.[k] ? theme.special : theme.text, className: 'token key', data: { index: k }, tip: l });
      });
    }
    panels.push({ name, x: x0, y: top, width: mw, height: mh });
    x = x0 + mw + 24;
  };
  panel('a', o.titleA, o.labelsA, o.a, false);
  panel('b', o.titleB, o.labelsB, o.b, false);
  const lh = Math.min(LAYOUT.heatmap.legendHeight, Math.max(100, mh - 20));
  const lw1 = legendItems(wScale, x, top, 'attention weight', theme, lh);
  items.push(...lw1.items);
  x += lw1.width + 28;
  // The difference panel: A's labels, "a / b" where B's differ.
  const both = (x: readonly string[], y: readonly string[]) => x.map((l, i) => (y[i] === undefined || y[i] === l ? l : `${l} / ${y[i]}`));
  const labelsDiff: DiffLabels = { ...o.labelsA, rows: both(o.labelsA.rows, o.labelsB.rows), cols: both(o.labelsA.cols, o.labelsB.cols) };
  panel('diff', 'A − B', labelsDiff, difference, true);
  const lw2 = legendItems(dScale, x, top, 'difference A − B', theme, lh);
  items.push(...lw2.items);
  let right = x + lw2.width;
  let bottom = top + Math.max(mh, lw1.height, lw2.height);
  if (anyMasked) {
    bottom += 18;
    items.push({ kind: 'text', x: m, y: bottom, text: 'blank cells: 0 in both traces (masked)', size: sfs, fill: theme.muted, className: 'masked-note' });
  }

  if (o.ranking && o.ranking.length) {
    const n = Math.min(o.ranking.length, o.listLength ?? 12);
    bottom += 28;
    const heading = `heads that changed most (${o.ranking.length} compared; Jensen–Shannon divergence in bits, mean over rows)`;
    items.push({ kind: 'text', x: m, y: bottom, text: heading, size: sfs, fill: theme.muted, bold: true, className: 'ranking-title' });
    right = Math.max(right, m + textWidth(heading, sfs));
    const rowH = sfs + 8;
    const barMax = 160;
    const maxJs = Math.max(...o.ranking.slice(0, n).map((r) => r.jsDivergence), 1e-12);
    for (let i = 0; i < n; i++) {
      const r = o.ranking[i]!;
      const ry = bottom + 8 + i * rowH;
      const selected = i === o.selected;
      if (selected) items.push({ kind: 'rect', x: m - 4, y: ry, width: 380 + barMax, height: rowH, fill: theme.highlight, className: 'ranked-selected' });
      const label = `${i + 1}. ${r.label}`;
      items.push({ kind: 'text', x: m, y: ry + rowH - 6, text: label, size: sfs, fill: theme.text, bold: selected || undefined, className: 'ranked-head', data: { index: i } });
      items.push({ kind: 'rect', x: m + 200, y: ry + 3, width: Math.max(1, (barMax * r.jsDivergence) / maxJs), height: rowH - 6, fill: theme.muted, fillOpacity: 0.6, className: 'ranked-bar' });
      const value = `JS ${r.jsDivergence.toPrecision(3)} · max |Δ| ${r.maxAbsDiff.toPrecision(3)}`;
      items.push({ kind: 'text', x: m + 210 + barMax, y: ry + rowH - 6, text: value, size: sfs, fill: theme.muted, className: 'ranked-value' });
      right = Math.max(right, m + 210 + barMax + textWidth(value, sfs));
    }
    bottom += 8 + n * rowH;
    if (o.ranking.length > n) {
      bottom += sfs + 6;
      items.push({ kind: 'text', x: m, y: bottom, text: `… and ${o.ranking.length - n} more`, size: sfs, fill: theme.muted, className: 'ranked-more' });
    }
  }
  for (const it of items) if (it.kind === 'text' && !it.rotate && it.anchor !== 'end') right = Math.max(right, it.x + textWidth(it.text, it.size));
  return { width: right + m, height: bottom + m, background: theme.background, items, cell, panels, difference, maxAbsDiff: maxAbs };
}
