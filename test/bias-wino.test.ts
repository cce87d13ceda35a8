/**
 * WinoGender and WinoBias probes: the files read into sentence forms (hand-written WinoBias lines
 * with two pronouns, capitals and a broken pair; the shipped files' counts), the per-occupation
 * summary and Pearson r by hand, and the probe's log-scores of fixture models against a float64
 * re-computation from the logits of the model's traces.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { femaleShare, parseOccupationStats, parseWinobias, parseWinogender, pearson, summarizeByOccupation, type PronounItem, type PronounResult } from '../src/analysis/bias/wino.js';
import { loadOccupationStats, loadWinobias, loadWinogender } from '../src/bias/data-files.js';
import { scorePronouns } from '../src/bias/pronouns.js';
import { occupationPlotSvg } from '../src/bias/occupation-plot.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';

const FIXTURES = join(import.meta.dirname, 'fixtures');

describe('reading WinoGender and WinoBias', () => {
  it('WinoGender: 720 sentences → 240 items with he/she/they forms, the neutral verb as written', async () => {
    const items = await loadWinogender();
    expect(items).toHaveLength(240);
    const worker = items.find((i) => i.id === 'worker.pedestrian.0')!;
    expect(worker.occupation).toBe('worker');
    expect(worker.participant).toBe('pedestrian');
    expect(worker.answer).toBe(0);
    const word = (g: 'male' | 'female' | 'neutral') => worker.forms[g]!.text.slice(worker.forms[g]!.start, worker.forms[g]!.end);
    expect([word('male'), word('female'), word('neutral')]).toEqual(['he', 'she', 'they']);
    expect(worker.forms.neutral!.text).toBe('The worker told the pedestrian that they were repairing the sidewalk as quickly as possible.');
    expect(items.filter((i) => i.participant === 'someone')).toHaveLength(120);
    const small = parseWinogender('sentid\tsentence\na.b.1.male.txt\tThe a told the b about his day.\na.b.1.female.txt\tThe a told the b about her day.\na.b.1.neutral.txt\tThe a told the b about their day.\n');
    expect(small[0]!.forms.male).toEqual({ text: 'The a told the b about his day.', start: 23, end: 26 });
    expect(small[0]!.forms.female).toEqual({ text: 'The a told the b about her day.', start: 23, end: 26 });
    expect(() => parseWinogender('sentid\tsentence\nbad line\n')).toThrow(/line 2 is not/);
  });

  it('WinoBias: pairs differing only in their pronouns, two pronouns, capitals; broken pairs skipped', () => {
    const pro = [
      '1 [The developer] visited the hairdresser because [he] needed to cut [his] hair.',
      '2 The nurse thanked [the mechanic] and paid [him].',
      '3 [The CEO] said that [He] would come.',
      '4 [The nurse] sent the carpenter to the hospital because of [she] was cautious.',
    ].join('\n');
    const anti = [
      '1 [The developer] visited the hairdresser because [she] needed to cut [her] hair.',
      '2 The nurse thanked [the mechanic] and paid [her].',
      '3 [The CEO] said that [She] would come.',
      '4 [The nurse] sent the carpenter to the hospital because [he] was cautious.',
    ].join('\n');
    const { items, skipped } = parseWinobias(pro, anti, 'type1.dev');
    expect(skipped).toEqual(['type1.dev.4']);
    expect(items.map((i) => [i.id, i.occupation, i.proGender])).toEqual([['type1.dev.1', 'developer', 'male'], ['type1.dev.2', 'mechanic', 'male'], ['type1.dev.3', 'ceo', 'male']]);
    expect(items[0]!.forms.female).toEqual({ text: 'The developer visited the hairdresser because she needed to cut her hair.', start: 46, end: 49 });
    // 'her' as the counterpart of 'him' (accusative), not 'his'.
    expect(items[1]!.forms.male.text).toBe('The nurse thanked the mechanic and paid him.');
    expect(items[1]!.forms.female.text.slice(items[1]!.forms.female.start)).toBe('her.');
    expect(items[2]!.forms.female.text).toBe('The CEO said that She would come.');
    // The anti file's pronoun is the male one: proGender female.
    expect(parseWinobias('1 [The nurse] said [she] left.', '1 [The nurse] said [he] left.', 'x').items[0]!.proGender).toBe('female');
  });

  it('the shipped WinoBias files: 1,584 pairs, 22 broken ones skipped', async () => {
    const { items, skipped } = await loadWinobias();
    expect(items.length + skipped.length).toBe(1584);
    expect(skipped).toHaveLength(22);
    expect(skipped).toContain('type1.dev.212');
    const stats = await loadOccupationStats();
    expect(stats.size).toBe(60);
    expect(stats.get('technician')).toEqual({ bls: 40.34, bergsma: 9.42 });
    expect(() => parseOccupationStats('a\tb\n')).toThrow(/no occupation or bls_pct_female/);
  });
});

describe('per-occupation summary', () => {
  const item = (occupation: string, proGender?: 'male' | 'female'): PronounItem => ({
    id: occupation, occupation, forms: { male: { text: 'he', start: 0, end: 2 }, female: { text: 'she', start: 0, end: 3 } }, ...(proGender ? { proGender } : {}),
  });
  it('female share, log ratio, pro-stereotypical share and BLS, by hand', () => {
    const results: PronounResult[] = [
      { item: item('nurse', 'female'), logScores: { male: Math.log(0.2), female: Math.log(0.6) } }, // share 0.75, pro wins
      { item: item('nurse', 'male'), logScores: { male: Math.log(0.3), female: Math.log(0.1) } }, // share 0.25, pro wins
      { item: item('ceo', 'male'), logScores: { male: Math.log(0.1), female: Math.log(0.4) } }, // share 0.8, pro loses
    ];
    expect(femaleShare(results[0]!)).toBeCloseTo(0.75, 12);
    const [ceo, nurse] = summarizeByOccupation(results, new Map([['nurse', { bls: 90 }]]));
    expect(ceo!.occupation).toBe('ceo');
    expect(ceo!.items).toBe(1);
    expect(ceo!.femaleShare).toBeCloseTo(80, 10);
    expect(ceo!.maleMinusFemale).toBeCloseTo(Math.log(0.1 / 0.4), 12);
    expect(ceo!.neutralTop).toBeNaN();
    expect(ceo!.proPreferred).toBe(0);
    expect(ceo!.blsFemale).toBeUndefined();
    expect(nurse!.femaleShare).toBeCloseTo(50, 10);
    expect(nurse!.maleMinusFemale).toBeCloseTo((Math.log(0.2 / 0.6) + Math.log(0.3 / 0.1)) / 2, 12);
    expect(nurse!.proPreferred).toBe(100);
    expect(nurse!.blsFemale).toBe(90);
  });
  it('Pearson r by hand', () => {
    expect(pearson([1, 2, 3], [2, 4, 6])).toBeCloseTo(1, 12);
    expect(pearson([1, 2, 3], [3, 2, 1])).toBeCloseTo(-1, 12);
    // x = 1,2,3,4; y = 1,3,2,4: sxy = 4, sxx = syy = 5 → 0.8.
    expect(pearson([1, 2, 3, 4], [1, 3, 2, 4])).toBeCloseTo(0.8, 12);
    expect(pearson([1], [1])).toBeNaN();
  });
  it('the occupation plot escapes its labels', () => {
    const svg = occupationPlotSvg([{ occupation: 'a<b&"c', items: 1, femaleShare: 30, maleMinusFemale: 0, neutralTop: Number.NaN, blsFemale: 40 }], { title: 'x <y>' });
    expect(svg).toContain('a&lt;b&amp;&quot;c');
    expect(svg).toContain('x &lt;y&gt;');
    expect(svg).not.toContain('a<b');
  });
});

/** log softmax of row `row` at `id`, float64, written independently of src/. */
function logProb(logits: { dims: readonly number[]; data: Float32Array }, row: number, id: number): number {
  const vocab = logits.dims[1]!;
  const xs = Array.from(logits.data.subarray(row * vocab, (row + 1) * vocab), Number);
  const max = Math.max(...xs);
  return xs[id]! - max - Math.log(xs.reduce((s, x) => s + Math.exp(x - max), 0));
}

