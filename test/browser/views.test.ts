/**
 * The standalone HTML views in real Chromium, opened from disk with every network request
 * blocked: each view is exercised by interacting with it (hover, toggle, solo, switch layer,
 * open a model-view cell, read neuron-view and heatmap numbers) and the numbers are compared
 * with the Trace the page was made from. Traces: the default model (llama), the BERT fixture with
 * a sentence pair, the gpt2 fixture, the PyTorch-written T5 encoder-decoder trace, a 512-token
 * BERT-base-shaped trace, and a trace whose tokens try to inject markup.
 */
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { runCli } from '../helpers/cli.js';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { syntheticTrace } from '../../bench/synthetic-trace.js';
import type { Trace } from '../../src/core/trace.js';
import { readTraceFile, writeTraceFile } from '../../src/io/trace-file.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../../src/views/html/standalone.js';
import { fmtValue } from '../../src/views/svg/common.js';
import { prettifyToken, tokenLabel } from '../../src/views/tokens.js';
import { ROOT, buildWebClient, clickModelCell, expectViewExports, hoverMatrixCell, launchChromium, lineCount, numericData, openPage, traceWith, withPage, writeStandalonePage } from './harness.js';

const SENTENCE = 'Once upon a time, there was a little girl named Lily.';
const XSS = '<img src=x onerror=alert(1)>';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-views-'));
let browser: Browser;
const traces: Record<string, Trace> = {};
const files: Record<string, string> = {};

async function writePage(name: string, trace: Trace, text?: string): Promise<void> {
  files[name] = await writeStandalonePage(join(tmp, `${name}.html`), trace, { text });
  traces[name] = trace;
}

function modelTrace(dir: string | undefined, text: string, pair?: string): Promise<Trace> {
  return traceWith(dir, (model) => model.trace(text, { pair, qk: true }));
}

