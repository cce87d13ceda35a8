/**
 * Generation with attention on demand (issue 13.6): the prompt pass in bands of query rows, each new
 * token's queries kept, its attention row computed from the trace's queries, keys and score terms.
 * On every causal fixture family: the same tokens as the dense generation path, every step's row in
 * every layer and head equal to the dense path's probabilities, and the prompt's rows equal to
 * PyTorch's attention (reference.json); the embedded model's tokens equal PyTorch's greedy
 * continuation; encoder-decoders too; the trace file keeps the queries and keys and no probabilities.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { deepOr } from './helpers/deep.js';
import { attentionSource } from '../src/core/attention-on-demand.js';
import type { StackName, Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import { GrowingRows } from '../src/generation/rows.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';
import { stepAttentionRow, stepWindow, traceGeneration } from '../src/views/generation.js';
import { FIXTURES, flat, maxAbsDiff, readReference, type ReferenceInput } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-gen-long-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Fixtures whose reference.json describes a causal decoder (gpt2-bin: the same model as gpt2). */
const CAUSAL = readdirSync(FIXTURES).filter((f) => {
  if (f === 'gpt2-bin') return false;
  try {
    const a = readReference(f).attention as unknown as { family?: string; causal?: boolean };
    return a.family === 'decoder' && a.causal === true;
  } catch {
    return false;
  }
});

const NEW_TOKENS = 6;

/** Every step's newest row, every layer and head, of `a` against `b`: the largest difference. */
function stepRowsDiff(a: Trace, b: Trace, stack: StackName): number {
  const gen = traceGeneration(a)!;
  const { numLayers, numHeads } = attentionSource(a, stack);
  let worst = 0;
  for (let step = 0; step <= gen.steps; step++) {
    for (let l = 0; l < numLayers; l++) {
      for (let h = 0; h < numHeads; h++) {
        const x = stepAttentionRow(a, stack, step, l, h)!;
        const y = stepAttentionRow(b, stack, step, l, h)!;
        expect(x.length).toBe(y.length);
        worst = Math.max(worst, maxAbsDiff(x, y));
      }
    }
  }
  return worst;
}

/** The longest reference input that has PyTorch's attention. */
function longestInput(fixture: string): ReferenceInput {
  const inputs = readReference(fixture).inputs.filter((i) => i.attentions !== undefined);
  return inputs.reduce((a, b) => (b.input_ids.length > a.input_ids.length ? b : a));
}

describe('generation on demand equals the dense path and PyTorch', () => {
  it('covers every causal fixture family', () => {
    expect(CAUSAL.length).toBeGreaterThanOrEqual(18);
    expect(CAUSAL).toEqual(expect.arrayContaining(['gpt2', 'llama', 'mistral-window', 'bloom', 'falcon-alibi', 'qwen2', 'gemma', 'stories260k']));
  });

  // Every causal family under test:deep; npm test runs one of each kind of score term (plain causal,
  // sliding window, ALiBi biases, mixture of experts, the embedded model).
  for (const fixture of deepOr(CAUSAL, ['gpt2', 'llama', 'mistral-window', 'bloom', 'falcon-alibi', 'mixtral', 'stories260k'])) {
    it(fixture, async () => {
      const input = longestInput(fixture);
      const ids = input.input_ids;
      const n = ids.length;
      const model = await loadModel(join(FIXTURES, fixture));
      try {
        const dense = await model.generate(null, { ids, maxNewTokens: NEW_TOKENS, qk: true });
        const lazy = await model.generate(null, { ids, maxNewTokens: NEW_TOKENS, attention: 'on-demand' });
        // Same tokens, same record (the model's probability of each, to float32 rounding).
        expect(lazy.tokens.map((t) => t.id)).toEqual(dense.tokens.map((t) => t.id));
        expect(lazy.tokens.map((t) => t.generated ?? false)).toEqual(dense.tokens.map((t) => t.generated ?? false));
        expect(lazy.generation!.steps.map((s) => s.id)).toEqual(dense.generation!.steps.map((s) => s.id));
        expect(maxAbsDiff(lazy.generation!.steps.map((s) => s.probability), dense.generation!.steps.map((s) => s.probability))).toBeLessThanOrEqual(1e-5);
        expect({ ...lazy.generation, steps: [] }).toEqual({ ...dense.generation, steps: [] });
        // No probabilities: queries of every position, keys of every position (the final cache).
        const total = lazy.tokens.length;
        const d = model.info;
        expect(lazy.attention).toEqual({});
        expect(lazy.queries!.self!.dims).toEqual([d.numHeads, total, d.headDim]);
        expect(lazy.keys!.self!.dims).toEqual([d.numKeyValueHeads, total, d.headDim]);
        expect(lazy.scores!.self!.scale).toEqual(dense.scores!.self!.scale);
        expect(lazy.scores!.self!.window).toEqual(dense.scores!.self!.window);
        // The queries and keys are those the dense path tapped.
        expect(maxAbsDiff(flatStack(lazy.queries!.self!), flatStack(dense.queries!.self!))).toBeLessThanOrEqual(1e-4);
        expect(maxAbsDiff(flatStack(lazy.keys!.self!), flatStack(dense.keys!.self!))).toBeLessThanOrEqual(1e-4);
        // Every step's attention row, every layer and head, computed on demand = the dense probabilities.
        expect(stepRowsDiff(lazy, dense, 'self')).toBeLessThanOrEqual(1e-5);
        expect(stepWindow(lazy, 'self', NEW_TOKENS)).toEqual({ queries: total, keys: total, newest: total - 1 });
        // The prompt's rows over the prompt = PyTorch's attention of the prompt.
        const source = attentionSource(lazy, 'self');
        const prompt = new Float32Array(source.numLayers * source.numHeads * n * n);
        for (let l = 0; l < source.numLayers; l++) {
          for (let h = 0; h < source.numHeads; h++) prompt.set(source.block(l, h, 0, n, 0, n), (l * source.numHeads + h) * n * n);
        }
        expect(maxAbsDiff(prompt, flat(input.attentions!))).toBeLessThanOrEqual(1e-5);
      } finally {
        await model.dispose();
      }
    });
  }
});

