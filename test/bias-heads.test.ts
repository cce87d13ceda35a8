/**
 * From bias scores to heads (issue 12, point 3): rank correlation, head selection, control sets,
 * propagation, faithfulness and bootstrap intervals on hand-computable cases; on fixture models,
 * the contrast, its ablations, head importance, rollout ratios, faithfulness and CrowS-Pairs
 * ablation against independent paths (float64 re-computation from trace logits written here,
 * engine/ablation.ts ablateHeads, finite differences of the head gates, a rollout written here).
 */
import { describe, expect, it } from 'vitest';
import { attentionAttributionAgreement, averageRanks, layerPropagation, meanHeadRatios, randomHeadSets, spearman, topBiasHeads, topHeadsBy } from '../src/analysis/bias/heads.js';
import { bootstrapMean, crowsIntervals, quantileSorted } from '../src/analysis/bias/bootstrap.js';
import { crowsPairRows, crowsPairsMetric, orientedSentences, type CrowsPair } from '../src/analysis/bias/crows-pairs.js';
import type { HeadBiasScore } from '../src/analysis/bias/attention-bias.js';
import { biasHeads, crowsHeads } from '../src/bias/heads.js';
import { loadCrowsPairs, loadGroupLexicons } from '../src/bias/data-files.js';
import { maskedPositions, scoreCrowsPairs } from '../src/bias/crows-pairs.js';
import { ablateHeads } from '../src/engine/ablation.js';
import type { Model } from '../src/engine/model.js';
import { loadFixtureModels } from './helpers/fixture-suite.js';
import type { RuntimeTensor } from '../src/runtime/runtime.js';


const score = (layer: number, head: number, ratio: number, q: number): HeadBiasScore => ({ layer, head, ratio, selfRatio: ratio, p: q, q, holm: q });

