/**
 * Generation with a key/value cache: the embedded model reproduces PyTorch's greedy
 * continuation; for every decoder family the cached decode gives the same tokens (argmax of
 * full re-runs, whose logits match PyTorch) and the same attention rows as one full re-run.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine/load.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';
import { expectCachedDecodingMatchesFullRuns } from './helpers/fixture-suite.js';
import { FIXTURES, maxAbsDiff, readReference, stackValues } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-gen-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface GreedyReference {
  greedy_continuation: { prompt_ids: number[]; max_new_tokens: number; sequence_ids: number[] };
  greedy_continuation_ids: number[];
}

describe('the embedded default model', () => {
  it("reproduces PyTorch's greedy continuation", async () => {
    const ref = readReference('stories260k') as unknown as GreedyReference;
    const model = await loadModel();
    try {
      const { prompt_ids: prompt, max_new_tokens: n } = ref.greedy_continuation;
      const trace = await model.generate(null, { ids: prompt, maxNewTokens: n });
      expect(trace.tokens.map((t) => t.id)).toEqual(ref.greedy_continuation.sequence_ids);
      expect(trace.tokens.filter((t) => t.generated).map((t) => t.id)).toEqual(ref.greedy_continuation_ids);
      expect(trace.generation).toMatchObject({ promptLength: prompt.length, strategy: 'greedy', stoppedBy: 'length' });
      expect(trace.generation!.steps.map((s) => s.id)).toEqual(ref.greedy_continuation_ids);
    } finally {
      await model.dispose();
    }
  });
});

for (const fixture of ['gpt2', 'gpt_neox', 'llama', 'mistral-window', 'qwen2', 'gemma']) {
  describe(`cached decoding of ${fixture}`, () => {
    const input = readReference(fixture).inputs[0]!;

    it('chooses the argmax of full re-runs and gives their attention, queries and keys', async () => {
      const model = await loadModel(join(FIXTURES, fixture));
      try {
        const { cached: trace, full } = await expectCachedDecodingMatchesFullRuns(model, input.input_ids, 10);
        expect(trace.tokens.slice(0, input.input_ids.length).every((t) => !t.generated)).toBe(true);
        expect(trace.tokens.slice(input.input_ids.length).every((t) => t.generated)).toBe(true);
        // No decoder fixture has an additive score term: the scale, mask and window are the full run's.
        expect(trace.scores).toEqual(full.scores);
        expect(trace.scores?.self?.scale).toHaveLength(model.info.numLayers);
      } finally {
        await model.dispose();
      }
    });
  });
}

describe('sampling', () => {
  it('is reproducible with a seed, and top-k 1 is greedy', async () => {
    const model = await loadModel();
    try {
      const opts = { maxNewTokens: 15, strategy: 'sample' as const, temperature: 1.2, topP: 0.95, seed: 42 };
      const a = await model.generate('Once upon a time', opts);
      const b = await model.generate('Once upon a time', opts);
      expect(a.tokens.map((t) => t.id)).toEqual(b.tokens.map((t) => t.id));
      const seeds = await Promise.all([1, 2, 3, 4].map((seed) => model.generate('Once upon a time', { ...opts, seed })));
      expect(new Set(seeds.map((t) => t.tokens.map((x) => x.id).join(','))).size).toBeGreaterThan(1);
      const topOne = await model.generate('Once upon a time', { maxNewTokens: 15, strategy: 'sample', sampleTopK: 1, seed: 9 });
      const greedy = await model.generate('Once upon a time', { maxNewTokens: 15 });
      expect(topOne.tokens.map((t) => t.id)).toEqual(greedy.tokens.map((t) => t.id));
      for (const s of a.generation!.steps) expect(s.probability).toBeGreaterThan(0);
      // Top-k 1 leaves one candidate, yet the reported probability is still the model's own.
      expect(topOne.generation!.steps.map((s) => s.probability)).toEqual(greedy.generation!.steps.map((s) => s.probability));
      expect(topOne.generation!.steps.some((s) => s.probability < 0.99)).toBe(true);
    } finally {
      await model.dispose();
    }
  });

  it("reports the model's probability of each sampled token: a float64 softmax of the raw logits, before temperature, top-k and top-p", async () => {
    const model = await loadModel();
    try {
      const opts = { maxNewTokens: 8, strategy: 'sample' as const, temperature: 1.7, sampleTopK: 6, topP: 0.7, seed: 5 };
      const trace = await model.generate('Once upon a time', opts);
      const promptLength = trace.generation!.promptLength;
      const ids = trace.tokens.map((t) => t.id);
      const steps = trace.generation!.steps;
      expect(steps.length).toBeGreaterThan(0);
      const renormalised: number[] = [];
      for (const [i, step] of steps.entries()) {
        expect(step.id).toBe(ids[promptLength + i]);
        // The logits at this step, from a full (uncached) run over the same prefix.
        const full = await model.trace(null, { ids: ids.slice(0, promptLength + i), logits: true, attention: false });
        const vocab = full.logits!.dims[1];
        const row = Array.from(full.logits!.data.subarray(full.logits!.data.length - vocab));
        const max = Math.max(...row);
        const sum = row.reduce((s, v) => s + Math.exp(v - max), 0);
        expect(Math.abs(step.probability - Math.exp(row[step.id]! - max) / sum)).toBeLessThanOrEqual(1e-5);
        // What the warped distribution would have said: the six best at temperature 1.7, renormalised.
        const top = [...row].sort((x, y) => y - x).slice(0, 6).map((v) => Math.exp((v - max) / 1.7));
        renormalised.push(Math.exp((row[step.id]! - max) / 1.7) / top.reduce((s, v) => s + v, 0));
      }
      expect(steps.some((s, i) => Math.abs(s.probability - renormalised[i]!) > 0.05)).toBe(true);
    } finally {
      await model.dispose();
    }
  });
});

describe('generation traces', () => {
  it('round-trip through JSON and .safetensors with their generation info', async () => {
    const model = await loadModel();
    try {
      const trace = await model.generate('Lily saw a', { maxNewTokens: 6 });
      for (const file of ['gen.json', 'gen.safetensors']) {
        await writeTraceFile(join(tmp, file), trace);
        const back = await readTraceFile(join(tmp, file));
        expect(back.generation).toEqual(trace.generation);
        expect(back.tokens.map((t) => t.generated ?? false)).toEqual(trace.tokens.map((t) => t.generated ?? false));
        expect(maxAbsDiff(stackValues(back.attention.self), stackValues(trace.attention.self))).toBeLessThanOrEqual(1e-7);
      }
    } finally {
      await model.dispose();
    }
  });

  it('bad requests are clear errors', async () => {
    const model = await loadModel();
    try {
      await expect(model.generate('Once upon a time', { maxNewTokens: 600 })).rejects.toThrow(/generation too long: \d+ prompt tokens \+ 600 new tokens = \d+, but .* accepts at most 512 positions/);
      await expect(model.generate('Once', { maxNewTokens: 3, strategy: 'sample', temperature: 0 })).rejects.toThrow(/temperature must be > 0/);
    } finally {
      await model.dispose();
    }
    const bert = await loadModel(join(FIXTURES, 'bert'));
    try {
      await expect(bert.generate('hello', { maxNewTokens: 3 })).rejects.toThrow(/is an encoder .* does not generate text/);
    } finally {
      await bert.dispose();
    }
  });
});
