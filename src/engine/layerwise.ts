/**
 * Layer-by-layer execution (issue 13): the model's graph cut into one segment per layer
 * (graph/partition.ts), run in order. Each layer's outputs (attention, queries and keys,
 * residuals, …) are handed to a callback as soon as its segment has run and are then dropped, so
 * memory holds one layer's maps at a time, not every layer's: what stays between segments is only
 * what later layers read (the residual stream, masks, rotary tables, a shared position bias).
 *
 * Segments that are the same graph on other weights (the middle layers of a stack) run on ONE
 * runtime session fed each segment's weights as inputs: its memory arena is reused from layer to
 * layer, as the whole graph's is. (A session per layer either keeps an arena each, which makes
 * memory grow with the layers, or allocates its large buffers afresh on every run: the page
 * faults of those made layer by layer 1.3–2× slower than the whole graph.) The last layer is cut
 * off from the final norm and head (graph/partition.ts), so it runs on the shared session too
 * rather than on a session of its own beside the shared one's arena. The other segments (the first
 * with the embeddings, the final norm and head, a last layer of which only the queries and keys
 * are asked for) have sessions of their own, without arena. With `qkFirst`, each layer's queries
 * and keys come out before the rest of the layer runs.
 * The same nodes run on the same inputs as in the whole graph; where onnxruntime fuses ops only
 * around initializers (e.g. BERT's bias + residual + LayerNorm), a shared segment can differ from
 * the whole graph by float32 rounding, elsewhere the outputs are the whole run's bit for bit. An
 * AbortSignal is checked between layers.
 *
 * Imports nothing from Node.
 */
import { AttnscopeError } from '../core/errors.js';
import type { StackName, Token, Trace } from '../core/trace.js';
import type { ExternalWeight } from '../graph/builder.js';
import { encodeModel, type GraphSpec, type InitializerSpec } from '../graph/onnx-model.js';
import { headPreview, partitionByLayer, PREVIEW_COLUMNS, PREVIEW_KEYS, PREVIEW_QUERIES, sharedSegmentForm, type GraphPartition, type HeadPreviewSplit, type SharedSegmentForm } from '../graph/partition.js';
import { tapName, type TapRequest } from '../models/architecture.js';
import type { GraphSession, RuntimeTensor } from '../runtime/runtime.js';
import { AUTO_WHOLE_BUDGET_BYTES, autoDenseTokens, checkMemoryBudget, wholeRunPeakBytes } from './attention-mode.js';
import { tapsKey, type Model, type TraceOptions } from './model.js';

/** A run stopped between layers because its AbortSignal fired. */
export class LayerRunCancelled extends Error {
  constructor(readonly layersDone: number) {
    super(`the run was cancelled after ${layersDone} segment${layersDone === 1 ? '' : 's'}`);
    this.name = 'AbortError';
  }
}

/** One layer's outputs, as soon as they are computed. */
export interface LayerOutputs {
  /** The segment's place in the run (0 … count − 1). */
  index: number;
  count: number;
  /**
   * Layers whose outputs these are, in order (one, except where a family computes two layers
   * interleaved); the first segment also holds the embeddings. The final norm and head come with
   * the last layer, or after it in a segment of no layer (`[]`) where the last layer is cut off
   * from them to run on the middle layers' shared session (graph/partition.ts).
   */
  layers: { stack: StackName; layer: number }[];
  /** Graph outputs this segment computed, by name (`attention.<stack>.<layer>`, …, `logits` in the last). */
  outputs: Record<string, RuntimeTensor>;
  /** Whether the segment ran on a session shared with the segments of the same graph (fed its own weights). */
  shared: boolean;
  /** Milliseconds spent getting the segment's session (opened, or found open) and weights, and running it. */
  ms: { session: number; run: number };
}

