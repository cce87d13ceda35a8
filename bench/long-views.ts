/**
 * The long-input views (issue 13.3) at 2,048 and 8,192 tokens: what they compute and how long it
 * takes, on a synthetic trace in the on-demand form (bench/long-trace.ts: 4 layers × 4 heads, head
 * dim 64, causal; attention computed from q/k by src/core/attention-on-demand.ts, as in the page).
 *
 *   npm run build && npx tsx bench/long-views.ts [--tokens 2048,8192] [--no-browser] [--no-node] [--runs 3]
 *
 * Node (the same code the page runs, median wall and CPU time of --runs): the heatmap's overview of one head (bins by
 * max and mean, streamed), one band of full-zoom tiles (256 rows), one cell (hover), one 64-row
 * top-k band (head view), every head's thumbnail (model view), and the memory each holds against
 * one dense head (n² float32); each with the WebAssembly kernel and with the JavaScript loops.
 * Chromium (the standalone page, network blocked): page ready, the overview drawn, a go-to block
 * drawn at full zoom, the model view's thumbnails drawn, the JavaScript heap after them
 * (performance.memory) and the page thread's longest task and total time beyond 50 ms in its tasks
 * from the page ready on, while the views computed (PerformanceObserver 'longtask'), three ways in the same run: the page as shipped
 * (worker + WebAssembly), everything on the page's thread with WebAssembly (no Worker), and on the
 * page's thread with the JavaScript loops (no Worker, no WebAssembly: the page before both).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { deflateRawSync } from 'node:zlib';
import { chromium } from 'playwright-core';
import { attentionSource } from '../src/core/attention-on-demand.js';
import { loadViewBundle } from '../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../src/views/html/standalone.js';
import { topKeys } from '../src/views/layout/head-long.js';
import { type Bins, TILE, binAll, blockReader, keyRange, overviewRegion, runBins, thumbnailBins, thumbnailRowsPerBin, tileRegion } from '../src/views/layout/heatmap-tiles.js';
import { longTrace } from './long-trace.js';

const CHROMIUM = process.env.ATTNSCOPE_CHROMIUM ?? '/usr/bin/chromium';

const { values: args } = parseArgs({ options: { tokens: { type: 'string', default: '2048,8192' }, 'no-browser': { type: 'boolean', default: false }, 'no-node': { type: 'boolean', default: false }, runs: { type: 'string', default: '3' } } });
const LENGTHS = args.tokens!.split(',').map(Number);
const RUNS = Number(args.runs);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** Median wall and CPU time (this process, user + system) of `f` over RUNS runs: on a shared machine CPU time varies less. */
function time<T>(f: () => T): { ms: string; value: T } {
  const wall: number[] = [];
  const cpu: number[] = [];
  let value!: T;
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    value = f();
    const c = process.cpuUsage(c0);
    wall.push(performance.now() - t0);
    cpu.push((c.user + c.system) / 1000);
  }
  const fmt = (x: number) => (x < 10 ? x.toFixed(1) : x.toFixed(0));
  return { ms: `${fmt(median(wall))} / ${fmt(median(cpu))}`, value };
}

