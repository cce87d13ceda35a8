// The per-row pass of the head metrics (src/analysis/head-metrics.ts) in WebAssembly SIMD.
//
// AssemblyScript source (https://www.assemblyscript.org); scripts/build-head-kernel.mjs compiles it
// with SIMD enabled into src/analysis/wasm/head-kernel-wasm.ts (the module's bytes, base64), which
// is committed; test/analysis-head-kernel-build.test.ts checks that it is this file's build. The
// extension is .as so that TypeScript does not type-check it as a program of its own.
//
// No allocator: the caller (head-kernel.ts) lays its arrays out in the exported memory from
// heapBase() on and passes byte addresses. Float64 accumulation in f64x2 lanes: lane 0 sums the
// even offsets from the row's first key, lane 1 the odd ones, added at the end (then a lone last
// key). Every sum of −x·log x is taken in that same order by every function here, so that two equal
// rows give bit-identical entropies (the Jensen–Shannon term of equal rows is exactly 0).

// ln 2 = LN2_HI + LN2_LO: LN2_HI is ln 2 with its low 32 bits cleared (21 significant bits, so
// e · LN2_HI is exact for every exponent e), LN2_LO the rest (the float64 ln 2's low bits plus
// 2.319046813846299558e-17, the float64 ln 2's own error).
const LN2_HI: f64 = 0.6931467056274414;
const LN2_LO: f64 = 4.7493250390316726e-7;
const TWO52: f64 = 4503599627370496.0;
const MIN_NORMAL: f64 = 2.2250738585072014e-308;
// The quantiles' histogram (head-metrics.ts `quantiles`): bins of the float64 high word's top 20
// bits after the sign (1/256 octave), bin 0 below 2^−100, the last bin from 2^100 up.
const BIN_BASE: i32 = (1023 - 100) << 8;
const BINS: i32 = 200 * 256 + 2;
/** Lane 0 all ones, lane 1 zeros. */
const LANE0: v128 = i64x2(-1, 0);

/** Where the caller's arrays may start (past this module's static data). */
export function heapBase(): usize {
  return (__heap_base + 15) & ~15;
}

// The logarithm's constants, each splatted to both lanes, read from memory where they are used:
// V8 builds a v128 constant in the code from general registers (several instructions each time),
// a load from memory is one.
const K: usize = memory.data<f64>([
  MIN_NORMAL, MIN_NORMAL, // 0
  1.0 / 5.0, 1.0 / 5.0, // 16
  -1.0 / 6.0, -1.0 / 6.0, // 32
  -1.0 / 2.0, -1.0 / 2.0, // 48
  TWO52 + 1023.0, TWO52 + 1023.0, // 64: 2^52 plus the exponent bias
  LN2_HI, LN2_HI, // 80
  LN2_LO, LN2_LO, // 96
  1.0 / 3.0, 1.0 / 3.0, // 112
  -1.0 / 4.0, -1.0 / 4.0, // 128
], 16);
const K_BITS: usize = memory.data<u64>([
  0x000fffffffffffff, 0x000fffffffffffff, // 0: mantissa
  0x3fe6a09e667f3bcd, 0x3fe6a09e667f3bcd, // 16: √2/2
  0x4330000000000000, 0x4330000000000000, // 32: 2^52
  0x0000080000000000, 0x0000080000000000, // 48: half a table step (2^43)
  0x00095f619980c433, 0x00095f619980c433, // 64: 1.0 − √2/2 in bits (moves the exponent's step to √2/2)
  0xfffff00000000000, 0xfffff00000000000, // 80: sign, exponent and the top 8 mantissa bits
], 16);

// The logarithm's table (filled by the caller, head-kernel.ts, with Math.log): the points c of
// [√2/2, √2] whose float64 keeps only the top 8 mantissa bits (steps of 2^−9 below 1, 2^−8 above),
// from c = √2/2 rounded down on: entry j, 16 bytes at LOG_TABLE + 16 j, holds 1/c and log c.
const LOG_TABLE: usize = memory.data(257 * 16, 16);
/** The first table point's top 20 bits (exponent 0x3fe, mantissa 0x6a: 0.70703125). */
const TABLE_FIRST: i32 = (0x3fe << 8) + 0x6a;

/** Where the caller writes the logarithm's table (see LOG_TABLE). */
export function logTable(): usize {
  return LOG_TABLE;
}

/**
 * Natural logarithm of both lanes (each ≥ 2^−1022, the smallest normal float64, and finite: what
 * float32 weights renormalised by their row sums give). x = 2^e · y with y ∈ [√2/2, √2) (the
 * bits moved by 1.0 − √2/2 so that the exponent steps at √2/2, as fdlibm's log does); c the table
 * point nearest to y (the top 8 mantissa bits, rounded); then log x = e ln 2 + log c + log1p(r),
 * r = (y − c)/c, |r| ≤ 2^−9 (y − c is exact), log1p(r) as its series to r⁶ (the next term,
 * r⁷/7 ≤ 2^−65.8, is below float64 rounding of r). ln 2 in two parts (LN2_HI · e exact). Near 1
 * from either side e = 0 and c = 1: relative error a few float64 roundings (test: ≤ 4e-16).
 */
