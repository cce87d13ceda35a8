/**
 * Head ablation (engine/ablation.ts, analysis/ablation.ts):
 * - on every fixture with gradients.json, removing layer 0 head 0 of each stack gives PyTorch's
 *   `ablation.target_ablated` and `kl` (and the target before is `target.value`);
 * - removing every head of a layer equals a model built from weights in which that layer's
 *   attention is silenced: Llama-style (no output bias) with o_proj = 0, so the attention output is 0;
 *   BERT with the value projection = 0, so every head's context is 0 (the output bias stays, as
 *   with head_mask);
 * - mean ablation: the graph grows head offsets on every fixture (offsets 0 = the model as trained),
 *   one token changes nothing, and the offsets equal mean_q Σ_k α·v in float64 from the trace's
 *   attention and value vectors (gpt2, llama with grouped kv heads, bart's three stacks);
 * - KL, cosine and the head-list parser on hand-computed cases.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cosineSimilarity, klFromLogits, parseHeadList } from '../src/analysis/ablation.js';
import type { FloatTensor } from '../src/core/tensor.js';
import { ablateHeads, headContextMeans, meanAblation } from '../src/engine/ablation.js';
import { loadModel } from '../src/engine/load.js';
import { Model } from '../src/engine/model.js';
import { resolveModelSource } from '../src/io/model-source.js';
import { openWeights } from '../src/io/open-weights.js';
import type { WeightStore } from '../src/io/weights.js';
import { ModelConfig } from '../src/models/config.js';
import { architectureFor } from '../src/models/registry.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { GRADIENT_FIXTURES, readGradients, type GradientAblation } from './helpers/gradients.js';
import { FIXTURES, readReference } from './helpers/reference.js';

describe('measures', () => {
  it('KL(p ‖ q) from logits: p = (½, ½), q = (¼, ¾) → ½·ln(4/3); equal rows → 0', () => {
    expect(klFromLogits([0, 0], [0, Math.log(3)])).toBeCloseTo(0.5 * Math.log(4 / 3), 14);
    expect(klFromLogits([1, 2, 3], [11, 12, 13])).toBe(0);
  });

  it('cosine similarity', () => {
    expect(cosineSimilarity([1, 0], [1, 1])).toBeCloseTo(Math.SQRT1_2, 15);
    expect(cosineSimilarity([1, 2], [-2, -4])).toBeCloseTo(-1, 15);
    expect(cosineSimilarity([0, 0], [0, 0])).toBe(1);
    expect(cosineSimilarity([0, 0], [1, 0])).toBe(0);
  });

  it('head lists', () => {
    expect(parseHeadList('0:1, 1:0,0:1', { self: 2 }, 2, 'self')).toEqual([
      { stack: 'self', layer: 0, head: 1 }, { stack: 'self', layer: 1, head: 0 },
    ]);
    expect(parseHeadList('1:*,decoder/0:1', { encoder: 2, decoder: 2, cross: 2 }, 2, 'encoder')).toEqual([
      { stack: 'encoder', layer: 1, head: 0 }, { stack: 'encoder', layer: 1, head: 1 }, { stack: 'decoder', layer: 0, head: 1 },
    ]);
    expect(() => parseHeadList('2:0', { self: 2 }, 4, 'self')).toThrow("--heads: '2:0': layer 2 is out of range (the self stack has 2 layers: 0–1)");
    expect(() => parseHeadList('0:4', { self: 2 }, 4, 'self')).toThrow("--heads: '0:4': head 4 is out of range (4 heads: 0–3)");
    expect(() => parseHeadList('0-1', { self: 2 }, 4, 'self')).toThrow(/'0-1' is not LAYER:HEAD/);
    expect(() => parseHeadList('cross/0:1', { self: 2 }, 4, 'self')).toThrow(/has no 'cross' stack \(it has self\)/);
  });
});


describe("removing layer 0 head 0 is PyTorch's ablation (gradients.json)", () => {
  it.each(GRADIENT_FIXTURES)('%s', async (fixture) => {
    const refs = readGradients(fixture);
    const reference = readReference(fixture);
    const model = await loadModel(join(FIXTURES, fixture), { graphCache: false });
    try {
      for (const [i, ref] of refs.inputs.entries()) {
        const inputs = {
          inputIds: ref.input_ids,
          ...(reference.inputs[i]!.token_type_ids ? { typeIds: reference.inputs[i]!.token_type_ids } : {}),
          ...(ref.decoder_input_ids ? { decoderInputIds: ref.decoder_input_ids } : {}),
        };
        const byStack: Record<string, GradientAblation> = 'layer' in ref.ablation ? { self: ref.ablation as GradientAblation } : (ref.ablation as Record<string, GradientAblation>);
        for (const [stack, ab] of Object.entries(byStack)) {
          const r = await ablateHeads(model, inputs, {
            heads: [{ stack: stack as 'self', layer: ab.layer, head: ab.head }],
            position: ref.target.position,
            ...(ref.target.token_id === null ? {} : { tokenId: ref.target.token_id }),
          });
          const at = `${fixture} ${ref.id} ${stack}`;
          const tol = 2e-4 * Math.max(1, Math.abs(ab.target_ablated));
          expect(Math.abs(r.target.before - ref.target.value), at).toBeLessThan(tol);
          expect(Math.abs(r.target.after - ab.target_ablated), at).toBeLessThan(tol);
          if (ab.kl === null) expect(r.kl).toBeNull();
          else expect(Math.abs(r.kl! - ab.kl), `${at} kl`).toBeLessThan(2e-4 * Math.max(1e-2, ab.kl) + 1e-6);
          expect(r.cosine).toBeLessThanOrEqual(1 + 1e-12);
          expect(r.cosine).toBeGreaterThan(-1);
        }
      }
    } finally {
      await model.dispose();
    }
  });
});

/** A fixture as a Model whose weights named in `zero` read as zeros (no tokenizer: ids in, ids out). */
async function modelWithZeros(fixture: string, zero: (name: string) => boolean): Promise<Model> {
  const dir = join(FIXTURES, fixture);
  const config = new ModelConfig(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>, join(dir, 'config.json'));
  const base = await openWeights(await resolveModelSource(dir));
  const weights: WeightStore = {
    names: () => base.names(),
    has: (name) => base.has(name),
    shape: (name) => base.shape(name),
    dtype: (name) => base.dtype(name),
    close: () => base.close(),
    get: async (name): Promise<FloatTensor> => {
      const t = await base.get(name);
      return zero(name) ? { shape: t.shape, data: new Float32Array(t.data.length) } : t;
    },
  };
  return new Model({ name: `${fixture} (silenced)`, config, architecture: architectureFor(config.modelType), tokenizer: null, weights, runtime: nodeRuntime });
}

