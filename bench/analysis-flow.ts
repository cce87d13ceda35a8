/**
 * Attention rollout and attention flow on BERT-base-shaped synthetic traces (12 layers × 12
 * heads), and the largest input exact attention flow handles within a second.
 *
 *   npm run bench:analysis-flow            (or: npx tsx bench/analysis-flow.ts [--tokens 32,128,512])
 *
 * Rows: rollout (head fusion, residual, 12 float64 n × n products; every layer's cumulative
 * matrix) in JavaScript (the path before the kernel, and the browser's) and on the native kernel
 * (src/analysis/kernels.ts on onnxruntime-node, 2 threads; session built before timing), both in
 * this run, with the largest difference between the two; one rollout row on demand (rolloutRows:
 * what a click needs); rollout with discard 0.9 (a sort per layer), the flow diagram's layout (rollout graph,
 * a highlighted token), attention flow for one output token (n max-flows: what a click in the page
 * costs) and for every output token (n² max-flows: `attnscope flow --method flow`). Median of 3
 * runs (1 for runs over 5 s); wall clock and this process's CPU time (user + system), since wall
 * time on a shared machine varies with load. Flow runs whose estimate (from the n⁴·L scaling of
 * the previous size) exceeds --budget seconds are not run. Then a search for the largest n whose
 * all-pairs flow (and one-token flow) finishes within 1 s of CPU time.
 *
 * `--baseline <dir>`: a checkout of src/ from an earlier revision (`git archive <rev> src | tar -x -C
 * <dir>`): its rolloutRows and flow diagram (model + layout, a token highlighted) against this
 * tree's, alternated run by run (median of 5, wall / CPU, with the load), then nothing else.
 *
 * `--browser [--before <rev>] [--runs R]`: the standalone page's flow tab in Chromium at each
 * --tokens size (12 layers × 12 heads), opened once the diagram is computed ahead (long traces:
 * web/views/flow.ts drawAhead; the time from the page ready is printed) or 5 s after the page is
 * ready where it is not, then a click on the last token: the page thread's longest
 * task (Long Tasks API; 0: none over 50 ms), its task time in all (Chrome's TaskDuration) and the
 * wall time until the drawing is complete, for this tree's client with its flow views' worker,
 * the same client without workers (the page computes the drawing itself), and — with --before —
 * the client of an earlier revision (its web/ and src/ from `git archive <rev>`, bundled here with
 * esbuild), all in the same run, the load printed with each row. Then nothing else.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { build } from 'esbuild';
import { chromium } from 'playwright-core';
import { loadViewBundle } from '../src/views/html/bundle-node.js';
import { type ViewBundle, renderStandaloneHtml } from '../src/views/html/standalone.js';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { attentionFlow } from '../src/analysis/flow.js';
import { runtimeKernel } from '../src/analysis/kernels.js';
import { attentionRollout, attentionRolloutWith, rolloutRows } from '../src/analysis/rollout.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import type { Trace } from '../src/core/trace.js';
import { flowLayout, flowModel } from '../src/views/layout/flow.js';
import { measure } from './measure.js';
import { syntheticTrace } from './synthetic-trace.js';

const { values } = parseArgs({
  options: { tokens: { type: 'string' }, budget: { type: 'string' }, search: { type: 'boolean' }, 'no-search': { type: 'boolean' }, baseline: { type: 'string' }, browser: { type: 'boolean' }, before: { type: 'string' }, runs: { type: 'string' } },
});
const sizes = (values.tokens ?? '32,128,512').split(',').map(Number);
const budget = Number(values.budget ?? 60);

interface Timing {
  wall: number;
  cpu: number;
}

function time(fn: () => void): Timing {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  fn();
  const c = process.cpuUsage(c0);
  return { wall: performance.now() - t0, cpu: (c.user + c.system) / 1000 };
}

const kernel = runtimeKernel(nodeRuntime, { threads: 2 });

function median(fn: () => void): Timing {
  const first = time(fn);
  if (first.wall > 5000) return first;
  const runs = [first, time(fn), time(fn)].sort((a, b) => a.cpu - b.cpu);
  return runs[1]!;
}

const ms = (v: number) => (v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${v.toFixed(v < 10 ? 2 : 0)} ms`);
const fmt = (t: Timing) => `${ms(t.wall)} (CPU ${ms(t.cpu)})`;

function trace(n: number): Trace {
  return syntheticTrace({ layers: 12, heads: 12, tokens: n, headDim: 64, qk: false, pair: false });
}

if (values.browser) {
  const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const runs = Number(values.runs ?? 1);
  const tmp = mkdtempSync(join(tmpdir(), 'attnscope-bench-flow-'));
  const med = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor((v.length - 1) / 2)]!;
  try {
    const variants: { name: string; bundle: ViewBundle; init: string }[] = [];
    if (values.before) {
      // An earlier revision's client: its web/ and src/ bundled as scripts/build-web.mjs does (no type-check).
      const dir = join(tmp, 'before');
      execFileSync('sh', ['-c', `mkdir -p '${dir}' && git archive '${values.before}' web src | tar -x -C '${dir}'`]);
      const common = { bundle: true, minify: true, legalComments: 'none' as const, charset: 'utf8' as const, logLevel: 'warning' as const, nodePaths: [join(import.meta.dirname, '..', 'node_modules')] };
      await build({ ...common, entryPoints: [join(dir, 'web', 'main.ts')], outfile: join(dir, 'out', 'view.js'), format: 'iife', platform: 'browser', target: ['es2020', 'chrome90'] });
      await build({ ...common, entryPoints: [join(dir, 'web', 'styles.css')], outfile: join(dir, 'out', 'view.css') });
      variants.push({ name: `before (${values.before})`, bundle: { js: readFileSync(join(dir, 'out', 'view.js'), 'utf8'), css: readFileSync(join(dir, 'out', 'view.css'), 'utf8') }, init: '' });
    }
    const bundle = await loadViewBundle();
    variants.push({ name: 'after, no Worker (page thread)', bundle, init: 'delete window.Worker;' });
    variants.push({ name: 'after (flow views\' worker)', bundle, init: '' });
    const browser = await chromium.launch({
      executablePath: process.env.ATTNSCOPE_CHROMIUM ?? '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run', '--disable-sync'],
    });
    try {
      console.log(`the standalone page's flow diagram in Chromium ${browser.version()}, 12 layers × 12 heads, rollout, top 3: the page ready → the diagram computed ahead (where the client does: web/views/flow.ts drawAhead; the tab is opened then, or 5 s after ready where nothing is computed ahead); opening the tab, then a click on the last token, until drawn; page thread's longest task (Long Tasks API; 0: none over 50 ms) / its task time in all / wall (ms), median of ${runs}`);
      console.log('| tokens | client | ready → drawn ahead | open tab: longest / all / wall | click: longest / all / wall | load |');
      console.log('|---:|---|---:|---:|---:|---|');
      for (const n of sizes) {
        const t = trace(n);
        const files = new Map<ViewBundle, string>();
        for (const v of variants) {
          if (files.has(v.bundle)) continue;
          const file = join(tmp, `flow-${n}-${files.size}.html`);
          writeFileSync(file, (await renderStandaloneHtml(t, { bundle: v.bundle, deflate: (d) => deflateRawSync(d, { level: 1 }), maxBytes: 400e6 })).html);
          files.set(v.bundle, file);
        }
        const results = variants.map(() => ({ ahead: [] as number[], open: [] as number[][], click: [] as number[][] }));
        for (let r = 0; r < runs; r++) {
          for (const [vi, v] of variants.entries()) {
            const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
            await context.route('**/*', (q) => (q.request().url().startsWith('file:') ? q.continue() : q.abort()));
            await context.addInitScript(`window.__long = []; new PerformanceObserver((l) => { for (const e of l.getEntries()) window.__long.push(e.duration); }).observe({ type: 'longtask', buffered: true }); ${v.init}`);
            const page = await context.newPage();
            await page.goto(pathToFileURL(files.get(v.bundle)!).href, { timeout: 900_000 });
            await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 900_000 });
            const ready = performance.now();
            results[vi]!.ahead.push(
              await page
                .waitForFunction(() => document.querySelector('[data-testid=flow-view]')?.getAttribute('data-ahead') === 'done', null, { timeout: 5000 })
                .then(() => performance.now() - ready, () => NaN),
            );
            const cdp = await context.newCDPSession(page);
            await cdp.send('Performance.enable');
            const taskMs = async () => 1000 * ((await cdp.send('Performance.getMetrics')).metrics.find((x) => x.name === 'TaskDuration')?.value ?? NaN);
            const drawn = (highlighted: boolean) =>
              page.waitForFunction((hl) => {
                const view = document.querySelector('[data-testid=flow-view]');
                const svg = document.querySelector('[data-testid=flow-svg]');
                return view !== null && svg !== null && !view.hasAttribute('data-computing') && !view.hasAttribute('data-drawing') && (!hl || svg.querySelector('line.highlighted') !== null);
              }, highlighted, { timeout: 900_000, polling: 100 });
            const measureStep = async (act: () => Promise<void>, highlighted: boolean) => {
              await page.evaluate(() => new Promise((res) => setTimeout(res, 200)));
              await page.evaluate(() => ((window as unknown as { __long: number[] }).__long = []));
              const m0 = await taskMs();
              const t0 = performance.now();
              await act();
              await drawn(highlighted);
              await page.evaluate(() => new Promise((res) => requestAnimationFrame(() => res(null))));
              const wall = performance.now() - t0;
              return [await page.evaluate(() => Math.max(0, ...(window as unknown as { __long: number[] }).__long)), (await taskMs()) - m0, wall];
            };
            results[vi]!.open.push(await measureStep(() => page.click('[data-testid=tab-flow]', { timeout: 900_000 }), false));
            results[vi]!.click.push(await measureStep(() => page.click(`[data-testid=flow-svg] text.token.output[data-token="${n - 1}"]`, { timeout: 900_000 }), true));
            await context.close();
          }
        }
        const cell = (xs: number[][]) => [0, 1, 2].map((i) => med(xs.map((x) => x[i]!)).toFixed(0)).join(' / ');
        const ahead = (xs: number[]) => (xs.every((x) => Number.isNaN(x)) ? '–' : med(xs.filter((x) => !Number.isNaN(x))).toFixed(0));
        variants.forEach((v, vi) => console.log(`| ${n} | ${v.name} | ${ahead(results[vi]!.ahead)} | ${cell(results[vi]!.open)} | ${cell(results[vi]!.click)} | ${load()} |`));
      }
    } finally {
      await browser.close();
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  process.exit(0);
}

