/**
 * Fuzzing the trace-file readers (src/io/trace-file.ts): mutated JSON traces and damaged
 * .safetensors traces (a synthetic one written by us, and the one PyTorch wrote for the t5
 * fixture) either fail with one clean AttnscopeError line or give a consistent Trace, which
 * carries a warning whenever its attention holds values no softmax gives (NaN, infinite,
 * negative, above 1).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syntheticTrace } from '../../bench/synthetic-trace.js';
import type { LayerStack, Trace } from '../../src/core/trace.js';
import { serializeSafetensors } from '../../src/io/safetensors.js';
import { openTraceFile, readTraceFile, writeTraceFile } from '../../src/io/trace-file.js';
import { FIXTURES } from '../helpers/reference.js';
import {
  type Json,
  type JsonPath,
  byteMutations,
  fuzzParams,
  jsonMutations,
  jsonPaths,
  messageProblem,
  mutateBytes,
  mutateJson,
  testTimeout,
  userErrorOr,
} from './harness.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-fuzz-trace-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const T5_TRACE = join(FIXTURES, 'traces', 't5-encdec.safetensors');

/** The base documents: a small synthetic trace (with queries and keys) and PyTorch's t5 trace, as JSON. */
let jsonDocs: Json[];
let binaries: Uint8Array[];
beforeAll(async () => {
  const small = syntheticTrace({ layers: 2, heads: 2, tokens: 5, headDim: 3, qk: true });
  const t5 = await readTraceFile(T5_TRACE);
  jsonDocs = [];
  for (const [i, trace] of [small, t5].entries()) {
    await writeTraceFile(join(tmp, `base-${i}.json`), trace);
    jsonDocs.push(JSON.parse(readFileSync(join(tmp, `base-${i}.json`), 'utf8')) as Json);
  }
  await writeTraceFile(join(tmp, 'base.safetensors'), small);
  binaries = [readFileSync(join(tmp, 'base.safetensors')), readFileSync(T5_TRACE)].map((b) => new Uint8Array(b));
});

/** Paths worth mutating: everything but the inside of long number arrays (first three items kept). */
const interestingPaths = (doc: Json): JsonPath[] => jsonPaths(doc, Infinity, 3);

/** Values an attention probability can never take (beyond float32 softmax rounding). */
const impossible = (x: number): boolean => !(x >= -1e-4 && x <= 1 + 1e-4);

/** A Trace read from a damaged file must still hold together, and say when its attention is impossible. */
function checkTrace(trace: Trace, warnings: readonly string[]): void {
  const stacks: [string, LayerStack][] = [];
  for (const map of [trace.attention, trace.queries, trace.keys]) for (const [name, s] of Object.entries(map ?? {})) stacks.push([name, s as LayerStack]);
  for (const [name, stack] of stacks) {
    expect(stack.dims.every((d) => Number.isSafeInteger(d) && d >= 0), `${name} dims`).toBe(true);
    for (const layer of stack.layers) expect(layer.length, `${name} layer size`).toBe(stack.dims[0] * stack.dims[1] * stack.dims[2]);
  }
  expect(Array.isArray(trace.tokens)).toBe(true);
  for (const t of trace.tokens) expect(typeof t.text).toBe('string');
  const bad = Object.values(trace.attention).some((s) => (s as LayerStack).layers.some((l) => l.some(impossible)));
  if (bad) expect(warnings.length, 'attention with NaN, infinite, negative or >1 values opened without a warning').toBeGreaterThan(0);
  for (const w of warnings) expect(messageProblem(w), `warning ${JSON.stringify(w.slice(0, 300))}`).toBeUndefined();
}

let count = 0;
async function readChecked(data: string | Uint8Array, ext: 'json' | 'safetensors'): Promise<void> {
  const path = join(tmp, `case-${count++ % 8}.${ext}`);
  writeFileSync(path, data);
  const opened = await userErrorOr(() => openTraceFile(path));
  if (opened) checkTrace(opened.trace, opened.warnings);
}

describe('fuzz: trace files', () => {
  it('cases the fuzz found: deep or hostile values, null layers, control characters in names', async () => {
    const deep = '['.repeat(10_000) + ']'.repeat(10_000);
    const jsonCases = [
      `{"format":${deep},"version":1}`,
      `{"format":"attnscope-trace","version":${deep}}`,
      JSON.stringify({ format: '\u007fattnscope-trace\f', version: 1 }),
      JSON.stringify({ format: 'attnscope-trace', version: 1, tokens: ['a'], attention: { self: [null] } }),
      JSON.stringify({ format: 'attnscope-trace', version: 1, tokens: ['a'], attention: { self: [[5]] } }),
      JSON.stringify({ format: 'attnscope-trace', version: 1, tokens: ['a'], attention: { 'se\u001b[2Jlf': [[[[1]]]] } }),
    ];
    for (const text of jsonCases) await readChecked(text, 'json');
    const st = (name: string, meta: Record<string, string>) =>
      serializeSafetensors([{ name, dtype: 'F32', shape: [1, 1, 1, 1], data: Float32Array.of(1) }], { tokens: '["a"]', ...meta });
    for (const bytes of [
      st('keys.se\f', { format: 'attnscope-trace' }),
      st('attention.self', { format: '\u007f\u001b]0;x\u0007' }),
      st('attention.self', { format: 'attnscope-trace', version: '\u009b2J' }),
    ]) {
      await readChecked(bytes, 'safetensors');
    }
  });

  it('mutated JSON traces: a consistent trace (with warnings when impossible) or one clean AttnscopeError line', { timeout: testTimeout() }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat(1), jsonMutations, async (which, mutations) => {
        await readChecked(mutateJson(jsonDocs[which]!, mutations, interestingPaths), 'json');
      }),
      fuzzParams(120),
    );
  });

  it('JSON traces with byte damage', { timeout: testTimeout() }, async () => {
    const texts = () => jsonDocs.map((d) => new TextEncoder().encode(JSON.stringify(d)));
    const docs = texts();
    await fc.assert(
      fc.asyncProperty(fc.nat(1), byteMutations(), async (which, mutations) => {
        await readChecked(mutateBytes(docs[which]!, mutations, 4000), 'json');
      }),
      fuzzParams(200),
    );
  });

  it('damaged .safetensors traces (ours and PyTorch\'s)', { timeout: testTimeout() }, async () => {
    const headerEnd = (b: Uint8Array): number => 8 + Number(new DataView(b.buffer, b.byteOffset, 8).getBigUint64(0, true));
    await fc.assert(
      fc.asyncProperty(fc.nat(1), byteMutations(), fc.boolean(), async (which, mutations, inHeader) => {
        const original = binaries[which]!;
        await readChecked(mutateBytes(original, mutations, inHeader ? headerEnd(original) : undefined), 'safetensors');
      }),
      fuzzParams(200),
    );
  });
});
