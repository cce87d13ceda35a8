/**
 * Real Chromium (Debian's, driven by playwright-core) for the browser tests, with every network
 * request blocked and recorded, dialogs and page errors recorded, and CSP violations reported.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { type Browser, type BrowserContext, type Page, chromium } from 'playwright-core';

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

/** Opens an HTML file from disk with all network requests blocked, and waits for the app. */
export async function openPage(browser: Browser, file: string, viewport = { width: 1280, height: 900 }): Promise<OpenedPage> {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const requests: string[] = [];
  const dialogs: string[] = [];
  const errors: string[] = [];
  const consoleErrors: string[] = [];
  context.on('request', (r) => requests.push(r.url()));
  await context.route('**/*', (r) => (r.request().url().startsWith('file:') ? r.continue() : r.abort()));
  const page = await context.newPage();
  page.on('dialog', (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(m.text());
  });
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
