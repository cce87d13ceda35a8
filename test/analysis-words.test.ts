/**
 * src/analysis/words.ts: the word rule on a hand case worked out on paper, sums preserved on a
 * random row-stochastic matrix, the sentence split (Intl.Segmenter) on real BERT and stories260k
 * traces with inter-sentence attention against plain loops over the token matrix, drilling into
 * a cell, and words from the text for a SentencePiece tokenizer.
 */
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { blockMatrix, drillBlock, groupMatrix, sentenceAttention, sentenceUnits, textWordUnits, wordAttention, wordUnits } from '../src/analysis/words.js';
import type { Token, Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';

const ROOT = join(import.meta.dirname, '..');

function tok(text: string, start: number, end: number, word: number | null, special = false, segment = 0): Token {
  return { id: 0, text, start, end, special, segment, word };
}

// "hello world" as [CLS] he ##llo world [SEP].
const TOKENS = [tok('[CLS]', 0, 0, null, true), tok('he', 0, 2, 0), tok('##llo', 2, 5, 0), tok('world', 6, 11, 1), tok('[SEP]', 0, 0, null, true)];
// prettier-ignore
const A = Float32Array.from([
  0.2, 0.2, 0.2, 0.2, 0.2,
  0.1, 0.3, 0.2, 0.4, 0.0,
  0.0, 0.5, 0.1, 0.2, 0.2,
  0.4, 0.0, 0.0, 0.6, 0.0,
  0.1, 0.1, 0.1, 0.1, 0.6,
]);

function expectClose(actual: ArrayLike<number>, expected: readonly number[], digits = 6): void {
  expect(actual.length).toBe(expected.length);
  expected.forEach((v, i) => expect(actual[i]).toBeCloseTo(v, digits));
}

describe('word units and the word rule', () => {
  it('groups by word within the segment, specials alone, labels from the text', () => {
    const units = wordUnits(TOKENS, ['hello world']);
    expect(units.map((u) => u.tokens)).toEqual([[0], [1, 2], [3], [4]]);
    expect(units.map((u) => u.label)).toEqual(['[CLS]', 'hello', 'world', '[SEP]']);
    expect(units.map((u) => u.special)).toEqual([true, false, false, true]);
    expect(wordUnits(TOKENS).map((u) => u.label)).toEqual(['[CLS]', 'hello', 'world', '[SEP]']);
  });

  it('keys summed, queries averaged (worked by hand), and the other rules', () => {
    const units = wordUnits(TOKENS);
    const W = groupMatrix(A, 5, 5, units, units);
    // Row "hello" = mean of rows he (0.1 | 0.3+0.2 | 0.4 | 0) and ##llo (0 | 0.5+0.1 | 0.2 | 0.2).
    // prettier-ignore
    expectClose(W, [
      0.2, 0.4, 0.2, 0.2,
      0.05, 0.55, 0.3, 0.1,
      0.4, 0.0, 0.6, 0.0,
      0.1, 0.2, 0.1, 0.6,
    ]);
    const max = groupMatrix(A, 5, 5, units, units, { query: 'max', key: 'max' });
    expect(max[1 * 4 + 1]).toBeCloseTo(0.5, 6); // max of 0.3, 0.2, 0.5, 0.1
    expect(max[1 * 4 + 2]).toBeCloseTo(0.4, 6);
    const sum = groupMatrix(A, 5, 5, units, units, { query: 'sum', key: 'mean' });
    expect(sum[1 * 4 + 1]).toBeCloseTo((0.3 + 0.2) / 2 + (0.5 + 0.1) / 2, 6);
    expect(() => groupMatrix(A, 5, 5, units, units, { query: 'median' as 'mean' })).toThrow(/query rule: unknown rule 'median' \(expected mean, sum, max\)/);
  });

  it('sums preserved: rows still sum to 1, and the total with summed queries', () => {
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const n = 23;
    const m = new Float32Array(n * n);
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < n; j++) s += m[i * n + j] = rand();
      for (let j = 0; j < n; j++) m[i * n + j]! /= s;
    }
    const units = [[0], [1, 2, 3], [4], [5, 6], [7, 8, 9, 10, 11], [12], [13, 14], [15, 16, 17, 18, 19, 20, 21, 22]].map((tokens) => ({ tokens }));
    const W = groupMatrix(m, n, n, units, units);
    for (let u = 0; u < units.length; u++) {
      let s = 0;
      for (let v = 0; v < units.length; v++) s += W[u * units.length + v]!;
      expect(s).toBeCloseTo(1, 5);
    }
    const total = groupMatrix(m, n, n, units, units, { query: 'sum' }).reduce((a, b) => a + b, 0);
    expect(total).toBeCloseTo(n, 4);
  });

  it('words from the text for a tokenizer whose word ids span the whole text (stories260k)', async () => {
    const model = await loadModel(undefined);
    try {
      const text = 'Hello world, the cat sat.';
      const trace = await model.trace(text);
      expect(new Set(trace.tokens.filter((t) => !t.special).map((t) => t.word)).size).toBe(1);
      const units = textWordUnits(trace.tokens, text);
      expect(units.map((u) => u.label)).toEqual(['Hello', 'world', ',', 'the', 'cat', 'sat', '.']);
      // Every non-special token in exactly one unit.
      const all = units.flatMap((u) => u.tokens).sort((a, b) => a - b);
      expect(all).toEqual(trace.tokens.map((_, i) => i).filter((i) => !trace.tokens[i]!.special));
    } finally {
      await model.dispose();
    }
  });
});

