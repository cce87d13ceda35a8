/**
 * Shared pieces of the fuzz suite (property-based, fast-check): run settings, the error contract
 * every reader must keep on bad input, and mutators that derive bad inputs from real files.
 *
 * Runs are reproducible: the seed is fixed (FUZZ_SEED overrides it) and fast-check prints the
 * seed and path of any counterexample. FUZZ_RUNS scales the number of runs (e.g. FUZZ_RUNS=10 for
 * a long local hunt); each property also stops early at its time budget. FUZZ_LOG=1 makes the
 * child-process properties print every case and its outcome.
 */
import fc from 'fast-check';
import { concatBytes } from '../../src/core/bytes.js';
import { AttnscopeError } from '../../src/core/errors.js';

export const FUZZ_SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : 0x7a11_5c0e;
const RUN_SCALE = process.env.FUZZ_RUNS !== undefined ? Number(process.env.FUZZ_RUNS) : 1;

/**
 * fast-check parameters: `numRuns` runs (scaled by FUZZ_RUNS), interrupted after `budgetMs`
 * (counted as success: the budget bounds the suite's time, the runs done are still checked).
 * Properties run in a child process do not shrink (`endOnFailure`): a crash or hang per shrink
 * step would cost seconds each.
 */
export function fuzzParams<T>(numRuns: number, budgetMs = 5_000, shrink = true): fc.Parameters<T> {
  return {
    seed: FUZZ_SEED,
    numRuns: Math.max(1, Math.round(numRuns * RUN_SCALE)),
    interruptAfterTimeLimit: budgetMs * RUN_SCALE,
    markInterruptAsFailure: false,
    endOnFailure: !shrink,
  };
}

/** The vitest timeout for a property with this budget (shrinking a failure may take a while longer). */
export const testTimeout = (budgetMs = 5_000): number => budgetMs * RUN_SCALE + 60_000;

/** What is wrong with a user-facing error message, or undefined if it keeps the contract. */
export function messageProblem(message: string): string | undefined {
  if (message.trim() === '') return 'empty message';
  if (message.length > 300) return `message of ${message.length} characters (at most 300)`;
  const control = /[\u0000-\u001f\u007f-\u009f]/.exec(message);
  if (control) return `control character U+${control[0].charCodeAt(0).toString(16).padStart(4, '0')} at ${control.index}`;
  return undefined;
}

/** A thrown value as one line for failure reports. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${JSON.stringify(err.message.slice(0, 400))}${err instanceof AttnscopeError ? '' : `\n${err.stack ?? ''}`}`;
  return `non-Error thrown: ${String(err)}`;
}

/**
 * Asserts that `err` is a user error keeping the contract: an AttnscopeError whose message is one
 * line of at most 300 characters without control characters (and, with `mustName`, names one of
 * those words). Throws an Error describing the breach otherwise (fast-check reports it).
 */
export function expectUserError(err: unknown, mustName?: readonly string[]): void {
  if (!(err instanceof AttnscopeError)) throw new Error(`expected an AttnscopeError, got ${describeError(err)}`);
  checkUserMessage('AttnscopeError', err.message, mustName);
}

/** The same contract for an error seen as name + message (from a child process). */
export function checkUserMessage(name: string, message: string, mustName?: readonly string[]): void {
  if (name !== 'AttnscopeError') throw new Error(`expected an AttnscopeError, got ${name}: ${JSON.stringify(message.slice(0, 400))}`);
  const problem = messageProblem(message);
  if (problem) throw new Error(`${problem}: ${JSON.stringify(message.slice(0, 400))}`);
  if (mustName && !mustName.some((w) => message.includes(w))) {
    throw new Error(`message does not name ${mustName.map((w) => `'${w}'`).join(' or ')}: ${JSON.stringify(message)}`);
  }
}

/** Runs `f`; returns its value, or undefined after checking that it failed with a proper user error. */
export async function userErrorOr<T>(f: () => Promise<T> | T, mustName?: readonly string[]): Promise<T | undefined> {
  try {
    return await f();
  } catch (err) {
    expectUserError(err, mustName);
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// JSON mutations

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonPath = readonly (string | number)[];

/**
 * Every path in a JSON document (the root included), depth first, up to `limit` paths; with
 * `firstItems`, only the first items of each array (long number arrays are all alike).
 */
export function jsonPaths(doc: Json, limit = Infinity, firstItems = Infinity): JsonPath[] {
  const out: JsonPath[] = [];
  const walk = (v: Json, path: JsonPath): void => {
    if (out.length >= limit) return;
    out.push(path);
    if (Array.isArray(v)) v.slice(0, firstItems).forEach((x, i) => walk(x, [...path, i]));
    else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) walk(x, [...path, k]);
  };
  walk(doc, []);
  return out;
}

/** Marker strings replaced in the serialized text (values JSON.stringify cannot make cheaply). */
const DEEP_ARRAY = '\u0001deep-array\u0001';
const DEEP_OBJECT = '\u0001deep-object\u0001';
const HUGE_NUMBER = '\u0001huge-number\u0001';

/** Values that break naive readers: bounds of every kind, wrong types, nesting, hostile text. */
export const nastyValue: fc.Arbitrary<Json> = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom<Json>(0, -1, -2, 1, 2, 3, 0.5, 1.5, -0.5, 1e-30, 1e9, 1_000_000_000, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 1e21, 1e300, -1e300, 5e-324, 65536) },
  { weight: 2, arbitrary: fc.integer({ min: -100, max: 100_000 }) },
  { weight: 1, arbitrary: fc.double({ noNaN: true, noDefaultInfinity: true }) },
  { weight: 2, arbitrary: fc.constantFrom<Json>('', '0', '12', '1e3', 'NaN', 'Infinity', 'x'.repeat(2000), '\u001b]0;pwned\u0007\u001b[2J', 'a\fb\r\nc\u0000d', '\u202etxt.exe', '💥', '[SEP]', '<unk>', '__proto__', 'constructor') },
  { weight: 1, arbitrary: fc.string({ maxLength: 12, unit: 'binary' }) },
  { weight: 2, arbitrary: fc.constantFrom<Json>(null, true, false, [], {}, [1], [1, 2, 3], [[1]], { a: 1 }, { __proto__: 1 } as unknown as Json) },
  { weight: 1, arbitrary: fc.constantFrom<Json>(DEEP_ARRAY, DEEP_OBJECT, HUGE_NUMBER) },
  { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json> },
);

