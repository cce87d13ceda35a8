/**
 * Model view as SVG: a grid of layers × heads, each cell a small attention image (an embedded
 * PNG, one element per cell whatever the input length).
 *
 * Isomorphic: imports nothing from Node.
 */
import type { Trace } from '../../core/trace.js';
import { headColors, weightScale } from '../colors.js';
import { LAYOUT } from '../theme.js';
import { displayStack } from '../tokens.js';
import {
  type CommonViewOptions,
  PIXELATED_CLASS,
  STACK_TITLES,
  attrs,
  describeIndices,
  firstGeneratedBoundary,
  fmtAttr,
  generationHeader,
  viewHeading,
  legend,
  promptBoundary,
  resolveCommon,
  resolveIndices,
  svgDocument,
  text,
  textWidth,
} from './common.js';
import { matrixDataUri } from './image.js';

export interface ModelViewOptions extends CommonViewOptions {
  /** Layers to include (default all). */
  layers?: readonly number[];
  /** Heads to include (default all). */
  heads?: readonly number[];
  /** Side of each cell in pixels (default 72). */
  cellSize?: number;
  /**
   * Colour range: 'cell' scales each cell to its own largest weight (the default, so that
   * patterns show next to attention sinks), 'global' maps 0–1 for every cell.
   */
  normalize?: 'cell' | 'global';
  /** Logarithmic colour scale. */
  log?: boolean;
}

