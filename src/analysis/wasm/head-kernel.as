// The per-row pass of the head metrics (src/analysis/head-metrics.ts) in WebAssembly SIMD.
//
// AssemblyScript source (https://www.assemblyscript.org); scripts/build-head-kernel.mjs compiles it
// with SIMD enabled into src/analysis/wasm/head-kernel-wasm.ts (the module's bytes, base64), which
// is committed; test/analysis-head-kernel-build.test.ts checks that it is this file's build. The
// extension is .as so that TypeScript does not type-check it as a program of its own.
//
// No allocator: the caller (head-kernel.ts) lays its arrays out in the exported memory from
// heapBase() on and passes byte addresses.
//
// Precision. The weights are float32 (as traced: each known to 2^−24 ≈ 6e-8 relative). Four keys
// per step in f32x4 lanes: the logarithms (row entropy, the Jensen–Shannon mixture, the layer
// mean's) are float32 logarithms of float32 renormalised weights (w · inv rounded to float32), each
// product x · log x added to float64 accumulators (lanes 0 + 2 and 1 + 3 paired, then the two
// lanes at the end), so an entropy is within a few float32 roundings of its float64 value
// (≈ 1e-7 relative): the size of the change a rounding of the float32 weights themselves makes.
// Every sum of −x·log x is taken in that same order by every function here, so that two equal rows
// give bit-identical entropies (the Jensen–Shannon term of equal rows is exactly 0). The rest is
// float64 as before: the counts below a threshold compare the float32 weight with an exact float32
// cut-off (the same count as float64 w · inv < threshold), the row max is max(w) · inv, the pooled
// weights (quantiles), Σ w², the distance and the long-range share are float64 products.

// The quantiles' histogram (head-metrics.ts `quantiles`): bins of the float64 high word's top 20
// bits after the sign (1/256 octave), bin 0 below 2^−100, the last bin from 2^100 up.
const BIN_BASE: i32 = (1023 - 100) << 8;
const BINS: i32 = 200 * 256 + 2;

/** Where the caller's arrays may start (past this module's static data). */
export function heapBase(): usize {
  return (__heap_base + 15) & ~15;
}

// ln 2 rounded to float32 (e · LN2 adds at most ≈ 3e-9 relative to the rounding of the product:
// ln 2's own float32 error, 2.7e-9 relative).
const LN2: f32 = <f32>0.6931471805599453;
// The float32 logarithm's constants, each splatted to four lanes, read from memory where they are
// used: V8 builds a v128 constant in the code from general registers (several instructions each
// time), a load from memory is one.
const KF: usize = memory.data<f32>([
  1.0, 1.0, 1.0, 1.0, // 0
  2.0, 2.0, 2.0, 2.0, // 16
  0.5, 0.5, 0.5, 0.5, // 32
  <f32>(2.0 / 3.0), <f32>(2.0 / 3.0), <f32>(2.0 / 3.0), <f32>(2.0 / 3.0), // 48
  <f32>(2.0 / 5.0), <f32>(2.0 / 5.0), <f32>(2.0 / 5.0), <f32>(2.0 / 5.0), // 64
  <f32>(2.0 / 7.0), <f32>(2.0 / 7.0), <f32>(2.0 / 7.0), <f32>(2.0 / 7.0), // 80
  <f32>(2.0 / 9.0), <f32>(2.0 / 9.0), <f32>(2.0 / 9.0), <f32>(2.0 / 9.0), // 96
  LN2, LN2, LN2, LN2, // 112
], 16);
const KI: usize = memory.data<i32>([
  0x3f3504f3, 0x3f3504f3, 0x3f3504f3, 0x3f3504f3, // 0: √2/2 in float32 bits
  0, 1, 2, 3, // 16: lane numbers
], 16);
// bins2's constants: the 19 bits after the sign (per float64 lane), 1 − BIN_BASE, 0, BINS − 1 (i32 lanes).
const KB: usize = memory.data<i32>([
  0x7ffff, 0, 0x7ffff, 0, // 0
  1 - BIN_BASE, 1 - BIN_BASE, 1 - BIN_BASE, 1 - BIN_BASE, // 16
  0, 0, 0, 0, // 32
  BINS - 1, BINS - 1, BINS - 1, BINS - 1, // 48
], 16);

/**
 * Natural logarithm of four float32 lanes (each ≥ 0 and finite: renormalised weights). x = 2^e · y
 * with y ∈ [√2/2, √2) (the exponent steps at √2/2: the bits less those of √2/2, shifted); f = y − 1
 * (exact); log y = log1p(f) = 2 atanh(s) = 2s + s · R with s = f / (2 + f), |s| ≤ 0.1716, R the
 * series of 2 atanh(s) − 2s over s: z (2/3 + z (2/5 + z (2/7 + z 2/9))), z = s² (the next term,
 * 2/11 z⁵, is 2e-9 of the result: below float32 rounding); and 2s = f − s · f, so log1p(f) =
 * f − s · (f − R): f exact, the rounded part at most a fifth of the result. Then + e · ln 2 (ln 2 in
 * one float32). 22 vector operations, the division included (fdlibm's f − (h − s (h + R)), h = f²/2,
 * and ln 2 in two parts took 27 for the same accuracy to within a tenth of a rounding). Error about
 * one float32 rounding: measured ≤ 1.2e-7 relative (≤ 1.07 units in the last place) on every
 * float32 from 2^−40 to 2 (test: < 2^−22). 0 and float32 subnormals come out as log 2^−127
 * (finite), so x · log x is 0 at x = 0.
 */
// @ts-ignore: decorator
@inline function log4(x: v128): v128 {
  const e = i32x4.shr_s(i32x4.sub(x, v128.load(KI)), 23);
  const y = i32x4.sub(x, i32x4.shl(e, 23));
  const f = f32x4.sub(y, v128.load(KF));
  const s = f32x4.div(f, f32x4.add(f, v128.load(KF, 16)));
  const z = f32x4.mul(s, s);
  const w = f32x4.mul(z, z);
  const r = f32x4.add(
    f32x4.mul(w, f32x4.add(v128.load(KF, 64), f32x4.mul(w, v128.load(KF, 96)))),
    f32x4.mul(z, f32x4.add(v128.load(KF, 48), f32x4.mul(w, v128.load(KF, 80)))),
  );
  const l1p = f32x4.sub(f, f32x4.mul(s, f32x4.sub(f, r)));
  return f32x4.add(f32x4.mul(f32x4.convert_i32x4_s(e), v128.load(KF, 112)), l1p);
}