describe('rank correlation, selection and controls', () => {
  it("Spearman's ρ with average ranks for ties", () => {
    expect(averageRanks([3, 1, 3, 2])).toEqual([3.5, 1, 3.5, 2]);
    expect(spearman([1, 2, 3, 4], [10, 20, 30, 45])).toBeCloseTo(1, 12);
    expect(spearman([1, 2, 3, 4], [4, 3, 2, 1])).toBeCloseTo(-1, 12);
    // Ranks [1, 2.5, 2.5, 4] against [1, 2, 3, 4]: 4.5 / √(4.5 · 5) = 3 / √10.
    expect(spearman([1, 2, 2, 3], [1, 2, 3, 4])).toBeCloseTo(3 / Math.sqrt(10), 12);
    expect(spearman([1, 1, 1], [1, 2, 3])).toBeNaN();
  });

  it('top bias-focused heads: significant ones first, then by ratio; top heads of a table', () => {
    const scores = [score(0, 0, 3, 0.2), score(0, 1, 1.5, 0.01), score(1, 0, Number.NaN, Number.NaN), score(1, 1, 2, 0.04), score(1, 2, 2, 0.5)];
    expect(topBiasHeads(scores, 3)).toEqual([{ layer: 1, head: 1 }, { layer: 0, head: 1 }, { layer: 0, head: 0 }]);
    expect(topBiasHeads(scores, 5).slice(3)).toEqual([{ layer: 1, head: 2 }, { layer: 1, head: 0 }]);
    expect(topHeadsBy([[1, 5], [Number.NaN, 5], [2, 0]], 3)).toEqual([{ layer: 0, head: 1 }, { layer: 1, head: 1 }, { layer: 2, head: 0 }]);
  });

  it('random control sets: k distinct heads outside the ablated ones, each head equally often', () => {
    const exclude = [{ layer: 0, head: 0 }, { layer: 2, head: 3 }];
    const sets = randomHeadSets(3, 4, 3, 3000, exclude, 5);
    const counts = new Map<string, number>();
    for (const s of sets) {
      expect(s).toHaveLength(3);
      expect(new Set(s.map((h) => `${h.layer}:${h.head}`)).size).toBe(3);
      for (const h of s) {
        expect(exclude.some((e) => e.layer === h.layer && e.head === h.head)).toBe(false);
        counts.set(`${h.layer}:${h.head}`, (counts.get(`${h.layer}:${h.head}`) ?? 0) + 1);
      }
    }
    // 10 heads left, 3 drawn: each in 3/10 of the sets (sd √(3000 · 0.3 · 0.7) ≈ 25).
    expect(counts.size).toBe(10);
    for (const c of counts.values()) expect(Math.abs(c - 900)).toBeLessThan(5 * 25);
    expect(randomHeadSets(1, 3, 2, 0, [{ layer: 0, head: 0 }, { layer: 0, head: 1 }])).toEqual([]);
    expect(() => randomHeadSets(1, 3, 2, 1, [{ layer: 0, head: 0 }, { layer: 0, head: 1 }])).toThrow(/--controls 0/);
  });

  it('per-layer propagation and mean ratios by hand', () => {
    const scores = [score(0, 0, 2, 0.01), score(0, 1, 1, 0.5), score(1, 0, 0.5, 0.2), score(1, 1, Number.NaN, Number.NaN)];
    // Rollout after layer 0: identity (each token keeps itself): G = {1} gets row 1's 1 over a share of 3 · 1/3 → 1.
    // After layer 1: every row [0.2, 0.6, 0.2]: 1.8 / 1 = 1.8.
    const id = [1, 0, 0, 0, 1, 0, 0, 0, 1];
    const flat = [0.2, 0.6, 0.2, 0.2, 0.6, 0.2, 0.2, 0.6, 0.2];
    const p = layerPropagation(scores, [1], false, [id, flat], 3);
    expect(p[0]).toEqual({ layer: 0, meanRatio: 1.5, maxRatio: 2, significant: 1, rolloutRatio: 1 });
    expect(p[1]!.meanRatio).toBe(0.5);
    expect(p[1]!.significant).toBe(0);
    expect(p[1]!.rolloutRatio).toBeCloseTo(1.8, 12);
    expect(meanHeadRatios([[score(0, 0, 2, 1), score(0, 1, Number.NaN, 1)], [score(0, 0, 4, 1), score(0, 1, Number.NaN, 1)]], 1, 2)).toEqual([[3, Number.NaN]]);
  });

  it('faithfulness by hand: attention from the target row against |IG|', () => {
    // One layer, two heads, 4 tokens; token 0 is special (not a candidate).
    const layer = new Float32Array(2 * 16);
    layer.set([0.1, 0.2, 0.3, 0.4], 3 * 4); // head 0, row 3
    layer.set([0.4, 0.3, 0.2, 0.1], 16 + 3 * 4); // head 1, row 3
    const stack = { dims: [2, 4, 4] as [number, number, number], layers: [layer] };
    const f = attentionAttributionAgreement(stack, [1, -2, 3, -4], 3, [2], [1, 2, 3], false);
    expect(f.tokens).toEqual([1, 2, 3]);
    expect(f.heads[0]!.rho).toBeCloseTo(1, 12);
    expect(f.heads[1]!.rho).toBeCloseTo(-1, 12);
    // Group {2}: head 0 gives it 0.3 of 0.9; |IG| 3 of 9.
    expect(f.heads[0]!.groupAttentionShare).toBeCloseTo(1 / 3, 6);
    expect(f.heads[1]!.groupAttentionShare).toBeCloseTo(0.2 / 0.6, 6);
    expect(f.groupAttributionShare).toBeCloseTo(1 / 3, 12);
    // Causal, row 1: only token 1 is visible among the candidates: no correlation.
    const c = attentionAttributionAgreement(stack, [1, -2, 3, -4], 1, [2], [1, 2, 3], true);
    expect(c.tokens).toEqual([1]);
    expect(c.heads[0]!.rho).toBeNaN();
  });
});

