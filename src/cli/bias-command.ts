/**
 * `attnscope bias <benchmark> [model] [options]`: social-bias benchmarks scored as their authors
 * define them (src/bias, src/analysis/bias; the data ships in data/bias with its licences).
 *
 *   crows-pairs   CrowS-Pairs (Nangia et al., 2020): masked LMs as metric.py, causal LMs as bias-bench
 */
import { writeFile } from 'node:fs/promises';
import { AttnscopeError } from '../core/errors.js';
import { loadModel } from '../engine/load.js';
import type { Model } from '../engine/model.js';
import { defaultModelDir } from '../default-model.js';
import { resolveModelSource } from '../io/model-source.js';
import { crowsPairRows, crowsPairsMetric, crowsScoresCsv, pyRound, type CrowsGroupMetric, type CrowsPair, type CrowsPairsMetric } from '../analysis/bias/crows-pairs.js';
import { scoreCrowsPairs, type CrowsScoreRun } from '../bias/crows-pairs.js';
import { loadCrowsPairs } from '../bias/data-files.js';
import { ResultsCache } from '../bias/results-cache.js';
import type { AttnTokenizer } from '../tokenizer/load-tokenizer.js';
import { MODEL_HELP, MODEL_OPTIONS, parseLoadOptions, parsePositiveInt } from './args.js';
import { countProgress } from './bias-progress.js';
import { checkModelArg, checkOut, parseCommandArgs, reportWrote, UsageError, closest } from './parse.js';

const BENCHMARKS = ['crows-pairs'] as const;
type Benchmark = (typeof BENCHMARKS)[number];

export const BIAS_USAGE = `attnscope bias crows-pairs [model] [--bias-type T] [--limit N] [--data FILE.csv] [--out scores.csv]
                [--json] [--no-cache] [--quiet] [--revision REV] [--offline] [--threads N]

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
  --data       a CSV in crows_pairs_anonymized.csv's layout instead of the shipped one
  --out        write one row per pair to FILE.csv, the columns metric.py writes (an index, sent_more,
               sent_less, sent_more_score, sent_less_score, score, stereo_antistereo, bias_type)
  --json       print the metric as JSON instead of the table
  --no-cache   neither read nor write the per-model results cache (kept beside the model's graphs in the
               graph cache, \$ATTNSCOPE_CACHE; ATTNSCOPE_CACHE=off disables it too)
  --quiet      no progress line on stderr
${MODEL_HELP}`;

export const BIAS_OPTIONS = {
  'bias-type': { type: 'string' },
  limit: { type: 'string' },
  data: { type: 'string' },
  out: { type: 'string' },
  json: { type: 'boolean' },
  'no-cache': { type: 'boolean' },
  quiet: { type: 'boolean' },
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

async function crowsPairsCommand(values: ReturnType<typeof parseCommandArgs<typeof BIAS_OPTIONS>>['values'], source: string | undefined): Promise<void> {
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
  if (which === 'crows-pairs') await crowsPairsCommand(values, positionals[0]);
}
