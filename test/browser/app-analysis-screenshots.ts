/**
 * Regenerates the README's screenshot of the analysis views in `attnscope serve`
 * (docs/images/serve-analysis.png: the embedded model, the saliency tab of a short story with a
 * token hovered) against the real server, in real Chromium.
 *
 *   npm run build && npx tsx test/browser/app-analysis-screenshots.ts [outDir]
 *
 * Review the image before committing it.
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
  const scratch = mkdtempSync(join(tmpdir(), 'attnscope-analysis-shots-'));
  const server = await startServer({ port: 0, folders: [FIXTURES], hfCache: false, graphCache: false, env: { HF_HUB_OFFLINE: '1', HF_HOME: join(scratch, 'hf-home') } });
  const browser = await launchChromium();
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 700 }, colorScheme: 'light' });
    const page = await context.newPage();
    const url = new URL(server.url);
    url.searchParams.set('text', 'Lily saw a big dog. She gave the dog a');
    url.searchParams.set('view', 'saliency');
    await page.goto(url.href);
    await page.waitForSelector('[data-testid=side-a] [data-testid=saliency-host][data-state=done]', { timeout: 180_000 });
    await page.waitForTimeout(300);
    await page.locator('[data-testid=saliency-svg] rect.saliency-cell[data-row="2"][data-position="8"]').hover({ force: true });
    await page.waitForTimeout(200);
    await page.screenshot({ path: join(out, 'serve-analysis.png') });
  } finally {
    await browser.close();
    await server.close();
    rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
