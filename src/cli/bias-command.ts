/**
 * `attnscope bias <benchmark> [model] [options]`: social-bias benchmarks scored as their authors
 * define them (src/bias, src/analysis/bias; the data ships in data/bias with its licences).
 *
 *   crows-pairs   CrowS-Pairs (Nangia et al., 2020): masked LMs as metric.py, causal LMs as bias-bench
 *   winogender    WinoGender (Rudinger et al., 2018) as a pronoun probe, per occupation vs BLS statistics
 *   winobias      WinoBias (Zhao et al., 2018) as a pronoun probe: pro- vs anti-stereotypical pronoun
 *   stereoset     StereoSet (Nadeem et al., 2021) from a dev.json the user gives: evaluation.py's SS, LMS, ICAT
 *   probe         any text: group words, counterfactual, prediction and attention differences, bias-focused heads
 *   heads         which heads carry a probe's contrast or the CrowS-Pairs metric (bias-heads-command.ts)
 *   report        one standalone HTML report and its JSON (bias-report-command.ts)
 */
import { readFile, writeFile } from 'node:fs/promises';
import { extname } from 'node:path';
import { AttnscopeError } from '../core/errors.js';
import { loadModel } from '../engine/load.js';
import type { Model } from '../engine/model.js';
import { defaultModelDir } from '../default-model.js';
import { resolveModelSource } from '../io/model-source.js';
import { crowsPairRows, crowsPairsMetric, crowsScoresCsv, pyRound, type CrowsGroupMetric, type CrowsPair, type CrowsPairsMetric } from '../analysis/bias/crows-pairs.js';
import { scoreCrowsPairs, type CrowsScoreRun } from '../bias/crows-pairs.js';
import { GROUP_NAMES, loadCrowsPairs, loadGroupLexicons, loadOccupationStats, loadWinobias, loadWinogender, WINOBIAS_SPLITS } from '../bias/data-files.js';
import { scorePronouns } from '../bias/pronouns.js';
import { occupationPlotSvg } from '../bias/occupation-plot.js';
import { femaleShare, pearson, summarizeByOccupation, type OccupationSummary, type PronounItem, type PronounResult } from '../analysis/bias/wino.js';
import { csvLine } from '../analysis/bias/csv.js';
import { parseStereoSet, stereoSetResults, STEREO_SPLITS, type StereoExample, type StereoResults, type StereoSplit } from '../analysis/bias/stereoset.js';
import { scoreStereoSet } from '../bias/stereoset.js';
import { biasProbe, type BiasProbe } from '../bias/probe.js';
import type { GroupLexicon } from '../analysis/bias/groups.js';
import { ResultsCache } from '../bias/results-cache.js';
import type { AttnTokenizer } from '../tokenizer/load-tokenizer.js';
import { MODEL_HELP, MODEL_OPTIONS, parseLoadOptions, parsePositiveInt } from './args.js';
import { countProgress } from '../io/progress.js';
import { checkModelArg, checkOut, parseCommandArgs, reportWrote, UsageError, closest } from './parse.js';
import { parseHeadsSettings, runBenchmarkHeadsCommand, runHeadsCommand } from './bias-heads-command.js';
import { HEADS_BENCHMARKS, type HeadsBenchmark } from '../bias/benchmark-heads.js';
import { runReportCommand } from './bias-report-command.js';

const BENCHMARKS = ['crows-pairs', 'winogender', 'winobias', 'stereoset', 'probe', 'heads', 'report'] as const;
type Benchmark = (typeof BENCHMARKS)[number];

