/**
 * `attnscope aggregate [model | trace] --text … --by words|sentences [--layer L] [--head H | --mean | --max]
 * [--query-rule …] [--key-rule …] [--rule mean|max|share] [--json | --csv] [--out FILE]`: one layer's head
 * (or the mean / max over its heads) summarised per word or per sentence (src/analysis/words.ts).
 */
import { writeFile } from 'node:fs/promises';
import { maskedEntries } from '../analysis/aggregate.js';
import { type BlockRule, type CombineRule, type UnitMatrix, blockMatrix, groupMatrix, sentenceUnits, stackTokens, traceMatrix, wordUnits } from '../analysis/words.js';
import { AttnscopeError, sanitize } from '../core/errors.js';
import type { StackName, Trace } from '../core/trace.js';
import { loadModel } from '../engine/load.js';
import { withAttentionLayers } from '../core/attention-on-demand.js';
import { readTraceFile } from '../io/trace-file.js';
import { MODEL_HELP, MODEL_OPTIONS, parseLoadOptions } from './args.js';
import { csvField } from './flow-command.js';
import { UsageError, checkModelArg, checkOut, parseCommandArgs, reportWrote } from './parse.js';
import { isTraceFile } from './view-command.js';

export const AGGREGATE_USAGE = `attnscope aggregate [model | trace.json | trace.safetensors] --text "..." [--pair "..."]
                [--by words|sentences] [--layer L] [--head H | --mean | --max] [--stack self|encoder|decoder]
                [--query-rule mean|sum|max] [--key-rule sum|mean|max] [--rule mean|max|share]
                [--json | --csv] [--out FILE] [--revision REV] [--offline] [--threads N]

  One layer's attention (a head, or the mean / max over its heads; default: the mean) per word or
  per sentence.
  --layer      the layer (default 0);  --head  one head;  --mean / --max  over the layer's heads
  --stack      which attention of encoder-decoders (default: self, else encoder)
  --by words      units: the tokens of one word (the tokenizer's word indices), specials alone.
                  W[U][V] = (query rule over U's tokens) of (key rule over V's tokens) of the weights;
                  default: keys summed, queries averaged, so every row still sums to 1;
                  --query-rule / --key-rule  mean, sum or max instead
  --by sentences  units: sentences of the text (Intl.Segmenter), specials alone; --rule mean (the
                  block's mean weight, Attention Atlas's inter-sentence attention, default), max
                  (the block's largest weight) or share (keys summed, queries averaged)
  --text / --pair the text (and sentence B) the model runs on; for a trace file, the text it was
                  made from (needed for sentences)
  --json / --csv  the matrix with its units (CSV: header unit_index,unit,<j>:<unit>…); a table otherwise
  --out        write to FILE (.json, .csv or .txt) instead of stdout
${MODEL_HELP}`;

export const AGGREGATE_OPTIONS = {
  text: { type: 'string' },
  pair: { type: 'string' },
  by: { type: 'string' },
  layer: { type: 'string' },
  head: { type: 'string' },
  mean: { type: 'boolean' },
  max: { type: 'boolean' },
  stack: { type: 'string' },
  'query-rule': { type: 'string' },
  'key-rule': { type: 'string' },
  rule: { type: 'string' },
  json: { type: 'boolean' },
  csv: { type: 'boolean' },
  out: { type: 'string' },
  ...MODEL_OPTIONS,
} as const;

function oneOf<T extends string>(value: string | undefined, allowed: readonly T[], flag: string): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw new UsageError(`${flag}: expected ${allowed.join(', ')}, got '${value}'`);
  return value as T;
}

function index(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value.trim())) throw new UsageError(`${flag}: expected a non-negative integer, got '${value}'`);
  return Number(value);
}

/** The unit matrix as CSV: a header `unit_index,unit,<j>:<unit>…` and one row per unit. */
export function unitMatrixCsv(m: UnitMatrix): string {
  const lines = [['unit_index', 'unit', ...m.cols.map((u, j) => `${j}:${u.label}`)].map(csvField).join(',')];
  const C = m.cols.length;
  m.rows.forEach((u, i) => {
    const row = [String(i), csvField(u.label)];
    for (let j = 0; j < C; j++) row.push(String(m.values[i * C + j]));
    lines.push(row.join(','));
  });
  return `${lines.join('\n')}\n`;
}

function table(m: UnitMatrix): string {
  const short = (l: string) => sanitize(l, 12);
  const C = m.cols.length;
  const w = Math.max(8, ...m.rows.map((u) => [...short(u.label)].length + 1));
  const pad = (s: string, width: number) => s + ' '.repeat(Math.max(0, width - [...s].length));
  const lines = [pad('', w + 4) + m.cols.map((u) => pad(short(u.label), 15)).join('')];
  m.rows.forEach((u, i) => {
    let line = pad(`${i}`, 4) + pad(short(u.label), w);
    for (let j = 0; j < C; j++) line += pad(m.values[i * C + j]!.toFixed(4), 15);
    lines.push(line);
  });
  return `${lines.join('\n')}\n`;
}

