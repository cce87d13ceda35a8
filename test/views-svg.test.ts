/**
 * The isomorphic render core: token display transforms, colours, and the SVG views (head, model,
 * neuron, heatmap) checked against the Trace they draw — every drawn weight is the trace's, the
 * neuron view's numbers are recomputed here from the trace's queries and keys, and every token
 * text is escaped in well-formed XML. Generation traces: generated tokens marked, and `step`
 * (the sequence as it was at each generated token); encoder-decoder traces in every view.
 */
import { join } from 'node:path';
import { unzlibSync } from 'fflate';
import { beforeAll, describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import type { Token, Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import { readTraceFile } from '../src/io/trace-file.js';
import { headColors, legendTicks, weightScale } from '../src/views/colors.js';
import { fmtValue } from '../src/views/svg/common.js';
import { renderHeadView } from '../src/views/svg/head-view.js';
import { heatmapMatrix, renderHeatmap } from '../src/views/svg/heatmap.js';
import { base64, encodePng } from '../src/views/svg/image.js';
import { renderSvg, VIEW_NAMES } from '../src/views/svg/index.js';
import { renderModelView } from '../src/views/svg/model-view.js';
import { keyHeadFor, neuronData, renderNeuronView } from '../src/views/svg/neuron-view.js';
import { formatProbability, stepWindow, traceGeneration } from '../src/views/generation.js';
import { DARK, LIGHT } from '../src/views/theme.js';
import {
  displayStack,
  escapeHtml,
  hideSpecialTokens,
  inferWords,
  mergeSubwords,
  parsePairFilter,
  prettifyToken,
  rawDisplayStack,
} from '../src/views/tokens.js';
import { findAll, parseXml, textOf, type XmlElement } from './helpers/xml.js';

const ROOT = join(import.meta.dirname, '..');
const TEXT = 'Once upon a time, there was a little girl named Lily.';
const XSS = '<img src=x onerror=alert(1)>';

let stories: Trace; // default model, with queries and keys
let bertPair: Trace; // BERT fixture, sentence pair, with queries and keys
let t5: Trace; // PyTorch-written encoder-decoder trace

beforeAll(async () => {
  const model = await loadModel();
  try {
    stories = await model.trace(TEXT, { qk: true });
  } finally {
    await model.dispose();
  }
  const bert = await loadModel(join(ROOT, 'test/fixtures/bert'));
  try {
    bertPair = await bert.trace('The cat sat on the mat.', { pair: 'Unbelievably, it purred.', qk: true });
  } finally {
    await bert.dispose();
  }
  t5 = await readTraceFile(join(ROOT, 'test/fixtures/traces/t5-encdec.safetensors'));
});

/** Parses an SVG document (throws if it is not well-formed XML) and checks its root. */
function svgRoot(svg: string): XmlElement {
  const root = parseXml(svg);
  expect(root.name).toBe('svg');
  expect(root.attrs.xmlns).toBe('http://www.w3.org/2000/svg');
  expect(Number(root.attrs.width)).toBeGreaterThan(0);
  expect(Number(root.attrs.height)).toBeGreaterThan(0);
  return root;
}

function weight(trace: Trace, stack: 'self' | 'encoder' | 'decoder' | 'cross', l: number, h: number, q: number, k: number): number {
  const s = trace.attention[stack]!;
  const [, nq, nk] = s.dims;
  return s.layers[l]![(h * nq + q) * nk + k]!;
}

/** A copy of a trace with some token texts replaced. */
function withTokenTexts(trace: Trace, texts: Record<number, string>): Trace {
  return { ...trace, tokens: trace.tokens.map((t, i): Token => (texts[i] === undefined ? t : { ...t, text: texts[i]! })) };
}

describe('token display', () => {
  it('prettifies byte-level, sentencepiece, byte-fallback and WordPiece markers', () => {
    expect(prettifyToken('Ġthe', 'gpt2')).toBe(' the');
    expect(prettifyToken('Ċ', 'gpt2')).toBe('⏎');
    expect(prettifyToken('ĠĊĊ')).toBe(' ⏎⏎');
    expect(prettifyToken('ðŁĺĢ', 'gpt2')).toBe('😀'); // multi-byte UTF-8 decoded
    expect(prettifyToken('Ã©', 'roberta')).toBe('é');
    expect(prettifyToken('▁the')).toBe(' the');
    expect(prettifyToken('▁')).toBe('␣');
    expect(prettifyToken('<0x0A>')).toBe('⏎');
    expect(prettifyToken('<0x41>')).toBe('A');
    expect(prettifyToken('<0xE2><0x9C><0x93>')).toBe('✓');
    expect(prettifyToken('<0xE2>')).toBe('<0xE2>'); // a piece of a character stays as is
    expect(prettifyToken('##ing')).toBe('##ing');
    expect(prettifyToken('##ing', 'bert', { continuation: 'mark' })).toBe('·ing');
    expect(prettifyToken('##ing', 'bert', { continuation: 'strip' })).toBe('ing');
    expect(prettifyToken('[CLS]')).toBe('[CLS]');
    expect(prettifyToken('a\u0000b')).toBe('a␀b');
  });

  it('escapes HTML/XML and replaces characters XML cannot hold', () => {
    expect(escapeHtml(`${XSS}"'&`)).toBe('&lt;img src=x onerror=alert(1)&gt;&quot;&#39;&amp;');
    expect(escapeHtml('a\u0001b\uD800c')).toBe('a\uFFFDb\uFFFDc');
    expect(escapeHtml('😀猫')).toBe('😀猫');
  });

  it('hides special tokens: drops their rows and columns, keeps the weights', () => {
    const raw = rawDisplayStack(bertPair, 'self');
    const hidden = hideSpecialTokens(raw);
    const keptQ = raw.queryTokens.flatMap((t, i) => (t.special ? [] : [i]));
    expect(hidden.queryTokens.map((t) => t.positions[0])).toEqual(keptQ);
    expect(hidden.queryTokens.some((t) => t.special)).toBe(false);
    const nq = hidden.queryTokens.length;
    for (let h = 0; h < raw.numHeads; h++) {
      for (let qi = 0; qi < nq; qi++) {
        for (let ki = 0; ki < nq; ki++) {
          expect(hidden.layers[1]![(h * nq + qi) * nq + ki]).toBe(weight(bertPair, 'self', 1, h, keptQ[qi]!, keptQ[ki]!));
        }
      }
    }
  });

  it('merges sub-words by word index: sum over key pieces, mean over query pieces', () => {
    const raw = rawDisplayStack(bertPair, 'self');
    const merged = mergeSubwords(raw, 'bert');
    const labels = merged.queryTokens.map((t) => t.label);
    expect(labels).toContain('unbelievably');
    expect(labels).toContain('purred');
    expect(labels.filter((l) => l === '[SEP]')).toHaveLength(2); // specials stay alone
    const word = merged.queryTokens.find((t) => t.label === 'unbelievably')!;
    const purred = merged.keyTokens.find((t) => t.label === 'purred')!;
    expect(word.positions).toHaveLength(11); // u ##n ##b ##e ##l ##i ##e ##v ##a ##b ##ly
    const qi = merged.queryTokens.indexOf(word);
    const ki = merged.keyTokens.indexOf(purred);
    const nm = merged.keyTokens.length;
    for (let h = 0; h < raw.numHeads; h++) {
      let expected = 0;
      for (const q of word.positions) for (const k of purred.positions) expected += weight(bertPair, 'self', 0, h, q, k);
      expected /= word.positions.length;
      expect(merged.layers[0]![(h * merged.queryTokens.length + qi) * nm + ki]).toBeCloseTo(expected, 6);
      // Rows still sum to 1: keys were summed, queries averaged.
      let row = 0;
      for (let k = 0; k < nm; k++) row += merged.layers[0]![(h * merged.queryTokens.length + qi) * nm + k]!;
      expect(row).toBeCloseTo(1, 5);
    }
  });

  it('splits sentencepiece words at ▁ even when the tokenizer reports one word', () => {
    // The Llama tokenizer gives every token of a text word index 0.
    expect(stories.tokens.filter((t) => !t.special).every((t) => t.word === 0)).toBe(true);
    const ds = displayStack(stories, 'self', { mergeSubwords: true, hideSpecial: true });
    expect(ds.queryTokens.map((t) => t.label)).toEqual(['Once', 'upon', 'a', 'time,', 'there', 'was', 'a', 'little', 'girl', 'named', 'Lily.']);
  });

  it('infers word indices and special tokens for plain-string tokens (outside producers)', () => {
    const ds = displayStack(t5, 'cross', { mergeSubwords: true, hideSpecial: true });
    expect(ds.queryTokens.map((t) => t.label).join(' ')).toBe('An old man told stories by the fire.');
    expect(ds.keyTokens.map((t) => t.label).slice(0, 4)).toEqual(['Once', 'upon', 'a', 'time,']);
    expect(ds.keyTokens.some((t) => t.label === '</s>')).toBe(false);
    expect(inferWords([{ id: -1, text: 'un', start: 0, end: 0, special: false, segment: 0, word: null }, { id: -1, text: '##able', start: 0, end: 0, special: false, segment: 0, word: null }])).toEqual([0, 0]);
  });

  it('parses sentence-pair filters', () => {
    expect(parsePairFilter('A->B')).toBe('A→B');
    expect(parsePairFilter('bb')).toBe('B→B');
    expect(parsePairFilter('all')).toBe('all');
    expect(() => parsePairFilter('C→A')).toThrow(AttnscopeError);
  });
});

describe('colours', () => {
  it('gives 32+ heads distinct colours', () => {
    for (const n of [8, 12, 32, 64]) {
      const c = headColors(n);
      expect(c).toHaveLength(n);
      expect(new Set(c).size).toBe(n);
      for (const x of c) expect(x).toMatch(/^#[0-9a-f]{6}$/);
    }
  });

  it('has light and dark sequential scales, linear and log, with legend ticks', () => {
    const light = weightScale(LIGHT);
    const dark = weightScale(DARK);
    expect(light.color(0)).not.toBe(dark.color(0));
    expect(light.t(0.5)).toBeCloseTo(0.5);
    const log = weightScale(LIGHT, { log: true, min: 1e-3, max: 1 });
    expect(log.t(1e-3)).toBe(0);
    expect(log.t(1)).toBe(1);
    expect(log.t(0)).toBe(0);
    expect(log.t(Math.sqrt(1e-3))).toBeCloseTo(0.5);
    expect(legendTicks(0, 1, false)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1]);
    expect(legendTicks(1e-4, 1, true)).toEqual([1e-4, 1e-3, 1e-2, 1e-1, 1]);
  });
});

describe('head view', () => {
  it('draws one line per nonzero weight of the selected heads, opacity = weight (default model)', () => {
    expect(stories.model).toMatchObject({ name: 'stories260k', numLayers: 5, numHeads: 8 });
    for (const [layer, heads] of [[2, undefined], [4, [1, 6]]] as const) {
      const root = svgRoot(renderHeadView(stories, { layer, heads, allLines: true }));
      const selected = heads ?? [0, 1, 2, 3, 4, 5, 6, 7];
      const n = stories.tokens.length;
      let nonzero = 0;
      for (const h of selected) for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) if (weight(stories, 'self', layer, h, q, k) > 0) nonzero++;
      const lines = findAll(root, 'line', (a) => a['data-q'] !== undefined);
      expect(lines).toHaveLength(nonzero);
      expect(nonzero).toBeLessThan(selected.length * n * n); // the causal mask leaves zeros out
      expect([...new Set(lines.map((l) => Number(l.attrs['data-head'])))].sort((a, b) => a - b)).toEqual(selected);
      for (const line of lines) {
        const h = Number(line.attrs['data-head']);
        expect(line.attrs.stroke).toBe(headColors(8)[h]);
        const w = weight(stories, 'self', layer, h, Number(line.attrs['data-q']), Number(line.attrs['data-k']));
        expect(Math.abs(Number(line.attrs['stroke-opacity']) - w)).toBeLessThanOrEqual(w * 1e-5);
        expect(w).toBeGreaterThan(0);
      }
      // Painted weakest first, so that strong lines lie on top.
      const ws = lines.map((l) => Number(l.attrs['stroke-opacity']));
      expect(ws.every((w, i) => i === 0 || w >= ws[i - 1]!)).toBe(true);
      expect(textOf(root)).toContain(`lines: all ${nonzero.toLocaleString('en')} nonzero weights`);
      // Every token appears in both columns.
      expect(findAll(root, 'text', (a) => a.class === 'token query')).toHaveLength(n);
      expect(findAll(root, 'text', (a) => a.class === 'token key')).toHaveLength(n);
    }
  });

  it('highlights a query: only its lines, with the weights printed', () => {
    const root = svgRoot(renderHeadView(stories, { layer: 3, heads: [5], query: 10 }));
    const lines = findAll(root, 'line', (a) => a['data-q'] !== undefined);
    expect(lines.length).toBe(11); // causal: keys 0..10
    expect(lines.every((l) => l.attrs['data-q'] === '10')).toBe(true);
    const values = findAll(root, 'text', (a) => a.class === 'weight-value');
    expect(values).toHaveLength(stories.tokens.length);
    for (const v of values) {
      const w = weight(stories, 'self', 3, 5, 10, Number(v.attrs['data-k']));
      expect(Number(v.attrs['data-value'])).toBeCloseTo(w, 6);
    }
    expect(findAll(root, 'text', (a) => a.class === 'token query' && a['font-weight'] === 'bold').map(textOf)).toEqual(['g']);
  });

  it('filters sentence pairs (A→B, B→A, A→A, B→B)', () => {
    const n = bertPair.tokens.length;
    const seg = bertPair.tokens.map((t) => t.segment);
    let total = 0;
    for (const [filter, qs, ks] of [['A→B', 0, 1], ['B→A', 1, 0], ['A→A', 0, 0], ['B→B', 1, 1]] as const) {
      const root = svgRoot(renderHeadView(bertPair, { layer: 1, pair: filter, allLines: true }));
      const lines = findAll(root, 'line', (a) => a['data-q'] !== undefined);
      let expected = 0;
      for (let h = 0; h < 4; h++) for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) if (seg[q] === qs && seg[k] === ks && weight(bertPair, 'self', 1, h, q, k) > 0) expected++;
      expect(lines).toHaveLength(expected);
      for (const l of lines) {
        expect(seg[Number(l.attrs['data-q'])]).toBe(qs);
        expect(seg[Number(l.attrs['data-k'])]).toBe(ks);
      }
      total += expected;
    }
    expect(findAll(svgRoot(renderHeadView(bertPair, { layer: 1, allLines: true })), 'line', (a) => a['data-q'] !== undefined)).toHaveLength(total);
    expect(() => renderHeadView(stories, { pair: 'A→B' })).toThrow(/sentence pair/);
  });

  it('draws cross attention of an encoder-decoder trace: decoder queries, encoder keys', () => {
    expect(t5.decoderTokens).toHaveLength(18);
    expect(t5.tokens).toHaveLength(88);
    const root = svgRoot(renderHeadView(t5, { stack: 'cross', layer: 1, allLines: true }));
    const queries = findAll(root, 'text', (a) => a.class === 'token query');
    const keys = findAll(root, 'text', (a) => a.class === 'token key');
    expect(queries).toHaveLength(18);
    expect(keys).toHaveLength(88);
    expect(textOf(keys[0]!)).toBe('O');
    expect(queries.map(textOf)[0]).toBe('<pad>');
    let nonzero = 0;
    for (let h = 0; h < 4; h++) for (let q = 0; q < 18; q++) for (let k = 0; k < 88; k++) if (weight(t5, 'cross', 1, h, q, k) > 0) nonzero++;
    const lines = findAll(root, 'line', (a) => a['data-q'] !== undefined);
    expect(lines).toHaveLength(nonzero);
    for (const l of lines.slice(0, 200)) {
      const w = weight(t5, 'cross', 1, Number(findParentHead(root, l)), Number(l.attrs['data-q']), Number(l.attrs['data-k']));
      expect(Math.abs(Number(l.attrs['stroke-opacity']) - w)).toBeLessThanOrEqual(w * 1e-5);
    }
    expect(textOf(root)).toContain('decoder tokens (queries)');
    expect(textOf(root)).toContain('encoder tokens (keys)');
    // Without allLines: the 1,000 strongest, and the caption says so.
    const capped = svgRoot(renderHeadView(t5, { stack: 'cross', layer: 1 }));
    const strongest = lines.map((l) => Number(l.attrs['stroke-opacity'])).sort((a, b) => b - a).slice(0, 1000);
    const drawn = findAll(capped, 'line', (a) => a['data-q'] !== undefined).map((l) => Number(l.attrs['stroke-opacity'])).sort((a, b) => b - a);
    expect(drawn).toEqual(strongest);
    expect(textOf(capped)).toContain(`lines: the 1,000 strongest of ${nonzero.toLocaleString('en')} weights (≥ ${fmtValue(strongest[999]!, 3)})`);
    // The encoder and decoder stacks are there too; a self stack is not.
    expect(findAll(svgRoot(renderHeadView(t5, { stack: 'decoder' })), 'text', (a) => a.class === 'token key')).toHaveLength(18);
    expect(() => renderHeadView(t5, { stack: 'self' })).toThrow(/no 'self' attention/);
  });

  it('rejects out-of-range layers, heads and queries with AttnscopeError', () => {
    expect(() => renderHeadView(stories, { layer: 5 })).toThrow(AttnscopeError);
    expect(() => renderHeadView(stories, { layer: 5 })).toThrow(/layer 5 is out of range/);
    expect(() => renderHeadView(stories, { heads: [8] })).toThrow(/head 8 is out of range/);
    expect(() => renderHeadView(stories, { query: 99 })).toThrow(/query token 99/);
  });
});