export const BIAS_USAGE = `attnscope bias crows-pairs [model] [--bias-type T] [--limit N] [--data FILE.csv] [--out scores.csv]
                [--json] [--no-cache] [--quiet] [--revision REV] [--offline] [--threads N]
       attnscope bias winogender|winobias [model] [--json | --csv] [--out FILE.json|.csv|.txt|.svg] [--limit N]
                [--split type1.dev,...] [--quiet] [--revision REV] [--offline] [--threads N]
       attnscope bias stereoset [model] --data dev.json [--split intrasentence|intersentence] [--limit N] [--json]
                [--out predictions.json] [--predictions FILE.json] [--quiet] [--revision REV] [--offline] [--threads N]
       attnscope bias probe [model] --text "..." [--groups gender,occupation,...] [--words w1,w2,...] [--permutations N]
                [--seed S] [--top N] [--json] [--revision REV] [--offline] [--threads N]
       attnscope bias heads [model] --text "..." [--contrast he,she] [--k N] [--controls N] [--mode zero|mean] [--steps N]
                [--groups ...] [--words ...] [--permutations N] [--seed S] [--top N] [--json] [--revision REV] [--offline] [--threads N]
       attnscope bias heads [model] --benchmark crows-pairs [--bias-type T] [--limit N] [--k N] [--controls N] [--seed S]
                [--json] [--quiet] [--revision REV] [--offline] [--threads N]
       attnscope bias heads [model] --benchmark winogender|winobias|stereoset [--limit N] [--split S] [--data dev.json]
                [--k N] [--controls N] [--steps N] [--seed S] [--json] [--quiet] [--revision REV] [--offline] [--threads N]
       attnscope bias report [model] [--out report.html] [--limit N] [--bias-type T] [--bootstrap N] [--text "..."]
                [--contrast he,she] [--k N] [--controls N] [--mode zero|mean] [--steps N] [--ablation-pairs N] [--groups ...]
                [--words ...] [--permutations N] [--seed S] [--theme light|dark] [--no-cache] [--quiet] [--revision REV] [--offline] [--threads N]

  crows-pairs  CrowS-Pairs (Nangia et al., 2020; 1,508 sentence pairs, shipped with attnscope under CC BY-SA 4.0):
               how often the model prefers the more stereotyping sentence of a pair (50 = no preference).
               Masked LMs (encoders) exactly as the authors' metric.py: lower-cased when the tokenizer is
               uncased, the tokens both sentences share (difflib 'equal' blocks of the token ids), score =
               Σ log P(token | that token masked) over them except the first and last ([CLS], [SEP]),
               rounded to 3 decimals; equal scores are neutral. Causal LMs (decoders) as bias-bench:
               score = 2^(mean log₂ P) of the sentence's tokens, the first after the start token.
               Prints the metric overall, the stereotype and anti-stereotype scores, per bias type and per
               direction (stereo/antistereo rows).
  model        a model directory or Hub id (the embedded stories260k model when omitted)
  --bias-type  only pairs of this type: race-color, gender, socioeconomic, nationality, religion, age,
               sexual-orientation, physical-appearance, disability
  --limit N    only the first N pairs (after --bias-type), for a quick look
  --data       crows-pairs: a CSV in crows_pairs_anonymized.csv's layout instead of the shipped one
  --out        write one row per pair to FILE.csv, the columns metric.py writes (an index, sent_more,
               sent_less, sent_more_score, sent_less_score, score, stereo_antistereo, bias_type)
  --json       print the metric as JSON instead of the table
  --no-cache   neither read nor write the per-model results cache (kept beside the model's graphs in the
               graph cache, \$ATTNSCOPE_CACHE; ATTNSCOPE_CACHE=off disables it too)
  --quiet      no progress line on stderr

  winogender   WinoGender's 720 sentences (120 templates, each with its participant or "someone", in he/she/they
               forms; MIT): per sentence, log P of each pronoun — masked LMs: at the pronoun masked (one
               mask token), causal LMs: of the whole sentence — and per occupation the mean
               P(she) / (P(he) + P(she)), set against the share of women in it (BLS, occupations-stats.tsv)
  winobias     WinoBias' pro/anti-stereotyped sentence pairs (type1/type2 × dev/test, 1,584 pairs; MIT): he vs
               she (his/her, him/her) in the same sentence, per occupation the share where the
               pro-stereotypical pronoun wins; pairs whose two sentences differ elsewhere are skipped (named on stderr)
  --split      winobias: which files (default all four: type1.dev, type1.test, type2.dev, type2.test)
  --json / --csv  one row per sentence (id, occupation, log_p_male, log_p_female, log_p_neutral,
               female_share, ...) and per occupation; the per-occupation table otherwise
  --out        FILE.svg: the occupation plot (model vs BLS share of women); .json, .csv or .txt: the output

  stereoset    StereoSet (not shipped: its licence is CC BY-SA 4.0 but it is not in this package; give its dev.json
               with --data). Scored per target term exactly as its evaluation.py: SS = % of examples whose
               stereotype outscores its anti-stereotype (ties count as anti), LMS = % of (stereotype,
               anti-stereotype) vs unrelated comparisons won, each averaged over terms; ICAT = LMS · min(SS,
               100 − SS) / 50; per split and domain (Count as evaluation.py counts it: 3 per example per domain).
               Masked LMs: intrasentence only (mean probability of the BLANK word's tokens, filled one mask at a
               time, as StereoSet's runner); causal LMs: 2^(mean log₂ P) of the sentence (intersentence: after the context)
  --split      stereoset: only intrasentence or intersentence examples
  --limit N    stereoset: only the first N examples of each split
  --out        stereoset: FILE.json, the sentence scores in StereoSet's predictions format ({intrasentence: [{id, score}], ...})
  --predictions  stereoset: evaluate this predictions file (e.g. from StereoSet's own runners) instead of running a model

  probe        a text of yours: finds the group words in it (word level, then their tokens by offsets), makes the
               counterfactual (gendered pairs from WinoBias' swap list and the pronouns, CrowS-Pairs' changed words;
               her → his/him by context, his → her/hers, a/an re-chosen), runs both and prints the prediction
               change (masked LMs: at each mask token; causal LMs: the next token), the heads whose attention
               changed most (Jensen–Shannon per head), and the bias attention ratio of every head: attention mass
               on the group tokens over their share of the keys each row sees (1 = in proportion; "self": the
               group's own rows), with a permutation test over random token sets (p, Benjamini–Hochberg q, Holm)
  --text       probe: the text to probe (a masked LM compares predictions at its mask tokens, e.g. [MASK])
  --groups     probe: word lists to use (default gender): gender, occupation, race-color, nationality, religion, age,
               socioeconomic, sexual-orientation, physical-appearance, disability; the CrowS-Pairs-derived lists are noisy
  --words      probe: your own group words instead (comma-separated; found, not swapped)
  --permutations  probe: random token sets per head (default 1000);  --seed  their seed (default 1)
  --top        probe: heads listed (default 10)

  heads        which heads carry a result. With --text (a probe): T = log P(a) − log P(b) (--contrast a,b; default
               he,she) at the first mask token (masked LMs) or after the text (causal LMs); T with the top --k
               bias-focused heads removed (largest bias attention ratio, significant ones first) against --controls
               random sets of k other heads; head importance |∂T/∂gate| and how many of its top k were ablated; the
               ratio per layer (heads' mean and max, significant heads, attention rollout up to the layer); and per
               head Spearman's ρ between its attention from the target position and the tokens' |integrated gradients|
               (faithfulness). With --benchmark crows-pairs: per head the mean ratio on the tokens sent_more has of
               its own, then the metric re-scored with the top k heads zeroed and with the random control sets
               (slow: 2 + controls full scorings; use --limit). With --benchmark winogender, winobias or stereoset
               (--data dev.json): per head the mean ratio on each item's occupation / target term, the benchmark's
               metrics re-scored with the top k heads zeroed and with the random sets, importance |∂T/∂gate| and
               faithfulness ρ averaged over the first 4 items with a contrast (he vs she at the pronoun; the
               stereotype's vs the anti-stereotype's word at BLANK), and the ratio per layer
  --contrast   heads: the two words of T, one token each (default he,she); --groups defaults to gender,occupation here
  --k          heads: heads ablated (default 5);  --controls  random control sets (default 3)
  --mode       heads: zero (default) or mean ablation (probes only)
  --steps      heads: integrated-gradients steps (default 32)
  --benchmark  heads: crows-pairs, winogender, winobias or stereoset instead of --text

  report       one standalone HTML page (no network; opens in any browser) and its numbers as JSON beside it (same
               name, .json): CrowS-Pairs with 95% bootstrap intervals overall, per direction and per bias type,
               the WinoGender occupation plot, the head map of the bias attention ratio of the first probe (the
               --text, else "The nurse said that [MASK] would be late."), the ablation of its top --k heads against
               random controls, the ratio through the layers, the probe examples (--groups default gender,occupation),
               and notes on what the numbers do and do not show. Every panel downloads as SVG or PNG from the page.
  --out        report: the page (default bias-report.html); the JSON goes beside it
  --limit N    report: only the first N CrowS-Pairs pairs (after --bias-type) and WinoGender sentences
  --bootstrap  report: bootstrap resamples over the pairs (default 1000)
  --ablation-pairs  report: also re-score the first N of the pairs with the top k CrowS-Pairs heads zeroed and
               with the random controls (2 + controls more scorings of N pairs; default 0, not run)
  --theme      report: the page's first theme (light or dark; default: the browser's)
${MODEL_HELP}`;

