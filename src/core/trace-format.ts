/**
 * The Trace's file formats (DESIGN.md): JSON (`"format": "attnscope-trace", "version": 1`,
 * nested arrays) and the binary layout's metadata (tokens and model as JSON strings). Pure
 * functions; file reading and writing live in io/trace-file.ts.
 */
import { AttnscopeError } from './errors.js';
import type { LayerStack, Matrix, ModelInfo, StackMap, StackName, Token, Trace } from './trace.js';

export const TRACE_FORMAT = 'attnscope-trace';
export const TRACE_VERSION = 1;

export const STACK_NAMES: readonly StackName[] = ['self', 'encoder', 'decoder', 'cross'];

/** A token as stored in a trace file: the full object, or just its text (outside producers). */
export type StoredToken = Partial<Token> & { text: string };

/** Token objects as written to files (the `word` index is kept: views merge sub-words with it). */
export function tokensToJson(tokens: readonly Token[]): StoredToken[] {
  return tokens.map((t) => ({
    id: t.id, text: t.text, start: t.start, end: t.end, special: t.special, segment: t.segment, word: t.word,
    ...(t.generated ? { generated: true } : {}),
  }));
}

/** Parses the tokens of a trace file: token objects or plain strings. */
export function tokensFromJson(value: unknown, where: string): Token[] {
  if (!Array.isArray(value)) throw new AttnscopeError(`${where}: tokens must be a JSON array`);
  return value.map((v: unknown, i): Token => {
    if (typeof v === 'string') return { id: -1, text: v, start: 0, end: 0, special: false, segment: 0, word: null };
    if (typeof v !== 'object' || v === null || typeof (v as StoredToken).text !== 'string') {
      throw new AttnscopeError(`${where}: token ${i} must be a string or an object with a text`);
    }
    const t = v as StoredToken;
    return {
      id: typeof t.id === 'number' ? t.id : -1,
      text: t.text,
      start: typeof t.start === 'number' ? t.start : 0,
      end: typeof t.end === 'number' ? t.end : 0,
      special: t.special === true,
      segment: typeof t.segment === 'number' ? t.segment : 0,
      word: typeof t.word === 'number' ? t.word : null,
      ...(t.generated === true ? { generated: true } : {}),
    };
  });
}

/** Model info from a trace file, filling what an outside producer left out from the tensors. */
export function modelFromJson(value: unknown, fallback: ModelInfo): ModelInfo {
  if (typeof value !== 'object' || value === null) return fallback;
  const m = value as Partial<ModelInfo>;
  return {
    name: typeof m.name === 'string' ? m.name : fallback.name,
    modelType: typeof m.modelType === 'string' ? m.modelType : fallback.modelType,
    numLayers: typeof m.numLayers === 'number' ? m.numLayers : fallback.numLayers,
    numHeads: typeof m.numHeads === 'number' ? m.numHeads : fallback.numHeads,
    numKeyValueHeads: typeof m.numKeyValueHeads === 'number' ? m.numKeyValueHeads : fallback.numKeyValueHeads,
    headDim: typeof m.headDim === 'number' ? m.headDim : fallback.headDim,
  };
}

/** What can be inferred about the model from the tensors alone. */
export function inferModelInfo(name: string, attention: StackMap, keys?: StackMap): ModelInfo {
  const stack = attention.self ?? attention.encoder ?? attention.decoder;
  if (!stack) throw new AttnscopeError(`${name}: trace holds no attention`);
  const keyStack = keys?.self ?? keys?.encoder ?? keys?.decoder;
  return {
    name,
    modelType: 'unknown',
    numLayers: stack.layers.length,
    numHeads: stack.dims[0],
    numKeyValueHeads: keyStack ? keyStack.dims[0] : stack.dims[0],
    headDim: keyStack ? keyStack.dims[2] : 0,
  };
}

/** Splits one [layers, d0, rows, cols] array into per-layer arrays (views, no copy). */
export function layerStackFrom(data: Float32Array, shape: readonly number[], where: string): LayerStack {
  if (shape.length !== 4) throw new AttnscopeError(`${where}: expected 4 dimensions [layers, heads, rows, cols], got [${shape.join(', ')}]`);
  const [layers, d0, rows, cols] = shape as [number, number, number, number];
  const per = d0 * rows * cols;
  const out: Float32Array[] = [];
  for (let l = 0; l < layers; l++) out.push(data.subarray(l * per, (l + 1) * per));
  return { dims: [d0, rows, cols], layers: out };
}