export interface LayerwiseOptions extends TraceOptions {
  /** Checked before each layer: when it has fired, the run stops with LayerRunCancelled. */
  signal?: AbortSignal;
  /**
   * Segments that compute the same graph on other weights run in one session fed their weights
   * (default true); false opens a session per segment (the slower way, kept for comparison).
   */
  shareSessions?: boolean;
  /**
   * With queries and keys tapped: hand out each layer's queries, keys and score terms as soon as
   * they are computed, before the rest of the layer runs (segments: the embeddings and layer 0's
   * q/k; the rest of layer k and layer k + 1's q/k; …; the rest of the last layer and the head).
   * A layer's outputs then come in two segments. Attention on demand shows layer 0 after ~a tenth
   * of a layer's work this way. 'on-demand': only when attention is recorded on demand.
   */
  qkFirst?: boolean | 'on-demand';
  /** Called once the input is prepared (tokens known), before the first layer runs. */
  onStart?: (prepared: PreparedRun) => void | Promise<void>;
  /**
   * A q/k-first run (see qkFirst): before layer 0's queries and keys, compute only this query
   * head's queries and its key head's keys (1/heads of the query projection, 1/kvHeads of the key
   * projection) and hand them to `onPreview`; the rest of the first segment then computes every
   * head as without a preview (from the embeddings and normed input the preview computed), so the
   * layer outputs are the same. Models whose graph has no per-head form of its first queries and
   * keys (see graph/partition.ts headPreview) run without a preview; `onPreview` is not called.
   */
  previewHead?: number;
  onPreview?: (preview: HeadPreview) => void | Promise<void>;
  /**
   * Keep the weights fed to shared segments loaded for the next run (default true: a server traces
   * the same model again). false reads each layer's weights just before it runs (the next layer's
   * while this one runs) and lets them go after it: one or two layers' weights in memory instead of
   * every layer's (the Llama-3.2-1B shape: ≈ 0.5 GB instead of 3.9 GB), for a read of ≈ 0.25 GB
   * per layer per run: from the graph cache, as prepared there (transposed) by the first run, when
   * the model has one; from the checkpoint, transposed again each run, when not.
   */
  keepWeights?: boolean;
}

/** One head's queries and keys of the first layer, before the rest of the layer (LayerwiseOptions.previewHead). */
export interface HeadPreview {
  stack: StackName;
  layer: number;
  /** Segments of the run (as LayerOutputs.count). */
  count: number;
  /** The query head, and the key head it reads (⌊head · kvHeads / heads⌋). */
  head: number;
  kvHead: number;
  /** [1, 1, n, headDim] each, equal to that head's rows of the layer's `queries` / `keys` outputs to float32 rounding. */
  queries: RuntimeTensor;
  keys: RuntimeTensor;
  /** Milliseconds getting its session and running it. */
  ms: { session: number; run: number };
}

/** A prepared single forward pass (Model.prepareRun): tokens, graph inputs, taps, mask positions. */
export type PreparedRun = Awaited<ReturnType<Model['prepareRun']>>;

/** What a layer-by-layer run ran on (the layers themselves went to the callback). */
export interface LayerwiseRun {
  tokens: Token[];
  decoderTokens?: Token[];
  taps: TapRequest;
  /** Segments the graph was cut into. */
  segments: number;
}

/** Per-layer graph outputs that place their node's layer (`<kind>.<stack>.<layer>`). */
const LAYER_KINDS = new Set([
  'attention', 'queries', 'keys', 'values', 'score_bias', 'transformed_values', 'layer_input', 'residual_sum',
  'resid_input', 'resid_attention', 'resid_cross', 'resid_output', 'mlp_activation',
  'router_probabilities', 'router_selected', 'router_weights', 'router_input',
]);

/** `stack.layer` of a per-layer output, undefined for the others (logits, hidden states, the logit lens). */
export function layerKeyOf(output: string): string | undefined {
  const m = /^([a-z_]+)\.([a-z]+)\.(\d+)$/.exec(output);
  return m && LAYER_KINDS.has(m[1]!) ? `${m[2]}.${m[3]}` : undefined;
}

/** Outputs a q/k-first run hands out before the rest of their layer: queries, keys and the score terms. */
function isEarlyOutput(output: string): boolean {
  return /^(queries|keys|score_bias)\./.test(output);
}

function parseKey(key: string): { stack: StackName; layer: number } {
  const dot = key.indexOf('.');
  return { stack: key.slice(0, dot) as StackName, layer: Number(key.slice(dot + 1)) };
}

/** A model's graph for one set of taps, cut by layer; sessions opened as the run first reaches them. */
interface LayerPlan {
  partition: GraphPartition;
  /** The whole graph's input names (fed from the model's inputs). */
  inputs: ReadonlySet<string>;
  /** Segment `index`'s session for carried inputs of these shapes (see `carriedShapes`). */
  session(index: number, shapes: ReadonlyMap<string, readonly (number | string)[]>): Promise<GraphSession>;
  /**
   * Per segment: its shared form when other segments compute the same graph on other weights (and
   * every weight of it can be fed), else undefined. Such segments run in one session (`shared`:
   * the form of the segment it was made from), fed their own weights (`weightFeeds`).
   */
  forms: readonly (SharedSegmentForm | undefined)[];
  /** The session of a shared segment for carried inputs of these shapes, and the form it was made from. */
  sharedSession(index: number, shapes: ReadonlyMap<string, readonly (number | string)[]>): Promise<{ session: GraphSession; form: SharedSegmentForm }>;
  /**
   * A shared segment's weights as feeds (by its own initializer names): with `keep`, loaded once
   * per plan and kept; without, read afresh unless kept already (and not kept).
   */
  weightFeeds(index: number, keep: boolean): Promise<Record<string, RuntimeTensor>>;
  /** Sizes that are fixed in the graph: weight dimensions and small integer constants. */
  fixedSizes: ReadonlySet<number>;
  /** The graph inputs' declared shapes. */
  inputShapes: ReadonlyMap<string, readonly (number | string)[] | undefined>;
  /**
   * The first segment split for a one-head preview (q/k-first plans whose first segment has the
   * pattern), with the sessions of both parts; undefined otherwise.
   */
  preview?: {
    split: HeadPreviewSplit;
    stack: StackName;
    layer: number;
    /** Every head's session (the head is an input): its key holds no input length. */
    session(): Promise<GraphSession>;
    rest(shapes: ReadonlyMap<string, readonly (number | string)[]>): Promise<GraphSession>;
  };
}

