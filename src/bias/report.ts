/**
 * Runs what the bias report shows (src/analysis/bias/report.ts) with a loaded model: CrowS-Pairs
 * (the metric with bootstrap intervals), WinoGender per occupation, the probe examples, the heads
 * behind the first probe (bias attention ratio, importance, ablation with random controls,
 * propagation, faithfulness) and, when asked, CrowS-Pairs re-scored without the top heads.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Model } from '../engine/model.js';
import type { AblationMode } from '../analysis/ablation.js';
import { crowsPairRows, crowsPairsMetric, type CrowsPair } from '../analysis/bias/crows-pairs.js';
import { crowsIntervals } from '../analysis/bias/bootstrap.js';
import type { GroupLexicon } from '../analysis/bias/groups.js';
import { femaleShare, pearson, summarizeByOccupation, type PronounItem } from '../analysis/bias/wino.js';
import { BIAS_REPORT_FORMAT, BIAS_REPORT_VERSION, REPORT_NOTES, type BiasReport, type ReportProbe } from '../analysis/bias/report.js';
import type { BiasProbe } from './probe.js';
import { biasProbe } from './probe.js';
import { biasHeads, crowsHeads } from './heads.js';
import { crowsMethodFor, scoreCrowsPairs, type PairScoreCache } from './crows-pairs.js';
import { scorePronouns } from './pronouns.js';

export interface BiasReportOptions {
  /** CrowS-Pairs pairs to score (already filtered); empty: no CrowS-Pairs section. */
  pairs: readonly CrowsPair[];
  biasType?: string | null;
  /** WinoGender sentences; empty: no WinoGender section. */
  winogender: readonly PronounItem[];
  occupationStats: ReadonlyMap<string, { bls: number }>;
  /** Probe texts (default two occupation sentences with the mask / as prompts). */
  texts?: readonly string[];
  lexicons: readonly GroupLexicon[];
  contrast?: readonly [string, string];
  k?: number;
  controls?: number;
  mode?: AblationMode;
  steps?: number;
  permutations?: number;
  seed?: number;
  resamples?: number;
  /** CrowS-Pairs pairs re-scored without the top heads (0: none). */
  ablationPairs?: number;
  cache?: PairScoreCache;
  onProgress?: (phase: string, done: number, total: number) => void;
  /** Time stamp written into the report (default now). */
  created?: string;
}

/**
 * The default probe texts: an occupation followed by the pronoun slot (masked, or next for causal
 * LMs), whose heads the report analyses, then a gendered subject before an occupation slot.
 */
export function defaultProbeTexts(model: Model): string[] {
  if (model.info.kind === 'decoder') return ['The nurse said that', 'The man worked as a'];
  const mask = model.tokenizer?.mask?.text ?? '[MASK]';
  return [`The nurse said that ${mask} would be late.`, `The man worked as a ${mask}.`];
}

function probeSummary(p: BiasProbe): ReportProbe {
  const top = [...p.heads].sort((a, b) => (Number.isFinite(b.ratio) ? b.ratio : -1) - (Number.isFinite(a.ratio) ? a.ratio : -1) || a.layer - b.layer || a.head - b.head).slice(0, 5);
  return {
    text: p.text,
    counterfactual: p.counterfactual.text,
    tokens: p.original.tokens.map((t) => t.text),
    groupTokens: p.groupTokens,
    predictions: p.predictions,
    topHeads: top.map((h) => ({ layer: h.layer, head: h.head, ratio: h.ratio, q: h.q })),
    significantHeads: p.heads.filter((h) => h.q < 0.05).length,
    heads: p.heads.length,
  };
}

const grid = <T>(layers: number, heads: number, f: (l: number, h: number) => T): T[][] => Array.from({ length: layers }, (_, l) => Array.from({ length: heads }, (_, h) => f(l, h)));

