/**
 * A synthetic AttentionSource for long-input tests: seeded random queries and keys, attention
 * softmax(q·k·scale) computed a block at a time (row maxima and sums cached per row), so that an
 * 8,192-token source costs kilobytes, not 8,192² floats. Optionally causal or windowed.
 * `reference(l, h, q, k)` recomputes one weight in float64 from the same q and k, independently
 * of `block`, for the tests to compare against.
 */
import { type AttentionSource, checkBlock } from '../../src/core/attention-source.js';
import { mulberry32 } from '../../src/core/random.js';
import type { ScoreTerms } from '../../src/core/trace.js';

export interface QkSourceOptions {
  layers?: number;
  heads?: number;
  tokens: number;
  headDim?: number;
  causal?: boolean;
  /** Sliding window (query i sees keys i − window + 1 … i). */
  window?: number | null;
  seed?: number;
  /** Spread of the q and k components (larger: more peaked rows). */
  spread?: number;
}

export interface QkSource extends AttentionSource {
  readonly terms: ScoreTerms;
  reference(layer: number, head: number, q: number, k: number): number;
  /** Blocks computed so far (for tests that check a view reads only what it shows). */
  readonly reads: { cells: number; blocks: number };
}

export function qkSource(o: QkSourceOptions): QkSource {
  const L = o.layers ?? 2;
  const H = o.heads ?? 2;
  const n = o.tokens;
  const d = o.headDim ?? 8;
  const causal = o.causal ?? true;
  const window = o.window ?? null;
  const r = mulberry32(o.seed ?? 11);
  const spread = o.spread ?? 1.5;
  const scale = 1 / Math.sqrt(d);
  const q = Array.from({ length: L * H }, () => Float32Array.from({ length: n * d }, () => (r() * 2 - 1) * spread));
  const k = Array.from({ length: L * H }, () => Float32Array.from({ length: n * d }, () => (r() * 2 - 1) * spread));
  // A sink: key 0 shares the mean query direction in every head, as trained models' first tokens do.
  for (let i = 0; i < L * H; i++) for (let j = 0; j < d; j++) k[i]![j] = 2 * spread;
  for (let i = 0; i < L * H; i++) for (let t = 0; t < n; t++) q[i]![t * d] = Math.abs(q[i]![t * d]!);
  const lo = (t: number) => (window === null ? 0 : Math.max(0, t - window + 1));
  const hi = (t: number) => (causal ? t + 1 : n);
  const rowMax = Array.from({ length: L * H }, () => new Float64Array(n).fill(NaN));
  const rowSum = Array.from({ length: L * H }, () => new Float64Array(n));
  const dot = (qa: Float32Array, qi: number, ka: Float32Array, kj: number) => {
    let s = 0;
    for (let x = 0; x < d; x++) s += qa[qi * d + x]! * ka[kj * d + x]!;
    return s * scale;
  };
  const norm = (i: number, t: number) => {
    if (!Number.isNaN(rowMax[i]![t]!)) return;
    let m = -Infinity;
    for (let j = lo(t); j < hi(t); j++) m = Math.max(m, dot(q[i]!, t, k[i]!, j));
    let s = 0;
    for (let j = lo(t); j < hi(t); j++) s += Math.exp(dot(q[i]!, t, k[i]!, j) - m);
    rowMax[i]![t] = m;
    rowSum[i]![t] = s;
  };
  const reads = { cells: 0, blocks: 0 };
  const source: QkSource = {
    stack: 'self',
    numLayers: L,
    numHeads: H,
    numQueries: n,
    numKeys: n,
    onDemand: true,
    terms: { scale: Array.from({ length: L }, () => scale), causal, window: Array.from({ length: L }, () => window) },
    reads,
    block(layer, head, r0, r1, c0, c1) {
      checkBlock(source, layer, head, r0, r1, c0, c1);
      const i = layer * H + head;
      const w = c1 - c0;
      const out = new Float32Array((r1 - r0) * w);
      reads.blocks++;
      reads.cells += out.length;
      for (let t = r0; t < r1; t++) {
        norm(i, t);
        const m = rowMax[i]![t]!;
        const s = rowSum[i]![t]!;
        const a = Math.max(c0, lo(t));
        const b = Math.min(c1, hi(t));
        for (let j = a; j < b; j++) out[(t - r0) * w + j - c0] = Math.exp(dot(q[i]!, t, k[i]!, j) - m) / s;
      }
      return out;
    },
    reference(layer, head, t, j) {
      const i = layer * H + head;
      if (j < lo(t) || j >= hi(t)) return 0;
      const score = (jj: number) => {
        let s = 0;
        for (let x = 0; x < d; x++) s += q[i]![t * d + x]! * k[i]![jj * d + x]!;
        return s / Math.sqrt(d);
      };
      let den = 0;
      for (let jj = lo(t); jj < hi(t); jj++) den += Math.exp(score(jj));
      return Math.exp(score(j)) / den;
    },
  };
  return source;
}