/**
 * Σ x · log x of four float32 lanes as float64 lanes (lanes 0 + 2, 1 + 3; each product rounded to
 * float32, then exact in float64): every entropy here is summed this way.
 */
// @ts-ignore: decorator
@inline function xLogX4(x: v128): v128 {
  const p = f32x4.mul(x, log4(x));
  return f64x2.add(f64x2.promote_low_f32x4(p), f64x2.promote_low_f32x4(v128.shuffle<f32>(p, p, 2, 3, 2, 3)));
}

/** log of n float32 values at `from` into `to` (for the tests' accuracy check). */
export function logArray(from: usize, to: usize, n: i32): void {
  for (let i = 0; i < n; i += 4) v128.store(to + (<usize>i << 2), log4(v128.load(from + (<usize>i << 2))));
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

/** Lane masks (all ones where the support byte is 1) of the four keys at s … s + 3. */
// @ts-ignore: decorator
@inline function mask4(s: usize): v128 {
  return i32x4.neg(i32x4.extend_low_i16x8_u(i16x8.extend_low_i8x16_u(v128.load32_zero(s))));
}

/** Lanes 0 … rem − 1 all ones, the others 0 (a row's last group of keys). */
// @ts-ignore: decorator
@inline function tailMask(rem: i32): v128 {
  return i32x4.lt_s(v128.load(KI, 16), i32x4.splat(rem));
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
    const whole = n === b - a;
    // Four keys per step, as float64 pairs (lanes 0 + 2, 1 + 3); the last step's lanes past b masked.
    let acc = f64x2.splat(0.0);
    const steps = (b - a + 3) >> 2;
    const tail = tailMask(b - a - ((steps - 1) << 2));
    let p = w + ((base + <usize>a) << 2);
    let sp = supp + base + <usize>a;
    for (let i = 0; i < steps; i++) {
      let x = v128.load(p);
      if (i === steps - 1) x = v128.and(x, tail);
      if (!whole) x = v128.and(x, mask4(sp));
      acc = f64x2.add(acc, f64x2.add(f64x2.promote_low_f32x4(x), f64x2.promote_low_f32x4(v128.shuffle<f32>(x, x, 2, 3, 2, 3))));
      p += 16;
      sp += 4;
    }
    const s = steps > 0 ? f64x2.extract_lane(acc, 0) + f64x2.extract_lane(acc, 1) : 0.0;
    f64.store(sums + (<usize>q << 3), s);
    store<u8>(counted + <usize>q, n > 1 && s > 0 ? 1 : 0);
  }
}

/**
 * The first and the last bin of the histogram (BINS uint32 at hist) that count something, as
 * int32 at out and out + 4 (first > last when it is empty). Four bins per step.
 */
export function binRange(hist: usize, out: usize): void {
  let first = 0;
  while (first + 4 <= BINS && !v128.any_true(v128.load(hist + (<usize>first << 2)))) first += 4;
  while (first < BINS && load<u32>(hist + (<usize>first << 2)) === 0) first++;
  let last = BINS - 1;
  while (last >= first + 4 && !v128.any_true(v128.load(hist + (<usize>(last - 3) << 2)))) last -= 4;
  while (last >= first && load<u32>(hist + (<usize>last << 2)) === 0) last--;
  store<i32>(out, first);
  store<i32>(out, last, 4);
}

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
 * The constants (KB) are the caller's, loaded once before its loop.
 */
// @ts-ignore: decorator
@inline function bins2(v: v128, top: v128, base: v128, floor: v128, ceil: v128): v128 {
  const b = i32x4.add(v128.and(i64x2.shr_u(v, 44), top), base);
  return i32x4.min_s(i32x4.max_s(b, floor), ceil);
}

/**
 * The smallest float32 t ≥ 0 whose float64 product t · inv reaches thr (inv > 0 finite): a float32
 * weight w has w · inv < thr exactly when w < t (the product rounds monotonically), so the kernel
 * counts weights below a threshold by a float32 comparison and gets float64's count.
 */
function cutoff(thr: f64, inv: f64): f32 {
  if (!(thr > 0)) return 0;
  let t = <f32>(thr / inv);
  while (t > 0 && <f64>reinterpret<f32>(reinterpret<i32>(t) - 1) * inv >= thr) t = reinterpret<f32>(reinterpret<i32>(t) - 1);
  while (<f64>t * inv < thr) t = reinterpret<f32>(reinterpret<i32>(t) + 1);
  return t;
}

// Accumulators of scanRow, float64 at acc: 0 hm (entropy of the mixture with the first layer),
// 1 row max, 2 row entropy, 3 # below threshold, 4 # below 1/support, 5 row sum, 6 Σ w², 7 Σ w·|i − j|,
// 8 Σ w over |i − j| ≥ longRange. 3, 4, 6, 7 and 8 continue from their values (per-head sums);
// the others start at 0.

/**
 * One row's pass over its keys a … b − 1, four per step (the last step's lanes past b masked to 0;
 * loads may read up to 12 bytes past a row: the arrays are padded). w: the head's float32 row
 * (key k at w + 4k), renormalised by inv; masked: test the support bytes at supp (else every key of
 * the range is in it); js: the mixture term against the first layer's float32 row at fw,
 * renormalised by finv (as its own scan did: w · finv in float32); cut, cutU: the float32 cut-offs
 * of the threshold and of 1/support (`cutoff`); dp: the distance |i − j| of key a from the query
 * (float64, the next keys' after it: scanHead's distance table). Writes the support's
 * weights (float64 w · inv) from pooled on (returns how many), the accumulators 0–4, 6, 7 at acc;
 * where lm is not 0 adds w · inv · scale (float32) to the float32 row at lm (a layer's head mean);
 * where hist is not 0 counts the weights in the histogram (their bins from bins on).
 */