describe('bootstrap intervals', () => {
  it('quantiles as numpy (linear) and the interval of a proportion against the normal approximation', () => {
    expect(quantileSorted([1, 2, 3, 4], 0.5)).toBe(2.5);
    expect(quantileSorted([1, 2, 3, 4], 0.25)).toBe(1.75);
    expect(quantileSorted([1, 2, 3, 4], 1)).toBe(4);
    // 400 items, half of them 100: mean 50, se = 100 · √(0.25 / 400) = 2.5, 95% ≈ ± 4.9.
    const values = Array.from({ length: 400 }, (_, i) => (i % 2 === 0 ? 100 : 0));
    const ci = bootstrapMean(values, { resamples: 4000, seed: 3 });
    expect(ci.value).toBe(50);
    expect(Math.abs(ci.low - (50 - 1.96 * 2.5))).toBeLessThan(0.6);
    expect(Math.abs(ci.high - (50 + 1.96 * 2.5))).toBeLessThan(0.6);
    const constant = bootstrapMean([7, 7, 7]);
    expect([constant.low, constant.value, constant.high]).toEqual([7, 7, 7]);
    expect(bootstrapMean([]).value).toBeNaN();
    expect(() => bootstrapMean([1], { resamples: 0 })).toThrow(/resamples 0 is out of range/);
  });

  it('CrowS-Pairs intervals are around the metric, per bias type and direction', () => {
    const pair = (index: number, direction: 'stereo' | 'antistereo', biasType: string): CrowsPair => ({ index, sentMore: `m${index}`, sentLess: `l${index}`, direction, biasType });
    const pairs = Array.from({ length: 60 }, (_, i) => pair(i, i % 3 === 0 ? 'antistereo' : 'stereo', i % 2 ? 'gender' : 'age'));
    const rows = crowsPairRows(pairs, pairs.map((_, i) => ({ sent1: i % 5 === 0 ? -2 : -1, sent2: -1.5 })), true);
    const m = crowsPairsMetric(rows);
    const ci = crowsIntervals(rows, m, { resamples: 500 });
    expect(ci.overall.value).toBeCloseTo(m.metric, 12);
    expect(ci.byBiasType.gender!.value).toBeCloseTo(m.byBiasType.gender!.metric, 12);
    expect(ci.byDirection.antistereo.value).toBeCloseTo(m.byDirection.antistereo.metric, 12);
    for (const i of [ci.overall, ci.byBiasType.age!, ci.byDirection.stereo]) {
      expect(i.low).toBeLessThanOrEqual(i.value);
      expect(i.high).toBeGreaterThanOrEqual(i.value);
    }
  });
});

/** log softmax of logits[row] at `id`, float64, written independently of src/. */
function logProb(logits: { dims: readonly number[]; data: Float32Array }, row: number, id: number): number {
  const vocab = logits.dims[logits.dims.length - 1]!;
  const xs = Array.from(logits.data.subarray(row * vocab, (row + 1) * vocab), Number);
  const max = Math.max(...xs);
  return xs[id]! - max - Math.log(xs.reduce((s, x) => s + Math.exp(x - max), 0));
}

/** Spearman's ρ written again here: ranks with ties averaged, then Pearson. */
function rho(a: number[], b: number[]): number {
  const rank = (xs: number[]) => xs.map((x) => xs.filter((y) => y < x).length + (xs.filter((y) => y === x).length + 1) / 2);
  const [ra, rb] = [rank(a), rank(b)];
  const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length;
  const [ma, mb] = [mean(ra), mean(rb)];
  const cov = ra.reduce((s, x, i) => s + (x - ma) * (rb[i]! - mb), 0);
  return cov / Math.sqrt(ra.reduce((s, x) => s + (x - ma) ** 2, 0) * rb.reduce((s, x) => s + (x - mb) ** 2, 0));
}

