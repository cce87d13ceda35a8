/**
 * The app draws the first layer before the model has finished (issue 11 point 3), in real Chromium
 * against the real server: the server holds every run after its first layer (TraceService's
 * onLayerSent hook) until the page shows that layer; only then may layer 1 be computed. Without
 * per-layer streaming the page would wait for a run that waits for the page, and the test would time
 * out; no timing is asserted.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURES } from '../helpers/reference.js';
import { buildWebClient, launchChromium } from './harness.js';

let browser: Browser;
let server: RunningServer;
let scratch: string;

beforeAll(async () => {
  buildWebClient();
  scratch = mkdtempSync(join(tmpdir(), 'attnscope-app-stream-'));
  server = await startServer({ port: 0, folders: [FIXTURES], hfCache: false, graphCache: false, env: { HF_HUB_OFFLINE: '1', HF_HOME: join(scratch, 'hf-home') } });
  browser = await launchChromium();
}, 300_000);

afterAll(async () => {
  await browser?.close();
  await server?.close();
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe('attnscope serve: layer by layer in the app', () => {
  it('shows the first layer while the server holds the run before layer 1', async () => {
    const computed: number[] = [];
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    server.traces.onLayerSent = async ({ index }) => {
      computed.push(index);
      if (index === 0) await released;
    };
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    try {
      const page = await context.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      const text = 'the first layer comes before the second';
      const url = new URL(server.url);
      url.searchParams.set('model', 'folder:0/bert');
      url.searchParams.set('text', text);
      await page.goto(url.toString());
      // The first layer is drawn while the run waits after layer 0.
      await page.waitForFunction(() => document.body.dataset.firstPaintMs !== undefined && document.body.dataset.trace === 'streaming', null, { timeout: 60_000 });
      expect(computed).toEqual([0]);
      expect(await page.locator('body').innerText()).toMatch(/1 of 2 layers on screen/);
      release();
      await page.waitForFunction((t) => document.body.dataset.trace === 'done' && JSON.parse(document.body.dataset.traced ?? '{}').text === t, text, { timeout: 60_000 });
      expect(computed).toEqual([0, 1]);
      expect(errors).toEqual([]);
    } finally {
      release();
      server.traces.onLayerSent = undefined;
      await context.close();
    }
  });
});
