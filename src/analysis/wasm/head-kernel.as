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
const SQRT2: f64 = 1.4142135623730951;
const TWO52: f64 = 4503599627370496.0;
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
  SQRT2, SQRT2, // 0
  0.5, 0.5, // 16
  1.0, 1.0, // 32
  2.0, 2.0, // 48
  TWO52 + 1023.0, TWO52 + 1023.0, // 64: 2^52 plus the exponent bias
  LN2_HI, LN2_HI, // 80
  LN2_LO, LN2_LO, // 96
  1.0 / 19.0, 1.0 / 19.0, // 112
  1.0 / 17.0, 1.0 / 17.0, // 128
  1.0 / 15.0, 1.0 / 15.0, // 144
  1.0 / 13.0, 1.0 / 13.0, // 160
  1.0 / 11.0, 1.0 / 11.0, // 176
  1.0 / 9.0, 1.0 / 9.0, // 192
  1.0 / 7.0, 1.0 / 7.0, // 208
  1.0 / 5.0, 1.0 / 5.0, // 224
  1.0 / 3.0, 1.0 / 3.0, // 240
], 16);
const K_MANT: usize = memory.data<u64>([0x000fffffffffffff, 0x000fffffffffffff, 0x3ff0000000000000, 0x3ff0000000000000, 0x4330000000000000, 0x4330000000000000], 16);

/**
 * Natural logarithm of both lanes (each ≥ 2^−1022, the smallest normal float64, and finite: what
 * float32 weights renormalised by their row sums give).
 * x = 2^e · y with y ∈ [√2/2, √2); log y = 2 atanh(s), s = (y − 1)/(y + 1), |s| ≤ 0.1716, as
 * 2s · (1 + z/3 + z²/5 + … + z⁹/19), z = s² (the series' next term, z¹⁰/21 ≤ 2.3e-17, is below
 * float64 rounding).
 */
// @ts-ignore: decorator
@inline function logv(x: v128): v128 {
  // The exponent as a float64: (bits >> 52) | 2^52's bits, minus 2^52 and the bias.
  let e = f64x2.sub(v128.or(i64x2.shr_u(x, 52), v128.load(K_MANT, 32)), v128.load(K, 64));
  let y = v128.or(v128.and(x, v128.load(K_MANT)), v128.load(K_MANT, 16));
  const big = f64x2.gt(y, v128.load(K));
  y = v128.bitselect(f64x2.mul(y, v128.load(K, 16)), y, big);
  const one = v128.load(K, 32);
  e = f64x2.add(e, v128.and(big, one));
  const f = f64x2.sub(y, one);
  const s = f64x2.div(f, f64x2.add(f, v128.load(K, 48)));
  const z = f64x2.mul(s, s);
  // P(z) = c0 + c1 z + … + c8 z⁸, c_j = 1/(2j + 3), by Estrin's scheme (pairs, then pairs of
  // pairs): a short dependency chain, so that the loops' iterations overlap in the processor.
  const z2 = f64x2.mul(z, z);
  const z4 = f64x2.mul(z2, z2);
  const p01 = f64x2.add(v128.load(K, 240), f64x2.mul(v128.load(K, 224), z));
  const p23 = f64x2.add(v128.load(K, 208), f64x2.mul(v128.load(K, 192), z));
  const p45 = f64x2.add(v128.load(K, 176), f64x2.mul(v128.load(K, 160), z));
  const p67 = f64x2.add(v128.load(K, 144), f64x2.mul(v128.load(K, 128), z));
  const p03 = f64x2.add(p01, f64x2.mul(p23, z2));
  const p47 = f64x2.add(p45, f64x2.mul(p67, z2));
  const p = f64x2.add(p03, f64x2.mul(f64x2.add(p47, f64x2.mul(v128.load(K, 112), z4)), z4));
  const t = f64x2.add(s, s);
  const r = f64x2.add(f64x2.mul(f64x2.mul(t, z), p), f64x2.mul(e, v128.load(K, 96)));
  return f64x2.add(f64x2.mul(e, v128.load(K, 80)), f64x2.add(t, r));
}