// @ts-ignore: decorator
@inline function logv(x: v128): v128 {
  const u = i64x2.add(x, v128.load(K_BITS, 64));
  // The exponent as a float64: (u >> 52) | 2^52's bits, minus 2^52 and the bias.
  const e = f64x2.sub(v128.or(i64x2.shr_u(u, 52), v128.load(K_BITS, 32)), v128.load(K, 64));
  const y = i64x2.add(v128.and(u, v128.load(K_BITS)), v128.load(K_BITS, 16));
  const yr = i64x2.add(y, v128.load(K_BITS, 48));
  const c = v128.and(yr, v128.load(K_BITS, 80));
  const idx = i64x2.shr_u(yr, 44);
  const a0 = v128.load(LOG_TABLE + (<usize>(<i32>i64x2.extract_lane(idx, 0) - TABLE_FIRST) << 4));
  const a1 = v128.load(LOG_TABLE + (<usize>(<i32>i64x2.extract_lane(idx, 1) - TABLE_FIRST) << 4));
  const invc = v128.shuffle<f64>(a0, a1, 0, 2);
  const t = v128.shuffle<f64>(a0, a1, 1, 3);
  const r = f64x2.mul(f64x2.sub(y, c), invc);
  // log1p(r) = r + r² q(r), q(r) = −1/2 + r/3 − r²/4 + r³/5 − r⁴/6, by pairs (a short dependency chain).
  const r2 = f64x2.mul(r, r);
  const q01 = f64x2.add(v128.load(K, 48), f64x2.mul(v128.load(K, 112), r));
  const q23 = f64x2.add(v128.load(K, 128), f64x2.mul(v128.load(K, 16), r));
  const q = f64x2.add(q01, f64x2.mul(r2, f64x2.add(q23, f64x2.mul(r2, v128.load(K, 32)))));
  const l1p = f64x2.add(r, f64x2.mul(r2, q));
  return f64x2.add(f64x2.mul(e, v128.load(K, 80)), f64x2.add(t, f64x2.add(l1p, f64x2.mul(e, v128.load(K, 96)))));
}

/** x · log x per lane, 0 where x is 0 (lanes ≥ 0: 0 goes through the logarithm as 2^−1022). */
// @ts-ignore: decorator
@inline function xLogX(x: v128): v128 {
  return f64x2.mul(x, logv(f64x2.pmax(x, v128.load(K))));
}

/** log of n float64 values at `from` into `to` (for the tests' accuracy check). */
export function logArray(from: usize, to: usize, n: i32): void {
  let i = 0;
  for (; i + 1 < n; i += 2) v128.store(to + (<usize>i << 3), logv(v128.load(from + (<usize>i << 3))));
  if (i < n) f64.store(to + (<usize>i << 3), f64x2.extract_lane(logv(f64x2.splat(f64.load(from + (<usize>i << 3)))), 0));
}

/** Two float32 at p as float64 lanes. */
// @ts-ignore: decorator
@inline function load2(p: usize): v128 {
  return f64x2.promote_low_f32x4(v128.load64_zero(p));
}

/** Lane masks (all ones where the support byte is 1) of the keys at s and s + 1. */
// @ts-ignore: decorator
@inline function mask2(s: usize): v128 {
  return i64x2.replace_lane(i64x2.splat(-(<i64>load<u8>(s))), 1, -(<i64>load<u8>(s, 1)));
}

/**
 * Each row's sum over its support of one head's weights (float32 rows of nk at w), into the
 * float64 array at sums, and 1 at counted where the row counts (support of more than one key and a
 * positive sum). Rows run over their keys lo … hi − 1 (int32 arrays), testing the support bytes
 * (nq × nk at supp) only where the range has keys outside the support (size: the support's size).
 */
export function rowSums(w: usize, supp: usize, lo: usize, hi: usize, size: usize, nq: i32, nk: i32, sums: usize, counted: usize): void {
  for (let q = 0; q < nq; q++) {
    const base = <usize>q * <usize>nk;
    const a = load<i32>(lo + (<usize>q << 2));
    const b = load<i32>(hi + (<usize>q << 2));
    const n = load<i32>(size + (<usize>q << 2));
    let acc = f64x2.splat(0.0);
    let k = a;
    const whole = n === b - a;
    for (; k + 1 < b; k += 2) {
      let v = load2(w + ((base + <usize>k) << 2));
      if (!whole) v = v128.and(v, mask2(supp + base + <usize>k));
      acc = f64x2.add(acc, v);
    }
    let s = f64x2.extract_lane(acc, 0) + f64x2.extract_lane(acc, 1);
    if (k < b && (whole || load<u8>(supp + base + <usize>k) === 1)) s += <f64>load<f32>(w + ((base + <usize>k) << 2));
    f64.store(sums + (<usize>q << 3), s);
    store<u8>(counted + <usize>q, n > 1 && s > 0 ? 1 : 0);
  }
}

