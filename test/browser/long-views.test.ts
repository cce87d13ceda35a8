/**
 * The views at 8,192 tokens in real Chromium: a standalone page of a trace in the on-demand form
 * (queries, keys and score terms; no attention tensors: bench/long-trace.ts), its attention computed
 * in the page. The heatmap opens on the overview, zooms to a block (go-to box, wheel, keyboard),
 * hovers cells whose weights equal a float64 softmax of the same queries and keys computed here,
 * masked cells read as masked, heads and layers switch; the JavaScript heap stays far below one
 * 8k × 8k float32 matrix (256 MB); the model view streams thumbnails, the head view scrolls, searches
 * and lists exact top-k keys. A short trace in that form is computed whole in the page and shown by
 * every view. No page errors, no network.
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
import { buildWebClient, hoverMatrixCell, launchChromium, numericData, withPage } from './harness.js';
import { hoverTileCell, referenceWeight } from './long-page.js';

const N = 8192;
const tmp = mkdtempSync(join(tmpdir(), 'attnscope-long-views-'));
const file = join(tmp, 'long.html');
const shortFile = join(tmp, 'short.html');
let browser: Browser;
let trace: Trace;
let short: Trace;

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
  trace = longTrace({ tokens: N, layers: 2, heads: 4, headDim: 16, window: 1024 });
  const r = await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), precision: 'exact', maxBytes: 1e9, view: 'heatmap', theme: 'light', deflate: (d) => deflateRawSync(d, { level: 1 }) });
  writeFileSync(file, r.html);
  short = longTrace({ tokens: 200, layers: 2, heads: 2, headDim: 16, window: 64 });
  const s = await renderStandaloneHtml(short, { bundle: await loadViewBundle(), view: 'heatmap', deflate: (d) => deflateRawSync(d, { level: 6 }) });
  writeFileSync(shortFile, s.html);
}, 180_000);

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

/** The float64 weight of query i on key j in (layer, head) of `t` (long-page.ts). */
const reference = (layer: number, head: number, i: number, j: number, t: Trace = trace): number => referenceWeight(t, layer, head, i, j);

async function waitTiles(page: Page): Promise<void> {
  await page.waitForSelector('[data-testid=heatmap-tiles][data-ready=true][data-overview=done]', { timeout: 120_000 });
}

async function readValue(page: Page): Promise<number> {
  return Number(await page.getAttribute('[data-testid=heatmap-readout]', 'data-value'));
}

