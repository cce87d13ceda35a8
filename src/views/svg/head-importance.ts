/**
 * The head-importance grid as SVG: paints its layout (src/views/layout/head-importance.ts) under a heading.
 *
 * Isomorphic: imports nothing from Node.
 */
import { type HeadImportanceData, type HeadImportancePlace, headImportanceLayout } from '../layout/head-importance.js';
import { getTheme } from '../theme.js';
import { type AnalysisSvgOptions, paintAnalysisView } from './analysis-frame.js';

export type { HeadImportanceData } from '../layout/head-importance.js';

/** The head-importance grid of `data` as a standalone SVG document. */
export function renderHeadImportance(data: HeadImportanceData, options: AnalysisSvgOptions & Omit<HeadImportancePlace, 'top'> = {}): string {
  const theme = getTheme(options.theme);
  return paintAnalysisView(options, 'head importance', theme, 'attnscope-head-importance', (top) => headImportanceLayout(data, theme, { ...options, top }));
}