function findParentHead(root: XmlElement, line: XmlElement): string | undefined {
  if (line.attrs['data-head'] !== undefined) return line.attrs['data-head'];
  for (const g of findAll(root, 'g', (a) => a.class === 'head-lines')) if (g.children.includes(line)) return g.attrs['data-head'];
  return undefined;
}

/** Decodes an embedded PNG data URI: checks signature, chunk CRCs and the zlib stream; returns its size. */
function decodeDataPng(uri: string): { width: number; height: number; colorType: number } {
  expect(uri.startsWith('data:image/png;base64,')).toBe(true);
  const bytes = Uint8Array.from(Buffer.from(uri.slice('data:image/png;base64,'.length), 'base64'));
  expect([...bytes.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const v = new DataView(bytes.buffer);
  const width = v.getUint32(16);
  const height = v.getUint32(20);
  const colorType = bytes[25]!;
  let o = 8;
  const idat: Uint8Array[] = [];
  while (o < bytes.length) {
    const len = v.getUint32(o);
    const type = String.fromCharCode(...bytes.subarray(o + 4, o + 8));
    if (type === 'IDAT') idat.push(bytes.subarray(o + 8, o + 8 + len));
    o += 12 + len;
  }
  expect(o).toBe(bytes.length);
  const raw = unzlibSync(Buffer.concat(idat));
  const bpp = colorType === 3 ? 1 : colorType === 2 ? 3 : 4;
  expect(raw.length).toBe(height * (1 + width * bpp));
  return { width, height, colorType };
}

describe('model view', () => {
  it('draws every layer × head as one embedded PNG image', () => {
    const root = svgRoot(renderModelView(stories));
    const cells = findAll(root, 'g', (a) => a.class === 'cell');
    expect(cells).toHaveLength(5 * 8);
    const n = stories.tokens.length;
    for (const c of cells) {
      const images = findAll(c, 'image');
      expect(images).toHaveLength(1);
      expect(decodeDataPng(images[0]!.attrs.href!)).toMatchObject({ width: n, height: n });
      expect(findAll(c, 'rect').length).toBe(1); // a frame, not one rect per value
    }
    expect(textOf(root)).toContain('layer 4');
    expect(textOf(root)).toContain('head 7');
  });

  it('takes a subset of layers and heads', () => {
    const root = svgRoot(renderModelView(stories, { layers: [1, 3], heads: [0, 2, 7] }));
    const cells = findAll(root, 'g', (a) => a.class === 'cell');
    expect(cells.map((c) => `${c.attrs['data-layer']}/${c.attrs['data-head']}`)).toEqual(['1/0', '1/2', '1/7', '3/0', '3/2', '3/7']);
    expect(() => renderModelView(stories, { layers: [9] })).toThrow(/layer 9 is out of range/);
  });

  it('stays small for 12 layers × 12 heads at 512 tokens', () => {
    const L = 12;
    const H = 12;
    const N = 512;
    const layers: Float32Array[] = [];
    for (let l = 0; l < L; l++) {
      const a = new Float32Array(H * N * N);
      for (let h = 0; h < H; h++) {
        for (let q = 0; q < N; q++) {
          const base = (h * N + q) * N;
          let s = 0;
          for (let k = 0; k < N; k++) s += a[base + k] = Math.exp(-Math.abs(q - k - h) / (1 + l)) + (k === 0 ? 2 : 0);
          for (let k = 0; k < N; k++) a[base + k]! /= s;
        }
      }
      layers.push(a);
    }
    const tokens = Array.from({ length: N }, (_, i): Token => ({ id: i, text: `t${i}`, start: 0, end: 0, special: false, segment: 0, word: i }));
    const trace: Trace = { model: { name: 'big', modelType: 'bert', numLayers: L, numHeads: H, numKeyValueHeads: H, headDim: 64 }, tokens, attention: { self: { dims: [H, N, N], layers } } };
    const svg = renderModelView(trace);
    expect(svg.length).toBeLessThan(3_000_000); // BertViz: one element per edge, tens of MB
    const root = svgRoot(svg);
    expect(findAll(root, 'image')).toHaveLength(L * H);
    expect(allElementsCount(root)).toBeLessThan(L * H * 4 + 100);
  });
});

function allElementsCount(root: XmlElement): number {
  return 1 + root.children.reduce((n, c) => n + allElementsCount(c), 0);
}

describe('neuron view', () => {
  it('shows q·k, scaled scores and softmax recomputed from the trace (GQA, causal mask)', () => {
    expect(stories.model.numKeyValueHeads).toBe(4);
    const [layer, head, query] = [2, 5, 10];
    const d = neuronData(stories, { layer, head, query });
    const headDim = stories.model.headDim;
    const n = stories.tokens.length;
    expect(d.kvHead).toBe(Math.floor((head * 4) / 8));
    expect(keyHeadFor(head, 8, 4)).toBe(2);
    expect(d.scale).toBeCloseTo(1 / Math.sqrt(headDim), 12);
    // Independent recomputation from the raw tensors.
    const qs = stories.queries!.self!;
    const ks = stories.keys!.self!;
    const q = Array.from({ length: headDim }, (_, i) => qs.layers[layer]![(head * n + query) * headDim + i]!);
    const dots = Array.from({ length: n }, (_, j) => q.reduce((s, qi, i) => s + qi * ks.layers[layer]![(d.kvHead * n + j) * headDim + i]!, 0));
    const scores = dots.map((x, j) => (j > query ? -Infinity : x / Math.sqrt(headDim)));
    const mx = Math.max(...scores);
    const ex = scores.map((s) => Math.exp(s - mx));
    const sum = ex.reduce((a, b) => a + b, 0);
    const softmax = ex.map((e) => e / sum);
    for (let j = 0; j < n; j++) {
      expect(d.dots[j]).toBeCloseTo(dots[j]!, 10);
      expect(d.masked[j]).toBe(j > query);
      if (j <= query) expect(d.scores[j]).toBeCloseTo(scores[j]!, 10);
      expect(d.softmax[j]).toBeCloseTo(softmax[j]!, 12);
      // softmax of the scores equals the model's attention
      expect(Math.abs(softmax[j]! - weight(stories, 'self', layer, head, query, j))).toBeLessThanOrEqual(1e-5);
    }
    expect(d.causal).toBe(true);
    expect(d.bias).toBeNull();
    expect(d.maxSoftmaxError).toBeLessThanOrEqual(1e-5);

    // The SVG shows the same numbers (display rounding: 4 significant digits; attributes: 6).
    const root = svgRoot(renderNeuronView(stories, { layer, head, query }));
    const cells = (cls: string) => findAll(root, 'text', (a) => a.class === cls);
    expect(cells('dot')).toHaveLength(n);
    for (const t of cells('dot')) {
      const j = Number(t.attrs['data-k']);
      expect(Number(t.attrs['data-value'])).toBeCloseTo(dots[j]!, 3);
      expect(Math.abs(Number(textOf(t).replace('−', '-')) - dots[j]!)).toBeLessThanOrEqual(Math.abs(dots[j]!) * 5e-4 + 1e-12);
    }
    for (const t of cells('score')) {
      const j = Number(t.attrs['data-k']);
      if (j > query) {
        expect(textOf(t)).toBe('−∞');
        continue;
      }
      expect(Math.abs(Number(textOf(t).replace('−', '-')) - scores[j]!)).toBeLessThanOrEqual(Math.abs(scores[j]!) * 5e-4);
    }
    for (const t of cells('softmax')) {
      const j = Number(t.attrs['data-k']);
      expect(Math.abs(Number(t.attrs['data-value']) - softmax[j]!)).toBeLessThanOrEqual(softmax[j]! * 1e-5 + 1e-12);
      expect(Math.abs(Number(textOf(t)) - softmax[j]!)).toBeLessThanOrEqual(softmax[j]! * 5e-4);
    }
    expect(findAll(root, 'g', (a) => a.class === 'key-row' && a['data-masked'] === 'true')).toHaveLength(n - 1 - query);
    expect(findAll(root, 'g', (a) => a.class === 'key-vector')).toHaveLength(n);
    expect(findAll(root, 'rect', (a) => a.class === 'attention-bar')).toHaveLength(n);
    const notes = findAll(root, 'text', (a) => a.class === 'note').map(textOf).join(' ');
    expect(notes).toContain('query head 5 reads key head 2');
    expect(notes).toContain('1/√8');
    expect(notes).toContain('causal mask');
  });

  it('shows no mask for a bidirectional encoder, and cross stacks read encoder keys', () => {
    const d = neuronData(bertPair, { layer: 1, head: 3, query: 4 });
    expect(d.masked.every((m) => !m)).toBe(true);
    expect(d.causal).toBe(false);
    expect(d.kvHead).toBe(3);
    expect(d.maxSoftmaxError).toBeLessThanOrEqual(1e-5);
    expect(textOf(svgRoot(renderNeuronView(bertPair, { layer: 1, head: 3, query: 4 })))).toContain('no mask');
  });

  it('needs queries and keys: a clear error otherwise', () => {
    const noQk: Trace = { ...stories, queries: undefined, keys: undefined };
    expect(() => renderNeuronView(noQk)).toThrow(AttnscopeError);
    expect(() => renderNeuronView(noQk)).toThrow(/--qk/);
    expect(() => renderNeuronView(t5, { stack: 'cross' })).toThrow(/--qk/);
    expect(() => renderNeuronView(stories, { head: 8 })).toThrow(/head 8 is out of range/);
    expect(() => renderNeuronView(stories, { mergeSubwords: true })).toThrow(/do not apply/);
  });
});

describe('heatmap', () => {
  it('draws one head: a rect per value with the trace weight, labels on both axes', () => {
    const root = svgRoot(renderHeatmap(stories, { layer: 1, head: 6 }));
    const n = stories.tokens.length;
    const cells = findAll(root, 'rect', (a) => a['data-q'] !== undefined);
    expect(cells).toHaveLength(n * n);
    for (const c of cells) {
      const w = weight(stories, 'self', 1, 6, Number(c.attrs['data-q']), Number(c.attrs['data-k']));
      expect(Math.abs(Number(c.attrs['data-value']) - w)).toBeLessThanOrEqual(w * 1e-5);
    }
    expect(findAll(root, 'text', (a) => a.class === 'token query')).toHaveLength(n);
    expect(findAll(root, 'text', (a) => a.class === 'token key')).toHaveLength(n);
    expect(findAll(root, 'linearGradient')).toHaveLength(1); // the legend
  });

  it('aggregates heads (mean, max) and draws all heads as small multiples', () => {
    const ds = displayStack(stories, 'self');
    const n = ds.queryTokens.length;
    const mean = heatmapMatrix(ds, 3, 'mean');
    const max = heatmapMatrix(ds, 3, 'max');
    for (const [q, k] of [[5, 2], [15, 15], [9, 0]] as const) {
      const ws = Array.from({ length: 8 }, (_, h) => weight(stories, 'self', 3, h, q, k));
      expect(mean[q * n + k]).toBeCloseTo(ws.reduce((a, b) => a + b) / 8, 6);
      expect(max[q * n + k]).toBe(Math.max(...ws));
    }
    const root = svgRoot(renderHeatmap(stories, { layer: 3, aggregate: 'max', log: true }));
    const cells = findAll(root, 'rect', (a) => a['data-q'] !== undefined);
    for (const c of cells) expect(Number(c.attrs['data-value'])).toBeCloseTo(max[Number(c.attrs['data-q']) * n + Number(c.attrs['data-k'])]!, 5);
    expect(textOf(root)).toContain('(log)');
    const all = svgRoot(renderHeatmap(stories, { layer: 3 }));
    expect(findAll(all, 'g', (a) => a.class === 'matrix').map((g) => g.attrs['data-head'])).toEqual(['0', '1', '2', '3', '4', '5', '6', '7']);
    expect(() => renderHeatmap(stories, { head: 1, aggregate: 'mean' })).toThrow(/either a head or an aggregate/);
  });

  it('uses hide-special and merged words', () => {
    const root = svgRoot(renderHeatmap(stories, { layer: 0, head: 0, hideSpecial: true, mergeSubwords: true }));
    expect(findAll(root, 'text', (a) => a.class === 'token key').map(textOf)).toEqual(['Once', 'upon', 'a', 'time,', 'there', 'was', 'a', 'little', 'girl', 'named', 'Lily.']);
    expect(findAll(root, 'rect', (a) => a['data-q'] !== undefined)).toHaveLength(11 * 11);
  });
});

describe('escaping', () => {
  it('shows an XSS token text only escaped, in every view and theme', () => {
    const evil = withTokenTexts(stories, { 3: XSS, 5: '"&\'</text><script>alert(2)</script>' });
    for (const view of VIEW_NAMES) {
      for (const theme of ['light', 'dark'] as const) {
        const svg = renderSvg(view, evil, { theme, query: 5, layer: 1, head: view === 'neuron' || view === 'heatmap' ? 2 : undefined });
        expect(svg).not.toContain('<img');
        expect(svg).not.toContain('<script');
        const root = svgRoot(svg);
        expect(findAll(root, 'img')).toHaveLength(0);
        expect(findAll(root, 'script')).toHaveLength(0);
        // The token is there, as text (the model view draws no token labels, the clusters and types views heads).
        if (view !== 'model' && view !== 'clusters' && view !== 'types') {
          expect(textOf(root)).toContain('<img src=x onerror=');
          expect(svg).toContain('&lt;img src=x onerror=');
        }
      }
    }
  });
});

describe('PNG encoder', () => {
  it('writes RGB and indexed PNGs that decode', () => {
    const rgb = encodePng(3, 2, new Uint8Array(18).fill(200));
    expect(decodeDataPng(`data:image/png;base64,${base64(rgb)}`)).toEqual({ width: 3, height: 2, colorType: 2 });
    const idx = encodePng(4, 1, new Uint8Array([0, 1, 2, 1]), 1, new Uint8Array([0, 0, 0, 255, 0, 0, 0, 255, 0]));
    expect(decodeDataPng(`data:image/png;base64,${base64(idx)}`)).toEqual({ width: 4, height: 1, colorType: 3 });
    expect(base64(new Uint8Array([1, 2, 3, 4, 5]))).toBe(Buffer.from([1, 2, 3, 4, 5]).toString('base64'));
  });
});

// --- generation traces and encoder-decoders -------------------------------------------------------

const PROMPT = 'Once upon a time';

/** Token labels of one column (class `token query` / `token key`, plus `generated` for generated tokens). */
const labels = (root: XmlElement, side: 'query' | 'key') => findAll(root, 'text', (a) => (a.class ?? '').split(' ').includes('token') && (a.class ?? '').split(' ').includes(side));
const isGen = (el: XmlElement) => (el.attrs.class ?? '').split(' ').includes('generated');
const lines = (root: XmlElement) => findAll(root, 'line', (a) => a['data-q'] !== undefined);

describe('generation traces', () => {
  let gen: Trace; // default model: 'Once upon a time' + 12 greedy tokens, with queries and keys
  let P: number;
  beforeAll(async () => {
    const model = await loadModel();
    try {
      gen = await model.generate(PROMPT, { maxNewTokens: 12, qk: true });
    } finally {
      await model.dispose();
    }
    P = gen.generation!.promptLength;
  });

  it('is what attnscope generate makes: prompt + 12 generated tokens, every one with its probability', () => {
    expect(gen.tokens).toHaveLength(P + 12);
    expect(gen.tokens.slice(P).every((t) => t.generated)).toBe(true);
    expect(gen.tokens.slice(0, P).some((t) => t.generated)).toBe(false);
    expect(traceGeneration(gen)).toMatchObject({ sequence: 'tokens', promptLength: P, steps: 12 });
    expect(traceGeneration(stories)).toBeNull();
  });

  it('marks the generated tokens in every view and both themes: colour, italics, a dashed boundary, a legend, tooltips with probabilities', () => {
    for (const theme of [LIGHT, DARK]) {
      // Head view: both columns.
      const head = svgRoot(renderHeadView(gen, { layer: 1, theme: theme.name }));
      for (const side of ['query', 'key'] as const) {
        const ls = labels(head, side);
        expect(ls).toHaveLength(P + 12);
        expect(ls.map(isGen)).toEqual(gen.tokens.map((t) => t.generated === true));
        for (const l of ls) {
          if (isGen(l)) {
            expect(l.attrs.fill).toBe(theme.generated);
            expect(l.attrs['font-style']).toBe('italic');
          } else expect([theme.text, theme.special]).toContain(l.attrs.fill);
        }
      }
      const boundaries = findAll(head, 'line', (a) => a.class === 'prompt-boundary');
      expect(boundaries.map((b) => b.attrs['data-axis']).sort()).toEqual(['key', 'query']);
      // The boundary sits between the last prompt token's row and the first generated one's.
      const rowY = (i: number) => Number(labels(head, 'query')[i]!.attrs.y);
      for (const b of boundaries) {
        expect(Number(b.attrs.y1)).toBeGreaterThan(rowY(P - 1));
        expect(Number(b.attrs.y1)).toBeLessThan(rowY(P));
        expect(b.attrs.stroke).toBe(theme.generated);
      }
      const legend = findAll(head, 'text', (a) => a.class === 'generation-legend')[0]!;
      expect(textOf(legend)).toBe(`prompt | generated · greedy · ${P} prompt tokens + 12 new tokens · stopped by length`);
      expect(findAll(legend, 'tspan', (a) => a.fill === theme.generated).map(textOf)).toEqual(['generated']);
      // Each generated label carries its probability in a tooltip.
      const tips = findAll(head, 'g', (a) => a.class === 'token-tip');
      expect(tips).toHaveLength(2 * 12);
      for (const g of tips) {
        const label = g.children.find((c) => c.name === 'text')!;
        const i = Number(label.attrs['data-index']);
        const title = textOf(g.children.find((c) => c.name === 'title')!);
        expect(title).toBe(`${gen.tokens[i]!.text}: generated token ${i - P + 1}, p = ${formatProbability(gen.generation!.steps[i - P]!.probability)}`);
      }
      // Heatmap, model view and neuron view.
      const heat = svgRoot(renderHeatmap(gen, { layer: 2, head: 1, theme: theme.name }));
      expect(labels(heat, 'query').filter(isGen)).toHaveLength(12);
      expect(labels(heat, 'key').filter(isGen)).toHaveLength(12);
      expect(findAll(heat, 'line', (a) => a.class === 'prompt-boundary')).toHaveLength(2);
      const all = svgRoot(renderHeatmap(gen, { layer: 2, theme: theme.name }));
      expect(findAll(all, 'line', (a) => a.class === 'prompt-boundary')).toHaveLength(2 * 8);
      const model = svgRoot(renderModelView(gen, { theme: theme.name }));
      expect(findAll(model, 'line', (a) => a.class === 'prompt-boundary')).toHaveLength(2 * 5 * 8);
      expect(textOf(model)).toContain('prompt | generated');
      const neuron = svgRoot(renderNeuronView(gen, { layer: 1, head: 2, theme: theme.name }));
      expect(labels(neuron, 'key').filter(isGen)).toHaveLength(12);
      expect(labels(neuron, 'query').every(isGen)).toBe(true); // the last token, generated
      expect(findAll(neuron, 'line', (a) => a.class === 'prompt-boundary')).toHaveLength(1);
    }
    // Traces that are not generations have none of it.
    for (const view of VIEW_NAMES) {
      const svg = renderSvg(view, stories, { layer: 1, head: view === 'neuron' || view === 'heatmap' ? 2 : undefined });
      expect(svg).not.toContain('generated');
      expect(svg).not.toContain('prompt-boundary');
    }
  });

  it('head view at step s: promptLength + s tokens per column; the newest query\'s lines are its row of the trace', () => {
    const layer = 2;
    for (const step of [0, 1, 5, 12]) {
      const n = P + step;
      const newest = n - 1;
      const root = svgRoot(renderHeadView(gen, { layer, step }));
      expect(labels(root, 'query')).toHaveLength(n);
      expect(labels(root, 'key')).toHaveLength(n);
      expect(labels(root, 'query').map(textOf)).toEqual(displayStack(gen).queryTokens.slice(0, n).map((t) => t.label));
      // Only the newest token's lines, one per nonzero weight of its row, opacity = the weight.
      const ls = lines(root);
      expect(ls.every((l) => l.attrs['data-q'] === String(newest))).toBe(true);
      let nonzero = 0;
      for (let h = 0; h < 8; h++) for (let k = 0; k < n; k++) if (weight(gen, 'self', layer, h, newest, k) > 0) nonzero++;
      expect(ls).toHaveLength(nonzero);
      expect(nonzero).toBe(8 * n); // the newest token sees every token so far
      for (const l of ls) {
        const w = weight(gen, 'self', layer, Number(findParentHead(root, l)), newest, Number(l.attrs['data-k']));
        expect(Math.abs(Number(l.attrs['stroke-opacity']) - w)).toBeLessThanOrEqual(w * 1e-5);
      }
      expect(labels(root, 'query').filter((l) => l.attrs['font-weight'] === 'bold').map((l) => l.attrs['data-index'])).toEqual([String(newest)]);
      const stepLine = findAll(root, 'text', (a) => a.class === 'generation-step')[0]!;
      expect(stepLine.attrs['data-step']).toBe(String(step));
      expect(textOf(stepLine)).toContain(`step ${step} of 12`);
      if (step > 0) expect(textOf(stepLine)).toContain(`p = ${formatProbability(gen.generation!.steps[step - 1]!.probability)}`);
      // With one head, the values printed beside the keys are the row.
      const one = svgRoot(renderHeadView(gen, { layer, step, heads: [3] }));
      const values = findAll(one, 'text', (a) => a.class === 'weight-value');
      expect(values).toHaveLength(n);
      for (const v of values) expect(Number(v.attrs['data-value'])).toBeCloseTo(weight(gen, 'self', layer, 3, newest, Number(v.attrs['data-k'])), 6);
    }
    // Another query at a step: its own (causal) row, keys up to the step.
    const root = svgRoot(renderHeadView(gen, { layer, step: 4, query: 2 }));
    expect(lines(root)).toHaveLength(8 * 3);
    // The whole sequence without a step.
    expect(labels(svgRoot(renderHeadView(gen, { layer })), 'query')).toHaveLength(P + 12);
  });

  it('heatmap and model view at step s: the matrix up to that size, the newest row outlined', () => {
    for (const step of [0, 4, 12]) {
      const n = P + step;
      const root = svgRoot(renderHeatmap(gen, { layer: 1, head: 3, step }));
      const cells = findAll(root, 'rect', (a) => a['data-q'] !== undefined && a.class !== 'newest-row');
      expect(cells).toHaveLength(n * n);
      for (const c of cells) {
        const w = weight(gen, 'self', 1, 3, Number(c.attrs['data-q']), Number(c.attrs['data-k']));
        expect(Math.abs(Number(c.attrs['data-value']) - w)).toBeLessThanOrEqual(w * 1e-5);
      }
      const outline = findAll(root, 'rect', (a) => a.class === 'newest-row');
      expect(outline.map((r) => r.attrs['data-q'])).toEqual([String(n - 1)]);
      // The outline frames the newest row: from the row's first cell across all n cells.
      const first = cells.find((c) => c.attrs['data-q'] === String(n - 1) && c.attrs['data-k'] === '0')!;
      expect(Math.abs(Number(outline[0]!.attrs.y) + 1 - Number(first.attrs.y))).toBeLessThanOrEqual(0.01);
      expect(Number(outline[0]!.attrs.width)).toBeCloseTo(n * Number(first.attrs.width) + 2, 1);
      expect(textOf(root)).toContain(`step ${step}`);
      // Every head of the layer: one outline per head.
      expect(findAll(svgRoot(renderHeatmap(gen, { layer: 1, step })), 'rect', (a) => a.class === 'newest-row')).toHaveLength(8);
      // Model view: n × n cells, the newest row outlined in every cell.
      const model = svgRoot(renderModelView(gen, { step }));
      expect(textOf(model)).toContain(`(${n} × ${n})`);
      const rows = findAll(model, 'rect', (a) => a.class === 'newest-row');
      expect(rows).toHaveLength(5 * 8);
      expect(rows.every((r) => r.attrs['data-q'] === String(n - 1))).toBe(true);
      for (const img of findAll(model, 'image').slice(0, 3)) expect(decodeDataPng(img.attrs.href!)).toMatchObject({ width: n, height: n });
    }
  });

  it('neuron view at step s: the newest token is the query, the keys are those the model had then', () => {
    const [layer, head] = [3, 6];
    for (const step of [0, 3, 12]) {
      const n = P + step;
      const d = neuronData(gen, { layer, head, step });
      expect(d.query).toBe(n - 1);
      expect(d.step).toBe(step);
      expect(d.keyTokens).toHaveLength(n);
      expect(d.attention).toHaveLength(n);
      for (let k = 0; k < n; k++) expect(d.attention[k]).toBe(weight(gen, 'self', layer, head, n - 1, k));
      // Incremental decoding: the newest token sees every cached key; nothing is masked.
      expect(d.masked.some(Boolean)).toBe(false);
      expect(d.causal).toBe(false);
      expect(d.maxSoftmaxError).toBeLessThanOrEqual(1e-5);
      const root = svgRoot(renderNeuronView(gen, { layer, head, step }));
      expect(findAll(root, 'g', (a) => a.class === 'key-row')).toHaveLength(n);
      expect(findAll(root, 'text', (a) => a.class === 'note').map(textOf).join(' ')).toContain('no mask');
      for (const t of findAll(root, 'text', (a) => a.class === 'attention')) {
        expect(Number(t.attrs['data-value'])).toBeCloseTo(weight(gen, 'self', layer, head, n - 1, Number(t.attrs['data-k'])), 6);
      }
    }
    // An earlier query at a step keeps its causal mask over the later keys.
    const d = neuronData(gen, { layer, head, step: 3, query: 2 });
    expect(d.keyTokens).toHaveLength(P + 3);
    expect(d.causal).toBe(true);
    expect(() => neuronData(gen, { step: 3, query: P + 3 })).toThrow(/query token/);
  });

  it('merges sub-words and hides special tokens at a step', () => {
    // "▁g", "ir", "l" are generated tokens 6–8: at step 7 "g" and "ir" are one word, the newest.
    const pieces = gen.tokens.map((t) => t.text);
    const g = pieces.indexOf('▁g');
    expect(pieces.slice(g, g + 3)).toEqual(['▁g', 'ir', 'l']);
    const step = g + 2 - P;
    const ds = displayStack(gen, 'self', { mergeSubwords: true, hideSpecial: true, step });
    expect(ds.queryTokens.at(-1)!.label).toBe('gir');
    expect(ds.newest).toBe(ds.queryTokens.length - 1);
    expect(ds.queryTokens.at(-1)!.generated).toBe(true);
    const root = svgRoot(renderHeadView(gen, { layer: 1, step, mergeSubwords: true, hideSpecial: true }));
    expect(labels(root, 'query').filter((l) => l.attrs['font-weight'] === 'bold').map(textOf)).toEqual(['gir']);
    expect(labels(root, 'key').map(textOf)).not.toContain('<s>');
  });

  it('rejects a step for traces that are not generations, and steps out of range', () => {
    expect(() => renderHeadView(stories, { step: 1 })).toThrow(AttnscopeError);
    expect(() => renderHeadView(stories, { step: 1 })).toThrow(/generation traces/);
    for (const view of VIEW_NAMES) {
      expect(() => renderSvg(view, gen, { step: 13 })).toThrow(/step 13 is out of range .*steps 0–12/);
      expect(() => renderSvg(view, gen, { step: -1 })).toThrow(AttnscopeError);
      expect(() => renderSvg(view, gen, { step: 1.5 })).toThrow(AttnscopeError);
    }
    // A trace written without its generation record still knows its prompt from the generated flags.
    const bare: Trace = { ...gen, generation: undefined };
    expect(traceGeneration(bare)).toMatchObject({ promptLength: P, steps: 12, info: null });
    expect(labels(svgRoot(renderHeadView(bare, { step: 2 })), 'query')).toHaveLength(P + 2);
  });
});

describe('encoder-decoder traces in every view', () => {
  let traced: Record<'t5' | 'bart', Trace>; // traced with decoder text, with queries and keys
  let generated: Record<'t5' | 'bart', Trace>; // generation traces, with queries and keys
  beforeAll(async () => {
    traced = {} as typeof traced;
    generated = {} as typeof generated;
    for (const [name, text, target] of [
      ['t5', 'translate English to German: the house is small', 'das Haus ist klein'],
      ['bart', 'The house is small.', 'La maison est petite.'],
    ] as const) {
      const model = await loadModel(join(ROOT, 'test/fixtures', name));
      try {
        traced[name] = await model.trace(text, { decoderText: target, qk: true });
        generated[name] = await model.generate(text, { maxNewTokens: 5, qk: true });
      } finally {
        await model.dispose();
      }
    }
  });

  const columns = (svg: string) => {
    const root = svgRoot(svg);
    return [labels(root, 'query').length, labels(root, 'key').length];
  };

  it('traced with decoder text (t5, bart): head, model, neuron and heatmap of the encoder, decoder and cross stacks', () => {
    for (const name of ['t5', 'bart'] as const) {
      const tr = traced[name];
      const ne = tr.tokens.length;
      const nd = tr.decoderTokens!.length;
      const expected = { encoder: [ne, ne], decoder: [nd, nd], cross: [nd, ne] } as const;
      for (const stack of ['encoder', 'decoder', 'cross'] as const) {
        const [nq, nk] = expected[stack];
        expect(tr.attention[stack]!.dims.slice(1)).toEqual([nq, nk]);
        expect(columns(renderHeadView(tr, { stack, layer: 1 }))).toEqual([nq, nk]);
        const heat = svgRoot(renderHeatmap(tr, { stack, layer: 1, head: 2 }));
        const cells = findAll(heat, 'rect', (a) => a['data-q'] !== undefined);
        expect(cells).toHaveLength(nq * nk);
        for (const c of cells.slice(0, 50)) {
          expect(Number(c.attrs['data-value'])).toBeCloseTo(weight(tr, stack, 1, 2, Number(c.attrs['data-q']), Number(c.attrs['data-k'])), 6);
        }
        expect(textOf(svgRoot(renderModelView(tr, { stack })))).toContain(`(${nq} × ${nk})`);
        // Neuron view: q·k from the trace's queries and keys reproduces the model's attention
        // (T5 adds a relative position bias to its self-attention, which the view shows).
        const query = Math.min(3, nq - 1);
        const d = neuronData(tr, { stack, layer: 1, head: 2, query });
        expect(d.keyTokens).toHaveLength(nk);
        expect(d.causal).toBe(stack === 'decoder' && query < nk - 1);
        if (d.bias === null) expect(d.maxSoftmaxError).toBeLessThanOrEqual(1e-5);
        else expect(name === 't5' && stack !== 'cross').toBe(true);
        const neuron = svgRoot(renderNeuronView(tr, { stack, layer: 1, head: 2, query }));
        expect(findAll(neuron, 'g', (a) => a.class === 'key-row')).toHaveLength(nk);
        // Nothing in a decoder-text trace is marked generated.
        expect(JSON.stringify(neuron)).not.toContain('generated');
      }
    }
  });

  it('generation traces (t5, bart): the decoder generates; at step s the decoder and cross stacks have promptLength + s queries, cross keeps every encoder key', () => {
    for (const name of ['t5', 'bart'] as const) {
      const g = generated[name];
      const P = g.generation!.promptLength;
      expect(P).toBe(1); // the decoder start token
      const ne = g.tokens.length;
      const S = g.decoderTokens!.length - P;
      expect(S).toBe(5);
      expect(traceGeneration(g)).toMatchObject({ sequence: 'decoderTokens', steps: 5 });
      for (const step of [0, 2, 5]) {
        const n = P + step;
        expect(stepWindow(g, 'cross', step)).toEqual({ queries: n, keys: ne, newest: n - 1 });
        expect(columns(renderHeadView(g, { stack: 'decoder', layer: 1, step }))).toEqual([n, n]);
        const cross = svgRoot(renderHeadView(g, { stack: 'cross', layer: 1, step }));
        expect([labels(cross, 'query').length, labels(cross, 'key').length]).toEqual([n, ne]);
        // The newest decoder token's lines to the encoder tokens: its cross row.
        const ls = lines(cross);
        expect(ls.every((l) => l.attrs['data-q'] === String(n - 1))).toBe(true);
        for (const l of ls) {
          const w = weight(g, 'cross', 1, Number(findParentHead(cross, l)), n - 1, Number(l.attrs['data-k']));
          expect(Math.abs(Number(l.attrs['stroke-opacity']) - w)).toBeLessThanOrEqual(w * 1e-5);
        }
        // Generated decoder tokens are marked; encoder tokens never are.
        expect(labels(cross, 'query').filter(isGen)).toHaveLength(step);
        expect(labels(cross, 'key').filter(isGen)).toHaveLength(0);
        // The encoder ran once: its stack is the same at every step.
        expect(columns(renderHeadView(g, { stack: 'encoder', layer: 1, step }))).toEqual([ne, ne]);
        expect(textOf(svgRoot(renderHeadView(g, { stack: 'encoder', step })))).toContain('the encoder ran once');
        const heat = svgRoot(renderHeatmap(g, { stack: 'cross', layer: 0, head: 1, step }));
        expect(findAll(heat, 'rect', (a) => a['data-q'] !== undefined && a.class !== 'newest-row')).toHaveLength(n * ne);
        expect(findAll(heat, 'rect', (a) => a.class === 'newest-row').map((r) => r.attrs['data-q'])).toEqual([String(n - 1)]);
        expect(textOf(svgRoot(renderModelView(g, { stack: 'cross', step })))).toContain(`(${n} × ${ne})`);
        const d = neuronData(g, { stack: 'cross', layer: 1, head: 0, step });
        expect(d.query).toBe(n - 1);
        expect(d.keyTokens).toHaveLength(ne);
        for (let k = 0; k < ne; k++) expect(d.attention[k]).toBe(weight(g, 'cross', 1, 0, n - 1, k));
        expect(d.maxSoftmaxError).toBeLessThanOrEqual(1e-5);
        const dd = neuronData(g, { stack: 'decoder', layer: 1, head: 0, step });
        expect(dd.keyTokens).toHaveLength(n);
        expect(dd.masked.some(Boolean)).toBe(false);
        svgRoot(renderNeuronView(g, { stack: 'decoder', layer: 0, head: 1, step }));
      }
    }
  });
});