/**
 * The checkpoint's tensors among a graph's initializers: every one but the builder's own constants
 * (graph/builder.ts names them `const_<n>`), small ones included (a norm's weights, a bias).
 */
function isCheckpointWeight(t: InitializerSpec): boolean {
  return !/^const_\d+$/.test(t.name);
}

/** Element types a weight can be fed in (bfloat16 has no runtime tensor type here). */
const FEEDABLE = new Set<string>(['float32', 'float16', 'float64', 'int64', 'int32', 'bool', 'uint8']);

/** A weight's little-endian bytes as a runtime tensor of its type. */
function weightTensor(t: InitializerSpec, bytes: Uint8Array): RuntimeTensor {
  const b = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  const { buffer, byteOffset: o, byteLength: n } = b;
  const dims = t.dims;
  switch (t.type) {
    case 'float32':
      return { type: 'float32', dims, data: new Float32Array(buffer, o, n / 4) };
    case 'float64':
      return { type: 'float64', dims, data: new Float64Array(buffer, o, n / 8) };
    case 'float16':
      return { type: 'float16', dims, data: new Uint16Array(buffer, o, n / 2) };
    case 'int64':
      return { type: 'int64', dims, data: new BigInt64Array(buffer, o, n / 8) };
    case 'int32':
      return { type: 'int32', dims, data: new Int32Array(buffer, o, n / 4) };
    case 'bool':
    case 'uint8':
      return { type: t.type, dims, data: new Uint8Array(buffer, o, n) };
    default:
      throw new Error(`layerwise: a ${t.type} weight cannot be fed`);
  }
}

const plans = new WeakMap<Model, Map<string, Promise<LayerPlan>>>();

function planFor(model: Model, taps: TapRequest, sharing: boolean, qkFirst: boolean): Promise<LayerPlan> {
  let byKey = plans.get(model);
  if (!byKey) plans.set(model, (byKey = new Map()));
  const key = `${tapsKey(taps)}${sharing ? '' : ' unshared'}${qkFirst ? ' qk-first' : ''}`;
  let plan = byKey.get(key);
  if (!plan) {
    plan = makePlan(model, taps, key, sharing, qkFirst);
    byKey.set(key, plan);
    plan.catch(() => byKey.delete(key));
  }
  return plan;
}

/**
 * The graph is cut with its dead nodes (partitionByLayer leaves them out of the segments, but
 * places the cuts as in a graph whose outputs are all live, so that a last layer of which little
 * is asked for does not move the cut before it).
 */
const WHOLE_LAYERS = { keepDead: true } as const;

