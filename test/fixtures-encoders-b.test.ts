/**
 * Sentence-encoder families of issue 8 (xlm-roberta, mpnet) reproduce what PyTorch transformers
 * 4.40.2 computed for their fixtures (reference.json): text → ids (text pairs included), attention
 * of every layer and head (≤ 1e-5), per-head queries and keys and the last hidden state (≤ 1e-4), and
 * the masked-LM head's logits (≤ 1e-4), which is also what predicts at each <mask>; for MPNet the
 * relative position bias recorded for the neuron view equals PyTorch's `position_bias` on every layer.
 */
import { expect, it } from 'vitest';
import { describeFixture, expectMaskPredictions, expectSelfTraceMatches, itLogitsMatch, itTracesFromText } from './helpers/fixture-suite.js';
import { withoutPositionBias } from '../src/core/position-bias.js';
import { flat, maxAbsDiff } from './helpers/reference.js';

const fixtures = ['xlm-roberta', 'mpnet'];

for (const fixture of fixtures) {
  describeFixture(fixture, null, ({ ref, model }) => {
    for (const input of ref.inputs) {
      it(`input '${input.id}': tokenizes the text to the same ids`, async () => {
        const tokens = await model().tokenize(input.text, input.text_pair);
        expect(tokens.map((t) => t.id)).toEqual(input.input_ids);
        expect(tokens.map((t) => t.text)).toEqual(input.tokens);
      });

      it(`input '${input.id}': attention, queries, keys and last hidden state match`, async () => {
        expectSelfTraceMatches(await model().trace(null, { ids: input.input_ids, qk: true, hidden: true }), input);
      });

      if (input.position_bias) {
        it(`input '${input.id}': the recorded relative position bias is PyTorch's, on every layer`, async () => {
          const trace = await model().trace(null, { ids: input.input_ids, qk: true });
          const terms = trace.scores?.self;
          expect(terms?.biasKind).toBe('relative position bias');
          // Kept as one vector over j − i (MPNet's relative buckets): read expanded.
          const bias = withoutPositionBias(terms!).bias!;
          const expected = flat(input.position_bias as number[][][]);
          for (let l = 0; l < model().info.numLayers; l++) {
            const layer = bias.layers[Math.min(l, bias.layers.length - 1)]!;
            const diff = maxAbsDiff(layer, expected);
            expect(diff, `layer ${l}: bias differs by ${diff}`).toBeLessThanOrEqual(1e-5);
          }
        });
      }

      itLogitsMatch(model, input, 'masked-LM head');
      itTracesFromText(model, input);
    }

    it('predicts at each mask token, ranking the head\'s logits', async () => {
      const maskText = model().tokenizer!.mask!.text;
      const trace = await model().trace(`The cat sat on the ${maskText} because it was tired.`, { topK: 3, logits: true });
      expectMaskPredictions(trace, model().tokenizer!.mask!.id);
    });
  });
}
