/**
 * The head-type grid in real Chromium, on a standalone page of the default model (stories260k,
 * 5 layers × 8 heads): every head is a cell whose type is the head table's top type; hovering a
 * cell lists that head's type scores; clicking it opens that head's heatmap (heatmap view, its
 * layer and head, whose hovered cell reads the trace's weight); SVG/PNG export and the head table
 * as CSV and JSON agree with the page.
 */
import { readFileSync } from 'node:fs';
import type { Browser, Page } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { HEAD_TABLE_HEADER, HEAD_TYPE_COLUMN, HEAD_TYPE_NAMES, type HeadTableRow, headTable } from '../../src/analysis/head-types.js';
import type { Trace } from '../../src/core/trace.js';
import { expectHeadHeatmapOpened, openPage, standalonePageSuite, withPage } from './harness.js';

const SENTENCE = 'Once upon a time, there was a little girl named Lily. She liked to play in the park with her dog.';
const suite = standalonePageSuite('types', SENTENCE);
let browser: Browser;
let trace: Trace;
let table: HeadTableRow[];
let file: string;
beforeAll(() => {
  [browser, trace, file] = [suite.browser(), suite.trace(), suite.file()];
  table = headTable(trace, 'self');
});

const CELLS = '[data-testid=types-svg] rect.type-cell';

async function pageCells(page: Page): Promise<{ layer: number; head: number; type: string }[]> {
  return page.$$eval(CELLS, (els) => els.map((e) => ({ layer: Number(e.getAttribute('data-layer')), head: Number(e.getAttribute('data-head')), type: e.getAttribute('data-type') ?? '' })));
}

describe('head types view', () => {
  it('draws every head by its top type; hovering lists its scores; clicking opens that head’s heatmap', async () => {
    await withPage(browser, file, async (page, p) => {
      await page.click('[data-testid=tab-types]');
      await page.waitForSelector(CELLS);
      const cells = await pageCells(page);
      expect(cells).toEqual(table.map((r) => ({ layer: r.layer, head: r.head, type: r.top_type ?? '' })));
      expect(Number(await page.getAttribute('[data-testid=types-view]', 'data-typed'))).toBe(table.filter((r) => r.top_type).length);
      expect(await page.locator('[data-testid=types-svg] text.type-name').count()).toBe(HEAD_TYPE_NAMES.length + 1);

      // Hover a typed head if there is one, else L3 H5.
      const row = table.find((r) => r.top_type) ?? table.find((r) => r.layer === 3 && r.head === 5)!;
      const target = `${CELLS}[data-layer="${row.layer}"][data-head="${row.head}"]`;
      await page.hover(target, { force: true });
      await expect.poll(() => page.getAttribute('[data-testid=types-readout]', 'data-head')).toBe(String(row.head));
      expect(await page.getAttribute('[data-testid=types-readout]', 'data-layer')).toBe(String(row.layer));
      expect(await page.getAttribute('[data-testid=types-readout]', 'data-type')).toBe(row.top_type ?? '');
      expect(await page.textContent('[data-testid=types-name]')).toBe(row.top_type ?? 'no type');
      // Every type's score, as the head table has it.
      const shown = await page.$$eval('[data-testid=types-scores] [data-type]', (els) => els.map((e) => [e.getAttribute('data-type')!, e.getAttribute('data-score')!] as const));
      expect(shown).toHaveLength(HEAD_TYPE_NAMES.length);
      for (const [type, score] of shown) {
        const v = row[HEAD_TYPE_COLUMN[type as (typeof HEAD_TYPE_NAMES)[number]]];
        if (Number.isFinite(v)) expect(Number(score)).toBeCloseTo(v, 12);
        else expect(score).toBe('');
      }

      await page.click(target, { force: true });
      await expectHeadHeatmapOpened(page, trace, row.layer, row.head);

      // Back on the grid, the opened head is outlined.
      await page.click('[data-testid=tab-types]');
      await page.waitForSelector(`${target}.selected`);
      expect(await page.locator(`${CELLS}.selected`).count()).toBe(1);
      expect(p.network()).toEqual([]);
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
    });
  });

  it('exports SVG and PNG, and the head table as CSV and JSON matching the page; exclude first token re-measures', async () => {
    await withPage(browser, file, async (page, p) => {
      await page.click('[data-testid=tab-types]');
      await page.waitForSelector(CELLS);
      const cells = await pageCells(page);

      const [csv] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=types-csv]')]);
      expect(csv.suggestedFilename()).toBe('attnscope-stories260k-head-types-self.csv');
      const lines = readFileSync((await csv.path())!, 'utf8').trimEnd().split('\n');
      expect(lines[0]).toBe(HEAD_TABLE_HEADER.join(','));
      const typeCol = HEAD_TABLE_HEADER.indexOf('top_type');
      expect(lines.slice(1).map((l) => l.split(','))).toHaveLength(cells.length);
      expect(lines.slice(1).map((l) => { const c = l.split(','); return [Number(c[0]), Number(c[1]), c[typeCol]]; })).toEqual(cells.map((c) => [c.layer, c.head, c.type]));

      const [json] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=types-json]')]);
      const doc = JSON.parse(readFileSync((await json.path())!, 'utf8')) as { model: string; rows: { top_type: string | null }[] };
      expect(doc.model).toBe('stories260k');
      expect(doc.rows.map((r) => r.top_type ?? '')).toEqual(cells.map((c) => c.type));

      const [svg] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=types-export-svg]')]);
      const text = readFileSync((await svg.path())!, 'utf8');
      expect(text.startsWith('<svg')).toBe(true);
      expect(text).toContain('attnscope-head-types');
      expect((text.match(/class="type-cell/g) ?? []).length).toBe(cells.length);
      expect(text).toContain('stories260k · self-attention · head types on the text');
      const [png] = await Promise.all([page.waitForEvent('download'), page.click('[data-testid=types-export-png]')]);
      const bytes = readFileSync((await png.path())!);
      expect([...bytes.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      expect(await page.textContent('[data-testid=types-export-status]')).toBe('');

      // Without the first token: the table of headTable(excludeFirstToken).
      await page.click('[data-testid=types-exclude-first]');
      const excluded = headTable(trace, 'self', { excludeFirstToken: true });
      await expect.poll(async () => (await pageCells(page)).map((c) => c.type).join(',')).toBe(excluded.map((r) => r.top_type ?? '').join(','));
      expect(p.network()).toEqual([]);
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
    });
  });
});
