/**
 * Phi, GPT-J and Cohere decoders (their fixtures are matched against PyTorch in
 * fixtures-match.test.ts): cached decoding gives the attention, queries and keys of one full
 * re-run over the same tokens, choosing the argmax of full re-runs.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { FIXTURES, maxAbsDiff, readReference, stackValues } from './helpers/reference.js';

const FAMILIES = ['phi', 'gptj', 'cohere'];

for (const fixture of FAMILIES) {
  describe(`fixture ${fixture}`, () => {
    const ref = readReference(fixture);
    let model: Model;
    beforeAll(async () => {
      model = await loadModel(join(FIXTURES, fixture));
    });
    afterAll(async () => {
      await model?.dispose();
    });

    it('is a decoder', () => {
      expect(model.info.kind).toBe('decoder');
    });

    it('cached decoding chooses the argmax of full re-runs and gives their attention, queries and keys', async () => {
      const prompt = ref.inputs[0]!.input_ids;
      const trace = await model.generate(null, { ids: prompt, maxNewTokens: 8, qk: true });
      const ids = trace.tokens.map((t) => t.id);
      const generated = ids.slice(prompt.length);
      expect(generated).toHaveLength(8);
      const chain: number[] = [];
      for (let i = 0; i < generated.length; i++) {
        const full = await model.trace(null, { ids: [...prompt, ...chain], logits: true, attention: false });
        const cols = full.logits!.dims[1];
        const last = full.logits!.data.subarray(full.logits!.data.length - cols);
        let best = 0;
        for (let v = 1; v < cols; v++) if (last[v]! > last[best]!) best = v;
        chain.push(best);
      }
      expect(generated).toEqual(chain);
      const full = await model.trace(null, { ids, qk: true });
      expect(trace.attention.self!.dims).toEqual(full.attention.self!.dims);
      expect(maxAbsDiff(stackValues(trace.attention.self), stackValues(full.attention.self))).toBeLessThanOrEqual(1e-5);
      expect(maxAbsDiff(stackValues(trace.queries?.self), stackValues(full.queries?.self))).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(stackValues(trace.keys?.self), stackValues(full.keys?.self))).toBeLessThanOrEqual(1e-4);
      expect(trace.scores).toEqual(full.scores);
    });
  });
}
