/**
 * The app draws the first layer before the model has finished (issue 11 point 3), in real Chromium
 * against the real server: the server holds every run after its first layer (TraceService's
 * onLayerSent hook) until the page shows that layer; only then may layer 1 be computed. Without
 * per-layer streaming the page would wait for a run that waits for the page, and the test would time
 * out; no timing is asserted. A trace streamed on demand (queries and keys) keeps the shown head's
 * heatmap while the next layers arrive (issue 13.4): the page remounted on them takes over the same
 * canvas, its computed overview and the long views' worker instead of starting over.
 */
import type { Browser, BrowserContext } from 'playwright-core';
import { beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/server/serve.js';
import { appServerSuite, watchErrors } from './harness.js';
import { hoverTileCell } from './long-page.js';

const suite = appServerSuite('app-stream');
let browser: Browser;
let server: RunningServer;
beforeAll(() => {
  [browser, server] = [suite.browser(), suite.server()];
});

type Gate = { open: () => void; opened: Promise<void> };

/** Places the server's run waits at (in its onLayerSent hook) until the test opens them. */
function makeGates(n: number): Gate[] {
  return Array.from({ length: n }, () => {
    let open!: () => void;
    const opened = new Promise<void>((r) => (open = r));
    return { open, opened };
  });
}

/** The end of a test that held an on-demand run: every gate opened, the server's hooks reset, the context closed. */
async function release(gates: readonly Gate[], context: BrowserContext): Promise<void> {
  for (const g of gates) g.open();
  server.traces.onLayerSent = undefined;
  server.traces.onDemandAbove = undefined;
  await context.close();
}

/** Counts the Workers the context's pages start (window.startedWorkers). */
async function countWorkers(context: BrowserContext): Promise<void> {
  await context.addInitScript(() => {
    const w = window as unknown as { startedWorkers: number; earlyWorkers: number; Worker: typeof Worker };
    w.startedWorkers = 0;
    w.earlyWorkers = 0;
    const Base = w.Worker;
    w.Worker = class extends Base {
      constructor(url: string | URL, options?: WorkerOptions) {
        super(url, options);
        w.startedWorkers++;
        // Started by the page's first script (/early.js), before the app's own script ran.
        if (document.currentScript?.getAttribute('src')?.startsWith('/early.js')) w.earlyWorkers++;
      }
    };
  });
}

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
    let segments = 0;
    server.traces.onLayerSent = async ({ index, count }) => {
      computed.push(index);
      segments = count;
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
      // One segment per layer; with the predictions the app asks for, the final norm and head are a
      // segment of no layer where the last layer runs on the middle layers' shared session.
      expect([layers, layers + 1]).toContain(segments);
      expect(computed).toEqual(Array.from({ length: segments }, (_, i) => i));
      expect(errors).toEqual([]);
    } finally {
      release();
      server.traces.onLayerSent = undefined;
      await context.close();
    }
  });

  it('keeps the heatmap of the shown head, its overview and worker, while layers arrive on demand (stories260k, q/k streamed)', async () => {
    // Segment 0 sends layer 0's queries and keys, segment 1 layer 1's: each is held until the page has done what the test checks.
    const computed: number[] = [];
    const gates = makeGates(2);
    server.traces.onDemandAbove = 0;
    server.traces.onLayerSent = async ({ index, preview }) => {
      // The head preview before segment 0 goes on at once (the next test holds it).
      if (preview) return;
      computed.push(index);
      await gates[index]?.opened;
    };
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    // Workers the page starts (the long views' worker is one per source, kept across remounts).
    await countWorkers(context);
    try {
      const page = await context.newPage();
      const { errors } = watchErrors(page);
      const text = Array.from({ length: 6 }, (_, i) => `line ${i}: the first layer comes before the second, and the heatmap stays.`).join(' ');
      const url = new URL(server.url);
      url.searchParams.set('text', text);
      url.searchParams.set('view', 'heatmap');
      await page.goto(url.toString());
      const canvas = '[data-testid=heatmap-tiles]';
      // The heatmap canvas now: whether it is the one marked when layer 0 was drawn, its overview, cells computed, workers started.
      const heatmapNow = () =>
        page.evaluate((c) => {
          const el = document.querySelector<HTMLCanvasElement>(c)!;
          return { same: (el as unknown as { firstCanvas?: boolean }).firstCanvas === true, overview: el.dataset.overview, cellsRead: Number(el.dataset.cellsRead), workers: (window as unknown as { startedWorkers: number }).startedWorkers };
        }, canvas);
      // Layer 0's heatmap (head 0; after its head preview) has its whole overview while the run is held after layer 0.
      await page.waitForFunction(() => /1 of 5 layers on screen/.test(document.body.innerText), null, { timeout: 60_000 });
      await page.waitForFunction((c) => document.querySelector<HTMLElement>(c)?.dataset.overview === 'done', canvas, { timeout: 60_000 });
      expect(computed).toEqual([0]);
      const first = await page.evaluate((c) => {
        const el = document.querySelector<HTMLCanvasElement>(c)!;
        (el as unknown as { firstCanvas: boolean }).firstCanvas = true;
        return { cellsRead: Number(el.dataset.cellsRead), nq: Number(el.dataset.nq), workers: (window as unknown as { startedWorkers: number }).startedWorkers };
      }, canvas);
      expect(first.nq).toBeGreaterThan(100);
      expect(first.cellsRead).toBeGreaterThan(0);
      expect(first.workers).toBeGreaterThan(0);
      // Layer 1 arrives: the page is mounted again on two layers, and shows the same canvas, overview done, nothing computed again.
      gates[0]!.open();
      await page.waitForFunction(() => /2 of 5 layers on screen/.test(document.body.innerText), null, { timeout: 60_000 });
      expect(await heatmapNow()).toEqual({ same: true, overview: 'done', cellsRead: first.cellsRead, workers: first.workers });
      gates[1]!.open();
      await page.waitForFunction((t) => document.body.dataset.trace === 'done' && JSON.parse(document.body.dataset.traced ?? '{}').text === t, text, { timeout: 60_000 });
      expect(await heatmapNow()).toEqual({ same: true, overview: 'done', cellsRead: first.cellsRead, workers: first.workers });
      // Another layer shown: a matrix of its own, computed from layer 3's queries and keys.
      await page.selectOption('[data-testid=heatmap-layer]', '3');
      await page.waitForFunction(
        (c) => document.querySelector<HTMLElement>('[data-testid=heatmap-readout]')?.innerText.startsWith('layer 3') && document.querySelector<HTMLElement>(c)?.dataset.overview === 'done',
        canvas,
        { timeout: 60_000 },
      );
      expect(errors).toEqual([]);
    } finally {
      await release(gates, context);
    }
  });

  it("shares a trace's overview between two warm worker threads, which the next trace on the page takes again; the page's readouts are that trace's only (stories260k, on demand)", async () => {
    server.traces.onDemandAbove = 0;
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    await countWorkers(context);
    try {
      const page = await context.newPage();
      const { errors } = watchErrors(page);
      const texts = [0, 1].map((t) => Array.from({ length: 5 }, (_, i) => `text ${t}, line ${i}: the overview is shared by two workers of the page.`).join(' '));
      const url = new URL(server.url);
      url.searchParams.set('text', texts[0]!);
      url.searchParams.set('view', 'heatmap');
      await page.goto(url.toString());
      const canvas = '[data-testid=heatmap-tiles]';
      /** Once the trace of `text` is in and its heatmap has nothing left to compute: workers started, the lanes layers were sent to, the readouts' first start and the worker jobs measured. */
      const settled = async (text: string) => {
        await page.waitForFunction(
          ([t, c]) => document.body.dataset.trace === 'done' && JSON.parse(document.body.dataset.traced ?? '{}').text === t && document.querySelector<HTMLElement>(c!)?.dataset.ready === 'true',
          [text, canvas],
          { timeout: 60_000 },
        );
        return page.evaluate(() => {
          const entries = performance.getEntries().filter((e) => e.name.startsWith('attnscope:'));
          const lanes = new Set(performance.getEntriesByName('attnscope:worker-layer-sent').map((e) => ((e as PerformanceMark).detail as { lane: number }).lane));
          const w = window as unknown as { startedWorkers: number; earlyWorkers: number; attnscopeEarlyWorkers?: Worker[] };
          return {
            workers: w.startedWorkers,
            early: w.earlyWorkers,
            earlyLeft: w.attnscopeEarlyWorkers?.length,
            lanes: [...lanes].sort(),
            first: Math.min(...entries.map((e) => e.startTime)),
            jobs: performance.getEntriesByName('attnscope:worker-job').length,
            cores: navigator.hardwareConcurrency,
          };
        });
      };
      const a = await settled(texts[0]!);
      // Where the machine has a second core, the overview's strips went to two workers.
      expect(a.lanes).toEqual(a.cores > 1 ? [0, 1] : [0]);
      expect(a.jobs).toBeGreaterThan(0);
      expect(a.workers).toBe(a.cores > 1 ? 2 : 1);
      // They are the threads the page's first script started before the app's script had run, all taken by the app.
      expect(a.early).toBe(a.workers);
      expect(a.earlyLeft).toBe(0);
      // A new text on the same page.
      const typedAt = await page.evaluate(() => performance.now());
      await page.fill('[data-testid=text-input]', texts[1]!);
      const b = await settled(texts[1]!);
      // Its views computed in the threads already started; the readouts are of this trace only (the first trace's are cleared).
      expect(b.workers).toBe(a.workers);
      expect(b.lanes).toEqual(a.lanes);
      expect(b.jobs).toBeGreaterThan(0);
      expect(b.first).toBeGreaterThanOrEqual(typedAt);
      expect(errors).toEqual([]);
    } finally {
      await release([], context);
    }
  });

  it("draws the shown head from its preview before layer 0 is computed, labelled as the model's head, the same weights as from the whole layer after (stories260k, head 1); tells the server when it is drawn", async () => {
    const events: string[] = [];
    // The page's word that its first view is drawn (POST /api/trace/drawn), as the server got it.
    const told: string[] = [];
    const drawn = server.traces.drawn.bind(server.traces);
    server.traces.drawn = (run) => {
      told.push(run);
      return drawn(run);
    };
    // After the preview, after segment 0.
    const gates = makeGates(2);
    server.traces.onDemandAbove = 0;
    server.traces.onLayerSent = async ({ index, preview }) => {
      events.push(preview ? 'preview' : `segment ${index}`);
      await (preview ? gates[0] : index === 0 ? gates[1] : undefined)?.opened;
    };
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    try {
      const page = await context.newPage();
      const { errors } = watchErrors(page);
      const text = Array.from({ length: 4 }, (_, i) => `line ${i}: one head of the first layer comes before the whole layer.`).join(' ');
      const url = new URL(server.url);
      url.searchParams.set('text', text);
      url.searchParams.set('view', 'heatmap');
      url.searchParams.set('head', '1');
      await page.goto(url.toString());
      const canvas = '[data-testid=heatmap-tiles]';
      // Held after the preview: no segment computed, the preview's heatmap drawn whole.
      await page.waitForFunction((c) => document.querySelector<HTMLElement>(c)?.dataset.overview === 'done', canvas, { timeout: 60_000 });
      expect(events).toEqual(['preview']);
      expect(await page.locator('body').innerText()).toMatch(/head 1 of layer 0 on screen/);
      const nq = Number(await page.getAttribute(canvas, 'data-nq'));
      expect(nq).toBeGreaterThan(50);
      const cells = [[10, 0], [10, 10], [20, 3]] as const;
      const fromPreview: number[] = [];
      for (const [q, k] of cells) fromPreview.push(await hoverTileCell(page, q, k));
      expect(fromPreview.every((v) => v > 0 && v <= 1)).toBe(true);
      // The preview's one head is named as the model's head 1: the head list and the hovered cell's readout.
      const headShown = () => page.$eval('[data-testid=heatmap-head]', (el) => [...(el as HTMLSelectElement).options].map((o) => `${o.selected ? '*' : ''}${o.textContent}`).join(' '));
      expect(await headShown()).toBe('*1');
      expect(await page.textContent('[data-testid=heatmap-readout]')).toContain('head 1:');
      // The page said its first view is drawn, naming the run of its trace answer.
      await expect.poll(() => told.length).toBe(1);
      expect(told[0]).toMatch(/^[0-9a-f-]{36}$/);
      // Segment 0 (every head of layer 0): the page mounted on it shows head 1, the same weights.
      gates[0]!.open();
      await page.waitForFunction(() => /1 of 5 layers on screen/.test(document.body.innerText), null, { timeout: 60_000 });
      await page.waitForFunction((c) => document.querySelector<HTMLElement>(c)?.dataset.overview === 'done', canvas, { timeout: 60_000 });
      expect(events).toEqual(['preview', 'segment 0']);
      expect(await page.inputValue('[data-testid=heatmap-head]')).toBe('1');
      expect(await headShown()).toMatch(/^0 \*1 2 3/);
      const fromLayer: number[] = [];
      for (const [q, k] of cells) fromLayer.push(await hoverTileCell(page, q, k));
      expect(fromLayer).toEqual(fromPreview);
      expect(await page.textContent('[data-testid=heatmap-readout]')).toContain('head 1:');
      // Once per trace.
      expect(told).toHaveLength(1);
      gates[1]!.open();
      await page.waitForFunction((t) => document.body.dataset.trace === 'done' && JSON.parse(document.body.dataset.traced ?? '{}').text === t, text, { timeout: 60_000 });
      expect(errors).toEqual([]);
    } finally {
      server.traces.drawn = drawn;
      await release(gates, context);
    }
  });
});
