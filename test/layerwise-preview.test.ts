/**
 * The one-head preview of a q/k-first run (engine/layerwise.ts previewHead, graph/partition.ts
 * headPreview; issue 13.4: the shown head of layer 0 on screen before the rest of the layer): the
 * preview computes one query head's queries and its key head's keys from the gathered columns of
 * the projection weights. Checked on fixture families against PyTorch's per-head queries and keys
 * (reference.json, computed by transformers), against the same run without a preview (the head's
 * rows of layer 0, and every layer output of the run, bit for bit), and for the families the
 * pattern does not cover (no preview, the run unchanged).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { traceLayers, type HeadPreview } from '../src/engine/layerwise.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import type { RuntimeTensor } from '../src/runtime/runtime.js';
import { FIXTURES, flat, maxAbsDiff, readReference } from './helpers/reference.js';

/** Families with Llama-style q/k projections (rotary, grouped keys, q/k/v bias, 16-bit weights) and BERT's. */
const PREVIEWED = ['llama', 'qwen2', 'mistral', 'gemma', 'olmo', 'bert', 'bert-fp16'];
/** Families whose first queries and keys are not in that pattern (fused c_attn; partial rotary; per-layer norms of q/k over all heads). */
const NOT_PREVIEWED = ['gpt2', 'stablelm', 'cohere'];

const models = new Map<string, Model>();

beforeAll(async () => {
  for (const f of [...PREVIEWED, ...NOT_PREVIEWED]) models.set(f, await loadModel(`${FIXTURES}/${f}`, { graphCache: false }));
});

afterAll(async () => {
  for (const m of models.values()) await m.dispose();
});

/** A q/k-first run on demand, every output gathered, and the preview of `head` (if any). */
async function run(model: Model, ids: readonly number[], head?: number): Promise<{ outputs: Record<string, RuntimeTensor>; previews: HeadPreview[] }> {
  const outputs: Record<string, RuntimeTensor> = {};
  const previews: HeadPreview[] = [];
  await traceLayers(
    model,
    null,
    { ids, qk: true, attention: false, qkFirst: true, ...(head !== undefined ? { previewHead: head, onPreview: (p: HeadPreview) => void previews.push(p) } : {}) },
    (layer) => void Object.assign(outputs, layer.outputs),
  );
  return { outputs, previews };
}

/** Head `h`'s rows of a [1, heads, n, d] tensor. */
function headRows(t: RuntimeTensor, h: number): Float32Array {
  const [, , n, d] = t.dims as number[];
  return (t.data as Float32Array).subarray(h * n! * d!, (h + 1) * n! * d!);
}

describe('layer-by-layer: one head of layer 0 before the rest of the layer', () => {
  for (const fixture of PREVIEWED) {
    it(`${fixture}: the preview is the head's queries and keys (PyTorch's; the whole run's bit for bit) and the run's outputs are unchanged`, async () => {
      const model = models.get(fixture)!;
      const ref = readReference(fixture);
      const input = ref.inputs.find((i) => !i.text_pair && i.queries && i.keys)!;
      const info = model.architectureInfo;
      const plain = await run(model, input.input_ids);
      for (const head of [0, info.numHeads - 1]) {
        const { outputs, previews } = await run(model, input.input_ids, head);
        expect(previews).toHaveLength(1);
        const p = previews[0]!;
        const kvHead = Math.floor((head * info.numKeyValueHeads) / info.numHeads);
        expect([p.stack, p.layer, p.head, p.kvHead]).toEqual(['self', 0, head, kvHead]);
        expect(p.queries.dims).toEqual([1, 1, input.input_ids.length, info.headDim]);
        expect(p.keys.dims).toEqual([1, 1, input.input_ids.length, info.headDim]);
        // Against transformers' own queries and keys of layer 0 (the tolerance of every q/k check against PyTorch).
        const refQ = (input.queries as unknown as number[][][][])[0]![head]!;
        const refK = (input.keys as unknown as number[][][][])[0]![kvHead]!;
        expect(maxAbsDiff(p.queries.data as Float32Array, flat(refQ as never))).toBeLessThanOrEqual(1e-4);
        expect(maxAbsDiff(p.keys.data as Float32Array, flat(refK as never))).toBeLessThanOrEqual(1e-4);
        // Against the run without a preview: the head's rows of layer 0, bit for bit.
        expect(p.queries.data).toEqual(headRows(plain.outputs['queries.self.0']!, head));
        expect(p.keys.data).toEqual(headRows(plain.outputs['keys.self.0']!, kvHead));
        // The rest of the run (from the embeddings and normed input the preview handed on) is the same.
        expect(Object.keys(outputs).sort()).toEqual(Object.keys(plain.outputs).sort());
        for (const [name, t] of Object.entries(plain.outputs)) expect(outputs[name]!.data, name).toEqual(t.data);
      }
    });
  }

  for (const fixture of NOT_PREVIEWED) {
    it(`${fixture}: no per-head form of its first queries and keys: no preview, the run unchanged`, async () => {
      const model = models.get(fixture)!;
      const ids = readReference(fixture).inputs[0]!.input_ids;
      const plain = await run(model, ids);
      const { outputs, previews } = await run(model, ids, 0);
      expect(previews).toEqual([]);
      for (const [name, t] of Object.entries(plain.outputs)) expect(outputs[name]!.data, name).toEqual(t.data);
    });
  }

  it('a head the model does not have is refused, naming the range', async () => {
    const model = models.get('llama')!;
    const heads = model.architectureInfo.numHeads;
    await expect(run(model, [1, 2, 3], heads)).rejects.toThrow(`previewHead: ${heads} is not a head of`);
    await expect(run(model, [1, 2, 3], heads)).rejects.toThrow(`(0 to ${heads - 1})`);
  });
});