async function makePlan(model: Model, taps: TapRequest, key: string, sharing: boolean, qkFirst: boolean): Promise<LayerPlan> {
  const { graph, external } = await model.buildGraph(taps, WHOLE_LAYERS);
  const partition = partitionByLayer(graph, layerKeyOf, qkFirst ? { early: isEarlyOutput } : {});
  const count = partition.segments.length;
  // The weight readers are kept until the last segment has its session (reading them holds their
  // data). Sessions are opened per set of carried shapes, so a later input of another length opens
  // the segments again: the readers are then made again from the same graph (their names are
  // deterministic) and released once more after the last segment.
  const readers = (list: readonly ExternalWeight[]): Map<string, ExternalWeight> => new Map(list.map((w) => [w.path, w]));
  let weights: Map<string, ExternalWeight> | null = readers(external);
  /** A session of `graph` (a segment, or a part of the first one) with its carried inputs shaped `shapes`. */
  const open = async (graph: GraphSpec, shapes: ReadonlyMap<string, readonly (number | string)[]>): Promise<GraphSession> => {
    const w = weights ?? (weights = readers((await model.buildGraph(taps, WHOLE_LAYERS)).external));
    const segExternal: ExternalWeight[] = [];
    for (const t of graph.initializers) {
      const ext = t.external ? w.get(t.external.location) : undefined;
      if (ext) segExternal.push(ext);
    }
    const inputs = graph.inputs.map((i) => (shapes.has(i.name) ? { ...i, shape: shapes.get(i.name)! } : i));
    return model.openBuilt({ model: encodeModel({ ...graph, inputs }), external: segExternal }, { spinning: false, arena: false });
  };
  const make = async (index: number, shapes: ReadonlyMap<string, readonly (number | string)[]>): Promise<GraphSession> => {
    const session = await open(partition.segments[index]!.graph, shapes);
    if (index === count - 1) weights = null;
    return session;
  };
  const preview = qkFirst ? previewOf(model, partition) : undefined;
  let previewKey: string | undefined;
  // Segments computing the same graph on other weights (the layers of a stack) share one session,
  // fed each segment's weights: one arena reused from layer to layer (a session per layer either
  // keeps its own arena, which grows memory with the layers, or allocates its buffers afresh on
  // every run, which costs the page faults of every large buffer) and one session to create.
  const forms: (SharedSegmentForm | undefined)[] = partition.segments.map(() => undefined);
  if (sharing) {
    const all = partition.segments.map((seg) => sharedSegmentForm(seg.graph, isCheckpointWeight));
    const count = new Map<string, number>();
    for (const f of all) count.set(f.key, (count.get(f.key) ?? 0) + 1);
    all.forEach((f, i) => {
      if (count.get(f.key)! > 1 && f.weights.every((t) => FEEDABLE.has(t.type))) forms[i] = f;
    });
  }
  /** The first segment of each shared form: its session serves the others. */
  const representative = new Map<string, number>();
  forms.forEach((f, i) => f && !representative.has(f.key) && representative.set(f.key, i));
  const loaded = new Map<string, Promise<RuntimeTensor>>();
  const load = async (t: InitializerSpec): Promise<RuntimeTensor> => {
    if (!t.external) return weightTensor(t, t.raw ?? new Uint8Array(0));
    const w = weights ?? (weights = readers((await model.buildGraph(taps, WHOLE_LAYERS)).external));
    const ext = w.get(t.external.location);
    if (!ext) throw new Error(`layerwise: no weight data for ${t.name}`);
    // Through the graph cache: prepared (read, transposed) the first time, read as stored after.
    return weightTensor(t, await model.preparedWeight(ext));
  };
  const weightOf = (t: InitializerSpec, keep: boolean): Promise<RuntimeTensor> => {
    let p = loaded.get(t.name);
    if (!p) {
      p = load(t);
      if (!keep) return p;
      loaded.set(t.name, p);
      p.catch(() => loaded.delete(t.name));
    }
    return p;
  };
  const fixedSizes = new Set<number>();
  for (const t of graph.initializers) {
    for (const d of t.dims) fixedSizes.add(d);
    if (t.type === 'int64' && t.raw && t.raw.byteLength <= 128) {
      const copy = t.raw.slice();
      for (const v of new BigInt64Array(copy.buffer, 0, copy.byteLength / 8)) fixedSizes.add(Number(v));
    }
  }
  return {
    partition,
    inputs: new Set(graph.inputs.map((i) => i.name)),
    fixedSizes,
    inputShapes: new Map(graph.inputs.map((i) => [i.name, i.shape] as const)),
    forms,
    ...(preview
      ? {
          preview: {
            ...preview,
            session: () => model.cachedSession((previewKey ??= previewSessionKey(model, preview.split.preview)), () => open(preview.split.preview, new Map())),
            rest: (shapes) => model.cachedSession(`${key}#layer-preview-rest ${signatureOf(shapes)}`, () => open(preview.split.rest, shapes)),
          },
        }
      : {}),
    session: (index, shapes) => model.cachedSession(`${key}#layer-segment ${index}/${count} ${signatureOf(shapes)}`, () => make(index, shapes)),
    sharedSession: async (index, shapes) => {
      const own = forms[index]!;
      const rep = representative.get(own.key)!;
      const form = forms[rep]!;
      // The segment's carried shapes, by position, on the representative's input names; sizes
      // named after a carried value (no graph symbol has them) renamed by position.
      const repShapes = new Map<string, (number | string)[]>();
      own.inputs.forEach((name, i) => {
        const d = shapes.get(name);
        if (d) repShapes.set(form.inputs[i]!, d.map((x, j) => (typeof x === 'string' && x.includes('#') ? `carried${i}#${j}` : x)));
      });
      const session = await model.cachedSession(`${key}#layer-shared ${rep}/${count} ${signatureOf(repShapes)}`, async () => {
        const inputs = form.graph.inputs.map((i) => (repShapes.has(i.name) ? { ...i, shape: repShapes.get(i.name)! } : i));
        // Without onnxruntime's memory pattern: its one block per run would come from the arena
        // beside the first run's buffers, so the arena would hold two runs' buffers (the Qwen2.5-0.5B
        // shape at 32,768 tokens: 1.15 GiB each).
        return model.openBuilt({ model: encodeModel({ ...form.graph, inputs }), external: [] }, { arena: true, memoryPattern: false });
      });
      return { session, form };
    },
    weightFeeds: async (index, keep) => {
      const own = forms[index]!;
      const feeds: Record<string, RuntimeTensor> = {};
      const values = await Promise.all(own.weights.map((t) => weightOf(t, keep)));
      own.weights.forEach((t, i) => (feeds[t.name] = values[i]!));
      return feeds;
    },
  };
}

