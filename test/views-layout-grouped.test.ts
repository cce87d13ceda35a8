/**
 * Word- and sentence-level heatmap layout: the cells it paints against a float64 re-computation
 * written here from the trace's raw weights and hand-listed units (each rule: mean, max, sum,
 * share), the drilled block against the raw token weights, fully masked blocks blank, labels from
 * the text, the SVG writer (title, escaping) and the embedded model on a three-sentence paragraph.
 */
import { describe, expect, it } from 'vitest';
import type { Token, Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import type { MatrixItem, TextItem } from '../src/views/layout/common.js';
import { type GroupCellRule, drillLayout, groupedHeatmapLayout, groupedHeatmapModel, rebuildTexts } from '../src/views/layout/grouped-heatmap.js';
import { renderSvg } from '../src/views/svg/index.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

// "Hi there. Bye now! Ok <b>." as a BOS and eight tokens (offsets and words by hand).
const TEXT = 'Hi there. Bye now! Ok <b>.';
const PIECES: [string, number, number, number | null][] = [
  ['<s>', 0, 0, null],
  ['▁Hi', 0, 2, 0],
  ['▁there', 2, 8, 1],
  ['.', 8, 9, 2],
  ['▁By', 9, 12, 3],
  ['e', 12, 13, 3],
  ['▁now', 13, 17, 4],
  ['!', 17, 18, 5],
  ['▁Ok', 18, 21, 6],
  ['▁<b>', 21, 25, 7],
  ['.', 25, 26, 8],
];
// Sentences by hand: [<s>], [Hi there.], [Bye now!], [Ok <b>.]; words: every token alone but By|e.
const SENTENCES = [[0], [1, 2, 3], [4, 5, 6, 7], [8, 9, 10]];
const WORDS = [[0], [1], [2], [3], [4, 5], [6], [7], [8], [9], [10]];

function paragraphTrace(causal: boolean): Trace {
  const n = PIECES.length;
  const tokens: Token[] = PIECES.map(([text, start, end, word], i) => ({ id: i + 1, text, start, end, special: i === 0, segment: 0, word }));
  const H = 3;
  const layers = [0, 1].map((l) => {
    const a = new Float32Array(H * n * n);
    for (let h = 0; h < H; h++) {
      for (let q = 0; q < n; q++) {
        let s = 0;
        const w = (k: number) => (causal && k > q ? 0 : 1 + ((q * 7 + k * 3 + h * 5 + l) % 11));
        for (let k = 0; k < n; k++) s += w(k);
        for (let k = 0; k < n; k++) a[(h * n + q) * n + k] = w(k) / s;
      }
    }
    return a;
  });
  return {
    model: { name: 'hand <made>', modelType: 'llama', numLayers: 2, numHeads: H, numKeyValueHeads: H, headDim: 4 },
    tokens,
    attention: { self: { dims: [H, n, n], layers } },
  };
}

/** The token matrix in float64: head h, or the mean over heads. */
function tokenMatrix(trace: Trace, layer: number, head: number | 'mean'): number[][] {
  const [H, n] = trace.attention.self!.dims;
  const a = trace.attention.self!.layers[layer]!;
  const hs = head === 'mean' ? Array.from({ length: H }, (_, h) => h) : [head];
  return Array.from({ length: n }, (_, q) => Array.from({ length: n }, (_, k) => hs.reduce((s, h) => s + a[(h * n + q) * n + k]!, 0) / hs.length));
}

/** One cell by a rule, in float64, straight from its definition. */
function cell(m: number[][], U: number[], V: number[], rule: GroupCellRule): number {
  const block = U.map((i) => V.map((j) => m[i]![j]!));
  const all = block.flat();
  if (rule === 'mean') return all.reduce((s, x) => s + x, 0) / all.length;
  if (rule === 'max') return Math.max(...all);
  if (rule === 'sum') return all.reduce((s, x) => s + x, 0);
  return block.map((row) => row.reduce((s, x) => s + x, 0)).reduce((s, x) => s + x, 0) / U.length;
}

const matrixOf = (items: readonly { kind: string }[]) => items.filter((it): it is MatrixItem => it.kind === 'matrix');

describe('grouped heatmap layout', () => {
  const trace = paragraphTrace(false);

  for (const rule of ['mean', 'max', 'sum', 'share'] as const) {
    it(`sentences × sentences by the ${rule} rule equal the float64 re-computation (head 2 and the mean over heads)`, () => {
      for (const head of [2, 'mean'] as const) {
        const model = groupedHeatmapModel(trace, { by: 'sentences', layer: 1, rule, texts: [TEXT], ...(head === 'mean' ? { aggregate: 'mean' } : { head }) });
        expect(model.rows.map((u) => u.tokens)).toEqual(SENTENCES);
        const L = groupedHeatmapLayout(model);
        const [m] = matrixOf(L.items);
        expect([m!.rows, m!.cols]).toEqual([4, 4]);
        const ref = tokenMatrix(trace, 1, head);
        for (let a = 0; a < 4; a++) for (let b = 0; b < 4; b++) expect(m!.values[a * 4 + b]).toBeCloseTo(cell(ref, SENTENCES[a]!, SENTENCES[b]!, rule), 6);
      }
    });
  }

  it('words × words (share, the words default) and the labels from the text', () => {
    const model = groupedHeatmapModel(trace, { by: 'words', layer: 0, head: 1, texts: [TEXT] });
    expect(model.rule).toBe('share');
    expect(model.rows.map((u) => u.tokens)).toEqual(WORDS);
    expect(model.rows.map((u) => u.label)).toEqual(['<s>', 'Hi', 'there', '.', 'Bye', 'now', '!', 'Ok', '<b>', '.']);
    const [m] = matrixOf(groupedHeatmapLayout(model).items);
    const ref = tokenMatrix(trace, 0, 1);
    const n = WORDS.length;
    for (let a = 0; a < n; a++) {
      let row = 0;
      for (let b = 0; b < n; b++) {
        expect(m!.values[a * n + b]).toBeCloseTo(cell(ref, WORDS[a]!, WORDS[b]!, 'share'), 6);
        row += m!.values[a * n + b]!;
      }
      // share keeps rows stochastic
      expect(row).toBeCloseTo(1, 5);
    }
    const labels = groupedHeatmapLayout(model).items.filter((it): it is TextItem => it.kind === 'text' && (it.className ?? '').includes('query'));
    expect(labels.map((t) => t.text)).toContain('Bye');
  });

  it('sentence labels are whole sentences; without the text they come from the tokens', () => {
    const given = groupedHeatmapModel(trace, { by: 'sentences', texts: [TEXT] });
    expect(given.rows.map((u) => u.label)).toEqual(['<s>', 'Hi there.', 'Bye now!', 'Ok <b>.']);
    expect(rebuildTexts(trace.tokens)).toEqual([' Hi there. Bye now! Ok <b>.'.slice(1).padStart(TEXT.length, ' ')]);
    const rebuilt = groupedHeatmapModel(trace, { by: 'sentences' });
    expect(rebuilt.rows.map((u) => u.tokens)).toEqual(SENTENCES);
    expect(rebuilt.rows.map((u) => u.label)).toEqual(['<s>', 'Hi there.', 'Bye now!', 'Ok <b>.']);
  });

  it('a drilled cell is the token block behind it, in the trace weights', () => {
    const model = groupedHeatmapModel(trace, { by: 'sentences', layer: 1, head: 0, texts: [TEXT] });
    const ref = tokenMatrix(trace, 1, 0);
    for (const [r, c] of [[2, 1], [3, 3], [1, 0]] as const) {
      const L = drillLayout(model, r, c);
      expect(L.block.rows).toEqual(SENTENCES[r]);
      expect(L.block.cols).toEqual(SENTENCES[c]);
      const [m] = matrixOf(L.items);
      expect([m!.rows, m!.cols]).toEqual([SENTENCES[r]!.length, SENTENCES[c]!.length]);
      SENTENCES[r]!.forEach((i, a) => SENTENCES[c]!.forEach((j, b) => expect(m!.values[a * SENTENCES[c]!.length + b]).toBeCloseTo(ref[i]![j]!, 6)));
      // the block's mean is the sentence cell
      expect(model.values[r * 4 + c]).toBeCloseTo(cell(ref, SENTENCES[r]!, SENTENCES[c]!, 'mean'), 6);
    }
    expect(() => drillLayout(model, 4, 0)).toThrow(/cell 4, 0 is out of range \(the sentences matrix is 4 × 4\)/);
  });

  it('causal traces: blocks entirely above the diagonal are blank (masked), the drilled block blanks its masked entries', () => {
    const causal = paragraphTrace(true);
    const model = groupedHeatmapModel(causal, { by: 'sentences', layer: 0, head: 1, texts: [TEXT] });
    const [m] = matrixOf(groupedHeatmapLayout(model).items);
    // Sentence a attends to sentence b > a not at all: all masked; diagonal blocks partly.
    for (let a = 0; a < 4; a++) for (let b = 0; b < 4; b++) expect(m!.masked?.[a * 4 + b] ?? 0).toBe(b > a ? 1 : 0);
    // The mean rule averages over the entries the model could attend (k ≤ q), written out here.
    const ref = tokenMatrix(causal, 0, 1);
    for (let a = 0; a < 4; a++) {
      for (let b = 0; b <= a; b++) {
        let s = 0;
        let n = 0;
        for (const i of SENTENCES[a]!) for (const j of SENTENCES[b]!) if (j <= i) (s += ref[i]![j]!), n++;
        expect(m!.values[a * 4 + b]).toBeCloseTo(s / n, 6);
      }
    }
    const d = drillLayout(model, 2, 2);
    const [dm] = matrixOf(d.items);
    // rows By, e, now, ! × the same: masked above the diagonal
    for (let a = 0; a < 4; a++) for (let b = 0; b < 4; b++) expect(dm!.masked?.[a * 4 + b] ?? 0).toBe(b > a ? 1 : 0);
  });

  it('hide special tokens drops the <s> unit; bad options get one clear line', () => {
    expect(groupedHeatmapModel(trace, { by: 'sentences', texts: [TEXT], hideSpecial: true }).rows.map((u) => u.tokens)).toEqual(SENTENCES.slice(1));
    expect(() => groupedHeatmapModel(trace, { by: 'sentences', rule: 'median' as GroupCellRule })).toThrow(/unknown rule 'median' \(expected mean, max, sum, share\)/);
    expect(() => groupedHeatmapModel(trace, { by: 'words', layer: 2 })).toThrow(/layer 2 is out of range/);
    expect(() => groupedHeatmapModel(trace, { by: 'words', head: 3 })).toThrow(/head 3 is out of range/);
    expect(() => groupedHeatmapModel(trace, { by: 'words', aggregate: 'all' })).toThrow(/expected mean or max/);
  });

  it('the SVG escapes token and sentence text, names the rule and the drilled cell', () => {
    const svg = renderSvg('sentences', trace, { texts: [TEXT], layer: 1, head: 0, drill: { row: 3, col: 1 } });
    expect(svg).not.toContain('<b>.');
    const doc = parseXml(svg);
    const all = findAll(doc, 'text').map(textOf);
    expect(all.some((t) => t.includes('per sentence (mean)') && t.includes('tokens of “Ok <b>.” → “Hi there.”') && t.includes('hand <made>'))).toBe(true);
    expect(all).toContain('<b>');
    const words = renderSvg('words', trace, { texts: [TEXT], rule: 'max' });
    expect(findAll(parseXml(words), 'text').map(textOf)).toContain('<b>');
  });
});

describe('grouped heatmap on the embedded model', () => {
  it('a three-sentence paragraph: three sentences and the BOS, rows of the share rule sum to 1', async () => {
    const text = 'Once upon a time there was a little cat. The cat liked to play in the sun. One day it met a big dog.';
    const model = await loadModel(undefined);
    let trace: Trace;
    try {
      trace = await model.trace(text);
    } finally {
      await model.dispose();
    }
    const s = groupedHeatmapModel(trace, { by: 'sentences', layer: 2, texts: [text] });
    expect(s.rows.map((u) => u.label)).toEqual(['<s>', 'Once upon a time there was a little cat.', 'The cat liked to play in the sun.', 'One day it met a big dog.']);
    const share = groupedHeatmapModel(trace, { by: 'sentences', layer: 2, rule: 'share', texts: [text] });
    for (let a = 0; a < 4; a++) expect(share.values.slice(a * 4, a * 4 + 4).reduce((x, y) => x + y, 0)).toBeCloseTo(1, 4);
    const w = groupedHeatmapModel(trace, { by: 'words', layer: 0, texts: [text] });
    expect(w.rows.filter((u) => !u.special).map((u) => u.label).join(' ')).toBe('Once upon a time there was a little cat . The cat liked to play in the sun . One day it met a big dog .');
  }, 60_000);
});
