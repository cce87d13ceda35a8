/**
 * A Hub id typed into the app's model picker, in real Chromium against the real server and a
 * local stand-in for the Hub (test/helpers/fake-hub.ts, the Hub's URL layout): the download's
 * progress is shown in the page, then the model's attention equals PyTorch's (the bert fixture's
 * reference.json; its weight file carries an extra unused tensor so that it is large enough for a
 * progress bar). A repository the Hub does not have, a Hub that cannot be reached and a server
 * started offline are refused in the page with one clear line.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSafetensors, writeSafetensors, type SafetensorsTensorInput } from '../../src/io/safetensors.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { fixtureFiles, startFakeHub, type FakeHub } from '../helpers/fake-hub.js';
import { FIXTURES, readReference } from '../helpers/reference.js';
import { buildWebClient, launchChromium, numericData, watchErrors } from './harness.js';

const REPO = 'test-org/tiny-bert-big';
let tmp: string;
let hub: FakeHub;
let server: RunningServer;
let browser: Browser;

/** The bert fixture's files, its weights with an unused 12 MB tensor added (downloads of 10 MB and more get a progress bar). */
async function bigBertFiles(): Promise<Map<string, Buffer>> {
  const files = await fixtureFiles(join(FIXTURES, 'bert'));
  const st = await openSafetensors(join(FIXTURES, 'bert', 'model.safetensors'));
  const tensors: SafetensorsTensorInput[] = [];
  try {
    for (const name of st.names()) {
      const t = await st.get(name);
      tensors.push({ name, dtype: 'F32', shape: [...t.shape], data: t.data as Float32Array });
    }
  } finally {
    await st.close();
  }
  tensors.push({ name: 'unused_padding', dtype: 'F32', shape: [3_000_000], data: new Float32Array(3_000_000).fill(0.5) });
  const out = join(tmp, 'model.safetensors');
  await writeSafetensors(out, tensors, { format: 'pt' });
  files.set('model.safetensors', readFileSync(out));
  return files;
}

beforeAll(async () => {
  buildWebClient();
  tmp = mkdtempSync(join(tmpdir(), 'attnscope-app-hub-'));
  hub = await startFakeHub({ [REPO]: { files: await bigBertFiles() }, 'test-org/second': { files: await fixtureFiles(join(FIXTURES, 'bert')) } });
  server = await startServer({ port: 0, folders: [], graphCache: false, env: { HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(tmp, 'hub'), HF_HOME: join(tmp, 'hf-home') } });
  browser = await launchChromium();
}, 300_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  await hub?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

/** Every text the status line showed (recorded in the page as it changes). */
const RECORD_STATUS = `
window.__statuses = [];
new MutationObserver(() => {
  const s = document.querySelector('[data-testid=status]');
  const t = s ? s.textContent : '';
  if (t && window.__statuses[window.__statuses.length - 1] !== t) window.__statuses.push(t);
}).observe(document, { subtree: true, childList: true, characterData: true });
`;

async function openApp(url: string): Promise<{ page: Page; errors: string[]; close(): Promise<void> }> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const origin = new URL(url).origin;
  await context.route('**/*', (r) => (/^(blob|data):/.test(r.request().url()) || new URL(r.request().url()).origin === origin ? r.continue() : r.abort()));
  await context.addInitScript(RECORD_STATUS);
  const page = await context.newPage();
  const { errors } = watchErrors(page);
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.trace === 'done', null, { timeout: 90_000 });
  return { page, errors, close: () => context.close() };
}

/** Types `id` into the picker's search and presses Enter. */
async function typeHubId(page: Page, id: string): Promise<void> {
  await page.click('[data-testid=model-button]');
  await page.fill('[data-testid=model-search]', id);
  await page.press('[data-testid=model-search]', 'Enter');
}

