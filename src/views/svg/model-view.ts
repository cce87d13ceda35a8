/**
 * Model view as SVG: paints the model view's layout (src/views/layout/model-view.ts) — each cell
 * an embedded attention image (one element per cell whatever the input length), with its layer,
 * head and strongest query → key pairs as its tooltip.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { Trace } from '../../core/trace.js';
import { type Rgb, type WeightScale, parseColor, scaleOf } from '../colors.js';
import type { MatrixItem } from '../layout/common.js';
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
  const { rows, cols } = it;
  const off = it.offset ?? 0;
  const height = Math.max(1, Math.min(rows, Math.floor(maxSide)));
  const width = Math.max(1, Math.min(cols, Math.floor(maxSide)));
  const px = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const r0 = Math.floor((y * rows) / height);
    const r1 = Math.max(r0 + 1, Math.floor(((y + 1) * rows) / height));
    for (let x = 0; x < width; x++) {
      const c0 = Math.floor((x * cols) / width);
      const c1 = Math.max(c0 + 1, Math.floor(((x + 1) * cols) / width));
      let sum = 0;
      let n = 0;
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) {
          if (it.masked![r * cols + c] === 1) continue;
          sum += it.values[off + r * cols + c]!;
          n++;
        }
      }
      const o = (y * width + x) * 3;
      if (n === 0) px.set(blank, o);
      else {
        const i = scale.index(sum / n) * 3;
        px[o] = scale.lut[i]!;
        px[o + 1] = scale.lut[i + 1]!;
        px[o + 2] = scale.lut[i + 2]!;
      }
    }
  }
  return { uri: pngDataUri(encodePng(width, height, px, 3)), width, height };
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
