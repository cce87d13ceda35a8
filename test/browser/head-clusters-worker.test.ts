/**
 * The head clusters view in real Chromium computes its clustering (head table, UMAP, k-means) in a
 * Web Worker started from the page's own script. The worker's job is held (the page's
 * Worker.postMessage of the clustering request is kept back by an init script until the test lets
 * it go), so behaviour is checked, not time: while it is held the view shows its progress and a
 * cancel button and the page stays interactive (another tab opens and the view comes back still
 * computing); let go, the clusters arrive and are the ones Node computes for the same trace with
 * the same seed, value for value; cancel terminates the worker and draws nothing until asked again.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type HeadClustering, clusterHeads, clusteringJson, headFeatureRows } from '../../src/analysis/cluster.js';
import { headTable } from '../../src/analysis/head-types.js';
import type { Trace } from '../../src/core/trace.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../../src/views/html/standalone.js';
import { syntheticTrace } from '../../bench/synthetic-trace.js';
import { buildWebClient, launchChromium, openPage } from './harness.js';
import { instrumentWorkers, releaseHeld, workerCounts } from './worker-instrument.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-clusters-worker-'));
let browser: Browser;
let trace: Trace;
let file: string;
const LAYERS = 6;
const HEADS = 4;

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
  trace = syntheticTrace({ layers: LAYERS, heads: HEADS, tokens: 48, qk: false });
  file = join(tmp, 'clusters.html');
  writeFileSync(file, (await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), deflate: (d) => deflateRawSync(d, { level: 1 }), maxBytes: 64e6 })).html);
}, 300_000);

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

/**
 * Counts Workers started and terminated; holds every clustering request posted to a worker
 * (counted as `matched`) until released (the requests held so far are posted); records each
 * progress line the view shows (the worker's stages as they reach the page), in order.
 */
const INSTRUMENT = `${instrumentWorkers("m.kind === 'clusters'")}
  window.__progress = [];
  new MutationObserver(() => {
    const p = document.querySelector('[data-testid=clusters-progress]');
    if (p && p.textContent !== window.__progress.at(-1)) window.__progress.push(p.textContent);
  }).observe(document, { childList: true, subtree: true, characterData: true });
`;
const progressLines = (page: Page) => page.evaluate(() => (window as unknown as { __progress: string[] }).__progress);
const POINTS = '[data-testid=clusters-svg] rect.head-point';
let workerJson = '';

/** The library's clustering in Node: the head table on the kernel the page runs (wasm), UMAP and k-means with the default seed. */
function nodeClustering(projection: 'umap' | 'pca' = 'umap'): HeadClustering {
  return clusterHeads(headFeatureRows(headTable(trace, 'self', { kernel: 'wasm' })), { projection });
}

/**
 * The clustering's JSON without the UMAP coordinates: Chromium's UMAP layout of the same table
 * differs from Node's (it does on the page's thread too, before and without workers; the last test
 * shows the worker gives the page thread's numbers exactly), so those are compared by projection
 * PCA, whose coordinates must equal Node's too.
 */
function withoutXY(json: string): unknown {
  const o = JSON.parse(json) as { rows: { x: unknown; y: unknown }[] };
  for (const r of o.rows) {
    r.x = null;
    r.y = null;
  }
  return o;
}

