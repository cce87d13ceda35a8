/**
 * What only DeBERTa-v2/v3 has (its fixture's ids, attention, queries, keys, hidden state and logits
 * are checked by fixtures-match.test.ts): the disentangled attention's relative term. The score
 * terms recorded for the neuron view are PyTorch's: scale 1/√(3·d) (reference.json) and, on every
 * layer, the c2p + p2c term equal to transformers' `rel_att` (reference `attention_bias`). The
 * masked-LM head predicts at [MASK]; the norm-based attention / ALTI taps equal a float64
 * recomputation from PyTorch's hidden states and attention. The ConvLayer of DeBERTa-v2 xlarge (conv_kernel_size) is
 * checked against a float64 recomputation from PyTorch's hidden states; options transformers can
 * switch on that we do not build are refused naming the option.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alti } from '../src/analysis/contributions.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { expectMaskPredictions } from './helpers/fixture-suite.js';
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
    expectMaskPredictions(trace, mask.id);
  });
});

// --- Norm-based attention / ALTI taps --------------------------------------------------------------

describe('deberta-v2 contributions taps (norm-based attention, ALTI)', () => {
  /** max |a − b| / max |b|. */
  const relError = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
    let scale = 1e-30;
    for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]!));
    return maxAbsDiff(a, b) / scale;
  };

  it('v·W_O per head and the residual sum equal a float64 recomputation from PyTorch\'s hidden states and attention', async () => {
    const ref = readReference(FIXTURE);
    const input = ref.inputs[0]!;
    const hiddenStates = input.hidden_states as number[][][];
    const attentions = input.attentions as number[][][][];
    const model = await loadModel(join(FIXTURES, FIXTURE), { graphCache: false });
    try {
      const trace = await model.trace(null, { ids: input.input_ids, contributions: true });
      const taps = trace.contributions!.self!;
      expect(taps.norm).toBe('post');
      const n = input.input_ids.length;
      const hidden = 32;
      const heads = 4;
      const d = hidden / heads;
      for (let l = 0; l < 2; l++) {
        const a = `deberta.encoder.layer.${l}.attention`;
        const wv = fixtureTensor(`${a}.self.value_proj.weight`);
        const bv = fixtureTensor(`${a}.self.value_proj.bias`);
        const wo = fixtureTensor(`${a}.output.dense.weight`);
        const bo = fixtureTensor(`${a}.output.dense.bias`);
        const x = hiddenStates[l]!;
        const v = x.map((row) => Array.from({ length: hidden }, (_, o) => row.reduce((acc, xe, e) => acc + xe * wv[o * hidden + e]!, bv[o]!)));
        // f_h(x_j)[o] = Σ_e v_j[h·d + e] · W_O[o][h·d + e]
        const f = new Float64Array(heads * n * hidden);
        for (let h = 0; h < heads; h++) {
          for (let j = 0; j < n; j++) {
            for (let o = 0; o < hidden; o++) {
              let acc = 0;
              for (let e = 0; e < d; e++) acc += v[j]![h * d + e]! * wo[o * hidden + h * d + e]!;
              f[(h * n + j) * hidden + o] = acc;
            }
          }
        }
        const sum = new Float64Array(n * hidden);
        for (let i = 0; i < n; i++) {
          for (let o = 0; o < hidden; o++) {
            let acc = x[i]![o]! + bo[o]!;
            for (let h = 0; h < heads; h++) for (let j = 0; j < n; j++) acc += attentions[l]![h]![i]![j]! * f[(h * n + j) * hidden + o]!;
            sum[i * hidden + o] = acc;
          }
        }
        expect(relError(taps.transformedValues.layers[l]!, f), `layer ${l} v·W_O`).toBeLessThanOrEqual(1e-4);
        expect(relError(taps.layerInput[l]!.data, flat(x)), `layer ${l} input`).toBeLessThanOrEqual(1e-4);
        expect(relError(taps.residualSum[l]!.data, sum), `layer ${l} residual sum`).toBeLessThanOrEqual(1e-4);
        expect(relError(taps.outputBias[l]!, bo)).toBe(0);
        expect(taps.layerNorm![l]!.eps).toBe(1e-7);
      }
      // ALTI per layer: every row a distribution over the keys.
      for (const m of alti(trace)) {
        for (let i = 0; i < n; i++) {
          let total = 0;
          for (let j = 0; j < n; j++) total += m.data[i * n + j]!;
          expect(total).toBeCloseTo(1, 5);
        }
      }
    } finally {
      await model.dispose();
    }
  });
});

