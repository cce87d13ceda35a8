/**
 * The app's side of the API: GET /api/models, POST /api/load (progress frames) and POST
 * /api/trace, whose frames are turned into the same Trace and page header the standalone page
 * decodes from its file, layer by layer as they arrive.
 */
import type { StackName, Trace } from '../../src/core/trace.js';
import { scoreChecks } from '../../src/analysis/neuron.js';
import { PAYLOAD_FORMAT, PAYLOAD_VERSION, type PayloadHeader, type PayloadTensor } from '../../src/views/html/payload.js';
import { pageMark } from '../long-worker-marks.js';
import { FrameReader, PREVIEW_TENSOR_INDEX, RUN_HEADER, type ApiError, type ModelsResponse, type ProgressFrame, type StreamEnd, type StreamHeader, type TensorDeclaration, type TraceRequest } from '../../src/server/protocol.js';

/** An answer the API refused: its one-line message and the field at fault. */
export class ApiRefusal extends Error {
  constructor(
    message: string,
    readonly field?: string,
    readonly status?: number,
  ) {
    super(message);
  }
}

async function refusal(res: Response): Promise<ApiRefusal> {
  try {
    const body = (await res.json()) as ApiError;
    return new ApiRefusal(body.error, body.field, res.status);
  } catch {
    return new ApiRefusal(`the server answered ${res.status}`, undefined, res.status);
  }
}

export async function fetchModels(): Promise<ModelsResponse> {
  const res = await fetch('/api/models');
  if (!res.ok) throw await refusal(res);
  return (await res.json()) as ModelsResponse;
}

/** Loads a model on the server, reporting progress (downloads of Hub ids included). */
export async function loadModel(model: string, onProgress: (p: ProgressFrame) => void, signal: AbortSignal): Promise<void> {
  const res = await fetch('/api/load', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model }), signal });
  if (!res.ok) throw await refusal(res);
  const reader = new FrameReader();
  for await (const chunk of chunks(res)) {
    for (const f of reader.push(chunk)) {
      if (f.type === 'progress') onProgress(f.value);
      else if (f.type === 'error') throw new ApiRefusal(f.value.error, f.value.field);
      else if (f.type === 'end') return;
    }
  }
  throw new ApiRefusal('the server closed the connection while loading the model');
}

async function* chunks(res: Response): AsyncGenerator<Uint8Array> {
  const reader = res.body!.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      yield value;
    }
  } finally {
    reader.releaseLock();
  }
}

/** A trace being received: the Trace fills up as layers arrive. */
export interface Incoming {
  header: StreamHeader;
  trace: Trace;
  page: PayloadHeader;
  /** Attention layers received per stack. */
  received: Partial<Record<StackName, number>>;
  /** Whether every attention layer is in. */
  attentionDone: boolean;
  /** Whether every tensor is in (queries and keys included). */
  done: boolean;
  end?: StreamEnd;
  /** Milliseconds from the request to the first layer and to the last. */
  firstLayerMs?: number;
  bytes: number;
  /** A head preview (requests naming a `head`): one head's queries and its key head's keys of one layer, before that layer. */
  preview?: HeadPreviewIn;
  /** The server's run sending the trace (not for a cached answer), named when its first view is drawn (traceDrawn). */
  run?: string;
}

/** A head preview as it arrives (protocol.ts TensorDeclaration.head). */
export interface HeadPreviewIn {
  stack: StackName;
  layer: number;
  head: number;
  kvHead: number;
  /** [1, n, headDim] each, once their frames are in. */
  queries?: Float32Array;
  keys?: Float32Array;
  dims: { queries: [number, number, number]; keys: [number, number, number] };
}

export interface TraceCallbacks {
  /** The header arrived (the Trace has its tokens, no layers yet). */
  onHeader?(incoming: Incoming): void;
  /** A layer arrived. */
  onLayer?(incoming: Incoming): void;
  /** A head preview is complete (its queries and keys in). */
  onPreview?(incoming: Incoming): void;
}

