/**
 * Norm-based attention (Kobayashi et al. 2020) and ALTI (Ferrando et al. 2022) from
 * analysis/contributions.ts, against
 *  - a float64 re-computation written here from the fixtures' STORED WEIGHTS (read with the
 *    safetensors reader): layer input from PyTorch's hidden_states in reference.json, then
 *    q/k/v, (RoPE,) softmax, v·W_O per head, norms, the residual, the layer norm, ALTI and its
 *    composition across layers, for bert (post-LN), gpt2 (pre-LN) and llama (RMSNorm, GQA, RoPE);
 *  - hand-computed cases.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alti, altiLayer, altiRollout, composeLayers, normAttention, normAttentionPerHead } from '../src/analysis/contributions.js';
import { AttnscopeError } from '../src/core/errors.js';
import type { Matrix, Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { openSafetensors } from '../src/io/safetensors.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';
import { runCli } from './helpers/cli.js';
import { FIXTURES, readReference, type Nested } from './helpers/reference.js';

type Mat = number[][];

/** What the float64 re-computation gives for one layer. */
interface LayerRef {
  /** [head][i][j] ‖α^h_ij f_h(x_j)‖ */
  perHead: number[][][];
  /** [i][j] ‖Σ_h α^h_ij f_h(x_j)‖ */
  summed: Mat;
  /** [i][j] ALTI contributions (rows normalised) */
  alti: Mat;
}

interface Weights {
  get(name: string): Promise<number[]>;
}

const zeros = (r: number, c: number): Mat => Array.from({ length: r }, () => new Array<number>(c).fill(0));
const l1 = (v: number[]): number => v.reduce((s, x) => s + Math.abs(x), 0);
const l2 = (v: number[]): number => Math.sqrt(v.reduce((s, x) => s + x * x, 0));

/** y = x·Wᵀ + b for W stored [out, in] (nn.Linear). */
function linearOutIn(x: Mat, w: number[], b: number[] | null, out: number): Mat {
  const inp = x[0]!.length;
  return x.map((row) => Array.from({ length: out }, (_, o) => {
    let s = b ? b[o]! : 0;
    for (let e = 0; e < inp; e++) s += row[e]! * w[o * inp + e]!;
    return s;
  }));
}

/** y = x·W + b for W stored [in, out] (GPT-2's Conv1D). */
function linearInOut(x: Mat, w: number[], b: number[], out: number): Mat {
  const inp = x[0]!.length;
  return x.map((row) => Array.from({ length: out }, (_, o) => {
    let s = b[o]!;
    for (let e = 0; e < inp; e++) s += row[e]! * w[e * out + o]!;
    return s;
  }));
}

function layerNorm(v: number[], g: number[], b: number[], eps: number): number[] {
  const mean = v.reduce((s, x) => s + x, 0) / v.length;
  const variance = v.reduce((s, x) => s + (x - mean) ** 2, 0) / v.length;
  return v.map((x, d) => ((x - mean) / Math.sqrt(variance + eps)) * g[d]! + b[d]!);
}

function softmaxRow(scores: number[], allowed: (j: number) => boolean): number[] {
  const max = Math.max(...scores.filter((_, j) => allowed(j)));
  const e = scores.map((s, j) => (allowed(j) ? Math.exp(s - max) : 0));
  const z = e.reduce((s, x) => s + x, 0);
  return e.map((x) => x / z);
}

/** transformers' rotate_half RoPE on one head vector at position p (θ base, full head). */
function rope(v: number[], p: number, base: number): number[] {
  const d = v.length;
  const half = d / 2;
  const out = new Array<number>(d);
  for (let i = 0; i < half; i++) {
    const angle = p / Math.pow(base, (2 * i) / d);
    const c = Math.cos(angle);
    const s = Math.sin(angle);
    out[i] = v[i]! * c - v[i + half]! * s;
    out[i + half] = v[i + half]! * c + v[i]! * s;
  }
  return out;
}

interface Block {
  /** α[h][i][j] */
  alpha: number[][][];
  /** f[h][j][:] = v_{j,h} · W_O[h] */
  f: number[][][];
  /** b_O */
  bo: number[];
  /** post-LN: γ, β, ε; null for pre-norm blocks. */
  ln: { g: number[]; b: number[]; eps: number } | null;
}

