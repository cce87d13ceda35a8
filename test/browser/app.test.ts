/**
 * The web app of `attnscope serve` in real Chromium against the real server (test/fixtures as
 * --models): type a sentence, pick a fixture model with the search, see PyTorch's attention in
 * the views the standalone page uses, switch every view, click a head, keyboard navigation, and a
 * shared URL that reopens the same state. No request leaves the server's origin.
 */
import type { Page } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { VIEW_NAMES } from '../../src/views/layout/common.js';
import type { RunningServer } from '../../src/server/serve.js';
import { type Nested, readReference } from '../helpers/reference.js';
import { appServerSuite, hoverMatrixCell } from './harness.js';

const suite = appServerSuite('app');
const open = (url: string) => suite.open(url);
let server: RunningServer;
beforeAll(() => {
  server = suite.server();
});

/** Waits until the trace of `text` (and model) is complete on screen. */
async function traced(page: Page, text: string, model?: string): Promise<void> {
  await page.waitForFunction(
    ([t, m]) => {
      const key = document.body.dataset.traced;
      if (document.body.dataset.trace !== 'done' || !key) return false;
      const req = JSON.parse(key) as { text: string; model: string };
      return req.text === t && (m === null || req.model === m);
    },
    [text, model ?? null] as const,
    { timeout: 60_000 },
  );
}

const at = (x: Nested, ...idx: number[]): number => idx.reduce<Nested>((v, i) => (v as Nested[])[i]!, x) as number;

