/**
 * A look inside every layer (issue 10, point 4), on every fixture family, against what PyTorch
 * transformers computed (reference.json): the residual stream after each layer equals
 * `hidden_states` (≤ 1e-4), the logit lens's last row is the top-k of the model's logits (softmax
 * recomputed here in float64), update norms equal a float64 re-computation from the tapped
 * residuals, the hidden-state PCA equals an independent float64 power iteration, token embeddings
 * are rows of the checkpoint's table, and every tap is absent unless asked for.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { hiddenStatePca, updateNorms } from '../src/analysis/hidden-states.js';
import { logitLensGrid, logitLensTable } from '../src/analysis/logit-lens.js';
import type { Matrix, StackName, Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { openSafetensors } from '../src/io/safetensors.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';
import { deepOr } from './helpers/deep.js';
import { loadFixtureModel } from './helpers/fixture-suite.js';
import { FIXTURES, flat, maxAbsDiff, readReference, type Nested, type ReferenceInput } from './helpers/reference.js';

/** Families whose stacks end without a final norm: their last layer's output is PyTorch's last hidden state too. */
const NO_FINAL_NORM = new Set(['bert', 'roberta', 'xlm-roberta', 'electra', 'albert', 'distilbert', 'deberta-v2', 'mpnet', 'bart', 'marian']);
/** Fixtures whose head does not predict tokens (ELECTRA's discriminator): no logit lens. */
const NO_LENS = new Set(['electra']);
/** Fixtures whose reference logits were computed from the input ids alone (token type ids all 0; README "Logits"). */
const LOGITS_WITHOUT_TYPES = new Set(['bert', 'albert']);

const ENCODERS = ['bert', 'roberta', 'xlm-roberta', 'electra', 'albert', 'distilbert', 'deberta-v2', 'mpnet'];
const DECODERS = ['gpt2', 'llama', 'qwen2', 'mistral', 'gemma', 'gpt_neox', 'phi', 'falcon', 'falcon-alibi', 'bloom', 'opt', 'gptj', 'starcoder2', 'stablelm', 'olmo', 'cohere', 'mixtral', 'qwen2_moe'];
const ENCODER_DECODERS = ['t5', 'mt5', 'umt5', 'bart', 'mbart', 'marian', 'm2m100', 'pegasus'];

const K = 5;
const TOL = 1e-4;

/** Row r of a Matrix. */
function row(m: Matrix, r: number): Float32Array {
  return m.data.subarray(r * m.dims[1], (r + 1) * m.dims[1]);
}

/** float64 softmax of a logits row, and its indices by decreasing probability. */
function softmaxTop(logits: readonly number[], k: number): { ids: number[]; probs: number[]; all: Float64Array } {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (const v of logits) sum += Math.exp(v - max);
  const all = Float64Array.from(logits, (v) => Math.exp(v - max) / sum);
  const order = Array.from(all.keys()).sort((a, b) => all[b]! - all[a]!);
  return { ids: order.slice(0, k), probs: order.slice(0, k).map((i) => all[i]!), all };
}

/** The largest difference of the lens's last row from the top-k of softmax(logits) (ids equal unless tied within 1e-5). */
function checkLastLensRow(trace: Trace, logits: number[][]): number {
  const lens = trace.logitLens!;
  const last = lens.layers[lens.layers.length - 1]!;
  let worst = 0;
  logits.forEach((rowLogits, p) => {
    const ref = softmaxTop(rowLogits, K);
    for (let i = 0; i < K; i++) {
      const id = last.ids[p * K + i]!;
      const prob = last.probabilities[p * K + i]!;
      worst = Math.max(worst, Math.abs(prob - ref.probs[i]!));
      // The id's own reference probability: equal ids unless two candidates tie within float32 noise.
      expect(Math.abs(ref.all[id]! - ref.probs[i]!), `position ${p} rank ${i}`).toBeLessThanOrEqual(1e-5);
    }
  });
  return worst;
}

