/**
 * `attnscope lens [model | trace file] --text "..." [--top-k K] [--json | --csv] [--out FILE]`:
 * the logit lens — each layer's residual stream read through the model's final norm and head —
 * as a table of layers × positions (the top token and its probability), as JSON (every cell's top
 * K) or as CSV (one line per candidate).
 */
import { type LensGrid, logitLensGrid, logitLensTable } from '../analysis/logit-lens.js';
import { AttnscopeError, sanitize } from '../core/errors.js';
import type { Trace } from '../core/trace.js';
import { loadModel } from '../engine/load.js';
import { openTraceFile, writeFileAtomically } from '../io/trace-file.js';
import { INPUT_OPTIONS, LANGUAGE_HELP, MODEL_HELP, MODEL_OPTIONS, parseLoadOptions, parseModelInput, parsePositiveInt } from './args.js';
import { csvField } from './flow-command.js';
import { checkModelArg, checkOut, isCheckpointFile, parseCommandArgs, reportWrote, UsageError } from './parse.js';
import { isTraceFile } from './view-command.js';

/** Top tokens per cell when --top-k is not given. */
const DEFAULT_TOP_K = 5;

export const LENS_USAGE = `attnscope lens [model | trace.json | trace.safetensors] (--text "..." | --ids 1,2,3)
                [--top-k K] [--pair "..."] [--type-ids 0,0,1] [--decoder-text "..." | --decoder-ids 0,5,6]
                [--src-lang CODE] [--tgt-lang CODE] [--truncate]
                [--json | --csv] [--out FILE] [--revision REV] [--offline] [--threads N]

  The logit lens: each layer's residual stream (the embeddings, then every layer's output) read
  through the model's final norm and prediction head, as if the model stopped there. The table
  shows the most likely token and its probability per layer (rows) and position (columns); the
  last row is the model's own prediction (the next token for causal LMs and decoders, the token
  itself for masked LMs; encoder-decoders: the decoder's positions).
  source       a model directory / Hub id run on --text (the embedded stories260k model when
               omitted), or a trace file written with 'attnscope trace --logit-lens K'
  --text       the text the model runs on;  --pair  a second sentence (sentence B)
  --ids        token ids instead of text (bypass the tokenizer); --type-ids their segments
  --decoder-text / --decoder-ids   encoder-decoder models: the decoder input (required)
  --truncate   cut inputs longer than the model's maximum positions
${LANGUAGE_HELP}
  --top-k      tokens kept per layer and position (default ${DEFAULT_TOP_K}; the table shows the first)
  --json / --csv   the output format (default: a table; from --out's extension when given):
               JSON {model, stack, topK, rows, tokens, cells[row][position][rank]}, CSV one line per
               candidate (row, layer, position, input, rank, id, token, probability)
  --out        the file to write (.json, .csv or .txt; written atomically); stdout otherwise
${MODEL_HELP}`;

export const LENS_OPTIONS = {
  ...INPUT_OPTIONS,
  'top-k': { type: 'string' },
  json: { type: 'boolean' },
  csv: { type: 'boolean' },
  out: { type: 'string' },
  ...MODEL_OPTIONS,
} as const;

/** The grid as CSV: a header and one line per candidate. */
export function lensCsv(grid: LensGrid): string {
  const lines = ['row,layer,position,input,rank,id,token,probability'];
  for (const r of logitLensTable(grid)) {
    lines.push([String(r.row), r.layer, String(r.position), csvField(r.input), String(r.rank), String(r.id), csvField(r.token), String(r.probability)].join(','));
  }
  return `${lines.join('\n')}\n`;
}

/** The grid as JSON: labels, the positions' tokens and every cell's candidates. */
export function lensJson(grid: LensGrid, model: string): string {
  return `${JSON.stringify({
    model,
    stack: grid.stack,
    topK: grid.topK,
    rows: grid.rows,
    tokens: grid.positions.map((t, i) => ({ index: i, id: t.id, text: t.text, special: t.special })),
    cells: grid.cells,
  })}\n`;
}

