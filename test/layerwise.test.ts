/**
 * Layer-by-layer execution (engine/layerwise.ts over graph/partition.ts) on the fixture checkpoints:
 * the trace gathered layer by layer is the whole-graph trace bit for bit (attention, queries, keys,
 * score terms, residuals, hidden states, logits), its attention is PyTorch's (reference.json), each
 * layer arrives in its own segment in order, and an AbortSignal stops the run between layers.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { StackName, Trace } from '../src/core/trace.js';
import { LayerRunCancelled, traceByLayers, traceLayers, type LayerOutputs } from '../src/engine/layerwise.js';
import type { Model } from '../src/engine/model.js';
import { deepOr } from './helpers/deep.js';
import { allTapsOptions, differences, LAYERWISE_FIXTURES } from './helpers/layerwise-compare.js';
import { loadFixtureModel } from './helpers/fixture-suite.js';
import { FIXTURES, flat, maxAbsDiff, readReference, stackValues, type ReferenceInput } from './helpers/reference.js';

/** Encoder, decoder (GPT-2; rotary + GQA), encoder-decoders (BART; T5 with its shared position bias), a mixture of experts. */
const QUICK = ['bert', 'gpt2', 'llama', 'bart', 't5', 'mixtral'];

/** The reference attention of each stack, by the Trace's stack names. */
function referenceAttention(input: ReferenceInput): [StackName, number[] | unknown][] {
  if (input.encoder_attentions) return [['encoder', input.encoder_attentions], ['decoder', input.decoder_attentions], ['cross', input.cross_attentions]];
  return [['self', input.attentions]];
}

for (const fixture of deepOr(LAYERWISE_FIXTURES, QUICK)) {
  describe(`layer by layer: ${fixture}`, () => {
    let model!: Model;
    loadFixtureModel(fixture, (m) => (model = m));
    const ref = readReference(fixture);
    const input = ref.inputs[0]!;
    const options = allTapsOptions(input);

    it('gives the whole-graph trace bit for bit, one segment per layer, in order', async () => {
      const whole = await model.trace(null, options);
      const seen: LayerOutputs[] = [];
      const layered = await traceByLayers(model, null, options, (l) => {
        seen.push({ ...l, outputs: { ...l.outputs } });
      });
      expect(differences(layered, whole)).toEqual([]);
      // Every layer of every stack, each in one segment, in the graph's order (encoder before decoder).
      // Cross attention is computed in its decoder layer's segment.
      for (const s of seen) for (const l of s.layers) if (l.stack === 'cross') expect(s.layers).toContainEqual({ stack: 'decoder', layer: l.layer });
      const layers = seen.flatMap((s) => s.layers.filter((l) => l.stack !== 'cross').map((l) => `${l.stack}.${l.layer}`));
      const stacks = Object.entries(model.architectureInfo.stacks).filter(([s]) => s !== 'cross');
      const expected = stacks.flatMap(([stack, n]) => Array.from({ length: n! }, (_, l) => `${stack}.${l}`));
      expect(layers).toEqual(expected);
      expect(seen.length).toBe(expected.length);
      seen.forEach((s, i) => {
        expect(s.index).toBe(i);
        for (const l of s.layers) expect(Object.keys(s.outputs)).toContain(`attention.${l.stack}.${l.layer}`);
      });
      expect(Object.keys(seen[seen.length - 1]!.outputs)).toContain('logits');
    });

    it("has PyTorch's attention (reference.json)", async () => {
      const layered: Trace = await traceByLayers(model, null, { ...options, residuals: false });
      for (const [stack, expected] of referenceAttention(input)) {
        expect(maxAbsDiff(stackValues(layered.attention[stack]), flat(expected as never)), stack).toBeLessThanOrEqual(1e-5);
      }
    });
  });
}

describe('layer by layer: cancel', () => {
  let model!: Model;
  loadFixtureModel('llama', (m) => (model = m));

  it('stops between layers when the signal fires: no later layer is computed', async () => {
    const controller = new AbortController();
    const computed: number[] = [];
    const run = traceLayers(model, null, { ids: readReference('llama').inputs[0]!.input_ids, signal: controller.signal }, (l) => {
      computed.push(l.index);
      if (l.index === 0) controller.abort();
    });
    await expect(run).rejects.toBeInstanceOf(LayerRunCancelled);
    expect(computed).toEqual([0]);
  });

  it('runs attention on demand layer by layer too (queries, keys and score terms per layer, no probabilities)', async () => {
    const options = { ids: readReference('llama').inputs[0]!.input_ids, attention: 'on-demand' as const };
    const seen: string[][] = [];
    const layered = await traceByLayers(model, null, options, (l) => {
      seen.push(Object.keys(l.outputs).sort());
    });
    expect(differences(layered, await model.trace(null, options))).toEqual([]);
    expect(seen.map((keys) => keys.filter((k) => !k.startsWith('score_bias')))).toEqual([['keys.self.0', 'queries.self.0'], ['keys.self.1', 'queries.self.1']]);
  });

  it('traces inputs of several lengths one after another (each length opens its own segment sessions)', async () => {
    // Lengths chosen to hit both a size that only the sequence has and sizes the graph also fixes
    // (the fixture's head count, head dim and hidden size), whose carried shapes stay numeric.
    const { numHeads, headDim } = model.info;
    const lengths = [...new Set([5, numHeads, headDim, numHeads * headDim, 3])];
    for (const n of lengths) {
      const ids = Array.from({ length: n }, (_, i) => 1 + ((i * 7) % 50));
      const layered = await traceByLayers(model, null, { ids });
      expect(differences(layered, await model.trace(null, { ids })), `${n} tokens`).toEqual([]);
    }
  });

  it('refuses an encoder-decoder without a decoder input (that is generation)', async () => {
    const t5 = await import('../src/engine/load.js').then((m) => m.loadModel(join(FIXTURES, 't5')));
    try {
      await expect(traceLayers(t5, 'hello', {}, () => undefined)).rejects.toThrow(/needs a decoder input/);
    } finally {
      await t5.dispose();
    }
  });
});
