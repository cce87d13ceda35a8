// Attention on demand (src/core/attention-on-demand.ts) in WebAssembly SIMD: rows of one head's
// probabilities from its queries and keys,
//
//   s[i, j] = (q_i · k_j) · scale + bias[i, j]      p[i, ·] = softmax over the keys row i sees
//
// with masked cells exactly 0. The same arithmetic as the JavaScript loops it replaces: queries and
// keys are float32 values widened to float64 by the caller, so every product is exact and the dot
// products, scores, exponentials and sums are float64 (f64x2 lanes); each probability is rounded
// to float32 once. Lane 0 of a dot product sums the even positions, lane 1 the odd ones (the
// caller pads rows to an even length with zeros).
//
// AssemblyScript source (https://www.assemblyscript.org); scripts/build-attention-kernel.mjs
// compiles it with SIMD enabled into attention-kernel-wasm.ts (base64, committed);
// test/on-demand-kernel-build.test.ts checks that the committed module is this file's build. The
// extension is .as so that TypeScript does not type-check it as a program of its own.
//
// No allocator: the caller (attention-kernel.ts) lays its arrays out in the exported memory from
// heapBase() on and passes byte addresses.

const LOG2E: f64 = 1.4426950408889634;
// ln 2 = LN2_HI + LN2_LO, LN2_HI with its low 32 bits cleared (k · LN2_HI exact for |k| < 2^11).
const LN2_HI: f64 = 0.6931467056274414;
const LN2_LO: f64 = 4.7493250390316726e-7;
const TWO52: f64 = 4503599627370496.0;
/** Exponents below this are taken at it: e^−700 is far below float32's smallest weight relative to the row's largest. */
const EXP_FLOOR: f64 = -700.0;

/** Where the caller's arrays may start (past this module's static data). */
export function heapBase(): usize {
  return (__heap_base + 15) & ~15;
}

// Constants splatted to both lanes, read from memory where they are used (V8 builds a v128
// constant in code from general registers; a load is one instruction).
const K: usize = memory.data<f64>([
  LOG2E, LOG2E, // 0
  LN2_HI, LN2_HI, // 16
  LN2_LO, LN2_LO, // 32
  TWO52 + 1023.0, TWO52 + 1023.0, // 48: 2^52 plus the exponent bias
  EXP_FLOOR, EXP_FLOOR, // 64
  1.0, 1.0, // 80
  1.0 / 2.0, 1.0 / 2.0, // 96
  1.0 / 6.0, 1.0 / 6.0, // 112
  1.0 / 24.0, 1.0 / 24.0, // 128
  1.0 / 120.0, 1.0 / 120.0, // 144
  1.0 / 720.0, 1.0 / 720.0, // 160
  1.0 / 5040.0, 1.0 / 5040.0, // 176
  1.0 / 40320.0, 1.0 / 40320.0, // 192
  1.0 / 362880.0, 1.0 / 362880.0, // 208
  1.0 / 3628800.0, 1.0 / 3628800.0, // 224
  1.0 / 39916800.0, 1.0 / 39916800.0, // 240
], 16);

/**
 * e^x for both lanes, x ≤ 0 (taken at EXP_FLOOR below it). x = k ln 2 + r with k = round(x / ln 2),
 * |r| ≤ ln 2 / 2 (r in two parts, exact k · LN2_HI); e^r as its Taylor series to r¹¹ (the next term
 * is below 6.3e-15 relative); 2^k from its bits ((k + 1023) << 52, by way of 2^52 + 1023 + k whose
 * low mantissa bits are k + 1023). Relative error a few 1e-15: nothing of it survives the rounding to
 * float32.
 */
// @ts-ignore: decorator
@inline function expv(x0: v128): v128 {
  const x = f64x2.pmax(x0, v128.load(K, 64));
  const k = f64x2.nearest(f64x2.mul(x, v128.load(K)));
  const r = f64x2.sub(f64x2.sub(x, f64x2.mul(k, v128.load(K, 16))), f64x2.mul(k, v128.load(K, 32)));
  let p = v128.load(K, 240);
  p = f64x2.add(f64x2.mul(p, r), v128.load(K, 224));
  p = f64x2.add(f64x2.mul(p, r), v128.load(K, 208));
  p = f64x2.add(f64x2.mul(p, r), v128.load(K, 192));
  p = f64x2.add(f64x2.mul(p, r), v128.load(K, 176));
  p = f64x2.add(f64x2.mul(p, r), v128.load(K, 160));
  p = f64x2.add(f64x2.mul(p, r), v128.load(K, 144));
  p = f64x2.add(f64x2.mul(p, r), v128.load(K, 128));
  p = f64x2.add(f64x2.mul(p, r), v128.load(K, 112));
  p = f64x2.add(f64x2.mul(p, r), v128.load(K, 96));
  p = f64x2.add(f64x2.mul(p, r), v128.load(K, 80));
  p = f64x2.add(f64x2.mul(p, r), v128.load(K, 80));
  const two = i64x2.shl(f64x2.add(k, v128.load(K, 48)), 52);
  return f64x2.mul(p, two);
}

