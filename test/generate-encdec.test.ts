/**
 * Incremental generation for encoder-decoders (t5, bart): the encoder runs once, then the decoder
 * step graph (taps.cache: no encoder, encoder_hidden_states as input, a self-attention key/value
 * cache) runs one token at a time. Checked against the full, non-cached graph: the same greedy
 * choices as an argmax loop re-running everything, and the same attention rows as one full trace
 * of the final decoder ids.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { argmax } from '../src/generation/sampling.js';
import type { TapRequest } from '../src/models/architecture.js';
import type { RuntimeTensor } from '../src/runtime/runtime.js';
import { loadFixtureModel } from './helpers/fixture-suite.js';
import { ENC_DEC_STACKS, encDecTraceDiffs, expectDiffsWithin, stackDiff } from './helpers/encdec.js';
import { FIXTURES, maxAbsDiff, readReference, stackValues } from './helpers/reference.js';

const MAX_NEW = 8;

function lastRow(logits: { dims: readonly number[]; data: Float32Array }): Float32Array {
  const vocab = logits.dims[1]!;
  return logits.data.subarray(logits.data.length - vocab);
}

for (const fixture of ['t5', 'bart']) {
  describe(`incremental generation: ${fixture}`, () => {
    const ref = readReference(fixture);
    const input = ref.inputs[0]!;
    let model: Model;
    loadFixtureModel(fixture, (m) => (model = m));

    it('greedy ids equal an argmax loop over the full (non-cached) graph', async () => {
      const trace = await model.generate(null, { ids: input.input_ids, maxNewTokens: MAX_NEW });
      const start = model.decoderStartId;
      const eos = model.eosIds();
      const chain = [start];
      const probabilities: number[] = [];
      for (let i = 0; i < MAX_NEW; i++) {
        const full = await model.trace(null, { ids: input.input_ids, decoderIds: chain, logits: true });
        const row = lastRow(full.logits!);
        const id = argmax(row);
        const max = row[id]!;
        probabilities.push(1 / row.reduce((sum, v) => sum + Math.exp(v - max), 0));
        chain.push(id);
        if (eos.has(id)) break;
      }
      expect(trace.decoderTokens?.map((t) => t.id)).toEqual(chain);
      expect(trace.generation?.steps.map((s) => s.id)).toEqual(chain.slice(1));
      // The chosen tokens' probabilities: the step graph's logits agree with the full graph's.
      expect(maxAbsDiff(trace.generation!.steps.map((s) => s.probability), probabilities)).toBeLessThanOrEqual(1e-5);
      expect(trace.generation?.stoppedBy).toBe(chain.length - 1 < MAX_NEW ? 'eos' : 'length');
    });

    it('attention, queries and keys of every stack equal one full trace', async () => {
      const gen = await model.generate(null, { ids: input.input_ids, maxNewTokens: MAX_NEW, qk: true });
      const decoderIds = gen.decoderTokens!.map((t) => t.id);
      const full = await model.trace(null, { ids: input.input_ids, decoderIds, qk: true });
      const n = decoderIds.length;
      const enc = input.input_ids.length;
      const heads = model.info.numHeads;
      expect(gen.tokens.map((t) => t.id)).toEqual(input.input_ids);
      expect(gen.attention.decoder?.dims).toEqual([heads, n, n]);
      expect(gen.attention.cross?.dims).toEqual([heads, n, enc]);
      expect(gen.attention.encoder?.dims).toEqual([heads, enc, enc]);
      expectDiffsWithin(encDecTraceDiffs(gen, full));
    });

    it('score terms of every stack equal one full trace (the bias wherever a query sees the key)', async () => {
      const gen = await model.generate(null, { ids: input.input_ids, maxNewTokens: MAX_NEW, qk: true });
      const full = await model.trace(null, { ids: input.input_ids, decoderIds: gen.decoderTokens!.map((t) => t.id), qk: true });
      expect(Object.keys(gen.scores ?? {}).sort()).toEqual(['cross', 'decoder', 'encoder']);
      for (const stack of ENC_DEC_STACKS) {
        const a = gen.scores![stack]!;
        const b = full.scores![stack]!;
        expect({ scale: a.scale, causal: a.causal, window: a.window, biasKind: a.biasKind }).toEqual({ scale: b.scale, causal: b.causal, window: b.window, biasKind: b.biasKind });
        expect(a.bias === undefined).toBe(b.bias === undefined);
        if (!a.bias || !b.bias) continue;
        expect(a.bias.dims).toEqual(b.bias.dims);
        // Cached steps never compute the scores of keys after the query (masked): compare the rest.
        const [, rows, cols] = a.bias.dims;
        const seen = (m: Float32Array): Float32Array => m.map((v, i) => (a.causal && i % cols > Math.floor(i / cols) % rows ? 0 : v));
        expect(maxAbsDiff(stackValues({ dims: a.bias.dims, layers: a.bias.layers.map(seen) }), stackValues({ dims: b.bias.dims, layers: b.bias.layers.map(seen) }))).toBeLessThanOrEqual(1e-5);
      }
    });

    it('marks the start token and the generated tokens', async () => {
      const trace = await model.generate(input.text, { maxNewTokens: MAX_NEW });
      const tokens = trace.decoderTokens!;
      expect(tokens[0]!.id).toBe(model.decoderStartId);
      expect(tokens[0]!.generated).toBeFalsy();
      expect(tokens.length).toBeGreaterThan(1);
      for (const t of tokens.slice(1)) expect(t.generated).toBe(true);
      expect(trace.tokens.map((t) => t.id)).toEqual(input.input_ids);
      expect(trace.tokens.some((t) => t.generated)).toBe(false);
      expect(trace.generation?.promptLength).toBe(1);
      expect(trace.generation?.strategy).toBe('greedy');
      expect(trace.generation?.steps).toHaveLength(tokens.length - 1);
    });

    it('sampling with a seed is reproducible', async () => {
      const options = { ids: input.input_ids, maxNewTokens: MAX_NEW, strategy: 'sample' as const, temperature: 2, seed: 1234 };
      const a = await model.generate(null, options);
      const b = await model.generate(null, options);
      expect(b.decoderTokens!.map((t) => t.id)).toEqual(a.decoderTokens!.map((t) => t.id));
      expect(b.generation).toEqual(a.generation);
      expect(a.generation).toMatchObject({ strategy: 'sample', temperature: 2, seed: 1234 });
    });

    it('the step graph has no encoder and honours pastLength', async () => {
      const taps: TapRequest = { attention: true, qk: false, lastHiddenState: false, logits: true, cache: true };
      const session = await model.session(taps);
      expect(session.inputNames).toContain('encoder_hidden_states');
      expect(session.inputNames).not.toContain('input_ids');
      expect(session.inputNames.filter((n) => n.startsWith('past_key.'))).toHaveLength(model.architecture.describe(model.config).stacks.decoder!);
      // Two decoder tokens at once after a cache of one equal the full graph's last two rows.
      const ids = input.decoder_input_ids as number[];
      const encoded = await model.run({ ...taps, cache: false, logits: false, lastHiddenState: true }, { inputIds: input.input_ids, decoderInputIds: ids.slice(0, 3) });
      const d = model.architecture.describe(model.config);
      const empty: RuntimeTensor = { type: 'float32', dims: [1, d.numKeyValueHeads, 0, d.headDim], data: new Float32Array(0) };
      const past: Record<string, RuntimeTensor> = {};
      for (let l = 0; l < d.stacks.decoder!; l++) past[`past_key.decoder.${l}`] = past[`past_value.decoder.${l}`] = empty;
      const extra = { encoder_hidden_states: encoded.encoder_last_hidden_state! };
      const first = await model.run(taps, { inputIds: input.input_ids, decoderInputIds: ids.slice(0, 1), pastLength: 0 }, { ...extra, ...past });
      const next: Record<string, RuntimeTensor> = {};
      for (let l = 0; l < d.stacks.decoder!; l++) {
        next[`past_key.decoder.${l}`] = first[`present_key.decoder.${l}`]!;
        next[`past_value.decoder.${l}`] = first[`present_value.decoder.${l}`]!;
      }
      const second = await model.run(taps, { inputIds: input.input_ids, decoderInputIds: ids.slice(1, 3), pastLength: 1 }, { ...extra, ...next });
      expect(second['attention.decoder.0']!.dims).toEqual([1, d.numHeads, 2, 3]);
      expect(second['attention.cross.0']!.dims).toEqual([1, d.numHeads, 2, input.input_ids.length]);
      expect(second['present_key.decoder.0']!.dims).toEqual([1, d.numKeyValueHeads, 3, d.headDim]);
      const full = await model.run({ ...taps, cache: false }, { inputIds: input.input_ids, decoderInputIds: ids.slice(0, 3) });
      const fullLogits = full.logits!.data as Float32Array;
      const vocab = full.logits!.dims[2]!;
      expect(maxAbsDiff(second.logits!.data as Float32Array, fullLogits.subarray(vocab))).toBeLessThanOrEqual(1e-4);
      const fullAttn = full['attention.decoder.1']!.data as Float32Array;
      const stepAttn = second['attention.decoder.1']!.data as Float32Array;
      expect(maxAbsDiff(stepAttn, Array.from({ length: d.numHeads }, (_, h) => [...fullAttn.subarray(h * 9 + 3, h * 9 + 9)]).flat())).toBeLessThanOrEqual(1e-5);
    });

    it('prints the cost of a decoder step against the full graph (not asserted)', async () => {
      const d = model.architecture.describe(model.config);
      const stepTaps: TapRequest = { attention: true, qk: false, lastHiddenState: false, logits: true, cache: true };
      const fullTaps: TapRequest = { attention: true, qk: false, lastHiddenState: false, logits: true };
      const encoded = await model.run({ ...fullTaps, lastHiddenState: true, logits: false }, { inputIds: input.input_ids, decoderInputIds: [model.decoderStartId] });
      const extra = { encoder_hidden_states: encoded.encoder_last_hidden_state! };
      const median = async (f: () => Promise<unknown>): Promise<number> => {
        await f();
        const times: number[] = [];
        for (let i = 0; i < 7; i++) {
          const t0 = performance.now();
          await f();
          times.push(performance.now() - t0);
        }
        return times.sort((a, b) => a - b)[3]!;
      };
      const lines: string[] = [];
      for (const length of [8, 32, Math.min(120, d.maxPositions - 1)]) {
        const past: Record<string, RuntimeTensor> = {};
        for (let l = 0; l < d.stacks.decoder!; l++) {
          const data = Float32Array.from({ length: d.numKeyValueHeads * length * d.headDim }, (_, i) => Math.sin(i));
          past[`past_key.decoder.${l}`] = past[`past_value.decoder.${l}`] = { type: 'float32', dims: [1, d.numKeyValueHeads, length, d.headDim], data };
        }
        const ids = Array.from({ length: length + 1 }, (_, i) => 3 + (i % 50));
        const step = await median(() => model.run(stepTaps, { inputIds: input.input_ids, decoderInputIds: ids.slice(-1), pastLength: length }, { ...extra, ...past }));
        const full = await median(() => model.run(fullTaps, { inputIds: input.input_ids, decoderInputIds: ids }));
        lines.push(`  decoder position ${length}: step ${step.toFixed(2)} ms, full graph ${full.toFixed(2)} ms`);
      }
      console.log(`${fixture} (encoder ${input.input_ids.length} tokens), median of 7:\n${lines.join('\n')}`);
    });
  });
}

describe('tracing an encoder-decoder without a decoder input', () => {
  it('generates the decoder input, as attnscope generate does', async () => {
    const model = await loadModel(join(FIXTURES, 't5'));
    try {
      const text = readReference('t5').inputs[0]!.text;
      const traced = await model.trace(text, { maxNewTokens: 5 });
      const generated = await model.generate(text, { maxNewTokens: 5 });
      expect(traced.generation).toEqual(generated.generation);
      expect(traced.decoderTokens!.map((t) => t.id)).toEqual(generated.decoderTokens!.map((t) => t.id));
      expect(stackDiff(traced.attention.cross, generated.attention.cross)).toBe(0);
    } finally {
      await model.dispose();
    }
  });
});

describe('incremental generation: errors', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'attnscope-encdec-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('a config without decoder_start_token_id gives a clear error', async () => {
    const copy = join(dir, 't5');
    cpSync(join(FIXTURES, 't5'), copy, { recursive: true });
    for (const file of ['config.json', 'generation_config.json']) {
      const config = JSON.parse(readFileSync(join(copy, file), 'utf8')) as Record<string, unknown>;
      delete config.decoder_start_token_id;
      writeFileSync(join(copy, file), JSON.stringify(config));
    }
    const model = await loadModel(copy);
    try {
      const error = await model.generate('The cat sat on the mat.', { maxNewTokens: 4 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AttnscopeError);
      expect((error as Error).message).toMatch(/decoder_start_token_id/);
    } finally {
      await model.dispose();
    }
  });
});