/** float64 re-computation of ‖after − before‖ per token. */
function diffNorms(after: Matrix, before: Matrix): number[] {
  return Array.from({ length: after.dims[0] }, (_, r) => {
    const a = row(after, r);
    const b = row(before, r);
    let s = 0;
    for (let c = 0; c < a.length; c++) s += (a[c]! - b[c]!) ** 2;
    return Math.sqrt(s);
  });
}

function norms(m: Matrix): number[] {
  return Array.from({ length: m.dims[0] }, (_, r) => Math.hypot(...row(m, r)));
}

/**
 * The first two principal components of `m`'s rows by power iteration with deflation on the
 * float64 covariance, and the rows' coordinates on them (each up to sign).
 */
function powerPca(m: Matrix): { coords: number[][]; shares: number[] } {
  const [n, d] = m.dims;
  const mean = new Float64Array(d);
  for (let r = 0; r < n; r++) for (let c = 0; c < d; c++) mean[c]! += m.data[r * d + c]! / n;
  const x = Array.from({ length: n }, (_, r) => Float64Array.from({ length: d }, (_, c) => m.data[r * d + c]! - mean[c]!));
  const cov = Array.from({ length: d }, () => new Float64Array(d));
  for (const xr of x) for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) cov[i]![j]! += (xr[i]! * xr[j]!) / (n - 1);
  let total = 0;
  for (let i = 0; i < d; i++) total += cov[i]![i]!;
  const coords: number[][] = [];
  const shares: number[] = [];
  for (let comp = 0; comp < 2; comp++) {
    let v = Float64Array.from({ length: d }, (_, i) => Math.sin(i + 1 + comp));
    let lambda = 0;
    for (let it = 0; it < 5000; it++) {
      const w = new Float64Array(d);
      for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) w[i]! += cov[i]![j]! * v[j]!;
      const len = Math.hypot(...w);
      if (len === 0) break;
      lambda = len;
      v = w.map((t) => t / len);
    }
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) cov[i]![j]! -= lambda * v[i]! * v[j]!;
    coords.push(x.map((xr) => xr.reduce((s, t, i) => s + t * v[i]!, 0)));
    shares.push(lambda / total);
  }
  return { coords, shares };
}

/** Checks update norms and PCA of one stack against the float64 re-computations above. */
function checkAnalyses(trace: Trace, stack: StackName): { norms: number; pca: number } {
  const res = trace.layerStates![stack]!.residuals!;
  const u = updateNorms(trace, stack);
  expect(u.stack).toBe(stack);
  let worstNorm = 0;
  u.layers.forEach((layer, l) => {
    const before = res.cross?.[l] ?? res.attention[l]!;
    const expected = {
      residual: norms(res.input[l]!),
      attention: diffNorms(res.attention[l]!, res.input[l]!),
      mlp: diffNorms(res.output[l]!, before),
      cross: res.cross ? diffNorms(res.cross[l]!, res.attention[l]!) : null,
    };
    worstNorm = Math.max(worstNorm, maxAbsDiff(layer.residual, expected.residual), maxAbsDiff(layer.attention.norm, expected.attention), maxAbsDiff(layer.mlp.norm, expected.mlp));
    const relAttn = expected.attention.map((v, i) => v / expected.residual[i]!);
    worstNorm = Math.max(worstNorm, maxAbsDiff(layer.attention.relative, relAttn));
    const relMlp = expected.mlp.map((v, i) => v / norms(before)[i]!);
    worstNorm = Math.max(worstNorm, maxAbsDiff(layer.mlp.relative, relMlp));
    if (expected.cross) worstNorm = Math.max(worstNorm, maxAbsDiff(layer.cross!.norm, expected.cross));
    else expect(layer.cross).toBeUndefined();
  });
  const pca = hiddenStatePca(trace, stack);
  expect(pca.rows.length).toBe(res.output.length + 1);
  let worstPca = 0;
  pca.rows.forEach((r, i) => {
    const states = i === 0 ? res.input[0]! : res.output[i - 1]!;
    const ref = powerPca(states);
    const n = states.dims[0];
    for (let c = 0; c < 2; c++) {
      const ours = Array.from({ length: n }, (_, t) => r.points[t * 2 + c]!);
      const scale = Math.max(1e-12, ...ref.coords[c]!.map(Math.abs));
      // Same component up to sign (components with nearly equal variances are not compared).
      const plus = maxAbsDiff(ours, ref.coords[c]!) / scale;
      const minus = maxAbsDiff(ours, ref.coords[c]!.map((v) => -v)) / scale;
      worstPca = Math.max(worstPca, Math.min(plus, minus));
      expect(Math.abs(r.explained[c]! - ref.shares[c]!)).toBeLessThanOrEqual(1e-6);
    }
  });
  return { norms: worstNorm, pca: worstPca };
}

