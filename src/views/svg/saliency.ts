/**
 * The saliency view as SVG: paints its layout (src/views/layout/saliency.ts) under a heading.
 *
 * Isomorphic: imports nothing from Node.
 */
import { type SaliencyData, type SaliencyPlace, saliencyLayout } from '../layout/saliency.js';
import { getTheme } from '../theme.js';
import { type AnalysisSvgOptions, paintAnalysisView } from './analysis-frame.js';

export type { SaliencyData } from '../layout/saliency.js';

/** The saliency view of `data` as a standalone SVG document. */
export function renderSaliency(data: SaliencyData, options: AnalysisSvgOptions & Omit<SaliencyPlace, 'top'> = {}): string {
  const theme = getTheme(options.theme);
  return paintAnalysisView(options, 'saliency', theme, 'attnscope-saliency', (top) => saliencyLayout(data, theme, { ...options, top }));
}
