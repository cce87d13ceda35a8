/**
 * The flow diagram and influence tree in real Chromium, on a standalone page of the default model
 * (stories260k): a click on a token highlights what flows into it (the highlighted edges end in
 * it, its input column holds its rollout, recomputed here in float64 from the trace), a second
 * click clears it; attention flow gives values per input token; a click on a tree node makes it
 * the root; both views export SVG and PNG. Attention flow runs in a Web Worker started from the
 * page's own script (the page's CSP allows worker-src blob: only): on a bert-base-sized synthetic
 * trace of 256 tokens the page keeps answering (a control changes the drawing, progress keeps
 * arriving) while it computes, cancel stops it, and above the page's limit it says so at once;
 * `attnscope serve`'s app starts the same worker from its script URL (CSP script-src 'self').
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../../src/core/trace.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../../src/views/html/standalone.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURES } from '../helpers/reference.js';
import { syntheticTrace } from '../../bench/synthetic-trace.js';
import { buildWebClient, expectViewExports, launchChromium, openPage, traceWith, withPage, writeStandalonePage } from './harness.js';
import { instrumentWorkers, workerCounts } from './worker-instrument.js';

const SENTENCE = 'The little cat sat on the warm mat.';
const tmp = mkdtempSync(join(tmpdir(), 'attnscope-flow-'));
let browser: Browser;
let trace: Trace;
let file: string;
/** 12 layers × 256 tokens (13 × 256 nodes: the page's limit) and 12 layers × 300 tokens (above it). */
let bigFile: string;
let tooBigFile: string;

/** Rollout row `i` after the last layer: e_iᵀ · A'_(L−1) ⋯ A'_0 with A' = ½·mean_h A + ½·I, rows normalised (float64). */
function rolloutRow(i: number): number[] {
  const s = trace.attention.self!;
  const [H, n] = s.dims;
  let v: number[] = Array.from({ length: n }, (_, k) => (k === i ? 1 : 0));
  for (let l = s.layers.length - 1; l >= 0; l--) {
    const a = s.layers[l]!;
    const next = new Array<number>(n).fill(0);
    for (let q = 0; q < n; q++) {
      if (v[q] === 0) continue;
      const row: number[] = [];
      for (let k = 0; k < n; k++) {
        let f = 0;
        for (let h = 0; h < H; h++) f += a[(h * n + q) * n + k]!;
        row.push(0.5 * (f / H) + (q === k ? 0.5 : 0));
      }
      const sum = row.reduce((x, y) => x + y, 0);
      row.forEach((w, k) => (next[k]! += (v[q]! * w) / sum));
    }
    v = next;
  }
  return v;
}

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
  trace = await traceWith(undefined, (model) => model.trace(SENTENCE));
  file = await writeStandalonePage(join(tmp, 'flow.html'), trace, { text: SENTENCE });
  const deflate = (d: Uint8Array) => deflateRawSync(d, { level: 1 });
  const big = syntheticTrace({ layers: 12, heads: 2, tokens: 256, qk: false, pair: false });
  bigFile = join(tmp, 'flow-256.html');
  writeFileSync(bigFile, (await renderStandaloneHtml(big, { bundle: await loadViewBundle(), deflate, maxBytes: 64e6 })).html);
  const tooBig = syntheticTrace({ layers: 12, heads: 1, tokens: 300, qk: false, pair: false });
  tooBigFile = join(tmp, 'flow-300.html');
  writeFileSync(tooBigFile, (await renderStandaloneHtml(tooBig, { bundle: await loadViewBundle(), deflate, maxBytes: 64e6 })).html);
  // (Type-checks and builds the client, traces, writes three pages: minutes on a shared machine.)
}, 600_000);

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

/** Waits until the flow view shows a current drawing (computed: not dimmed) with every item appended (drawn in slices). */
function drawn(page: Page): Promise<unknown> {
  return page.waitForFunction(() => {
    const v = document.querySelector('[data-testid=flow-view]');
    return v !== null && !v.hasAttribute('data-computing') && !v.hasAttribute('data-drawing');
  }, null, { timeout: 120_000 });
}

