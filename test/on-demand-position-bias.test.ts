/**
 * Position biases kept compactly (issue 13.6): ALiBi as one row over the keys broadcast over the
 * queries ([heads, 1, keys]), T5's/MPNet's relative buckets as one vector over the offsets j − i
 * (Trace.scores.positionBias), in traces, trace files, attention on demand (JavaScript loops and the
 * WebAssembly kernel) and generation on demand. Checked against: a float64 softmax written here over
 * a bias given as a plain function of (h, i, j); the ALiBi slopes of the BLOOM paper / transformers
 * (2^(−8/n)·(h+1), Falcon's in bfloat16 and scaled by 1/√d) computed here; the dense [heads, n, n]
 * bias the graph outputs; and the dense traces' probabilities (which equal PyTorch's, see
 * attention-on-demand.test.ts). A long (640-token) ALiBi and T5 trace holds O(heads · n) of bias.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { attentionSource, queryKeyAttentionSource } from '../src/core/attention-on-demand.js';
import { attentionHead } from '../src/core/attention-source.js';
import { AttnscopeError } from '../src/core/errors.js';
import { biasAt, compactScoreTerms, denseScoreBias, scoreBiasBytes, withoutPositionBias } from '../src/core/position-bias.js';
import type { LayerStack, ScoreTerms, StackName, Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';
import { tapName } from '../src/models/architecture.js';
import { relativeBiasOutput } from '../src/models/attention.js';
import { stepAttentionRow, traceGeneration } from '../src/views/generation.js';
import { FIXTURES, maxAbsDiff, readReference } from './helpers/reference.js';
import { seededValues as values } from './helpers/hand-trace.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-position-bias-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** A dense [heads, q, k] bias from a function. */
function denseOf(heads: number, q: number, k: number, f: (h: number, i: number, j: number) => number): Float32Array {
  const out = new Float32Array(heads * q * k);
  for (let h = 0; h < heads; h++) for (let i = 0; i < q; i++) for (let j = 0; j < k; j++) out[(h * q + i) * k + j] = f(h, i, j);
  return out;
}