// @ts-ignore: decorator
@inline function hsum(v: v128): f64 {
  return f64x2.extract_lane(v, 0) + f64x2.extract_lane(v, 1);
}

/** One query row (q, dp float64) against keys [jLo, jHi) (row j at keys + j·dp·8): s[j]. */
function dots1(q: usize, dp: i32, keys: usize, jLo: i32, jHi: i32, s: usize): void {
  const rowBytes = <usize>dp << 3;
  for (let j = jLo; j < jHi; j++) {
    const kb = keys + <usize>j * rowBytes;
    let a = f64x2.splat(0);
    let b = f64x2.splat(0);
    let t: usize = 0;
    for (; t + 16 < rowBytes; t += 32) {
      a = f64x2.add(a, f64x2.mul(v128.load(q + t), v128.load(kb + t)));
      b = f64x2.add(b, f64x2.mul(v128.load(q + t, 16), v128.load(kb + t, 16)));
    }
    if (t < rowBytes) a = f64x2.add(a, f64x2.mul(v128.load(q + t), v128.load(kb + t)));
    store<f64>(s + (<usize>j << 3), hsum(f64x2.add(a, b)));
  }
}

/**
 * Four query rows (q, rows of dp float64) against keys [jLo, jHi), two keys per pass (six loads for
 * eight f64x2 products): s rows 0–3 (stride `stride` bytes).
 */
function dots4(q: usize, dp: i32, keys: usize, jLo: i32, jHi: i32, s: usize, stride: usize): void {
  const rowBytes = <usize>dp << 3;
  const q1 = q + rowBytes;
  const q2 = q1 + rowBytes;
  const q3 = q2 + rowBytes;
  let j = jLo;
  for (; j + 1 < jHi; j += 2) {
    const kb = keys + <usize>j * rowBytes;
    const kc = kb + rowBytes;
    let a0 = f64x2.splat(0);
    let a1 = f64x2.splat(0);
    let a2 = f64x2.splat(0);
    let a3 = f64x2.splat(0);
    let b0 = f64x2.splat(0);
    let b1 = f64x2.splat(0);
    let b2 = f64x2.splat(0);
    let b3 = f64x2.splat(0);
    for (let t: usize = 0; t < rowBytes; t += 16) {
      const x = v128.load(kb + t);
      const y = v128.load(kc + t);
      const u0 = v128.load(q + t);
      const u1 = v128.load(q1 + t);
      const u2 = v128.load(q2 + t);
      const u3 = v128.load(q3 + t);
      a0 = f64x2.add(a0, f64x2.mul(u0, x));
      a1 = f64x2.add(a1, f64x2.mul(u1, x));
      a2 = f64x2.add(a2, f64x2.mul(u2, x));
      a3 = f64x2.add(a3, f64x2.mul(u3, x));
      b0 = f64x2.add(b0, f64x2.mul(u0, y));
      b1 = f64x2.add(b1, f64x2.mul(u1, y));
      b2 = f64x2.add(b2, f64x2.mul(u2, y));
      b3 = f64x2.add(b3, f64x2.mul(u3, y));
    }
    const o = s + (<usize>j << 3);
    // Keys j and j + 1 of each row, stored together.
    v128.store(o, f64x2.replace_lane(f64x2.splat(hsum(a0)), 1, hsum(b0)));
    v128.store(o + stride, f64x2.replace_lane(f64x2.splat(hsum(a1)), 1, hsum(b1)));
    v128.store(o + 2 * stride, f64x2.replace_lane(f64x2.splat(hsum(a2)), 1, hsum(b2)));
    v128.store(o + 3 * stride, f64x2.replace_lane(f64x2.splat(hsum(a3)), 1, hsum(b3)));
  }
  if (j < jHi) {
    const kb = keys + <usize>j * rowBytes;
    let a0 = f64x2.splat(0);
    let a1 = f64x2.splat(0);
    let a2 = f64x2.splat(0);
    let a3 = f64x2.splat(0);
    for (let t: usize = 0; t < rowBytes; t += 16) {
      const x = v128.load(kb + t);
      a0 = f64x2.add(a0, f64x2.mul(v128.load(q + t), x));
      a1 = f64x2.add(a1, f64x2.mul(v128.load(q1 + t), x));
      a2 = f64x2.add(a2, f64x2.mul(v128.load(q2 + t), x));
      a3 = f64x2.add(a3, f64x2.mul(v128.load(q3 + t), x));
    }
    const o = s + (<usize>j << 3);
    store<f64>(o, hsum(a0));
    store<f64>(o + stride, hsum(a1));
    store<f64>(o + 2 * stride, hsum(a2));
    store<f64>(o + 3 * stride, hsum(a3));
  }
}

