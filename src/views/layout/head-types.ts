/**
 * Head-type grid, computed once as plain data: one cell per (layer, head) of a stack — layers as
 * rows (L0 on top), heads as columns — filled with the colour of the head's top type
 * (analysis/head-types.ts: the type furthest above its threshold) and shaded by how far its score
 * goes past the threshold (lightest at the threshold, full at a score of 1); heads of no type are
 * left neutral (the panel colour, "–"). Large cells also name the type and its score. A legend lists
 * every type with its threshold and how many heads it has ("none" included), and a note says what
 * the shade means. The SVG writer (src/views/svg/head-types.ts) and the page (web/views/head-types.ts)
 * paint it; cells carry data-layer / data-head / data-type so that the page can open a head.
 *
 * Isomorphic: imports nothing from Node.
 */
import { HEAD_TYPE_COLUMN, HEAD_TYPE_NAMES, HEAD_TYPE_THRESHOLDS, type HeadTableRow, type HeadTypeName, headTable } from '../../analysis/head-types.js';
import type { Trace } from '../../core/trace.js';
import { headColors, parseColor } from '../colors.js';
import { type CommonViewOptions, resolveCommon } from '../svg/common.js';
import { LAYOUT, type Theme } from '../theme.js';
import { type Item, type Picture, layerHeadGrid, textWidth, wrapText } from './common.js';
import { headLabel, traceAtStep } from './head-clusters.js';

export interface HeadTypesOptions extends CommonViewOptions {
  /** Measure the heads without the first token (TransformerLens' exclude_bos). */
  excludeFirstToken?: boolean;
  /** A head table computed elsewhere (e.g. on the repeated-token probe) instead of the trace's. */
  table?: readonly HeadTableRow[];
}

/** The head table a view shows: the given one, or the trace's (at `step`) with the options. */
export function headTypesTableOf(trace: Trace, options: HeadTypesOptions = {}): readonly HeadTableRow[] {
  if (options.table) return options.table;
  const { stack } = resolveCommon(trace, options);
  const at = options.step === undefined ? trace : traceAtStep(trace, stack, options.step);
  return headTable(at, stack, { excludeFirstToken: options.excludeFirstToken });
}

/** Short names written in the cells. */
export const HEAD_TYPE_SHORT: Readonly<Record<HeadTypeName, string>> = {
  previous_token: 'prev',
  next_token: 'next',
  self: 'self',
  sink: 'sink',
  separator: 'sep',
  punctuation: 'punct',
  broad: 'broad',
  local: 'local',
  duplicate_token: 'dup',
  induction: 'ind',
};

/**
 * One colour per type: the shared categorical palette (headColors: Tableau10) without its grey,
 * which would read as "no type", plus one more hue; types that often meet in one model
 * (sink, previous-token, induction, duplicate-token, broad) get the most distinct ones.
 */
export const HEAD_TYPE_COLORS: Readonly<Record<HeadTypeName, string>> = (() => {
  const t = headColors(10);
  return {
    previous_token: t[0]!,
    induction: t[2]!,
    duplicate_token: t[1]!,
    sink: t[3]!,
    broad: t[6]!,
    self: t[4]!,
    local: t[5]!,
    next_token: t[7]!,
    separator: t[8]!,
    punctuation: '#8f2d56',
  };
})();

/** Lightest shade of a typed cell (at its threshold); a score of 1 is fully opaque. */
export const TYPE_MIN_OPACITY = 0.35;

/** How strongly a head is of its type, in [0, 1]: (score − threshold) / (1 − threshold), clamped. */
export function typeStrength(type: HeadTypeName, score: number): number {
  const thr = HEAD_TYPE_THRESHOLDS[type];
  if (!Number.isFinite(score)) return 0;
  return Math.min(1, Math.max(0, (score - thr) / (1 - thr)));
}

export interface TypeCell {
  layer: number;
  head: number;
  type: HeadTypeName | null;
  score: number;
  /** The cell's box on the picture. */
  x: number;
  y: number;
  size: number;
  color: string;
  opacity: number;
}

export interface HeadTypesLayout extends Picture {
  cells: TypeCell[];
  /** The grid's box (cells inside it). */
  grid: { x: number; y: number; width: number; height: number };
  layers: number;
  heads: number;
  cell: number;
  /** Heads of each type (the legend's counts). */
  counts: Readonly<Record<HeadTypeName, number>>;
  untyped: number;
}

