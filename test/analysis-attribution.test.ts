/**
 * analysis/attribution.ts: attention × gradient, Chefer et al.'s gradient-weighted rollout,
 * reductions and Michel et al.'s head importance, against hand-computed cases, a float64
 * re-computation written here with nested arrays, and PyTorch's own numbers: for every fixture
 * with gradients.json, Σ α ⊙ ∂T/∂α over a head's queries and keys (α from reference.json,
 * ∂T/∂α from gradients.json) equals the stored gate gradient `head_importance`, both by autograd.
 */
import { describe, expect, it } from 'vitest';
import type { LayerStack, Matrix, StackMap, Trace } from '../src/core/trace.js';
import {
  attentionAttributions,
  attentionGradientTokenScores,
  attentionTimesGradient,
  encoderDecoderGradientRollout,
  gradientRollout,
  gradientTimesInput,
  headAttentionGradient,
  michelHeadImportance,
  normalizeSelfRelevance,
  reduceHidden,
} from '../src/analysis/attribution.js';
import { mulberry32 } from '../src/core/random.js';
import { GRADIENT_FIXTURES, readGradients } from './helpers/gradients.js';
import { readReference } from './helpers/reference.js';

type M = number[][];

/** A LayerStack from nested [layer][head][row][col] arrays. */
function stackOf(v: number[][][][]): LayerStack {
  const heads = v[0]!.length;
  const rows = v[0]![0]!.length;
  const cols = v[0]![0]![0]!.length;
  return { dims: [heads, rows, cols], layers: v.map((l) => Float32Array.from(l.flat(2))) };
}

/** Random [layers][heads][rows][cols] arrays; `probabilities` makes rows that sum to 1. */
function randomNested(seed: number, layers: number, heads: number, rows: number, cols: number, probabilities: boolean): number[][][][] {
  const rand = mulberry32(seed);
  return Array.from({ length: layers }, () => Array.from({ length: heads }, () => Array.from({ length: rows }, () => {
    const row = Array.from({ length: cols }, () => (probabilities ? rand() : rand() * 4 - 2));
    if (!probabilities) return row.map(Math.fround);
    const s = row.reduce((a, b) => a + b, 0);
    return row.map((x) => Math.fround(x / s));
  })));
}

// --- float64 re-computation with nested arrays, written from the paper's equations ---------------

const eye = (n: number): M => Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (i === j ? 1 : 0)));
const mm = (a: M, b: M): M => a.map((row) => b[0]!.map((_, j) => row.reduce((s, v, k) => s + v * b[k]![j]!, 0)));
const plus = (a: M, b: M): M => a.map((row, i) => row.map((v, j) => v + b[i]![j]!));
const transpose = (a: M): M => a[0]!.map((_, j) => a.map((row) => row[j]!));
/** Ā = E_h[(∇A ⊙ A)⁺]. */
const abar = (a: number[][][], g: number[][][]): M => a[0]!.map((row, i) => row.map((_, j) => a.reduce((s, head, h) => s + Math.max(0, head[i]![j]! * g[h]![i]![j]!), 0) / a.length));
/** R̄ = (R − I) row-normalised + I. */
const rbar = (r: M): M => r.map((row, i) => {
  const off = row.map((v, j) => v - (i === j ? 1 : 0));
  const s = off.reduce((x, y) => x + y, 0);
  return off.map((v, j) => (s !== 0 ? v / s : v) + (i === j ? 1 : 0));
});
function refRollout(a: number[][][][], g: number[][][][]): M {
  let r = eye(a[0]![0]!.length);
  for (let l = 0; l < a.length; l++) r = plus(r, mm(abar(a[l]!, g[l]!), r));
  return r;
}
function refEncDec(a: Record<'encoder' | 'decoder' | 'cross', number[][][][]>, g: Record<'encoder' | 'decoder' | 'cross', number[][][][]>): { ee: M; dd: M; de: M } {
  const ee = refRollout(a.encoder, g.encoder);
  const m = a.decoder[0]![0]!.length;
  const n = a.encoder[0]![0]!.length;
  let dd = eye(m);
  let de: M = Array.from({ length: m }, () => new Array<number>(n).fill(0));
  for (let l = 0; l < a.decoder.length; l++) {
    const s = abar(a.decoder[l]!, g.decoder[l]!);
    [dd, de] = [plus(dd, mm(s, dd)), plus(de, mm(s, de))];
    de = plus(de, mm(transpose(rbar(dd)), mm(abar(a.cross[l]!, g.cross[l]!), rbar(ee))));
  }
  return { ee, dd, de };
}