/** Checks one stack's residual stream against PyTorch's hidden states; returns the largest difference. */
function checkResiduals(trace: Trace, stack: StackName, hidden: number[][][], noFinalNorm: boolean): number {
  const res = trace.layerStates![stack]!.residuals!;
  const layers = res.input.length;
  expect(res.attention.length).toBe(layers);
  expect(res.output.length).toBe(layers);
  let worst = maxAbsDiff(res.input[0]!.data, flat(hidden[0]!));
  for (let l = 0; l < layers; l++) {
    if (l + 1 < layers) {
      // What one layer hands on is what the next reads.
      expect(res.input[l + 1]!.data).toEqual(res.output[l]!.data);
      worst = Math.max(worst, maxAbsDiff(res.output[l]!.data, flat(hidden[l + 1]!)));
    } else if (noFinalNorm) {
      worst = Math.max(worst, maxAbsDiff(res.output[l]!.data, flat(hidden[l + 1]!)));
    }
  }
  return worst;
}

interface Measured { fixture: string; residual: number; lens: number; norms: number; pca: number }
const measured: Measured[] = [];

function lensChecks(trace: Trace, stack: StackName, positions: number, layers: number): void {
  const lens = trace.logitLens!;
  expect(lens.stack).toBe(stack);
  expect(lens.topK).toBe(K);
  expect(lens.layers.length).toBe(layers + 1);
  for (const r of lens.layers) {
    expect(r.ids.length).toBe(positions * K);
    for (let p = 0; p < positions; p++) {
      for (let i = 1; i < K; i++) expect(r.probabilities[p * K + i]!).toBeLessThanOrEqual(r.probabilities[p * K + i - 1]!);
    }
  }
  const grid = logitLensGrid(trace);
  expect(grid.rows[0]).toBe('embeddings');
  expect(grid.rows[layers]).toBe(`layer ${layers - 1}`);
  expect(grid.cells[layers]![positions - 1]![0]!.id).toBe(lens.layers[layers]!.ids[(positions - 1) * K]);
  expect(logitLensTable(grid).length).toBe((layers + 1) * positions * K);
}

