/**
 * The head kernel's row scan alone (src/analysis/wasm/head-kernel.as `scanHead`), ns per weight:
 * the heads of one layer of a BERT-base-shaped synthetic trace (bench/synthetic-trace.ts, 12 heads
 * at 512 tokens by default) scanned as headTable scans them (the first layer's same head for the
 * Jensen–Shannon term, the layer mean, the quantiles' histogram, no pooled copy), each head copied
 * into the kernel's memory just before its scans, `--reps` scans per head timed one by one.
 *
 * Variants, measured alternated round by round in one process (min and median over the rounds of
 * each round's CPU ns per weight — this thread's CPU time around each scanHead call, summed over the
 * round's heads and reps; the round's wall clock, copies and row sums included, apart) — the kernel's source compiled
 * again in memory (scripts/head-kernel-compile.mjs) with one part left out or changed (values
 * wrong where a part is left out: timing only):
 *   full          the source as it is
 *   no-hist       the histogram and its bins left out (scanHead's hist argument 0)
 *   no-lm         the layer mean's read-modify-write left out (lm 0)
 *   no-js         the Jensen–Shannon mixture (its logarithm) left out (fw 0)
 *   no-sq-dist    Σ w² and Σ w·|i − j| left out
 *   no-counts     the counts below the threshold and below 1/support left out
 *   no-ent        the row entropy's logarithm left out (the weights summed instead)
 *   no-hist-inc   the histogram's four scalar increments per step left out (its bins still computed and stored)
 *   hist-4sub     each of the four lanes counted in a histogram of its own (no two increments of a step on one address)
 * plus, with `--against <file.as>`, that source's full scan (`against`; its scanHead must take the
 * same arguments, or fewer: a revision before the distance table reads 26). `--source <file.as>`: the variants of that source instead of this tree's (an
 * earlier revision's: `git show <rev>:src/analysis/wasm/head-kernel.as > <file.as>`).
 *
 *   npx tsx bench/analysis-heads-kernel.ts [--tokens 512] [--heads 12] [--reps 5] [--rounds 11] [--variants full,no-hist] [--against <file.as>] [--source <file.as>]
 *   (pin it for steadier figures: taskset -c 0 npx tsx …)
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type HeadKernelExports, KernelLayout } from '../src/analysis/wasm/head-kernel.js';
import { syntheticTrace } from './synthetic-trace.js';

const { values } = parseArgs({
  options: {
    tokens: { type: 'string', default: '512' },
    heads: { type: 'string', default: '12' },
    reps: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '11' },
    variants: { type: 'string' },
    against: { type: 'string' },
    source: { type: 'string' },
  },
});

/** The histogram's bins (head-kernel.as BINS) and the per-lane stride of hist-4sub. */
const BINS = 200 * 256 + 2;
const HIST_BYTES = (BINS + 1) * 4;

/** A change of the kernel's source, wherever `from` occurs (a variant none of whose changes occurs is stale). */
type Patch = [from: string, to: string];
interface Variant {
  patches: Patch[];
  hist?: boolean;
  lm?: boolean;
  js?: boolean;
}
const VARIANTS: Record<string, Variant> = {
  full: { patches: [] },
  'no-hist': { patches: [], hist: false },
  'no-lm': { patches: [], lm: false },
  'no-js': { patches: [], js: false },
  'no-sq-dist': {
    patches: [
      ['sq = f64x2.add(sq, sqStep(v0, v1));', ''],
      ['dist = f64x2.add(dist, distStep(v0, v1, qpv, k0, k1));', ''],
      // (distances from a table, since 2026-12-03's eighth pass)
      ['dist = f64x2.add(dist, distStep(v0, v1, dp));', ''],
      // (head-kernel.as before 2026-12-03's fifth pass)
      ['sq = f64x2.add(sq, f64x2.add(f64x2.mul(v0, v0), f64x2.mul(v1, v1)));', ''],
      ['dist = f64x2.add(dist, f64x2.add(f64x2.mul(v0, f64x2.abs(f64x2.sub(qpv, k0))), f64x2.mul(v1, f64x2.abs(f64x2.sub(qpv, k1)))));', ''],
    ],
  },
  'no-counts': {
    patches: [
      ['below = i32x4.sub(below, lt);', ''],
      ['belowU = i32x4.sub(belowU, lu);', ''],
    ],
  },
  'no-ent': {
    patches: [
      ['ent = f64x2.sub(ent, xLogX4(v));', 'ent = f64x2.sub(ent, f64x2.promote_low_f32x4(v));'],
      // (two steps at a time)
      ['ent = f64x2.sub(f64x2.sub(ent, xLogX4(v)), xLogX4(v2));', 'ent = f64x2.sub(f64x2.sub(ent, f64x2.promote_low_f32x4(v)), f64x2.promote_low_f32x4(v2));'],
    ],
  },
  'no-hist-inc': {
    patches: [0, 1, 2, 3].map((j): Patch => [`countAt(hist, i32x4.extract_lane(bb, ${j}));`, ';']),
  },
  'hist-4sub': {
    patches: [1, 2, 3].map((j): Patch => [`countAt(hist, i32x4.extract_lane(bb, ${j}));`, `countAt(hist + ${j * HIST_BYTES}, i32x4.extract_lane(bb, ${j}));`]),
  },
};