// @ts-ignore: decorator
@inline function scanBody(
  masked: bool, js: bool, w: usize, fw: usize, finv: f64, supp: usize, a: i32, b: i32, inv: f64, dp: usize,
  cut: f32, cutU: f32, pooled: usize, acc: usize, lm: usize, scale: f32, hist: usize, bins: usize,
): i32 {
  // Separate passes over the row (it stays in the L1 cache), each with few values live: with every
  // accumulator and constant in one loop, V8 kept most of them on the stack (x64 has 16 vector
  // registers), loading and storing them at every step. Each accumulator sees the same operations
  // in the same order as in one loop, so the same values.
  const steps = (b - a + 3) >> 2;
  const tail = tailMask(b - a - ((steps - 1) << 2));
  logPass(masked, js, w, fw, supp, a, steps, tail, inv, finv, lm, scale, acc);
  countPass(masked, w, supp, a, steps, tail, inv, cut, cutU, acc);
  // A long row's histogram in the same loop as its moments (their float64 weights shared; the
  // moments' additions wait on each other while the histogram's counting goes on).
  if (!masked && pooled === 0 && hist !== 0) return momentHistPass(w, a, b, inv, dp, acc, hist, bins);
  momentPass(masked, w, supp, a, steps, tail, inv, dp, acc);
  return keepPass(masked, w, supp, a, b, steps, tail, inv, pooled, hist, bins);
}

/**
 * momentPass and keepPass's histogram in one loop, for a row without holes whose weights are not
 * pooled: the same operations in the same order (so the same values); returns b − a.
 */
// @ts-ignore: decorator
@inline function momentHistPass(w: usize, a: i32, b: i32, inv: f64, dp: usize, acc: usize, hist: usize, bins: usize): i32 {
  const invv = f64x2.splat(inv);
  const top = v128.load(KB);
  const base = v128.load(KB, 16);
  const floor = v128.load(KB, 32);
  const ceil = v128.load(KB, 48);
  const zero = f32x4.splat(0.0);
  let zeros = i32x4.splat(0);
  let sq = f64x2.splat(0.0);
  let dist = f64x2.splat(0.0);
  const full = (b - a) >> 2;
  let wp = w + (<usize>a << 2);
  let bp = bins;
  for (let i = 0; i < full; i++) {
    const x = v128.load(wp);
    const v0 = lowPair(x, invv);
    const v1 = highPair(x, invv);
    sq = f64x2.add(sq, sqStep(v0, v1));
    dist = f64x2.add(dist, distStep(v0, v1, dp));
    histStep(v0, v1, hist, bp, top, base, floor, ceil);
    zeros = i32x4.sub(zeros, f32x4.eq(x, zero));
    wp += 16;
    dp += 32;
    bp += 8;
  }
  let n = full << 2;
  if (n < b - a) {
    // The last keys: momentPass's last step (lanes past b masked), then counted one by one.
    const x = v128.and(v128.load(wp), tailMask(b - a - n));
    const v0 = lowPair(x, invv);
    const v1 = highPair(x, invv);
    sq = f64x2.add(sq, sqStep(v0, v1));
    dist = f64x2.add(dist, distStep(v0, v1, dp));
    for (let k = a + n; k < b; k++) count(hist, bins, n++, <f64>load<f32>(w + (<usize>k << 2)) * inv);
  }
  const zs = hist + (<usize>BINS << 2);
  store<u32>(zs, load<u32>(zs) + <u32>(i32x4.extract_lane(zeros, 0) + i32x4.extract_lane(zeros, 1) + i32x4.extract_lane(zeros, 2) + i32x4.extract_lane(zeros, 3)));
  f64.store(acc, f64.load(acc, 48) + (f64x2.extract_lane(sq, 0) + f64x2.extract_lane(sq, 1)), 48);
  f64.store(acc, f64.load(acc, 56) + (f64x2.extract_lane(dist, 0) + f64x2.extract_lane(dist, 1)), 56);
  return b - a;
}

/**
 * scanBody's logarithms: the row entropy Σ −v log v, v = w · inv in float32 (0 off the support),
 * into acc 2; where js, the mixture term Σ −m log m, m = (u + v) / 2 in float32 with u = fw · finv
 * (the first layer's weight renormalised as its own scan renormalised it), into acc 0; where lm is
 * not 0, v · scale added to the float32 row at lm (past a row's end, 0 is added). The two
 * logarithms of a step are independent (their latencies overlap).
 */
// @ts-ignore: decorator
@inline function logPass(masked: bool, js: bool, w: usize, fw: usize, supp: usize, a: i32, steps: i32, tail: v128, inv: f64, finv: f64, lm: usize, scale: f32, acc: usize): void {
  const inv32 = f32x4.splat(<f32>inv);
  const finv32 = f32x4.splat(<f32>finv);
  const scv = f32x4.splat(scale);
  const last = steps - 1;
  let ent = f64x2.splat(0.0);
  let hm = f64x2.splat(0.0);
  let wp = w + (<usize>a << 2);
  let fp = fw + (<usize>a << 2);
  let sp = supp + <usize>a;
  let lp = lm + (<usize>a << 2);
  let i = 0;
  if (!masked) {
    // Two steps at a time (their logarithms independent), in the same order of summation.
    for (; i + 1 < last; i += 2) {
      const v = f32x4.mul(v128.load(wp), inv32);
      const v2 = f32x4.mul(v128.load(wp, 16), inv32);
      ent = f64x2.sub(f64x2.sub(ent, xLogX4(v)), xLogX4(v2));
      if (js) {
        const m = f32x4.mul(f32x4.add(f32x4.mul(v128.load(fp), finv32), v), v128.load(KF, 32));
        const m2 = f32x4.mul(f32x4.add(f32x4.mul(v128.load(fp, 16), finv32), v2), v128.load(KF, 32));
        hm = f64x2.sub(f64x2.sub(hm, xLogX4(m)), xLogX4(m2));
      }
      if (lm !== 0) {
        v128.store(lp, f32x4.add(v128.load(lp), f32x4.mul(v, scv)));
        v128.store(lp, f32x4.add(v128.load(lp, 16), f32x4.mul(v2, scv)), 16);
        lp += 32;
      }
      wp += 32;
      fp += 32;
      sp += 8;
    }
  }
  for (; i < steps; i++) {
    let x = v128.load(wp);
    const m = stepMask(masked, i, last, tail, sp);
    if (masked || i === last) x = v128.and(x, m);
    const v = f32x4.mul(x, inv32);
    ent = f64x2.sub(ent, xLogX4(v));
    if (js) {
      let u = v128.load(fp);
      if (i === last) u = v128.and(u, m);
      hm = f64x2.sub(hm, xLogX4(f32x4.mul(f32x4.add(f32x4.mul(u, finv32), v), v128.load(KF, 32))));
    }
    if (lm !== 0) {
      v128.store(lp, f32x4.add(v128.load(lp), f32x4.mul(v, scv)));
      lp += 16;
    }
    wp += 16;
    fp += 16;
    sp += 4;
  }
  if (js) f64.store(acc, f64x2.extract_lane(hm, 0) + f64x2.extract_lane(hm, 1));
  f64.store(acc, f64x2.extract_lane(ent, 0) + f64x2.extract_lane(ent, 1), 16);
}