/** A session cache key's part for the shapes of a segment's carried inputs. */
function signatureOf(shapes: ReadonlyMap<string, readonly (number | string)[]>): string {
  return [...shapes].map(([n, d]) => `${n}:${d.join('x')}`).join(',');
}

/** The first segment's one-head split, when it computes one layer's queries and keys in the pattern headPreview knows. */
function previewOf(model: Model, partition: GraphPartition): { split: HeadPreviewSplit; stack: StackName; layer: number } | undefined {
  const first = partition.segments[0];
  if (!first || first.layers.length !== 1 || partition.segments.length < 2) return undefined;
  const { stack, layer } = parseKey(first.layers[0]!);
  const queries = tapName('queries', stack, layer);
  const keys = tapName('keys', stack, layer);
  if (!first.outputs.includes(queries) || !first.outputs.includes(keys)) return undefined;
  const info = model.architectureInfo;
  const split = headPreview(first, { queries, keys, heads: info.stackHeads?.[stack] ?? info.numHeads, kvHeads: info.numKeyValueHeads, headDim: info.headDim });
  return split && { split, stack, layer };
}

/** Encoder-decoders without a decoder input generate: not one forward pass to cut by layer. */
function checkSingleRun(model: Model, options: TraceOptions): void {
  if (model.info.kind === 'encoder-decoder' && !options.decoderIds && options.decoderText === undefined) {
    throw new AttnscopeError(`${model.name}: layer-by-layer tracing needs a decoder input on an encoder-decoder model (--decoder-text or --decoder-ids)`);
  }
}

/**
 * Runs `model` on a text (or ids, as `trace` does) one layer at a time: `onLayer` gets each
 * segment's outputs as soon as they are computed (awaited before the next layer runs) and they
 * are not kept afterwards. Not for encoder-decoders without a decoder input (that is generation).
 */
export async function traceLayers(model: Model, text: string | null, options: LayerwiseOptions, onLayer: (layer: LayerOutputs) => void | Promise<void>): Promise<LayerwiseRun> {
  checkSingleRun(model, options);
  const prepared = await model.prepareRun(text, options);
  await options.onStart?.(prepared);
  const segments = await runLayers(model, prepared, options, onLayer);
  return { tokens: prepared.tokens, ...(prepared.decoderTokens ? { decoderTokens: prepared.decoderTokens } : {}), taps: prepared.taps, segments };
}

