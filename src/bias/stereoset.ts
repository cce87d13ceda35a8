/**
 * Scoring StereoSet sentences with a loaded model (the evaluation is analysis/bias/stereoset.ts).
 *
 * - Intrasentence, masked LMs, as StereoSet's masked-LM runner (and bias-bench's): the word that
 *   fills BLANK is tokenized (a leading space for RoBERTa's byte-level BPE, as bias-bench does for
 *   roberta); for each of its tokens, BLANK becomes the tokens before it (decoded) and one mask, and
 *   the softmax probability of the token at the mask is read; the sentence's score is the mean of
 *   those probabilities.
 * - Intrasentence, causal LMs, as the generative runner: 2^(mean log₂ P) of the sentence's tokens,
 *   the first after the start token run alone (the CrowS-Pairs causal score).
 * - Intersentence, causal LMs: 2^(mean log₂ P) of the sentence's tokens after the start token and
 *   the context (context + " " + sentence, the sentence's tokens found by their offsets).
 *   Intersentence needs a next-sentence head for masked LMs (StereoSet used BERT's NSP head), which
 *   our graphs do not build: masked LMs are scored on intrasentence only.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Model } from '../engine/model.js';
import type { StereoExample } from '../analysis/bias/stereoset.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { causalScore, logSoftmaxAt, runLogits } from './crows-pairs.js';

export interface StereoScoreOptions {
  onProgress?: (done: number, total: number) => void;
  /** Head gates per stack (engine/ablation.ts ablationGates): the model with heads removed. */
  headGates?: Readonly<Record<string, RuntimeTensor>>;
}

type Gates = Readonly<Record<string, RuntimeTensor>> | undefined;

/** Softmax probability of `target` in `row` (float64). */
const probabilityAt = (row: Float32Array, target: number): number => Math.exp(logSoftmaxAt(row, target));

async function maskedIntrasentence(model: Model, context: string, word: string, gates: Gates): Promise<number> {
  const tokenizer = model.tokenizer!;
  const mask = tokenizer.mask!;
  const spaced = model.config.modelType === 'roberta' ? ` ${word}` : word;
  const insertion = (await model.tokenize(spaced)).filter((t) => !t.special).map((t) => t.id);
  if (insertion.length === 0) throw new AttnscopeError(`StereoSet: the word '${word}' gives no tokens`);
  const probs: number[] = [];
  for (let i = 0; i < insertion.length; i++) {
    const before = i === 0 ? '' : tokenizer.decode(insertion.slice(0, i));
    const text = context.replaceAll('BLANK', `${before}${mask.text}`);
    const tokens = await model.tokenize(text);
    const at = tokens.findIndex((t) => t.id === mask.id);
    if (at < 0) throw new AttnscopeError(`StereoSet: the context '${context.slice(0, 40)}' lost its mask when tokenized`);
    const { vocab, data } = await runLogits(model, tokens.map((t) => t.id), tokens.map((t) => t.segment), gates);
    probs.push(probabilityAt(data.subarray(at * vocab, (at + 1) * vocab), insertion[i]!));
  }
  return probs.reduce((a, b) => a + b, 0) / probs.length;
}

async function causalIntersentence(model: Model, context: string, sentence: string, start: number, gates: Gates): Promise<number> {
  const text = `${context} ${sentence}`;
  const tokens = (await model.tokenize(text)).filter((t) => !t.special);
  const ids = [start, ...tokens.map((t) => t.id)];
  const from = tokens.findIndex((t) => t.end > context.length + 1 || (t.start >= context.length && t.end > context.length));
  if (from < 0) throw new AttnscopeError(`StereoSet: no tokens for the sentence '${sentence.slice(0, 40)}'`);
  const { vocab, data } = await runLogits(model, ids, undefined, gates);
  let sum = 0;
  for (let i = from + 1; i < ids.length; i++) sum += logSoftmaxAt(data.subarray((i - 1) * vocab, i * vocab), ids[i]!);
  return Math.exp(sum / (ids.length - 1 - from));
}

/**
 * Scores of every sentence of `examples` by id (masked LMs: intrasentence examples only; the
 * intersentence ones are returned in `skipped`).
 */
export async function scoreStereoSet(model: Model, examples: readonly StereoExample[], options: StereoScoreOptions = {}): Promise<{ method: 'masked' | 'causal'; scores: Map<string, number>; skipped: StereoExample[] }> {
  const kind = model.info.kind;
  if (kind === 'encoder-decoder') throw new AttnscopeError(`${model.name} is an encoder-decoder model (${model.config.modelType}); StereoSet scores masked LMs (encoders) and causal LMs (decoders)`);
  if (kind === 'encoder' && (!model.tokenizer?.mask || model.tokenizer.mask.id === null)) throw new AttnscopeError(`${model.name}: its tokenizer has no mask token, so it cannot be scored as a masked LM`);
  const method = kind === 'encoder' ? 'masked' : 'causal';
  const scores = new Map<string, number>();
  const skipped = method === 'masked' ? examples.filter((e) => e.split === 'intersentence') : [];
  const todo = examples.filter((e) => !skipped.includes(e));
  const start = method === 'causal' ? startIdOf(model) : 0;
  let done = 0;
  for (const e of todo) {
    for (const s of e.sentences) {
      let v: number;
      if (method === 'masked') v = await maskedIntrasentence(model, e.context, s.templateWord ?? '', options.headGates);
      else if (e.split === 'intrasentence') v = await causalScore(model, s.sentence, start, undefined, options.headGates);
      else v = await causalIntersentence(model, e.context, s.sentence, start, options.headGates);
      scores.set(s.id, v);
    }
    options.onProgress?.(++done, todo.length);
  }
  return { method, scores, skipped };
}

function startIdOf(model: Model): number {
  const raw = model.config.raw;
  const id = typeof raw.bos_token_id === 'number' ? raw.bos_token_id : typeof raw.eos_token_id === 'number' ? raw.eos_token_id : undefined;
  if (id === undefined) throw new AttnscopeError(`${model.name}: config.json has neither bos_token_id nor eos_token_id, so there is no start token to score the sentence after`);
  return id;
}
