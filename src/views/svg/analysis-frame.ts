/**
 * The frame shared by the SVG writers of the analysis views (saliency, head importance, ablation,
 * logit lens): a heading, then the view's layout painted under it.
 *
 * Isomorphic: imports nothing from Node.
 */
import { type Picture, textWidth } from '../layout/common.js';
import { LAYOUT, type Theme, type ThemeName } from '../theme.js';
import { svgDocument, svgItems, viewHeading } from './common.js';

export interface AnalysisSvgOptions {
  /** Heading line (none when empty or false). */
  title?: string | false;
  theme?: ThemeName;
  /** Prefix of element ids, to keep several SVGs on one page apart. */
  idPrefix?: string;
}

/** A layout (made at the y below the heading) as a standalone SVG document under its heading. */
export function paintAnalysisView(options: AnalysisSvgOptions, fallback: string, theme: Theme, className: string, layout: (top: number) => Picture): string {
  const m = LAYOUT.margin;
  const t = options.title === false ? '' : (options.title ?? '');
  const heading = viewHeading(t, 12, m, m, () => null);
  const pic = layout(heading.y);
  const width = Math.max(pic.width, m + textWidth(t, LAYOUT.titleFontSize) + m);
  const prefix = (options.idPrefix ?? 'attnscope').replace(/[^A-Za-z0-9_-]/g, '_');
  return svgDocument(width, pic.height, theme, heading.svg + svgItems(pic.items, theme, prefix), { title: t || fallback, className });
}
