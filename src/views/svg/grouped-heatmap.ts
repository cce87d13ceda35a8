/**
 * Word- and sentence-level heatmap as SVG: paints the grouped heatmap layout
 * (src/views/layout/grouped-heatmap.ts) under the view's heading — the units' matrix, or with
 * `drill` the token block behind one cell.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { Trace } from '../../core/trace.js';
import { STACK_TITLES, textWidth, truncate } from '../layout/common.js';
import { type GroupedHeatmapOptions, drillLayout, groupedHeatmapLayout, groupedHeatmapModel, groupedWhat } from '../layout/grouped-heatmap.js';
import { LAYOUT } from '../theme.js';
import { svgDocument, svgItems, viewHeading } from './common.js';

export { type GroupedHeatmapOptions, type GroupBy, type GroupCellRule } from '../layout/grouped-heatmap.js';

/** Renders the word- or sentence-level heatmap (or one cell's token block) as a standalone SVG document. */
export function renderGroupedHeatmap(trace: Trace, options: GroupedHeatmapOptions = {}): string {
  const model = groupedHeatmapModel(trace, options);
  const { theme, stack } = model.common;
  const m = LAYOUT.margin;
  const unit = model.by === 'sentences' ? 'sentence' : 'word';
  const d = options.drill;
  const cell = d ? ` · tokens of “${truncate(model.rows[d.row]?.label ?? '?', 28)}” → “${truncate(model.cols[d.col]?.label ?? '?', 28)}”` : '';
  const title =
    options.title === false
      ? ''
      : (options.title ?? `${trace.model.name} · ${STACK_TITLES[stack]} · layer ${model.layer} · ${groupedWhat(model)} · per ${unit} (${model.rule})${cell}`);
  const heading = viewHeading(title, 10, m, m, () => null);
  const place = { top: heading.y };
  const layout = d ? drillLayout(model, d.row, d.col, options, place) : groupedHeatmapLayout(model, options, place);
  const width = Math.max(layout.width, m + textWidth(title, LAYOUT.titleFontSize) + m, m + heading.width + m);
  return svgDocument(width, layout.height, theme, heading.svg + svgItems(layout.items, theme, `${model.common.idPrefix}-${model.by}`), {
    title: title || `${unit} heatmap`,
    className: `attnscope-${model.by}`,
  });
}
