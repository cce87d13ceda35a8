/**
 * StereoSet: evaluation.py's per-term SS, LMS and macro ICAT on a small file in the official
 * format made here, against scores computed by hand; the file's reading (BLANK's word); and the
 * sentence scores of fixture models against a float64 re-computation from trace logits.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseStereoSet, stereoSetResults, stereoSetScores } from '../src/analysis/bias/stereoset.js';
import { scoreStereoSet } from '../src/bias/stereoset.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';

const FIXTURES = join(import.meta.dirname, 'fixtures');

import { STEREOSET_FILE } from './helpers/stereoset-file.js';

describe("StereoSet's evaluation.py", () => {
  const examples = parseStereoSet(STEREOSET_FILE, 'dev.json');
  // e1: stereo > anti (pro), both > unrelated (related 2). e2: anti ≥ stereo (anti), anti > unrelated (1).
  // e3: a tie stereo = anti counts as anti; neither above unrelated. e4: pro, related 2.
  const scores = new Map<string, number>([
    ['e1-s', 0.5], ['e1-a', 0.3], ['e1-u', 0.1],
    ['e2-s', 0.2], ['e2-a', 0.4], ['e2-u', 0.3],
    ['e3-s', 0.3], ['e3-a', 0.3], ['e3-u', 0.5],
    ['e4-s', -1], ['e4-a', -2], ['e4-u', -3],
  ]);

  it('reads the file: splits, targets and the word at BLANK without punctuation', () => {
    expect(examples.map((e) => [e.id, e.split, e.target])).toEqual([['e1', 'intrasentence', 'nurse'], ['e2', 'intrasentence', 'nurse'], ['e3', 'intrasentence', 'mother'], ['e4', 'intersentence', 'Ethiopia']]);
    expect(examples[0]!.sentences.map((s) => s.templateWord)).toEqual(['caring', 'rude', 'blue']);
    expect(examples[1]!.sentences.map((s) => s.templateWord)).toEqual(['gentle', 'harsh', 'sideways']);
    expect(() => parseStereoSet({ data: { intrasentence: [{ id: 'x', bias_type: 'race', target: 't', context: 'no blank', sentences: [] }] } }, 'f.json')).toThrow(/f\.json: data\.intrasentence\[0\]: the context has no BLANK/);
    expect(() => parseStereoSet({}, 'f.json')).toThrow(/f\.json: no 'data'/);
  });

  it('per-term SS and LMS, averaged over terms; macro ICAT; counts as evaluation.py', () => {
    const r = stereoSetResults(examples, scores);
    // Intrasentence: nurse SS 50 LMS 75, mother SS 0 LMS 0 → SS 25, LMS 37.5, ICAT 37.5 · 25 / 50.
    expect(r.intrasentence.overall).toEqual({ count: 3, ss: 25, lms: 37.5, icat: 18.75 });
    // Domain lists hold each example three times: counts triple, per-term ratios unchanged.
    expect(r.intrasentence.profession).toEqual({ count: 6, ss: 50, lms: 75, icat: 75 });
    expect(r.intrasentence.gender).toEqual({ count: 3, ss: 0, lms: 0, icat: 0 });
    expect(r.intrasentence.race!.count).toBe(0);
    expect(r.intrasentence.race!.ss).toBeNaN();
    expect(r.intersentence.race).toEqual({ count: 3, ss: 100, lms: 100, icat: 0 });
    expect(r.intersentence.overall).toEqual({ count: 1, ss: 100, lms: 100, icat: 0 });
    // Overall: nurse (50, 75), mother (0, 0), Ethiopia (100, 100) → SS 50, LMS 175/3, ICAT = LMS.
    expect(r.overall.count).toBe(4);
    expect(r.overall.ss).toBeCloseTo(50, 12);
    expect(r.overall.lms).toBeCloseTo(175 / 3, 12);
    expect(r.overall.icat).toBeCloseTo(175 / 3, 12);
    expect(() => stereoSetScores(examples, new Map())).toThrow(/no score for sentence e1-s/);
  });
});

/** Softmax and log softmax of a logits row, float64, written independently of src/. */
function rowLogSoftmax(logits: { dims: readonly number[]; data: Float32Array }, row: number): number[] {
  const vocab = logits.dims[1]!;
  const xs = Array.from(logits.data.subarray(row * vocab, (row + 1) * vocab), Number);
  const max = Math.max(...xs);
  const lse = max + Math.log(xs.reduce((s, x) => s + Math.exp(x - max), 0));
  return xs.map((x) => x - lse);
}

describe('StereoSet sentence scores on fixture models', () => {
  let bert: Model;
  let gpt2: Model;
  const examples = parseStereoSet(STEREOSET_FILE, 'dev.json');
  beforeAll(async () => {
    [bert, gpt2] = await Promise.all([loadModel(join(FIXTURES, 'bert'), { graphCache: false }), loadModel(join(FIXTURES, 'gpt2'), { graphCache: false })]);
  });
  afterAll(async () => {
    await bert?.dispose();
    await gpt2?.dispose();
  });

  it("masked LM: mean P of the BLANK word's tokens, one mask at a time after the tokens before it", async () => {
    const run = await scoreStereoSet(bert, examples);
    expect(run.method).toBe('masked');
    expect(run.skipped.map((e) => e.id)).toEqual(['e4']);
    const mask = bert.tokenizer!.mask!;
    for (const e of examples.filter((x) => x.split === 'intrasentence')) {
      for (const s of e.sentences) {
        const word = (await bert.tokenize(s.templateWord!)).filter((t) => !t.special).map((t) => t.id);
        const probs: number[] = [];
        for (let i = 0; i < word.length; i++) {
          const text = e.context.replace('BLANK', `${i === 0 ? '' : bert.tokenizer!.decode(word.slice(0, i))}${mask.text}`);
          const tokens = await bert.tokenize(text);
          const at = tokens.findIndex((t) => t.id === mask.id);
          const trace = await bert.trace(null, { ids: tokens.map((t) => t.id), typeIds: tokens.map((t) => t.segment), logits: true });
          probs.push(Math.exp(rowLogSoftmax(trace.logits!, at)[word[i]!]!));
        }
        const expected = probs.reduce((a, b) => a + b, 0) / probs.length;
        expect(Math.abs(run.scores.get(s.id)! - expected) / expected).toBeLessThan(1e-4);
      }
    }
  });

  it('causal LM: intersentence 2^(mean log2 P) of the sentence after the start token and the context', async () => {
    const run = await scoreStereoSet(gpt2, examples.filter((e) => e.split === 'intersentence'));
    expect(run.method).toBe('causal');
    const e = examples.find((x) => x.id === 'e4')!;
    const bos = gpt2.config.raw.bos_token_id as number;
    const context = (await gpt2.tokenize(e.context)).map((t) => t.id);
    for (const s of e.sentences) {
      // GPT-2's BPE keeps the space with the next word: "context sentence" = context ids + " sentence" ids here.
      const sent = (await gpt2.tokenize(` ${s.sentence}`)).map((t) => t.id);
      const ids = [bos, ...context, ...sent];
      const logits = (await gpt2.trace(null, { ids, logits: true })).logits!;
      let sum = 0;
      for (let i = context.length + 1; i < ids.length; i++) sum += rowLogSoftmax(logits, i - 1)[ids[i]!]!;
      const expected = Math.exp(sum / sent.length);
      expect(Math.abs(run.scores.get(s.id)! - expected) / expected).toBeLessThan(1e-4);
    }
  });
});