export interface HeadTypesPlace {
  /** y where the picture starts (below a heading). */
  top?: number;
  /** Space to fill (default: cells of at most 48 px in a 560 px grid). */
  frame?: { width?: number; height?: number };
  /** A head drawn outlined (the page's current head). */
  selected?: { layer: number; head: number } | null;
}

export const TYPE_GRID = { side: 560, maxCell: 48, minCell: 10, swatch: 12 } as const;

/** "previous_token 0.62 ≥ 0.4" lines of a head's type scores, strongest (by score / threshold) first. */
export function typeScoreLines(row: HeadTableRow): { type: HeadTypeName; score: number; threshold: number; passes: boolean }[] {
  return HEAD_TYPE_NAMES.map((type) => {
    const score = row[HEAD_TYPE_COLUMN[type]];
    const threshold = HEAD_TYPE_THRESHOLDS[type];
    return { type, score, threshold, passes: score >= threshold };
  }).sort((a, b) => (Number.isFinite(b.score) ? b.score / b.threshold : -1) - (Number.isFinite(a.score) ? a.score / a.threshold : -1));
}

/** A colour laid at `opacity` over `under`, as RGB (for choosing readable text on it). */
function blend(color: string, under: string, opacity: number): [number, number, number] {
  const a = parseColor(color);
  const b = parseColor(under);
  return [0, 1, 2].map((i) => a[i]! * opacity + b[i]! * (1 - opacity)) as [number, number, number];
}

/** Black or white, whichever reads on an RGB fill (WCAG relative luminance). */
function inkOn([r, g, b]: [number, number, number]): string {
  const lin = (c: number) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  const lum = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  return lum > 0.22 ? '#111111' : '#ffffff';
}

const fmt = (v: number) => (Number.isFinite(v) ? v.toFixed(2) : '–');