/** The lane mask of step i of a row (all ones; the tail's at the last step; and the support's where masked). */
// @ts-ignore: decorator
@inline function stepMask(masked: bool, i: i32, last: i32, tail: v128, sp: usize): v128 {
  let m = i32x4.splat(-1);
  if (i === last) m = tail;
  if (masked) m = v128.and(m, mask4(sp));
  return m;
}

/** scanBody's row max (max(w) · inv: accumulator 1) and counts below the cut-offs (3, 4: continued). */
// @ts-ignore: decorator
@inline function countPass(masked: bool, w: usize, supp: usize, a: i32, steps: i32, tail: v128, inv: f64, cut: f32, cutU: f32, acc: usize): void {
  const cutv = f32x4.splat(cut);
  const cutUv = f32x4.splat(cutU);
  const last = steps - 1;
  let mx = f32x4.splat(0.0);
  let below = i32x4.splat(0);
  let belowU = i32x4.splat(0);
  let wp = w + (<usize>a << 2);
  let sp = supp + <usize>a;
  for (let i = 0; i < steps; i++) {
    let x = v128.load(wp);
    const cut4 = masked || i === last;
    const m = stepMask(masked, i, last, tail, sp);
    if (cut4) x = v128.and(x, m);
    mx = f32x4.pmax(mx, x);
    let lt = f32x4.lt(x, cutv);
    let lu = f32x4.lt(x, cutUv);
    if (cut4) {
      lt = v128.and(lt, m);
      lu = v128.and(lu, m);
    }
    below = i32x4.sub(below, lt);
    belowU = i32x4.sub(belowU, lu);
    wp += 16;
    sp += 4;
  }
  const nBelow = i32x4.extract_lane(below, 0) + i32x4.extract_lane(below, 1) + i32x4.extract_lane(below, 2) + i32x4.extract_lane(below, 3);
  const nBelowU = i32x4.extract_lane(belowU, 0) + i32x4.extract_lane(belowU, 1) + i32x4.extract_lane(belowU, 2) + i32x4.extract_lane(belowU, 3);
  const top = max(max(f32x4.extract_lane(mx, 0), f32x4.extract_lane(mx, 1)), max(f32x4.extract_lane(mx, 2), f32x4.extract_lane(mx, 3)));
  f64.store(acc, <f64>top * inv, 8);
  f64.store(acc, f64.load(acc, 24) + <f64>nBelow, 24);
  f64.store(acc, f64.load(acc, 32) + <f64>nBelowU, 32);
}

/** scanBody's Σ w² and Σ w · |i − j| (float64 w · inv; accumulators 6 and 7, continued). */
// @ts-ignore: decorator
@inline function momentPass(masked: bool, w: usize, supp: usize, a: i32, steps: i32, tail: v128, inv: f64, dp: usize, acc: usize): void {
  const invv = f64x2.splat(inv);
  const last = steps - 1;
  let sq = f64x2.splat(0.0);
  let dist = f64x2.splat(0.0);
  let wp = w + (<usize>a << 2);
  let sp = supp + <usize>a;
  for (let i = 0; i < steps; i++) {
    let x = v128.load(wp);
    if (masked || i === last) x = v128.and(x, stepMask(masked, i, last, tail, sp));
    const v0 = lowPair(x, invv);
    const v1 = highPair(x, invv);
    sq = f64x2.add(sq, sqStep(v0, v1));
    dist = f64x2.add(dist, distStep(v0, v1, dp));
    wp += 16;
    dp += 32;
    sp += 4;
  }
  f64.store(acc, f64.load(acc, 48) + (f64x2.extract_lane(sq, 0) + f64x2.extract_lane(sq, 1)), 48);
  f64.store(acc, f64.load(acc, 56) + (f64x2.extract_lane(dist, 0) + f64x2.extract_lane(dist, 1)), 56);
}

/**
 * scanBody's weights of the support (float64 w · inv, in key order) from pooled on where pooled is
 * not 0, and their histogram bins where hist is not 0 (`count`); returns how many. A row without
 * holes takes four keys per step (then its last keys one by one), each part in a loop of its own.
 */
