/**
 * Every checkpoint fixture must reproduce what PyTorch transformers computed for it
 * (reference.json): input ids from text, attention of every layer and head (≤ 1e-5), per-head
 * queries and keys and the last hidden state (≤ 1e-4).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { FIXTURES, flat, maxAbsDiff, readReference, stackValues } from './helpers/reference.js';

const ENCODER_DECODER = new Set(['t5', 'bart']);

const fixtures = [
  'bert', 'bert-fp16', 'bert-bf16', 'bert-sharded', 'roberta', 'distilbert', 'electra', 'albert',
  'gpt2', 'gpt2-bin', 'gpt_neox', 'llama', 'mistral', 'mistral-window', 'qwen2', 'gemma', 'stories260k',
  'phi', 'gptj', 'cohere',
  'deberta-v2',
  // Mixture-of-experts decoders: routing inside the graph.
  'mixtral', 'qwen2_moe',
].filter((f) => !ENCODER_DECODER.has(f));

for (const fixture of fixtures) {
  describe(`fixture ${fixture}`, () => {
    const ref = readReference(fixture);
    let model: Model;
    beforeAll(async () => {
      model = await loadModel(join(FIXTURES, fixture));
    });
    afterAll(async () => {
      await model?.dispose();
    });

    it('describes the model as PyTorch does', () => {
      expect(model.info.numLayers).toBe(ref.attention.num_layers);
      expect(model.info.numHeads).toBe(ref.attention.num_heads);
      expect(model.info.numKeyValueHeads).toBe(ref.attention.num_kv_heads);
      expect(model.info.headDim).toBe(ref.attention.head_dim);
    });

    for (const input of ref.inputs) {
      it(`input '${input.id}': tokenizes the text to the same ids`, async () => {
        const tokens = await model.tokenize(input.text, input.text_pair);
        expect(tokens.map((t) => t.id)).toEqual(input.input_ids);
        if (input.token_type_ids) expect(tokens.map((t) => t.segment)).toEqual(input.token_type_ids);
      });

      it(`input '${input.id}': attention, queries, keys and last hidden state match`, async () => {
        const trace = await model.trace(null, { ids: input.input_ids, typeIds: input.token_type_ids, qk: true, hidden: true });
        const attn = maxAbsDiff(stackValues(trace.attention.self), flat(input.attentions!));
        const q = maxAbsDiff(stackValues(trace.queries?.self), flat(input.queries!));
        const k = maxAbsDiff(stackValues(trace.keys?.self), flat(input.keys!));
        const h = maxAbsDiff(trace.lastHiddenState?.data ?? [], flat(input.last_hidden_state!));
        expect({ attn: attn <= 1e-5, q: q <= 1e-4, k: k <= 1e-4, h: h <= 1e-4 }, `attn ${attn} q ${q} k ${k} hidden ${h}`).toEqual({
          attn: true, q: true, k: true, h: true,
        });
      });

      it(`input '${input.id}': the prediction head's logits match`, async () => {
        // The reference logits were computed from the stored input ids alone (token type ids
        // left at their default zeros; test/fixtures/README.md, "Logits"), so no typeIds here.
        const trace = await model.trace(null, { ids: input.input_ids, logits: true, attention: false });
        const diff = maxAbsDiff(trace.logits?.data ?? [], flat(input.logits!));
        expect(diff, `logits differ by ${diff}`).toBeLessThanOrEqual(1e-4);
      });

      it(`input '${input.id}': tracing from text gives the same trace as from ids`, async () => {
        const fromText = await model.trace(input.text, { pair: input.text_pair });
        expect(fromText.tokens.map((t) => t.id)).toEqual(input.input_ids);
        expect(maxAbsDiff(stackValues(fromText.attention.self), flat(input.attentions!))).toBeLessThanOrEqual(1e-5);
      });
    }
  });
}
