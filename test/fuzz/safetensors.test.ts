/**
 * Fuzzing the safetensors reader (src/io/safetensors.ts): files built from the format's
 * definition are read exactly; mutated headers (nesting, offsets, shapes, dtypes, hostile names)
 * and damaged real checkpoints either parse into a consistent file or fail with one clean
 * AttnscopeError line.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { readSafetensorsBytes, type SafetensorsFile } from '../../src/io/safetensors.js';
import { FIXTURES } from '../helpers/reference.js';
import {
  type Json,
  type JsonPath,
  byteMutations,
  concat,
  fuzzParams,
  jsonMutations,
  jsonPaths,
  mutateBytes,
  mutateJson,
  testTimeout,
  userErrorOr,
} from './harness.js';

/** The dtypes of the safetensors definition this reader supports, with their sizes. */
const SIZES: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1 };

/** One value of `dtype` at `at`, decoded from the definition (little-endian), as float32. */
function decodeOne(view: DataView, dtype: string, at: number): number {
  switch (dtype) {
    case 'F64': return Math.fround(view.getFloat64(at, true));
    case 'F32': return view.getFloat32(at, true);
    case 'F16': {
      const h = view.getUint16(at, true);
      const e = (h >> 10) & 31, f = h & 1023, s = h & 0x8000 ? -1 : 1;
      return e === 0 ? s * f * 2 ** -24 : e === 31 ? (f ? NaN : s * Infinity) : s * (1 + f / 1024) * 2 ** (e - 15);
    }
    case 'BF16': {
      const b = new DataView(new ArrayBuffer(4));
      b.setUint16(0, view.getUint16(at, true));
      return b.getFloat32(0);
    }
    case 'I64': return Math.fround(Number(view.getBigInt64(at, true)));
    case 'I32': return Math.fround(view.getInt32(at, true));
    case 'I16': return view.getInt16(at, true);
    case 'I8': return view.getInt8(at);
    case 'U8': return view.getUint8(at);
    case 'BOOL': return view.getUint8(at) ? 1 : 0;
  }
  throw new Error(dtype);
}

interface TensorSpec {
  name: string;
  dtype: string;
  shape: number[];
}

interface FileSpec {
  tensors: TensorSpec[];
  metadata: Record<string, string> | null;
  /** Unused bytes between tensors (allowed by this reader) and spaces after the JSON. */
  gaps: number[];
  padding: number;
  seed: number;
}

const tensorSpec = fc.record({
  name: fc.oneof(fc.string({ minLength: 1, maxLength: 20 }), fc.constantFrom('embeddings.word_embeddings.weight', 'h.0.attn.c_attn.bias', 'a.b')),
  dtype: fc.constantFrom(...Object.keys(SIZES)),
  shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 4 }),
});

const fileSpec: fc.Arbitrary<FileSpec> = fc.record({
  tensors: fc.uniqueArray(tensorSpec, { minLength: 0, maxLength: 6, selector: (t) => t.name }).map((ts) => ts.filter((t) => t.name !== '__metadata__')),
  metadata: fc.option(fc.dictionary(fc.string({ maxLength: 10 }), fc.string({ maxLength: 20 }), { maxKeys: 3 })),
  gaps: fc.array(fc.integer({ min: 0, max: 9 }), { minLength: 6, maxLength: 6 }),
  padding: fc.integer({ min: 0, max: 7 }),
  seed: fc.integer(),
});

/** Header object and data section of a spec, laid out by hand from the format's definition. */
function layout(spec: FileSpec): { header: Record<string, Json>; data: Uint8Array } {
  const header: Record<string, Json> = {};
  if (spec.metadata) header.__metadata__ = spec.metadata;
  const parts: Uint8Array[] = [];
  let offset = 0;
  let state = spec.seed >>> 0;
  spec.tensors.forEach((t, i) => {
    const gap = spec.gaps[i]!;
    parts.push(new Uint8Array(gap).fill(0xee));
    offset += gap;
    const bytes = t.shape.reduce((n, d) => n * d, 1) * SIZES[t.dtype]!;
    const data = new Uint8Array(bytes).map(() => ((state = (Math.imul(state, 1664525) + 1013904223) >>> 0) >>> 24));
    parts.push(data);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  });
  return { header, data: concat(...parts) };
}

/** 8-byte little-endian length, the header text (plus `padding` spaces), the data. */
function fileBytes(headerText: string, data: Uint8Array, padding = 0): Uint8Array {
  const json = new TextEncoder().encode(headerText + ' '.repeat(padding));
  const length = new Uint8Array(8);
  new DataView(length.buffer).setBigUint64(0, BigInt(json.length), true);
  return concat(length, json, data);
}

/**
 * Checks an accepted file against the format independently of the reader: each tensor's dtype
 * and shape are valid, its bytes lie inside the data section and match its shape, no two
 * tensors overlap, and reading it gives the values the definition says.
 */