describe('head clusters in a Web Worker', () => {
  it('shows progress while held, the page stays interactive, then the clusters arrive: Node’s', async () => {
    const o = await openPage(browser, file, undefined, { init: INSTRUMENT });
    try {
      await o.page.click('[data-testid=tab-clusters]');
      await o.page.waitForSelector('[data-testid=clusters-progress]');
      expect(await o.page.textContent('[data-testid=clusters-progress]')).toMatch(/clustering in the background/);
      expect(await o.page.isVisible('[data-testid=clusters-cancel]')).toBe(true);
      expect(await o.page.getAttribute('[data-testid=clusters-view]', 'data-computing')).toBe('true');
      expect(await o.page.locator(POINTS).count()).toBe(0);
      // The page answers while the job is held: another view opens, and this one comes back still computing.
      await o.page.click('[data-testid=tab-heatmap]');
      await o.page.waitForSelector('[data-testid=clusters-view]', { state: 'hidden' });
      await o.page.click('[data-testid=tab-clusters]');
      await o.page.waitForSelector('[data-testid=clusters-progress]');
      expect(await workerCounts(o.page)).toMatchObject({ matched: 1 });

      expect(await releaseHeld(o.page)).toBe(1);
      await o.page.waitForSelector(POINTS, { timeout: 120_000 });
      expect(await o.page.getAttribute('[data-testid=clusters-view]', 'data-computing')).toBe(null);
      expect(await o.page.locator(POINTS).count()).toBe(LAYERS * HEADS);
      // The worker's stages reached the view in order: the head table, then the projection.
      expect(await progressLines(o.page)).toEqual([
        'clustering in the background: computing the head table… ',
        'clustering in the background: projecting the heads (UMAP) and clustering them… ',
      ]);
      const [json] = await Promise.all([o.page.waitForEvent('download'), o.page.click('[data-testid=clusters-json]')]);
      const expected = `${JSON.stringify(clusteringJson(nodeClustering()), null, 1)}\n`;
      workerJson = readFileSync((await json.path())!, 'utf8');
      expect(withoutXY(workerJson)).toEqual(withoutXY(expected));
      expect(await o.page.getAttribute('[data-testid=clusters-view]', 'data-k')).toBe(String(nodeClustering().k));
      // PCA: computed in a worker again (held, then let go); every number Node's, coordinates too.
      await o.page.selectOption('[data-testid=clusters-projection]', { label: 'PCA' });
      await o.page.waitForSelector('[data-testid=clusters-progress]');
      expect(await releaseHeld(o.page)).toBe(1);
      await o.page.waitForSelector(POINTS, { timeout: 120_000 });
      const [pca] = await Promise.all([o.page.waitForEvent('download'), o.page.click('[data-testid=clusters-json]')]);
      expect(readFileSync((await pca.path())!, 'utf8')).toBe(`${JSON.stringify(clusteringJson(nodeClustering('pca')), null, 1)}\n`);
      const w = await workerCounts(o.page);
      expect(w.started).toBe(2);
      expect(w.terminated).toBe(2);
      expect(o.errors).toEqual([]);
      expect(o.consoleErrors).toEqual([]);
    } finally {
      await o.close();
    }
  }, 300_000);

  it('cancel terminates the worker and draws nothing; compute runs it again', async () => {
    const o = await openPage(browser, file, undefined, { init: INSTRUMENT });
    try {
      await o.page.click('[data-testid=tab-clusters]');
      await o.page.waitForSelector('[data-testid=clusters-cancel]');
      await o.page.click('[data-testid=clusters-cancel]');
      await o.page.waitForSelector('[data-testid=clusters-cancelled]');
      expect(await workerCounts(o.page)).toMatchObject({ started: 1, terminated: 1, matched: 1 });
      expect(await o.page.getAttribute('[data-testid=clusters-view]', 'data-computing')).toBe(null);
      // The held request goes to a terminated worker: nothing comes back.
      await releaseHeld(o.page);
      expect(await o.page.locator(POINTS).count()).toBe(0);
      expect(await o.page.isVisible('[data-testid=clusters-cancelled]')).toBe(true);

      await o.page.click('[data-testid=clusters-compute]');
      await o.page.waitForSelector('[data-testid=clusters-progress]');
      expect(await workerCounts(o.page)).toMatchObject({ started: 2, matched: 2 });
      expect(await releaseHeld(o.page)).toBe(1);
      await o.page.waitForSelector(POINTS, { timeout: 120_000 });
      expect(await o.page.getAttribute('[data-testid=clusters-view]', 'data-k')).toBe(String(nodeClustering().k));
      expect(await workerCounts(o.page)).toMatchObject({ started: 2, terminated: 2 });
      expect(o.errors).toEqual([]);
      expect(o.consoleErrors).toEqual([]);
    } finally {
      await o.close();
    }
  }, 300_000);

  it('without workers the page computes the same clusters on its own thread', async () => {
    const o = await openPage(browser, file, undefined, { init: 'delete window.Worker;' });
    try {
      await o.page.click('[data-testid=tab-clusters]');
      await o.page.waitForSelector(POINTS, { timeout: 120_000 });
      const [json] = await Promise.all([o.page.waitForEvent('download'), o.page.click('[data-testid=clusters-json]')]);
      expect(workerJson).not.toBe('');
      expect(readFileSync((await json.path())!, 'utf8')).toBe(workerJson);
      expect(o.errors).toEqual([]);
    } finally {
      await o.close();
    }
  }, 300_000);
});
