/**
 * What 'auto' execution weighs (engine/attention-mode.ts wholeRunPeakBytes): a model's weights as
 * float32 (Model.weightBytes, against the tensors' shapes read straight from the checkpoint's
 * safetensors header), and the bytes of the queries and keys a run on demand keeps
 * (onDemandTapBytes, against the arrays of a real trace: decoder-only, and an encoder-decoder with
 * its three stacks); a bad budget gets one line.
 */
import { openSync, readSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { Trace } from '../src/core/trace.js';
import { AUTO_WHOLE_BUDGET_BYTES, denseAttentionBytes, onDemandTapBytes, wholeRunPeakBytes } from '../src/engine/attention-mode.js';
import { autoExecution, traceModel } from '../src/engine/layerwise.js';
import type { Model } from '../src/engine/model.js';
import { loadFixtureModel } from './helpers/fixture-suite.js';
import { FIXTURES, readReference } from './helpers/reference.js';

/** Σ elements × 4 over the tensors of a .safetensors file, from its JSON header alone. */
function float32BytesOf(file: string): number {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(8);
    readSync(fd, head, 0, 8, 0);
    const length = Number(head.readBigUInt64LE(0));
    const json = Buffer.alloc(length);
    readSync(fd, json, 0, length, 8);
    const header = JSON.parse(json.toString('utf8')) as Record<string, { shape?: number[] }>;
    return Object.entries(header).filter(([k]) => k !== '__metadata__').reduce((sum, [, t]) => sum + t.shape!.reduce((a, b) => a * b, 1) * 4, 0);
  } finally {
    closeSync(fd);
  }
}

/** Bytes of every layer's queries and keys a trace holds. */
function tapBytes(trace: Trace): number {
  let bytes = 0;
  for (const stacks of [trace.queries, trace.keys]) {
    for (const stack of Object.values(stacks ?? {})) for (const layer of stack!.layers) bytes += layer.byteLength;
  }
  return bytes;
}

for (const fixture of ['gpt2', 'llama', 'bert-fp16', 'bart']) {
  describe(`execution budget: ${fixture}`, () => {
    let model!: Model;
    loadFixtureModel(fixture, (m) => (model = m));
    const input = readReference(fixture).inputs[0]!;
    const ids = input.input_ids;
    const decoderIds = (input as { decoder_input_ids?: number[] }).decoder_input_ids;

    it('weightBytes: every tensor of the checkpoint as float32 (float16 files count twice their data)', () => {
      expect(model.weightBytes).toBe(float32BytesOf(join(FIXTURES, fixture, 'model.safetensors')));
    });

    it("onDemandTapBytes: the bytes of a real on-demand trace's queries and keys", async () => {
      const trace = await model.trace(null, { ids, ...(decoderIds ? { decoderIds } : {}), attention: 'on-demand' });
      const held = tapBytes(trace);
      expect(held).toBeGreaterThan(0);
      expect(onDemandTapBytes(model.architectureInfo, ids.length, decoderIds?.length)).toBe(held);
      expect(wholeRunPeakBytes(model.architectureInfo, model.weightBytes, ids.length, 'on-demand', decoderIds?.length)).toBe(model.weightBytes + 2 * held + 2 ** 30);
      expect(wholeRunPeakBytes(model.architectureInfo, model.weightBytes, ids.length, 'dense', decoderIds?.length)).toBe(model.weightBytes + 2 * denseAttentionBytes(model.architectureInfo, ids.length, decoderIds?.length) + 2 ** 30);
    });

    it('a tiny model runs whole above the on-demand threshold within the default budget; a bad budget gets one line', async () => {
      expect(autoExecution(model, ids.length, { decoderTokens: decoderIds?.length, onDemandAbove: 1 })).toBe('whole');
      expect(wholeRunPeakBytes(model.architectureInfo, model.weightBytes, ids.length, 'on-demand')).toBeLessThan(AUTO_WHOLE_BUDGET_BYTES);
      for (const bad of [0, -5, Number.NaN, Number.POSITIVE_INFINITY]) {
        await expect(traceModel(model, null, { ids, ...(decoderIds ? { decoderIds } : {}), attention: 'auto', onDemandAbove: 1, memoryBudget: bad })).rejects.toThrow(/^memoryBudget: .* is not a memory budget; allowed: a positive number of bytes$/);
      }
    });
  });
}
