/**
 * What only DeBERTa-v2/v3 has (its fixture's ids, attention, queries, keys, hidden state and logits
 * are checked by fixtures-match.test.ts): the disentangled attention's relative term. The score
 * terms recorded for the neuron view are PyTorch's: scale 1/√(3·d) (reference.json) and, on every
 * layer, the c2p + p2c term equal to transformers' `rel_att` (reference `attention_bias`). The
 * masked-LM head predicts at [MASK]; options transformers can switch on that we do not build are
 * refused naming the option.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { FIXTURES, flat, maxAbsDiff, readReference } from './helpers/reference.js';

const FIXTURE = 'deberta-v2';

describe('fixture deberta-v2: disentangled attention', () => {
  const ref = readReference(FIXTURE);
  const refScale = (ref.attention as unknown as { scale: number }).scale;
  let model: Model;
  beforeAll(async () => {
    model = await loadModel(join(FIXTURES, FIXTURE), { graphCache: false });
  });
  afterAll(async () => {
    await model?.dispose();
  });

  it('scales q·k by 1/√(3·head_dim), PyTorch\'s scale', () => {
    const scoring = model.architectureInfo.scoring.self!;
    expect(scoring.causal).toBe(false);
    expect(scoring.bias).toBe('per-layer');
    // c2p and p2c: scale_factor 3 (hand-computed: head_dim 8 → 1/√24).
    expect(Math.abs(refScale - 1 / Math.sqrt(24))).toBeLessThan(1e-12);
    for (const s of scoring.scale) expect(Math.abs(s - refScale)).toBeLessThanOrEqual(refScale * 1e-7);
  });

  for (const input of ref.inputs) {
    it(`input '${input.id}': the recorded c2p + p2c term is PyTorch's rel_att, on every layer`, async () => {
      const trace = await model.trace(null, { ids: input.input_ids, typeIds: input.token_type_ids, qk: true });
      const terms = trace.scores!.self!;
      expect(terms.biasKind).toBe('disentangled position (c2p + p2c)');
      const bias = terms.bias!;
      const n = input.input_ids.length;
      expect(bias.dims).toEqual([ref.attention.num_heads, n, n]);
      const expected = input.attention_bias as number[][][][];
      expect(bias.layers).toHaveLength(expected.length);
      for (let l = 0; l < expected.length; l++) {
        const diff = maxAbsDiff(bias.layers[l]!, flat(expected[l]!));
        expect(diff, `layer ${l}: bias differs by ${diff}`).toBeLessThanOrEqual(1e-5);
      }
      // The term depends on the layer (each projects the relative embeddings with its own Wq, Wk).
      expect(maxAbsDiff(bias.layers[0]!, bias.layers[1]!)).toBeGreaterThan(1e-3);
    });
  }

  it('predicts at [MASK] from the masked-LM head\'s logits', async () => {
    const mask = model.tokenizer!.mask!;
    expect(mask.text).toBe('[MASK]');
    const trace = await model.trace(`The ${mask.text} sat.`, { topK: 3, logits: true });
    const maskPositions = trace.tokens.flatMap((t, i) => (t.id === mask.id ? [i] : []));
    expect(maskPositions).toHaveLength(1);
    expect(trace.predictions!.map((p) => p.position)).toEqual(maskPositions);
    const vocab = trace.logits!.dims[1];
    for (const p of trace.predictions!) {
      expect(p.kind).toBe('masked');
      const row = Array.from(trace.logits!.data.subarray(p.position * vocab, (p.position + 1) * vocab));
      const top = row.map((v, id) => ({ v, id })).sort((a, b) => b.v - a.v || a.id - b.id).slice(0, 3).map((e) => e.id);
      expect(p.candidates.map((c) => c.id)).toEqual(top);
    }
  });
});

describe('deberta-v2 options that are not built are refused by name', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'attnscope-deberta-'));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  function variant(label: string, edit: (c: Record<string, unknown>) => void): string {
    const dir = join(scratch, label);
    cpSync(join(FIXTURES, FIXTURE), dir, { recursive: true });
    const path = join(dir, 'config.json');
    const config = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    edit(config);
    writeFileSync(path, JSON.stringify(config));
    return dir;
  }

  it('norm_rel_ebd other than none / layer_norm', async () => {
    const dir = variant('norm', (c) => { c.norm_rel_ebd = 'batch_norm'; });
    await expect(loadModel(dir, { graphCache: false })).rejects.toThrow(/norm_rel_ebd 'batch_norm' is not supported/);
  });

  it('attention_head_size that does not split hidden_size', async () => {
    const dir = variant('head-size', (c) => { c.attention_head_size = 16; });
    await expect(loadModel(dir, { graphCache: false })).rejects.toThrow(/attention_head_size 16/);
  });
});
