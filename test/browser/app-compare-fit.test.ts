/**
 * Compare mode in real Chromium against the real server: each side is half the window, and every
 * view lays out to that half (smaller cells, wrapped tabs) instead of scrolling sideways, also
 * after compare mode is switched on under a view already drawn at full width; a hovered heatmap
 * cell still reads PyTorch's weight (the fixtures' reference.json) on either side. The compare
 * panel ranks the head pairs in a Web Worker, with a cancel button that stops it.
 */
import type { Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { readReference } from '../helpers/reference.js';
import { appServerSuite, numericData } from './harness.js';
import { instrumentWorkers, releaseHeld, workerCounts } from './worker-instrument.js';

const suite = appServerSuite('app-compare-fit');

/** Waits until side `side` shows a complete trace. */
async function done(page: Page, side: 'a' | 'b'): Promise<void> {
  await page.waitForFunction((s) => document.querySelector<HTMLElement>(`[data-testid=side-${s}]`)?.dataset.trace === 'done', side, { timeout: 90_000 });
}

/** How far each side's content reaches past its box (0 when it fits), and the box's width. */
function overflow(page: Page): Promise<{ side: string; over: number; width: number }[]> {
  return page.$$eval('.serve-views > .side', (sides) => sides.map((s) => ({ side: s.className, over: s.scrollWidth - s.clientWidth, width: s.clientWidth })));
}

/** Hovers the centre of heatmap cell (q, k) on one side and returns the readout's value. */
async function hoverCell(page: Page, side: 'a' | 'b', q: number, k: number): Promise<number> {
  const sel = `[data-testid=side-${side}] [data-testid=heatmap-canvas]`;
  const g = await numericData(page, sel);
  await page.locator(sel).hover({ position: { x: g.originX! + (k + 0.5) * g.cell!, y: g.originY! + (q + 0.5) * g.cell! }, force: true });
  const readout = page.locator(`[data-testid=side-${side}] [data-testid=heatmap-readout]`);
  await expect.poll(() => readout.getAttribute('data-q')).toBe(String(q));
  return Number(await readout.getAttribute('data-value'));
}

describe('attnscope serve: compare sides fit their half of the window', () => {
  const ref = readReference('bert').inputs.find((i) => i.id === 'short')!;

  it('every view of both sides fits its half (also when compare is switched on under a drawn view); hovered cells read PyTorch’s weights', async () => {
    const url = new URL(suite.server().url);
    url.searchParams.set('model', 'folder:0/bert');
    url.searchParams.set('text', ref.text);
    url.searchParams.set('view', 'heatmap');
    url.searchParams.set('layer', '1');
    url.searchParams.set('head', '1');
    const app = await suite.open(url.href, { viewport: { width: 1024, height: 900 } });
    const { page } = app;
    try {
      await done(page, 'a');
      const full = await numericData(page, '[data-testid=side-a] [data-testid=heatmap-canvas]');

      // Compare mode on: side A's heatmap, drawn for the whole window, is laid out again for its half.
      await page.click('[data-testid=compare-toggle]');
      await done(page, 'b');
      const [a, b] = await overflow(page);
      expect(a!.width).toBeLessThan(600);
      expect(b!.width).toBeLessThan(600);
      await expect.poll(() => overflow(page).then((o) => o.map((x) => x.over))).toEqual([0, 0]);
      const half = await numericData(page, '[data-testid=side-a] [data-testid=heatmap-canvas]');
      expect(half.cell).toBeLessThan(full.cell!);
      // Still readable: cells of at least 12 px for these few tokens.
      expect(half.cell).toBeGreaterThanOrEqual(12);

      // The hovered cell on each side is the head's PyTorch weight.
      const n = ref.tokens.length;
      const w = (ref.attentions as number[][][][])[1]![1]!;
      for (const side of ['a', 'b'] as const) {
        for (const [q, k] of [[n - 1, 0], [2, n - 2]] as const) expect(Math.abs((await hoverCell(page, side, q, k)) - w[q]![k]!)).toBeLessThanOrEqual(1e-5);
      }

      // Every view tab, on both sides (navigation moves together).
      const tabs = await page.$$eval('[data-testid=side-a] [data-testid=tabs] button', (bs) => bs.filter((b) => !(b as HTMLButtonElement).disabled).map((b) => b.getAttribute('data-testid')!));
      expect(tabs.length).toBeGreaterThanOrEqual(10);
      for (const tab of tabs) {
        await page.click(`[data-testid=side-a] [data-testid=${tab}]`);
        await expect.poll(() => page.getAttribute(`[data-testid=side-b] [data-testid=${tab}]`, 'aria-selected')).toBe('true');
        await expect.poll(() => overflow(page).then((o) => o.map((x) => x.over)), { message: tab }).toEqual([0, 0]);
      }
      expect(app.errors).toEqual([]);
    } finally {
      await app.close();
    }
  });

  it('ranks the head pairs in a Web Worker: cancel stops it (the worker terminated), compare starts it again and the ranked heads are listed', async () => {
    // Compare requests posted to workers are held until released, so that the cancel button can be pressed while one runs.
    const hold = instrumentWorkers("m.kind === 'attnscope-compare'");
    const url = new URL(suite.server().url);
    url.searchParams.set('model', 'folder:0/bert');
    url.searchParams.set('text', ref.text);
    url.searchParams.set('compare', '1');
    url.searchParams.set('modelB', 'folder:0/electra');
    const app = await suite.open(url.href, { viewport: { width: 1280, height: 900 }, init: hold });
    const { page } = app;
    try {
      await done(page, 'a');
      await done(page, 'b');
      await page.waitForSelector('[data-testid=compare-cancel]');
      expect(await page.evaluate(() => document.body.dataset.compare)).toBe('computing');
      expect((await workerCounts(page)).matched).toBe(1);
      await page.click('[data-testid=compare-cancel]');
      await expect.poll(() => page.evaluate(() => document.body.dataset.compare)).toBe('cancelled');
      expect(await page.textContent('[data-testid=compare-message]')).toBe('comparison cancelled');
      expect((await workerCounts(page)).terminated).toBe(1);
      // Again, this time running: the ranking comes from the worker (the cancelled request, still held, goes to its terminated worker).
      await releaseHeld(page, true);
      await page.click('[data-testid=compare-run]');
      await page.waitForFunction(() => document.body.dataset.compare === 'done', null, { timeout: 60_000 });
      expect((await workerCounts(page)).matched).toBe(2);
      expect((await workerCounts(page)).terminated).toBe(2);
      // The ranked heads are listed (their values against PyTorch's: test/browser/app-compare.test.ts, through this same path).
      expect(await page.textContent('[data-testid=ranked-head-0]')).toMatch(/layer \d+/);
      expect(app.errors).toEqual([]);
    } finally {
      await app.close();
    }
  });
});
