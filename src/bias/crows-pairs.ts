/**
 * Scoring CrowS-Pairs sentences with a loaded model (the metric itself is
 * analysis/bias/crows-pairs.ts).
 *
 * - Masked LMs, as the authors' metric.py (`mask_unigram`): lower-case both sentences when the
 *   model's tokenizer is uncased, tokenize them (with the specials), take the positions their token
 *   ids share (difflib 'equal' opcodes), and sum over the shared positions except the first and the
 *   last (the [CLS]/[SEP] pair) log P(token | the sentence with that one token masked). The
 *   masked copies of up to 256 pairs are pooled and grouped by length: copies of one length run
 *   as batches whatever sentence they come from (engine/batch.ts targetLogProbabilities: the
 *   logits graph with a batch dimension, no padding, so each copy is computed as its own run is;
 *   only each copy's masked position goes through the vocabulary projection, and log P of its
 *   token is taken there in the graph, in float64 from the float32 logits, as the unbatched path
 *   does here: one forward per copy with every position's logits, the authors' approach,
 *   `batched: false`, and always with head gates), which it equals to float32 rounding.
 * - Causal LMs, as bias-bench (`_joint_log_probability`): the sentence's tokens (without specials);
 *   the first one's probability from a run of the start token alone (bias-bench encodes
 *   "<|endoftext|>"; here bos_token_id, else eos_token_id), the others' from one run of the sentence;
 *   score = 2^(mean log₂ p), compared unrounded.
 */
import { AttnscopeError } from '../core/errors.js';
import { toFloat32 } from '../engine/assemble.js';
import { logitsBatch, targetLogProbabilities } from '../engine/batch.js';
import type { Model } from '../engine/model.js';
import type { TapRequest } from '../models/architecture.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { orientedSentences, type CrowsPair, type PairScores } from '../analysis/bias/crows-pairs.js';
import { sharedPositions } from '../analysis/bias/sequence-matcher.js';

export type CrowsMethod = 'masked' | 'causal';

/** Results already computed, keyed by method, casing and the two sentences (see results-cache.ts). */
export interface PairScoreCache {
  get(key: string): PairScores | undefined;
  set(key: string, scores: PairScores): void;
}

export interface CrowsScoreOptions {
  /** Called after each pair with the number done and the total. */
  onProgress?: (done: number, total: number) => void;
  cache?: PairScoreCache;
  /** Head gates per stack (`head_gates.<stack>`, e.g. from engine/ablation.ts ablationGates): the model with heads removed. The cache is not used. */
  headGates?: Readonly<Record<string, RuntimeTensor>>;
  /** Masked LMs: pool the masked copies of many pairs and run those of one length as batches (default true; false, and any run with head gates, runs one forward per copy). */
  batched?: boolean;
}

export interface CrowsScoreRun {
  method: CrowsMethod;
  /** Masked LMs: whether the sentences were lower-cased (the tokenizer is uncased). */
  lowercased: boolean;
  /** Per pair, in metric.py's (sent1, sent2) orientation, unrounded. */
  scores: PairScores[];
  /** Masked copies and sentences scored (forward passes when unbatched; cached pairs cost none). */
  forwardPasses: number;
  /** Pairs taken from the cache. */
  cached: number;
}

/** Only the prediction head's logits. */
const LOGITS_ONLY: TapRequest = { attention: false, qk: false, lastHiddenState: false, logits: true };
/** The same with the head gates as inputs (ablation). */
const LOGITS_GATED: TapRequest = { ...LOGITS_ONLY, headGates: true };

/** Gates, when any, as run options. */
type Gates = Readonly<Record<string, RuntimeTensor>> | undefined;

/** How `model` is scored: masked for encoders with a mask token, causal for decoders. */
export function crowsMethodFor(model: Model): CrowsMethod {
  const kind = model.info.kind;
  if (kind === 'decoder') return 'causal';
  if (kind === 'encoder') {
    const mask = model.tokenizer?.mask;
    if (!mask || mask.id === null) throw new AttnscopeError(`${model.name}: its tokenizer has no mask token, so it cannot be scored as a masked LM`);
    return 'masked';
  }
  throw new AttnscopeError(`${model.name} is an encoder-decoder model (${model.config.modelType}); CrowS-Pairs scores masked LMs (encoders) and causal LMs (decoders)`);
}

