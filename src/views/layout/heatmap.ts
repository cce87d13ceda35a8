/**
 * Heatmap layout, computed once as plain data: the query × key matrix of one head, the mean or
 * max over a layer's heads, or every head as small multiples; token labels on both axes (their
 * font a fraction of the cell, see CELL_FONT), the legend, masked cells left blank, the
 * prompt | generation boundary (dashed), the sentence-pair boundary (solid) and the newest row.
 * The SVG writer (src/views/svg/heatmap.ts) and the page (web/views/heatmap.ts, and the model
 * view's enlarged cell through web/matrix.ts) paint it.
 *
 * Isomorphic: imports nothing from Node.
 */
import { aggregateHeads, headMatrix, maskedEntries, pairBoundary, regroupMask } from '../../analysis/aggregate.js';
import { AttnscopeError } from '../../core/errors.js';
import type { Trace } from '../../core/trace.js';
import { headColors, weightScale } from '../colors.js';
import { tokenTipText } from '../generation.js';
import { type CommonViewOptions, checkIndex, resolveCommon } from '../svg/common.js';
import { LAYOUT, type Theme } from '../theme.js';
import { type DisplayStack, type DisplayToken, displayStack, prettifyToken, tokenLabel } from '../tokens.js';
import {
  CELL_FONT,
  type Item,
  type Picture,
  type ScaleSpec,
  cellLabelFont,
  labelStep,
  legendItems,
  scaleSpec,
  stackAxes,
  textWidth,
  truncate,
} from './common.js';

export type HeatmapAggregate = 'mean' | 'max' | 'all';

export interface HeatmapOptions extends CommonViewOptions {
  layer?: number;
  /** One head; when omitted, `aggregate` says what to show. */
  head?: number;
  /** Without a head: the mean or max over the layer's heads, or 'all' heads as small multiples (the default). */
  aggregate?: HeatmapAggregate;
  /** Logarithmic colour scale. */
  log?: boolean;
  /** Write each weight in its cell (default: when cells are large enough). */
  showValues?: boolean;
  /** Upper end of the colour scale (default: the largest weight shown). */
  max?: number;
}

/** The matrix a single heatmap shows: one head, or the mean / max over heads. */
export function heatmapMatrix(ds: DisplayStack, layer: number, which: number | 'mean' | 'max'): Float32Array {
  const nq = ds.queryTokens.length;
  const nk = ds.keyTokens.length;
  const data = ds.layers[layer]!;
  return typeof which === 'number' ? headMatrix(data, which, nq, nk) : aggregateHeads(data, ds.numHeads, nq, nk, which);
}

/** A row or column token as a matrix grid shows it. */
export interface GridToken {
  label: string;
  special: boolean;
  generated: boolean;
  segment: number;
  /** Tooltip of the label. */
  tip?: string;
}

export interface GridMatrix {
  values: Float32Array;
  /** Title above the matrix (small multiples). */
  title?: string;
  /** Colour mark beside the title (the head colour). */
  color?: string;
  /** data-* attributes of the matrix (head, aggregate, layer). */
  data?: Readonly<Record<string, string | number>>;
}

export interface GridInput {
  matrices: GridMatrix[];
  rows: readonly GridToken[];
  cols: readonly GridToken[];
  theme: Theme;
  log: boolean;
  /** Upper end of the colour scale (default: the largest value). */
  max?: number;
  /** Legend caption (without "(log)"). */
  caption: string;
  axes: { query: string; key: string };
  /** Row of the newest token at a generation step (outlined), or null. */
  newest: number | null;
  /** 1 per masked cell (rows × cols), the same for every matrix. */
  masked?: Uint8Array | null;
  /** Write values in cells (default: when cells are at least CELL_FONT.minValueCell). Single matrices only. */
  showValues?: boolean;
  /** y where the grid starts (below a heading). */
  top?: number;
  /** Space to fill: the largest matrix (one) or grid (several) within it. Default 1200 × 720. */
  frame?: { width?: number; height?: number };
  /** Largest cell side (default 22; the page lets small inputs grow). */
  maxCell?: number;
  /** Labels longer than this many characters are cut with an ellipsis (default LAYOUT.maxLabelChars). */
  labelChars?: number;
}

