/**
 * A fast JSON writer for large arrays of float32 values: bytes are written straight into fixed-size
 * chunks (never one giant string), and each number gets the short decimal text that reads back as
 * exactly the same float32 (`Math.fround(JSON.parse(text)) === value`). Pure: no Node imports, so
 * the browser can use it too; io/trace-file.ts streams the chunks to a file or stdout.
 */

/** 10^0 … 10^22: every one exact in float64, so `m / 10^k` and `m * 10^k` are correctly rounded. */
const POW10 = Float64Array.from({ length: 23 }, (_, i) => Number(`1e${i}`));

/** A value JSON cannot represent (NaN, ±Infinity), with where in the array it was found. */
export class NonFiniteError extends Error {
  constructor(readonly value: number, readonly index: number) {
    super(`${value} at index ${index}: JSON cannot represent non-finite numbers`);
    this.name = 'NonFiniteError';
  }
}

const CH_0 = 48;
const CH_MINUS = 45;
const CH_DOT = 46;
const CH_E = 101;
const CH_COMMA = 44;

/**
 * Decimal exponent estimate per float32 binary exponent field (floor(log10(2^(b−127)))); it may
 * be one too low, which `tryDigits` corrects.
 */
const E10 = Int32Array.from({ length: 256 }, (_, b) => Math.floor((Math.max(b, 1) - 127) * Math.LOG10E * Math.LN2));

/** Set by tryDigits on success: the count of digits (trailing zeros dropped), the exponent of the first. */
let foundDigits = 0;
let foundE = 0;

/**
 * Rounds `a` (positive, finite, its decimal exponent `e` or one more) to n significant digits and
 * returns the digits as an integer (trailing zeros dropped) when that reads back as `a`, else −1;
 * −1 too where scaling by a power of ten would not be exact (values under ~1e-14 or over ~1e22):
 * the caller then takes the slow path.
 */
function tryDigits(a: number, e: number, n: number): number {
  let k = n - 1 - e;
  if (k > 22 || k < -22) return -1;
  let m = Math.round(k >= 0 ? a * POW10[k]! : a / POW10[-k]!);
  if (m >= POW10[n]!) {
    // The estimate was one too low.
    e++;
    k--;
    if (k < -22) return -1;
    m = Math.round(k >= 0 ? a * POW10[k]! : a / POW10[-k]!);
  }
  if (Math.fround(k >= 0 ? m / POW10[k]! : m * POW10[-k]!) !== a) return -1;
  let mi = m | 0;
  let digits = n;
  while (mi % 10 === 0) {
    mi = (mi / 10) | 0;
    digits--;
  }
  foundDigits = digits;
  foundE = e;
  return mi;
}

/** 10^k for k in −60 … 60 (POW10_ANY[k + 60]); exact only for |k| ≤ 22, which the interval test allows for. */
const POW10_ANY = Float64Array.from({ length: 121 }, (_, i) => Number(`1e${i - 60}`));

/** Half the spacing of float32 values with binary exponent field b: 2^(b − 151) (subnormals: b = 1). */
const HALF_ULP = Float64Array.from({ length: 256 }, (_, b) => 2 ** (Math.max(b, 1) - 151));

/** How sure the interval test must be: candidates within this share of the half spacing of its edge are checked exactly. */
const EDGE = 1e-6;

/**
 * Sets foundDigits/foundE for the integer m of n significant digits (exponent e of its first) and
 * returns m with its trailing zeros dropped.
 */
function found(m: number, n: number, e: number): number {
  let mi = m | 0;
  let digits = n;
  while (mi > 0 && mi % 10 === 0) {
    mi = (mi / 10) | 0;
    digits--;
  }
  foundDigits = digits;
  foundE = e;
  return mi;
}

/**
 * The fewest of 7, 8 or 9 significant digits that read back as `a` (fewer digits round-trip only
 * if more do; values that need fewer than 7 come out shorter too, their trailing zeros dropped),
 * or −1: use the slow path. `b` is a's float32 exponent field, `mantissaZero` whether a is a power of two.
 *
 * The fast test: v = a · 10^(8−e) is a in units of its 9th significant digit; a decimal D reads back
 * as a when it lies within half a float32 spacing h of a (in the same units). The 7- and 8-digit
 * candidates nearest v are accepted or refused by that test where it is clear by a margin far above
 * double rounding (EDGE · h); a candidate near the edge gets the exact test (tryDigits), which
 * emulates the reader: the double nearest D, then Math.fround.
 */
