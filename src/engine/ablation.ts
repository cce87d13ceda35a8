/**
 * Head ablation (issue 10, point 2): the model run twice on the same input, as trained and with a
 * set of heads removed through the head gates (TapRequest.headGates: each head's context times its
 * gate before the output projection, as transformers' head_mask):
 * - zero ablation: the heads' gates are 0, so their context is 0 (the output projection's bias
 *   stays, as with head_mask);
 * - mean ablation: each removed head's context is replaced, at every position, by its mean over
 *   the positions of this input: gate 0 plus an offset. MEAN_ABLATION grows the architecture's
 *   graph (a GraphExtension, so every family that has head gates has it): after each gate
 *   (context · g, found as the Mul by the gate row Gather(head_gates.<stack>, layer)) it adds
 *   `head_offsets.<stack>`[layer] ([layers, heads, headDim], as [1, heads, 1, headDim]) and taps
 *   the context before the gate as `head_context.<stack>.<layer>` [1, heads, positions, headDim].
 *   Pass 1 (gates 1, offsets 0: the model as trained, x·1 + 0 = x) gives the contexts, whose mean
 *   over positions becomes the removed heads' offsets for pass 2 (their gates 0).
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
import type { Value } from '../graph/builder.js';
import type { ArchitectureInfo, BuildContext, ModelInputs, TapRequest } from '../models/architecture.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { toFloat32 } from './assemble.js';
import type { GraphExtension, Model } from './model.js';

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
  /**
   * More taps for both runs (e.g. a trace's `Model.prepareRun(…).taps`: attention, queries/keys …);
   * the ablated run's graph outputs are then returned as `ablatedOutputs`, to assemble the trace of
   * the ablated model (`Model.traceOf`).
   */
  taps?: TapRequest;
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
  /** With `taps`: every graph output of the ablated run. */
  ablatedOutputs?: Record<string, RuntimeTensor>;
}

/** The graph input of a stack's head offsets (mean ablation): [layers, heads, headDim]. */
export const headOffsetsInput = (stack: StackName): string => `head_offsets.${stack}`;
/** The tap of a layer's per-head context before its gate: [1, heads, positions, headDim]. */
export const headContextTap = (stack: StackName, layer: number): string => `head_context.${stack}.${layer}`;

/** Adds the head offsets after every head gate and taps the contexts (see the file comment). */
function addHeadOffsets(ctx: BuildContext, info: ArchitectureInfo): void {
  const { g } = ctx;
  const producer = new Map<string, (typeof g.graphNodes)[number]>();
  for (const n of g.graphNodes) for (const o of n.outputs) producer.set(o, n);
  const gates: { stack: StackName; layer: number; mul: Value; context: Value }[] = [];
  for (const n of g.graphNodes) {
    if (n.opType !== 'Mul' || n.inputs.length !== 2) continue;
    const reshape = producer.get(n.inputs[1]!);
    const gather = reshape?.opType === 'Reshape' ? producer.get(reshape.inputs[0]!) : undefined;
    const source = gather?.opType === 'Gather' ? gather.inputs[0]! : '';
    if (!source.startsWith('head_gates.')) continue;
    const layer = g.describeValue(gather!.inputs[1]!)?.ints?.[0];
    if (layer === undefined) throw new AttnscopeError(`mean ablation: the gate of ${source} in node '${n.name}' reads no constant layer index`);
    gates.push({ stack: source.slice('head_gates.'.length) as StackName, layer, mul: { name: n.outputs[0]! }, context: { name: n.inputs[0]! } });
  }
  for (const [stack, layers] of Object.entries(info.stacks) as [StackName, number][]) {
    const found = new Set(gates.filter((x) => x.stack === stack).map((x) => x.layer));
    if (found.size !== layers) throw new AttnscopeError(`mean ablation: found the head gates of ${found.size} of the ${layers} '${stack}' layers in ${ctx.config.modelType}'s graph`);
  }
  const declared = new Set<string>();
  for (const x of gates) {
    const name = headOffsetsInput(x.stack);
    if (!declared.has(name)) {
      g.input(name, 'float32', [`${x.stack}_offset_layers`, info.numHeads, info.headDim]);
      declared.add(name);
    }
    g.output(x.context, headContextTap(x.stack, x.layer));
    g.intercept(x.mul, (v) => g.add(v, g.reshape(g.gather({ name }, g.ints([x.layer]), 0), [1, info.numHeads, 1, info.headDim])));
  }
}

/** The graph extension of mean ablation for a model (cached per taps by the model). */
export function meanAblation(model: Model): GraphExtension {
  return { key: 'head-offsets', extend: (ctx) => addHeadOffsets(ctx, model.architectureInfo) };
}

/**
 * Mean over positions of each listed head's context ([layers, heads, headDim] per stack, zeros for
 * heads not listed) from the pass-1 outputs `head_context.<stack>.<layer>`.
 */
export function headContextMeans(model: Model, outputs: Readonly<Record<string, RuntimeTensor>>, heads: readonly HeadRef[]): Record<string, RuntimeTensor> {
  const info = model.architectureInfo;
  const d = info.headDim;
  const out: Record<string, RuntimeTensor> = {};
  for (const [stack, layers] of Object.entries(info.stacks) as [StackName, number][]) {
    out[headOffsetsInput(stack)] = { type: 'float32', dims: [layers, info.numHeads, d], data: new Float32Array(layers * info.numHeads * d) };
  }
  for (const h of heads) {
    const t = outputs[headContextTap(h.stack, h.layer)];
    if (!t) throw new Error(`graph output ${headContextTap(h.stack, h.layer)} missing`);
    const data = toFloat32(t);
    const positions = t.dims[2]!;
    const sums = new Float64Array(d);
    for (let q = 0; q < positions; q++) {
      const off = (h.head * positions + q) * d;
      for (let k = 0; k < d; k++) sums[k]! += data[off + k]!;
    }
    const target = out[headOffsetsInput(h.stack)]!.data as Float32Array;
    for (let k = 0; k < d; k++) target[(h.layer * info.numHeads + h.head) * d + k] = sums[k]! / positions;
  }
  return out;
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
  if (mode !== 'zero' && mode !== 'mean') throw new AttnscopeError(`ablation mode '${String(mode)}' is unknown; allowed: zero, mean`);
  if (options.heads.length === 0) throw new AttnscopeError('ablation: no heads given');
  const gates = ablationGates(model, options.heads);
  const taps: TapRequest = { ...(options.taps ?? { attention: false, qk: false }), lastHiddenState: true, logits: true, headGates: true };
  let original: Record<string, RuntimeTensor>;
  let ablated: Record<string, RuntimeTensor>;
  if (mode === 'zero') {
    original = await model.run(taps, inputs);
    ablated = await model.run(taps, inputs, gates);
  } else {
    const zeros = headContextMeans(model, {}, []);
    const extension = meanAblation(model);
    original = await model.runExtended(taps, extension, inputs, zeros);
    ablated = await model.runExtended(taps, extension, inputs, { ...gates, ...headContextMeans(model, original, options.heads) });
  }
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
    ...(options.taps ? { ablatedOutputs: ablated } : {}),
  };
}
