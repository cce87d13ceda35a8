import { crc32 } from 'node:zlib';
import { copyFile, mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dirFiles } from './helpers/model-files.js';
import { AttnscopeError } from '../src/core/errors.js';
import { floatToHalf } from '../src/core/tensor.js';
import { openWeights } from '../src/io/open-weights.js';
import { openPytorchBin, openPytorchBinSharded } from '../src/io/pytorch-bin.js';
import { openSafetensors } from '../src/io/safetensors.js';

const FIXTURES = join(import.meta.dirname, 'fixtures');

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'attnscope-io-bin-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function expectAttnscopeError(promise: Promise<unknown>, pattern: RegExp | string, file: string): Promise<void> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AttnscopeError);
  const message = (err as AttnscopeError).message;
  if (typeof pattern === 'string') expect(message).toBe(pattern);
  else expect(message).toMatch(pattern);
  expect(message).toContain(file);
  expect(message).not.toContain('\n');
}

// ---------------------------------------------------------------------------------------------
// A hand-rolled pickle writer (opcode bytes written directly, as torch.save would emit them).

class Pickle {
  private readonly out: number[] = [];
  op(...bytes: number[]): this {
    this.out.push(...bytes);
    return this;
  }
  private u32(n: number): number[] {
    return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
  }
  /** BINUNICODE ('X'), or SHORT_BINUNICODE (0x8c) for protocol-4 pickles. */
  str(s: string, short = false): this {
    const b = [...new TextEncoder().encode(s)];
    return short ? this.op(0x8c, b.length, ...b) : this.op(0x58, ...this.u32(b.length), ...b);
  }
  int(n: number): this {
    if (n >= 0 && n < 256) return this.op(0x4b, n); // BININT1
    if (n >= 0 && n < 65536) return this.op(0x4d, n & 0xff, n >> 8); // BININT2
    if (n >= -(2 ** 31) && n < 2 ** 31) return this.op(0x4a, ...this.u32(n)); // BININT
    const bytes: number[] = []; // LONG1, little-endian two's complement
    let v = BigInt(n);
    for (let i = 0; i < 8; i++, v >>= 8n) bytes.push(Number(v & 0xffn));
    return this.op(0x8a, 8, ...bytes);
  }
  global(module: string, name: string): this {
    return this.op(0x63, ...new TextEncoder().encode(`${module}\n${name}\n`));
  }
  stackGlobal(module: string, name: string): this {
    return this.str(module, true).op(0x94).str(name, true).op(0x94).op(0x93); // with MEMOIZE
  }
  ints(values: readonly number[]): this {
    this.op(0x28); // MARK
    for (const v of values) this.int(v);
    return this.op(0x74); // TUPLE
  }
  orderedDict(): this {
    return this.global('collections', 'OrderedDict').op(0x29, 0x52); // EMPTY_TUPLE REDUCE
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}

interface TensorSpec {
  name: string;
  key: string;
  storage: string;
  numel: number;
  offset: number;
  shape: number[];
  stride: number[];
  parameter?: boolean;
  stackGlobal?: boolean;
}

/** Appends `_rebuild_tensor_v2((persid storage), offset, shape, stride, False, OrderedDict())`. */
function pickleTensor(p: Pickle, t: TensorSpec): void {
  if (t.parameter) p.global('torch._utils', '_rebuild_parameter').op(0x28);
  if (t.stackGlobal) p.stackGlobal('torch._utils', '_rebuild_tensor_v2');
  else p.global('torch._utils', '_rebuild_tensor_v2');
  p.op(0x28); // MARK (args)
  p.op(0x28).str('storage').global('torch', t.storage).str(t.key).str('cpu').int(t.numel).op(0x74, 0x51); // TUPLE BINPERSID
  p.int(t.offset).ints(t.shape).ints(t.stride).op(0x89).orderedDict(); // NEWFALSE
  p.op(0x74, 0x52); // TUPLE REDUCE
  if (t.parameter) p.op(0x88).orderedDict().op(0x74, 0x52); // NEWTRUE hooks TUPLE REDUCE
}

/** A state_dict pickle: OrderedDict with SETITEMS and a BUILD of its `_metadata`, like torch.save. */
function stateDictPickle(tensors: readonly TensorSpec[], protocol = 2): Uint8Array {
  const p = new Pickle().op(0x80, protocol);
  if (protocol >= 4) p.op(0x95, 0, 0, 0, 0, 0, 0, 0, 0); // FRAME (length unchecked)
  p.orderedDict().op(0x71, 0); // BINPUT 0
  p.op(0x28); // MARK
  for (const t of tensors) {
    p.str(t.name);
    pickleTensor(p, t);
  }
  p.str('not_a_tensor').int(5);
  p.op(0x75); // SETITEMS
  p.op(0x7d).str('_metadata').orderedDict().op(0x28).str('').op(0x7d).str('version').int(1).op(0x73, 0x75, 0x73); // state
  p.op(0x62, 0x2e); // BUILD STOP
  return p.bytes();
}

// ---------------------------------------------------------------------------------------------
// A hand-rolled zip writer: STORED entries, data aligned to 64 bytes with an extra field (as torch
// does), optional zip64 structures, and "holes" (entries whose zero bytes are never written, so a
// file can be sparse).

interface ZipInput {
  name: string;
  data?: Uint8Array;
  holeSize?: number;
  method?: number;
}

interface ZipLayout {
  size: number;
  writes: { at: number; bytes: Uint8Array }[];
}

class Bytes {
  readonly out: number[] = [];
  u16(n: number): this {
    this.out.push(n & 0xff, (n >>> 8) & 0xff);
    return this;
  }
  u32(n: number): this {
    return this.u16(n & 0xffff).u16(Math.floor(n / 65536) & 0xffff);
  }
  u64(n: number): this {
    return this.u32(n % 2 ** 32).u32(Math.floor(n / 2 ** 32));
  }
  raw(bytes: Iterable<number>): this {
    this.out.push(...bytes);
    return this;
  }
  get length(): number {
    return this.out.length;
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.out);
  }
}

