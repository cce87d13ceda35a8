/**
 * In real Chromium, on small hand-made traces: the model view's hover (a cell's layer, head and
 * strongest query → key pairs, worked out by hand from the weights the trace is made of), the
 * predictions panel and token tooltips (`--top-k`), token labels (sentencepiece word pieces and
 * byte-fallback characters), and a header and generation bar that never clip their text.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../../src/core/trace.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../../src/views/html/standalone.js';
import { handTrace } from '../helpers/hand-trace.js';
import { buildWebClient, clickModelCell, hoverMatrixCell, launchChromium, numericData, openPage } from './harness.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-vb-'));
let browser: Browser;

async function page(name: string, trace: Trace, text?: string): Promise<string> {
  const r = await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), text, theme: 'light', deflate: (d) => deflateRawSync(d) });
  const file = join(tmp, `${name}.html`);
  writeFileSync(file, r.html);
  return file;
}

/** Hovers the centre of model-view cell (grid row i, column j) and returns the tooltip's lines. */
async function hoverCell(p: Page, i: number, j: number): Promise<string[]> {
  const g = await numericData(p, '[data-testid=model-canvas]');
  await p.locator('[data-testid=model-canvas]').hover({ position: { x: g.gridX! + j * (g.cw! + g.gap!) + g.cw! / 2, y: g.gridY! + i * (g.ch! + g.gap!) + g.ch! / 2 } });
  await expect.poll(() => p.isVisible('[data-testid=tooltip]')).toBe(true);
  return p.$eval('[data-testid=tooltip]', (el) => (el as HTMLElement).innerText.split('\n'));
}

// Tokens: <s> a g·ir·l; ids are position + 3 (handTrace).
const TOKENS = ['<s>', '▁a', '▁g', 'ir', 'l', '▁caf', '<0xC3>', '<0xA9>'];
const predictions: Trace['predictions'] = [
  { position: 2, kind: 'next', candidates: [{ id: 6, token: 'ir', probability: 0.7 }, { id: 99, token: '▁ir', probability: 0.2 }, { id: 98, token: '<0xC3>', probability: 0.05 }] },
  { position: 4, kind: 'next', candidates: [{ id: 50, token: '▁named', probability: 0.6 }, { id: 8, token: '▁caf', probability: 0.3 }] },
];

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
}, 180_000);

