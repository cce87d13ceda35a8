/**
 * Phi, GPT-J and Cohere decoders (their fixtures are matched against PyTorch in
 * fixtures-match.test.ts): cached decoding gives the attention, queries and keys of one full
 * re-run over the same tokens, choosing the argmax of full re-runs.
 */
import { expect, it } from 'vitest';
import { describeFixture, expectCachedDecodingMatchesFullRuns } from './helpers/fixture-suite.js';

const FAMILIES = ['phi', 'gptj', 'cohere'];

for (const fixture of FAMILIES) {
  describeFixture(fixture, 'decoder', ({ ref, model }) => {
    it('cached decoding chooses the argmax of full re-runs and gives their attention, queries and keys', async () => {
      const { cached, full } = await expectCachedDecodingMatchesFullRuns(model(), ref.inputs[0]!.input_ids, 8);
      expect(cached.tokens).toHaveLength(ref.inputs[0]!.input_ids.length + 8);
      expect(cached.scores).toEqual(full.scores);
    });
  });
}