/** Runs everything the report shows (see the file comment). */
export async function buildBiasReport(model: Model, o: BiasReportOptions): Promise<BiasReport> {
  const method = crowsMethodFor(model);
  const progress = o.onProgress ?? (() => {});
  const report: BiasReport = {
    format: BIAS_REPORT_FORMAT,
    version: BIAS_REPORT_VERSION,
    model: model.name,
    modelType: model.config.modelType,
    kind: method,
    created: o.created ?? new Date().toISOString(),
    crowsPairs: null,
    winogender: null,
    heads: null,
    crowsAblation: null,
    probes: [],
    notes: [...REPORT_NOTES],
  };
  if (o.pairs.length > 0) {
    const run = await scoreCrowsPairs(model, o.pairs, { cache: o.cache, onProgress: (d, t) => progress('crows-pairs', d, t) });
    const rows = crowsPairRows(o.pairs, run.scores, run.method === 'masked');
    const metric = crowsPairsMetric(rows);
    const resamples = o.resamples ?? 1000;
    report.crowsPairs = { pairs: o.pairs.length, biasType: o.biasType ?? null, method: run.method, metric, intervals: crowsIntervals(rows, metric, { resamples, seed: o.seed }), resamples };
  }
  if (o.winogender.length > 0) {
    const { results } = await scorePronouns(model, o.winogender, { onProgress: (d, t) => progress('winogender', d, t) });
    const occupations = summarizeByOccupation(results, o.occupationStats);
    const withStats = occupations.filter((x) => x.blsFemale !== undefined);
    report.winogender = {
      sentences: results.length,
      femaleShare: (100 * results.reduce((s, r) => s + femaleShare(r), 0)) / results.length,
      correlation: pearson(withStats.map((x) => x.blsFemale!), withStats.map((x) => x.femaleShare)),
      occupations,
    };
  }
  const texts = o.texts && o.texts.length > 0 ? o.texts : defaultProbeTexts(model);
  const probeOptions = { permutations: o.permutations, seed: o.seed };
  const first = await biasHeads(model, texts[0]!, o.lexicons, { ...probeOptions, contrast: o.contrast, k: o.k, controls: o.controls, mode: o.mode, steps: o.steps });
  progress('probes', 1, texts.length);
  report.probes.push(probeSummary(first.probe));
  for (const [i, text] of texts.slice(1).entries()) {
    report.probes.push(probeSummary(await biasProbe(model, text, o.lexicons, probeOptions)));
    progress('probes', i + 2, texts.length);
  }
  const scores = first.probe.heads;
  const layers = first.importance.length;
  const heads = first.importance[0]?.length ?? 0;
  const at = (l: number, h: number) => scores.find((s) => s.layer === l && s.head === h);
  const faith = first.faithfulness.heads;
  report.heads = {
    text: first.probe.text,
    target: { word: first.target.word, versus: first.target.versus, position: first.target.position, token: first.probe.original.tokens[first.target.position]!.text, value: first.target.value },
    ratios: grid(layers, heads, (l, h) => at(l, h)?.ratio ?? Number.NaN),
    q: grid(layers, heads, (l, h) => at(l, h)?.q ?? Number.NaN),
    importance: first.importance,
    mode: first.mode,
    ablated: first.ablation,
    controls: first.controls,
    controlMean: first.controlMean,
    propagation: first.propagation,
    rho: grid(layers, heads, (l, h) => faith.find((x) => x.layer === l && x.head === h)?.rho ?? Number.NaN),
    groupAttributionShare: first.faithfulness.groupAttributionShare,
    igRelativeError: first.integratedGradients.relativeError,
  };
  const n = o.ablationPairs ?? 0;
  if (n > 0) {
    if (o.pairs.length === 0) throw new AttnscopeError('bias report: the CrowS-Pairs ablation needs CrowS-Pairs pairs');
    const pairs = o.pairs.slice(0, n);
    const r = await crowsHeads(model, pairs, { k: o.k, controls: o.controls, seed: o.seed, cache: o.cache, onProgress: (ph, d, t) => progress(`ablation ${ph}`, d, t) });
    report.crowsAblation = {
      pairs: pairs.length,
      heads: r.ablated.heads,
      before: r.before.metric.metric,
      after: r.ablated.metric.metric,
      controls: r.controls.map((c) => ({ heads: c.heads, metric: c.metric.metric })),
    };
  }
  return report;
}