describe('compact biases on a hand-sized case (7 queries, 7 keys, 4 heads on 2 key heads, head size 5)', () => {
  const [H, KV, N, D] = [4, 2, 7, 5];
  const queries: LayerStack = { dims: [H, N, D], layers: [values(H * N * D, 1), values(H * N * D, 2)] };
  const keys: LayerStack = { dims: [KV, N, D], layers: [values(KV * N * D, 3), values(KV * N * D, 4)] };
  const slope = (h: number): number => 2 ** (-2 * (h + 1));
  const alibi = (h: number, _i: number, j: number): number => Math.fround(slope(h) * j);
  const table = values(H * 9, 7);
  /** A T5-like bucket of j − i: exact offsets near 0, coarser further out. */
  const bucket = (d: number): number => (Math.abs(d) < 3 ? d + 4 : d < 0 ? 0 : 8);
  const relative = (h: number, i: number, j: number): number => table[h * 9 + bucket(j - i)]!;

  /** softmax of one row in float64 over the visible keys, the bias given by `f`. */
  function expected(layer: number, head: number, i: number, scale: number, causal: boolean, f: (h: number, i: number, j: number) => number): number[] {
    const kv = Math.floor(head / (H / KV));
    const row: number[] = [];
    for (let j = 0; j < N; j++) {
      if (causal && j > i) {
        row.push(Number.NaN);
        continue;
      }
      let dot = 0;
      for (let t = 0; t < D; t++) dot += queries.layers[layer]![(head * N + i) * D + t]! * keys.layers[layer]![(kv * N + j) * D + t]!;
      row.push(dot * scale + f(head, i, j));
    }
    const max = Math.max(...row.filter((v) => !Number.isNaN(v)));
    const exps = row.map((v) => (Number.isNaN(v) ? 0 : Math.exp(v - max)));
    const sum = exps.reduce((a, b) => a + b, 0);
    return exps.map((e) => e / sum);
  }

  for (const [name, f, causal] of [['ALiBi', alibi, true], ['relative buckets', relative, false]] as const) {
    it(`${name}: compacted exactly, every row = the float64 softmax; the compact form gives the dense form's blocks bit for bit in both kernels`, () => {
      const dense: ScoreTerms = { scale: [0.5, 0.25], causal, window: [null, null], bias: { dims: [H, N, N], layers: [denseOf(H, N, N, f), denseOf(H, N, N, f)] }, biasKind: name };
      const compact = compactScoreTerms(dense);
      if (name === 'ALiBi') {
        expect(compact.bias!.dims).toEqual([H, 1, N]);
        expect(compact.positionBias).toBeUndefined();
        for (let h = 0; h < H; h++) for (let j = 0; j < N; j++) expect(compact.bias!.layers[0]![h * N + j]).toBe(Math.fround(slope(h) * j));
      } else {
        expect(compact.bias).toBeUndefined();
        expect(compact.positionBias!.dims).toEqual([H, N, N]);
        expect(compact.positionBias!.layers[0]).toHaveLength(H * (2 * N - 1));
      }
      // Equal layers share one array; the stored bias is O(heads · n).
      expect(new Set((compact.bias ?? compact.positionBias)!.layers).size).toBe(1);
      expect(scoreBiasBytes(compact)).toBeLessThanOrEqual(4 * H * (2 * N - 1));
      expect(compact.biasKind).toBe(name);
      // Every (h, i, j) reads the value it was given; expanding gives the dense bias back bit for bit.
      for (let h = 0; h < H; h++) for (let i = 0; i < N; i++) for (let j = 0; j < N; j++) expect(biasAt(compact, 1, h, N, N, i, j)).toBe(Math.fround(f(h, i, j)));
      expect(Array.from(denseScoreBias(compact, N, N)!.layers[1]!)).toEqual(Array.from(dense.bias!.layers[1]!));
      // The page's payload: a relative bias travels expanded, a broadcast row as it is.
      if (compact.positionBias) expect(Array.from(withoutPositionBias(compact).bias!.layers[0]!)).toEqual(Array.from(dense.bias!.layers[0]!));
      else expect(withoutPositionBias(compact)).toBe(compact);
      for (const kernel of ['js', 'wasm'] as const) {
        const fromCompact = queryKeyAttentionSource('self', queries, keys, compact, { kernel });
        const fromDense = queryKeyAttentionSource('self', queries, keys, dense, { kernel });
        for (let layer = 0; layer < 2; layer++) {
          for (let head = 0; head < H; head++) {
            const got = attentionHead(fromCompact, layer, head);
            expect(Array.from(got)).toEqual(Array.from(attentionHead(fromDense, layer, head)));
            for (let i = 0; i < N; i++) {
              const want = expected(layer, head, i, dense.scale[layer]!, causal, f);
              for (let j = 0; j < N; j++) expect(Math.abs(got[i * N + j]! - want[j]!), `${kernel} ${layer} ${head} ${i} ${j}`).toBeLessThanOrEqual(6e-8 * want[j]! + 1e-12);
            }
          }
        }
        // Blocks: rows and columns anywhere are the head's cells.
        const whole = attentionHead(fromCompact, 1, 3);
        const block = fromCompact.block(1, 3, 2, 6, 1, 5);
        for (let r = 2; r < 6; r++) for (let c = 1; c < 5; c++) expect(block[(r - 2) * 4 + c - 1]).toBe(whole[r * N + c]);
      }
    });
  }

  it('keeps a bias that depends on more than positions dense (DeBERTa-like), and refuses compact biases that do not fit', () => {
    const content: ScoreTerms = { scale: [1], causal: false, window: [null], bias: { dims: [H, N, N], layers: [values(H * N * N, 9)] } };
    expect(compactScoreTerms(content)).toBe(content);
    const bad: ScoreTerms = { scale: [1, 1], causal: false, window: [null, null], positionBias: { kind: 'relative', dims: [H, N, N], layers: [new Float32Array(H * N), new Float32Array(H * N)] } };
    expect(() => queryKeyAttentionSource('self', queries, keys, bad)).toThrow(AttnscopeError);
    expect(() => queryKeyAttentionSource('self', queries, keys, bad)).toThrow(/layer 0's position bias has 28 values, not 4 × 13/);
    const row: ScoreTerms = { scale: [1, 1], causal: true, window: [null, null], bias: { dims: [H, 2, N], layers: [new Float32Array(H * 2 * N), new Float32Array(H * 2 * N)] } };
    expect(() => queryKeyAttentionSource('self', queries, keys, row)).toThrow(/score bias \[2 × 4, 2, 7\] does not fit its queries and keys \[2 × 4, 7 \(or 1\), 7\]/);
  });
});

/** bfloat16 rounding of a float32 value (round to nearest, ties to even), as torch's .bfloat16(). */
function bf16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer);
  const b = u[0]!;
  u[0] = ((b + 0x7fff + ((b >>> 16) & 1)) >>> 16) << 16;
  return f[0]!;
}