// Accumulators of scanRow, float64 at acc: 0 hm (entropy of the mixture with the first layer),
// 1 row max, 2 row entropy, 3 # below threshold, 4 # below 1/support, 5 row sum, 6 Σ w², 7 Σ w·|i − j|,
// 8 Σ w over |i − j| ≥ longRange. 3, 4, 6, 7 and 8 continue from their values (per-head sums);
// the others start at 0.

/** Counts x in its histogram bin (hist, uint32) and keeps the bin as the `at`-th (bins, uint16); see `histogram`. */
// @ts-ignore: decorator
@inline function count(hist: usize, bins: usize, at: i32, x: f64): void {
  const hi = <i32>(reinterpret<u64>(x) >> 32);
  let b = ((hi & 0x7fffffff) >>> 12) - BIN_BASE + 1;
  b = b < 0 ? 0 : b >= BINS ? BINS - 1 : b;
  store<u16>(bins + (<usize>at << 1), <u16>b);
  const h = hist + (<usize>b << 2);
  store<u32>(h, load<u32>(h) + 1);
  // Exact zeros also in the slot after the last bin (bin 0 of only zeros needs no gathering).
  if (x === 0) {
    const z = hist + (<usize>BINS << 2);
    store<u32>(z, load<u32>(z) + 1);
  }
}

/**
 * The histogram bins (see `count`) of both lanes of a pair of weights ≥ 0, in i32x4 lanes 0 and 2
 * (the others 0): the float64's top 20 bits after the sign, less the base, clamped to the bins.
 */
// @ts-ignore: decorator
@inline function bins2(v: v128): v128 {
  const top = v128.and(i64x2.shr_u(v, 44), i64x2.splat(0x7ffff));
  const b = i32x4.add(top, i32x4.splat(1 - BIN_BASE));
  return i32x4.min_s(i32x4.max_s(b, i32x4.splat(0)), i32x4.splat(BINS - 1));
}

/** Counts bin b (uint32 at hist) and keeps it as the `at`-th bin (bins, uint16). */
// @ts-ignore: decorator
@inline function countBin(hist: usize, bins: usize, at: i32, b: i32): void {
  store<u16>(bins + (<usize>at << 1), <u16>b);
  const h = hist + (<usize>b << 2);
  store<u32>(h, load<u32>(h) + 1);
}

/** The lone last key of an odd row, copied beside a 0 (float32 pair at 0, the first layer's float32 pair at 16, support bytes at 32). */
const TAIL: usize = memory.data(48, 16);