/** Checks that a trace's stacks agree with its tokens (query/key counts). */
export function validateTrace(trace: Trace, where: string): void {
  const enc = trace.tokens.length;
  const dec = trace.decoderTokens?.length;
  const expect: Partial<Record<StackName, [number, number]>> = {
    self: [enc, enc],
    encoder: [enc, enc],
    decoder: dec === undefined ? undefined : [dec, dec],
    cross: dec === undefined ? undefined : [dec, enc],
  };
  for (const [name, stack] of Object.entries(trace.attention) as [StackName, LayerStack][]) {
    const e = expect[name];
    if (!e) throw new AttnscopeError(`${where}: attention.${name} needs decoderTokens`);
    if (stack.dims[1] !== e[0] || stack.dims[2] !== e[1]) {
      throw new AttnscopeError(`${where}: attention.${name} is ${stack.dims[1]}×${stack.dims[2]} but there are ${e[0]} query and ${e[1]} key tokens`);
    }
  }
}

// --- JSON ---------------------------------------------------------------------------------------

/**
 * Short decimal text that reads back as exactly the same float32 value: 7, 8 or 9 significant
 * digits, the fewest that round-trip (9 always do), trailing zeros dropped.
 */
export function formatFloat32(x: number): string {
  if (x === 0) return '0';
  if (!Number.isFinite(x)) throw new AttnscopeError('trace holds a non-finite value, which JSON cannot represent');
  let v = Number(x.toPrecision(7));
  if (Math.fround(v) !== x) {
    v = Number(x.toPrecision(8));
    if (Math.fround(v) !== x) v = Number(x.toPrecision(9));
  }
  return String(v);
}

/** Streams a stack as nested JSON arrays [layer][d0][row][col], one chunk per row. */
function* stackJson(stack: LayerStack): Generator<string> {
  const [d0, rows, cols] = stack.dims;
  yield '[';
  for (let l = 0; l < stack.layers.length; l++) {
    const layer = stack.layers[l]!;
    if (l > 0) yield ',';
    yield '[';
    for (let h = 0; h < d0; h++) {
      if (h > 0) yield ',';
      yield '[';
      for (let r = 0; r < rows; r++) {
        const base = (h * rows + r) * cols;
        const row: string[] = new Array<string>(cols);
        for (let c = 0; c < cols; c++) row[c] = formatFloat32(layer[base + c]!);
        yield (r > 0 ? ',[' : '[') + row.join(',') + ']';
      }
      yield ']';
    }
    yield ']';
  }
  yield ']';
}

function* stackMapJson(map: StackMap): Generator<string> {
  yield '{';
  let first = true;
  for (const name of STACK_NAMES) {
    const stack = map[name];
    if (!stack) continue;
    yield `${first ? '' : ','}${JSON.stringify(name)}:`;
    first = false;
    yield* stackJson(stack);
  }
  yield '}';
}

/** A matrix field as nested [row][col] arrays. */
function* matrixJson(name: string, m: Matrix): Generator<string> {
  const [rows, cols] = m.dims;
  yield `,${JSON.stringify(name)}:[`;
  for (let r = 0; r < rows; r++) {
    const row: string[] = [];
    for (let c = 0; c < cols; c++) row.push(formatFloat32(m.data[r * cols + c]!));
    yield `${r > 0 ? ',' : ''}[${row.join(',')}]`;
  }
  yield ']';
}