/** Nonzero weights of query q (or into key k) for the given heads — the lines the head view must draw. */
function nonzero(trace: Trace, stack: 'self' | 'encoder' | 'decoder' | 'cross', layer: number, heads: number[], focus: { q?: number; k?: number }, accept: (q: number, k: number) => boolean = () => true): number {
  const s = trace.attention[stack]!;
  const [, nq, nk] = s.dims;
  const W = s.layers[layer]!;
  let n = 0;
  for (const h of heads) {
    for (let q = 0; q < nq; q++) {
      if (focus.q !== undefined && q !== focus.q) continue;
      for (let k = 0; k < nk; k++) {
        if (focus.k !== undefined && k !== focus.k) continue;
        if (W[(h * nq + q) * nk + k]! > 0 && accept(q, k)) n++;
      }
    }
  }
  return n;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
  await writePage('default', await modelTrace(undefined, SENTENCE), SENTENCE);
  await writePage('bert', await modelTrace(join(ROOT, 'test', 'fixtures', 'bert'), 'The cat sat on the mat.', 'It was tired.'));
  await writePage('gpt2', await modelTrace(join(ROOT, 'test', 'fixtures', 'gpt2'), 'Hello world, the quick brown fox jumps.'));
  await writePage('t5', await readTraceFile(join(ROOT, 'test', 'fixtures', 'traces', 't5-encdec.safetensors')));
  const xss = syntheticTrace({ layers: 2, heads: 2, tokens: 6, headDim: 4, pair: false });
  xss.tokens[1]!.text = XSS;
  xss.tokens[2]!.text = '</script><script>alert(2)</script>';
  xss.tokens[3]!.text = '"\'&amp;<!--';
  xss.model.name = '<b onmouseover=alert(3)>model</b>';
  await writePage('xss', xss, `${XSS} </title><script>alert(4)</script>`);
}, 300_000);

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('default model (llama, grouped-query attention)', () => {
  it('opens from disk without any network request, and shows the four views', async () => {
    const p = await openPage(browser, files.default!);
    try {
      expect(p.network()).toEqual([]);
      expect(p.requests.every((u) => u.startsWith('file:'))).toBe(true);
      for (const view of ['head', 'model', 'neuron', 'heatmap']) {
        await p.page.click(`[data-testid=tab-${view}]`);
        await expect.poll(() => p.page.isVisible(`[data-testid=${view}-view]`)).toBe(true);
      }
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
      expect(p.dialogs).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('head view: hover a token shows exactly its nonzero lines; toggle, solo, switch layer', async () => {
    const trace = traces.default!;
    await withPage(browser, files.default!, async (page, p) => {
      const H = trace.model.numHeads;
      // Hover query 5 ("time"-ish): one line per nonzero weight of every head.
      await page.hover('[data-testid=head-query-5]');
      expect(await lineCount(page)).toBe(nonzero(trace, 'self', 0, range(H), { q: 5 }));
      expect(await lineCount(page)).toBe(6 * H); // causal: keys 0..5
      // Hover a key: the lines into it.
      await page.hover('[data-testid=head-key-2]');
      expect(await lineCount(page)).toBe(nonzero(trace, 'self', 0, range(H), { k: 2 }));
      // Toggle head 2 off.
      await page.click('[data-testid=head-swatch-2]');
      expect(await page.getAttribute('[data-testid=head-swatch-2]', 'aria-pressed')).toBe('false');
      await page.hover('[data-testid=head-query-7]');
      const without2 = range(H).filter((h) => h !== 2);
      expect(await lineCount(page)).toBe(nonzero(trace, 'self', 0, without2, { q: 7 }));
      expect(await page.locator('[data-testid=head-lines] g[data-head="2"] line').count()).toBe(0);
      // Solo head 3 (double-click).
      await page.dblclick('[data-testid=head-swatch-3]');
      const pressed = await page.$$eval('[data-testid^=head-swatch-]', (els) => els.map((e) => e.getAttribute('aria-pressed')));
      expect(pressed).toEqual(range(H).map((h) => (h === 3 ? 'true' : 'false')));
      await page.hover('[data-testid=head-query-9]');
      expect(await lineCount(page)).toBe(nonzero(trace, 'self', 0, [3], { q: 9 }));
      // With one head the values are printed beside the keys, equal to the trace.
      const W0 = trace.attention.self!.layers[0]!;
      const nq = trace.tokens.length;
      for (const k of [0, 4, 9]) {
        const w = W0[(3 * nq + 9) * nq + k]!;
        expect(Number(await page.getAttribute(`[data-testid=head-value-${k}]`, 'data-value'))).toBe(w);
        expect(await page.textContent(`[data-testid=head-value-${k}]`)).toBe(fmtValue(w, 4));
      }
      // Switch layer.
      await page.selectOption('[data-testid=head-layer]', { label: '3' });
      await page.mouse.move(0, 0);
      await page.hover('[data-testid=head-query-12]');
      expect(await lineCount(page)).toBe(nonzero(trace, 'self', 3, [3], { q: 12 }));
      // All heads again; the unfocused picture draws the strongest 1,000 nonzero weights of the layer (as the export does).
      await page.click('[data-testid=head-all]');
      await page.mouse.move(0, 0);
      expect(await lineCount(page)).toBe(Math.min(1000, nonzero(trace, 'self', 3, range(H), {})));
      expect(await page.textContent('[data-testid=head-canvas-note]')).toMatch(/^lines: (the 1,000 strongest|all)/);
      // Click pins a token: its lines stay after the pointer leaves.
      await page.click('[data-testid=head-query-4]');
      await page.mouse.move(0, 0);
      expect(await lineCount(page)).toBe(nonzero(trace, 'self', 3, range(H), { q: 4 }));
      expect(p.errors).toEqual([]);
    });
  });

  it('model view: grid of layers × heads; a click opens the cell large with labels and exact values', async () => {
    const trace = traces.default!;
    await withPage(browser, files.default!, async (page, p) => {
      await page.click('[data-testid=tab-model]');
      await expect.poll(() => page.getAttribute('[data-testid=model-canvas]', 'data-drawn')).toBe('true');
      // Cell (layer 2, head 6).
      await clickModelCell(page, 2, 6);
      await expect.poll(() => page.isVisible('[data-testid=model-detail]')).toBe(true);
      expect(await page.textContent('[data-testid=model-detail-title]')).toBe('layer 2 · head 6');
      await hoverMatrixCell(page, 'model-detail-canvas', 11, 4);
      const nq = trace.tokens.length;
      const w = trace.attention.self!.layers[2]![(6 * nq + 11) * nq + 4]!;
      await expect.poll(() => page.getAttribute('[data-testid=model-detail-readout]', 'data-value')).toBe(String(w));
      await page.keyboard.press('Escape');
      await expect.poll(() => page.isVisible('[data-testid=model-detail]')).toBe(false);
      // Choose layers and heads: drop layer 0 and solo head 1.
      await page.click('[data-testid=model-layer-0]');
      await page.dblclick('[data-testid=model-head-1]');
      await expect.poll(() => page.getAttribute('[data-testid=model-canvas]', 'data-layers')).toBe('1,2,3,4');
      expect(await page.getAttribute('[data-testid=model-canvas]', 'data-heads')).toBe('1');
      expect(p.errors).toEqual([]);
    });
  });

  it('neuron view: q, k, q·k, scores and softmax equal the trace; GQA key head is named', async () => {
    const trace = traces.default!;
    await withPage(browser, files.default!, async (page, p) => {
      await page.click('[data-testid=tab-neuron]');
      await page.selectOption('[data-testid=neuron-layer]', { label: '2' });
      await page.selectOption('[data-testid=neuron-head]', { label: '5' });
      await page.selectOption('[data-testid=neuron-query]', { index: 9 });
      await expect.poll(() => page.textContent('[data-testid=neuron-kv-head]')).toContain('query head 5 reads key head 2');
      const { numHeads: H, numKeyValueHeads: KV, headDim: D } = trace.model;
      const nq = trace.tokens.length;
      const q = trace.queries!.self!.layers[2]!.subarray((5 * nq + 9) * D, (5 * nq + 10) * D);
      const kv = Math.floor((5 * KV) / H);
      for (let j = 0; j < nq; j++) {
        const k = trace.keys!.self!.layers[2]!.subarray((kv * nq + j) * D, (kv * nq + j + 1) * D);
        let dot = 0;
        for (let i = 0; i < D; i++) dot += q[i]! * k[i]!;
        const att = trace.attention.self!.layers[2]![(5 * nq + 9) * nq + j]!;
        expect(Number(await page.getAttribute(`[data-testid=neuron-attention-${j}]`, 'data-value'))).toBe(att);
        if (j > 9) {
          expect(await page.textContent(`[data-testid=neuron-score-${j}]`)).toBe('−∞'); // causal mask
          continue;
        }
        expect(Number(await page.getAttribute(`[data-testid=neuron-dot-${j}]`, 'data-value'))).toBeCloseTo(dot, 12);
        expect(await page.textContent(`[data-testid=neuron-dot-${j}]`)).toBe(fmtValue(dot, 4));
        expect(Number(await page.getAttribute(`[data-testid=neuron-score-${j}]`, 'data-value'))).toBeCloseTo(dot / Math.sqrt(D), 12);
        // softmax(scores) reproduces the model's attention.
        expect(Math.abs(Number(await page.getAttribute(`[data-testid=neuron-softmax-${j}]`, 'data-value')) - att)).toBeLessThan(1e-6);
      }
      // Hover a key vector component: its value.
      const row4 = await page.locator('[data-testid=neuron-row-4]').boundingBox();
      // The k strip starts where the 'k' header is; component 3 of 8.
      const kHeader = (await page.locator('[data-testid=neuron-svg] text.header', { hasText: /^k$/ }).boundingBox())!;
      const stripW = Math.max(192, Math.min(768, D * 2));
      await page.mouse.move(kHeader.x + (3.5 / D) * stripW, row4!.y + row4!.height / 2);
      const k4 = trace.keys!.self!.layers[2]![(kv * nq + 4) * D + 3]!;
      await expect.poll(() => page.getAttribute('[data-testid=neuron-readout]', 'data-value')).toBe(String(k4));
      expect(p.errors).toEqual([]);
    });
  });

  it('heatmap: hover shows the exact value; mean, max, whole layer and log scale', async () => {
    const trace = traces.default!;
    const p = await openPage(browser, files.default!);
    const { page } = p;
    const nq = trace.tokens.length;
    const W = trace.attention.self!.layers[1]!;
    try {
      await page.click('[data-testid=tab-heatmap]');
      await page.selectOption('[data-testid=heatmap-layer]', { label: '1' });
      await page.selectOption('[data-testid=heatmap-head]', { label: '4' });
      await hoverMatrixCell(page, 'heatmap-canvas', 8, 3);
      const w = W[(4 * nq + 8) * nq + 3]!;
      await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-value')).toBe(String(w));
      expect(await page.textContent('[data-testid=heatmap-value]')).toBe(fmtValue(w, 4));
      // Mean over heads.
      await page.selectOption('[data-testid=heatmap-mode]', { label: 'mean over heads' });
      await page.mouse.move(0, 0);
      await hoverMatrixCell(page, 'heatmap-canvas', 8, 3);
      let mean = 0;
      for (let h = 0; h < trace.model.numHeads; h++) mean += W[(h * nq + 8) * nq + 3]! / trace.model.numHeads;
      await expect.poll(async () => Math.abs(Number(await page.getAttribute('[data-testid=heatmap-readout]', 'data-value')) - mean)).toBeLessThan(1e-6);
      // Max over heads.
      await page.selectOption('[data-testid=heatmap-mode]', { label: 'max over heads' });
      await page.mouse.move(0, 0);
      await hoverMatrixCell(page, 'heatmap-canvas', 8, 3);
      const max = Math.max(...range(trace.model.numHeads).map((h) => W[(h * nq + 8) * nq + 3]!));
      await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-value')).toBe(String(max));
      // Every head of the layer: matrix 6.
      await page.selectOption('[data-testid=heatmap-mode]', { label: 'every head of the layer' });
      await page.mouse.move(0, 0);
      await hoverMatrixCell(page, 'heatmap-canvas', 10, 2, 6);
      await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-value')).toBe(String(W[(6 * nq + 10) * nq + 2]!));
      expect(await page.getAttribute('[data-testid=heatmap-readout]', 'data-matrix')).toBe('6');
      // Log scale: legend ticks become powers of ten; the readout still shows the exact value.
      await page.check('[data-testid=heatmap-log]');
      await page.mouse.move(0, 0);
      await hoverMatrixCell(page, 'heatmap-canvas', 10, 2, 6);
      await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-value')).toBe(String(W[(6 * nq + 10) * nq + 2]!));
      expect(p.errors).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('shared controls: theme, hide special tokens, merge sub-words, prettify', async () => {
    const trace = traces.default!;
    await withPage(browser, files.default!, async (page, p) => {
      await page.selectOption('[data-testid=theme]', 'dark');
      expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe('dark');
      expect(await page.evaluate(() => getComputedStyle(document.body).backgroundColor)).toBe('rgb(13, 17, 23)');
      const queries = () => page.locator('[data-testid^=head-query-]').count();
      expect(await queries()).toBe(trace.tokens.length);
      await page.check('[data-testid=hide-special]');
      await expect.poll(queries).toBe(trace.tokens.filter((t) => !t.special).length);
      await page.uncheck('[data-testid=hide-special]');
      // Sentencepiece pieces of one word ("g", "ir", "l" of "girl") merge into one token.
      await page.check('[data-testid=merge-subwords]');
      const merged = await page.$$eval('[data-testid^=head-query-]', (els) => els.map((e) => e.childNodes[0]!.textContent));
      expect(merged).toContain('girl');
      expect(merged.length).toBeLessThan(trace.tokens.length);
      await page.uncheck('[data-testid=merge-subwords]');
      // Prettify off shows the tokenizer's own spelling (▁ markers).
      const label = () => page.$eval('[data-testid=head-query-1]', (e) => e.childNodes[0]!.textContent);
      expect(await label()).toBe(tokenLabel(prettifyToken(trace.tokens[1]!.text, 'llama')));
      await page.uncheck('[data-testid=prettify]');
      expect(await label()).toBe(trace.tokens[1]!.text);
      expect(trace.tokens[1]!.text.startsWith('▁')).toBe(true);
      expect(p.errors).toEqual([]);
    });
  });

  it('exports the current view as SVG and PNG (local downloads)', async () => {
    await withPage(browser, files.default!, async (page, p) => {
      for (const view of ['head', 'model', 'neuron', 'heatmap']) {
        await page.click(`[data-testid=tab-${view}]`);
        await expectViewExports(page, view);
      }
      expect(p.network()).toEqual([]);
      expect(p.errors).toEqual([]);
    });
  });
});

describe('other architectures', () => {
  it('BERT with a sentence pair: A→B, B→A, A→A, B→B filters', async () => {
    const trace = traces.bert!;
    await withPage(browser, files.bert!, async (page, p) => {
      const seg = trace.tokens.map((t) => t.segment);
      const q = seg.indexOf(0) + 2; // a sentence-A word
      const qb = seg.indexOf(1) + 1; // a sentence-B word
      const H = trace.model.numHeads;
      for (const [filter, query, want] of [
        ['A→B', q, [0, 1]],
        ['A→A', q, [0, 0]],
        ['B→A', qb, [1, 0]],
        ['B→B', qb, [1, 1]],
      ] as const) {
        await page.selectOption('[data-testid=head-pair]', filter);
        await page.hover(`[data-testid=head-query-${query}]`);
        const expected = nonzero(trace, 'self', 0, range(H), { q: query }, (qq, k) => seg[qq] === want[0] && seg[k] === want[1]);
        expect(await lineCount(page)).toBe(expected);
        expect(expected).toBeGreaterThan(0);
        const ks = await page.$$eval('[data-testid=head-lines] line', (ls) => ls.map((l) => Number(l.getAttribute('data-k'))));
        expect(ks.every((k) => seg[k] === want[1])).toBe(true);
        await page.mouse.move(0, 0);
      }
      // Hover a sentence-A query under A→B after B→B: no lines (it is not a B query).
      await page.hover(`[data-testid=head-query-${q}]`);
      expect(await lineCount(page)).toBe(0);
      expect(p.errors).toEqual([]);
    });
  });

  it('gpt2: byte-level tokens prettified, lines and neuron numbers match', async () => {
    const trace = traces.gpt2!;
    await withPage(browser, files.gpt2!, async (page, p) => {
      const labels = await page.$$eval('[data-testid^=head-key-]', (els) => els.map((e) => e.childNodes[0]!.textContent ?? ''));
      expect(labels.some((l) => l.includes('Ġ'))).toBe(false);
      const spaced = trace.tokens.findIndex((t) => t.text.startsWith('Ġ') && t.text.length > 1);
      expect(spaced).toBeGreaterThan(0);
      expect(labels[spaced]).toBe(trace.tokens[spaced]!.text.slice(1));
      await page.hover('[data-testid=head-query-3]');
      expect(await lineCount(page)).toBe(nonzero(trace, 'self', 0, range(trace.model.numHeads), { q: 3 }));
      await page.click('[data-testid=tab-neuron]');
      await page.selectOption('[data-testid=neuron-query]', { index: 4 });
      const nq = trace.tokens.length;
      const att = trace.attention.self!.layers[0]![(0 * nq + 4) * nq + 2]!;
      await expect.poll(() => page.getAttribute('[data-testid=neuron-attention-2]', 'data-value')).toBe(String(att));
      expect(Math.abs(Number(await page.getAttribute('[data-testid=neuron-softmax-2]', 'data-value')) - att)).toBeLessThan(1e-6);
      expect(p.errors).toEqual([]);
    });
  });

  it('T5 encoder-decoder trace written by PyTorch: encoder, decoder and cross attention with separate columns', async () => {
    const trace = traces.t5!;
    await withPage(browser, files.t5!, async (page, p) => {
      const options = await page.$$eval('[data-testid=stack] option', (os) => os.map((o) => o.textContent));
      expect(options).toEqual(['encoder self-attention', 'decoder self-attention', 'cross-attention (decoder → encoder)']);
      const count = (side: string) => page.locator(`[data-testid^=head-${side}-]`).count();
      expect(await count('query')).toBe(trace.tokens.length);
      await page.selectOption('[data-testid=stack]', { label: 'cross-attention (decoder → encoder)' });
      await expect.poll(() => count('query')).toBe(trace.decoderTokens!.length);
      expect(await count('key')).toBe(trace.tokens.length);
      expect(await page.textContent('[data-testid=head-svg] text')).toContain('decoder tokens (queries)');
      await page.selectOption('[data-testid=head-layer]', { label: '1' });
      await page.hover('[data-testid=head-query-3]');
      expect(await lineCount(page)).toBe(nonzero(trace, 'cross', 1, range(trace.model.numHeads), { q: 3 }));
      await page.selectOption('[data-testid=stack]', { label: 'decoder self-attention' });
      await page.mouse.move(0, 0);
      await page.hover('[data-testid=head-query-5]');
      expect(await lineCount(page)).toBe(nonzero(trace, 'decoder', 1, range(trace.model.numHeads), { q: 5 }));
      // Heatmap of the cross attention: decoder rows × encoder columns.
      await page.selectOption('[data-testid=stack]', { label: 'cross-attention (decoder → encoder)' });
      await page.click('[data-testid=tab-heatmap]');
      await page.selectOption('[data-testid=heatmap-head]', { label: '2' });
      await hoverMatrixCell(page, 'heatmap-canvas', 4, 60);
      const s = trace.attention.cross!;
      await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-value')).toBe(String(s.layers[1]![(2 * s.dims[1] + 4) * s.dims[2] + 60]!));
      // No queries/keys in this trace: the neuron view says so.
      await page.click('[data-testid=tab-neuron]');
      await expect.poll(() => page.isVisible('[data-testid=neuron-unavailable]')).toBe(true);
      expect(p.errors).toEqual([]);
      expect(p.network()).toEqual([]);
    });
  });
});

describe('token text is inert', () => {
  it(`a token ${XSS} is shown as text and runs nothing`, async () => {
    await withPage(browser, files.xss!, async (page, p) => {
      for (const view of ['head', 'model', 'neuron', 'heatmap']) {
        await page.click(`[data-testid=tab-${view}]`);
        await page.waitForTimeout(50);
      }
      await page.click('[data-testid=tab-head]');
      // Labels are cut at 24 characters with an ellipsis; the tooltip holds the whole token.
      expect(await page.$eval('[data-testid=head-query-1]', (e) => e.childNodes[0]!.textContent)).toBe(`${XSS.slice(0, 23)}…`);
      expect(await page.textContent('[data-testid=head-query-1] title')).toBe(`query 1: ${XSS}`);
      expect(await page.textContent('[data-testid=head-key-2] title')).toBe('key 2: </script><script>alert(2)</script>');
      expect(await page.$eval('[data-testid=head-key-3]', (e) => e.childNodes[0]!.textContent)).toBe('"\'&amp;<!--');
      await page.hover('[data-testid=head-query-1]');
      await page.hover('[data-testid=subtitle]');
      expect(await page.textContent('[data-testid=subtitle]')).toContain('<b onmouseover=alert(3)>model</b>');
      expect(await page.textContent('[data-testid=source-text]')).toContain(XSS);
      expect(await page.title()).toContain(XSS);
      expect(await page.locator('img').count()).toBe(0);
      expect(await page.locator('b[onmouseover]').count()).toBe(0);
      expect(await page.evaluate(() => document.scripts.length)).toBe(
        // header + blobs + the client: nothing injected
        await page.evaluate(() => document.querySelectorAll('script[type="application/json"], script[type="application/octet-stream"]').length + 1),
      );
      await page.waitForTimeout(200);
      expect(p.dialogs).toEqual([]);
      expect(p.errors).toEqual([]);
      expect(p.network()).toEqual([]);
    });
  });
});

describe('long and large traces', () => {
  it('a 12 × 12 × 512-token trace: model view draws, opens a cell, hover values are right', async () => {
    const trace = syntheticTrace({ tokens: 512, qk: false, seed: 3 });
    await writePage('long', trace);
    const p = await openPage(browser, files.long!, { width: 1400, height: 900 });
    const { page } = p;
    try {
      // The head view of 3 million weights draws the strongest 1,000 lines; hovering a token gives all of its lines.
      expect(await lineCount(page)).toBe(1000);
      expect(await page.textContent('[data-testid=head-canvas-note]')).toContain('lines: the 1,000 strongest of');
      await page.hover('[data-testid=head-query-100]');
      expect(await lineCount(page)).toBe(nonzero(trace, 'self', 0, range(12), { q: 100 }));
      await page.click('[data-testid=tab-model]');
      await expect.poll(() => page.getAttribute('[data-testid=model-canvas]', 'data-drawn'), { timeout: 30_000 }).toBe('true');
      await clickModelCell(page, 11, 7);
      await expect.poll(() => page.textContent('[data-testid=model-detail-title]')).toBe('layer 11 · head 7');
      await hoverMatrixCell(page, 'model-detail-canvas', 300, 0);
      const w = trace.attention.self!.layers[11]![(7 * 512 + 300) * 512 + 0]!;
      // The file keeps attention to 4 or 5 decimals at this size: the value is the trace's at that precision.
      await expect.poll(async () => Math.abs(Number(await page.getAttribute('[data-testid=model-detail-readout]', 'data-value')) - w)).toBeLessThanOrEqual(0.5e-4 + 1e-9);
      expect(p.errors).toEqual([]);
    } finally {
      await p.close();
    }
  });
});

describe('BERT-base size (12 layers × 12 heads, 128 tokens, head dim 64)', () => {
  it('fits in 8 MB with every view, and the numbers shown equal the trace at the precision shown', async () => {
    const trace = syntheticTrace({ tokens: 128 });
    const result = await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), deflate: (d) => deflateRawSync(d, { level: 6 }) });
    expect(result.bytes).toBeLessThanOrEqual(8_000_000);
    expect(result.precision.attention).toBe('fixed5');
    const file = join(tmp, 'bert-base-128.html');
    writeFileSync(file, result.html);
    await withPage(browser, file, async (page, p) => {
      const T = 128;
      const D = 64;
      // Heatmap hover: 5 decimals, equal to the trace's value rounded to 5 decimals.
      await page.click('[data-testid=tab-heatmap]');
      await page.selectOption('[data-testid=heatmap-layer]', { label: '4' });
      await page.selectOption('[data-testid=heatmap-head]', { label: '9' });
      for (const [q, k] of [
        [0, 0],
        [40, 3],
        [100, 127],
      ] as const) {
        await hoverMatrixCell(page, 'heatmap-canvas', q, k);
        const w = trace.attention.self!.layers[4]![(9 * T + q) * T + k]!;
        await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-q')).toBe(String(q));
        const shown = (await page.textContent('[data-testid=heatmap-value]'))!;
        if (w >= 0.5e-5) expect(Math.abs(Number(shown) - w)).toBeLessThanOrEqual(0.5e-5 + 1e-9);
        else expect(shown === '0' || shown.startsWith('<')).toBe(true);
      }
      // Neuron view: q and k components to 2 decimals, the model's attention to 5; derived numbers marked ≈.
      await page.click('[data-testid=tab-neuron]');
      await page.selectOption('[data-testid=neuron-layer]', { label: '7' });
      await page.selectOption('[data-testid=neuron-head]', { label: '2' });
      await page.selectOption('[data-testid=neuron-query]', { index: 50 });
      await expect.poll(() => page.isVisible('[data-testid=neuron-precision]')).toBe(true);
      // No bias column: this synthetic trace records no score terms, and the notes say what was assumed.
      expect(await page.textContent('[data-testid=neuron-notes]')).not.toContain('the model adds it to the scaled scores');
      expect(await page.textContent('[data-testid=neuron-notes]')).toContain('records no score terms');
      for (const j of [0, 50, 90]) {
        const att = trace.attention.self!.layers[7]![(2 * T + 50) * T + j]!;
        const text = (await page.textContent(`[data-testid=neuron-attention-${j}]`))!;
        if (text.startsWith('<')) expect(att).toBeLessThan(0.5e-5);
        else expect(Math.abs(Number(text) - att)).toBeLessThanOrEqual(0.5e-5 + 1e-9);
        const q = trace.queries!.self!.layers[7]!.subarray((2 * T + 50) * D, (2 * T + 51) * D);
        const k = trace.keys!.self!.layers[7]!.subarray((2 * T + j) * D, (2 * T + j + 1) * D);
        let dot = 0;
        let bound = 0;
        for (let i = 0; i < D; i++) {
          dot += q[i]! * k[i]!;
          bound += (Math.abs(q[i]!) + Math.abs(k[i]!)) * 0.005 + 0.005 * 0.005;
        }
        // Computed from q and k rounded to 2 decimals: within the rounding's worst-case bound of the exact q·k.
        expect(Math.abs(Number(await page.getAttribute(`[data-testid=neuron-dot-${j}]`, 'data-value')) - dot)).toBeLessThanOrEqual(bound);
        expect(Math.abs(Number(await page.getAttribute(`[data-testid=neuron-softmax-${j}]`, 'data-value')) - att)).toBeLessThan(2e-3);
      }
      // A key component, shown to 2 decimals, equals the trace's value at 2 decimals.
      await page.locator('[data-testid=neuron-row-90]').scrollIntoViewIfNeeded();
      const row = (await page.locator('[data-testid=neuron-row-90]').boundingBox())!;
      const kHeader = (await page.locator('[data-testid=neuron-svg] text.header', { hasText: /^k$/ }).boundingBox())!;
      await page.mouse.move(kHeader.x + (10.5 / D) * 192, row.y + row.height / 2);
      await expect.poll(() => page.getAttribute('[data-testid=neuron-readout]', 'data-row')).toBe('90');
      const text = (await page.textContent('[data-testid=neuron-component]'))!;
      const shown = Number(text.split('= ')[1]!.replace('−', '-'));
      expect(Math.abs(shown - trace.keys!.self!.layers[7]![(2 * T + 90) * D + 10]!)).toBeLessThanOrEqual(0.005 + 1e-9);
      expect(p.errors).toEqual([]);
    });
  });
});

describe('attnscope view (command line)', () => {
  const run = (...args: string[]) => runCli(tmp, ['view', ...args], 120_000, tmp);

  it('writes the default model\'s views to attnscope-view.html and prints where', async () => {
    const r = run('--text', SENTENCE);
    expect(r.status, r.stderr).toBe(0);
    const out = join(tmp, 'attnscope-view.html');
    expect(r.stdout.trim()).toBe(out);
    expect(r.stderr).toMatch(/^wrote attnscope-view\.html \(\d+ kB; 16 tokens, 5 layers × 8 heads; all values exact\)/);
    const p = await openPage(browser, out);
    try {
      expect(await p.page.textContent('[data-testid=subtitle]')).toContain('stories260k');
      expect(await p.page.textContent('[data-testid=source-text]')).toBe(`“${SENTENCE}”`);
      expect(p.network()).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('opens a trace file (.json and .safetensors), with --out, --view and --theme', async () => {
    const json = join(tmp, 'gpt2-trace.json');
    await writeTraceFile(json, traces.gpt2!);
    const out = join(tmp, 'from-json.html');
    const r = run(json, '--out', out, '--view', 'heatmap', '--theme', 'dark');
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(out);
    const p = await openPage(browser, out);
    try {
      expect(await p.page.isVisible('[data-testid=heatmap-view]')).toBe(true);
      expect(await p.page.evaluate(() => document.documentElement.dataset.theme)).toBe('dark');
    } finally {
      await p.close();
    }
    const t5 = run(join(ROOT, 'test', 'fixtures', 'traces', 't5-encdec.safetensors'), '--out', join(tmp, 't5.html'));
    expect(t5.status, t5.stderr).toBe(0);
    expect(t5.stderr).toContain('88+18 tokens');
  });

  it('user errors are one line and leave no file behind', () => {
    for (const [args, pattern] of [
      [['--text', 'hi', '--out', join(tmp, 'no', 'such', 'dir', 'v.html')], /no such directory/],
      [[join(tmp, 'missing.json')], /no such trace file/],
      [['--view', 'nope', '--text', 'hi'], /--view/],
      [['--max-size', 'lots', '--text', 'hi'], /--max-size/],
      [[], /give --text/],
      [[join(ROOT, 'test', 'fixtures', 'traces', 't5-encdec.safetensors'), '--text', 'x'], /does not apply to a trace file/],
    ] as const) {
      const r = run(...args);
      expect(r.status, r.stderr).not.toBe(0);
      const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('npm warn'));
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^attnscope: /);
      expect(lines[0]).toMatch(pattern);
    }
    expect(readdirSync(tmp).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });
});
