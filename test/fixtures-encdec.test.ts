/**
 * Encoder-decoder fixtures (t5, bart, mbart, pegasus, m2m100, marian) must reproduce what PyTorch transformers computed for them
 * (reference.json): encoder, decoder and cross attention of every layer and head (≤ 1e-5),
 * per-head queries and keys and both final hidden states (≤ 1e-4), decoder input ids from
 * text, T5's relative position bias, and a binary trace PyTorch wrote for the t5 fixture.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { openSafetensors } from '../src/io/safetensors.js';
import { readTraceFile } from '../src/io/trace-file.js';
import { ModelConfig } from '../src/models/config.js';
import { relativePositionBuckets, t5Spec } from '../src/models/t5.js';
import { loadFixtureModel } from './helpers/fixture-suite.js';
import { ENC_DEC_STACKS, encDecReferenceDiffs, expectDiffsWithin, expectEncDecStacks } from './helpers/encdec.js';
import { FIXTURES, maxAbsDiff, readReference, refTensor, stackValues } from './helpers/reference.js';


// T5 and BART, then the translation models of issue 8.
for (const fixture of ['t5', 'bart', 'mbart', 'pegasus', 'm2m100', 'marian']) {
  describe(`encoder-decoder fixture ${fixture}`, () => {
    const ref = readReference(fixture);
    let model: Model;
    loadFixtureModel(fixture, (m) => (model = m));

    it('describes the model as PyTorch does', () => {
      expectEncDecStacks(model, ref);
      expect(model.info.numLayers).toBe((ref.attention.num_layers as Record<string, number>).encoder);
      expect(model.info.numKeyValueHeads).toBe(ref.attention.num_kv_heads);
    });

    for (const input of ref.inputs) {
      const decoderIds = input.decoder_input_ids as number[];

      it(`input '${input.id}': attention, queries, keys and hidden states of all stacks match`, async () => {
        const trace = await model.trace(null, { ids: input.input_ids, decoderIds, qk: true, hidden: true });
        expect(trace.tokens.map((t) => t.id)).toEqual(input.input_ids);
        expect(trace.decoderTokens?.map((t) => t.id)).toEqual(decoderIds);
        expectDiffsWithin(encDecReferenceDiffs(trace, input));
        expect(trace.attention.cross?.dims).toEqual([ref.attention.num_heads, decoderIds.length, input.input_ids.length]);
      });

      it(`input '${input.id}': text and decoder text give the same ids and attention`, async () => {
        const trace = await model.trace(input.text, { decoderText: input.decoder_text as string });
        expect(trace.tokens.map((t) => t.id)).toEqual(input.input_ids);
        expect(trace.decoderTokens?.map((t) => t.id)).toEqual(decoderIds);
        expect(maxAbsDiff(stackValues(trace.attention.cross), refTensor(input, 'cross_attentions'))).toBeLessThanOrEqual(1e-5);
      });

      it(`input '${input.id}': logits of the prediction head match`, async () => {
        const out = await model.run(
          { attention: false, qk: false, lastHiddenState: false, logits: true },
          { inputIds: input.input_ids, decoderInputIds: decoderIds },
        );
        const logits = out.logits;
        expect(logits?.dims).toEqual([1, decoderIds.length, refTensor(input, 'logits').length / decoderIds.length]);
        expect(maxAbsDiff(logits!.data as Float32Array, refTensor(input, 'logits'))).toBeLessThanOrEqual(1e-4);
      });
    }
  });
}

describe('t5 relative position bias', () => {
  const ref = readReference('t5');

  it('buckets index the bias table exactly as PyTorch does (encoder bidirectional, decoder causal)', async () => {
    const spec = t5Spec(new ModelConfig(JSON.parse(readFileSync(join(FIXTURES, 't5', 'config.json'), 'utf8')) as Record<string, unknown>));
    const weights = await openSafetensors(join(FIXTURES, 't5', 'model.safetensors'));
    try {
      for (const [stack, bidirectional] of [['encoder', true], ['decoder', false]] as const) {
        const table = await weights.get(`${stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight`);
        const heads = table.shape[1]!;
        for (const input of ref.inputs) {
          const n = (stack === 'encoder' ? input.input_ids : (input.decoder_input_ids as number[])).length;
          const buckets = relativePositionBuckets(n, n, bidirectional, spec.numBuckets, spec.maxDistance);
          const bias = new Float32Array(heads * n * n);
          for (let h = 0; h < heads; h++) {
            for (let i = 0; i < n * n; i++) bias[h * n * n + i] = table.data[buckets[i]! * heads + h]!;
          }
          const diff = maxAbsDiff(bias, refTensor(input, `${stack}_position_bias`));
          // The table rows are gathered as they are: any wrong bucket shows up as a large difference.
          expect(diff, `${stack} ${input.id}`).toBeLessThanOrEqual(1e-6);
        }
      }
    } finally {
      await weights.close();
    }
  });

  it('uses the log buckets of HF for long distances', () => {
    // Distances with exact float32 log ratios (16, 32, 64 with 32 bidirectional buckets) land on
    // the upper bucket: 8 + trunc(8 · log(n/8) / log 16).
    const b = (rel: number, bi: boolean): number => relativePositionBuckets(1, 1 + Math.max(rel, 0), bi, 32, 128)[Math.max(rel, 0)]!;
    expect([15, 16, 31, 32, 63, 64, 127, 128, 500].map((r) => b(r, true))).toEqual([25, 26, 27, 28, 29, 30, 31, 31, 31]);
    expect(relativePositionBuckets(1, 1, false, 32, 128)[0]).toBe(0);
    // Decoder: only the past counts; keys after the query share bucket 0.
    const dec = relativePositionBuckets(3, 3, false, 32, 128);
    expect(Array.from(dec)).toEqual([0, 0, 0, 1, 0, 0, 2, 1, 0]);
  });
});

describe('binary trace written by PyTorch', () => {
  it('t5-encdec.safetensors loads and equals what the engine computes for that input', async () => {
    const file = await readTraceFile(join(FIXTURES, 'traces', 't5-encdec.safetensors'));
    const input = readReference('t5').inputs[1]!;
    expect(file.tokens.map((t) => t.text)).toEqual(input.tokens);
    expect(file.decoderTokens?.map((t) => t.text)).toEqual(input.decoder_tokens);
    const model = await loadModel(join(FIXTURES, 't5'));
    try {
      const trace = await model.trace(null, { ids: input.input_ids, decoderIds: input.decoder_input_ids as number[] });
      for (const stack of ENC_DEC_STACKS) {
        expect(file.attention[stack]?.dims, stack).toEqual(trace.attention[stack]?.dims);
        expect(file.attention[stack]?.layers.length, stack).toBe(trace.attention[stack]?.layers.length);
        const diff = maxAbsDiff(stackValues(file.attention[stack]), stackValues(trace.attention[stack]));
        expect(diff, stack).toBeLessThanOrEqual(1e-5);
      }
    } finally {
      await model.dispose();
    }
  });
});
