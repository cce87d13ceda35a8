/**
 * The long views compute attention on demand in a Web Worker, not on the page's thread, in real
 * Chromium at 8,192 tokens. The page's messages starting jobs in the worker are held back (an init
 * script wraps Worker.prototype.postMessage; the layers themselves still go through): nothing can
 * then be computed anywhere, and the page must stay fully usable — the heatmap zooms, pans and hovers
 * exact weights, views switch, the model view and the head view show their progress — with no tile,
 * thumbnail or top-k band drawn and no weight binned. Released, the worker's results arrive and are
 * drawn: the overview completes, the thumbnails stream in, the top-k list fills. Order and behaviour
 * only (what is drawn before and after the release), no timing.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { longTrace } from '../../bench/long-trace.js';
import type { Trace } from '../../src/core/trace.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../../src/views/html/standalone.js';
import { buildWebClient, launchChromium, numericData, openPage } from './harness.js';
import { hoverTileCell, referenceWeight } from './long-page.js';
import { heldMessages, instrumentWorkers, releaseHeld } from './worker-instrument.js';

const N = 8192;
const tmp = mkdtempSync(join(tmpdir(), 'attnscope-long-worker-'));
const file = join(tmp, 'long.html');
let browser: Browser;
let trace: Trace;

/** Holds the long views' job messages to workers until released (kept in page order; then no more are held). */
const HOLD_JOBS = instrumentWorkers("m.kind === 'long-views' && m.op === 'job'");

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
  trace = longTrace({ tokens: N, layers: 2, heads: 4, headDim: 16, window: 1024 });
  const r = await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), precision: 'exact', maxBytes: 1e9, view: 'heatmap', theme: 'light', deflate: (d) => deflateRawSync(d, { level: 1 }) });
  writeFileSync(file, r.html);
}, 180_000);

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

/** The float64 weight of query i on key j in (layer, head) (long-page.ts; causal, layer 1 has a window of 1,024). */
const reference = (layer: number, head: number, i: number, j: number): number => referenceWeight(trace, layer, head, i, j);

const tiles = '[data-testid=heatmap-tiles]';