function layoutZip(entries: readonly ZipInput[], zip64 = false): ZipLayout {
  const writes: ZipLayout['writes'] = [];
  const central = new Bytes();
  const sat = (n: number) => (zip64 ? 0xffffffff : n);
  let at = 0;
  for (const e of entries) {
    const name = new TextEncoder().encode(e.name);
    const size = e.data?.length ?? e.holeSize ?? 0;
    const crc = e.data ? crc32(e.data) : 0;
    const local = new Bytes().u32(0x04034b50).u16(zip64 ? 45 : 20).u16(0).u16(e.method ?? 0).u16(0).u16(0x21);
    local.u32(crc).u32(sat(size)).u32(sat(size)).u16(name.length);
    const zip64Extra = zip64 ? new Bytes().u16(1).u16(16).u64(size).u64(size).out : [];
    const base = at + 30 + name.length + zip64Extra.length + 4;
    const pad = (64 - (base % 64)) % 64;
    local.u16(zip64Extra.length + 4 + pad).raw(name).raw(zip64Extra).u16(0x4246).u16(pad).raw(new Uint8Array(pad));
    writes.push({ at, bytes: local.bytes() });
    if (e.data) writes.push({ at: at + local.length, bytes: e.data });
    central.u32(0x02014b50).u16(zip64 ? 45 : 20).u16(zip64 ? 45 : 20).u16(0).u16(e.method ?? 0).u16(0).u16(0x21);
    central.u32(crc).u32(sat(size)).u32(sat(size)).u16(name.length).u16(zip64 ? 28 : 0).u16(0).u16(0).u16(0).u32(0);
    central.u32(sat(at)).raw(name);
    if (zip64) central.u16(1).u16(24).u64(size).u64(size).u64(at);
    at += local.length + size;
  }
  const cdOffset = at;
  writes.push({ at, bytes: central.bytes() });
  at += central.length;
  const tail = new Bytes();
  if (zip64) {
    tail.u32(0x06064b50).u64(44).u16(45).u16(45).u32(0).u32(0).u64(entries.length).u64(entries.length);
    tail.u64(central.length).u64(cdOffset);
    tail.u32(0x07064b50).u32(0).u64(at).u32(1);
  }
  const count = zip64 ? 0xffff : entries.length;
  tail.u32(0x06054b50).u16(0).u16(0).u16(count).u16(count).u32(sat(central.length)).u32(sat(cdOffset)).u16(0);
  writes.push({ at, bytes: tail.bytes() });
  return { size: at + tail.length, writes };
}