const maxDiff = (got: ArrayLike<number>, want: number[]): number => {
  expect(got.length).toBe(want.length);
  let w = 0;
  for (let i = 0; i < want.length; i++) w = Math.max(w, Math.abs(got[i]! - want[i]!));
  return w;
};

describe('hand-computed cases', () => {
  // One layer, one head, two tokens: α = [[1, 0], [0.25, 0.75]], ∂T/∂α = [[2, −1], [4, −2]].
  const att = stackOf([[[[1, 0], [0.25, 0.75]]]]);
  const grad = stackOf([[[[2, -1], [4, -2]]]]);

  it('attention × gradient, its head sum and its token scores', () => {
    expect(Array.from(attentionTimesGradient(att, grad).layers[0]!)).toEqual([2, -0, 1, -1.5]);
    expect(Array.from(headAttentionGradient(att, grad).data)).toEqual([1.5]);
    expect(Array.from(attentionGradientTokenScores(att, grad))).toEqual([3, -1.5]);
    expect(Array.from(attentionGradientTokenScores(att, grad, { query: 1 }))).toEqual([1, -1.5]);
  });

  it('gradient-weighted rollout: Ā = [[2, 0], [1, 0]] (negative products dropped), R = I + Ā', () => {
    expect(Array.from(gradientRollout(att, grad))).toEqual([3, 0, 1, 1]);
    // Two identical layers: R = (I + Ā)² = [[9, 0], [4, 1]].
    const two = { dims: att.dims, layers: [att.layers[0]!, att.layers[0]!] };
    const twoG = { dims: grad.dims, layers: [grad.layers[0]!, grad.layers[0]!] };
    expect(Array.from(gradientRollout(two, twoG))).toEqual([9, 0, 4, 1]);
    expect(Array.from(gradientRollout(two, twoG, { startLayer: 1 }))).toEqual([3, 0, 1, 1]);
  });

  it('normalisation of a self-relevance matrix: (R − I) rows to sum 1, plus I; an all-zero row stays', () => {
    // R − I = [[2, 0], [1, 0]] → rows [1, 0], [1, 0] → + I.
    expect(Array.from(normalizeSelfRelevance(Float64Array.from([3, 0, 1, 1]), 2))).toEqual([2, 0, 1, 1]);
    expect(Array.from(normalizeSelfRelevance(Float64Array.from([1, 0, 0, 1]), 2))).toEqual([1, 0, 0, 1]);
  });

  it('reductions over the embedding and gradient × input', () => {
    const m: Matrix = { dims: [2, 2], data: Float32Array.from([3, -4, 1, 1]) };
    expect(Array.from(reduceHidden(m, 'sum'))).toEqual([-1, 2]);
    expect(Array.from(reduceHidden(m, 'l2'))).toEqual([5, Math.fround(Math.SQRT2)]);
    expect(Array.from(gradientTimesInput(m, { dims: [2, 2], data: Float32Array.from([2, 1, -1, 0.5]) }))).toEqual([2, -0.5]);
  });

  it('Michel et al.: |∂T/∂g| averaged over inputs, each layer divided by its L2 norm', () => {
    const g1: Matrix = { dims: [2, 2], data: Float32Array.from([3, -4, 0, 0]) };
    const g2: Matrix = { dims: [2, 2], data: Float32Array.from([-3, 4, 0, 2]) };
    expect(Array.from(michelHeadImportance(g1).data)).toEqual([0.6, 0.8, 0, 0].map(Math.fround));
    // mean |g| = [3, 4, 0, 1] → [0.6, 0.8, 0, 1].
    expect(Array.from(michelHeadImportance([g1, g2]).data)).toEqual([0.6, 0.8, 0, 1].map(Math.fround));
    expect(Array.from(michelHeadImportance(g1, { exponent: 0 }).data)).toEqual([3, 4, 0, 0]);
    expect(Array.from(michelHeadImportance([g1, g2], { global: true }).data)).toEqual([0.6, 0.8, 0, 1].map(Math.fround));
  });

  it('shape mismatches are one clear error', () => {
    expect(() => attentionTimesGradient(att, stackOf([[[[1, 2, 3]]]]))).toThrow(/gradient is \[1, 1, 1, 3\] but the attention is \[1, 1, 2, 2\]/);
    expect(() => attentionGradientTokenScores(att, grad, { query: 2 })).toThrow(/query 2 is out of range \(0–1\)/);
  });
});

