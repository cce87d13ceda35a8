/**
 * The WebAssembly SIMD kernel of attention on demand (core/wasm/attention-kernel.ts) against the
 * JavaScript loops and against a float64 softmax re-computed here from the trace's queries, keys and
 * score terms: on every fixture whose trace taps queries and keys (npm test: a representative set;
 * npm run test:deep: all of them), every input, stack, layer and head, the kernel's probabilities
 * are the float64 softmax rounded to float32 (within half a float32 unit in the last place), equal to
 * the JavaScript path's to one unit, and within 1e-5 of the probabilities the model tapped. Hand-sized
 * cases cover odd head sizes, grouped-query heads, windows, biases, blocks of any shape and blocks
 * spanning the kernel's row chunks.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { attentionSource, onDemandKernel, queryKeyAttentionSource } from '../src/core/attention-on-demand.js';
import { AttnscopeError } from '../src/core/errors.js';
import type { LayerStack, ScoreTerms, StackName, Trace } from '../src/core/trace.js';
import { attentionKernelStatus } from '../src/core/wasm/attention-kernel.js';
import type { Model } from '../src/engine/model.js';
import { deepOr } from './helpers/deep.js';
import { loadFixtureModel } from './helpers/fixture-suite.js';
import { FIXTURES, readReference } from './helpers/reference.js';

const ALL = readdirSync(FIXTURES, { withFileTypes: true })
  .filter((e) => e.isDirectory() && existsSync(join(FIXTURES, e.name, 'reference.json')))
  .map((e) => e.name)
  .sort();
/** npm test: GQA + RoPE, a sliding window, ALiBi, T5's bias (encoder-decoder), DeBERTa's bias, BART, BERT, an odd head size (stories260k). */
const QUICK = ['bert', 'bloom', 'deberta-v2', 'falcon-alibi', 'llama', 'mistral-window', 't5', 'bart', 'stories260k'];

/** Half a float32 unit in the last place of p, relative: |float32(p) − p| ≤ 2^−24 · p (p normal). */
const HALF_ULP = 2 ** -24;

/**
 * Row i of one head's probabilities in float64, written out plainly from the definition
 * (docs/DESIGN.md, attention on demand): s_j = (q_i · k_j) · scale + bias, masked keys (causal: j > i;
 * window w: i − j ≥ w) weigh 0, softmax over the rest.
 */
/**
 * The bias at (i, j) as core/trace.ts documents the forms: dense [heads, q, k], one row over the keys
 * broadcast over the queries ([heads, 1, k]: ALiBi), or a vector over j − i (positionBias: T5).
 */
function biasOf(terms: ScoreTerms, layer: number, head: number, nq: number, nk: number, i: number, j: number): number {
  if (terms.positionBias) return terms.positionBias.layers[layer]![head * (nq + nk - 1) + j - i + nq - 1]!;
  if (!terms.bias) return 0;
  const rows = terms.bias.dims[1];
  return terms.bias.layers[layer]![(head * rows + (rows === 1 ? 0 : i)) * nk + j]!;
}

function float64Row(q: LayerStack, k: LayerStack, terms: ScoreTerms, layer: number, head: number, i: number): Float64Array {
  const [H, nq, d] = q.dims;
  const [kvH, nk] = k.dims;
  const kv = Math.floor((head * kvH) / H);
  const w = terms.window[layer] ?? null;
  const s = new Float64Array(nk).fill(Number.NEGATIVE_INFINITY);
  const qs = q.layers[layer]!;
  const ks = k.layers[layer]!;
  for (let j = 0; j < nk; j++) {
    if ((terms.causal && j > i) || (w !== null && i - j >= w)) continue;
    let dot = 0;
    for (let t = 0; t < d; t++) dot += qs[(head * nq + i) * d + t]! * ks[(kv * nk + j) * d + t]!;
    s[j] = dot * terms.scale[layer]! + biasOf(terms, layer, head, nq, nk, i, j);
  }
  let max = Number.NEGATIVE_INFINITY;
  for (const v of s) max = Math.max(max, v);
  let sum = 0;
  for (let j = 0; j < nk; j++) {
    s[j] = s[j] === Number.NEGATIVE_INFINITY ? 0 : Math.exp(s[j]! - max);
    sum += s[j]!;
  }
  for (let j = 0; j < nk; j++) s[j]! /= sum;
  return s;
}

/** Worst differences over every fixture, for the log. */
const worst = { float64Ulps: 0, jsUlps: 0, tapped: 0, tappedWhere: '', heads: 0 };

/** |got − want| in units of float32's last place at want (2^−23 · want). */
const ulps = (got: number, want: number): number => (want === 0 ? (got === 0 ? 0 : Infinity) : Math.abs(got - want) / (2 * HALF_ULP * want));

