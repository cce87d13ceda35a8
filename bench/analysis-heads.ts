/**
 * Head metrics and head types on a BERT-base-shaped synthetic trace (12 layers × 12 heads,
 * bench/synthetic-trace.ts) at 32, 128 and 512 tokens: `headMetrics` (every metric, per layer and
 * model aggregates), `headTable` (metrics plus every type score), the same with the first token
 * excluded, and `headTable` with `omit: ['js_from_first', 'quantiles']` (what a view of head types
 * needs) — on the default code (the WebAssembly SIMD kernel, src/analysis/wasm/head-kernel.as,
 * where it runs) — median of 5 runs after one warm-up (bench/measure.ts), wall clock and this
 * process's CPU time.
 *
 * Before/after in the same run: `headTable` on the plain JavaScript loops (`kernel: 'js'`, the
 * code before the kernel, still the fallback where WebAssembly cannot run) and on the kernel
 * (`kernel: 'wasm'`), alternated run by run after a warm-up of each, with the median of the paired
 * differences, the largest relative difference of any value between the two tables and whether
 * their top types agree.
 *
 * `--browser`: the standalone page's head-type view in Chromium (/usr/bin/chromium or
 * ATTNSCOPE_CHROMIUM; needs dist/web: npm run build) on the same BERT-base-shaped trace at each
 * length (q/k stored, as bench/views.ts makes it): the view computes the full head table when its
 * tab opens and again at each "exclude first token" toggle; per toggle, the page's main-thread time
 * (Chrome's TaskDuration; ScriptDuration: script and WebAssembly only) and the wall clock to the
 * redrawn grid, median of `--runs` toggles after the first opening, with the kernel and with
 * WebAssembly removed from the page (the JavaScript loops).
 *
 *   npm run bench:analysis-heads        (or: npx tsx bench/analysis-heads.ts [--tokens 32,128,512] [--runs 5] [--browser])
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { deflateRawSync } from 'node:zlib';
import { chromium } from 'playwright-core';
import { headMetrics } from '../src/analysis/head-metrics.js';
import { HEAD_COLUMNS, headTable } from '../src/analysis/head-types.js';
import { headKernelStatus } from '../src/analysis/wasm/head-kernel.js';
import { loadViewBundle } from '../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../src/views/html/standalone.js';
import { type Timing, measure, timeOnce } from './measure.js';
import { syntheticTrace } from './synthetic-trace.js';

const { values } = parseArgs({
  options: { tokens: { type: 'string', default: '32,128,512' }, runs: { type: 'string', default: '5' }, browser: { type: 'boolean', default: false } },
});
const lengths = values.tokens.split(',').map(Number);
const runs = Number(values.runs);
const status = headKernelStatus();
const f = (r: Timing) => `${r.wall.toFixed(0)} / ${r.cpu.toFixed(0)}`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

console.log(`WebAssembly kernel: ${status.available ? 'runs' : `does not run (${status.reason})`}`);
console.log(`head metrics and types, 12 layers × 12 heads, median of ${runs} runs (ms, wall / CPU)`);
console.log('| tokens | headMetrics | headTable (metrics + types) | headTable, exclude first | headTable, omit js_from_first + quantiles |');
console.log('|---:|---:|---:|---:|---:|');
const traces = new Map(lengths.map((n) => [n, syntheticTrace({ tokens: n, qk: false })]));
for (const n of lengths) {
  const trace = traces.get(n)!;
  const m = await measure(() => headMetrics(trace), runs);
  const t = await measure(() => headTable(trace), runs);
  const x = await measure(() => headTable(trace, undefined, { excludeFirstToken: true }), runs);
  const o = await measure(() => headTable(trace, undefined, { omit: ['js_from_first', 'quantiles'] }), runs);
  console.log(`| ${n} | ${f(m)} | ${f(t)} | ${f(x)} | ${f(o)} |`);
}

if (status.available) {
  console.log(`\nheadTable (every metric and type score): JavaScript loops (before) vs the WebAssembly kernel (after), ${runs} runs alternated after a warm-up (ms: median; saved: median of the paired differences)`);
  console.log('| tokens | before, CPU | after, CPU | saved, CPU | before, wall | after, wall | largest relative difference of a value | same top types |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const n of lengths) {
    const trace = traces.get(n)!;
    const js = () => headTable(trace, undefined, { kernel: 'js' });
    const wasm = () => headTable(trace, undefined, { kernel: 'wasm' });
    const a = js();
    const b = wasm();
    let diff = 0;
    let typesAgree = true;
    a.forEach((r, i) => {
      const o = b[i]!;
      if (r.top_type !== o.top_type) typesAgree = false;
      for (const c of HEAD_COLUMNS) {
        if (Number.isNaN(r[c]) !== Number.isNaN(o[c])) diff = Infinity;
        else if (!Number.isNaN(r[c])) diff = Math.max(diff, Math.abs(r[c] - o[c]) / Math.max(Math.abs(r[c]), 1e-300));
      }
    });
    const before: Timing[] = [];
    const after: Timing[] = [];
    for (let i = 0; i < runs; i++) {
      before.push(await timeOnce(js));
      after.push(await timeOnce(wasm));
    }
    const cpuB = median(before.map((t) => t.cpu));
    const cpuA = median(after.map((t) => t.cpu));
    const saved = median(before.map((t, i) => t.cpu - after[i]!.cpu));
    console.log(
      `| ${n} | ${cpuB.toFixed(0)} | ${cpuA.toFixed(0)} | ${saved.toFixed(0)} (${((100 * saved) / cpuB).toFixed(0)} %) | ${median(before.map((t) => t.wall)).toFixed(0)} | ${median(after.map((t) => t.wall)).toFixed(0)} | ${diff.toExponential(1)} | ${typesAgree ? 'yes' : 'NO'} |`,
    );
  }
}

if (values.browser) {
  const tmp = mkdtempSync(join(tmpdir(), 'attnscope-bench-heads-'));
  const browser = await chromium.launch({
    executablePath: process.env.ATTNSCOPE_CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
  });
  try {
    const bundle = await loadViewBundle();
    console.log(`\nthe standalone page's head-type view in Chromium ${browser.version()}: the full head table per "exclude first token" toggle, median of ${runs} (ms: main-thread task / script / wall)`);
    console.log('| tokens | kernel: task / script / wall | JavaScript loops (no WebAssembly): task / script / wall |');
    console.log('|---:|---:|---:|');
    for (const n of lengths) {
      const trace = syntheticTrace({ tokens: n });
      const file = join(tmp, `heads-${n}.html`);
      writeFileSync(file, (await renderStandaloneHtml(trace, { bundle, deflate: (d) => deflateRawSync(d, { level: 6 }) })).html);
      const cells: string[] = [];
      for (const withWasm of [true, false]) {
        const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
        await context.route('**/*', (r) => (r.request().url().startsWith('file:') ? r.continue() : r.abort()));
        if (!withWasm) await context.addInitScript('delete globalThis.WebAssembly;');
        const page = await context.newPage();
        await page.goto(pathToFileURL(file).href, { timeout: 600_000 });
        await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 600_000 });
        const cdp = await context.newCDPSession(page);
        await cdp.send('Performance.enable');
        const metrics = async () => {
          const { metrics: m } = await cdp.send('Performance.getMetrics');
          const get = (name: string) => 1000 * (m.find((x) => x.name === name)?.value ?? NaN);
          return { task: get('TaskDuration'), script: get('ScriptDuration') };
        };
        await page.click('[data-testid=tab-types]', { timeout: 600_000 });
        await page.waitForSelector('[data-testid=types-svg] rect.type-cell', { timeout: 600_000 });
        const task: number[] = [];
        const script: number[] = [];
        const wall: number[] = [];
        for (let i = 0; i < runs; i++) {
          const m0 = await metrics();
          const t0 = performance.now();
          // The toggle recomputes the table (another key), then redraws the grid.
          await page.click('[data-testid=types-exclude-first]', { timeout: 600_000 });
          await page.waitForSelector('[data-testid=types-svg] rect.type-cell', { timeout: 600_000 });
          await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(null))));
          wall.push(performance.now() - t0);
          const m1 = await metrics();
          task.push(m1.task - m0.task);
          script.push(m1.script - m0.script);
        }
        cells.push(`${median(task).toFixed(0)} / ${median(script).toFixed(0)} / ${median(wall).toFixed(0)}`);
        await context.close();
      }
      console.log(`| ${n} | ${cells[0]} | ${cells[1]} |`);
    }
  } finally {
    await browser.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}