describe('against a float64 re-computation on random attention and gradients', () => {
  it('self-attention stacks (3 layers, 4 heads, 7 tokens)', () => {
    const a = randomNested(1, 3, 4, 7, 7, true);
    const g = randomNested(2, 3, 4, 7, 7, false);
    const want = refRollout(a, g).flat();
    expect(maxDiff(gradientRollout(stackOf(a), stackOf(g)), want)).toBeLessThan(1e-12 * Math.max(...want.map(Math.abs)));
    const tok = a[0]![0]![0]!.map((_, k) => a.reduce((s, layer, l) => s + layer.reduce((t, head, h) => t + head.reduce((u, row, q) => u + row[k]! * g[l]![h]![q]![k]!, 0), 0), 0));
    expect(maxDiff(attentionGradientTokenScores(stackOf(a), stackOf(g)), tok)).toBeLessThan(1e-6);
  });

  it('encoder-decoder rules (2 layers, 3 heads, 5 encoder and 4 decoder tokens)', () => {
    const a = { encoder: randomNested(3, 2, 3, 5, 5, true), decoder: randomNested(4, 2, 3, 4, 4, true), cross: randomNested(5, 2, 3, 4, 5, true) };
    const g = { encoder: randomNested(6, 2, 3, 5, 5, false), decoder: randomNested(7, 2, 3, 4, 4, false), cross: randomNested(8, 2, 3, 4, 5, false) };
    const want = refEncDec(a, g);
    const stacks = (x: typeof a): StackMap => ({ encoder: stackOf(x.encoder), decoder: stackOf(x.decoder), cross: stackOf(x.cross) });
    const got = encoderDecoderGradientRollout(stacks(a), stacks(g));
    expect(maxDiff(got.encoder, want.ee.flat())).toBeLessThan(1e-12);
    expect(maxDiff(got.decoder, want.dd.flat())).toBeLessThan(1e-12);
    expect(maxDiff(got.cross, want.de.flat())).toBeLessThan(1e-12 * Math.max(...want.de.flat().map(Math.abs)));
    // The trace-level entry point reads the target's row.
    const trace: Trace = {
      model: { name: 't', modelType: 't', numLayers: 2, numHeads: 3, numKeyValueHeads: 3, headDim: 1 },
      tokens: [], attention: stacks(a),
      attributions: { target: { kind: 'x', position: 2, tokenId: 1, stack: 'decoder', value: 0 }, scores: {}, attentionGrad: stacks(g) },
    };
    const scores = attentionAttributions(trace);
    expect(maxDiff(scores.gradientRollout!.scores, want.de[2]!)).toBeLessThan(1e-5);
    expect(maxDiff(scores.gradientRolloutDecoder!.scores, want.dd[2]!)).toBeLessThan(1e-5);
    expect(scores.gradientRolloutDecoder!.tokens).toBe('decoderTokens');
  });
});


describe("PyTorch's numbers: Σ α ⊙ ∂T/∂α over a head = ∂T/∂gate (head_importance)", () => {
  for (const fixture of GRADIENT_FIXTURES) {
    it(fixture, () => {
      const refs = readGradients(fixture);
      const reference = readReference(fixture);
      let checked = 0;
      for (const [i, ref] of refs.inputs.entries()) {
        if (!ref.attention_grad) continue;
        const grads = Array.isArray(ref.attention_grad) ? { self: ref.attention_grad } : ref.attention_grad;
        const gates = Array.isArray(ref.head_importance) ? { self: ref.head_importance } : ref.head_importance;
        for (const [stack, layers] of Object.entries(grads)) {
          const key = stack === 'self' ? 'attentions' : `${stack}_attentions`;
          const attention = stackOf(reference.inputs[i]![key] as number[][][][]);
          const sums = headAttentionGradient(attention, stackOf(layers));
          const want = gates[stack]!.flat();
          const scale = Math.max(...want.map(Math.abs));
          // Both sides are float32 autograd values rounded to 7 digits; the sum of n² products
          // of them agrees with the gate's gradient to float32 noise of the largest value.
          expect(maxDiff(sums.data, want) / scale).toBeLessThan(2e-4);
          checked++;
        }
      }
      expect(checked).toBeGreaterThan(0);
    });
  }
});