// @ts-ignore: decorator
@inline function keepPass(masked: bool, w: usize, supp: usize, a: i32, b: i32, steps: i32, tail: v128, inv: f64, pooled: usize, hist: usize, bins: usize): i32 {
  if (masked) return keepMasked(w, supp, a, steps, tail, inv, pooled, hist, bins);
  const full = (b - a) >> 2;
  const invv = f64x2.splat(inv);
  if (pooled !== 0) {
    let wp = w + (<usize>a << 2);
    let pp = pooled;
    for (let i = 0; i < full; i++) {
      const x = v128.load(wp);
      v128.store(pp, lowPair(x, invv));
      v128.store(pp, highPair(x, invv), 16);
      wp += 16;
      pp += 32;
    }
    for (let k = a + (full << 2); k < b; k++) {
      f64.store(pp, <f64>load<f32>(w + (<usize>k << 2)) * inv);
      pp += 8;
    }
  }
  if (hist !== 0) {
    // The four bins computed in SIMD; only the counting is per value. The constants are loaded
    // once (a v128 constant in the loop is rebuilt from general registers at every step).
    const top = v128.load(KB);
    const base = v128.load(KB, 16);
    const floor = v128.load(KB, 32);
    const ceil = v128.load(KB, 48);
    const zero = f32x4.splat(0.0);
    let zeros = i32x4.splat(0);
    let wp = w + (<usize>a << 2);
    let bp = bins;
    for (let i = 0; i < full; i++) {
      const x = v128.load(wp);
      const v0 = lowPair(x, invv);
      const v1 = highPair(x, invv);
      histStep(v0, v1, hist, bp, top, base, floor, ceil);
      zeros = i32x4.sub(zeros, f32x4.eq(x, zero));
      wp += 16;
      bp += 8;
    }
    let n = full << 2;
    for (let k = a + n; k < b; k++) count(hist, bins, n++, <f64>load<f32>(w + (<usize>k << 2)) * inv);
    const zs = hist + (<usize>BINS << 2);
    store<u32>(zs, load<u32>(zs) + <u32>(i32x4.extract_lane(zeros, 0) + i32x4.extract_lane(zeros, 1) + i32x4.extract_lane(zeros, 2) + i32x4.extract_lane(zeros, 3)));
  }
  return b - a;
}

/** keepPass for a row with holes in its support: its kept weights one by one. */
// @ts-ignore: decorator
@inline function keepMasked(w: usize, supp: usize, a: i32, steps: i32, tail: v128, inv: f64, pooled: usize, hist: usize, bins: usize): i32 {
  const invv = f64x2.splat(inv);
  const last = steps - 1;
  let wp = w + (<usize>a << 2);
  let sp = supp + <usize>a;
  let n = 0;
  for (let i = 0; i < steps; i++) {
    const m = stepMask(true, i, last, tail, sp);
    const x = v128.and(v128.load(wp), m);
    const v0 = lowPair(x, invv);
    const v1 = highPair(x, invv);
    if (i32x4.extract_lane(m, 0) !== 0) n = keep(pooled, hist, bins, n, f64x2.extract_lane(v0, 0));
    if (i32x4.extract_lane(m, 1) !== 0) n = keep(pooled, hist, bins, n, f64x2.extract_lane(v0, 1));
    if (i32x4.extract_lane(m, 2) !== 0) n = keep(pooled, hist, bins, n, f64x2.extract_lane(v1, 0));
    if (i32x4.extract_lane(m, 3) !== 0) n = keep(pooled, hist, bins, n, f64x2.extract_lane(v1, 1));
    wp += 16;
    sp += 4;
  }
  return n;
}

/** The float64 weights w · inv of lanes 0 and 1 of four float32 weights x (exact promotion, one rounding). */
// @ts-ignore: decorator
@inline function lowPair(x: v128, invv: v128): v128 {
  return f64x2.mul(f64x2.promote_low_f32x4(x), invv);
}

/** lowPair of lanes 2 and 3. */
// @ts-ignore: decorator
@inline function highPair(x: v128, invv: v128): v128 {
  return f64x2.mul(f64x2.promote_low_f32x4(v128.shuffle<f32>(x, x, 2, 3, 2, 3)), invv);
}

/** A step's Σ w² of two float64 pairs (v0 keys k0, v1 keys k1). */
// @ts-ignore: decorator
@inline function sqStep(v0: v128, v1: v128): v128 {
  return f64x2.add(f64x2.mul(v0, v0), f64x2.mul(v1, v1));
}

/**
 * A step's Σ w · |i − j| of two float64 pairs (v0 at the step's first two keys, v1 at the next two),
 * the four distances |i − j| read from the row's distance table at dp (scanHead's `dist`: the same
 * float64 integers as |qp − k| computed, three vector operations fewer per pair).
 */
// @ts-ignore: decorator
@inline function distStep(v0: v128, v1: v128, dp: usize): v128 {
  return f64x2.add(f64x2.mul(v0, v128.load(dp)), f64x2.mul(v1, v128.load(dp, 16)));
}

/** Four weights' histogram bins (bins2 of the pairs v0, v1) stored as uint16 at bp and counted in hist. */
// @ts-ignore: decorator
@inline function histStep(v0: v128, v1: v128, hist: usize, bp: usize, top: v128, base: v128, floor: v128, ceil: v128): void {
  const bb = v128.shuffle<i32>(bins2(v0, top, base, floor, ceil), bins2(v1, top, base, floor, ceil), 0, 2, 4, 6);
  i64.store(bp, i64x2.extract_lane(i16x8.narrow_i32x4_u(bb, bb), 0));
  countAt(hist, i32x4.extract_lane(bb, 0));
  countAt(hist, i32x4.extract_lane(bb, 1));
  countAt(hist, i32x4.extract_lane(bb, 2));
  countAt(hist, i32x4.extract_lane(bb, 3));
}

/** Adds one to bin b of the histogram (uint32 at hist). */
// @ts-ignore: decorator
@inline function countAt(hist: usize, b: i32): void {
  const h = hist + (<usize>b << 2);
  store<u32>(h, load<u32>(h) + 1);
}

/** A masked row's kept weight: pooled as the n-th, counted in the histogram where hist is not 0; returns n + 1. */
// @ts-ignore: decorator
@inline function keep(pooled: usize, hist: usize, bins: usize, n: i32, v: f64): i32 {
  f64.store(pooled + (<usize>n << 3), v);
  if (hist !== 0) count(hist, bins, n, v);
  return n + 1;
}

/** scanBody for one row, its variant chosen (a row with a hole in its support has no inline Jensen–Shannon term). */
function scanRow(
  w: usize, fw: usize, finv: f64, supp: usize, a: i32, b: i32, inv: f64, dp: usize,
  cut: f32, cutU: f32, pooled: usize, acc: usize, lm: usize, scale: f32, hist: usize, bins: usize,
): i32 {
  if (supp !== 0) return scanBody(true, false, w, 0, 0, supp, a, b, inv, dp, cut, cutU, pooled, acc, lm, scale, hist, bins);
  if (fw === 0) return scanBody(false, false, w, 0, 0, 0, a, b, inv, dp, cut, cutU, pooled, acc, lm, scale, hist, bins);
  return scanBody(false, true, w, fw, finv, 0, a, b, inv, dp, cut, cutU, pooled, acc, lm, scale, hist, bins);
}