function suite(fixture: string, kind: 'encoder' | 'decoder' | 'encoder-decoder'): void {
  describe(`fixture ${fixture}`, () => {
    const ref = readReference(fixture);
    let model: Model;
    loadFixtureModel(fixture, (m) => (model = m));

    const input: ReferenceInput = ref.inputs[ref.inputs.length > 1 ? 1 : 0]!;
    it(`input '${input.id}': residual stream = hidden_states, lens = logits' top-k, norms and PCA = float64`, async () => {
      const lens = !NO_LENS.has(fixture);
      const base = { ids: input.input_ids, ...(input.token_type_ids ? { typeIds: input.token_type_ids } : {}) };
      const options = kind === 'encoder-decoder' ? { ...base, decoderIds: input.decoder_input_ids as number[] } : base;
      const trace = await model.trace(null, { ...options, deepDive: true, logits: true, ...(lens ? { logitLens: K } : {}) });
      const lensTrace = LOGITS_WITHOUT_TYPES.has(fixture) ? await model.trace(null, { ids: input.input_ids, logits: true, logitLens: K }) : trace;
      const noFinal = NO_FINAL_NORM.has(ref.model_type) || NO_FINAL_NORM.has(fixture);
      const stacks: [StackName, string][] = kind === 'encoder-decoder' ? [['encoder', 'encoder_hidden_states'], ['decoder', 'decoder_hidden_states']] : [['self', 'hidden_states']];
      let residual = 0;
      let norms = 0;
      let pca = 0;
      for (const [stack, field] of stacks) {
        const states = trace.layerStates?.[stack];
        expect(states?.residuals, `${stack} residuals`).toBeDefined();
        residual = Math.max(residual, checkResiduals(trace, stack, input[field] as number[][][], noFinal));
        const a = checkAnalyses(trace, stack);
        norms = Math.max(norms, a.norms);
        pca = Math.max(pca, a.pca);
        // Decoders of encoder-decoders have a cross-attention state per layer; nothing else does.
        expect(states!.residuals!.cross !== undefined).toBe(stack === 'decoder');
        // Token embeddings are present and shaped [positions, width]; values [kvHeads, positions, headDim].
        const positions = stack === 'decoder' ? trace.decoderTokens!.length : trace.tokens.length;
        expect(states!.embeddings?.token.dims[0]).toBe(positions);
        const values = trace.values?.[stack];
        expect(values?.layers.length).toBe(states!.residuals!.input.length);
        expect(values?.dims.slice(1)).toEqual([positions, trace.keys![stack]!.dims[2]]);
        expect(values?.dims[0]).toBe(trace.keys![stack]!.dims[0]);
      }
      expect(residual, `residual stream vs hidden_states: ${residual}`).toBeLessThanOrEqual(TOL);
      expect(norms, `update norms vs float64: ${norms}`).toBeLessThanOrEqual(1e-9);
      expect(pca, `PCA vs power iteration: ${pca}`).toBeLessThanOrEqual(1e-6);
      let lensDiff = 0;
      if (lens) {
        const stack: StackName = kind === 'encoder-decoder' ? 'decoder' : 'self';
        const positions = stack === 'decoder' ? trace.decoderTokens!.length : trace.tokens.length;
        lensChecks(lensTrace, stack, positions, trace.layerStates![stack]!.residuals!.input.length);
        // Against the model's own logits of the same run (softmax here in float64), then PyTorch's.
        const own = lensTrace.logits!;
        const ownRows = Array.from({ length: own.dims[0] }, (_, p) => Array.from(row(own, p)));
        const ownDiff = checkLastLensRow(lensTrace, ownRows);
        expect(ownDiff, `lens last row vs softmax(own logits): ${ownDiff}`).toBeLessThanOrEqual(1e-6);
        lensDiff = checkLastLensRow(lensTrace, input.logits as number[][]);
        expect(lensDiff, `lens last row vs softmax(PyTorch logits): ${lensDiff}`).toBeLessThanOrEqual(1e-4);
      }
      measured.push({ fixture, residual, lens: lensDiff, norms, pca });
    });
  });
}

// npm test: a few families of each kind (post-LN and disentangled encoders, GPT-2, the Llama block,
// mixture of experts, T5 and BART); every family under npm run test:deep.
for (const f of deepOr(ENCODERS, ['bert', 'deberta-v2'])) suite(f, 'encoder');
for (const f of deepOr(DECODERS, ['gpt2', 'llama', 'mixtral'])) suite(f, 'decoder');
for (const f of deepOr(ENCODER_DECODERS, ['t5', 'bart'])) suite(f, 'encoder-decoder');

