/**
 * The sentences and words views in real Chromium, on a standalone page of the default model
 * (stories260k) traced on a three-sentence paragraph: the sentence matrix's hovered cell reads the
 * block mean re-computed here in float64 from the trace (sentences found here by hand); a click
 * shows the token block behind the cell (its tokens, their weights); back returns; the rule and
 * head switch; SVG/PNG export of the drilled block; no network, errors or CSP violations.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../../src/core/trace.js';
import { loadModel } from '../../src/engine/load.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../../src/views/html/standalone.js';
import { buildWebClient, hoverMatrixCell, launchChromium, numericData, openPage, withPage } from './harness.js';

const TEXT = 'Once upon a time there was a little cat. The cat liked to play in the sun. One day it met a big dog.';
const tmp = mkdtempSync(join(tmpdir(), 'attnscope-grouped-'));
let browser: Browser;
let trace: Trace;
let file: string;
/** Token positions per unit: [<s>], then the three sentences (by each token's first non-space character). */
let sentences: number[][];

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
  const model = await loadModel(undefined);
  try {
    trace = await model.trace(TEXT);
  } finally {
    await model.dispose();
  }
  const starts = [0, TEXT.indexOf('The cat'), TEXT.indexOf('One day'), Infinity];
  sentences = [[], [], [], []];
  trace.tokens.forEach((t, i) => {
    if (t.special) return sentences[0]!.push(i);
    let c = t.start;
    while (c < t.end && TEXT[c] === ' ') c++;
    const s = starts.findIndex((st, j) => c >= st && c < starts[j + 1]!);
    sentences[s + 1]!.push(i);
  });
  const result = await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), text: TEXT, deflate: (d) => deflateRawSync(d, { level: 6 }) });
  file = join(tmp, 'grouped.html');
  writeFileSync(file, result.html);
});

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

/** Weight q → k of layer l: head h, or the float64 mean over heads. */
function weight(l: number, h: number | 'mean', q: number, k: number): number {
  const [H, n] = trace.attention.self!.dims;
  const a = trace.attention.self!.layers[l]!;
  if (h !== 'mean') return a[(h * n + q) * n + k]!;
  let s = 0;
  for (let x = 0; x < H; x++) s += a[(x * n + q) * n + k]!;
  return s / H;
}

async function clickCell(page: Page, canvas: string, q: number, k: number): Promise<void> {
  const g = await numericData(page, `[data-testid=${canvas}]`);
  await page.locator(`[data-testid=${canvas}]`).click({ position: { x: g.originX! + (k + 0.5) * g.cell!, y: g.originY! + (q + 0.5) * g.cell! }, force: true });
}

const value = async (page: Page, view: string) => Number(await page.getAttribute(`[data-testid=${view}-readout]`, 'data-value'));

