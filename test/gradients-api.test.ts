/**
 * attribute()'s targets and options beyond the fixtures' gradients.json targets: continuation and
 * contrastive targets (T checked against log-softmax of the model's own logits recomputed here in
 * float64, gradients against the sum of single-token gradients, each of which the fixture test
 * checks against PyTorch), head gates during attribution (T equals gradients.json's ablation), the
 * completeness identity of every integration rule, and one-line errors for bad options.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import { attribute, integrationPoints } from '../src/engine/gradients.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { FIXTURES, readReference } from './helpers/reference.js';

/** log-softmax of row p of [rows, vocab] logits, float64. */
function logSoftmaxRow(logits: Float32Array, vocab: number, p: number): Float64Array {
  const row = logits.subarray(p * vocab, (p + 1) * vocab);
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  return Float64Array.from(row, (v) => v - max - Math.log(sum));
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

describe('attribute(): targets, gates, rules and errors (gpt2 fixture)', () => {
  let model: Model;
  const ids = readReference('gpt2').inputs[0]!.input_ids;
  beforeAll(async () => {
    model = await loadModel(join(FIXTURES, 'gpt2'), { graphCache: false });
  });
  afterAll(async () => {
    await model.dispose();
  });

  it('continuation: T = Σ_{i ≥ from} log p(x_i | x_<i), and its gradient is the sum of the single-token gradients', async () => {
    const from = ids.length - 3;
    const r = await attribute(model, { inputIds: ids }, { target: { kind: 'continuation', from }, methods: ['gradient'] });
    const out = await model.run({ attention: false, qk: false, lastHiddenState: false, logits: true }, { inputIds: ids });
    const vocab = out.logits!.dims[2]!;
    const logits = out.logits!.data as Float32Array;
    let expected = 0;
    for (let i = from; i < ids.length; i++) expected += logSoftmaxRow(logits, vocab, i - 1)[ids[i]!]!;
    expect(r.target.value).toBeCloseTo(expected, 4);
    expect(r.target.terms.map((t) => [t.position, t.tokenId])).toEqual([[from - 1, ids[from]], [from, ids[from + 1]], [from + 1, ids[from + 2]]]);
    const sum = new Float64Array(r.embeddingGrad!.data.length);
    for (let i = from; i < ids.length; i++) {
      const single = await attribute(model, { inputIds: ids }, { target: { kind: 'token', position: i - 1, tokenId: ids[i]! }, methods: ['gradient'] });
      single.embeddingGrad!.data.forEach((v, j) => { sum[j]! += v; });
    }
    const diff = Array.from(sum, (v, j) => v - r.embeddingGrad!.data[j]!);
    expect(maxAbs(diff) / maxAbs(sum)).toBeLessThan(1e-5);
  });

  it('contrast: T = log p(a) − log p(b) at the position; its gradient is the difference of the two', async () => {
    const p = ids.length - 1;
    const [a, b] = [11, 42];
    const r = await attribute(model, { inputIds: ids }, { target: { kind: 'contrast', position: p, tokenId: a, versusId: b }, methods: ['gradient', 'headImportance'] });
    const out = await model.run({ attention: false, qk: false, lastHiddenState: false, logits: true }, { inputIds: ids });
    const lp = logSoftmaxRow(out.logits!.data as Float32Array, out.logits!.dims[2]!, p);
    expect(r.target.value).toBeCloseTo(lp[a]! - lp[b]!, 4);
    expect(r.target.versusId).toBe(b);
    const ra = await attribute(model, { inputIds: ids }, { target: { kind: 'token', position: p, tokenId: a }, methods: ['gradient', 'headImportance'] });
    const rb = await attribute(model, { inputIds: ids }, { target: { kind: 'token', position: p, tokenId: b }, methods: ['gradient', 'headImportance'] });
    const diff = Array.from(r.embeddingGrad!.data, (v, j) => v - (ra.embeddingGrad!.data[j]! - rb.embeddingGrad!.data[j]!));
    expect(maxAbs(diff) / maxAbs(r.embeddingGrad!.data)).toBeLessThan(1e-5);
    const h = r.headImportance!.self!.raw.data;
    const hd = Array.from(h, (v, j) => v - (ra.headImportance!.self!.raw.data[j]! - rb.headImportance!.self!.raw.data[j]!));
    expect(maxAbs(hd) / maxAbs(h)).toBeLessThan(1e-5);
    // Michel et al.: |raw| over each layer's L2 norm
    const heads = model.architectureInfo.numHeads;
    const norm0 = Math.hypot(...Array.from(h.subarray(0, heads)));
    expect(r.headImportance!.self!.normalized.data[1]).toBeCloseTo(Math.abs(h[1]!) / norm0, 6);
  });

  it('head gates during attribution: T with layer 0 head 0 removed is gradients.json\'s ablation target', async () => {
    const refs = JSON.parse(readFileSync(join(FIXTURES, 'gpt2', 'gradients.json'), 'utf8')) as { inputs: { ablation: { target_ablated: number } }[] };
    const info = model.architectureInfo;
    const gates = new Float32Array((info.stacks.self ?? 0) * info.numHeads).fill(1);
    gates[0] = 0;
    const r = await attribute(model, { inputIds: ids }, { methods: ['gradient'], headGates: { self: gates } });
    expect(r.target.value).toBeCloseTo(refs.inputs[0]!.ablation.target_ablated, 4);
  });

  it('integration rules: the weights of each rule integrate polynomials as they should; completeness is reported for each', async () => {
    for (const [rule, n] of [['midpoint', 8], ['trapezoid', 8], ['gauss-legendre', 4]] as const) {
      const pts = integrationPoints(rule, n);
      const integral = (k: number): number => pts.reduce((s, p) => s + p.weight * p.alpha ** k, 0);
      expect(integral(0)).toBeCloseTo(1, 12);
      expect(integral(1)).toBeCloseTo(0.5, 12);
      if (rule === 'gauss-legendre') expect(integral(7)).toBeCloseTo(1 / 8, 12); // exact to degree 2n − 1
      const r = await attribute(model, { inputIds: ids }, { methods: ['integratedGradients'], baseline: 'zero', steps: n, rule });
      const ig = r.integratedGradients!;
      expect(ig.rule).toBe(rule);
      expect(ig.completeness.sumAttributions).toBeCloseTo(Array.from(ig.scores).reduce((s, v) => s + v, 0), 4);
    }
  });

  it('bad options are one-line AttnscopeErrors naming the option and the allowed range', async () => {
    const cases: [Parameters<typeof attribute>[2], RegExp][] = [
      [{ target: { kind: 'token', position: ids.length } }, /position \d+ is out of range; allowed: 0 to \d+/],
      [{ target: { kind: 'token', tokenId: -3 } }, /token id -3 is out of range/],
      [{ target: { kind: 'continuation', from: 0 } }, /from 0 is out of range; allowed: 1 to/],
      [{ steps: 0 }, /steps 0 is out of range/],
      [{ baseline: 'mask' }, /has no mask token/],
      [{ target: { kind: 'logit', position: 1 } }, /predicts tokens: use 'token'/],
    ];
    for (const [options, message] of cases) {
      const error = await attribute(model, { inputIds: ids }, { methods: ['gradient', 'integratedGradients'], steps: 2, ...options }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AttnscopeError);
      expect((error as Error).message).toMatch(message);
      expect((error as Error).message).not.toContain('\n');
    }
  });
});

describe('attribute() on a masked LM (bert fixture)', () => {
  it('defaults to the input token at the mask position, and an encoder without a mask needs a position', async () => {
    const model = await loadModel(join(FIXTURES, 'bert'), { graphCache: false });
    try {
      const ids = readReference('bert').inputs[0]!.input_ids;
      const error = await attribute(model, { inputIds: ids }, { methods: ['gradient'] }).catch((e: unknown) => e);
      expect((error as Error).message).toMatch(/no mask token; give the target position/);
      const maskId = model.tokenizer!.mask!.id!;
      const masked = ids.map((id, i) => (i === 2 ? maskId : id));
      const r = await attribute(model, { inputIds: masked }, { methods: ['gradient'] });
      expect(r.target.position).toBe(2);
      // At the mask the target is the model's top prediction there.
      const out = await model.run({ attention: false, qk: false, lastHiddenState: false, logits: true }, { inputIds: masked });
      const lp = logSoftmaxRow(out.logits!.data as Float32Array, out.logits!.dims[2]!, 2);
      const top = lp.indexOf(Math.max(...lp));
      expect(r.target.tokenId).toBe(top);
      expect(r.target.value).toBeCloseTo(lp[top]!, 4);
    } finally {
      await model.dispose();
    }
  });
});