describe('views at 8,192 tokens (attention computed in the page)', () => {
  it('heatmap: overview, zoom to a block, exact weights on hover, masked cells, switch heads and layers', async () => {
    await withPage(browser, file, async (page, opened) => {
      await waitTiles(page);
      let g = await numericData(page, '[data-testid=heatmap-tiles]');
      expect([g.nq, g.nk]).toEqual([N, N]);
      // The overview: the whole matrix, bins of 2^level cells.
      expect(g.level).toBeGreaterThan(0);
      expect(g.viewY).toBeCloseTo(0, 6);
      expect(g.vh! / g.scale!).toBeCloseTo(N, 0);

      // Go to a block around query 4100, key 4090: full zoom, exact weights.
      await page.fill('[data-testid=heatmap-goto]', '4100, 4090');
      await page.press('[data-testid=heatmap-goto]', 'Enter');
      await waitTiles(page);
      g = await numericData(page, '[data-testid=heatmap-tiles]');
      expect(g.level).toBe(0);
      expect(g.viewY!).toBeLessThanOrEqual(4100);
      expect(g.viewY! + g.vh! / g.scale!).toBeGreaterThan(4100);
      for (const [q, k] of [[4100, 4090], [4100, 4099], [4100, 4100], [4095, 4084]] as const) {
        await hoverTileCell(page, q, k);
        expect(await readValue(page)).toBeCloseTo(reference(0, 0, q, k), 7);
        expect(await page.getAttribute('[data-testid=heatmap-readout]', 'data-masked')).toBeNull();
      }
      // The hover names the token pair.
      const text = await page.textContent('[data-testid=heatmap-readout]');
      expect(text).toContain(`4095 “${trace.tokens[4095]!.text.replace('▁', '')}” → 4084 “${trace.tokens[4084]!.text.replace('▁', '')}”`);
      // Above the diagonal: masked.
      await hoverTileCell(page, 4090, 4095);
      expect(await page.getAttribute('[data-testid=heatmap-readout]', 'data-masked')).toBe('true');

      // Another head: the same cell reads that head's weight.
      await page.selectOption('[data-testid=heatmap-head]', '2');
      await waitTiles(page);
      await hoverTileCell(page, 4100, 4090);
      expect(await readValue(page)).toBeCloseTo(reference(0, 2, 4100, 4090), 7);
      // Layer 1 has a sliding window of 1,024: keys more than 1,023 back are masked.
      await page.selectOption('[data-testid=heatmap-layer]', '1');
      await waitTiles(page);
      await hoverTileCell(page, 4100, 4090);
      expect(await readValue(page)).toBeCloseTo(reference(1, 2, 4100, 4090), 7);
      await page.fill('[data-testid=heatmap-goto]', '5000, 3977');
      await page.press('[data-testid=heatmap-goto]', 'Enter');
      await waitTiles(page);
      await hoverTileCell(page, 5000, 3976);
      expect(await page.getAttribute('[data-testid=heatmap-readout]', 'data-masked')).toBe('true');
      await hoverTileCell(page, 5000, 3977);
      expect(await page.getAttribute('[data-testid=heatmap-readout]', 'data-masked')).toBeNull();
      expect(await readValue(page)).toBeCloseTo(reference(1, 2, 5000, 3977), 7);

      // Keyboard and wheel zoom: + doubles the scale, 0 fits, the wheel zooms about the pointer.
      await page.focus('[data-testid=heatmap-tiles-wrap]');
      const before = (await numericData(page, '[data-testid=heatmap-tiles]')).scale!;
      await page.keyboard.press('-');
      await expect.poll(async () => (await numericData(page, '[data-testid=heatmap-tiles]')).scale).toBeCloseTo(before / 2, 6);
      await page.keyboard.press('0');
      await waitTiles(page);
      g = await numericData(page, '[data-testid=heatmap-tiles]');
      expect(g.vh! / g.scale!).toBeCloseTo(N, 0);
      const box = (await page.locator('[data-testid=heatmap-tiles]').boundingBox())!;
      const px = box.x + g.originX! + g.vw! / 2;
      const py = box.y + g.originY! + g.vh! / 3;
      const under = { k: g.viewX! + (px - box.x - g.originX!) / g.scale!, q: g.viewY! + (py - box.y - g.originY!) / g.scale! };
      await page.mouse.move(px, py);
      await page.mouse.wheel(0, -400);
      await expect.poll(async () => (await numericData(page, '[data-testid=heatmap-tiles]')).scale).toBeGreaterThan(g.scale! * 1.5);
      const z = await numericData(page, '[data-testid=heatmap-tiles]');
      expect(z.viewX! + (px - box.x - z.originX!) / z.scale!).toBeCloseTo(under.k, 1);
      expect(z.viewY! + (py - box.y - z.originY!) / z.scale!).toBeCloseTo(under.q, 1);
      await waitTiles(page);

      // Bounded memory: far less than one 8k × 8k float32 matrix (256 MB) in the heap.
      const heap = await page.evaluate(() => (performance as Performance & { memory?: { usedJSHeapSize: number } }).memory?.usedJSHeapSize ?? 0);
      expect(heap).toBeGreaterThan(0);
      expect(heap).toBeLessThan(160 * 1024 * 1024);
      expect(opened.errors).toEqual([]);
      expect(opened.consoleErrors).toEqual([]);
      expect(opened.network()).toEqual([]);
    });
  }, 300_000);

  it('model view: every layer × head as a streamed thumbnail; hover names the head, a click opens its heatmap', async () => {
    await withPage(browser, file, async (page, opened) => {
      await page.click('[data-testid=tab-model]');
      await page.waitForSelector('[data-testid=model-thumbs][data-drawn=true]', { timeout: 180_000 });
      const g = await numericData(page, '[data-testid=model-thumbs]');
      expect([g.layers, g.heads, g.done]).toEqual([2, 4, 8]);
      // 8 heads × 8,192² / 2 × 16 = 4.3e9 multiply-adds is over the 2e9 budget: 59 of every 128 rows of a bin
      // (2e9 / (8 heads · 8,192 · 16 / 2 per row · 64 bin rows) = 59.6).
      expect([g.rowsPerBin, g.binSide]).toEqual([59, 128]);
      expect(await page.textContent('[data-testid=model-note]')).toContain('59 of every 128 rows read');
      const at = { x: g.gridX! + 2.5 * g.cell!, y: g.gridY! + 1.5 * g.cell! };
      await page.locator('[data-testid=model-thumbs]').hover({ position: at });
      await expect.poll(() => page.getAttribute('[data-testid=model-thumbs]', 'data-hover-layer')).toBe('1');
      expect(await page.getAttribute('[data-testid=model-thumbs]', 'data-hover-head')).toBe('2');
      expect(await page.textContent('[data-testid=tooltip]')).toContain('layer 1 · head 2');
      await page.locator('[data-testid=model-thumbs]').click({ position: at });
      await waitTiles(page);
      expect(await page.$eval('[data-testid=heatmap-layer]', (e) => (e as HTMLSelectElement).value)).toBe('1');
      expect(await page.$eval('[data-testid=heatmap-head]', (e) => (e as HTMLSelectElement).value)).toBe('2');
      // Views that need whole matrices say why instead of failing.
      await page.click('[data-testid=tab-flow]');
      expect(await page.textContent('[data-testid=long-note]')).toContain('keeps queries and keys, not attention');
      expect(opened.errors).toEqual([]);
      expect(opened.consoleErrors).toEqual([]);
    });
  }, 300_000);

  it('head view: a scrolling strip of 8,192 tokens (only the rows in view exist), search and jump, top-k keys with exact weights', async () => {
    await withPage(browser, file, async (page, opened) => {
      await page.click('[data-testid=tab-head]');
      await page.waitForSelector('[data-testid=head-long-scroll]');
      const rows = async () => numericData(page, '[data-testid=head-long-scroll]');
      let r = await rows();
      expect(r.n).toBe(N);
      expect(r.first).toBe(0);
      // Virtualised: a screenful of rows and the overscan, not 8,192.
      expect(await page.locator('[data-testid=head-long-scroll] [data-side=query]').count()).toBe(r.rows);
      expect(r.rows).toBeLessThan(120);
      // Lines without a focus: each query in view, top 3 keys per head.
      // (Computed in the page's worker: the lines appear as the bands of top-k keys arrive.)
      expect(await page.getAttribute('[data-testid=head-long-lines]', 'data-compute')).toBe('worker');
      await expect.poll(async () => Number(await page.getAttribute('[data-testid=head-long-lines]', 'data-count')), { timeout: 60_000 }).toBeGreaterThan(0);

      // Search: every token whose text contains 'children'; Enter steps to the next match and pins it.
      const labels = trace.tokens.map((t) => t.text.replace('▁', ''));
      const matches = labels.flatMap((l, i) => (l.includes('children') ? [i] : []));
      await page.fill('[data-testid=head-search]', 'children');
      await expect.poll(() => page.textContent('[data-testid=head-search-count]')).toBe(`1 of ${matches.length}`);
      for (let i = 0; i < 4; i++) await page.press('[data-testid=head-search]', 'Enter');
      await expect.poll(() => page.textContent('[data-testid=head-search-count]')).toBe(`5 of ${matches.length}`);
      const q5 = matches[4]!;
      await page.waitForSelector(`[data-testid=head-topk-list][data-query="${q5}"][data-waiting=false]`, { timeout: 60_000 });
      r = await rows();
      expect(r.first).toBeLessThanOrEqual(q5);
      expect(r.last).toBeGreaterThan(q5);

      // Jump to a position: #6000; its top-3 keys of head 1 are the float64 top 3 of its row, with their weights.
      await page.fill('[data-testid=head-search]', '#6000');
      await page.waitForSelector('[data-testid=head-topk-list][data-query="6000"][data-waiting=false]', { timeout: 60_000 });
      const row = Array.from({ length: 6001 }, (_, k) => reference(0, 1, 6000, k));
      const best = row.map((w, k) => ({ w, k })).sort((a, b) => b.w - a.w || a.k - b.k).slice(0, 3);
      for (let j = 0; j < 3; j++) {
        const chip = page.locator(`[data-testid=head-topk-1-${j}]`);
        expect(Number(await chip.getAttribute('data-key'))).toBe(best[j]!.k);
        expect(Number(await chip.getAttribute('data-value'))).toBeCloseTo(best[j]!.w, 7);
      }
      // A chip scrolls the strip to its key.
      const far = best.find((b) => Math.abs(b.k - 6000) > 100);
      if (far) {
        await page.click(`[data-testid=head-topk-1-${best.indexOf(far)}]`);
        await expect.poll(async () => {
          const x = await rows();
          return x.first! <= far.k && x.last! > far.k;
        }).toBe(true);
      }
      // Solo head 2: only its keys are listed.
      await page.dblclick('[data-testid=head-swatch-2]');
      await expect.poll(() => page.locator('[data-testid^=head-topk-2-]').count()).toBe(3);
      expect(await page.locator('[data-testid^=head-topk-1-]').count()).toBe(0);
      expect(opened.errors).toEqual([]);
      expect(opened.consoleErrors).toEqual([]);
    });
  }, 300_000);

  it('a short trace in the on-demand form: the page computes its layers and every view shows it as a dense trace', async () => {
    await withPage(browser, shortFile, async (page, opened) => {
      // The usual heatmap (no tiles), its cells the float64 softmax of the page's q and k.
      await page.waitForSelector('[data-testid=heatmap-canvas]');
      expect(await page.locator('[data-testid=heatmap-tiles]').count()).toBe(0);
      for (const [q, k] of [[9, 4], [150, 149], [150, 80]] as const) {
        await hoverMatrixCell(page, 'heatmap-canvas', q, k);
        await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-q')).toBe(String(q));
        const masked = await page.getAttribute('[data-testid=heatmap-readout]', 'data-masked');
        // Layer 0 (shown) has no window: every key up to the query is visible.
        expect(masked).toBeNull();
        expect(Number(await page.getAttribute('[data-testid=heatmap-readout]', 'data-value'))).toBeCloseTo(reference(0, 0, q, k, short), 7);
      }
      // Every view opens (none needs to say it cannot).
      for (const v of ['head', 'model', 'neuron', 'flow', 'words', 'types']) {
        await page.click(`[data-testid=tab-${v}]`);
        await page.waitForSelector(`[data-testid=tab-${v}][aria-selected=true]`);
        expect(await page.locator('[data-testid=long-note]').isVisible()).toBe(false);
      }
      expect(opened.errors).toEqual([]);
      expect(opened.consoleErrors).toEqual([]);
    });
  }, 300_000);
});