describe('sentences view', () => {
  it('hover reads the block mean; a click shows the token block; back returns', async () => {
    await withPage(browser, file, async (page, p) => {
      await page.click('[data-testid=tab-sentences]');
      await page.waitForSelector('[data-testid=sentences-view]:not([hidden])');
      await page.selectOption('[data-testid=sentences-layer]', '2');
      await expect.poll(() => page.getAttribute('[data-testid=sentences-view]', 'data-rows')).toBe('4');
      expect(await page.getAttribute('[data-testid=sentences-view]', 'data-rule')).toBe('mean');
      // Cell (sentence 3, sentence 1): the mean over heads, averaged over the block.
      await hoverMatrixCell(page, 'sentences-canvas', 3, 1);
      const [S3, S1] = [sentences[3]!, sentences[1]!];
      let sum = 0;
      for (const i of S3) for (const j of S1) sum += weight(2, 'mean', i, j);
      await expect.poll(() => value(page, 'sentences')).toBeCloseTo(sum / (S3.length * S1.length), 6);
      expect(await page.textContent('[data-testid=sentences-readout]')).toContain('“One day it met a big dog.” → “Once upon a time there was a little cat.”');

      // Drill in: the token block, rows S3 and columns S1.
      await clickCell(page, 'sentences-canvas', 3, 1);
      await expect.poll(() => page.getAttribute('[data-testid=sentences-view]', 'data-drill')).toBe('3,1');
      expect(await page.getAttribute('[data-testid=sentences-view]', 'data-rows')).toBe(String(S3.length));
      expect(await page.getAttribute('[data-testid=sentences-view]', 'data-cols')).toBe(String(S1.length));
      expect(await page.textContent('[data-testid=sentences-drill-title]')).toBe('“One day it met a big dog.” → “Once upon a time there was a little cat.”');
      await hoverMatrixCell(page, 'sentences-canvas', 2, 4);
      await expect.poll(() => value(page, 'sentences')).toBeCloseTo(weight(2, 'mean', S3[2]!, S1[4]!), 6);
      // Export of the drilled block.
      const [svg] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=sentences-export-svg]')]);
      const text = readFileSync((await svg.path())!, 'utf8');
      expect(text).toContain('attnscope-sentences');
      expect(text).toContain('tokens of “One day it met a big dog.” → “Once upon a time there was …”');
      const [png] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=sentences-export-png]')]);
      expect([...readFileSync((await png.path())!).subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47]);
      expect(await page.textContent('[data-testid=sentences-export-status]')).toBe('');

      // One head: the drilled cell reads the trace's own weight.
      await page.click('[data-testid=sentences-back]');
      await expect.poll(() => page.getAttribute('[data-testid=sentences-view]', 'data-drill')).toBe(null);
      expect(await page.getAttribute('[data-testid=sentences-view]', 'data-rows')).toBe('4');
      await page.selectOption('[data-testid=sentences-mode]', { label: 'one head' });
      await page.selectOption('[data-testid=sentences-head]', '5');
      await clickCell(page, 'sentences-canvas', 2, 2);
      await expect.poll(() => page.getAttribute('[data-testid=sentences-view]', 'data-drill')).toBe('2,2');
      const S2 = sentences[2]!;
      await hoverMatrixCell(page, 'sentences-canvas', 3, 1);
      await expect.poll(() => page.getAttribute('[data-testid=sentences-readout]', 'data-value')).toBe(String(weight(2, 5, S2[3]!, S2[1]!)));
      // Above the diagonal: masked (causal model).
      await hoverMatrixCell(page, 'sentences-canvas', 1, 3);
      await expect.poll(() => page.getAttribute('[data-testid=sentences-readout]', 'data-masked')).toBe('true');
      await page.keyboard.press('Escape');
      await expect.poll(() => page.getAttribute('[data-testid=sentences-view]', 'data-drill')).toBe(null);

      // The max rule: the block's largest weight.
      await page.selectOption('[data-testid=sentences-rule]', { label: 'max of the block' });
      await hoverMatrixCell(page, 'sentences-canvas', 3, 2);
      let max = 0;
      for (const i of sentences[3]!) for (const j of S2) max = Math.max(max, weight(2, 5, i, j));
      await expect.poll(() => page.getAttribute('[data-testid=sentences-readout]', 'data-value')).toBe(String(max));
      expect(p.network()).toEqual([]);
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
    });
  });
});

describe('words view', () => {
  it('one row per word; a word cell drills into its sub-word tokens', async () => {
    await withPage(browser, file, async (page, p) => {
      await page.click('[data-testid=tab-words]');
      await page.waitForSelector('[data-testid=words-view]:not([hidden])');
      // <s>, 24 words and 3 full stops.
      await expect.poll(() => page.getAttribute('[data-testid=words-view]', 'data-rows')).toBe('28');
      expect(await page.getAttribute('[data-testid=words-view]', 'data-rule')).toBe('share');
      await hoverMatrixCell(page, 'words-canvas', 0, 0);
      await expect.poll(() => value(page, 'words')).toBeCloseTo(1, 6);
      await clickCell(page, 'words-canvas', 10, 9);
      await expect.poll(() => page.getAttribute('[data-testid=words-view]', 'data-drill')).toBe('10,9');
      expect(await page.textContent('[data-testid=words-drill-title]')).toBe('“.” → “cat”');
      await page.click('[data-testid=words-crumb-back]');
      await expect.poll(() => page.getAttribute('[data-testid=words-view]', 'data-drill')).toBe(null);
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
    });
  });
});