describe('flow diagram', () => {
  it('a click on a token highlights what flows into it; a second click clears it', async () => {
    await withPage(browser, file, async (page, p) => {
      await page.click('[data-testid=tab-flow]');
      const svg = '[data-testid=flow-svg]';
      await page.waitForSelector(svg);
      const L = trace.model.numLayers;
      const n = trace.tokens.length;
      expect(await page.locator(`${svg} line.highlighted`).count()).toBe(0);
      expect(await page.getAttribute('[data-testid=flow-readout]', 'data-highlighted')).toBe('0');
      const target = n - 2;
      await page.click(`${svg} text.token.output[data-token="${target}"]`);
      await page.waitForSelector(`${svg} line.highlighted`);
      const readout = '[data-testid=flow-readout]';
      expect(await page.getAttribute(readout, 'data-token')).toBe(String(target));
      expect(await page.getAttribute(readout, 'data-column')).toBe(String(L));
      const edges = await page.$$eval(`${svg} line.highlighted`, (els) => els.map((e) => ({ column: Number(e.getAttribute('data-column')), q: Number(e.getAttribute('data-q')), k: Number(e.getAttribute('data-k')) })));
      expect(edges.length).toBe(Number(await page.getAttribute(readout, 'data-highlighted')));
      const top = edges.filter((e) => e.column === L);
      expect(top.length).toBeGreaterThan(0);
      expect(top.every((e) => e.q === target)).toBe(true);
      // Causal model: nothing flows from a later token.
      expect(edges.every((e) => e.k <= target)).toBe(true);
      // The input column: the token's rollout.
      const values = await page.$$eval(`${svg} text.input-value`, (els) => els.map((e) => Number(e.getAttribute('data-value'))));
      const expected = rolloutRow(target);
      expect(values).toHaveLength(n);
      values.forEach((v, k) => expect(v).toBeCloseTo(expected[k]!, 5));
      // Click again: cleared.
      await page.click(`${svg} text.token.output[data-token="${target}"]`);
      await page.waitForFunction(() => document.querySelectorAll('[data-testid=flow-svg] line.highlighted').length === 0);
      expect(await page.getAttribute(readout, 'data-highlighted')).toBe('0');
      // Attention flow: a click on an input-side node of another column works too; values per input token.
      await page.selectOption('[data-testid=flow-method]', { label: 'attention flow' });
      await page.click(`${svg} rect.flow-node[data-column="${L}"][data-token="3"]`);
      // Computed in the worker; the input column then holds its values.
      await page.waitForSelector('[data-testid=flow-status][data-state=done]');
      await page.waitForSelector(`${svg} text.input-value`);
      const flow = await page.$$eval(`${svg} text.input-value`, (els) => els.map((e) => Number(e.getAttribute('data-value'))));
      expect(flow.slice(4).every((v) => v === 0)).toBe(true);
      expect(flow.slice(0, 4).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
      // The export takes the worker's values (no second computation on the page's thread).
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=flow-export-svg]')]);
      const exported = readFileSync((await download.path())!, 'utf8');
      expect(exported).toContain('attention flow');
      const shown = await page.$$eval(`${svg} text.input-value`, (els) => els.map((e) => e.textContent));
      for (const t of shown.slice(0, 4)) expect(exported).toContain(`>${t!}<`);
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
    });
  });

  it('attention flow runs in a worker: the page stays responsive, progress arrives, cancel stops it', async () => {
    // Attention flow's one-shot result (the flow views' layout worker tags its replies with an id) is held back: however fast this machine computes the 256 max-flows, the
    // job is still running when the test cancels it.
    const opened = await openPage(browser, bigFile, undefined, { init: instrumentWorkers(undefined, "m.type === 'done' && m.id === undefined && m.result instanceof Float32Array") });
    const { page } = opened;
    const p = opened;
    try {
      await page.click('[data-testid=tab-flow]');
      const svg = '[data-testid=flow-svg]';
      const status = '[data-testid=flow-status]';
      await page.waitForSelector(svg);
      await page.selectOption('[data-testid=flow-method]', { label: 'attention flow' });
      await page.click(`${svg} text.token.output[data-token="255"]`);
      await page.waitForSelector(`${status}[data-state=running]`);
      // Progress comes from the worker while the page's thread is free.
      await page.waitForFunction(() => Number(document.querySelector<HTMLElement>('[data-testid=flow-status]')?.dataset.done) > 0);
      const first = Number(await page.getAttribute(status, 'data-done'));
      expect(Number(await page.getAttribute(status, 'data-total'))).toBe(256);
      // A control still redraws the diagram while the flow computes: fewer edges with top-1.
      const edgesBefore = Number(await page.getAttribute('[data-testid=flow-readout]', 'data-edges'));
      await page.selectOption('[data-testid=flow-keep]', { label: '1' });
      await page.waitForFunction((before) => Number(document.querySelector('[data-testid=flow-readout]')?.getAttribute('data-edges')) < before, edgesBefore);
      expect(await page.getAttribute(status, 'data-state')).toBe('running');
      await page.waitForFunction((f) => Number(document.querySelector<HTMLElement>('[data-testid=flow-status]')?.dataset.done) > f, first);
      expect(await page.locator('[data-testid=flow-progress]').count()).toBe(1);
      // Cancel: the worker stops, the input column keeps rollout's values, a button restarts it.
      await page.click('[data-testid=flow-cancel]');
      await page.waitForSelector(`${status}[data-state=cancelled]`);
      const stopped = await page.getAttribute(status, 'data-done');
      await page.waitForTimeout(600);
      expect(await page.getAttribute(status, 'data-done')).toBe(stopped);
      expect(await page.textContent(status)).toContain('attention flow cancelled');
      expect(await page.locator('[data-testid=flow-restart]').count()).toBe(1);
      await drawn(page);
      expect(await page.locator(`${svg} text.input-value`).count()).toBe(256);
      // Exporting now draws the rollout diagram (and says so) instead of computing flow on the page's thread.
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=flow-export-svg]')]);
      const exported = readFileSync((await download.path())!, 'utf8');
      expect(exported).toContain('attention rollout');
      expect(exported).not.toContain('attention flow');
      await page.click('[data-testid=flow-restart]');
      await page.waitForSelector(`${status}[data-state=running]`);
      await page.click('[data-testid=flow-cancel]');
      await page.waitForSelector(`${status}[data-state=cancelled]`);
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
      expect(p.network()).toEqual([]);
    } finally {
      await opened.close();
    }
  });

  it('above the size limit the page says so at once and keeps rollout', async () => {
    await withPage(browser, tooBigFile, async (page, p) => {
      await page.click('[data-testid=tab-flow]');
      const svg = '[data-testid=flow-svg]';
      await page.waitForSelector(svg);
      await page.selectOption('[data-testid=flow-method]', { label: 'attention flow' });
      await page.click(`${svg} text.token.output[data-token="299"]`);
      const status = '[data-testid=flow-status]';
      await page.waitForSelector(`${status}[data-state=too-large]`);
      expect(await page.textContent(status)).toContain('up to 3328 graph nodes');
      expect(await page.textContent(status)).toContain('this one has 3900 (13 × 300)');
      await drawn(page);
      expect(await page.locator(`${svg} text.input-value`).count()).toBe(300);
      expect(p.errors).toEqual([]);
    });
  });

  it('influence tree: a click on a node makes it the root', async () => {
    await withPage(browser, file, async (page, p) => {
      await page.click('[data-testid=tab-influence]');
      const readout = '[data-testid=influence-readout]';
      await page.waitForSelector('[data-testid=influence-svg]');
      expect(await page.getAttribute(readout, 'data-token')).toBe(String(trace.tokens.length - 1));
      const child = page.locator('[data-testid=influence-svg] rect.tree-node:not(.root)').first();
      const [column, token] = [await child.getAttribute('data-column'), await child.getAttribute('data-token')];
      await child.click();
      await page.waitForFunction(([c, t]) => {
        const r = document.querySelector('[data-testid=influence-readout]');
        return r?.getAttribute('data-column') === c && r?.getAttribute('data-token') === t;
      }, [column, token]);
      expect(Number(await page.getAttribute(readout, 'data-nodes'))).toBeGreaterThan(1);
      expect(p.errors).toEqual([]);
    });
  });

  it('exports both views as SVG and PNG', async () => {
    await withPage(browser, file, async (page, p) => {
      for (const view of ['flow', 'influence']) {
        await page.click(`[data-testid=tab-${view}]`);
        expect(await expectViewExports(page, view)).toContain(view === 'flow' ? 'attnscope-flow-view' : 'attnscope-influence-tree');
      }
      expect(p.network()).toEqual([]);
      expect(p.errors).toEqual([]);
    });
  });
});

