/**
 * The SVG writers of the gradient and logit-lens views by name — saliency, head importance,
 * ablation comparison and logit lens — from the plain data they show (their input types), so an
 * attribution run, a trace file or data computed elsewhere all render the same.
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../../core/errors.js';
import { ANALYSIS_VIEW_NAMES, type AnalysisViewData, type AnalysisViewName } from '../layout/analysis-views.js';
import { STACK_TITLES } from '../layout/common.js';
import { renderAblation } from './ablation.js';
import type { AnalysisSvgOptions } from './analysis-frame.js';
import { renderHeadImportance } from './head-importance.js';
import { renderLogitLens } from './logit-lens.js';
import { renderSaliency } from './saliency.js';

export { renderAblation, renderHeadImportance, renderLogitLens, renderSaliency, type AnalysisSvgOptions };

/** Renders one of these views by name from the data it needs (one clear error when that data is missing). */
export function renderAnalysisSvg(view: AnalysisViewName, data: AnalysisViewData, options: AnalysisSvgOptions & { topK?: number } = {}): string {
  switch (view) {
    case 'saliency':
      if (!data.saliency) throw new AttnscopeError('the saliency view needs attributions (attnscope attribute, or a trace with them)');
      return renderSaliency(data.saliency, options);
    case 'importance':
      if (!data.importance) throw new AttnscopeError('the importance view needs head importance (attnscope attribute, or a trace with it)');
      return renderHeadImportance(data.importance, options);
    case 'ablation':
      if (!data.ablation) throw new AttnscopeError('the ablation view needs an ablation (attnscope ablate --heads …)');
      return renderAblation(data.ablation, options);
    case 'lens':
      if (!data.lens) throw new AttnscopeError('the lens view needs logit-lens data (run a model on --text)');
      return renderLogitLens(data.lens, options);
    default:
      throw new AttnscopeError(`unknown view '${view as string}' (expected ${ANALYSIS_VIEW_NAMES.join(', ')})`);
  }
}

/** The heading of an analysis view: the model and what the view shows. */
export function analysisTitle(view: AnalysisViewName, model: string, data?: AnalysisViewData[keyof AnalysisViewData]): string {
  switch (view) {
    case 'saliency':
      return `${model} · attribution`;
    case 'importance': {
      const stack = data && 'stack' in data && data.stack ? ` · ${STACK_TITLES[data.stack]}` : '';
      return `${model} · head importance${stack}`;
    }
    case 'ablation':
      return `${model} · ablation: the distribution before and after`;
    case 'lens':
      return `${model} · logit lens`;
  }
}
