/**
 * Head metrics and head types on a BERT-base-shaped synthetic trace (12 layers × 12 heads,
 * bench/synthetic-trace.ts) at 32, 128 and 512 tokens: `headMetrics` (every metric, per layer and
 * model aggregates), `headTable` (metrics plus every type score), the same with the first token
 * excluded, and `headTable` with `omit: ['js_from_first', 'quantiles']` (computing lazily only what
 * a view of head types needs: the type scores and top types are bit-identical) — all in this run;
 * median of 5 runs after one warm-up (bench/measure.ts), wall clock and this process's CPU time.
 *
 *   npm run bench:analysis-heads        (or: npx tsx bench/analysis-heads.ts [--tokens 32,128,512] [--runs 5])
 */
import { parseArgs } from 'node:util';
import { headMetrics } from '../src/analysis/head-metrics.js';
import { headTable } from '../src/analysis/head-types.js';
import { type Timing, measure } from './measure.js';
import { syntheticTrace } from './synthetic-trace.js';

const { values } = parseArgs({ options: { tokens: { type: 'string', default: '32,128,512' }, runs: { type: 'string', default: '5' } } });
const lengths = values.tokens.split(',').map(Number);
const runs = Number(values.runs);

console.log(`head metrics and types, 12 layers × 12 heads, median of ${runs} runs (ms, wall / CPU)`);
console.log('| tokens | headMetrics | headTable (metrics + types) | headTable, exclude first | headTable, omit js_from_first + quantiles |');
console.log('|---:|---:|---:|---:|---:|');
for (const n of lengths) {
  const trace = syntheticTrace({ tokens: n, qk: false });
  const m = await measure(() => headMetrics(trace), runs);
  const t = await measure(() => headTable(trace), runs);
  const x = await measure(() => headTable(trace, undefined, { excludeFirstToken: true }), runs);
  const o = await measure(() => headTable(trace, undefined, { omit: ['js_from_first', 'quantiles'] }), runs);
  const f = (r: Timing) => `${r.wall.toFixed(0)} / ${r.cpu.toFixed(0)}`;
  console.log(`| ${n} | ${f(m)} | ${f(t)} | ${f(x)} | ${f(o)} |`);
}