describe('attnscope serve: a Hub id typed into the picker', () => {
  const ref = readReference('bert').inputs.find((i) => i.id === 'short')!;

  it('downloads it with progress shown in the page, then shows PyTorch’s attention; a missing repository and an unreachable Hub get one clear line', async () => {
    const url = new URL(server.url);
    url.searchParams.set('text', ref.text);
    url.searchParams.set('view', 'heatmap');
    url.searchParams.set('layer', '1');
    url.searchParams.set('head', '2');
    const app = await openApp(url.href);
    const { page } = app;
    try {
      await page.click('[data-testid=model-button]');
      await page.fill('[data-testid=model-search]', REPO);
      await expect.poll(() => page.textContent('[data-testid=picker-hint]')).toMatch(/Enter loads “test-org\/tiny-bert-big” from the Hugging Face Hub/);
      await page.press('[data-testid=model-search]', 'Enter');
      await page.waitForFunction(
        (m) => document.body.dataset.trace === 'done' && (JSON.parse(document.body.dataset.traced ?? '{}') as { model?: string }).model === m,
        REPO,
        { timeout: 120_000 },
      );
      const statuses = await page.evaluate(() => (window as unknown as { __statuses: string[] }).__statuses);
      // The download bar as the page showed it: the weight file, a percentage, the bytes.
      const download = statuses.filter((s) => /^downloading model\.safetensors .*\d+% .*MB/.test(s));
      expect(download.length, statuses.join(' | ')).toBeGreaterThan(0);
      expect(statuses.some((s) => s.includes(`opening ${REPO}`))).toBe(true);
      expect(await page.textContent('[data-testid=model-current]')).toBe(REPO);
      expect(hub.requests.some((r) => r.path.includes(`/${REPO}/resolve/main/config.json`))).toBe(true);

      // PyTorch's weight under the pointer (layer 1, head 2; the unused tensor changed nothing).
      const n = ref.tokens.length;
      const g = await numericData(page, '[data-testid=heatmap-canvas]');
      for (const [q, k] of [[n - 1, 1], [3, 5]] as const) {
        await page.locator('[data-testid=heatmap-canvas]').hover({ position: { x: g.originX! + (k + 0.5) * g.cell!, y: g.originY! + (q + 0.5) * g.cell! }, force: true });
        await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-q')).toBe(String(q));
        const shown = Number(await page.getAttribute('[data-testid=heatmap-readout]', 'data-value'));
        expect(Math.abs(shown - (ref.attentions as number[][][][])[1]![2]![q]![k]!)).toBeLessThanOrEqual(1e-5);
      }

      // A repository the Hub does not have.
      await typeHubId(page, 'test-org/missing');
      await page.waitForSelector('[data-testid=trace-error]:not([hidden])');
      const missing = (await page.textContent('[data-testid=trace-error]'))!;
      expect(missing).toMatch(/test-org\/missing/);
      expect(missing).not.toMatch(/\n/);

      // The Hub cannot be reached (its server is gone): the page says so and what to check.
      await hub.close();
      await typeHubId(page, 'test-org/second');
      await expect.poll(() => page.textContent('[data-testid=trace-error]'), { timeout: 60_000 }).toMatch(/cannot reach the Hugging Face Hub .*test-org\/second/);
      expect(app.errors).toEqual([]);
    } finally {
      await app.close();
    }
  });

  it('a server started offline says so in the picker and refuses a Hub id not in the cache with one line', async () => {
    const offline = await startServer({ port: 0, folders: [], graphCache: false, env: { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: join(tmp, 'hub-offline'), HF_HOME: join(tmp, 'hf-home-offline') } });
    const app = await openApp(offline.url);
    try {
      const { page } = app;
      await page.click('[data-testid=model-button]');
      await page.fill('[data-testid=model-search]', 'test-org/not-cached');
      await expect.poll(() => page.textContent('[data-testid=picker-hint]')).toMatch(/the server is offline \(HF_HUB_OFFLINE\)/);
      await page.press('[data-testid=model-search]', 'Enter');
      await page.waitForSelector('[data-testid=trace-error]:not([hidden])');
      expect(await page.textContent('[data-testid=trace-error]')).toMatch(/test-org\/not-cached is not in the Hugging Face cache and the server is offline/);
      expect(app.errors).toEqual([]);
    } finally {
      await app.close();
      await offline.close();
    }
  });
});
