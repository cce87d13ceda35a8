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
 * `--baseline <dir>`: a checkout of src/ from an earlier revision (e.g. `git archive 2de5d15 src | tar -x -C
 * <dir>`): its `headTable` (before), this tree's on one thread and `headTableThreaded`
 * (src/runtime/head-table-threads.ts, `--threads`, default 2) — and the baseline's
 * `headTableThreaded` where it has one (its workers need tsx: link node_modules beside its src) —
 * are alternated run by run on one trace, wall and CPU (every thread of the process) per run,
 * median of `--runs`, with the load and the paired ratio of the two threaded tables; the threaded
 * runs reuse the warm pools of workers (the first threaded table, which starts them, is printed
 * apart); then each thread's share timed alone on one thread (the first range with its copies of
 * the later ranges' layers, as the calling thread makes them; a later range on layers already in,
 * with its read of layer 0, as a worker does it), to show how evenly the threads split.
 * `--skip-node` leaves out the other Node tables (with `--baseline`, `--parts` or `--browser`).
 *
 * `--parts`: what each part costs on one thread — the table with the type scores, js_from_first,
 * the quantiles or both left out, alternated run by run, CPU ns per weight and the paired
 * difference with the whole table (the scan's own parts: bench/analysis-heads-kernel.ts), and the
 * table with word classes (the focus scores `--text` adds). `--word-classes`: the `--baseline`
 * tables with word classes, as `attnscope heads --text` computes them.
 *
 * `--browser`: the standalone page's head-type view in Chromium (/usr/bin/chromium or
 * ATTNSCOPE_CHROMIUM; needs dist/web: npm run build) on the same BERT-base-shaped trace at each
 * length (q/k stored, as bench/views.ts makes it): from the page ready until both tables (with and
 * without the first token) are computed ahead, where the page does that (long traces up to 50 M
 * weights, web/views/head-types.ts); from a click on the view's tab to the whole table drawn; then
 * per "exclude first token" toggle (a table computed ahead is only drawn; otherwise the view
 * computes it when asked), the page's main-thread time
 * (Chrome's TaskDuration; ScriptDuration: script and WebAssembly only) and the wall clock to the
 * redrawn grid, median of `--runs` toggles after the first opening, with the kernel and with
 * WebAssembly removed from the page (the JavaScript loops).
 *
 *   npm run bench:analysis-heads        (or: npx tsx bench/analysis-heads.ts [--tokens 32,128,512] [--runs 5] [--browser])
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { deflateRawSync } from 'node:zlib';
import { chromium } from 'playwright-core';
import type { Trace } from '../src/core/trace.js';
import { headMetrics } from '../src/analysis/head-metrics.js';
import { HEAD_COLUMNS, type HeadTableRow, WORD_CONTENT, WORD_ENTITY, WORD_FUNCTION, headTable, headTableRanges } from '../src/analysis/head-types.js';
import { mulberry32 } from '../src/core/random.js';
import { headTablePart, runHeadTablePart } from '../src/analysis/head-table-parts.js';
import { headKernelStatus } from '../src/analysis/wasm/head-kernel.js';
import { headTableThreaded, stopHeadTableThreads } from '../src/runtime/head-table-threads.js';
import { loadViewBundle } from '../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../src/views/html/standalone.js';
import { type Timing, measure, timeOnce } from './measure.js';
import { syntheticTrace } from './synthetic-trace.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '32,128,512' },
    runs: { type: 'string', default: '5' },
    browser: { type: 'boolean', default: false },
    baseline: { type: 'string' },
    threads: { type: 'string', default: '2' },
    'skip-node': { type: 'boolean', default: false },
    parts: { type: 'boolean', default: false },
    'word-classes': { type: 'boolean', default: false },
  },
});
const lengths = values.tokens.split(',').map(Number);
const runs = Number(values.runs);
const status = headKernelStatus();
const f = (r: Timing) => `${r.wall.toFixed(0)} / ${r.cpu.toFixed(0)}`;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Word classes of the keys, as `attnscope heads --text` gives the table (its syntax, semantic and
 * entity focus; word-classes.ts tags them with wink-nlp): here drawn at random, about 45 % function
 * words, 45 % content words, a tenth of those entities, none on the specials.
 */
function wordClassesOf(trace: Trace): Uint8Array {
  const r = mulberry32(7);
  return Uint8Array.from(trace.tokens, (t) => {
    if (t.special) return 0;
    const x = r();
    return x < 0.45 ? WORD_FUNCTION : x < 0.9 ? WORD_CONTENT | (r() < 0.1 ? WORD_ENTITY : 0) : 0;
  });
}
const withClasses = values['word-classes'];

