/**
 * Translation encoder-decoder fixtures of issue 8 (mbart, pegasus, m2m100) must
 * reproduce what PyTorch transformers computed for them (reference.json): encoder, decoder and
 * cross attention of every layer and head (≤ 1e-5), per-head queries and keys, both final hidden
 * states and the logits (≤ 1e-4), and the token ids of the fixture's texts.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StackName } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { FIXTURES, flat, maxAbsDiff, readReference, stackValues, type Nested, type ReferenceInput } from './helpers/reference.js';

const STACKS: readonly StackName[] = ['encoder', 'decoder', 'cross'];
const FAMILIES = ['mbart', 'pegasus', 'm2m100', 'marian'];

function refTensor(input: ReferenceInput, key: string): Float64Array {
  const v = input[key];
  if (v === undefined) throw new Error(`reference input ${input.id} has no ${key}`);
  return flat(v as Nested);
}

for (const fixture of FAMILIES) {
  describe(`encoder-decoder fixture ${fixture}`, () => {
    const ref = readReference(fixture);
    let model: Model;
    beforeAll(async () => {
      model = await loadModel(join(FIXTURES, fixture));
    });
    afterAll(async () => {
      await model?.dispose();
    });

    it('describes the model as PyTorch does', () => {
      const layers = ref.attention.num_layers as Record<string, number>;
      expect(model.info.kind).toBe('encoder-decoder');
      expect(model.info.numLayers).toBe(layers.encoder);
      expect(model.info.numHeads).toBe(ref.attention.num_heads);
      expect(model.info.numKeyValueHeads).toBe(ref.attention.num_kv_heads);
      expect(model.info.headDim).toBe(ref.attention.head_dim);
      expect(model.architecture.describe(model.config).stacks).toEqual({
        encoder: layers.encoder, decoder: layers.decoder, cross: layers.decoder,
      });
    });

    for (const input of ref.inputs) {
      const decoderIds = input.decoder_input_ids as number[];

      it(`input '${input.id}': attention, queries, keys and hidden states of all stacks match`, async () => {
        const trace = await model.trace(null, { ids: input.input_ids, decoderIds, qk: true, hidden: true });
        expect(trace.tokens.map((t) => t.id)).toEqual(input.input_ids);
        expect(trace.decoderTokens?.map((t) => t.id)).toEqual(decoderIds);
        const diffs: Record<string, number> = {};
        for (const stack of STACKS) {
          diffs[`attention.${stack}`] = maxAbsDiff(stackValues(trace.attention[stack]), refTensor(input, `${stack}_attentions`));
          diffs[`queries.${stack}`] = maxAbsDiff(stackValues(trace.queries?.[stack]), refTensor(input, `${stack}_queries`));
          diffs[`keys.${stack}`] = maxAbsDiff(stackValues(trace.keys?.[stack]), refTensor(input, `${stack}_keys`));
        }
        diffs.encoder_last_hidden_state = maxAbsDiff(trace.encoderLastHiddenState?.data ?? [], refTensor(input, 'encoder_last_hidden_state'));
        diffs.decoder_last_hidden_state = maxAbsDiff(trace.lastHiddenState?.data ?? [], refTensor(input, 'decoder_last_hidden_state'));
        const within = Object.fromEntries(Object.entries(diffs).map(([k, d]) => [k, d <= (k.startsWith('attention.') ? 1e-5 : 1e-4)]));
        expect(within, JSON.stringify(diffs)).toEqual(Object.fromEntries(Object.keys(diffs).map((k) => [k, true])));
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
