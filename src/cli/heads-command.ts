/**
 * `attnscope heads [model | trace file] [--text "..." [--pair "..."]] [--exclude-first]
 *  [--samples N] [--seq-len L] [--seed S] [--json | --csv] [--out FILE]`: what each head does —
 * the metrics of analysis/head-metrics.ts and the type scores of analysis/head-types.ts, one row
 * per layer and head. Without --text (and without a trace file) it runs the standard repeated
 * random-token probe (analysis/probe.ts), which is what measures induction and duplicate-token heads.
 */
import { existsSync, statSync } from 'node:fs';
import { extname } from 'node:path';
import { AttnscopeError, sanitize } from '../core/errors.js';
import type { StackName, Trace } from '../core/trace.js';
import { loadModel } from '../engine/load.js';
import { HEAD_TYPE_NAMES, HEAD_TYPE_THRESHOLDS, headTable, headTableCsv, headTableJsonRows, headsOfType, HEAD_TYPE_COLUMN, type HeadTableOptions, type HeadTableRow } from '../analysis/head-types.js';
import { headTableThreaded, warmHeadTableThreads } from '../runtime/head-table-threads.js';
import { timed } from '../core/profile.js';
import { defaultStack, DEFAULT_LONG_RANGE, DEFAULT_SPARSITY_THRESHOLD, stackTokens } from '../analysis/head-metrics.js';
import { PROBE_DEFAULTS, probeVocabularyOf, runProbe } from '../analysis/probe.js';
import { tokenWordClasses } from '../analysis/word-classes.js';
import { withAttentionLayers } from '../core/attention-on-demand.js';
import { openTraceFile, writeFileAtomically } from '../io/trace-file.js';
import { MODEL_HELP, MODEL_OPTIONS, parseLoadOptions, parseNumber, parsePositiveInt } from './args.js';
import { checkModelArg, checkOut, isCheckpointFile, parseCommandArgs, reportWrote, UsageError } from './parse.js';
import { STACK_TITLES } from '../views/layout/common.js';
import { svgToPng } from '../views/png.js';
import { renderHeadTypeGrid } from '../views/svg/head-types.js';
import { THEME_NAMES, type ThemeName } from '../views/theme.js';
import { CLUSTER_HELP, CLUSTER_OPTIONS, CLUSTER_SYNOPSIS, parseClusterFlags, writeClusters } from './heads-clusters.js';

export const HEADS_USAGE = `attnscope heads [model | trace.json | trace.safetensors] [--text "..." [--pair "..."]] [--exclude-first]
                [--samples N] [--seq-len L] [--seed S] [--stack self|encoder|decoder|cross]
                [--json | --csv] [--out FILE] [--theme light|dark] [--scale S] [--truncate] [--revision REV] [--offline] [--threads N]
                ${CLUSTER_SYNOPSIS}

  source       a model directory or Hub id (the embedded stories260k model when omitted), or a trace file
  --text       measure the heads on this text;  --pair  a second sentence (sentence B); without --text the
               standard probe runs: BOS then L random tokens repeated once, [BOS r1…rL r1…rL]
  --samples N / --seq-len L / --seed S   the probe: averaged over N sequences (default ${PROBE_DEFAULTS.samples}) of L tokens
               (default ${PROBE_DEFAULTS.seqLen}, TransformerLens' induction demo), random ids from seed S (default ${PROBE_DEFAULTS.seed}; mulberry32)
  --exclude-first  leave out the first token (key 0, renormalising each row, and query 0), as
               TransformerLens' exclude_bos: attention sinks dominate decoder heads
  --stack      which attention of an encoder-decoder (default: self, else encoder)
  --json / --csv  one row per layer and head: layer, head, every metric and type score, top_type,
               top_score (empty/null where a score is not defined); a readable table otherwise
  --out        write to FILE (.json, .csv, or .txt for the table) instead of stdout; FILE.svg or FILE.png:
               the head-type grid instead (layers × heads, each cell coloured by the head's top type and
               shaded by how far its score passes the threshold)
  --theme      grid and scatter images: light or dark (default light);  --scale  PNG pixels per unit (default 2)
  --truncate   cut a --text longer than the model's maximum positions
${CLUSTER_HELP}

  Columns: max_weight, confidence (mean row max), entropy (row entropy / log of the keys the row can
  see), sparsity (share < ${DEFAULT_SPARSITY_THRESHOLD}), sparsity_uniform (share < 1/keys), p25 p50 p75 p90 std (of the weights),
  distance (mean |i−j|), self, sink (first token), separator (other specials), punctuation, long_range
  (|i−j| ≥ ${DEFAULT_LONG_RANGE}), js_from_first (Jensen–Shannon vs the same head in layer 0), previous_token,
  next_token, local (|i−j| ≤ 2), duplicate_token, induction, syntax_focus / semantic_focus / entity_focus
  (attention on function words / content words / named entities, --text only).
  Types and thresholds: ${HEAD_TYPE_NAMES.map((t) => `${t} ≥ ${HEAD_TYPE_THRESHOLDS[t]}`).join(', ')}
  (broad: entropy); the top type is the one furthest above its threshold.
${MODEL_HELP}`;

