/**
 * A batched forward pass for inputs of equal length (issue 10): the model's logits for n inputs in
 * as few session runs as a memory bound allows, instead of n runs — e.g. a bias benchmark scoring
 * n masked copies of one sentence. Browser-safe: imports nothing from Node.
 *
 * The graph is the model's own with its logits, grown (`GraphExtension` 'batch-logits') so that:
 * - every graph input whose first dimension is 1 takes a symbolic batch dimension
 *   (GraphBuilder.batchInputs): `input_ids` and whatever else differs between the rows is fed
 *   stacked [rows, …]; feeds that are the same for every row (position ids, masks, rotary tables,
 *   ALiBi or relative-position terms: they depend on the length only) are fed once, as [1, …],
 *   and broadcast. The architectures' graphs are batch-generic (reshapes copy the leading
 *   dimension), so every row is computed exactly as its own unbatched run computes it, up to
 *   the summation order of the runtime's batched matrix products;
 * - only the requested positions of each row go through the prediction head and leave the graph:
 *   the final hidden state the head reads is gathered, GatherND(h, positions [rows, P, 1],
 *   batch_dims 1), before the head (heads work position by position), so `batch.logits` is
 *   [rows, P, vocab] and the vocabulary-wide product runs on P positions a row, not all of them
 *   (where the head's input is not found, the logits are gathered instead). For encoder-decoders
 *   the positions are decoder positions, as the logits are.
 *
 * Rows per run: as many as `memoryMB` (default 1024) allows by engine/batch-memory.ts's forward
 * estimate plus the returned rows, at most 256.
 *
 * `targetLogProbabilities` grows the same graph further ('batch-targets') for scoring: at each
 * gathered position the log-probability of one given token, log-softmax over the vocabulary in
 * float64 in the graph (max, Σ exp(x − max), x[target] − max − log Σ, as a float64 loop over the
 * float32 logits does), so that one float64 a position leaves the graph instead of a
 * vocabulary-wide row (CrowS-Pairs' masked copies: bias/crows-pairs.ts).
 */
import { AttnscopeError } from '../core/errors.js';
import type { BuildContext, ModelInputs, TapRequest } from '../models/architecture.js';
import { headInput } from '../models/head-input.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { toFloat32 } from './assemble.js';
import { DEFAULT_BATCH_MEMORY_MB, forwardItemBytes, itemsPerRun, memoryShape } from './batch-memory.js';
import type { GraphExtension, Model } from './model.js';

/** One input of a batch: its token ids, or inputs with token types / decoder ids. */
export type BatchRow = ArrayLike<number> | ModelInputs;

export interface LogitsBatchOptions {
  /**
   * The positions whose logits to return: one list for every row, or a list per row (lists may
   * differ in length). Default: every position. Encoder-decoders: decoder positions.
   */
  positions?: readonly number[] | readonly (readonly number[])[];
  /** Return log-probabilities (log-softmax over the vocabulary, computed in float64) instead of logits. */
  logProbabilities?: boolean;
  /** Working-memory budget of one run in MiB (default 1024). */
  memoryMB?: number;
  /** Rows per run (default: what memoryMB allows, at most 256). */
  batchSize?: number;
}

export interface BatchLogitsRow {
  /** The positions returned, in the order asked. */
  positions: number[];
  /** [positions, vocab] row-major (discriminator heads that score each token with one number: [positions, 1]). */
  data: Float32Array;
}

export interface BatchLogits {
  /** One entry per input row, in order. */
  rows: BatchLogitsRow[];
  /** Width of each position's scores (the vocabulary; 1 for discriminator heads). */
  vocab: number;
  kind: 'logits' | 'logProbabilities';
  /** Rows per session run, and the runs made. */
  batch: { size: number; runs: number };
}