/** The largest relative difference of any value between two head tables (Infinity where one is NaN and the other not). */
function largestDifference(x: readonly HeadTableRow[], y: readonly HeadTableRow[]): number {
  let diff = 0;
  x.forEach((r, i) => {
    const o = y[i]!;
    for (const c of HEAD_COLUMNS) {
      if (Number.isNaN(r[c]) !== Number.isNaN(o[c])) diff = Infinity;
      else if (!Number.isNaN(r[c])) diff = Math.max(diff, Math.abs(r[c] - o[c]) / Math.max(Math.abs(r[c]), 1e-300));
    }
  });
  return diff;
}

const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
console.log(`WebAssembly kernel: ${status.available ? 'runs' : `does not run (${status.reason})`} · load average ${load()}`);

if (values.baseline) {
  const base = (await import(pathToFileURL(join(values.baseline, 'src', 'analysis', 'head-types.ts')).href)) as { headTable: typeof headTable };
  // The baseline's threaded table too where it has one (its workers need tsx: a node_modules beside its src).
  const baseThreadsFile = join(values.baseline, 'src', 'runtime', 'head-table-threads.ts');
  const baseThreads = existsSync(baseThreadsFile)
    ? ((await import(pathToFileURL(baseThreadsFile).href)) as { headTableThreaded: typeof headTableThreaded; stopHeadTableThreads: typeof stopHeadTableThreads; headTableThreadFailure: string })
    : undefined;
  const threads = Number(values.threads);
  console.log(`\nheadTable${withClasses ? ' with word classes (as --text)' : ''} at ${values.baseline} (before) vs this tree on one thread and over ${threads} threads, alternated, ${runs} runs after a warm-up (ms, median; CPU of every thread)`);
  console.log(`| tokens | before: wall / CPU | after, one thread: wall / CPU | ${baseThreads ? 'before, threads: wall / CPU | ' : ''}after, threads: wall / CPU | same table over threads | load |`);
  console.log(`|---:|---:|---:|${baseThreads ? '---:|' : ''}---:|---|---|`);
  for (const n of lengths) {
    const trace = syntheticTrace({ tokens: n, qk: false });
    const o = withClasses ? { wordClasses: wordClassesOf(trace) } : {};
    const b = () => base.headTable(trace, undefined, o);
    const a = () => headTable(trace, undefined, o);
    const t = () => headTableThreaded(trace, undefined, o, { threads });
    const bt = baseThreads ? () => baseThreads.headTableThreaded(trace, undefined, o, { threads }) : undefined;
    // The first threaded table starts the pool's workers (their start is in this figure: under tsx
    // each worker also loads tsx and compiles the sources); the runs below reuse the warm pool.
    const cold = await timeOnce(t);
    if (bt) await bt();
    // The same table over threads as on one thread (value for value); against the baseline's, the largest relative difference of a value.
    const same = JSON.stringify(a()) === JSON.stringify(await t());
    const beforeDiff = largestDifference(b(), a());
    if (baseThreads?.headTableThreadFailure) console.log(`  (the baseline's workers failed: ${baseThreads.headTableThreadFailure})`);
    b();
    const runsOf: Timing[][] = [[], [], [], []];
    for (let i = 0; i < runs; i++) {
      runsOf[0]!.push(await timeOnce(b));
      runsOf[1]!.push(await timeOnce(a));
      if (bt) runsOf[3]!.push(await timeOnce(bt));
      runsOf[2]!.push(await timeOnce(t));
    }
    const cell = (ts: Timing[]) => `${median(ts.map((x) => x.wall)).toFixed(0)} / ${median(ts.map((x) => x.cpu)).toFixed(0)}`;
    console.log(`| ${n} | ${cell(runsOf[0]!)} | ${cell(runsOf[1]!)} | ${bt ? `${cell(runsOf[3]!)} | ` : ''}${cell(runsOf[2]!)} | ${same ? 'yes' : 'NO'} | ${load()} |`);
    console.log(`  after vs before: largest relative difference of a value ${beforeDiff.toExponential(1)}`);
    if (bt) console.log(`  threads, paired ratio after / before (median of ${runs}): wall ${median(runsOf[2]!.map((x, i) => x.wall / runsOf[3]![i]!.wall)).toFixed(2)}, CPU ${median(runsOf[2]!.map((x, i) => x.cpu / runsOf[3]![i]!.cpu)).toFixed(2)}`);
    console.log(`  the first threaded table (cold: the workers started by it): ${f(cold)}; the runs above reuse the warm pool`);
    // How evenly the threads split: each thread's share timed alone on this thread — the calling
    // thread's range with its copies of the later ranges' layers into shared buffers (it makes them
    // between its own layers), a later range on layers already in (as a worker reads them, with its
    // read of the first layer).
    const ranges = headTableRanges(trace.attention.self!.layers.length, threads);
    const parts: Timing[][] = ranges.map(() => []);
    const later = ranges.slice(1).map((r) => headTablePart(trace, 'self', o, r, false));
    // One shared buffer per later range, kept for the runs as a kept worker keeps its own (a fresh one would add its page faults).
    const shared = later.map((p) => new SharedArrayBuffer(p.layers.reduce((bytes, l) => bytes + l.byteLength, 0)));
    const inShared = later.map((p, j) => {
      let at = 0;
      return p.layers.map((l) => {
        const c = new Float32Array(shared[j]!, at, l.length);
        at += l.byteLength;
        return c;
      });
    });
    for (let i = 0; i < runs; i++) {
      for (const [j, range] of ranges.entries()) {
        parts[j]!.push(
          await timeOnce(() => {
            if (j > 0) return runHeadTablePart({ ...later[j - 1]!, layers: inShared[j - 1]! });
            const rows = headTable(trace, undefined, { ...o, layers: range });
            later.forEach((p, k) => p.layers.forEach((l, m) => inShared[k]![m]!.set(l)));
            return rows;
          }),
        );
      }
    }
    console.log(`  split over ${ranges.length} threads, each thread's share alone on one thread (wall / CPU, median): ${ranges.map((r, j) => `layers ${r.from}–${r.to - 1}${j === 0 ? ' (+ the copies for the others)' : ' (+ layer 0 read)'} ${cell(parts[j]!)}`).join(' · ')}`);
  }
  await stopHeadTableThreads();
  await baseThreads?.stopHeadTableThreads();
}
if (values.parts) {
  // What each part of the table costs on one thread: the table with parts left out (the type
  // scores: headMetrics; js_from_first and the quantiles: `omit`), alternated run by run, CPU ns per
  // weight (median) and the median of the paired differences with the whole table. The scan's
  // own parts (logarithms, histogram, moments, counts) apart: bench/analysis-heads-kernel.ts.
  const variants: [string, (t: Trace) => unknown][] = [
    ['whole table', (t) => headTable(t)],
    ['no type scores (headMetrics)', (t) => headMetrics(t)],
    ['no js_from_first', (t) => headTable(t, undefined, { omit: ['js_from_first'] })],
    ['no quantiles', (t) => headTable(t, undefined, { omit: ['quantiles'] })],
    ['neither', (t) => headTable(t, undefined, { omit: ['js_from_first', 'quantiles'] })],
    ['with word classes (as --text: the focus scores)', (t) => headTable(t, undefined, { wordClasses: wordClassesOf(t) })],
    // (The whole table again, last in each round: what the place in the round costs.)
    ['whole table, again', (t) => headTable(t)],
  ];
  for (const n of lengths) {
    const trace = syntheticTrace({ tokens: n, qk: false });
    const s = trace.attention.self!;
    const weights = s.layers.length * s.dims[0] * s.dims[1] * s.dims[2];
    const times: Timing[][] = variants.map(() => []);
    for (const [, v] of variants) v(trace);
    for (let i = 0; i < runs; i++) for (const [j, [, v]] of variants.entries()) times[j]!.push(await timeOnce(() => v(trace)));
    const ns = (ms: number) => ((ms * 1e6) / weights).toFixed(2);
    console.log(`\nthe table's parts on one thread, ${n} tokens (${(weights / 1e6).toFixed(1)} M weights), ${runs} runs alternated · load ${load()}`);
    console.log('| variant | wall / CPU (ms, median) | CPU ns per weight | part left out: paired CPU difference, ms (ns per weight) |');
    console.log('|---|---:|---:|---:|');
    for (const [j, [name]] of variants.entries()) {
      const ts = times[j]!;
      const cpu = median(ts.map((x) => x.cpu));
      const saved = median(ts.map((x, i) => times[0]![i]!.cpu - x.cpu));
      // (The word classes add a part: the paired difference is negative, the part's cost.)
      console.log(`| ${name} | ${median(ts.map((x) => x.wall)).toFixed(0)} / ${cpu.toFixed(0)} | ${ns(cpu)} | ${j === 0 ? '–' : `${saved.toFixed(0)} (${ns(saved)})`} |`);
    }
  }
}