/** Requests a trace and fills an Incoming as the frames arrive; resolves when the stream ends. */
export async function streamTrace(req: TraceRequest, callbacks: TraceCallbacks, signal: AbortSignal): Promise<Incoming> {
  const t0 = performance.now();
  const res = await fetch('/api/trace', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(req), signal });
  if (!res.ok) throw await refusal(res);
  const run = res.headers.get(RUN_HEADER) ?? undefined;
  const reader = new FrameReader();
  let incoming: Incoming | undefined;
  const remaining = new Map<number, number>();
  for await (const chunk of chunks(res)) {
    for (const f of reader.push(chunk)) {
      if (f.type === 'header') {
        incoming = start(f.value, req);
        if (run) incoming.run = run;
        f.value.tensors.forEach((t, i) => remaining.set(i, t.layers));
        callbacks.onHeader?.(incoming);
      } else if (f.type === 'layer' && isPreviewIndex(f.tensor)) {
        if (!incoming?.preview) throw new ApiRefusal('the server sent a head preview it had not declared');
        const kind = f.tensor === PREVIEW_TENSOR_INDEX.queries ? 'queries' : 'keys';
        const [d0, rows, cols] = incoming.preview.dims[kind];
        if (f.values.length !== d0 * rows * cols) throw new ApiRefusal(`head preview ${kind}: ${f.values.length} values, expected ${d0 * rows * cols}`);
        incoming.preview[kind] = f.values;
        incoming.preview.layer = f.layer;
        if (incoming.preview.queries && incoming.preview.keys) {
          pageMark('preview');
          callbacks.onPreview?.(incoming);
        }
      } else if (f.type === 'tensor' && f.value.head !== undefined) {
        // A head preview (requested with `head`), not a tensor of the stream.
        if (!incoming) throw new ApiRefusal('the server declared a tensor before the header');
        const { kind, stack, dims, head, index } = f.value;
        if ((kind !== 'queries' && kind !== 'keys') || index !== PREVIEW_TENSOR_INDEX[kind]) throw new ApiRefusal(`the server declared a head preview of ${kind} under index ${index}`);
        const p: HeadPreviewIn = incoming.preview?.stack === stack ? incoming.preview : { stack, layer: 0, head: 0, kvHead: 0, dims: { queries: dims, keys: dims } };
        p.dims[kind] = dims;
        if (kind === 'queries') p.head = head;
        else p.kvHead = head;
        incoming.preview = p;
      } else if (f.type === 'layer') {
        if (!incoming) throw new ApiRefusal('the server sent a layer before the header');
        place(incoming, f.tensor, f.layer, f.values);
        incoming.bytes += f.values.byteLength;
        remaining.set(f.tensor, (remaining.get(f.tensor) ?? 1) - 1);
        if (incoming.firstLayerMs === undefined) {
          incoming.firstLayerMs = performance.now() - t0;
          // For tools (bench/layerwise.ts --app): when the first layer of a trace was in.
          pageMark('first-layer');
        }
        incoming.attentionDone = onDemand(incoming.header) ? qkComplete(incoming.header, remaining) : incoming.header.tensors.every((t, i) => t.kind !== 'attention' || remaining.get(i) === 0);
        incoming.done = [...remaining.values()].every((n) => n === 0);
        if (incoming.done && incoming.trace.queries) incoming.page.stacks = scoreChecks(incoming.trace);
        callbacks.onLayer?.(incoming);
      } else if (f.type === 'tensor') {
        // Per-layer streaming: a tensor declared as its first layer comes (queries, keys, score bias).
        if (!incoming) throw new ApiRefusal('the server declared a tensor before the header');
        declare(incoming, f.value);
        remaining.set(f.value.index, f.value.layers);
        incoming.done = false;
      } else if (f.type === 'predictions') {
        if (!incoming) throw new ApiRefusal('the server sent predictions before the header');
        incoming.trace.predictions = f.value.predictions;
        incoming.page.predictions = f.value.predictions;
      } else if (f.type === 'error') {
        throw new ApiRefusal(f.value.error, f.value.field);
      } else if (f.type === 'end') {
        if (!incoming) throw new ApiRefusal('the server ended the trace before its header');
        incoming.end = f.value;
        return incoming;
      }
    }
  }
  throw new ApiRefusal('the server closed the connection before the trace was complete');
}

/**
 * Tells the server that the first view of the trace its run `run` sends is drawn (POST
 * /api/trace/drawn): an on-demand run waits for it after its first segment, so that its next one
 * does not compute on the cores the page draws with. A failure changes nothing (the run's wait has
 * an upper bound).
 */
export function traceDrawn(run: string): void {
  fetch('/api/trace/drawn', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ run }) }).catch(() => undefined);
}