/** The checkpoint's tensors as float64 arrays (row-major) with their shapes. */
async function readWeights(fixture: string, names: readonly string[]): Promise<Record<string, { shape: readonly number[]; data: Float64Array }>> {
  const file = await openSafetensors(join(FIXTURES, fixture, 'model.safetensors'));
  try {
    const out: Record<string, { shape: readonly number[]; data: Float64Array }> = {};
    for (const name of names) {
      const t = await file.get(name);
      out[name] = { shape: t.shape, data: Float64Array.from(t.data) };
    }
    return out;
  } finally {
    await file.close();
  }
}

/** x [n, in] · W, in float64: W [in, out] ('in-out', GPT-2's Conv1D) or [out, in] ('out-in', nn.Linear), plus a bias. */
function project(x: Matrix, w: { shape: readonly number[]; data: Float64Array }, layout: 'in-out' | 'out-in', bias?: Float64Array): Float64Array {
  const [n, inF] = x.dims;
  const outF = layout === 'in-out' ? w.shape[1]! : w.shape[0]!;
  const y = new Float64Array(n * outF);
  for (let r = 0; r < n; r++) {
    for (let o = 0; o < outF; o++) {
      let s = bias ? bias[o]! : 0;
      for (let i = 0; i < inF; i++) s += x.data[r * inF + i]! * (layout === 'in-out' ? w.data[i * outF + o]! : w.data[o * inF + i]!);
      y[r * outF + o] = s;
    }
  }
  return y;
}

/** LayerNorm (with γ, β) or RMSNorm (γ only) of every row, in float64. */
function normRows(x: Matrix, kind: 'layer' | 'rms', eps: number, gamma: Float64Array, beta?: Float64Array): Matrix {
  const [n, d] = x.dims;
  const out = new Float32Array(n * d);
  for (let r = 0; r < n; r++) {
    const v = Array.from(x.data.subarray(r * d, (r + 1) * d));
    const mean = kind === 'layer' ? v.reduce((a, b) => a + b, 0) / d : 0;
    const variance = v.reduce((a, b) => a + (b - mean) ** 2, 0) / d;
    for (let c = 0; c < d; c++) out[r * d + c] = ((v[c]! - mean) / Math.sqrt(variance + eps)) * gamma[c]! + (beta ? beta[c]! : 0);
  }
  return { dims: [n, d], data: out };
}

/** [n, heads·headDim] → the [heads, n, headDim] layout of a tapped LayerStack layer. */
function byHead(y: Float64Array, n: number, heads: number, headDim: number): Float64Array {
  const out = new Float64Array(y.length);
  for (let h = 0; h < heads; h++) for (let r = 0; r < n; r++) for (let c = 0; c < headDim; c++) out[(h * n + r) * headDim + c] = y[r * heads * headDim + h * headDim + c]!;
  return out;
}

function minus(a: Matrix, b: Matrix): Float64Array {
  return Float64Array.from(a.data, (v, i) => v - b.data[i]!);
}

