/**
 * The views of gradients, ablations and the logit lens: their names and the plain data they show
 * together (what the export and the standalone page carry). Each view's layout lives in its own
 * file (saliency.ts, head-importance.ts, ablation.ts, logit-lens.ts).
 *
 * Isomorphic: imports nothing from Node.
 */
import type { AblationData } from './ablation.js';
import type { HeadImportanceData } from './head-importance.js';
import type { LogitLensData } from './logit-lens.js';
import type { SaliencyData } from './saliency.js';

export type AnalysisViewName = 'saliency' | 'importance' | 'ablation' | 'lens';
export const ANALYSIS_VIEW_NAMES: readonly AnalysisViewName[] = ['saliency', 'importance', 'ablation', 'lens'];
export const ANALYSIS_VIEW_LABELS: Readonly<Record<AnalysisViewName, string>> = {
  saliency: 'Saliency',
  importance: 'Head importance',
  ablation: 'Ablation',
  lens: 'Logit lens',
};

export function isAnalysisViewName(value: string): value is AnalysisViewName {
  return (ANALYSIS_VIEW_NAMES as readonly string[]).includes(value);
}

/** The data of the analysis views, each present when computed. */
export interface AnalysisViewData {
  saliency?: SaliencyData;
  importance?: HeadImportanceData;
  ablation?: AblationData;
  lens?: LogitLensData;
}

export type { AblationData, HeadImportanceData, LogitLensData, SaliencyData };
