/**
 * The neuron view's layout on a hand-made trace whose numbers are worked out by hand: q = [1, 2],
 * keys [1, 0], [0, 1], [1, 1] → q·k = 1, 2, 3; scale 0.5 → 0.5, 1, 1.5; a recorded bias
 * [0.5, 0, −0.5] → scores 1, 1, 1 → softmax 1/3 each. Checks the columns (a bias adds “× scale”
 * and “+ bias”), the rows, masks, notes, and that the SVG writer paints exactly the layout.
 */
import { describe, expect, it } from 'vitest';
import type { Trace } from '../src/core/trace.js';
import type { Item } from '../src/views/layout/common.js';
import { neuronViewLayout } from '../src/views/layout/neuron-view.js';
import { renderNeuronView } from '../src/views/svg/neuron-view.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

/** 1 layer, 1 head, 3 tokens, head dim 2; every query row the same so that any query reads the numbers above. */
function trace(options: { bias: boolean; causal: boolean }): Trace {
  const n = 3;
  const q = new Float32Array([1, 2, 1, 2, 1, 2]);
  const k = new Float32Array([1, 0, 0, 1, 1, 1]);
  const att = new Float32Array(n * n);
  const bias = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    bias.set([0.5, 0, -0.5], i * n);
    // Scores per key: 0.5·[1,2,3] (+ bias); softmax over the keys the query sees.
    const s = [0.5, 1, 1.5].map((x, j) => x + (options.bias ? bias[i * n + j]! : 0));
    const seen = s.map((_, j) => !options.causal || j <= i);
    const e = s.map((x, j) => (seen[j] ? Math.exp(x) : 0));
    const sum = e.reduce((a, b) => a + b, 0);
    e.forEach((x, j) => (att[i * n + j] = x / sum));
  }
  return {
    model: { name: 'hand', modelType: 't5', numLayers: 1, numHeads: 1, numKeyValueHeads: 1, headDim: 2 },
    tokens: ['▁a', '▁b', 'c'].map((text, i) => ({ id: i, text, start: 0, end: 0, special: false, segment: 0, word: null })),
    attention: { self: { dims: [1, n, n], layers: [att] } },
    queries: { self: { dims: [1, n, 2], layers: [q] } },
    keys: { self: { dims: [1, n, 2], layers: [k] } },
    scores: {
      self: {
        scale: [0.5],
        causal: options.causal,
        window: [null],
        ...(options.bias ? { bias: { dims: [1, n, n] as const, layers: [bias] }, biasKind: 'relative position bias' } : {}),
      },
    },
  };
}

const texts = (items: readonly Item[], cls: string) => items.flatMap((it) => (it.kind === 'text' && it.className === cls ? [it.text] : []));

