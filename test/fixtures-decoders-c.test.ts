/**
 * Phi, GPT-J and Cohere decoders reproduce what PyTorch transformers 4.40 computed for their
 * fixtures (reference.json): ids from text, attention (≤ 1e-5), per-head queries and keys, last
 * hidden state and logits (≤ 1e-4); and cached decoding gives the attention, queries and keys
 * of one full re-run over the same tokens, choosing the argmax of full re-runs.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { FIXTURES, flat, maxAbsDiff, readReference, stackValues } from './helpers/reference.js';

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

    it('describes the model as PyTorch does', () => {
      expect(model.info.numLayers).toBe(ref.attention.num_layers);
      expect(model.info.numHeads).toBe(ref.attention.num_heads);
      expect(model.info.numKeyValueHeads).toBe(ref.attention.num_kv_heads);
      expect(model.info.headDim).toBe(ref.attention.head_dim);
      expect(model.info.kind).toBe('decoder');
    });

    for (const input of ref.inputs) {
      it(`input '${input.id}': tokenizes the text to the same ids`, async () => {
        const tokens = await model.tokenize(input.text);
        expect(tokens.map((t) => t.id)).toEqual(input.input_ids);
      });

      it(`input '${input.id}': attention, queries, keys, last hidden state and logits match`, async () => {
        const trace = await model.trace(null, { ids: input.input_ids, qk: true, hidden: true, logits: true });
        const attn = maxAbsDiff(stackValues(trace.attention.self), flat(input.attentions!));
        const q = maxAbsDiff(stackValues(trace.queries?.self), flat(input.queries!));
        const k = maxAbsDiff(stackValues(trace.keys?.self), flat(input.keys!));
        const h = maxAbsDiff(trace.lastHiddenState?.data ?? [], flat(input.last_hidden_state!));
        const logits = maxAbsDiff(trace.logits?.data ?? [], flat(input.logits!));
        console.log(`${fixture}/${input.id}: attn ${attn} q ${q} k ${k} hidden ${h} logits ${logits}`);
        expect(
          { attn: attn <= 1e-5, q: q <= 1e-4, k: k <= 1e-4, h: h <= 1e-4, logits: logits <= 1e-4 },
          `attn ${attn} q ${q} k ${k} hidden ${h} logits ${logits}`,
        ).toEqual({ attn: true, q: true, k: true, h: true, logits: true });
      });

      it(`input '${input.id}': tracing from text gives the reference ids and attention`, async () => {
        const fromText = await model.trace(input.text);
        expect(fromText.tokens.map((t) => t.id)).toEqual(input.input_ids);
        expect(maxAbsDiff(stackValues(fromText.attention.self), flat(input.attentions!))).toBeLessThanOrEqual(1e-5);
      });
    }

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
