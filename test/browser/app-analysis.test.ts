/**
 * The analysis views of the app of `attnscope serve` in Chromium (playwright-core, Debian's
 * Chromium) against the real server over test/fixtures: the logit lens, saliency, head importance,
 * ablation and deep dive tabs of the gpt2 fixture, each checked against PyTorch (the fixture's
 * reference.json and gradients.json) through what the page shows on hover; a head clicked in the
 * importance grid opens its heatmap; a run's progress and cancel button; the PNG export of an
 * analysis view (pixels not blank); a share link reopening the same view with its options.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { viewTokenLabel } from '../../src/views/analysis-data.js';
import { FIXTURES, readReference } from '../helpers/reference.js';
import { appServerSuite, pngPixels } from './harness.js';

const suite = appServerSuite('app-analysis');
const MODEL = 'folder:0/gpt2';
const ref = readReference('gpt2').inputs.find((i) => i.id === 'short')!;
const grads = (JSON.parse(readFileSync(join(FIXTURES, 'gpt2', 'gradients.json'), 'utf8')) as {
  inputs: { id: string; integrated_gradients: number[]; ig_completeness: { target_x: number; target_baseline: number }; head_importance: number[][]; ablation: { kl: number } }[];
}).inputs.find((i) => i.id === 'short')!;

function appUrl(params: Record<string, string>): string {
  const url = new URL(suite.server().url);
  url.searchParams.set('model', MODEL);
  url.searchParams.set('text', ref.text);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  return url.href;
}

/** Waits until the analysis tab `view` has drawn its result. */
async function analysed(page: Page, view: string): Promise<void> {
  await page.waitForSelector(`[data-testid=side-a] [data-testid=${view}-host][data-state=done]`, { timeout: 120_000 });
}

const shown = (s: string | null): number => Number((s ?? '').replace('−', '-'));