describe('fixtures: the traces hold their position biases compactly and exactly', () => {
  const models = new Map<string, Model>();
  const model = async (fixture: string): Promise<Model> => {
    let m = models.get(fixture);
    if (!m) {
      m = await loadModel(join(FIXTURES, fixture));
      models.set(fixture, m);
    }
    return m;
  };
  afterAll(async () => {
    for (const m of models.values()) await m.dispose();
  });

  it("ALiBi (bloom, falcon-alibi): one row over the keys per head, slope·j as transformers' build_alibi_tensor (Falcon: bfloat16, × 1/√d)", async () => {
    for (const fixture of ['bloom', 'falcon-alibi']) {
      const m = await model(fixture);
      const ids = readReference(fixture).inputs.at(-1)!.input_ids;
      const trace = await m.trace(null, { ids, qk: true });
      const terms = trace.scores!.self!;
      const n = ids.length;
      const { numHeads: heads, headDim } = m.info;
      expect(terms.bias!.dims).toEqual([heads, 1, n]);
      expect(new Set(terms.bias!.layers).size).toBe(1);
      const inv = Math.fround(1 / Math.sqrt(headDim));
      for (let h = 0; h < heads; h++) {
        // 4 heads: slopes 2^(−8/4·(h+1)).
        const slope = 2 ** ((-8 / heads) * (h + 1));
        for (let j = 0; j < n; j++) {
          const want = fixture === 'bloom' ? Math.fround(slope * j) : Math.fround(bf16(bf16(slope) * j) * inv);
          expect(terms.bias!.layers[0]![h * n + j], `${fixture} head ${h} key ${j}`).toBe(want);
        }
      }
    }
  });

  it("relative buckets (t5 encoder and decoder, umt5 per layer, mpnet): one vector over j − i, equal to the graph's [heads, q, k] output everywhere", async () => {
    for (const fixture of ['t5', 'umt5', 'mpnet']) {
      const m = await model(fixture);
      const input = readReference(fixture).inputs.at(-1)!;
      const decoderIds = input.decoder_input_ids as number[] | undefined;
      const trace = await m.trace(null, decoderIds ? { ids: input.input_ids, decoderIds, qk: true } : { ids: input.input_ids, qk: true });
      const runInputs = { inputIds: input.input_ids, ...(decoderIds ? { decoderInputIds: decoderIds } : {}) };
      // The dense graph's [1, heads, q, k] bias; on demand (bands) the graph outputs the vector itself (t5, umt5).
      const raw = await m.run({ attention: true, qk: true, lastHiddenState: false, logits: false }, runInputs);
      const banded = fixture === 'mpnet' ? null : await m.run({ attention: false, qk: true, lastHiddenState: false, logits: false }, runInputs);
      for (const stack of (['self', 'encoder', 'decoder'] as StackName[]).filter((s) => trace.scores?.[s])) {
        const terms = trace.scores![stack]!;
        expect(terms.bias, `${fixture} ${stack}`).toBeUndefined();
        const pb = terms.positionBias!;
        const [heads, q, k] = pb.dims;
        expect(pb.layers[0]).toHaveLength(heads * (q + k - 1));
        // umt5: one bias per layer; t5, mpnet: block 0's on every layer (one array).
        expect(new Set(pb.layers).size).toBe(fixture === 'umt5' ? pb.layers.length : 1);
        for (let l = 0; l < pb.layers.length; l++) {
          const out = raw[tapName('score_bias', stack, fixture === 'umt5' ? l : 0)]!;
          expect(out.dims).toEqual([1, heads, q, k]);
          expect(Array.from(denseScoreBias(terms, q, k)!.layers[l]!), `${fixture} ${stack} layer ${l}`).toEqual(Array.from(out.data as Float32Array));
          if (banded) {
            const vector = banded[relativeBiasOutput(stack, fixture === 'umt5' ? l : 0)]!;
            expect(vector.dims).toEqual([1, heads, q + k - 1]);
            expect(banded[tapName('score_bias', stack, 0)]).toBeUndefined();
            expect(Array.from(vector.data as Float32Array), `${fixture} ${stack} layer ${l} on demand`).toEqual(Array.from(pb.layers[l]!));
          }
        }
      }
    }
  });

  it('trace files (JSON, .safetensors) keep the compact forms bit for bit; files with the dense bias (older traces) still open and give the same attention', async () => {
    for (const fixture of ['bloom', 't5']) {
      const m = await model(fixture);
      const input = readReference(fixture).inputs.at(-1)!;
      const decoderIds = input.decoder_input_ids as number[] | undefined;
      const trace = await m.trace(null, { ids: input.input_ids, ...(decoderIds ? { decoderIds } : {}), attention: 'on-demand' });
      const stacks = Object.keys(trace.scores!) as StackName[];
      // The same trace as an older writer kept it: every bias dense [heads, q, k].
      const older: Trace = { ...trace, scores: {} };
      for (const s of stacks) {
        const t = trace.scores![s]!;
        const { bias: _b, positionBias: _p, ...rest } = t;
        const dense = t.bias || t.positionBias ? denseScoreBias(t, trace.queries![s]!.dims[1], trace.keys![s]!.dims[1]) : undefined;
        older.scores![s] = dense ? { ...rest, bias: dense } : rest;
      }
      for (const [name, t] of [['compact', trace], ['older', older]] as const) {
        for (const ext of ['json', 'safetensors']) {
          const path = join(tmp, `${fixture}-${name}.${ext}`);
          await writeTraceFile(path, t);
          const back = await readTraceFile(path);
          if (name === 'compact') expect(back.scores).toEqual(trace.scores);
          for (const s of stacks) {
            const a = attentionSource(back, s);
            const b = attentionSource(trace, s);
            for (let l = 0; l < a.numLayers; l++) for (let h = 0; h < a.numHeads; h++) expect(Array.from(attentionHead(a, l, h)), `${fixture} ${name} ${ext} ${s} ${l} ${h}`).toEqual(Array.from(attentionHead(b, l, h)));
          }
        }
      }
    }
  });
});

