/**
 * Head gates (TapRequest.headGates): every stack reads `head_gates.<stack>` [layers, heads] that
 * multiplies each head's context before the output projection.
 * - Gates of ones give the ungated model bit for bit (every output of every fixture family).
 * - Gating layer 0 head 0 to 0 gives the fixtures' gradients.json `ablation.target_ablated` and
 *   `kl` (PyTorch with the same gate; T and the KL recomputed here in float64 from our logits).
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

interface GradientsJson {
  inputs: {
    id: string;
    input_ids: number[];
    decoder_input_ids?: number[];
    target: { kind: string; position: number; token_id: number | null; value: number };
    ablation: Ablation | Record<string, Ablation>;
  }[];
}
interface Ablation { layer: number; head: number; target_ablated: number; kl: number | null }

/** log-softmax of a row in float64. */
function logSoftmax(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(row, (v) => v - lse);
}

const GRADIENT_FIXTURES = FAMILIES.filter((d) => existsSync(join(FIXTURES, d, 'gradients.json')));

describe('a head gated to 0 is the ablation PyTorch computes (gradients.json `ablation`)', () => {
  it.each(GRADIENT_FIXTURES)('%s', async (fixture) => {
    const refs = JSON.parse(readFileSync(join(FIXTURES, fixture, 'gradients.json'), 'utf8')) as GradientsJson;
    const reference = readReference(fixture);
    const model = await loadModel(join(FIXTURES, fixture), { graphCache: false });
    try {
      const taps: TapRequest = { attention: false, qk: false, lastHiddenState: false, logits: true, headGates: true };
      const info = model.architectureInfo;
      for (const [i, ref] of refs.inputs.entries()) {
        const inputs = {
          inputIds: ref.input_ids,
          ...(reference.inputs[i]!.token_type_ids ? { typeIds: reference.inputs[i]!.token_type_ids } : {}),
          ...(ref.decoder_input_ids ? { decoderInputIds: ref.decoder_input_ids } : {}),
        };
        const byStack: Record<string, Ablation> = 'layer' in ref.ablation ? { self: ref.ablation as Ablation } : (ref.ablation as Record<string, Ablation>);
        const original = await model.run(taps, inputs);
        const p = ref.target.position;
        for (const [stack, ab] of Object.entries(byStack)) {
          const layers = info.stacks[stack as 'self'] ?? 0;
          const gates = new Float32Array(layers * info.numHeads).fill(1);
          gates[ab.layer * info.numHeads + ab.head] = 0;
          const out = await model.run(taps, inputs, { [`head_gates.${stack}`]: { type: 'float32', dims: [layers, info.numHeads], data: gates } });
          const logits = out.logits!;
          if (logits.dims.length === 2) {
            // Electra's discriminator: T = logits[0, p].
            expect((logits.data as Float32Array)[p]!).toBeCloseTo(ab.target_ablated, 4);
            continue;
          }
          const vocab = logits.dims[2]!;
          const row = (t: RuntimeTensor): Float32Array => (t.data as Float32Array).subarray(p * vocab, (p + 1) * vocab);
          const ablated = logSoftmax(row(logits));
          const orig = logSoftmax(row(original.logits!));
          expect(Math.abs(ablated[ref.target.token_id!]! - ab.target_ablated), `${fixture} ${ref.id} ${stack}`).toBeLessThan(2e-4 * Math.max(1, Math.abs(ab.target_ablated)));
          let kl = 0;
          for (let v = 0; v < vocab; v++) kl += Math.exp(orig[v]!) * (orig[v]! - ablated[v]!);
          expect(Math.abs(kl - ab.kl!), `${fixture} ${ref.id} ${stack} kl`).toBeLessThan(2e-4 * Math.max(1e-2, ab.kl!) + 1e-6);
        }
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
