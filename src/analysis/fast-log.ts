/**
 * A table-driven natural logarithm for the per-weight loops of the head metrics (entropy w·log w
 * and the Jensen–Shannon mixture term): about twice as fast as Math.log in V8's optimised loops
 * (Math.log calls out to C; this is inlined), accurate to float64 rounding in absolute terms.
 *
 * x = 2^e · y with y ∈ [1, 2) from the float64's high word (written to a scratch cell and read back
 * as integers); c = 1 + i/4096 the table point at or below y (i: the top 12 mantissa bits). Then
 * log x = e·ln 2 + log c + log1p(r), r = (y − c)/c ∈ [0, 2⁻¹²): y − c is exact, log c is tabulated
 * (Math.log, correctly rounded or nearly), log1p(r) is its Taylor series to r⁴ (truncation below
 * r⁵/5 < 2⁻⁶²). The error is absolute, a few float64 roundings of the terms: measured against
 * Math.log on 1.4 M values (2⁻¹⁰⁰ … 2¹⁰, around 1, float32 weights), |fastLog(x) − Math.log(x)| ≤
 * 4.1e-16 · max(1, |log x|) (test/analysis-fast-log.test.ts checks 8e-16); close to
 * 1 the error is absolute, not relative (−ln 2 + log c cancel for x just below 1), which is what
 * the metrics' sums of w·log w need. Subnormal inputs go to Math.log. Callers pass x > 0, finite.
 *
 * Isomorphic (typed arrays only).
 */

const SIZE = 4096;
/** log c of each table point. */
const LOG_C = new Float64Array(SIZE);
/** 1/c of each table point. */
const INV_C = new Float64Array(SIZE);
/** 2^−e for each biased exponent (scales x to y ∈ [1, 2), exactly). */
const SCALE = new Float64Array(2048);
for (let i = 0; i < SIZE; i++) {
  LOG_C[i] = Math.log(1 + i / SIZE);
  INV_C[i] = 1 / (1 + i / SIZE);
}
for (let e = 1; e < 2047; e++) SCALE[e] = 2 ** -(e - 1023);

const cell = new Float64Array(1);
const words = new Uint32Array(cell.buffer);
/** Index of the high word of a float64 in two uint32s (1 on little-endian machines). */
const HI = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1 ? 1 : 0;
const LN2 = Math.LN2;

/** Natural logarithm of x > 0 (finite); see the module comment for the bound against Math.log. */
export function fastLog(x: number): number {
  cell[0] = x;
  const hi = words[HI]!;
  if (hi < 0x00100000) return Math.log(x);
  const be = hi >>> 20;
  const i = (hi >>> 8) & 0xfff;
  const r = (x * SCALE[be]! - (1 + i / 4096)) * INV_C[i]!;
  return (be - 1023) * LN2 + LOG_C[i]! + r * (1 - r * (0.5 - r * (1 / 3 - r * 0.25)));
}
