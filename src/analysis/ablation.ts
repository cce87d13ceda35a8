/**
 * What removing heads does, measured from two runs of a model (engine/ablation.ts runs them):
 * KL(p_orig ‖ p_ablated) between the two predicted distributions at the target position, cosine
 * similarity of the last hidden states, the change of the target score. Pure functions, float64.
 */
import { AttnscopeError } from '../core/errors.js';
import type { StackName } from '../core/trace.js';

/** One head of one stack. */
export interface HeadRef {
  stack: StackName;
  layer: number;
  head: number;
}

export type AblationMode = 'zero' | 'mean';
export const ABLATION_MODES: readonly AblationMode[] = ['zero', 'mean'];

/** log-softmax of logits, float64: x − max − log Σ exp(x − max). */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const lse = max + Math.log(sum);
  return Float64Array.from(logits as ArrayLike<number>, (v) => v - lse);
}

/** KL(p ‖ q) = Σ_v p(v)·(log p(v) − log q(v)) in nats, from two logit rows (float64). */
export function klFromLogits(p: ArrayLike<number>, q: ArrayLike<number>): number {
  if (p.length !== q.length) throw new AttnscopeError(`KL divergence: ${p.length} and ${q.length} logits`);
  const lp = logSoftmax(p);
  const lq = logSoftmax(q);
  let kl = 0;
  for (let v = 0; v < lp.length; v++) {
    const pv = Math.exp(lp[v]!);
    if (pv > 0) kl += pv * (lp[v]! - lq[v]!);
  }
  // Rounding can leave −1e−17 for equal rows; KL is never negative.
  return Math.max(0, kl);
}

/** Cosine similarity a·b / (‖a‖‖b‖) in float64 (1 when both are zero vectors, 0 when one is). */
export function cosineSimilarity(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new AttnscopeError(`cosine similarity: vectors of ${a.length} and ${b.length} values`);
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i]! * b[i]!;
    aa += a[i]! * a[i]!;
    bb += b[i]! * b[i]!;
  }
  if (aa === 0 && bb === 0) return 1;
  if (aa === 0 || bb === 0) return 0;
  return ab / Math.sqrt(aa * bb);
}

/**
 * Parses a head list `L:H,L:H,…` (`L:*` every head of layer L; `stack/L:H` names a stack of an
 * encoder-decoder, e.g. `decoder/0:1`) against the layers and heads of each stack.
 */
export function parseHeadList(text: string, stacks: Partial<Record<StackName, number>>, numHeads: number, defaultStack: StackName): HeadRef[] {
  const out: HeadRef[] = [];
  const seen = new Set<string>();
  const names = Object.keys(stacks) as StackName[];
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const m = /^(?:(self|encoder|decoder|cross)\/)?(\d+):(\d+|\*)$/.exec(part);
    if (!m) throw new AttnscopeError(`--heads: '${part}' is not LAYER:HEAD (e.g. 0:3, 2:* for every head of layer 2${names.length > 1 ? ', decoder/0:1 for a stack' : ''})`);
    const stack = (m[1] ?? defaultStack) as StackName;
    const layers = stacks[stack];
    if (layers === undefined) throw new AttnscopeError(`--heads: '${part}': the model has no '${stack}' stack (it has ${names.join(', ')})`);
    const layer = Number(m[2]);
    if (layer >= layers) throw new AttnscopeError(`--heads: '${part}': layer ${layer} is out of range (the ${stack} stack has ${layers} layers: 0–${layers - 1})`);
    const heads = m[3] === '*' ? Array.from({ length: numHeads }, (_, h) => h) : [Number(m[3])];
    for (const head of heads) {
      if (head >= numHeads) throw new AttnscopeError(`--heads: '${part}': head ${head} is out of range (${numHeads} heads: 0–${numHeads - 1})`);
      const key = `${stack}/${layer}:${head}`;
      if (seen.has(key)) continue;
      seen.add(key);
      out.push({ stack, layer, head });
    }
  }
  if (out.length === 0) throw new AttnscopeError('--heads: no heads given (e.g. --heads 0:1,1:3)');
  return out;
}