/** Norm-based attention and ALTI of one block from its pieces, as the papers define them. */
function contributionsOf(x: Mat, blk: Block): LayerRef {
  const n = x.length;
  const D = x[0]!.length;
  const H = blk.alpha.length;
  const perHead = blk.alpha.map((a, h) => a.map((row) => row.map((w, j) => w * l2(blk.f[h]![j]!))));
  // Σ_h α^h_ij f_h(x_j), as vectors
  const mixed: number[][][] = Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => {
    const v = new Array<number>(D).fill(0);
    for (let h = 0; h < H; h++) for (let d = 0; d < D; d++) v[d] += blk.alpha[h]![i]![j]! * blk.f[h]![j]![d]!;
    return v;
  }));
  const summed = mixed.map((row) => row.map(l2));
  const altiRows = mixed.map((row, i) => {
    // the residual sum x̃_i and the block output y_i
    const pre = x[i]!.map((xd, d) => xd + blk.bo[d]! + row.reduce((s, v) => s + v[d]!, 0));
    let y: number[];
    let L: (z: number[]) => number[];
    if (blk.ln) {
      const { g, b, eps } = blk.ln;
      y = layerNorm(pre, g, b, eps);
      const mean = pre.reduce((s, v) => s + v, 0) / D;
      const sigma = Math.sqrt(pre.reduce((s, v) => s + (v - mean) ** 2, 0) / D + eps);
      // LN's linear part with the row's σ: z ↦ γ ⊙ (z − mean(z)) / σ_i
      L = (z) => {
        const m = z.reduce((s, v) => s + v, 0) / D;
        return z.map((v, d) => (g[d]! * (v - m)) / sigma);
      };
    } else {
      y = pre;
      L = (z) => z;
    }
    const terms = row.map((v, j) => L(j === i ? v.map((vd, d) => vd + x[i]![d]!) : v));
    const c = terms.map((t) => Math.max(0, l1(y) - l1(y.map((yd, d) => yd - t[d]!))));
    const z = c.reduce((s, v) => s + v, 0);
    return c.map((v) => v / z);
  });
  return { perHead, summed, alti: altiRows };
}

function toMat(x: Nested): Mat {
  return x as Mat;
}

/** float64 re-computation of every layer of a fixture input (layer inputs from PyTorch's hidden_states). */
async function reference(family: 'bert' | 'gpt2' | 'llama', w: Weights, hiddenStates: Nested, config: Record<string, number>): Promise<LayerRef[]> {
  const layers = config.layers!;
  const H = config.heads!;
  const D = config.hidden!;
  const d = D / H;
  const out: LayerRef[] = [];
  for (let l = 0; l < layers; l++) {
    const x = toMat((hiddenStates as Nested[])[l]!);
    const n = x.length;
    let q: Mat, k: Mat, v: Mat, kvHeads = H, bo: number[], ln: Block['ln'] = null;
    let woHead: (h: number, e: number, o: number) => number;
    let causal = false;
    if (family === 'bert') {
      const p = `bert.encoder.layer.${l}.attention`;
      q = linearOutIn(x, await w.get(`${p}.self.query.weight`), await w.get(`${p}.self.query.bias`), D);
      k = linearOutIn(x, await w.get(`${p}.self.key.weight`), await w.get(`${p}.self.key.bias`), D);
      v = linearOutIn(x, await w.get(`${p}.self.value.weight`), await w.get(`${p}.self.value.bias`), D);
      const wo = await w.get(`${p}.output.dense.weight`);
      woHead = (h, e, o) => wo[o * D + h * d + e]!;
      bo = await w.get(`${p}.output.dense.bias`);
      ln = { g: await w.get(`${p}.output.LayerNorm.weight`), b: await w.get(`${p}.output.LayerNorm.bias`), eps: 1e-12 };
    } else if (family === 'gpt2') {
      const p = `transformer.h.${l}`;
      const g1 = await w.get(`${p}.ln_1.weight`);
      const b1 = await w.get(`${p}.ln_1.bias`);
      const h = x.map((row) => layerNorm(row, g1, b1, 1e-5));
      const qkv = linearInOut(h, await w.get(`${p}.attn.c_attn.weight`), await w.get(`${p}.attn.c_attn.bias`), 3 * D);
      q = qkv.map((r) => r.slice(0, D));
      k = qkv.map((r) => r.slice(D, 2 * D));
      v = qkv.map((r) => r.slice(2 * D));
      const wo = await w.get(`${p}.attn.c_proj.weight`);
      woHead = (hh, e, o) => wo[(hh * d + e) * D + o]!;
      bo = await w.get(`${p}.attn.c_proj.bias`);
      causal = true;
    } else {
      const p = `model.layers.${l}`;
      const gw = await w.get(`${p}.input_layernorm.weight`);
      const h = x.map((row) => {
        const rms = Math.sqrt(row.reduce((s, a) => s + a * a, 0) / D + 1e-6);
        return row.map((a, i) => (a / rms) * gw[i]!);
      });
      kvHeads = config.kvHeads!;
      q = linearOutIn(h, await w.get(`${p}.self_attn.q_proj.weight`), null, H * d);
      k = linearOutIn(h, await w.get(`${p}.self_attn.k_proj.weight`), null, kvHeads * d);
      v = linearOutIn(h, await w.get(`${p}.self_attn.v_proj.weight`), null, kvHeads * d);
      const rot = (m: Mat, heads: number): Mat => m.map((row, pos) => {
        const r: number[] = [];
        for (let hh = 0; hh < heads; hh++) r.push(...rope(row.slice(hh * d, (hh + 1) * d), pos, 10000));
        return r;
      });
      q = rot(q, H);
      k = rot(k, kvHeads);
      const wo = await w.get(`${p}.self_attn.o_proj.weight`);
      woHead = (hh, e, o) => wo[o * (H * d) + hh * d + e]!;
      bo = new Array<number>(D).fill(0);
      causal = true;
    }
    const group = H / kvHeads;
    const alpha = Array.from({ length: H }, (_, h) => {
      const kv = Math.floor(h / group);
      return Array.from({ length: n }, (_, i) => {
        const scores = Array.from({ length: n }, (_, j) => {
          let s = 0;
          for (let e = 0; e < d; e++) s += q[i]![h * d + e]! * k[j]![kv * d + e]!;
          return s / Math.sqrt(d);
        });
        return softmaxRow(scores, (j) => !causal || j <= i);
      });
    });
    const f = Array.from({ length: H }, (_, h) => {
      const kv = Math.floor(h / group);
      return Array.from({ length: n }, (_, j) => Array.from({ length: D }, (_, o) => {
        let s = 0;
        for (let e = 0; e < d; e++) s += v[j]![kv * d + e]! * woHead(h, e, o);
        return s;
      }));
    });
    out.push(contributionsOf(x, { alpha, f, bo, ln }));
  }
  return out;
}