export interface GridLayout extends Picture {
  /** Cell side; matrix i sits at (originX + (i % cols) * (mw + gapX), originY + floor(i / cols) * (mh + gapY)). */
  cell: number;
  cols: number;
  originX: number;
  originY: number;
  mw: number;
  mh: number;
  gapX: number;
  gapY: number;
  nq: number;
  nk: number;
  /** Token label font size and every how many rows/columns a label is written. */
  labelFont: number;
  labelStep: number;
  scale: ScaleSpec;
  /** Where each matrix is. */
  matrices: { x: number; y: number }[];
}

function maxOf(a: ArrayLike<number>, masked?: Uint8Array | null): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) if (a[i]! > m && masked?.[i] !== 1) m = a[i]!;
  return m;
}

function minPositive(a: ArrayLike<number>): number {
  let m = Infinity;
  for (let i = 0; i < a.length; i++) if (a[i]! > 0 && a[i]! < m) m = a[i]!;
  return m;
}

function tokenFill(t: GridToken, theme: Theme): string {
  return t.special ? theme.special : t.generated ? theme.generated : theme.text;
}

/** Layout of one or more query × key matrices with labels, legend and marks (see the file comment). */
export function matrixGridLayout(o: GridInput): GridLayout {
  const H = LAYOUT.heatmap;
  const m = LAYOUT.margin;
  const sfs = LAYOUT.smallFontSize;
  const theme = o.theme;
  const nq = o.rows.length;
  const nk = o.cols.length;
  const count = o.matrices.length;
  const single = count === 1;
  const top = o.top ?? m;
  const maxCell = o.maxCell ?? H.cell;

  const cols = single ? 1 : count <= 4 ? count : count <= 16 ? 4 : Math.ceil(Math.sqrt(count));
  const gridRows = Math.ceil(count / cols);
  let cell: number;
  if (single) {
    const fw = o.frame?.width !== undefined ? o.frame.width - 2 * m - 200 : H.maxMatrixWidth;
    const fh = o.frame?.height !== undefined ? o.frame.height - top - m - 120 : H.maxMatrix;
    cell = Math.max(H.minCell, Math.min(maxCell, fw / nk, Math.max(fh, 200) / nq));
  } else {
    const side = Math.max(nq, nk);
    const fw = o.frame?.width !== undefined ? (o.frame.width - 2 * m - 260) / cols - 16 : H.multipleSide;
    cell = Math.max(1, Math.min(maxCell, Math.max(H.multipleSide, fw) / side));
  }
  const fs = single ? cellLabelFont(cell) : Math.min(sfs, Math.max(CELL_FONT.minSmallLabel, cell * CELL_FONT.label));
  const step = labelStep(cell, fs);
  const showLabels = single || cell >= 4;
  const qLabels = o.rows.map((t) => truncate(t.label, o.labelChars));
  const kLabels = o.cols.map((t) => truncate(t.label, o.labelChars));
  const widest = (ls: string[]) => Math.max(20, ...ls.map((l, i) => (i % step === 0 ? textWidth(l, fs) : 0)));
  const qW = showLabels ? widest(qLabels) + 8 : 0;
  const kH = showLabels ? widest(kLabels) + 8 : 0;
  const headFs = sfs;
  const gapX = single ? 0 : 16;
  const gapY = single ? 0 : headFs + 12;
  const mw = nk * cell;
  const mh = nq * cell;
  const queryAxis = `${o.axes.query} ↓`;
  const keyAxis = `${o.axes.key} →`;
  const cornerW = single ? Math.max(textWidth(queryAxis, sfs), textWidth(keyAxis, sfs)) + 8 : 0;
  const originX = m + Math.max(qW, cornerW);
  const originY = top + (single ? Math.max(kH, 2 * sfs + 14) + 2 : kH + headFs + 8);
  const gridW = cols * (mw + gapX) - gapX;
  const gridH = gridRows * (mh + gapY) - gapY;

  // Colour scale over every matrix shown (masked cells left out).
  let max = o.max ?? Math.max(...o.matrices.map((x) => maxOf(x.values, o.masked)));
  if (!(max > 0)) max = 1;
  const min = o.log ? Math.max(Math.min(...o.matrices.map((x) => minPositive(x.values))), max * 1e-6) : undefined;
  const scale = weightScale(theme, { max, log: o.log, min });
  const spec = scaleSpec(scale);

  const items: Item[] = [];
  if (single) {
    items.push({ kind: 'text', x: originX - 8, y: originY - 8, text: queryAxis, size: sfs, fill: theme.muted, anchor: 'end', className: 'axis-name' });
    items.push({ kind: 'text', x: originX - 8, y: originY - 14 - sfs, text: keyAxis, size: sfs, fill: theme.muted, anchor: 'end', className: 'axis-name' });
  }
  const firstGenerated = (ts: readonly GridToken[]) => {
    const i = ts.findIndex((t) => t.generated);
    return i > 0 ? i : null;
  };
  const qb = firstGenerated(o.rows);
  const kb = firstGenerated(o.cols);
  const qPair = pairBoundary(o.rows.map((t) => t.segment));
  const kPair = pairBoundary(o.cols.map((t) => t.segment));
  const showValues = single && (o.showValues ?? cell >= CELL_FONT.minValueCell);
  const matrices: { x: number; y: number }[] = [];
  o.matrices.forEach((spec2, i) => {
    const col = i % cols;
    const row = Math.floor(i / cols);
    const x0 = originX + col * (mw + gapX);
    const y0 = originY + row * (mh + gapY);
    matrices.push({ x: x0, y: y0 });
    if (spec2.title) {
      if (spec2.color) items.push({ kind: 'rect', x: x0, y: y0 - headFs - 7, width: 8, height: 8, rx: 2, fill: spec2.color });
      items.push({ kind: 'text', x: x0 + 12, y: y0 - 6, text: spec2.title, size: headFs, fill: theme.muted, className: 'matrix-title' });
    }
    items.push({
      kind: 'matrix',
      x: x0,
      y: y0,
      width: mw,
      height: mh,
      rows: nq,
      cols: nk,
      values: spec2.values,
      scale: spec,
      masked: o.masked ?? undefined,
      maskedFill: theme.background,
      valueFont: showValues ? Math.min(sfs, cell * CELL_FONT.value) : undefined,
      className: 'matrix',
      data: spec2.data,
    });
    items.push({ kind: 'rect', x: x0 - 0.5, y: y0 - 0.5, width: mw + 1, height: mh + 1, fill: null, stroke: theme.grid, strokeWidth: 1, className: 'matrix-frame' });
    // Sentence pair: where sentence B starts (solid), on both axes.
    if (qPair !== null) items.push({ kind: 'line', x1: x0, y1: y0 + qPair * cell, x2: x0 + mw, y2: y0 + qPair * cell, stroke: theme.text, width: 1.25, opacity: 0.6, className: 'pair-boundary', data: { axis: 'query', index: qPair }, tip: 'sentence A | sentence B' });
    if (kPair !== null) items.push({ kind: 'line', x1: x0 + kPair * cell, y1: y0, x2: x0 + kPair * cell, y2: y0 + mh, stroke: theme.text, width: 1.25, opacity: 0.6, className: 'pair-boundary', data: { axis: 'key', index: kPair }, tip: 'sentence A | sentence B' });
    // Prompt | generated (dashed) and the newest row.
    const thin = cell < 6;
    if (qb !== null) items.push({ kind: 'line', x1: x0, y1: y0 + qb * cell, x2: x0 + mw, y2: y0 + qb * cell, stroke: theme.generated, width: thin ? 1 : 1.25, dash: thin ? [2, 2] : [4, 3], className: 'prompt-boundary', data: { axis: 'query' } });
    if (kb !== null) items.push({ kind: 'line', x1: x0 + kb * cell, y1: y0, x2: x0 + kb * cell, y2: y0 + mh, stroke: theme.generated, width: thin ? 1 : 1.25, dash: thin ? [2, 2] : [4, 3], className: 'prompt-boundary', data: { axis: 'key' } });
    if (o.newest !== null) {
      const w = cell >= 6 ? 2 : 1.5;
      items.push({ kind: 'rect', x: x0 - w / 2, y: y0 + o.newest * cell - w / 2, width: mw + w, height: cell + w, fill: null, stroke: theme.text, strokeWidth: w, className: 'newest-row', data: { q: o.newest } });
    }
    if (!showLabels) return;
    if (col === 0) {
      o.rows.forEach((t, q) => {
        if (q % step && q !== o.newest) return;
        items.push({
          kind: 'text', x: x0 - 6, y: y0 + (q + 0.5) * cell + fs * 0.36, text: qLabels[q]!, size: fs, anchor: 'end', fill: tokenFill(t, theme), italic: t.generated || undefined,
          bold: q === o.newest || undefined, className: `token query${t.generated ? ' generated' : ''}`, data: { index: q }, tip: t.tip,
        });
      });
    }
    if (row === 0) {
      const yb = y0 - (single ? 6 : headFs + 12);
      o.cols.forEach((t, k) => {
        if (k % step) return;
        items.push({
          kind: 'text', x: x0 + (k + 0.5) * cell + fs * 0.36, y: yb, text: kLabels[k]!, size: fs, rotate: -90, fill: tokenFill(t, theme), italic: t.generated || undefined,
          className: `token key${t.generated ? ' generated' : ''}`, data: { index: k }, tip: t.tip,
        });
      });
    }
  });
  const lg = legendItems(scale, originX + gridW + 24, originY, o.caption + (o.log ? ' (log)' : ''), theme, Math.min(H.legendHeight, Math.max(100, gridH - 20)));
  items.push(...lg.items);
  let bottom = Math.max(originY + gridH, originY + lg.height);
  if (!single) {
    items.push({ kind: 'text', x: m, y: bottom + 18, text: `rows: ${o.axes.query} · columns: ${o.axes.key}`, size: sfs, fill: theme.muted, className: 'axes-note' });
    bottom += 18;
  }
  if (o.masked && o.masked.some((v) => v === 1)) {
    items.push({ kind: 'text', x: m, y: bottom + 18, text: 'blank cells: masked (the model gives them no weight)', size: sfs, fill: theme.muted, className: 'masked-note' });
    bottom += 18;
  }
  // Notes under the grid may be wider than the grid and legend.
  let right = originX + gridW + 24 + lg.width;
  for (const it of items) if (it.kind === 'text' && (it.className === 'masked-note' || it.className === 'axes-note')) right = Math.max(right, it.x + textWidth(it.text, it.size));
  return {
    width: right + m,
    height: bottom + m,
    background: theme.background,
    items,
    cell,
    cols,
    originX,
    originY,
    mw,
    mh,
    gapX,
    gapY,
    nq,
    nk,
    labelFont: fs,
    labelStep: step,
    scale: spec,
    matrices,
  };
}