async function checkConsistent(file: SafetensorsFile, bytes: Uint8Array): Promise<void> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dataStart = 8 + Number(view.getBigUint64(0, true));
  const spans: [number, number][] = [];
  for (const name of file.names()) {
    const info = file.info(name);
    expect(SIZES[info.dtype], `dtype ${info.dtype}`).toBeDefined();
    expect(info.shape.every((d) => Number.isSafeInteger(d) && d >= 0), `shape of ${name}`).toBe(true);
    const count = info.shape.reduce((n, d) => n * d, 1);
    expect(info.begin).toBeGreaterThanOrEqual(dataStart);
    expect(info.end).toBeLessThanOrEqual(bytes.length);
    expect(info.end - info.begin).toBe(count * SIZES[info.dtype]!);
    if (info.end > info.begin) spans.push([info.begin, info.end]);
    const { shape, data } = await file.get(name);
    expect(shape).toEqual(info.shape);
    expect(data.length).toBe(count);
    for (let i = 0; i < Math.min(count, 64); i++) {
      const want = decodeOne(view, info.dtype, info.begin + i * SIZES[info.dtype]!);
      if (!(Number.isNaN(want) && Number.isNaN(data[i]!))) expect(data[i], `${name}[${i}]`).toBe(want);
    }
  }
  spans.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++) expect(spans[i]![0], 'overlapping tensors').toBeGreaterThanOrEqual(spans[i - 1]![1]);
}

async function readOrUserError(bytes: Uint8Array): Promise<void> {
  const file = await userErrorOr(() => readSafetensorsBytes(bytes, 'fuzz.safetensors'));
  if (!file) return;
  try {
    await checkConsistent(file, bytes);
  } finally {
    await file.close();
  }
}

describe('fuzz: safetensors reader', () => {
  it('reads files built from the format definition exactly', { timeout: testTimeout() }, async () => {
    await fc.assert(
      fc.asyncProperty(fileSpec, async (spec) => {
        const { header, data } = layout(spec);
        const keys = Object.keys(header).reverse(); // key order carries no meaning
        const bytes = fileBytes(JSON.stringify(Object.fromEntries(keys.map((k) => [k, header[k]!]))), data, spec.padding);
        const file = await readSafetensorsBytes(bytes, 'fuzz.safetensors');
        try {
          expect(file.names().sort()).toEqual(spec.tensors.map((t) => t.name).sort());
          expect(file.metadata).toEqual(spec.metadata ?? {});
          for (const t of spec.tensors) {
            const info = file.info(t.name);
            const [begin, end] = (header[t.name] as { data_offsets: [number, number] }).data_offsets;
            const dataStart = bytes.length - data.length;
            expect(info).toEqual({ dtype: t.dtype, shape: t.shape, begin: dataStart + begin, end: dataStart + end });
          }
          await checkConsistent(file, bytes);
        } finally {
          await file.close();
        }
      }),
      fuzzParams(300),
    );
  });

  it('mutated headers parse consistently or fail with one clean AttnscopeError line', { timeout: testTimeout() }, async () => {
    // Known hostile headers from the issue, tried first.
    const deep = '\u0001deep-array\u0001';
    const examples: [FileSpec, { op: 'set'; at: number; value: Json }[]][] = [];
    const base: FileSpec = { tensors: [{ name: 'w', dtype: 'F32', shape: [2, 3] }], metadata: null, gaps: [0, 0, 0, 0, 0, 0], padding: 0, seed: 1 };
    const paths = jsonPaths(layout(base).header);
    const index = (p: JsonPath): number => paths.findIndex((q) => JSON.stringify(q) === JSON.stringify(p));
    for (const [path, value] of [
      [['w', 'shape'], deep], [['w', 'data_offsets'], deep], [['w', 'shape'], Array(2000).fill(1) as Json], [['w', 'dtype'], '\u001b]0;x\u0007F32\f'],
      [['w', 'data_offsets', 1], 2 ** 53 + 2], [['w', 'shape', 0], -2], [['w', 'data_offsets', 0], 1.5], [['w'], deep],
    ] as [JsonPath, Json][]) {
      examples.push([base, [{ op: 'set', at: index(path), value }]]);
    }
    await fc.assert(
      fc.asyncProperty(fileSpec, jsonMutations, async (spec, mutations) => {
        const { header, data } = layout(spec);
        await readOrUserError(fileBytes(mutateJson(header, mutations), data));
      }),
      { ...fuzzParams(400), examples },
    );
  });

  it('hostile tensor names and metadata never reach a message raw', { timeout: testTimeout() }, async () => {
    const hostile = fc.oneof(fc.string({ unit: 'binary', maxLength: 30 }), fc.constantFrom('\u001b[2J\u001b[H', '\u001b]0;owned\u0007', 'a\fb', 'x'.repeat(5000), 'line\nbreak'));
    await fc.assert(
      fc.asyncProperty(hostile, fc.constantFrom('name', 'dtype', 'metadata-key', 'metadata-value'), async (text, where) => {
        const entry = { dtype: where === 'dtype' ? text : 'F32', shape: [3], data_offsets: [0, 13] }; // wrong size: always refused
        const header: Record<string, Json> = where === 'name' ? { [text]: entry } : { w: entry };
        if (where.startsWith('metadata')) header.__metadata__ = where === 'metadata-key' ? { [text]: 5 } : { k: [text] };
        await readOrUserError(fileBytes(JSON.stringify(header), new Uint8Array(16)));
      }),
      fuzzParams(200),
    );
  });

  it('damaged real checkpoints parse consistently or fail with one clean AttnscopeError line', { timeout: testTimeout() }, async () => {
    const files = ['bert', 'bert-bf16', 'gpt2', 't5'].map((m) => readFileSync(join(FIXTURES, m, 'model.safetensors')));
    const headerEnd = (b: Uint8Array): number => 8 + Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true));
    await fc.assert(
      fc.asyncProperty(fc.nat(files.length - 1), byteMutations(), fc.boolean(), async (which, mutations, inHeader) => {
        const original = new Uint8Array(files[which]!);
        await readOrUserError(mutateBytes(original, mutations, inHeader ? headerEnd(original) : undefined));
      }),
      fuzzParams(200),
    );
  });
});