describe('sentences', () => {
  let trace: Trace;
  let pair: Trace;
  const TEXT = 'The cat sat on the mat. It was tired! Then it slept.';
  beforeAll(async () => {
    const model = await loadModel(join(ROOT, 'test', 'fixtures', 'bert'));
    try {
      trace = await model.trace(TEXT);
      pair = await model.trace('The cat sat. It purred.', { pair: 'Dogs bark.' });
    } finally {
      await model.dispose();
    }
  });

  it('splits by Intl.Segmenter, specials alone', () => {
    const units = sentenceUnits(trace.tokens, [TEXT]);
    expect(units.map((u) => u.label)).toEqual(['[CLS]', 'The cat sat on the mat.', 'It was tired!', 'Then it slept.', '[SEP]']);
    // The sentences' tokens by their texts.
    expect(units[2]!.tokens.map((i) => trace.tokens[i]!.text)).toEqual(['it', 'was', 'tired', '!']);
    const p = sentenceUnits(pair.tokens, ['The cat sat. It purred.', 'Dogs bark.']);
    expect(p.map((u) => [u.label, u.segment])).toEqual([
      ['[CLS]', 0],
      ['The cat sat.', 0],
      ['It purred.', 0],
      ['[SEP]', 0],
      ['Dogs bark.', 1],
      ['[SEP]', 1],
    ]);
  });

  it('inter-sentence attention (mean, max, share) against loops over the token matrix, and drilling into a cell', () => {
    const s = trace.attention.self!;
    const [, n] = s.dims;
    const layer = 1;
    const head = 2;
    const M = s.layers[layer]!.subarray(head * n * n, (head + 1) * n * n);
    const units = sentenceUnits(trace.tokens, [TEXT]);
    const mean = sentenceAttention(trace, { layer, head, texts: [TEXT] });
    const max = sentenceAttention(trace, { layer, head, texts: [TEXT], rule: 'max' });
    const share = sentenceAttention(trace, { layer, head, texts: [TEXT], rule: 'share' });
    const U = units.length;
    for (let a = 0; a < U; a++) {
      let rowShare = 0;
      for (let b = 0; b < U; b++) {
        let sum = 0;
        let mx = -1;
        for (const i of units[a]!.tokens) {
          for (const j of units[b]!.tokens) {
            sum += M[i * n + j]!;
            mx = Math.max(mx, M[i * n + j]!);
          }
        }
        const count = units[a]!.tokens.length * units[b]!.tokens.length;
        expect(mean.values[a * U + b]).toBeCloseTo(sum / count, 6);
        expect(max.values[a * U + b]).toBe(Math.fround(mx));
        expect(share.values[a * U + b]).toBeCloseTo(sum / units[a]!.tokens.length, 6);
        rowShare += share.values[a * U + b]!;
      }
      expect(rowShare).toBeCloseTo(1, 5);
    }
    const cell = drillBlock(M, n, units[1]!, units[2]!);
    expect(cell.rows).toEqual(units[1]!.tokens);
    expect(cell.cols).toEqual(units[2]!.tokens);
    expect(cell.values[0]).toBe(M[units[1]!.tokens[0]! * n + units[2]!.tokens[0]!]);
    expect(blockMatrix(M, n, n, units, units, 'mean')).toEqual(mean.values);
  });

  it("a causal model's sentence means count only the entries it could attend (diagonal blocks not halved)", async () => {
    const model = await loadModel(join(ROOT, 'test', 'fixtures', 'gpt2'));
    let causal: Trace;
    try {
      causal = await model.trace(TEXT);
    } finally {
      await model.dispose();
    }
    const s = causal.attention.self!;
    const [, n] = s.dims;
    const M = s.layers[1]!.subarray(0, n * n);
    const units = sentenceUnits(causal.tokens, [TEXT]);
    const mean = sentenceAttention(causal, { layer: 1, head: 0, texts: [TEXT] });
    const U = units.length;
    for (let a = 0; a < U; a++) {
      for (let b = 0; b < U; b++) {
        let sum = 0;
        let count = 0;
        for (const i of units[a]!.tokens) for (const j of units[b]!.tokens) if (j <= i) (sum += M[i * n + j]!), count++;
        expect(mean.values[a * U + b]).toBeCloseTo(count > 0 ? sum / count : 0, 6);
      }
    }
  });

  it('word attention of a real trace: each word row sums to 1', () => {
    const w = wordAttention(trace, { layer: 0, head: 'mean', texts: [TEXT] });
    expect(w.rows.map((u) => u.label).slice(0, 4)).toEqual(['[CLS]', 'The', 'cat', 'sat']);
    const U = w.rows.length;
    for (let a = 0; a < U; a++) expect(w.values.subarray(a * U, (a + 1) * U).reduce((x, y) => x + y, 0)).toBeCloseTo(1, 5);
  });

  it('a text that does not match the trace is refused with one clear line', () => {
    expect(() => sentenceUnits(trace.tokens, ['short'])).toThrow(/token \d+ \('\w+'\) ends at character \d+, beyond the text's 5 characters/);
  });
});