/** Whether the tokenizer ignores case (it gives "A" and "a" the same ids), as bert-base-uncased does. */
export async function tokenizerIsUncased(model: Model): Promise<boolean> {
  const [upper, lower] = await Promise.all([model.tokenize('A'), model.tokenize('a')]);
  return upper.length === lower.length && upper.every((t, i) => t.id === lower[i]!.id);
}

/** log softmax of `row` at `target`, in float64. */
export function logSoftmaxAt(row: Float32Array, target: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  return row[target]! - max - Math.log(sum);
}

/** The logits [positions, vocab] of one run of `ids` (segment ids all 0 unless given). */
export async function runLogits(model: Model, ids: readonly number[], typeIds?: readonly number[], gates?: Gates): Promise<{ vocab: number; data: Float32Array }> {
  const inputs = { inputIds: ids, typeIds: typeIds ?? ids.map(() => 0) };
  const out = gates ? await model.run(LOGITS_GATED, inputs, gates) : await model.run(LOGITS_ONLY, inputs);
  const logits = out.logits;
  if (!logits || logits.dims.length !== 3 || logits.dims[2]! < 2) {
    throw new AttnscopeError(`${model.name}: its head (${String(model.config.raw.architectures ?? 'unknown')}) does not predict tokens; CrowS-Pairs needs a language-model head`);
  }
  return { vocab: logits.dims[2]!, data: toFloat32(logits) };
}

/** The masked copies metric.py scores for a pair: for each sentence, the positions masked one at a time. */
export function maskedPositions(ids1: readonly number[], ids2: readonly number[]): { first: number[]; second: number[] } {
  const { first, second } = sharedPositions(ids1, ids2);
  // Skip the first and last shared positions ([CLS] and [SEP]; they are never masked).
  return { first: first.slice(1, -1), second: second.slice(1, -1) };
}

/** metric.py's score of one sentence: Σ log P(ids[p] | ids with p masked) over `positions`. */
export async function pseudoLogLikelihood(model: Model, ids: readonly number[], typeIds: readonly number[], positions: readonly number[], maskId: number, gates?: Gates): Promise<number> {
  let total = 0;
  for (const p of positions) {
    const masked = [...ids];
    masked[p] = maskId;
    const { vocab, data } = await runLogits(model, masked, typeIds, gates);
    total += logSoftmaxAt(data.subarray(p * vocab, (p + 1) * vocab), ids[p]!);
  }
  return total;
}

/** pseudoLogLikelihood with the masked copies run as batches (engine/batch.ts), log P in float64 here. */
export async function pseudoLogLikelihoodBatched(model: Model, ids: readonly number[], typeIds: readonly number[], positions: readonly number[], maskId: number): Promise<number> {
  if (positions.length === 0) return 0;
  const rows = positions.map((p) => ({ inputIds: ids.map((id, i) => (i === p ? maskId : id)), typeIds }));
  const out = await logitsBatch(model, rows, { positions: positions.map((p) => [p]) });
  if (out.kind !== 'logits' || out.vocab < 2) throw new AttnscopeError(`${model.name}: its head (${String(model.config.raw.architectures ?? 'unknown')}) does not predict tokens; CrowS-Pairs needs a language-model head`);
  let total = 0;
  positions.forEach((p, k) => {
    total += logSoftmaxAt(out.rows[k]!.data, ids[p]!);
  });
  return total;
}

/** The id a causal LM's sentences start after: bos_token_id, else eos_token_id of config.json. */
function startId(model: Model): number {
  const raw = model.config.raw;
  const id = typeof raw.bos_token_id === 'number' ? raw.bos_token_id : typeof raw.eos_token_id === 'number' ? raw.eos_token_id : undefined;
  if (id === undefined) throw new AttnscopeError(`${model.name}: config.json has neither bos_token_id nor eos_token_id, so there is no start token to score the first word after`);
  return id;
}

/** The logits row after the start token alone, per model and start id (one forward pass, reused). */
const startRows = new WeakMap<Model, Map<number, Promise<Float32Array>>>();