if (values.baseline) {
  const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  const dir = values.baseline;
  const baseRollout = (await import(pathToFileURL(join(dir, 'src', 'analysis', 'rollout.ts')).href)) as { rolloutRows: typeof rolloutRows };
  const baseFlow = (await import(pathToFileURL(join(dir, 'src', 'views', 'layout', 'flow.ts')).href)) as { flowLayout: typeof flowLayout; flowModel: typeof flowModel };
  console.log(`before (${dir}) vs after, alternated, median of 5 after a warm-up (wall / CPU)`);
  console.log('| measure | tokens | before | after | largest difference | load |');
  console.log('| --- | ---: | ---: | ---: | ---: | --- |');
  for (const n of sizes) {
    const t = trace(n);
    const pairs: [string, () => unknown, () => unknown, () => number][] = [
      ['rollout row of one token (rolloutRows)', () => baseRollout.rolloutRows(t, [n - 1]), () => rolloutRows(t, [n - 1]), () => {
        const a = baseRollout.rolloutRows(t, [n - 1])[0]!;
        const b = rolloutRows(t, [n - 1])[0]!;
        return Math.max(...Array.from(a, (v, i) => Math.abs(v - b[i]!)));
      }],
      ['flow diagram: model + layout, one token highlighted', () => baseFlow.flowLayout(t, { method: 'rollout', query: n - 1 }), () => flowLayout(t, { method: 'rollout', query: n - 1 }), () => {
        const a = baseFlow.flowLayout(t, { method: 'rollout', query: n - 1 });
        const b = flowLayout(t, { method: 'rollout', query: n - 1 });
        return JSON.stringify(a.items) === JSON.stringify(b.items) ? 0 : Infinity;
      }],
    ];
    for (const [name, before, after, diff] of pairs) {
      before();
      after();
      const bs: Timing[] = [];
      const as: Timing[] = [];
      for (let i = 0; i < 5; i++) {
        bs.push(time(before));
        as.push(time(after));
      }
      const med = (ts: Timing[]) => ({ wall: [...ts].sort((x, y) => x.wall - y.wall)[2]!.wall, cpu: [...ts].sort((x, y) => x.cpu - y.cpu)[2]!.cpu });
      console.log(`| ${name} | ${n} | ${fmt(med(bs))} | ${fmt(med(as))} | ${diff().toExponential(1)} | ${load()} |`);
    }
  }
  await kernel.release();
  process.exit(0);
}