describe('embeddings, values and MLP activations against the checkpoint (float64)', () => {
  it('gpt2: token and position rows of wte/wpe add up to hidden_states[0]; values = LN(x)·W_v + b; c_proj(MLP activation) = the MLP update', async () => {
    const ref = readReference('gpt2');
    const input = ref.inputs[0]!;
    const model = await loadModel(join(FIXTURES, 'gpt2'));
    try {
      const trace = await model.trace(null, { ids: input.input_ids, deepDive: true });
      const n = input.input_ids.length;
      const names = ['wte.weight', 'wpe.weight'];
      for (let l = 0; l < 2; l++) names.push(`h.${l}.ln_1.weight`, `h.${l}.ln_1.bias`, `h.${l}.attn.c_attn.weight`, `h.${l}.attn.c_attn.bias`, `h.${l}.mlp.c_proj.weight`, `h.${l}.mlp.c_proj.bias`);
      const w = await readWeights('gpt2', names.map((x) => `transformer.${x}`));
      const get = (name: string): { shape: readonly number[]; data: Float64Array } => w[`transformer.${name}`]!;
      const e = trace.layerStates!.self!.embeddings!;
      const hidden = get('wte.weight').shape[1]!;
      input.input_ids.forEach((id, p) => {
        expect(Array.from(row(e.token, p))).toEqual(Array.from(get('wte.weight').data.subarray(id * hidden, (id + 1) * hidden), Math.fround));
        expect(Array.from(row(e.position!, p))).toEqual(Array.from(get('wpe.weight').data.subarray(p * hidden, (p + 1) * hidden), Math.fround));
      });
      expect(e.segment).toBeUndefined();
      const sum = Float64Array.from(e.token.data, (v, i) => v + e.position!.data[i]!);
      expect(maxAbsDiff(sum, flat((input.hidden_states as Nested[])[0]!))).toBeLessThanOrEqual(1e-6);
      const res = trace.layerStates!.self!.residuals!;
      const { numHeads: heads, headDim } = trace.model;
      for (let l = 0; l < 2; l++) {
        const ln = normRows(res.input[l]!, 'layer', 1e-5, get(`h.${l}.ln_1.weight`).data, get(`h.${l}.ln_1.bias`).data);
        const qkv = project(ln, get(`h.${l}.attn.c_attn.weight`), 'in-out', get(`h.${l}.attn.c_attn.bias`).data);
        const v = new Float64Array(n * hidden);
        for (let r = 0; r < n; r++) for (let c = 0; c < hidden; c++) v[r * hidden + c] = qkv[r * 3 * hidden + 2 * hidden + c]!;
        expect(maxAbsDiff(trace.values!.self!.layers[l]!, byHead(v, n, heads, headDim))).toBeLessThanOrEqual(1e-5);
        const act = trace.layerStates!.self!.mlpActivations![l]!;
        expect(act.dims).toEqual([n, 4 * hidden]);
        const update = project(act, get(`h.${l}.mlp.c_proj.weight`), 'in-out', get(`h.${l}.mlp.c_proj.bias`).data);
        expect(maxAbsDiff(update, minus(res.output[l]!, res.attention[l]!))).toBeLessThanOrEqual(1e-5);
      }
    } finally {
      await model.dispose();
    }
  });

  it('llama (grouped keys): values = rms(x)·W_vᵀ per kv head; down_proj(act(gate)·up) = the MLP update; no position or segment parts', async () => {
    const ref = readReference('llama');
    const input = ref.inputs[0]!;
    const model = await loadModel(join(FIXTURES, 'llama'));
    try {
      const trace = await model.trace(null, { ids: input.input_ids, deepDive: true });
      const n = input.input_ids.length;
      const names: string[] = ['model.embed_tokens.weight'];
      for (let l = 0; l < 2; l++) names.push(`model.layers.${l}.input_layernorm.weight`, `model.layers.${l}.self_attn.v_proj.weight`, `model.layers.${l}.mlp.down_proj.weight`);
      const w = await readWeights('llama', names);
      const e = trace.layerStates!.self!.embeddings!;
      const hidden = w['model.embed_tokens.weight']!.shape[1]!;
      input.input_ids.forEach((id, p) => {
        expect(Array.from(row(e.token, p))).toEqual(Array.from(w['model.embed_tokens.weight']!.data.subarray(id * hidden, (id + 1) * hidden), Math.fround));
      });
      expect(e.position).toBeUndefined();
      expect(e.segment).toBeUndefined();
      const res = trace.layerStates!.self!.residuals!;
      const { numKeyValueHeads: kv, headDim } = trace.model;
      const eps = model.config.num('rms_norm_eps');
      for (let l = 0; l < 2; l++) {
        const h = normRows(res.input[l]!, 'rms', eps, w[`model.layers.${l}.input_layernorm.weight`]!.data);
        const v = project(h, w[`model.layers.${l}.self_attn.v_proj.weight`]!, 'out-in');
        expect(trace.values!.self!.dims[0]).toBe(kv);
        expect(maxAbsDiff(trace.values!.self!.layers[l]!, byHead(v, n, kv, headDim))).toBeLessThanOrEqual(1e-5);
        const update = project(trace.layerStates!.self!.mlpActivations![l]!, w[`model.layers.${l}.mlp.down_proj.weight`]!, 'out-in');
        expect(maxAbsDiff(update, minus(res.output[l]!, res.attention[l]!))).toBeLessThanOrEqual(1e-5);
      }
    } finally {
      await model.dispose();
    }
  });

  it('bert: the segment part is the token type table row of each token; t5: the decoder MLP update follows cross attention', async () => {
    const bertRef = readReference('bert');
    const pair = bertRef.inputs.find((i) => i.token_type_ids?.includes(1))!;
    const bert = await loadModel(join(FIXTURES, 'bert'));
    try {
      const trace = await bert.trace(null, { ids: pair.input_ids, typeIds: pair.token_type_ids, embeddings: true });
      const table = (await readWeights('bert', ['bert.embeddings.token_type_embeddings.weight']))['bert.embeddings.token_type_embeddings.weight']!;
      const d = table.shape[1]!;
      pair.token_type_ids!.forEach((t, p) => {
        expect(Array.from(row(trace.layerStates!.self!.embeddings!.segment!, p))).toEqual(Array.from(table.data.subarray(t * d, (t + 1) * d), Math.fround));
      });
      // Only what was asked for.
      expect(trace.layerStates!.self!.residuals).toBeUndefined();
      expect(trace.values).toBeUndefined();
    } finally {
      await bert.dispose();
    }
    const t5Ref = readReference('t5');
    const input = t5Ref.inputs[0]!;
    const t5 = await loadModel(join(FIXTURES, 't5'));
    try {
      const trace = await t5.trace(null, { ids: input.input_ids, decoderIds: input.decoder_input_ids as number[], residuals: true, mlpActivations: true });
      const w = await readWeights('t5', ['decoder.block.0.layer.2.DenseReluDense.wo.weight', 'encoder.block.1.layer.1.DenseReluDense.wo.weight']);
      const dec = trace.layerStates!.decoder!;
      const update = project(dec.mlpActivations![0]!, w['decoder.block.0.layer.2.DenseReluDense.wo.weight']!, 'out-in');
      expect(maxAbsDiff(update, minus(dec.residuals!.output[0]!, dec.residuals!.cross![0]!))).toBeLessThanOrEqual(1e-5);
      const enc = trace.layerStates!.encoder!;
      expect(enc.residuals!.cross).toBeUndefined();
      const encUpdate = project(enc.mlpActivations![1]!, w['encoder.block.1.layer.1.DenseReluDense.wo.weight']!, 'out-in');
      expect(maxAbsDiff(encUpdate, minus(enc.residuals!.output[1]!, enc.residuals!.attention[1]!))).toBeLessThanOrEqual(1e-5);
    } finally {
      await t5.dispose();
    }
  });
});

