/**
 * Head view (BertViz style) as SVG: paints the head-view layout (src/views/layout/head-view.ts)
 * under the view's heading.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { Trace } from '../../core/trace.js';
import { type HeadViewModel, type HeadViewOptions, headViewLayout, headViewModel } from '../layout/head-view.js';
import { STACK_TITLES, textWidth } from '../layout/common.js';
import { LAYOUT } from '../theme.js';
import { describeIndices, generationHeader, svgDocument, svgItems, viewHeading } from './common.js';

export { headViewModel, type HeadViewModel, type HeadViewOptions } from '../layout/head-view.js';

/** The default title of a head view. */
export function headViewTitle(trace: Trace, model: HeadViewModel): string {
  const { ds, layer, heads, pair } = model;
  return (
    `${trace.model.name} · ${STACK_TITLES[ds.stack]} · layer ${layer} · head${heads.length > 1 ? 's' : ''} ${describeIndices(heads, ds.numHeads)}` +
    (pair !== 'all' ? ` · ${pair}` : '') +
    (ds.step !== null ? ` · step ${ds.step}` : '')
  );
}

/** Renders the head view as a standalone SVG document. */
export function renderHeadView(trace: Trace, options: HeadViewOptions = {}): string {
  const model = headViewModel(trace, options);
  const { common, ds, query } = model;
  const { theme } = common;
  const m = LAYOUT.margin;
  const title = options.title === false ? '' : (options.title ?? headViewTitle(trace, model));
  const heading = viewHeading(title, 10, m, m, (at) => generationHeader(trace, common.stack, ds, m, at, theme, query === ds.newest ? 'highlighted' : null));
  const layout = headViewLayout(trace, options, { swatches: true, top: heading.y }, model);
  const body =
    heading.svg +
    svgItems(layout.under, theme, common.idPrefix) +
    `<g class="lines">${svgItems(layout.lines, theme, common.idPrefix)}</g>` +
    svgItems(layout.frame, theme, common.idPrefix) +
    svgItems(layout.over, theme, common.idPrefix);
  const width = Math.max(layout.width, m + textWidth(title, LAYOUT.titleFontSize) + m, m + heading.width + m, 320);
  return svgDocument(width, layout.height, theme, body, { title: title || 'head view', className: 'attnscope-head-view' });
}
