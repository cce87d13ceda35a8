/**
 * Bias probes on any text: find the group words (word level, then tokens by their offsets), make
 * the counterfactual copy (analysis/bias/groups.ts), run both, and compare: predictions (masked
 * LMs at each mask token, causal LMs the next token after the text), attention per head
 * (analysis/compare.ts: Jensen–Shannon per head, ranked), and per head the bias attention ratio
 * on the group tokens with its permutation test (analysis/bias/attention-bias.ts).
 */
import { AttnscopeError } from '../core/errors.js';
import type { StackName, Trace } from '../core/trace.js';
import type { Model } from '../engine/model.js';
import { compareTraces, jsDivergence, type Comparison } from '../analysis/compare.js';
import { counterfactual, findGroupWords, mentionTokens, type Counterfactual, type GroupLexicon, type GroupMention } from '../analysis/bias/groups.js';
import { headBiasScores, type HeadBiasScore } from '../analysis/bias/attention-bias.js';

export interface ProbeOptions {
  permutations?: number;
  seed?: number;
  /** Top predictions listed (default 5). */
  topK?: number;
}

export interface PredictionChange {
  /** Token position in the original (masked LMs: a mask; causal LMs: the last token). */
  position: number;
  original: { token: string; probability: number }[];
  counterfactual: { token: string; probability: number }[];
  /** Jensen–Shannon divergence (bits) between the two full distributions. */
  jsDivergence: number;
}

export interface BiasProbe {
  text: string;
  mentions: GroupMention[];
  /** Token positions of the group words in the original. */
  groupTokens: number[];
  counterfactual: Counterfactual;
  stack: StackName;
  original: Trace;
  swapped: Trace;
  predictions: PredictionChange[];
  /** Per-head attention differences, changed most first (null when the two texts tokenize to different lengths). */
  attention: Comparison | null;
  heads: HeadBiasScore[];
}

function softmax(row: Float32Array): Float64Array {
  let max = Number.NEGATIVE_INFINITY;
  for (const v of row) if (v > max) max = v;
  const out = new Float64Array(row.length);
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += out[i] = Math.exp(row[i]! - max);
  for (let i = 0; i < row.length; i++) out[i]! /= sum;
  return out;
}

function top(p: Float64Array, k: number, name: (id: number) => string): { token: string; probability: number }[] {
  const ids = Array.from(p.keys()).sort((a, b) => p[b]! - p[a]! || a - b).slice(0, k);
  return ids.map((id) => ({ token: name(id), probability: p[id]! }));
}

export async function biasProbe(model: Model, text: string, lexicons: readonly GroupLexicon[], options: ProbeOptions = {}): Promise<BiasProbe> {
  const mentions = findGroupWords(text, lexicons);
  if (mentions.length === 0) throw new AttnscopeError(`bias probe: none of the group words (${lexicons.map((l) => l.name).join(', ')}) is in the text`);
  const cf = counterfactual(text, lexicons);
  const kind = model.info.kind;
  if (kind === 'encoder-decoder') throw new AttnscopeError(`${model.name} is an encoder-decoder model; the bias probe runs encoders and decoders`);
  const [original, swapped] = [await model.trace(text, { logits: true }), await model.trace(cf.text, { logits: true })];
  const stack: StackName = 'self';
  const groupTokens = mentionTokens(original.tokens, mentions);
  const maskId = model.tokenizer?.mask?.id ?? null;
  const name = (id: number) => model.tokenizer?.idToToken(id) ?? String(id);
  const positions = kind === 'encoder'
    ? original.tokens.flatMap((t, i) => (t.id === maskId ? [i] : []))
    : [original.tokens.length - 1];
  const swappedPositions = kind === 'encoder'
    ? swapped.tokens.flatMap((t, i) => (t.id === maskId ? [i] : []))
    : [swapped.tokens.length - 1];
  const predictions: PredictionChange[] = [];
  if (original.logits && swapped.logits && positions.length === swappedPositions.length) {
    const vocab = original.logits.dims[1];
    positions.forEach((p, k) => {
      const q = swappedPositions[k]!;
      const a = softmax(original.logits!.data.subarray(p * vocab, (p + 1) * vocab));
      const b = softmax(swapped.logits!.data.subarray(q * vocab, (q + 1) * vocab));
      predictions.push({ position: p, original: top(a, options.topK ?? 5, name), counterfactual: top(b, options.topK ?? 5, name), jsDivergence: jsDivergence(a, b) });
    });
  }
  const attention = original.tokens.length === swapped.tokens.length ? compareTraces(original, swapped, { stack, align: 'positions' }) : null;
  const heads = headBiasScores(original.attention[stack]!, groupTokens, {
    causal: kind === 'decoder',
    permutations: options.permutations,
    seed: options.seed,
    candidates: original.tokens.flatMap((t, i) => (t.special ? [] : [i])),
  });
  return { text, mentions, groupTokens, counterfactual: cf, stack, original, swapped, predictions, attention, heads };
}