/** Runs a prepared input segment by segment; returns the number of segments. */
async function runLayers(model: Model, prepared: PreparedRun, options: LayerwiseOptions, onLayer: (layer: LayerOutputs) => void | Promise<void>): Promise<number> {
  const { inputs, taps } = prepared;
  const { signal } = options;
  const plan = await planFor(model, taps, options.shareSessions ?? true, qkFirstRun(taps, options));
  const { segments, lastUse } = plan.partition;
  const fed = model.feedsFor([...plan.inputs], inputs);
  const carried = new Map<string, RuntimeTensor>();
  const keep = options.keepWeights ?? true;
  // Without keepWeights: the next shared segment's weights are read while this segment runs.
  let pending: { index: number; feeds: Promise<Record<string, RuntimeTensor>> } | undefined;
  const weightsFor = (s: number): Promise<Record<string, RuntimeTensor>> => {
    const ready = pending?.index === s ? pending.feeds : plan.weightFeeds(s, keep);
    pending = undefined;
    return ready;
  };
  const prefetch = (s: number): void => {
    if (keep || !plan.forms[s]) return;
    const feeds = plan.weightFeeds(s, false);
    feeds.catch(() => undefined); // awaited (and its error raised) when segment s runs
    pending = { index: s, feeds };
  };
  const preview = options.previewHead !== undefined && options.onPreview ? plan.preview : undefined;
  for (let s = 0; s < segments.length; s++) {
    if (signal?.aborted) throw new LayerRunCancelled(s);
    const seg = segments[s]!;
    // With a preview: one head's queries and keys first; the rest of the segment reads what it handed on.
    const split = s === 0 && preview ? preview.split : undefined;
    if (split) {
      await runPreview(preview!, segments.length, fed, carried, options.previewHead!, model, options.onPreview!);
      if (signal?.aborted) throw new LayerRunCancelled(s);
    }
    const graph = split ? split.rest : seg.graph;
    const feeds: Record<string, RuntimeTensor> = {};
    for (const i of graph.inputs) {
      const v = fed[i.name] ?? carried.get(i.name);
      if (!v) throw new Error(`layerwise: no value for ${i.name} in segment ${s}`);
      feeds[i.name] = v;
    }
    const shapes = carriedShapes(plan, fed, split ? graph.inputs.filter((i) => carried.has(i.name)).map((i) => i.name) : seg.carriedIn, carried);
    const own = split ? undefined : plan.forms[s];
    let out: Record<string, RuntimeTensor>;
    const t0 = performance.now();
    let t1: number;
    if (own) {
      // Run on the shared session, the segment's values in the places of the representative's.
      const [{ session, form }, weightFeeds] = await Promise.all([plan.sharedSession(s, shapes), weightsFor(s)]);
      const all = { ...feeds, ...weightFeeds };
      const shared: Record<string, RuntimeTensor> = {};
      own.inputs.forEach((name, i) => (shared[form.inputs[i]!] = all[name]!));
      prefetch(s + 1);
      t1 = performance.now();
      const got = await session.run(shared, form.outputs);
      out = {};
      own.outputs.forEach((name, i) => (out[name] = got[form.outputs[i]!]!));
    } else {
      const session = split ? await preview!.rest(shapes) : await plan.session(s, shapes);
      prefetch(s + 1);
      t1 = performance.now();
      out = await session.run(feeds, graph.outputs.map((o) => o.name));
    }
    const ms = { session: t1 - t0, run: performance.now() - t1 };
    // (After a preview, what it computed of them is carried already.)
    for (const name of seg.carriedOut) if (out[name]) carried.set(name, out[name]);
    for (const name of seg.carriedIn) if (lastUse.get(name) === s) carried.delete(name);
    // What only the rest of the segment read of the preview's values.
    if (split) for (const name of split.handed) if (!seg.carriedOut.includes(name)) carried.delete(name);
    const outputs: Record<string, RuntimeTensor> = {};
    for (const name of seg.outputs) outputs[name] = out[name]!;
    await onLayer({ index: s, count: segments.length, layers: seg.layers.map(parseKey), outputs, shared: own !== undefined, ms });
  }
  return segments.length;
}

/** Whether a run with these taps hands out each layer's queries and keys first (LayerwiseOptions.qkFirst). */
function qkFirstRun(taps: TapRequest, options: LayerwiseOptions): boolean {
  return taps.qk === true && (options.qkFirst === true || (options.qkFirst === 'on-demand' && !taps.attention));
}

/**
 * Per model, the one-head preview graphs whose sessions were asked for, encoded: a preview's
 * session is kept under its graph's place in this list, not under its plan's taps (which hold the
 * input length's query band count), so that a run of any length whose preview is the same graph
 * takes the session opened before its input was known (openPreviewSession).
 */
const previewGraphs = new WeakMap<Model, Uint8Array[]>();

function previewSessionKey(model: Model, graph: GraphSpec): string {
  const bytes = encodeModel(graph);
  let known = previewGraphs.get(model);
  if (!known) previewGraphs.set(model, (known = []));
  const same = (b: Uint8Array) => b.length === bytes.length && b.every((x, i) => x === bytes[i]);
  let at = known.findIndex(same);
  if (at < 0) at = known.push(bytes) - 1;
  return `#layer-preview ${at}`;
}

/**
 * Opens the session of the one-head preview that a layer-by-layer run of `model` with `options`
 * (previewHead set or not) would use on an input of `tokens` tokens, before any text is known:
 * e.g. when a server loads a model (cold, this session is most of the first view's time: it folds
 * the embedding table's cast to float32). The session is kept under its graph (previewSessionKey),
 * so runs of other lengths and taps take it when their preview is the same graph, and open their
 * own otherwise. Resolves whether such a run has a preview (false: nothing opened).
 */
export async function openPreviewSession(model: Model, tokens: number, options: LayerwiseOptions = {}): Promise<boolean> {
  checkSingleRun(model, options);
  const { taps } = await model.prepareRun(null, { ...options, ids: Array.from({ length: tokens }, () => 0) });
  if (!qkFirstRun(taps, options)) return false;
  const plan = await planFor(model, taps, options.shareSessions ?? true, true);
  if (!plan.preview) return false;
  await plan.preview.session();
  return true;
}

