/**
 * Head-type grid as SVG: paints its layout (src/views/layout/head-types.ts) under the view's heading.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { HeadTableRow } from '../../analysis/head-types.js';
import type { Trace } from '../../core/trace.js';
import { STACK_TITLES, textWidth } from '../layout/common.js';
import { type HeadTypesOptions, headTypesLayout, headTypesTableOf } from '../layout/head-types.js';
import { LAYOUT, type ThemeName, getTheme } from '../theme.js';
import { resolveCommon, svgDocument, svgItems, viewHeading } from './common.js';

export { type HeadTypesOptions } from '../layout/head-types.js';

/** The grid of a head table as a standalone SVG document, under `title` (none when empty). */
export function renderHeadTypeGrid(table: readonly HeadTableRow[], options: { title?: string; theme?: ThemeName; idPrefix?: string } = {}): string {
  const theme = getTheme(options.theme);
  const idPrefix = (options.idPrefix ?? 'attnscope').replace(/[^A-Za-z0-9_-]/g, '_');
  const title = options.title ?? '';
  const m = LAYOUT.margin;
  const heading = viewHeading(title, 14, m, m, () => null);
  const layout = headTypesLayout(table, theme, { top: heading.y });
  const width = Math.max(layout.width, m + textWidth(title, LAYOUT.titleFontSize) + m);
  return svgDocument(width, layout.height, theme, heading.svg + svgItems(layout.items, theme, `${idPrefix}-types`), {
    title: title || 'head types',
    className: 'attnscope-head-types',
  });
}

/** Renders the head-type grid of a trace (its text) as a standalone SVG document. */
export function renderHeadTypes(trace: Trace, options: HeadTypesOptions = {}): string {
  const { stack } = resolveCommon(trace, options);
  const table = headTypesTableOf(trace, options);
  const title =
    options.title === false
      ? ''
      : (options.title ?? `${trace.model.name} · ${STACK_TITLES[stack]} · head types on the text (${trace.tokens.length} tokens${options.excludeFirstToken ? ', first token excluded' : ''})`);
  return renderHeadTypeGrid(table, { title, theme: options.theme, idPrefix: options.idPrefix });
}