if (!values['skip-node']) {
  console.log(`head metrics and types, 12 layers × 12 heads, median of ${runs} runs (ms, wall / CPU)`);
  console.log('| tokens | headMetrics | headTable (metrics + types) | headTable, exclude first | headTable, omit js_from_first + quantiles |');
  console.log('|---:|---:|---:|---:|---:|');
}
const traces = new Map((values['skip-node'] ? [] : lengths).map((n) => [n, syntheticTrace({ tokens: n, qk: false })]));
for (const n of traces.keys()) {
  const trace = traces.get(n)!;
  const m = await measure(() => headMetrics(trace), runs);
  const t = await measure(() => headTable(trace), runs);
  const x = await measure(() => headTable(trace, undefined, { excludeFirstToken: true }), runs);
  const o = await measure(() => headTable(trace, undefined, { omit: ['js_from_first', 'quantiles'] }), runs);
  console.log(`| ${n} | ${f(m)} | ${f(t)} | ${f(x)} | ${f(o)} |`);
}

if (status.available && traces.size > 0) {
  console.log(`\nheadTable (every metric and type score): JavaScript loops (before) vs the WebAssembly kernel (after), ${runs} runs alternated after a warm-up (ms: median; saved: median of the paired differences)`);
  console.log('| tokens | before, CPU | after, CPU | saved, CPU | before, wall | after, wall | largest relative difference of a value | same top types |');
  console.log('|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const n of traces.keys()) {
    const trace = traces.get(n)!;
    const js = () => headTable(trace, undefined, { kernel: 'js' });
    const wasm = () => headTable(trace, undefined, { kernel: 'wasm' });
    const a = js();
    const b = wasm();
    const diff = largestDifference(a, b);
    const typesAgree = a.every((r, i) => r.top_type === b[i]!.top_type);
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
    console.log(`\nthe standalone page's head-type view in Chromium ${browser.version()} (long traces: computed in Web Workers, the grid filling in; up to 50 M weights both tables, with and without the first token, are computed ahead once the page is idle): the page ready → both tables computed ahead (ms; "–" where the page does not compute ahead); a click on the view's tab → the whole table drawn (ms, the tab opened once the tables are in); then per "exclude first token" toggle until the whole table is drawn, median of ${runs}: the longest main-thread task (Long Tasks API; 0: none over 50 ms), main-thread task time in all (Chrome's TaskDuration), wall (ms)`);
    console.log('| tokens | ready → tables computed ahead | tab click → whole table | toggle: longest main-thread task | toggle: main-thread task in all | toggle: wall to the whole table | load |');
    console.log('|---:|---:|---:|---:|---:|---:|---|');
    for (const n of lengths) {
      const trace = syntheticTrace({ tokens: n });
      const file = join(tmp, `heads-${n}.html`);
      writeFileSync(file, (await renderStandaloneHtml(trace, { bundle, deflate: (d) => deflateRawSync(d, { level: 1 }), maxBytes: 400e6 })).html);
      const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
      await context.route('**/*', (r) => (r.request().url().startsWith('file:') ? r.continue() : r.abort()));
      await context.addInitScript(`window.__long = []; new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); }).observe({ type: 'longtask', buffered: true });`);
      const page = await context.newPage();
      await page.goto(pathToFileURL(file).href, { timeout: 900_000 });
      await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 900_000 });
      const ready = performance.now();
      // Computed ahead where the page does (both tables), else nothing to wait for.
      const ahead = await page
        .waitForFunction(() => document.querySelector('[data-testid=types-view]')?.getAttribute('data-tables') === '2', null, { timeout: 30_000 })
        .then(() => performance.now() - ready, () => NaN);
      const cdp = await context.newCDPSession(page);
      await cdp.send('Performance.enable');
      const taskMs = async () => 1000 * ((await cdp.send('Performance.getMetrics')).metrics.find((x) => x.name === 'TaskDuration')?.value ?? NaN);
      const whole = () =>
        page.waitForFunction(() => {
          const view = document.querySelector('[data-testid=types-view]');
          return view !== null && !view.hasAttribute('data-computing') && document.querySelectorAll('[data-testid=types-svg] rect.type-cell').length > 0;
        }, null, { timeout: 900_000 });
      const tab0 = performance.now();
      await page.click('[data-testid=tab-types]', { timeout: 900_000 });
      await whole();
      await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(null))));
      const tabMs = performance.now() - tab0;
      const longest: number[] = [];
      const task: number[] = [];
      const wall: number[] = [];
      for (let i = 0; i < runs; i++) {
        await page.evaluate(() => ((window as unknown as { __long: number[] }).__long = []));
        const m0 = await taskMs();
        const t0 = performance.now();
        await page.click('[data-testid=types-exclude-first]', { timeout: 900_000 });
        await whole();
        await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r(null))));
        wall.push(performance.now() - t0);
        task.push((await taskMs()) - m0);
        longest.push(await page.evaluate(() => Math.max(0, ...(window as unknown as { __long: number[] }).__long)));
      }
      await context.close();
      console.log(`| ${n} | ${Number.isNaN(ahead) ? '–' : ahead.toFixed(0)} | ${tabMs.toFixed(0)} | ${median(longest).toFixed(0)} | ${median(task).toFixed(0)} | ${median(wall).toFixed(0)} | ${load()} |`);
    }
  } finally {
    await browser.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}
