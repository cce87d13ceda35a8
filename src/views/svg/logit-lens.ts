/**
 * The logit-lens grid as SVG: paints its layout (src/views/layout/logit-lens.ts) under a heading.
 *
 * Isomorphic: imports nothing from Node.
 */
import { type LogitLensData, type LogitLensPlace, logitLensLayout } from '../layout/logit-lens.js';
import { getTheme } from '../theme.js';
import { type AnalysisSvgOptions, paintAnalysisView } from './analysis-frame.js';

export type { LogitLensData } from '../layout/logit-lens.js';

/** The logit-lens grid of `data` as a standalone SVG document. */
export function renderLogitLens(data: LogitLensData, options: AnalysisSvgOptions & Omit<LogitLensPlace, 'top'> = {}): string {
  const theme = getTheme(options.theme);
  return paintAnalysisView(options, 'logit lens', theme, 'attnscope-logit-lens', (top) => logitLensLayout(data, theme, { ...options, top }));
}
