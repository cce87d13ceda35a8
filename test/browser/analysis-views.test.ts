/**
 * The saliency, head-importance, ablation and logit-lens views in real Chromium, on a standalone
 * page of the default model (stories260k, 5 layers × 8 heads) whose trace carries attributions and
 * a logit lens in the Trace's own fields (read by the page writer as any trace file's would be)
 * and an ablation given to the writer. Hovering reports the value the data holds (head importance:
 * Michel's normalisation recomputed here in float64); clicking a head of the importance grid opens
 * its heatmap; every view exports SVG and PNG; a hostile token shows as text, never as markup.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../../src/core/trace.js';
import type { AblationData } from '../../src/views/layout/ablation.js';
import { buildWebClient, expectHeadHeatmapOpened, expectViewExports, launchChromium, openPage, traceWith, withPage, writeStandalonePage } from './harness.js';

const SENTENCE = 'Once upon a time, there was a little girl named Lily. She liked to play in the park.';
const HOSTILE = `<script>&"'`;
const LAYERS = 5;
const HEADS = 8;
const TOPK = 3;
const tmp = mkdtempSync(join(tmpdir(), 'attnscope-analysis-'));
let browser: Browser;
let trace: Trace;
let file: string;
let plainFile: string;
let n = 0;

/** Hand-made gate gradients, signed, [layer][head]. */
const gate = (l: number, h: number) => Math.sin(1.3 * l + 0.7 * h + 0.2) * (l + 1) * 1e-2;
const gradXInput = (i: number) => ((i % 5) - 2) * 0.1 * (i + 1);
const ig = (i: number) => Math.cos(i) * 0.5;
const lensProb = (r: number, p: number, k: number) => (0.2 + (0.7 * r) / LAYERS) / (k + 1) + p * 1e-4;
const lensToken = (r: number, p: number, k: number) => (r === 2 && p === 1 && k === 0 ? HOSTILE : `t${(r * 7 + p * 3 + k) % 11}`);

const ABLATION: AblationData = {
  heads: [{ layer: 1, head: 2 }, { layer: 3, head: 0 }],
  mode: 'zero',
  where: 'next token after “park” (position 20)',
  candidates: [
    { token: 'the', before: 0.41, after: 0.12 },
    { token: HOSTILE, before: 0.05, after: 0.3 },
    { token: 'a', before: 0.2, after: 0.22 },
  ],
  target: { label: 'log p(“the”)', before: Math.log(0.41), after: Math.log(0.12) },
  kl: 0.3125,
  cosine: 0.9912,
};

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
  trace = await traceWith(undefined, (model) => model.trace(SENTENCE));
  n = trace.tokens.length;
  trace.tokens[3] = { ...trace.tokens[3]!, text: HOSTILE };
  const gates = new Float32Array(LAYERS * HEADS).map((_, i) => gate(Math.floor(i / HEADS), i % HEADS));
  trace.attributions = {
    target: { kind: 'causal_lm_argmax_logprob', position: n - 1, tokenId: trace.tokens[1]!.id, value: -1.25 },
    scores: {
      gradXInput: { method: 'gradXInput', reduction: 'sum', scores: Float32Array.from({ length: n }, (_, i) => gradXInput(i)) },
      integratedGradients: { method: 'integratedGradients', reduction: 'sum', baseline: 'zero', steps: 50, rule: 'midpoint', scores: Float32Array.from({ length: n }, (_, i) => ig(i)), completeness: { sumAttributions: 1.01, targetInput: -1.25, targetBaseline: -2.25 } },
    },
    headImportance: { self: { dims: [LAYERS, HEADS], data: gates } },
  };
  trace.logitLens = {
    stack: 'self',
    topK: TOPK,
    layers: Array.from({ length: LAYERS + 1 }, (_, r) => ({
      ids: Int32Array.from({ length: n * TOPK }, (_, i) => 1000 + ((r * 7 + Math.floor(i / TOPK) * 3 + (i % TOPK)) % 11)),
      probabilities: Float32Array.from({ length: n * TOPK }, (_, i) => lensProb(r, Math.floor(i / TOPK), i % TOPK)),
      tokens: Array.from({ length: n * TOPK }, (_, i) => lensToken(r, Math.floor(i / TOPK), i % TOPK)),
    })),
  };
  file = await writeStandalonePage(join(tmp, 'analysis.html'), trace, { text: SENTENCE, analysis: { ablation: ABLATION } });
  const { attributions: _a, logitLens: _l, ...plain } = trace;
  plainFile = await writeStandalonePage(join(tmp, 'plain.html'), plain, { text: SENTENCE });
});

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