/** The JSON trace as a sequence of text chunks (large traces never become one string). */
export function* traceJsonChunks(trace: Trace): Generator<string> {
  yield `{"format":${JSON.stringify(TRACE_FORMAT)},"version":${TRACE_VERSION}`;
  yield `,"model":${JSON.stringify(trace.model)}`;
  yield `,"tokens":${JSON.stringify(tokensToJson(trace.tokens))}`;
  if (trace.decoderTokens) yield `,"decoderTokens":${JSON.stringify(tokensToJson(trace.decoderTokens))}`;
  yield ',"attention":';
  yield* stackMapJson(trace.attention);
  if (trace.queries) {
    yield ',"queries":';
    yield* stackMapJson(trace.queries);
  }
  if (trace.keys) {
    yield ',"keys":';
    yield* stackMapJson(trace.keys);
  }
  if (trace.predictions) yield `,"predictions":${JSON.stringify(trace.predictions)}`;
  if (trace.generation) yield `,"generation":${JSON.stringify(trace.generation)}`;
  if (trace.lastHiddenState) yield* matrixJson('lastHiddenState', trace.lastHiddenState);
  if (trace.encoderLastHiddenState) yield* matrixJson('encoderLastHiddenState', trace.encoderLastHiddenState);
  yield '}\n';
}

function isNumberArray(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'number');
}

/** Parses nested [layer][d0][row][col] arrays into a LayerStack, checking they are rectangular. */
function stackFromJson(value: unknown, where: string): LayerStack {
  if (!Array.isArray(value) || value.length === 0) throw new AttnscopeError(`${where}: expected [layer][head][row][col] arrays`);
  const first = value[0] as unknown[][];
  const d0 = first.length;
  const rows = (first[0] ?? []).length;
  const cols = ((first[0] ?? [])[0] as unknown[] | undefined)?.length ?? 0;
  const layers = value.map((layer: unknown, l) => {
    const out = new Float32Array(d0 * rows * cols);
    if (!Array.isArray(layer) || layer.length !== d0) throw new AttnscopeError(`${where}: layer ${l} has the wrong number of heads`);
    layer.forEach((head: unknown, h) => {
      if (!Array.isArray(head) || head.length !== rows) throw new AttnscopeError(`${where}: layer ${l} head ${h} has the wrong number of rows`);
      head.forEach((row: unknown, r) => {
        if (!isNumberArray(row) || row.length !== cols) throw new AttnscopeError(`${where}: layer ${l} head ${h} row ${r} is not ${cols} numbers`);
        out.set(row, (h * rows + r) * cols);
      });
    });
    return out;
  });
  return { dims: [d0, rows, cols], layers };
}

function stackMapFromJson(value: unknown, where: string): StackMap {
  if (typeof value !== 'object' || value === null) throw new AttnscopeError(`${where}: expected an object keyed by stack`);
  const map: StackMap = {};
  for (const [name, v] of Object.entries(value)) {
    if (!STACK_NAMES.includes(name as StackName)) throw new AttnscopeError(`${where}: unknown stack '${name}' (expected ${STACK_NAMES.join(', ')})`);
    map[name as StackName] = stackFromJson(v, `${where}.${name}`);
  }
  return map;
}

/** Parses a JSON trace (already JSON.parse'd). */
export function traceFromJson(value: unknown, where: string): Trace {
  if (typeof value !== 'object' || value === null) throw new AttnscopeError(`${where}: not a JSON object`);
  const v = value as Record<string, unknown>;
  if (v.format !== TRACE_FORMAT) throw new AttnscopeError(`${where}: not an attnscope trace (format is ${JSON.stringify(v.format)})`);
  if (v.version !== TRACE_VERSION) throw new AttnscopeError(`${where}: unsupported trace version ${JSON.stringify(v.version)}`);
  const attention = stackMapFromJson(v.attention, `${where}: attention`);
  const queries = v.queries === undefined ? undefined : stackMapFromJson(v.queries, `${where}: queries`);
  const keys = v.keys === undefined ? undefined : stackMapFromJson(v.keys, `${where}: keys`);
  const trace: Trace = {
    model: modelFromJson(v.model, inferModelInfo(where, attention, keys)),
    tokens: tokensFromJson(v.tokens, `${where}: tokens`),
    attention,
  };
  if (v.decoderTokens !== undefined) trace.decoderTokens = tokensFromJson(v.decoderTokens, `${where}: decoderTokens`);
  if (queries) trace.queries = queries;
  if (keys) trace.keys = keys;
  if (Array.isArray(v.predictions)) trace.predictions = v.predictions as Trace['predictions'];
  if (typeof v.generation === 'object' && v.generation !== null) trace.generation = v.generation as Trace['generation'];
  validateTrace(trace, where);
  return trace;
}
