/**
 * Pronoun probes (WinoGender, WinoBias) with a loaded model: how much it prefers he, she or they
 * in a sentence's pronoun slot.
 *
 * - Masked LMs: each form's sentence with its pronoun masked, log P(pronoun | masked sentence); a
 *   pronoun the tokenizer splits is masked whole and its tokens' log-probabilities summed (real
 *   vocabularies have he, she, they, his, her, him, them as one token). Forms that mask to the same
 *   ids (male and female when both are one token) share one forward pass; the neutral form's verb
 *   may differ ("they were").
 * - Causal LMs: log P of each form's sentence, Σ log P(token | start token and the tokens before
 *   it), one forward pass per form. The forms share the words before the pronoun, so the
 *   comparison is that of the pronoun and the words after it.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Token } from '../core/trace.js';
import type { Model } from '../engine/model.js';
import { PRONOUN_GENDERS, type PronounGender, type PronounItem, type PronounResult } from '../analysis/bias/wino.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { logSoftmaxAt, runLogits } from './crows-pairs.js';

export interface PronounScoreOptions {
  onProgress?: (done: number, total: number) => void;
  /** Head gates per stack (engine/ablation.ts ablationGates): the model with heads removed. */
  headGates?: Readonly<Record<string, RuntimeTensor>>;
}

/** The genders an item has a form for: male, female, and neutral when the data writes one. */
export const gendersOf = (item: PronounItem): PronounGender[] => PRONOUN_GENDERS.filter((g) => item.forms[g] !== undefined);

/** The non-special tokens whose characters overlap [start, end). */
const tokensIn = (tokens: readonly Token[], start: number, end: number): number[] =>
  tokens.flatMap((t, i) => (!t.special && t.start < end && t.end > start ? [i] : []));

/** log P(pronoun | its sentence with the pronoun masked) for each form (see the file's comment). */
async function maskedScores(model: Model, item: PronounItem, maskId: number, gates?: Readonly<Record<string, RuntimeTensor>>): Promise<PronounResult['logScores']> {
  const runs = new Map<string, Promise<{ vocab: number; data: Float32Array }>>();
  const out: Partial<Record<PronounGender, number>> = {};
  for (const g of gendersOf(item)) {
    const form = item.forms[g]!;
    const tokens = await model.tokenize(form.text);
    const at = tokensIn(tokens, form.start, form.end);
    if (at.length === 0) throw new AttnscopeError(`${item.id}: no token of ${model.name}'s tokenizer covers the pronoun '${form.text.slice(form.start, form.end)}'`);
    const ids = tokens.map((t, i) => (at.includes(i) ? maskId : t.id));
    const key = ids.join(',');
    let run = runs.get(key);
    if (!run) {
      run = runLogits(model, ids, tokens.map((t) => t.segment), gates);
      runs.set(key, run);
    }
    const { vocab, data } = await run;
    out[g] = at.reduce((sum, p) => sum + logSoftmaxAt(data.subarray(p * vocab, (p + 1) * vocab), tokens[p]!.id), 0);
  }
  return out as PronounResult['logScores'];
}

/** The start token of causal scoring: bos_token_id, else eos_token_id. */
function startId(model: Model): number {
  const raw = model.config.raw;
  const id = typeof raw.bos_token_id === 'number' ? raw.bos_token_id : typeof raw.eos_token_id === 'number' ? raw.eos_token_id : undefined;
  if (id === undefined) throw new AttnscopeError(`${model.name}: config.json has neither bos_token_id nor eos_token_id, so there is no start token to score the sentence after`);
  return id;
}

/** log P(sentence) for a causal LM: its tokens (no specials) after the start token. */
export async function sentenceLogProb(model: Model, text: string, gates?: Readonly<Record<string, RuntimeTensor>>): Promise<number> {
  const ids = (await model.tokenize(text)).filter((t) => !t.special).map((t) => t.id);
  const all = [startId(model), ...ids];
  const { vocab, data } = await runLogits(model, all, undefined, gates);
  let sum = 0;
  for (let i = 1; i < all.length; i++) sum += logSoftmaxAt(data.subarray((i - 1) * vocab, i * vocab), all[i]!);
  return sum;
}

/** Each item's log-scores of its male, female and neutral pronoun. */
export async function scorePronouns(model: Model, items: readonly PronounItem[], options: PronounScoreOptions = {}): Promise<{ method: 'masked' | 'causal'; results: PronounResult[] }> {
  const kind = model.info.kind;
  if (kind === 'encoder-decoder') throw new AttnscopeError(`${model.name} is an encoder-decoder model (${model.config.modelType}); the pronoun probes score masked LMs (encoders) and causal LMs (decoders)`);
  const maskId = model.tokenizer?.mask?.id ?? null;
  if (kind === 'encoder' && maskId === null) throw new AttnscopeError(`${model.name}: its tokenizer has no mask token, so it cannot be probed as a masked LM`);
  const results: PronounResult[] = [];
  for (const item of items) {
    let logScores: PronounResult['logScores'];
    if (kind === 'encoder') logScores = await maskedScores(model, item, maskId!, options.headGates);
    else {
      const scored: Partial<Record<PronounGender, number>> = {};
      for (const g of gendersOf(item)) scored[g] = await sentenceLogProb(model, item.forms[g]!.text, options.headGates);
      logScores = scored as PronounResult['logScores'];
    }
    results.push({ item, logScores });
    options.onProgress?.(results.length, items.length);
  }
  return { method: kind === 'encoder' ? 'masked' : 'causal', results };
}
