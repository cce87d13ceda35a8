import { mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dirFiles } from './helpers/model-files.js';
import { AttnscopeError } from '../src/core/errors.js';
import { float16ToFloat32, floatToHalf, halfToFloat } from '../src/core/tensor.js';
import { openWeights } from '../src/io/open-weights.js';
import {
  openSafetensors,
  openSafetensorsSharded,
  readSafetensorsBytes,
  readSafetensorsMetadata,
  serializeSafetensors,
  writeSafetensors,
  type SafetensorsTensorInput,
} from '../src/io/safetensors.js';
import type { WeightStore } from '../src/io/weights.js';

const FIXTURES = join(import.meta.dirname, 'fixtures');
const fixture = (...parts: string[]) => join(FIXTURES, ...parts);

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'attnscope-io-st-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function readAll(store: WeightStore): Promise<Map<string, { shape: readonly number[]; data: Float32Array }>> {
  const out = new Map<string, { shape: readonly number[]; data: Float32Array }>();
  for (const name of store.names()) out.set(name, await store.get(name));
  return out;
}

/** float32 → bfloat16 → float32, round to nearest even (computed independently of the reader). */
function roundToBFloat16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  u[0] = ((u[0]! + 0x7fff + ((u[0]! >>> 16) & 1)) >>> 16) << 16;
  return f[0]!;
}

/** Builds a safetensors file by hand: length prefix + header text + data. */
function rawSafetensors(header: string, data: Uint8Array = new Uint8Array(0), lengthOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

async function expectAttnscopeError(promise: Promise<unknown>, pattern: RegExp, file: string): Promise<AttnscopeError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AttnscopeError);
  const message = (err as AttnscopeError).message;
  expect(message).toMatch(pattern);
  expect(message).toContain(file);
  expect(message).not.toContain('\n');
  return err as AttnscopeError;
}