function flatStack(s: { layers: readonly Float32Array[] }): Float32Array {
  const out = new Float32Array(s.layers.reduce((a, l) => a + l.length, 0));
  let o = 0;
  for (const l of s.layers) {
    out.set(l, o);
    o += l.length;
  }
  return out;
}

interface GreedyReference {
  greedy_continuation: { prompt_ids: number[]; max_new_tokens: number; sequence_ids: number[] };
}

describe('the embedded default model on demand', () => {
  it("reproduces PyTorch's greedy continuation, and 'auto' goes on demand above its threshold", async () => {
    const ref = readReference('stories260k') as unknown as GreedyReference;
    const model = await loadModel();
    try {
      const { prompt_ids: prompt, max_new_tokens: maxNew } = ref.greedy_continuation;
      const trace = await model.generate(null, { ids: prompt, maxNewTokens: maxNew, attention: 'on-demand' });
      expect(trace.tokens.map((t) => t.id)).toEqual(ref.greedy_continuation.sequence_ids);
      expect(trace.attention).toEqual({});
      const total = prompt.length + maxNew;
      const below = await model.generate(null, { ids: prompt, maxNewTokens: maxNew, attention: 'auto', onDemandAbove: total });
      const above = await model.generate(null, { ids: prompt, maxNewTokens: maxNew, attention: 'auto', onDemandAbove: total - 1 });
      expect(below.attention.self).toBeDefined();
      expect(above.attention).toEqual({});
      expect(above.tokens.map((t) => t.id)).toEqual(ref.greedy_continuation.sequence_ids);
    } finally {
      await model.dispose();
    }
  });
});

describe('encoder-decoders on demand', () => {
  for (const fixture of ['bart', 't5']) {
    it(`${fixture}: the same tokens and decoder and cross rows as the dense path, the encoder's attention too`, async () => {
      const model = await loadModel(join(FIXTURES, fixture));
      try {
        const ids = readReference(fixture).inputs[0]!.input_ids;
        const dense = await model.generate(null, { ids, maxNewTokens: NEW_TOKENS, qk: true });
        const lazy = await model.generate(null, { ids, maxNewTokens: NEW_TOKENS, attention: 'on-demand' });
        expect(lazy.decoderTokens!.map((t) => t.id)).toEqual(dense.decoderTokens!.map((t) => t.id));
        expect(lazy.attention).toEqual({});
        for (const stack of ['decoder', 'cross'] as const) expect(stepRowsDiff(lazy, dense, stack)).toBeLessThanOrEqual(1e-5);
        const enc = attentionSource(lazy, 'encoder');
        const denseEnc = dense.attention.encoder!;
        let worst = 0;
        for (let l = 0; l < enc.numLayers; l++) {
          const [heads, q, k] = denseEnc.dims;
          for (let h = 0; h < heads; h++) worst = Math.max(worst, maxAbsDiff(enc.block(l, h, 0, q, 0, k), denseEnc.layers[l]!.subarray(h * q * k, (h + 1) * q * k)));
        }
        expect(worst).toBeLessThanOrEqual(1e-5);
      } finally {
        await model.dispose();
      }
    });
  }
});

describe('generation traces on demand in files', () => {
  it('round-trip through .safetensors and JSON: queries, keys, score terms and generation record, no probabilities; every step row as before', async () => {
    const model = await loadModel(join(FIXTURES, 'mistral-window'));
    try {
      const ids = longestInput('mistral-window').input_ids;
      const trace = await model.generate(null, { ids, maxNewTokens: NEW_TOKENS, attention: 'on-demand' });
      for (const file of ['gen.safetensors', 'gen.json']) {
        const path = join(tmp, file);
        await writeTraceFile(path, trace);
        const back = await readTraceFile(path);
        expect(back.attention).toEqual({});
        expect(back.generation).toEqual(trace.generation);
        expect(back.tokens.map((t) => [t.id, t.generated ?? false])).toEqual(trace.tokens.map((t) => [t.id, t.generated ?? false]));
        expect(back.scores).toEqual(trace.scores);
        expect(stepRowsDiff(back, trace, 'self')).toBe(0);
      }
    } finally {
      await model.dispose();
    }
  });
});

describe('rows written into arrays allocated once', () => {
  it('place each step at its positions per head, and cut to the positions decoded (an end-of-sequence stop)', () => {
    // 2 heads, width 2; a 2-row prompt then one row: capacity 5, 3 decoded.
    const rows = new GrowingRows(5);
    rows.add([Float32Array.of(1, 2, 3, 4, /* head 1 */ 5, 6, 7, 8)], 2, 2, 2, 0);
    rows.add([Float32Array.of(9, 10, /* head 1 */ 11, 12)], 2, 1, 2, 2);
    const cut = rows.stack(3);
    expect(cut.dims).toEqual([2, 3, 2]);
    expect(Array.from(cut.layers[0]!)).toEqual([1, 2, 3, 4, 9, 10, 5, 6, 7, 8, 11, 12]);
    expect(() => rows.add([new Float32Array(4)], 2, 1, 2, 5)).toThrow(/exceed the 5 positions/);
    const full = new GrowingRows(1);
    full.add([Float32Array.of(7, 8)], 1, 1, 2, 0);
    expect(Array.from(full.stack(1).layers[0]!)).toEqual([7, 8]);
  });
});
