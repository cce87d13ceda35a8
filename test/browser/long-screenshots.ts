/**
 * Screenshots of the views at 8,192 tokens for the README (docs/images/long-{heatmap,heatmap-zoom,model,head}.png):
 * the embedded stories260k model (a Llama with rotary positions, trained at 512 tokens) with its
 * position limit lifted to 8,192 in a temporary copy of its config, traced with attention on demand
 * (queries, keys and score terms; no attention tensors), its standalone page opened in real Chromium
 * with the network blocked: every weight shown is computed in the page.
 *
 *   node scripts/build-web.mjs && npx tsx test/browser/long-screenshots.ts [outDir]
 *
 * Review the images before committing them.
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import type { Page } from 'playwright-core';
import { loadModel } from '../../src/engine/load.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../../src/views/html/standalone.js';
import { ROOT, launchChromium, numericData, openPage } from './harness.js';

const TOKENS = 8192;
const STORY =
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. ' +
  'One day, she saw a big red ball under a tree. She ran to get it, but a dog took it first. ' +
  'Lily was sad, so her mom gave her a hug and they went home to bake a cake. ';

async function waitTiles(page: Page): Promise<void> {
  await page.waitForSelector('[data-testid=heatmap-tiles][data-ready=true][data-overview=done]', { timeout: 300_000 });
}

async function main(): Promise<void> {
  const out = process.argv[2] ?? join(ROOT, 'docs', 'images');
  mkdirSync(out, { recursive: true });
  const tmp = mkdtempSync(join(tmpdir(), 'attnscope-long-shots-'));
  try {
    const dir = join(tmp, 'stories260k-8k');
    cpSync(join(ROOT, 'models', 'stories260k'), dir, { recursive: true });
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    config.max_position_embeddings = TOKENS;
    writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
    const model = await loadModel(dir);
    let text = STORY;
    while ((await model.tokenize(text)).length < TOKENS) text += STORY;
    const trace = await model.trace(text, { attention: 'on-demand', truncate: true }).finally(() => model.dispose());
    trace.model = { ...trace.model, name: 'stories260k (positions to 8,192)' };
    const file = join(tmp, 'long.html');
    const r = await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), view: 'heatmap', theme: 'light', title: `stories260k · ${trace.tokens.length} tokens`, maxBytes: 1e9, deflate: (d) => deflateRawSync(d, { level: 6 }) });
    writeFileSync(file, r.html);
    console.log(`page: ${trace.tokens.length} tokens, ${(r.bytes / 1e6).toFixed(1)} MB`);
    const browser = await launchChromium();
    try {
      const opened = await openPage(browser, file, { width: 1400, height: 960 });
      const { page } = opened;
      // Heatmap: layer 2, head 3, log scale, the whole matrix (bins reduced by max).
      await page.selectOption('[data-testid=heatmap-layer]', '2');
      await page.selectOption('[data-testid=heatmap-head]', '3');
      await page.click('[data-testid=heatmap-log]');
      await waitTiles(page);
      await page.screenshot({ path: join(out, 'long-heatmap.png') });
      // Zoomed to a block in the middle, full zoom: exact weights, token labels, a hovered cell.
      await page.fill('[data-testid=heatmap-goto]', '1500, 1490');
      await page.press('[data-testid=heatmap-goto]', 'Enter');
      await waitTiles(page);
      const g = await numericData(page, '[data-testid=heatmap-tiles]');
      await page.locator('[data-testid=heatmap-tiles]').hover({ position: { x: g.originX! + (1497.5 - g.viewX!) * g.scale!, y: g.originY! + (1500.5 - g.viewY!) * g.scale! } });
      await page.screenshot({ path: join(out, 'long-heatmap-zoom.png') });
      // Model view: every layer × head.
      await page.click('[data-testid=tab-model]');
      await page.waitForSelector('[data-testid=model-thumbs][data-drawn=true]', { timeout: 600_000 });
      await page.mouse.move(0, 0);
      await page.screenshot({ path: join(out, 'long-model.png') });
      // Head view: a search for "Lily", its 3rd match pinned with its top keys.
      await page.click('[data-testid=tab-head]');
      await page.fill('[data-testid=head-search]', 'Lily');
      await page.press('[data-testid=head-search]', 'Enter');
      await page.press('[data-testid=head-search]', 'Enter');
      await page.waitForTimeout(300);
      await page.screenshot({ path: join(out, 'long-head.png') });
      if (opened.errors.length) throw new Error(`page errors: ${opened.errors.join('; ')}`);
      await opened.close();
    } finally {
      await browser.close();
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
