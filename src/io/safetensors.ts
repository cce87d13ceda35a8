/**
 * safetensors: an 8-byte little-endian header length N, N bytes of JSON
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {string: string}}`), then
 * the tensor bytes, offsets relative to the end of the header. Used for checkpoints and for binary
 * traces (see DESIGN.md), so this module both reads (any dtype → float32) and writes.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { concatBytes } from '../core/bytes.js';
import { AttnscopeError, quote, sanitize } from '../core/errors.js';
import { floatToHalf, numel, type FloatTensor } from '../core/tensor.js';
import { memorySource, openFileSource, type ByteSource } from './byte-source.js';
import { DTYPE_BYTES, decodeToFloat32, isStoredDType } from './dtypes.js';
import { openSharded } from './sharded.js';
import type { StoredDType, WeightStore } from './weights.js';

/**
 * Files and tensors of any size are read and written in pieces of at most this many bytes: no
 * single buffer over 4 GiB (V8's typed arrays stop at 2^32 elements, so a 5.6 GB attention stack
 * cannot be one Uint8Array), and no second full copy of a tensor while writing it.
 */
export const DEFAULT_CHUNK_BYTES = 64 * 2 ** 20;

/** The piece size of reads and writes (tests pass small sizes to exercise the chunking). */
export interface ChunkOptions {
  /** Bytes per positioned read or write (default 64 MiB; rounded down to a multiple of 8, at least 8). */
  chunkBytes?: number;
}

function chunkBytesOf(options: ChunkOptions): number {
  const n = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
  if (!Number.isSafeInteger(n) || n < 8) throw new AttnscopeError(`chunkBytes ${n}: allowed: an integer of at least 8`);
  return Math.floor(n / 8) * 8;
}

/** Where one tensor sits in the file. */
export interface SafetensorsTensorInfo {
  readonly dtype: StoredDType;
  readonly shape: readonly number[];
  /** Absolute byte range [begin, end) in the file. */
  readonly begin: number;
  readonly end: number;
}

/** Same limit as the reference implementation: real headers are far smaller. */
const MAX_HEADER_BYTES = 100_000_000;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function isObject(value: Json | undefined): value is { [key: string]: Json } {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isCount(value: Json | undefined): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

function parseMetadata(label: string, value: Json): Record<string, string> {
  if (!isObject(value)) throw new AttnscopeError(`${label}: __metadata__ must be an object of strings`);
  const out: Record<string, string> = {};
  for (const [key, v] of Object.entries(value)) {
    if (typeof v !== 'string') {
      throw new AttnscopeError(`${label}: __metadata__ value ${quote(key)} must be a string, got ${quote(v)}`);
    }
    out[key] = v;
  }
  return out;
}

function parseEntry(label: string, name: string, value: Json, dataStart: number, dataSize: number): SafetensorsTensorInfo {
  const where = `${label}: tensor ${quote(name)}`;
  if (!isObject(value)) throw new AttnscopeError(`${where} must be an object with dtype, shape and data_offsets`);
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== 'string') throw new AttnscopeError(`${where} has no dtype`);
  if (!isStoredDType(dtype)) {
    throw new AttnscopeError(`${where} has unknown dtype ${quote(dtype)} (supported: ${Object.keys(DTYPE_BYTES).join(', ')})`);
  }
  if (!Array.isArray(shape) || !shape.every(isCount)) {
    throw new AttnscopeError(`${where} has an invalid shape ${quote(shape)} (allowed: a list of non-negative integers)`);
  }
  const dims = shape as number[];
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    throw new AttnscopeError(`${where} has invalid data_offsets ${quote(offsets)} (allowed: [begin, end], non-negative integers)`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end || end > dataSize) {
    throw new AttnscopeError(
      `${where} has data_offsets [${begin}, ${end}] out of range (the data section has ${dataSize} bytes)`,
    );
  }
  const bytes = numel(dims) * DTYPE_BYTES[dtype];
  if (bytes !== end - begin) {
    throw new AttnscopeError(
      `${where} has data_offsets [${begin}, ${end}] (${end - begin} bytes) but shape ${sanitize(`[${dims.join(', ')}]`, 60)} of ${dtype} needs ${bytes} bytes`,
    );
  }
  return { dtype, shape: dims, begin: dataStart + begin, end: dataStart + end };
}

