/**
 * The head-type view of a long trace in real Chromium: from PAGE_TABLE_WORKER_FROM attention weights
 * the page computes the head table in Web Workers started from its own script (the standalone
 * page's CSP allows worker-src blob:), one per range of layers, and the grid fills in as the layers
 * arrive. Behaviour, not time: the view shows its progress and a partial grid (some layers, not yet
 * all) before the whole table; the table it then downloads is the one Node computes on the same
 * kernel, digit for digit; toggling "exclude first token" while it computes cancels that job and
 * gives the other table; and no worker is left running afterwards. The page computes both tables
 * (with and without the first token) ahead while it is idle: opened later, the view and its toggle
 * find them done and start no job. The first two tests hold the workers' requests (the page's
 * messages to them) so that the job computing ahead is still pending when the view opens, however
 * fast the machine.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { headTable, headTableCsv } from '../../src/analysis/head-types.js';
import { headTableParts } from '../../src/analysis/head-table-parts.js';
import type { Trace } from '../../src/core/trace.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../../src/views/html/standalone.js';
import { syntheticTrace } from '../../bench/synthetic-trace.js';
import { buildWebClient, launchChromium, openPage } from './harness.js';
import { instrumentWorkers, releaseHeld, waitForHeld, workerCounts } from './worker-instrument.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-table-worker-'));
let browser: Browser;
let trace: Trace;
let file: string;
const LAYERS = 12;
const HEADS = 6;

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
  // 12 × 6 × 256 × 256 = 4.7 M weights: above the page's worker threshold (4 M).
  trace = syntheticTrace({ layers: LAYERS, heads: HEADS, tokens: 256, qk: false });
  file = join(tmp, 'types-256.html');
  writeFileSync(file, (await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), deflate: (d) => deflateRawSync(d, { level: 1 }), maxBytes: 64e6 })).html);
}, 300_000);

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

/**
 * Counts Workers the page starts and terminates, and records every grid the view draws (its cell
 * count, whether the view said it was computing, the layers-done count) — installed before the
 * page's own script.
 */
const INSTRUMENT = `${instrumentWorkers()}
  window.__grids = [];
  new MutationObserver(() => {
    const view = document.querySelector('[data-testid=types-view]');
    const svg = document.querySelector('[data-testid=types-svg]');
    if (!view || !svg || svg.__seen) return;
    svg.__seen = true;
    const readout = document.querySelector('[data-testid=types-readout]');
    window.__grids.push({ cells: svg.querySelectorAll('rect.type-cell').length, computing: view.getAttribute('data-computing') === 'true', done: Number(readout?.getAttribute('data-layers-done') ?? -1) });
  }).observe(document, { childList: true, subtree: true, attributes: true });
`;

interface Grid {
  cells: number;
  computing: boolean;
  done: number;
}

const grids = (page: Page) => page.evaluate(() => (window as unknown as { __grids: Grid[] }).__grids);

/** INSTRUMENT, also holding every request to the head table's workers until released. */
const HOLDING = INSTRUMENT.replace(instrumentWorkers(), instrumentWorkers("m.kind === 'head-table' || m.kind === 'head-table-layer'"));

/**
 * The page's workers per table (web/metrics-worker.ts: its cores, 2 to 4) and the requests one
 * table's job posts to them (a part per worker, then each of the part's layers).
 */
async function jobShape(page: Page): Promise<{ workers: number; requests: number }> {
  const cores = await page.evaluate(() => navigator.hardwareConcurrency || 2);
  const workers = Math.max(2, Math.min(4, cores));
  const parts = headTableParts(trace, 'self', {}, workers, false);
  return { workers: parts.length, requests: parts.reduce((n, p) => n + 1 + p.layers.length, 0) };
}

/** Waits until the view has computed `n` tables (its data-tables count). */
const tablesDone = (page: Page, n: number) =>
  page.waitForFunction((k) => document.querySelector('[data-testid=types-view]')?.getAttribute('data-tables') === String(k), n, { timeout: 300_000 });

async function downloadCsv(page: Page): Promise<string> {
  const [csv] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=types-csv]')]);
  return readFileSync((await csv.path())!, 'utf8');
}

/** Waits until the view holds the whole table (no job running, every cell drawn). */
async function whole(page: Page): Promise<void> {
  await page.waitForFunction((n) => {
    const view = document.querySelector('[data-testid=types-view]');
    return view !== null && view.getAttribute('data-computing') === null && document.querySelectorAll('[data-testid=types-svg] rect.type-cell').length === n;
  }, LAYERS * HEADS, { timeout: 300_000 });
}

