/**
 * Decoder families of issue 8 (OPT, OLMo, StableLM, StarCoder2) reproduce what PyTorch
 * transformers 4.40.2 computed for their fixtures (reference.json): input ids from text,
 * attention of every layer and head (≤ 1e-5), per-head queries and keys, the last hidden state
 * and the logits (≤ 1e-4); and cached decoding gives the tokens and attention of full re-runs.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine/load.js';
import { describeFixture, expectCachedDecodingMatchesFullRuns, expectScaleMatches, expectTextTraceMatches } from './helpers/fixture-suite.js';
import { FIXTURES, maxAbsDiff, readReference, stackValues } from './helpers/reference.js';

const FIXTURE_NAMES = ['opt', 'olmo', 'stablelm', 'starcoder2'];

for (const fixture of FIXTURE_NAMES) {
  describeFixture(fixture, 'decoder', ({ ref, model }) => {
    for (const input of ref.inputs) {
      it(`input '${input.id}': text → the same ids, and attention, queries, keys, last hidden state and logits match`, async () => {
        expectScaleMatches(await expectTextTraceMatches(model(), input), ref);
      });
    }

    it('cached decoding chooses the argmax of full re-runs and gives their attention, queries and keys', async () => {
      const { cached, full } = await expectCachedDecodingMatchesFullRuns(model(), ref.inputs[0]!.input_ids, 6);
      expect(cached.scores).toEqual(full.scores);
    });
  });
}

describe('starcoder2 with a sliding window', () => {
  it("masks keys further back than transformers 4.40's eager mask (sliding_window w: keys qPos − w … qPos), also when decoding with a cache", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnscope-sc2-'));
    try {
      cpSync(join(FIXTURES, 'starcoder2'), dir, { recursive: true });
      const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
      const w = 3;
      writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, sliding_window: w }));
      const model = await loadModel(dir);
      try {
        const ids = readReference('starcoder2').inputs[0]!.input_ids;
        const full = await model.trace(null, { ids, qk: true });
        const att = full.attention.self!;
        const n = ids.length;
        for (let layer = 0; layer < att.layers.length; layer++) {
          for (let i = 0; i < n; i++) {
            for (let j = 0; j < n; j++) {
              const p = att.layers[layer]![i * n + j]!;
              if (j > i || j < i - w) expect(p, `layer ${layer} query ${i} key ${j}`).toBe(0);
              else expect(p, `layer ${layer} query ${i} key ${j}`).toBeGreaterThan(0);
            }
          }
        }
        expect(full.scores!.self!.window).toEqual(new Array(att.layers.length).fill(w + 1));
        const gen = await model.generate(null, { ids: ids.slice(0, 3), maxNewTokens: 6 });
        const rerun = await model.trace(null, { ids: gen.tokens.map((t) => t.id) });
        expect(maxAbsDiff(stackValues(gen.attention.self), stackValues(rerun.attention.self))).toBeLessThanOrEqual(1e-5);
      } finally {
        await model.dispose();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