/**
 * One row's softmax over keys [a, e) of its dot products s (float64, indexed by key): scores
 * s·scale (+ the float32 bias row b, 0: none), their max, e^(score − max) and the sum; then the
 * float32 probabilities of columns [c0, c1) into out (0 outside [a, e)). Needs e > a.
 */
function softmaxRow(s: usize, a: i32, e: i32, scale: f64, b: usize, out: usize, c0: i32, c1: i32): void {
  const sc = f64x2.splat(scale);
  let mx = f64x2.splat(-Infinity);
  let j = a;
  for (; j + 1 < e; j += 2) {
    const p = s + (<usize>j << 3);
    let v = f64x2.mul(v128.load(p), sc);
    if (b !== 0) v = f64x2.add(v, f64x2.promote_low_f32x4(v128.load64_zero(b + (<usize>j << 2))));
    v128.store(p, v);
    mx = f64x2.pmax(mx, v);
  }
  let m = max(f64x2.extract_lane(mx, 0), f64x2.extract_lane(mx, 1));
  if (j < e) {
    const p = s + (<usize>j << 3);
    let v = load<f64>(p) * scale;
    if (b !== 0) v += <f64>load<f32>(b + (<usize>j << 2));
    store<f64>(p, v);
    if (v > m) m = v;
  }
  const mv = f64x2.splat(m);
  let sum = f64x2.splat(0);
  j = a;
  for (; j + 1 < e; j += 2) {
    const p = s + (<usize>j << 3);
    const x = expv(f64x2.sub(v128.load(p), mv));
    v128.store(p, x);
    sum = f64x2.add(sum, x);
  }
  let total = hsum(sum);
  if (j < e) {
    const p = s + (<usize>j << 3);
    const x = f64x2.extract_lane(expv(f64x2.splat(load<f64>(p) - m)), 0);
    store<f64>(p, x);
    total += x;
  }
  const inv = 1.0 / total;
  const from = max(a, c0);
  const to = min(e, c1);
  let c = c0;
  for (; c < from && c < c1; c++) store<f32>(out + (<usize>(c - c0) << 2), 0);
  for (; c < to; c++) store<f32>(out + (<usize>(c - c0) << 2), <f32>(load<f64>(s + (<usize>c << 3)) * inv));
  for (; c < c1; c++) store<f32>(out + (<usize>(c - c0) << 2), 0);
}

/**
 * Rows i0 … i0 + n − 1 of one head: queries q (n rows of dp float64), keys (nk rows of dp float64),
 * score scale, causal (1: row i sees keys ≤ i), window (0: none; else row i sees keys > i − window),
 * bias (0: none; else n rows of nk float32), s a float64 scratch of 4 · nk, out n rows of
 * c1 − c0 float32: the probabilities of columns [c0, c1).
 */
export function rows(q: usize, n: i32, dp: i32, keys: usize, nk: i32, i0: i32, scale: f64, causal: i32, window: i32, bias: usize, s: usize, out: usize, c0: i32, c1: i32): void {
  const width = c1 - c0;
  const stride = <usize>nk << 3;
  const qRow = <usize>dp << 3;
  for (let g = 0; g < n; g += 4) {
    const m = min(4, n - g);
    if (m === 4) {
      // lo and hi grow with the row: the group's keys are [lo(first), hi(last)).
      const jLo = window === 0 ? 0 : max(0, i0 + g - window + 1);
      const jHi = causal !== 0 ? min(nk, i0 + g + 4) : nk;
      if (jHi > jLo) dots4(q + <usize>g * qRow, dp, keys, jLo, jHi, s, stride);
    }
    for (let r = 0; r < m; r++) {
      const i = i0 + g + r;
      const a = window === 0 ? 0 : max(0, i - window + 1);
      const e = causal !== 0 ? min(nk, i + 1) : nk;
      const o = out + <usize>(g + r) * (<usize>width << 2);
      if (e <= a) {
        for (let c = 0; c < width; c++) store<f32>(o + (<usize>c << 2), 0);
        continue;
      }
      const srow = s + <usize>r * stride;
      if (m !== 4) dots1(q + <usize>(g + r) * qRow, dp, keys, a, e, srow);
      softmaxRow(srow, a, e, scale, bias === 0 ? 0 : bias + <usize>(g + r) * (<usize>nk << 2), o, c0, c1);
    }
  }
}
