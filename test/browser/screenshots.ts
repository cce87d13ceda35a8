/**
 * Regenerates the README's screenshots (docs/images/view-{head,model,neuron,heatmap}.png): the default
 * model's views of the sample sentence, and docs/images/view-generation.png: the head view of a
 * generation half-way through stepping — in real Chromium with the network blocked.
 *
 *   node scripts/build-web.mjs && npx tsx test/browser/screenshots.ts [outDir] [head model neuron heatmap generation]
 *
 * Review the images before committing them.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { loadModel } from '../../src/engine/load.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../../src/views/html/standalone.js';
import { ROOT, launchChromium, openPage } from './harness.js';

export const SAMPLE = 'Once upon a time, there was a little girl named Lily.';
export const PROMPT = 'Once upon a time';
const NAMES = ['head', 'model', 'neuron', 'heatmap', 'generation'];

async function main(): Promise<void> {
  const out = process.argv[2] ?? join(ROOT, 'docs', 'images');
  const only = process.argv.length > 3 ? process.argv.slice(3) : NAMES;
  for (const n of only) if (!NAMES.includes(n)) throw new Error(`unknown screenshot ${n} (expected ${NAMES.join(', ')})`);
  mkdirSync(out, { recursive: true });
  if (only.includes('generation')) await generationShot(out);
  if (only.some((n) => n !== 'generation')) await viewShots(out, only);
}

/** The head view of a 16-token generation at step 9: the newest token's attention over the tokens so far. */
async function generationShot(out: string): Promise<void> {
  const model = await loadModel();
  const trace = await model.generate(PROMPT, { maxNewTokens: 16, qk: true }).finally(() => model.dispose());
  const tmp = mkdtempSync(join(tmpdir(), 'attnscope-shots-'));
  const file = join(tmp, 'generation.html');
  const r = await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), text: PROMPT, theme: 'light', deflate: (d) => deflateRawSync(d) });
  writeFileSync(file, r.html);
  const browser = await launchChromium();
  try {
    const p = await openPage(browser, file, { width: 1180, height: 760 });
    const { page } = p;
    await page.selectOption('[data-testid=head-layer]', { label: '1' });
    // Step there as a reader would: from "all", back with ←.
    await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
    for (let i = 0; i < 8; i++) await page.keyboard.press('ArrowLeft');
    await page.mouse.move(1170, 5);
    await page.waitForTimeout(150);
    const bottom = await page.$eval('[data-testid=head-view]', (el) => {
      let b = 0;
      for (const c of el.querySelectorAll('svg, .readout, .toolbar')) b = Math.max(b, c.getBoundingClientRect().bottom);
      return b;
    });
    const path = join(out, 'view-generation.png');
    await page.screenshot({ path, clip: { x: 0, y: 0, width: 1180, height: Math.min(1400, Math.ceil(bottom) + 12) }, fullPage: true });
    console.log(`wrote ${path}`);
    await p.close();
  } finally {
    await browser.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}

async function viewShots(out: string, only: string[]): Promise<void> {
  const model = await loadModel();
  const trace = await model.trace(SAMPLE, { qk: true }).finally(() => model.dispose());
  const tmp = mkdtempSync(join(tmpdir(), 'attnscope-shots-'));
  const file = join(tmp, 'view.html');
  const r = await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), text: SAMPLE, theme: 'light', deflate: (d) => deflateRawSync(d) });
  writeFileSync(file, r.html);
  const browser = await launchChromium();
  try {
    const p = await openPage(browser, file, { width: 1180, height: 760 });
    const { page } = p;
    const shot = async (name: string, hover?: () => Promise<void>) => {
      if (!only.includes(name)) return;
      await page.mouse.move(1170, 5);
      await hover?.();
      await page.waitForTimeout(150);
      // Down to the end of the view's content.
      const bottom = await page.$eval(`[data-testid=${name}-view]`, (el) => {
        let b = 0;
        for (const c of el.querySelectorAll('svg, canvas, .readout, .toolbar')) b = Math.max(b, c.getBoundingClientRect().bottom);
        return b;
      });
      await page.screenshot({ path: join(out, `view-${name}.png`), clip: { x: 0, y: 0, width: 1180, height: Math.min(1400, Math.ceil(bottom) + 12) }, fullPage: true });
      console.log(`wrote ${join(out, `view-${name}.png`)}`);
    };
    // Head view: layer 1, the lines of "Lily" pinned.
    await page.selectOption('[data-testid=head-layer]', { label: '1' });
    const lily = trace.tokens.findIndex((t) => t.text === '▁Lily');
    await page.click(`[data-testid=head-query-${lily}]`);
    await shot('head');
    // Model view: every layer and head.
    await page.click('[data-testid=tab-model]');
    await page.waitForFunction(() => document.querySelector('[data-testid=model-canvas]')?.getAttribute('data-drawn') === 'true');
    // Model view, hovering layer 1 · head 3: its strongest query → key pairs.
    await shot('model', async () => {
      const g = await page.$eval('[data-testid=model-canvas]', (el) => ({ ...(el as HTMLElement).dataset }));
      await page.locator('[data-testid=model-canvas]').hover({ position: { x: Number(g.gridX) + 3 * (Number(g.cw) + Number(g.gap)) + Number(g.cw) / 2, y: Number(g.gridY) + Number(g.ch) + Number(g.gap) + Number(g.ch) / 2 } });
    });
    // Neuron view: (layer 1, shared with the head view) head 5, query "Lily".
    await page.click('[data-testid=tab-neuron]');
    await page.selectOption('[data-testid=neuron-head]', { label: '5' });
    await page.selectOption('[data-testid=neuron-query]', { index: lily });
    await shot('neuron');
    // Heatmap: layer 1, head 5.
    await page.click('[data-testid=tab-heatmap]');
    await page.selectOption('[data-testid=heatmap-head]', { label: '5' });
    await shot('heatmap');
    await p.close();
  } finally {
    await browser.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
