/**
 * Synthetic traces of real model shapes (BERT-base: 12 layers × 12 heads, head dim 64) for size
 * and speed measurements of the views, and for browser tests at lengths the fixtures do not reach.
 *
 * The numbers behave like a trained model's rather than random weights' (whose attention is
 * almost uniform): per-head query/key scales between 0.6 and 2.6 give heads from broad to
 * peaked, some heads share a direction with the [CLS]/[SEP] keys (attention sinks), and some get a
 * positional component (previous/next-token heads). Attention is softmax(q·k / √64) computed
 * from the float32 queries and keys, so the neuron view's numbers are exact for these traces too.
 */
import type { Token, Trace } from '../src/core/trace.js';
import { mulberry32 as rng } from '../src/core/random.js';

const WORDS = [
  'the', 'cat', 'sat', 'on', 'mat', 'and', 'looked', 'at', 'a', 'bird', 'that', 'was', 'singing', 'in', 'tree',
  'while', 'children', 'played', 'near', 'river', 'under', 'bright', 'summer', 'sky', 'with', 'their', 'dog',
];
const PIECES = ['##ing', '##ed', '##s', '##ly', '##er'];

export interface SyntheticOptions {
  layers?: number;
  heads?: number;
  tokens?: number;
  headDim?: number;
  /** Include queries and keys (default true). */
  qk?: boolean;
  seed?: number;
  /** A sentence pair: [CLS] A [SEP] B [SEP] (default true). */
  pair?: boolean;
}

/** WordPiece-like tokens: [CLS] sentence A [SEP] sentence B [SEP], with some ## continuation pieces. */
export function syntheticTokens(n: number, pair = true, seed = 7): Token[] {
  const r = rng(seed);
  const tokens: Token[] = [];
  const special = (text: string, segment: number): Token => ({ id: text === '[CLS]' ? 101 : 102, text, start: 0, end: 0, special: true, segment, word: null });
  tokens.push(special('[CLS]', 0));
  const split = pair ? Math.floor(n / 2) : n - 1;
  let word = -1;
  let segment = 0;
  for (let i = 1; i < n - 1; i++) {
    if (pair && i === split) {
      tokens.push(special('[SEP]', 0));
      segment = 1;
      word = -1;
      continue;
    }
    const cont = word >= 0 && r() < 0.15;
    const text = cont ? PIECES[Math.floor(r() * PIECES.length)]! : WORDS[Math.floor(r() * WORDS.length)]!;
    if (!cont) word++;
    tokens.push({ id: 1000 + i, text, start: 0, end: 0, special: false, segment, word });
  }
  tokens.push(special('[SEP]', segment));
  return tokens;
}

/** A BERT-base-shaped trace (defaults: 12 × 12 heads, 128 tokens, head dim 64, with queries and keys). */
export function syntheticTrace(options: SyntheticOptions = {}): Trace {
  const L = options.layers ?? 12;
  const H = options.heads ?? 12;
  const T = options.tokens ?? 128;
  const D = options.headDim ?? 64;
  const r = rng(options.seed ?? 1);
  const gauss = () => {
    const u = r() || 1e-12;
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
  };
  const tokens = syntheticTokens(T, options.pair ?? true);
  const sinks = tokens.flatMap((t, i) => (t.special ? [i] : []));
  const attention: Float32Array[] = [];
  const queries: Float32Array[] = [];
  const keys: Float32Array[] = [];
  const scale = 1 / Math.sqrt(D);
  const row = new Float64Array(T);
  for (let l = 0; l < L; l++) {
    const A = new Float32Array(H * T * T);
    const Q = new Float32Array(H * T * D);
    const K = new Float32Array(H * T * D);
    for (let h = 0; h < H; h++) {
      const sigma = 0.6 + r() * 2.0;
      const sink = r() < 0.5 ? 2 + r() * 4 : 0;
      const positional = r() < 0.3 ? (r() < 0.5 ? -1 : 1) : 0;
      const dir = Float64Array.from({ length: D }, gauss);
      const pos = Float64Array.from({ length: D }, gauss);
      for (let t = 0; t < T; t++) {
        for (let d = 0; d < D; d++) {
          let q = gauss() * sigma + (sink ? dir[d]! * 0.4 : 0);
          let k = gauss() * sigma + (sink && sinks.includes(t) ? dir[d]! * sink * 0.4 : 0);
          if (positional) {
            // queries at t and keys at t + positional share a component: previous/next-token heads.
            q += pos[d]! * Math.cos(t * 0.7 + d) * 1.2;
            k += pos[d]! * Math.cos((t - positional) * 0.7 + d) * 1.2;
          }
          Q[(h * T + t) * D + d] = q;
          K[(h * T + t) * D + d] = k;
        }
      }
      for (let i = 0; i < T; i++) {
        let max = -Infinity;
        const qo = (h * T + i) * D;
        for (let j = 0; j < T; j++) {
          const ko = (h * T + j) * D;
          let s = 0;
          for (let d = 0; d < D; d++) s += Q[qo + d]! * K[ko + d]!;
          row[j] = s * scale;
          if (row[j]! > max) max = row[j]!;
        }
        let z = 0;
        for (let j = 0; j < T; j++) {
          row[j] = Math.exp(row[j]! - max);
          z += row[j]!;
        }
        for (let j = 0; j < T; j++) A[(h * T + i) * T + j] = row[j]! / z;
      }
    }
    attention.push(A);
    queries.push(Q);
    keys.push(K);
  }
  const trace: Trace = {
    model: { name: `synthetic-bert-base-${T}`, modelType: 'bert', numLayers: L, numHeads: H, numKeyValueHeads: H, headDim: D },
    tokens,
    attention: { self: { dims: [H, T, T], layers: attention } },
  };
  if (options.qk ?? true) {
    trace.queries = { self: { dims: [H, T, D], layers: queries } };
    trace.keys = { self: { dims: [H, T, D], layers: keys } };
  }
  return trace;
}