describe('trace files keep values, layer states and the logit lens', () => {
  /** The layer fields of a trace as plain arrays, for comparison. */
  const fields = (t: Trace): unknown => JSON.parse(JSON.stringify({ values: t.values, layerStates: t.layerStates, logitLens: t.logitLens }, (_k, v: unknown) => (ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v)));

  for (const fixture of ['gpt2', 't5', 'qwen2_moe']) {
    it(`${fixture}: JSON and .safetensors round trips give the same fields`, async () => {
      const ref = readReference(fixture);
      const input = ref.inputs[0]!;
      const model = await loadModel(join(FIXTURES, fixture));
      const dir = mkdtempSync(join(tmpdir(), 'attnscope-layers-'));
      try {
        const decoder = input.decoder_input_ids ? { decoderIds: input.decoder_input_ids as number[] } : {};
        const trace = await model.trace(null, { ids: input.input_ids, ...decoder, deepDive: true, logitLens: 3 });
        expect(trace.logitLens).toBeDefined();
        for (const file of ['t.json', 't.safetensors']) {
          await writeTraceFile(join(dir, file), trace);
          const back = await readTraceFile(join(dir, file));
          expect(fields(back)).toEqual(fields(trace));
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
        await model.dispose();
      }
    });
  }
});

describe('taps cost nothing when not asked for', () => {
  it('the default graph has no layer taps; a deep-dive graph is another session; a later plain trace has none of its fields', async () => {
    const model = await loadModel(join(FIXTURES, 'gpt2'));
    try {
      const plainTaps = { attention: true, qk: false, lastHiddenState: false, logits: false };
      const plain = await model.session(plainTaps);
      const layerPrefixes = ['values.', 'resid_', 'mlp_activation.', 'embedding_', 'lens_'];
      expect(plain.outputNames.filter((name) => layerPrefixes.some((p) => name.startsWith(p)))).toEqual([]);
      expect([...plain.outputNames].sort()).toEqual(['attention.self.0', 'attention.self.1']);
      const deep = await model.session({ ...plainTaps, residuals: true, logitLens: 3 });
      expect(deep).not.toBe(plain);
      expect(deep.outputNames).toContain('resid_output.self.1');
      expect(deep.outputNames).toContain('lens_ids.self.2');
      expect(await model.session({ ...plainTaps, residuals: true, logitLens: 4 })).not.toBe(deep);
      const ids = readReference('gpt2').inputs[0]!.input_ids;
      const withLens = await model.trace(null, { ids, deepDive: true, logitLens: 2 });
      expect(withLens.logitLens?.topK).toBe(2);
      const after = await model.trace(null, { ids });
      expect(after.layerStates).toBeUndefined();
      expect(after.values).toBeUndefined();
      expect(after.logitLens).toBeUndefined();
      expect(after.queries).toBeUndefined();
    } finally {
      await model.dispose();
    }
  });

  it('refuses a lens size outside 1 … vocab_size, a lens on a head that scores tokens, and layer taps on an encoder-decoder without a decoder input', async () => {
    const gpt2 = await loadModel(join(FIXTURES, 'gpt2'));
    try {
      const vocab = gpt2.config.int('vocab_size');
      await expect(gpt2.trace(null, { ids: [1, 2], logitLens: 0 })).rejects.toThrow(`allowed: 1 to ${vocab}`);
      await expect(gpt2.trace(null, { ids: [1, 2], logitLens: vocab + 1 })).rejects.toThrow('--logit-lens');
      await expect(gpt2.trace(null, { ids: [1, 2], logitLens: 1.5 })).rejects.toThrow('--logit-lens');
    } finally {
      await gpt2.dispose();
    }
    const electra = await loadModel(join(FIXTURES, 'electra'));
    try {
      await expect(electra.trace(null, { ids: [1, 2, 3], logitLens: 3 })).rejects.toThrow('no language-model head');
    } finally {
      await electra.dispose();
    }
    const bart = await loadModel(join(FIXTURES, 'bart'));
    try {
      await expect(bart.trace(null, { ids: readReference('bart').inputs[0]!.input_ids, deepDive: true })).rejects.toThrow('needs a decoder input');
    } finally {
      await bart.dispose();
    }
  });
});

afterAll(() => {
  if (measured.length > 0) console.log(measured.map((m) => `${m.fixture}: residual ${m.residual.toExponential(2)} lens ${m.lens.toExponential(2)} norms ${m.norms.toExponential(2)} pca ${m.pca.toExponential(2)}`).join('\n'));
});

