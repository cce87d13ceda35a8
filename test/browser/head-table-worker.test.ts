/**
 * The head-type view of a long trace in real Chromium: from PAGE_TABLE_WORKER_FROM attention weights
 * the page computes the head table in Web Workers started from its own script (the standalone
 * page's CSP allows worker-src blob:), one per range of layers, and the grid fills in as the layers
 * arrive. Behaviour, not time: the view shows its progress and a partial grid (some layers, not yet
 * all) before the whole table; the table it then downloads is the one Node computes on the same
 * kernel, digit for digit; toggling "exclude first token" while it computes cancels that job and
 * gives the other table; and no worker is left running afterwards.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { headTable, headTableCsv } from '../../src/analysis/head-types.js';
import type { Trace } from '../../src/core/trace.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../../src/views/html/standalone.js';
import { syntheticTrace } from '../../bench/synthetic-trace.js';
import { buildWebClient, launchChromium, openPage } from './harness.js';
import { instrumentWorkers, workerCounts } from './worker-instrument.js';

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
    const o = await openPage(browser, file, undefined, { init: INSTRUMENT });
    try {
      await o.page.click('[data-testid=tab-types]');
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
      const w = await workerCounts(o.page);
      expect(w.started).toBeGreaterThanOrEqual(2);
      expect(w.terminated).toBe(w.started);
      expect(o.errors).toEqual([]);
      expect(o.consoleErrors).toEqual([]);
    } finally {
      await o.close();
    }
  }, 300_000);

  it('a toggle while it computes cancels that job and computes the other table', async () => {
    const o = await openPage(browser, file, undefined, { init: INSTRUMENT });
    try {
      await o.page.click('[data-testid=tab-types]');
      // Toggled at once (the first job has just started): its workers are terminated.
      await o.page.click('[data-testid=types-exclude-first]');
      await whole(o.page);
      expect(await o.page.isChecked('[data-testid=types-exclude-first]')).toBe(true);
      expect(await downloadCsv(o.page)).toBe(headTableCsv(headTable(trace, 'self', { kernel: 'wasm', excludeFirstToken: true })));
      const w = await workerCounts(o.page);
      expect(w.started).toBeGreaterThanOrEqual(4);
      expect(w.terminated).toBe(w.started);
      expect(o.errors).toEqual([]);
    } finally {
      await o.close();
    }
  }, 300_000);
});
