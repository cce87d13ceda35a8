/**
 * `attnscope flow [model | trace file] --text "..." [--method rollout|flow|attention] ...`: writes
 * the token × token matrix of a cross-layer measure (which input tokens each token draws on) as a
 * table, JSON or CSV, with the token labels.
 *
 * Methods live in FLOW_METHODS (name → what the model must record and how the matrix is made), so
 * further measures (norm-based attention, ALTI) are one entry each.
 */
import { AttnscopeError, sanitize } from '../core/errors.js';
import type { StackName, Trace } from '../core/trace.js';
import { altiRollout, normAttentionLayer } from '../analysis/contributions.js';
import { attentionFlow } from '../analysis/flow.js';
import { runtimeKernel } from '../analysis/kernels.js';
import { HEAD_FUSIONS, type GraphOptions, type HeadFusion, type RolloutResult, attentionRollout, attentionRolloutWith, fusedAttention } from '../analysis/rollout.js';
import { nodeRuntime } from '../runtime/onnxruntime-node.js';
import type { TraceOptions } from '../engine/model.js';
import { loadModel } from '../engine/load.js';
import { withAttentionLayers } from '../core/attention-on-demand.js';
import { openTraceFile, writeFileAtomically } from '../io/trace-file.js';
import { INPUT_OPTIONS, LANGUAGE_HELP, MODEL_HELP, MODEL_OPTIONS, parseLoadOptions, parseModelInput, parseNumber, parsePositiveInt } from './args.js';
import { checkModelArg, checkOut, isCheckpointFile, parseCommandArgs, reportWrote, UsageError } from './parse.js';
import { isTraceFile } from './view-command.js';

/** What a method gets: the trace and the parsed options. */
export interface FlowMethodInput {
  trace: Trace;
  graph: GraphOptions & { stack?: StackName };
  maxNodes?: number;
}

/** What a method gives: an n × n matrix (rows: tokens after the last layer, columns: input tokens) and what it is. */
export interface FlowMethodOutput {
  stack: StackName;
  size: number;
  matrix: Float32Array;
  /** The model layers the matrix spans, inclusive. */
  layers: [number, number];
  /** One line on what the values are. */
  description: string;
}

export interface FlowMethod {
  /** --help line. */
  help: string;
  /** What the trace must record (e.g. { qk: true }) when the command runs a model. */
  traceOptions?: Partial<TraceOptions>;
  /** Which of the graph options apply (others are refused). */
  uses: readonly ('fusion' | 'discard' | 'residual' | 'start-layer' | 'max-nodes' | 'heads')[];
  compute(input: FlowMethodInput): FlowMethodOutput | Promise<FlowMethodOutput>;
}

/** From this many tokens rollout runs on the native kernel (its session costs ~0.1 s; JavaScript takes ~0.2 s at 192 tokens, ~3 s at 512). */
const NATIVE_ROLLOUT_FROM = 192;

/** Rollout, on the native kernel (onnxruntime, float64 products; BENCHMARKS.md) for long inputs. */
async function rolloutOf(trace: Trace, graph: GraphOptions): Promise<RolloutResult> {
  const s = trace.attention[graph.stack ?? (trace.attention.self ? 'self' : 'encoder')];
  if (!s || s.dims[1] < NATIVE_ROLLOUT_FROM) return attentionRollout(trace, graph);
  const kernel = runtimeKernel(nodeRuntime);
  try {
    return await attentionRolloutWith(trace, graph, kernel);
  } finally {
    await kernel.release();
  }
}

