/**
 * Fuzzing the restricted pickle reader (src/io/pickle.ts) and pytorch_model.bin (src/io/pytorch-bin.ts):
 * random opcode programs, generated state dicts with random shapes/strides/offsets, and damaged
 * copies of the real gpt2-bin checkpoint. Every input either gives a value (a checkpoint whose
 * tensors read back with their shapes) or one clean AttnscopeError line; no global outside the
 * allow-list is ever resolved, and only the allow-listed stand-ins are ever called.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { zipSync } from 'fflate';
import { unzipSync } from 'fflate';
import { afterAll, describe, expect, it } from 'vitest';
import { AttnscopeError } from '../../src/core/errors.js';
import { PickleCallable, unpickle, type PickleValue } from '../../src/io/pickle.js';
import { openPytorchBin } from '../../src/io/pytorch-bin.js';
import { FIXTURES } from '../helpers/reference.js';
import { byteMutations, concat, expectUserError, fuzzParams, mutateBytes, testTimeout, userErrorOr } from './harness.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-fuzz-pickle-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const REAL = readFileSync(join(FIXTURES, 'gpt2-bin', 'pytorch_model.bin'));
const ENTRIES = unzipSync(new Uint8Array(REAL));
const PICKLE = ENTRIES['pytorch_model/data.pkl']!;

// --- pickle byte building --------------------------------------------------------------------

const enc = new TextEncoder();
const u32 = (n: number): number[] => [n & 255, (n >>> 8) & 255, (n >>> 16) & 255, (n >>> 24) & 255];
const bytes = (...parts: (number | number[] | Uint8Array)[]): Uint8Array =>
  Uint8Array.from(parts.flatMap((p) => (typeof p === 'number' ? [p] : [...p])));
function str(s: string): Uint8Array {
  const b = enc.encode(s);
  return b.length < 256 ? bytes(0x8c, b.length, b) : bytes(0x58, u32(b.length), b);
}
const binint = (n: number): Uint8Array => (n >= 0 && n < 256 ? bytes(0x4b, n) : bytes(0x4a, u32(n)));
const global = (module: string, name: string): Uint8Array => bytes(0x63, enc.encode(`${module}\n${name}\n`));
const tuple = (items: Uint8Array[]): Uint8Array => concat(bytes(0x28), ...items, bytes(0x74));

/** Globals a torch state_dict uses (allowed) and ones that would run code (must be refused). */
const ALLOWED: [string, string][] = [
  ['torch._utils', '_rebuild_tensor_v2'], ['torch._utils', '_rebuild_tensor'], ['torch._utils', '_rebuild_parameter'],
  ['collections', 'OrderedDict'], ['torch', 'FloatStorage'], ['torch', 'HalfStorage'], ['torch', 'LongStorage'], ['torch', 'BFloat16Storage'],
];
const DANGEROUS: [string, string][] = [
  ['os', 'system'], ['posix', 'system'], ['builtins', 'eval'], ['builtins', 'exec'], ['__builtin__', 'getattr'], ['subprocess', 'Popen'],
  ['torch', 'load'], ['torch._utils', '_rebuild_from_type_v2'], ['numpy.core.multiarray', '_reconstruct'], ['builtins', 'setattr'],
  ['torch._utils', '_rebuild_tensor_v2\nos'], ['torch', 'FloatStorage.__init__'], ['', ''], ['\u001b[2J', '\f'],
];
const STORAGE_KEYS = ['0', '1', '2', '5', '29', 'missing', '../data.pkl'];
const WORDS = ['storage', 'cpu', 'transformer.wte.weight', 'h.0.attn.c_attn.bias', '', 'x'.repeat(300), '\u001b]0;t\u0007'];

const storageRef = fc
  .record({ type: fc.constantFrom('FloatStorage', 'HalfStorage', 'LongStorage', 'DoubleStorage'), key: fc.constantFrom(...STORAGE_KEYS), count: fc.oneof(fc.nat(5000), fc.constantFrom(2 ** 31, 2 ** 53)) })
  .map(({ type, key, count }) => concat(tuple([str('storage'), global('torch', type), str(key), str('cpu'), binint(count)]), bytes(0x51)));

const countTuple = fc.array(fc.oneof(fc.nat(40), fc.constantFrom(0, 1, 768, 2 ** 31 - 1)), { maxLength: 4 });

