/**
 * Head clusters scatter as SVG: paints its layout (src/views/layout/head-clusters.ts) under the
 * view's heading.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { HeadClustering } from '../../analysis/cluster.js';
import type { Trace } from '../../core/trace.js';
import { STACK_TITLES, textWidth } from '../layout/common.js';
import { type HeadClustersOptions, headClusteringOf, headClustersLayout } from '../layout/head-clusters.js';
import { LAYOUT, type ThemeName, getTheme } from '../theme.js';
import { resolveCommon, svgDocument, svgItems, viewHeading } from './common.js';

export { type HeadClustersOptions } from '../layout/head-clusters.js';

/** The scatter of a clustering as a standalone SVG document, under `title` (none when empty). */
export function renderClusterScatter(
  clustering: HeadClustering,
  options: { title?: string; theme?: ThemeName; idPrefix?: string; pointLabels?: boolean } = {},
): string {
  const theme = getTheme(options.theme);
  const idPrefix = (options.idPrefix ?? 'attnscope').replace(/[^A-Za-z0-9_-]/g, '_');
  const title = options.title ?? '';
  const m = LAYOUT.margin;
  const heading = viewHeading(title, 14, m, m, () => null);
  const layout = headClustersLayout(clustering, theme, { top: heading.y, pointLabels: options.pointLabels });
  const width = Math.max(layout.width, m + textWidth(title, LAYOUT.titleFontSize) + m);
  return svgDocument(width, layout.height, theme, heading.svg + svgItems(layout.items, theme, `${idPrefix}-clusters`), {
    title: title || 'head clusters',
    className: 'attnscope-head-clusters',
  });
}

/** Renders the head clusters scatter of a trace as a standalone SVG document. */
export function renderHeadClusters(trace: Trace, options: HeadClustersOptions = {}): string {
  const { stack } = resolveCommon(trace, options);
  const clustering = headClusteringOf(trace, options);
  const title =
    options.title === false
      ? ''
      : (options.title ?? `${trace.model.name} · ${STACK_TITLES[stack]} · heads clustered by their metrics (${clustering.projection === 'umap' ? 'UMAP' : 'PCA'})`);
  return renderClusterScatter(clustering, { title, theme: options.theme, idPrefix: options.idPrefix, pointLabels: options.pointLabels });
}
