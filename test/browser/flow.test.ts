/**
 * The flow diagram and influence tree in real Chromium, on a standalone page of the default model
 * (stories260k): a click on a token highlights what flows into it (the highlighted edges end in
 * it, its input column holds its rollout, recomputed here in float64 from the trace), a second
 * click clears it; attention flow gives values per input token; a click on a tree node makes it
 * the root; both views export SVG and PNG.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../../src/core/trace.js';
import { loadModel } from '../../src/engine/load.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../../src/views/html/standalone.js';
import { buildWebClient, launchChromium, openPage } from './harness.js';

const SENTENCE = 'The little cat sat on the warm mat.';
const tmp = mkdtempSync(join(tmpdir(), 'attnscope-flow-'));
let browser: Browser;
let trace: Trace;
let file: string;

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
  const model = await loadModel(undefined);
  try {
    trace = await model.trace(SENTENCE);
  } finally {
    await model.dispose();
  }
  const result = await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), text: SENTENCE, deflate: (d) => deflateRawSync(d, { level: 6 }) });
  file = join(tmp, 'flow.html');
  writeFileSync(file, result.html);
});

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('flow diagram', () => {
  it('a click on a token highlights what flows into it; a second click clears it', async () => {
    const p = await openPage(browser, file);
    const { page } = p;
    try {
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
      await page.waitForSelector(`${svg} text.input-value`);
      const flow = await page.$$eval(`${svg} text.input-value`, (els) => els.map((e) => Number(e.getAttribute('data-value'))));
      expect(flow.slice(4).every((v) => v === 0)).toBe(true);
      expect(flow.slice(0, 4).reduce((a, b) => a + b, 0)).toBeCloseTo(1, 4);
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('influence tree: a click on a node makes it the root', async () => {
    const p = await openPage(browser, file);
    const { page } = p;
    try {
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
    } finally {
      await p.close();
    }
  });

  it('exports both views as SVG and PNG', async () => {
    const p = await openPage(browser, file);
    const { page } = p;
    try {
      for (const view of ['flow', 'influence']) {
        await page.click(`[data-testid=tab-${view}]`);
        const [svg] = await Promise.all([page.waitForEvent('download'), page.click(`[data-testid=${view}-export-svg]`)]);
        const text = readFileSync((await svg.path())!, 'utf8');
        expect(svg.suggestedFilename()).toMatch(new RegExp(`^attnscope-stories260k-${view}-.*\\.svg$`));
        expect(text.startsWith('<svg')).toBe(true);
        expect(text).toContain(view === 'flow' ? 'attnscope-flow-view' : 'attnscope-influence-tree');
        const [png] = await Promise.all([page.waitForEvent('download'), page.click(`[data-testid=${view}-export-png]`)]);
        const bytes = readFileSync((await png.path())!);
        expect([...bytes.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
        expect(await page.textContent(`[data-testid=${view}-export-status]`)).toBe('');
      }
      expect(p.network()).toEqual([]);
      expect(p.errors).toEqual([]);
    } finally {
      await p.close();
    }
  });
});