/** Lays out the grid of a head table (see the file comment). Rows must cover every (layer, head). */
export function headTypesLayout(table: readonly HeadTableRow[], theme: Theme, place: HeadTypesPlace = {}): HeadTypesLayout {
  if (table.length === 0) throw new Error('head types: the head table is empty');
  const m = LAYOUT.margin;
  const fs = LAYOUT.fontSize;
  const sfs = LAYOUT.smallFontSize;
  const top = place.top ?? m;
  const layers = Math.max(...table.map((r) => r.layer)) + 1;
  const heads = Math.max(...table.map((r) => r.head)) + 1;

  // Legend lines (type, threshold, count), measured first: the grid takes the rest of the frame.
  const counts = Object.fromEntries(HEAD_TYPE_NAMES.map((t) => [t, 0])) as Record<HeadTypeName, number>;
  let untyped = 0;
  for (const r of table) {
    if (r.top_type) counts[r.top_type]++;
    else untyped++;
  }
  const plural = (n: number) => (n === 0 ? 'none' : `${n} head${n === 1 ? '' : 's'}`);
  const legendText = (t: HeadTypeName) => `${t} ≥ ${HEAD_TYPE_THRESHOLDS[t]}${t === 'broad' ? ' (entropy)' : ''} · ${plural(counts[t])}`;
  const untypedText = `no type (nothing reaches its threshold) · ${plural(untyped)}`;
  const caption = 'top type (score furthest above its threshold)';
  const sw = TYPE_GRID.swatch;
  const legendW = Math.max(textWidth(caption, sfs), ...HEAD_TYPE_NAMES.map((t) => sw + 8 + textWidth(legendText(t), fs)), sw + 8 + textWidth(untypedText, fs));

  // Grid: square cells, row labels "L0" left, column labels "H0" above, axis names outside them.
  const { cell, grid, axes } = layerHeadGrid(layers, heads, top, TYPE_GRID, legendW, theme, place.frame);
  const items: Item[] = [...axes];

  // Cells: neutral under every cell (the frame of an untyped head), the type's shade over it.
  const cells: TypeCell[] = [];
  const sel = place.selected;
  const showType = cell >= 24;
  const showScore = cell >= 36;
  const nameFont = Math.min(fs, Math.max(8, Math.floor(cell / 3.2)));
  const scoreFont = Math.max(8, nameFont - 2);
  for (const r of table) {
    const x = grid.x + r.head * cell;
    const y = grid.y + r.layer * cell;
    const type = r.top_type;
    const color = type ? HEAD_TYPE_COLORS[type] : theme.panel;
    const opacity = type ? TYPE_MIN_OPACITY + (1 - TYPE_MIN_OPACITY) * typeStrength(type, r.top_score) : 1;
    cells.push({ layer: r.layer, head: r.head, type, score: r.top_score, x, y, size: cell, color, opacity });
    const selected = sel != null && sel.layer === r.layer && sel.head === r.head;
    const scores = typeScoreLines(r).filter((s) => s.passes).map((s) => `${s.type} ${fmt(s.score)} ≥ ${s.threshold}`);
    const tip = `${headLabel(r.layer, r.head)} · ${type ? `${type} ${fmt(r.top_score)}` : 'no type'}${scores.length > 1 ? ` (also ${scores.slice(1).join(', ')})` : ''}`;
    items.push({ kind: 'rect', x, y, width: cell, height: cell, fill: theme.panel, stroke: theme.background, strokeWidth: 1, className: 'cell-ground' });
    items.push({
      kind: 'rect',
      x: x + 0.5,
      y: y + 0.5,
      width: cell - 1,
      height: cell - 1,
      fill: type ? color : null,
      fillOpacity: type ? Number(opacity.toFixed(3)) : undefined,
      stroke: selected ? theme.text : type ? undefined : theme.grid,
      strokeWidth: selected ? 2.5 : type ? undefined : 1,
      className: `type-cell${type ? '' : ' untyped'}${selected ? ' selected' : ''}`,
      data: { layer: r.layer, head: r.head, type: type ?? '' },
      tip,
    });
    const ink = type ? inkOn(blend(color, theme.background, opacity)) : theme.muted;
    const cx = x + cell / 2;
    if (showType) {
      const name = type ? HEAD_TYPE_SHORT[type] : '–';
      const nameY = showScore && type ? y + cell / 2 - 1 : y + cell / 2 + nameFont * 0.35;
      if (textWidth(name, nameFont) <= cell - 4) {
        items.push({ kind: 'text', x: cx, y: nameY, text: name, size: nameFont, fill: ink, anchor: 'middle', bold: type !== null, className: 'cell-type', data: { layer: r.layer, head: r.head } });
      }
      if (showScore && type) {
        items.push({ kind: 'text', x: cx, y: nameY + scoreFont + 2, text: fmt(r.top_score), size: scoreFont, fill: ink, anchor: 'middle', className: 'cell-score', data: { layer: r.layer, head: r.head } });
      }
    }
  }

  // Legend: every type with its threshold and count, then "no type".
  const lx = grid.x + grid.width + 28;
  let ly = grid.y + sfs - 2;
  items.push({ kind: 'text', x: lx, y: ly, text: caption, size: sfs, fill: theme.muted, className: 'legend-caption' });
  ly += 6;
  for (const t of HEAD_TYPE_NAMES) {
    ly += fs + 8;
    items.push({ kind: 'rect', x: lx, y: ly - sw + 1, width: sw, height: sw, fill: HEAD_TYPE_COLORS[t], className: 'legend-swatch', data: { type: t } });
    items.push({ kind: 'text', x: lx + sw + 8, y: ly, text: legendText(t), size: fs, fill: counts[t] ? theme.text : theme.muted, className: 'type-name', data: { type: t } });
  }
  ly += fs + 8;
  items.push({ kind: 'rect', x: lx + 0.5, y: ly - sw + 1.5, width: sw - 1, height: sw - 1, fill: theme.panel, stroke: theme.grid, strokeWidth: 1, className: 'legend-swatch untyped', data: { type: '' } });
  items.push({ kind: 'text', x: lx + sw + 8, y: ly, text: untypedText, size: fs, fill: untyped ? theme.text : theme.muted, className: 'type-name', data: { type: '' } });

  // What the shade means, wrapped under the grid.
  const width = Math.max(lx + legendW, grid.x + grid.width) + m;
  const note = `shade: a head's top-type score from its threshold (faintest, ${TYPE_MIN_OPACITY * 100} % opacity) to 1 (full)${showScore ? '; the number is that score' : ''}; a tie goes to the type listed first`;
  let y = Math.max(grid.y + grid.height, ly) + 4;
  for (const line of wrapText(note, sfs, width - 2 * m)) {
    y += sfs + 4;
    items.push({ kind: 'text', x: m, y, text: line, size: sfs, fill: theme.muted, className: 'types-note' });
  }
  const height = y + m;
  return { width, height, background: theme.background, items, cells, grid, layers, heads, cell, counts, untyped };
}