describe('head table in Web Workers (long traces)', () => {
  it('shows progress and a partial grid, then the whole table: Node’s, digit for digit', async () => {
    const o = await openPage(browser, file, undefined, { init: HOLDING });
    try {
      // The table computed ahead has started (its requests held).
      const job = await jobShape(o.page);
      await waitForHeld(o.page, job.requests, 60_000);
      await o.page.click('[data-testid=tab-types]');
      await o.page.waitForSelector('[data-testid=types-progress]');
      await releaseHeld(o.page, true);
      await whole(o.page);
      const seen = await grids(o.page);
      // Drawn while computing: some layers, not all (layer by layer), never shrinking; then whole.
      const partial = seen.filter((g) => g.computing);
      expect(partial.length).toBeGreaterThan(0);
      expect(partial.some((g) => g.cells > 0 && g.cells < LAYERS * HEADS)).toBe(true);
      for (const g of partial) expect(g.cells % HEADS).toBe(0);
      for (let i = 1; i < seen.length; i++) expect(seen[i]!.cells).toBeGreaterThanOrEqual(seen[i - 1]!.cells);
      expect(seen.at(-1)).toMatchObject({ cells: LAYERS * HEADS, computing: false });
      expect(await downloadCsv(o.page)).toBe(headTableCsv(headTable(trace, 'self', { kernel: 'wasm' })));
      // Then the table without the first token, computed ahead too.
      await tablesDone(o.page, 2);
      const w = await workerCounts(o.page);
      expect(w.started).toBe(2 * job.workers);
      expect(w.terminated).toBe(w.started);
      expect(o.errors).toEqual([]);
      expect(o.consoleErrors).toEqual([]);
    } finally {
      await o.close();
    }
  }, 300_000);

  it('a toggle while it computes cancels that job and computes the other table', async () => {
    const o = await openPage(browser, file, undefined, { init: HOLDING });
    try {
      const job = await jobShape(o.page);
      await waitForHeld(o.page, job.requests, 60_000);
      await o.page.click('[data-testid=tab-types]');
      // Toggled while the first job is pending: its workers are terminated.
      await o.page.click('[data-testid=types-exclude-first]');
      expect(await workerCounts(o.page)).toMatchObject({ started: 2 * job.workers, terminated: job.workers });
      await releaseHeld(o.page, true);
      await whole(o.page);
      expect(await o.page.isChecked('[data-testid=types-exclude-first]')).toBe(true);
      expect(await downloadCsv(o.page)).toBe(headTableCsv(headTable(trace, 'self', { kernel: 'wasm', excludeFirstToken: true })));
      // The cancelled table is computed ahead again once this one is done.
      await tablesDone(o.page, 2);
      const w = await workerCounts(o.page);
      expect(w.started).toBe(3 * job.workers);
      expect(w.terminated).toBe(w.started);
      expect(o.errors).toEqual([]);
    } finally {
      await o.close();
    }
  }, 300_000);

  it('computes both tables ahead while the page is idle: the view and its toggle then start no job', async () => {
    const o = await openPage(browser, file, undefined, { init: INSTRUMENT });
    try {
      // The view was never opened.
      await tablesDone(o.page, 2);
      expect(await o.page.isVisible('[data-testid=types-view]')).toBe(false);
      const { workers } = await jobShape(o.page);
      expect(await workerCounts(o.page)).toEqual({ started: 2 * workers, terminated: 2 * workers, matched: 0 });
      // From here on, any job the view starts sets data-computing: record it.
      await o.page.evaluate(() => {
        const view = document.querySelector('[data-testid=types-view]')!;
        const w = window as unknown as { __computed: boolean };
        w.__computed = false;
        new MutationObserver(() => {
          if (view.hasAttribute('data-computing')) w.__computed = true;
        }).observe(view, { attributes: true });
      });
      await o.page.click('[data-testid=tab-types]');
      await whole(o.page);
      expect(await downloadCsv(o.page)).toBe(headTableCsv(headTable(trace, 'self', { kernel: 'wasm' })));
      await o.page.click('[data-testid=types-exclude-first]');
      await whole(o.page);
      expect(await downloadCsv(o.page)).toBe(headTableCsv(headTable(trace, 'self', { kernel: 'wasm', excludeFirstToken: true })));
      expect(await o.page.evaluate(() => (window as unknown as { __computed: boolean }).__computed)).toBe(false);
      expect(await workerCounts(o.page)).toEqual({ started: 2 * workers, terminated: 2 * workers, matched: 0 });
      expect(o.errors).toEqual([]);
      expect(o.consoleErrors).toEqual([]);
    } finally {
      await o.close();
    }
  }, 300_000);
});