afterAll(async () => {
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('model view hover', () => {
  it("shows a cell's layer, head and strongest pairs (causal first row left out)", async () => {
    // Head h, query q, key k ≤ q: weight (k + 1 + h) / Σ. Head 0: q1 = [1/3, 2/3], q2 = [1/6, 2/6, 3/6], q3 = [1/10 … 4/10].
    const file = await page('model', handTrace(TOKENS.slice(0, 5), { special: [0], layers: 2, heads: 3 }));
    const p = await openPage(browser, file);
    try {
      await p.page.click('[data-testid=tab-model]');
      await expect.poll(() => p.page.getAttribute('[data-testid=model-canvas]', 'data-drawn')).toBe('true');
      const lines = await hoverCell(p.page, 1, 0);
      expect(lines).toEqual(['layer 1 · head 0', 'strongest query → key:', '1 “a” → 1 “a” 0.6667', '2 “g” → 2 “g” 0.5', '3 “·ir” → 3 “·ir” 0.4', 'click to open']);
      expect(await p.page.getAttribute('[data-testid=model-canvas]', 'data-hover-layer')).toBe('1');
      // The hovered cell is outlined.
      const g = await numericData(p.page, '[data-testid=model-canvas]');
      const canvasBox = (await p.page.locator('[data-testid=model-canvas]').boundingBox())!;
      const box = (await p.page.locator('[data-testid=model-hover]').boundingBox())!;
      expect(Math.abs(box.x + 2 - (canvasBox.x + g.gridX!))).toBeLessThan(1.5);
      expect(Math.abs(box.y + 2 - (canvasBox.y + g.gridY! + g.ch! + g.gap!))).toBeLessThan(1.5);
      // Head 2: q1 = [3/7, 4/7], q2 = [3/12, 4/12, 5/12], q3 = [3/18 … 6/18], q4 = [3/25 … 7/25].
      const h2 = await hoverCell(p.page, 0, 2);
      expect(h2.slice(0, 5)).toEqual(['layer 0 · head 2', 'strongest query → key:', '1 “a” → 1 “a” 0.5714', '1 “a” → 0 “<s>” 0.4286', '2 “g” → 2 “g” 0.4167']);
      // Raw token texts when prettifying is off.
      await p.page.click('[data-testid=prettify]');
      await expect.poll(async () => (await hoverCell(p.page, 0, 0))[4]).toBe('3 “ir” → 3 “ir” 0.4');
      await p.page.mouse.move(1, 1);
      await expect.poll(() => p.page.isVisible('[data-testid=tooltip]')).toBe(false);
      // Opened large, a masked entry (key after the query, zero in every head) reads "masked".
      await clickModelCell(p.page, 0, 0);
      await expect.poll(() => p.page.isVisible('[data-testid=model-detail]')).toBe(true);
      await hoverMatrixCell(p.page, 'model-detail-canvas', 1, 3);
      await expect.poll(() => p.page.getAttribute('[data-testid=model-detail-readout]', 'data-masked')).toBe('true');
      expect(await p.page.textContent('[data-testid=model-detail-readout]')).toContain('masked');
      await hoverMatrixCell(p.page, 'model-detail-canvas', 3, 1);
      await expect.poll(() => p.page.getAttribute('[data-testid=model-detail-readout]', 'data-value')).toBe(String(Math.fround(2 / 10)));
      expect(p.errors).toEqual([]);
    } finally {
      await p.close();
    }
  });
});

describe('predictions and token labels', () => {
  it('a predictions panel, and the candidates in the token tooltips', async () => {
    const file = await page('pred', handTrace(TOKENS, { special: [0], layers: 1, heads: 2, predictions }), 'a girl café');
    const p = await openPage(browser, file);
    try {
      const { page: pg } = p;
      expect(await pg.isVisible('[data-testid=predictions]')).toBe(true);
      expect(await pg.textContent('[data-testid=predictions-summary]')).toContain('top 3 next tokens at 2 positions');
      const row = pg.locator('[data-testid=prediction-2]');
      expect(await row.locator('.prediction-token').textContent()).toBe('g');
      expect(await row.locator('.candidate').allInnerTexts()).toEqual(['·ir 0.700 ✓', 'ir 0.200', '<0xC3> 0.050']); // 'ir' after '▁g' continues the word
      // The token that follows position 2 is 'ir' (id 6): marked as the actual one.
      expect(await row.locator('.candidate.actual').count()).toBe(1);
      // Position 4 is followed by '▁caf' (id 8), the second candidate.
      expect(await pg.locator('[data-testid=prediction-4] .candidate.actual .candidate-token').allTextContents()).toEqual(['caf']);
      // Token labels in the head view: word pieces joined with ·, the byte pair shown as é (U+00E9 = C3 A9) then ⋯.
      const labels = await pg.$$eval('[data-testid^=head-query-]', (els) => els.map((el) => [...el.childNodes].filter((c) => c.nodeType === 3).map((c) => c.textContent).join('')));
      expect(labels).toEqual(['<s>', 'a', 'g', '·ir', '·l', 'caf', '·\u00E9', '⋯']);
      // The predicted token's tooltip lists the candidates.
      const tip = await pg.locator('[data-testid=head-query-2] title').textContent();
      expect(tip).toContain('predicts next: “ir” 0.700 · “ir” 0.200 · “<0xC3>” 0.050');
      // Raw texts when prettifying is off.
      await pg.click('[data-testid=prettify]');
      await expect.poll(() => row.locator('.prediction-token').textContent()).toBe('▁g');
      expect(await row.locator('.candidate-token').allTextContents()).toEqual(['ir', '▁ir', '<0xC3>']);
      expect(p.errors).toEqual([]);
      expect(p.network()).toEqual([]);
    } finally {
      await p.close();
    }
  });

  it('a trace without predictions has no panel', async () => {
    const file = await page('nopred', handTrace(TOKENS.slice(0, 3), { layers: 1, heads: 1 }));
    const p = await openPage(browser, file);
    try {
      expect(await p.page.isVisible('[data-testid=predictions]')).toBe(false);
    } finally {
      await p.close();
    }
  });
});

describe('header and generation bar', () => {
  const name = `an-organisation-with-a-long-name/${'a-very-long-model-name-'.repeat(6)}v2`;
  const prompt = 'Once upon a time, there was a little girl named Lily who loved to play outside in the sunshine with her friends and her dog '.repeat(3);
  const n = 80;
  const P = 20;
  const trace = handTrace(
    Array.from({ length: n }, (_, i) => `▁w${i}`),
    {
      name,
      layers: 1,
      heads: 2,
      generatedFrom: P,
      generation: {
        promptLength: P,
        strategy: 'sample',
        temperature: 0.8,
        topK: 40,
        topP: 0.95,
        seed: 1234567,
        stoppedBy: 'length',
        steps: Array.from({ length: n - P }, (_, i) => ({ id: P + i + 3, probability: 1 / (i + 2) })),
      },
    },
  );

  for (const width of [1280, 640]) {
    it(`never clips its text at ${width} px: long texts are ellipsized with the full text as their tooltip`, async () => {
      const file = await page(`gen${width}`, trace, prompt);
      const p = await openPage(browser, file, { width, height: 800 });
      try {
        const { page: pg } = p;
        await pg.keyboard.press('ArrowLeft'); // step 60: the last generated token
        await expect.poll(() => pg.textContent('[data-testid=step-label]')).toBe(`step ${n - P} / ${n - P} · ${n} tokens`);
        // The step's probability: generated token 60 was chosen with p = 1/61.
        expect(await pg.textContent('[data-testid=step-readout]')).toContain(`(generated token ${n - P}, p = ${(1 / 61).toFixed(4)})`);
        const items = await pg.$$eval('.topbar > *, .topbar .model-name, [data-testid=generation-bar] > *', (els) =>
          els.map((el) => {
            const e = el as HTMLElement;
            const r = e.getBoundingClientRect();
            const style = getComputedStyle(e);
            return { text: e.textContent ?? '', title: e.title || e.closest('[title]')?.getAttribute('title') || '', cut: e.scrollWidth > e.clientWidth + 1, ellipsis: style.textOverflow === 'ellipsis', right: r.right };
          }),
        );
        expect(items.length).toBeGreaterThan(8);
        for (const it of items) {
          expect(it.right).toBeLessThanOrEqual(width + 0.5); // nothing runs off the page
          if (!it.cut) continue;
          // Cut: with an ellipsis, and the whole text in its tooltip.
          expect(it.ellipsis).toBe(true);
          expect(it.title.replace(/[“”]/g, '')).toContain(it.text.replace(/[“”]/g, '').slice(0, 20));
        }
        expect(await pg.getAttribute('[data-testid=subtitle]', 'title')).toContain(name);
        expect(await pg.getAttribute('[data-testid=source-text]', 'title')).toBe(prompt);
        expect(await pg.getAttribute('[data-testid=generation-info]', 'title')).toBe(`generated: sampled (temperature 0.8, top-k 40, top-p 0.95, seed 1234567) · ${P} prompt tokens + ${n - P} new tokens · stopped by length`);
        expect(p.errors).toEqual([]);
      } finally {
        await p.close();
      }
    });
  }
});