describe('safetensors reader on fixtures', () => {
  it('reads the fp32 bert checkpoint: names, shapes, dtypes, metadata', async () => {
    const st = await openSafetensors(fixture('bert', 'model.safetensors'));
    expect(st.metadata).toEqual({ format: 'pt' });
    expect(st.names().length).toBe(42);
    const name = 'bert.embeddings.word_embeddings.weight';
    expect(st.has(name)).toBe(true);
    expect(st.dtype(name)).toBe('F32');
    const t = await st.get(name);
    expect(t.shape).toEqual(st.shape(name));
    expect(t.data.length).toBe(t.shape.reduce((a, b) => a * b, 1));
    expect(t.data.every(Number.isFinite)).toBe(true);
    await expect(st.get('nope')).rejects.toThrow(/no tensor named 'nope'/);
    await st.close();
  });

  it('fp16 and bf16 checkpoints equal the fp32 one rounded to their precision', async () => {
    const f32 = await openSafetensors(fixture('bert', 'model.safetensors'));
    const f16 = await openSafetensors(fixture('bert-fp16', 'model.safetensors'));
    const bf16 = await openSafetensors(fixture('bert-bf16', 'model.safetensors'));
    expect(f16.names().sort()).toEqual(f32.names().sort());
    expect(bf16.names().sort()).toEqual(f32.names().sort());
    let compared = 0;
    for (const name of f32.names()) {
      expect(f16.dtype(name)).toBe('F16');
      expect(bf16.dtype(name)).toBe('BF16');
      const ref = await f32.get(name);
      const half = await f16.get(name);
      const brain = await bf16.get(name);
      expect(half.shape).toEqual(ref.shape);
      expect(brain.shape).toEqual(ref.shape);
      for (let i = 0; i < ref.data.length; i++) {
        const x = ref.data[i]!;
        if (half.data[i] !== halfToFloat(floatToHalf(x))) expect.fail(`${name}[${i}]: f16 ${half.data[i]} vs f32 ${x}`);
        if (brain.data[i] !== roundToBFloat16(x)) expect.fail(`${name}[${i}]: bf16 ${brain.data[i]} vs f32 ${x}`);
        // and within the formats' relative rounding (or the f16 subnormal step)
        if (Math.abs(half.data[i]! - x) > Math.max(Math.abs(x) * 2 ** -11, 2 ** -25)) expect.fail(`${name}[${i}] f16 error`);
        if (Math.abs(brain.data[i]! - x) > Math.abs(x) * 2 ** -8) expect.fail(`${name}[${i}] bf16 error`);
      }
      // the table-driven f16 decode agrees with core's float16ToFloat32 on the raw bits
      const bits = await f16.getBytes(name);
      const viaCore = float16ToFloat32(new Uint16Array(bits.buffer, bits.byteOffset, bits.length / 2));
      expect(half.data).toEqual(viaCore);
      compared += ref.data.length;
    }
    expect(compared).toBeGreaterThan(40_000);
    await Promise.all([f32.close(), f16.close(), bf16.close()]);
  });

  it('sharded checkpoint equals the unsharded one exactly', async () => {
    const whole = await openSafetensors(fixture('bert', 'model.safetensors'));
    const sharded = await openSafetensorsSharded(fixture('bert-sharded', 'model.safetensors.index.json'));
    expect(sharded.names().sort()).toEqual(whole.names().sort());
    const a = await readAll(whole);
    const b = await readAll(sharded);
    for (const [name, t] of a) {
      expect(sharded.shape(name)).toEqual(whole.shape(name));
      expect(sharded.dtype(name)).toBe('F32');
      expect(b.get(name)!.shape).toEqual(t.shape);
      expect(Buffer.from(b.get(name)!.data.buffer).equals(Buffer.from(t.data.buffer))).toBe(true);
    }
    await Promise.all([whole.close(), sharded.close()]);
  });

  it('reads the __metadata__ and tensors of a trace written by PyTorch', async () => {
    const path = join(FIXTURES, 'traces', 't5-encdec.safetensors');
    const meta = await readSafetensorsMetadata(path);
    expect(meta['format']).toBe('attnscope-trace');
    expect(meta['version']).toBe('1');
    expect(JSON.parse(meta['tokens']!)).toHaveLength(88);
    expect(JSON.parse(meta['decoderTokens']!)).toHaveLength(18);
    const st = await openSafetensors(path);
    const enc = await st.get('attention.encoder');
    expect(enc.shape).toEqual([2, 4, 88, 88]);
    for (let row = 0; row < 2 * 4 * 88; row++) {
      let sum = 0;
      for (let k = 0; k < 88; k++) sum += enc.data[row * 88 + k]!;
      expect(Math.abs(sum - 1)).toBeLessThan(1e-5);
    }
    expect(st.shape('attention.cross')).toEqual([2, 4, 18, 88]);
    await st.close();
  });
});

describe('openWeights', () => {
  it('picks model.safetensors, the shard index, or pytorch_model.bin', async () => {
    for (const [dir, count] of [
      ['bert', 42],
      ['bert-sharded', 42],
      ['gpt2', 28],
      ['gpt2-bin', 29],
    ] as const) {
      const store = await openWeights(dirFiles(fixture(dir)));
      expect(store.names().length, dir).toBe(count);
      await store.close();
    }
  });

  it('fails clearly when a directory has no weights', async () => {
    const dir = join(tmp, 'empty-model');
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir);
    await expect(openWeights(dirFiles(dir))).rejects.toThrow(
      new AttnscopeError(
        `no weights found in ${dir} (expected model.safetensors, model.safetensors.index.json or pytorch_model.bin)`,
      ),
    );
  });

  it('fails clearly when a shard named in the index is missing or lacks its tensor', async () => {
    const dir = join(tmp, 'broken-shards');
    await mkdir(dir, { recursive: true });
    const index = JSON.parse(await readFile(fixture('bert-sharded', 'model.safetensors.index.json'), 'utf8'));
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    await writeFile(join(dir, 'model-00001-of-00002.safetensors'), await readFile(fixture('bert-sharded', 'model-00001-of-00002.safetensors')));
    await expectAttnscopeError(openWeights(dirFiles(dir)), /shard 'model-00002-of-00002.safetensors' is missing/, 'model.safetensors.index.json');
    // both shards present, but one tensor is mapped to the wrong shard
    await writeFile(join(dir, 'model-00002-of-00002.safetensors'), await readFile(fixture('bert-sharded', 'model-00002-of-00002.safetensors')));
    const [name, file] = Object.entries(index.weight_map as Record<string, string>)[0]!;
    index.weight_map[name] = file.includes('00001') ? 'model-00002-of-00002.safetensors' : 'model-00001-of-00002.safetensors';
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    await expectAttnscopeError(openWeights(dirFiles(dir)), new RegExp(`tensor '${name}' is mapped to`), 'model.safetensors.index.json');
    // a shard name escaping the model directory is refused
    index.weight_map[name] = '../../etc/passwd';
    await writeFile(join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
    await expectAttnscopeError(openWeights(dirFiles(dir)), /invalid shard file/, 'model.safetensors.index.json');
  });
});

