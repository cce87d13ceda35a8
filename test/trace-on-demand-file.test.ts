/**
 * Trace files in the on-demand form (queries, keys and score terms, no attention tensors): JSON and
 * .safetensors round trips give back the same on-demand attention (bit for bit) and PyTorch's
 * attention (≤ 1e-5); a bias every layer shares (T5) is stored once; the file is smaller than the
 * dense one; malformed files give one line naming the field.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attentionSource, attentionStacks } from '../src/core/attention-on-demand.js';
import { attentionHead } from '../src/core/attention-source.js';
import type { StackName, Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import { openSafetensors, serializeSafetensors } from '../src/io/safetensors.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';
import { FIXTURES, flat, readReference, type Nested } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-on-demand-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const REFERENCE_KEY: Record<StackName, string> = { self: 'attentions', encoder: 'encoder_attentions', decoder: 'decoder_attentions', cross: 'cross_attentions' };

/** Every head of every stack of `a` equals `b`'s (bit for bit). */
function sameAttention(a: Trace, b: Trace): void {
  expect(attentionStacks(b)).toEqual(attentionStacks(a));
  for (const stack of attentionStacks(a)) {
    const sa = attentionSource(a, stack);
    const sb = attentionSource(b, stack);
    for (let l = 0; l < sa.numLayers; l++) for (let h = 0; h < sa.numHeads; h++) expect(attentionHead(sb, l, h)).toEqual(attentionHead(sa, l, h));
  }
}

describe.each(['gpt2', 't5', 'llama'])('fixture %s: on-demand trace files', (fixture) => {
  const ref = readReference(fixture);
  const input = ref.inputs[ref.inputs.length - 1]!;
  const decoderIds = input.decoder_input_ids as number[] | undefined;
  let lazy: Trace;
  let dense: Trace;
  beforeAll(async () => {
    const model = await loadModel(join(FIXTURES, fixture));
    try {
      const base = decoderIds ? { ids: input.input_ids, decoderIds } : { ids: input.input_ids };
      lazy = await model.trace(null, { ...base, attention: 'on-demand' });
      dense = await model.trace(null, base);
    } finally {
      await model.dispose();
    }
  });

  for (const ext of ['json', 'safetensors']) {
    it(`.${ext}: no attention tensors; read back, every head equals the written trace's and PyTorch's`, async () => {
      const path = join(tmp, `${fixture}-lazy.${ext}`);
      await writeTraceFile(path, lazy);
      const back = await readTraceFile(path);
      expect(Object.keys(back.attention)).toEqual([]);
      expect(back.model).toEqual(lazy.model);
      expect(back.tokens).toEqual(lazy.tokens);
      sameAttention(lazy, back);
      for (const stack of attentionStacks(back)) {
        const source = attentionSource(back, stack);
        const reference = flat(input[REFERENCE_KEY[stack]] as Nested);
        const cells = source.numQueries * source.numKeys;
        let worst = 0;
        for (let l = 0; l < source.numLayers; l++) {
          for (let h = 0; h < source.numHeads; h++) {
            const got = attentionHead(source, l, h);
            const at = (l * source.numHeads + h) * cells;
            for (let c = 0; c < cells; c++) worst = Math.max(worst, Math.abs(got[c]! - reference[at + c]!));
          }
        }
        expect(worst, `${fixture} ${stack}`).toBeLessThanOrEqual(1e-5);
      }
      if (ext === 'safetensors') {
        const file = await openSafetensors(path);
        try {
          expect(file.names().filter((n) => n.startsWith('attention.'))).toEqual([]);
          // T5's relative position bias is one array every layer shares: stored once.
          for (const name of file.names().filter((n) => n.startsWith('scoreBias.'))) expect((await file.get(name)).shape[0]).toBe(1);
        } finally {
          await file.close();
        }
      }
    });
  }

  it('the dense trace written with queries and keys reads back with both forms equal', async () => {
    const path = join(tmp, `${fixture}-dense.safetensors`);
    await writeTraceFile(path, { ...dense, queries: lazy.queries!, keys: lazy.keys!, scores: lazy.scores! });
    const back = await readTraceFile(path);
    expect(Object.keys(back.attention).sort()).toEqual(attentionStacks(lazy).sort());
    // The reader hands out the dense probabilities when it has them.
    expect(attentionSource(back, attentionStacks(back)[0]!).onDemand).toBe(false);
    expect(statSync(join(tmp, `${fixture}-lazy.safetensors`)).size).toBeLessThan(statSync(path).size);
  });
});

