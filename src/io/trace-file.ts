/**
 * Reading and writing trace files: JSON, and the binary `.safetensors` layout of DESIGN.md
 * (which PyTorch users can write with `safetensors.torch.save_file`). Writes are atomic.
 */
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { type AttributionTensor, attributionsFromTensors, attributionsMetaJson, attributionTensors, isAttributionTensor } from '../core/attribution-format.js';
import { isLayerTensor, layerFieldsFromTensors, layerTensors, type LayerTensor } from '../core/layer-format.js';
import { AttnscopeError, quote } from '../core/errors.js';
import { fileError } from './file-error.js';
import {
  STACK_NAMES,
  TRACE_FORMAT,
  attentionShapes,
  TRACE_VERSION,
  inferModelInfo,
  layerStackFrom,
  modelFromJson,
  routingFromTensors,
  type RoutingTensor,
  routingMetaJson,
  scoreBiasStacks,
  scorePositionBiasStacks,
  scoresFromJson,
  scoresMetaJson,
  tokensFromJson,
  tokensToJson,
  traceFromJson,
  validateTrace,
  writeTraceJson,
} from '../core/trace-format.js';
import { attentionWarnings } from '../core/trace-check.js';
import type { Routing, StackMap, Trace } from '../core/trace.js';
import { JsonChunkWriter } from './json-writer.js';
import { readJsonFile } from './json-file.js';
import { openSafetensors, writeSafetensorsStreamed, type SafetensorsData, type SafetensorsTensorInput, type WritableDType } from './safetensors.js';

/** A tensor of a trace file: its data whole, or its parts in order (a stack's layers, never copied into one array). */
type TraceTensor = Omit<SafetensorsTensorInput, 'data'> & { data: SafetensorsData };

export type TraceFileFormat = 'json' | 'safetensors';

export function traceFormatOf(path: string): TraceFileFormat {
  return path.toLowerCase().endsWith('.safetensors') ? 'safetensors' : 'json';
}

/** Writes byte chunks to a stream, waiting for drain so memory stays bounded. */
async function writeChunks(stream: Writable, chunks: readonly Uint8Array[]): Promise<void> {
  for (const chunk of chunks) {
    if (stream.errored) throw stream.errored;
    if (!stream.write(chunk)) {
      if (stream.errored || stream.destroyed) throw stream.errored ?? new Error('stream closed');
      await once(stream, 'drain');
    }
  }
}

/** Streams the JSON trace (io/json-writer.ts's fast float32 text) in chunks of about 1 MB. */
async function streamTraceJson(stream: Writable, trace: Trace): Promise<number> {
  const out = new JsonChunkWriter();
  for (const _ of writeTraceJson(trace, out)) await writeChunks(stream, out.take());
  await writeChunks(stream, out.finish());
  return out.bytes;
}

/** Writes the JSON trace to a stream (e.g. stdout); resolves to the number of bytes written. */
export function writeTraceJsonTo(stream: Writable, trace: Trace): Promise<number> {
  return streamTraceJson(stream, trace);
}

/**
 * Writes `path` through a temporary file in the same directory (`.<name>.<pid>.<random>.tmp`),
 * renamed on success and removed on any failure, so `path` is either complete or untouched.
 */
export async function writeFileAtomically(path: string, write: (stream: Writable) => Promise<void>): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const stream = createWriteStream(tmp);
  // An open error (e.g. no such directory) is raised by the writes or by 'finish' below.
  let failure: unknown;
  stream.on('error', (err) => (failure ??= err));
  try {
    await write(stream);
    stream.end();
    await new Promise<void>((resolve, reject) => {
      if (failure) reject(failure);
      stream.once('finish', resolve);
      stream.once('error', reject);
    });
    await rename(tmp, path);
  } catch (err) {
    stream.destroy();
    await once(stream, 'close').catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw describeWriteError(path, failure ?? err);
  }
}

/** File-system errors of a write as one line naming the file. */
function describeWriteError(path: string, err: unknown): unknown {
  if (err instanceof AttnscopeError) return new AttnscopeError(`${path}: ${err.message}`);
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'ENOENT') return new AttnscopeError(`${path}: cannot write (no such directory: ${dirname(path)})`);
  if (code === 'EACCES' || code === 'EPERM') return new AttnscopeError(`${path}: cannot write (permission denied)`);
  if (code === 'EISDIR') return new AttnscopeError(`${path}: is a directory`);
  if (code === 'ENOSPC') return new AttnscopeError(`${path}: cannot write (no space left on the device)`);
  return err;
}

async function writeJsonFile(path: string, trace: Trace): Promise<void> {
  await writeFileAtomically(path, async (stream) => {
    await streamTraceJson(stream, trace);
  });
}

/** Each stack of `map` as one tensor [layers, …dims] whose parts are its layers' arrays (written where they lie). */
function stackTensors(prefix: string, map: StackMap | undefined, dtype: WritableDType): TraceTensor[] {
  const out: TraceTensor[] = [];
  for (const name of STACK_NAMES) {
    const stack = map?.[name];
    if (!stack) continue;
    out.push({ name: `${prefix}.${name}`, dtype, shape: [stack.layers.length, ...stack.dims], data: stack.layers });
  }
  return out;
}

