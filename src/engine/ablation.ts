/**
 * Head ablation (issue 10, point 2): the model run twice on the same input, as trained and with a
 * set of heads removed through the head gates (TapRequest.headGates: each head's context times its
 * gate before the output projection, as transformers' head_mask):
 * - zero ablation: the heads' gates are 0, so their context is 0 (the output projection's bias
 *   stays, as with head_mask);
 * - mean ablation: each removed head's context is replaced, at every position, by its mean over
 *   the positions of this input (needs the graph's head offsets; see `meanAblationSupported`).
 * Measured at the target position (default: the top prediction at the last position for causal
 * LMs and decoders, the input token at the first [MASK] for masked LMs): the target score before
 * and after (log-probability of the token; raw logit for heads that score tokens, e.g. ELECTRA's
 * discriminator), KL(p_orig ‖ p_ablated) of the full next-token/[MASK] distribution (float64 from
 * the float32 logits), the cosine of the last hidden states at the target position and its mean
 * over positions, and the top candidates' probabilities before and after.
 */
import { type HeadRef, type AblationMode, cosineSimilarity, klFromLogits, logSoftmax } from '../analysis/ablation.js';
import { AttnscopeError } from '../core/errors.js';
import type { StackName } from '../core/trace.js';
import type { ModelInputs, TapRequest } from '../models/architecture.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { toFloat32 } from './assemble.js';
import type { Model } from './model.js';

export interface AblationOptions {
  heads: readonly HeadRef[];
  /** Default 'zero'. */
  mode?: AblationMode;
  /** Position of the prediction (decoder position for encoder-decoders); default as in the file comment. */
  position?: number;
  /** Token whose log-probability is the target; default the top prediction (causal, seq2seq) or the input token (masked LMs). */
  tokenId?: number;
  /** Candidates listed before/after (the union of both top-k; default 10). */
  topK?: number;
}

export interface AblationCandidateResult {
  id: number;
  token: string;
  before: number;
  after: number;
}

export interface AblationResult {
  heads: HeadRef[];
  mode: AblationMode;
  target: {
    /** 'logprob' of tokenId at position, or 'logit' (heads that score tokens). */
    kind: 'logprob' | 'logit';
    stack: StackName;
    position: number;
    tokenId: number | null;
    before: number;
    after: number;
  };
  /** KL(p_orig ‖ p_ablated) in nats at the target position; null for heads without a distribution. */
  kl: number | null;
  /** Cosine of the last hidden state (the decoder's for encoder-decoders) at the target position. */
  cosine: number;
  /** Mean over positions of the per-position cosine. */
  cosineMean: number;
  /** Top candidates before and after with both probabilities (empty for heads without a distribution). */
  candidates: AblationCandidateResult[];
}

/** Whether the model's graphs take head offsets (mean ablation). */
export function meanAblationSupported(): boolean {
  return false;
}

/** Gates of ones with 0 at the removed heads, per stack named in `heads`. */
export function ablationGates(model: Model, heads: readonly HeadRef[]): Record<string, RuntimeTensor> {
  const info = model.architectureInfo;
  const out: Record<string, RuntimeTensor> = {};
  for (const h of heads) {
    const layers = info.stacks[h.stack];
    if (layers === undefined) throw new AttnscopeError(`ablation: ${model.name} has no '${h.stack}' stack (it has ${Object.keys(info.stacks).join(', ')})`);
    if (!(Number.isInteger(h.layer) && h.layer >= 0 && h.layer < layers)) throw new AttnscopeError(`ablation: layer ${h.layer} is out of range (the ${h.stack} stack has ${layers} layers: 0–${layers - 1})`);
    if (!(Number.isInteger(h.head) && h.head >= 0 && h.head < info.numHeads)) throw new AttnscopeError(`ablation: head ${h.head} is out of range (${info.numHeads} heads: 0–${info.numHeads - 1})`);
    const name = `head_gates.${h.stack}`;
    const t = (out[name] ??= { type: 'float32', dims: [layers, info.numHeads], data: new Float32Array(layers * info.numHeads).fill(1) });
    (t.data as Float32Array)[h.layer * info.numHeads + h.head] = 0;
  }
  return out;
}

/** Index of the largest value (the first of equals, as torch.argmax). */
function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[best]!) best = i;
  return best;
}

/** The k ids of largest value, largest first. */
function topIds(row: ArrayLike<number>, k: number): number[] {
  const ids = Array.from({ length: row.length }, (_, i) => i);
  return ids.sort((a, b) => row[b]! - row[a]! || a - b).slice(0, k);
}