console.log('| measure | tokens | time (wall, CPU) |');
console.log('| --- | --- | --- |');
let lastOne: { n: number; cpu: number } | null = null;
let lastAll: { n: number; cpu: number } | null = null;
for (const n of sizes) {
  const t = trace(n);
  console.log(`| rollout (mean fusion, 12 layers, every cumulative matrix), JavaScript float64 | ${n} | ${fmt(median(() => attentionRollout(t)))} |`);
  await attentionRolloutWith(t, {}, kernel);
  console.log(`| rollout, native kernel (onnxruntime, 2 threads) | ${n} | ${fmt(await measure(() => attentionRolloutWith(t, {}, kernel), 3))} |`);
  const js = attentionRollout(t).layers;
  const native = (await attentionRolloutWith(t, {}, kernel)).layers;
  let diff = 0;
  js.forEach((r, l) => r.forEach((v, i) => (diff = Math.max(diff, Math.abs(v - native[l]![i]!) / Math.max(v, 1e-12)))));
  console.log(`| (largest relative difference native vs JavaScript: ${diff.toExponential(1)}) | ${n} | |`);
  console.log(`| rollout row of one token on demand (rolloutRows) | ${n} | ${fmt(median(() => rolloutRows(t, [n - 1])))} |`);
  console.log(`| rollout, discard 0.9, JavaScript | ${n} | ${fmt(median(() => attentionRollout(t, { discard: 0.9 })))} |`);
  console.log(`| rollout, discard 0.9, native products | ${n} | ${fmt(await measure(() => attentionRolloutWith(t, { discard: 0.9 }, kernel), 3))} |`);
  console.log(`| flow diagram layout (rollout, one token highlighted) | ${n} | ${fmt(median(() => flowLayout(t, { method: 'rollout', query: n - 1 })))} |`);
  const maxNodes = 13 * n;
  const estimate = (last: { n: number; cpu: number } | null, power: number) => (last ? last.cpu * (n / last.n) ** power : 0);
  if (estimate(lastOne, 3) / 1000 > budget) console.log(`| attention flow, one output token (${n} max-flows) | ${n} | not run (estimated ${ms(estimate(lastOne, 3))} CPU) |`);
  else {
    const r = median(() => attentionFlow(t, { targets: [n - 1], maxNodes }));
    console.log(`| attention flow, one output token (${n} max-flows) | ${n} | ${fmt(r)} |`);
    lastOne = { n, cpu: r.cpu };
  }
  if (estimate(lastAll, 4) / 1000 > budget) console.log(`| attention flow, every output token (${n * n} max-flows) | ${n} | not run (estimated ${ms(estimate(lastAll, 4))} CPU) |`);
  else {
    const r = median(() => attentionFlow(t, { maxNodes }));
    console.log(`| attention flow, every output token (${n * n} max-flows) | ${n} | ${fmt(r)} |`);
    lastAll = { n, cpu: r.cpu };
  }
}

if (!values['no-search']) {
  // Largest n (steps of 4) whose flow finishes within 1 s of CPU time.
  const largest = (run: (t: Trace, n: number) => void, from: number): number => {
    let best = 0;
    for (let n = from; n <= 512; n += n < 64 ? 4 : 16) {
      const t = trace(n);
      const r = median(() => run(t, n));
      if (r.cpu > 1000) break;
      best = n;
    }
    return best;
  };
  const all = largest((t, n) => attentionFlow(t, { maxNodes: 13 * n }), 8);
  console.log(`\nlargest input whose attention flow for every token finishes within 1 s (CPU): ${all} tokens (12 layers: ${13 * all} graph nodes)`);
  const one = largest((t, n) => attentionFlow(t, { targets: [n - 1], maxNodes: 13 * n }), 16);
  console.log(`largest input whose attention flow for one token (a click) finishes within 1 s (CPU): ${one} tokens`);
}
await kernel.release();
