/**
 * Flow diagram and influence tree as SVG: paint their layouts (src/views/layout/flow.ts,
 * influence-tree.ts) under the view's heading.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { Trace } from '../../core/trace.js';
import { STACK_TITLES, textWidth } from '../layout/common.js';
import { type FlowPlace, type FlowViewOptions, flowLayout, flowModel } from '../layout/flow.js';
import { influenceTreeLayout } from '../layout/influence-tree.js';
import { LAYOUT } from '../theme.js';
import { resolveCommon, svgDocument, svgItems, viewHeading } from './common.js';

export { type FlowViewOptions, type FlowMethod } from '../layout/flow.js';

function methodName(options: FlowViewOptions): string {
  return options.matrices ? (options.measure ?? 'given matrices') : (options.method ?? 'rollout') === 'attention' ? 'attention' : `attention ${options.method ?? 'rollout'}`;
}

/**
 * Renders the flow diagram as a standalone SVG document. `place.inputValues`: the input column's
 * values when the caller has them (the page: attention flow computed in its worker).
 */
export function renderFlowView(trace: Trace, options: FlowViewOptions = {}, place: Pick<FlowPlace, 'inputValues'> = {}): string {
  const { theme, idPrefix } = resolveCommon(trace, options);
  const model = flowModel(trace, options);
  const m = LAYOUT.margin;
  const title = options.title === false ? '' : (options.title ?? `${trace.model.name} · ${STACK_TITLES[model.stack]} · ${methodName(options)} · ${model.matrices.length} layers`);
  const heading = viewHeading(title, 10, m, m, () => null);
  const layout = flowLayout(trace, options, { top: heading.y, inputValues: place.inputValues }, model);
  const width = Math.max(layout.width, m + textWidth(title, LAYOUT.titleFontSize) + m);
  const body = heading.svg + `<g class="lines">${svgItems(layout.lines, theme, `${idPrefix}-flow`)}</g>` + svgItems(layout.nodes, theme, `${idPrefix}-flow`);
  return svgDocument(width, layout.height, theme, body, { title: title || 'flow diagram', className: 'attnscope-flow-view' });
}

/** Renders the influence tree as a standalone SVG document. */
export function renderInfluenceTree(trace: Trace, options: FlowViewOptions = {}): string {
  const { theme, idPrefix } = resolveCommon(trace, options);
  const model = flowModel(trace, options);
  const m = LAYOUT.margin;
  const root = options.query ?? model.tokens.length - 1;
  const title =
    options.title === false ? '' : (options.title ?? `${trace.model.name} · influence tree of token ${root} “${model.tokens[root]?.label ?? '?'}” · ${methodName(options)}`);
  const heading = viewHeading(title, 10, m, m, () => null);
  const layout = influenceTreeLayout(trace, options, { top: heading.y }, model);
  const width = Math.max(layout.width, m + textWidth(title, LAYOUT.titleFontSize) + m);
  return svgDocument(width, layout.height, theme, heading.svg + svgItems(layout.items, theme, `${idPrefix}-tree`), { title: title || 'influence tree', className: 'attnscope-influence-tree' });
}