function checkOverlaps(label: string, tensors: Map<string, SafetensorsTensorInfo>): void {
  const sorted = [...tensors].filter(([, t]) => t.end > t.begin).sort((a, b) => a[1].begin - b[1].begin);
  for (let i = 1; i < sorted.length; i++) {
    const [prevName, prev] = sorted[i - 1]!;
    const [name, cur] = sorted[i]!;
    if (cur.begin < prev.end) throw new AttnscopeError(`${label}: tensors ${quote(prevName)} and ${quote(name)} overlap`);
  }
}

/** Reads and validates the header of a safetensors source. */
async function readHeader(source: ByteSource) {
  const { label, size } = source;
  if (size < 8) {
    throw new AttnscopeError(`${label}: not a safetensors file (${size} bytes, shorter than the 8-byte header length)`);
  }
  const lengthBytes = await source.read(0, 8);
  const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
  if (headerLength > BigInt(size - 8)) {
    throw new AttnscopeError(
      `${label}: header length ${headerLength} runs past the end of the file (${size} bytes); the file is truncated or not safetensors`,
    );
  }
  const n = Number(headerLength);
  if (n > MAX_HEADER_BYTES) throw new AttnscopeError(`${label}: header length ${n} is implausibly large`);
  let header: Json;
  try {
    header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(await source.read(8, n))) as Json;
  } catch (err) {
    throw new AttnscopeError(`${label}: header is not valid JSON (${sanitize(String((err as Error).message), 160)})`, { cause: err });
  }
  if (!isObject(header)) throw new AttnscopeError(`${label}: header is not a JSON object`);
  const dataStart = 8 + n;
  let metadata: Record<string, string> = {};
  const tensors = new Map<string, SafetensorsTensorInfo>();
  for (const [name, value] of Object.entries(header)) {
    if (name === '__metadata__') metadata = parseMetadata(label, value);
    else tensors.set(name, parseEntry(label, name, value, dataStart, size - dataStart));
  }
  checkOverlaps(label, tensors);
  return { metadata, tensors };
}

/** An open safetensors file (or in-memory bytes). Reads tensors on demand. */
export class SafetensorsFile implements WeightStore {
  private constructor(
    private readonly source: ByteSource,
    /** The `__metadata__` string map ({} when absent). */
    readonly metadata: Readonly<Record<string, string>>,
    private readonly tensors: ReadonlyMap<string, SafetensorsTensorInfo>,
    /** Tensors larger than this are read in positioned reads of at most this many bytes. */
    private readonly chunkBytes: number = DEFAULT_CHUNK_BYTES,
  ) {}

  /** Parses the header of `source`; takes ownership of it (closed by close(), or on a parse error). */
  static async fromSource(source: ByteSource, options: ChunkOptions = {}): Promise<SafetensorsFile> {
    try {
      const { metadata, tensors } = await readHeader(source);
      return new SafetensorsFile(source, metadata, tensors, chunkBytesOf(options));
    } catch (err) {
      await source.close();
      throw err;
    }
  }

  get label(): string {
    return this.source.label;
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Dtype, shape and file byte range of a tensor. */
  info(name: string): SafetensorsTensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new AttnscopeError(`${this.label}: no tensor named '${name}'`);
    return info;
  }

  shape(name: string): number[] {
    return [...this.info(name).shape];
  }

  dtype(name: string): StoredDType {
    return this.info(name).dtype;
  }

  /** The tensor's bytes exactly as stored (little-endian, its own dtype). */
  getBytes(name: string): Promise<Uint8Array> {
    const { begin, end } = this.info(name);
    return this.source.read(begin, end - begin);
  }

