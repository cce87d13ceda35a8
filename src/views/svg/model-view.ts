/**
 * Model view as SVG: paints the model view's layout (src/views/layout/model-view.ts) — each cell
 * an embedded attention image (one element per cell whatever the input length), with its layer,
 * head and strongest query → key pairs as its tooltip.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { Trace } from '../../core/trace.js';
import { type Rgb, type WeightScale, parseColor, scaleOf } from '../colors.js';
import { type MatrixItem, downsample } from '../layout/common.js';
import { type ModelViewLayout, type ModelViewOptions, modelViewLayout } from '../layout/model-view.js';
import { getTheme } from '../theme.js';
import { escapeHtml } from '../tokens.js';
import { PIXELATED_CLASS, attrs, fmtAttr, resolveCommon, svgDocument, svgItems } from './common.js';
import { encodePng, matrixDataUri, pngDataUri } from './image.js';

export type { ModelViewOptions } from '../layout/model-view.js';

/**
 * A cell's matrix with masked entries blank, as an RGB PNG data URI of at most `maxSide` pixels a
 * side (area-averaged over the unmasked entries; a pixel whose entries are all masked is blank).
 */
function maskedCellUri(it: MatrixItem, scale: WeightScale, blank: Rgb, maxSide: number): { uri: string; width: number; height: number } {
  const d = downsample(it.values, it.offset ?? 0, it.rows, it.cols, maxSide, maxSide, it.masked);
  const px = new Uint8Array(d.width * d.height * 3);
  for (let p = 0; p < d.mean.length; p++) {
    if (d.blank[p] === 1) px.set(blank, p * 3);
    else px.set(scale.lut.subarray(scale.index(d.mean[p]!) * 3, scale.index(d.mean[p]!) * 3 + 3), p * 3);
  }
  return { uri: pngDataUri(encodePng(d.width, d.height, px, 3)), width: d.width, height: d.height };
}

/** The SVG of a model view layout. */
export function paintModelView(layout: ModelViewLayout, themeName: string | undefined, idPrefix: string): string {
  const theme = getTheme(themeName);
  let body = svgItems(layout.items, theme, `${idPrefix}-model`);
  for (const cell of layout.cells) {
    const scale = scaleOf(cell.scale, theme);
    const img = cell.matrix.masked
      ? maskedCellUri(cell.matrix, scale, parseColor(cell.matrix.maskedFill ?? theme.background), layout.maxImage)
      : matrixDataUri(layout.ds.layers[cell.layer]!, cell.offset, layout.nq, layout.nk, scale, layout.maxImage);
    const pixelated = img.width < cell.width * 2;
    body +=
      `<g class="cell" data-layer="${cell.layer}" data-head="${cell.head}" data-max="${fmtAttr(cell.max)}">` +
      `<title>${escapeHtml(cell.tip)}</title>` +
      `<image${attrs({
        x: cell.x,
        y: cell.y,
        width: cell.width,
        height: cell.height,
        preserveAspectRatio: 'none',
        'image-rendering': pixelated ? 'optimizeSpeed' : 'optimizeQuality',
        class: pixelated ? PIXELATED_CLASS : undefined,
        href: img.uri,
      })}/>` +
      svgItems(cell.marks, theme, `${idPrefix}-model-cell`) +
      '</g>';
  }
  return svgDocument(layout.width, layout.height, theme, body, { title: layout.title || 'model view', className: 'attnscope-model-view' });
}

/** Renders the model view as a standalone SVG document. */
export function renderModelView(trace: Trace, options: ModelViewOptions = {}): string {
  const { idPrefix } = resolveCommon(trace, options);
  return paintModelView(modelViewLayout(trace, options), options.theme, idPrefix);
}