/** The methods of `attnscope flow` (add an entry for a new measure). */
export const FLOW_METHODS: Record<string, FlowMethod> = {
  rollout: {
    help: 'attention rollout (Abnar & Zuidema 2020): residual-augmented, head-fused attention multiplied from --start-layer to --end-layer',
    uses: ['fusion', 'discard', 'residual', 'start-layer', 'heads'],
    async compute({ trace, graph }) {
      const r = await rolloutOf(trace, graph);
      return { stack: r.stack, size: r.size, matrix: r.layers[r.layers.length - 1]!, layers: [r.startLayer, r.endLayer], description: 'rollout: share of each input token (column) in each token after the last layer (row); rows sum to 1' };
    },
  },
  flow: {
    help: 'attention flow (Abnar & Zuidema 2020): exact max-flow from each output token to each input token on the rollout graph, rows normalised to sum 1',
    uses: ['fusion', 'discard', 'residual', 'start-layer', 'max-nodes', 'heads'],
    compute({ trace, graph, maxNodes }) {
      const f = attentionFlow(trace, { ...graph, maxNodes });
      return { stack: f.stack, size: f.size, matrix: f.layers[f.layers.length - 1]!, layers: [f.startLayer, f.endLayer], description: 'flow: max-flow from each output token (row) to each input token (column), divided by the row sum' };
    },
  },
  attention: {
    help: 'the head-fused attention of one layer (--end-layer, default the last; no residual)',
    uses: ['fusion', 'heads'],
    compute({ trace, graph }) {
      const s = trace.attention[graph.stack ?? (trace.attention.self ? 'self' : 'encoder')];
      const last = graph.endLayer ?? (s ? s.layers.length - 1 : 0);
      const a = fusedAttention(trace, { stack: graph.stack, fusion: graph.fusion, heads: graph.heads, startLayer: last, endLayer: last });
      return { stack: a.stack, size: a.size, matrix: a.layers[0]!, layers: [last, last], description: `attention: ${graph.fusion ?? 'mean'} over heads of layer ${last} (rows: queries, columns: keys)` };
    },
  },
  norm: {
    help: 'norm-based attention (Kobayashi et al. 2020) of one layer (--end-layer, default the last): ‖Σ_h α_ij·v_j·W_O[h]‖ over all heads or --heads (runs a model: trace files lack the taps)',
    traceOptions: { contributions: true },
    uses: ['heads'],
    compute({ trace, graph }) {
      const stack = graph.stack ?? (trace.attention.self ? 'self' : 'encoder');
      const layers = trace.attention[stack]?.layers.length ?? 1;
      const last = graph.endLayer ?? layers - 1;
      const m = normAttentionLayer(trace, last, stack, graph.heads);
      return { stack, size: m.dims[0], matrix: m.data, layers: [last, last], description: `norm: ‖Σ_h α_ij v_j W_O[h]‖ of layer ${last}${graph.heads ? ` (heads ${graph.heads.join(', ')})` : ''} (rows: queries, columns: keys; not normalised)` };
    },
  },
  alti: {
    help: 'ALTI (Ferrando et al. 2022): token-to-token contributions of each attention block (residual and layer norm included), composed from --start-layer to --end-layer (runs a model)',
    traceOptions: { contributions: true },
    uses: ['start-layer'],
    compute({ trace, graph }) {
      const stack = graph.stack ?? (trace.attention.self ? 'self' : 'encoder');
      const layers = trace.attention[stack]?.layers.length ?? 1;
      const start = graph.startLayer ?? 0;
      const end = graph.endLayer ?? layers - 1;
      const r = altiRollout(trace, { stack, startLayer: start, endLayer: end });
      const m = r[r.length - 1]!;
      return { stack, size: m.dims[0], matrix: m.data, layers: [start, end], description: 'alti: contribution of each input token (column) to each token after the last layer (row); rows sum to 1' };
    },
  },
};

export const FLOW_USAGE = `attnscope flow [model | trace.json | trace.safetensors] (--text "..." | --ids 1,2,3)
                [--method ${Object.keys(FLOW_METHODS).join('|')}] [--fusion mean|max|min] [--discard R] [--residual W]
                [--start-layer L] [--end-layer L] [--heads 0,1] [--stack encoder|decoder] [--max-nodes N]
                [--pair "..."] [--type-ids 0,0,1] [--decoder-text "..." | --decoder-ids 0,5,6]
                [--src-lang CODE] [--tgt-lang CODE] [--truncate]
                [--json | --csv] [--out FILE] [--revision REV] [--offline] [--threads N]

  Writes the token × token matrix of a measure across layers: row i is a token after the last
  layer, column j an input token, with the token labels.
  source       a trace file, or a model directory / Hub id run on --text (the embedded stories260k
               model when omitted)
  --text       the text the model runs on;  --pair  a second sentence (sentence B)
  --ids        token ids instead of text (bypass the tokenizer); --type-ids their segments
  --decoder-text / --decoder-ids   encoder-decoder models: the decoder input
  --truncate   cut inputs longer than the model's maximum positions
${LANGUAGE_HELP}
  --method     ${Object.entries(FLOW_METHODS).map(([k, m]) => `${k}: ${m.help}`).join('\n               ')}
               (default rollout)
  --fusion     how heads are fused: mean (default), max or min;  --heads  fuse only these heads
  --discard    share in [0, 1) of each layer's fused weights set to 0 (the smallest; never the
               diagonal or masked entries) before the residual is added (default 0)
  --residual   weight w of the residual identity: (1 − w)·A + w·I, rows renormalised (default 0.5)
  --start-layer / --end-layer   the layers multiplied (default all)
  --stack      encoder-decoder traces: encoder or decoder self-attention (default encoder)
  --max-nodes  flow: largest graph, (layers + 1) × tokens, computed (default 832 = 13 × 64)
  --json / --csv   the output format (default: a table; from --out's extension when given)
  --out        the file to write (.json, .csv or .txt; written atomically); stdout otherwise
${MODEL_HELP}`;