/** Runs the one-head preview of the first segment: its outputs to `onPreview`, what it hands on into `carried`. */
async function runPreview(preview: NonNullable<LayerPlan['preview']>, count: number, fed: Readonly<Record<string, RuntimeTensor>>, carried: Map<string, RuntimeTensor>, head: number, model: Model, onPreview: NonNullable<LayerwiseOptions['onPreview']>): Promise<void> {
  const info = model.architectureInfo;
  const heads = info.stackHeads?.[preview.stack] ?? info.numHeads;
  if (!Number.isInteger(head) || head < 0 || head >= heads) throw new AttnscopeError(`previewHead: ${head} is not a head of ${model.name} (0 to ${heads - 1})`);
  const kvHead = Math.floor((head * info.numKeyValueHeads) / heads);
  const d = info.headDim;
  const columns = (h: number): RuntimeTensor => ({ type: 'int64', dims: [d], data: BigInt64Array.from({ length: d }, (_, i) => BigInt(h * d + i)) });
  const t0 = performance.now();
  const session = await preview.session();
  const feeds: Record<string, RuntimeTensor> = { [PREVIEW_COLUMNS.queries]: columns(head), [PREVIEW_COLUMNS.keys]: columns(kvHead) };
  for (const i of preview.split.preview.inputs) if (!(i.name in feeds)) feeds[i.name] = fed[i.name]!;
  const t1 = performance.now();
  const out = await session.run(feeds, preview.split.preview.outputs.map((o) => o.name));
  const ms = { session: t1 - t0, run: performance.now() - t1 };
  for (const name of preview.split.handed) carried.set(name, out[name]!);
  await onPreview({ stack: preview.stack, layer: preview.layer, count, head, kvHead, queries: out[PREVIEW_QUERIES]!, keys: out[PREVIEW_KEYS]!, ms });
}

/**
 * Declared shapes for a segment's carried inputs, so that onnxruntime optimises the segment as it
 * does the whole graph (its fusions need shapes: Add + LayerNormalization, for one): a size that
 * equals a symbolic size of the graph inputs in this run (`seq`, `keys`, …) gets its name (the
 * first input's that has it), a size fixed in the graph (a weight's, a constant's) and no symbol's
 * stays a number, any other size is left unnamed. Sessions are kept per set of shapes, so a
 * session is only run on inputs its shapes hold for.
 */
function carriedShapes(plan: LayerPlan, fed: Readonly<Record<string, RuntimeTensor>>, names: readonly string[], carried: ReadonlyMap<string, RuntimeTensor>): Map<string, (number | string)[]> {
  const symbols = new Map<number, string>();
  for (const [name, declared] of plan.inputShapes) {
    const dims = fed[name]?.dims;
    if (!declared || !dims) continue;
    declared.forEach((d, i) => {
      const size = dims[i];
      if (typeof d === 'string' && size !== undefined && !symbols.has(size)) symbols.set(size, d);
    });
  }
  const shapes = new Map<string, (number | string)[]>();
  for (const name of names) {
    const dims = carried.get(name)!.dims;
    shapes.set(name, dims.map((size, i) => {
      const symbol = symbols.get(size);
      if (symbol !== undefined && !plan.fixedSizes.has(size)) return symbol;
      if (symbol === undefined && plan.fixedSizes.has(size)) return size;
      return `${name}#${i}`;
    }));
  }
  return shapes;
}

/**
 * The whole Trace, computed layer by layer (each layer's outputs gathered as they come): the same
 * Trace `model.trace` gives for the same input. For the memory bound, use `traceLayers` and keep
 * only what is needed of each layer.
 */
export async function traceByLayers(model: Model, text: string | null, options: LayerwiseOptions = {}, onLayer?: (layer: LayerOutputs) => void | Promise<void>): Promise<Trace> {
  checkSingleRun(model, options);
  return tracePreparedByLayers(model, await model.prepareRun(text, options), options, onLayer);
}

/** traceByLayers on a prepared run: each output is held once (as the runtime handed it out), in the Trace. */
async function tracePreparedByLayers(model: Model, prepared: PreparedRun, options: LayerwiseOptions, onLayer?: (layer: LayerOutputs) => void | Promise<void>): Promise<Trace> {
  const all: Record<string, RuntimeTensor> = {};
  await options.onStart?.(prepared);
  await runLayers(model, prepared, options, async (layer) => {
    Object.assign(all, layer.outputs);
    await onLayer?.(layer);
  });
  return model.traceOf(prepared, all, options);
}

/**
 * How a trace runs the model: 'whole' (the whole graph in one run, `Model.trace`), 'layers' (one
 * layer at a time, `traceByLayers`: the runtime holds one layer's intermediates and outputs at a
 * time, so memory does not grow by a second copy of every layer's outputs) or 'auto' (layer by
 * layer for long inputs: above the same number of tokens as `attention: 'auto'` records on demand).
 */