/** What a heatmap shows, resolved from the options. */
export interface HeatmapModel {
  ds: DisplayStack;
  layer: number;
  mode: number | HeatmapAggregate;
  masked: Uint8Array | null;
  common: ReturnType<typeof resolveCommon>;
}

export function heatmapModel(trace: Trace, options: HeatmapOptions = {}): HeatmapModel {
  const common = resolveCommon(trace, options);
  const { stack } = common;
  const numLayers = trace.attention[stack]!.layers.length;
  const layer = checkIndex(options.layer ?? 0, numLayers, 'layer');
  if (options.head !== undefined && options.aggregate !== undefined) {
    throw new AttnscopeError('heatmap: give either a head or an aggregate (mean, max, all), not both');
  }
  if (options.aggregate !== undefined && !['mean', 'max', 'all'].includes(options.aggregate)) {
    throw new AttnscopeError(`unknown aggregate '${options.aggregate}' (expected mean, max or all)`);
  }
  const ds = displayStack(trace, stack, { hideSpecial: options.hideSpecial, mergeSubwords: options.mergeSubwords, layers: [layer], step: options.step });
  const head = options.head === undefined ? undefined : checkIndex(options.head, ds.numHeads, 'head');
  const mode: number | HeatmapAggregate = head ?? options.aggregate ?? 'all';
  return { ds, layer, mode, masked: displayMask(trace, ds, layer), common };
}

