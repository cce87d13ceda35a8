/**
 * The scoring graph CrowS-Pairs' masked copies run through (engine/batch.ts
 * targetLogProbabilities: the final hidden state gathered at each copy's masked position before the
 * prediction head, log-softmax in float64 in the graph, at that position only), for every masked-LM
 * family of the fixtures: against the log-softmax of PyTorch's logits in reference.json, and
 * against the full head (every position's logits from an unbatched trace of each copy), both
 * computed here in float64.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { AttnscopeError } from '../src/core/errors.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { targetLogProbabilities } from '../src/engine/batch.js';
import { scoreCrowsPairs } from '../src/bias/crows-pairs.js';
import { loadCrowsPairs } from '../src/bias/data-files.js';
import { FIXTURES, readReference, type Nested } from './helpers/reference.js';

/** log softmax of `row` at `id`, float64, written here. */
function logSoftmax(row: ArrayLike<number>, id: number): number {
  const xs = Array.from(row, Number);
  const max = Math.max(...xs);
  return xs[id]! - max - Math.log(xs.reduce((s, x) => s + Math.exp(x - max), 0));
}

const MASKED_LMS = ['bert', 'roberta', 'xlm-roberta', 'albert', 'distilbert', 'mpnet', 'deberta-v2'];

describe.each(MASKED_LMS)('masked-copy scoring graph on %s', (fixture) => {
  let model: Model;
  const reference = readReference(fixture);
  const input = reference.inputs[0]!;
  const ids = input.input_ids;
  const typeIds = input.token_type_ids ?? ids.map(() => 0);
  beforeAll(async () => {
    model = await loadModel(join(FIXTURES, fixture), { graphCache: false });
  });
  afterAll(async () => {
    await model?.dispose();
  });

  it("log P(target) at the asked positions = log-softmax of PyTorch's logits (reference.json)", async () => {
    const logits = input.logits as Nested[][] as number[][];
    const positions = [[0], [1, ids.length - 1], [2], [ids.length - 2, 3, 1]];
    const targets = positions.map((ps, r) => ps.map((p, k) => (ids[p]! + 7 * r + k) % logits[0]!.length));
    const out = await targetLogProbabilities(model, positions.map(() => ({ inputIds: ids, typeIds })), { positions, targets });
    expect(out.rows.map((r) => r.length)).toEqual(positions.map((p) => p.length));
    positions.forEach((ps, r) => ps.forEach((p, k) => {
      expect(Math.abs(out.rows[r]![k]! - logSoftmax(logits[p]!, targets[r]![k]!))).toBeLessThan(2e-4);
    }));
  });

  it('masked copies in one run = the full head on each copy alone (every position, then log-softmax here)', async () => {
    const mask = model.tokenizer!.mask!.id!;
    const positions = Array.from({ length: ids.length - 2 }, (_, i) => i + 1);
    const rows = positions.map((p) => ({ inputIds: ids.map((id, i) => (i === p ? mask : id)), typeIds }));
    const out = await targetLogProbabilities(model, rows, { positions: positions.map((p) => [p]), targets: positions.map((p) => [ids[p]!]) });
    expect(out.batch.runs).toBe(1);
    for (const [k, p] of positions.entries()) {
      const trace = await model.trace(null, { ids: rows[k]!.inputIds, typeIds, logits: true });
      const vocab = trace.logits!.dims[1]!;
      const expected = logSoftmax(trace.logits!.data.subarray(p * vocab, (p + 1) * vocab), ids[p]!);
      expect(Math.abs(out.rows[k]![0]! - expected)).toBeLessThan(1e-5);
    }
  });
});

describe('masked-copy scoring graph: what it refuses', () => {
  let bert: Model;
  let electra: Model;
  beforeAll(async () => {
    [bert, electra] = await Promise.all([loadModel(join(FIXTURES, 'bert'), { graphCache: false }), loadModel(join(FIXTURES, 'electra'), { graphCache: false })]);
  });
  afterAll(async () => {
    await bert?.dispose();
    await electra?.dispose();
  });

  it('targets outside the vocabulary, targets not matching the positions, a head without a distribution', async () => {
    const ids = readReference('bert').inputs[0]!.input_ids;
    const vocab = Number(bert.config.raw.vocab_size);
    await expect(targetLogProbabilities(bert, [ids], { positions: [[1]], targets: [[vocab]] })).rejects.toThrow(`target ${vocab} is out of range; allowed: 0 to ${vocab - 1}`);
    await expect(targetLogProbabilities(bert, [ids], { positions: [[1]], targets: [[-1]] })).rejects.toThrow(AttnscopeError);
    await expect(targetLogProbabilities(bert, [ids], { positions: [[1, 2]], targets: [[5]] })).rejects.toThrow('row 0 has 2 positions and 1 targets');
    await expect(targetLogProbabilities(bert, [ids, ids], { positions: [[1], [1]], targets: [[5]] })).rejects.toThrow('targets has 1 lists for 2 rows');
    // ELECTRA's discriminator scores each token with one number.
    const eids = readReference('electra').inputs[0]!.input_ids;
    await expect(targetLogProbabilities(electra, [eids], { positions: [[1]], targets: [[eids[1]!]] })).rejects.toThrow('one logit');
    const pairs = (await loadCrowsPairs()).slice(0, 2);
    await expect(scoreCrowsPairs(electra, pairs)).rejects.toThrow('does not predict tokens; CrowS-Pairs needs a language-model head');
  });
});