describe('the kernel runs here', () => {
  it('WebAssembly with SIMD compiles in this Node (the sources below use it)', () => {
    expect(attentionKernelStatus()).toEqual({ available: true, reason: '' });
    expect(onDemandKernel()).toBe('wasm');
    expect(onDemandKernel('js')).toBe('js');
  });
});

describe.each(deepOr(ALL, QUICK))('fixture %s: kernel = JavaScript = float64 softmax', (fixture) => {
  const ref = readReference(fixture);
  let model: Model;
  loadFixtureModel(fixture, (m) => (model = m));

  it('every input, stack, layer and head', async () => {
    for (const input of ref.inputs) {
      const decoderIds = input.decoder_input_ids as number[] | undefined;
      const full: Trace = decoderIds
        ? await model.trace(null, { ids: input.input_ids, decoderIds, qk: true })
        : await model.trace(null, { ids: input.input_ids, typeIds: input.token_type_ids, qk: true });
      const qk: Trace = { ...full, attention: {} };
      for (const stack of Object.keys(full.attention) as StackName[]) {
        const wasm = attentionSource(qk, stack, { kernel: 'wasm' });
        const js = attentionSource(qk, stack, { kernel: 'js' });
        const q = full.queries![stack]!;
        const k = full.keys![stack]!;
        const terms = full.scores![stack]!;
        const dense = full.attention[stack]!;
        const [H, nq, nk] = dense.dims;
        for (let layer = 0; layer < dense.layers.length; layer++) {
          for (let head = 0; head < H; head++) {
            const where = `${fixture} input ${input.id} ${stack} layer ${layer} head ${head}`;
            const a = wasm.block(layer, head, 0, nq, 0, nk);
            const b = js.block(layer, head, 0, nq, 0, nk);
            let f64 = 0;
            let vsJs = 0;
            let tapped = 0;
            let tiny = 0;
            for (let i = 0; i < nq; i++) {
              const want = float64Row(q, k, terms, layer, head, i);
              for (let j = 0; j < nk; j++) {
                const got = a[i * nk + j]!;
                const p = want[j]!;
                // Masked keys are exactly 0; weights below float32's normal range round to 0 or a subnormal.
                if (p >= 2 ** -126) {
                  f64 = Math.max(f64, ulps(got, p));
                  vsJs = Math.max(vsJs, ulps(got, b[i * nk + j]!));
                } else if (p === 0) tiny = Math.max(tiny, got === 0 ? 0 : 1);
                else tiny = Math.max(tiny, Math.abs(got - p) * 2, Math.abs(got - b[i * nk + j]!));
                tapped = Math.max(tapped, Math.abs(got - dense.layers[layer]![(head * nq + i) * nk + j]!));
              }
            }
            // Masked keys exactly 0 (p = 0); weights below float32's normal range: the nearest subnormal (half a
            // unit of 2^−149), one unit from the JavaScript path's.
            expect(tiny, where).toBeLessThanOrEqual(2 ** -149);
            // Float32 rounding of the float64 value: at most half a unit (plus float64 noise near a tie).
            expect(f64, where).toBeLessThanOrEqual(0.5 + 1e-6);
            // The two paths round float64 values that differ in their last bits: at most one unit apart.
            expect(vsJs, where).toBeLessThanOrEqual(1);
            expect(tapped, where).toBeLessThanOrEqual(1e-5);
            worst.float64Ulps = Math.max(worst.float64Ulps, f64);
            worst.jsUlps = Math.max(worst.jsUlps, vsJs);
            worst.heads++;
            if (tapped > worst.tapped) Object.assign(worst, { tapped, tappedWhere: where });
          }
        }
        // A block is those cells of the whole head, from either path.
        const [r0, r1, c0, c1] = [Math.floor(nq / 3), nq, 1, Math.max(1, nk - 1)];
        const layer = dense.layers.length - 1;
        const whole = wasm.block(layer, H - 1, 0, nq, 0, nk);
        const block = wasm.block(layer, H - 1, r0, r1, c0, c1);
        const cells: number[] = [];
        for (let i = r0; i < r1; i++) for (let j = c0; j < c1; j++) cells.push(whole[i * nk + j]!);
        expect(Array.from(block)).toEqual(cells);
      }
    }
  });
});

/** Deterministic values in (−amp, amp). */
function values(n: number, seed: number, amp = 1): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = ((x / 2 ** 32) * 2 - 1) * amp;
  }
  return out;
}

