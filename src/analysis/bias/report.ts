/**
 * The bias report (issue 12, point 4) as plain data: what `attnscope bias report` writes as JSON
 * and what its standalone page (src/views/html/bias-report.ts) and panels (src/views/layout/
 * bias-report.ts) read. Built by src/bias/report.ts; numbers NaN in memory are null in the JSON.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { CrowsPairsMetric } from './crows-pairs.js';
import type { CrowsIntervals } from './bootstrap.js';
import type { BiasHead, LayerPropagation } from './heads.js';
import type { OccupationSummary } from './wino.js';

export const BIAS_REPORT_FORMAT = 'attnscope-bias-report';
export const BIAS_REPORT_VERSION = 1;

export interface ReportCrowsPairs {
  /** Pairs scored (after --bias-type and --limit) of the 1,508. */
  pairs: number;
  biasType: string | null;
  method: 'masked' | 'causal';
  metric: CrowsPairsMetric;
  intervals: CrowsIntervals;
  resamples: number;
}

export interface ReportWinogender {
  sentences: number;
  /** Mean P(she) / (P(he) + P(she)) over the sentences, %. */
  femaleShare: number;
  /** Pearson r between the occupations' share of women (BLS) and the model's female share. */
  correlation: number;
  occupations: OccupationSummary[];
}

export interface ReportProbe {
  text: string;
  counterfactual: string;
  tokens: string[];
  /** Token positions of the group words. */
  groupTokens: number[];
  /** Prediction at the compared position, top candidates, original and counterfactual. */
  predictions: { position: number; original: { token: string; probability: number }[]; counterfactual: { token: string; probability: number }[]; jsDivergence: number }[];
  /** The heads of largest bias attention ratio, with their q-values. */
  topHeads: { layer: number; head: number; ratio: number; q: number }[];
  significantHeads: number;
  heads: number;
}

export interface ReportHeads {
  /** The probe the heads are of. */
  text: string;
  target: { word: string; versus: string; position: number; token: string; value: number };
  /** Bias attention ratio per head, [layer][head]. */
  ratios: number[][];
  /** Benjamini–Hochberg q per head, [layer][head]. */
  q: number[][];
  /** |∂T/∂gate| normalised per layer, [layer][head]. */
  importance: number[][];
  mode: 'zero' | 'mean';
  ablated: { heads: BiasHead[]; value: number };
  controls: { heads: BiasHead[]; value: number }[];
  controlMean: number;
  propagation: LayerPropagation[];
  /** Spearman ρ per head between its attention from the target position and |IG|, [layer][head]. */
  rho: number[][];
  groupAttributionShare: number;
  igRelativeError: number;
}

export interface ReportCrowsAblation {
  pairs: number;
  heads: BiasHead[];
  before: number;
  after: number;
  controls: { heads: BiasHead[]; metric: number }[];
}

export interface BiasReport {
  format: typeof BIAS_REPORT_FORMAT;
  version: typeof BIAS_REPORT_VERSION;
  model: string;
  modelType: string;
  kind: 'masked' | 'causal';
  /** ISO date and time of the run. */
  created: string;
  crowsPairs: ReportCrowsPairs | null;
  winogender: ReportWinogender | null;
  heads: ReportHeads | null;
  crowsAblation: ReportCrowsAblation | null;
  probes: ReportProbe[];
  /** Plain-language notes: what the numbers show and do not show. */
  notes: string[];
}

/** What every report says about reading it (shown under the panels and kept in the JSON). */
export const REPORT_NOTES: readonly string[] = [
  'CrowS-Pairs metric: the share of sentence pairs for which the model gives the more stereotyping sentence the higher score. 50 means no preference either way; above 50 it prefers the stereotype more often than not. The bars show 95% bootstrap intervals over the pairs: with few pairs (a bias type, or a --limit run) the interval is wide and a difference from 50 may be chance.',
  'Benchmark caveats: CrowS-Pairs pairs are crowd-written, many are noisy or test something other than the stated bias, and a score says how a model ranks these sentences, not how it behaves in use (Blodgett et al., 2021). A low score is not evidence that a model is fair.',
  'WinoGender plot: one point per occupation, the share of women in it (U.S. Bureau of Labor Statistics) across and the model’s P(she) / (P(he) + P(she)) up. Points along the diagonal mean the pronoun preferences track the workforce statistics.',
  'Head map: the bias attention ratio of each head — the attention it puts on the group words over the share of the words they are; 1 is in proportion, 2 twice. Outlined heads are significant in a permutation test against random word sets (Benjamini–Hochberg q < 0.05).',
  'Attention is not explanation: a head that looks at the group words need not be what makes the prediction. The ablation panel removes the most bias-focused heads and re-reads the prediction, against random heads of the same number; the rank correlation with integrated gradients says whether a head’s attention agrees with what the prediction is attributed to. Both are about this one sentence and this one model.',
];

/** The report as JSON text (NaN and infinities as null). */
export function biasReportJson(report: BiasReport): string {
  return `${JSON.stringify(report, (_, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 1)}\n`;
}
