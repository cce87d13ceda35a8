/**
 * Generation traces and encoder-decoders in the standalone page, in real Chromium with the
 * network blocked: generated tokens marked, the generation in the header, the step control
 * (slider, ◀ ▶, ←/→) and every view at a step — checked against the Trace the page was made from.
 * Pages: a default-model generation, a T5 generation (encoder / decoder / cross selector), and
 * T5 / BART traced with decoder text. Also `attnscope view --generate`.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCli } from '../helpers/cli.js';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StackName, Trace } from '../../src/core/trace.js';
import { loadModel } from '../../src/engine/load.js';
import { writeTraceFile } from '../../src/io/trace-file.js';
import { describeGeneration, formatProbability, traceGeneration } from '../../src/views/generation.js';
import { fmtValue } from '../../src/views/svg/common.js';
import { DARK, LIGHT } from '../../src/views/theme.js';
import { ROOT, buildWebClient, clickModelCell, hoverMatrixCell, launchChromium, lineCount, openPage, withPage, writeStandalonePage } from './harness.js';

const PROMPT = 'Once upon a time';
const T5_TEXT = 'translate English to German: the house is small';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-generation-'));
let browser: Browser;
const traces: Record<string, Trace> = {};
const files: Record<string, string> = {};

async function writePage(name: string, trace: Trace, text?: string): Promise<void> {
  files[name] = await writeStandalonePage(join(tmp, `${name}.html`), trace, { text, theme: 'light' });
  traces[name] = trace;
}

function weight(trace: Trace, stack: StackName, l: number, h: number, q: number, k: number): number {
  const s = trace.attention[stack]!;
  const [, nq, nk] = s.dims;
  return s.layers[l]![(h * nq + q) * nk + k]!;
}

/** Nonzero weights of query q over keys < nk for the given heads: the lines the head view draws for it. */
function nonzeroRow(trace: Trace, stack: StackName, l: number, heads: number[], q: number, nk: number): number {
  let n = 0;
  for (const h of heads) for (let k = 0; k < nk; k++) if (weight(trace, stack, l, h, q, k) > 0) n++;
  return n;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const count = (page: Page, side: 'query' | 'key') => page.locator(`[data-testid^=head-${side}-]`).count();
const shownStep = (page: Page) => page.getAttribute('[data-testid=generation-bar]', 'data-step');

/** Moves the step slider as a user dragging it would end up: value set, input event fired. */
async function slideTo(page: Page, value: number): Promise<void> {
  await page.$eval('[data-testid=step-slider]', (el, v) => {
    (el as HTMLInputElement).value = String(v);
    el.dispatchEvent(new Event('input', { bubbles: true }));
  }, value);
}

/** The ←/→ keys with the focus on the page (not in a form control, which keeps its own arrows). */
async function arrow(page: Page, key: 'ArrowLeft' | 'ArrowRight', times = 1): Promise<void> {
  await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
  for (let i = 0; i < times; i++) await page.keyboard.press(key);
}

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
  const stories = await loadModel();
  try {
    await writePage('gen', await stories.generate(PROMPT, { maxNewTokens: 12, qk: true }), PROMPT);
  } finally {
    await stories.dispose();
  }
  const t5 = await loadModel(join(ROOT, 'test', 'fixtures', 't5'));
  try {
    await writePage('t5gen', await t5.generate(T5_TEXT, { maxNewTokens: 5, qk: true }), T5_TEXT);
    await writePage('t5dec', await t5.trace(T5_TEXT, { decoderText: 'das Haus ist klein', qk: true }), T5_TEXT);
  } finally {
    await t5.dispose();
  }
  const bart = await loadModel(join(ROOT, 'test', 'fixtures', 'bart'));
  try {
    await writePage('bartdec', await bart.trace('The house is small.', { decoderText: 'La maison est petite.', qk: true }), 'The house is small.');
  } finally {
    await bart.dispose();
  }
}, 300_000);

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('a generation of the default model', () => {
  it('header shows how it was generated; generated tokens are marked, with their probabilities', async () => {
    const trace = traces.gen!;
    const P = trace.generation!.promptLength;
    const N = trace.tokens.length;
    expect(N).toBe(P + 12);
    await withPage(browser, files.gen!, async (page, p) => {
      expect(await page.textContent('[data-testid=generation-info]')).toBe(`generated: ${describeGeneration(traceGeneration(trace)!)}`);
      expect(await page.textContent('[data-testid=generation-info]')).toBe(`generated: greedy · ${P} prompt tokens + 12 new tokens · stopped by length`);
      expect(await page.textContent('[data-testid=generation-legend]')).toBe('prompt | generated');
      expect(await shownStep(page)).toBe('all');
      expect(await count(page, 'query')).toBe(N);
      for (const side of ['query', 'key'] as const) {
        for (let i = 0; i < N; i++) {
          const el = page.locator(`[data-testid=head-${side}-${i}]`);
          const generated = (await el.getAttribute('class'))!.split(' ').includes('generated');
          expect(generated).toBe(i >= P);
          if (generated) {
            expect(await el.evaluate((e) => getComputedStyle(e).fill)).toBe('rgb(188, 76, 0)'); // LIGHT.generated
            expect(await el.evaluate((e) => getComputedStyle(e).fontStyle)).toBe('italic');
          }
        }
        expect(await page.getAttribute(`[data-testid=head-boundary-${side}]`, 'data-index')).toBe(String(P));
      }
      expect(LIGHT.generated).toBe('#bc4c00');
      // Tooltips: which generated token, and the probability it was chosen with.
      for (const i of [P, P + 2, N - 1]) {
        const prob = formatProbability(trace.generation!.steps[i - P]!.probability);
        expect(await page.textContent(`[data-testid=head-query-${i}] title`)).toBe(`query ${i}: ${trace.tokens[i]!.text} · generated token ${i - P + 1}, p = ${prob}`);
      }
      expect(await page.textContent(`[data-testid=head-query-1] title`)).toBe(`query 1: ${trace.tokens[1]!.text}`);
      // Dark theme: the generated colour follows.
      await page.selectOption('[data-testid=theme]', 'dark');
      await expect.poll(() => page.locator(`[data-testid=head-key-${P}]`).evaluate((e) => getComputedStyle(e).fill)).toBe('rgb(255, 166, 87)');
      expect(DARK.generated).toBe('#ffa657');
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
      expect(p.network()).toEqual([]);
    });
  });

  it('steps through the generation (slider, ◀ ▶, ←/→): the head view shows promptLength + s tokens and the newest token\'s row', async () => {
    const trace = traces.gen!;
    const P = trace.generation!.promptLength;
    const N = trace.tokens.length;
    const H = trace.model.numHeads;
    await withPage(browser, files.gen!, async (page, p) => {
      await page.selectOption('[data-testid=head-layer]', { label: '2' });
      expect(await page.getAttribute('[data-testid=step-slider]', 'max')).toBe(String(12 + 1));
      const expectStep = async (s: number) => {
        const n = P + s;
        await expect.poll(() => shownStep(page)).toBe(String(s));
        await expect.poll(() => count(page, 'query')).toBe(n);
        expect(await count(page, 'key')).toBe(n);
        expect(await page.textContent('[data-testid=step-label]')).toBe(`step ${s} / 12 · ${n} tokens`);
        // The newest token's row: one line per nonzero weight over the tokens so far, every head.
        await page.mouse.move(0, 0);
        expect(await page.getAttribute('[data-testid=head-readout]', 'data-focus')).toBe(`query:${n - 1}`);
        expect(await lineCount(page)).toBe(nonzeroRow(trace, 'self', 2, range(H), n - 1, n));
        expect(await lineCount(page)).toBe(H * n);
        const qs = await page.$$eval('[data-testid=head-lines] line', (ls) => ls.map((l) => Number(l.getAttribute('data-q'))));
        expect(new Set(qs)).toEqual(new Set([n - 1]));
        // Line opacity = the trace's weight.
        const drawn = await page.$$eval('[data-testid=head-lines] line[data-head]', (ls) =>
          ls.map((l) => [Number(l.getAttribute('data-head')), Number(l.getAttribute('data-k')), Number(l.getAttribute('stroke-opacity'))]),
        );
        expect(drawn).toHaveLength(H * n);
        for (const [h, k, o] of drawn) expect(o).toBeCloseTo(Math.min(1, weight(trace, 'self', 2, h!, n - 1, k!)), 6);
        if (s > 0) {
          const prob = formatProbability(trace.generation!.steps[s - 1]!.probability);
          expect(await page.textContent('[data-testid=step-readout]')).toContain(`(generated token ${s}, p = ${prob})`);
        }
      };
      await slideTo(page, 3);
      await expectStep(3);
      // Hover values of the highlighted row: solo head 5, then the printed values and the tooltip.
      await page.dblclick('[data-testid=head-swatch-5]');
      await page.mouse.move(0, 0);
      const n = P + 3;
      for (const k of range(n)) {
        const w = weight(trace, 'self', 2, 5, n - 1, k);
        expect(Number(await page.getAttribute(`[data-testid=head-value-${k}]`, 'data-value'))).toBe(w);
        expect(await page.textContent(`[data-testid=head-value-${k}]`)).toBe(fmtValue(w, 4));
      }
      // (The value sits under the block's transparent hit area, which shows the tooltip.)
      await page.hover('[data-testid=head-value-2]', { force: true });
      await expect.poll(() => page.textContent('[data-testid=tooltip]')).toContain(`head 5: ${fmtValue(weight(trace, 'self', 2, 5, n - 1, 2), 4)}`);
      await page.click('[data-testid=head-all]');
      // Another token at a step: hovering shows its lines; leaving returns to the newest.
      await page.hover('[data-testid=head-key-1]');
      let into = 0;
      for (const h of range(H)) for (let q = 0; q < n; q++) if (weight(trace, 'self', 2, h, q, 1) > 0) into++;
      expect(await lineCount(page)).toBe(into);
      await page.mouse.move(0, 0);
      await expectStep(3);
      // Keyboard and buttons.
      await arrow(page, 'ArrowRight');
      await expectStep(4);
      await page.click('[data-testid=step-prev]');
      await page.click('[data-testid=step-prev]');
      await expectStep(2);
      await arrow(page, 'ArrowLeft', 5);
      await expectStep(0); // the prompt alone, its last token's row (it predicted generated token 1)
      expect(await page.textContent('[data-testid=step-readout]')).toContain(`predicted generated token 1 (p = ${formatProbability(trace.generation!.steps[0]!.probability)})`);
      await page.click('[data-testid=step-next]');
      await expectStep(1);
      // "all": everything, no focus, the whole picture.
      await page.click('[data-testid=step-all]');
      await expect.poll(() => shownStep(page)).toBe('all');
      await expect.poll(() => count(page, 'query')).toBe(N);
      await page.mouse.move(0, 0);
      let all = 0;
      for (const h of range(H)) for (let q = 0; q < N; q++) all += nonzeroRow(trace, 'self', 2, [h], q, N);
      // The whole picture: the strongest 1,000 lines, as the export draws.
      expect(await lineCount(page)).toBe(Math.min(1000, all));
      await arrow(page, 'ArrowRight');
      expect(await shownStep(page)).toBe('all');
      await arrow(page, 'ArrowLeft');
      await expectStep(12);
      // The slider follows the keys, and has its own: one step per key press (not two).
      expect(await page.inputValue('[data-testid=step-slider]')).toBe('12');
      await page.focus('[data-testid=step-slider]');
      await page.keyboard.press('ArrowLeft');
      await expectStep(11);
      await page.focus('[data-testid=step-slider]');
      await page.keyboard.press('ArrowRight');
      await expectStep(12);
      // Its last position is "all".
      await slideTo(page, 13);
      await expect.poll(() => shownStep(page)).toBe('all');
      // Hide special tokens at a step: the <s> row and column go, the newest stays highlighted.
      await slideTo(page, 5);
      await page.check('[data-testid=hide-special]');
      await expect.poll(() => count(page, 'query')).toBe(P + 5 - 1);
      await page.mouse.move(0, 0);
      expect(await page.getAttribute('[data-testid=head-readout]', 'data-focus')).toBe(`query:${P + 5 - 2}`);
      expect(p.errors).toEqual([]);
    });
  });

  it('heatmap, model view and neuron view at a step: the matrix so far with the newest row outlined, its values the trace\'s', async () => {
    const trace = traces.gen!;
    const P = trace.generation!.promptLength;
    await withPage(browser, files.gen!, async (page, p) => {
      await slideTo(page, 6);
      const n = P + 6;
      // Heatmap: one head.
      await page.click('[data-testid=tab-heatmap]');
      await page.selectOption('[data-testid=heatmap-layer]', { label: '1' });
      await page.selectOption('[data-testid=heatmap-head]', { label: '2' });
      await expect.poll(() => page.getAttribute('[data-testid=heatmap-canvas]', 'data-nq')).toBe(String(n));
      expect(await page.getAttribute('[data-testid=heatmap-canvas]', 'data-nk')).toBe(String(n));
      expect(await page.getAttribute('[data-testid=heatmap-canvas]', 'data-newest')).toBe(String(n - 1));
      for (const k of [0, 3, n - 1]) {
        await hoverMatrixCell(page, 'heatmap-canvas', n - 1, k);
        await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-value')).toBe(String(weight(trace, 'self', 1, 2, n - 1, k)));
      }
      expect(await page.textContent('[data-testid=tooltip]')).toContain(`generated token 6, p = ${formatProbability(trace.generation!.steps[5]!.probability)}`);
      // Every head of the layer.
      await page.selectOption('[data-testid=heatmap-mode]', { label: 'every head of the layer' });
      await page.mouse.move(0, 0);
      await hoverMatrixCell(page, 'heatmap-canvas', n - 1, 1, 7);
      await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-value')).toBe(String(weight(trace, 'self', 1, 7, n - 1, 1)));
      // Model view.
      await page.click('[data-testid=tab-model]');
      await expect.poll(() => page.getAttribute('[data-testid=model-canvas]', 'data-drawn')).toBe('true');
      expect(await page.getAttribute('[data-testid=model-canvas]', 'data-nq')).toBe(String(n));
      expect(await page.getAttribute('[data-testid=model-canvas]', 'data-newest')).toBe(String(n - 1));
      expect(await page.textContent('[data-testid=model-note]')).toContain(`(${n} × ${n})`);
      await clickModelCell(page, 3, 4);
      await expect.poll(() => page.textContent('[data-testid=model-detail-title]')).toBe('layer 3 · head 4');
      await hoverMatrixCell(page, 'model-detail-canvas', n - 1, 2);
      await expect.poll(() => page.getAttribute('[data-testid=model-detail-readout]', 'data-value')).toBe(String(weight(trace, 'self', 3, 4, n - 1, 2)));
      await page.keyboard.press('Escape');
      // A step while the model view is open redraws it at the new size.
      await arrow(page, 'ArrowLeft');
      await expect.poll(() => page.getAttribute('[data-testid=model-canvas]', 'data-nq')).toBe(String(n - 1));
      await arrow(page, 'ArrowRight');
      // Neuron view: the newest token is the query; its keys are the tokens so far.
      await page.click('[data-testid=tab-neuron]');
      await page.selectOption('[data-testid=neuron-layer]', { label: '2' });
      await page.selectOption('[data-testid=neuron-head]', { label: '3' });
      await expect.poll(() => page.locator('[data-testid^=neuron-row-]').count()).toBe(n);
      expect(await page.locator('[data-testid=neuron-query] option').count()).toBe(n);
      expect(await page.$eval('[data-testid=neuron-query]', (s) => (s as HTMLSelectElement).selectedIndex)).toBe(n - 1);
      for (let k = 0; k < n; k++) {
        const att = weight(trace, 'self', 2, 3, n - 1, k);
        expect(Number(await page.getAttribute(`[data-testid=neuron-attention-${k}]`, 'data-value'))).toBe(att);
        expect(Math.abs(Number(await page.getAttribute(`[data-testid=neuron-softmax-${k}]`, 'data-value')) - att)).toBeLessThan(1e-6);
      }
      expect(await page.textContent('[data-testid=neuron-notes]')).toContain('no mask');
      expect(await page.getAttribute('[data-testid=neuron-query-label]', 'class')).toContain('generated');
      // The query follows the step.
      await arrow(page, 'ArrowLeft');
      await expect.poll(() => page.locator('[data-testid^=neuron-row-]').count()).toBe(n - 1);
      expect(await page.$eval('[data-testid=neuron-query]', (s) => (s as HTMLSelectElement).selectedIndex)).toBe(n - 2);
      // Exports follow the step too.
      const [svg] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=neuron-export-svg]')]);
      const { readFileSync } = await import('node:fs');
      const text = readFileSync((await svg.path())!, 'utf8');
      expect(text).toContain('step 5');
      expect((text.match(/class="key-row"/g) ?? []).length).toBe(n - 1);
      expect(p.errors).toEqual([]);
      expect(p.network()).toEqual([]);
    });
  });
});

