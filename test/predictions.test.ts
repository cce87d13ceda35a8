/**
 * Top-k predictions of the models' heads: the next-token candidates of causal LMs equal the
 * top-k of the logits PyTorch computed (reference.json), masked LMs predict at each [MASK], and
 * a head that cannot predict tokens gives a clear error.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import { loadModel } from '../src/engine/load.js';
import { FIXTURES, readReference, type Nested } from './helpers/reference.js';

/** Indices of the k largest values of a row (ties: lower index first), computed from the reference. */
function referenceTopK(row: number[], k: number): number[] {
  return row.map((v, i) => [v, i] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k).map(([, i]) => i);
}

describe('next-token predictions of causal LMs equal the top-k of PyTorch logits', () => {
  for (const fixture of ['gpt2', 'gpt_neox', 'llama', 'qwen2', 'gemma', 'stories260k']) {
    it(fixture, async () => {
      const ref = readReference(fixture);
      const model = await loadModel(join(FIXTURES, fixture));
      try {
        for (const input of ref.inputs) {
          const trace = await model.trace(null, { ids: input.input_ids, topK: 5 });
          const logits = input.logits as number[][];
          expect(trace.predictions).toHaveLength(input.input_ids.length);
          trace.predictions!.forEach((p, position) => {
            expect(p.position).toBe(position);
            expect(p.kind).toBe('next');
            const row = logits[position]!;
            const expected = referenceTopK(row, 5);
            // A near-tie in the reference may legitimately swap order within float noise.
            const margin = row[expected[3]!]! - row[expected[4]!]!;
            if (margin > 1e-3) expect(p.candidates.map((c) => c.id)).toEqual(expected);
            else expect(p.candidates.slice(0, 4).map((c) => c.id)).toEqual(expected.slice(0, 4));
            const max = Math.max(...row);
            const sum = row.reduce((s, v) => s + Math.exp(v - max), 0);
            expect(p.candidates[0]!.probability).toBeCloseTo(Math.exp(row[expected[0]!]! - max) / sum, 5);
          });
        }
      } finally {
        await model.dispose();
      }
    });
  }
});

describe('masked-LM predictions', () => {
  for (const [fixture, text] of [
    ['bert', 'The cat sat on the [MASK] because it was tired.'],
    ['roberta', 'The cat sat on the<mask> because it was tired.'],
    ['distilbert', 'The [MASK] sat on the [MASK].'],
    ['albert', 'The cat sat on the [MASK].'],
  ] as const) {
    it(`${fixture}: predicts at each mask token, from the head whose logits match PyTorch`, async () => {
      const model = await loadModel(join(FIXTURES, fixture));
      try {
        const trace = await model.trace(text, { topK: 3, logits: true });
        const maskId = model.tokenizer!.mask!.id!;
        const maskPositions = trace.tokens.flatMap((t, i) => (t.id === maskId ? [i] : []));
        expect(maskPositions.length).toBeGreaterThan(0);
        expect(trace.predictions!.map((p) => p.position)).toEqual(maskPositions);
        const vocab = trace.logits!.dims[1];
        for (const p of trace.predictions!) {
          expect(p.kind).toBe('masked');
          const row = Array.from(trace.logits!.data.subarray(p.position * vocab, (p.position + 1) * vocab));
          expect(p.candidates.map((c) => c.id)).toEqual(referenceTopK(row, 3));
          expect(p.candidates.map((c) => c.token)).toEqual(p.candidates.map((c) => model.tokenizer!.idToToken(c.id)));
          const probs = p.candidates.map((c) => c.probability);
          expect([...probs].sort((a, b) => b - a)).toEqual(probs);
        }
      } finally {
        await model.dispose();
      }
    });
  }

  it('a text without a mask token is a clear error', async () => {
    const model = await loadModel(join(FIXTURES, 'bert'));
    try {
      await expect(model.trace('no mask here', { topK: 3 })).rejects.toThrow(/has no \[MASK\] token to predict/);
    } finally {
      await model.dispose();
    }
  });

  it('a [MASK] request on a model with no masked-LM head is a clear error', async () => {
    const model = await loadModel(join(FIXTURES, 'electra')); // ElectraForPreTraining: a discriminator
    try {
      const err = await model.trace('The cat sat on the [MASK].', { topK: 3 }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(AttnscopeError);
      expect((err as Error).message).toMatch(/no masked-LM head/);
    } finally {
      await model.dispose();
    }
  });
});

describe('ELECTRA discriminator scores', () => {
  it('equal PyTorch per-position logits', async () => {
    const ref = readReference('electra');
    const model = await loadModel(join(FIXTURES, 'electra'));
    try {
      const input = ref.inputs[0]!;
      const trace = await model.trace(null, { ids: input.input_ids, logits: true });
      const expected = (input.logits as Nested[]).flat(Infinity as 1) as number[];
      expect(Array.from(trace.logits!.data).map((v, i) => Math.abs(v - expected[i]!)).every((d) => d <= 1e-4)).toBe(true);
    } finally {
      await model.dispose();
    }
  });
});