describe('attnscope serve: the analysis views in Chromium', () => {
  it('opens on the logit lens from a link: the last row is PyTorch’s next-token prediction at every position', async () => {
    const p = await suite.open(appUrl({ view: 'lens', lensk: '3' }));
    const { page } = p;
    try {
      await analysed(page, 'lens');
      expect(await page.getAttribute('[data-testid=tab-lens]', 'aria-selected')).toBe('true');
      const vocab = (JSON.parse(readFileSync(join(FIXTURES, 'gpt2', 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } }).model.vocab;
      const byId = new Map(Object.entries(vocab).map(([t, i]) => [i, t]));
      const logits = ref.logits as number[][];
      const lastRow = 2; // embeddings, L0, L1
      for (const pos of [0, 5, logits.length - 1]) {
        const row = logits[pos]!;
        const m = Math.max(...row);
        const z = row.reduce((s, v) => s + Math.exp(v - m), 0);
        const best = row.indexOf(m);
        await page.locator(`[data-testid=lens-svg] rect[data-row="${lastRow}"][data-position="${pos}"]`).hover({ force: true });
        await expect.poll(() => page.getAttribute('[data-testid=lens-readout]', 'data-position')).toBe(String(pos));
        expect(await page.getAttribute('[data-testid=lens-readout]', 'data-token')).toBe(viewTokenLabel(byId.get(best)!, 'gpt2'));
        expect(Number(await page.getAttribute('[data-testid=lens-readout]', 'data-value'))).toBeCloseTo(1 / z, 4);
      }
      expect(await page.$eval('[data-testid=lens-k]', (el) => (el as HTMLSelectElement).selectedOptions[0]!.textContent)).toBe('3');
      // The table of the tab on screen: every layer × position × candidate; the last layer's top candidates are PyTorch's.
      await page.click('[data-testid=export-menu]');
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=export-analysis-csv]')]);
      expect(download.suggestedFilename()).toBe('attnscope-gpt2-lens.csv');
      const file = join(suite.scratch(), download.suggestedFilename());
      await download.saveAs(file);
      const csv = readFileSync(file, 'utf8').trim().split('\n');
      expect(csv[0]).toBe('layer,position,token,rank,candidate,probability');
      expect(csv).toHaveLength(1 + 3 * logits.length * 3);
      const top = csv.filter((l) => l.startsWith('L1,') && l.split(',')[3] === '1');
      expect(top).toHaveLength(logits.length);
      for (const [pos, line] of top.entries()) {
        const row = logits[pos]!;
        const m = Math.max(...row);
        expect(Number(line.split(',').at(-1))).toBeCloseTo(1 / row.reduce((s, v) => s + Math.exp(v - m), 0), 5);
      }
      expect(p.errors).toEqual([]);
      expect(p.foreign).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('saliency: integrated gradients (256 steps, chosen in the page) equal autograd’s, their sum T(x) − T(0); progress then the rows; PNG export not blank; the link reopens it', async () => {
    const p = await suite.open(appUrl({ view: 'head' }));
    const { page } = p;
    try {
      await page.waitForFunction(() => document.body.dataset.trace === 'done', null, { timeout: 60_000 });
      await page.click('[data-testid=tab-saliency]');
      await page.waitForSelector('[data-testid=saliency-host]:not([hidden])');
      // The steps: 256 (option index 3).
      await page.selectOption('[data-testid=saliency-steps]', '3');
      await analysed(page, 'saliency');
      expect(page.url()).toMatch(/[?&]steps=256\b/);
      expect(page.url()).toMatch(/[?&]view=saliency\b/);
      const igRow = await page.$$eval('[data-testid=saliency-svg] .method-label', (els) => els.findIndex((e) => e.textContent === 'integrated gradients'));
      expect(igRow).toBeGreaterThanOrEqual(0);
      const scores = await page.$$eval(`[data-testid=saliency-svg] rect.saliency-cell[data-row="${igRow}"]`, (els) => els.map((e) => Number(e.getAttribute('data-value'))));
      expect(scores).toHaveLength(grads.integrated_gradients.length);
      const scale = Math.max(...grads.integrated_gradients.map(Math.abs));
      for (const [i, v] of scores.entries()) expect(Math.abs(v - grads.integrated_gradients[i]!)).toBeLessThan(1e-3 * scale + 1e-5);
      const delta = grads.ig_completeness.target_x - grads.ig_completeness.target_baseline;
      expect(Math.abs(scores.reduce((s, v) => s + v, 0) - delta)).toBeLessThan(0.02 * Math.abs(delta));
      // Hover: the readout names the token and its score.
      await page.locator(`[data-testid=saliency-svg] rect.saliency-cell[data-row="${igRow}"][data-position="3"]`).hover({ force: true });
      await expect.poll(() => page.getAttribute('[data-testid=saliency-readout]', 'data-position')).toBe('3');
      expect(shown(await page.getAttribute('[data-testid=saliency-readout]', 'data-value'))).toBeCloseTo(grads.integrated_gradients[3]!, 3);

      // PNG of the analysis view through the app's export menu.
      await page.click('[data-testid=export-menu]');
      await page.selectOption('[data-testid=png-scale]', '2');
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=export-view-png]')]);
      expect(download.suggestedFilename()).toBe('attnscope-gpt2-saliency.png');
      const file = join(suite.scratch(), download.suggestedFilename());
      await download.saveAs(file);
      const png = await pngPixels(page, file);
      expect(png.width).toBeGreaterThan(600);
      expect(png.differing).toBeGreaterThan(png.width * png.height * 0.03);

      // The share link reopens the saliency view with 256 steps (from the server's cache).
      await page.click('[data-testid=share-button]');
      const link = await page.inputValue('[data-testid=share-url]');
      const q = await suite.open(link);
      try {
        await analysed(q.page, 'saliency');
        expect(await q.page.getAttribute('[data-testid=tab-saliency]', 'aria-selected')).toBe('true');
        expect(await q.page.getAttribute('[data-testid=saliency-host]', 'data-cached')).toBe('true');
        const again = await q.page.$$eval(`[data-testid=saliency-svg] rect.saliency-cell[data-row="${igRow}"]`, (els) => els.map((e) => Number(e.getAttribute('data-value'))));
        expect(again).toEqual(scores);
      } finally {
        await q.close();
      }
      expect(p.errors).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('a long run shows its progress and a cancel button; cancelled, it offers to run again', async () => {
    const p = await suite.open(appUrl({ view: 'head' }));
    const { page } = p;
    try {
      await page.waitForFunction(() => document.body.dataset.trace === 'done', null, { timeout: 60_000 });
      // Hold the analysis request in the network until the cancel button has been clicked.
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      await page.route('**/api/analysis', async (route) => {
        await held;
        await route.continue().catch(() => undefined);
      });
      await page.click('[data-testid=tab-saliency]');
      await page.waitForSelector('[data-testid=saliency-host][data-state=running]');
      expect(await page.isVisible('[data-testid=saliency-cancel]')).toBe(true);
      expect(await page.textContent('[data-testid=saliency-status]')).toMatch(/starting|running|gradients/);
      await page.click('[data-testid=saliency-cancel]');
      await page.waitForSelector('[data-testid=saliency-host][data-state=cancelled]');
      release();
      await page.unroute('**/api/analysis');
      await page.click('[data-testid=saliency-run]');
      await analysed(page, 'saliency');
      expect(await page.locator('[data-testid=saliency-svg] rect.saliency-cell').count()).toBeGreaterThan(0);
    } finally {
      await p.close();
    }
  });

  it('head importance (signed) equals autograd’s ∂T/∂g; a click opens the head’s heatmap; the ablation of that head has PyTorch’s KL', async () => {
    const p = await suite.open(appUrl({ view: 'importance', signed: '1' }));
    const { page } = p;
    try {
      await analysed(page, 'importance');
      for (const [l, hd] of [
        [0, 0],
        [1, 3],
      ] as const) {
        await page.locator(`[data-testid=importance-svg] rect[data-layer="${l}"][data-head="${hd}"]`).first().hover({ force: true });
        await expect.poll(() => page.getAttribute('[data-testid=importance-readout]', 'data-head')).toBe(String(hd));
        expect(await page.getAttribute('[data-testid=importance-readout]', 'data-layer')).toBe(String(l));
        const v = Number(await page.getAttribute('[data-testid=importance-readout]', 'data-value'));
        expect(Math.abs(v - grads.head_importance[l]![hd]!)).toBeLessThan(1e-4 * Math.max(...grads.head_importance.flat().map(Math.abs)));
      }
      // A click on head 0:0 opens its heatmap.
      await page.locator('[data-testid=importance-svg] rect[data-layer="0"][data-head="0"]').first().click({ force: true });
      await page.waitForSelector('[data-testid=heatmap-view]:not([hidden])');
      expect(await page.getAttribute('[data-testid=tab-heatmap]', 'aria-selected')).toBe('true');
      // The ablation tab removes the selected head (0:0) by default.
      await page.click('[data-testid=tab-ablation]');
      await analysed(page, 'ablation');
      const idle = (await page.textContent('[data-testid=ablation-readout]')) ?? '';
      const kl = Number(/KL ([\d.e−-]+) nats/.exec(idle)![1]!.replace('−', '-'));
      expect(kl).toBeCloseTo(grads.ablation.kl, 3);
      // Another head typed in: a new run.
      await page.fill('[data-testid=ablation-heads]', '1:*');
      await page.press('[data-testid=ablation-heads]', 'Enter');
      await page.waitForFunction(() => /ablate=1%3A\*/.test(location.search) || /ablate=1:\*/.test(decodeURIComponent(location.search)));
      await analysed(page, 'ablation');
      const title = await page.textContent('[data-testid=ablation-view]');
      expect(title).toMatch(/KL/);
      expect(p.errors).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('a masked LM: without a mask the page says to pick a target; the target position chosen gives autograd’s gradient × input', async () => {
    const bert = readReference('bert').inputs.find((i) => i.id === 'short')!;
    const bertGrads = (JSON.parse(readFileSync(join(FIXTURES, 'bert', 'gradients.json'), 'utf8')) as { inputs: { id: string; target: { position: number }; grad_x_input: number[] }[] }).inputs.find((i) => i.id === 'short')!;
    const url = new URL(suite.server().url);
    url.searchParams.set('model', 'folder:0/bert');
    url.searchParams.set('text', bert.text);
    url.searchParams.set('view', 'saliency');
    const p = await suite.open(url.href);
    const { page } = p;
    try {
      await page.waitForSelector('[data-testid=side-a] [data-testid=saliency-host][data-state=error]', { timeout: 120_000 });
      expect(await page.textContent('[data-testid=saliency-error]')).toMatch(/no mask token; give the target position/);
      // Option 0 is the default; position p is option p + 1.
      await page.selectOption('[data-testid=saliency-target]', String(bertGrads.target.position + 1));
      await analysed(page, 'saliency');
      expect(page.url()).toMatch(new RegExp(`[?&]target=${bertGrads.target.position}\\b`));
      const row = await page.$$eval('[data-testid=saliency-svg] .method-label', (els) => els.findIndex((e) => e.textContent === 'gradient × input'));
      const scores = await page.$$eval(`[data-testid=saliency-svg] rect.saliency-cell[data-row="${row}"]`, (els) => els.map((e) => Number(e.getAttribute('data-value'))));
      const scale = Math.max(...bertGrads.grad_x_input.map(Math.abs));
      expect(scores).toHaveLength(bertGrads.grad_x_input.length);
      for (const [i, v] of scores.entries()) expect(Math.abs(v - bertGrads.grad_x_input[i]!)).toBeLessThan(1e-4 * scale + 1e-6);
    } finally {
      await p.close();
    }
  });

  it('the Bias tab hosts the bias panel (a link with view=bias opens it)', async () => {
    const p = await suite.open(appUrl({ view: 'bias' }));
    const { page } = p;
    try {
      await page.waitForFunction(() => document.body.dataset.trace === 'done', null, { timeout: 60_000 });
      await page.waitForSelector('[data-testid=side-a] [data-testid=bias-host-a] [data-testid=bias-panel]');
      expect(await page.getAttribute('[data-testid=tab-bias]', 'aria-selected')).toBe('true');
      await page.click('[data-testid=tab-lens]');
      await analysed(page, 'lens');
      expect(await page.isVisible('[data-testid=bias-panel]')).toBe(false);
      expect(p.errors).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('deep dive: the residual stream entering each layer has the norms of PyTorch’s hidden states; the measure toggles', async () => {
    const p = await suite.open(appUrl({ view: 'deep' }));
    const { page } = p;
    try {
      await analysed(page, 'deep');
      const hs = ref.hidden_states as number[][][];
      for (const [l, pos] of [
        [0, 0],
        [1, 7],
      ] as const) {
        const expected = Math.sqrt(hs[l]![pos]!.reduce((s, v) => s + v * v, 0));
        await page.locator(`[data-testid=deep-svg] rect[data-grid=residual][data-layer="${l}"][data-position="${pos}"]`).hover({ force: true });
        await expect.poll(() => page.getAttribute('[data-testid=deep-readout]', 'data-layer')).toBe(String(l));
        expect(Number(await page.getAttribute('[data-testid=deep-readout]', 'data-value'))).toBeCloseTo(expected, 3);
      }
      await page.selectOption('[data-testid=deep-measure]', '1');
      await page.waitForFunction(() => /[?&]deep=norm\b/.test(location.search));
      expect(await page.textContent('[data-testid=deep-svg]')).toMatch(/‖attention update‖ ·/);
    } finally {
      await p.close();
    }
  });
});
