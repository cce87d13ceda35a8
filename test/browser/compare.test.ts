/**
 * The comparison page in real Chromium, opened from disk with every network request blocked: the
 * embedded model on two texts of equal token length. Hovering a cell reads A, B and A − B, checked
 * against the two traces' attention; clicking a ranked head switches all three heatmaps (the
 * hovered values then come from that head); SVG and PNG export download the figure. Also a page of
 * two models with different tokenisers (words) opens and switches.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Comparison, compareTraces } from '../../src/analysis/compare.js';
import type { Trace } from '../../src/core/trace.js';
import { loadModel } from '../../src/engine/load.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderComparePage } from '../../src/views/html/compare-page.js';
import { fmtValue } from '../../src/views/svg/common.js';
import { ROOT, buildWebClient, launchChromium, numericData, openPage } from './harness.js';

const STORY_A = 'Once upon a time, there was a little girl named Lily.';
const STORY_B = 'Once upon a time, there was a little boy named Tim.';
const TEXT = 'Hello world, the cat sat on the mat. It was tired!';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-compare-page-'));
let browser: Browser;
let a: Trace;
let b: Trace;
let cmp: Comparison;
const files: Record<string, string> = {};

async function traceOf(dir: string | undefined, text: string): Promise<Trace> {
  const model = await loadModel(dir === undefined ? undefined : join(ROOT, 'test', 'fixtures', dir));
  try {
    return await model.trace(text);
  } finally {
    await model.dispose();
  }
}

async function writePage(name: string, c: Comparison, nameA: string, nameB: string): Promise<void> {
  const page = await renderComparePage(c, { bundle: await loadViewBundle(), nameA, nameB, theme: 'light', deflate: (d) => deflateRawSync(d, { level: 6 }) });
  files[name] = join(tmp, `${name}.html`);
  writeFileSync(files[name]!, page.html);
}

/** Hovers cell (q, k) of a panel ('a', 'b', 'diff'). */
async function hoverCell(page: Page, panel: 'a' | 'b' | 'diff', q: number, k: number): Promise<void> {
  const d = await numericData(page, '[data-testid=compare-canvas]');
  await page.locator('[data-testid=compare-canvas]').hover({ position: { x: d[`${panel}X`]! + (k + 0.5) * d.cell!, y: d[`${panel}Y`]! + (q + 0.5) * d.cell! }, force: true });
}

function weight(t: Trace, layer: number, head: number, q: number, k: number): number {
  const n = t.tokens.length;
  return t.attention.self!.layers[layer]![(head * n + q) * n + k]!;
}

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
  a = await traceOf(undefined, STORY_A);
  b = await traceOf(undefined, STORY_B);
  cmp = compareTraces(a, b);
  await writePage('stories', cmp, 'girl', 'boy');
  const bert = await traceOf('bert', TEXT);
  const gpt2 = await traceOf('gpt2', TEXT);
  await writePage('words', compareTraces(bert, gpt2, { text: TEXT }), 'bert', 'gpt2');
});

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('comparison page', () => {
  it('hover reads A, B and A − B; clicking a ranked head switches the heatmaps', async () => {
    const p = await openPage(browser, files.stories!);
    try {
      const { page } = p;
      expect(await page.locator('[data-testid=ranking] li').count()).toBe(40);
      const first = cmp.ranking[0]!;
      let d = await numericData(page, '[data-testid=compare-canvas]');
      expect([d.index, d.layer, d.head]).toEqual([0, first.layer, first.head]);
      // A cell of the lower triangle where the texts differ (row 12: "l" / "y", column 10).
      const [q, k] = [12, 10];
      await hoverCell(page, 'diff', q, k);
      expect(await page.textContent('[data-testid=compare-a]')).toBe(fmtValue(weight(a, first.layer, first.head!, q, k)));
      expect(await page.textContent('[data-testid=compare-b]')).toBe(fmtValue(weight(b, first.layer, first.head!, q, k)));
      expect(await page.textContent('[data-testid=compare-diff]')).toBe(fmtValue(weight(a, first.layer, first.head!, q, k) - weight(b, first.layer, first.head!, q, k)));

      const pick = cmp.ranking[5]!;
      await page.click('[data-testid=ranked-head-5]');
      d = await numericData(page, '[data-testid=compare-canvas]');
      expect([d.index, d.layer, d.head, d.layerB, d.headB]).toEqual([5, pick.layer, pick.head, pick.layerB, pick.headB]);
      expect(await page.getAttribute('[data-testid=ranked-head-5]', 'aria-pressed')).toBe('true');
      expect(await page.getAttribute('[data-testid=ranked-head-0]', 'aria-pressed')).toBe('false');
      await hoverCell(page, 'a', q, k);
      expect(await page.textContent('[data-testid=compare-a]')).toBe(fmtValue(weight(a, pick.layer, pick.head!, q, k)));
      expect(await page.textContent('[data-testid=compare-b]')).toBe(fmtValue(weight(b, pick.layer, pick.head!, q, k)));
      // The canvas shows the new pair: its largest |A − B| is that head's.
      let max = 0;
      for (let i = 0; i < a.tokens.length; i++) for (let j = 0; j < a.tokens.length; j++) max = Math.max(max, Math.abs(weight(a, pick.layer, pick.head!, i, j) - weight(b, pick.layer, pick.head!, i, j)));
      expect(d.maxAbsDiff).toBeCloseTo(max, 6);
      expect(p.network()).toEqual([]);
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('exports the shown pair as SVG and PNG', async () => {
    const p = await openPage(browser, files.stories!);
    try {
      const { page } = p;
      await page.click('[data-testid=ranked-head-2]');
      const pick = cmp.ranking[2]!;
      const [svgDl] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=compare-export-svg]')]);
      expect(svgDl.suggestedFilename()).toBe(`attnscope-compare-girl-vs-boy-layer${pick.layer}-head${pick.head}.svg`);
      const svg = readFileSync((await svgDl.path())!, 'utf8');
      expect(svg.startsWith('<svg') || svg.startsWith('<?xml')).toBe(true);
      expect(svg).toContain(`girl vs boy · layer ${pick.layer} · head ${pick.head}`);
      expect(svg).toContain('heads that changed most');
      const [pngDl] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=compare-export-png]')]);
      const png = readFileSync((await pngDl.path())!);
      expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      expect(png.readUInt32BE(16)).toBeGreaterThan(1000); // width at scale 2
      expect(await page.textContent('[data-testid=compare-export-status]')).toBe('');
    } finally {
      await p.close();
    }
  });

  it('two models with different tokenisers: words on both axes, switching heads', async () => {
    const p = await openPage(browser, files.words!);
    try {
      const { page } = p;
      expect(await page.textContent('[data-testid=compare-note]')).toMatch(/aligned through 14 words of the text/);
      await page.click('[data-testid=ranked-head-7]');
      const d = await numericData(page, '[data-testid=compare-canvas]');
      expect(d.index).toBe(7);
      await hoverCell(page, 'b', 1, 0);
      expect(await page.textContent('[data-testid=compare-readout]')).toMatch(/A: world → Hello .* B: world → Hello/);
      expect(p.errors).toEqual([]);
    } finally {
      await p.close();
    }
  });
});
