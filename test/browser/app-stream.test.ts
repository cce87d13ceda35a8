/**
 * The app draws the first layer before the model has finished (issue 11 point 3), in real Chromium
 * against the real server: the server holds every run after its first layer (TraceService's
 * onLayerSent hook) until the page shows that layer; only then may layer 1 be computed. Without
 * per-layer streaming the page would wait for a run that waits for the page, and the test would time
 * out; no timing is asserted.
 */
import type { Browser } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/serve.js';
import { appServerSuite, watchErrors } from './harness.js';

const suite = appServerSuite('app-stream');
let browser: Browser;
let server: RunningServer;
beforeAll(() => {
  [browser, server] = [suite.browser(), suite.server()];
});

describe('attnscope serve: layer by layer in the app', () => {
  // An encoder (bert) and the embedded default model (stories260k, causal: its first trace of a
  // text streams too, then seeds the key/value cache for appended edits).
  it.each([
    { model: 'folder:0/bert', layers: 2 },
    { model: null, layers: 5 },
  ])('shows the first layer while the server holds the run before layer 1 ($model, default when null)', async ({ model, layers }) => {
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
      const { errors } = watchErrors(page);
      const text = 'the first layer comes before the second';
      const url = new URL(server.url);
      if (model) url.searchParams.set('model', model);
      url.searchParams.set('text', text);
      await page.goto(url.toString());
      // The first layer is drawn while the run waits after layer 0.
      await page.waitForFunction(() => document.body.dataset.firstPaintMs !== undefined && document.body.dataset.trace === 'streaming', null, { timeout: 60_000 });
      expect(computed).toEqual([0]);
      expect(await page.locator('body').innerText()).toMatch(new RegExp(`1 of ${layers} layers on screen`));
      release();
      await page.waitForFunction((t) => document.body.dataset.trace === 'done' && JSON.parse(document.body.dataset.traced ?? '{}').text === t, text, { timeout: 60_000 });
      expect(computed).toEqual(Array.from({ length: layers }, (_, i) => i));
      expect(errors).toEqual([]);
    } finally {
      release();
      server.traces.onLayerSent = undefined;
      await context.close();
    }
  });
});
