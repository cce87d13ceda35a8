/**
 * A JSON trace file larger than one V8 string can hold (issue 13.5: trace files of any size are
 * written and read in chunks). A BERT-base-shaped trace at 512 tokens (12 layers × 12 heads, every
 * probability, queries and keys) is ≈ 600 MB as JSON text: before io/json-file.ts it was written
 * but reading it back failed with "Invalid string length". Here it is written with
 * `writeTraceFile`, read back with `readTraceFile`, and every value is compared with the trace that
 * was written (float32 in, float32 out: the writer prints each float32 so that it reads back to the
 * same float32). The 600 MB file runs under `npm run test:deep` (ATTNSCOPE_DEEP_TESTS=1; ≈ 20 s and
 * 600 MB of disk); `npm test` runs the same round trip at 64 tokens through the chunked reader
 * (`readTraceJson` with no whole-text size), and io-json-file.test.ts checks the reader itself.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LayerStack, Token, Trace } from '../src/core/trace.js';
import { mulberry32 } from '../src/core/random.js';
import { readTraceFile, readTraceJson, writeTraceFile } from '../src/io/trace-file.js';
import { DEEP } from './helpers/deep.js';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'attnscope-json-large-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** Random row-stochastic attention [layers][heads × n × n] and random queries/keys [layers][heads × n × d]. */
function bertShapedTrace(n: number): Trace {
  const L = 12;
  const H = 12;
  const d = 64;
  const rand = mulberry32(11);
  const probs = (): Float32Array => {
    const a = new Float32Array(H * n * n);
    for (let r = 0; r < H * n; r++) {
      let sum = 0;
      for (let k = 0; k < n; k++) sum += a[r * n + k] = Math.exp(4 * rand());
      for (let k = 0; k < n; k++) a[r * n + k]! /= sum;
    }
    return a;
  };
  const vectors = (): Float32Array => Float32Array.from({ length: H * n * d }, () => rand() * 4 - 2);
  const stack = (make: () => Float32Array, last: number): LayerStack => ({ dims: [H, n, last], layers: Array.from({ length: L }, make) });
  const tokens: Token[] = Array.from({ length: n }, (_, i) => ({
    id: 1000 + i,
    text: i === 0 ? '[CLS]' : i === n - 1 ? '[SEP]' : `w${i}`,
    start: 0,
    end: 0,
    special: i === 0 || i === n - 1,
    segment: 0,
    word: i === 0 || i === n - 1 ? null : i - 1,
  }));
  return {
    model: { name: `bert-shaped-${n}`, modelType: 'bert', numLayers: L, numHeads: H, numKeyValueHeads: H, headDim: d },
    tokens,
    attention: { encoder: stack(probs, n) },
    queries: { encoder: stack(vectors, d) },
    keys: { encoder: stack(vectors, d) },
  };
}

describe('a JSON trace read in chunks', () => {
  // test:deep: 512 tokens, a file over V8's longest string (2^29 − 24 characters), where JSON.parse
  // of the whole text cannot run; npm test: 64 tokens (≈ 10 MB), the chunked reader asked for.
  const n = DEEP ? 512 : 64;
  it(`is written, then read back value for value (${n} tokens${DEEP ? ', over 512 MB' : ', read in chunks however small'})`, async () => {
    const trace = bertShapedTrace(n);
    const path = join(tmp, `bert-${n}.json`);
    await writeTraceFile(path, trace);
    if (DEEP) expect((await stat(path)).size).toBeGreaterThan(2 ** 29);
    const back = DEEP ? await readTraceFile(path) : await readTraceJson(path, 0);
    expect(back.tokens).toEqual(trace.tokens);
    for (const field of ['attention', 'queries', 'keys'] as const) {
      const a = trace[field]!.encoder!;
      const b = back[field]?.encoder;
      expect(b?.dims, field).toEqual(a.dims);
      for (let l = 0; l < a.layers.length; l++) {
        const x = a.layers[l]!;
        const y = b!.layers[l]!;
        let diff = 0;
        for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) diff++;
        expect(diff, `${field} layer ${l}: values that differ`).toBe(0);
      }
    }
  }, 180_000);
});