describe('a long (640-token) ALiBi and T5 trace on demand', () => {
  const N = 640;
  const ids = Array.from({ length: N }, (_, i) => 5 + ((i * 37) % 600));
  let bloom: Model;
  let t5: Model;
  beforeAll(async () => {
    bloom = await loadModel(join(FIXTURES, 'bloom'));
    t5 = await loadModel(join(FIXTURES, 't5'));
  });
  afterAll(async () => {
    await bloom.dispose();
    await t5.dispose();
  });

  it('stores O(heads · n) of bias in memory and in files (not O(heads · n²)), and equals the dense trace in every layer and head', async () => {
    for (const [name, m] of [['bloom', () => bloom], ['t5', () => t5]] as const) {
      const model = m();
      const options = name === 't5' ? { ids, decoderIds: ids.slice(0, 8) } : { ids };
      const lazy = await model.trace(null, { ...options, attention: 'on-demand' });
      const dense = await model.trace(null, { ...options, attention: 'dense' });
      const stack: StackName = name === 't5' ? 'encoder' : 'self';
      const terms = lazy.scores![stack]!;
      const heads = model.info.numHeads;
      // One distinct layer (shared), at most heads · (2n − 1) floats: 20 KiB here, not heads · n² (6.25 MiB).
      expect(scoreBiasBytes(terms)).toBeLessThanOrEqual(4 * heads * (2 * N - 1));
      const path = join(tmp, `${name}-long.safetensors`);
      await writeTraceFile(path, lazy);
      const qk = [...Object.values(lazy.queries!), ...Object.values(lazy.keys!)].reduce((a, s) => a + s.layers.length * s.layers[0]!.byteLength, 0);
      // The file is its queries and keys plus a header and O(heads · n) of bias: well under one [heads, n, n] layer more.
      expect(statSync(path).size).toBeLessThan(qk + 4 * heads * N * 4 + 64 * 1024);
      const back = await readTraceFile(path);
      const a = attentionSource(back, stack);
      const d = dense.attention[stack]!;
      let worst = 0;
      for (let l = 0; l < a.numLayers; l++) {
        for (let h = 0; h < heads; h++) worst = Math.max(worst, maxAbsDiff(attentionHead(a, l, h), d.layers[l]!.subarray(h * N * N, (h + 1) * N * N)));
      }
      expect(worst, name).toBeLessThanOrEqual(1e-5);
    }
  });

  it('the length cap of a model without a position limit: dense runs stop at their 1 GiB of maps, on demand goes on (the queries and keys within 8 GiB)', async () => {
    const model = t5;
    const dense = model.denseTokenLimit;
    // t5 fixture: 2 + 2 + 2 layers of 4 heads → ⌊√(2^30 / 4 / 24)⌋ = 3,344 tokens of dense maps.
    expect(dense).toBe(Math.floor(Math.sqrt(2 ** 30 / 4 / 24)));
    // On demand: 6 layers × (4 + 4) heads × 8 dims × 4 bytes per token within 8 GiB.
    expect(model.info.maxPositions).toBe(Math.floor((8 * 2 ** 30) / (6 * 8 * 8 * 4)));
    const ids = Array.from({ length: dense + 1 }, (_, i) => 5 + (i % 100));
    await expect(model.trace(null, { ids, decoderIds: [0, 5], attention: 'dense' })).rejects.toThrow(/too long: 3345 tokens, but the attention maps of more than 3344 tokens would not fit in 1 GiB .*--attention on-demand/);
    const trace = await model.trace(null, { ids, decoderIds: [0, 5], attention: 'on-demand', queryBandCount: 4 });
    expect(trace.queries!.encoder!.dims[1]).toBe(dense + 1);
    expect(trace.scores!.encoder!.positionBias!.dims).toEqual([4, dense + 1, dense + 1]);
    // Generation: dense refused before anything runs, the same length on demand accepted.
    await expect(bloom.generate(null, { ids: Array.from({ length: bloom.denseTokenLimit }, () => 5), maxNewTokens: 1 })).rejects.toThrow(/generation too long: \d+ positions, but the attention maps/);
  });

  it('generation on demand keeps the bias compact as the rows come (ALiBi: [heads, 1, total]; T5 decoder: a vector over j − i), each row as the dense path', async () => {
    const prompt = ids.slice(0, 200);
    const lazy = await bloom.generate(null, { ids: prompt, maxNewTokens: 6, attention: 'on-demand' });
    const dense = await bloom.generate(null, { ids: prompt, maxNewTokens: 6, qk: true });
    const total = lazy.tokens.length;
    const terms = lazy.scores!.self!;
    expect(terms.bias!.dims).toEqual([bloom.info.numHeads, 1, total]);
    expect(new Set(terms.bias!.layers).size).toBe(1);
    // The prompt's bias and every step's row: the dense path's values where the query sees the key.
    const denseTerms = dense.scores!.self!;
    for (let h = 0; h < bloom.info.numHeads; h++) {
      for (let i = 0; i < total; i++) for (let j = 0; j <= i; j += 7) expect(biasAt(terms, 1, h, total, total, i, j)).toBe(biasAt(denseTerms, 1, h, total, total, i, j));
    }
    const gen = traceGeneration(lazy)!;
    for (let step = 0; step <= gen.steps; step++) {
      for (let l = 0; l < 2; l++) for (let h = 0; h < bloom.info.numHeads; h++) expect(maxAbsDiff(stepAttentionRow(lazy, 'self', step, l, h)!, stepAttentionRow(dense, 'self', step, l, h)!)).toBeLessThanOrEqual(1e-5);
    }
    const t5Lazy = await t5.generate(null, { ids: prompt, maxNewTokens: 6, attention: 'on-demand' });
    const t5Dense = await t5.generate(null, { ids: prompt, maxNewTokens: 6, qk: true });
    const dec = t5Lazy.scores!.decoder!;
    const m = t5Lazy.decoderTokens!.length;
    expect(dec.positionBias!.dims).toEqual([t5.info.numHeads, m, m]);
    for (let h = 0; h < t5.info.numHeads; h++) {
      for (let i = 0; i < m; i++) for (let j = 0; j <= i; j++) expect(biasAt(dec, 0, h, m, m, i, j)).toBe(biasAt(t5Dense.scores!.decoder!, 0, h, m, m, i, j));
    }
    expect(t5Lazy.scores!.encoder!.positionBias!.dims).toEqual([t5.info.numHeads, 200, 200]);
  });
});