/**
 * scanRow over every counted row of one head (the row loop of head-metrics.ts scanHeadKernel: one
 * call per head). Arguments as 27 float64 at args: 0 w (the head's float32 weights, nq × nk),
 * 1 fw (the first layer's same head, float32; 0: no Jensen–Shannon term), 2 supp (support bytes,
 * nq × nk), 3 lo, 4 hi, 5 size (int32 per row: key range and support size), 6 sums (float64 row
 * sums), 7 counted (bytes: the row counts), 8 fcounted, 9 fsums, 10 flo, 11 fhi, 12 fsize (the same
 * of the first layer's head), 13 nq, 14 nk, 15 shift (query q is at position q + shift),
 * 16 threshold, 17 longRange, 18 pooled, 19 acc, 20 lm (the layer's head mean, float32 nq × nk;
 * 0: none), 21 scale, 22 hist (0: none), 23 bins, 24 out, 25 noPool (not 0: the weights of rows
 * without holes are not written to pooled; gatherRows reads them from w), 26 dist (room for
 * nq + nk + 4 float64, shift ≥ 0: the distances |i − j| as a table, written here, each row's read
 * from its query's place). Per counted row q, into the float64
 * array at out: 4q the row entropy (nats), 4q + 1 the mixture entropy against the first layer's row
 * when both rows are counted and span the same keys with no hole (else not written), 4q + 2 the
 * row max, 4q + 3 the row sum. Per-head accumulators at acc (3, 4, 6, 7, 8 summed over the rows).
 * The long-range share is the row's sum less its keys nearer than longRange (at most 2 · longRange
 * of them). Returns the number of pooled weights.
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
  const scale = <f32>f64.load(args, 168);
  const hist = <usize>f64.load(args, 176);
  const bins = <usize>f64.load(args, 184);
  const out = <usize>f64.load(args, 192);
  const noPool = f64.load(args, 200) !== 0;
  const dist = <usize>f64.load(args, 208);
  // The distance table: dist[i] = |i − c| (c = nq − 1 + shift, the last query's position), so
  // that query q's distance from key k is at index k − (q + shift) + c ≥ 0.
  const c = nq - 1 + shift;
  for (let i = 0, n = nk + c + 4 - shift; i < n; i++) f64.store(dist + (<usize>i << 3), <f64>abs(i - c));
  let entries = 0;
  for (let q = 0; q < nq; q++) {
    if (load<u8>(counted + <usize>q) !== 1) continue;
    const qi = <usize>q << 2;
    const a = load<i32>(lo + qi);
    const b = load<i32>(hi + qi);
    const n = load<i32>(size + qi);
    const base = <usize>q * <usize>nk;
    const total = f64.load(sums + (<usize>q << 3));
    const inv = 1.0 / total;
    const whole = n === b - a;
    const js = fw !== 0 && load<u8>(fcounted + <usize>q) === 1;
    const inline = js && whole && load<i32>(flo + qi) === a && load<i32>(fhi + qi) === b && load<i32>(fsize + qi) === n;
    const finv = js ? 1.0 / f64.load(fsums + (<usize>q << 3)) : 0.0;
    const qp = <f64>(q + shift);
    const got = scanRow(
      w + (base << 2), inline ? fw + (base << 2) : 0, finv, whole ? 0 : supp + base, a, b, inv, dist + (<usize>(a - q - shift + c) << 3),
      cutoff(threshold, inv), cutoff(1.0 / <f64>n, inv), noPool && whole ? 0 : pooled + (<usize>entries << 3), acc, lm === 0 ? 0 : lm + (base << 2), scale, hist, bins + (<usize>entries << 1),
    );
    entries += got;
    // Long range: the keys nearer than longRange (|i − j| < longRange) taken from the row's sum.
    const from = max(a, <i32>Math.floor(qp - longRange) + 1);
    const to = min(b, <i32>Math.ceil(qp + longRange));
    let near = 0.0;
    let nearKeys = 0;
    for (let k = from; k < to; k++) {
      if (!whole && load<u8>(supp + base + <usize>k) !== 1) continue;
      near += <f64>load<f32>(w + ((base + <usize>k) << 2));
      nearKeys++;
    }
    const long = nearKeys === n ? 0.0 : max(0.0, total - near) * inv;
    f64.store(acc, f64.load(acc, 64) + long, 64);
    const o = out + (<usize>q << 5);
    f64.store(o, f64.load(acc, 16));
    if (inline) f64.store(o, f64.load(acc), 8);
    f64.store(o, f64.load(acc, 8), 16);
    f64.store(o, total * inv, 24);
  }
  return entries;
}

/** Σ of four float32 lanes as float64 lanes (lanes 0 + 2, 1 + 3; exact). */
// @ts-ignore: decorator
@inline function pairSum4(x: v128): v128 {
  return f64x2.add(f64x2.promote_low_f32x4(x), f64x2.promote_low_f32x4(v128.shuffle<f32>(x, x, 2, 3, 2, 3)));
}

/**
 * A head's weights on three groups of keys: over its counted rows without holes (counted[q] = 1
 * and size[q] = hi[q] − lo[q]; rows with holes are the caller's), each row's weights (float32 rows
 * of nk at w, keys lo[q] … hi[q] − 1) summed on each group's keys in float64 (four lanes as two
 * pairs, then the pair), times the row's 1 / sum (float64 at sums), added up: three float64 at
 * out. The groups: int32 lane masks (all ones where the key is in the group), nk per group from
 * `groups` (the three one after another, then room for a step past the last).
 */