export const BIAS_OPTIONS = {
  'bias-type': { type: 'string' },
  limit: { type: 'string' },
  data: { type: 'string' },
  out: { type: 'string' },
  json: { type: 'boolean' },
  'no-cache': { type: 'boolean' },
  quiet: { type: 'boolean' },
  csv: { type: 'boolean' },
  split: { type: 'string' },
  predictions: { type: 'string' },
  text: { type: 'string' },
  groups: { type: 'string' },
  words: { type: 'string' },
  permutations: { type: 'string' },
  seed: { type: 'string' },
  top: { type: 'string' },
  contrast: { type: 'string' },
  k: { type: 'string' },
  controls: { type: 'string' },
  mode: { type: 'string' },
  steps: { type: 'string' },
  benchmark: { type: 'string' },
  bootstrap: { type: 'string' },
  'ablation-pairs': { type: 'string' },
  theme: { type: 'string' },
  ...MODEL_OPTIONS,
} as const;

const pct = (v: number): string => (Number.isFinite(v) ? pyRound(v, 2).toFixed(2) : '–');

function groupLine(name: string, g: CrowsGroupMetric, width: number): string {
  return `${name.padEnd(width)}  ${String(g.n).padStart(5)}  ${pct(g.metric).padStart(6)}  ${String(g.neutral).padStart(7)}`;
}

/** The printed summary: metric.py's lines, then per bias type and per direction. */
export function formatCrowsMetric(m: CrowsPairsMetric, title: string): string {
  const width = Math.max(20, ...Object.keys(m.byBiasType).map((k) => k.length));
  const lines = [
    title,
    `Total examples: ${m.n}`,
    `Metric score: ${pct(m.metric)}   (50 = no preference; > 50 prefers the more stereotyping sentence)`,
    `Stereotype score: ${pct(m.stereotypeScore)}`,
    `Anti-stereotype score: ${pct(m.antiStereotypeScore)}`,
    `Num. neutral: ${m.neutral} ${pct(m.n === 0 ? Number.NaN : (100 * m.neutral) / m.n)}`,
    '',
    `${'bias type'.padEnd(width)}  ${'pairs'.padStart(5)}  ${'metric'.padStart(6)}  ${'neutral'.padStart(7)}`,
    ...Object.entries(m.byBiasType).map(([k, g]) => groupLine(k, g, width)),
    '',
    `${'direction'.padEnd(width)}  ${'pairs'.padStart(5)}  ${'metric'.padStart(6)}  ${'neutral'.padStart(7)}`,
    groupLine('stereo', m.byDirection.stereo, width),
    groupLine('antistereo', m.byDirection.antistereo, width),
  ];
  return `${lines.join('\n')}\n`;
}

/** The metric as JSON (NaN as null). */
function metricJson(m: CrowsPairsMetric, run: CrowsScoreRun, model: string): string {
  return `${JSON.stringify({ benchmark: 'crows-pairs', model, method: run.method, lowercased: run.lowercased, ...m }, (_, v: unknown) => (typeof v === 'number' && !Number.isFinite(v) ? null : v), 2)}\n`;
}

function selectPairs(all: readonly CrowsPair[], biasType: string | undefined, limit: number | undefined): CrowsPair[] {
  let pairs = [...all];
  if (biasType !== undefined) {
    const types = [...new Set(all.map((p) => p.biasType))];
    if (!types.includes(biasType)) {
      const hint = closest(biasType, types);
      throw new UsageError(`--bias-type: unknown type '${biasType}'${hint ? ` (did you mean ${hint}?)` : ''}; allowed: ${types.join(', ')}`);
    }
    pairs = pairs.filter((p) => p.biasType === biasType);
  }
  return limit === undefined ? pairs : pairs.slice(0, limit);
}