describe('malformed on-demand trace files', () => {
  const meta = { format: 'attnscope-trace', version: '1', tokens: JSON.stringify(['a', 'b', 'c']) };
  const qk = (n: number) => new Float32Array(2 * 2 * n * 4).fill(0.5);
  const write = (name: string, tensors: Parameters<typeof serializeSafetensors>[0], extra: Record<string, string> = {}): string => {
    const path = join(tmp, name);
    writeFileSync(path, serializeSafetensors(tensors, { ...meta, ...extra }));
    return path;
  };
  const scores = JSON.stringify({ self: { scale: [0.5, 0.5], causal: true, window: [null, null] } });

  it('a q/k trace without score terms opens, and says why its attention cannot be computed', async () => {
    const path = write('no-scores.safetensors', [
      { name: 'queries.self', dtype: 'F32', shape: [2, 2, 3, 4], data: qk(3) },
      { name: 'keys.self', dtype: 'F32', shape: [2, 2, 3, 4], data: qk(3) },
    ]);
    const back = await readTraceFile(path);
    expect(back.model).toMatchObject({ numLayers: 2, numHeads: 2, headDim: 4 });
    expect(() => attentionSource(back, 'self')).toThrow("the trace has no 'self' attention (neither probabilities nor queries, keys and score terms)");
  });

  it('queries without keys, positions that are not the tokens, a bias that does not fit: one line each', async () => {
    await expect(readTraceFile(write('no-keys.safetensors', [{ name: 'queries.self', dtype: 'F32', shape: [2, 2, 3, 4], data: qk(3) }])))
      .rejects.toThrow('keys.self missing (a stack without attention needs both queries and keys)');
    await expect(readTraceFile(write('no-keys-scored.safetensors', [{ name: 'queries.self', dtype: 'F32', shape: [2, 2, 3, 4], data: qk(3) }], { scores })))
      .rejects.toThrow("metadata scores.self: the trace has no 'self' attention (neither probabilities nor queries and keys)");
    await expect(readTraceFile(write('positions.safetensors', [
      { name: 'queries.self', dtype: 'F32', shape: [2, 2, 4, 4], data: qk(4) },
      { name: 'keys.self', dtype: 'F32', shape: [2, 2, 4, 4], data: qk(4) },
    ], { scores }))).rejects.toThrow('queries.self has 4 and keys.self 4 positions but there are 3 query and 3 key tokens');
    await expect(readTraceFile(write('bias.safetensors', [
      { name: 'queries.self', dtype: 'F32', shape: [2, 2, 3, 4], data: qk(3) },
      { name: 'keys.self', dtype: 'F32', shape: [2, 2, 3, 4], data: qk(3) },
      { name: 'scoreBias.self', dtype: 'F32', shape: [2, 2, 3, 2], data: new Float32Array(24) },
    ], { scores }))).rejects.toThrow('metadata scores.self.bias: [2, 2, 3, 2] does not fit the attention [2, 2, 3, 3] (one layer, or one per layer)');
  });

  it('a well-formed hand-made q/k trace gives the softmax of its scores', async () => {
    // Every query and key is the same vector: equal scores, so the causal rows are uniform.
    const back = await readTraceFile(write('uniform.safetensors', [
      { name: 'queries.self', dtype: 'F32', shape: [2, 2, 3, 4], data: qk(3) },
      { name: 'keys.self', dtype: 'F32', shape: [2, 2, 3, 4], data: qk(3) },
    ], { scores }));
    expect(Array.from(attentionHead(attentionSource(back, 'self'), 1, 1))).toEqual([1, 0, 0, 0.5, 0.5, 0, 1 / 3, 1 / 3, 1 / 3].map(Math.fround));
  });
});
