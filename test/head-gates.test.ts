/**
 * Head gates (TapRequest.headGates): every stack reads `head_gates.<stack>` [layers, heads] that
 * multiplies each head's context before the output projection.
 * - Gates of ones give the ungated model bit for bit (every output of every fixture family).
 * - Gating layer 0 head 0 to 0 gives the fixtures' gradients.json `ablation` (checked through
 *   ablateHeads in test/ablation.test.ts).
 */
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { attribute } from '../src/engine/gradients.js';
import { loadModel } from '../src/engine/load.js';
import type { TapRequest } from '../src/models/architecture.js';
import type { RuntimeTensor } from '../src/runtime/runtime.js';
import { FIXTURES, readReference } from './helpers/reference.js';

const FAMILIES = readdirSync(FIXTURES).filter((d) => existsSync(join(FIXTURES, d, 'reference.json')));

function inputsOf(fixture: string): { inputIds: number[]; typeIds?: number[]; decoderInputIds?: number[] } {
  const ref = readReference(fixture).inputs[0]!;
  return {
    inputIds: ref.input_ids,
    ...(ref.token_type_ids ? { typeIds: ref.token_type_ids } : {}),
    ...(Array.isArray(ref.decoder_input_ids) ? { decoderInputIds: ref.decoder_input_ids as number[] } : {}),
  };
}

function bytes(t: RuntimeTensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

describe('head gates of ones equal the ungated model bit for bit', () => {
  it.each(FAMILIES)('%s', async (fixture) => {
    const model = await loadModel(join(FIXTURES, fixture), { graphCache: false });
    try {
      const taps: TapRequest = { attention: true, qk: false, lastHiddenState: true, logits: true };
      const inputs = inputsOf(fixture);
      let plain: Record<string, RuntimeTensor>;
      try {
        plain = await model.run(taps, inputs);
      } catch {
        // A checkpoint without a prediction head: compare the hidden state and attention only.
        taps.logits = false;
        plain = await model.run(taps, inputs);
      }
      const gated = await model.run({ ...taps, headGates: true }, inputs);
      const session = await model.session({ ...taps, headGates: true });
      const stacks = Object.keys(model.architectureInfo.stacks);
      expect(session.inputNames.filter((n) => n.startsWith('head_gates.')).sort()).toEqual(stacks.map((s) => `head_gates.${s}`).sort());
      expect(Object.keys(gated).sort()).toEqual(Object.keys(plain).sort());
      for (const [name, t] of Object.entries(plain)) {
        expect(gated[name]!.dims, name).toEqual(t.dims);
        expect(Buffer.from(bytes(gated[name]!)).equals(Buffer.from(bytes(t))), `${fixture} ${name}`).toBe(true);
      }
    } finally {
      await model.dispose();
    }
  });
});

describe('stacks with their own head count (BART with decoder_attention_heads ≠ encoder_attention_heads)', () => {
  it('gates of ones are fed per stack and head importance has each stack\'s heads', async () => {
    // The bart fixture with 2 decoder heads instead of 4 (d_model 32: the projections are the same tensors).
    const dir = mkdtempSync(join(tmpdir(), 'attnscope-gates-'));
    try {
      for (const f of readdirSync(join(FIXTURES, 'bart'))) copyFileSync(join(FIXTURES, 'bart', f), join(dir, f));
      const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
      writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, decoder_attention_heads: 2 }));
      const model = await loadModel(dir, { graphCache: false });
      try {
        expect(model.architectureInfo.stackHeads).toEqual({ decoder: 2, cross: 2 });
        const inputs = inputsOf('bart');
        const taps: TapRequest = { attention: true, qk: false, lastHiddenState: true, logits: true };
        const plain = await model.run(taps, inputs);
        const gated = await model.run({ ...taps, headGates: true }, inputs);
        for (const [name, t] of Object.entries(plain)) expect(Buffer.from(bytes(gated[name]!)).equals(Buffer.from(bytes(t))), name).toBe(true);
        expect(plain['attention.decoder.0']!.dims[1]).toBe(2);
        const r = await attribute(model, inputs, { methods: ['headImportance'] });
        expect(r.headImportance!.encoder!.raw.dims).toEqual([2, 4]);
        expect(r.headImportance!.decoder!.raw.dims).toEqual([2, 2]);
        expect(r.headImportance!.cross!.raw.dims).toEqual([2, 2]);
      } finally {
        await model.dispose();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