/** `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, OrderedDict())`, with random numbers. */
const rebuild = fc
  .record({ storage: storageRef, offset: fc.oneof(fc.nat(100), fc.constantFrom(-1, 2 ** 31 - 1)), size: countTuple, stride: countTuple, parameter: fc.boolean() })
  .map(({ storage, offset, size, stride, parameter }) => {
    const t = concat(
      global('torch._utils', '_rebuild_tensor_v2'),
      tuple([storage, binint(offset), tuple(size.map(binint)), tuple(stride.map(binint)), bytes(0x89), concat(global('collections', 'OrderedDict'), bytes(0x29, 0x52))]),
      bytes(0x52),
    );
    return parameter ? concat(global('torch._utils', '_rebuild_parameter'), tuple([t, bytes(0x89)]), bytes(0x52)) : t;
  });

/** One instruction (or a short idiomatic fragment) of a pickle program. */
const instruction: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(0x28, 0x30, 0x31, 0x32, 0x4e, 0x88, 0x89, 0x7d, 0x5d, 0x29, 0x64, 0x6c, 0x74, 0x85, 0x86, 0x87, 0x73, 0x75, 0x61, 0x65, 0x62, 0x94, 0x52, 0x51, 0x93, 0x2e).map((b) => bytes(b)) },
  { weight: 2, arbitrary: fc.integer().map((n) => bytes(0x4a, u32(n))) },
  { weight: 2, arbitrary: fc.nat(255).map((n) => bytes(0x4b, n)) },
  { weight: 1, arbitrary: fc.nat(65535).map((n) => bytes(0x4d, n & 255, n >> 8)) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 12 }).map((b) => bytes(0x8a, b.length, b)) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(0, 3, 2 ** 31 - 1, -1), fc.uint8Array({ maxLength: 6 })).map(([n, b]) => bytes(0x8b, u32(n), b)) },
  { weight: 1, arbitrary: fc.double().map((x) => { const b = new Uint8Array(9); b[0] = 0x47; new DataView(b.buffer).setFloat64(1, x); return b; }) },
  { weight: 4, arbitrary: fc.oneof(fc.constantFrom(...WORDS, ...STORAGE_KEYS), fc.string({ maxLength: 8 })).map(str) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(0x58, 0x8d), fc.constantFrom(0, 5, 2 ** 32 - 1)).map(([op, n]) => bytes(op, u32(n), op === 0x8d ? u32(n) : [])) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom(0x71, 0x68), fc.nat(4)).map(([op, n]) => bytes(op, n)) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(0x72, 0x6a), fc.constantFrom(0, 1, 2 ** 32 - 1)).map(([op, n]) => bytes(op, u32(n))) },
  { weight: 3, arbitrary: fc.constantFrom(...ALLOWED, ...DANGEROUS).map(([m, n]) => global(m, n)) },
  { weight: 2, arbitrary: fc.constantFrom(...ALLOWED, ...DANGEROUS).map(([m, n]) => concat(str(m), str(n), bytes(0x93))) },
  { weight: 2, arbitrary: storageRef },
  { weight: 2, arbitrary: rebuild },
  { weight: 1, arbitrary: fc.constantFrom(0, 8, 2 ** 32 - 1).map((n) => bytes(0x95, u32(n), 0, 0, 0, 0)) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 7 }).map((p) => bytes(0x80, p)) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 4 }) },
);

/** A random program: a protocol header, instructions, usually a STOP. */
const program = fc
  .tuple(fc.constantFrom(2, 4), fc.array(instruction, { maxLength: 40 }), fc.boolean())
  .map(([proto, body, stop]) => concat(bytes(0x80, proto), ...body, stop ? bytes(0x2e) : new Uint8Array(0)));

/** A state dict `{name: tensor}` of generated tensors (random shapes, strides, offsets, storages). */
const stateDict = fc
  .array(fc.tuple(fc.constantFrom(...WORDS, 'a', 'b', 'c'), rebuild), { maxLength: 5 })
  .map((items) => concat(bytes(0x80, 2, 0x7d, 0x28), ...items.flatMap(([k, v]) => [str(k), v]), bytes(0x75, 0x2e)));

// --- running ---------------------------------------------------------------------------------

/** The real archive with `data.pkl` (or the whole file) replaced. */
function archiveWith(pickle: Uint8Array): Uint8Array {
  const entries: Record<string, [Uint8Array, { level: 0 }]> = {};
  for (const [name, data] of Object.entries(ENTRIES)) entries[name] = [name.endsWith('data.pkl') ? pickle : data, { level: 0 }];
  return zipSync(entries);
}

