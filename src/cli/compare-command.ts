/**
 * `attnscope compare A B [--text …] [--text-b …] [--layer L[,LB]] [--head H[,HB]] [--json | --csv]
 * [--out FILE] [--html page.html]`: the heads that changed most between two traces (models run on
 * a text, or trace files), as a table, CSV or JSON, and a comparison page.
 */
import { writeFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { type Comparison, COMPARISON_COLUMNS, type CompareOptions, comparisonCsv, comparisonRows, compareTraces } from '../analysis/compare.js';
import { AttnscopeError } from '../core/errors.js';
import type { StackName, Trace } from '../core/trace.js';
import { DEFAULT_MODEL_NAME } from '../default-model.js';
import { loadModel } from '../engine/load.js';
import { withAttentionLayers } from '../core/attention-on-demand.js';
import { readTraceFile } from '../io/trace-file.js';
import { loadViewBundle } from '../views/html/bundle-node.js';
import { renderComparePage } from '../views/html/compare-page.js';
import { MODEL_HELP, MODEL_OPTIONS, parseIdList, parseLoadOptions } from './args.js';
import { UsageError, checkModelArg, checkOut, parseCommandArgs, reportWrote } from './parse.js';
import { isTraceFile } from './view-command.js';

export const COMPARE_USAGE = `attnscope compare [A B] [--text "..."] [--text-b "..."] [--layer L[,LB]] [--head H[,HB]]
                [--align auto|positions|words] [--stack self|encoder|decoder|cross] [--json | --csv]
                [--out FILE] [--html page.html] [--theme light|dark] [--revision REV] [--offline] [--threads N]

  Ranks the heads whose attention differs most between A and B: per head the Jensen–Shannon
  divergence of each query row (bits, 0–1) averaged over rows, and the largest and mean |A − B|.
  A, B         models (checkpoint directories or Hub ids) or trace files (.json, .safetensors);
               both omitted: the embedded ${DEFAULT_MODEL_NAME} model twice (then give --text and --text-b)
  --text       the text models run on (and the shared text that aligns different tokenisers
               through words);  --text-b  another text for B (one model on two texts: equal token
               length, compared position by position)
  --layer      only layer L of both, or L of A against LB of B;  --head  only head H, or H of A
               against HB of B (two layers or two heads of one trace: give the same A and B)
  --align      positions (token i against token i) or words (through the words of --text); auto:
               positions when both tokenise alike, words otherwise. Models of different shapes are
               compared layer by layer at equal relative depth, on the mean over heads
  --stack      which attention of encoder-decoders (default: self, else encoder)
  --json / --csv  the ranking as JSON or CSV (one row per compared pair: ${COMPARISON_COLUMNS.join(', ')});
               a table otherwise
  --out        write the ranking there instead of stdout (.json, .csv or .txt)
  --html       also write a self-contained page: A and B side by side, A − B, the ranked list
               (click a pair to show it), SVG/PNG export;  --theme  its theme
${MODEL_HELP}`;

export const COMPARE_OPTIONS = {
  text: { type: 'string' },
  'text-b': { type: 'string' },
  layer: { type: 'string' },
  head: { type: 'string' },
  align: { type: 'string' },
  stack: { type: 'string' },
  json: { type: 'boolean' },
  csv: { type: 'boolean' },
  out: { type: 'string' },
  html: { type: 'string' },
  theme: { type: 'string' },
  ...MODEL_OPTIONS,
} as const;

const STACKS: readonly StackName[] = ['self', 'encoder', 'decoder', 'cross'];

/** "3" → [3, 3]; "3,5" → [3, 5]. */
function parsePair(value: string | undefined, flag: string): [number, number] | undefined {
  const list = parseIdList(value, flag);
  if (list === undefined) return undefined;
  if (list.length > 2) throw new UsageError(`${flag}: expected N or N,M (A's and B's), got '${value}'`);
  return [list[0]!, list[1] ?? list[0]!];
}

function sideName(source: string | undefined, trace: Trace): string {
  if (source === undefined) return trace.model.name;
  return isTraceFile(source) ? basename(source) : trace.model.name || basename(source);
}

function table(c: Comparison, nameA: string, nameB: string): string {
  const rows = comparisonRows(c);
  const lines = [`${nameA} vs ${nameB}: ${c.note}`, ''];
  const head = ['rank', 'layer', 'head', 'layer B', 'head B', 'JS (bits)', 'max |Δ|', 'mean |Δ|'];
  const body = rows.map((r) => [r.rank, r.layer, r.head ?? 'mean', r.layer_b, r.head_b ?? 'mean', r.js_divergence.toFixed(5), r.max_abs_diff.toFixed(5), r.mean_abs_diff.toFixed(5)].map(String));
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  lines.push(head.map((h, i) => h.padStart(widths[i]!)).join('  '));
  for (const b of body) lines.push(b.map((x, i) => x.padStart(widths[i]!)).join('  '));
  return `${lines.join('\n')}\n`;
}

export async function compareCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs(argv, COMPARE_OPTIONS);
  if (positionals.length !== 0 && positionals.length !== 2) {
    throw new UsageError(`compare: expected two models or trace files (A B), or none for the embedded model, got ${positionals.length}: ${positionals.join(' ')}`);
  }
  if (values.json && values.csv) throw new UsageError('compare: give --json or --csv, not both');
  const format: 'json' | 'csv' | 'table' = values.json ? 'json' : values.csv ? 'csv' : values.out?.toLowerCase().endsWith('.json') ? 'json' : values.out?.toLowerCase().endsWith('.csv') ? 'csv' : 'table';
  if (values.out !== undefined) checkOut(values.out, format === 'json' ? ['.json'] : format === 'csv' ? ['.csv'] : ['.txt'], `compare --${format === 'table' ? 'out' : format}`);
  if (values.html !== undefined) checkOut(values.html, ['.html', '.htm'], 'compare --html');
  const theme = values.theme;
  if (theme !== undefined && theme !== 'light' && theme !== 'dark') throw new UsageError(`--theme: expected light or dark, got '${theme}'`);
  const align = values.align;
  if (align !== undefined && !['auto', 'positions', 'words'].includes(align)) throw new UsageError(`--align: expected auto, positions or words, got '${align}'`);
  const stack = values.stack;
  if (stack !== undefined && !(STACKS as readonly string[]).includes(stack)) throw new UsageError(`--stack: expected ${STACKS.join(', ')}, got '${stack}'`);
  const layers = parsePair(values.layer, '--layer');
  const heads = parsePair(values.head, '--head');

  const [srcA, srcB] = positionals.length === 2 ? [positionals[0]!, positionals[1]!] : [undefined, undefined];
  const textA = values.text;
  const textB = values['text-b'] ?? values.text;
  const loadOptions = parseLoadOptions(values);
  const models = new Map<string, Awaited<ReturnType<typeof loadModel>>>();
  const traceOf = async (source: string | undefined, text: string | undefined, side: 'A' | 'B'): Promise<Trace> => {
    // A trace kept as queries and keys: its layers are computed as they are read (within a budget).
    if (source !== undefined && isTraceFile(source)) return withAttentionLayers(await readTraceFile(source));
    if (text === undefined) throw new UsageError(`compare: ${side} (${source ?? DEFAULT_MODEL_NAME}) is a model: give --text${side === 'B' ? ' (or --text-b)' : ''}`);
    checkModelArg(source);
    const key = source ?? '';
    let model = models.get(key);
    if (!model) {
      model = await loadModel(source, loadOptions);
      models.set(key, model);
    }
    return model.trace(text);
  };
  let a: Trace;
  let b: Trace;
  try {
    a = await traceOf(srcA, textA, 'A');
    b = await traceOf(srcB, textB, 'B');
  } finally {
    for (const m of models.values()) await m.dispose();
  }
  const sameText = textB === textA;
  const options: CompareOptions = {
    stack: stack as StackName | undefined,
    layers,
    heads,
    align: align as CompareOptions['align'],
    text: sameText ? textA : undefined,
  };
  const c = compareTraces(a, b, options);
  let nameA = sideName(srcA, a);
  let nameB = sideName(srcB, b);
  if (nameA === nameB) {
    nameA = `${nameA} (A)`;
    nameB = `${nameB} (B)`;
  }
  const output =
    format === 'json'
      ? `${JSON.stringify(
          {
            a: { source: srcA ?? DEFAULT_MODEL_NAME, model: a.model.name, tokens: a.tokens.length, text: textA ?? null },
            b: { source: srcB ?? DEFAULT_MODEL_NAME, model: b.model.name, tokens: b.tokens.length, text: textB ?? null },
            stack: c.stack,
            alignment: c.alignment,
            matching: c.matching,
            units: c.rowsA.length,
            note: c.note,
            rows: comparisonRows(c),
          },
          null,
          2,
        )}\n`
      : format === 'csv'
        ? comparisonCsv(c)
        : table(c, nameA, nameB);
  if (values.out !== undefined) {
    await writeFile(values.out, output);
    reportWrote(values.out, `${c.ranking.length} pairs`);
  } else {
    process.stdout.write(output);
  }
  if (values.html !== undefined) {
    const page = await renderComparePage(c, {
      bundle: await loadViewBundle(),
      nameA,
      nameB,
      textA,
      textB,
      theme: theme as 'light' | 'dark' | undefined,
      deflate: (d) => deflateRawSync(d, { level: 6 }),
    });
    await writeFile(values.html, page.html);
    reportWrote(values.html, page.stored < page.total ? `${page.stored} of ${page.total} pairs stored` : `${page.total} pairs`);
  }
  if (c.ranking.length === 0) throw new AttnscopeError('compare: nothing to compare');
}