// @ts-ignore: decorator
@inline function scanBody(
  masked: bool, js: bool, w: usize, fw: usize, finv: f64, supp: usize, a: i32, b: i32, inv: f64, qp: f64,
  threshold: f64, uniform: f64, longRange: f64, pooled: usize, acc: usize, lm: usize, scale: f64, hist: usize, bins: usize,
): i32 {
  const scv = f64x2.splat(scale);
  const finvv = f64x2.splat(finv);
  let lp = lm + (<usize>a << 3);
  const invv = f64x2.splat(inv);
  const thr = f64x2.splat(threshold);
  const uni = f64x2.splat(uniform);
  const lr = f64x2.splat(longRange);
  const qpv = f64x2.splat(qp);
  const two = f64x2.splat(2.0);
  const half = f64x2.splat(0.5);
  let hm = f64x2.splat(0.0);
  let mx = f64x2.splat(0.0);
  let ent = f64x2.splat(0.0);
  let below = i64x2.splat(0);
  let belowU = i64x2.splat(0);
  let sum = f64x2.splat(0.0);
  let sq = f64x2.splat(0.0);
  let dist = f64x2.splat(0.0);
  let long = f64x2.splat(0.0);
  let kv = f64x2.replace_lane(f64x2.splat(<f64>a), 1, <f64>(a + 1));
  // Exact zeros among the counted weights (histogram's extra slot; unmasked rows only).
  let zeros = i64x2.splat(0);
  const zero = f64x2.splat(0.0);
  // Pairs of keys a, a + 1, …; an odd row's last key is read from TAIL, beside a 0 weight (and a 0
  // support byte), so that every iteration runs the same code.
  const pairs = (b - a) >> 1;
  const odd = (b - a) & 1;
  if (odd) {
    const last = <usize>(b - 1);
    store<f32>(TAIL, load<f32>(w + (last << 2)));
    store<f32>(TAIL, 0, 4);
    if (js) {
      store<f32>(TAIL, load<f32>(fw + (last << 2)), 16);
      store<f32>(TAIL, 0, 20);
    }
    if (masked) {
      store<u8>(TAIL, load<u8>(supp + last), 32);
      store<u8>(TAIL, 0, 33);
    }
  }
  let wp = w + (<usize>a << 2);
  let fp = fw + (<usize>a << 2);
  let sp = supp + <usize>a;
  let n = 0;
  for (let i = 0, iters = pairs + odd; i < iters; i++) {
    if (i === pairs) {
      wp = TAIL;
      fp = TAIL + 16;
      sp = TAIL + 32;
    }
    let v = f64x2.mul(load2(wp), invv);
    let m = i64x2.splat(-1);
    if (masked) {
      m = mask2(sp);
      v = v128.and(v, m);
    }
    if (js) {
      // The first layer's weight renormalised as its own scan renormalised it (w · inv).
      let mix = f64x2.mul(f64x2.add(f64x2.mul(load2(fp), finvv), v), half);
      if (masked) mix = v128.and(mix, m);
      hm = f64x2.sub(hm, xLogX(mix));
    }
    mx = f64x2.pmax(mx, v);
    ent = f64x2.sub(ent, xLogX(v));
    let lt = f64x2.lt(v, thr);
    let lu = f64x2.lt(v, uni);
    if (masked) {
      lt = v128.and(lt, m);
      lu = v128.and(lu, m);
    }
    below = i64x2.sub(below, lt);
    belowU = i64x2.sub(belowU, lu);
    sum = f64x2.add(sum, v);
    sq = f64x2.add(sq, f64x2.mul(v, v));
    const d = f64x2.abs(f64x2.sub(qpv, kv));
    dist = f64x2.add(dist, f64x2.mul(v, d));
    long = f64x2.add(long, v128.and(v, f64x2.ge(d, lr)));
    kv = f64x2.add(kv, two);
    // The layer's head mean: w · scale added (0 off the support; past an odd row's end, 0 is added).
    if (lm !== 0) {
      v128.store(lp, f64x2.add(v128.load(lp), f64x2.mul(v, scv)));
      lp += 16;
    }
    // The weights of the support, in key order (the arrays have 16 bytes of padding at their end),
    // and their histogram bins.
    if (!masked) {
      v128.store(pooled + (<usize>n << 3), v);
      if (hist !== 0) {
        // Both bins computed in SIMD; only the counting is per value.
        const bb = bins2(v);
        zeros = i64x2.sub(zeros, f64x2.eq(v, zero));
        countBin(hist, bins, n, i32x4.extract_lane(bb, 0));
        if (i !== pairs) countBin(hist, bins, n + 1, i32x4.extract_lane(bb, 2));
      }
      n += 2;
    } else {
      if (i64x2.extract_lane(m, 0) !== 0) {
        f64.store(pooled + (<usize>n << 3), f64x2.extract_lane(v, 0));
        if (hist !== 0) count(hist, bins, n, f64x2.extract_lane(v, 0));
        n++;
      }
      if (i64x2.extract_lane(m, 1) !== 0) {
        f64.store(pooled + (<usize>n << 3), f64x2.extract_lane(v, 1));
        if (hist !== 0) count(hist, bins, n, f64x2.extract_lane(v, 1));
        n++;
      }
    }
    wp += 8;
    fp += 8;
    sp += 2;
  }
  let nBelow = i64x2.extract_lane(below, 0) + i64x2.extract_lane(below, 1);
  let nBelowU = i64x2.extract_lane(belowU, 0) + i64x2.extract_lane(belowU, 1);
  if (!masked && odd) {
    // The 0 beside an odd row's last key is no key: take back its counts.
    n--;
    if (0 < threshold) nBelow--;
    if (0 < uniform) nBelowU--;
  }
  if (!masked && hist !== 0) {
    let z = i64x2.extract_lane(zeros, 0) + i64x2.extract_lane(zeros, 1);
    if (odd) z--;
    const zs = hist + (<usize>BINS << 2);
    store<u32>(zs, load<u32>(zs) + <u32>z);
  }
  f64.store(acc, f64x2.extract_lane(hm, 0) + f64x2.extract_lane(hm, 1));
  f64.store(acc, max(f64x2.extract_lane(mx, 0), f64x2.extract_lane(mx, 1)), 8);
  f64.store(acc, f64x2.extract_lane(ent, 0) + f64x2.extract_lane(ent, 1), 16);
  f64.store(acc, f64.load(acc, 24) + <f64>nBelow, 24);
  f64.store(acc, f64.load(acc, 32) + <f64>nBelowU, 32);
  f64.store(acc, f64x2.extract_lane(sum, 0) + f64x2.extract_lane(sum, 1), 40);
  f64.store(acc, f64.load(acc, 48) + (f64x2.extract_lane(sq, 0) + f64x2.extract_lane(sq, 1)), 48);
  f64.store(acc, f64.load(acc, 56) + (f64x2.extract_lane(dist, 0) + f64x2.extract_lane(dist, 1)), 56);
  f64.store(acc, f64.load(acc, 64) + (f64x2.extract_lane(long, 0) + f64x2.extract_lane(long, 1)), 64);
  return n;
}

