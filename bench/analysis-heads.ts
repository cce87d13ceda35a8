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
 *   npm run bench:analysis-heads        (or: npx tsx bench/analysis-heads.ts [--tokens 32,128,512] [--runs 5])
 */
import { parseArgs } from 'node:util';
import { headMetrics } from '../src/analysis/head-metrics.js';
import { HEAD_COLUMNS, headTable } from '../src/analysis/head-types.js';
import { headKernelStatus } from '../src/analysis/wasm/head-kernel.js';
import { type Timing, measure, timeOnce } from './measure.js';
import { syntheticTrace } from './synthetic-trace.js';

const { values } = parseArgs({
  options: { tokens: { type: 'string', default: '32,128,512' }, runs: { type: 'string', default: '5' } },
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