const mb = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MB`;
const binBytes = (b: Bins) => b.max.byteLength + b.mean.byteLength + b.blank.byteLength;

function nodeRows(n: number, kernel: 'wasm' | 'js'): string[][] {
  const trace = longTrace({ tokens: n, layers: 4, heads: 4, headDim: 64, window: null });
  const source = attentionSource(trace, 'self', { kernel });
  const terms = trace.scores!.self!;
  const mask = keyRange(terms, 'self', 1, n, n);
  const read = blockReader(source, 1, 2);
  const rows: string[][] = [];
  const dense = n * n * 4;
  const overview = time(() => binAll(read, overviewRegion(n, n), mask));
  rows.push([`${n} ${kernel}`, 'heatmap overview (one head, max + mean)', overview.ms, mb(binBytes(overview.value)), mb(dense)]);
  const mid = Math.floor(n / 2 / TILE);
  const band = time(() => binAll(read, { ...tileRegion(0, mid, mid - 2, n, n), c1: tileRegion(0, mid, mid, n, n).c1 }, mask));
  rows.push([`${n} ${kernel}`, 'full-zoom tiles: one band (256 rows × 3 tiles)', band.ms, mb(binBytes(band.value)), '']);
  const cell = time(() => read(n / 2, n / 2 + 1, n / 4, n / 4 + 1));
  rows.push([`${n} ${kernel}`, 'hover: one cell', cell.ms, '4 B', '']);
  const topk = time(() => topKeys(source.block(1, 2, n / 2, n / 2 + 64, 0, n), 64, n, 20));
  rows.push([`${n} ${kernel}`, 'head view: top-20 keys of 64 rows', topk.ms, mb(topk.value.index.byteLength + topk.value.value.byteLength), '']);
  const perBin = thumbnailRowsPerBin(16, n, n, 64, true);
  const thumbs = time(() => {
    const out: Bins[] = [];
    for (let l = 0; l < 4; l++) for (let h = 0; h < 4; h++) out.push(runBins(thumbnailBins(blockReader(source, l, h), n, n, keyRange(terms, 'self', l, n, n), perBin)));
    return out;
  });
  const f = Math.ceil(n / 64);
  rows.push([`${n} ${kernel}`, `model view: 16 thumbnails (${perBin >= f ? 'every row' : `${perBin} of ${f} rows`})`, thumbs.ms, mb(thumbs.value.reduce((s, b) => s + binBytes(b), 0)), mb(16 * dense)]);
  return rows;
}

/** How the page computes: as shipped, without a Worker, without a Worker nor WebAssembly (init scripts take them away). */
const PAGE_MODES = {
  'worker + wasm': '',
  'page thread + wasm': 'delete globalThis.Worker;',
  'page thread + js': 'delete globalThis.Worker; delete globalThis.WebAssembly;',
} as const;

/** Records the page thread's long tasks (over 50 ms) from the start. */
const LONG_TASKS = `
window.__longTasks = [];
new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__longTasks.push(e.duration); }).observe({ type: 'longtask', buffered: true });
`;

async function browserRows(n: number): Promise<string[][]> {
  const tmp = mkdtempSync(join(tmpdir(), 'attnscope-bench-long-views-'));
  try {
    const trace = longTrace({ tokens: n, layers: 4, heads: 4, headDim: 64, window: null });
    const file = join(tmp, 'long.html');
    const r = await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), view: 'heatmap', maxBytes: 2e9, deflate: (d) => deflateRawSync(d, { level: 1 }) });
    writeFileSync(file, r.html);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--enable-precise-memory-info'] });
    try {
      const rows: string[][] = [];
      for (const [mode, init] of Object.entries(PAGE_MODES)) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      await context.route('**/*', (rt) => (rt.request().url().startsWith('file:') ? rt.continue() : rt.abort()));
      await context.addInitScript(init + LONG_TASKS);
      const page = await context.newPage();
      const t0 = Date.now();
      await page.goto(`file://${file}`);
      await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 300_000 });
      const ready = Date.now() - t0;
      // Long tasks from here on: the views computing (not the page's start-up: inflating and decoding its data).
      await page.evaluate(() => ((window as unknown as { __longTasks: number[] }).__longTasks.length = 0));
      await page.waitForSelector('[data-testid=heatmap-tiles][data-ready=true][data-overview=done]', { timeout: 600_000 });
      const overview = Date.now() - t0 - ready;
      const t1 = Date.now();
      await page.fill('[data-testid=heatmap-goto]', `${n / 2}, ${n / 2 - 10}`);
      await page.press('[data-testid=heatmap-goto]', 'Enter');
      await page.waitForSelector('[data-testid=heatmap-tiles][data-ready=true][data-level="0"]', { timeout: 600_000 });
      const block = Date.now() - t1;
      const t2 = Date.now();
      await page.click('[data-testid=tab-model]');
      await page.waitForSelector('[data-testid=model-thumbs][data-drawn=true]', { timeout: 1_200_000 });
      const model = Date.now() - t2;
      const heap = await page.evaluate(() => (performance as Performance & { memory?: { usedJSHeapSize: number } }).memory?.usedJSHeapSize ?? 0);
      const tasks = await page.evaluate(() => (window as unknown as { __longTasks: number[] }).__longTasks);
      const compute = await page.getAttribute('[data-testid=model-thumbs]', 'data-compute');
      const longest = tasks.length ? Math.max(...tasks).toFixed(0) : '–';
      const blocked = tasks.reduce((a, b) => a + b - 50, 0).toFixed(0);
      rows.push([String(n), `${mode} (${compute})`, mb(r.bytes), String(ready), String(overview), String(block), String(model), mb(heap), `${longest} / ${blocked}`]);
      await context.close();
      }
      return rows;
    } finally {
      await browser.close();
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function table(head: string[], rows: string[][]): void {
  console.log(`| ${head.join(' | ')} |`);
  console.log(`|${head.map(() => '---').join('|')}|`);
  for (const r of rows) console.log(`| ${r.join(' | ')} |`);
  console.log('');
}

async function main(): Promise<void> {
  console.log(`Long-input views, synthetic trace 4 layers × 4 heads, head dim 64, causal, attention on demand; median of ${RUNS} (Node ${process.version})\n`);
  console.log(`load average: ${loadavg().map((x) => x.toFixed(1)).join(', ')}`);
  if (!args['no-node']) table(['tokens, kernel', 'what', 'wall / CPU ms', 'held', 'dense equivalent'], LENGTHS.flatMap((n) => [...nodeRows(n, 'wasm'), ...nodeRows(n, 'js')]));
  if (!args['no-browser']) {
    console.log('Chromium, standalone page (q/k float32 in the page, attention computed there):\n');
    const rows: string[][] = [];
    for (const n of LENGTHS) rows.push(...(await browserRows(n)));
    table(['tokens', 'computed', 'page', 'page ready ms', 'overview drawn ms', 'go-to block drawn ms', 'model view drawn ms', 'JS heap (page thread)', 'page thread: longest task / blocked ms (over 50 ms)'], rows);
  }
}

await main();