describe('attnscope serve: the app in Chromium', () => {
  it('traces the embedded model on opening, then a typed sentence, live', async () => {
    const p = await open(server.url);
    try {
      const { page } = p;
      await page.waitForFunction(() => document.body.dataset.trace === 'done', null, { timeout: 60_000 });
      expect(await page.textContent('[data-testid=model-current]')).toMatch(/stories260k/);
      const ref = readReference('stories260k').inputs.find((i) => i.id === 'coref')!;
      await page.fill('[data-testid=text-input]', '');
      await page.type('[data-testid=text-input]', ref.text, { delay: 15 });
      await traced(page, ref.text);
      // The tokens transformers' tokenizer gives, one query row each.
      const rows = await page.$$eval('[data-testid^=head-query-]', (els) => els.length);
      expect(rows).toBe(ref.input_ids.length);
      expect(await page.getAttribute('[data-testid=head-query-3]', 'data-testid')).toBe('head-query-3');
      expect((await page.textContent('[data-testid=head-query-3]'))!.startsWith('and')).toBe(true);
      expect(p.foreign).toEqual([]);
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('picks a fixture model by searching, shows PyTorch’s attention, switches every view, clicks a head, and a shared URL reopens the same state', async () => {
    const ref = readReference('bert').inputs.find((i) => i.id === 'short')!;
    const p = await open(server.url);
    const { page } = p;
    try {
      await page.waitForFunction(() => document.body.dataset.trace === 'done', null, { timeout: 60_000 });
      await page.fill('[data-testid=text-input]', ref.text);
      // The picker: '/' opens it, typing filters, a click picks.
      await page.click('body');
      await page.keyboard.press('/');
      await expect.poll(() => page.isVisible('[data-testid=model-search]')).toBe(true);
      await page.keyboard.type('bert');
      const listed = await page.$$eval('[data-testid=model-item]', (els) => els.map((e) => e.getAttribute('data-id')));
      expect(listed).toContain('folder:0/bert');
      expect(listed.every((id) => /bert/.test(id ?? ''))).toBe(true);
      await page.click('[data-testid=model-item][data-id="folder:0/bert"]');
      await traced(page, ref.text, 'folder:0/bert');
      // Tokens as transformers' tokenizer gives them.
      const tokens = await page.$$eval('[data-testid^=head-query-]', (els) => els.map((e) => e.getAttribute('data-testid')));
      expect(tokens).toHaveLength(ref.tokens.length);
      // The heatmap's weight at (layer 1, head 2, query 5, key 3) is PyTorch's.
      await page.click('[data-testid=tab-heatmap]');
      await page.selectOption('[data-testid=heatmap-layer]', { label: '1' });
      await page.selectOption('[data-testid=heatmap-head]', { label: '2' });
      await hoverMatrixCell(page, 'heatmap-canvas', 5, 3);
      await expect.poll(async () => Number(await page.getAttribute('[data-testid=heatmap-readout]', 'data-value'))).toBeCloseTo(at(ref.attentions!, 1, 2, 5, 3), 5);
      // Every view.
      for (const view of VIEW_NAMES) {
        await page.click(`[data-testid=tab-${view}]`);
        await expect.poll(() => page.isVisible(`[data-testid=${view}-view]`)).toBe(true);
      }
      // Click a head (double-click: that head alone) in the head view.
      await page.click('[data-testid=tab-head]');
      await page.dblclick('[data-testid=head-swatch-3]');
      const pressed = await page.$$eval('[data-testid^=head-swatch-]', (els) => els.map((e) => e.getAttribute('aria-pressed')));
      expect(pressed).toEqual(['false', 'false', 'false', 'true']);
      // Keyboard: previous layer (the heatmap's layer 1 above is shared by the views), next head, the heatmap view.
      await page.click('[data-testid=head-view]', { position: { x: 2, y: 2 } });
      expect(new URL(page.url()).searchParams.get('layer')).toBe('1');
      expect(new URL(page.url()).searchParams.get('head')).toBe('2');
      await page.keyboard.press('[');
      await page.keyboard.press('.');
      await page.keyboard.press(String(VIEW_NAMES.indexOf('heatmap') + 1));
      await expect.poll(() => page.isVisible('[data-testid=heatmap-view]')).toBe(true);
      await expect.poll(() => new URL(page.url()).searchParams.get('layer')).toBe('0');
      const url = new URL(page.url());
      expect(url.searchParams.get('model')).toBe('folder:0/bert');
      expect(url.searchParams.get('text')).toBe(ref.text);
      expect(url.searchParams.get('view')).toBe('heatmap');
      expect(url.searchParams.get('head')).toBe('3');
      expect(await page.inputValue('[data-testid=heatmap-layer]')).toBe('0');
      expect(p.errors).toEqual([]);
      expect(p.consoleErrors).toEqual([]);
      expect(p.foreign).toEqual([]);

      // The link in another tab: same model, text, view, layer and head.
      const q = await open(url.href);
      try {
        await traced(q.page, ref.text, 'folder:0/bert');
        expect(await q.page.textContent('[data-testid=model-current]')).toBe('bert');
        expect(await q.page.inputValue('[data-testid=text-input]')).toBe(ref.text);
        await expect.poll(() => q.page.isVisible('[data-testid=heatmap-view]')).toBe(true);
        expect(await q.page.inputValue('[data-testid=heatmap-layer]')).toBe(await page.inputValue('[data-testid=heatmap-layer]'));
        expect(await q.page.inputValue('[data-testid=heatmap-head]')).toBe(await page.inputValue('[data-testid=heatmap-head]'));
        await hoverMatrixCell(q.page, 'heatmap-canvas', 4, 2);
        await expect.poll(async () => Number(await q.page.getAttribute('[data-testid=heatmap-readout]', 'data-value'))).toBeCloseTo(at(ref.attentions!, 0, 3, 4, 2), 5);
        expect(q.errors).toEqual([]);
        expect(q.consoleErrors).toEqual([]);
      } finally {
        await q.close();
      }
    } finally {
      await p.close();
    }
  });

  it('a sentence pair goes to the model as two segments; a refused input shows the server’s one-line message', async () => {
    const ref = readReference('bert').inputs.find((i) => i.id === 'pair')!;
    const url = new URL(server.url);
    url.searchParams.set('model', 'folder:0/bert');
    url.searchParams.set('text', ref.text);
    url.searchParams.set('pair', ref.text_pair!);
    // A layer past the first: still shown when the views were first drawn on layer 0 alone.
    url.searchParams.set('layer', '1');
    const p = await open(url.href);
    try {
      await traced(p.page, ref.text, 'folder:0/bert');
      expect(await p.page.inputValue('[data-testid=head-layer]')).toBe('1');
      expect(await p.page.isVisible('[data-testid=pair-input]')).toBe(true);
      const n = await p.page.$$eval('[data-testid^=head-query-]', (els) => els.length);
      expect(n).toBe(ref.input_ids.length);
      // Over the token limit: the message names the field and the limit.
      await p.page.fill('[data-testid=text-input]', Array.from({ length: 600 }, (_, i) => `w${i}`).join(' '));
      await expect.poll(() => p.page.textContent('[data-testid=trace-error]'), { timeout: 30_000 }).toMatch(/^text, textPair: \d+ tokens; at most \d+ allowed/);
      expect(p.errors).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('shows token text as text, never as markup', async () => {
    const xss = '<img src=x onerror=alert(1)> </textarea><script>alert(2)</script>';
    const url = new URL(server.url);
    url.searchParams.set('model', 'folder:0/bert');
    url.searchParams.set('text', xss);
    const p = await open(url.href);
    const dialogs: string[] = [];
    p.page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    try {
      await traced(p.page, xss, 'folder:0/bert');
      expect(await p.page.locator('img[src=x]').count()).toBe(0);
      expect(await p.page.inputValue('[data-testid=text-input]')).toBe(xss);
      expect(dialogs).toEqual([]);
      expect(p.errors).toEqual([]);
    } finally {
      await p.close();
    }
  });
});
