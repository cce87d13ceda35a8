/**
 * Head metrics and head types on a BERT-base-shaped synthetic trace (12 layers × 12 heads,
 * bench/synthetic-trace.ts) at 32, 128 and 512 tokens: `headMetrics` (every metric, per layer and
 * model aggregates) and `headTable` (metrics plus every type score), median of 5 runs after one
 * warm-up, wall clock and this process's CPU time.
 *
 *   npm run bench:analysis-heads        (or: npx tsx bench/analysis-heads.ts [--tokens 32,128,512])
 */
import { parseArgs } from 'node:util';
import { headMetrics } from '../src/analysis/head-metrics.js';
import { headTable } from '../src/analysis/head-types.js';
import { syntheticTrace } from './synthetic-trace.js';

const { values } = parseArgs({ options: { tokens: { type: 'string', default: '32,128,512' }, runs: { type: 'string', default: '5' } } });
const lengths = values.tokens.split(',').map(Number);
const runs = Number(values.runs);

function measure(f: () => unknown): { wall: number; cpu: number } {
  f();
  const walls: number[] = [];
  const cpus: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    f();
    walls.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    cpus.push((c.user + c.system) / 1000);
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  return { wall: median(walls), cpu: median(cpus) };
}

console.log(`head metrics and types, 12 layers × 12 heads, median of ${runs} runs (ms, wall / CPU)`);
console.log('| tokens | headMetrics | headTable (metrics + types) | headTable, exclude first |');
console.log('|---:|---:|---:|---:|');
for (const n of lengths) {
  const trace = syntheticTrace({ tokens: n, qk: false });
  const m = measure(() => headMetrics(trace));
  const t = measure(() => headTable(trace));
  const x = measure(() => headTable(trace, undefined, { excludeFirstToken: true }));
  const f = (r: { wall: number; cpu: number }) => `${r.wall.toFixed(0)} / ${r.cpu.toFixed(0)}`;
  console.log(`| ${n} | ${f(m)} | ${f(t)} | ${f(x)} |`);
}