describe('every head of a layer removed = that layer silenced in the weights', () => {
  const cases: [string, number, (layer: number) => (name: string) => boolean, string][] = [
    ['stories260k', 1, (l) => (n) => n === `model.layers.${l}.self_attn.o_proj.weight`, 'o_proj = 0: the attention output is 0'],
    ['bert', 1, (l) => (n) => n.startsWith(`bert.encoder.layer.${l}.attention.self.value.`), 'value projection = 0: every context is 0'],
  ];
  for (const [fixture, layer, zero, what] of cases) {
    it(`${fixture} layer ${layer} (${what})`, async () => {
      const model = await loadModel(join(FIXTURES, fixture), { graphCache: false });
      const silenced = await modelWithZeros(fixture, zero(layer));
      try {
        const inputIds = readReference(fixture).inputs[0]!.input_ids;
        const heads = Array.from({ length: model.architectureInfo.numHeads }, (_, head) => ({ stack: 'self' as const, layer, head }));
        const gates: Record<string, { type: 'float32'; dims: number[]; data: Float32Array }> = {};
        const info = model.architectureInfo;
        const data = new Float32Array(info.stacks.self! * info.numHeads).fill(1);
        for (const h of heads) data[h.layer * info.numHeads + h.head] = 0;
        gates['head_gates.self'] = { type: 'float32', dims: [info.stacks.self!, info.numHeads], data };
        const taps = { attention: false, qk: false, lastHiddenState: true, logits: true };
        const ablated = await model.run({ ...taps, headGates: true }, { inputIds }, gates);
        const reference = await silenced.run(taps, { inputIds });
        const a = ablated.logits!.data as Float32Array;
        const b = reference.logits!.data as Float32Array;
        let worst = 0;
        let scale = 0;
        for (let i = 0; i < b.length; i++) {
          worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
          scale = Math.max(scale, Math.abs(b[i]!));
        }
        expect(worst / scale).toBeLessThan(1e-6);
        // And it moved the output: the layer mattered.
        const r = await ablateHeads(model, { inputIds }, { heads, position: inputIds.length - 2 });
        expect(r.kl).toBeGreaterThan(0);
      } finally {
        await model.dispose();
        await silenced.dispose();
      }
    });
  }
});

