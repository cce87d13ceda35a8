/**
 * The Trace's file formats (DESIGN.md): JSON (`"format": "attnscope-trace", "version": 1`,
 * nested arrays) and the binary layout's metadata (tokens and model as JSON strings). Pure
 * functions; file reading and writing live in io/trace-file.ts.
 */
import { attributionsFromJson, writeAttributionsJson } from './attribution-format.js';
import { layerFieldsFromJson, writeLayerFieldsJson } from './layer-format.js';
import { AttnscopeError, quote } from './errors.js';
import { isNumberArray, matrixFromJson } from './json-arrays.js';
import { relativeWidth } from './position-bias.js';
import type { LayerStack, Matrix, ModelInfo, Routing, RoutingLayer, ScoreMap, StackMap, StackName, Token, Trace } from './trace.js';

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

/**
 * What can be inferred about the model from the tensors alone: from the attention, or from the
 * queries of a trace that keeps its attention as queries and keys (computed on demand).
 */
export function inferModelInfo(name: string, attention: StackMap, keys?: StackMap, queries?: StackMap): ModelInfo {
  const stack = attention.self ?? attention.encoder ?? attention.decoder ?? queries?.self ?? queries?.encoder ?? queries?.decoder;
  if (!stack) throw new AttnscopeError(`${name}: trace holds no attention (neither probabilities nor queries and keys)`);
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

/** The shape of a stack's attention: layers × [heads, queries, keys]. */
export interface AttentionShape {
  readonly dims: readonly [number, number, number];
  readonly layers: { readonly length: number };
}

/**
 * The attention shape of every stack: its probabilities' where the trace has them, else what its
 * queries [heads, queries, d] and keys [kvHeads, keys, d] give (a trace whose attention is computed
 * on demand).
 */
export function attentionShapes(trace: Pick<Trace, 'attention' | 'queries' | 'keys'>): Partial<Record<StackName, AttentionShape>> {
  const out: Partial<Record<StackName, AttentionShape>> = {};
  for (const name of STACK_NAMES) {
    const att = trace.attention[name];
    const q = trace.queries?.[name];
    const k = trace.keys?.[name];
    if (att) out[name] = att;
    else if (q && k) out[name] = { dims: [q.dims[0], q.dims[1], k.dims[1]], layers: q.layers };
  }
  return out;
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
  // Stacks kept as queries and keys (attention computed on demand): their positions and sizes.
  for (const name of STACK_NAMES) {
    const q = trace.queries?.[name];
    const k = trace.keys?.[name];
    if (trace.attention[name] || (!q && !k)) continue;
    if (!q || !k) throw new AttnscopeError(`${where}: ${q ? 'keys' : 'queries'}.${name} missing (a stack without attention needs both queries and keys)`);
    const e = expect[name];
    if (!e) throw new AttnscopeError(`${where}: queries.${name} needs decoderTokens`);
    if (q.dims[1] !== e[0] || k.dims[1] !== e[1]) {
      throw new AttnscopeError(`${where}: queries.${name} has ${q.dims[1]} and keys.${name} ${k.dims[1]} positions but there are ${e[0]} query and ${e[1]} key tokens`);
    }
    if (q.layers.length !== k.layers.length || q.dims[2] !== k.dims[2] || k.dims[0] < 1 || q.dims[0] % k.dims[0] !== 0) {
      throw new AttnscopeError(`${where}: queries.${name} [${q.layers.length} × ${q.dims.join(', ')}] and keys.${name} [${k.layers.length} × ${k.dims.join(', ')}] do not fit (same layers and head size; heads a multiple of key heads)`);
    }
  }
}

// --- JSON ---------------------------------------------------------------------------------------

/**
 * What the JSON trace is written through: io/json-writer.ts's JsonChunkWriter, which turns text
 * and float32 values into byte chunks (each number the short text that reads back as the same
 * float32, and a NonFiniteError for NaN or ±Infinity).
 */
export interface JsonOut {
  /** Appends JSON text as it is. */
  text(s: string): void;
  /** Appends `count` float32 values from `start`, comma-separated. */
  float32s(data: Float32Array, start: number, count: number): void;
  /** Full chunks waiting to be taken. */
  readonly pending: number;
}

/** Names the element of a [d0][rows][cols] layer that holds a value JSON cannot represent. */
function nonFinite(err: unknown, where: string, layer: number, dims: readonly number[]): never {
  const e = err as { value?: unknown; index?: unknown };
  if (typeof e?.value !== 'number' || typeof e.index !== 'number') throw err;
  const [, rows, cols] = dims as [number, number, number];
  const h = Math.floor(e.index / (rows * cols));
  const r = Math.floor(e.index / cols) % rows;
  throw new AttnscopeError(
    `${where}: layer ${layer}, [${h}, ${r}, ${e.index % cols}] is ${e.value}, which JSON cannot hold (write a .safetensors trace to keep it)`,
  );
}

/** Writes a stack as nested JSON arrays [layer][d0][row][col], pausing when chunks are ready. */
function* stackJson(out: JsonOut, stack: LayerStack, where: string, oneRow = false): Generator<void> {
  const [d0, rows, cols] = stack.dims;
  out.text('[');
  for (let l = 0; l < stack.layers.length; l++) {
    const layer = stack.layers[l]!;
    out.text(l > 0 ? ',[' : '[');
    for (let h = 0; h < d0; h++) {
      // oneRow: [layer][head][col] (a stack of one row per head, without the row level).
      if (!oneRow) out.text(h > 0 ? ',[' : '[');
      else if (h > 0) out.text(',');
      for (let r = 0; r < rows; r++) {
        out.text(r > 0 ? ',[' : '[');
        try {
          out.float32s(layer, (h * rows + r) * cols, cols);
        } catch (err) {
          nonFinite(err, where, l, stack.dims);
        }
        out.text(']');
        if (out.pending > 0) yield;
      }
      if (oneRow) continue;
      out.text(']');
    }
    out.text(']');
  }
  out.text(']');
}

function* stackMapJson(out: JsonOut, map: StackMap, where: string): Generator<void> {
  out.text('{');
  let first = true;
  for (const name of STACK_NAMES) {
    const stack = map[name];
    if (!stack) continue;
    out.text(`${first ? '' : ','}${JSON.stringify(name)}:`);
    first = false;
    yield* stackJson(out, stack, `${where}.${name}`);
  }
  out.text('}');
}

/** Score terms per stack: the small fields as JSON, the bias as nested [layer][head][query][key] arrays. */
function* scoreMapJson(out: JsonOut, map: ScoreMap, where: string): Generator<void> {
  out.text('{');
  let first = true;
  for (const name of STACK_NAMES) {
    const terms = map[name];
    if (!terms) continue;
    const { bias, positionBias, ...rest } = terms;
    const small = JSON.stringify(rest);
    out.text(`${first ? '' : ','}${JSON.stringify(name)}:${small.slice(0, -1)}`);
    first = false;
    if (bias) {
      out.text(`${small === '{}' ? '' : ','}"bias":`);
      yield* stackJson(out, storedBias(bias), `${where}.${name}.bias`);
    }
    if (positionBias) {
      // {kind, values: [layer][head][offset]} (offset j − i + queries − 1); one layer when all share it.
      const stored = storedBias({ dims: [positionBias.dims[0], 1, positionBias.layers[0]!.length / positionBias.dims[0]], layers: positionBias.layers });
      out.text(`${small === '{}' && !bias ? '' : ','}"positionBias":{"kind":${JSON.stringify(positionBias.kind)},"values":`);
      yield* stackJson(out, stored, `${where}.${name}.positionBias`, true);
      out.text('}');
    }
    out.text('}');
  }
  out.text('}');
}

/** A matrix field as nested [row][col] arrays. */
function* matrixJson(out: JsonOut, name: string, m: Matrix): Generator<void> {
  const [rows, cols] = m.dims;
  out.text(`,${JSON.stringify(name)}:[`);
  for (let r = 0; r < rows; r++) {
    out.text(r > 0 ? ',[' : '[');
    try {
      out.float32s(m.data, r * cols, cols);
    } catch (err) {
      nonFinite(err, name, 0, [1, rows, cols]);
    }
    out.text(']');
    if (out.pending > 0) yield;
  }
  out.text(']');
}

/**
 * Writes the JSON trace to `out`, every field of the Trace, pausing (yielding) whenever full
 * chunks are ready so the caller can stream them out: a large trace never becomes one string.
 * Throws an AttnscopeError naming the field and element of a NaN or infinite value.
 */
export function* writeTraceJson(trace: Trace, out: JsonOut): Generator<void> {
  out.text(`{"format":${JSON.stringify(TRACE_FORMAT)},"version":${TRACE_VERSION}`);
  out.text(`,"model":${JSON.stringify(trace.model)}`);
  out.text(`,"tokens":${JSON.stringify(tokensToJson(trace.tokens))}`);
  if (trace.decoderTokens) out.text(`,"decoderTokens":${JSON.stringify(tokensToJson(trace.decoderTokens))}`);
  out.text(',"attention":');
  yield* stackMapJson(out, trace.attention, 'attention');
  if (trace.queries) {
    out.text(',"queries":');
    yield* stackMapJson(out, trace.queries, 'queries');
  }
  if (trace.keys) {
    out.text(',"keys":');
    yield* stackMapJson(out, trace.keys, 'keys');
  }
  if (trace.scores) {
    out.text(',"scores":');
    yield* scoreMapJson(out, trace.scores, 'scores');
  }
  if (trace.predictions) out.text(`,"predictions":${JSON.stringify(trace.predictions)}`);
  if (trace.generation) out.text(`,"generation":${JSON.stringify(trace.generation)}`);
  if (trace.lastHiddenState) yield* matrixJson(out, 'lastHiddenState', trace.lastHiddenState);
  if (trace.encoderLastHiddenState) yield* matrixJson(out, 'encoderLastHiddenState', trace.encoderLastHiddenState);
  if (trace.logits) yield* matrixJson(out, 'logits', trace.logits);
  if (trace.routing) yield* routingJson(out, trace.routing);
  if (trace.attributions) yield* writeAttributionsJson(out, trace.attributions);
  yield* writeLayerFieldsJson(out, trace);
  out.text('}\n');
}

/** Parses nested [layer][d0][row][col] arrays into a LayerStack, checking they are rectangular. */
function stackFromJson(value: unknown, where: string): LayerStack {
  if (!Array.isArray(value) || value.length === 0) throw new AttnscopeError(`${where}: expected [layer][head][row][col] arrays`);
  const first: unknown = value[0];
  const head: unknown = Array.isArray(first) ? first[0] : undefined;
  const row: unknown = Array.isArray(head) ? head[0] : undefined;
  const d0 = Array.isArray(first) ? first.length : 0;
  const rows = Array.isArray(head) ? head.length : 0;
  const cols = Array.isArray(row) ? row.length : 0;
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

/** Parses nested [row][col] arrays into a Matrix, checking they are rectangular. */
function stackMapFromJson(value: unknown, where: string): StackMap {
  if (typeof value !== 'object' || value === null) throw new AttnscopeError(`${where}: expected an object keyed by stack`);
  const map: StackMap = {};
  for (const [name, v] of Object.entries(value)) {
    if (!STACK_NAMES.includes(name as StackName)) throw new AttnscopeError(`${where}: unknown stack ${quote(name)} (expected ${STACK_NAMES.join(', ')})`);
    map[name as StackName] = stackFromJson(v, `${where}.${name}`);
  }
  return map;
}

/** Parses a JSON trace (already JSON.parse'd). */
export function traceFromJson(value: unknown, where: string): Trace {
  if (typeof value !== 'object' || value === null) throw new AttnscopeError(`${where}: not a JSON object`);
  const v = value as Record<string, unknown>;
  if (v.format !== TRACE_FORMAT) throw new AttnscopeError(`${where}: not an attnscope trace (format is ${quote(v.format ?? null)})`);
  if (v.version !== TRACE_VERSION) throw new AttnscopeError(`${where}: unsupported trace version ${quote(v.version ?? null)}`);
  const attention = stackMapFromJson(v.attention, `${where}: attention`);
  const queries = v.queries === undefined ? undefined : stackMapFromJson(v.queries, `${where}: queries`);
  const keys = v.keys === undefined ? undefined : stackMapFromJson(v.keys, `${where}: keys`);
  const trace: Trace = {
    model: modelFromJson(v.model, inferModelInfo(where, attention, keys, queries)),
    tokens: tokensFromJson(v.tokens, `${where}: tokens`),
    attention,
  };
  if (v.decoderTokens !== undefined) trace.decoderTokens = tokensFromJson(v.decoderTokens, `${where}: decoderTokens`);
  if (queries) trace.queries = queries;
  if (keys) trace.keys = keys;
  if (v.scores !== undefined) trace.scores = scoresFromJson(v.scores, `${where}: scores`, attentionShapes(trace));
  if (Array.isArray(v.predictions)) trace.predictions = v.predictions as Trace['predictions'];
  if (typeof v.generation === 'object' && v.generation !== null) trace.generation = v.generation as Trace['generation'];
  for (const field of ['lastHiddenState', 'encoderLastHiddenState', 'logits'] as const) {
    if (v[field] !== undefined) trace[field] = matrixFromJson(v[field], `${where}: ${field}`);
  }
  if (v.routing !== undefined) trace.routing = routingFromJson(v.routing, `${where}: routing`, trace.tokens.length, trace.model.numLayers);
  validateTrace(trace, where);
  if (v.attributions !== undefined) trace.attributions = attributionsFromJson(v.attributions, trace, where);
  layerFieldsFromJson(v, trace, where);
  return trace;
}

// --- score terms (Trace.scores) -----------------------------------------------------------------

/**
 * Trace.scores without the biases, as the JSON text of the `.safetensors` metadata field
 * `scores`: {<stack>: {scale, causal, window, biasKind?}}. The biases are the tensors
 * `scoreBias.<stack>` [layers, heads, queries, keys] (see scoreBiasStacks).
 */
export function scoresMetaJson(scores: ScoreMap): string {
  const out: Record<string, unknown> = {};
  for (const name of STACK_NAMES) {
    const terms = scores[name];
    if (!terms) continue;
    const { bias: _bias, positionBias, ...rest } = terms;
    out[name] = positionBias ? { ...rest, positionBias: { kind: positionBias.kind } } : rest;
  }
  return JSON.stringify(out);
}

/**
 * The relative position bias of each stack that has one, as `.safetensors` traces store it:
 * `scorePositionBias.<stack>` [layers, heads, 1, queries + keys − 1] (one layer when all share it).
 */
export function scorePositionBiasStacks(scores: ScoreMap | undefined): StackMap {
  const out: StackMap = {};
  for (const name of STACK_NAMES) {
    const pb = scores?.[name]?.positionBias;
    if (pb) out[name] = storedBias({ dims: [pb.dims[0], 1, relativeWidth(pb.dims[1], pb.dims[2])], layers: pb.layers });
  }
  return out;
}

/** The bias of each stack that has one (what `.safetensors` traces store as `scoreBias.<stack>`; a shared one once). */
export function scoreBiasStacks(scores: ScoreMap | undefined): StackMap {
  const out: StackMap = {};
  for (const name of STACK_NAMES) {
    const bias = scores?.[name]?.bias;
    if (bias) out[name] = storedBias(bias);
  }
  return out;
}

/**
 * A bias as files store it: a bias whose layers all share one array (T5's, MPNet's relative
 * position bias) is written as that one layer ([1, heads, queries, keys]); readers share it again
 * over every layer.
 */
export function storedBias(bias: LayerStack): LayerStack {
  const first = bias.layers[0];
  return first && bias.layers.length > 1 && bias.layers.every((l) => l === first) ? { dims: bias.dims, layers: [first] } : bias;
}

/** Layers whose values equal layer 0's share its array again (a shared bias written once per layer). */
function shareEqualLayers(stack: LayerStack): LayerStack {
  const first = stack.layers[0];
  if (!first) return stack;
  const same = (a: Float32Array) => a.length === first.length && a.every((x, i) => Object.is(x, first[i]));
  if (!stack.layers.every((l, i) => i === 0 || same(l))) return stack;
  return { dims: stack.dims, layers: stack.layers.map(() => first) };
}

/**
 * Parses Trace.scores of a trace file: `value` is {<stack>: {scale, causal, window, biasKind?, bias?}}
 * (JSON traces carry the bias inline as [layer][head][query][key] arrays; `.safetensors` traces
 * pass it as `biases`; a bias of one layer is shared by every layer). Every field is checked against
 * the stack's attention shape (`attention`: the probabilities, or attentionShapes of the trace).
 */
export function scoresFromJson(value: unknown, where: string, attention: Partial<Record<StackName, AttentionShape>>, biases: StackMap = {}, positionBiases: StackMap = {}): ScoreMap {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new AttnscopeError(`${where}: expected an object keyed by stack`);
  const map: ScoreMap = {};
  for (const [name, v] of Object.entries(value)) {
    const at = `${where}.${name}`;
    if (!STACK_NAMES.includes(name as StackName)) throw new AttnscopeError(`${where}: unknown stack ${quote(name)} (expected ${STACK_NAMES.join(', ')})`);
    const att = attention[name as StackName];
    if (!att) throw new AttnscopeError(`${at}: the trace has no '${name}' attention (neither probabilities nor queries and keys)`);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new AttnscopeError(`${at}: expected an object with scale, causal and window`);
    const t = v as Record<string, unknown>;
    const layers = att.layers.length;
    if (!isNumberArray(t.scale) || t.scale.length !== layers || !t.scale.every(Number.isFinite)) {
      throw new AttnscopeError(`${at}.scale: expected ${layers} finite numbers (one per layer)`);
    }
    if (typeof t.causal !== 'boolean') throw new AttnscopeError(`${at}.causal: expected true or false`);
    const window = t.window;
    if (!Array.isArray(window) || window.length !== layers || !window.every((w) => w === null || (Number.isInteger(w) && (w as number) >= 1))) {
      throw new AttnscopeError(`${at}.window: expected ${layers} entries (one per layer), each null or an integer ≥ 1`);
    }
    const terms: NonNullable<ScoreMap[StackName]> = { scale: [...t.scale], causal: t.causal, window: window as (number | null)[] };
    const inline = t.bias === undefined ? undefined : stackFromJson(t.bias, `${at}.bias`);
    const bias = inline ?? biases[name as StackName];
    if (bias) {
      const d = bias.dims;
      // A query axis of 1 is broadcast over the queries (ALiBi: a row over the keys).
      if ((bias.layers.length !== layers && bias.layers.length !== 1) || d[0] !== att.dims[0] || (d[1] !== att.dims[1] && d[1] !== 1) || d[2] !== att.dims[2]) {
        throw new AttnscopeError(`${at}.bias: [${bias.layers.length}, ${d.join(', ')}] does not fit the attention [${layers}, ${att.dims.join(', ')}] (one layer, or one per layer); query rows: ${att.dims[1]}, or 1 broadcast over the queries`);
      }
      terms.bias = bias.layers.length === layers ? shareEqualLayers(bias) : { dims: bias.dims, layers: new Array<Float32Array>(layers).fill(bias.layers[0]!) };
    }
    // The relative bias: JSON inline {kind, values: [layer][head][offset]}, .safetensors [layers, heads, 1, offsets].
    let relative = positionBiases[name as StackName];
    if (t.positionBias !== undefined) {
      const pb = t.positionBias as Record<string, unknown> | null;
      if (typeof pb !== 'object' || pb === null || pb.kind !== 'relative') throw new AttnscopeError(`${at}.positionBias: expected {kind: "relative"${relative ? '' : ', values: [layer][head][offset]'}}`);
      if (pb.values !== undefined) {
        if (!Array.isArray(pb.values)) throw new AttnscopeError(`${at}.positionBias.values: expected [layer][head][offset] arrays`);
        relative = stackFromJson(pb.values.map((l: unknown) => (Array.isArray(l) ? l.map((h: unknown) => [h]) : l)), `${at}.positionBias.values`);
      } else if (!relative) throw new AttnscopeError(`${at}.positionBias: no values (JSON: values [layer][head][offset]; .safetensors: tensor scorePositionBias.${name})`);
    } else if (relative) throw new AttnscopeError(`${at}: a scorePositionBias.${name} tensor but no positionBias in the score terms`);
    if (relative) {
      const d = relative.dims;
      const w = relativeWidth(att.dims[1], att.dims[2]);
      if (terms.bias) throw new AttnscopeError(`${at}: both a bias and a positionBias (one or the other)`);
      if ((relative.layers.length !== layers && relative.layers.length !== 1) || d[0] !== att.dims[0] || d[1] !== 1 || d[2] !== w) {
        throw new AttnscopeError(`${at}.positionBias: [${relative.layers.length}, ${d[0]}, ${d[2]}] does not fit the attention [${layers}, ${att.dims.join(', ')}] (one layer or one per layer, ${att.dims[0]} heads, ${w} offsets)`);
      }
      const shared = relative.layers.length === layers ? shareEqualLayers(relative) : { dims: relative.dims, layers: new Array<Float32Array>(layers).fill(relative.layers[0]!) };
      terms.positionBias = { kind: 'relative', dims: [att.dims[0], att.dims[1], att.dims[2]], layers: shared.layers };
    }
    if (t.biasKind !== undefined) {
      if (typeof t.biasKind !== 'string') throw new AttnscopeError(`${at}.biasKind: expected a string`);
      terms.biasKind = t.biasKind;
    }
    map[name as StackName] = terms;
  }
  for (const name of [...Object.keys(biases), ...Object.keys(positionBiases)]) {
    if (!map[name as StackName]) throw new AttnscopeError(`${where}: a score bias for '${name}' but no score terms for that stack`);
  }
  return map;
}

// --- mixture-of-experts routing (Trace.routing) ---------------------------------------------

/**
 * Trace.routing as JSON: {experts, topK, normalized, layers: [{layer, probabilities: [token][expert],
 * selected: [token][k] (expert indices), weights: [token][k]}]}.
 */
function* routingJson(out: JsonOut, routing: Routing): Generator<void> {
  out.text(`,"routing":{"experts":${routing.experts},"topK":${routing.topK},"normalized":${routing.normalized},"layers":[`);
  for (let i = 0; i < routing.layers.length; i++) {
    const l = routing.layers[i]!;
    const tokens = l.probabilities.dims[0];
    out.text(`${i > 0 ? ',' : ''}{"layer":${l.layer}`);
    const rows: number[][] = [];
    for (let t = 0; t < tokens; t++) rows.push(Array.from(l.selected.subarray(t * routing.topK, (t + 1) * routing.topK)));
    out.text(`,"selected":${JSON.stringify(rows)}`);
    yield* matrixJson(out, 'weights', { dims: [tokens, routing.topK], data: l.weights });
    yield* matrixJson(out, 'probabilities', l.probabilities);
    out.text('}');
  }
  out.text(']}');
}

/** The small fields of Trace.routing plus the routed layer indices: the `.safetensors` metadata field `routing`. */
export function routingMetaJson(routing: Routing): string {
  return JSON.stringify({ experts: routing.experts, topK: routing.topK, normalized: routing.normalized, layers: routing.layers.map((l) => l.layer) });
}

interface RoutingHead {
  experts: number;
  topK: number;
  normalized: boolean;
}

function routingHead(v: Record<string, unknown>, where: string): RoutingHead {
  const { experts, topK, normalized } = v;
  if (!Number.isInteger(experts) || (experts as number) < 1) throw new AttnscopeError(`${where}.experts: expected an integer ≥ 1`);
  if (!Number.isInteger(topK) || (topK as number) < 1 || (topK as number) > (experts as number)) {
    throw new AttnscopeError(`${where}.topK: expected an integer in 1…${String(experts)} (experts)`);
  }
  if (typeof normalized !== 'boolean') throw new AttnscopeError(`${where}.normalized: expected true or false`);
  return { experts: experts as number, topK: topK as number, normalized };
}

/** Checks one routed layer's shapes against the tokens and its expert indices against the expert count. */
function checkRoutingLayer(l: RoutingLayer, head: RoutingHead, tokens: number, numLayers: number, previous: number, where: string): RoutingLayer {
  if (!Number.isInteger(l.layer) || l.layer <= previous || l.layer >= numLayers) {
    throw new AttnscopeError(`${where}.layer: expected a layer index in ${previous + 1}…${numLayers - 1} (layers in increasing order, below the model's ${numLayers})`);
  }
  const [rows, cols] = l.probabilities.dims;
  if (rows !== tokens || cols !== head.experts) {
    throw new AttnscopeError(`${where}.probabilities: ${rows}×${cols} but there are ${tokens} tokens and ${head.experts} experts`);
  }
  const n = tokens * head.topK;
  if (l.weights.length !== n) throw new AttnscopeError(`${where}.weights: ${l.weights.length} values, expected ${tokens} tokens × ${head.topK}`);
  if (l.selected.length !== n) throw new AttnscopeError(`${where}.selected: ${l.selected.length} values, expected ${tokens} tokens × ${head.topK}`);
  const bad = l.selected.findIndex((e) => !(e >= 0 && e < head.experts));
  if (bad >= 0) {
    throw new AttnscopeError(`${where}.selected: token ${Math.floor(bad / head.topK)} has an expert index that is not an integer in 0…${head.experts - 1}`);
  }
  for (let t = 0; t < tokens; t++) {
    const row = l.selected.subarray(t * head.topK, (t + 1) * head.topK);
    if (new Set(row).size !== row.length) throw new AttnscopeError(`${where}.selected: token ${t} names expert ${row.find((e, i) => row.indexOf(e) !== i)} twice`);
  }
  return l;
}

/** Expert indices from numbers (JSON, or floats in `.safetensors`); −1 for a value that is not a non-negative integer. */
function indicesFrom(values: ArrayLike<number>): Int32Array {
  return Int32Array.from(values, (x) => (Number.isInteger(x) && x >= 0 && x < 2 ** 31 ? x : -1));
}

/** Parses Trace.routing of a JSON trace (see routingJson), checked against the token and layer counts. */
export function routingFromJson(value: unknown, where: string, tokens: number, numLayers: number): Routing {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new AttnscopeError(`${where}: expected an object with experts, topK, normalized and layers`);
  const v = value as Record<string, unknown>;
  const head = routingHead(v, where);
  if (!Array.isArray(v.layers)) throw new AttnscopeError(`${where}.layers: expected an array`);
  let previous = -1;
  const layers = v.layers.map((entry: unknown, i): RoutingLayer => {
    const at = `${where}.layers[${i}]`;
    if (typeof entry !== 'object' || entry === null) throw new AttnscopeError(`${at}: expected an object with layer, probabilities, selected and weights`);
    const e = entry as Record<string, unknown>;
    const selected = matrixFromJson(e.selected, `${at}.selected`);
    const weights = matrixFromJson(e.weights, `${at}.weights`);
    if (selected.dims[0] !== tokens || selected.dims[1] !== head.topK) throw new AttnscopeError(`${at}.selected: expected ${tokens} rows of ${head.topK} expert indices`);
    if (weights.dims[0] !== tokens || weights.dims[1] !== head.topK) throw new AttnscopeError(`${at}.weights: expected ${tokens} rows of ${head.topK} numbers`);
    const l: RoutingLayer = {
      layer: typeof e.layer === 'number' ? e.layer : -1,
      probabilities: matrixFromJson(e.probabilities, `${at}.probabilities`),
      selected: indicesFrom(selected.data),
      weights: weights.data,
    };
    checkRoutingLayer(l, head, tokens, numLayers, previous, at);
    previous = l.layer;
    return l;
  });
  return { ...head, layers };
}

/** A routing tensor of a `.safetensors` trace: [layers, tokens, cols] float32. */
export interface RoutingTensor {
  shape: readonly number[];
  data: Float32Array;
}

/**
 * Trace.routing from a `.safetensors` trace: the metadata field `routing` (routingMetaJson) and the
 * tensors `routing.probabilities` [layers, tokens, experts], `routing.selected` [layers, tokens, topK]
 * (expert indices as floats) and `routing.weights` [layers, tokens, topK].
 */
export function routingFromTensors(
  meta: unknown, tensors: Partial<Record<'probabilities' | 'selected' | 'weights', RoutingTensor>>, where: string, tokens: number, numLayers: number,
): Routing {
  if (typeof meta !== 'object' || meta === null || Array.isArray(meta)) throw new AttnscopeError(`${where}: metadata routing: expected an object with experts, topK, normalized and layers`);
  const v = meta as Record<string, unknown>;
  const head = routingHead(v, `${where}: metadata routing`);
  const indices = v.layers;
  if (!Array.isArray(indices) || !indices.every((l) => Number.isInteger(l))) throw new AttnscopeError(`${where}: metadata routing.layers: expected a list of layer indices`);
  const cols = { probabilities: head.experts, selected: head.topK, weights: head.topK } as const;
  const parts = {} as Record<keyof typeof cols, RoutingTensor>;
  for (const name of Object.keys(cols) as (keyof typeof cols)[]) {
    const t = tensors[name];
    const expected = [indices.length, tokens, cols[name]];
    if (!t || t.shape.length !== 3 || t.shape.some((d, i) => d !== expected[i])) {
      throw new AttnscopeError(`${where}: tensor routing.${name} should be [${expected.join(', ')}] (layers, tokens, ${name === 'probabilities' ? 'experts' : 'topK'}), got ${t ? `[${t.shape.join(', ')}]` : 'none'}`);
    }
    parts[name] = t;
  }
  let previous = -1;
  const layers = (indices as number[]).map((layer, i): RoutingLayer => {
    const slice = (name: keyof typeof cols) => parts[name].data.subarray(i * tokens * cols[name], (i + 1) * tokens * cols[name]);
    const l: RoutingLayer = {
      layer,
      probabilities: { dims: [tokens, head.experts], data: slice('probabilities') },
      selected: indicesFrom(slice('selected')),
      weights: slice('weights'),
    };
    checkRoutingLayer(l, head, tokens, numLayers, previous, `${where}: routing layer ${layer}`);
    previous = layer;
    return l;
  });
  return { ...head, layers };
}