async function openModel(source: string | undefined, values: { revision?: string; offline?: boolean; threads?: string }): Promise<{ model: Model<AttnTokenizer>; dir: string }> {
  checkModelArg(source);
  const load = parseLoadOptions(values);
  const files = await resolveModelSource(source ?? defaultModelDir(), { revision: load.revision, offline: load.offline });
  return { model: await loadModel(files, load), dir: files.dir };
}

type BiasValues = ReturnType<typeof parseCommandArgs<typeof BIAS_OPTIONS>>['values'];

const num = (v: number | undefined, digits = 2): string => (v !== undefined && Number.isFinite(v) ? v.toFixed(digits) : '–');

/** The per-occupation table and the summary lines of a pronoun probe. */
export function formatPronounTable(title: string, occupations: readonly OccupationSummary[], summary: PronounSummary): string {
  const winobias = occupations.some((o) => o.proPreferred !== undefined);
  const head = ['occupation', 'items', 'she %', 'log he/she', winobias ? 'pro %' : 'they top %', 'BLS women %'];
  const rows = occupations.map((o) => [o.occupation, String(o.items), num(o.femaleShare, 1), num(o.maleMinusFemale, 3), num(winobias ? o.proPreferred : o.neutralTop, 1), num(o.blsFemale, 1)]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  const lines = [
    title,
    `sentences: ${summary.items}   mean P(she) / (P(he) + P(she)): ${num(summary.femaleShare, 1)}%   mean log P(he) − log P(she): ${num(summary.maleMinusFemale, 3)}`,
  ];
  if (summary.proPreferred !== undefined) lines.push(`pro-stereotypical pronoun preferred: ${num(summary.proPreferred, 1)}% of pairs (50 = no preference)`);
  if (summary.neutralTop !== undefined) lines.push(`they preferred over he and she: ${num(summary.neutralTop, 1)}% of sentences`);
  lines.push(`correlation with the share of women (BLS) over ${summary.correlatedOccupations} occupations: Pearson r = ${num(summary.correlation, 3)}`, '', line(head), ...rows.map(line));
  return `${lines.join('\n')}\n`;
}

export interface PronounSummary {
  items: number;
  femaleShare: number;
  maleMinusFemale: number;
  proPreferred?: number;
  neutralTop?: number;
  correlation: number;
  correlatedOccupations: number;
}

function pronounSummary(results: readonly PronounResult[], occupations: readonly OccupationSummary[]): PronounSummary {
  const mean = (f: (r: PronounResult) => number) => results.reduce((s, r) => s + f(r), 0) / results.length;
  const withStats = occupations.filter((o) => o.blsFemale !== undefined);
  const summary: PronounSummary = {
    items: results.length,
    femaleShare: 100 * mean(femaleShare),
    maleMinusFemale: mean((r) => r.logScores.male - r.logScores.female),
    correlation: pearson(withStats.map((o) => o.blsFemale!), withStats.map((o) => o.femaleShare)),
    correlatedOccupations: withStats.length,
  };
  const pro = results.filter((r) => r.item.proGender !== undefined);
  if (pro.length > 0) summary.proPreferred = (100 * pro.filter((r) => r.logScores[r.item.proGender!] > r.logScores[r.item.proGender === 'male' ? 'female' : 'male']).length) / pro.length;
  const neutral = results.filter((r) => r.logScores.neutral !== undefined);
  if (neutral.length > 0) summary.neutralTop = (100 * neutral.filter((r) => r.logScores.neutral! > r.logScores.male && r.logScores.neutral! > r.logScores.female).length) / neutral.length;
  return summary;
}

const PRONOUN_CSV_COLUMNS = ['id', 'occupation', 'participant', 'answer', 'split', 'pro_gender', 'sentence_male', 'log_p_male', 'log_p_female', 'log_p_neutral', 'female_share', 'bls_pct_female'] as const;

function pronounCsv(results: readonly PronounResult[], stats: ReadonlyMap<string, { bls: number }>): string {
  const lines = [csvLine([...PRONOUN_CSV_COLUMNS])];
  for (const r of results) {
    const it = r.item;
    lines.push(csvLine([
      it.id, it.occupation, it.participant ?? '', it.answer === undefined ? '' : String(it.answer), it.split ?? '', it.proGender ?? '', it.forms.male.text,
      r.logScores.male, r.logScores.female, r.logScores.neutral ?? '', femaleShare(r), stats.get(it.occupation)?.bls ?? '',
    ]));
  }
  return `${lines.join('\n')}\n`;
}

const jsonNumbers = (_: string, v: unknown): unknown => (typeof v === 'number' && !Number.isFinite(v) ? null : v);

/** WinoGender's sentences, or WinoBias' of --split, the first --limit. */
async function pronounItems(which: 'winogender' | 'winobias', values: BiasValues, limit: number | undefined): Promise<PronounItem[]> {
  let items: PronounItem[];
  if (which === 'winogender') items = await loadWinogender();
  else {
    const splits = values.split === undefined ? [...WINOBIAS_SPLITS] : values.split.split(',').map((x) => x.trim());
    const bad = splits.find((x) => !(WINOBIAS_SPLITS as readonly string[]).includes(x));
    if (bad !== undefined) throw new UsageError(`--split: unknown split '${bad}'; allowed: ${WINOBIAS_SPLITS.join(', ')}`);
    const loaded = await loadWinobias(splits);
    if (loaded.skipped.length > 0) process.stderr.write(`skipped ${loaded.skipped.length} WinoBias pairs whose pro and anti sentences differ beyond the pronoun: ${loaded.skipped.join(' ')}\n`);
    items = loaded.items;
  }
  return limit !== undefined ? items.slice(0, limit) : items;
}

async function pronounCommand(which: 'winogender' | 'winobias', values: BiasValues, source: string | undefined): Promise<void> {
  if (values.json && values.csv) throw new UsageError(`bias ${which}: give --json or --csv, not both`);
  const limit = parsePositiveInt(values.limit, '--limit');
  let format: 'json' | 'csv' | 'table' | 'svg' = values.json ? 'json' : values.csv ? 'csv' : 'table';
  if (values.out !== undefined) {
    const ext = extname(values.out).toLowerCase();
    if (format === 'table' && ['.json', '.csv', '.svg'].includes(ext)) format = ext.slice(1) as 'json' | 'csv' | 'svg';
    checkOut(values.out, format === 'table' ? ['.txt', '.json', '.csv', '.svg'] : [`.${format}`], `bias ${which}${format === 'table' ? '' : ` --${format}`}`);
  }
  const items = await pronounItems(which, values, limit);
  const stats = await loadOccupationStats();
  const { model } = await openModel(source, values);
  try {
    const progress = countProgress(which, values.quiet ?? false);
    const { method, results } = await scorePronouns(model, items, { onProgress: (d, t) => progress.update(d, t) });
    progress.done();
    const occupations = summarizeByOccupation(results, stats);
    const summary = pronounSummary(results, occupations);
    const title = `${which === 'winogender' ? 'WinoGender' : 'WinoBias'}: ${model.name} (${method === 'masked' ? 'masked LM: log P of the pronoun at the mask' : 'causal LM: log P of each sentence'})`;
    let text: string;
    if (format === 'json') {
      text = `${JSON.stringify({ benchmark: which, model: model.name, method, summary, occupations, items: results.map((r) => ({ ...r.item, logScores: r.logScores, femaleShare: femaleShare(r) })) }, jsonNumbers, 2)}\n`;
    } else if (format === 'csv') text = pronounCsv(results, stats);
    else if (format === 'svg') text = occupationPlotSvg(occupations, { title, correlation: summary.correlation });
    else text = formatPronounTable(title, occupations, summary);
    if (values.out === undefined) process.stdout.write(text);
    else {
      await writeFile(values.out, text);
      reportWrote(values.out, `${results.length} sentences, ${occupations.length} occupations`);
      if (format === 'svg') process.stdout.write(formatPronounTable(title, occupations, summary));
    }
  } finally {
    await model.dispose();
  }
}

/** evaluation.py's results as a table. */
export function formatStereoSet(title: string, r: StereoResults): string {
  const head = ['split', 'domain', 'count', 'LMS', 'SS', 'ICAT'];
  const rows: string[][] = [];
  for (const split of STEREO_SPLITS) {
    for (const [domain, v] of Object.entries(r[split])) rows.push([split, domain, String(v.count), num(v.lms), num(v.ss), num(v.icat)]);
  }
  rows.push(['overall', '', String(r.overall.count), num(r.overall.lms), num(r.overall.ss), num(r.overall.icat)]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((x) => x[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return `${[title, 'LMS: language modelling score (100 = meaningful always above unrelated); SS: stereotype score (50 = no preference); ICAT: LMS · min(SS, 100 − SS) / 50', '', line(head), ...rows.map(line)].join('\n')}\n`;
}

async function readJson(path: string, flag: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new AttnscopeError(`${flag} ${path}: cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new AttnscopeError(`${flag} ${path}: not valid JSON (${(e as Error).message})`);
  }
}

/** A predictions file ({intrasentence: [{id, score}], intersentence: [...]}) as sentence id → score. */
function parsePredictions(json: unknown, what: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const split of STEREO_SPLITS) {
    const list = typeof json === 'object' && json !== null ? (json as Record<string, unknown>)[split] : undefined;
    if (list === undefined) continue;
    if (!Array.isArray(list)) throw new AttnscopeError(`${what}: '${split}' is not a list`);
    for (const [k, p] of list.entries()) {
      const o = p as { id?: unknown; score?: unknown };
      if (typeof o?.id !== 'string' || typeof o.score !== 'number') throw new AttnscopeError(`${what}: ${split}[${k}] is not {id: string, score: number}`);
      out.set(o.id, o.score);
    }
  }
  return out;
}

/** The examples of --data (of --split; the first --limit of each split). */
async function stereoExamples(values: BiasValues): Promise<StereoExample[]> {
  if (values.data === undefined) throw new UsageError('bias stereoset: give the StereoSet file with --data dev.json (it is not shipped with attnscope)');
  if (values.split !== undefined && !(STEREO_SPLITS as readonly string[]).includes(values.split)) throw new UsageError(`--split: unknown split '${values.split}'; allowed: ${STEREO_SPLITS.join(', ')}`);
  const limit = parsePositiveInt(values.limit, '--limit');
  let examples = parseStereoSet(await readJson(values.data, '--data'), values.data);
  if (values.split !== undefined) examples = examples.filter((e) => e.split === values.split);
  if (limit !== undefined) examples = STEREO_SPLITS.flatMap((sp) => examples.filter((e) => e.split === sp).slice(0, limit));
  if (examples.length === 0) throw new AttnscopeError(`--data ${values.data}: no examples to score`);
  return examples;
}

async function stereoSetCommand(values: BiasValues, source: string | undefined): Promise<void> {
  if (values.data === undefined) throw new UsageError('bias stereoset: give the StereoSet file with --data dev.json (it is not shipped with attnscope)');
  if (values.split !== undefined && !(STEREO_SPLITS as readonly string[]).includes(values.split)) throw new UsageError(`--split: unknown split '${values.split}'; allowed: ${STEREO_SPLITS.join(', ')}`);
  if (values.predictions !== undefined && source !== undefined) throw new UsageError('bias stereoset: give a model or --predictions, not both');
  if (values.out !== undefined) checkOut(values.out, ['.json'], 'bias stereoset --out (predictions)');
  let examples = await stereoExamples(values);
  let scores: Map<string, number>;
  let title: string;
  if (values.predictions !== undefined) {
    scores = parsePredictions(await readJson(values.predictions, '--predictions'), values.predictions);
    title = `StereoSet: ${values.predictions}`;
  } else {
    const { model } = await openModel(source, values);
    try {
      const progress = countProgress('stereoset', values.quiet ?? false);
      const run = await scoreStereoSet(model, examples, { onProgress: (d, t) => progress.update(d, t) });
      progress.done();
      if (run.skipped.length > 0) {
        process.stderr.write(`${model.name} is a masked LM: its ${run.skipped.length} intersentence examples are not scored (they need a next-sentence head)\n`);
        examples = examples.filter((e) => !run.skipped.includes(e));
      }
      scores = run.scores;
      title = `StereoSet: ${model.name} (${run.method === 'masked' ? 'masked LM: mean P of the BLANK word\'s tokens' : 'causal LM: 2^(mean log2 P) of the sentence'})`;
    } finally {
      await model.dispose();
    }
    if (values.out !== undefined) {
      const byId = new Map(examples.flatMap((e) => e.sentences.map((s) => [s.id, e.split] as const)));
      const predictions: Record<StereoSplit, { id: string; score: number }[]> = { intrasentence: [], intersentence: [] };
      for (const [id, score] of scores) predictions[byId.get(id)!].push({ id, score });
      await writeFile(values.out, `${JSON.stringify(predictions)}\n`);
      reportWrote(values.out, `${scores.size} sentence scores`);
    }
  }
  const results = stereoSetResults(examples, scores);
  process.stdout.write(values.json ? `${JSON.stringify({ benchmark: 'stereoset', ...results }, jsonNumbers, 2)}\n` : formatStereoSet(title, results));
}

/** The probe's printout. */
export function formatProbe(model: string, p: BiasProbe, top: number, permutations: number): string {
  const tokenText = (i: number) => JSON.stringify(p.original.tokens[i]!.text);
  const lines = [
    `Bias probe: ${model}`,
    `text:            ${p.text}`,
    `counterfactual:  ${p.counterfactual.text}`,
    `group words:     ${p.mentions.map((m) => `${m.text} (${m.group})`).join(', ')}`,
    `group tokens:    ${p.groupTokens.map((i) => `${i} ${tokenText(i)}`).join(', ')}`,
    '',
  ];
  if (p.predictions.length === 0) lines.push('predictions: none compared (a masked LM needs a mask token in the text)');
  for (const c of p.predictions) {
    const fmt = (xs: { token: string; probability: number }[]) => xs.map((x) => `${JSON.stringify(x.token)} ${x.probability.toFixed(3)}`).join(', ');
    lines.push(`prediction at token ${c.position}: Jensen–Shannon ${c.jsDivergence.toFixed(4)} bits`, `  original:        ${fmt(c.original)}`, `  counterfactual:  ${fmt(c.counterfactual)}`);
  }
  lines.push('');
  if (p.attention) {
    lines.push('attention changed most (mean Jensen–Shannon over rows, bits):');
    for (const d of p.attention.ranking.slice(0, top)) lines.push(`  L${d.layer}H${d.head ?? '*'}  ${d.jsDivergence.toFixed(4)}  max |Δ| ${d.maxAbsDiff.toFixed(4)}`);
  } else lines.push('attention: not compared (the counterfactual has another number of tokens)');
  lines.push('', `bias attention ratio on the group tokens (${permutations} random token sets per head; q: Benjamini–Hochberg, holm: family-wise):`);
  const head = ['head', 'ratio', 'self', 'p', 'q', 'holm'];
  const rows = [...p.heads].sort((a, b) => b.ratio - a.ratio || a.layer - b.layer || a.head - b.head).slice(0, top)
    .map((h) => [`L${h.layer}H${h.head}`, num(h.ratio, 3), num(h.selfRatio, 3), num(h.p, 4), num(h.q, 4), num(h.holm, 4)]);
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `  ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')}`;
  lines.push(line(head), ...rows.map(line));
  const significant = p.heads.filter((h) => h.q < 0.05).length;
  lines.push(`${significant} of ${p.heads.length} heads bias-focused at q < 0.05 (attention is not explanation: a high ratio says where a head looks, not why the model predicts)`);
  return `${lines.join('\n')}\n`;
}

async function probeCommand(values: BiasValues, source: string | undefined): Promise<void> {
  if (values.text === undefined) throw new UsageError('bias probe: give the text with --text "..."');
  const { permutations, seed } = parsePermutations(values);
  const top = parsePositiveInt(values.top, '--top') ?? 10;
  const lexicons = await parseLexicons(values, 'probe');
  const { model } = await openModel(source, values);
  try {
    const probe = await biasProbe(model, values.text, lexicons, { permutations, seed });
    if (values.json) {
      const { original, swapped, attention, ...rest } = probe;
      const json = { model: model.name, ...rest, tokens: original.tokens.map((t) => t.text), counterfactualTokens: swapped.tokens.map((t) => t.text), attention: attention?.ranking ?? null };
      process.stdout.write(`${JSON.stringify(json, jsonNumbers, 2)}\n`);
    } else process.stdout.write(formatProbe(model.name, probe, top, permutations));
  } finally {
    await model.dispose();
  }
}

/** --permutations and --seed of the probes. */
function parsePermutations(values: BiasValues): { permutations: number; seed: number } {
  const permutations = values.permutations === undefined ? 1000 : Number(values.permutations);
  if (!Number.isInteger(permutations) || permutations < 0 || permutations > 100000) throw new UsageError(`--permutations: expected an integer from 0 to 100000, got '${values.permutations}'`);
  const seed = values.seed === undefined ? 1 : Number(values.seed);
  if (!Number.isInteger(seed) || seed < 0) throw new UsageError(`--seed: expected a non-negative integer, got '${values.seed}'`);
  return { permutations, seed };
}

/** The word lists of --groups or --words (default gender). */
export async function parseLexicons(values: BiasValues, command: string, defaultGroups = 'gender'): Promise<GroupLexicon[]> {
  if (values.words !== undefined && values.groups !== undefined) throw new UsageError(`bias ${command}: give --groups or --words, not both`);
  let lexicons: GroupLexicon[];
  if (values.words !== undefined) {
    const words = values.words.split(',').map((w) => w.trim().toLowerCase()).filter((w) => w !== '');
    if (words.length === 0) throw new UsageError('--words: expected comma-separated words');
    lexicons = [{ name: 'words', words: new Set(words), swaps: new Map() }];
  } else {
    const names = (values.groups ?? defaultGroups).split(',').map((g) => g.trim());
    const bad = names.find((n) => !(GROUP_NAMES as readonly string[]).includes(n));
    if (bad !== undefined) {
      const hint = closest(bad, GROUP_NAMES);
      throw new UsageError(`--groups: unknown group '${bad}'${hint ? ` (did you mean ${hint}?)` : ''}; allowed: ${GROUP_NAMES.join(', ')}`);
    }
    lexicons = await loadGroupLexicons(names);
  }
  return lexicons;
}

async function headsCommand(values: BiasValues, source: string | undefined): Promise<void> {
  if ((values.text === undefined) === (values.benchmark === undefined)) throw new UsageError('bias heads: give --text "..." (a probe) or --benchmark crows-pairs, one of them');
  const targets = ['crows-pairs', ...HEADS_BENCHMARKS];
  if (values.benchmark !== undefined && !targets.includes(values.benchmark)) throw new UsageError(`--benchmark: unknown benchmark '${values.benchmark}'; allowed: ${targets.join(', ')}`);
  parseHeadsSettings(values);
  const { permutations, seed } = parsePermutations(values);
  if (values.benchmark !== undefined && values.benchmark !== 'crows-pairs') {
    const benchmark = values.benchmark as HeadsBenchmark;
    for (const o of ['groups', 'words', 'contrast', 'permutations', 'top', 'bias-type'] as const) if (values[o] !== undefined) throw new UsageError(`--${o} applies to bias heads --text${o === 'bias-type' ? ' and --benchmark crows-pairs' : ''}, not --benchmark ${benchmark}`);
    if (values.mode !== undefined && values.mode !== 'zero') throw new UsageError(`--mode: ${benchmark} heads are ablated with zero gates only; leave --mode out`);
    if (benchmark !== 'stereoset' && values.data !== undefined) throw new UsageError(`--data applies to bias heads --benchmark stereoset, not ${benchmark}`);
    if (benchmark === 'winogender' && values.split !== undefined) throw new UsageError('--split applies to bias heads --benchmark winobias and stereoset, not winogender');
    const limit = parsePositiveInt(values.limit, '--limit');
    const data = benchmark === 'stereoset'
      ? { examples: await stereoExamples(values) }
      : { pronouns: await pronounItems(benchmark, values, limit), stats: await loadOccupationStats() };
    const { model } = await openModel(source, values);
    try {
      process.stdout.write(await runBenchmarkHeadsCommand(model, values, benchmark, data, seed));
    } finally {
      await model.dispose();
    }
    return;
  }
  let pairs: CrowsPair[] | null = null;
  let lexicons: GroupLexicon[] = [];
  if (values.benchmark !== undefined) {
    for (const o of ['groups', 'words', 'contrast', 'steps', 'permutations', 'top'] as const) if (values[o] !== undefined) throw new UsageError(`--${o} applies to bias heads --text, not --benchmark`);
    pairs = selectPairs(await loadCrowsPairs(), values['bias-type'], parsePositiveInt(values.limit, '--limit'));
  } else {
    for (const o of ['bias-type', 'limit'] as const) if (values[o] !== undefined) throw new UsageError(`--${o} applies to bias heads --benchmark crows-pairs, not --text`);
    lexicons = await parseLexicons(values, 'heads', 'gender,occupation');
  }
  const { model } = await openModel(source, values);
  try {
    process.stdout.write(await runHeadsCommand(model, values, { lexicons, permutations, seed }, pairs));
  } finally {
    await model.dispose();
  }
}

async function reportCommand(values: BiasValues, source: string | undefined): Promise<void> {
  if (values.out !== undefined) checkOut(values.out, ['.html'], 'bias report --out');
  parseHeadsSettings(values);
  const { permutations, seed } = parsePermutations(values);
  const limit = parsePositiveInt(values.limit, '--limit');
  const pairs = selectPairs(await loadCrowsPairs(), values['bias-type'], limit);
  const winogender = (await loadWinogender()).slice(0, limit);
  const stats = await loadOccupationStats();
  const lexicons = await parseLexicons(values, 'report', 'gender,occupation');
  const { model, dir } = await openModel(source, values);
  try {
    const cache = values['no-cache'] ? null : await ResultsCache.open(dir, model.config.modelType, 'crows-pairs');
    await runReportCommand(model, values, { pairs, biasType: values['bias-type'] ?? null, winogender, stats, lexicons, permutations, seed, cache: cache ?? undefined });
    await cache?.save();
  } finally {
    await model.dispose();
  }
}

async function crowsPairsCommand(values: BiasValues, source: string | undefined): Promise<void> {
  const limit = parsePositiveInt(values.limit, '--limit');
  if (values.out !== undefined) checkOut(values.out, ['.csv'], 'bias crows-pairs --out');
  const pairs = selectPairs(await loadCrowsPairs(values.data), values['bias-type'], limit);
  if (pairs.length === 0) throw new AttnscopeError(`${values.data ?? 'crows_pairs_anonymized.csv'}: no pairs to score`);
  const { model, dir } = await openModel(source, values);
  try {
    const cache = values['no-cache'] ? null : await ResultsCache.open(dir, model.config.modelType, 'crows-pairs');
    const progress = countProgress('crows-pairs', values.quiet ?? false);
    const run = await scoreCrowsPairs(model, pairs, {
      cache: cache ?? undefined,
      onProgress: (done, total) => {
        progress.update(done, total);
        if (cache && cache.unsaved >= 100) void cache.save();
      },
    });
    progress.done();
    await cache?.save();
    const rows = crowsPairRows(pairs, run.scores, run.method === 'masked');
    const metric = crowsPairsMetric(rows);
    if (values.json) process.stdout.write(metricJson(metric, run, model.name));
    else {
      const how = run.method === 'masked'
        ? `masked LM, pseudo-log-likelihood of the shared tokens (metric.py)${run.lowercased ? ', lower-cased (uncased tokenizer)' : ''}`
        : 'causal LM, 2^(mean log2 P) of the sentence (bias-bench)';
      process.stdout.write(formatCrowsMetric(metric, `CrowS-Pairs: ${model.name} (${how})`));
    }
    if (run.cached > 0) process.stderr.write(`${run.cached} of ${pairs.length} pairs from the results cache\n`);
    if (values.out !== undefined) {
      await writeFile(values.out, crowsScoresCsv(rows));
      reportWrote(values.out, `${rows.length} pairs`);
    }
  } finally {
    await model.dispose();
  }
}

export async function biasCommand(argv: string[]): Promise<void> {
  const [benchmark, ...rest] = argv;
  if (benchmark === undefined || benchmark.startsWith('-')) throw new UsageError(`bias: name a benchmark first (${BENCHMARKS.join(', ')})`);
  if (!(BENCHMARKS as readonly string[]).includes(benchmark)) {
    const hint = closest(benchmark, BENCHMARKS);
    throw new UsageError(`bias: unknown benchmark '${benchmark}'${hint ? ` (did you mean ${hint}?)` : ''}; benchmarks: ${BENCHMARKS.join(', ')}`);
  }
  const { values, positionals } = parseCommandArgs(rest, BIAS_OPTIONS);
  if (positionals.length > 1) throw new UsageError(`bias ${benchmark}: expected at most one model, got ${positionals.join(' ')}`);
  const which = benchmark as Benchmark;
  const only: [keyof typeof values, Benchmark[]][] = [
    ['bias-type', ['crows-pairs', 'heads', 'report']], ['data', ['crows-pairs', 'stereoset', 'heads']], ['no-cache', ['crows-pairs', 'report']], ['csv', ['winogender', 'winobias']], ['split', ['winobias', 'stereoset', 'heads']], ['predictions', ['stereoset']],
    ['text', ['probe', 'heads', 'report']], ['groups', ['probe', 'heads', 'report']], ['words', ['probe', 'heads', 'report']], ['permutations', ['probe', 'heads', 'report']], ['seed', ['probe', 'heads', 'report']], ['top', ['probe', 'heads']],
    ['contrast', ['heads', 'report']], ['k', ['heads', 'report']], ['controls', ['heads', 'report']], ['mode', ['heads', 'report']], ['steps', ['heads', 'report']], ['benchmark', ['heads']],
    ['bootstrap', ['report']], ['ablation-pairs', ['report']], ['theme', ['report']], ['json', ['crows-pairs', 'winogender', 'winobias', 'stereoset', 'probe', 'heads']],
  ];
  for (const [option, benchmarks] of only) {
    if (values[option] !== undefined && !benchmarks.includes(which)) throw new UsageError(`--${option} applies to bias ${benchmarks.length > 1 ? `${benchmarks.slice(0, -1).join(', ')} and ${benchmarks[benchmarks.length - 1]}` : benchmarks[0]}, not ${which}`);
  }
  if (which === 'crows-pairs') await crowsPairsCommand(values, positionals[0]);
  else if (which === 'stereoset') await stereoSetCommand(values, positionals[0]);
  else if (which === 'probe') await probeCommand(values, positionals[0]);
  else if (which === 'heads') await headsCommand(values, positionals[0]);
  else if (which === 'report') await reportCommand(values, positionals[0]);
  else await pronounCommand(which, values, positionals[0]);
}