export const FLOW_OPTIONS = {
  ...INPUT_OPTIONS,
  method: { type: 'string' },
  fusion: { type: 'string' },
  discard: { type: 'string' },
  residual: { type: 'string' },
  'start-layer': { type: 'string' },
  'end-layer': { type: 'string' },
  heads: { type: 'string' },
  stack: { type: 'string' },
  'max-nodes': { type: 'string' },
  json: { type: 'boolean' },
  csv: { type: 'boolean' },
  out: { type: 'string' },
  ...MODEL_OPTIONS,
} as const;

function parseLayer(value: string | undefined, flag: string): number | undefined {
  if (value === undefined) return undefined;
  if (!/^\d+$/.test(value.trim())) throw new UsageError(`${flag}: expected a non-negative integer, got '${value}'`);
  return Number(value);
}

/** A CSV field: quoted when it holds a comma, quote or line break. */
export function csvField(s: string): string {
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** The matrix as CSV: a header `token_index,token,<j>:<token>…` and one row per token. */
export function flowCsv(labels: readonly string[], matrix: Float32Array): string {
  const n = labels.length;
  const lines = [['token_index', 'token', ...labels.map((t, j) => `${j}:${t}`)].map(csvField).join(',')];
  for (let i = 0; i < n; i++) {
    const row = [String(i), csvField(labels[i]!)];
    for (let j = 0; j < n; j++) row.push(String(matrix[i * n + j]));
    lines.push(row.join(','));
  }
  return `${lines.join('\n')}\n`;
}

function table(labels: readonly string[], matrix: Float32Array): string {
  const n = labels.length;
  const short = labels.map((l) => sanitize(l, 10));
  const w = Math.max(6, ...short.map((l) => [...l].length + 1));
  const pad = (s: string, width: number) => s + ' '.repeat(Math.max(0, width - [...s].length));
  const lines = [pad('', w + 4) + short.map((l) => pad(l, 7)).join('')];
  for (let i = 0; i < n; i++) {
    let line = pad(`${i}`, 4) + pad(short[i]!, w);
    for (let j = 0; j < n; j++) line += pad(matrix[i * n + j]!.toFixed(3), 7);
    lines.push(line);
  }
  return `${lines.join('\n')}\n`;
}

export async function flowCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs(argv, FLOW_OPTIONS);
  if (positionals.length > 1) throw new AttnscopeError(`flow: expected at most one model or trace file, got ${positionals.join(' ')}`);
  const methodName = values.method ?? 'rollout';
  const method = FLOW_METHODS[methodName];
  if (!method) throw new UsageError(`--method: expected ${Object.keys(FLOW_METHODS).join(', ')}, got '${methodName}'`);
  if (values.json && values.csv) throw new UsageError('flow: give --json or --csv, not both');
  let format: 'json' | 'csv' | 'table' = values.json ? 'json' : values.csv ? 'csv' : 'table';
  if (values.out !== undefined) {
    checkOut(values.out, ['.json', '.csv', '.txt'], 'flow');
    if (!values.json && !values.csv) format = values.out.toLowerCase().endsWith('.json') ? 'json' : values.out.toLowerCase().endsWith('.csv') ? 'csv' : 'table';
  }
  const fusion = values.fusion ?? 'mean';
  if (!HEAD_FUSIONS.includes(fusion as HeadFusion)) throw new UsageError(`--fusion: expected ${HEAD_FUSIONS.join(', ')}, got '${fusion}'`);
  const discard = parseNumber(values.discard, '--discard');
  if (discard !== undefined && !(discard >= 0 && discard < 1)) throw new UsageError(`--discard: expected a share in [0, 1), got '${values.discard}'`);
  const residual = parseNumber(values.residual, '--residual');
  if (residual !== undefined && !(residual >= 0 && residual <= 1)) throw new UsageError(`--residual: expected a weight in [0, 1], got '${values.residual}'`);
  const stack = values.stack;
  if (stack !== undefined && !['self', 'encoder', 'decoder'].includes(stack)) throw new UsageError(`--stack: expected self, encoder or decoder, got '${stack}'`);
  const heads = values.heads === undefined ? undefined : values.heads.split(/[\s,]+/).filter(Boolean).map((p) => {
    if (!/^\d+$/.test(p)) throw new UsageError(`--heads: '${p}' is not a non-negative integer`);
    return Number(p);
  });
  const given: Record<string, boolean> = {
    fusion: values.fusion !== undefined,
    discard: discard !== undefined,
    residual: residual !== undefined,
    'start-layer': values['start-layer'] !== undefined,
    'max-nodes': values['max-nodes'] !== undefined,
    heads: heads !== undefined,
  };
  for (const [flag, on] of Object.entries(given)) {
    if (on && !(method.uses as readonly string[]).includes(flag)) throw new UsageError(`--${flag} does not apply to --method ${methodName}`);
  }
  const graph: GraphOptions = {
    stack: stack as StackName | undefined,
    fusion: fusion as HeadFusion,
    heads,
    discard,
    residual,
    startLayer: parseLayer(values['start-layer'], '--start-layer'),
    endLayer: parseLayer(values['end-layer'], '--end-layer'),
  };
  const maxNodes = parsePositiveInt(values['max-nodes'], '--max-nodes');

  const source = positionals[0];
  let trace: Trace;
  if (source !== undefined && isCheckpointFile(source)) checkModelArg(source);
  if (source !== undefined && isTraceFile(source)) {
    for (const flag of ['text', 'pair', 'ids', 'type-ids', 'decoder-text', 'decoder-ids', 'truncate'] as const) {
      if (values[flag] !== undefined) throw new AttnscopeError(`flow: --${flag} does not apply to a trace file (${source})`);
    }
    const opened = await openTraceFile(source);
    // A trace kept as queries and keys: its layers are computed as they are read (within a budget).
    trace = withAttentionLayers(opened.trace);
    if (opened.warnings.length > 0) process.stderr.write(`attnscope: warning: ${sanitize(opened.warnings.join('; '), 600)}\n`);
  } else {
    if (source !== undefined && /\.(json|safetensors)$/i.test(source)) throw new AttnscopeError(`${source}: no such trace file`);
    const input = parseModelInput(values, 'flow', 'flow: give --text "..." (or --ids 1,2,3), or a trace file');
    const loadOptions = parseLoadOptions(values);
    checkModelArg(source);
    const model = await loadModel(source, loadOptions);
    try {
      trace = await model.trace(input.text, { ...input.options, ...method.traceOptions });
    } finally {
      await model.dispose();
    }
  }

  const result = await method.compute({ trace, graph, maxNodes });
  const tokens = result.stack === 'decoder' ? trace.decoderTokens! : trace.tokens;
  const labels = tokens.map((t) => t.text);
  let text: string;
  if (format === 'json') {
    const n = result.size;
    const rows = Array.from({ length: n }, (_, i) => Array.from(result.matrix.subarray(i * n, (i + 1) * n)));
    text = `${JSON.stringify({
      model: trace.model.name,
      method: methodName,
      description: result.description,
      stack: result.stack,
      layers: result.layers,
      fusion: method.uses.includes('fusion') ? fusion : undefined,
      discard: method.uses.includes('discard') ? (discard ?? 0) : undefined,
      residual: method.uses.includes('residual') ? (residual ?? 0.5) : undefined,
      tokens: tokens.map((t, i) => ({ index: i, id: t.id, text: t.text, special: t.special })),
      matrix: rows,
    })}\n`;
  } else if (format === 'csv') text = flowCsv(labels, result.matrix);
  else text = `# ${trace.model.name} · ${result.stack} · layers ${result.layers[0]}–${result.layers[1]} · ${result.description}\n${table(labels, result.matrix)}`;
  if (values.out) {
    await writeFileAtomically(values.out, async (stream) => {
      stream.write(text);
    });
    reportWrote(values.out, `${methodName}, ${result.size} × ${result.size} tokens, layers ${result.layers[0]}–${result.layers[1]}`);
  } else process.stdout.write(text);
}
