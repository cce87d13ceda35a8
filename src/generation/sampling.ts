/**
 * Choosing the next token from logits: greedy (argmax), or sampling with temperature, top-k and
 * top-p applied in that order, as transformers' logits warpers do, from a seeded generator.
 */
import { AttnscopeError } from '../core/errors.js';
import { mulberry32 } from '../core/random.js';

export interface SamplingOptions {
  /** 'greedy' (default) or 'sample'. */
  strategy?: 'greedy' | 'sample';
  /** Divides the logits before sampling (default 1). */
  temperature?: number;
  /** Sample only among the k most likely tokens (0 or undefined: all). */
  sampleTopK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (1 or undefined: all). */
  topP?: number;
  /** Seed of the sampler's random generator (same seed, same choices). */
  seed?: number;
}

export interface Choice {
  id: number;
  /**
   * The model's probability of the chosen token: the softmax of its raw logits, before
   * temperature, top-k and top-p reshape the distribution it is drawn from.
   */
  probability: number;
}


function softmax(logits: ArrayLike<number>): Float64Array {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  const out = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) {
    const e = logits[i]! === Number.NEGATIVE_INFINITY ? 0 : Math.exp(logits[i]! - max);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < out.length; i++) out[i]! /= sum;
  return out;
}

/** softmax(logits)[id], in float64: the model's own probability of a token. */
export function modelProbability(logits: ArrayLike<number>, id: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  return Math.exp(logits[id]! - max) / sum;
}

/** The index of the largest logit (the first one on ties, as torch.argmax). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

export function validateSampling(o: SamplingOptions): void {
  if (o.temperature !== undefined && !(o.temperature > 0)) throw new AttnscopeError(`temperature must be > 0, got ${o.temperature}`);
  if (o.sampleTopK !== undefined && !(Number.isInteger(o.sampleTopK) && o.sampleTopK >= 0)) {
    throw new AttnscopeError(`sample-top-k must be a non-negative integer, got ${o.sampleTopK}`);
  }
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new AttnscopeError(`top-p must be in (0, 1], got ${o.topP}`);
}

/** Returns a function choosing the next token from one row of logits. */
export function createSampler(options: SamplingOptions = {}): (logits: Float32Array) => Choice {
  validateSampling(options);
  if ((options.strategy ?? 'greedy') === 'greedy') {
    return (logits) => {
      const id = argmax(logits);
      return { id, probability: modelProbability(logits, id) };
    };
  }
  const random = mulberry32(options.seed ?? 0);
  const temperature = options.temperature ?? 1;
  return (logits) => {
    const scores = Float64Array.from(logits, (v) => v / temperature);
    const order = Array.from(scores.keys()).sort((a, b) => scores[b]! - scores[a]! || a - b);
    const topK = options.sampleTopK ? Math.min(options.sampleTopK, scores.length) : scores.length;
    // top-k: everything below the k-th score is removed (ties with it are kept, as transformers does).
    const kth = scores[order[topK - 1]!]!;
    for (let i = 0; i < scores.length; i++) if (scores[i]! < kth) scores[i] = Number.NEGATIVE_INFINITY;
    let probs = softmax(scores);
    if (options.topP !== undefined && options.topP < 1) {
      // top-p: keep the most likely tokens until their mass reaches p (at least one).
      let mass = 0;
      const keep = new Set<number>();
      for (const id of order) {
        if (keep.size > 0 && mass >= options.topP) break;
        keep.add(id);
        mass += probs[id]!;
      }
      for (let i = 0; i < scores.length; i++) if (!keep.has(i)) scores[i] = Number.NEGATIVE_INFINITY;
      probs = softmax(scores);
    }
    let r = random();
    for (const id of order) {
      r -= probs[id]!;
      if (r < 0) return { id, probability: modelProbability(logits, id) };
    }
    // Rounding left r ≥ 0 after the whole mass: take the least likely token still allowed.
    const last = [...order].reverse().find((id) => probs[id]! > 0)!;
    return { id: last, probability: modelProbability(logits, last) };
  };
}