/** Checks every cell of `block` against the float64 softmax (half a unit) and the JavaScript path (one unit). */
function checkBlock(q: LayerStack, k: LayerStack, terms: ScoreTerms, layer: number, head: number, r0: number, r1: number, c0: number, c1: number): void {
  const wasm = queryKeyAttentionSource('self', q, k, terms, { kernel: 'wasm' });
  const js = queryKeyAttentionSource('self', q, k, terms, { kernel: 'js' });
  const a = wasm.block(layer, head, r0, r1, c0, c1);
  const b = js.block(layer, head, r0, r1, c0, c1);
  const w = c1 - c0;
  expect(a).toHaveLength((r1 - r0) * w);
  let f64 = 0;
  let vsJs = 0;
  let tiny = 0;
  let where = '';
  for (let i = r0; i < r1; i++) {
    const want = float64Row(q, k, terms, layer, head, i);
    for (let j = c0; j < c1; j++) {
      const got = a[(i - r0) * w + j - c0]!;
      const p = want[j]!;
      if (p === 0 || p < 2 ** -126) tiny = Math.max(tiny, Math.abs(got - p));
      else {
        const u = ulps(got, p);
        if (u > f64) [f64, where] = [u, `row ${i} key ${j}`];
        vsJs = Math.max(vsJs, ulps(got, b[(i - r0) * w + j - c0]!));
      }
    }
  }
  expect(f64, where).toBeLessThanOrEqual(0.5 + 1e-6);
  expect(vsJs).toBeLessThanOrEqual(1);
  expect(tiny).toBeLessThanOrEqual(2 ** -150);
}

describe('the kernel on hand-sized cases', () => {
  it('odd head sizes, grouped-query heads, a window and a bias; any block', () => {
    for (const D of [1, 5, 8, 64]) {
      const [L, H, KV, N] = [2, 4, 2, 11];
      const q: LayerStack = { dims: [H, N, D], layers: [values(H * N * D, 1 + D), values(H * N * D, 2 + D)] };
      const k: LayerStack = { dims: [KV, N, D], layers: [values(KV * N * D, 3 + D), values(KV * N * D, 4 + D)] };
      const bias: LayerStack = { dims: [H, N, N], layers: [values(H * N * N, 5 + D, 2), values(H * N * N, 6 + D, 3)] };
      for (const terms of [
        { scale: [0.5, 0.25], causal: true, window: [null, 3] },
        { scale: [1, 0.7], causal: false, window: [null, null], bias, biasKind: 'test' },
        { scale: [0.3, 2], causal: false, window: [2, null] },
      ] satisfies ScoreTerms[]) {
        for (let layer = 0; layer < L; layer++) {
          for (const [r0, r1, c0, c1] of [[0, N, 0, N], [2, 9, 1, 6], [N - 1, N, 0, 1], [3, 4, 3, 4], [1, 10, 5, 5], [0, 3, 0, N]] as const) checkBlock(q, k, terms, layer, 3, r0, r1, c0, c1);
        }
      }
    }
  });

  it('large scores (a row dominated by one key, weights far below float32’s range), and blocks across row chunks', () => {
    // 1,200 rows of 1,200 keys with a bias: the kernel computes 4 MB of rows at a time (here 432 rows per chunk).
    const [H, N, D] = [1, 1200, 6];
    const q: LayerStack = { dims: [H, N, D], layers: [values(H * N * D, 11, 4)] };
    const k: LayerStack = { dims: [1, N, D], layers: [values(N * D, 12, 4)] };
    const bias: LayerStack = { dims: [H, N, N], layers: [values(H * N * N, 13, 40)] };
    const terms: ScoreTerms = { scale: [3], causal: true, window: [null], bias, biasKind: 'test' };
    checkBlock(q, k, terms, 0, 0, 0, N, 0, N);
    checkBlock(q, k, terms, 0, 0, 237, 1103, 100, 1150);
    checkBlock(q, k, { ...terms, causal: false, window: [500] }, 0, 0, 400, 1200, 0, N);
  });

  it("kernel options: 'js' and 'wasm' are the paths, anything else one clear line", () => {
    const q: LayerStack = { dims: [1, 2, 2], layers: [values(4, 1)] };
    const terms: ScoreTerms = { scale: [1], causal: true, window: [null] };
    expect(() => queryKeyAttentionSource('self', q, q, terms, { kernel: 'gpu' as never })).toThrow(AttnscopeError);
    expect(() => queryKeyAttentionSource('self', q, q, terms, { kernel: 'gpu' as never })).toThrow("attention on demand: kernel 'gpu' is not one of auto, wasm, js");
  });
});

afterAll(() => {
  if (worst.heads > 0) {
    console.info(
      `attention kernel: ${worst.heads} heads; worst ${worst.float64Ulps.toFixed(3)} float32 units from the float64 softmax, ${worst.jsUlps.toFixed(2)} from the JavaScript path; worst |Δ| vs tapped ${worst.tapped.toExponential(2)} (${worst.tappedWhere})`,
    );
  }
});