/**
 * One row of one head: the keys a … b − 1 of the float32 row at w (key k at w + 4k), renormalised by
 * inv; supp: the row's support bytes (0: every key of the range is in the support); fw: the first
 * layer's float32 row of the same head and query (key k at fw + 4k; 0: no Jensen–Shannon term),
 * renormalised by finv (its weights w · finv, as that layer's own scan computed them); qp: the
 * query's position. Writes the support's weights from pooled on (returns how many) and the
 * accumulators at acc (see above); where lm is not 0, adds w · scale to the float64 row at lm (key
 * k at lm + 8k: a layer's head mean); where hist is not 0, counts the weights in the histogram
 * (`histogram`, their bins from bins on).
 */
export function scanRow(
  w: usize, fw: usize, finv: f64, supp: usize, a: i32, b: i32, inv: f64, qp: f64,
  threshold: f64, uniform: f64, longRange: f64, pooled: usize, acc: usize, lm: usize, scale: f64, hist: usize, bins: usize,
): i32 {
  if (supp === 0) {
    if (fw === 0) return scanBody(false, false, w, fw, finv, supp, a, b, inv, qp, threshold, uniform, longRange, pooled, acc, lm, scale, hist, bins);
    return scanBody(false, true, w, fw, finv, supp, a, b, inv, qp, threshold, uniform, longRange, pooled, acc, lm, scale, hist, bins);
  }
  if (fw === 0) return scanBody(true, false, w, fw, finv, supp, a, b, inv, qp, threshold, uniform, longRange, pooled, acc, lm, scale, hist, bins);
  return scanBody(true, true, w, fw, finv, supp, a, b, inv, qp, threshold, uniform, longRange, pooled, acc, lm, scale, hist, bins);
}

/**
 * scanRow with its arguments as 17 float64 at args, in its order (w, fw, finv, supp, a, b, inv, qp,
 * threshold, uniform, longRange, pooled, acc, lm, scale, hist, bins): one argument per call, since
 * browsers' calls from JavaScript into WebAssembly with many arguments can take microseconds.
 */
export function scanRowArgs(args: usize): i32 {
  return scanRow(
    <usize>f64.load(args), <usize>f64.load(args, 8), f64.load(args, 16), <usize>f64.load(args, 24), <i32>f64.load(args, 32), <i32>f64.load(args, 40),
    f64.load(args, 48), f64.load(args, 56), f64.load(args, 64), f64.load(args, 72), f64.load(args, 80),
    <usize>f64.load(args, 88), <usize>f64.load(args, 96), <usize>f64.load(args, 104), f64.load(args, 112), <usize>f64.load(args, 120), <usize>f64.load(args, 128),
  );
}

/**
 * scanRow over every counted row of one head (the row loop of head-metrics.ts scanHeadKernel: one
 * call per head instead of one per row). Arguments as 25 float64 at args: 0 w (the head's float32
 * weights, nq × nk), 1 fw (the first layer's same head, float32; 0: no Jensen–Shannon term),
 * 2 supp (support bytes, nq × nk), 3 lo, 4 hi, 5 size (int32 per row: key range and support size),
 * 6 sums (float64 row sums), 7 counted (bytes: the row counts), 8 fcounted, 9 fsums, 10 flo,
 * 11 fhi, 12 fsize (the same of the first layer's head), 13 nq, 14 nk, 15 shift (query q is at
 * position q + shift), 16 threshold, 17 longRange, 18 pooled, 19 acc, 20 lm (the layer's head mean,
 * float64 nq × nk; 0: none), 21 scale, 22 hist (0: none), 23 bins, 24 out. Per counted row q, into
 * the float64 array at out: 4q the row entropy (nats), 4q + 1 the mixture entropy against the first
 * layer's row when both rows are counted and span the same keys with no hole (else not written),
 * 4q + 2 the row max, 4q + 3 the row sum. Per-head accumulators at acc as scanRow leaves them.
 * Returns the number of pooled weights.
 */