const source = readFileSync(values.source ?? new URL('../src/analysis/wasm/head-kernel.as', import.meta.url), 'utf8');
const { compileHeadKernel } = (await import('../scripts/head-kernel-compile.mjs' as string)) as { compileHeadKernel: (source: string) => Promise<Uint8Array> };

function patched(name: string, v: Variant): string {
  let s = source;
  for (const [from, to] of v.patches) s = s.split(from).join(to);
  if (v.patches.length > 0 && s === source) throw new Error(`variant ${name}: none of its changes applies to this head-kernel.as (update bench/analysis-heads-kernel.ts)`);
  return s;
}

const names = values.variants ? values.variants.split(',') : Object.keys(VARIANTS);
for (const n of names) if (!VARIANTS[n]) throw new Error(`--variants: expected some of ${Object.keys(VARIANTS).join(', ')}, got '${n}'`);
const kernels: { name: string; v: Variant; k: HeadKernelExports }[] = [];
const instance = async (text: string) => new WebAssembly.Instance(new WebAssembly.Module((await compileHeadKernel(text)) as BufferSource), {}).exports as unknown as HeadKernelExports;
for (const name of names) kernels.push({ name, v: VARIANTS[name]!, k: await instance(patched(name, VARIANTS[name]!)) });
if (values.against) kernels.push({ name: 'against', v: VARIANTS.full!, k: await instance(readFileSync(values.against, 'utf8')) });

const T = Number(values.tokens);
const H = Number(values.heads);
const reps = Number(values.reps);
const rounds = Number(values.rounds);
const trace = syntheticTrace({ layers: 2, heads: H, tokens: T, qk: false });
const [, nq, nk] = trace.attention.self!.dims;
const size = nq * nk;
const [first, layer] = trace.attention.self!.layers as [Float32Array, Float32Array];