let fileCount = 0;
/** Opens bytes as a pytorch_model.bin: a clean user error, or a store whose tensors read back with their shapes. */
async function openChecked(file: Uint8Array): Promise<void> {
  const path = join(tmp, `case-${fileCount++ % 8}.bin`);
  writeFileSync(path, file);
  const store = await userErrorOr(() => openPytorchBin(path));
  if (!store) return;
  try {
    for (const name of store.names()) {
      const shape = store.shape(name);
      expect(shape.every((d) => Number.isSafeInteger(d) && d >= 0)).toBe(true);
      if (shape.reduce((n, d) => n * d, 1) > 1e7) continue; // a legal but large view: reading it is not the point
      const t = await userErrorOr(() => store.get(name));
      if (t) {
        expect(t.shape).toEqual(shape);
        expect(t.data.length).toBe(shape.reduce((n, d) => n * d, 1));
      }
    }
  } finally {
    await store.close();
  }
}

describe('fuzz: pickle reader', () => {
  it('random opcode programs: a value or a clean AttnscopeError; only allow-listed globals resolved, only their stand-ins called', { timeout: testTimeout() }, async () => {
    const allowed = new Set(ALLOWED.map(([m, n]) => `${m}.${n}`));
    await fc.assert(
      fc.property(program, (code) => {
        const looked: string[] = [];
        const called: string[] = [];
        /** The allow-list, recording every lookup. */
        class RecordingGlobals extends Map<string, PickleValue<never>> {
          override get(key: string): PickleValue<never> | undefined {
            looked.push(key);
            return super.get(key);
          }
        }
        const globals = new RecordingGlobals();
        for (const name of allowed) globals.set(name, new PickleCallable<never>(name, (args) => (called.push(name), args)));
        let error: unknown;
        try {
          unpickle<never>(code, { label: 'fuzz.pkl', globals, refusal: 'fuzz allow-list', persistentLoad: (pid) => (called.push('persistent_load'), pid) });
        } catch (err) {
          error = err;
          expectUserError(err);
        }
        const refused = looked.findIndex((name) => !allowed.has(name));
        if (refused >= 0) {
          // The first name outside the allow-list ends the run, refused by name.
          expect(refused).toBe(looked.length - 1);
          expect(error).toBeInstanceOf(AttnscopeError);
          expect((error as Error).message).toContain('refusing to load pickle global');
        }
        for (const name of called) expect(allowed.has(name) || name === 'persistent_load').toBe(true);
      }),
      fuzzParams(2000),
    );
  });

  it('pytorch_model.bin with a random program as data.pkl', { timeout: testTimeout() }, async () => {
    await fc.assert(fc.asyncProperty(program, async (code) => openChecked(archiveWith(code))), fuzzParams(200));
  });

  it('pytorch_model.bin with generated state dicts (shapes, strides, offsets, storages)', { timeout: testTimeout() }, async () => {
    await fc.assert(fc.asyncProperty(stateDict, async (code) => openChecked(archiveWith(code))), fuzzParams(200));
  });

  it('the real gpt2-bin checkpoint with a damaged data.pkl', { timeout: testTimeout() }, async () => {
    await fc.assert(
      fc.asyncProperty(byteMutations(), fc.array(instruction, { maxLength: 2 }), fc.nat(), async (mutations, splice, at) => {
        const damaged = mutateBytes(PICKLE, mutations);
        const cut = at % (damaged.length + 1);
        await openChecked(archiveWith(concat(damaged.subarray(0, cut), ...splice, damaged.subarray(cut))));
      }),
      fuzzParams(200),
    );
  });

  it('the real gpt2-bin checkpoint with damaged zip bytes', { timeout: testTimeout() }, async () => {
    const central = REAL.length - 4000; // the central directory and end records are in the last few KB
    await fc.assert(
      fc.asyncProperty(byteMutations(), fc.boolean(), async (mutations, tail) => {
        const original = new Uint8Array(REAL);
        const damaged = tail
          ? concat(original.subarray(0, central), mutateBytes(original.subarray(central), mutations))
          : mutateBytes(original, mutations);
        await openChecked(damaged);
      }),
      fuzzParams(200),
    );
  });
});