/** max |ours − ref| / max |ref| over a matrix. */
function relError(ours: ArrayLike<number>, ref: number[]): number {
  expect(ours.length).toBe(ref.length);
  const scale = Math.max(...ref.map(Math.abs), 1e-30);
  let m = 0;
  for (let i = 0; i < ref.length; i++) m = Math.max(m, Math.abs(ours[i]! - ref[i]!));
  return m / scale;
}

function composeRef(ms: Mat[]): Mat[] {
  const out: Mat[] = [ms[0]!];
  for (let l = 1; l < ms.length; l++) {
    const a = ms[l]!;
    const b = out[l - 1]!;
    const n = a.length;
    const r = zeros(n, n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) for (let k = 0; k < n; k++) r[i]![j] += a[i]![k]! * b[k]![j]!;
    out.push(r);
  }
  return out;
}

const FAMILIES = [
  { fixture: 'bert', family: 'bert', norm: 'post' },
  { fixture: 'gpt2', family: 'gpt2', norm: 'pre' },
  { fixture: 'llama', family: 'llama', norm: 'pre' },
] as const;

for (const { fixture, family, norm } of FAMILIES) {
  describe(`contributions on fixture ${fixture} (${norm}-norm) against a float64 re-computation from the stored weights`, () => {
    const ref = readReference(fixture);
    let model: Model;
    let weights: Weights & { close(): Promise<void> };
    beforeAll(async () => {
      model = await loadModel(join(FIXTURES, fixture));
      const file = await openSafetensors(join(FIXTURES, fixture, 'model.safetensors'));
      weights = { get: async (name) => Array.from((await file.get(name)).data), close: () => file.close() };
    });
    afterAll(async () => {
      await model?.dispose();
      await weights?.close();
    });

    for (const input of ref.inputs) {
      it(`input '${input.id}': norm-based attention (per head, summed), ALTI per layer and composed match ≤ 1e-4 relative`, async () => {
        const trace = await model.trace(null, { ids: input.input_ids, typeIds: input.token_type_ids, contributions: true });
        expect(trace.contributions?.self?.norm).toBe(norm);
        const refLayers = await reference(family, weights, input.hidden_states as Nested, {
          layers: model.info.numLayers, heads: model.info.numHeads, kvHeads: model.info.numKeyValueHeads, hidden: trace.contributions!.self!.transformedValues.dims[2],
        });
        const perHead = normAttentionPerHead(trace);
        const summed = normAttention(trace);
        const altiLayers = alti(trace);
        const composed = altiRollout(trace);
        const composedRef = composeRef(refLayers.map((r) => r.alti));
        const errors = refLayers.map((r, l) => ({
          perHead: relError(perHead.layers[l]!, r.perHead.flat(2)),
          summed: relError(summed[l]!.data, r.summed.flat()),
          alti: relError(altiLayers[l]!.data, r.alti.flat()),
          composed: relError(composed[l]!.data, composedRef[l]!.flat()),
        }));
        for (const e of errors) {
          expect(Math.max(e.perHead, e.summed, e.alti, e.composed), JSON.stringify(errors)).toBeLessThanOrEqual(1e-4);
        }
        // Every ALTI row is a distribution, and a causal model gives no contribution from later tokens.
        for (const m of altiLayers) {
          const n = m.dims[0];
          for (let i = 0; i < n; i++) {
            let s = 0;
            for (let j = 0; j < n; j++) s += m.data[i * n + j]!;
            expect(s).toBeCloseTo(1, 5);
            if (norm === 'pre') for (let j = i + 1; j < n; j++) expect(m.data[i * n + j]).toBe(0);
          }
        }
      });
    }
  });
}