/**
 * The routing tensors of a `.safetensors` trace: `routing.probabilities` [layers, tokens, experts],
 * `routing.selected` [layers, tokens, topK] (expert indices) and `routing.weights` [layers, tokens,
 * topK]; always F32, which holds the indices exactly.
 */
function routingTensors(routing: Routing, tokens: number): SafetensorsTensorInput[] {
  const n = routing.layers.length;
  const pack = (name: string, cols: number, part: (l: Routing['layers'][number]) => ArrayLike<number>): SafetensorsTensorInput => {
    const data = new Float32Array(n * tokens * cols);
    routing.layers.forEach((l, i) => data.set(part(l), i * tokens * cols));
    return { name: `routing.${name}`, dtype: 'F32', shape: [n, tokens, cols], data };
  };
  return [
    pack('probabilities', routing.experts, (l) => l.probabilities.data),
    pack('selected', routing.topK, (l) => l.selected),
    pack('weights', routing.topK, (l) => l.weights),
  ];
}

/** Writes a trace as `.safetensors` (F32 by default, F16 to halve the size). */
export async function writeTraceSafetensors(path: string, trace: Trace, dtype: WritableDType = 'F32'): Promise<void> {
  const metadata: Record<string, string> = {
    format: TRACE_FORMAT,
    version: String(TRACE_VERSION),
    model: JSON.stringify(trace.model),
    tokens: JSON.stringify(tokensToJson(trace.tokens)),
  };
  if (trace.decoderTokens) metadata.decoderTokens = JSON.stringify(tokensToJson(trace.decoderTokens));
  if (trace.generation) metadata.generation = JSON.stringify(trace.generation);
  if (trace.predictions) metadata.predictions = JSON.stringify(trace.predictions);
  const tensors: TraceTensor[] = [
    ...stackTensors('attention', trace.attention, dtype),
    ...stackTensors('queries', trace.queries, dtype),
    ...stackTensors('keys', trace.keys, dtype),
    ...stackTensors('scoreBias', scoreBiasStacks(trace.scores), dtype),
    ...stackTensors('scorePositionBias', scorePositionBiasStacks(trace.scores), dtype),
  ];
  if (trace.scores) metadata.scores = scoresMetaJson(trace.scores);
  if (trace.routing) {
    metadata.routing = routingMetaJson(trace.routing);
    tensors.push(...routingTensors(trace.routing, trace.tokens.length));
  }
  if (trace.attributions) {
    // Gradients keep F32 (their scale is not a probability's): F16 would flush small ones to 0.
    metadata.attributions = attributionsMetaJson(trace.attributions);
    tensors.push(...attributionTensors(trace.attributions).map((t) => ({ ...t, dtype: 'F32' as const })));
  }
  // Values, embeddings, the residual stream, MLP activations and the logit lens: F32 (hidden states are not probabilities).
  const layers = layerTensors(trace);
  Object.assign(metadata, layers.metadata);
  tensors.push(...layers.tensors.map((t) => ({ ...t, dtype: 'F32' as const })));
  await writeSafetensorsStreamed(path, tensors, (t) => (t as TraceTensor).data, metadata);
}

/** Writes a trace file, choosing the format from the extension. */
export async function writeTraceFile(path: string, trace: Trace): Promise<void> {
  if (traceFormatOf(path) === 'safetensors') await writeTraceSafetensors(path, trace);
  else await writeJsonFile(path, trace);
}

function parseJsonMeta(text: string | undefined, where: string): unknown {
  if (text === undefined) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new AttnscopeError(`${where} is not valid JSON`);
  }
}