/** Removes heads and measures the effect (see the file comment). */
export async function ablateHeads(model: Model, inputs: ModelInputs, options: AblationOptions): Promise<AblationResult> {
  const mode = options.mode ?? 'zero';
  if (mode === 'mean' && !meanAblationSupported()) {
    throw new AttnscopeError('--mode mean: mean ablation needs head offsets in the model graphs, which this version does not build yet; use --mode zero');
  }
  if (options.heads.length === 0) throw new AttnscopeError('ablation: no heads given');
  const gates = ablationGates(model, options.heads);
  const taps: TapRequest = { attention: false, qk: false, lastHiddenState: true, logits: true, headGates: true };
  const original = await model.run(taps, inputs);
  const ablated = await model.run(taps, inputs, gates);
  const kind = model.info.kind;
  const stack: StackName = kind === 'encoder-decoder' ? 'decoder' : 'self';
  const logits = original.logits;
  const logitsAfter = ablated.logits;
  if (!logits || !logitsAfter) throw new AttnscopeError(`ablation: ${model.name} has no prediction head (no logits), so there is no target to measure`);
  const positions = kind === 'encoder-decoder' ? inputs.decoderInputIds?.length ?? 0 : inputs.inputIds.length;
  const scoresTokens = logits.dims.length === 2;
  const vocab = scoresTokens ? 1 : logits.dims[2]!;
  let position = options.position;
  if (position === undefined) {
    if (kind === 'encoder') {
      const mask = model.tokenizer?.mask?.id;
      const at = mask === undefined || mask === null ? -1 : inputs.inputIds.indexOf(mask);
      if (at < 0) throw new AttnscopeError(`ablation: ${model.name} is a masked LM and the input has no mask token; give --target-position P`);
      position = at;
    } else position = positions - 1;
  }
  if (!(Number.isInteger(position) && position >= 0 && position < positions)) {
    throw new AttnscopeError(`--target-position: ${position} is out of range (0–${positions - 1}${kind === 'encoder-decoder' ? ', decoder positions' : ''})`);
  }
  const before = toFloat32(logits).subarray(position * vocab, (position + 1) * vocab);
  const after = toFloat32(logitsAfter).subarray(position * vocab, (position + 1) * vocab);
  let tokenId: number | null = null;
  let result: Pick<AblationResult, 'kl' | 'candidates'> & { targetBefore: number; targetAfter: number };
  if (scoresTokens) {
    if (options.tokenId !== undefined) throw new AttnscopeError(`--target-token: ${model.name}'s head scores tokens rather than predicting them; there is no token to choose`);
    result = { kl: null, candidates: [], targetBefore: before[0]!, targetAfter: after[0]! };
  } else {
    tokenId = options.tokenId ?? (kind === 'encoder' ? (model.tokenizer?.mask?.id === inputs.inputIds[position] ? argmax(before) : inputs.inputIds[position]!) : argmax(before));
    if (!(Number.isInteger(tokenId) && tokenId >= 0 && tokenId < vocab)) throw new AttnscopeError(`--target-token: ${tokenId} is not in the vocabulary (0–${vocab - 1})`);
    const lb = logSoftmax(before);
    const la = logSoftmax(after);
    const k = options.topK ?? 10;
    const ids = [...new Set([...topIds(lb, k), ...topIds(la, k)])];
    const candidates = ids.map((id) => ({ id, token: model.tokenizer?.idToToken(id) ?? String(id), before: Math.exp(lb[id]!), after: Math.exp(la[id]!) }));
    candidates.sort((a, b) => Math.max(b.before, b.after) - Math.max(a.before, a.after) || a.id - b.id);
    result = { kl: klFromLogits(before, after), candidates, targetBefore: lb[tokenId]!, targetAfter: la[tokenId]! };
  }
  const hb = original.last_hidden_state;
  const ha = ablated.last_hidden_state;
  if (!hb || !ha) throw new AttnscopeError(`ablation: ${model.name}'s graph gave no last hidden state`);
  const width = hb.dims[2]!;
  const hBefore = toFloat32(hb);
  const hAfter = toFloat32(ha);
  const rowOf = (data: Float32Array, i: number) => data.subarray(i * width, (i + 1) * width);
  let sum = 0;
  const n = hb.dims[1]!;
  for (let i = 0; i < n; i++) sum += cosineSimilarity(rowOf(hBefore, i), rowOf(hAfter, i));
  return {
    heads: [...options.heads],
    mode,
    target: { kind: scoresTokens ? 'logit' : 'logprob', stack, position, tokenId, before: result.targetBefore, after: result.targetAfter },
    kl: result.kl,
    cosine: cosineSimilarity(rowOf(hBefore, position), rowOf(hAfter, position)),
    cosineMean: sum / n,
    candidates: result.candidates,
  };
}