/** The masked cells of a display stack's layer (rows × cols), or null when none. */
export function displayMask(trace: Trace, ds: DisplayStack, layer: number): Uint8Array | null {
  const mask = maskedEntries(trace, ds.stack, layer);
  if (!mask) return null;
  const nkPositions = trace.attention[ds.stack]!.dims[2];
  const out = regroupMask(mask, nkPositions, ds.queryTokens.map((t) => t.positions), ds.keyTokens.map((t) => t.positions));
  return out.some((v) => v === 1) ? out : null;
}

/** The grid tokens of a display stack's rows or columns (tooltips: generated tokens' probability notes). */
export function gridTokens(trace: Trace, ds: DisplayStack, side: 'query' | 'key', label: (t: DisplayToken) => string = (t) => t.label, tip?: (t: DisplayToken, i: number) => string | undefined): GridToken[] {
  const tokens = side === 'query' ? ds.queryTokens : ds.keyTokens;
  return tokens.map((t, i) => ({
    label: label(t),
    special: t.special,
    generated: t.generated,
    segment: t.segment,
    // Generated tokens' probabilities and the head's predictions (--top-k) at the token.
    tip: tip ? tip(t, i) : tokenTipText(trace, ds.stack, side, t, (c) => tokenLabel(prettifyToken(c, trace.model.modelType))),
  }));
}