async function readTraceSafetensors(path: string): Promise<Trace> {
  const file = await openSafetensors(path);
  try {
    const meta = file.metadata;
    if (meta.format !== TRACE_FORMAT) {
      throw new AttnscopeError(`${path}: not an attnscope trace (metadata format is ${quote(meta.format ?? null)}; a model checkpoint is opened as a directory)`);
    }
    if (meta.version !== undefined && meta.version !== String(TRACE_VERSION)) {
      throw new AttnscopeError(`${path}: unsupported trace version ${quote(meta.version)}`);
    }
    const maps: Record<'attention' | 'queries' | 'keys' | 'scoreBias' | 'scorePositionBias', StackMap> = { attention: {}, queries: {}, keys: {}, scoreBias: {}, scorePositionBias: {} };
    const routing: Partial<Record<'probabilities' | 'selected' | 'weights', RoutingTensor>> = {};
    const attributionParts: AttributionTensor[] = [];
    const layerParts: LayerTensor[] = [];
    for (const name of file.names()) {
      if (isLayerTensor(name)) {
        const t = await file.get(name);
        layerParts.push({ name, shape: [...t.shape], data: t.data });
        continue;
      }
      if (isAttributionTensor(name)) {
        const t = await file.get(name);
        attributionParts.push({ name, shape: [...t.shape], data: t.data });
        continue;
      }
      const [kind, stack] = name.split('.') as [string, string];
      if (kind === 'routing' && (stack === 'probabilities' || stack === 'selected' || stack === 'weights')) {
        routing[stack] = await file.get(name);
        continue;
      }
      if (!(kind in maps) || !STACK_NAMES.includes(stack as never)) {
        throw new AttnscopeError(`${path}: unexpected tensor ${quote(name)} (expected attention|queries|keys|scoreBias|scorePositionBias|attentionGrad|headImportance.<self|encoder|decoder|cross>, routing.<probabilities|selected|weights>, attribution.<name> or embeddingGrad)`);
      }
      const t = await file.get(name);
      maps[kind as keyof typeof maps][stack as keyof StackMap] = layerStackFrom(t.data, t.shape, `${path}: ${name}`);
    }
    const hasQk = Object.keys(maps.queries).length > 0;
    const trace: Trace = {
      model: modelFromJson(parseJsonMeta(meta.model, `${path}: metadata model`), inferModelInfo(basename(path), maps.attention, hasQk ? maps.keys : undefined, hasQk ? maps.queries : undefined)),
      tokens: tokensFromJson(parseJsonMeta(meta.tokens, `${path}: metadata tokens`), `${path}: metadata tokens`),
      attention: maps.attention,
    };
    if (meta.decoderTokens !== undefined) {
      trace.decoderTokens = tokensFromJson(parseJsonMeta(meta.decoderTokens, `${path}: metadata decoderTokens`), `${path}: metadata decoderTokens`);
    }
    const generation = parseJsonMeta(meta.generation, `${path}: metadata generation`);
    if (typeof generation === 'object' && generation !== null) trace.generation = generation as Trace['generation'];
    const predictions = parseJsonMeta(meta.predictions, `${path}: metadata predictions`);
    if (Array.isArray(predictions)) trace.predictions = predictions as Trace['predictions'];
    if (hasQk) {
      trace.queries = maps.queries;
      trace.keys = maps.keys;
    }
    const scores = parseJsonMeta(meta.scores, `${path}: metadata scores`);
    if (scores !== undefined || Object.keys(maps.scoreBias).length > 0 || Object.keys(maps.scorePositionBias).length > 0) {
      trace.scores = scoresFromJson(scores ?? {}, `${path}: metadata scores`, attentionShapes(trace), maps.scoreBias, maps.scorePositionBias);
    }
    if (meta.routing !== undefined || Object.keys(routing).length > 0) {
      trace.routing = routingFromTensors(parseJsonMeta(meta.routing, `${path}: metadata routing`) ?? null, routing, path, trace.tokens.length, trace.model.numLayers);
    }
    validateTrace(trace, path);
    if (meta.attributions !== undefined || attributionParts.length > 0) {
      trace.attributions = attributionsFromTensors(parseJsonMeta(meta.attributions, `${path}: metadata attributions`) ?? null, attributionParts, trace, path);
    }
    if (layerParts.length > 0 || meta.logitLens !== undefined) layerFieldsFromTensors(layerParts, parseJsonMeta(meta.logitLens, `${path}: metadata logitLens`), trace, path);
    return trace;
  } finally {
    await file.close();
  }
}

/** Reads a JSON or `.safetensors` trace file. */
export async function readTraceFile(path: string): Promise<Trace> {
  if (traceFormatOf(path) === 'safetensors') return readTraceSafetensors(path);
  return readTraceJson(path);
}

/**
 * Reads a JSON trace file: up to `wholeBytes` (default JSON_WHOLE_BYTES) the text is parsed in one
 * piece (V8's parser, fastest); above it, where one string could not hold the file (V8's strings
 * end near 512 MB), in chunks (io/json-file.ts). The same trace either way.
 */
export async function readTraceJson(path: string, wholeBytes: number = JSON_WHOLE_BYTES): Promise<Trace> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch (e) {
    throw fileError(path, e);
  }
  if (size > wholeBytes) return traceFromJson(await readJsonFile(path), path);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw fileError(path, e);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new AttnscopeError(`${path}: not valid JSON`);
  }
  return traceFromJson(json, path);
}

/** JSON trace files up to this size are parsed as one string, larger ones in chunks (io/json-file.ts). */
export const JSON_WHOLE_BYTES = 1 << 28;

/** A trace file's contents, with what looks wrong in its numbers. */
export interface TraceFileContents {
  trace: Trace;
  /** One message per attention stack holding values that are not probabilities (NaN, infinite, negative, above 1). */
  warnings: string[];
}

/** Reads a trace file (as readTraceFile) and checks its attention values; they still open, with warnings. */
export async function openTraceFile(path: string): Promise<TraceFileContents> {
  const trace = await readTraceFile(path);
  return { trace, warnings: attentionWarnings(trace).map((w) => `${path}: ${w}`) };
}