describe('encoder-decoders', () => {
  it('a T5 generation: encoder, decoder and cross selector at each step', async () => {
    const trace = traces.t5gen!;
    const P = trace.generation!.promptLength;
    const ne = trace.tokens.length;
    const H = trace.model.numHeads;
    expect(P).toBe(1);
    await withPage(browser, files.t5gen!, async (page, p) => {
      expect(await page.textContent('[data-testid=generation-info]')).toBe('generated: greedy · decoder start token + 5 new tokens · stopped by length');
      const options = await page.$$eval('[data-testid=stack] option', (os) => os.map((o) => o.textContent));
      expect(options).toEqual(['encoder self-attention', 'decoder self-attention', 'cross-attention (decoder → encoder)']);
      await page.selectOption('[data-testid=stack]', { label: 'cross-attention (decoder → encoder)' });
      await page.selectOption('[data-testid=head-layer]', { label: '1' });
      await expect.poll(() => count(page, 'query')).toBe(P + 5);
      expect(await count(page, 'key')).toBe(ne);
      // Generated decoder tokens are marked; encoder tokens are not.
      expect(await page.locator('[data-testid^=head-query-].generated').count()).toBe(5);
      expect(await page.locator('[data-testid^=head-key-].generated').count()).toBe(0);
      for (const s of [0, 2, 5]) {
        const n = P + s;
        await slideTo(page, s);
        await expect.poll(() => count(page, 'query')).toBe(n);
        expect(await count(page, 'key')).toBe(ne);
        await page.mouse.move(0, 0);
        expect(await page.getAttribute('[data-testid=head-readout]', 'data-focus')).toBe(`query:${n - 1}`);
        expect(await lineCount(page)).toBe(nonzeroRow(trace, 'cross', 1, range(H), n - 1, ne));
      }
      // The highlighted row's values, one head: the cross row of the newest decoder token.
      await slideTo(page, 2);
      await page.dblclick('[data-testid=head-swatch-1]');
      await page.mouse.move(0, 0);
      for (const k of [0, 5, ne - 1]) expect(Number(await page.getAttribute(`[data-testid=head-value-${k}]`, 'data-value'))).toBe(weight(trace, 'cross', 1, 1, P + 1, k));
      // The decoder's self-attention at the same step.
      await page.selectOption('[data-testid=stack]', { label: 'decoder self-attention' });
      await expect.poll(() => count(page, 'key')).toBe(P + 2);
      expect(await count(page, 'query')).toBe(P + 2);
      // The encoder ran once: the same at every step.
      await page.selectOption('[data-testid=stack]', { label: 'encoder self-attention' });
      await expect.poll(() => count(page, 'query')).toBe(ne);
      expect(await page.textContent('[data-testid=step-readout]')).toContain('the encoder ran once');
      // Heatmap and neuron view of the cross attention at step 3.
      await page.selectOption('[data-testid=stack]', { label: 'cross-attention (decoder → encoder)' });
      await slideTo(page, 3);
      await page.click('[data-testid=tab-heatmap]');
      await page.selectOption('[data-testid=heatmap-head]', { label: '2' });
      await expect.poll(() => page.getAttribute('[data-testid=heatmap-canvas]', 'data-nq')).toBe(String(P + 3));
      expect(await page.getAttribute('[data-testid=heatmap-canvas]', 'data-nk')).toBe(String(ne));
      const layer = Number(await page.inputValue('[data-testid=heatmap-layer]'));
      await hoverMatrixCell(page, 'heatmap-canvas', P + 2, 7);
      await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-value')).toBe(String(weight(trace, 'cross', layer, 2, P + 2, 7)));
      await page.click('[data-testid=tab-neuron]');
      await page.selectOption('[data-testid=neuron-head]', { label: '3' });
      await expect.poll(() => page.locator('[data-testid^=neuron-row-]').count()).toBe(ne);
      for (const k of [0, 4, ne - 1]) {
        const att = weight(trace, 'cross', layer, 3, P + 2, k);
        expect(Number(await page.getAttribute(`[data-testid=neuron-attention-${k}]`, 'data-value'))).toBe(att);
        expect(Math.abs(Number(await page.getAttribute(`[data-testid=neuron-softmax-${k}]`, 'data-value')) - att)).toBeLessThan(1e-6);
      }
      await page.click('[data-testid=tab-model]');
      await expect.poll(() => page.getAttribute('[data-testid=model-canvas]', 'data-drawn')).toBe('true');
      expect(await page.textContent('[data-testid=model-note]')).toContain(`(${P + 3} × ${ne})`);
      expect(p.errors).toEqual([]);
      expect(p.network()).toEqual([]);
    });
  });

  for (const name of ['t5dec', 'bartdec'] as const) {
    it(`${name === 't5dec' ? 'T5' : 'BART'} traced with decoder text: head, model, neuron and heatmap of every stack`, async () => {
      const trace = traces[name]!;
      const ne = trace.tokens.length;
      const nd = trace.decoderTokens!.length;
      const H = trace.model.numHeads;
      await withPage(browser, files[name]!, async (page, p) => {
        expect(await page.locator('[data-testid=generation-bar]').count()).toBe(0);
        for (const [stack, label, nq, nk] of [
          ['encoder', 'encoder self-attention', ne, ne],
          ['decoder', 'decoder self-attention', nd, nd],
          ['cross', 'cross-attention (decoder → encoder)', nd, ne],
        ] as const) {
          await page.click('[data-testid=tab-head]');
          await page.selectOption('[data-testid=stack]', { label });
          await expect.poll(() => count(page, 'query')).toBe(nq);
          expect(await count(page, 'key')).toBe(nk);
          const q = Math.min(3, nq - 1);
          await page.hover(`[data-testid=head-query-${q}]`);
          expect(await lineCount(page)).toBe(nonzeroRow(trace, stack, 0, range(H), q, nk));
          await page.click('[data-testid=tab-heatmap]');
          await page.selectOption('[data-testid=heatmap-head]', { label: '1' });
          await hoverMatrixCell(page, 'heatmap-canvas', q, nk - 1);
          await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-value')).toBe(String(weight(trace, stack, 0, 1, q, nk - 1)));
          await page.click('[data-testid=tab-model]');
          await expect.poll(() => page.getAttribute('[data-testid=model-canvas]', 'data-drawn')).toBe('true');
          expect(await page.textContent('[data-testid=model-note]')).toContain(`(${nq} × ${nk})`);
          await page.click('[data-testid=tab-neuron]');
          await page.selectOption('[data-testid=neuron-query]', { index: q });
          await expect.poll(() => page.locator('[data-testid^=neuron-row-]').count()).toBe(nk);
          for (const k of [0, nk - 1]) {
            const att = weight(trace, stack, 0, 0, q, k);
            await expect.poll(() => page.getAttribute(`[data-testid=neuron-attention-${k}]`, 'data-value')).toBe(String(att));
          }
          const notes = (await page.textContent('[data-testid=neuron-notes]'))!;
          // softmax(scores) is the model's attention, T5's self-attention included (its recorded position bias is in the scores).
          for (const k of [0, nk - 1]) {
            const att = weight(trace, stack, 0, 0, q, k);
            expect(Math.abs(Number(await page.getAttribute(`[data-testid=neuron-softmax-${k}]`, 'data-value')) - att)).toBeLessThan(1e-6);
          }
          expect(notes.includes('position bias')).toBe(name === 't5dec' && stack !== 'cross');
          if (stack === 'decoder') expect(notes).toContain('causal mask');
        }
        expect(p.errors).toEqual([]);
        expect(p.network()).toEqual([]);
      });
    });
  }
});