function startRow(model: Model, start: number, gates?: Gates): Promise<Float32Array> {
  if (gates) return runLogits(model, [start], undefined, gates).then((r) => r.data.slice(0, r.vocab));
  let rows = startRows.get(model);
  if (!rows) {
    rows = new Map();
    startRows.set(model, rows);
  }
  let row = rows.get(start);
  if (!row) {
    row = runLogits(model, [start]).then((r) => r.data.slice(0, r.vocab));
    rows.set(start, row);
  }
  return row;
}

/**
 * bias-bench's (and StereoSet's generative runner's) sentence score for causal LMs: 2^(mean log₂ P)
 * of the text's tokens (no specials), the first one's P after `start` run alone, the others' from one
 * run of the tokens.
 */
export async function causalScore(model: Model, text: string, start: number, row?: number, gates?: Gates): Promise<number> {
  const ids = (await model.tokenize(text)).filter((t) => !t.special).map((t) => t.id);
  if (ids.length === 0) throw new AttnscopeError(`${row === undefined ? '' : `CrowS-Pairs row ${row}: `}${JSON.stringify(text.slice(0, 40))} gives no tokens`);
  const first = await startRow(model, start, gates);
  const { vocab, data } = await runLogits(model, ids, undefined, gates);
  let sum = logSoftmaxAt(first, ids[0]!);
  for (let i = 1; i < ids.length; i++) sum += logSoftmaxAt(data.subarray((i - 1) * vocab, i * vocab), ids[i]!);
  return Math.exp(sum / ids.length);
}

const cacheKey = (method: CrowsMethod, lowercased: boolean, s1: string, s2: string): string => `${method}${lowercased ? ':lower' : ''}\u0000${s1}\u0000${s2}`;

/** Pairs whose masked copies are pooled, grouped by length and run together (the batched path). */
const POOL_PAIRS = 256;
/** Rows handed to one targetLogProbabilities call (it splits them further by its memory bound). */
const ROWS_PER_CALL = 256;

interface PooledSentence {
  /** Index into the pool's pairs, and which sentence of the pair. */
  pair: number;
  side: 'sent1' | 'sent2';
  ids: number[];
  typeIds: number[];
  positions: number[];
}

/**
 * The batched masked path: every masked copy of up to POOL_PAIRS pairs, grouped by length (copies
 * of one length run as one batch whatever pair they come from; no padding, so each copy is
 * computed exactly as its own run), only the masked position's logits gathered, log P in float64.
 * Returns each sentence's Σ log P; `onPair` is called when a pair's copies are all done.
 */
async function scorePooled(model: Model, sentences: readonly PooledSentence[], maskId: number, onPair: (pair: number) => void): Promise<Map<PooledSentence, number>> {
  const totals = new Map<PooledSentence, number>();
  const left = new Map<number, number>();
  const byLength = new Map<number, { sentence: PooledSentence; position: number }[]>();
  for (const s of sentences) {
    totals.set(s, 0);
    left.set(s.pair, (left.get(s.pair) ?? 0) + s.positions.length);
    const group = byLength.get(s.ids.length) ?? [];
    for (const position of s.positions) group.push({ sentence: s, position });
    byLength.set(s.ids.length, group);
  }
  for (const [pair, n] of left) if (n === 0) onPair(pair);
  for (const length of [...byLength.keys()].sort((a, b) => a - b)) {
    const copies = byLength.get(length)!;
    for (let start = 0; start < copies.length; start += ROWS_PER_CALL) {
      const chunk = copies.slice(start, start + ROWS_PER_CALL);
      const rows = chunk.map(({ sentence, position }) => ({ inputIds: sentence.ids.map((id, i) => (i === position ? maskId : id)), typeIds: sentence.typeIds }));
      let out: Float64Array[];
      try {
        out = (await targetLogProbabilities(model, rows, { positions: chunk.map((c) => [c.position]), targets: chunk.map((c) => [c.sentence.ids[c.position]!]) })).rows;
      } catch (e) {
        if (e instanceof AttnscopeError && /one logit/.test(e.message)) throw new AttnscopeError(`${model.name}: its head (${String(model.config.raw.architectures ?? 'unknown')}) does not predict tokens; CrowS-Pairs needs a language-model head`);
        throw e;
      }
      chunk.forEach(({ sentence }, k) => {
        totals.set(sentence, totals.get(sentence)! + out[k]![0]!);
        const n = left.get(sentence.pair)! - 1;
        left.set(sentence.pair, n);
        if (n === 0) onPair(sentence.pair);
      });
    }
  }
  return totals;
}