/** The heatmap's layout: the matrices of `heatmapModel`, laid out by matrixGridLayout. */
export function heatmapLayout(
  trace: Trace,
  options: HeatmapOptions = {},
  place: Pick<GridInput, 'top' | 'frame' | 'maxCell'> & { label?: (t: DisplayToken) => string; tokenTip?: (side: 'query' | 'key', t: DisplayToken, i: number) => string | undefined } = {},
  model: HeatmapModel = heatmapModel(trace, options),
): GridLayout & { model: HeatmapModel } {
  const { ds, layer, mode, masked, common } = model;
  const colors = headColors(ds.numHeads);
  const matrices: GridMatrix[] =
    mode === 'all'
      ? Array.from({ length: ds.numHeads }, (_, h) => ({ values: heatmapMatrix(ds, layer, h), title: `head ${h}`, color: colors[h], data: { layer, head: h } }))
      : [{ values: heatmapMatrix(ds, layer, mode), data: typeof mode === 'number' ? { layer, head: mode } : { layer, aggregate: mode } }];
  const tip = place.tokenTip;
  const layout = matrixGridLayout({
    matrices,
    rows: gridTokens(trace, ds, 'query', place.label, tip ? (t, i) => tip('query', t, i) : undefined),
    cols: gridTokens(trace, ds, 'key', place.label, tip ? (t, i) => tip('key', t, i) : undefined),
    theme: common.theme,
    log: options.log ?? false,
    max: options.max,
    caption: mode === 'mean' ? 'mean weight' : mode === 'max' ? 'max weight' : 'attention weight',
    axes: stackAxes(common.stack),
    newest: ds.newest,
    masked,
    showValues: options.showValues,
    top: place.top,
    frame: place.frame,
    maxCell: place.maxCell,
  });
  return { ...layout, model };
}