/** −x · log x per lane, 0 where x is 0 (lanes ≥ 0). */
// @ts-ignore: decorator
@inline function negXLogX(x: v128): v128 {
  const zero = f64x2.eq(x, f64x2.splat(0.0));
  const l = logv(v128.bitselect(v128.load(K, 32), x, zero));
  return f64x2.neg(f64x2.mul(x, l));
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

// @ts-ignore: decorator
@inline function scanBody(
  masked: bool, js: bool, w: usize, fw: usize, supp: usize, a: i32, b: i32, inv: f64, qp: f64,
  threshold: f64, uniform: f64, longRange: f64, pooled: usize, acc: usize,
): i32 {
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
  let n = 0;
  for (let k = a; k < b; k += 2) {
    // The pair k, k + 1; at a lone last key lane 1 is masked off (the arrays have 16 bytes of
    // padding at their end, so the loads past it stay in bounds).
    const pair = k + 1 < b;
    let m: v128 = v128.bitselect(i64x2.splat(-1), LANE0, i64x2.splat(pair ? -1 : 0));
    if (masked) m = v128.and(m, mask2(supp + <usize>k));
    const v = v128.and(f64x2.mul(load2(w + (<usize>k << 2)), invv), m);
    if (js) hm = f64x2.add(hm, negXLogX(v128.and(f64x2.mul(f64x2.add(v128.load(fw + (<usize>k << 3)), v), half), m)));
    mx = f64x2.max(mx, v);
    ent = f64x2.add(ent, negXLogX(v));
    below = i64x2.sub(below, v128.and(f64x2.lt(v, thr), m));
    belowU = i64x2.sub(belowU, v128.and(f64x2.lt(v, uni), m));
    sum = f64x2.add(sum, v);
    sq = f64x2.add(sq, f64x2.mul(v, v));
    const d = f64x2.abs(f64x2.sub(qpv, kv));
    dist = f64x2.add(dist, f64x2.mul(v, d));
    long = f64x2.add(long, v128.and(v, f64x2.ge(d, lr)));
    kv = f64x2.add(kv, two);
    // The weights of the support, in key order.
    if (!masked) {
      v128.store(pooled + (<usize>n << 3), v);
      n += pair ? 2 : 1;
    } else {
      if (i64x2.extract_lane(m, 0) !== 0) {
        f64.store(pooled + (<usize>n << 3), f64x2.extract_lane(v, 0));
        n++;
      }
      if (i64x2.extract_lane(m, 1) !== 0) {
        f64.store(pooled + (<usize>n << 3), f64x2.extract_lane(v, 1));
        n++;
      }
    }
  }
  f64.store(acc, f64x2.extract_lane(hm, 0) + f64x2.extract_lane(hm, 1));
  f64.store(acc, max(f64x2.extract_lane(mx, 0), f64x2.extract_lane(mx, 1)), 8);
  f64.store(acc, f64x2.extract_lane(ent, 0) + f64x2.extract_lane(ent, 1), 16);
  f64.store(acc, f64.load(acc, 24) + <f64>(i64x2.extract_lane(below, 0) + i64x2.extract_lane(below, 1)), 24);
  f64.store(acc, f64.load(acc, 32) + <f64>(i64x2.extract_lane(belowU, 0) + i64x2.extract_lane(belowU, 1)), 32);
  f64.store(acc, f64x2.extract_lane(sum, 0) + f64x2.extract_lane(sum, 1), 40);
  f64.store(acc, f64.load(acc, 48) + (f64x2.extract_lane(sq, 0) + f64x2.extract_lane(sq, 1)), 48);
  f64.store(acc, f64.load(acc, 56) + (f64x2.extract_lane(dist, 0) + f64x2.extract_lane(dist, 1)), 56);
  f64.store(acc, f64.load(acc, 64) + (f64x2.extract_lane(long, 0) + f64x2.extract_lane(long, 1)), 64);
  return n;
}

/**
 * One row of one head: the keys a … b − 1 of the float32 row at w (key k at w + 4k), renormalised by
 * inv; supp: the row's support bytes (0: every key of the range is in the support); fw: the first
 * layer's renormalised row (float64, key k at fw + 8k; 0: no Jensen–Shannon term); qp: the query's
 * position. Writes the support's weights from pooled on (returns how many) and the accumulators at
 * acc (see above).
 */
export function scanRow(
  w: usize, fw: usize, supp: usize, a: i32, b: i32, inv: f64, qp: f64,
  threshold: f64, uniform: f64, longRange: f64, pooled: usize, acc: usize,
): i32 {
  if (supp === 0) {
    if (fw === 0) return scanBody(false, false, w, fw, supp, a, b, inv, qp, threshold, uniform, longRange, pooled, acc);
    return scanBody(false, true, w, fw, supp, a, b, inv, qp, threshold, uniform, longRange, pooled, acc);
  }
  if (fw === 0) return scanBody(true, false, w, fw, supp, a, b, inv, qp, threshold, uniform, longRange, pooled, acc);
  return scanBody(true, true, w, fw, supp, a, b, inv, qp, threshold, uniform, longRange, pooled, acc);
}

/**
 * The renormalised row into float64 arrays: to[k] = w[k] · inv · scale for the keys a … b − 1 of the
 * support (supp as in scanRow); `add` adds it to what is there (a layer's head mean) instead.
 */
export function putRow(w: usize, supp: usize, a: i32, b: i32, inv: f64, scale: f64, to: usize, add: bool): void {
  for (let k = a; k < b; k++) {
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
    h = f64x2.add(h, negXLogX(v128.and(xy, m)));
  }
  return f64x2.extract_lane(h, 0) + f64x2.extract_lane(h, 1);
}

/**
 * Σ −m · log m over the keys a … b − 1, m = (fw[k] + v) / 2, v = w[k] · inv where the support byte
 * is 1, else 0 (a row whose range differs from the first layer's: the union of both).
 */
export function mixRowEntropy(w: usize, fw: usize, supp: usize, a: i32, b: i32, inv: f64): f64 {
  let h = f64x2.splat(0.0);
  const half = f64x2.splat(0.5);
  const invv = f64x2.splat(inv);
  for (let k = a; k < b; k += 2) {
    const pair = v128.bitselect(i64x2.splat(-1), LANE0, i64x2.splat(k + 1 < b ? -1 : 0));
    const v = v128.and(f64x2.mul(load2(w + (<usize>k << 2)), invv), v128.and(pair, mask2(supp + <usize>k)));
    h = f64x2.add(h, negXLogX(v128.and(f64x2.mul(f64x2.add(v128.load(fw + (<usize>k << 3)), v), half), pair)));
  }
  return f64x2.extract_lane(h, 0) + f64x2.extract_lane(h, 1);
}

// The quantiles' histogram (head-metrics.ts `quantiles`): bins of the float64 high word's top 20
// bits after the sign (1/256 octave), bin 0 below 2^−100, the last bin from 2^100 up.
const BIN_BASE: i32 = (1023 - 100) << 8;
const BINS: i32 = 200 * 256 + 2;

/** Counts the n float64 values at values per bin (uint32 at hist) and keeps each one's bin (uint16 at bins). */
export function histogram(values: usize, n: i32, hist: usize, bins: usize): void {
  for (let i = 0; i < n; i++) {
    const hi = <i32>(load<u64>(values + (<usize>i << 3)) >> 32);
    let b = ((hi & 0x7fffffff) >>> 12) - BIN_BASE + 1;
    b = b < 0 ? 0 : b >= BINS ? BINS - 1 : b;
    store<u16>(bins + (<usize>i << 1), <u16>b);
    const h = hist + (<usize>b << 2);
    store<u32>(h, load<u32>(h) + 1);
  }
}

/** The values whose bin is marked (int32 at mark ≥ 0), in order, into out; returns how many. */
export function gather(values: usize, bins: usize, n: i32, mark: usize, out: usize): i32 {
  let j = 0;
  for (let i = 0; i < n; i++) {
    const b = <usize>load<u16>(bins + (<usize>i << 1));
    if (load<i32>(mark + (b << 2)) >= 0) {
      f64.store(out + (<usize>j << 3), f64.load(values + (<usize>i << 3)));
      j++;
    }
  }
  return j;
}