describe('long views: the computation is in a worker, the page stays usable', () => {
  it('with every worker job held: zoom, hover, switch views, progress shown, nothing binned; released: everything arrives', async () => {
    const opened = await openPage(browser, file, undefined, { init: HOLD_JOBS });
    const page = opened.page;
    try {
      await page.waitForSelector(`${tiles}[data-compute=worker]`);
      // Jobs are queued for the worker and held: the overview is not binned, nothing is drawn or read.
      await expect.poll(() => heldMessages(page)).toBeGreaterThan(0);
      let g = await numericData(page, tiles);
      expect(await page.getAttribute(tiles, 'data-overview')).toBe('building');
      expect(g.pending).toBeGreaterThan(0);
      expect(g.cellsRead).toBe(0);

      // The page answers meanwhile: go to a block (full zoom), hover exact weights (read on the page
      // from the same queries and keys: one row, not a tile), keyboard zoom, another head.
      await page.fill('[data-testid=heatmap-goto]', '4100, 4090');
      await page.press('[data-testid=heatmap-goto]', 'Enter');
      await expect.poll(async () => (await numericData(page, tiles)).level).toBe(0);
      for (const [q, k] of [[4100, 4090], [4100, 4100]] as const) expect(await hoverTileCell(page, q, k)).toBeCloseTo(reference(0, 0, q, k), 7);
      await page.focus('[data-testid=heatmap-tiles-wrap]');
      const before = (await numericData(page, tiles)).scale!;
      await page.keyboard.press('-');
      await expect.poll(async () => (await numericData(page, tiles)).scale).toBeCloseTo(before / 2, 6);
      await page.selectOption('[data-testid=heatmap-head]', '2');
      await expect.poll(() => page.$eval('[data-testid=heatmap-head]', (e) => (e as HTMLSelectElement).value)).toBe('2');
      g = await numericData(page, tiles);
      expect(await page.getAttribute(tiles, 'data-overview')).toBe('building');
      expect([g.tilesDrawn, g.cellsRead]).toEqual([0, 0]);
      expect(await page.textContent('[data-testid=heatmap-zoom]')).toContain('computing');

      // The model view: its thumbnails wait in the worker's queue; the progress line says so.
      await page.click('[data-testid=tab-model]');
      await page.waitForSelector('[data-testid=model-thumbs][data-compute=worker]');
      expect(await page.getAttribute('[data-testid=model-thumbs]', 'data-done')).toBe('0');
      expect(await page.textContent('[data-testid=model-thumbs-progress]')).toContain('computing thumbnails in a worker: 0 of 8');
      // The head view: the strip scrolls and searches; its top-k bands are asked for, none arrived.
      await page.click('[data-testid=tab-head]');
      await page.waitForSelector('[data-testid=head-long-lines][data-compute=worker]');
      await page.fill('[data-testid=head-search]', '#6000');
      await page.waitForSelector('[data-testid=head-topk-list][data-query="6000"][data-waiting=true]');
      expect(await page.textContent('[data-testid=head-topk-list]')).toContain('computing…');
      expect(Number(await page.getAttribute('[data-testid=head-long-lines]', 'data-count'))).toBe(0);

      // Released: the worker computes, the page draws what arrives.
      await releaseHeld(page, true);
      await page.waitForSelector('[data-testid=head-topk-list][data-query="6000"][data-waiting=false]', { timeout: 120_000 });
      const row = Array.from({ length: 6001 }, (_, k) => reference(0, 0, 6000, k));
      const best = row.map((w, k) => ({ w, k })).sort((a, b) => b.w - a.w || a.k - b.k)[0]!;
      expect(Number(await page.getAttribute('[data-testid=head-topk-0-0]', 'data-key'))).toBe(best.k);
      expect(Number(await page.getAttribute('[data-testid=head-topk-0-0]', 'data-value'))).toBeCloseTo(best.w, 7);
      await page.click('[data-testid=tab-model]');
      await page.waitForSelector('[data-testid=model-thumbs][data-drawn=true]', { timeout: 180_000 });
      expect(await page.textContent('[data-testid=model-thumbs-progress]')).toBe('8 thumbnails');
      await page.click('[data-testid=tab-heatmap]');
      await page.waitForSelector(`${tiles}[data-ready=true][data-overview=done]`, { timeout: 180_000 });
      g = await numericData(page, tiles);
      expect(g.tilesDrawn).toBeGreaterThan(0);
      expect(g.cellsRead).toBeGreaterThan(0);
      expect(await hoverTileCell(page, 4100, 4090)).toBeCloseTo(reference(0, 2, 4100, 4090), 7);
      expect(opened.errors).toEqual([]);
      expect(opened.consoleErrors).toEqual([]);
      expect(opened.network()).toEqual([]);
    } finally {
      await opened.close();
    }
  }, 400_000);

  it('a worker that fails (here: one that reports an error at once): the views compute on the page instead', async () => {
    const failing = `window.Worker = class { constructor() { setTimeout(() => this.onerror && this.onerror({ message: 'refused' }), 0); } postMessage() {} terminate() {} };`;
    const opened = await openPage(browser, file, undefined, { init: failing });
    const page = opened.page;
    try {
      await page.waitForSelector(`${tiles}[data-ready=true][data-overview=done]`, { timeout: 180_000 });
      expect(await page.getAttribute(tiles, 'data-error')).toBe('long views worker: refused');
      await page.fill('[data-testid=heatmap-goto]', '4100, 4090');
      await page.press('[data-testid=heatmap-goto]', 'Enter');
      await page.waitForSelector(`${tiles}[data-ready=true][data-level="0"]`, { timeout: 180_000 });
      expect((await numericData(page, tiles)).tilesDrawn).toBeGreaterThan(0);
      expect(await hoverTileCell(page, 4100, 4090)).toBeCloseTo(reference(0, 0, 4100, 4090), 7);
      await page.click('[data-testid=tab-model]');
      await page.waitForSelector('[data-testid=model-thumbs][data-drawn=true]', { timeout: 180_000 });
      expect(await page.getAttribute('[data-testid=model-thumbs]', 'data-compute')).toBe('page');
      await page.click('[data-testid=tab-head]');
      await page.fill('[data-testid=head-search]', '#6000');
      await page.waitForSelector('[data-testid=head-topk-list][data-query="6000"][data-waiting=false]', { timeout: 60_000 });
      expect(Number(await page.getAttribute('[data-testid=head-topk-0-0]', 'data-value'))).toBeGreaterThan(0);
      expect(opened.errors).toEqual([]);
    } finally {
      await opened.close();
    }
  }, 400_000);
});