export const HEADS_OPTIONS = {
  text: { type: 'string' },
  pair: { type: 'string' },
  'exclude-first': { type: 'boolean' },
  samples: { type: 'string' },
  'seq-len': { type: 'string' },
  seed: { type: 'string' },
  stack: { type: 'string' },
  json: { type: 'boolean' },
  csv: { type: 'boolean' },
  out: { type: 'string' },
  truncate: { type: 'boolean' },
  ...CLUSTER_OPTIONS,
  ...MODEL_OPTIONS,
} as const;

const STACKS: readonly StackName[] = ['self', 'encoder', 'decoder', 'cross'];

/**
 * From this many attention weights in a stack the table is computed over worker threads
 * (headTableThreaded, the same rows; bert-base at ≈ 240 tokens): below it one thread is done about
 * as soon as the threads would have started.
 */
const THREADED_FROM = 8_000_000;

/** The head table, over worker threads for a large stack held in memory (`threads`: --threads, 1 for one thread). */
async function tableOf(trace: Trace, stack: StackName, options: HeadTableOptions, threads: number | undefined, inMemory = true): Promise<HeadTableRow[]> {
  const s = trace.attention[stack];
  const weights = s ? s.layers.length * s.dims[0] * s.dims[1] * s.dims[2] : 0;
  return timed('head table', async () => {
    if (!inMemory || weights < THREADED_FROM || threads === 1) return headTable(trace, stack, options);
    return headTableThreaded(trace, stack, options, threads === undefined ? {} : { threads });
  });
}

/**
 * Starts the table's worker threads ahead (while the model traces or the file is read) when the
 * table may reach THREADED_FROM weights: `weightsAtMost` is an upper bound of the stack's weights.
 */
function warmThreads(weightsAtMost: number, threads: number | undefined): void {
  if (threads === 1 || weightsAtMost < THREADED_FROM) return;
  warmHeadTableThreads(threads === undefined ? {} : { threads });
}
/** Most probe samples and most random tokens per sample accepted. */
const MAX_SAMPLES = 1000;

function isTraceFile(source: string | undefined): boolean {
  if (!source) return false;
  const lower = source.toLowerCase();
  if (!lower.endsWith('.json') && !lower.endsWith('.safetensors')) return false;
  if (isCheckpointFile(source)) return false;
  if (!existsSync(source)) throw new AttnscopeError(`${source}: no such trace file`);
  return statSync(source).isFile();
}

const fmt = (v: number, digits = 2): string => (Number.isFinite(v) ? v.toFixed(digits) : '–');