/** Scores every pair (metric.py's orientation) with `model`. */
export async function scoreCrowsPairs(model: Model, pairs: readonly CrowsPair[], options: CrowsScoreOptions = {}): Promise<CrowsScoreRun> {
  const method = crowsMethodFor(model);
  const lowercased = method === 'masked' ? await tokenizerIsUncased(model) : false;
  const gates = options.headGates;
  const cache = gates ? undefined : options.cache;
  const scores: PairScores[] = new Array<PairScores>(pairs.length);
  let forwardPasses = 0;
  let cached = 0;
  let done = 0;
  const finished = () => options.onProgress?.(++done, pairs.length);
  const sentences = (pair: CrowsPair): [string, string] => {
    const [s1, s2] = orientedSentences(pair);
    return lowercased ? [s1.toLowerCase(), s2.toLowerCase()] : [s1, s2];
  };
  const pooled = method === 'masked' && options.batched !== false && !gates;
  if (pooled) {
    const maskId = model.tokenizer!.mask!.id!;
    for (let from = 0; from < pairs.length; from += POOL_PAIRS) {
      const todo: PooledSentence[] = [];
      const keys = new Map<number, string>();
      for (let i = from; i < Math.min(pairs.length, from + POOL_PAIRS); i++) {
        const [s1, s2] = sentences(pairs[i]!);
        const key = cacheKey(method, lowercased, s1, s2);
        const hit = cache?.get(key);
        if (hit) {
          scores[i] = hit;
          cached++;
          finished();
          continue;
        }
        keys.set(i, key);
        const [t1, t2] = await Promise.all([model.tokenize(s1), model.tokenize(s2)]);
        const ids1 = t1.map((t) => t.id);
        const ids2 = t2.map((t) => t.id);
        const { first, second } = maskedPositions(ids1, ids2);
        todo.push({ pair: i, side: 'sent1', ids: ids1, typeIds: t1.map((t) => t.segment), positions: first }, { pair: i, side: 'sent2', ids: ids2, typeIds: t2.map((t) => t.segment), positions: second });
        forwardPasses += first.length + second.length;
      }
      const totals = await scorePooled(model, todo, maskId, finished);
      for (const s of todo) (scores[s.pair] ??= { sent1: 0, sent2: 0 })[s.side] = totals.get(s)!;
      for (const [i, key] of keys) cache?.set(key, scores[i]!);
    }
    return { method, lowercased, scores, forwardPasses, cached };
  }
  for (const [i, pair] of pairs.entries()) {
    const [s1, s2] = sentences(pair);
    const key = cacheKey(method, lowercased, s1, s2);
    let result = cache?.get(key);
    if (result) cached++;
    else if (method === 'masked') {
      const [t1, t2] = await Promise.all([model.tokenize(s1), model.tokenize(s2)]);
      const ids1 = t1.map((t) => t.id);
      const ids2 = t2.map((t) => t.id);
      const { first, second } = maskedPositions(ids1, ids2);
      const maskId = model.tokenizer!.mask!.id!;
      result = {
        sent1: await pseudoLogLikelihood(model, ids1, t1.map((t) => t.segment), first, maskId, gates),
        sent2: await pseudoLogLikelihood(model, ids2, t2.map((t) => t.segment), second, maskId, gates),
      };
      forwardPasses += first.length + second.length;
      cache?.set(key, result);
    } else {
      const start = startId(model);
      const fresh = gates !== undefined || !startRows.get(model)?.has(start);
      const score = (text: string) => causalScore(model, text, start, pair.index, gates);
      result = { sent1: await score(s1), sent2: await score(s2) };
      forwardPasses += 2 + (gates ? 2 : fresh ? 1 : 0);
      cache?.set(key, result);
    }
    scores[i] = result;
    finished();
  }
  return { method, lowercased, scores, forwardPasses, cached };
}
