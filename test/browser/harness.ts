/**
 * Real Chromium (Debian's, driven by playwright-core) for the browser tests, with every network
 * request blocked and recorded, dialogs and page errors recorded, and CSP violations reported.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { deflateRawSync } from 'node:zlib';
import { type Browser, type BrowserContext, type Page, chromium } from 'playwright-core';
import { afterAll, beforeAll, expect } from 'vitest';
import type { Trace } from '../../src/core/trace.js';
import { loadModel } from '../../src/engine/load.js';
import type { Model } from '../../src/engine/model.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderStandaloneHtml, type StandaloneOptions } from '../../src/views/html/standalone.js';
import { startServer, type RunningServer } from '../../src/server/serve.js';
import { FIXTURES } from '../helpers/reference.js';

export const ROOT = join(import.meta.dirname, '..', '..');
export const CHROMIUM = process.env.ATTNSCOPE_CHROMIUM ?? '/usr/bin/chromium';

/** Builds dist/web (type-check included) so the pages carry the current client. */
export function buildWebClient(): void {
  execFileSync(process.execPath, [join(ROOT, 'scripts', 'build-web.mjs')], { cwd: ROOT, stdio: 'pipe' });
}

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`browser tests need Chromium at ${CHROMIUM} (apt-get install chromium, or set ATTNSCOPE_CHROMIUM)`);
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
  });
}

export interface OpenedPage {
  page: Page;
  context: BrowserContext;
  /** Every request the page attempted (URL), including blocked ones. */
  requests: string[];
  /** Requests that were not file:, blob: or data: (network). */
  network(): string[];
  dialogs: string[];
  errors: string[];
  /** Console errors (CSP violations show up here). */
  consoleErrors: string[];
  close(): Promise<void>;
}

/** Collects a page's uncaught errors and console errors (CSP violations show up there). */
export function watchErrors(page: Page): { errors: string[]; consoleErrors: string[] } {
  const errors: string[] = [];
  const consoleErrors: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
  return { errors, consoleErrors };
}

/**
 * Opens an HTML file from disk with all network requests blocked, and waits for the app.
 * `init`: a script run in the page before its own (instrumentation).
 */
export async function openPage(browser: Browser, file: string, viewport = { width: 1280, height: 900 }, options: { init?: string } = {}): Promise<OpenedPage> {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const requests: string[] = [];
  const dialogs: string[] = [];
  context.on('request', (r) => requests.push(r.url()));
  await context.route('**/*', (r) => (r.request().url().startsWith('file:') ? r.continue() : r.abort()));
  if (options.init) await context.addInitScript(options.init);
  const page = await context.newPage();
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  const { errors, consoleErrors } = watchErrors(page);
  await page.goto(pathToFileURL(file).href);
  await page.waitForFunction(() => document.body.dataset.ready !== undefined, null, { timeout: 60_000 });
  const ready = await page.evaluate(() => document.body.dataset.ready);
  if (ready !== 'true') throw new Error(`page did not start: ${await page.textContent('body')} ${errors.join('; ')}`);
  return {
    page,
    context,
    requests,
    network: () => requests.filter((u) => !/^(file|blob|data):/.test(u)),
    dialogs,
    errors,
    consoleErrors,
    close: () => context.close(),
  };
}

/** Number of `<line>` elements the head view shows. */
export function lineCount(page: Page): Promise<number> {
  return page.locator('[data-testid=head-lines] line').count();
}

/** Data attributes of an element as numbers. */
export async function numericData(page: Page, selector: string): Promise<Record<string, number>> {
  return page.$eval(selector, (el) => Object.fromEntries(Object.entries((el as HTMLElement).dataset).map(([k, v]) => [k, Number(v)])));
}

/** Moves the pointer to the centre of heatmap cell (q, k) of matrix `m` of a MatrixGrid canvas (scrolling it into view). */
export async function hoverMatrixCell(page: Page, canvasTestId: string, q: number, k: number, m = 0): Promise<void> {
  const g = await numericData(page, `[data-testid=${canvasTestId}]`);
  const x0 = g.originX! + (m % g.cols!) * (g.mw! + g.gapX!);
  const y0 = g.originY! + Math.floor(m / g.cols!) * (g.mh! + g.gapY!);
  await page.locator(`[data-testid=${canvasTestId}]`).hover({ position: { x: x0 + (k + 0.5) * g.cell!, y: y0 + (q + 0.5) * g.cell! }, force: true });
}

