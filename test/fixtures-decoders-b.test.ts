/**
 * Decoder families of issue 8 (OPT, OLMo, StableLM, StarCoder2) reproduce what PyTorch
 * transformers 4.40.2 computed for their fixtures (reference.json): input ids from text,
 * attention of every layer and head (≤ 1e-5), per-head queries and keys, the last hidden state
 * and the logits (≤ 1e-4); and cached decoding gives the tokens and attention of full re-runs.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { FIXTURES, flat, maxAbsDiff, readReference, stackValues } from './helpers/reference.js';

const FIXTURE_NAMES = ['opt', 'olmo', 'stablelm', 'starcoder2'];

for (const fixture of FIXTURE_NAMES) {
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
      it(`input '${input.id}': text → the same ids, and attention, queries, keys, last hidden state and logits match`, async () => {
        const tokens = await model.tokenize(input.text);
        expect(tokens.map((t) => t.id)).toEqual(input.input_ids);
        const trace = await model.trace(input.text, { qk: true, hidden: true, logits: true });
        expect(trace.tokens.map((t) => t.id)).toEqual(input.input_ids);
        const attn = maxAbsDiff(stackValues(trace.attention.self), flat(input.attentions!));
        const q = maxAbsDiff(stackValues(trace.queries?.self), flat(input.queries!));
        const k = maxAbsDiff(stackValues(trace.keys?.self), flat(input.keys!));
        const h = maxAbsDiff(trace.lastHiddenState?.data ?? [], flat(input.last_hidden_state!));
        const logits = maxAbsDiff(trace.logits?.data ?? [], flat(input.logits!));
        expect(
          { attn: attn <= 1e-5, q: q <= 1e-4, k: k <= 1e-4, h: h <= 1e-4, logits: logits <= 1e-4 },
          `attn ${attn} q ${q} k ${k} hidden ${h} logits ${logits}`,
        ).toEqual({ attn: true, q: true, k: true, h: true, logits: true });
        // The scale the neuron view uses is PyTorch's.
        const scale = (ref.attention as unknown as { scale: number }).scale;
        for (const s of trace.scores!.self!.scale) expect(Math.abs(s - scale)).toBeLessThanOrEqual(1e-7);
      });
    }

    it('cached decoding chooses the argmax of full re-runs and gives their attention, queries and keys', async () => {
      const input = ref.inputs[0]!;
      const maxNew = 6;
      const trace = await model.generate(null, { ids: input.input_ids, maxNewTokens: maxNew, qk: true });
      const ids = trace.tokens.map((t) => t.id);
      const generated = ids.slice(input.input_ids.length);
      expect(generated.length).toBeGreaterThan(0);
      const chain: number[] = [];
      for (let i = 0; i < generated.length; i++) {
        const full = await model.trace(null, { ids: [...input.input_ids, ...chain], logits: true, attention: false });
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