function shortestDigits(a: number, e: number, b: number, mantissaZero: boolean): number {
  let k = 8 - e;
  if (k < -60 || k > 59) return -1;
  let v = a * POW10_ANY[k + 60]!;
  if (v >= 999_999_999.5) {
    // The exponent estimate was one too low.
    e++;
    k--;
    v = a * POW10_ANY[k + 60]!;
  }
  // Below a power of two the spacing halves: use the smaller half spacing on both sides.
  const h = HALF_ULP[b]! * POW10_ANY[k + 60]! * (mantissaZero ? 0.5 : 1);
  const sure = h * (1 - EDGE);
  const never = h * (1 + EDGE);
  const m7 = Math.round(v / 100) * 100;
  const d7 = Math.abs(m7 - v);
  if (d7 < sure && m7 < 1e9) return found(m7 / 100, 7, e);
  if (d7 <= never) {
    const exact = tryDigits(a, e, 7);
    if (exact >= 0) return exact;
  }
  const m8 = Math.round(v / 10) * 10;
  const d8 = Math.abs(m8 - v);
  if (d8 < sure && m8 < 1e9) return found(m8 / 10, 8, e);
  if (d8 <= never) {
    const exact = tryDigits(a, e, 8);
    if (exact >= 0) return exact;
  }
  const m9 = Math.round(v);
  // Nine digits are always within a twelfth of h; refuse only a broken estimate.
  if (m9 < 1e8 || m9 >= 1e9) return -1;
  return found(m9, 9, e);
}

/** The slow general path: 7 to 9 digits through toPrecision (any finite float32). */
function slowFormat(x: number): string {
  for (let n = 7; n < 9; n++) {
    const v = Number(x.toPrecision(n));
    if (Math.fround(v) === x) return String(v);
  }
  return String(Number(x.toPrecision(9)));
}

/** 10^0 … 10^9 as integers. */
const POW10_INT = Int32Array.from({ length: 10 }, (_, i) => 10 ** i);

/** "00" … "99" as character codes, two per entry. */
const PAIRS = Uint8Array.from({ length: 200 }, (_, i) => CH_0 + (i % 2 === 0 ? Math.floor(i / 20) : (i >> 1) % 10));

/** Writes the `count` lowest decimal digits of `m` (zero-padded) into buf[end − count, end). */
function putDigits(buf: Uint8Array, end: number, m: number, count: number): void {
  let i = end;
  while (count >= 2) {
    const q = (m / 100) | 0;
    const r = (m - q * 100) << 1;
    buf[--i] = PAIRS[r + 1]!;
    buf[--i] = PAIRS[r]!;
    m = q;
    count -= 2;
  }
  if (count === 1) buf[--i] = CH_0 + (m % 10);
}

const one = new Float32Array(1);
const oneBits = new Uint32Array(one.buffer);

/**
 * Short decimal text that reads back as exactly the same float32 value (7 to 9 significant
 * digits, the fewest of those that round-trip, trailing zeros dropped). Throws NonFiniteError on
 * NaN and ±Infinity. Same text as JsonChunkWriter writes.
 */
export function formatFloat32(x: number): string {
  const w = new JsonChunkWriter(64);
  w.float32(x);
  return new TextDecoder().decode(w.finish()[0]);
}

/**
 * JSON text as a sequence of byte chunks of about `chunkSize` bytes. Write with `text` (raw JSON
 * text, e.g. from JSON.stringify), `float32` and `float32s`; take full chunks with `take()` as you
 * go (to stream them with bounded memory) and the rest with `finish()`.
 */
export class JsonChunkWriter {
  private buf: Uint8Array;
  private pos = 0;
  private ready: Uint8Array[] = [];
  private readonly encoder = new TextEncoder();
  /** Bytes written so far. */
  bytes = 0;

  constructor(readonly chunkSize = 1 << 20) {
    this.buf = new Uint8Array(chunkSize);
  }

  /** Full chunks waiting to be taken. */
  get pending(): number {
    return this.ready.length;
  }