export function scanHead(args: usize): i32 {
  const w = <usize>f64.load(args);
  const fw = <usize>f64.load(args, 8);
  const supp = <usize>f64.load(args, 16);
  const lo = <usize>f64.load(args, 24);
  const hi = <usize>f64.load(args, 32);
  const size = <usize>f64.load(args, 40);
  const sums = <usize>f64.load(args, 48);
  const counted = <usize>f64.load(args, 56);
  const fcounted = <usize>f64.load(args, 64);
  const fsums = <usize>f64.load(args, 72);
  const flo = <usize>f64.load(args, 80);
  const fhi = <usize>f64.load(args, 88);
  const fsize = <usize>f64.load(args, 96);
  const nq = <i32>f64.load(args, 104);
  const nk = <i32>f64.load(args, 112);
  const shift = <i32>f64.load(args, 120);
  const threshold = f64.load(args, 128);
  const longRange = f64.load(args, 136);
  const pooled = <usize>f64.load(args, 144);
  const acc = <usize>f64.load(args, 152);
  const lm = <usize>f64.load(args, 160);
  const scale = f64.load(args, 168);
  const hist = <usize>f64.load(args, 176);
  const bins = <usize>f64.load(args, 184);
  const out = <usize>f64.load(args, 192);
  let entries = 0;
  for (let q = 0; q < nq; q++) {
    if (load<u8>(counted + <usize>q) !== 1) continue;
    const qi = <usize>q << 2;
    const a = load<i32>(lo + qi);
    const b = load<i32>(hi + qi);
    const n = load<i32>(size + qi);
    const base = <usize>q * <usize>nk;
    const inv = 1.0 / f64.load(sums + (<usize>q << 3));
    const js = fw !== 0 && load<u8>(fcounted + <usize>q) === 1;
    const inline = js && n === b - a && load<i32>(flo + qi) === a && load<i32>(fhi + qi) === b && load<i32>(fsize + qi) === n;
    const finv = js ? 1.0 / f64.load(fsums + (<usize>q << 3)) : 0.0;
    const got = scanRow(
      w + (base << 2), inline ? fw + (base << 2) : 0, finv, n === b - a ? 0 : supp + base, a, b, inv, <f64>(q + shift),
      threshold, 1.0 / <f64>n, longRange, pooled + (<usize>entries << 3), acc, lm === 0 ? 0 : lm + (base << 3), scale, hist, bins + (<usize>entries << 1),
    );
    entries += got;
    const o = out + (<usize>q << 5);
    f64.store(o, f64.load(acc, 16));
    if (inline) f64.store(o, f64.load(acc), 8);
    f64.store(o, f64.load(acc, 8), 16);
    f64.store(o, f64.load(acc, 40), 24);
  }
  return entries;
}

/**
 * The renormalised row into float64 arrays: to[k] = w[k] · inv · scale for the keys a … b − 1 of the
 * support (supp as in scanRow); `add` adds it to what is there (a layer's head mean) instead.
 */
export function putRow(w: usize, supp: usize, a: i32, b: i32, inv: f64, scale: f64, to: usize, add: bool): void {
  let k = a;
  if (supp === 0) {
    // Every key of the range in the support: pairs, w · inv · scale as the scan computes w · inv.
    const invv = f64x2.splat(inv);
    const sc = f64x2.splat(scale);
    for (; k + 1 < b; k += 2) {
      const v = f64x2.mul(f64x2.mul(load2(w + (<usize>k << 2)), invv), sc);
      const p = to + (<usize>k << 3);
      v128.store(p, add ? f64x2.add(v128.load(p), v) : v);
    }
  }
  for (; k < b; k++) {
    if (supp !== 0 && load<u8>(supp + <usize>k) !== 1) {
      if (!add) f64.store(to + (<usize>k << 3), 0.0);
      continue;
    }
    const v = <f64>load<f32>(w + (<usize>k << 2)) * inv * scale;
    const p = to + (<usize>k << 3);
    f64.store(p, add ? f64.load(p) + v : v);
  }
}

/**
 * Σ −m · log m over the keys a … b − 1, m = (x[k] + y[k]) / 2, of two float64 rows (y = 0: m = x[k]).
 * Equal rows give the entropy of either (same order of summation as scanRow).
 */
export function mixEntropy(x: usize, y: usize, a: i32, b: i32): f64 {
  let h = f64x2.splat(0.0);
  const half = f64x2.splat(0.5);
  for (let k = a; k < b; k += 2) {
    const m = v128.bitselect(i64x2.splat(-1), LANE0, i64x2.splat(k + 1 < b ? -1 : 0));
    const p = x + (<usize>k << 3);
    const xy = y === 0 ? v128.load(p) : f64x2.mul(f64x2.add(v128.load(p), v128.load(y + (<usize>k << 3))), half);
    h = f64x2.sub(h, xLogX(v128.and(xy, m)));
  }
  return f64x2.extract_lane(h, 0) + f64x2.extract_lane(h, 1);
}

