/**
 * Heatmap as SVG: the query × key matrix of one head, the mean or max over a layer's heads, or
 * every head of a layer as small multiples; token labels on both axes and a colour legend
 * (linear or log).
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../../core/errors.js';
import type { Trace } from '../../core/trace.js';
import { type WeightScale, headColors, textOn, weightScale } from '../colors.js';
import { LAYOUT, type Theme } from '../theme.js';
import { type DisplayStack, type DisplayToken, displayStack } from '../tokens.js';
import {
  type CommonViewOptions,
  STACK_TITLES,
  attrs,
  checkIndex,
  firstGeneratedBoundary,
  fmtAttr,
  generatedClass,
  generationHeader,
  viewHeading,
  promptBoundary,
  tokenStyle,
  withTokenTip,
  fmtValue,
  legend,
  n,
  resolveCommon,
  svgDocument,
  text,
  textWidth,
  truncate,
  PIXELATED_CLASS,
} from './common.js';
import { matrixDataUri } from './image.js';

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
  const size = nq * nk;
  const data = ds.layers[layer]!;
  if (typeof which === 'number') return data.subarray(which * size, (which + 1) * size);
  const out = new Float32Array(size);
  if (which === 'max') out.fill(-Infinity);
  for (let h = 0; h < ds.numHeads; h++) {
    const off = h * size;
    if (which === 'mean') for (let i = 0; i < size; i++) out[i]! += data[off + i]! / ds.numHeads;
    else for (let i = 0; i < size; i++) if (data[off + i]! > out[i]!) out[i] = data[off + i]!;
  }
  return out;
}

function maxOf(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) if (a[i]! > m) m = a[i]!;
  return m;
}

/** Smallest positive value (for the lower end of a log scale). */
function minPositive(a: ArrayLike<number>): number {
  let m = Infinity;
  for (let i = 0; i < a.length; i++) if (a[i]! > 0 && a[i]! < m) m = a[i]!;
  return m;
}

interface MatrixPlacement {
  x: number;
  y: number;
  cell: number;
}

/** Generation marks on a matrix: where the generated rows / columns start, and the newest row. */
interface MatrixMarks {
  queryBoundary: number | null;
  keyBoundary: number | null;
  newest: number | null;
}

function marksOf(ds: DisplayStack): MatrixMarks {
  return { queryBoundary: firstGeneratedBoundary(ds.queryTokens), keyBoundary: firstGeneratedBoundary(ds.keyTokens), newest: ds.newest };
}

/** Dashed prompt | generated boundaries across a matrix and the newest row's outline. */
export function matrixMarks(marks: MatrixMarks, nq: number, nk: number, at: MatrixPlacement, theme: Theme): string {
  const { x, y, cell } = at;
  let s = '';
  if (marks.queryBoundary !== null) s += promptBoundary(x, y + marks.queryBoundary * cell, x + nk * cell, y + marks.queryBoundary * cell, theme, 'query');
  if (marks.keyBoundary !== null) s += promptBoundary(x + marks.keyBoundary * cell, y, x + marks.keyBoundary * cell, y + nq * cell, theme, 'key');
  if (marks.newest !== null) {
    const w = cell >= 6 ? 2 : 1.5;
    s += `<rect${attrs({ x: x - w / 2, y: y + marks.newest * cell - w / 2, width: nk * cell + w, height: cell + w, fill: 'none', stroke: theme.text, 'stroke-width': w, class: 'newest-row', 'data-q': marks.newest })}/>`;
  }
  return s;
}