async function writeZip(path: string, entries: readonly ZipInput[], zip64 = false): Promise<void> {
  const { size, writes } = layoutZip(entries, zip64);
  const handle = await open(path, 'w');
  try {
    await handle.truncate(size); // unwritten ranges stay sparse
    for (const { at, bytes } of writes) await handle.write(bytes, 0, bytes.length, at);
  } finally {
    await handle.close();
  }
}

const f32 = (values: number[]) => new Uint8Array(new Float32Array(values).buffer);

/** Storages and tensors covering offsets, strides, dtypes and both rebuild functions. */
const STORAGES: ZipInput[] = [
  { name: 'archive/data/0', data: f32([0, 1, 2, 3, 4, 5]) },
  { name: 'archive/data/1', data: new Uint8Array(new Uint16Array([1, -2, 0.5].map(floatToHalf)).buffer) },
  { name: 'archive/data/2', data: new Uint8Array(new BigInt64Array([7n, -3n]).buffer) },
];
const F = { key: '0', storage: 'FloatStorage', numel: 6 };
const TENSORS: TensorSpec[] = [
  { name: 'transposed', ...F, offset: 0, shape: [3, 2], stride: [1, 3] },
  { name: 'tail', ...F, offset: 4, shape: [2], stride: [1], stackGlobal: true },
  { name: 'row', ...F, offset: 3, shape: [1, 3], stride: [3, 1] },
  { name: 'expanded', ...F, offset: 1, shape: [2, 2], stride: [0, 1] },
  { name: 'scalar', ...F, offset: 2, shape: [], stride: [] },
  { name: 'empty', ...F, offset: 0, shape: [0, 3], stride: [3, 1] },
  { name: 'half', key: '1', storage: 'HalfStorage', numel: 3, offset: 0, shape: [3], stride: [1] },
  { name: 'long', key: '2', storage: 'LongStorage', numel: 2, offset: 0, shape: [2], stride: [1], parameter: true },
];
const EXPECTED: Record<string, { shape: number[]; data: number[] }> = {
  transposed: { shape: [3, 2], data: [0, 3, 1, 4, 2, 5] },
  tail: { shape: [2], data: [4, 5] },
  row: { shape: [1, 3], data: [3, 4, 5] },
  expanded: { shape: [2, 2], data: [1, 2, 1, 2] },
  scalar: { shape: [], data: [2] },
  empty: { shape: [0, 3], data: [] },
  half: { shape: [3], data: [1, -2, 0.5] },
  long: { shape: [2], data: [7, -3] },
};