/** The grid as a text table: one row per layer, one column per position, the top token and its probability. */
export function lensTable(grid: LensGrid): string {
  const cell = (text: string, p: number): string => `${sanitize(text, 8)} ${p.toFixed(2).replace(/^0/, '')}`;
  const columns = grid.positions.map((t, p) => {
    const body = grid.cells.map((row) => cell(row[p]![0]!.token, row[p]![0]!.probability));
    const head = `${p}:${sanitize(t.text, 8)}`;
    return { head, body, width: Math.max([...head].length, ...body.map((b) => [...b].length)) + 2 };
  });
  const labelWidth = Math.max(...grid.rows.map((r) => r.length)) + 2;
  const pad = (s: string, width: number): string => s + ' '.repeat(Math.max(0, width - [...s].length));
  const lines = [pad('', labelWidth) + columns.map((c) => pad(c.head, c.width)).join('')];
  grid.rows.forEach((label, r) => lines.push(pad(label, labelWidth) + columns.map((c) => pad(c.body[r]!, c.width)).join('')));
  return `${lines.map((l) => l.trimEnd()).join('\n')}\n`;
}

export async function lensCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs(argv, LENS_OPTIONS);
  if (positionals.length > 1) throw new AttnscopeError(`lens: expected at most one model or trace file, got ${positionals.join(' ')}`);
  if (values.json && values.csv) throw new UsageError('lens: give --json or --csv, not both');
  let format: 'json' | 'csv' | 'table' = values.json ? 'json' : values.csv ? 'csv' : 'table';
  if (values.out !== undefined) {
    checkOut(values.out, ['.json', '.csv', '.txt'], 'lens');
    if (!values.json && !values.csv) format = values.out.toLowerCase().endsWith('.json') ? 'json' : values.out.toLowerCase().endsWith('.csv') ? 'csv' : 'table';
  }
  const topK = parsePositiveInt(values['top-k'], '--top-k');
  const source = positionals[0];
  let trace: Trace;
  if (source !== undefined && isCheckpointFile(source)) checkModelArg(source);
  if (source !== undefined && isTraceFile(source)) {
    for (const flag of ['text', 'pair', 'ids', 'type-ids', 'decoder-text', 'decoder-ids', 'truncate', 'top-k'] as const) {
      if (values[flag] !== undefined) throw new AttnscopeError(`lens: --${flag} does not apply to a trace file (${source})`);
    }
    const opened = await openTraceFile(source);
    trace = opened.trace;
    if (opened.warnings.length > 0) process.stderr.write(`attnscope: warning: ${sanitize(opened.warnings.join('; '), 600)}\n`);
    if (!trace.logitLens) throw new AttnscopeError(`${source}: the trace has no logit lens (write it with 'attnscope trace --logit-lens K')`);
  } else {
    if (source !== undefined && /\.(json|safetensors)$/i.test(source)) throw new AttnscopeError(`${source}: no such trace file`);
    const input = parseModelInput(values, 'lens', 'lens: give --text "..." (or --ids 1,2,3), or a trace file');
    const loadOptions = parseLoadOptions(values);
    checkModelArg(source);
    const model = await loadModel(source, loadOptions);
    try {
      trace = await model.trace(input.text, { ...input.options, attention: false, logitLens: topK ?? DEFAULT_TOP_K });
    } finally {
      await model.dispose();
    }
  }
  const grid = logitLensGrid(trace);
  const text = format === 'json' ? lensJson(grid, trace.model.name)
    : format === 'csv' ? lensCsv(grid)
    : `# ${trace.model.name} · logit lens · ${grid.stack} · top token and its probability per layer (rows) and position (columns)\n${lensTable(grid)}`;
  if (values.out) {
    await writeFileAtomically(values.out, async (stream) => {
      stream.write(text);
    });
    reportWrote(values.out, `logit lens, ${grid.rows.length} rows × ${grid.positions.length} positions, top ${grid.topK}`);
  } else process.stdout.write(text);
}