export function groupSums(w: usize, lo: usize, hi: usize, size: usize, counted: usize, sums: usize, nq: i32, nk: i32, groups: usize, out: usize): void {
  const stride = <usize>nk << 2;
  let t0 = 0.0;
  let t1 = 0.0;
  let t2 = 0.0;
  for (let q = 0; q < nq; q++) {
    if (load<u8>(counted + <usize>q) !== 1) continue;
    const a = load<i32>(lo + (<usize>q << 2));
    const b = load<i32>(hi + (<usize>q << 2));
    if (load<i32>(size + (<usize>q << 2)) !== b - a) continue;
    const steps = (b - a + 3) >> 2;
    const last = steps - 1;
    const tail = tailMask(b - a - (last << 2));
    let g0 = f64x2.splat(0.0);
    let g1 = f64x2.splat(0.0);
    let g2 = f64x2.splat(0.0);
    let p = w + ((<usize>q * <usize>nk + <usize>a) << 2);
    let m = groups + (<usize>a << 2);
    for (let i = 0; i < steps; i++) {
      let x = v128.load(p);
      if (i === last) x = v128.and(x, tail);
      g0 = f64x2.add(g0, pairSum4(v128.and(x, v128.load(m))));
      g1 = f64x2.add(g1, pairSum4(v128.and(x, v128.load(m + stride))));
      g2 = f64x2.add(g2, pairSum4(v128.and(x, v128.load(m + 2 * stride))));
      p += 16;
      m += 16;
    }
    const inv = 1.0 / load<f64>(sums + (<usize>q << 3));
    t0 += (f64x2.extract_lane(g0, 0) + f64x2.extract_lane(g0, 1)) * inv;
    t1 += (f64x2.extract_lane(g1, 0) + f64x2.extract_lane(g1, 1)) * inv;
    t2 += (f64x2.extract_lane(g2, 0) + f64x2.extract_lane(g2, 1)) * inv;
  }
  f64.store(out, t0);
  f64.store(out, t1, 8);
  f64.store(out, t2, 16);
}

/**
 * A row's renormalised weights times scale added to a float32 row at `to` (a layer's head mean), as
 * scanBody adds them: (w · inv in float32) · scale in float32, for the keys a … b − 1 of the support
 * (supp as in scanRow: 0 when every key of the range is in it).
 */
export function putRow(w: usize, supp: usize, a: i32, b: i32, inv: f64, scale: f64, to: usize): void {
  const inv32 = f32x4.splat(<f32>inv);
  const scv = f32x4.splat(<f32>scale);
  const steps = (b - a + 3) >> 2;
  const tail = tailMask(b - a - ((steps - 1) << 2));
  for (let i = 0; i < steps; i++) {
    const k = <usize>(a + (i << 2));
    let m = i === steps - 1 ? tail : i32x4.splat(-1);
    if (supp !== 0) m = v128.and(m, mask4(supp + k));
    const p = to + (k << 2);
    v128.store(p, f32x4.add(v128.load(p), f32x4.mul(f32x4.mul(v128.and(v128.load(w + (k << 2)), m), inv32), scv)));
  }
}

/**
 * Σ −m · log m over the keys a … b − 1, m = (x[k] + y[k]) / 2 in float32, of two float32 rows
 * (y = x: the entropy of x). Summed as scanBody sums (so the same value for the same row).
 */
export function mixEntropy(x: usize, y: usize, a: i32, b: i32): f64 {
  let h = f64x2.splat(0.0);
  const steps = (b - a + 3) >> 2;
  const tail = tailMask(b - a - ((steps - 1) << 2));
  let i = 0;
  // Two steps at a time (their logarithms independent, their latencies overlap), summed in order.
  for (; i + 1 < steps - 1; i += 2) {
    const k = <usize>(a + (i << 2)) << 2;
    const m = f32x4.mul(f32x4.add(v128.load(x + k), v128.load(y + k)), v128.load(KF, 32));
    const m2 = f32x4.mul(f32x4.add(v128.load(x + k, 16), v128.load(y + k, 16)), v128.load(KF, 32));
    h = f64x2.sub(f64x2.sub(h, xLogX4(m)), xLogX4(m2));
  }
  for (; i < steps; i++) {
    const k = <usize>(a + (i << 2)) << 2;
    let m = f32x4.mul(f32x4.add(v128.load(x + k), v128.load(y + k)), v128.load(KF, 32));
    if (i === steps - 1) m = v128.and(m, tail);
    h = f64x2.sub(h, xLogX4(m));
  }
  return f64x2.extract_lane(h, 0) + f64x2.extract_lane(h, 1);
}

/**
 * Σ −m · log m over the keys a … b − 1, m = (u + v) / 2, v = w[k] · inv where the row's support
 * byte (supp) is 1, u = fw[k] · finv where the first layer's (fsupp) is 1, else 0 (a row whose
 * range differs from the first layer's: the union of both). w and fw float32 rows; float32 as scanBody.
 */
export function mixRowEntropy(w: usize, fw: usize, supp: usize, fsupp: usize, a: i32, b: i32, inv: f64, finv: f64): f64 {
  let h = f64x2.splat(0.0);
  const inv32 = f32x4.splat(<f32>inv);
  const finv32 = f32x4.splat(<f32>finv);
  const steps = (b - a + 3) >> 2;
  const tail = tailMask(b - a - ((steps - 1) << 2));
  for (let i = 0; i < steps; i++) {
    const k = <usize>(a + (i << 2));
    const t = i === steps - 1 ? tail : i32x4.splat(-1);
    const v = f32x4.mul(v128.and(v128.load(w + (k << 2)), v128.and(t, mask4(supp + k))), inv32);
    const u = f32x4.mul(v128.and(v128.load(fw + (k << 2)), v128.and(t, mask4(fsupp + k))), finv32);
    h = f64x2.sub(h, xLogX4(f32x4.mul(f32x4.add(u, v), v128.load(KF, 32))));
  }
  return f64x2.extract_lane(h, 0) + f64x2.extract_lane(h, 1);
}

/**
 * Σ −v · log v over the keys a … b − 1 of the float32 row at w, v = w[k] · inv in float32 (0 off the
 * support where supp is not 0): the row entropy, as scanBody computes it (so the same value).
 */
