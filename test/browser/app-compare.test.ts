/**
 * The app of `attnscope serve` in real Chromium against the real server (test/fixtures as
 * --models): compare mode (two fixture models side by side, two texts), synchronised navigation,
 * the compare panel's values against PyTorch's (the fixtures' reference.json), the export menu
 * (a PNG at a chosen scale whose downloaded pixels are not blank, SVG, the standalone page, the
 * trace file, tables), a saved session reopened, and a share link reopened in another tab.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Download, Page } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/serve.js';
import { type Nested, readReference } from '../helpers/reference.js';
import { appServerSuite, numericData, pngPixels, type AppPage } from './harness.js';

const suite = appServerSuite('app-compare');
const open = (url: string) => suite.open(url, { viewport: { width: 1400, height: 1000 } });
type Opened = AppPage;
let server: RunningServer;
let scratch: string;
beforeAll(() => {
  server = suite.server();
  scratch = suite.scratch();
});

/** Waits until side `side` shows the complete trace of `text` with `model`. */
async function traced(page: Page, side: 'a' | 'b', text: string, model: string): Promise<void> {
  await page.waitForFunction(
    ([s, t, m]) => {
      const el = document.querySelector<HTMLElement>(`[data-testid=side-${s}]`);
      const key = el?.dataset.traced;
      if (!el || el.dataset.trace !== 'done' || !key) return false;
      const req = JSON.parse(key) as { text: string; model: string };
      return req.text === t && req.model === m;
    },
    [side, text, model] as const,
    { timeout: 90_000 },
  );
}

async function compared(page: Page): Promise<void> {
  await page.waitForFunction(() => document.body.dataset.compare === 'done', null, { timeout: 60_000 });
}

const at = (x: Nested, ...idx: number[]): number => idx.reduce<Nested>((v, i) => (v as Nested[])[i]!, x) as number;
const shown = (s: string | null): number => Number((s ?? '').replace('−', '-'));
const side = (s: 'a' | 'b', testid: string) => `[data-testid=side-${s}] [data-testid=${testid}]`;

async function downloadOf(page: Page, click: () => Promise<void>): Promise<{ download: Download; file: string }> {
  const [download] = await Promise.all([page.waitForEvent('download'), click()]);
  const file = join(scratch, download.suggestedFilename());
  await download.saveAs(file);
  return { download, file };
}