  async get(name: string): Promise<FloatTensor> {
    const info = this.info(name);
    const length = info.end - info.begin;
    if (length <= this.chunkBytes) {
      const bytes = await this.source.read(info.begin, length);
      return { shape: [...info.shape], data: decodeToFloat32(info.dtype, bytes) };
    }
    // Large tensors (a long trace's attention runs past 4 GiB, more than one Uint8Array can hold):
    // positioned reads of whole values, each decoded into its place in the float32 result.
    const size = DTYPE_BYTES[info.dtype];
    const step = Math.max(size, Math.floor(this.chunkBytes / 8) * 8);
    const out = new Float32Array(length / size);
    for (let at = 0; at < length; at += step) {
      const bytes = await this.source.read(info.begin + at, Math.min(step, length - at));
      out.set(decodeToFloat32(info.dtype, bytes), at / size);
    }
    return { shape: [...info.shape], data: out };
  }

  close(): Promise<void> {
    return this.source.close();
  }
}

/** Opens a safetensors file and validates its header. */
export async function openSafetensors(path: string, label: string = path, options: ChunkOptions = {}): Promise<SafetensorsFile> {
  return SafetensorsFile.fromSource(await openFileSource(path, label), options);
}

/** Parses safetensors bytes already in memory (e.g. a file dropped into the browser). */
export function readSafetensorsBytes(bytes: Uint8Array, label: string): Promise<SafetensorsFile> {
  return SafetensorsFile.fromSource(memorySource(bytes, label));
}

/** Reads only the `__metadata__` map of a safetensors file. */
export async function readSafetensorsMetadata(path: string): Promise<Record<string, string>> {
  const file = await openSafetensors(path);
  await file.close();
  return { ...file.metadata };
}

// ---------------------------------------------------------------------------------------------
// Writing

export type WritableDType = 'F32' | 'F16' | 'BF16';

export interface SafetensorsTensorInput {
  name: string;
  dtype: WritableDType;
  shape: readonly number[];
  /**
   * Row-major values. Float32Array values are rounded to `dtype` (nearest even); a Uint16Array
   * (F16/BF16 only) is taken as the raw 16-bit patterns.
   */
  data: Float32Array | Uint16Array;
}


function floatToBFloat16(bits32: number): number {
  if ((bits32 & 0x7fffffff) > 0x7f800000) return ((bits32 >>> 16) & 0x8000) | 0x7fc0; // NaN
  return (bits32 + 0x7fff + ((bits32 >>> 16) & 1)) >>> 16;
}

/**
 * Yields the little-endian bytes of one tensor in chunks of at most `chunkBytes` bytes (views of
 * the data where it is already in its stored form: never one view over all of it, which V8 refuses
 * beyond 2^32 bytes).
 */
function* tensorChunks(t: SafetensorsTensorInput, chunkBytes: number): Generator<Uint8Array> {
  const { data } = t;
  if (t.dtype === 'F32' || data instanceof Uint16Array) {
    for (let i = 0; i < data.byteLength; i += chunkBytes) {
      yield new Uint8Array(data.buffer, data.byteOffset + i, Math.min(chunkBytes, data.byteLength - i));
    }
    return;
  }
  const values = chunkBytes / 2;
  const words = new Uint32Array(data.buffer, data.byteOffset, data.length);
  for (let start = 0; start < data.length; start += values) {
    const count = Math.min(values, data.length - start);
    const out = new Uint16Array(count);
    if (t.dtype === 'F16') for (let i = 0; i < count; i++) out[i] = floatToHalf(data[start + i]!);
    else for (let i = 0; i < count; i++) out[i] = floatToBFloat16(words[start + i]!);
    yield new Uint8Array(out.buffer);
  }
}

/** A tensor's values: one array, or consecutive parts of it (e.g. one per layer) written one after another. */
export type SafetensorsData = Float32Array | Uint16Array | readonly (Float32Array | Uint16Array)[];

/** A tensor to write whose data may come later (writeSafetensorsStreamed). */
export type SafetensorsTensorSpec = Omit<SafetensorsTensorInput, 'data'> & { data?: SafetensorsData };

function checkData(t: SafetensorsTensorSpec, data: SafetensorsData): void {
  const parts = Array.isArray(data) ? data : [data as Float32Array | Uint16Array];
  const length = parts.reduce((n, p) => n + p.length, 0);
  if (numel(t.shape) !== length) {
    throw new AttnscopeError(`cannot write safetensors: tensor '${t.name}' has ${length} values but shape [${t.shape.join(', ')}]`);
  }
  if (t.dtype === 'F32' && !parts.every((p) => p instanceof Float32Array)) {
    throw new AttnscopeError(`cannot write safetensors: F32 tensor '${t.name}' needs a Float32Array`);
  }
}