/** One kernel's memory laid out as headTable's pass lays it out (one head's slot; the first layer's whole). */
interface Setup {
  run: (h: number) => number[];
}
function setup(v: Variant, k: HeadKernelExports): Setup {
  const lay = new KernelLayout(k.heapBase());
  const A = {
    W: lay.take(size * 4),
    W0: lay.take(H * size * 4),
    supp: lay.take(size),
    pooled: lay.take(size * 8 + 32),
    bins: lay.take(size * 2),
    hist: lay.take(4 * HIST_BYTES),
    lo: lay.take(nq * 4),
    hi: lay.take(nq * 4),
    size: lay.take(nq * 4),
    sums: lay.take(nq * 8),
    counted: lay.take(nq),
    fcounted: lay.take(nq),
    fsums: lay.take(H * nq * 8),
    lm: lay.take(size * 4),
    acc: lay.take(9 * 8),
    rowOut: lay.take(nq * 32),
    args: lay.take(27 * 8),
    dist: lay.take((nq + nk + 4) * 8),
  };
  const need = lay.end - k.memory.buffer.byteLength;
  if (need > 0) k.memory.grow(Math.ceil(need / 65536));
  const buf = k.memory.buffer;
  const f32 = new Float32Array(buf);
  const f64 = new Float64Array(buf);
  const u8 = new Uint8Array(buf);
  const i32 = new Int32Array(buf);
  const u32 = new Uint32Array(buf);
  // A BERT trace without masks: every row sees every key.
  u8.fill(1, A.supp, A.supp + size);
  i32.fill(0, A.lo >> 2, (A.lo >> 2) + nq);
  i32.fill(nk, A.hi >> 2, (A.hi >> 2) + nq);
  i32.fill(nk, A.size >> 2, (A.size >> 2) + nq);
  f32.set(first, A.W0 >> 2);
  // The first layer's row sums per head (as its own pass made them).
  for (let h = 0; h < H; h++) k.rowSums(A.W0 + h * size * 4, A.supp, A.lo, A.hi, A.size, nq, nk, A.fsums + h * nq * 8, A.fcounted);
  const args = [
    A.W, 0, A.supp, A.lo, A.hi, A.size, A.sums, A.counted, A.fcounted, 0, A.lo, A.hi, A.size, nq, nk, 0, 0.01, 5,
    A.pooled, A.acc, v.lm === false ? 0 : A.lm, 1 / H, v.hist === false ? 0 : A.hist, A.bins, A.rowOut, 1, A.dist,
  ];
  return {
    run: (h) => {
      // The head copied in just before its scans (as headTable does), then its row sums.
      f32.set(layer.subarray(h * size, (h + 1) * size), A.W >> 2);
      k.rowSums(A.W, A.supp, A.lo, A.hi, A.size, nq, nk, A.sums, A.counted);
      args[1] = v.js === false ? 0 : A.W0 + h * size * 4;
      args[9] = A.fsums + h * nq * 8;
      f64.set(args, A.args >> 3);
      const times: number[] = [];
      for (let r = 0; r < reps; r++) {
        f64.fill(0, A.acc >> 3, (A.acc >> 3) + 9);
        u32.fill(0, A.hist >> 2, (A.hist + 4 * HIST_BYTES) >> 2);
        const c0 = process.cpuUsage();
        k.scanHead(A.args);
        const c = process.cpuUsage(c0);
        times.push((c.user + c.system) / 1000);
      }
      return times;
    },
  };
}

const setups = kernels.map(({ name, v, k }) => ({ name, s: setup(v, k) }));
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
console.log(`scanHead alone: ${H} heads of ${nq} × ${nk} (layer 1 against layer 0) of a BERT-base-shaped trace, ${reps} scans per head, ${rounds} rounds alternated across variants after a warm-up round · load ${load()}`);
const perRound = new Map<string, number[]>(setups.map(({ name }) => [name, []]));
const wall = new Map<string, number>(setups.map(({ name }) => [name, 0]));
for (let round = -1; round < rounds; round++) {
  for (const { name, s } of setups) {
    const t0 = performance.now();
    let ms = 0;
    for (let h = 0; h < H; h++) ms += s.run(h).reduce((a, b) => a + b, 0);
    const t = performance.now() - t0;
    if (round < 0) continue;
    perRound.get(name)!.push((ms * 1e6) / (H * reps * size));
    wall.set(name, wall.get(name)! + t);
  }
}
const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
const full = sorted(perRound.get(setups[0]!.name)!)[Math.floor(rounds / 2)]!;
console.log(`| variant | CPU ns per weight, min | median | median vs ${setups[0]!.name} | wall of the rounds (ms, copies and row sums included) |`);
console.log('|---|---:|---:|---:|---:|');
for (const { name } of setups) {
  const xs = sorted(perRound.get(name)!);
  const med = xs[Math.floor(xs.length / 2)]!;
  console.log(`| ${name} | ${xs[0]!.toFixed(2)} | ${med.toFixed(2)} | ${(med / full).toFixed(2)} | ${wall.get(name)!.toFixed(0)} |`);
}
console.log(`load ${load()}`);