/**
 * Σ −m · log m over the keys a … b − 1, m = (u + v) / 2, v = w[k] · inv where the row's support
 * byte (supp) is 1, u = fw[k] · finv where the first layer's (fsupp) is 1, else 0 (a row whose
 * range differs from the first layer's: the union of both). w and fw float32 rows.
 */
export function mixRowEntropy(w: usize, fw: usize, supp: usize, fsupp: usize, a: i32, b: i32, inv: f64, finv: f64): f64 {
  let h = f64x2.splat(0.0);
  const half = f64x2.splat(0.5);
  const invv = f64x2.splat(inv);
  const finvv = f64x2.splat(finv);
  for (let k = a; k < b; k += 2) {
    const pair = v128.bitselect(i64x2.splat(-1), LANE0, i64x2.splat(k + 1 < b ? -1 : 0));
    const v = v128.and(f64x2.mul(load2(w + (<usize>k << 2)), invv), v128.and(pair, mask2(supp + <usize>k)));
    const u = v128.and(f64x2.mul(load2(fw + (<usize>k << 2)), finvv), v128.and(pair, mask2(fsupp + <usize>k)));
    h = f64x2.sub(h, xLogX(v128.and(f64x2.mul(f64x2.add(u, v), half), pair)));
  }
  return f64x2.extract_lane(h, 0) + f64x2.extract_lane(h, 1);
}

/**
 * Σ −v · log v over the keys a … b − 1 of the float32 row at w, v = w[k] · inv (0 off the support
 * where supp is not 0): the row entropy, summed in scanRow's order (so the same value).
 */
export function rowEntropy(w: usize, supp: usize, a: i32, b: i32, inv: f64): f64 {
  let h = f64x2.splat(0.0);
  const invv = f64x2.splat(inv);
  for (let k = a; k < b; k += 2) {
    let m = v128.bitselect(i64x2.splat(-1), LANE0, i64x2.splat(k + 1 < b ? -1 : 0));
    if (supp !== 0) m = v128.and(m, mask2(supp + <usize>k));
    h = f64x2.sub(h, xLogX(v128.and(f64x2.mul(load2(w + (<usize>k << 2)), invv), m)));
  }
  return f64x2.extract_lane(h, 0) + f64x2.extract_lane(h, 1);
}

/**
 * Counts the n float64 values at values per bin (uint32 at hist) and keeps each one's bin (uint16
 * at bins); exact zeros are counted once more in the slot after the last bin.
 */
export function histogram(values: usize, n: i32, hist: usize, bins: usize): void {
  for (let i = 0; i < n; i++) count(hist, bins, i, f64.load(values + (<usize>i << 3)));
}

/**
 * The values of at most 8 bins, listed as uint16 at list (count of them), into out by bin: the
 * values of the m-th listed bin, in input order, from the index held as int32 at cursor + 4m on
 * (advanced as they are written). Compares 8 bins at a time.
 */
export function gatherBins(values: usize, bins: usize, n: i32, list: usize, count: i32, out: usize, cursor: usize): void {
  let s0 = i16x8.splat(-1);
  let s1 = s0;
  let s2 = s0;
  let s3 = s0;
  let s4 = s0;
  let s5 = s0;
  let s6 = s0;
  let s7 = s0;
  if (count > 0) s0 = i16x8.splat(load<i16>(list));
  if (count > 1) s1 = i16x8.splat(load<i16>(list, 2));
  if (count > 2) s2 = i16x8.splat(load<i16>(list, 4));
  if (count > 3) s3 = i16x8.splat(load<i16>(list, 6));
  if (count > 4) s4 = i16x8.splat(load<i16>(list, 8));
  if (count > 5) s5 = i16x8.splat(load<i16>(list, 10));
  if (count > 6) s6 = i16x8.splat(load<i16>(list, 12));
  if (count > 7) s7 = i16x8.splat(load<i16>(list, 14));
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const b = v128.load(bins + (<usize>i << 1));
    const hit = v128.or(
      v128.or(v128.or(i16x8.eq(b, s0), i16x8.eq(b, s1)), v128.or(i16x8.eq(b, s2), i16x8.eq(b, s3))),
      v128.or(v128.or(i16x8.eq(b, s4), i16x8.eq(b, s5)), v128.or(i16x8.eq(b, s6), i16x8.eq(b, s7))),
    );
    if (v128.any_true(hit)) for (let l = 0; l < 8; l++) put(values, bins, i + l, list, count, out, cursor);
  }
  for (; i < n; i++) put(values, bins, i, list, count, out, cursor);
}