function archive(pickle: Uint8Array, storages: ZipInput[] = STORAGES, prefix = 'archive'): ZipInput[] {
  return [
    { name: `${prefix}/data.pkl`, data: pickle },
    { name: `${prefix}/byteorder`, data: new TextEncoder().encode('little') },
    ...storages.map((s) => ({ ...s, name: s.name.replace(/^archive\//, `${prefix}/`) })),
    { name: `${prefix}/version`, data: new TextEncoder().encode('3\n') },
  ];
}

async function expectTensors(path: string): Promise<void> {
  const store = await openPytorchBin(path);
  expect(store.names().sort()).toEqual(Object.keys(EXPECTED).sort());
  for (const [name, want] of Object.entries(EXPECTED)) {
    expect(store.shape(name), name).toEqual(want.shape);
    const t = await store.get(name);
    expect(t.shape, name).toEqual(want.shape);
    expect(Array.from(t.data), name).toEqual(want.data);
  }
  expect(store.dtype('half')).toBe('F16');
  expect(store.dtype('long')).toBe('I64');
  expect(store.dtype('tail')).toBe('F32');
  await store.close();
}

describe('pytorch_model.bin on fixtures', () => {
  it('gpt2-bin holds exactly the tensors of the gpt2 safetensors checkpoint', async () => {
    const bin = await openPytorchBin(join(FIXTURES, 'gpt2-bin', 'pytorch_model.bin'));
    const st = await openSafetensors(join(FIXTURES, 'gpt2', 'model.safetensors'));
    expect(st.names().length).toBe(28);
    for (const name of st.names()) {
      expect(bin.has(name), name).toBe(true);
      expect(bin.shape(name)).toEqual(st.shape(name));
      expect(bin.dtype(name)).toBe('F32');
      const a = await bin.get(name);
      const b = await st.get(name);
      expect(a.shape).toEqual(b.shape);
      expect(Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength).equals(Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength)), name).toBe(true);
    }
    // the tied LM head shares the embedding's storage
    expect(bin.names().filter((n) => !st.has(n))).toEqual(['lm_head.weight']);
    expect((await bin.get('lm_head.weight')).data).toEqual((await st.get('transformer.wte.weight')).data);
    await expect(bin.get('missing')).rejects.toThrow(/no tensor named 'missing'/);
    await Promise.all([bin.close(), st.close()]);
  });

  it('reads a sharded pytorch_model.bin.index.json checkpoint', async () => {
    const dir = join(tmp, 'gpt2-bin-sharded');
    await mkdir(dir, { recursive: true });
    const shards = ['pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin'];
    for (const s of shards) await copyFile(join(FIXTURES, 'gpt2-bin', 'pytorch_model.bin'), join(dir, s));
    const st = await openSafetensors(join(FIXTURES, 'gpt2', 'model.safetensors'));
    const weightMap = Object.fromEntries(st.names().map((n, i) => [n, shards[i % 2]!]));
    await writeFile(join(dir, 'pytorch_model.bin.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    for (const store of [await openWeights(dirFiles(dir)), await openPytorchBinSharded(join(dir, 'pytorch_model.bin.index.json'))]) {
      expect(store.names()).toEqual(st.names());
      for (const name of st.names()) expect((await store.get(name)).data).toEqual((await st.get(name)).data);
      await store.close();
    }
    await st.close();
  });
});

describe('pytorch_model.bin built by hand', () => {
  it('rebuilds tensors with storage offsets, strides, f16/i64 storages and parameters', async () => {
    const path = join(tmp, 'handmade.bin');
    await writeZip(path, archive(stateDictPickle(TENSORS)));
    await expectTensors(path);
  });

  it('reads protocol-4 pickles (FRAME, SHORT_BINUNICODE, MEMOIZE) under another top folder', async () => {
    const path = join(tmp, 'proto4.bin');
    await writeZip(path, archive(stateDictPickle(TENSORS, 4), STORAGES, 'my_model'));
    await expectTensors(path);
  });

  it('reads zip64 archives', async () => {
    const path = join(tmp, 'zip64.bin');
    await writeZip(path, archive(stateDictPickle(TENSORS)), true);
    await expectTensors(path);
  });

  it('reads entries stored past 4 GiB (sparse zip64 file)', async () => {
    const path = join(tmp, 'sparse.bin');
    const entries = [{ name: 'archive/padding', holeSize: 5 * 2 ** 30 }, ...archive(stateDictPickle(TENSORS))];
    await writeZip(path, entries, true);
    expect((await stat(path)).size).toBeGreaterThan(5 * 2 ** 30);
    await expectTensors(path);
    await rm(path);
  });
});

describe('pytorch_model.bin refuses unsafe or broken files', () => {
  it('refuses os.system via GLOBAL + REDUCE without running it', async () => {
    const marker = join(tmp, 'pwned');
    const pickle = new Pickle()
      .op(0x80, 2)
      .global('os', 'system')
      .op(0x28)
      .str(`touch ${marker}`)
      .op(0x74, 0x52, 0x2e) // TUPLE REDUCE STOP
      .bytes();
    const path = join(tmp, 'pytorch_model.bin');
    await writeZip(path, archive(pickle));
    await expectAttnscopeError(
      openPytorchBin(path),
      `${path}: refusing to load pickle global 'os.system' (only tensor rebuilding is allowed)`,
      path,
    );
    expect(existsSync(marker)).toBe(false);
  });

  const malicious: [string, Uint8Array, RegExp][] = [
    [
      'builtins.eval via STACK_GLOBAL',
      new Pickle().op(0x80, 4).stackGlobal('builtins', 'eval').op(0x28).str('1').op(0x74, 0x52, 0x2e).bytes(),
      /refusing to load pickle global 'builtins\.eval' \(only tensor rebuilding is allowed\)/,
    ],
    [
      'torch.storage._load_from_bytes',
      new Pickle().op(0x80, 2).global('torch.storage', '_load_from_bytes').op(0x28).str('x').op(0x74, 0x52, 0x2e).bytes(),
      /refusing to load pickle global 'torch\.storage\._load_from_bytes'/,
    ],
    [
      'the INST opcode',
      new Pickle().op(0x80, 2).op(0x28).str('x').op(0x69, ...new TextEncoder().encode('os\nsystem\n'), 0x2e).bytes(),
      /refusing pickle opcode 0x69 \(INST\)/,
    ],
    [
      'the NEWOBJ opcode',
      new Pickle().op(0x80, 2).orderedDict().op(0x29, 0x81, 0x2e).bytes(),
      /refusing pickle opcode 0x81 \(NEWOBJ\)/,
    ],
    [
      'calling a storage class',
      new Pickle().op(0x80, 2).global('torch', 'FloatStorage').op(0x29, 0x52, 0x2e).bytes(),
      /malformed pickle \(REDUCE on something that is not an allowed callable/,
    ],
    [
      'a non-storage persistent id',
      new Pickle().op(0x80, 2).op(0x28).str('module').str('x').op(0x74, 0x51, 0x2e).bytes(),
      /unsupported persistent id/,
    ],
    ['a truncated pickle', stateDictPickle(TENSORS).subarray(0, 200), /malformed pickle \(unexpected end of data/],
    ['an unbalanced pickle', new Pickle().op(0x80, 2).op(0x4b, 1, 0x4b, 2, 0x2e).bytes(), /malformed pickle/],
    ['a pickle that is not a dict', new Pickle().op(0x80, 2).op(0x5d, 0x2e).bytes(), /does not hold a state_dict/],
  ];
  for (const [what, pickle, pattern] of malicious) {
    it(`refuses ${what}`, async () => {
      const path = join(tmp, `bad-${what.replace(/\W+/g, '-')}.bin`);
      await writeZip(path, archive(pickle));
      await expectAttnscopeError(openPytorchBin(path), pattern, path);
    });
  }

  const broken: [string, () => Promise<Uint8Array> | Uint8Array, RegExp][] = [
    [
      'a tensor reaching past its storage',
      () => zipBytes(archive(stateDictPickle([{ name: 'w', ...F, offset: 2, shape: [2, 3], stride: [3, 1] }]))),
      /tensor of shape \[2, 3\] at offset 2 reaches past the end of storage '0' \(6 elements\)/,
    ],
    [
      'a missing storage file',
      () => zipBytes(archive(stateDictPickle([{ name: 'w', ...F, key: '9', offset: 0, shape: [2], stride: [1] }]))),
      /storage '9' is missing from the archive/,
    ],
    [
      'a storage file shorter than its size',
      () => zipBytes(archive(stateDictPickle([{ name: 'w', ...F, numel: 10, offset: 0, shape: [10], stride: [1] }]))),
      /storage '0' has 24 bytes but 10 F32 values need 40/,
    ],
    [
      'a compressed entry',
      () => zipBytes(archive(stateDictPickle(TENSORS)).map((e) => (e.name.endsWith('data.pkl') ? { ...e, method: 8 } : e))),
      /zip entry 'archive\/data\.pkl' is compressed \(method 8\)/,
    ],
    ['a zip without data.pkl', () => zipBytes(STORAGES), /no <name>\/data\.pkl \(not a torch\.save checkpoint\)/],
    ['the legacy (pre-1.6) format', () => Uint8Array.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc]), /legacy torch\.save format/],
    ['a file that is not a zip', () => new TextEncoder().encode('hello, this is not a checkpoint'), /not a zip archive/],
    [
      'a truncated checkpoint',
      async () => (await readFile(join(FIXTURES, 'gpt2-bin', 'pytorch_model.bin'))).subarray(0, 150_000),
      /not a zip archive/,
    ],
  ];
  for (const [what, make, pattern] of broken) {
    it(`rejects ${what}`, async () => {
      const path = join(tmp, `broken-${what.replace(/\W+/g, '-')}.bin`);
      await writeFile(path, await make());
      await expectAttnscopeError(openPytorchBin(path), pattern, path);
    });
  }
});

function zipBytes(entries: readonly ZipInput[]): Uint8Array {
  const { size, writes } = layoutZip(entries);
  const out = new Uint8Array(size);
  for (const { at, bytes } of writes) out.set(bytes, at);
  return out;
}
