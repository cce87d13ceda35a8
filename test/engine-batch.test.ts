/**
 * logitsBatch (src/engine/batch.ts): n equal-length inputs in one session run. Row 0 of each batch
 * is a fixture's first reference input, whose logits PyTorch computed (reference.json, 1e-4 as in
 * fixtures-match); the other rows (the input with a token changed, reversed, …) must give what
 * their own unbatched runs give (those runs are checked against PyTorch by the fixture suites),
 * whatever their place in the batch. Families: a masked LM (bert), a causal LM with learned
 * positions (gpt2), rotary with grouped keys (llama), ALiBi (bloom), relative position buckets
 * in an encoder-decoder (t5), disentangled relative attention (deberta-v2), a discriminator head
 * (electra). Log-probabilities against a float64 log-softmax written here.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import { logitsBatch } from '../src/engine/batch.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import type { ModelInputs } from '../src/models/architecture.js';
import { FIXTURES, flat, maxAbsDiff, readReference } from './helpers/reference.js';

const FAMILIES = ['bert', 'gpt2', 'llama', 'bloom', 't5', 'deberta-v2', 'electra'];

/** The reference input and variants of the same length. */
function rowsOf(fixture: string): { rows: ModelInputs[]; reference: Float64Array } {
  const ref = readReference(fixture).inputs[0]!;
  const ids = ref.input_ids;
  const dec = Array.isArray(ref.decoder_input_ids) ? { decoderInputIds: ref.decoder_input_ids as number[] } : {};
  const base: ModelInputs = { inputIds: ids, ...dec };
  const changed: ModelInputs = { inputIds: ids.map((x, i) => (i === 2 ? ids[ids.length - 2]! : x)), ...dec };
  const reversed: ModelInputs = { inputIds: [...ids].reverse(), ...dec };
  const rotated: ModelInputs = { inputIds: [...ids.slice(1), ids[0]!], ...dec };
  return { rows: [base, changed, reversed, rotated], reference: flat(ref.logits!) };
}

const LOGITS = { attention: false, qk: false, lastHiddenState: false, logits: true } as const;

describe.each(FAMILIES)('logitsBatch on %s', (fixture) => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(join(FIXTURES, fixture), { graphCache: false });
  });
  afterAll(async () => {
    await model.dispose();
  });

  it('every row in one run: row 0 as PyTorch, every row as its unbatched run, in any order', async () => {
    const { rows, reference } = rowsOf(fixture);
    const b = await logitsBatch(model, rows);
    expect(b.batch).toEqual({ size: expect.any(Number) as number, runs: 1 });
    expect(b.kind).toBe('logits');
    expect(b.rows).toHaveLength(rows.length);
    expect(maxAbsDiff(b.rows[0]!.data, reference)).toBeLessThanOrEqual(1e-4);
    const n = fixture === 't5' ? rows[0]!.decoderInputIds!.length : rows[0]!.inputIds.length;
    for (const [r, row] of rows.entries()) {
      expect(b.rows[r]!.positions).toEqual(Array.from({ length: n }, (_, i) => i));
      const alone = (await model.run(LOGITS, row)).logits!;
      expect(b.rows[r]!.data.length).toBe(alone.data.length);
      expect(maxAbsDiff(b.rows[r]!.data, alone.data as Float32Array), `row ${r}`).toBeLessThanOrEqual(1e-4);
    }
    // Reversed order, two rows per run: the same rows.
    const back = await logitsBatch(model, [...rows].reverse(), { batchSize: 2 });
    expect(back.batch).toEqual({ size: 2, runs: 2 });
    for (let r = 0; r < rows.length; r++) expect(maxAbsDiff(back.rows[rows.length - 1 - r]!.data, b.rows[r]!.data)).toBeLessThanOrEqual(1e-5);
  });

  it('positions per row, and log-probabilities', async () => {
    const { rows, reference } = rowsOf(fixture);
    const full = await logitsBatch(model, rows);
    const width = full.vocab;
    const positions = [[1], [0, 2], [], [3, 1, 3]];
    if (width === 1) {
      const b = await logitsBatch(model, rows, { positions });
      for (const [r, ps] of positions.entries()) {
        expect(b.rows[r]!.positions).toEqual(ps);
        expect(Array.from(b.rows[r]!.data)).toEqual(ps.map((p) => full.rows[r]!.data[p]!));
      }
      await expect(logitsBatch(model, rows, { logProbabilities: true })).rejects.toThrow(/one logit/);
      return;
    }
    const b = await logitsBatch(model, rows, { positions, logProbabilities: true });
    expect(b.kind).toBe('logProbabilities');
    for (const [r, ps] of positions.entries()) {
      expect(b.rows[r]!.positions).toEqual(ps);
      expect(b.rows[r]!.data.length).toBe(ps.length * width);
      ps.forEach((p, k) => {
        // float64 log-softmax of the batch's own logits row, and for row 0 of PyTorch's.
        const src = r === 0 ? reference.subarray(p * width, (p + 1) * width) : full.rows[r]!.data.subarray(p * width, (p + 1) * width);
        let max = -Infinity;
        for (const x of src) max = Math.max(max, x);
        let sum = 0;
        for (const x of src) sum += Math.exp(x - max);
        const expected = Array.from(src, (x) => x - max - Math.log(sum));
        expect(maxAbsDiff(b.rows[r]!.data.subarray(k * width, (k + 1) * width), expected)).toBeLessThanOrEqual(2e-4);
      });
    }
  });
});

describe('logitsBatch: bad input', () => {
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(join(FIXTURES, 'gpt2'), { graphCache: false });
  });
  afterAll(async () => {
    await model.dispose();
  });

  it('rows of different lengths, positions out of range, ids outside the vocabulary, no rows', async () => {
    await expect(logitsBatch(model, [[1, 2, 3], [1, 2]])).rejects.toThrow(new AttnscopeError('batched logits: row 1 has 2 tokens, row 0 3; the rows of a batch must have one length'));
    await expect(logitsBatch(model, [[1, 2, 3]], { positions: [3] })).rejects.toThrow(new AttnscopeError('batched logits: position 3 of row 0 is out of range; allowed: 0 to 2'));
    await expect(logitsBatch(model, [[1, 2, 3], [4, 5, 6]], { positions: [[0]] })).rejects.toThrow(/positions has 1 lists for 2 rows/);
    await expect(logitsBatch(model, [[1, 2, 3], [1, 2, 99_999]])).rejects.toThrow(/token id 99999 is outside/);
    await expect(logitsBatch(model, [])).rejects.toThrow(new AttnscopeError('batched logits: no rows given'));
  });

  it('Int32Array rows as number arrays', async () => {
    const a = await logitsBatch(model, [Int32Array.of(5, 6, 7), [8, 9, 10]], { positions: [2] });
    const b = await logitsBatch(model, [[5, 6, 7]], { positions: [2] });
    expect(maxAbsDiff(a.rows[0]!.data, b.rows[0]!.data)).toBeLessThanOrEqual(1e-5);
  });
});
