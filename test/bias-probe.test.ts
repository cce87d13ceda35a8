/**
 * Bias probes on any text: the built-in group lists, finding group words, counterfactual swaps on
 * hand-written sentences with tricky grammar (her → his/him, his → her/hers, a/an, case), the bias
 * attention ratio by hand, Benjamini–Hochberg and Holm by hand, the permutation test's calibration
 * (p-values of random token sets are uniform), and the probe on a fixture model.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { articleFor, counterfactual, findGroupWords, genderLexicon, mentionTokens, occupationLexicon, type GroupLexicon } from '../src/analysis/bias/groups.js';
import { benjaminiHochberg, biasAttentionRatio, headBiasScores, holm } from '../src/analysis/bias/attention-bias.js';
import { loadGroupLexicons } from '../src/bias/data-files.js';
import { biasProbe } from '../src/bias/probe.js';
import { mulberry32 } from '../src/core/random.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';

const FIXTURES = join(import.meta.dirname, 'fixtures');

describe('group words and counterfactuals', () => {
  let lexicons: GroupLexicon[];
  let gender: GroupLexicon;
  beforeAll(async () => {
    lexicons = await loadGroupLexicons();
    gender = lexicons.find((l) => l.name === 'gender')!;
  });

  it('builds the lists from the shipped data', () => {
    expect(lexicons.map((l) => l.name)).toEqual(['gender', 'occupation', 'race-color', 'nationality', 'religion', 'age', 'socioeconomic', 'sexual-orientation', 'physical-appearance', 'disability']);
    expect(gender.swaps.get('he')).toBe('she');
    expect(gender.swaps.get('actress')).toBe('actor');
    expect(lexicons.find((l) => l.name === 'occupation')!.words.has('technician')).toBe(true);
    expect(lexicons.find((l) => l.name === 'race-color')!.swaps.get('black')).toBe('white');
    expect(lexicons.find((l) => l.name === 'disability')!.words.has('with')).toBe(false);
    const small = genderLexicon('actor \t actress \nking\tqueen\n', 'cowboy\tcowgirl\n');
    expect([...small.swaps].slice(-6)).toEqual([['actor', 'actress'], ['actress', 'actor'], ['king', 'queen'], ['queen', 'king'], ['cowboy', 'cowgirl'], ['cowgirl', 'cowboy']]);
    expect(small.swaps.get('hers')).toBe('his');
  });

  it('finds words case-insensitively, whole words only, longest phrase first', () => {
    const lex: GroupLexicon[] = [{ name: 'g', words: new Set(['he', 'old man', 'man']), swaps: new Map() }, occupationLexicon('nurse\n')];
    const text = 'The old man said: "He, the nurse" — hen the manly man.';
    expect(findGroupWords(text, lex).map((m) => [m.group, m.text, m.start])).toEqual([
      ['g', 'old man', 4], ['g', 'He', 19], ['occupation', 'nurse', 27], ['g', 'man', text.lastIndexOf('man')],
    ]);
    const tokens = [{ start: 0, end: 0, special: true }, { start: 0, end: 3, special: false }, { start: 4, end: 7, special: false }, { start: 8, end: 11, special: false }];
    expect(mentionTokens(tokens, [{ group: 'g', text: 'old man', start: 4, end: 11 }])).toEqual([2, 3]);
  });

  it('swaps with grammatical repairs', () => {
    const cases: [string, string][] = [
      ['She gave her book to her brother and thanked him.', 'He gave his book to his sister and thanked her.'],
      ['I saw her.', 'I saw him.'],
      ['I gave her the keys.', 'I gave him the keys.'],
      ['I told her that he was late.', 'I told him that she was late.'],
      ['He is an actor and a waiter; his car is his.', 'She is an actress and a waitress; her car is hers.'],
      ['That car is hers, not his.', 'That car is his, not hers.'],
      ['HE told his Uncle about her', 'SHE told her Aunt about him'],
      ['An uncle and a nephew', 'An aunt and a niece'],
      ['My father is a king.', 'My mother is a queen.'],
    ];
    for (const [text, expected] of cases) expect(counterfactual(text, [gender]).text).toBe(expected);
    // a/an re-chosen when the new word starts otherwise.
    const lex: GroupLexicon[] = [{ name: 'x', words: new Set(['old', 'young']), swaps: new Map([['old', 'young'], ['young', 'old']]) }];
    expect(counterfactual('An old man met a young woman.', lex).text).toBe('A young man met an old woman.');
    expect(counterfactual('An old man', lex).changes).toEqual([{ from: 'An', to: 'A', start: 0, end: 1 }, { from: 'old', to: 'young', start: 2, end: 7 }]);
    expect([articleFor('hour'), articleFor('unicorn'), articleFor('apple'), articleFor('dog')]).toEqual(['an', 'a', 'an', 'a']);
  });
});

describe('bias attention ratio and the permutation test', () => {
  it('BAR by hand: bidirectional, causal, self-reinforcement', () => {
    // 3 × 3, G = {1}: rows put 0.5, 0.2, 0.8 on key 1; share 1/3 each → (1.5) / (1) = 1.5.
    const m = [0.25, 0.5, 0.25, 0.4, 0.2, 0.4, 0.1, 0.8, 0.1];
    expect(biasAttentionRatio(m, 3, 3, [1], { causal: false })).toBeCloseTo(1.5, 12);
    // Causal: row 0 sees only key 0 (no G); row 1 sees 2 keys (share 1/2, mass 0.2); row 2 sees 3 (1/3, 0.8) → 1.0 / (5/6).
    expect(biasAttentionRatio(m, 3, 3, [1], { causal: true })).toBeCloseTo(1.0 / (5 / 6), 12);
    expect(biasAttentionRatio(m, 3, 3, [1], { causal: false, queries: [1] })).toBeCloseTo(0.2 / (1 / 3), 12);
    expect(biasAttentionRatio(m, 3, 3, [2], { causal: true, queries: [0, 1] })).toBeNaN();
  });

  it('Benjamini–Hochberg and Holm by hand', () => {
    // p sorted: 0.01, 0.02, 0.03, 0.5 (m = 4): BH 0.04, 0.04, 0.04, 0.5; Holm 0.04, 0.06, 0.06, 0.5.
    const ps = [0.03, 0.5, 0.01, Number.NaN, 0.02];
    const q = benjaminiHochberg(ps);
    [0.04, 0.5, 0.04, Number.NaN, 0.04].forEach((v, i) => (Number.isNaN(v) ? expect(q[i]).toBeNaN() : expect(q[i]).toBeCloseTo(v, 12)));
    const h = holm(ps);
    [0.06, 0.5, 0.04, Number.NaN, 0.06].forEach((v, i) => (Number.isNaN(v) ? expect(h[i]).toBeNaN() : expect(h[i]).toBeCloseTo(v, 12)));
  });

  it('is calibrated: p-values of random token sets are uniform', () => {
    // One random attention stack (rows softmax of random scores), many random groups of 3 of 16 positions.
    const rand = mulberry32(7);
    const n = 16;
    const heads = 2;
    const layer = new Float32Array(heads * n * n);
    for (let r = 0; r < heads * n; r++) {
      const xs = Array.from({ length: n }, () => Math.exp(3 * rand()));
      const s = xs.reduce((a, b) => a + b, 0);
      xs.forEach((x, k) => (layer[r * n + k] = x / s));
    }
    const stack = { dims: [heads, n, n] as [number, number, number], layers: [layer] };
    const ps: number[] = [];
    for (let trial = 0; trial < 400; trial++) {
      const group = Array.from({ length: n }, (_, i) => i).sort(() => rand() - 0.5).slice(0, 3);
      for (const s of headBiasScores(stack, group, { causal: false, permutations: 99, seed: 1000 + trial })) ps.push(s.p);
    }
    // p is uniform on {1/100, …, 1}: P(p ≤ α) = α. 800 p-values: binomial sd at α = 0.05 is 0.0077.
    for (const alpha of [0.05, 0.1, 0.25, 0.5]) {
      const frac = ps.filter((p) => p <= alpha + 1e-12).length / ps.length;
      expect(Math.abs(frac - alpha)).toBeLessThan(4 * Math.sqrt((alpha * (1 - alpha)) / ps.length));
    }
    // Kolmogorov–Smirnov distance to the uniform below the 1% critical value (1.63 / √n).
    const sorted = [...ps].sort((a, b) => a - b);
    const d = Math.max(...sorted.map((p, i) => Math.max(Math.abs((i + 1) / sorted.length - p), Math.abs(i / sorted.length - p))));
    expect(d).toBeLessThan(1.63 / Math.sqrt(sorted.length) + 0.01);
  });

  it('finds a head that attends to the group', () => {
    // Head 0 puts 0.3 of every row on each of keys 2, 5, 7; head 1 is uniform. 40 keys: a random
    // set of 3 is G itself once in 9,880 draws, so no null set reaches head 0's ratio.
    const n = 40;
    const group = [2, 5, 7];
    const layer = new Float32Array(2 * n * n);
    for (let q = 0; q < n; q++) {
      for (let k = 0; k < n; k++) {
        layer[q * n + k] = group.includes(k) ? 0.3 : 0.1 / (n - 3);
        layer[(n + q) * n + k] = 1 / n;
      }
    }
    const [h0, h1] = headBiasScores({ dims: [2, n, n], layers: [layer] }, group, { causal: false, permutations: 199, seed: 3 });
    // BAR = 0.9 / (3/40) = 12; uniform: 1.
    expect(h0!.ratio).toBeCloseTo(12, 4);
    expect(h0!.selfRatio).toBeCloseTo(12, 4);
    expect(h0!.p).toBeCloseTo(1 / 200, 12);
    expect(h1!.ratio).toBeCloseTo(1, 4);
    expect(h1!.p).toBeGreaterThan(0.1);
    // BH over two p-values: the smaller times 2.
    expect(h0!.q).toBeCloseTo(2 / 200, 12);
  });
});

describe('the probe on a fixture model', () => {
  let gpt2: Model;
  beforeAll(async () => {
    gpt2 = await loadModel(join(FIXTURES, 'gpt2'), { graphCache: false });
  });
  afterAll(async () => {
    await gpt2?.dispose();
  });

  it('swaps, compares predictions and attention, and scores every head', async () => {
    const lexicons = await loadGroupLexicons(['gender']);
    const probe = await biasProbe(gpt2, 'The doctor said that he would call his wife', lexicons, { permutations: 49 });
    expect(probe.counterfactual.text).toBe('The doctor said that she would call her husband');
    expect(probe.mentions.map((m) => m.text)).toEqual(['he', 'his', 'wife']);
    // The group tokens are exactly the non-special tokens overlapping a mention's characters.
    const inside = probe.original.tokens.flatMap((t, i) => (!t.special && probe.mentions.some((m) => t.start < m.end && t.end > m.start) ? [i] : []));
    expect(probe.groupTokens).toEqual(inside);
    expect(inside.length).toBeGreaterThanOrEqual(3);
    expect(probe.heads).toHaveLength(2 * 4);
    for (const h of probe.heads) {
      const stack = probe.original.attention.self!;
      const n = stack.dims[1];
      const m = stack.layers[h.layer]!.subarray(h.head * n * n, (h.head + 1) * n * n);
      expect(h.ratio).toBeCloseTo(biasAttentionRatio(m, n, n, probe.groupTokens, { causal: true }), 12);
      expect(h.p).toBeGreaterThan(0);
      expect(h.p).toBeLessThanOrEqual(1);
    }
    expect(probe.predictions).toHaveLength(1);
    expect(probe.predictions[0]!.original).toHaveLength(5);
    expect(probe.attention?.ranking).toHaveLength(8);
  });
});