export async function aggregateCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs(argv, AGGREGATE_OPTIONS);
  if (positionals.length > 1) throw new UsageError(`aggregate: expected at most one model or trace file, got ${positionals.join(' ')}`);
  if (values.json && values.csv) throw new UsageError('aggregate: give --json or --csv, not both');
  const by = oneOf(values.by, ['words', 'sentences'] as const, '--by') ?? 'words';
  const queryRule = oneOf(values['query-rule'], ['mean', 'sum', 'max'] as const, '--query-rule');
  const keyRule = oneOf(values['key-rule'], ['sum', 'mean', 'max'] as const, '--key-rule');
  const rule = oneOf(values.rule, ['mean', 'max', 'share'] as const, '--rule');
  if (by === 'words' && rule) throw new UsageError('--rule applies to --by sentences (words: --query-rule, --key-rule)');
  if (by === 'sentences' && (queryRule || keyRule)) throw new UsageError('--query-rule and --key-rule apply to --by words (sentences: --rule)');
  const stack = oneOf(values.stack, ['self', 'encoder', 'decoder'] as const, '--stack');
  const layer = index(values.layer, '--layer') ?? 0;
  const headIndex = index(values.head, '--head');
  if ([headIndex !== undefined, values.mean, values.max].filter(Boolean).length > 1) throw new UsageError('aggregate: give one of --head, --mean, --max');
  const head: number | 'mean' | 'max' = headIndex ?? (values.max ? 'max' : 'mean');
  const format = values.json ? 'json' : values.csv ? 'csv' : 'table';
  if (values.out !== undefined) checkOut(values.out, format === 'json' ? ['.json'] : format === 'csv' ? ['.csv'] : ['.txt'], 'aggregate');

  const source = positionals[0];
  let trace: Trace;
  if (source !== undefined && isTraceFile(source)) {
    // A trace kept as queries and keys: its layers are computed as they are read (within a budget).
    trace = withAttentionLayers(await readTraceFile(source));
  } else {
    if (values.text === undefined) throw new UsageError('aggregate: give --text "..." (the text the model runs on)');
    checkModelArg(source);
    const model = await loadModel(source, parseLoadOptions(values));
    try {
      trace = await model.trace(values.text, { pair: values.pair });
    } finally {
      await model.dispose();
    }
  }
  const st: StackName = stack ?? (trace.attention.self ? 'self' : 'encoder');
  const texts = [values.text, values.pair];
  const { queries, keys } = stackTokens(trace, st);
  const m = traceMatrix(trace, st, layer, head);
  let result: UnitMatrix;
  if (by === 'words') {
    const rows = wordUnits(queries, texts);
    const cols = queries === keys ? rows : wordUnits(keys, texts);
    result = { rows, cols, values: groupMatrix(m, queries.length, keys.length, rows, cols, { query: queryRule as CombineRule | undefined, key: keyRule as CombineRule | undefined }) };
  } else {
    if (values.text === undefined) throw new UsageError('aggregate --by sentences: give --text (and --pair) with the text the trace was made from');
    if (queries.some((t) => t.segment === 1) && values.pair === undefined) throw new AttnscopeError('aggregate --by sentences: the trace has a sentence pair: give --pair with its second text');
    const units = sentenceUnits(queries, values.pair === undefined ? [values.text] : [values.text, values.pair]);
    result = { rows: units, cols: units, values: blockMatrix(m, queries.length, keys.length, units, units, (rule ?? 'mean') as BlockRule, 0, maskedEntries(trace, st, layer)) };
  }
  const out =
    format === 'json'
      ? `${JSON.stringify(
          {
            by,
            stack: st,
            layer,
            head,
            rules: by === 'words' ? { query: queryRule ?? 'mean', key: keyRule ?? 'sum' } : { block: rule ?? 'mean' },
            units: result.rows.map((u) => ({ label: u.label, tokens: u.tokens, special: u.special, segment: u.segment, start: u.start, end: u.end })),
            values: result.rows.map((_, i) => Array.from(result.values.subarray(i * result.cols.length, (i + 1) * result.cols.length))),
          },
          null,
          2,
        )}\n`
      : format === 'csv'
        ? unitMatrixCsv(result)
        : table(result);
  if (values.out !== undefined) {
    await writeFile(values.out, out);
    reportWrote(values.out, `${result.rows.length} ${by}`);
  } else process.stdout.write(out);
}
