/**
 * Small hand-made traces for the per-view unit tests: tokens as given, attention with known
 * values (causal rows where weight q→k is proportional to k + 1 + head, or a caller's function).
 */
import { mulberry32 } from '../../src/core/random.js';
import type { GenerationInfo, Prediction, StackName, Token, Trace } from '../../src/core/trace.js';

export interface HandTraceOptions {
  modelType?: string;
  name?: string;
  layers?: number;
  heads?: number;
  /** Unnormalised weight of query q on key k (rows are normalised); default causal (k + 1 + head) for k ≤ q. */
  weight?: (layer: number, head: number, q: number, k: number) => number;
  /** Token flags: specials (by index) and generated tokens (from this index on). */
  special?: readonly number[];
  generatedFrom?: number;
  segments?: readonly number[];
  generation?: GenerationInfo;
  predictions?: Prediction[];
  stack?: StackName;
}

export function causalWeight(_l: number, h: number, q: number, k: number): number {
  return k <= q ? k + 1 + h : 0;
}

/** A Trace over `texts` (raw token spellings) with row-normalised attention. */
export function handTrace(texts: readonly string[], o: HandTraceOptions = {}): Trace {
  const n = texts.length;
  const L = o.layers ?? 2;
  const H = o.heads ?? 2;
  const weight = o.weight ?? causalWeight;
  const tokens: Token[] = texts.map((text, i) => ({
    id: i + 3,
    text,
    start: 0,
    end: 0,
    special: o.special?.includes(i) ?? false,
    segment: o.segments?.[i] ?? 0,
    word: null,
    ...(o.generatedFrom !== undefined && i >= o.generatedFrom ? { generated: true } : {}),
  }));
  const layers = Array.from({ length: L }, (_, l) => {
    const a = new Float32Array(H * n * n);
    for (let h = 0; h < H; h++) {
      for (let q = 0; q < n; q++) {
        let s = 0;
        for (let k = 0; k < n; k++) s += weight(l, h, q, k);
        for (let k = 0; k < n; k++) a[(h * n + q) * n + k] = s > 0 ? weight(l, h, q, k) / s : 0;
      }
    }
    return a;
  });
  const trace: Trace = {
    model: { name: o.name ?? 'hand-made', modelType: o.modelType ?? 'llama', numLayers: L, numHeads: H, numKeyValueHeads: H, headDim: 4 },
    tokens,
    attention: { [o.stack ?? 'self']: { dims: [H, n, n], layers } },
  };
  if (o.generation) trace.generation = o.generation;
  if (o.predictions) trace.predictions = o.predictions;
  return trace;
}

/**
 * A trace of n tokens whose rows are random positive weights exp(spread · u), u uniform in [0, 1)
 * from mulberry32(seed), normalised by handTrace; causal zeroes keys after the query.
 */
export function randomTrace(n: number, layers: number, heads: number, causal: boolean, seed: number, spread = 4): Trace {
  const r = mulberry32(seed);
  const table = new Map<string, number>();
  return handTrace(Array.from({ length: n }, (_, i) => `t${i}`), {
    layers,
    heads,
    weight: (l, h, q, k) => {
      if (causal && k > q) return 0;
      const key = `${l},${h},${q},${k}`;
      if (!table.has(key)) table.set(key, Math.exp(spread * r()));
      return table.get(key)!;
    },
  });
}

/** Deterministic values in (−1, 1) from a linear congruential sequence (hand-sized queries, keys and biases). */
export function seededValues(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = (x / 2 ** 32) * 2 - 1;
  }
  return out;
}