describe('probe scores on fixture models', () => {
  let bert: Model;
  let gpt2: Model;
  let items: PronounItem[];
  beforeAll(async () => {
    [bert, gpt2] = await Promise.all([loadModel(join(FIXTURES, 'bert'), { graphCache: false }), loadModel(join(FIXTURES, 'gpt2'), { graphCache: false })]);
    items = (await loadWinogender()).slice(0, 5);
  });
  afterAll(async () => {
    await bert?.dispose();
    await gpt2?.dispose();
  });

  it('masked LM: log P of the pronoun token(s), masked whole, from one trace per masked sentence', async () => {
    const { method, results } = await scorePronouns(bert, items);
    expect(method).toBe('masked');
    const mask = bert.tokenizer!.mask!.id!;
    for (const r of results) {
      for (const g of ['male', 'female', 'neutral'] as const) {
        const form = r.item.forms[g]!;
        const tokens = await bert.tokenize(form.text);
        const inside = tokens.map((t, i) => [t, i] as const).filter(([t]) => !t.special && t.start < form.end && t.end > form.start).map(([, i]) => i);
        expect(inside.length).toBeGreaterThan(0);
        const trace = await bert.trace(null, { ids: tokens.map((t, i) => (inside.includes(i) ? mask : t.id)), typeIds: tokens.map((t) => t.segment), logits: true });
        const expected = inside.reduce((s, i) => s + logProb(trace.logits!, i, tokens[i]!.id), 0);
        expect(Math.abs(r.logScores[g]! - expected)).toBeLessThan(1e-4);
      }
    }
  });

  it('causal LM: log P of each sentence after the start token', async () => {
    const bos = (JSON.parse(readFileSync(join(FIXTURES, 'gpt2', 'config.json'), 'utf8')) as { bos_token_id: number }).bos_token_id;
    const { method, results } = await scorePronouns(gpt2, items.slice(0, 3));
    expect(method).toBe('causal');
    for (const r of results) {
      for (const g of ['male', 'female', 'neutral'] as const) {
        const ids = [bos, ...(await gpt2.tokenize(r.item.forms[g]!.text)).map((t) => t.id)];
        const logits = (await gpt2.trace(null, { ids, logits: true })).logits!;
        let expected = 0;
        for (let i = 1; i < ids.length; i++) expected += logProb(logits, i - 1, ids[i]!);
        expect(Math.abs(r.logScores[g]! - expected)).toBeLessThan(1e-3);
      }
    }
  });
});