const POSITIONS = 'batch.positions';
const OUTPUT = 'batch.logits';
// Separate attention ops: onnxruntime's fused Attention op wants queries and keys of one batch size,
// and here rows of the batch can attend to keys fed once (an encoder's output, broadcast).
const TAPS: TapRequest = { attention: false, qk: false, lastHiddenState: true, logits: true, decomposedAttention: true };

/** The logits graph with batchable inputs and the requested positions gathered (see the file header). */
function batchGraph(ctx: BuildContext): void {
  const { g, config } = ctx;
  if (!g.graphNodes.some((n) => n.outputs.includes('logits'))) {
    throw new AttnscopeError(`${config.modelType}: the checkpoint has no prediction head (no logits) to score with`);
  }
  g.batchInputs();
  const positions = g.input(POSITIONS, 'int64', ['batch', 'positions', 1]);
  // The heads work position by position: gathering the final hidden state they read (the value the
  // last_hidden_state tap reads; the nodes are in topological order) before them spares the head
  // (a vocabulary-wide product) every position not asked for. Else gather the logits.
  const hidden = headInput(g);
  if (hidden !== undefined) {
    g.intercept({ name: hidden }, (h) => g.op('GatherND', [h, positions], { batch_dims: 1 }));
    g.output({ name: 'logits' }, OUTPUT);
  } else {
    g.output(g.op('GatherND', [{ name: 'logits' }, positions], { batch_dims: 1 }), OUTPUT);
  }
  g.dropOutput('logits');
  g.dropOutput('last_hidden_state');
}

const EXTENSION: GraphExtension = { key: 'batch-logits', extend: batchGraph };

const TARGETS = 'batch.targets';
const TARGET_OUTPUT = 'batch.targetLogProbabilities';
const TARGET_WIDTH = 'batch.vocab';
/** ONNX TensorProto.DOUBLE. */
const DOUBLE = 11;

/** batchGraph, then log P(target) at each gathered position, in float64 (see the file header). */
function targetGraph(ctx: BuildContext): void {
  batchGraph(ctx);
  const { g } = ctx;
  const targets = g.input(TARGETS, 'int64', ['batch', 'positions', 1]);
  // [rows, positions, width] (a discriminator head's [rows, positions] gets a width of 1).
  const x = g.op('Cast', [g.reshape({ name: OUTPUT }, [0, 0, -1])], { to: DOUBLE });
  const last = g.ints([-1]);
  const max = g.op('ReduceMax', [x, last], { keepdims: 1 });
  const sum = g.op('ReduceSum', [g.op('Exp', [g.op('Sub', [x, max])]), last], { keepdims: 1 });
  // The head's width, returned; targets past it are clamped here (so that the run does not fail)
  // and refused after it.
  const vocab = g.shape(x, 2, 3);
  const clamped = g.op('Min', [targets, g.op('Sub', [vocab, g.ints([1])])]);
  const picked = g.op('GatherElements', [x, clamped], { axis: 2 });
  g.output(g.op('Sub', [g.op('Sub', [picked, max]), g.op('Log', [sum])]), TARGET_OUTPUT, 'float64');
  g.output(vocab, TARGET_WIDTH, 'int64');
  g.dropOutput(OUTPUT);
}

const TARGET_EXTENSION: GraphExtension = { key: 'batch-targets', extend: targetGraph };

function rowInputs(row: BatchRow): ModelInputs {
  if (typeof (row as ModelInputs).inputIds === 'object') return row as ModelInputs;
  return { inputIds: Array.from(row as ArrayLike<number>) };
}