describe('attnscope serve: compare, export, sessions and links in Chromium', () => {
  const bert = readReference('bert').inputs.find((i) => i.id === 'short')!;
  const electra = readReference('electra').inputs.find((i) => i.id === 'short')!;

  it('compares two fixture models side by side: navigation moves together, the panel reads both models’ PyTorch attention, a ranked head moves both sides', async () => {
    expect(electra.text).toBe(bert.text);
    const p = await open(server.url);
    const { page } = p;
    try {
      await page.waitForFunction(() => document.body.dataset.trace === 'done', null, { timeout: 60_000 });
      await page.fill('[data-testid=text-input]', bert.text);
      await page.click('body');
      await page.keyboard.press('/');
      await page.keyboard.type('bert');
      await page.click('[data-testid=model-item][data-id="folder:0/bert"]');
      await traced(page, 'a', bert.text, 'folder:0/bert');
      // Compare mode on, model B picked with its own picker.
      await page.click('[data-testid=compare-toggle]');
      expect(await page.isVisible('[data-testid=b-model-button]')).toBe(true);
      await page.click('[data-testid=b-model-button]');
      await page.keyboard.type('electra');
      await page.click('[data-testid=b-model-item][data-id="folder:0/electra"]');
      await traced(page, 'b', bert.text, 'folder:0/electra');
      await compared(page);
      expect(await page.textContent('[data-testid=compare-note]')).toMatch(/heads matched by \(layer, head\)/);

      // Synchronised navigation: the heatmap view (key 4), next layer, next head — on both sides.
      await page.click('[data-testid=views]', { position: { x: 3, y: 3 } });
      await page.keyboard.press('4');
      await page.keyboard.press(']');
      await page.keyboard.press('.');
      await page.keyboard.press('.');
      for (const s of ['a', 'b'] as const) {
        await expect.poll(() => page.isVisible(side(s, 'heatmap-view'))).toBe(true);
        await expect.poll(() => page.inputValue(side(s, 'heatmap-layer'))).toBe('1');
        await expect.poll(() => page.inputValue(side(s, 'heatmap-head'))).toBe('2');
      }
      // B's own control moves A too.
      await page.selectOption(side('b', 'heatmap-layer'), { label: '0' });
      await expect.poll(() => page.inputValue(side('a', 'heatmap-layer'))).toBe('0');
      // Each side shows its own model's PyTorch attention.
      for (const [s, ref] of [['a', bert], ['b', electra]] as const) {
        const canvas = side(s, 'heatmap-canvas');
        const g = await numericData(page, canvas);
        await page.locator(canvas).hover({ position: { x: g.originX! + 3.5 * g.cell!, y: g.originY! + 5.5 * g.cell! }, force: true });
        await expect.poll(async () => Number(await page.getAttribute(side(s, 'heatmap-readout'), 'data-value'))).toBeCloseTo(at(ref.attentions!, 0, 2, 5, 3), 5);
      }
      // The compare panel follows: layer 0, head 2, A and B and A − B at (5, 3) are PyTorch's.
      await expect.poll(() => page.getAttribute('[data-testid=compare-canvas]', 'data-layer')).toBe('0');
      expect(await page.getAttribute('[data-testid=compare-canvas]', 'data-head')).toBe('2');
      const d = await numericData(page, '[data-testid=compare-canvas]');
      await page.locator('[data-testid=compare-canvas]').hover({ position: { x: d.aX! + 3.5 * d.cell!, y: d.aY! + 5.5 * d.cell! }, force: true });
      await expect.poll(() => page.getAttribute('[data-testid=compare-readout]', 'data-q')).toBe('5');
      const wa = at(bert.attentions!, 0, 2, 5, 3);
      const wb = at(electra.attentions!, 0, 2, 5, 3);
      expect(shown(await page.textContent('[data-testid=compare-a]'))).toBeCloseTo(wa, 3);
      expect(shown(await page.textContent('[data-testid=compare-b]'))).toBeCloseTo(wb, 3);
      expect(shown(await page.textContent('[data-testid=compare-diff]'))).toBeCloseTo(wa - wb, 3);
      // The ranking lists every (layer, head); a click on one moves both sides to it.
      expect(await page.locator('[data-testid=ranking] li').count()).toBe(2 * 4);
      const target = await page.$eval('[data-testid=ranked-head-3]', (b) => b.querySelector('b')!.textContent!);
      await page.click('[data-testid=ranked-head-3]');
      const layer = await page.getAttribute('[data-testid=compare-canvas]', 'data-layer');
      const head = await page.getAttribute('[data-testid=compare-canvas]', 'data-head');
      expect(target).toContain(`layer ${layer}`);
      for (const s of ['a', 'b'] as const) {
        await expect.poll(() => page.inputValue(side(s, 'heatmap-layer'))).toBe(layer);
        await expect.poll(() => page.inputValue(side(s, 'heatmap-head'))).toBe(head);
      }
      // The ranking as CSV: one row per pair, JS divergences in [0, 1].
      const { file: csv } = await downloadOf(page, () => page.click('[data-testid=ranking-csv]'));
      const lines = readFileSync(csv, 'utf8').trim().split('\n');
      expect(lines[0]).toBe('layer,head,layer_b,head_b,rank,js_divergence,max_abs_diff,mean_abs_diff');
      expect(lines).toHaveLength(1 + 8);
      // The comparison page of A and B, as `attnscope compare --html` writes it.
      await page.click('[data-testid=export-menu]');
      const { file: cmpFile } = await downloadOf(page, () => page.click('[data-testid=export-compare-html]'));
      const cmpHtml = readFileSync(cmpFile, 'utf8');
      expect(cmpHtml).toContain('id="attnscope-compare"');
      const cmpHeader = JSON.parse(/<script type="application\/json" id="attnscope-compare">([\s\S]*?)<\/script>/.exec(cmpHtml)![1]!) as { nameA: string; nameB: string; ranking: unknown[] };
      expect([cmpHeader.nameA, cmpHeader.nameB, cmpHeader.ranking.length]).toEqual(['bert', 'electra', 8]);
      await page.keyboard.press('Escape');
      // The URL holds the compare state.
      const url = new URL(page.url());
      expect(url.searchParams.get('compare')).toBe('1');
      expect(url.searchParams.get('modelB')).toBe('folder:0/electra');
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
      expect(p.foreign).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('compares one model on two texts; different token counts get the analysis’s one-line reason, each side still shows its own text', async () => {
    const other = readReference('bert').inputs.find((i) => i.id === 'unicode')!;
    const url = new URL(server.url);
    url.searchParams.set('model', 'folder:0/bert');
    url.searchParams.set('text', bert.text);
    url.searchParams.set('compare', '1');
    url.searchParams.set('textB', other.text);
    url.searchParams.set('view', 'heatmap');
    const p = await open(url.href);
    const { page } = p;
    try {
      await traced(page, 'a', bert.text, 'folder:0/bert');
      await traced(page, 'b', other.text, 'folder:0/bert');
      expect(await page.inputValue('[data-testid=text-b-input]')).toBe(other.text);
      await page.waitForFunction(() => document.body.dataset.compare === 'error', null, { timeout: 30_000 });
      expect(await page.textContent('[data-testid=compare-message]')).toMatch(/cannot compare position by position: A's attention is 13 × 13 tokens, B's 9 × 9/);
      expect(await page.$$eval(`${side('b', 'heatmap-view')}`, (els) => els.length)).toBe(1);
      const g = await numericData(page, side('b', 'heatmap-canvas'));
      await page.locator(side('b', 'heatmap-canvas')).hover({ position: { x: g.originX! + 1.5 * g.cell!, y: g.originY! + 4.5 * g.cell! }, force: true });
      await expect.poll(async () => Number(await page.getAttribute(side('b', 'heatmap-readout'), 'data-value'))).toBeCloseTo(at(other.attentions!, 0, 0, 4, 1), 5);
      // Compare mode off: side B and the panel go, the URL forgets B.
      await page.click('[data-testid=compare-toggle]');
      expect(await page.isVisible('[data-testid=side-b]')).toBe(false);
      await expect.poll(() => new URL(page.url()).searchParams.get('compare')).toBe(null);
      expect(p.errors).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('two models of different depth and tokenisers on one text: layers move at the same relative depth, the comparison aligns words', async () => {
    const url = new URL(server.url);
    url.searchParams.set('model', 'folder:0/bert');
    url.searchParams.set('text', bert.text);
    url.searchParams.set('compare', '1');
    url.searchParams.set('modelB', 'default');
    url.searchParams.set('view', 'heatmap');
    url.searchParams.set('layer', '1');
    const p = await open(url.href);
    const { page } = p;
    try {
      await traced(page, 'a', bert.text, 'folder:0/bert');
      await traced(page, 'b', bert.text, 'default');
      await compared(page);
      // bert has 2 layers, stories260k 5: A's layer 1 (the last) is B's layer 4 (the last).
      await expect.poll(() => page.inputValue(side('a', 'heatmap-layer'))).toBe('1');
      await expect.poll(() => page.inputValue(side('b', 'heatmap-layer'))).toBe('4');
      await page.click('[data-testid=views]', { position: { x: 3, y: 3 } });
      await page.keyboard.press('[');
      await expect.poll(() => page.inputValue(side('a', 'heatmap-layer'))).toBe('0');
      await expect.poll(() => page.inputValue(side('b', 'heatmap-layer'))).toBe('0');
      const note = await page.textContent('[data-testid=compare-note]');
      expect(note).toMatch(/the models differ in shape \(2 × 4 and 5 × 8 layers × heads\)/);
      expect(note).toMatch(/aligned through \d+ words of the text/);
      expect(await page.locator('[data-testid=ranking] li').count()).toBe(2);
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('exports the view as PNG at the scale chosen (pixels not blank) and SVG, the page and the trace file, the predictions table', async () => {
    const gpt2 = readReference('gpt2').inputs.find((i) => i.id === 'short')!;
    const url = new URL(server.url);
    url.searchParams.set('model', 'folder:0/gpt2');
    url.searchParams.set('text', gpt2.text);
    url.searchParams.set('view', 'heatmap');
    const p = await open(url.href);
    const { page } = p;
    try {
      await traced(page, 'a', gpt2.text, 'folder:0/gpt2');
      await page.click('[data-testid=export-menu]');
      await page.selectOption('[data-testid=png-scale]', '3');
      const { file: svgFile } = await downloadOf(page, () => page.click('[data-testid=export-view-svg]'));
      const svg = readFileSync(svgFile, 'utf8');
      expect(svg).toMatch(/^(<\?xml[^>]*>\s*)?<svg/);
      const width = Number(/<svg[^>]*\swidth="([\d.]+)"/.exec(svg)![1]);
      const { download, file: pngFile } = await downloadOf(page, () => page.click('[data-testid=export-view-png]'));
      expect(download.suggestedFilename()).toMatch(/^attnscope-gpt2-heatmap-self-layer0\.png$/);
      const png = await pngPixels(page, pngFile);
      expect(png.width).toBe(Math.round(width * 3));
      expect(png.differing).toBeGreaterThan(png.width * png.height * 0.05);
      expect(png.colours).toBeGreaterThan(20);
      // The standalone page of this input, opening on the heatmap.
      const { file: htmlFile } = await downloadOf(page, () => page.click('[data-testid=export-html]'));
      const html = readFileSync(htmlFile, 'utf8');
      expect(html).toContain('id="attnscope-header"');
      expect(html).toMatch(/"view":"heatmap"/);
      // The trace file, and the predictions (gpt2 predicts the next token at every position).
      const { file: jsonFile } = await downloadOf(page, () => page.click('[data-testid=export-json]'));
      const trace = JSON.parse(readFileSync(jsonFile, 'utf8')) as { tokens: { id: number }[] };
      expect(trace.tokens.map((t) => t.id)).toEqual(gpt2.input_ids);
      const { file: predFile } = await downloadOf(page, () => page.click('[data-testid=export-predictions-csv]'));
      const rows = readFileSync(predFile, 'utf8').trim().split('\n');
      expect(rows[0]).toBe('position,token,rank,candidate,probability');
      expect(rows).toHaveLength(1 + gpt2.input_ids.length * 5);
      expect(await page.textContent('[data-testid=export-status]')).not.toMatch(/failed/);
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('saves a session to a file and reopens it; a share link reopens the same state in another tab', async () => {
    const p = await open(server.url);
    const { page } = p;
    const sessionText = bert.text;
    try {
      await page.waitForFunction(() => document.body.dataset.trace === 'done', null, { timeout: 60_000 });
      // State: bert vs electra, the heatmap, layer 1, head 3, dark theme, hide special tokens.
      const url = new URL(server.url);
      url.searchParams.set('model', 'folder:0/bert');
      url.searchParams.set('text', sessionText);
      url.searchParams.set('compare', '1');
      url.searchParams.set('modelB', 'folder:0/electra');
      await page.goto(url.href);
      await traced(page, 'a', sessionText, 'folder:0/bert');
      await traced(page, 'b', sessionText, 'folder:0/electra');
      await page.click(side('a', 'tab-heatmap'));
      await page.selectOption(side('a', 'heatmap-layer'), { label: '1' });
      await page.selectOption(side('a', 'heatmap-head'), { label: '3' });
      await page.selectOption(side('a', 'theme'), { label: 'dark' });
      await page.check(side('a', 'hide-special'));
      await expect.poll(() => page.inputValue(side('b', 'heatmap-head'))).toBe('3');
      await expect.poll(() => page.isChecked(side('b', 'hide-special'))).toBe(true);

      await page.click('[data-testid=export-menu]');
      const { file } = await downloadOf(page, () => page.click('[data-testid=session-save]'));
      const session = JSON.parse(readFileSync(file, 'utf8')) as { format: string; state: Record<string, unknown>; revisions: Record<string, string> };
      expect(session.format).toBe('attnscope-session');
      expect(session.state).toMatchObject({ model: 'folder:0/bert', text: sessionText, view: 'heatmap', layer: 1, head: 3, theme: 'dark', hideSpecial: true, compare: true, modelB: 'folder:0/electra' });
      expect(typeof session.revisions.a).toBe('string');

      await page.click('[data-testid=share-button]');
      const link = await page.inputValue('[data-testid=share-url]');
      expect(link).toBe(page.url());

      // A fresh tab on the default state opens the session file.
      const q = await open(server.url);
      try {
        await q.page.waitForFunction(() => document.body.dataset.trace === 'done', null, { timeout: 60_000 });
        expect(await q.page.isVisible('[data-testid=side-b]')).toBe(false);
        await q.page.setInputFiles('[data-testid=session-file]', file);
        await traced(q.page, 'a', sessionText, 'folder:0/bert');
        await traced(q.page, 'b', sessionText, 'folder:0/electra');
        await expectState(q.page);
        // A damaged file: one line saying what is wrong, the state unchanged.
        const bad = join(scratch, 'bad-session.json');
        writeFileSync(bad, JSON.stringify({ ...session, state: { ...session.state, layer: 'one' } }));
        await q.page.setInputFiles('[data-testid=session-file]', bad);
        await expect.poll(() => q.page.textContent('[data-testid=export-status]')).toMatch(/could not open bad-session\.json: state\.layer: an integer/);
        expect(q.errors).toEqual([]);
      } finally {
        await q.close();
      }

      // The share link in another tab.
      const r = await open(link);
      try {
        await traced(r.page, 'a', sessionText, 'folder:0/bert');
        await traced(r.page, 'b', sessionText, 'folder:0/electra');
        await expectState(r.page);
        expect(r.errors).toEqual([]);
        expect(r.consoleErrors).toEqual([]);
      } finally {
        await r.close();
      }
      expect(p.errors).toEqual([]);
    } finally {
      await p.close();
    }
  });
});

/** The saved state: bert vs electra, the heatmap on layer 1 head 3 on both sides, dark, specials hidden. */
async function expectState(page: Page): Promise<void> {
  expect(await page.textContent('[data-testid=model-current]')).toBe('bert');
  expect(await page.textContent('[data-testid=b-model-current]')).toBe('electra');
  for (const s of ['a', 'b'] as const) {
    await expect.poll(() => page.isVisible(side(s, 'heatmap-view'))).toBe(true);
    await expect.poll(() => page.inputValue(side(s, 'heatmap-layer'))).toBe('1');
    expect(await page.inputValue(side(s, 'heatmap-head'))).toBe('3');
    expect(await page.$eval(side(s, 'theme'), (el) => (el as HTMLSelectElement).selectedOptions[0]?.textContent)).toBe('dark');
    expect(await page.isChecked(side(s, 'hide-special'))).toBe(true);
  }
  expect(await page.evaluate(() => document.documentElement.dataset.theme)).toBe('dark');
}