export type ExecutionMode = 'auto' | 'whole' | 'layers';

export const EXECUTION_MODES: readonly ExecutionMode[] = ['auto', 'whole', 'layers'];

/** Refuses anything but 'auto', 'whole', 'layers' (one line naming `what`). */
export function checkExecutionMode(value: unknown, what = 'execution'): ExecutionMode {
  if (EXECUTION_MODES.includes(value as ExecutionMode)) return value as ExecutionMode;
  throw new AttnscopeError(`${what}: '${String(value)}' is not a way to run the model; allowed: ${EXECUTION_MODES.join(', ')}`);
}

/** What `autoExecution` weighs. */
export interface AutoExecutionOptions {
  /** Encoder-decoders: the decoder input's tokens. */
  decoderTokens?: number;
  /** 'auto' attention's threshold (default engine/attention-mode.ts autoDenseTokens): at or below it the whole graph runs. */
  onDemandAbove?: number;
  /** Bytes the whole graph's predicted peak may take (default AUTO_WHOLE_BUDGET_BYTES, 8 GB). */
  memoryBudget?: number;
  /** The run records every probability (else queries and keys: attention on demand). */
  dense?: boolean;
}

/**
 * What 'auto' runs `tokens` tokens as: the whole graph at or below `onDemandAbove` tokens, and above
 * it while the whole graph's predicted peak (attention-mode.ts wholeRunPeakBytes: every weight, the
 * outputs held twice, the run's scratch) fits `memoryBudget`, because it is the faster way (the
 * Llama-3.2-1B shape at 2,048 tokens on demand: 59.5 s whole, 91–95 s layer by layer reading each
 * layer's weights as it runs; BENCHMARKS.md); layer by layer where it does not fit.
 */
export function autoExecution(model: Model, tokens: number, options: AutoExecutionOptions = {}): 'whole' | 'layers' {
  const info = model.architectureInfo;
  if (Math.max(tokens, options.decoderTokens ?? 0) <= (options.onDemandAbove ?? autoDenseTokens(info))) return 'whole';
  const budget = checkMemoryBudget(options.memoryBudget ?? AUTO_WHOLE_BUDGET_BYTES);
  return wholeRunPeakBytes(info, model.weightBytes, tokens, options.dense ? 'dense' : 'on-demand', options.decoderTokens) <= budget ? 'whole' : 'layers';
}

export interface TraceRunOptions extends LayerwiseOptions {
  /** How the model runs (default 'auto'); a generation (encoder-decoder without a decoder input) runs whole. */
  execution?: ExecutionMode;
  /** 'auto' execution: the bytes a whole-graph run may take (default AUTO_WHOLE_BUDGET_BYTES); above them it runs layer by layer. */
  memoryBudget?: number;
  /** Layer by layer: called with each segment's outputs as they come (e.g. progress); they also go into the Trace. */
  onLayer?: (layer: LayerOutputs) => void | Promise<void>;
}

/** What the trace ran as. */
export interface TraceRun {
  trace: Trace;
  execution: 'whole' | 'layers';
}

/**
 * A trace of `text` (or `options.ids`), as `Model.trace` gives it, run as `options.execution` says:
 * by default the whole graph while it fits `memoryBudget` (autoExecution) and layer by layer
 * beyond (which, unless `keepWeights` is set, also reads each layer's weights as it runs instead of
 * keeping every layer's). What `attnscope trace` runs.
 */
export async function traceModel(model: Model, text: string | null, options: TraceRunOptions = {}): Promise<TraceRun> {
  const execution = checkExecutionMode(options.execution ?? 'auto');
  const generates = model.info.kind === 'encoder-decoder' && !options.decoderIds && options.decoderText === undefined;
  if (execution === 'whole' || (execution === 'auto' && generates)) return { trace: await model.trace(text, options), execution: 'whole' };
  checkSingleRun(model, options);
  model.checkTraceOptions(options);
  const prepared = await model.prepareRun(text, options);
  const chosen = execution === 'layers' ? 'layers' : autoExecution(model, prepared.tokens.length, { decoderTokens: prepared.decoderTokens?.length, onDemandAbove: options.onDemandAbove, memoryBudget: options.memoryBudget, dense: prepared.taps.attention });
  if (chosen === 'whole') return { trace: model.traceOf(prepared, await model.run(prepared.taps, prepared.inputs), options), execution: chosen };
  return { trace: await tracePreparedByLayers(model, prepared, { ...options, keepWeights: options.keepWeights ?? false }, options.onLayer), execution: chosen };
}