function sameTensor(a: RuntimeTensor, b: RuntimeTensor): boolean {
  if (a.type !== b.type || a.dims.length !== b.dims.length || a.dims.some((d, i) => d !== b.dims[i])) return false;
  const x = new Uint8Array(a.data.buffer, a.data.byteOffset, a.data.byteLength);
  const y = new Uint8Array(b.data.buffer, b.data.byteOffset, b.data.byteLength);
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** Feeds of `name` for the rows: the shared one when every row has the same, else the rows stacked on the first axis. */
function stackFeeds(name: string, feeds: readonly RuntimeTensor[]): RuntimeTensor {
  const first = feeds[0]!;
  if (feeds.every((f) => sameTensor(f, first))) return first;
  if (first.dims[0] !== 1 || feeds.some((f) => f.dims.length !== first.dims.length || f.dims.some((d, i) => d !== first.dims[i]))) {
    throw new AttnscopeError(`batched run: graph input ${name} differs between the rows and cannot be stacked (dims ${first.dims.join('×')}); the rows must be alike but for their tokens`);
  }
  const per = first.data.length;
  if (first.type === 'int64') {
    const data = new BigInt64Array(per * feeds.length);
    feeds.forEach((f, r) => data.set(f.data as BigInt64Array, r * per));
    return { type: 'int64', dims: [feeds.length, ...first.dims.slice(1)], data };
  }
  const data = new Float32Array(per * feeds.length);
  feeds.forEach((f, r) => data.set(toFloat32(f), r * per));
  return { type: 'float32', dims: [feeds.length, ...first.dims.slice(1)], data };
}

/** Log-softmax of each `width`-wide row of `x`, in float64, in place (stored as float32). */
function logSoftmaxRows(x: Float32Array, width: number): void {
  for (let o = 0; o < x.length; o += width) {
    let max = -Infinity;
    for (let j = 0; j < width; j++) max = Math.max(max, x[o + j]!);
    let sum = 0;
    for (let j = 0; j < width; j++) sum += Math.exp(x[o + j]! - max);
    const log = max + Math.log(sum);
    for (let j = 0; j < width; j++) x[o + j] = x[o + j]! - log;
  }
}

/**
 * The logits (or log-probabilities) of `rows`, inputs of one length, at the requested positions,
 * in as few session runs as the memory bound allows (see the file header). Row r of the result is
 * what `model.run` on rows[r] alone gives at those positions, to float32 rounding.
 */
export async function logitsBatch(model: Model, rows: readonly BatchRow[], options: LogitsBatchOptions = {}): Promise<BatchLogits> {
  const { inputs, wanted, width, size } = prepareBatch(model, rows, options, (w, vocab) => 4 * w * vocab);
  const session = await model.session(TAPS, EXTENSION);
  const names = session.inputNames.filter((x) => x !== POSITIONS);
  const out: BatchLogitsRow[] = [];
  let vocab = 0;
  let runs = 0;
  for (let start = 0; start < inputs.length; start += size) {
    const chunk = inputs.slice(start, start + size);
    const feeds = chunkFeeds(model, names, chunk, wanted.slice(start, start + size), width);
    const result = await session.run(feeds);
    runs++;
    const t = result[OUTPUT];
    if (!t) throw new Error(`graph output ${OUTPUT} missing`);
    const data = toFloat32(t);
    vocab = t.dims.length >= 3 ? t.dims[2]! : 1;
    if (vocab === 1 && options.logProbabilities) throw new AttnscopeError(`batched logits: ${model.name}'s head scores each position with one logit; there is no distribution to take log-probabilities of`);
    for (let b = 0; b < chunk.length; b++) {
      const p = wanted[start + b]!;
      const rowData = data.slice(b * width * vocab, (b * width + p.length) * vocab);
      if (options.logProbabilities) logSoftmaxRows(rowData, vocab);
      out.push({ positions: p, data: rowData });
    }
  }
  return { rows: out, vocab, kind: options.logProbabilities ? 'logProbabilities' : 'logits', batch: { size, runs } };
}

/** The rows' inputs checked, the positions of each, the positions' width and the rows per run. */
function prepareBatch(model: Model, rows: readonly BatchRow[], options: LogitsBatchOptions, returnedBytes: (width: number, vocab: number) => number): { inputs: ModelInputs[]; wanted: number[][]; width: number; size: number } {
  if (rows.length === 0) throw new AttnscopeError('batched logits: no rows given');
  const inputs = rows.map(rowInputs);
  const kind = model.architectureInfo.kind;
  const len = (x: ModelInputs): number => (kind === 'encoder-decoder' ? x.decoderInputIds?.length ?? 0 : x.inputIds.length);
  const n = len(inputs[0]!);
  if (n === 0) throw new AttnscopeError(kind === 'encoder-decoder' ? `batched logits: ${model.name} is an encoder-decoder; each row needs decoder input ids` : 'batched logits: row 0 has no tokens');
  inputs.forEach((x, r) => {
    if (x.inputIds.length !== inputs[0]!.inputIds.length || len(x) !== n || (x.typeIds?.length ?? 0) !== (inputs[0]!.typeIds?.length ?? 0)) {
      throw new AttnscopeError(`batched logits: row ${r} has ${x.inputIds.length} tokens${kind === 'encoder-decoder' ? ` and ${len(x)} decoder tokens` : ''}, row 0 ${inputs[0]!.inputIds.length}${kind === 'encoder-decoder' ? ` and ${n}` : ''}; the rows of a batch must have one length`);
    }
    if (x.pastLength) throw new AttnscopeError(`batched logits: row ${r} has a pastLength; batched runs have no key/value cache`);
  });
  const all = Array.from({ length: n }, (_, i) => i);
  const wanted: number[][] = inputs.map((_, r) => {
    const p = options.positions;
    if (p === undefined) return all;
    const list = p.length > 0 && Array.isArray(p[0]) ? (p as readonly (readonly number[])[])[r] : (p as readonly number[]);
    if (!list) throw new AttnscopeError(`batched logits: positions has ${p.length} lists for ${inputs.length} rows`);
    for (const q of list) {
      if (!Number.isInteger(q) || q < 0 || q >= n) throw new AttnscopeError(`batched logits: position ${q} of row ${r} is out of range; allowed: 0 to ${n - 1}`);
    }
    return [...list];
  });
  if (options.positions !== undefined && options.positions.length > 0 && Array.isArray(options.positions[0]) && options.positions.length !== inputs.length) {
    throw new AttnscopeError(`batched logits: positions has ${options.positions.length} lists for ${inputs.length} rows`);
  }
  const width = Math.max(1, ...wanted.map((w) => w.length));
  const memoryMB = options.memoryMB ?? DEFAULT_BATCH_MEMORY_MB;
  if (!(memoryMB >= 1 && memoryMB <= 1 << 20)) throw new AttnscopeError(`batched logits: memoryMB ${memoryMB} is out of range; allowed: 1 to 1048576`);
  if (options.batchSize !== undefined && (!Number.isInteger(options.batchSize) || options.batchSize < 1 || options.batchSize > 4096)) {
    throw new AttnscopeError(`batched logits: batchSize ${options.batchSize} is out of range; allowed: an integer from 1 to 4096`);
  }
  const shape = memoryShape(model);
  const tokens = inputs[0]!.inputIds.length + (kind === 'encoder-decoder' ? n : 0);
  const size = options.batchSize ?? itemsPerRun(forwardItemBytes(shape, tokens) + returnedBytes(width, shape.vocab), memoryMB, 256);
  return { inputs, wanted, width, size };
}

/** One run's feeds: the rows' inputs stacked (or shared) and the positions to gather, padded to `width` (repeats of position 0 of the row's list, or 0). */
function chunkFeeds(model: Model, names: readonly string[], chunk: readonly ModelInputs[], wanted: readonly (readonly number[])[], width: number): Record<string, RuntimeTensor> {
  const perRow = chunk.map((x) => model.feedsFor(names, x));
  const feeds: Record<string, RuntimeTensor> = {};
  for (const name of names) feeds[name] = stackFeeds(name, perRow.map((f) => f[name]!));
  const idx = new BigInt64Array(chunk.length * width);
  chunk.forEach((_, b) => wanted[b]!.forEach((q, k) => { idx[b * width + k] = BigInt(q); }));
  feeds[POSITIONS] = { type: 'int64', dims: [chunk.length, width, 1], data: idx };
  return feeds;
}

export interface TargetLogProbabilitiesOptions {
  /** The positions of each row (one list per row; lists may differ in length). Encoder-decoders: decoder positions. */
  positions: readonly (readonly number[])[];
  /** The token id to score at each of a row's positions (one list per row, as long as its positions). */
  targets: readonly (readonly number[])[];
  /** Working-memory budget of one run in MiB (default 1024). */
  memoryMB?: number;
  /** Rows per run (default: what memoryMB allows, at most 256). */
  batchSize?: number;
}

export interface TargetLogProbabilities {
  /** Per input row, log P(target) at each of its positions, in the order asked (float64, from the float32 logits). */
  rows: Float64Array[];
  /** Rows per session run, and the runs made. */
  batch: { size: number; runs: number };
}

/**
 * log P(targets[r][k] | rows[r]) at positions[r][k], rows of one length, in as few runs as the
 * memory bound allows: logitsBatch's graph with the log-softmax taken in the graph, in float64,
 * at the asked positions only (see the file header). Equals log-softmax in float64 of what
 * `model.run` on rows[r] alone gives there, to float32 rounding of the logits.
 */
export async function targetLogProbabilities(model: Model, rows: readonly BatchRow[], options: TargetLogProbabilitiesOptions): Promise<TargetLogProbabilities> {
  // The gathered logits, their float64 copy and its exponentials.
  const { inputs, wanted, width, size } = prepareBatch(model, rows, options, (w, vocab) => 20 * w * vocab);
  if (options.targets.length !== inputs.length) throw new AttnscopeError(`batched log-probabilities: targets has ${options.targets.length} lists for ${inputs.length} rows`);
  options.targets.forEach((list, r) => {
    if (list.length !== wanted[r]!.length) throw new AttnscopeError(`batched log-probabilities: row ${r} has ${wanted[r]!.length} positions and ${list.length} targets; give one target a position`);
    for (const id of list) {
      if (!Number.isInteger(id) || id < 0) throw new AttnscopeError(`batched log-probabilities: target ${id} of row ${r} is out of range; allowed: a token id from 0`);
    }
  });
  const session = await model.session(TAPS, TARGET_EXTENSION);
  const names = session.inputNames.filter((x) => x !== POSITIONS && x !== TARGETS);
  const out: Float64Array[] = [];
  let runs = 0;
  for (let start = 0; start < inputs.length; start += size) {
    const chunk = inputs.slice(start, start + size);
    const feeds = chunkFeeds(model, names, chunk, wanted.slice(start, start + size), width);
    const ids = new BigInt64Array(chunk.length * width);
    chunk.forEach((_, b) => options.targets[start + b]!.forEach((id, k) => { ids[b * width + k] = BigInt(id); }));
    feeds[TARGETS] = { type: 'int64', dims: [chunk.length, width, 1], data: ids };
    const result = await session.run(feeds);
    runs++;
    const t = result[TARGET_OUTPUT];
    const w = result[TARGET_WIDTH];
    if (!t || t.type !== 'float64' || !w) throw new Error(`graph output ${TARGET_OUTPUT} missing`);
    const vocab = Number((w.data as BigInt64Array)[0]);
    if (vocab < 2) throw new AttnscopeError(`batched log-probabilities: ${model.name}'s head scores each position with one logit; there is no distribution to take log-probabilities of`);
    const over = options.targets.slice(start, start + size).flat().find((id) => id >= vocab);
    if (over !== undefined) throw new AttnscopeError(`batched log-probabilities: target ${over} is out of range; allowed: 0 to ${vocab - 1} (${model.name}'s vocabulary)`);
    const data = t.data as Float64Array;
    for (let b = 0; b < chunk.length; b++) out.push(data.slice(b * width, b * width + wanted[start + b]!.length));
  }
  return { rows: out, batch: { size, runs } };
}
