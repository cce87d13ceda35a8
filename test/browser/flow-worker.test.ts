/**
 * The flow diagram in real Chromium computes its model and layout (head fusion, the residual
 * graph, pruning, the highlight) in a Web Worker started from the page's own script; the page's
 * thread only draws. The worker's drawing requests are held (the page's Worker.postMessage of a
 * drawing is kept back by an init script until the test lets it go), so behaviour is checked, not
 * time: while held, the view names the stage and the page stays interactive (another tab opens,
 * a control changes); let go, the drawn edges are the top-3 per token of Node's flowModel on the
 * same trace, weight for weight, and the highlight of a clicked token is Node's flowLayout's, with
 * its rollout row equal to a float64 re-computation from the attention; a click (on a label, or
 * on a node mark drawn merged into a path) lays out again on the model the worker kept. Without workers the page draws the same edges and exports the same SVG.
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
import { flowLayout, flowModel } from '../../src/views/layout/flow.js';
import { syntheticTrace } from '../../bench/synthetic-trace.js';
import { buildWebClient, launchChromium, openPage } from './harness.js';
import { heldMessages, instrumentWorkers, releaseHeld, waitForHeld, workerCounts } from './worker-instrument.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-flow-worker-'));
let browser: Browser;
let trace: Trace;
let file: string;
const LAYERS = 12;
const HEADS = 2;
const N = 300;
/** A trace above FLOW_AHEAD_FROM (12 × 12 × 256 × 256 = 9.4 M weights): its diagram is computed ahead. */
let aheadTrace: Trace;
let aheadFile: string;
const AHEAD_N = 256;

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
  trace = syntheticTrace({ layers: LAYERS, heads: HEADS, tokens: N, qk: false, pair: false });
  file = join(tmp, 'flow-300.html');
  writeFileSync(file, (await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), deflate: (d) => deflateRawSync(d, { level: 1 }), maxBytes: 64e6 })).html);
  aheadTrace = syntheticTrace({ layers: LAYERS, heads: 12, tokens: AHEAD_N, qk: false, pair: false });
  aheadFile = join(tmp, 'flow-ahead-256.html');
  writeFileSync(aheadFile, (await renderStandaloneHtml(aheadTrace, { bundle: await loadViewBundle(), deflate: (d) => deflateRawSync(d, { level: 1 }), maxBytes: 64e6 })).html);
}, 600_000);

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

/** Counts Workers started and terminated; holds every flow drawing request (counted as `matched`) until released (those held so far are posted). */
const INSTRUMENT = instrumentWorkers("m.kind === 'flow-layout' && m.op === 'draw'");

interface EdgeRow {
  layer: number;
  column: number;
  query: number;
  key: number;
  weight: number;
}

/** The drawn edges of the page (its edges JSON download). */
async function drawnEdges(page: Page): Promise<{ text: string; rows: EdgeRow[] }> {
  const [dl] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=flow-edges-json]')]);
  const text = readFileSync((await dl.path())!, 'utf8');
  return { text, rows: (JSON.parse(text) as { rows: EdgeRow[] }).rows };
}

/**
 * The edges the diagram must draw, from Node's flowModel (rollout graph, mean fusion): per column
 * and receiving token, the 3 largest positive weights, the lower key first on ties (a sort here).
 */
function expectedEdges(t: Trace = trace): EdgeRow[] {
  const model = flowModel(t, { method: 'rollout' });
  const n = t.tokens.length;
  const out: EdgeRow[] = [];
  model.matrices.forEach((m, l) => {
    for (let q = 0; q < n; q++) {
      const row = Array.from({ length: n }, (_, k) => ({ k, w: m[q * n + k]! }))
        .filter((e) => e.w > 0)
        .sort((a, b) => b.w - a.w || a.k - b.k)
        .slice(0, 3);
      for (const e of row) out.push({ layer: l, column: l + 1, query: q, key: e.k, weight: e.w });
    }
  });
  return out;
}

/** Rollout row `i` after the last layer: e_iᵀ · A'_(L−1) ⋯ A'_0 with A' = ½·mean_h A + ½·I, rows normalised (float64, from the attention). */
function rolloutRow(i: number): number[] {
  const s = trace.attention.self!;
  let v: number[] = Array.from({ length: N }, (_, k) => (k === i ? 1 : 0));
  for (let l = s.layers.length - 1; l >= 0; l--) {
    const a = s.layers[l]!;
    const next = new Array<number>(N).fill(0);
    for (let q = 0; q < N; q++) {
      if (v[q] === 0) continue;
      const row: number[] = [];
      for (let k = 0; k < N; k++) {
        let f = 0;
        for (let h = 0; h < HEADS; h++) f += a[(h * N + q) * N + k]!;
        row.push(0.5 * (f / HEADS) + (q === k ? 0.5 : 0));
      }
      const sum = row.reduce((x, y) => x + y, 0);
      row.forEach((w, k) => (next[k]! += (v[q]! * w) / sum));
    }
    v = next;
  }
  return v;
}