describe('mean ablation: the removed heads\' context replaced by its mean over positions', () => {
  it.each(GRADIENT_FIXTURES)('%s: the graph grows head offsets on every layer; offsets of 0 and gates of 1 are the model as trained', async (fixture) => {
    const model = await loadModel(join(FIXTURES, fixture), { graphCache: false });
    try {
      const ref = readReference(fixture).inputs[0]!;
      const inputs = { inputIds: ref.input_ids, ...(Array.isArray(ref.decoder_input_ids) ? { decoderInputIds: ref.decoder_input_ids as number[] } : {}) };
      const stack = Object.keys(model.architectureInfo.stacks)[0] as 'self';
      const position = model.info.kind === 'encoder' ? 2 : undefined;
      const zero = await ablateHeads(model, inputs, { heads: [{ stack, layer: 1, head: 0 }], position });
      const mean = await ablateHeads(model, inputs, { heads: [{ stack, layer: 1, head: 0 }], mode: 'mean', position });
      expect(mean.target.before).toBe(zero.target.before);
      expect(Number.isFinite(mean.target.after)).toBe(true);
      expect(mean.cosine).toBeLessThanOrEqual(1 + 1e-12);
    } finally {
      await model.dispose();
    }
  });

  it('one token: the mean is the context itself, so nothing changes', async () => {
    const model = await loadModel(join(FIXTURES, 'gpt2'), { graphCache: false });
    try {
      const r = await ablateHeads(model, { inputIds: [10] }, { heads: [{ stack: 'self', layer: 0, head: 0 }, { stack: 'self', layer: 1, head: 2 }], mode: 'mean' });
      expect(Math.abs(r.target.after - r.target.before)).toBeLessThan(1e-6);
      expect(r.kl!).toBeLessThan(1e-10);
    } finally {
      await model.dispose();
    }
  });

  // The offsets fed in pass 2, against mean_q Σ_k α[h, q, k]·v[kv(h), k] in float64 from the trace's
  // attention and value vectors (per query head h, kv head ⌊h·kvHeads/heads⌋).
  for (const fixture of ['gpt2', 'llama', 'bart']) {
    it(`${fixture}: the offsets are the mean of α·V over positions`, async () => {
      const model = await loadModel(join(FIXTURES, fixture), { graphCache: false });
      try {
        const ref = readReference(fixture).inputs[0]!;
        const decoderIds = Array.isArray(ref.decoder_input_ids) ? (ref.decoder_input_ids as number[]) : undefined;
        const trace = await model.trace(null, { ids: ref.input_ids, ...(decoderIds ? { decoderIds } : {}), values: true });
        const inputs = { inputIds: ref.input_ids, ...(decoderIds ? { decoderInputIds: decoderIds } : {}) };
        const info = model.architectureInfo;
        const heads = (Object.keys(info.stacks) as ('self' | 'encoder' | 'decoder' | 'cross')[]).flatMap((stack) => [{ stack, layer: 0, head: 1 }, { stack, layer: 1, head: info.numHeads - 1 }]);
        const extension = meanAblation(model);
        const taps = { attention: false, qk: false, lastHiddenState: true, logits: true, headGates: true };
        const pass1 = await model.runExtended(taps, extension, inputs, headContextMeans(model, {}, []));
        const offsets = headContextMeans(model, pass1, heads);
        const d = info.headDim;
        for (const h of heads) {
          const att = trace.attention[h.stack]!;
          const values = trace.values![h.stack]!;
          const [H, nq, nk] = att.dims;
          const kv = Math.floor((h.head * values.dims[0]) / H);
          const a = att.layers[h.layer]!;
          const v = values.layers[h.layer]!;
          const want = new Float64Array(d);
          for (let q = 0; q < nq; q++) for (let k = 0; k < nk; k++) for (let j = 0; j < d; j++) want[j]! += (a[(h.head * nq + q) * nk + k]! * v[(kv * nk + k) * d + j]!) / nq;
          const got = (offsets[`head_offsets.${h.stack}`]!.data as Float32Array).subarray((h.layer * info.numHeads + h.head) * d, (h.layer * info.numHeads + h.head + 1) * d);
          const scale = Math.max(...Array.from(want, Math.abs));
          expect(Math.max(...Array.from(got, (x, j) => Math.abs(x - want[j]!))) / scale, `${fixture} ${h.stack} ${h.layer}:${h.head}`).toBeLessThan(1e-5);
        }
        // Heads not removed keep offset 0.
        const selfOffsets = offsets[`head_offsets.${heads[0]!.stack}`]!.data as Float32Array;
        expect(Array.from(selfOffsets.subarray(0, d)).every((x) => x === 0)).toBe(true);
      } finally {
        await model.dispose();
      }
    });
  }
});