export function rowEntropy(w: usize, supp: usize, a: i32, b: i32, inv: f64): f64 {
  let h = f64x2.splat(0.0);
  const inv32 = f32x4.splat(<f32>inv);
  const steps = (b - a + 3) >> 2;
  const tail = tailMask(b - a - ((steps - 1) << 2));
  let i = 0;
  // Without holes, two steps at a time (as mixEntropy), summed in order.
  if (supp === 0) {
    for (; i + 1 < steps - 1; i += 2) {
      const p = w + (<usize>(a + (i << 2)) << 2);
      h = f64x2.sub(f64x2.sub(h, xLogX4(f32x4.mul(v128.load(p), inv32))), xLogX4(f32x4.mul(v128.load(p, 16), inv32)));
    }
  }
  for (; i < steps; i++) {
    const k = <usize>(a + (i << 2));
    let m = i === steps - 1 ? tail : i32x4.splat(-1);
    if (supp !== 0) m = v128.and(m, mask4(supp + k));
    h = f64x2.sub(h, xLogX4(f32x4.mul(v128.and(v128.load(w + (k << 2)), m), inv32)));
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
  // (At most 4 listed bins, the common case: half the comparisons.)
  if (count <= 4) gatherBinsWith(true, values, bins, n, list, count, out, cursor);
  else gatherBinsWith(false, values, bins, n, list, count, out, cursor);
}

/** gatherBins, comparing with the first 4 listed bins only where `few`. */
// @ts-ignore: decorator
@inline function gatherBinsWith(few: bool, values: usize, bins: usize, n: i32, list: usize, count: i32, out: usize, cursor: usize): void {
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
    const hit = hit8(few, v128.load(bins + (<usize>i << 1)), s0, s1, s2, s3, s4, s5, s6, s7);
    // Only the values whose bin is listed, in order (the bits of the lanes that hit).
    for (let bits = i16x8.bitmask(hit); bits !== 0; bits &= bits - 1) {
      const j = i + <i32>ctz(bits);
      put(load<u16>(bins + (<usize>j << 1)), f64.load(values + (<usize>j << 3)), list, count, out, cursor);
    }
  }
  for (; i < n; i++) put(load<u16>(bins + (<usize>i << 1)), f64.load(values + (<usize>i << 3)), list, count, out, cursor);
}

/** The lanes of 8 uint16 bins b equal to one of the listed bins s0 … s7 (−1: none; with `few`, s0 … s3 only). */
// @ts-ignore: decorator
@inline function hit8(few: bool, b: v128, s0: v128, s1: v128, s2: v128, s3: v128, s4: v128, s5: v128, s6: v128, s7: v128): v128 {
  const lo = v128.or(v128.or(i16x8.eq(b, s0), i16x8.eq(b, s1)), v128.or(i16x8.eq(b, s2), i16x8.eq(b, s3)));
  if (few) return lo;
  return v128.or(lo, v128.or(v128.or(i16x8.eq(b, s4), i16x8.eq(b, s5)), v128.or(i16x8.eq(b, s6), i16x8.eq(b, s7))));
}

/**
 * gatherBins for a head scanned with noPool (scanHead's args at `args`): the pooled weights, in
 * the order scanHead pooled them (counted rows; in each, its keys a … b − 1 in the support), read
 * from the rows of rows without holes (float64 w · inv, the product the scan made: 1 / the row's
 * sum) and from pooled for the rest (the scan wrote those), their bins at bins.
 */
export function gatherRows(args: usize, bins: usize, list: usize, count: i32, out: usize, cursor: usize): void {
  if (count <= 4) gatherRowsWith(true, args, bins, list, count, out, cursor);
  else gatherRowsWith(false, args, bins, list, count, out, cursor);
}

/** gatherRows, comparing with the first 4 listed bins only where `few`. */
// @ts-ignore: decorator
@inline function gatherRowsWith(few: bool, args: usize, bins: usize, list: usize, count: i32, out: usize, cursor: usize): void {
  const w = <usize>f64.load(args);
  const lo = <usize>f64.load(args, 24);
  const hi = <usize>f64.load(args, 32);
  const size = <usize>f64.load(args, 40);
  const sums = <usize>f64.load(args, 48);
  const counted = <usize>f64.load(args, 56);
  const nq = <i32>f64.load(args, 104);
  const nk = <i32>f64.load(args, 112);
  const pooled = <usize>f64.load(args, 144);
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
  for (let q = 0; q < nq; q++) {
    if (load<u8>(counted + <usize>q) !== 1) continue;
    const qi = <usize>q << 2;
    const a = load<i32>(lo + qi);
    const n = load<i32>(size + qi);
    if (n !== load<i32>(hi + qi) - a) {
      // A row with holes: the scan pooled its weights.
      for (let j = i; j < i + n; j++) put(load<u16>(bins + (<usize>j << 1)), f64.load(pooled + (<usize>j << 3)), list, count, out, cursor);
      i += n;
      continue;
    }
    const row = w + ((<usize>q * <usize>nk + <usize>a) << 2);
    const inv = 1.0 / f64.load(sums + (<usize>q << 3));
    let j = 0;
    for (; j + 8 <= n; j += 8) {
      const hit = hit8(few, v128.load(bins + (<usize>(i + j) << 1)), s0, s1, s2, s3, s4, s5, s6, s7);
      for (let bits = i16x8.bitmask(hit); bits !== 0; bits &= bits - 1) {
        const t = j + <i32>ctz(bits);
        put(load<u16>(bins + (<usize>(i + t) << 1)), <f64>load<f32>(row + (<usize>t << 2)) * inv, list, count, out, cursor);
      }
    }
    for (; j < n; j++) put(load<u16>(bins + (<usize>(i + j) << 1)), <f64>load<f32>(row + (<usize>j << 2)) * inv, list, count, out, cursor);
    i += n;
  }
}

/** gatherBins' step: value v of bin `bin` into its listed bin's run of out, if its bin is listed. */
// @ts-ignore: decorator
@inline function put(bin: u16, v: f64, list: usize, count: i32, out: usize, cursor: usize): void {
  for (let m = 0; m < count; m++) {
    if (load<u16>(list + (<usize>m << 1)) !== bin) continue;
    const c = cursor + (<usize>m << 2);
    const at = load<i32>(c);
    f64.store(out + (<usize>at << 3), v);
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