/** Renders the model view as a standalone SVG document. */
export function renderModelView(trace: Trace, options: ModelViewOptions = {}): string {
  const common = resolveCommon(trace, options);
  const { theme, stack } = common;
  const stackData = trace.attention[stack]!;
  const layers = resolveIndices(options.layers, stackData.layers.length, 'layer');
  const ds = displayStack(trace, stack, { hideSpecial: options.hideSpecial, mergeSubwords: options.mergeSubwords, layers, step: options.step });
  const heads = resolveIndices(options.heads, ds.numHeads, 'head');
  const colors = headColors(ds.numHeads);
  const nq = ds.queryTokens.length;
  const nk = ds.keyTokens.length;
  const normalize = options.normalize ?? 'cell';
  const log = options.log ?? false;

  const m = LAYOUT.margin;
  const cell = options.cellSize ?? LAYOUT.model.cell;
  const gap = LAYOUT.model.cellGap;
  // Cells follow the matrix's aspect ratio (cross attention is not square), within 2:1 stretched
  // or squeezed, so that a long, short matrix still gets a readable cell.
  const ratio = nk / nq;
  const cw = cell * Math.min(2, Math.max(0.5, Math.sqrt(ratio)));
  const ch = Math.max(cell / 2, Math.min(2 * cell, cw / ratio));
  const fs = LAYOUT.smallFontSize;
  const rowLabelW = textWidth(`layer ${Math.max(...layers)}`, fs) + 10;
  let y: number = m;
  let body = '';
  const title =
    options.title === false
      ? ''
      : (options.title ??
        `${trace.model.name} · ${STACK_TITLES[stack]} · layers ${describeIndices(layers, stackData.layers.length)} × heads ${describeIndices(heads, ds.numHeads)}` +
          (ds.step !== null ? ` · step ${ds.step}` : ''));
  const heading = viewHeading(title, 12, m, y, (at) => generationHeader(trace, stack, ds, m, at, theme, 'outlined row of each cell'));
  body += heading.svg;
  y = heading.y;
  const qBoundary = firstGeneratedBoundary(ds.queryTokens);
  const kBoundary = firstGeneratedBoundary(ds.keyTokens);
  const gridX = m + rowLabelW;
  // Head labels with the head colour underline.
  heads.forEach((h, j) => {
    const x = gridX + j * (cw + gap) + cw / 2;
    body += text(x, y + fs, `head ${h}`, { 'font-size': fs, 'text-anchor': 'middle', fill: theme.muted });
    body += `<rect${attrs({ x: x - cw / 2, y: y + fs + 4, width: cw, height: 3, fill: colors[h] })}/>`;
  });
  y += fs + 12;
  const gridY = y;

  const scaleFor = (max: number) => weightScale(theme, { max: normalize === 'cell' ? max : 1, log });
  const maxSide = LAYOUT.model.maxImage;
  layers.forEach((l, i) => {
    const cy = gridY + i * (ch + gap);
    body += text(gridX - 8, cy + ch / 2 + fs * 0.36, `layer ${l}`, { 'font-size': fs, 'text-anchor': 'end', fill: theme.muted });
    const data = ds.layers[l]!;
    heads.forEach((h, j) => {
      const cx = gridX + j * (cw + gap);
      const off = h * nq * nk;
      let max = 0;
      for (let p = 0; p < nq * nk; p++) if (data[off + p]! > max) max = data[off + p]!;
      const scale = scaleFor(max);
      const img = matrixDataUri(data, off, nq, nk, scale, maxSide);
      const pixelated = img.width < cw * 2;
      body +=
        `<g class="cell" data-layer="${l}" data-head="${h}" data-max="${fmtAttr(max)}">` +
        `<image${attrs({
          x: cx,
          y: cy,
          width: cw,
          height: ch,
          preserveAspectRatio: 'none',
          'image-rendering': pixelated ? 'optimizeSpeed' : 'optimizeQuality',
          class: pixelated ? PIXELATED_CLASS : undefined,
          href: img.uri,
        })}/>` +
        `<rect${attrs({ x: cx - 0.5, y: cy - 0.5, width: cw + 1, height: ch + 1, fill: 'none', stroke: theme.grid, 'stroke-width': 1 })}/>` +
        (qBoundary !== null ? promptBoundary(cx, cy + (qBoundary * ch) / nq, cx + cw, cy + (qBoundary * ch) / nq, theme, 'query', true) : '') +
        (kBoundary !== null ? promptBoundary(cx + (kBoundary * cw) / nk, cy, cx + (kBoundary * cw) / nk, cy + ch, theme, 'key', true) : '') +
        (ds.newest !== null
          ? `<rect${attrs({ x: cx - 0.75, y: cy + (ds.newest * ch) / nq - 0.75, width: cw + 1.5, height: ch / nq + 1.5, fill: 'none', stroke: theme.text, 'stroke-width': 1.5, class: 'newest-row', 'data-q': ds.newest })}/>`
          : '') +
        '</g>';
    });
  });
  const gridW = heads.length * (cw + gap) - gap;
  const gridH = layers.length * (ch + gap) - gap;

  // Legend.
  const lx = gridX + gridW + 20;
  const caption = normalize === 'cell' ? 'weight / cell max' : 'attention weight';
  const lg = legend(weightScale(theme, { max: 1, log, min: log ? 1e-4 : 0 }), lx, gridY, theme, `${common.idPrefix}-model-legend`, caption, Math.min(LAYOUT.heatmap.legendHeight, Math.max(80, gridH - 24)));
  body += lg.svg;

  // Axis note: what a cell shows.
  const note =
    `each cell: ${stack === 'cross' ? 'decoder' : 'query'} tokens ↓ × ${stack === 'cross' ? 'encoder' : 'key'} tokens → (${nq} × ${nk})` +
    (qBoundary !== null || kBoundary !== null ? ' · dashed: where the generated tokens start' : '');
  const noteY = gridY + Math.max(gridH, lg.height) + 18;
  body += text(m, noteY, note, { 'font-size': fs, fill: theme.muted });

  const width = Math.max(lx + lg.width + m, m + textWidth(title, LAYOUT.titleFontSize) + m, m + textWidth(note, fs) + m, m + (heading.width) + m);
  const height = noteY + m;
  return svgDocument(width, height, theme, body, { title: title || 'model view', className: 'attnscope-model-view' });
}
