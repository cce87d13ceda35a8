/**
 * traceModel (engine/layerwise.ts), what `attnscope trace` runs: 'auto' runs layer by layer above
 * the on-demand threshold and the whole graph below it, and the trace it gives is the whole graph's
 * (and PyTorch's attention, reference.json) with each layer's weights read as it runs; a trace
 * file written from it (each stack written layer by layer, not copied into one array) reads back
 * as the in-memory whole-graph trace; bad execution values are one line.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { autoExecution, checkExecutionMode, traceModel, type LayerOutputs } from '../src/engine/layerwise.js';
import { wholeRunPeakBytes } from '../src/engine/attention-mode.js';
import type { Model } from '../src/engine/model.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';
import { openSafetensors, writeSafetensors, writeSafetensorsStreamed } from '../src/io/safetensors.js';
import { loadFixtureModel } from './helpers/fixture-suite.js';
import { differences } from './helpers/layerwise-compare.js';
import { flat, maxAbsDiff, readReference, stackValues } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-execution-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

for (const fixture of ['gpt2', 'llama']) {
  describe(`traceModel: ${fixture}`, () => {
    let model!: Model;
    loadFixtureModel(fixture, (m) => (model = m));
    const input = readReference(fixture).inputs[0]!;
    const ids = input.input_ids;

    it("auto: layer by layer above the threshold and the memory budget, the whole graph's trace (and PyTorch's attention)", async () => {
      const whole = await model.trace(null, { ids, attention: 'on-demand', hidden: true });
      const seen: LayerOutputs['layers'][] = [];
      const run = await traceModel(model, null, { ids, qk: true, hidden: true, attention: 'auto', onDemandAbove: ids.length - 1, memoryBudget: 1, execution: 'auto', onLayer: (l) => void seen.push(l.layers) });
      expect(run.execution).toBe('layers');
      expect(seen.flat().map((l) => l.layer)).toEqual(Array.from({ length: model.architectureInfo.numLayers }, (_, l) => l));
      // On demand (ids.length > threshold): queries, keys and score terms, no probabilities.
      expect(run.trace.attention).toEqual({});
      expect(differences({ q: run.trace.queries, k: run.trace.keys, h: run.trace.lastHiddenState }, { q: whole.queries, k: whole.keys, h: whole.lastHiddenState })).toEqual([]);
      // Dense, forced layer by layer: the probabilities are the whole graph's (to float32 rounding:
      // without the last layer's dead reads of the residual stream, the whole graph fuses the
      // residual add into that layer's input norm, GPT-2's SkipLayerNormalization; the cut before
      // the layer keeps them apart) and PyTorch's.
      const dense = await traceModel(model, null, { ids, attention: 'dense', execution: 'layers' });
      expect(dense.execution).toBe('layers');
      expect(differences(dense.trace.attention, (await model.trace(null, { ids })).attention, 1e-6)).toEqual([]);
      expect(maxAbsDiff(stackValues(dense.trace.attention.self), flat(input.attentions as never))).toBeLessThanOrEqual(1e-5);
    });

    it('auto: the whole graph at or below the threshold; whole and layers as asked', async () => {
      expect(autoExecution(model, ids.length, { onDemandAbove: ids.length, memoryBudget: 1 })).toBe('whole');
      expect(autoExecution(model, ids.length + 1, { onDemandAbove: ids.length, memoryBudget: 1 })).toBe('layers');
      // Above the threshold the whole graph still runs while its predicted peak fits the budget.
      const peak = wholeRunPeakBytes(model.architectureInfo, model.weightBytes, ids.length + 1, 'on-demand');
      expect(autoExecution(model, ids.length + 1, { onDemandAbove: ids.length, memoryBudget: peak })).toBe('whole');
      expect(autoExecution(model, ids.length + 1, { onDemandAbove: ids.length, memoryBudget: peak - 1 })).toBe('layers');
      expect(autoExecution(model, ids.length + 1, { onDemandAbove: ids.length })).toBe('whole');
      const short = await traceModel(model, null, { ids, attention: 'auto', onDemandAbove: ids.length });
      expect(short.execution).toBe('whole');
      expect(Object.keys(short.trace.attention)).toEqual(['self']);
      const forced = await traceModel(model, null, { ids, attention: 'on-demand', execution: 'whole' });
      expect(forced.execution).toBe('whole');
    });

    it('layer by layer refuses what Model.trace refuses, with the same message, before running', async () => {
      for (const bad of [{ routing: true }, { logitLens: 0 }, { logitLens: 1.5 }]) {
        const message = await model.trace(null, { ids, ...bad }).then(() => 'ran', (e: Error) => e.message);
        expect(message).toMatch(/^--(routing|logit-lens): /);
        await expect(traceModel(model, null, { ids, ...bad, execution: 'layers' })).rejects.toThrow(message);
      }
    });

    it('a trace file of the layer-by-layer trace reads back as the whole-graph trace', async () => {
      const whole = await model.trace(null, { ids, attention: 'on-demand', hidden: true });
      const { trace } = await traceModel(model, null, { ids, attention: 'on-demand', hidden: true, execution: 'layers' });
      const path = join(tmp, `${fixture}.safetensors`);
      await writeTraceFile(path, trace);
      const back = await readTraceFile(path);
      expect(differences({ q: back.queries, k: back.keys }, { q: whole.queries, k: whole.keys })).toEqual([]);
      // The stack tensors are [layers, heads, tokens, headDim]: layer l's values at l × its size.
      const file = await openSafetensors(path);
      try {
        const q = await file.get('queries.self');
        const stack = whole.queries!.self!;
        expect(q.shape).toEqual([stack.layers.length, ...stack.dims]);
        const per = stack.layers[0]!.length;
        stack.layers.forEach((layer, l) => expect(differences(q.data.subarray(l * per, (l + 1) * per), layer)).toEqual([]));
      } finally {
        await file.close();
      }
    });
  });
}

describe('execution option', () => {
  it('bad values: one line naming the option and what is allowed', () => {
    expect(() => checkExecutionMode('sideways', '--execution')).toThrow(/^--execution: 'sideways' is not a way to run the model; allowed: auto, whole, layers$/);
    expect(checkExecutionMode('layers')).toBe('layers');
  });
});

describe('a tensor written as its parts', () => {
  it('gives the bytes of the whole array, in F32 and F16, and a wrong total is one line', async () => {
    const whole = Float32Array.from({ length: 30 }, (_, i) => Math.sin(i) * 3);
    const parts = [whole.subarray(0, 7), whole.subarray(7, 20), whole.subarray(20)];
    for (const dtype of ['F32', 'F16'] as const) {
      const [a, b] = [join(tmp, `whole-${dtype}.safetensors`), join(tmp, `parts-${dtype}.safetensors`)];
      await writeSafetensors(a, [{ name: 't', dtype, shape: [3, 10], data: whole }]);
      await writeSafetensorsStreamed(b, [{ name: 't', dtype, shape: [3, 10] }], () => parts, undefined, { chunkBytes: 8 });
      expect(readFileSync(b).equals(readFileSync(a)), dtype).toBe(true);
    }
    await expect(writeSafetensorsStreamed(join(tmp, 'bad.safetensors'), [{ name: 't', dtype: 'F32', shape: [3, 10] }], () => parts.slice(1))).rejects.toThrow(/^cannot write safetensors: tensor 't' has 23 values but shape \[3, 10\]$/);
  });
});