/** Clicks the model view's cell (layer row i, head column j), scrolling it into view. */
export async function clickModelCell(page: Page, i: number, j: number): Promise<void> {
  const g = await numericData(page, '[data-testid=model-canvas]');
  await page.locator('[data-testid=model-canvas]').click({ position: { x: g.gridX! + j * (g.cw! + g.gap!) + g.cw! / 2, y: g.gridY! + i * (g.ch! + g.gap!) + g.ch! / 2 } });
}

/** A trace made with the model at `dir` (undefined: the default, stories260k) by `run`; the model is disposed of after. */
export async function traceWith(dir: string | undefined, run: (model: Model) => Promise<Trace>): Promise<Trace> {
  const model = await loadModel(dir);
  try {
    return await run(model);
  } finally {
    await model.dispose();
  }
}

/** Writes the standalone page of `trace` to `file` (the view bundle built, deflate level 6 unless `options` says); returns `file`. */
export async function writeStandalonePage(file: string, trace: Trace, options: Omit<StandaloneOptions, 'bundle'> = {}): Promise<string> {
  const result = await renderStandaloneHtml(trace, { deflate: (d) => deflateRawSync(d, { level: 6 }), ...options, bundle: await loadViewBundle() });
  writeFileSync(file, result.html);
  return file;
}

/**
 * Exports `view` of an opened page as SVG and PNG: the SVG's file name matches `fileName`
 * (default attnscope-stories260k-<view>-….svg) and its text is an <svg>, the PNG has PNG's
 * signature, and the export status is empty. Returns the SVG's text.
 */
