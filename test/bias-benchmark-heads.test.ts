/**
 * The heads behind WinoGender, WinoBias and StereoSet (src/bias/benchmark-heads.ts), as
 * test/bias-heads.test.ts checks them for CrowS-Pairs: on the bert and gpt2 fixtures, the items'
 * slot, group tokens and contrast built independently here from the data's character offsets; the
 * mean bias attention ratio re-computed in float64 from the traces; the metric as trained from trace
 * logits; the metric with the top heads zeroed against engine/ablation.ts ablateHeads per item; the
 * random controls; importance as the mean of attribute()'s per item; faithfulness ρ re-computed here
 * (average ranks written here) from each head's attention row and |IG|.
 */
import { describe, expect, it } from 'vitest';
import { benchmarkHeads, benchmarkScorer, pronounHeadItems, stereoHeadItems, wordSpan } from '../src/bias/benchmark-heads.js';
import { loadOccupationStats, loadWinobias, loadWinogender } from '../src/bias/data-files.js';
import { scoreStereoSet } from '../src/bias/stereoset.js';
import { parseStereoSet, stereoSetResults } from '../src/analysis/bias/stereoset.js';
import type { PronounItem } from '../src/analysis/bias/wino.js';
import { ablateHeads } from '../src/engine/ablation.js';
import { attribute } from '../src/engine/gradients.js';
import type { Model } from '../src/engine/model.js';
import { loadFixtureModels } from './helpers/fixture-suite.js';
import type { Matrix } from '../src/core/trace.js';
import { STEREOSET_FILE } from './helpers/stereoset-file.js';


function logProbs(logits: Matrix, position: number): number[] {
  const vocab = logits.dims[1];
  const row = Array.from(logits.data.subarray(position * vocab, (position + 1) * vocab));
  const m = Math.max(...row);
  const z = Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0)) + m;
  return row.map((v) => v - z);
}

/** Spearman's ρ with average ranks, written here. */
function rhoOf(a: number[], b: number[]): number {
  const ranks = (xs: number[]) => {
    const order = xs.map((v, i) => [v, i] as const).sort((x, y) => x[0] - y[0]);
    const r = new Array<number>(xs.length);
    for (let i = 0; i < order.length; ) {
      let j = i;
      while (j + 1 < order.length && order[j + 1]![0] === order[i]![0]) j++;
      for (let k = i; k <= j; k++) r[order[k]![1]] = (i + j) / 2 + 1;
      i = j + 1;
    }
    return r;
  };
  const ra = ranks(a);
  const rb = ranks(b);
  const mean = (xs: number[]) => xs.reduce((s, v) => s + v, 0) / xs.length;
  const ma = mean(ra);
  const mb = mean(rb);
  let num = 0;
  let da = 0;
  let db = 0;
  for (let i = 0; i < a.length; i++) {
    num += (ra[i]! - ma) * (rb[i]! - mb);
    da += (ra[i]! - ma) ** 2;
    db += (rb[i]! - mb) ** 2;
  }
  return num / Math.sqrt(da * db);
}

describe('word spans', () => {
  it('whole words, case-insensitive, first match', () => {
    expect(wordSpan('The Nurse met the nurse.', 'nurse')).toEqual([4, 9]);
    expect(wordSpan('The nurses left.', 'nurse')).toBeNull();
    // A hyphen ends a word: 'worker' in 'co-worker' counts.
    expect(wordSpan('A co-worker and a worker.', 'worker')).toEqual([5, 11]);
    expect(wordSpan('The vet (a.k.a. doctor)', 'a.k.a.')).toEqual([9, 15]);
  });
});

