/**
 * Every checkpoint fixture must reproduce what PyTorch transformers computed for it
 * (reference.json): input ids from text, attention of every layer and head (≤ 1e-5), per-head
 * queries and keys and the last hidden state (≤ 1e-4).
 */
import { expect, it } from 'vitest';
import { describeFixture, expectSelfTraceMatches, itLogitsMatch, itTracesFromText } from './helpers/fixture-suite.js';

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
  describeFixture(fixture, null, ({ ref, model }) => {
    for (const input of ref.inputs) {
      it(`input '${input.id}': tokenizes the text to the same ids`, async () => {
        const tokens = await model().tokenize(input.text, input.text_pair);
        expect(tokens.map((t) => t.id)).toEqual(input.input_ids);
        if (input.token_type_ids) expect(tokens.map((t) => t.segment)).toEqual(input.token_type_ids);
      });

      it(`input '${input.id}': attention, queries, keys and last hidden state match`, async () => {
        expectSelfTraceMatches(await model().trace(null, { ids: input.input_ids, typeIds: input.token_type_ids, qk: true, hidden: true }), input);
      });

      itLogitsMatch(model, input, 'prediction head');
      itTracesFromText(model, input);
    }
  });
}