export async function expectViewExports(page: Page, view: string, fileName = new RegExp(`^attnscope-stories260k-${view}-.*\\.svg$`)): Promise<string> {
  const [svg] = await Promise.all([page.waitForEvent('download'), page.click(`[data-testid=${view}-export-svg]`)]);
  const text = readFileSync((await svg.path())!, 'utf8');
  expect(svg.suggestedFilename()).toMatch(fileName);
  expect(text.startsWith('<svg')).toBe(true);
  const [png] = await Promise.all([page.waitForEvent('download'), page.click(`[data-testid=${view}-export-png]`)]);
  expect([...readFileSync((await png.path())!).subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  expect(await page.textContent(`[data-testid=${view}-export-status]`)).toBe('');
  return text;
}

/** A standalone page written for a trace, with a Chromium to open it in (see standalonePageSuite). */
export interface StandalonePageSuite {
  browser(): Browser;
  trace(): Trace;
  /** The HTML file. */
  file(): string;
}

/**
 * Registers beforeAll/afterAll that build the web client, launch Chromium, trace `text` with the
 * default model (stories260k) or `trace` and write its standalone page into a temporary folder
 * (removed afterwards).
 */
export function standalonePageSuite(name: string, text: string, options: { trace?: (model: Model) => Promise<Trace>; theme?: 'light' | 'dark' } = {}): StandalonePageSuite {
  const tmp = mkdtempSync(join(tmpdir(), `attnscope-${name}-`));
  let browser: Browser | undefined;
  let trace: Trace | undefined;
  const file = join(tmp, `${name}.html`);
  beforeAll(async () => {
    buildWebClient();
    browser = await launchChromium();
    trace = await traceWith(undefined, (model) => (options.trace ? options.trace(model) : model.trace(text)));
    await writeStandalonePage(file, trace, { text, theme: options.theme });
  });
  afterAll(async () => {
    await browser?.close();
    rmSync(tmp, { recursive: true, force: true });
  });
  return { browser: () => browser!, trace: () => trace!, file: () => file };
}

/** The text of a <select>'s chosen option. */
export function selectedOption(page: Page, testid: string): Promise<string> {
  return page.$eval(`[data-testid=${testid}]`, (el) => (el as HTMLSelectElement).selectedOptions[0]?.textContent ?? '');
}

/**
 * After a click that should open one head: the heatmap tab is shown on (layer, head) in one-head
 * mode, and its cell (query 9, key 4) reads that head's weight in the trace.
 */
export async function expectHeadHeatmapOpened(page: Page, trace: Trace, layer: number, head: number): Promise<void> {
  await page.waitForSelector('[data-testid=heatmap-view]:not([hidden])');
  expect(await page.getAttribute('[data-testid=tab-heatmap]', 'aria-selected')).toBe('true');
  expect(await selectedOption(page, 'heatmap-layer')).toBe(String(layer));
  expect(await selectedOption(page, 'heatmap-mode')).toBe('one head');
  expect(await selectedOption(page, 'heatmap-head')).toBe(String(head));
  const n = trace.tokens.length;
  await hoverMatrixCell(page, 'heatmap-canvas', 9, 4);
  const w = trace.attention.self!.layers[layer]![(head * n + 9) * n + 4]!;
  await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-value')).toBe(String(w));
}

/** Opens `file` (openPage), runs `use` on it and closes the page's context whatever happens. */
export async function withPage(
  browser: Browser,
  file: string,
  use: (page: Page, opened: OpenedPage) => Promise<void>,
  viewport?: { width: number; height: number },
): Promise<void> {
  const opened = await openPage(browser, file, viewport);
  try {
    await use(opened.page, opened);
  } finally {
    await opened.close();
  }
}

/** A page of the app of `attnscope serve` (see appServerSuite). */
export interface AppPage {
  page: Page;
  /** Requests to anywhere but the server (blob: and data: URLs are the page's own). */
  foreign: string[];
  errors: string[];
  consoleErrors: string[];
  close(): Promise<void>;
}

/** The real server of `attnscope serve` over test/fixtures, with a Chromium to open its app in. */
export interface AppServerSuite {
  server(): RunningServer;
  browser(): Browser;
  /** A temporary folder removed afterwards (the server's HF_HOME is inside it). */
  scratch(): string;
  /** Opens `url` (the app) in a new context with requests outside the server refused, and waits for the app. */
  open(url: string, options?: { viewport?: { width: number; height: number }; init?: string }): Promise<AppPage>;
}

/**
 * Registers beforeAll/afterAll that build the web client, start `attnscope serve` on a free port
 * with test/fixtures as its models folder (offline, no graph cache, its own HF_HOME) and launch
 * Chromium; everything is stopped and removed afterwards.
 */
export function appServerSuite(name: string): AppServerSuite {
  let browser: Browser | undefined;
  let server: RunningServer | undefined;
  let scratch: string | undefined;
  beforeAll(async () => {
    buildWebClient();
    scratch = mkdtempSync(join(tmpdir(), `attnscope-${name}-`));
    server = await startServer({ port: 0, folders: [FIXTURES], hfCache: false, graphCache: false, env: { HF_HUB_OFFLINE: '1', HF_HOME: join(scratch, 'hf-home') } });
    browser = await launchChromium();
  }, 300_000);
  afterAll(async () => {
    await browser?.close();
    await server?.close();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });
  const open = async (url: string, options: { viewport?: { width: number; height: number }; init?: string } = {}): Promise<AppPage> => {
    const context = await browser!.newContext({ viewport: options.viewport ?? { width: 1280, height: 900 }, acceptDownloads: true });
    const origin = new URL(server!.url).origin;
    const foreign: string[] = [];
    await context.route('**/*', (r) => {
      const u = r.request().url();
      if (u.startsWith('blob:') || u.startsWith('data:') || new URL(u).origin === origin) return r.continue();
      foreign.push(u);
      return r.abort();
    });
    if (options.init) await context.addInitScript(options.init);
    const page = await context.newPage();
    const { errors, consoleErrors } = watchErrors(page);
    await page.goto(url);
    await page.waitForFunction(() => document.body.dataset.ready !== undefined, null, { timeout: 60_000 });
    return { page, foreign, errors, consoleErrors, close: () => context.close() };
  };
  return { server: () => server!, browser: () => browser!, scratch: () => scratch!, open };
}

/**
 * Pixels of a PNG file decoded by the browser: its size, how many pixels differ from the first one
 * (red, green, blue or alpha), and how many colours it has (counted up to 5,000).
 */
export async function pngPixels(page: Page, file: string): Promise<{ width: number; height: number; differing: number; colours: number }> {
  const b64 = readFileSync(file).toString('base64');
  return page.evaluate(async (data) => {
    const img = new Image();
    img.src = `data:image/png;base64,${data}`;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const g = c.getContext('2d')!;
    g.drawImage(img, 0, 0);
    const px = g.getImageData(0, 0, c.width, c.height).data;
    let differing = 0;
    const colours = new Set<number>();
    for (let i = 0; i < px.length; i += 4) {
      if (px[i] !== px[0] || px[i + 1] !== px[1] || px[i + 2] !== px[2] || px[i + 3] !== px[3]) differing++;
      if (colours.size < 5000) colours.add((px[i]! << 24) | (px[i + 1]! << 16) | (px[i + 2]! << 8) | px[i + 3]!);
    }
    return { width: c.width, height: c.height, differing, colours: colours.size };
  }, b64);
}