async function exportBoth(page: Page, view: string, svgClass: string, count: [string, number]): Promise<string> {
  const text = await expectViewExports(page, view, new RegExp(`^attnscope-stories260k-${view}\\.svg$`));
  expect(text).toContain(svgClass);
  expect((text.match(new RegExp(`class="${count[0]}`, 'g')) ?? []).length).toBe(count[1]);
  expect(text).not.toContain('<script>');
  return text;
}

function clean(p: Awaited<ReturnType<typeof openPage>>): void {
  expect(p.network()).toEqual([]);
  expect(p.errors).toEqual([]);
  expect(p.consoleErrors).toEqual([]);
  expect(p.dialogs).toEqual([]);
}

describe('analysis views', () => {
  it('saliency: a row per method, hover reports a token’s score, the hostile token is text; exports', async () => {
    await withPage(browser, file, async (page, p) => {
      await page.click('[data-testid=tab-saliency]');
      const cells = '[data-testid=saliency-svg] rect.saliency-cell';
      await page.waitForSelector(cells);
      expect(await page.locator(cells).count()).toBe(2 * n);
      const methods = await page.$$eval('[data-testid=saliency-svg] text.method-label', (els) => [...new Set(els.map((e) => e.textContent))]);
      expect(methods).toEqual(['gradient × input', 'integrated gradients']);
      expect(await page.textContent('[data-testid=saliency-svg] text.saliency-target')).toBe('target: log p(“Once” | position ' + (n - 1) + ')');
      await page.hover(`${cells}[data-row="1"][data-position="5"]`, { force: true });
      await expect.poll(() => page.getAttribute('[data-testid=saliency-readout]', 'data-value')).toBe(String(Math.fround(ig(5))));
      expect(await page.textContent('[data-testid=saliency-readout]')).toContain('integrated gradients');
      const hostile = await page.$$eval('[data-testid=saliency-svg] text.saliency-token[data-position="3"]', (els) => els.map((e) => e.textContent));
      expect(hostile).toEqual([HOSTILE, HOSTILE]);
      await exportBoth(page, 'saliency', 'attnscope-saliency', ['saliency-cell', 2 * n]);
      clean(p);
    });
  });

  it('head importance: Michel-normalised cells, hover shows the value, a click opens the head', async () => {
    await withPage(browser, file, async (page, p) => {
      await page.click('[data-testid=tab-importance]');
      const cells = '[data-testid=importance-svg] rect.importance-cell';
      await page.waitForSelector(cells);
      expect(await page.locator(cells).count()).toBe(LAYERS * HEADS);
      // |g| / ‖g_layer‖₂ in float64 from the float32 gradients.
      const layer = 2;
      const head = 5;
      let norm = 0;
      for (let h = 0; h < HEADS; h++) norm += Math.fround(gate(layer, h)) ** 2;
      const expected = Math.abs(Math.fround(gate(layer, head))) / Math.sqrt(norm);
      const target = `${cells}[data-layer="${layer}"][data-head="${head}"]`;
      await page.hover(target, { force: true });
      await expect.poll(() => page.getAttribute('[data-testid=importance-readout]', 'data-head')).toBe(String(head));
      expect(Number(await page.getAttribute('[data-testid=importance-readout]', 'data-value'))).toBeCloseTo(expected, 6);
      expect(await page.textContent('[data-testid=tooltip]')).toContain(`layer ${layer} · head ${head} · importance`);
      await exportBoth(page, 'importance', 'attnscope-head-importance', ['importance-cell', LAYERS * HEADS]);
      await page.click(target, { force: true });
      await expectHeadHeatmapOpened(page, trace, layer, head);
      // Back on the grid, the opened head is outlined.
      await page.click('[data-testid=tab-importance]');
      await page.waitForSelector(`${target}.selected`);
      clean(p);
    });
  });

  it('ablation: paired bars, hover gives both probabilities, KL and cosine stated; exports', async () => {
    await withPage(browser, file, async (page, p) => {
      await page.click('[data-testid=tab-ablation]');
      const bars = '[data-testid=ablation-svg] rect.ablation-bar';
      await page.waitForSelector(bars);
      expect(await page.locator(bars).count()).toBe(6);
      const tokens = await page.$$eval('[data-testid=ablation-svg] text.ablation-token', (els) => els.map((e) => e.textContent));
      expect(tokens).toEqual(['the', HOSTILE, 'a']);
      const text = await page.textContent('[data-testid=ablation-svg]');
      expect(text).toContain('KL(before ‖ after) = 0.313 nats');
      expect(text).toContain('cosine of the last hidden states = 0.9912');
      expect(text).toContain('removed (zero ablation): L1 H2, L3 H0');
      await page.hover(`${bars}.after[data-index="1"]`, { force: true });
      await expect.poll(() => page.getAttribute('[data-testid=ablation-readout]', 'data-token')).toBe(HOSTILE);
      expect(await page.getAttribute('[data-testid=ablation-readout]', 'data-before')).toBe('0.05');
      expect(await page.getAttribute('[data-testid=ablation-readout]', 'data-after')).toBe('0.3');
      await exportBoth(page, 'ablation', 'attnscope-ablation', ['ablation-bar', 6]);
      clean(p);
    });
  });

  it('logit lens: layers × positions with the top token, hover lists the top-k; exports', async () => {
    await withPage(browser, file, async (page, p) => {
      await page.click('[data-testid=tab-lens]');
      const cells = '[data-testid=lens-svg] rect.lens-cell';
      await page.waitForSelector(cells);
      expect(await page.locator(cells).count()).toBe((LAYERS + 1) * n);
      const rows = await page.$$eval('[data-testid=lens-svg] text.row-label', (els) => els.map((e) => e.textContent));
      expect(rows).toEqual(['embeddings', 'L0', 'L1', 'L2', 'L3', 'L4']);
      await page.hover(`${cells}[data-row="2"][data-position="1"]`, { force: true });
      await expect.poll(() => page.getAttribute('[data-testid=lens-readout]', 'data-token')).toBe(HOSTILE);
      expect(Number(await page.getAttribute('[data-testid=lens-readout]', 'data-value'))).toBe(Math.fround(lensProb(2, 1, 0)));
      const readout = (await page.textContent('[data-testid=lens-readout]'))!;
      for (let k = 0; k < TOPK; k++) expect(readout).toContain(`${k + 1}. “${lensToken(2, 1, k)}”`);
      // The cell names it as text (cut with an ellipsis when the page narrows the cells to fit).
      expect(await page.$eval(`[data-testid=lens-svg] rect.lens-cell[data-row="2"][data-position="1"]`, (e) => e.getAttribute('data-token'))).toBe(HOSTILE);
      const label = (await page.$eval(`[data-testid=lens-svg] text.lens-token[data-row="2"][data-position="1"]`, (e) => e.textContent))!;
      expect(label === HOSTILE || (label.endsWith('…') && HOSTILE.startsWith(label.slice(0, -1)))).toBe(true);
      await exportBoth(page, 'lens', 'attnscope-logit-lens', ['lens-cell', (LAYERS + 1) * n]);
      clean(p);
    });
  });

  it('shows a tab for each analysis view with data, and none on a page without', async () => {
    const tabs = async (f: string) => {
      const p = await openPage(browser, f);
      try {
        return await p.page.$$eval('[data-testid=tabs] button', (els) => els.map((e) => e.getAttribute('data-testid')!));
      } finally {
        await p.close();
      }
    };
    const all = await tabs(file);
    expect(all.slice(-4)).toEqual(['tab-saliency', 'tab-importance', 'tab-ablation', 'tab-lens']);
    expect(await tabs(plainFile)).toEqual(all.slice(0, -4));
  });
});
