/**
 * A JSON trace file larger than one V8 string can hold (issue 13.5: trace files of any size are
 * written and read in chunks). A BERT-base-shaped trace at 512 tokens (12 layers × 12 heads, every
 * probability, queries and keys) is ≈ 600 MB as JSON text: before io/json-file.ts it was written
 * but reading it back failed with "Invalid string length". Here it is written with
 * `writeTraceFile`, read back with `readTraceFile`, and every value is compared with the trace that
 * was written (float32 in, float32 out: the writer prints each float32 so that it reads back to the
 * same float32). Runs under `npm run test:deep` (ATTNSCOPE_DEEP_TESTS=1; ≈ 20 s and 600 MB of
 * disk); io-json-file.test.ts checks the chunked reader on every run of `npm test`.
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LayerStack, Token, Trace } from '../src/core/trace.js';
import { mulberry32 } from '../src/core/random.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';
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
    model: { name: 'bert-shaped-512', modelType: 'bert', numLayers: L, numHeads: H, numKeyValueHeads: H, headDim: d },
    tokens,
    attention: { encoder: stack(probs, n) },
    queries: { encoder: stack(vectors, d) },
    keys: { encoder: stack(vectors, d) },
  };
}

describe.runIf(DEEP)('a JSON trace over 512 MB', () => {
  it('is written, then read back value for value', async () => {
    const trace = bertShapedTrace(512);
    const path = join(tmp, 'bert-512.json');
    await writeTraceFile(path, trace);
    // Over V8's longest string (2^29 - 24 characters): JSON.parse of the whole text cannot run.
    expect((await stat(path)).size).toBeGreaterThan(2 ** 29);
    const back = await readTraceFile(path);
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
