/**
 * Heatmap as SVG: paints the heatmap layout (src/views/layout/heatmap.ts) under the view's heading.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { Trace } from '../../core/trace.js';
import { STACK_TITLES, textWidth } from '../layout/common.js';
import { type HeatmapOptions, heatmapLayout, heatmapModel } from '../layout/heatmap.js';
import { LAYOUT } from '../theme.js';
import { generationHeader, svgDocument, svgItems, viewHeading } from './common.js';

export { heatmapMatrix, type HeatmapAggregate, type HeatmapOptions } from '../layout/heatmap.js';

/** Renders the heatmap as a standalone SVG document. */
export function renderHeatmap(trace: Trace, options: HeatmapOptions = {}): string {
  const model = heatmapModel(trace, options);
  const { ds, layer, mode, common } = model;
  const { theme, stack } = common;
  const m = LAYOUT.margin;
  const what = typeof mode === 'number' ? `head ${mode}` : mode === 'all' ? `all ${ds.numHeads} heads` : `${mode} over ${ds.numHeads} heads`;
  const title =
    options.title === false ? '' : (options.title ?? `${trace.model.name} · ${STACK_TITLES[stack]} · layer ${layer} · ${what}${ds.step !== null ? ` · step ${ds.step}` : ''}`);
  const heading = viewHeading(title, 10, m, m, (at) => generationHeader(trace, stack, ds, m, at, theme, 'outlined row'));
  const layout = heatmapLayout(trace, options, { top: heading.y }, model);
  const width = Math.max(layout.width, m + textWidth(title, LAYOUT.titleFontSize) + m, m + heading.width + m);
  return svgDocument(width, layout.height, theme, heading.svg + svgItems(layout.items, theme, `${common.idPrefix}-heatmap`), {
    title: title || 'heatmap',
    className: 'attnscope-heatmap',
  });
}