  /** Makes room for `n` more bytes (n ≤ chunkSize). */
  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    this.flush();
  }

  private flush(): void {
    if (this.pos === 0) return;
    this.ready.push(this.buf.subarray(0, this.pos));
    this.bytes += this.pos;
    this.buf = new Uint8Array(this.chunkSize);
    this.pos = 0;
  }

  /** Appends JSON text as it is (UTF-8). */
  text(s: string): void {
    // Short ASCII text (brackets, commas, keys) byte by byte: no encoder call, no view.
    if (s.length <= 8) {
      this.room(8);
      const buf = this.buf;
      let pos = this.pos;
      let ascii = true;
      for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c > 0x7f) {
          ascii = false;
          break;
        }
        buf[pos++] = c;
      }
      if (ascii) {
        this.pos = pos;
        return;
      }
    }
    // Up to 3 bytes per UTF-16 unit.
    if (s.length * 3 > this.chunkSize) {
      this.flush();
      const bytes = this.encoder.encode(s);
      this.ready.push(bytes);
      this.bytes += bytes.length;
      return;
    }
    this.room(s.length * 3);
    this.pos += this.encoder.encodeInto(s, this.buf.subarray(this.pos)).written;
  }

  /** Appends one float32 value as its shortest round-tripping decimal text. */
  float32(x: number): void {
    if (x - x !== 0) throw new NonFiniteError(x, 0);
    this.room(24);
    one[0] = x;
    this.pos = putFloat32(this.buf, this.pos, one[0]!, oneBits[0]!);
  }

  /** Appends `count` values of `data` from `start`, comma-separated (no brackets). */
  float32s(data: Float32Array, start: number, count: number): void {
    const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
    let buf = this.buf;
    let pos = this.pos;
    for (let i = start, end = start + count; i < end; i++) {
      if (pos + 24 > buf.length) {
        this.pos = pos;
        this.flush();
        buf = this.buf;
        pos = this.pos;
      }
      if (i > start) buf[pos++] = CH_COMMA;
      const x = data[i]!;
      // NaN and ±Infinity: x − x is NaN, not 0.
      if (x - x !== 0) {
        this.pos = pos;
        throw new NonFiniteError(x, i);
      }
      pos = putFloat32(buf, pos, x, bits[i]!);
    }
    this.pos = pos;
  }

  /** Returns the full chunks written so far (the writer keeps the partial one). */
  take(): Uint8Array[] {
    const out = this.ready;
    this.ready = [];
    return out;
  }

  /** Returns every remaining chunk, the partial one included. */
  finish(): Uint8Array[] {
    this.flush();
    return this.take();
  }
}

/** Writes ASCII text at `pos`; returns the position after it. */
function putAscii(buf: Uint8Array, s: string, pos: number): number {
  for (let i = 0; i < s.length; i++) buf[pos++] = s.charCodeAt(i);
  return pos;
}

/**
 * Writes finite float32 `x` (its bits `bits`) at `pos` as its shortest round-tripping decimal text;
 * returns the position after it (at most 16 bytes later).
 */
function putFloat32(buf: Uint8Array, pos: number, x: number, bits: number): number {
  if (x === 0) {
    if (1 / x < 0) buf[pos++] = CH_MINUS;
    buf[pos++] = CH_0;
    return pos;
  }
  let a = x;
  if (x < 0) {
    buf[pos++] = CH_MINUS;
    a = -x;
  }
  const m = shortestDigits(a, E10[(bits >>> 23) & 255]!, (bits >>> 23) & 255, (bits & 0x7fffff) === 0);
  if (m < 0) return putAscii(buf, slowFormat(a), pos);
  const nd = foundDigits;
  const e = foundE;
  if (e >= -5 && e < 9) {
    // Plain notation: the decimal point after digit p = e + 1.
    const p = e + 1;
    if (p <= 0) {
      buf[pos++] = CH_0;
      buf[pos++] = CH_DOT;
      for (let i = p; i < 0; i++) buf[pos++] = CH_0;
      putDigits(buf, pos + nd, m, nd);
      return pos + nd;
    }
    if (p >= nd) {
      putDigits(buf, pos + nd, m, nd);
      pos += nd;
      for (let i = nd; i < p; i++) buf[pos++] = CH_0;
      return pos;
    }
    // The point inside the digits.
    const div = POW10_INT[nd - p]!;
    const whole = (m / div) | 0;
    putDigits(buf, pos + p, whole, p);
    buf[pos + p] = CH_DOT;
    putDigits(buf, pos + nd + 1, m - whole * div, nd - p);
    return pos + nd + 1;
  }
  // Exponent notation: d[.ddd]e[-]x
  if (nd > 1) {
    const div = POW10_INT[nd - 1]!;
    const first = (m / div) | 0;
    buf[pos] = CH_0 + first;
    buf[pos + 1] = CH_DOT;
    putDigits(buf, pos + nd + 1, m - first * div, nd - 1);
    pos += nd + 1;
  } else {
    buf[pos++] = CH_0 + m;
  }
  buf[pos++] = CH_E;
  let ex = e;
  if (ex < 0) {
    buf[pos++] = CH_MINUS;
    ex = -ex;
  }
  if (ex >= 10) buf[pos++] = CH_0 + ((ex / 10) | 0);
  buf[pos++] = CH_0 + (ex % 10);
  return pos;
}