describe('safetensors validation', () => {
  const cases: [string, () => Promise<Uint8Array>, RegExp][] = [
    ['shorter than 8 bytes', async () => new Uint8Array([1, 2, 3, 4, 5]), /shorter than the 8-byte header length/],
    [
      'header length past the end',
      async () => rawSafetensors('{}', new Uint8Array(0), 1000n),
      /header length 1000 runs past the end of the file \(10 bytes\)/,
    ],
    ['header length near 2^64', async () => rawSafetensors('{}', new Uint8Array(0), 2n ** 64n - 1n), /runs past the end/],
    ['header not JSON', async () => rawSafetensors('{"a": {"dtype": "F32",'), /header is not valid JSON/],
    ['header not an object', async () => rawSafetensors('[1, 2]'), /header is not a JSON object/],
    [
      'unknown dtype',
      async () => rawSafetensors('{"w": {"dtype": "Q4_K", "shape": [2], "data_offsets": [0, 2]}}', new Uint8Array(2)),
      /tensor 'w' has unknown dtype 'Q4_K'/,
    ],
    [
      'offsets out of range',
      async () => rawSafetensors('{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}', new Uint8Array(8)),
      /tensor 'w' has data_offsets \[0, 16\] out of range \(the data section has 8 bytes\)/,
    ],
    [
      'offsets reversed',
      async () => rawSafetensors('{"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}}', new Uint8Array(8)),
      /out of range/,
    ],
    [
      'offsets inconsistent with shape and dtype',
      async () => rawSafetensors('{"w": {"dtype": "F16", "shape": [2, 3], "data_offsets": [0, 8]}}', new Uint8Array(16)),
      /tensor 'w' has data_offsets \[0, 8\] \(8 bytes\) but shape \[2, 3\] of F16 needs 12 bytes/,
    ],
    [
      'overlapping tensors',
      async () =>
        rawSafetensors(
          '{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}',
          new Uint8Array(12),
        ),
      /tensors 'a' and 'b' overlap/,
    ],
    [
      'bad shape',
      async () => rawSafetensors('{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}', new Uint8Array(4)),
      /tensor 'w' has an invalid shape/,
    ],
    [
      'non-string metadata',
      async () => rawSafetensors('{"__metadata__": {"version": 1}}'),
      /__metadata__ value 'version' must be a string/,
    ],
    [
      'a real checkpoint cut short',
      async () => (await readFile(fixture('bert', 'model.safetensors'))).subarray(0, 60_000),
      /out of range/,
    ],
  ];

  for (const [what, make, pattern] of cases) {
    it(`rejects ${what}`, async () => {
      const path = join(tmp, `corrupt-${what.replace(/\W+/g, '-')}.safetensors`);
      await writeFile(path, await make());
      await expectAttnscopeError(openSafetensors(path), pattern, path);
    });
  }

  it('reports a missing file', async () => {
    const path = join(tmp, 'does-not-exist.safetensors');
    await expectAttnscopeError(openSafetensors(path), /cannot open \(no such file\)/, path);
  });

  it('accepts zero-size tensors, gaps and an absent __metadata__', async () => {
    const data = new Uint8Array(12);
    new Float32Array(data.buffer).set([1.5, 0, -2]);
    const st = await readSafetensorsBytes(
      rawSafetensors(
        '{"e": {"dtype": "F32", "shape": [0, 3], "data_offsets": [4, 4]}, "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "c": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}   ',
        data,
      ),
      'mem.safetensors',
    );
    expect(st.metadata).toEqual({});
    expect((await st.get('e')).data.length).toBe(0);
    expect((await st.get('a')).data).toEqual(new Float32Array([1.5]));
    expect((await st.get('c')).data).toEqual(new Float32Array([-2]));
  });

  it('converts integer and f64 dtypes to float32', async () => {
    const parts: [string, string, ArrayBufferView][] = [
      ['f64', 'F64', new Float64Array([0.1, -3])],
      ['i64', 'I64', new BigInt64Array([-5n, 2n ** 40n])],
      ['i32', 'I32', new Int32Array([-7, 123456])],
      ['i16', 'I16', new Int16Array([-32768, 5])],
      ['i8', 'I8', new Int8Array([-128, 127])],
      ['u8', 'U8', new Uint8Array([0, 255])],
      ['bool', 'BOOL', new Uint8Array([0, 1])],
    ];
    const header: Record<string, unknown> = {};
    let at = 0;
    for (const [name, dtype, arr] of parts) {
      header[name] = { dtype, shape: [2], data_offsets: [at, at + arr.byteLength] };
      at += arr.byteLength;
    }
    const data = new Uint8Array(at);
    at = 0;
    for (const [, , arr] of parts) {
      data.set(new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength), at);
      at += arr.byteLength;
    }
    const st = await readSafetensorsBytes(rawSafetensors(JSON.stringify(header), data), 'mixed.safetensors');
    expect(Array.from((await st.get('f64')).data)).toEqual([Math.fround(0.1), -3]);
    expect(Array.from((await st.get('i64')).data)).toEqual([-5, 2 ** 40]);
    expect(Array.from((await st.get('i32')).data)).toEqual([-7, 123456]);
    expect(Array.from((await st.get('i16')).data)).toEqual([-32768, 5]);
    expect(Array.from((await st.get('i8')).data)).toEqual([-128, 127]);
    expect(Array.from((await st.get('u8')).data)).toEqual([0, 255]);
    expect(Array.from((await st.get('bool')).data)).toEqual([0, 1]);
    expect(st.dtype('i64')).toBe('I64');
  });

  it('reads a tensor stored past 4 GiB in a sparse file', async () => {
    const path = join(tmp, 'sparse.safetensors');
    const pad = 5 * 2 ** 30; // 5 GiB of holes: costs no disk
    const header = JSON.stringify({
      __metadata__: { note: 'sparse' },
      pad: { dtype: 'U8', shape: [pad], data_offsets: [0, pad] },
      x: { dtype: 'F32', shape: [2, 2], data_offsets: [pad, pad + 16] },
    });
    const head = rawSafetensors(header);
    const values = new Float32Array([1, -2, 3.25, 1e-30]);
    const handle = await open(path, 'w');
    try {
      await handle.write(head, 0, head.length, 0);
      await handle.truncate(head.length + pad + 16);
      await handle.write(new Uint8Array(values.buffer), 0, 16, head.length + pad);
    } finally {
      await handle.close();
    }
    const st = await openSafetensors(path);
    expect(st.shape('pad')).toEqual([pad]);
    const x = await st.get('x');
    expect(x.shape).toEqual([2, 2]);
    expect(x.data).toEqual(values);
    await st.close();
    await rm(path);
  });
});