describe('contributions taps of the other wired families', () => {
  // The block input must be PyTorch's hidden state entering the layer, and the transformed values,
  // attention and output bias must add up (with the residual) to the model's own residual sum.
  for (const fixture of ['roberta', 'electra', 'distilbert', 'albert', 'mistral', 'qwen2', 'gemma', 'opt', 'olmo', 'starcoder2', 'bloom', 'mixtral', 'qwen2_moe', 'stablelm', 'mpnet', 'gpt_neox', 'phi', 'gptj', 'cohere', 'falcon', 'falcon-alibi', 'bert-fp16', 'bert-bf16']) {
    it(`${fixture}: layer input = PyTorch's hidden_states[l]; x + Σ_h Σ_j α·f + b_O = the residual sum`, async () => {
      const ref = readReference(fixture);
      const model = await loadModel(join(FIXTURES, fixture));
      try {
        const input = ref.inputs[0]!;
        const trace = await model.trace(null, { ids: input.input_ids, typeIds: input.token_type_ids, contributions: true });
        const c = trace.contributions!.self!;
        const [H, n, D] = c.transformedValues.dims;
        const hidden = input.hidden_states as number[][][];
        let inputError = 0;
        let sumError = 0;
        let scale = 0;
        for (let l = 0; l < c.layerInput.length; l++) {
          const alpha = trace.attention.self!.layers[l]!;
          const f = c.transformedValues.layers[l]!;
          for (let i = 0; i < n; i++) {
            for (let d = 0; d < D; d++) {
              const x = c.layerInput[l]!.data[i * D + d]!;
              inputError = Math.max(inputError, Math.abs(x - hidden[l]![i]![d]!));
              let s = x + c.outputBias[l]![d]!;
              for (let h = 0; h < H; h++) for (let j = 0; j < n; j++) s += alpha[(h * n + i) * n + j]! * f[(h * n + j) * D + d]!;
              const own = c.residualSum[l]!.data[i * D + d]!;
              sumError = Math.max(sumError, Math.abs(s - own));
              scale = Math.max(scale, Math.abs(own));
            }
          }
        }
        expect(inputError, `layer input vs PyTorch ${inputError}`).toBeLessThanOrEqual(1e-4);
        expect(sumError / scale, `decomposition ${sumError} of ${scale}`).toBeLessThanOrEqual(1e-5);
        for (const m of alti(trace)) {
          for (let i = 0; i < n; i++) expect(m.data.subarray(i * n, (i + 1) * n).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
        }
      } finally {
        await model.dispose();
      }
    });
  }
});

describe('contributions taps of the encoder-decoders\' self-attention stacks', () => {
  // Encoder and decoder self-attention as the decoder-only families; cross attention gets no taps.
  for (const fixture of ['bart', 'mbart', 'marian', 'm2m100', 'pegasus', 't5', 'mt5', 'umt5']) {
    it(`${fixture}: each stack's layer input = PyTorch's hidden states; x + Σ_h Σ_j α·f + b_O = the residual sum; no cross taps`, async () => {
      const input = readReference(fixture).inputs[0]!;
      const model = await loadModel(join(FIXTURES, fixture));
      try {
        const trace = await model.trace(null, { ids: input.input_ids, decoderIds: input.decoder_input_ids as number[], contributions: true });
        expect(Object.keys(trace.contributions!).sort()).toEqual(['decoder', 'encoder']);
        expect(() => alti(trace, 'cross')).toThrow(/^cross attention is not decomposed .*self-attention stacks \(encoder, decoder\)$/);
        for (const stack of ['encoder', 'decoder'] as const) {
          const c = trace.contributions![stack]!;
          const [H, n, D] = c.transformedValues.dims;
          const hidden = input[`${stack}_hidden_states`] as number[][][];
          let inputError = 0;
          let sumError = 0;
          let scale = 0;
          for (let l = 0; l < c.layerInput.length; l++) {
            const alpha = trace.attention[stack]!.layers[l]!;
            const f = c.transformedValues.layers[l]!;
            for (let i = 0; i < n; i++) {
              for (let d = 0; d < D; d++) {
                const x = c.layerInput[l]!.data[i * D + d]!;
                inputError = Math.max(inputError, Math.abs(x - hidden[l]![i]![d]!));
                let sum = x + c.outputBias[l]![d]!;
                for (let h = 0; h < H; h++) for (let j = 0; j < n; j++) sum += alpha[(h * n + i) * n + j]! * f[(h * n + j) * D + d]!;
                const own = c.residualSum[l]!.data[i * D + d]!;
                sumError = Math.max(sumError, Math.abs(sum - own));
                scale = Math.max(scale, Math.abs(own));
              }
            }
          }
          expect(inputError, `${stack} layer input vs PyTorch ${inputError}`).toBeLessThanOrEqual(1e-4);
          expect(sumError / scale, `${stack} decomposition ${sumError} of ${scale}`).toBeLessThanOrEqual(1e-5);
          for (const m of alti(trace, stack)) {
            for (let i = 0; i < n; i++) expect(m.data.subarray(i * n, (i + 1) * n).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
          }
        }
      } finally {
        await model.dispose();
      }
    });
  }
});

describe('StableLM with use_parallel_residual (a parallel block)', () => {
  it('records x + attn(ln(x)) as the residual sum: the taps add up to it, and the layer input is the embedding on layer 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnscope-stablelm-parallel-'));
    try {
      cpSync(join(FIXTURES, 'stablelm'), dir, { recursive: true });
      const configPath = join(dir, 'config.json');
      writeFileSync(configPath, JSON.stringify({ ...JSON.parse(readFileSync(configPath, 'utf8')), use_parallel_residual: true }));
      const model = await loadModel(dir, { graphCache: false });
      try {
        const input = readReference('stablelm').inputs[0]!;
        const trace = await model.trace(null, { ids: input.input_ids, contributions: true });
        const c = trace.contributions!.self!;
        const [H, n, D] = c.transformedValues.dims;
        const embeddings = (input.hidden_states as number[][][])[0]!;
        for (let i = 0; i < n; i++) for (let d = 0; d < D; d++) expect(Math.abs(c.layerInput[0]!.data[i * D + d]! - embeddings[i]![d]!)).toBeLessThanOrEqual(1e-6);
        for (let l = 0; l < c.layerInput.length; l++) {
          const alpha = trace.attention.self!.layers[l]!;
          const f = c.transformedValues.layers[l]!;
          let moved = 0;
          for (let i = 0; i < n; i++) {
            for (let d = 0; d < D; d++) {
              let sum = c.layerInput[l]!.data[i * D + d]!;
              for (let h = 0; h < H; h++) for (let j = 0; j < n; j++) sum += alpha[(h * n + i) * n + j]! * f[(h * n + j) * D + d]!;
              expect(Math.abs(sum - c.residualSum[l]!.data[i * D + d]!)).toBeLessThanOrEqual(1e-4);
              // The MLP branch is not in the residual sum: the next layer's input differs from it.
              if (l + 1 < c.layerInput.length) moved = Math.max(moved, Math.abs(c.layerInput[l + 1]!.data[i * D + d]! - c.residualSum[l]!.data[i * D + d]!));
            }
          }
          if (l + 1 < c.layerInput.length) expect(moved).toBeGreaterThan(1e-3);
        }
        for (const m of alti(trace)) {
          for (let i = 0; i < n; i++) expect(m.data.subarray(i * n, (i + 1) * n).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
        }
      } finally {
        await model.dispose();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('OPT with do_layer_norm_before false (post-LN, as opt-350m)', () => {
  it('records post-LN taps: the stored self_attn_layer_norm, and x + Σ α·f + b_O = the residual sum it normalises', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnscope-opt-post-'));
    try {
      cpSync(join(FIXTURES, 'opt'), dir, { recursive: true });
      const configPath = join(dir, 'config.json');
      writeFileSync(configPath, JSON.stringify({ ...JSON.parse(readFileSync(configPath, 'utf8')), do_layer_norm_before: false }));
      const model = await loadModel(dir, { graphCache: false });
      const file = await openSafetensors(join(dir, 'model.safetensors'));
      try {
        const trace = await model.trace(null, { ids: readReference('opt').inputs[0]!.input_ids, contributions: true });
        const c = trace.contributions!.self!;
        expect(c.norm).toBe('post');
        const names = file.names();
        for (let l = 0; l < c.layerInput.length; l++) {
          const ln = names.find((n) => n.endsWith(`layers.${l}.self_attn_layer_norm.weight`))!;
          expect(Array.from(c.layerNorm![l]!.weight)).toEqual(Array.from((await file.get(ln)).data));
          expect(Array.from(c.layerNorm![l]!.bias)).toEqual(Array.from((await file.get(ln.replace(/weight$/, 'bias'))).data));
          const [H, n, D] = c.transformedValues.dims;
          const alpha = trace.attention.self!.layers[l]!;
          const f = c.transformedValues.layers[l]!;
          for (let i = 0; i < n; i++) {
            for (let d = 0; d < D; d++) {
              let s = c.layerInput[l]!.data[i * D + d]! + c.outputBias[l]![d]!;
              for (let h = 0; h < H; h++) for (let j = 0; j < n; j++) s += alpha[(h * n + i) * n + j]! * f[(h * n + j) * D + d]!;
              expect(Math.abs(s - c.residualSum[l]!.data[i * D + d]!)).toBeLessThanOrEqual(1e-4);
            }
          }
        }
        for (const m of alti(trace)) {
          const n = m.dims[0];
          for (let i = 0; i < n; i++) expect(m.data.subarray(i * n, (i + 1) * n).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
        }
      } finally {
        await file.close();
        await model.dispose();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

/** A hand-made trace with contributions taps: 1 layer, the given heads, tokens and vectors. */
function handTrace(opts: { alpha: number[][][]; f: number[][][]; x: Mat; bo?: number[]; ln?: { weight: number[]; bias: number[]; eps: number } }): Trace {
  const H = opts.alpha.length;
  const n = opts.x.length;
  const D = opts.x[0]!.length;
  const m = (rows: Mat): Matrix => ({ dims: [rows.length, D], data: Float32Array.from(rows.flat()) });
  const sum = opts.x.map((xi, i) => xi.map((xd, d) => {
    let s = xd + (opts.bo?.[d] ?? 0);
    for (let h = 0; h < H; h++) for (let j = 0; j < n; j++) s += opts.alpha[h]![i]![j]! * opts.f[h]![j]![d]!;
    return s;
  }));
  return {
    model: { name: 'hand', modelType: 'hand', numLayers: 1, numHeads: H, numKeyValueHeads: H, headDim: 1 },
    tokens: opts.x.map((_, i) => ({ id: i, text: `t${i}`, start: 0, end: 0, special: false, segment: 0, word: i })),
    attention: { self: { dims: [H, n, n], layers: [Float32Array.from(opts.alpha.flat(2))] } },
    contributions: {
      self: {
        norm: opts.ln ? 'post' : 'pre',
        transformedValues: { dims: [H, n, D], layers: [Float32Array.from(opts.f.flat(2))] },
        layerInput: [m(opts.x)],
        residualSum: [m(sum)],
        outputBias: [Float32Array.from(opts.bo ?? new Array<number>(D).fill(0))],
        ...(opts.ln ? { layerNorm: [{ weight: Float32Array.from(opts.ln.weight), bias: Float32Array.from(opts.ln.bias), eps: opts.ln.eps }] } : {}),
      },
    },
  };
}

describe('contributions: hand-computed cases', () => {
  // Pre-norm, one head, two tokens, causal: f(x_0) = (1, 0), f(x_1) = (0, 1), x_0 = (1, 1), x_1 = (0, 2).
  const pre = handTrace({ alpha: [[[1, 0], [0.5, 0.5]]], f: [[[1, 0], [0, 1]]], x: [[1, 1], [0, 2]] });

  it('ALTI: y_0 = (2, 1) is all x_0; y_1 = (0.5, 2.5), T_1(x_0) = (0.5, 0), T_1(x_1) = (0, 2.5) → 0.5 : 2.5', () => {
    const c = altiLayer(pre, 0);
    expect(Array.from(c.data)).toEqual([1, 0, expect.closeTo(1 / 6, 6), expect.closeTo(5 / 6, 6)]);
  });

  it('norm-based attention: α·‖f(x_j)‖ per head, and the norm of the summed vectors', () => {
    expect(Array.from(normAttentionPerHead(pre).layers[0]!)).toEqual([1, 0, 0.5, 0.5]);
    // Two heads whose vectors cancel: per head 1 and 1, summed over heads 0.
    const cancel = handTrace({ alpha: [[[1]], [[1]]], f: [[[1, 0]], [[-1, 0]]], x: [[0, 1]] });
    expect(Array.from(normAttentionPerHead(cancel).layers[0]!)).toEqual([1, 1]);
    expect(normAttention(cancel)[0]!.data[0]).toBe(0);
    // Orthogonal head vectors 3·(1, 0) and 4·(0, 1) with weights 1: ‖(3, 4)‖ = 5.
    const ortho = handTrace({ alpha: [[[1]], [[1]]], f: [[[3, 0]], [[0, 4]]], x: [[0, 0]] });
    expect(normAttention(ortho)[0]!.data[0]).toBeCloseTo(5, 6);
  });

  it('post-LN: T_i(x_j) are the LayerNorm linear part of each term; contributions are those of the normalised output', () => {
    // One head, two tokens, hidden 3, γ = 1, β = 0, ε = 0, b_O = 0. x_0 = (1, 0, −1), x_1 = (0, 0, 0),
    // f(x_0) = (0, 0, 0), f(x_1) = (3, 0, −3), α row 0 = (1/2, 1/2).
    // x̃_0 = (2.5, 0, −2.5): σ_0 = √(12.5/3); T_0(x_0) = (1, 0, −1)/σ_0, T_0(x_1) = (1.5, 0, −1.5)/σ_0,
    // y_0 = (2.5, 0, −2.5)/σ_0. ‖y‖₁ = 5/σ_0, d_00 = 3/σ_0, d_01 = 2/σ_0 → 2 : 3.
    const post = handTrace({
      alpha: [[[0.5, 0.5], [0, 1]]], f: [[[0, 0, 0], [3, 0, -3]]], x: [[1, 0, -1], [0, 0, 0]],
      ln: { weight: [1, 1, 1], bias: [0, 0, 0], eps: 0 },
    });
    const c = altiLayer(post, 0);
    expect(c.data[0]).toBeCloseTo(0.4, 6);
    expect(c.data[1]).toBeCloseTo(0.6, 6);
    // A uniform γ scales y and every term alike: the same contributions.
    const shifted = handTrace({
      alpha: [[[0.5, 0.5], [0, 1]]], f: [[[0, 0, 0], [3, 0, -3]]], x: [[1, 0, -1], [0, 0, 0]],
      ln: { weight: [2, 2, 2], bias: [0, 0, 0], eps: 0 },
    });
    expect(altiLayer(shifted, 0).data[0]).toBeCloseTo(0.4, 6);
  });

  it('the taps are in memory only: both trace formats write the trace without them, and ALTI on it says why it cannot run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'attnscope-contrib-files-'));
    try {
      for (const file of ['t.json', 't.safetensors']) {
        await writeTraceFile(join(dir, file), pre);
        const back = await readTraceFile(join(dir, file));
        expect(back.contributions).toBeUndefined();
        expect(Array.from(back.attention.self!.layers[0]!)).toEqual([1, 0, 0.5, 0.5]);
        expect(() => alti(back)).toThrow(/trace files do not store/);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('composition: R_1 = C_1 · C_0', () => {
    const c0: Matrix = { dims: [2, 2], data: Float32Array.from([1, 0, 0.5, 0.5]) };
    const c1: Matrix = { dims: [2, 2], data: Float32Array.from([1, 0, 0.2, 0.8]) };
    const [r0, r1] = composeLayers([c0, c1]);
    expect(Array.from(r0!.data)).toEqual([1, 0, 0.5, 0.5]);
    expect(Array.from(r1!.data).map((v) => Number(v.toFixed(6)))).toEqual([1, 0, 0.6, 0.4]);
  });

  it('refuses traces without the taps, and families that do not build them, with one line', async () => {
    const bare: Trace = { ...pre, contributions: undefined };
    expect(() => alti(bare)).toThrow(AttnscopeError);
    expect(() => altiLayer(pre, 3)).toThrow(/layer 3 is out of range; allowed: 0 to 0/);
    // deberta-v2 with a ConvLayer (it mixes positions outside attention) is the family that does not build the taps.
    const dir = mkdtempSync(join(tmpdir(), 'attnscope-deberta-conv-'));
    cpSync(join(FIXTURES, 'deberta-v2'), dir, { recursive: true });
    const configPath = join(dir, 'config.json');
    writeFileSync(configPath, JSON.stringify({ ...JSON.parse(readFileSync(configPath, 'utf8')), conv_kernel_size: 3 }));
    const model = await loadModel(dir, { graphCache: false });
    try {
      await expect(model.trace('a b', { contributions: true })).rejects.toThrow(/^--contributions: not available for .*deberta-v2.*\(not with a ConvLayer\)/);
    } finally {
      await model.dispose();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('attnscope flow --method norm|alti (a real process)', () => {
  // Made in beforeAll, so a run that filters these tests out leaves no directory behind.
  let scratch = '';
  beforeAll(() => {
    scratch = mkdtempSync(join(tmpdir(), 'attnscope-contrib-'));
  });
  afterAll(() => {
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });
  const bert = join(FIXTURES, 'bert');
  const input = readReference('bert').inputs[0]!;

  it('--method alti --json: the composed ALTI matrix with the tokens; rows sum to 1; equal to the float64 re-computation', async () => {
    const r = runCli(scratch, ['flow', bert, '--ids', input.input_ids.join(','), '--method', 'alti', '--json'], 120_000);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as { method: string; layers: number[]; tokens: { text: string }[]; matrix: number[][] };
    expect(out.method).toBe('alti');
    expect(out.layers).toEqual([0, 1]);
    expect(out.tokens.map((t) => t.text)).toEqual(input.tokens);
    for (const row of out.matrix) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    const file = await openSafetensors(join(bert, 'model.safetensors'));
    try {
      // The CLI feeds no token types for --ids alone: all zeros, so PyTorch's hidden states of this
      // input (token types all 0 for a single sentence) are the layer inputs.
      const layers = await reference('bert', { get: async (n) => Array.from((await file.get(n)).data) }, input.hidden_states as Nested, { layers: 2, heads: 4, kvHeads: 4, hidden: 32 });
      const composed = composeRef(layers.map((l) => l.alti));
      expect(relError(out.matrix.flat(), composed[1]!.flat())).toBeLessThanOrEqual(1e-4);
    } finally {
      await file.close();
    }
  });

  it('--method norm --csv with --heads and --end-layer; refusals in one line', () => {
    const r = runCli(scratch, ['flow', bert, '--ids', input.input_ids.join(','), '--method', 'norm', '--csv', '--heads', '0,2', '--end-layer', '0'], 120_000);
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe(['token_index', 'token', ...input.tokens.map((t, j) => `${j}:${t}`)].join(','));
    expect(lines).toHaveLength(input.tokens.length + 1);
    const bad = runCli(scratch, ['flow', bert, '--text', 'a cat', '--method', 'alti', '--heads', '1'], 120_000);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--heads does not apply to --method alti/);
    const conv = join(scratch, 'deberta-conv');
    cpSync(join(FIXTURES, 'deberta-v2'), conv, { recursive: true });
    writeFileSync(join(conv, 'config.json'), JSON.stringify({ ...JSON.parse(readFileSync(join(conv, 'config.json'), 'utf8')), conv_kernel_size: 3 }));
    const refused = runCli(scratch, ['flow', conv, '--text', 'a cat', '--method', 'alti'], 120_000);
    expect(refused.status).toBe(2);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toMatch(/not available for .*deberta-v2/);
    // An encoder-decoder: the decoder's self-attention with --stack decoder, rows of a distribution.
    const t5 = runCli(scratch, ['flow', join(FIXTURES, 't5'), '--text', 'a cat', '--decoder-text', 'un chat', '--method', 'alti', '--stack', 'decoder', '--json'], 120_000);
    expect(t5.stderr).toBe('');
    const out = JSON.parse(t5.stdout) as { matrix: number[][] };
    for (const row of out.matrix) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
  });
});