/** The readable table and, under it, which heads are of each type (or that none is). */
export function formatHeadTable(table: readonly HeadTableRow[], title: string): string {
  const head = ['layer', 'head', 'type', 'score', 'entropy', 'conf', 'sink', 'self', 'prev', 'dup', 'induct', 'dist'];
  const lines = table.map((r) => [
    String(r.layer), String(r.head), r.top_type ?? '–', fmt(r.top_score), fmt(r.entropy), fmt(r.confidence), fmt(r.sink), fmt(r.self),
    fmt(r.previous_token), fmt(r.duplicate_token), fmt(r.induction), fmt(r.distance, 1),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const row = (cells: string[]) => cells.map((c, i) => (i === 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  const out = [title, row(head), ...lines.map(row), ''];
  for (const t of HEAD_TYPE_NAMES) {
    const found = headsOfType(table, t);
    const col = HEAD_TYPE_COLUMN[t];
    if (found.length > 0) {
      out.push(`${t} (≥ ${HEAD_TYPE_THRESHOLDS[t]}): ${found.map((f) => `L${f.layer}H${f.head} ${fmt(f.score)}`).join(', ')}`);
    } else {
      const best = table.filter((r) => Number.isFinite(r[col])).sort((a, b) => b[col] - a[col])[0];
      out.push(`${t} (≥ ${HEAD_TYPE_THRESHOLDS[t]}): none${best ? ` (highest L${best.layer}H${best.head} ${fmt(best[col])})` : ' (not measured)'}`);
    }
  }
  return `${out.join('\n')}\n`;
}

export async function headsCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs(argv, HEADS_OPTIONS);
  if (positionals.length > 1) throw new AttnscopeError(`heads: expected at most one model or trace file, got ${positionals.join(' ')}`);
  if (values.json && values.csv) throw new UsageError('heads: give --json or --csv, not both');
  let format: 'json' | 'csv' | 'table' = values.json ? 'json' : values.csv ? 'csv' : 'table';
  const clusters = parseClusterFlags(values);
  // --out FILE.svg | FILE.png: the head-type grid (views/layout/head-types.ts).
  let picture: 'svg' | 'png' | null = null;
  if (values.out !== undefined && !clusters) {
    const ext = extname(values.out).toLowerCase();
    if (format === 'table' && (ext === '.svg' || ext === '.png')) picture = ext.slice(1) as 'svg' | 'png';
    else {
      if (format === 'table' && (ext === '.json' || ext === '.csv')) format = ext.slice(1) as 'json' | 'csv';
      checkOut(values.out, [format === 'table' ? '.txt' : `.${format}`], format === 'table' ? 'heads (the table; .svg or .png: the head-type grid)' : `heads --${format}`);
    }
  }
  let gridScale: number | undefined;
  if (!clusters) {
    if (values.theme !== undefined && !THEME_NAMES.includes(values.theme as ThemeName)) throw new UsageError(`--theme: expected ${THEME_NAMES.join(' or ')}, got '${values.theme}'`);
    gridScale = parseNumber(values.scale, '--scale');
    if (gridScale !== undefined && picture !== 'png') throw new UsageError('--scale applies to a PNG (--out FILE.png)');
    if (gridScale !== undefined && !(gridScale > 0 && gridScale <= 8)) throw new UsageError(`--scale: expected a number in (0, 8], got '${values.scale}'`);
  }
  if (values.pair !== undefined && values.text === undefined) throw new UsageError('--pair needs --text');
  if (values.stack !== undefined && !STACKS.includes(values.stack as StackName)) {
    throw new UsageError(`--stack: unknown stack '${values.stack}' (expected ${STACKS.join(', ')})`);
  }
  const source = positionals[0];
  const fromFile = isTraceFile(source);
  const probe = values.text === undefined && !fromFile;
  if (!probe) {
    for (const flag of ['samples', 'seq-len', 'seed'] as const) {
      // --seed also seeds the clustering.
      if (values[flag] !== undefined && !(flag === 'seed' && clusters)) throw new UsageError(`--${flag} applies to the probe (run without --text${fromFile ? ' and on a model, not a trace file' : ''})`);
    }
  }
  if (fromFile) {
    for (const flag of ['text', 'pair', 'truncate'] as const) {
      if (values[flag] !== undefined) throw new AttnscopeError(`--${flag} does not apply to a trace file (it already holds its tokens)`);
    }
  }
  const samples = parsePositiveInt(values.samples, '--samples') ?? PROBE_DEFAULTS.samples;
  if (samples > MAX_SAMPLES) throw new UsageError(`--samples: expected 1 to ${MAX_SAMPLES}, got ${samples}`);
  const seqLen = parsePositiveInt(values['seq-len'], '--seq-len') ?? PROBE_DEFAULTS.seqLen;
  let seed: number = PROBE_DEFAULTS.seed;
  if (values.seed !== undefined) {
    if (!/^\d+$/.test(values.seed.trim()) || Number(values.seed) > 0xffffffff) throw new UsageError(`--seed: expected an integer from 0 to 4294967295, got '${values.seed}'`);
    seed = Number(values.seed);
  }
  const excludeFirstToken = values['exclude-first'] ?? false;
  const stackOption = values.stack as StackName | undefined;

  let table: HeadTableRow[];
  let title: string;
  let meta: Record<string, unknown>;
  if (fromFile) {
    // A trace file holds its weights as float32 or as longer text: at most a quarter of its bytes.
    warmThreads(statSync(source!).size / 4, parseLoadOptions(values).threads);
    const opened = await openTraceFile(source!);
    if (opened.warnings.length > 0) process.stderr.write(`attnscope: warning: ${sanitize(opened.warnings.join('; '), 600)}\n`);
    // A trace kept as queries and keys: its layers are computed as they are read (within a budget).
    const trace = withAttentionLayers(opened.trace);
    const stack = pickStack(trace, stackOption);
    table = await tableOf(trace, stack, { excludeFirstToken }, parseLoadOptions(values).threads, trace === opened.trace);
    title = `${trace.model.name}: ${stack} attention of ${source} (${trace.tokens.length} tokens)`;
    meta = { model: trace.model.name, stack, input: 'trace', traceFile: source };
  } else {
    const loadOptions = parseLoadOptions(values);
    checkModelArg(source);
    const model = await loadModel(source, loadOptions);
    try {
      if (probe) {
        const vocab = probeVocabularyOf(model);
        const length = vocab.prefix.length + 2 * seqLen;
        if (length > model.info.maxPositions) {
          const most = Math.floor((model.info.maxPositions - vocab.prefix.length) / 2);
          throw new UsageError(`--seq-len ${seqLen}: the probe's ${length} tokens exceed ${model.name}'s ${model.info.maxPositions} positions; allowed 1 to ${most}`);
        }
        const stack = stackOption ?? (model.info.kind === 'encoder-decoder' ? 'encoder' : undefined);
        const result = await runProbe(model, vocab, { samples, seqLen, seed, excludeFirstToken, stack });
        table = result.table;
        title = `${model.name}: ${result.stack} attention on the repeated-token probe (${samples} × [${vocab.prefix.length ? 'BOS + ' : ''}2 × ${seqLen} random tokens], seed ${seed})`;
        meta = { model: model.name, stack: result.stack, input: 'probe', samples, seqLen, seed, prefix: vocab.prefix };
      } else {
        // At most a token per UTF-8 byte of the text (and a few specials), at most the model's positions.
        const bytes = Buffer.byteLength(values.text!) + Buffer.byteLength(values.pair ?? '') + 4;
        const positions = Math.min(model.info.maxPositions, bytes);
        warmThreads(model.info.numLayers * model.info.numHeads * positions * positions, loadOptions.threads);
        const trace = await model.trace(values.text!, { pair: values.pair, truncate: values.truncate ?? false });
        const stack = pickStack(trace, stackOption);
        const { keys } = stackTokens(trace, stack);
        const segments = stack === 'decoder' ? [] : [values.text!, ...(values.pair !== undefined ? [values.pair] : [])];
        const wordClasses = segments.length ? tokenWordClasses(keys, segments) : undefined;
        table = await tableOf(trace, stack, { excludeFirstToken, wordClasses }, loadOptions.threads);
        title = `${model.name}: ${stack} attention on the text (${trace.tokens.length} tokens)`;
        meta = { model: model.name, stack, input: 'text', text: values.text, ...(values.pair !== undefined ? { pair: values.pair } : {}) };
      }
    } finally {
      await model.dispose();
    }
  }
  if (excludeFirstToken) title += ', first token excluded';
  if (clusters) {
    const input = meta.input === 'probe' ? 'repeated-token probe' : meta.input === 'trace' ? 'trace file' : 'text';
    return writeClusters(clusters, table, { title, model: String(meta.model), stack: meta.stack as StackName, input, seed, meta: { ...meta, excludeFirstToken } });
  }
  if (picture) {
    const input =
      meta.input === 'probe'
        ? `the repeated-token probe (${samples} × [${(meta.prefix as unknown[]).length ? 'BOS + ' : ''}2 × ${seqLen} random tokens], seed ${seed})`
        : meta.input === 'trace'
          ? `the trace file ${source}`
          : 'the text';
    const svg = renderHeadTypeGrid(table, {
      title: `${String(meta.model)} · ${STACK_TITLES[meta.stack as StackName]} · head types on ${input}${excludeFirstToken ? ', first token excluded' : ''}`,
      theme: values.theme as ThemeName | undefined,
    });
    const bytes = picture === 'svg' ? svg : svgToPng(svg, { scale: gridScale ?? 2 });
    await writeFileAtomically(values.out!, async (stream) => {
      stream.write(bytes);
    });
    const typed = table.filter((r) => r.top_type).length;
    reportWrote(values.out!, `${table.length} heads, ${typed} with a type`);
    return;
  }
  const body =
    format === 'csv'
      ? headTableCsv(table)
      : format === 'json'
        ? `${JSON.stringify({ ...meta, excludeFirstToken, thresholds: HEAD_TYPE_THRESHOLDS, rows: headTableJsonRows(table) }, null, 1)}\n`
        : formatHeadTable(table, title);
  if (values.out !== undefined) {
    await writeFileAtomically(values.out, async (stream) => {
      stream.write(body);
    });
    reportWrote(values.out, `${table.length} heads`);
  } else {
    process.stdout.write(body);
  }
}

function pickStack(trace: Trace, wanted: StackName | undefined): StackName {
  if (wanted === undefined) return defaultStack(trace);
  if (!trace.attention[wanted]) {
    const have = STACKS.filter((s) => trace.attention[s]);
    throw new UsageError(`--stack ${wanted}: the trace has no ${wanted} attention (it has ${have.join(', ')})`);
  }
  return wanted;
}
