/**
 * The ablation comparison as SVG: paints its layout (src/views/layout/ablation.ts) under a heading.
 *
 * Isomorphic: imports nothing from Node.
 */
import { type AblationData, type AblationPlace, ablationLayout } from '../layout/ablation.js';
import { getTheme } from '../theme.js';
import { type AnalysisSvgOptions, paintAnalysisView } from './analysis-frame.js';

export type { AblationData } from '../layout/ablation.js';

/** The ablation comparison of `data` as a standalone SVG document. */
export function renderAblation(data: AblationData, options: AnalysisSvgOptions & Omit<AblationPlace, 'top'> = {}): string {
  const theme = getTheme(options.theme);
  return paintAnalysisView(options, 'ablation', theme, 'attnscope-ablation', (top) => ablationLayout(data, theme, { ...options, top }));
}
