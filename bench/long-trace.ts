/**
 * A synthetic long trace in the on-demand form (issue 13): tokens, per-layer queries and keys and
 * the score terms, no attention tensors — attention is softmax(q·k·scale) computed when a view asks
 * (src/core/attention-on-demand.ts), as for a real long trace. For the long-input views' benchmark,
 * browser tests and screenshots at lengths no fixture reaches (8,192 tokens).
 *
 * Heads are built to look like a trained decoder's rather than random weights' (which give almost
 * uniform rows): an attention sink on the first token, previous-token and local heads (rotary-like
 * position features, so q_i·k_j peaks at j = i − offset), heads that attend to the last sentence end
 * (a '.' key feature), and broad content heads; causal, one layer with a sliding window.
 */
import { mulberry32 } from '../src/core/random.js';
import type { Token, Trace } from '../src/core/trace.js';

const WORDS = [
  'the', 'river', 'ran', 'past', 'an', 'old', 'mill', 'where', 'children', 'played', 'in', 'summer', 'and', 'light',
  'fell', 'on', 'stones', 'while', 'birds', 'sang', 'above', 'quiet', 'fields', 'of', 'wheat', 'near', 'a', 'road',
];

export interface LongTraceOptions {
  tokens: number;
  layers?: number;
  heads?: number;
  headDim?: number;
  seed?: number;
  /** Sliding window of the last layer (default 1024; null: none). */
  window?: number | null;
}

/** Llama-style tokens: <s>, then ▁word pieces with a '.' every 8–30 words. */
export function longTokens(n: number, seed = 3): Token[] {
  const r = mulberry32(seed);
  const tokens: Token[] = [{ id: 1, text: '<s>', start: 0, end: 0, special: true, segment: 0, word: null }];
  let untilStop = 8 + Math.floor(r() * 22);
  let word = 0;
  let offset = 0;
  while (tokens.length < n) {
    const stop = untilStop-- <= 0;
    const text = stop ? '.' : `▁${WORDS[Math.floor(r() * WORDS.length)]!}`;
    if (stop) untilStop = 8 + Math.floor(r() * 22);
    const len = text.length;
    tokens.push({ id: 10 + (stop ? 0 : 1 + WORDS.indexOf(text.slice(1))), text, start: offset, end: offset + len, special: false, segment: 0, word: word++ });
    offset += len;
  }
  return tokens;
}

export function longTrace(o: LongTraceOptions): Trace {
  const n = o.tokens;
  const L = o.layers ?? 4;
  const H = o.heads ?? 4;
  const d = o.headDim ?? 32;
  const r = mulberry32(o.seed ?? 17);
  const tokens = longTokens(n, (o.seed ?? 17) + 1);
  const isStop = tokens.map((t) => t.text === '.');
  const gauss = () => Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
  const queries: Float32Array[] = [];
  const keys: Float32Array[] = [];
  const scale = 1 / Math.sqrt(d);
  for (let l = 0; l < L; l++) {
    const q = new Float32Array(H * n * d);
    const k = new Float32Array(H * n * d);
    for (let h = 0; h < H; h++) {
      // Head kinds cycle so every layer has a mix: 0 sink + content, 1 previous token, 2 sentence ends, 3 local.
      const kind = (h + l) % 4;
      const sink = kind === 0 ? 5.5 + r() : 3 + 2 * r();
      const content = 0.6 + 0.8 * r();
      const sharp = 7 + 4 * r();
      const offset = kind === 1 ? 1 : 0;
      for (let i = 0; i < n; i++) {
        const qo = (h * n + i) * d;
        for (let x = 0; x < d; x++) {
          q[qo + x] = gauss() * content;
          k[qo + x] = gauss() * content;
        }
        // Component 0: the sink (every query looks at the first token's key).
        q[qo] = sink;
        k[qo] = i === 0 ? sink * 1.2 : 0;
        if (kind === 1 || kind === 3) {
          // Rotary-like pairs (components 2–9): q_i·k_j = Σ cos(ω (i − offset − j)) · sharp², peaked at j = i − offset.
          for (let p = 0; p < 4; p++) {
            const w = (kind === 1 ? 0.9 : 0.05) / 2 ** p;
            q[qo + 2 + 2 * p] = sharp * Math.cos(w * (i - offset));
            q[qo + 3 + 2 * p] = sharp * Math.sin(w * (i - offset));
            k[qo + 2 + 2 * p] = sharp * Math.cos(w * i);
            k[qo + 3 + 2 * p] = sharp * Math.sin(w * i);
          }
        }
        if (kind === 2) {
          // Sentence ends: '.' keys share a direction every query reads, strongest for the nearest ones (a slow position term).
          q[qo + 1] = sharp;
          k[qo + 1] = isStop[i] ? sharp : -sharp / 2;
          q[qo + 2] = sharp * Math.cos(i / 400);
          q[qo + 3] = sharp * Math.sin(i / 400);
          k[qo + 2] = sharp * Math.cos(i / 400);
          k[qo + 3] = sharp * Math.sin(i / 400);
        }
      }
    }
    queries.push(q);
    keys.push(k);
  }
  const window = o.window === undefined ? 1024 : o.window;
  return {
    model: { name: `synthetic-long-${L}x${H}`, modelType: 'llama', numLayers: L, numHeads: H, numKeyValueHeads: H, headDim: d },
    tokens,
    attention: {},
    queries: { self: { dims: [H, n, d], layers: queries } },
    keys: { self: { dims: [H, n, d], layers: keys } },
    scores: { self: { scale: Array.from({ length: L }, () => scale), causal: true, window: Array.from({ length: L }, (_, l) => (l === L - 1 && window !== null && window < n ? window : null)) } },
  };
}