// --- DeBERTa-v2 xlarge's ConvLayer, on a copy of the fixture with conv weights added ---------------

const scratch = mkdtempSync(join(tmpdir(), 'attnscope-deberta-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** A copy of the fixture with config.json edited and, optionally, tensors added to its checkpoint. */
function variant(label: string, edit: (c: Record<string, unknown>) => void, tensors: Record<string, { shape: number[]; data: Float32Array }> = {}): string {
  const dir = join(scratch, label);
  cpSync(join(FIXTURES, FIXTURE), dir, { recursive: true });
  const path = join(dir, 'config.json');
  const config = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  edit(config);
  writeFileSync(path, JSON.stringify(config));
  if (Object.keys(tensors).length > 0) {
    const file = join(dir, 'model.safetensors');
    const { header, data } = readSafetensors(file);
    const parts: Buffer[] = [data];
    let offset = data.length;
    for (const [name, t] of Object.entries(tensors)) {
      header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
      parts.push(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
      offset += t.data.byteLength;
    }
    const text = Buffer.from(JSON.stringify(header), 'utf8');
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(text.length));
    writeFileSync(file, Buffer.concat([length, text, ...parts]));
  }
  return dir;
}

type Header = Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;

function readSafetensors(path: string): { header: Header; data: Buffer } {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  return { header: JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Header, data: bytes.subarray(8 + n) };
}

/** A float32 tensor of the fixture's checkpoint, as float64 numbers. */
function fixtureTensor(name: string): number[] {
  const { header, data } = readSafetensors(join(FIXTURES, FIXTURE, 'model.safetensors'));
  const t = header[name]!;
  const [a, b] = t.data_offsets;
  const copy = Uint8Array.prototype.slice.call(data, a, b);
  return Array.from(new Float32Array(copy.buffer));
}

/** Deterministic values in [−amp, amp] (a linear congruential sequence). */
function pseudoRandom(n: number, seed: number, amp: number, center = 0): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = center + amp * (2 * (s / 2 ** 32) - 1);
  }
  return out;
}

describe('deberta-v2 with conv_kernel_size (the v2 xlarge/xxlarge ConvLayer)', () => {
  it('layer 1 reads LayerNorm(layer 0 output + tanh(conv1d(embeddings))): its queries equal a float64 recomputation', async () => {
    const hidden = 32;
    const kernel = 3;
    const groups = 2;
    const perGroup = hidden / groups;
    const convW = pseudoRandom(hidden * perGroup * kernel, 7, 0.3);
    const convB = pseudoRandom(hidden, 11, 0.1);
    const lnW = pseudoRandom(hidden, 13, 0.2, 1);
    const lnB = pseudoRandom(hidden, 17, 0.1);
    const dir = variant('conv', (c) => { c.conv_kernel_size = kernel; c.conv_groups = groups; }, {
      'deberta.encoder.conv.conv.weight': { shape: [hidden, perGroup, kernel], data: convW },
      'deberta.encoder.conv.conv.bias': { shape: [hidden], data: convB },
      'deberta.encoder.conv.LayerNorm.weight': { shape: [hidden], data: lnW },
      'deberta.encoder.conv.LayerNorm.bias': { shape: [hidden], data: lnB },
    });
    const input = readReference(FIXTURE).inputs[0]!;
    // PyTorch's embedding output and layer-0 output (the conv does not change layer 0).
    const [h0, h1] = (input.hidden_states as number[][][]).slice(0, 2) as [number[][], number[][]];
    const n = h0.length;
    const pad = (kernel - 1) / 2;
    const wq = fixtureTensor('deberta.encoder.layer.1.attention.self.query_proj.weight');
    const bq = fixtureTensor('deberta.encoder.layer.1.attention.self.query_proj.bias');
    const heads = 4;
    const headDim = hidden / heads;
    const expected = new Float64Array(heads * n * headDim);
    for (let t = 0; t < n; t++) {
      // Conv1d over positions, zero padding, grouped channels; then tanh, residual, LayerNorm (eps 1e-7).
      const y = new Array<number>(hidden);
      for (let c = 0; c < hidden; c++) {
        const g0 = Math.floor(c / perGroup) * perGroup;
        let acc = convB[c]!;
        for (let ci = 0; ci < perGroup; ci++) {
          for (let u = 0; u < kernel; u++) {
            const src = t + u - pad;
            if (src >= 0 && src < n) acc += convW[(c * perGroup + ci) * kernel + u]! * h0[src]![g0 + ci]!;
          }
        }
        y[c] = h1[t]![c]! + Math.tanh(acc);
      }
      const mean = y.reduce((a, b) => a + b, 0) / hidden;
      const variance = y.reduce((a, b) => a + (b - mean) ** 2, 0) / hidden;
      const x = y.map((v, c) => ((v - mean) / Math.sqrt(variance + 1e-7)) * lnW[c]! + lnB[c]!);
      for (let o = 0; o < hidden; o++) {
        let q = bq[o]!;
        for (let i = 0; i < hidden; i++) q += wq[o * hidden + i]! * x[i]!;
        expected[(Math.floor(o / headDim) * n + t) * headDim + (o % headDim)] = q;
      }
    }
    const model = await loadModel(dir, { graphCache: false });
    try {
      const trace = await model.trace(null, { ids: input.input_ids, qk: true });
      const q1 = trace.queries!.self!.layers[1]!;
      const diff = maxAbsDiff(q1, expected);
      expect(diff, `layer-1 queries differ by ${diff}`).toBeLessThanOrEqual(1e-4);
      // Layer 0 is before the conv: its queries are still PyTorch's.
      expect(maxAbsDiff(trace.queries!.self!.layers[0]!, flat((input.queries as number[][][][])[0]!))).toBeLessThanOrEqual(1e-4);
      // And the conv changed layer 1 (it is not a no-op).
      expect(maxAbsDiff(q1, flat((input.queries as number[][][][])[1]!))).toBeGreaterThan(1e-2);
      // ALTI's composition assumes nothing mixes positions between layers: refused with the conv.
      await expect(model.trace(null, { ids: input.input_ids, contributions: true })).rejects.toThrow(/contributions/);
    } finally {
      await model.dispose();
    }
  });
});