/** The cells of one matrix: rects when few, one embedded image when many. */
function matrixCells(
  values: Float32Array,
  nq: number,
  nk: number,
  at: MatrixPlacement,
  scale: WeightScale,
  theme: Theme,
  showValues: boolean,
  attrsExtra: string,
): string {
  const { x, y, cell } = at;
  let s = `<g class="matrix"${attrsExtra}>`;
  if (nq * nk <= LAYOUT.heatmap.maxRects) {
    const c = n(cell + (cell > 6 ? 0 : 0.05));
    for (let q = 0; q < nq; q++) {
      for (let k = 0; k < nk; k++) {
        const v = values[q * nk + k]!;
        s += `<rect x="${n(x + k * cell)}" y="${n(y + q * cell)}" width="${c}" height="${c}" fill="${scale.color(v)}" data-q="${q}" data-k="${k}" data-value="${fmtAttr(v)}"/>`;
      }
    }
    if (showValues) {
      const fs = Math.min(LAYOUT.smallFontSize, cell * 0.34);
      for (let q = 0; q < nq; q++) {
        for (let k = 0; k < nk; k++) {
          const v = values[q * nk + k]!;
          if (!(v >= 0.005)) continue; // blank below what two decimals show (masked zeros included)
          const label = v >= 0.995 ? '1' : v.toFixed(2).replace(/^0/, '');
          s += text(x + (k + 0.5) * cell, y + (q + 0.5) * cell + fs * 0.36, label, { 'font-size': fs, 'text-anchor': 'middle', fill: textOn(scale.color(v)) });
        }
      }
    }
  } else {
    const img = matrixDataUri(values, 0, nq, nk, scale);
    s += `<image${attrs({ x, y, width: nk * cell, height: nq * cell, preserveAspectRatio: 'none', 'image-rendering': 'optimizeSpeed', class: PIXELATED_CLASS, href: img.uri })}/>`;
  }
  s += `<rect${attrs({ x: x - 0.5, y: y - 0.5, width: nk * cell + 1, height: nq * cell + 1, fill: 'none', stroke: theme.grid, 'stroke-width': 1 })}/>`;
  return `${s}</g>`;
}

/** Every `step`-th label, so that labels never overlap when cells are small. */
function labelStep(cell: number, fs: number): number {
  return Math.max(1, Math.ceil((fs * 1.1) / cell));
}

type Tip = (side: 'query' | 'key', t: DisplayToken, label: string) => string;

function queryLabels(tokens: DisplayToken[], xRight: number, y: number, cell: number, fs: number, theme: Theme, tip: Tip, newest: number | null): string {
  const step = labelStep(cell, fs);
  let s = '';
  tokens.forEach((t, i) => {
    if (i % step && i !== newest) return;
    s += tip('query', t, text(xRight, y + (i + 0.5) * cell + fs * 0.36, truncate(t.label), {
      'font-size': fs,
      'text-anchor': 'end',
      ...tokenStyle(t, theme),
      class: `token query${generatedClass(t)}`,
      'data-index': i,
      'font-weight': i === newest ? 'bold' : undefined,
    }));
  });
  return s;
}

function keyLabels(tokens: DisplayToken[], x: number, yBottom: number, cell: number, fs: number, theme: Theme, tip: Tip): string {
  const step = labelStep(cell, fs);
  let s = '';
  tokens.forEach((t, i) => {
    if (i % step) return;
    const cx = x + (i + 0.5) * cell + fs * 0.36;
    s += tip('key', t, text(cx, yBottom, truncate(t.label), {
      'font-size': fs,
      transform: `rotate(-90 ${n(cx)} ${n(yBottom)})`,
      ...tokenStyle(t, theme),
      class: `token key${generatedClass(t)}`,
      'data-index': i,
    }));
  });
  return s;
}

function labelsWidth(tokens: DisplayToken[], fs: number, step: number): number {
  return Math.max(20, ...tokens.filter((_, i) => i % step === 0).map((t) => textWidth(truncate(t.label), fs)));
}