/** Validates the inputs and builds the padded header; the data follows in input order. */
function encodeHeader(tensors: readonly SafetensorsTensorSpec[], metadata?: Record<string, string>): Uint8Array {
  const header = new Map<string, unknown>();
  if (metadata) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== 'string') throw new AttnscopeError(`safetensors metadata '${key}' must be a string`);
    }
    header.set('__metadata__', metadata);
  }
  let offset = 0;
  for (const t of tensors) {
    if (!t.name || t.name === '__metadata__' || header.has(t.name)) {
      throw new AttnscopeError(`cannot write safetensors: invalid or duplicate tensor name '${t.name}'`);
    }
    if (!t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new AttnscopeError(`cannot write safetensors: tensor '${t.name}' has an invalid shape [${t.shape.join(', ')}]`);
    }
    if (t.data) checkData(t, t.data);
    const bytes = numel(t.shape) * DTYPE_BYTES[t.dtype];
    header.set(t.name, { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, offset + bytes] });
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(Object.fromEntries(header)));
  const padded = Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + padded).fill(0x20, 8);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  return out;
}

/** Serializes tensors to safetensors bytes in memory. */
export function serializeSafetensors(
  tensors: readonly SafetensorsTensorInput[],
  metadata?: Record<string, string>,
): Uint8Array {
  return concatBytes([encodeHeader(tensors, metadata), ...tensors.flatMap((t) => [...tensorChunks(t, DEFAULT_CHUNK_BYTES)])]);
}

async function writeAll(handle: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < bytes.length) {
    const { bytesWritten } = await handle.write(bytes, done, bytes.length - done, position + done);
    done += bytesWritten;
  }
}

/**
 * Writes a safetensors file atomically: to a temporary file in the same directory, then renamed
 * over `path`, so readers never see a half-written file.
 */
export function writeSafetensors(
  path: string,
  tensors: readonly SafetensorsTensorInput[],
  metadata?: Record<string, string>,
  options: ChunkOptions = {},
): Promise<void> {
  return writeSafetensorsStreamed(path, tensors, (t) => (t as SafetensorsTensorInput).data, metadata, options);
}

/**
 * Writes a safetensors file whose tensors are produced one at a time by `dataOf` (called in
 * order, each result written and let go before the next is asked for): a file of any size with
 * one tensor in memory at a time, or none (a tensor given as its parts, each written where it
 * lies). Atomic as writeSafetensors.
 */
export async function writeSafetensorsStreamed(
  path: string,
  tensors: readonly SafetensorsTensorSpec[],
  dataOf: (tensor: SafetensorsTensorSpec, index: number) => SafetensorsData | Promise<SafetensorsData>,
  metadata?: Record<string, string>,
  options: ChunkOptions = {},
): Promise<void> {
  const chunkBytes = chunkBytesOf(options);
  const header = encodeHeader(tensors, metadata);
  const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let handle: FileHandle | undefined;
  try {
    handle = await open(temp, 'wx');
    await writeAll(handle, header, 0);
    let position = header.length;
    for (const [index, spec] of tensors.entries()) {
      const data = await dataOf(spec, index);
      checkData(spec, data);
      for (const part of Array.isArray(data) ? data : [data as Float32Array | Uint16Array]) {
        for (const chunk of tensorChunks({ ...spec, data: part }, chunkBytes)) {
          await writeAll(handle, chunk, position);
          position += chunk.length;
        }
      }
    }
    await handle.sync();
    await handle.close();
    handle = undefined;
    await rename(temp, path);
  } catch (err) {
    await handle?.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    if (err instanceof AttnscopeError) throw err;
    throw new AttnscopeError(`cannot write ${path}: ${(err as Error).message}`, { cause: err });
  }
}

/** Opens a sharded `model.safetensors.index.json` checkpoint. */
export function openSafetensorsSharded(
  indexPath: string,
  resolve?: (file: string) => Promise<string | undefined>,
): Promise<WeightStore> {
  return openSharded(indexPath, { openShard: (path) => openSafetensors(path), resolve });
}