describe('attnscope view --generate (command line)', () => {
  const run = (...args: string[]) => runCli(tmp, ['view', ...args], 120_000, tmp);

  it('generates and writes the page in one go (default model, greedy; T5, sampled); opens generation trace files', async () => {
    const out = join(tmp, 'generated.html');
    const r = run('--text', PROMPT, '--generate', '6', '--out', out);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(out);
    expect(r.stderr).toMatch(/^generated: ".+" \(6 tokens, stopped by length\)\nwrote \S*generated\.html \(\d+ kB; 11 tokens, 5 layers × 8 heads; all values exact\)/);
    let p = await openPage(browser, out);
    try {
      expect(await p.page.textContent('[data-testid=generation-info]')).toBe('generated: greedy · 5 prompt tokens + 6 new tokens · stopped by length');
      expect(await p.page.textContent('[data-testid=source-text]')).toBe(`“${PROMPT}”`);
      expect(await p.page.getAttribute('[data-testid=step-slider]', 'max')).toBe('7');
      // The page asked for queries and keys: the neuron view works at a step.
      await slideTo(p.page, 2);
      await p.page.click('[data-testid=tab-neuron]');
      await expect.poll(() => p.page.locator('[data-testid^=neuron-row-]').count()).toBe(7);
      expect(p.network()).toEqual([]);
    } finally {
      await p.close();
    }
    const t5out = join(tmp, 't5-generated.html');
    const t5 = run(join(ROOT, 'test', 'fixtures', 't5'), '--text', T5_TEXT, '--generate', '3', '--sample', '--temperature', '0.8', '--seed', '7', '--out', t5out);
    expect(t5.status, t5.stderr).toBe(0);
    p = await openPage(browser, t5out);
    try {
      expect(await p.page.textContent('[data-testid=generation-info]')).toBe('generated: sampled (temperature 0.8, seed 7) · decoder start token + 3 new tokens · stopped by length');
      expect(await p.page.$$eval('[data-testid=stack] option', (os) => os.map((o) => o.textContent))).toContain('cross-attention (decoder → encoder)');
    } finally {
      await p.close();
    }
    // A generation trace file (what attnscope generate --out writes).
    const json = join(tmp, 'gen-trace.json');
    await writeTraceFile(json, traces.gen!);
    const fromFile = join(tmp, 'from-generation.html');
    const f = run(json, '--out', fromFile, '--view', 'heatmap');
    expect(f.status, f.stderr).toBe(0);
    p = await openPage(browser, fromFile);
    try {
      expect(await p.page.textContent('[data-testid=generation-info]')).toContain('12 new tokens');
      await arrow(p.page, 'ArrowLeft', 3);
      await expect.poll(() => p.page.getAttribute('[data-testid=heatmap-canvas]', 'data-nq')).toBe(String(traces.gen!.generation!.promptLength + 10));
    } finally {
      await p.close();
    }
  });

  it('user errors are one line', () => {
    const json = join(tmp, 'gen-trace-2.json');
    writeFileSync(json, '{}');
    for (const [args, pattern] of [
      [['--text', PROMPT, '--generate', '0'], /--generate: expected a positive integer/],
      [['--text', PROMPT, '--generate', '3', '--temperature', '0.5'], /add --sample/],
      [['--text', PROMPT, '--sample'], /--sample applies to generation: add --generate N/],
      [['--text', PROMPT, '--generate', '3', '--pair', 'x'], /--pair does not apply to --generate/],
      [['--text', PROMPT, '--generate', '3', '--decoder-text', 'x'], /--decoder-text does not apply to --generate/],
      [['--generate', '3'], /give the prompt with --text/],
      [[join(ROOT, 'test', 'fixtures', 'bert'), '--text', 'hi', '--generate', '3'], /is an encoder .* does not generate text/],
      [[join(ROOT, 'test', 'fixtures', 'traces', 't5-encdec.safetensors'), '--generate', '3'], /--generate does not apply to a trace file/],
    ] as const) {
      const r = run(...args);
      expect(r.status, r.stderr).not.toBe(0);
      const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('npm warn'));
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^attnscope: /);
      expect(lines[0]).toMatch(pattern);
    }
  });
});
