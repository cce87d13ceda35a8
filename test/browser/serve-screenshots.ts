/**
 * Regenerates the README's screenshots of `attnscope serve` (docs/images/serve-app.png: the app on
 * the embedded model, head view, a query hovered; docs/images/serve-compare.png: compare mode,
 * one model on two texts, heatmaps side by side and the compare panel) against the real server,
 * in real Chromium.
 *
 *   npm run build && npx tsx test/browser/serve-screenshots.ts [outDir]
 *
 * Review the images before committing them.
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../../src/server/serve.js';
import { FIXTURES } from '../helpers/reference.js';
import { ROOT, launchChromium } from './harness.js';

async function main(): Promise<void> {
  const out = process.argv[2] ?? join(ROOT, 'docs', 'images');
  mkdirSync(out, { recursive: true });
  const scratch = mkdtempSync(join(tmpdir(), 'attnscope-serve-shots-'));
  const server = await startServer({ port: 0, folders: [FIXTURES], hfCache: false, graphCache: false, env: { HF_HUB_OFFLINE: '1', HF_HOME: join(scratch, 'hf-home') } });
  const browser = await launchChromium();
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 820 }, colorScheme: 'light' });
    const page = await context.newPage();
    const done = (sel = 'body') => page.waitForFunction((s) => document.querySelector<HTMLElement>(s)?.dataset.trace === 'done', sel, { timeout: 120_000 });

    // The app on the embedded model, head view, a query hovered.
    await page.goto(`${server.url}?text=${encodeURIComponent('Once upon a time, there was a little girl named Lily. She loved to play outside.')}&layer=2`);
    await done();
    await page.waitForTimeout(400);
    await page.locator('[data-testid=head-query-8]').hover();
    await page.waitForTimeout(200);
    await page.screenshot({ path: join(out, 'serve-app.png') });

    // Compare mode: one model, two texts of equal token length, the heatmap of one head.
    const url = new URL(server.url);
    url.searchParams.set('text', 'The girl went to the park because she was happy.');
    url.searchParams.set('compare', '1');
    url.searchParams.set('textB', 'The boy went to the park because he was happy.');
    url.searchParams.set('view', 'heatmap');
    url.searchParams.set('layer', '3');
    url.searchParams.set('head', '5');
    await page.setViewportSize({ width: 1440, height: 1100 });
    await page.goto(url.href);
    await done('[data-testid=side-a]');
    await done('[data-testid=side-b]');
    await page.waitForFunction(() => document.body.dataset.compare === 'done', null, { timeout: 60_000 });
    await page.waitForTimeout(400);
    await page.screenshot({ path: join(out, 'serve-compare.png'), fullPage: true });
    await context.close();
  } finally {
    await browser.close();
    await server.close();
    rmSync(scratch, { recursive: true, force: true });
  }
  void FIXTURES;
}

await main();
