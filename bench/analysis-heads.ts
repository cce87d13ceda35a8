/**
 * Head metrics and head types on a BERT-base-shaped synthetic trace (12 layers × 12 heads,
 * bench/synthetic-trace.ts) at 32, 128 and 512 tokens: `headMetrics` (every metric, per layer and
 * model aggregates), `headTable` (metrics plus every type score), the same with the first token
 * excluded, and `headTable` with `omit: ['js_from_first', 'quantiles']` (computing lazily only what
 * a view of head types needs: the type scores and top types are bit-identical) — all in this run;
 * median of 5 runs after one warm-up (bench/measure.ts), wall clock and this process's CPU time.
 *
 * Before/after in the same run: `--baseline REV` (default 1b4fa9c, the code before the quantile,
 * row-sum and fast-log changes of 2026-12-02) loads src/analysis/head-metrics.ts and head-types.ts as they
 * were at that git revision, and the same two files of the working tree, both transpiled with
 * TypeScript into temporary folders (removed at the end; their other imports resolve to this
 * build's modules, so both sides run the same kind of generated code), times the two headTables
 * alternately run by run, and prints the largest difference of any value between the two tables
 * and whether their top types agree. `--baseline none`
 * skips it (e.g. outside a git checkout).
 *
 *   npm run bench:analysis-heads        (or: npx tsx bench/analysis-heads.ts [--tokens 32,128,512] [--runs 5] [--baseline REV|none])
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import ts from 'typescript';
import { headMetrics } from '../src/analysis/head-metrics.js';
import { HEAD_COLUMNS, headTable } from '../src/analysis/head-types.js';
import { type Timing, measure, timeOnce } from './measure.js';
import { syntheticTrace } from './synthetic-trace.js';

const { values } = parseArgs({
  options: { tokens: { type: 'string', default: '32,128,512' }, runs: { type: 'string', default: '5' }, baseline: { type: 'string', default: '1b4fa9c' } },
});
const lengths = values.tokens.split(',').map(Number);
const runs = Number(values.runs);

type HeadTableFn = typeof headTable;

/**
 * headTable as it is at git revision `rev` (null: in the working tree), transpiled into a
 * temporary folder (see the module comment); both sides of the comparison load this way, so that
 * they run the same kind of generated code.
 */
async function loadVersion(rev: string | null): Promise<{ table: HeadTableFn; dir: string }> {
  const here = new URL('../src/analysis/', import.meta.url);
  const root = execFileSync('git', ['rev-parse', '--show-toplevel'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  const dir = mkdtempSync(join(tmpdir(), 'attnscope-heads-baseline-'));
  for (const f of ['head-metrics', 'head-types']) {
    const source =
      rev === null
        ? readFileSync(join(root, 'src', 'analysis', `${f}.ts`), 'utf8')
        : execFileSync('git', ['show', `${rev}:src/analysis/${f}.ts`], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    let js = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } }).outputText;
    // The baseline's own modules stay side by side; every other import is this build's module.
    js = js.replace(/from '(\.\.?\/[^']+)'/g, (_m, p: string) =>
      p === './head-metrics.js' || p === './head-types.js' ? `from '${p.replace(/\.js$/, '.mjs')}'` : `from '${new URL(p, here).href}'`,
    );
    writeFileSync(join(dir, `${f}.mjs`), js);
  }
  const mod = (await import(pathToFileURL(join(dir, 'head-types.mjs')).href)) as { headTable: HeadTableFn };
  return { table: mod.headTable, dir };
}

const loadBoth = async (rev: string) => ({ before: await loadVersion(rev), after: await loadVersion(null) });
const baseline = values.baseline === 'none' ? null : await loadBoth(values.baseline).catch((e: unknown) => {
  console.log(`(no baseline: ${e instanceof Error ? e.message.split('\n')[0] : String(e)})`);
  return null;
});
const f = (r: Timing) => `${r.wall.toFixed(0)} / ${r.cpu.toFixed(0)}`;
try {
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
  if (baseline) {
    console.log(`\nheadTable (every metric and type score) at ${values.baseline} vs this build, ${runs} runs alternated after a warm-up (ms CPU: median; median of the paired differences)`);
    console.log('| tokens | before | after | saved (paired) | largest difference of a value | same top types |');
    console.log('|---:|---:|---:|---:|---:|---|');
    for (const n of lengths) {
      const trace = traces.get(n)!;
      const old = baseline.before.table;
      const now = baseline.after.table;
      // The largest difference of any value (and whether the top types agree) between the two tables.
      const a = old(trace);
      const b = now(trace);
      let diff = 0;
      let typesAgree = JSON.stringify(b) === JSON.stringify(headTable(trace));
      a.forEach((r, i) => {
        const o = b[i]!;
        if (r.top_type !== o.top_type) typesAgree = false;
        for (const c of HEAD_COLUMNS) if (!(Number.isNaN(r[c]) && Number.isNaN(o[c]))) diff = Math.max(diff, Math.abs(r[c] - o[c]));
      });
      const before: number[] = [];
      const after: number[] = [];
      for (let i = 0; i < runs; i++) {
        before.push((await timeOnce(() => old(trace))).cpu);
        after.push((await timeOnce(() => now(trace))).cpu);
      }
      const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      const saved = median(before.map((b, i) => b - after[i]!));
      console.log(`| ${n} | ${median(before).toFixed(0)} | ${median(after).toFixed(0)} | ${saved.toFixed(0)} (${((100 * saved) / median(before)).toFixed(0)} %) | ${diff.toExponential(1)} | ${typesAgree ? 'yes' : 'NO'} |`);
    }
  }
} finally {
  if (baseline) for (const v of [baseline.before, baseline.after]) rmSync(v.dir, { recursive: true, force: true });
}