export type JsonMutation =
  | { op: 'set'; at: number; value: Json }
  | { op: 'delete'; at: number }
  | { op: 'rename'; at: number; name: string }
  | { op: 'wrap'; at: number };

/** One to three mutations at random places of a document (`at` indexes its path list). */
export const jsonMutations: fc.Arbitrary<JsonMutation[]> = fc.array(
  fc.oneof(
    { weight: 6, arbitrary: fc.record({ op: fc.constant('set' as const), at: fc.nat(), value: nastyValue }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), at: fc.nat() }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('rename' as const), at: fc.nat(), name: fc.constantFrom('', 'x', '__metadata__', 'ÿ\u001b[31m', '__proto__') }) },
    { weight: 1, arbitrary: fc.record({ op: fc.constant('wrap' as const), at: fc.nat() }) },
  ),
  { minLength: 1, maxLength: 3 },
);

function getAt(doc: Json, path: JsonPath): Json {
  let v: Json = doc;
  for (const k of path) v = (v as Record<string | number, Json>)[k]!;
  return v;
}

/**
 * Applies mutations to a deep copy of `doc`, restricted to the given paths (default: all), and
 * returns the serialized text. Paths are re-listed after each mutation.
 */
export function mutateJson(
  doc: Json,
  mutations: readonly JsonMutation[],
  pick: (doc: Json) => JsonPath[] = (d) => jsonPaths(d),
  log?: string[],
): string {
  let root: Json = structuredClone(doc);
  for (const m of mutations) {
    const paths = pick(root);
    if (paths.length === 0) break;
    const path = paths[m.at % paths.length]!;
    log?.push(`${path.join('.') || '(root)'}: ${m.op === 'set' ? `= ${JSON.stringify(m.value).slice(0, 60)}` : m.op === 'rename' ? `renamed ${JSON.stringify(m.name)}` : m.op}`);
    if (path.length === 0) {
      if (m.op === 'set') root = m.value;
      else if (m.op === 'wrap') root = [root];
      continue;
    }
    const parent = getAt(root, path.slice(0, -1)) as Record<string | number, Json> & Json[];
    const key = path[path.length - 1]!;
    if (m.op === 'set') parent[key] = m.value;
    else if (m.op === 'wrap') parent[key] = [parent[key]!];
    else if (m.op === 'delete') {
      if (Array.isArray(parent)) parent.splice(key as number, 1);
      else delete parent[key];
    } else if (!Array.isArray(parent)) {
      const value = parent[key]!;
      delete parent[key];
      parent[m.name] = value;
    }
  }
  return expandMarkers(JSON.stringify(root));
}

/** Replaces the marker strings by 10,000-deep nesting and a 400-digit number. */
export function expandMarkers(text: string): string {
  const q = (s: string): string => JSON.stringify(s);
  return text
    .replaceAll(q(DEEP_ARRAY), '['.repeat(10_000) + ']'.repeat(10_000))
    .replaceAll(q(DEEP_OBJECT), '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000))
    .replaceAll(q(HUGE_NUMBER), '9'.repeat(400));
}

// ---------------------------------------------------------------------------------------------
// Byte mutations

export type ByteMutation =
  | { op: 'flip'; at: number; bit: number }
  | { op: 'set'; at: number; byte: number }
  | { op: 'insert'; at: number; bytes: Uint8Array }
  | { op: 'delete'; at: number; count: number }
  | { op: 'truncate'; at: number };

export const byteMutations = (maxLength = 4): fc.Arbitrary<ByteMutation[]> =>
  fc.array(
    fc.oneof(
      { weight: 4, arbitrary: fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }) },
      { weight: 3, arbitrary: fc.record({ op: fc.constant('set' as const), at: fc.nat(), byte: fc.constantFrom(0x00, 0xff, 0x7f, 0x80, 0x22, 0x5c, 0x1b, 0x0c, 0x0a, 0x7b, 0x5d, 0x30, 0x39) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 16 }) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 64 }) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('truncate' as const), at: fc.nat() }) },
    ),
    { minLength: 1, maxLength },
  );

/**
 * Applies byte mutations; positions are taken modulo `region` (default: the whole input), so
 * mutations can be aimed at a header.
 */
export function mutateBytes(input: Uint8Array, mutations: readonly ByteMutation[], region?: number): Uint8Array {
  let bytes: Uint8Array = input.slice();
  for (const m of mutations) {
    const span = Math.max(1, Math.min(region ?? bytes.length, bytes.length));
    const at = m.at % span;
    if (bytes.length === 0) break;
    if (m.op === 'flip') bytes[at] = bytes[at]! ^ (1 << m.bit);
    else if (m.op === 'set') bytes[at] = m.byte;
    else if (m.op === 'insert') bytes = concat(bytes.subarray(0, at), m.bytes, bytes.subarray(at));
    else if (m.op === 'delete') bytes = concat(bytes.subarray(0, at), bytes.subarray(at + m.count));
    else bytes = bytes.slice(0, at);
  }
  return bytes;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  return concatBytes(parts);
}