describe('benchmark heads on fixture models', () => {
  let bert: Model;
  let gpt2: Model;
  loadFixtureModels(['bert', 'gpt2'], { graphCache: false }, (m) => ([bert, gpt2] = m));

  it('WinoGender, masked LM: items, ratios, the female share as trained and with heads zeroed (ablateHeads), importance and faithfulness', async () => {
    const items: PronounItem[] = (await loadWinogender()).filter((x) => /^(he|she)$/i.test(x.forms.male.text.slice(x.forms.male.start, x.forms.male.end))).slice(0, 3);
    expect(items).toHaveLength(3);
    const stats = await loadOccupationStats();
    const headItems = await pronounHeadItems(bert, items);
    const maskId = bert.tokenizer!.mask!.id!;
    // Independently: the male sentence's tokens, the pronoun's token masked, the occupation's tokens.
    const expected: { ids: number[]; typeIds: number[]; slot: number; group: number[]; he: number; she: number }[] = [];
    for (const item of items) {
      const m = item.forms.male;
      const tokens = await bert.tokenize(m.text);
      const slot = tokens.findIndex((t) => !t.special && t.start === m.start && t.end === m.end);
      expect(slot).toBeGreaterThan(0);
      const at = m.text.toLowerCase().indexOf(item.occupation.toLowerCase());
      const group = tokens.flatMap((t, i) => (!t.special && t.start >= at && t.end <= at + item.occupation.length ? [i] : []));
      expect(group.length).toBeGreaterThan(0);
      const ids = tokens.map((t, i) => (i === slot ? maskId : t.id));
      const he = (await bert.tokenize('he')).find((t) => !t.special)!.id;
      const she = (await bert.tokenize('she')).find((t) => !t.special)!.id;
      expected.push({ ids, typeIds: tokens.map((t) => t.segment), slot, group, he, she });
    }
    headItems.forEach((x, i) => {
      expect(x.inputs.inputIds).toEqual(expected[i]!.ids);
      expect(x.group).toEqual(expected[i]!.group);
      expect(x.target).toEqual({ position: expected[i]!.slot, tokenId: expected[i]!.he, versusId: expected[i]!.she });
    });

    const r = await benchmarkHeads(bert, 'winogender', headItems, benchmarkScorer(bert, 'winogender', { pronouns: items, stats }), { k: 2, controls: 1, steps: 4, attributionItems: 2 });
    expect(r.items).toBe(3);
    expect(r.ratioItems).toBe(3);
    // Ratios: Σ_q Σ_k∈group a[q, k] / |group| (mean attention on the group over its share), mean over the items.
    const traces = [];
    const sums = [[0, 0, 0, 0], [0, 0, 0, 0]];
    for (const e of expected) {
      const trace = await bert.trace(null, { ids: e.ids, typeIds: e.typeIds, logits: true });
      traces.push(trace);
      const s = trace.attention.self!;
      const n = s.dims[1];
      for (let l = 0; l < 2; l++) {
        for (let h = 0; h < 4; h++) {
          let mass = 0;
          for (let q = 0; q < n; q++) for (const k of e.group) mass += s.layers[l]![(h * n + q) * n + k]!;
          sums[l]![h]! += mass / e.group.length;
        }
      }
    }
    for (let l = 0; l < 2; l++) for (let h = 0; h < 4; h++) expect(r.ratios[l]![h]!).toBeCloseTo(sums[l]![h]! / 3, 4);
    for (let l = 0; l < 2; l++) {
      expect(r.propagation[l]!.meanRatio).toBeCloseTo(sums[l]!.reduce((a, b) => a + b, 0) / 12, 4);
      expect(r.propagation[l]!.maxRatio).toBeCloseTo(Math.max(...sums[l]!) / 3, 4);
    }
    const flat = r.ratios.flatMap((row, l) => row.map((v, h) => ({ l, h, v }))).sort((a, b) => b.v - a.v);
    expect(r.ablated.heads).toEqual(flat.slice(0, 2).map((x) => ({ layer: x.l, head: x.h })));
    // As trained: P(she) / (P(he) + P(she)) at the mask, from the trace logits, in %.
    const shares = traces.map((t, i) => {
      const lp = logProbs(t.logits!, expected[i]!.slot);
      return 1 / (1 + Math.exp(lp[expected[i]!.he]! - lp[expected[i]!.she]!));
    });
    expect(r.before.metrics.femaleShare).toBeCloseTo((100 * shares.reduce((a, b) => a + b, 0)) / 3, 3);
    expect(Object.keys(r.before.metrics)).toEqual(['femaleShare', 'correlation']);
    // With the top heads zeroed: ablateHeads' log P of he and of she at the mask.
    const heads = r.ablated.heads.map((h) => ({ stack: 'self' as const, ...h }));
    let ablated = 0;
    for (const e of expected) {
      const inputs = { inputIds: e.ids, typeIds: e.typeIds };
      const he = (await ablateHeads(bert, inputs, { heads, position: e.slot, tokenId: e.he })).target.after;
      const she = (await ablateHeads(bert, inputs, { heads, position: e.slot, tokenId: e.she })).target.after;
      ablated += 1 / (1 + Math.exp(he - she));
    }
    expect(r.ablated.metrics.femaleShare).toBeCloseTo((100 * ablated) / 3, 3);
    expect(r.controls).toHaveLength(1);
    expect(r.controls[0]!.heads).toHaveLength(2);
    expect(r.controls[0]!.heads.some((h) => r.ablated.heads.some((a) => a.layer === h.layer && a.head === h.head))).toBe(false);
    // Importance and faithfulness over the first two items.
    expect(r.faithfulness.items).toBe(2);
    const importance = [[0, 0, 0, 0], [0, 0, 0, 0]];
    const rhos: number[][][] = [[[], [], [], []], [[], [], [], []]];
    for (const [i, e] of expected.slice(0, 2).entries()) {
      const a = await attribute(bert, { inputIds: e.ids, typeIds: e.typeIds }, { target: { kind: 'contrast', position: e.slot, tokenId: e.he, versusId: e.she }, methods: ['integratedGradients', 'headImportance'], steps: 4 });
      const hi = a.headImportance!.self!.normalized.data;
      const ig = a.integratedGradients!.scores;
      const s = traces[i]!.attention.self!;
      const n = s.dims[1];
      const cands = traces[i]!.tokens.flatMap((t, j) => (t.special ? [] : [j]));
      for (let l = 0; l < 2; l++) {
        for (let h = 0; h < 4; h++) {
          importance[l]![h]! += hi[l * 4 + h]! / 2;
          rhos[l]![h]!.push(rhoOf(cands.map((k) => s.layers[l]![(h * n + e.slot) * n + k]!), cands.map((k) => Math.abs(ig[k]!))));
        }
      }
    }
    for (let l = 0; l < 2; l++) {
      for (let h = 0; h < 4; h++) {
        expect(r.importance[l]![h]!).toBeCloseTo(importance[l]![h]!, 6);
        const fin = rhos[l]![h]!.filter(Number.isFinite);
        if (fin.length) expect(r.faithfulness.rho[l]![h]!).toBeCloseTo(fin.reduce((a, b) => a + b, 0) / fin.length, 6);
      }
    }
  });

  it('WinoBias, causal LM: the words before the pronoun after the start token, T at the last; the pro-stereotypical share with heads zeroed', async () => {
    const { items: all } = await loadWinobias(['type1.dev']);
    const items = all.filter((x) => /^(he|she)$/i.test(x.forms.male.text.slice(x.forms.male.start, x.forms.male.end)) && wordSpan(x.forms.male.text, x.occupation)![0] < x.forms.male.start).slice(0, 2);
    expect(items).toHaveLength(2);
    const headItems = await pronounHeadItems(gpt2, items);
    const bos = gpt2.config.raw.bos_token_id as number;
    for (const [i, item] of items.entries()) {
      const before = item.forms.male.text.slice(0, item.forms.male.start).trimEnd();
      const tokens = (await gpt2.tokenize(before)).filter((t) => !t.special);
      expect(headItems[i]!.inputs.inputIds).toEqual([bos, ...tokens.map((t) => t.id)]);
      const [from, to] = wordSpan(before, item.occupation)!;
      expect(headItems[i]!.group).toEqual(tokens.flatMap((t, j) => (t.start < to && t.end > from ? [j + 1] : [])));
      expect(headItems[i]!.target!.position).toBe(tokens.length);
    }
    const r = await benchmarkHeads(gpt2, 'winobias', headItems, benchmarkScorer(gpt2, 'winobias', { pronouns: items }), { k: 1, controls: 1, steps: 2, attributionItems: 1 });
    expect(Object.keys(r.before.metrics)).toEqual(['proPreferred', 'femaleShare']);
    expect([0, 50, 100]).toContain(r.before.metrics.proPreferred);
    expect(r.ablated.heads).toHaveLength(1);
    expect(r.faithfulness.items).toBe(1);
    expect(r.ratios.flat().every(Number.isFinite)).toBe(true);
  });

  it('StereoSet, both kinds: BLANK as the slot, the target term as the group; the metrics as trained are the scorer’s', async () => {
    const examples = parseStereoSet(STEREOSET_FILE, 'test file');
    for (const model of [bert, gpt2]) {
      const items = await stereoHeadItems(model, examples);
      const e1 = items.find((x) => x.id === 'e1')!;
      const tokens = model.info.kind === 'decoder' ? (await model.tokenize('The nurse was')).filter((t) => !t.special) : await model.tokenize('The nurse was BLANK.');
      // The tokens overlapping 'nurse' (characters 4–9; the fixtures' small vocabularies split it), after the start token for causal LMs.
      const nurse = tokens.flatMap((t, j) => (!t.special && t.start < 9 && t.end > 4 ? [j + (model.info.kind === 'decoder' ? 1 : 0)] : []));
      expect(nurse.length).toBeGreaterThan(0);
      expect(e1.group).toEqual(nurse);
      expect(e1.target).not.toBeNull();
      const first = async (w: string) => (await model.tokenize(model.info.kind === 'decoder' ? ` ${w}` : w)).filter((t) => !t.special)[0]!.id;
      expect([e1.target!.tokenId, e1.target!.versusId]).toEqual([await first('caring'), await first('rude')]);
      const e4 = items.find((x) => x.id === 'e4')!;
      expect(e4.target).toBeNull();
      const r = await benchmarkHeads(model, 'stereoset', items, benchmarkScorer(model, 'stereoset', { examples }), { k: 1, controls: 1, steps: 2, attributionItems: 1 });
      const plain = await scoreStereoSet(model, examples);
      const o = stereoSetResults(examples.filter((e) => !plain.skipped.includes(e)), plain.scores).overall;
      expect(r.before.metrics).toEqual({ ss: o.ss, lms: o.lms, icat: o.icat });
      expect(r.ablated.heads).toHaveLength(1);
    }
  });
});