const SVG = '[data-testid=flow-svg]';
const READOUT = '[data-testid=flow-readout]';
let workerEdges = '';
let workerSvg = '';

/** Waits until the view shows a current drawing with every item appended. */
async function drawn(page: Page): Promise<void> {
  await page.waitForFunction(() => {
    const v = document.querySelector('[data-testid=flow-view]');
    return v !== null && !v.hasAttribute('data-computing') && !v.hasAttribute('data-drawing') && document.querySelector('[data-testid=flow-svg]') !== null;
  }, null, { timeout: 300_000 });
}

describe('flow diagram in a Web Worker', () => {
  it('held: the stage shows and the page stays interactive; let go: the edges are Node’s, a click reuses the model', async () => {
    const o = await openPage(browser, file, undefined, { init: INSTRUMENT });
    const { page } = o;
    try {
      await page.click('[data-testid=tab-flow]');
      await page.waitForFunction(() => document.querySelector('[data-testid=flow-view]')?.hasAttribute('data-computing'));
      // The layers go over one per task, then the drawing request, which the init script holds.
      await waitForHeld(page, 1, 120_000);
      expect(await page.textContent('[data-testid=flow-stage]')).toMatch(/in the background|waits for the background worker/);
      expect(await page.locator(SVG).count()).toBe(0);
      // The page answers while the drawing is held: another tab opens and comes back still computing; a control changes.
      await page.click('[data-testid=tab-heatmap]');
      await page.waitForSelector('[data-testid=flow-view]', { state: 'hidden' });
      await page.click('[data-testid=tab-flow]');
      expect(await page.getAttribute('[data-testid=flow-view]', 'data-computing')).not.toBe(null);
      await page.selectOption('[data-testid=flow-keep]', { label: '1' });
      await page.selectOption('[data-testid=flow-keep]', { label: '3' });
      expect(await page.textContent('[data-testid=flow-stage]')).toContain('waits for the background worker');
      // One request of the view in the worker at a time: the two control changes wait as one.
      expect(await workerCounts(page)).toMatchObject({ started: 1, matched: 1 });
      expect(await releaseHeld(page)).toBe(1);
      await waitForHeld(page, 1, 120_000);
      expect(await workerCounts(page)).toMatchObject({ matched: 2 });
      expect(await releaseHeld(page)).toBe(1);
      await drawn(page);
      expect(await page.getAttribute(READOUT, 'data-model')).toBe('reused');

      // The drawn edges: Node's flowModel, top 3 per token, weight for weight.
      const expected = expectedEdges();
      const got = await drawnEdges(page);
      workerEdges = got.text;
      const byKey = (rows: EdgeRow[]) => [...rows].sort((a, b) => a.column - b.column || a.query - b.query || a.key - b.key);
      expect(byKey(got.rows)).toEqual(byKey(expected));
      expect(Number(await page.getAttribute(READOUT, 'data-edges'))).toBe(expected.length);
      // …and every one of them is on screen: merged paths of faded edges plus single lines.
      const onScreen = await page.evaluate(() => {
        const paths = [...document.querySelectorAll('[data-testid=flow-svg] path.flow-edges')].reduce((a, p) => a + Number(p.getAttribute('data-edges')), 0);
        return paths + document.querySelectorAll('[data-testid=flow-svg] line.flow-edge').length;
      });
      expect(onScreen).toBe(expected.length);

      // A click on an output token: laid out again on the model the worker kept.
      const target = N - 5;
      await page.click(`${SVG} text.token.output[data-token="${target}"]`);
      await waitForHeld(page, 1);
      expect(await releaseHeld(page)).toBe(1);
      await page.waitForSelector(`${SVG} line.highlighted`, { state: 'attached' });
      await drawn(page);
      expect(await page.getAttribute(READOUT, 'data-model')).toBe('reused');
      expect(await page.getAttribute(READOUT, 'data-token')).toBe(String(target));
      const edges = await page.$$eval(`${SVG} line.highlighted`, (els) => els.map((e) => ({ column: Number(e.getAttribute('data-column')), q: Number(e.getAttribute('data-q')), k: Number(e.getAttribute('data-k')), flow: Number(e.getAttribute('data-flow')) })));
      const node = flowLayout(trace, { method: 'rollout', query: target, column: LAYERS }).highlight!;
      expect(edges).toEqual(node.edges.slice().sort((a, b) => a.weight - b.weight).map((e) => ({ column: e.column, q: e.q, k: e.k, flow: Number(e.weight.toPrecision(6)) })));
      const values = await page.$$eval(`${SVG} text.input-value`, (els) => els.map((e) => Number(e.getAttribute('data-value'))));
      const row = rolloutRow(target);
      expect(values).toHaveLength(N);
      values.forEach((v, k) => expect(v).toBeCloseTo(row[k]!, 5));

      // A click on a node mark of a middle column (drawn merged into paths: found from the grid).
      const column = 6;
      const token = 20;
      const x = Number(await page.getAttribute(`${SVG} text.column-header[data-column="${column}"]`, 'x'));
      const label = page.locator(`${SVG} text.token.input[data-token="${token}"]`);
      const y = Number(await label.getAttribute('y')) - 0.36 * Number(await label.getAttribute('font-size'));
      expect(await page.locator(`${SVG} path.flow-nodes`).count()).toBeGreaterThan(0);
      await page.locator(SVG).click({ position: { x, y } });
      await waitForHeld(page, 1);
      expect(await releaseHeld(page)).toBe(1);
      await page.waitForFunction(([c, t]) => {
        const r = document.querySelector('[data-testid=flow-readout]');
        return r?.getAttribute('data-column') === c && r?.getAttribute('data-token') === t;
      }, [String(column), String(token)]);
      await drawn(page);
      const inner = await page.$$eval(`${SVG} line.highlighted`, (els) => els.map((e) => ({ column: Number(e.getAttribute('data-column')), q: Number(e.getAttribute('data-q')), k: Number(e.getAttribute('data-k')), flow: Number(e.getAttribute('data-flow')) })));
      const nodeInner = flowLayout(trace, { method: 'rollout', query: token, column }).highlight!;
      expect(inner).toEqual(nodeInner.edges.slice().sort((a, b) => a.weight - b.weight).map((e) => ({ column: e.column, q: e.q, k: e.k, flow: Number(e.weight.toPrecision(6)) })));
      expect(await page.getAttribute(READOUT, 'data-model')).toBe('reused');
      // Back to the last column's token for the export.
      await page.click(`${SVG} text.token.output[data-token="${target}"]`);
      await waitForHeld(page, 1);
      expect(await releaseHeld(page)).toBe(1);
      await page.waitForFunction((t) => document.querySelector('[data-testid=flow-readout]')?.getAttribute('data-token') === t, String(target));
      await drawn(page);

      // The SVG export is made in the worker too (not held: only drawings are).
      const [svg] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=flow-export-svg]')]);
      workerSvg = readFileSync((await svg.path())!, 'utf8');
      expect(workerSvg).toContain('attnscope-flow-view');
      expect(await heldMessages(page)).toBe(0);
      const w = await workerCounts(page);
      expect(w.started).toBe(1);
      expect(w.terminated).toBe(0);
      await page.locator('[data-testid=flow-view]').screenshot({ path: join(process.env.ATTNSCOPE_SCREENSHOT_DIR ?? tmp, 'flow-worker-300.png') });
      expect(o.errors).toEqual([]);
      expect(o.consoleErrors).toEqual([]);
    } finally {
      await o.close();
    }
  }, 600_000);

  it('a long trace’s diagram is computed ahead while the page is idle: opening the tab only draws it', async () => {
    const o = await openPage(browser, aheadFile, undefined, { init: INSTRUMENT });
    const { page } = o;
    try {
      // The drawing request goes out before any tab is opened (held here, then let go).
      await waitForHeld(page, 1, 120_000);
      expect(await page.isVisible('[data-testid=flow-view]')).toBe(false);
      expect(await releaseHeld(page, true)).toBe(1);
      await page.waitForFunction(() => document.querySelector('[data-testid=flow-view]')?.getAttribute('data-ahead') === 'done', null, { timeout: 300_000 });
      await page.click('[data-testid=tab-flow]');
      await drawn(page);
      // On screen: the drawing computed ahead (no second drawing request), Node's edges.
      expect(await workerCounts(page)).toMatchObject({ matched: 1 });
      expect(await page.getAttribute(READOUT, 'data-model')).toBe('built');
      const byKey = (rows: EdgeRow[]) => [...rows].sort((a, b) => a.column - b.column || a.query - b.query || a.key - b.key);
      expect(byKey((await drawnEdges(page)).rows)).toEqual(byKey(expectedEdges(aheadTrace)));
      // A click is laid out again on the edge graph the worker kept.
      await page.click(`${SVG} text.token.output[data-token="${AHEAD_N - 3}"]`);
      await page.waitForSelector(`${SVG} line.highlighted`, { state: 'attached' });
      await drawn(page);
      expect(await workerCounts(page)).toMatchObject({ matched: 2 });
      expect(await page.getAttribute(READOUT, 'data-model')).toBe('reused');
      expect(o.errors).toEqual([]);
      expect(o.consoleErrors).toEqual([]);
    } finally {
      await o.close();
    }
  }, 600_000);

  it('without workers the page draws the same edges and exports the same SVG on its own thread', async () => {
    const o = await openPage(browser, file, undefined, { init: 'delete window.Worker;' });
    const { page } = o;
    try {
      await page.click('[data-testid=tab-flow]');
      await drawn(page);
      expect(workerEdges).not.toBe('');
      expect((await drawnEdges(page)).text).toBe(workerEdges);
      await page.click(`${SVG} text.token.output[data-token="${N - 5}"]`);
      await page.waitForSelector(`${SVG} line.highlighted`, { state: 'attached' });
      await drawn(page);
      const [svg] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=flow-export-svg]')]);
      expect(readFileSync((await svg.path())!, 'utf8')).toBe(workerSvg);
      expect(o.errors).toEqual([]);
    } finally {
      await o.close();
    }
  }, 600_000);
});