describe('safetensors writer', () => {
  const values = new Float32Array([0, 1, -1.5, 65504, 1e-8, 3.14159, -0, 100000]);
  const tensors: SafetensorsTensorInput[] = [
    { name: 'attention.self', dtype: 'F32', shape: [2, 4], data: values },
    { name: 'attention.f16', dtype: 'F16', shape: [8], data: values },
    { name: 'bits.f16', dtype: 'F16', shape: [1, 2], data: new Uint16Array([0x3c00, 0xc000]) },
    { name: 'attention.bf16', dtype: 'BF16', shape: [4, 2], data: values },
    { name: 'empty', dtype: 'F32', shape: [0], data: new Float32Array(0) },
  ];
  const metadata = { format: 'attnscope-trace', version: '1', tokens: JSON.stringify(['a', 'b']) };

  it('writes a file whose header and data are laid out as the format specifies', async () => {
    const path = join(tmp, 'written.safetensors');
    await writeSafetensors(path, tensors, metadata);
    const bytes = new Uint8Array(await readFile(path));
    // parse by hand, independently of the reader
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
    expect(header.__metadata__).toEqual(metadata);
    expect(header['attention.self']).toEqual({ dtype: 'F32', shape: [2, 4], data_offsets: [0, 32] });
    expect(header['attention.f16']).toEqual({ dtype: 'F16', shape: [8], data_offsets: [32, 48] });
    expect(header['bits.f16']).toEqual({ dtype: 'F16', shape: [1, 2], data_offsets: [48, 52] });
    expect(header['attention.bf16']).toEqual({ dtype: 'BF16', shape: [4, 2], data_offsets: [52, 68] });
    expect(header['empty']).toEqual({ dtype: 'F32', shape: [0], data_offsets: [68, 68] });
    expect(bytes.length).toBe(8 + n + 68);
    const data = bytes.slice(8 + n);
    expect(new Float32Array(data.buffer, 0, 8)).toEqual(values);
    const halves = new Uint16Array(data.buffer, 32, 8);
    expect(Array.from(halves)).toEqual(Array.from(values, floatToHalf));
    expect(Array.from(new Uint16Array(data.buffer, 48, 2))).toEqual([0x3c00, 0xc000]);
    const bf = new Uint16Array(data.buffer.slice(52, 68));
    expect(Array.from(bf, (b) => new Float32Array(new Uint32Array([b << 16]).buffer)[0])).toEqual(
      Array.from(values, roundToBFloat16),
    );
    // no temporary file left behind, and the in-memory serializer produces the same bytes
    expect((await readdir(tmp)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
    expect(Buffer.from(serializeSafetensors(tensors, metadata)).equals(Buffer.from(bytes))).toBe(true);
  });

  it('round-trips through the reader', async () => {
    const path = join(tmp, 'roundtrip.safetensors');
    await writeSafetensors(path, tensors, metadata);
    const st = await openSafetensors(path);
    expect(st.metadata).toEqual(metadata);
    expect(st.names()).toEqual(tensors.map((t) => t.name));
    expect((await st.get('attention.self')).data).toEqual(values);
    expect(Array.from((await st.get('attention.f16')).data)).toEqual(Array.from(values, (v) => halfToFloat(floatToHalf(v))));
    expect(Array.from((await st.get('bits.f16')).data)).toEqual([1, -2]);
    expect(Array.from((await st.get('attention.bf16')).data)).toEqual(Array.from(values, roundToBFloat16));
    expect(st.shape('attention.bf16')).toEqual([4, 2]);
    await st.close();
  });

  it('replaces an existing file atomically and rejects bad input without touching it', async () => {
    const path = join(tmp, 'replace.safetensors');
    await writeSafetensors(path, [tensors[0]!], { v: 'old' });
    await writeSafetensors(path, [tensors[1]!], { v: 'new' });
    expect(await readSafetensorsMetadata(path)).toEqual({ v: 'new' });
    const before = await readFile(path);
    await expect(
      writeSafetensors(path, [{ name: 'w', dtype: 'F32', shape: [3], data: new Float32Array(2) }]),
    ).rejects.toThrow(/tensor 'w' has 2 values but shape \[3\]/);
    await expect(writeSafetensors(path, [tensors[0]!, tensors[0]!])).rejects.toThrow(/duplicate tensor name/);
    expect((await readFile(path)).equals(before)).toBe(true);
    await expect(writeSafetensors(join(tmp, 'no-such-dir', 'x.safetensors'), [tensors[0]!])).rejects.toThrow(
      AttnscopeError,
    );
    expect((await readdir(tmp)).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});