describe('deberta-v2 without share_att_key', () => {
  it('c2p reads pos_key_proj and p2c pos_query_proj: given the key/query projections\' weights, attention is PyTorch\'s', async () => {
    const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (let l = 0; l < 2; l++) {
      for (const [pos, own] of [['pos_key_proj', 'key_proj'], ['pos_query_proj', 'query_proj']] as const) {
        const a = `deberta.encoder.layer.${l}.attention.self`;
        tensors[`${a}.${pos}.weight`] = { shape: [32, 32], data: Float32Array.from(fixtureTensor(`${a}.${own}.weight`)) };
        tensors[`${a}.${pos}.bias`] = { shape: [32], data: Float32Array.from(fixtureTensor(`${a}.${own}.bias`)) };
      }
    }
    const same = variant('separate', (c) => { c.share_att_key = false; }, tensors);
    // Swapped (c2p from the query projection, p2c from the key projection): the attention must change.
    const swapped: typeof tensors = {};
    for (const [name, t] of Object.entries(tensors)) {
      swapped[name.includes('pos_key_proj') ? name.replace('pos_key_proj', 'pos_query_proj') : name.replace('pos_query_proj', 'pos_key_proj')] = t;
    }
    const other = variant('separate-swapped', (c) => { c.share_att_key = false; }, swapped);
    const input = readReference(FIXTURE).inputs[0]!;
    const reference = flat(input.attentions!);
    for (const [dir, matches] of [[same, true], [other, false]] as const) {
      const model = await loadModel(dir, { graphCache: false });
      try {
        const trace = await model.trace(null, { ids: input.input_ids });
        const diff = maxAbsDiff(Float64Array.from(trace.attention.self!.layers.flatMap((l) => Array.from(l))), reference);
        if (matches) expect(diff, `attention differs by ${diff}`).toBeLessThanOrEqual(1e-5);
        else expect(diff).toBeGreaterThan(1e-3);
      } finally {
        await model.dispose();
      }
    }
  });
});

describe('deberta-v2 options that are not built are refused by name', () => {
  it('an even conv_kernel_size (transformers\' ConvLayer changes the length)', async () => {
    const dir = variant('even-conv', (c) => { c.conv_kernel_size = 2; });
    await expect(loadModel(dir, { graphCache: false })).rejects.toThrow(/conv_kernel_size 2 is even/);
  });

  it('norm_rel_ebd other than none / layer_norm', async () => {
    const dir = variant('norm', (c) => { c.norm_rel_ebd = 'batch_norm'; });
    await expect(loadModel(dir, { graphCache: false })).rejects.toThrow(/norm_rel_ebd 'batch_norm' is not supported/);
  });

  it('attention_head_size that does not split hidden_size', async () => {
    const dir = variant('head-size', (c) => { c.attention_head_size = 16; });
    await expect(loadModel(dir, { graphCache: false })).rejects.toThrow(/attention_head_size 16/);
  });
});