describe('neuron view layout', () => {
  it('with a recorded bias: q·k, × scale, + bias, score, softmax — the numbers worked out by hand', () => {
    const L = neuronViewLayout(trace({ bias: true, causal: false }), { query: 2 });
    expect(L.rows).toHaveLength(3);
    const headers = texts(L.items, 'header');
    expect(headers).toEqual(['key', 'k', 'q ⊙ k', 'q · k', '× 0.5', '+ bias', 'score', 'softmax', 'attention (model)']);
    const col = (cls: string) => L.rows.map((r) => texts(r.items, cls)[0]);
    expect(col('dot')).toEqual(['1', '2', '3']);
    expect(col('scaled')).toEqual(['0.5', '1', '1.5']);
    expect(col('bias')).toEqual(['0.5', '0', '−0.5']);
    expect(col('score')).toEqual(['1', '1', '1']);
    expect(col('softmax')).toEqual(['0.3333', '0.3333', '0.3333']);
    expect(col('attention')).toEqual(['0.333', '0.333', '0.333']);
    // Columns left to right, strips beside the labels, every row the same height.
    const x = (cls: string) => (L.rows[0]!.items.find((it) => it.kind === 'text' && it.className === cls) as { x: number }).x;
    expect(x('dot') < x('scaled') && x('scaled') < x('bias') && x('bias') < x('score') && x('score') < x('softmax')).toBe(true);
    expect(L.strips.xK).toBeLessThan(L.strips.xP);
    L.rows.forEach((r, j) => {
      expect(r.y).toBe(L.rows[0]!.y + j * r.height);
      expect(r.strips.map((s) => s.kind)).toEqual(['key-vector', 'product']);
    });
    expect(Array.from(L.rows[2]!.strips[1]!.values)).toEqual([1, 2]); // q ⊙ k2 = [1·1, 2·1]
    const notes = L.notes.map((n) => n.text).join(' · ');
    expect(notes).toContain('q·k scaled by 0.5');
    expect(notes).toContain('relative position bias');
    expect(notes).toContain('no mask');
  });

  it('without a bias the score column is the scaled q·k; a causal mask greys the later keys', () => {
    const L = neuronViewLayout(trace({ bias: false, causal: true }), { query: 1 });
    expect(texts(L.items, 'header')).toEqual(['key', 'k', 'q ⊙ k', 'q · k', '× 0.5', 'softmax', 'attention (model)']);
    expect(L.rows.map((r) => r.masked)).toEqual([false, false, true]);
    expect(L.rows.map((r) => texts(r.items, 'score')[0])).toEqual(['0.5', '1', '−∞']);
    // softmax(0.5, 1) = [1/(1+e^0.5), e^0.5/(1+e^0.5)] = [0.3775, 0.6225]
    expect(L.rows.map((r) => texts(r.items, 'softmax')[0])).toEqual(['0.3775', '0.6225', '0']);
    expect(L.notes.map((n) => n.text)).toContain('causal mask: the 1 key after the query gets −∞');
  });

  it('the page frame leaves out the title and notes; the labels and number formats are the caller’s', () => {
    const t = trace({ bias: false, causal: false });
    const page = neuronViewLayout(t, { query: 0, frame: 'page', label: (tok) => tok.raw, formatDerived: (v) => v.toFixed(1), approx: true });
    expect(page.items.some((it) => it.className === 'note' || it.className === 'view-title')).toBe(false);
    expect(texts(page.rows[1]!.items, 'dot')).toEqual(['2.0']);
    expect(texts(page.items, 'header')).toContain('≈ q · k');
    expect(page.rows[1]!.items.some((it) => it.kind === 'text' && it.text === '1 ▁b')).toBe(true);
    const figure = neuronViewLayout(t, { query: 0 });
    expect(figure.items.filter((it) => it.className === 'view-title')).toHaveLength(1);
    expect(figure.rows[0]!.y).toBeGreaterThan(page.rows[0]!.y);
  });

  it('refuses merged or hidden tokens (every token has its own vectors)', () => {
    expect(() => neuronViewLayout(trace({ bias: false, causal: false }), { mergeSubwords: true })).toThrow(/do not apply/);
  });
});

describe('neuron view SVG', () => {
  it('paints the layout: one key row group per row, numbers as laid out, strips per row', () => {
    const t = trace({ bias: true, causal: false });
    const L = neuronViewLayout(t, { query: 2 });
    const root = parseXml(renderNeuronView(t, { query: 2 }));
    const rows = findAll(root, 'g', (a) => a.class === 'key-row');
    expect(rows).toHaveLength(3);
    rows.forEach((g, j) => {
      for (const cls of ['dot', 'scaled', 'bias', 'score', 'softmax']) {
        const el = findAll(g, 'text', (a) => a.class === cls)[0]!;
        expect(textOf(el)).toBe(texts(L.rows[j]!.items, cls)[0]);
      }
      expect(findAll(g, 'g', (a) => a.class === 'key-vector')).toHaveLength(1);
      expect(findAll(g, 'g', (a) => a.class === 'product')).toHaveLength(1);
    });
    expect(findAll(root, 'g', (a) => a.class === 'query-vector')).toHaveLength(1);
    expect(findAll(root, 'text', (a) => a.class === 'note').map(textOf).join(' ')).toContain('relative position bias');
  });
});

describe('neuron view predictions', () => {
  it("names the head's top-k candidates at the query", () => {
    const t: Trace = { ...trace({ bias: false, causal: true }), predictions: [{ position: 1, kind: 'next', candidates: [{ id: 2, token: 'c', probability: 0.75 }, { id: 9, token: '▁d', probability: 0.0004 }] }] };
    const L = neuronViewLayout(t, { query: 1 });
    expect(L.notes.filter((n) => n.kind === 'prediction').map((n) => n.text)).toEqual(['the model’s head at query 1 “b” predicts next: “c” 0.750 · “d” 4.0e-4']);
    expect(neuronViewLayout(t, { query: 0 }).notes.some((n) => n.kind === 'prediction')).toBe(false);
    expect(textOf(parseXml(renderNeuronView(t, { query: 1 })))).toContain('predicts next: “c” 0.750');
  });
});