/** gatherBins' step: value i into its listed bin's run of out, if its bin is listed. */
// @ts-ignore: decorator
@inline function put(values: usize, bins: usize, i: i32, list: usize, count: i32, out: usize, cursor: usize): void {
  const bin = load<u16>(bins + (<usize>i << 1));
  for (let m = 0; m < count; m++) {
    if (load<u16>(list + (<usize>m << 1)) !== bin) continue;
    const c = cursor + (<usize>m << 2);
    const at = load<i32>(c);
    f64.store(out + (<usize>at << 3), f64.load(values + (<usize>i << 3)));
    store<i32>(c, at + 1);
    return;
  }
}

/**
 * The k-th smallest (k from 0) of the n float64 at a, reordering them (head-metrics.ts
 * selectInPlace: quickselect, three-way partition, median-of-three pivot); afterwards every value
 * after position k is at least the k-th.
 */
export function selectRun(a: usize, n: i32, k: i32): f64 {
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const x = f64.load(a + (<usize>lo << 3));
    const y = f64.load(a + (<usize>((lo + hi) >>> 1) << 3));
    const z = f64.load(a + (<usize>hi << 3));
    const pivot = x < y ? (y < z ? y : x < z ? z : x) : x < z ? x : y < z ? z : y;
    let lt = lo;
    let i = lo;
    let gt = hi;
    while (i <= gt) {
      const pi = a + (<usize>i << 3);
      const v = f64.load(pi);
      if (v < pivot) {
        const pl = a + (<usize>lt << 3);
        f64.store(pi, f64.load(pl));
        f64.store(pl, v);
        lt++;
        i++;
      } else if (v > pivot) {
        const pg = a + (<usize>gt << 3);
        f64.store(pi, f64.load(pg));
        f64.store(pg, v);
        gt--;
      } else i++;
    }
    if (k < lt) hi = lt - 1;
    else if (k > gt) lo = gt + 1;
    else return pivot;
  }
  return f64.load(a + (<usize>lo << 3));
}

/** The least of the float64 at a from index `from` to n − 1. */
export function leastFrom(a: usize, from: i32, n: i32): f64 {
  let least = f64.load(a + (<usize>from << 3));
  for (let i = from + 1; i < n; i++) least = min(least, f64.load(a + (<usize>i << 3)));
  return least;
}

/** Whether the n float64 at a are all equal (1) or not (0). */
export function allEqual(a: usize, n: i32): i32 {
  const first = f64.load(a);
  for (let i = 1; i < n; i++) if (f64.load(a + (<usize>i << 3)) !== first) return 0;
  return 1;
}

/**
 * The fusion of `count` heads of a layer (rollout.ts fuseHeads): for each of the `size` entries,
 * over the float32 heads at w + 4 · offs[j] (int32 element offsets at offs, in the given order),
 * how = 0: their float64 sum divided by count (summed in that order, as the JavaScript loop
 * does); 1: their max; 2: their min. Into the float64 array at out. Two entries per step.
 */
export function fuseLayer(w: usize, offs: usize, count: i32, size: i32, how: i32, out: usize): void {
  const k = f64x2.splat(<f64>count);
  let i = 0;
  for (; i + 1 < size; i += 2) {
    let acc = load2(w + ((<usize>load<i32>(offs) + <usize>i) << 2));
    if (how === 0) {
      acc = f64x2.add(f64x2.splat(0.0), acc);
      for (let j = 1; j < count; j++) acc = f64x2.add(acc, load2(w + ((<usize>load<i32>(offs + (<usize>j << 2)) + <usize>i) << 2)));
      acc = f64x2.div(acc, k);
    } else if (how === 1) {
      for (let j = 1; j < count; j++) acc = f64x2.max(acc, load2(w + ((<usize>load<i32>(offs + (<usize>j << 2)) + <usize>i) << 2)));
    } else {
      for (let j = 1; j < count; j++) acc = f64x2.min(acc, load2(w + ((<usize>load<i32>(offs + (<usize>j << 2)) + <usize>i) << 2)));
    }
    v128.store(out + (<usize>i << 3), acc);
  }
  for (; i < size; i++) {
    let acc = <f64>load<f32>(w + ((<usize>load<i32>(offs) + <usize>i) << 2));
    if (how === 0) {
      acc = 0.0 + acc;
      for (let j = 1; j < count; j++) acc += <f64>load<f32>(w + ((<usize>load<i32>(offs + (<usize>j << 2)) + <usize>i) << 2));
      acc /= <f64>count;
    } else if (how === 1) {
      for (let j = 1; j < count; j++) acc = max(acc, <f64>load<f32>(w + ((<usize>load<i32>(offs + (<usize>j << 2)) + <usize>i) << 2)));
    } else {
      for (let j = 1; j < count; j++) acc = min(acc, <f64>load<f32>(w + ((<usize>load<i32>(offs + (<usize>j << 2)) + <usize>i) << 2)));
    }
    f64.store(out + (<usize>i << 3), acc);
  }
}