describe('heads behind a probe and behind CrowS-Pairs, on fixture models', () => {
  let bert: Model;
  let gpt2: Model;
  loadFixtureModels(['bert', 'gpt2'], { graphCache: false }, (m) => ([bert, gpt2] = m));

  for (const [name, text, mode] of [['bert', 'The man said that [MASK] was late.', 'zero'], ['gpt2', 'The man said that', 'mean']] as const) {
    it(`${name}: contrast, ${mode} ablation, importance, rollout ratios and faithfulness against independent paths`, async () => {
      const model = name === 'bert' ? bert : gpt2;
      const lexicons = await loadGroupLexicons(['gender']);
      const r = await biasHeads(model, text, lexicons, { k: 2, controls: 2, mode, permutations: 99, steps: 24 });
      const trace = r.probe.original;
      const ids = trace.tokens.map((t) => t.id);
      const inputs = { inputIds: ids, typeIds: trace.tokens.map((t) => t.segment) };
      // T from the trace's own logits, float64 here.
      const logits = (await model.trace(null, { ids, typeIds: inputs.typeIds, logits: true })).logits!;
      const t = r.target;
      expect(t.position).toBe(name === 'bert' ? trace.tokens.findIndex((x) => x.text === '[MASK]') : ids.length - 1);
      expect(t.value).toBeCloseTo(logProb(logits, t.position, t.tokenId) - logProb(logits, t.position, t.versusId), 4);
      // Ablation: T after = the difference of ablateHeads' target log-probabilities for the two words.
      for (const effect of [r.ablation, ...r.controls]) {
        const heads = effect.heads.map((h) => ({ stack: 'self' as const, ...h }));
        const [a, b] = await Promise.all([t.tokenId, t.versusId].map((tokenId) => ablateHeads(model, inputs, { heads, mode, position: t.position, tokenId })));
        expect(effect.value).toBeCloseTo(a!.target.after - b!.target.after, 4);
      }
      expect(r.controls).toHaveLength(2);
      for (const c of r.controls) for (const h of c.heads) expect(r.ablation.heads.some((x) => x.layer === h.layer && x.head === h.head)).toBe(false);
      // Head importance: ∂T/∂g by central differences of the gates, run here.
      const run = async (layer: number, head: number, g: number) => {
        const data = new Float32Array(2 * 4).fill(1);
        data[layer * 4 + head] = g;
        const gates: Record<string, RuntimeTensor> = { 'head_gates.self': { type: 'float32', dims: [2, 4], data } };
        const out = await model.run({ attention: false, qk: false, lastHiddenState: false, logits: true, headGates: true }, inputs, gates);
        const l = { dims: out.logits!.dims, data: out.logits!.data as Float32Array };
        return logProb(l, t.position, t.tokenId) - logProb(l, t.position, t.versusId);
      };
      for (const [layer, head] of [[0, 1], [1, 2]] as const) {
        const eps = 1e-2;
        const fd = ((await run(layer, head, 1 + eps)) - (await run(layer, head, 1 - eps))) / (2 * eps);
        expect(Math.abs(r.importanceRaw[layer]![head]! - fd)).toBeLessThan(2e-3 + 0.02 * Math.abs(fd));
      }
      // Rollout ratio per layer: 0.5 · head mean + 0.5 · I, rows normalised, multiplied through the layers (float64 here).
      const stack = trace.attention.self!;
      const [H, n] = stack.dims;
      let R: number[] | null = null;
      for (let l = 0; l < stack.layers.length; l++) {
        const A = new Array<number>(n * n).fill(0);
        for (let i = 0; i < n; i++) {
          let s = 0;
          for (let j = 0; j < n; j++) {
            let m = 0;
            for (let h = 0; h < H; h++) m += stack.layers[l]![(h * n + i) * n + j]! / H;
            A[i * n + j] = 0.5 * m + (i === j ? 0.5 : 0);
            s += A[i * n + j]!;
          }
          for (let j = 0; j < n; j++) A[i * n + j]! /= s;
        }
        const prev: number[] | null = R;
        R = prev === null ? A : A.map((_, ij) => {
          const i = Math.floor(ij / n);
          const j = ij % n;
          let s = 0;
          for (let k = 0; k < n; k++) s += A[i * n + k]! * prev[k * n + j]!;
          return s;
        });
        // BAR of R on G: Σ_q Σ_{k∈G visible} R[q,k] / Σ_q |G visible| / |visible|.
        const causal = name === 'gpt2';
        let mass = 0;
        let share = 0;
        for (let q = 0; q < n; q++) {
          const vis = causal ? q + 1 : n;
          const g = r.probe.groupTokens.filter((k) => k < vis);
          if (g.length === 0) continue;
          mass += g.reduce((s, k) => s + R![q * n + k]!, 0);
          share += g.length / vis;
        }
        expect(r.propagation[l]!.rolloutRatio).toBeCloseTo(mass / share, 4);
        const ratios = r.probe.heads.filter((h) => h.layer === l).map((h) => h.ratio);
        expect(r.propagation[l]!.meanRatio).toBeCloseTo(ratios.reduce((a, b) => a + b, 0) / ratios.length, 12);
      }
      // Faithfulness: ρ per head from the trace's attention row and the IG scores, recomputed here.
      const tokens = trace.tokens.flatMap((x, i) => (!x.special && (name === 'bert' || i <= t.position) ? [i] : []));
      expect(r.faithfulness.tokens).toEqual(tokens);
      const absIg = tokens.map((k) => Math.abs(r.integratedGradients.scores[k]!));
      for (const h of r.faithfulness.heads) {
        const att = tokens.map((k) => stack.layers[h.layer]![(h.head * n + t.position) * n + k]!);
        expect(h.rho).toBeCloseTo(rho(att, absIg), 10);
      }
      // Integrated gradients add up to T(input) − T(baseline) (24 steps).
      expect(r.integratedGradients.relativeError).toBeLessThan(0.05);
    });
  }

  it('CrowS-Pairs: head ratios on the tokens sent_more has of its own, and the metric with heads zeroed against ablateHeads per masked copy', async () => {
    const pairs = (await loadCrowsPairs()).slice(0, 3);
    const r = await crowsHeads(bert, pairs, { k: 2, controls: 1 });
    // Ratios: each pair's lower-cased sent_more, BAR on its non-shared tokens, averaged (float64 here).
    const sums = [[0, 0, 0, 0], [0, 0, 0, 0]];
    for (const p of pairs) {
      const trace = await bert.trace(p.sentMore.toLowerCase());
      const less = (await bert.tokenize(p.sentLess.toLowerCase())).map((x) => x.id);
      const more = trace.tokens.map((x) => x.id);
      // Tokens of sent_more that the masked positions (shared, less [CLS]/[SEP]) and the ends do not cover.
      const shared = new Set([0, more.length - 1, ...maskedPositions(more, less).first]);
      const group = more.flatMap((_, i) => (shared.has(i) ? [] : [i]));
      const s = trace.attention.self!;
      const n = s.dims[1];
      for (let l = 0; l < 2; l++) {
        for (let h = 0; h < 4; h++) {
          let mass = 0;
          for (let q = 0; q < n; q++) for (const k of group) mass += s.layers[l]![(h * n + q) * n + k]!;
          sums[l]![h]! += mass / ((n * group.length) / n);
        }
      }
    }
    for (let l = 0; l < 2; l++) for (let h = 0; h < 4; h++) expect(r.ratios[l]![h]!).toBeCloseTo(sums[l]![h]! / 3, 4);
    expect(r.ratioPairs).toBe(3);
    // The top two heads by that mean ratio were ablated.
    const flat = r.ratios.flatMap((row, l) => row.map((v, h) => ({ l, h, v }))).sort((a, b) => b.v - a.v);
    expect(r.ablated.heads).toEqual(flat.slice(0, 2).map((x) => ({ layer: x.l, head: x.h })));
    // Before: the plain scores.
    const plain = await scoreCrowsPairs(bert, pairs);
    expect(r.before.rows.map((x) => x.score)).toEqual(crowsPairRows(pairs, plain.scores, true).map((x) => x.score));
    // Ablated, first pair: Σ over its masked copies of ablateHeads' log P(token | masked) with the heads removed.
    const heads = r.ablated.heads.map((h) => ({ stack: 'self' as const, ...h }));
    const [s1, s2] = orientedSentences(pairs[0]!).map((s) => s.toLowerCase());
    const [t1, t2] = await Promise.all([bert.tokenize(s1!), bert.tokenize(s2!)]);
    const { first } = maskedPositions(t1.map((x) => x.id), t2.map((x) => x.id));
    let sum = 0;
    for (const p of first) {
      const ids = t1.map((x, i) => (i === p ? bert.tokenizer!.mask!.id! : x.id));
      sum += (await ablateHeads(bert, { inputIds: ids, typeIds: t1.map((x) => x.segment) }, { heads, position: p, tokenId: t1[p]!.id })).target.after;
    }
    const row = r.ablated.rows[0]!;
    const sent1 = pairs[0]!.direction === 'stereo' ? row.sentMoreScore : row.sentLessScore;
    expect(Math.abs(sent1 - sum)).toBeLessThan(1.5e-3); // rounded to 3 decimals by metric.py's rule
    expect(r.controls).toHaveLength(1);
    expect(r.controls[0]!.metric.n).toBe(3);
  });
});
