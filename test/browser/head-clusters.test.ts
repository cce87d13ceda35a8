/**
 * The head clusters scatter in real Chromium, on a standalone page of the default model
 * (stories260k, 5 layers × 8 heads): every head is a point; hovering one names it; clicking one
 * opens that head's heatmap (heatmap view, its layer and head, whose hovered cell reads the trace's
 * weight); the projection switches; SVG/PNG export and the cluster table as CSV and JSON agree
 * with the points on the page.
 */
import { readFileSync } from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../../src/core/trace.js';
import { expectHeadHeatmapOpened, openPage, standalonePageSuite, withPage } from './harness.js';

const SENTENCE = 'Once upon a time, there was a little girl named Lily. She liked to play in the park with her dog.';
const suite = standalonePageSuite('clusters', SENTENCE);
let browser: Browser;
let trace: Trace;
let file: string;
beforeAll(() => {
  [browser, trace, file] = [suite.browser(), suite.trace(), suite.file()];
});

const POINTS = '[data-testid=clusters-svg] rect.head-point';

/** (layer, head, cluster) of every point on the page. */
async function pagePoints(page: Page): Promise<{ layer: number; head: number; cluster: number; fill: string }[]> {
  return page.$$eval(POINTS, (els) => els.map((e) => ({ layer: Number(e.getAttribute('data-layer')), head: Number(e.getAttribute('data-head')), cluster: Number(e.getAttribute('data-cluster')), fill: e.getAttribute('fill') ?? '' })));
}

describe('head clusters view', () => {
  it('draws every head; hovering names it; clicking a point opens that head’s heatmap', async () => {
    await withPage(browser, file, async (page, p) => {
      await page.click('[data-testid=tab-clusters]');
      await page.waitForSelector(POINTS);
      const L = trace.model.numLayers;
      const H = trace.model.numHeads;
      const pts = await pagePoints(page);
      expect(pts.map((q) => [q.layer, q.head])).toEqual(Array.from({ length: L * H }, (_, i) => [Math.floor(i / H), i % H]));
      const k = Number(await page.getAttribute('[data-testid=clusters-view]', 'data-k'));
      expect(k).toBeGreaterThanOrEqual(2);
      expect(new Set(pts.map((q) => q.cluster))).toEqual(new Set(Array.from({ length: k }, (_, i) => i)));
      // One colour per cluster.
      for (const q of pts) expect(q.fill).toBe(pts.find((o) => o.cluster === q.cluster)!.fill);
      expect(new Set(pts.map((q) => q.fill)).size).toBe(k);
      expect(await page.locator('[data-testid=clusters-svg] text.cluster-name').count()).toBe(k);
      expect(await page.locator('[data-testid=clusters-svg] text.point-label', { hasText: /^L3 H5$/ }).count()).toBe(1);

      const target = `${POINTS}[data-layer="3"][data-head="5"]`;
      await page.hover(target, { force: true });
      await expect.poll(() => page.getAttribute('[data-testid=clusters-readout]', 'data-head')).toBe('5');
      expect(await page.getAttribute('[data-testid=clusters-readout]', 'data-layer')).toBe('3');
      const cluster = pts.find((q) => q.layer === 3 && q.head === 5)!.cluster;
      expect(await page.getAttribute('[data-testid=clusters-readout]', 'data-cluster')).toBe(String(cluster));
      const name = await page.textContent('[data-testid=clusters-name]');
      expect(await page.textContent(`[data-testid=clusters-svg] text.cluster-name[data-cluster="${cluster}"]`)).toMatch(new RegExp(`^${name!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\(\\d+\\)$`));

      await page.click(target, { force: true });
      await expectHeadHeatmapOpened(page, trace, 3, 5);

      // Back on the scatter, the opened head is ringed.
      await page.click('[data-testid=tab-clusters]');
      await page.waitForSelector(`${target}.selected`);
      expect(await page.locator(`${POINTS}.selected`).count()).toBe(1);
      expect(p.network()).toEqual([]);
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
    });
  });

  it('switches projection and k; exports SVG, PNG, and the table as CSV and JSON matching the page', async () => {
    await withPage(browser, file, async (page, p) => {
      await page.click('[data-testid=tab-clusters]');
      await page.waitForSelector(POINTS);
      await page.selectOption('[data-testid=clusters-projection]', { label: 'PCA' });
      await expect.poll(async () => (await page.textContent('[data-testid=clusters-svg]'))?.includes('PC1')).toBe(true);
      await page.selectOption('[data-testid=clusters-k]', { label: '3' });
      await expect.poll(() => page.getAttribute('[data-testid=clusters-view]', 'data-k')).toBe('3');
      const pts = await pagePoints(page);
      expect(new Set(pts.map((q) => q.cluster)).size).toBe(3);

      const [csv] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=clusters-csv]')]);
      expect(csv.suggestedFilename()).toBe('attnscope-stories260k-clusters-self-pca.csv');
      const lines = readFileSync((await csv.path())!, 'utf8').trimEnd().split('\n');
      expect(lines[0]).toBe('layer,head,cluster,cluster_name,x,y');
      expect(lines.slice(1).map((l) => l.split(',').slice(0, 3).map(Number))).toEqual(pts.map((q) => [q.layer, q.head, q.cluster]));

      const [json] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=clusters-json]')]);
      const doc = JSON.parse(readFileSync((await json.path())!, 'utf8')) as { k: number; projection: string; rows: { cluster: number }[]; clusters: { size: number }[] };
      expect(doc.k).toBe(3);
      expect(doc.projection).toBe('pca');
      expect(doc.rows.map((r) => r.cluster)).toEqual(pts.map((q) => q.cluster));
      expect(doc.clusters.map((c) => c.size)).toEqual([0, 1, 2].map((c) => pts.filter((q) => q.cluster === c).length));

      const [svg] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=clusters-export-svg]')]);
      const text = readFileSync((await svg.path())!, 'utf8');
      expect(text.startsWith('<svg')).toBe(true);
      expect(text).toContain('attnscope-head-clusters');
      expect((text.match(/class="head-point/g) ?? []).length).toBe(pts.length);
      expect(text).toContain('PC1');
      const [png] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=clusters-export-png]')]);
      const bytes = readFileSync((await png.path())!);
      expect([...bytes.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      expect(await page.textContent('[data-testid=clusters-export-status]')).toBe('');
      expect(p.network()).toEqual([]);
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
    });
  });
});