function start(header: StreamHeader, req: TraceRequest): Incoming {
  const trace: Trace = { model: header.model, tokens: header.tokens, attention: {} };
  if (header.decoderTokens) trace.decoderTokens = header.decoderTokens;
  if (header.predictions) trace.predictions = header.predictions;
  if (header.generation) trace.generation = header.generation;
  const tensors: PayloadTensor[] = header.tensors.map((t) => ({ kind: t.kind, stack: t.stack, dims: t.dims, encoding: { kind: 'f32' }, blobs: [] }));
  // Per-layer streaming declares queries and keys later, but the header's score terms tell they come.
  const hasQk = header.tensors.some((t) => t.kind === 'queries') || (header.streaming === 'per-layer' && header.scores !== undefined);
  const page: PayloadHeader = {
    format: PAYLOAD_FORMAT,
    version: PAYLOAD_VERSION,
    model: header.model,
    tokens: header.tokens,
    tensors,
    blobRawLengths: [],
    precision: { attention: 'f32', qk: hasQk ? 'f32' : null },
    stacks: {},
    title: `attnscope · ${header.model.name}`,
    text: req.textPair !== undefined ? `${req.text} ‖ ${req.textPair}` : req.text,
  };
  if (header.decoderTokens) page.decoderTokens = header.decoderTokens;
  if (header.predictions) page.predictions = header.predictions;
  if (header.generation) page.generation = header.generation;
  if (header.scores) page.scores = header.scores;
  // Stacks without a bias get their score terms now; those with one when the bias arrives.
  for (const [stack, terms] of Object.entries(header.scores ?? {}) as [StackName, NonNullable<StreamHeader['scores']>[StackName]][]) {
    if (terms && !terms.hasBias) (trace.scores ??= {})[stack] = { scale: terms.scale, causal: terms.causal, window: terms.window, ...(terms.biasKind !== undefined ? { biasKind: terms.biasKind } : {}) };
  }
  return { header, trace, page, received: {}, attentionDone: false, done: false, bytes: 0 };
}

function isPreviewIndex(index: number): boolean {
  return index === PREVIEW_TENSOR_INDEX.queries || index === PREVIEW_TENSOR_INDEX.keys;
}

/**
 * The Trace of a head preview: its stack with one head (the preview's query head and its key
 * head) of one layer, layer 0, and the score terms of that layer; null until it is complete, or
 * where the preview cannot stand for the stream's first layer (a stack with a score bias, another
 * stack besides, a layer other than 0).
 */
export function previewTrace(incoming: Incoming): Trace | null {
  const p = incoming.preview;
  const { trace, header } = incoming;
  if (!p?.queries || !p.keys || p.layer !== 0 || !onDemand(header)) return null;
  const terms = trace.scores?.[p.stack];
  if (!terms || Object.keys(header.scores ?? {}).length !== 1) return null;
  return {
    ...trace,
    model: { ...trace.model, numHeads: 1, numKeyValueHeads: 1 },
    attention: {},
    queries: { [p.stack]: { dims: p.dims.queries, layers: [p.queries] } },
    keys: { [p.stack]: { dims: p.dims.keys, layers: [p.keys] } },
    scores: { [p.stack]: { ...terms, scale: terms.scale.slice(0, 1), window: terms.window.slice(0, 1) } },
  };
}

/** A tensor declared after the header: it takes the next index, in the header's list and the page's. */
function declare(incoming: Incoming, t: TensorDeclaration): void {
  const { index, ...tensor } = t;
  if (index !== incoming.header.tensors.length) throw new ApiRefusal(`the server declared tensor ${index}, expected ${incoming.header.tensors.length}`);
  incoming.header.tensors.push(tensor);
  incoming.page.tensors.push({ kind: tensor.kind, stack: tensor.stack, dims: tensor.dims, encoding: { kind: 'f32' }, blobs: [] });
  if (tensor.kind === 'queries') incoming.page.precision = { ...incoming.page.precision, qk: 'f32' };
}

function place(incoming: Incoming, index: number, layer: number, values: Float32Array): void {
  const t = incoming.header.tensors[index];
  if (!t) throw new ApiRefusal(`the server sent a layer of an unknown tensor (${index})`);
  const per = t.dims[0] * t.dims[1] * t.dims[2];
  if (values.length !== per) throw new ApiRefusal(`layer ${layer} of ${t.kind}.${t.stack}: ${values.length} values, expected ${per}`);
  const { trace } = incoming;
  if (t.kind === 'scoreBias') {
    const terms = incoming.header.scores?.[t.stack];
    const scores = (trace.scores ??= {});
    const current = scores[t.stack];
    const layers = (current?.bias?.layers ?? []) as Float32Array[];
    layers[layer] = values;
    const bias = { dims: t.dims, layers };
    if (terms) scores[t.stack] = { scale: terms.scale, causal: terms.causal, window: terms.window, ...(terms.biasKind !== undefined ? { biasKind: terms.biasKind } : {}), bias };
    return;
  }
  const map = t.kind === 'attention' ? trace.attention : t.kind === 'queries' ? (trace.queries ??= {}) : (trace.keys ??= {});
  const stack = (map[t.stack] ??= { dims: t.dims, layers: [] });
  (stack.layers as Float32Array[])[layer] = values;
  if (t.kind === 'attention') incoming.received[t.stack] = (incoming.received[t.stack] ?? 0) + 1;
}

