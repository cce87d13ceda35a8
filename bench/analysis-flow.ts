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
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
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

const { values } = parseArgs({ options: { tokens: { type: 'string' }, budget: { type: 'string' }, search: { type: 'boolean' }, 'no-search': { type: 'boolean' }, baseline: { type: 'string' } } });
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