describe('attention flow in the app of attnscope serve', () => {
  let server: RunningServer;
  let scratch = '';
  beforeAll(async () => {
    scratch = mkdtempSync(join(tmpdir(), 'attnscope-flow-serve-'));
    server = await startServer({ port: 0, folders: [FIXTURES], hfCache: false, graphCache: false, env: { HF_HUB_OFFLINE: '1', HF_HOME: join(scratch, 'hf-home') } });
  }, 300_000);
  afterAll(async () => {
    await server?.close();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  it('runs in a worker started from /app.js and fills the input column', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const errors: string[] = [];
    const consoleErrors: string[] = [];
    try {
      const page = await context.newPage();
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('console', (m) => {
        if (m.type() === 'error') consoleErrors.push(m.text());
      });
      await page.goto(server.url);
      await page.waitForFunction(() => document.body.dataset.trace === 'done', null, { timeout: 60_000 });
      await page.click('[data-testid=tab-flow]');
      const svg = '[data-testid=flow-svg]';
      await page.waitForSelector(svg);
      await page.selectOption('[data-testid=flow-method]', { label: 'attention flow' });
      // The diagram's nodes come from the flow views' layout worker: wait for them.
      await page.waitForSelector(`${svg} rect.flow-node`);
      const columns = await page.$$eval(`${svg} rect.flow-node`, (els) => Math.max(...els.map((e) => Number(e.getAttribute('data-column')))));
      await page.click(`${svg} rect.flow-node[data-column="${columns}"][data-token="3"]`);
      await page.waitForSelector('[data-testid=flow-status][data-state=done]', { timeout: 60_000 });
      const flow = await page.$$eval(`${svg} text.input-value`, (els) => els.map((e) => Number(e.getAttribute('data-value'))));
      // Causal model: nothing from later tokens; the row sums to 1.
      expect(flow.slice(4).every((v) => v === 0)).toBe(true);
      expect(flow.slice(0, 4).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
      expect(errors).toEqual([]);
      expect(consoleErrors).toEqual([]);
    } finally {
      await context.close();
    }
  });
});