/** A trace streamed in the on-demand form: queries, keys and score terms, no probabilities. */
export function onDemand(header: StreamHeader): boolean {
  return header.scores !== undefined && !header.tensors.some((t) => t.kind === 'attention');
}

/** Every stack's queries and keys (declared as their first layer comes) are all in. */
function qkComplete(header: StreamHeader, remaining: ReadonlyMap<number, number>): boolean {
  return Object.keys(header.scores ?? {}).every((stack) =>
    (['queries', 'keys'] as const).every((kind) => {
      const i = header.tensors.findIndex((t) => t.kind === kind && t.stack === stack);
      return i >= 0 && remaining.get(i) === 0;
    }),
  );
}

/**
 * Attention layers in and expected, over every stack: for a stream on demand, the layers whose
 * queries and keys are both in (from layer 0 on), of the layers its queries were declared with.
 */
export function layersIn(incoming: Incoming): { got: number; total: number } {
  const { header, trace } = incoming;
  if (!onDemand(header)) {
    const total = header.tensors.filter((t) => t.kind === 'attention').reduce((n, t) => n + t.layers, 0);
    return { got: Object.values(incoming.received).reduce((n, v) => n + (v ?? 0), 0), total };
  }
  let got = 0;
  let total = 0;
  for (const stack of Object.keys(header.scores ?? {}) as StackName[]) {
    total += header.tensors.find((t) => t.kind === 'queries' && t.stack === stack)?.layers ?? trace.model.numLayers;
    got += Math.min(leading(trace.queries?.[stack]?.layers ?? []), leading(trace.keys?.[stack]?.layers ?? []));
  }
  return { got, total };
}

/** Layers received from layer 0 on without a gap. */
function leading(layers: readonly (Float32Array | undefined)[]): number {
  let n = 0;
  while (n < layers.length && layers[n] !== undefined) n++;
  return n;
}

/**
 * The Trace as far as it has arrived: each attention stack cut to its first layers received in
 * order (layers come in order, so that is every layer received). Null until every stack has one.
 * An on-demand stream: the queries and keys of every stack cut to the layers received in both
 * (attention is computed from them when read).
 */
export function partialTrace(incoming: Incoming): Trace | null {
  if (onDemand(incoming.header)) {
    const { trace } = incoming;
    const queries: NonNullable<Trace['queries']> = {};
    const keys: NonNullable<Trace['keys']> = {};
    const scores: NonNullable<Trace['scores']> = {};
    for (const [stack, terms] of Object.entries(incoming.header.scores ?? {}) as [StackName, { hasBias: boolean } | undefined][]) {
      const q = trace.queries?.[stack];
      const k = trace.keys?.[stack];
      if (!q || !k || (terms?.hasBias && !trace.scores?.[stack])) return null;
      const n = Math.min(leading(q.layers), leading(k.layers));
      if (n === 0) return null;
      queries[stack] = { dims: q.dims, layers: q.layers.slice(0, n) };
      keys[stack] = { dims: k.dims, layers: k.layers.slice(0, n) };
      // The score terms per layer (scales, windows; a per-layer bias) cut to the same layers.
      const terms0 = trace.scores?.[stack];
      if (terms0) {
        const bias = terms0.bias && terms0.bias.layers.length > 1 ? { dims: terms0.bias.dims, layers: terms0.bias.layers.slice(0, n) } : terms0.bias;
        scores[stack] = { ...terms0, scale: terms0.scale.slice(0, n), window: terms0.window.slice(0, n), ...(bias ? { bias } : {}) };
      }
    }
    return { ...trace, attention: {}, queries, keys, scores };
  }
  const attention: Trace['attention'] = {};
  for (const t of incoming.header.tensors) {
    if (t.kind !== 'attention') continue;
    const s = incoming.trace.attention[t.stack];
    if (!s) return null;
    let n = 0;
    while (n < s.layers.length && s.layers[n] !== undefined) n++;
    if (n === 0) return null;
    attention[t.stack] = { dims: s.dims, layers: s.layers.slice(0, n) };
  }
  return { ...incoming.trace, attention };
}
