/**
 * Neuron view as SVG: paints the neuron view's layout (src/views/layout/neuron-view.ts) — for one
 * layer, head and query token, the query vector, every key vector, their elementwise products, the
 * dot products, the scaled scores (with the mask and any recorded bias) and the softmax next to
 * the model's attention, all from analysis/neuron.ts.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { Trace } from '../../core/trace.js';
import { type WeightScale, scaleOf } from '../colors.js';
import { type NeuronLayout, type NeuronStrip, type NeuronViewOptions, neuronViewLayout } from '../layout/neuron-view.js';
import { type Theme, getTheme } from '../theme.js';
import { PIXELATED_CLASS, attrs, n, resolveCommon, svgDocument, svgItems } from './common.js';
import { matrixDataUri } from './image.js';

export { keyHeadFor, neuronData, neuronMaskNotes, neuronScales, neuronViewLayout, type NeuronData, type NeuronLayout, type NeuronViewOptions } from '../layout/neuron-view.js';

/** A vector as a strip of coloured cells (rects, or one image when each cell is under 3 px). */
function strip(st: NeuronStrip, scale: WeightScale, theme: Theme): string {
  const d = st.values.length;
  const cw = st.width / d;
  let s = `<g class="${st.kind}">`;
  if (cw >= 3) {
    for (let i = 0; i < d; i++) {
      s += `<rect x="${n(st.x + i * cw)}" y="${n(st.y)}" width="${n(cw + 0.05)}" height="${n(st.height)}" fill="${scale.color(st.values[i]!)}"/>`;
    }
  } else {
    const img = matrixDataUri(st.values, 0, 1, d, scale);
    s += `<image${attrs({ x: st.x, y: st.y, width: st.width, height: st.height, preserveAspectRatio: 'none', 'image-rendering': 'optimizeSpeed', class: PIXELATED_CLASS, href: img.uri })}/>`;
  }
  s += `<rect${attrs({ x: st.x - 0.5, y: st.y - 0.5, width: st.width + 1, height: st.height + 1, fill: 'none', stroke: theme.grid, 'stroke-width': 1 })}/>`;
  return `${s}</g>`;
}

/** The SVG of a neuron view layout. */
export function paintNeuronView(layout: NeuronLayout, themeName: string | undefined, idPrefix: string): string {
  const theme = getTheme(themeName);
  const vector = scaleOf(layout.scales.vector, theme);
  const product = scaleOf(layout.scales.product, theme);
  const scaleFor = (st: NeuronStrip) => (st.scale === 'vector' ? vector : product);
  let body = svgItems(layout.items, theme, `${idPrefix}-neuron`);
  body += strip(layout.queryStrip, vector, theme);
  for (const row of layout.rows) {
    body += `<g class="key-row" data-k="${row.k}"${row.masked ? ' data-masked="true"' : ''}>`;
    body += svgItems(row.items, theme, `${idPrefix}-neuron-row`);
    for (const st of row.strips) body += strip(st, scaleFor(st), theme);
    body += '</g>';
  }
  return svgDocument(layout.width, layout.height, theme, body, { title: layout.title || 'neuron view', className: 'attnscope-neuron-view' });
}

/** Renders the neuron view as a standalone SVG document. */
export function renderNeuronView(trace: Trace, options: NeuronViewOptions = {}): string {
  const { idPrefix } = resolveCommon(trace, options);
  return paintNeuronView(neuronViewLayout(trace, options), options.theme, idPrefix);
}