/** Renders the heatmap as a standalone SVG document. */
export function renderHeatmap(trace: Trace, options: HeatmapOptions = {}): string {
  const common = resolveCommon(trace, options);
  const { theme, stack } = common;
  const numLayers = trace.attention[stack]!.layers.length;
  const layer = checkIndex(options.layer ?? 0, numLayers, 'layer');
  const ds = displayStack(trace, stack, { hideSpecial: options.hideSpecial, mergeSubwords: options.mergeSubwords, layers: [layer], step: options.step });
  const tip: Tip = (side, t, label) => withTokenTip(trace, stack, side, t, label);
  const marks = marksOf(ds);
  if (options.head !== undefined && options.aggregate !== undefined) {
    throw new AttnscopeError('heatmap: give either a head or an aggregate (mean, max, all), not both');
  }
  if (options.aggregate !== undefined && !['mean', 'max', 'all'].includes(options.aggregate)) {
    throw new AttnscopeError(`unknown aggregate '${options.aggregate}' (expected mean, max or all)`);
  }
  const head = options.head === undefined ? undefined : checkIndex(options.head, ds.numHeads, 'head');
  const mode: number | HeatmapAggregate = head ?? options.aggregate ?? 'all';
  const nq = ds.queryTokens.length;
  const nk = ds.keyTokens.length;
  const log = options.log ?? false;
  const H = LAYOUT.heatmap;
  const m = LAYOUT.margin;
  const cross = stack === 'cross';

  const what = typeof mode === 'number' ? `head ${mode}` : mode === 'all' ? `all ${ds.numHeads} heads` : `${mode} over ${ds.numHeads} heads`;
  const title =
    options.title === false ? '' : (options.title ?? `${trace.model.name} · ${STACK_TITLES[stack]} · layer ${layer} · ${what}${ds.step !== null ? ` · step ${ds.step}` : ''}`);
  let body = '';
  let y: number = m;
  const heading = viewHeading(title, 10, m, y, (at) => generationHeader(trace, stack, ds, m, at, theme, 'outlined row'));
  body += heading.svg;
  y = heading.y;

  const matrices = mode === 'all' ? Array.from({ length: ds.numHeads }, (_, h) => heatmapMatrix(ds, layer, h)) : [heatmapMatrix(ds, layer, mode)];
  let max = options.max ?? Math.max(...matrices.map(maxOf));
  if (!(max > 0)) max = 1;
  const min = log ? Math.max(Math.min(...matrices.map(minPositive)), max * 1e-6) : 0;
  const scale = weightScale(theme, { max, log, min: log ? min : undefined });
  const legendCaption = mode === 'mean' ? 'mean weight' : mode === 'max' ? 'max weight' : 'attention weight';
  let right = 0;
  let bottom = 0;

  if (mode !== 'all') {
    // Square cells; wide matrices (cross attention) may use more width than height.
    const cell = Math.max(H.minCell, Math.min(H.cell, H.maxMatrixWidth / nk, H.maxMatrix / nq));
    const fs = Math.min(LAYOUT.fontSize, Math.max(7, cell * 0.72));
    const qStep = labelStep(cell, fs);
    const qW = labelsWidth(ds.queryTokens, fs, qStep);
    const kH = labelsWidth(ds.keyTokens, fs, qStep);
    const axisFs = LAYOUT.smallFontSize;
    const cornerW = textWidth(cross ? 'decoder (queries) ↓' : 'queries ↓', axisFs);
    const mx = m + Math.max(qW, cornerW) + 8;
    const my = y + Math.max(kH, 2 * axisFs + 14) + 8;
    // Axis names in the empty corner above the query labels.
    body += text(mx - 8, my - 8, cross ? 'decoder (queries) ↓' : 'queries ↓', { 'font-size': axisFs, fill: theme.muted, 'text-anchor': 'end' });
    body += text(mx - 8, my - 8 - axisFs - 6, cross ? 'encoder (keys) →' : 'keys →', { 'font-size': axisFs, fill: theme.muted, 'text-anchor': 'end' });
    body += keyLabels(ds.keyTokens, mx, my - 6, cell, fs, theme, tip);
    body += queryLabels(ds.queryTokens, mx - 6, my, cell, fs, theme, tip, ds.newest);
    const showValues = options.showValues ?? cell >= H.cell;
    const dataAttrs = typeof mode === 'number' ? ` data-head="${mode}"` : ` data-aggregate="${mode}"`;
    body += matrixCells(matrices[0]!, nq, nk, { x: mx, y: my, cell }, scale, theme, showValues, ` data-layer="${layer}"${dataAttrs}`);
    body += matrixMarks(marks, nq, nk, { x: mx, y: my, cell }, theme);
    const lg = legend(scale, mx + nk * cell + 24, my, theme, `${common.idPrefix}-heatmap-legend`, legendCaption + (log ? ' (log)' : ''), Math.min(H.legendHeight, Math.max(100, nq * cell - 20)));
    body += lg.svg;
    right = mx + nk * cell + 24 + lg.width;
    bottom = Math.max(my + nq * cell, my + lg.height);
  } else {
    // Small multiples: one matrix per head; query labels on the first column, key labels above the first row.
    const colors = headColors(ds.numHeads);
    const cols = Math.min(ds.numHeads, ds.numHeads <= 4 ? ds.numHeads : ds.numHeads <= 16 ? 4 : Math.ceil(Math.sqrt(ds.numHeads)));
    const rows = Math.ceil(ds.numHeads / cols);
    const side = Math.max(nq, nk);
    const cell = Math.max(1, Math.min(H.cell, H.multipleSide / side));
    const fs = Math.min(LAYOUT.smallFontSize, Math.max(6, cell * 0.72));
    const step = labelStep(cell, fs);
    const showLabels = cell >= 4;
    const qW = showLabels ? labelsWidth(ds.queryTokens, fs, step) + 8 : 0;
    const kH = showLabels ? labelsWidth(ds.keyTokens, fs, step) + 8 : 0;
    const headFs = LAYOUT.smallFontSize;
    const gapX = 16;
    const gapY = headFs + 12;
    const mx = m + qW;
    const my = y + kH + headFs + 8;
    const mw = nk * cell;
    const mh = nq * cell;
    for (let h = 0; h < ds.numHeads; h++) {
      const c = h % cols;
      const r = Math.floor(h / cols);
      const x0 = mx + c * (mw + gapX);
      const y0 = my + r * (mh + gapY);
      body += `<rect${attrs({ x: x0, y: y0 - headFs - 7, width: 8, height: 8, rx: 2, fill: colors[h] })}/>`;
      body += text(x0 + 12, y0 - 6, `head ${h}`, { 'font-size': headFs, fill: theme.muted });
      if (showLabels && r === 0) body += keyLabels(ds.keyTokens, x0, y0 - headFs - 12, cell, fs, theme, tip);
      if (showLabels && c === 0) body += queryLabels(ds.queryTokens, x0 - 6, y0, cell, fs, theme, tip, ds.newest);
      body += matrixCells(matrices[h]!, nq, nk, { x: x0, y: y0, cell }, scale, theme, options.showValues ?? false, ` data-layer="${layer}" data-head="${h}"`);
      body += matrixMarks(marks, nq, nk, { x: x0, y: y0, cell }, theme);
    }
    const gridW = cols * (mw + gapX) - gapX;
    const gridH = rows * (mh + gapY) - gapY;
    const lg = legend(scale, mx + gridW + 24, my, theme, `${common.idPrefix}-heatmap-legend`, legendCaption + (log ? ' (log)' : ''), Math.min(H.legendHeight, Math.max(100, gridH - 20)));
    body += lg.svg;
    right = mx + gridW + 24 + lg.width;
    bottom = Math.max(my + gridH, my + lg.height);
    const note = cross ? 'rows: decoder tokens (queries) · columns: encoder tokens (keys)' : 'rows: queries · columns: keys';
    body += text(m, bottom + 18, note, { 'font-size': LAYOUT.smallFontSize, fill: theme.muted });
    bottom += 18;
  }
  const width = Math.max(right + m, m + textWidth(title, LAYOUT.titleFontSize) + m, m + (heading.width) + m);
  return svgDocument(width, bottom + m, theme, body, { title: title || 'heatmap', className: 'attnscope-heatmap' });
}
