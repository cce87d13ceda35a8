/**
 * Which heads carry a bias result (issue 12, point 3), with a loaded model:
 *
 * - Probes (`biasHeads`): the probe of a text (src/bias/probe.ts: group tokens, counterfactual,
 *   every head's bias attention ratio and permutation test), and a contrast target T = log P(a) −
 *   log P(b) (default "he" vs "she") at the first mask token (masked LMs) or after the last token
 *   (causal LMs). Then: head importance |∂T/∂gate| (Michel et al. 2019) and integrated gradients
 *   of T (engine/gradients.ts attribute()); T with the top-k bias-focused heads removed (zero or
 *   mean ablation through the head gates, as engine/ablation.ts) against `controls` random sets
 *   of k other heads; the per-layer propagation of the ratio (the heads' ratios and the ratio of
 *   the attention rollout up to each layer); and per head the rank agreement of its attention
 *   from the target position with the tokens' |IG| (analysis/bias/heads.ts).
 * - CrowS-Pairs (`crowsHeads`): per head the mean ratio, over the pairs, on the tokens in which
 *   sent_more differs from sent_less (the non-shared tokens metric.py never scores), then the
 *   metric re-scored with the top-k heads zeroed and with the random control sets.
 */
import { AttnscopeError } from '../core/errors.js';
import type { StackName, Trace } from '../core/trace.js';
import type { Model } from '../engine/model.js';
import { attribute } from '../engine/gradients.js';
import { ablationGates, headContextMeans, meanAblation } from '../engine/ablation.js';
import { toFloat32 } from '../engine/assemble.js';
import type { ModelInputs, TapRequest } from '../models/architecture.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { logSoftmax, type AblationMode, type HeadRef } from '../analysis/ablation.js';
import { attentionRollout } from '../analysis/rollout.js';
import { headBiasScores, type HeadBiasScore } from '../analysis/bias/attention-bias.js';
import { crowsPairRows, crowsPairsMetric, type CrowsPair, type CrowsPairRow, type CrowsPairsMetric } from '../analysis/bias/crows-pairs.js';
import { sharedPositions } from '../analysis/bias/sequence-matcher.js';
import type { GroupLexicon } from '../analysis/bias/groups.js';
import {
  attentionAttributionAgreement, layerPropagation, meanHeadRatios, randomHeadSets, topBiasHeads, topHeadsBy,
  type BiasHead, type Faithfulness, type LayerPropagation,
} from '../analysis/bias/heads.js';
import { biasProbe, type BiasProbe, type ProbeOptions } from './probe.js';
import { crowsMethodFor, scoreCrowsPairs, tokenizerIsUncased, type PairScoreCache } from './crows-pairs.js';

export interface ContrastTarget {
  /** Position whose prediction T reads (the first mask token, or the last token of a causal LM). */
  position: number;
  word: string;
  versus: string;
  tokenId: number;
  versusId: number;
}

export interface AblationEffect {
  heads: BiasHead[];
  /** T with these heads removed. */
  value: number;
}

export interface BiasHeadsOptions extends ProbeOptions {
  /** The two words of T (default ['he', 'she']). */
  contrast?: readonly [string, string];
  /** Heads ablated (default 5). */
  k?: number;
  /** Random control sets (default 3). */
  controls?: number;
  mode?: AblationMode;
  /** Integrated gradients' steps (default 32). */
  steps?: number;
}

export interface BiasHeadsResult {
  probe: BiasProbe;
  target: ContrastTarget & { value: number };
  mode: AblationMode;
  /** The top-k bias-focused heads and T without them. */
  ablation: AblationEffect;
  controls: AblationEffect[];
  /** Mean of the controls' T. */
  controlMean: number;
  /** |∂T/∂gate| normalised per layer, [layer][head]. */
  importance: number[][];
  /** ∂T/∂gate, signed, [layer][head]. */
  importanceRaw: number[][];
  /** The k most important heads and how many of them are among the ablated ones. */
  importanceTop: BiasHead[];
  overlap: number;
  propagation: LayerPropagation[];
  faithfulness: Faithfulness;
  /** Integrated gradients per token and their completeness error relative to T(input) − T(baseline). */
  integratedGradients: { scores: number[]; relativeError: number; steps: number };
}

const STACK: StackName = 'self';

/** The id of `word` as one token (causal LMs: with its leading space first), else a clear error. */
export async function singleTokenId(model: Model, word: string, causal: boolean): Promise<number> {
  const tries = causal ? [` ${word}`, word] : [word];
  for (const t of tries) {
    const ids = (await model.tokenize(t)).filter((x) => !x.special).map((x) => x.id);
    if (ids.length === 1) return ids[0]!;
  }
  const n = (await model.tokenize(tries[0]!)).filter((x) => !x.special).length;
  throw new AttnscopeError(`--contrast: '${word}' is ${n} tokens for ${model.name}; the contrast needs words that are one token each`);
}

/** T's position and token ids for `trace` (see the file comment). */
export async function contrastTarget(model: Model, trace: Trace, words: readonly [string, string]): Promise<ContrastTarget> {
  const causal = model.info.kind === 'decoder';
  let position: number;
  if (causal) position = trace.tokens.length - 1;
  else {
    const mask = model.tokenizer?.mask?.id;
    position = mask === undefined || mask === null ? -1 : trace.tokens.findIndex((t) => t.id === mask);
    if (position < 0) throw new AttnscopeError(`bias heads: ${model.name} is a masked LM; put its mask token (${model.tokenizer?.mask?.text ?? '[MASK]'}) where the contrast is read, e.g. "The nurse said that ${model.tokenizer?.mask?.text ?? '[MASK]'} was late"`);
  }
  const [word, versus] = words;
  return { position, word, versus, tokenId: await singleTokenId(model, word, causal), versusId: await singleTokenId(model, versus, causal) };
}

const GATED: TapRequest = { attention: false, qk: false, lastHiddenState: false, logits: true, headGates: true };

/** T = log P(tokenId) − log P(versusId) at the target position, from a logits output. */
function contrastOf(out: Record<string, RuntimeTensor>, target: ContrastTarget): number {
  const logits = out.logits;
  if (!logits || logits.dims.length !== 3) throw new AttnscopeError('bias heads: the model gave no token logits (it needs a language-model head)');
  const vocab = logits.dims[2]!;
  const row = logSoftmax(toFloat32(logits).subarray(target.position * vocab, (target.position + 1) * vocab));
  return row[target.tokenId]! - row[target.versusId]!;
}

/** T with each head set removed (zero or mean ablation), and T as trained. */
export async function contrastAblations(model: Model, inputs: ModelInputs, target: ContrastTarget, sets: readonly BiasHead[][], mode: AblationMode): Promise<{ value: number; ablated: number[] }> {
  const refs = (hs: readonly BiasHead[]): HeadRef[] => hs.map((h) => ({ stack: STACK, layer: h.layer, head: h.head }));
  if (mode === 'zero') {
    const value = contrastOf(await model.run(GATED, inputs), target);
    const ablated: number[] = [];
    for (const s of sets) ablated.push(contrastOf(await model.run(GATED, inputs, ablationGates(model, refs(s))), target));
    return { value, ablated };
  }
  if (mode !== 'mean') throw new AttnscopeError(`ablation mode '${String(mode)}' is unknown; allowed: zero, mean`);
  const extension = meanAblation(model);
  const original = await model.runExtended(GATED, extension, inputs, headContextMeans(model, {}, []));
  const ablated: number[] = [];
  for (const s of sets) {
    const r = refs(s);
    ablated.push(contrastOf(await model.runExtended(GATED, extension, inputs, { ...ablationGates(model, r), ...headContextMeans(model, original, r) }), target));
  }
  return { value: contrastOf(original, target), ablated };
}

const table = (data: Float32Array, layers: number, heads: number): number[][] => Array.from({ length: layers }, (_, l) => Array.from(data.subarray(l * heads, (l + 1) * heads)));

/** The heads behind a probe's contrast (see the file comment). */
export async function biasHeads(model: Model, text: string, lexicons: readonly GroupLexicon[], options: BiasHeadsOptions = {}): Promise<BiasHeadsResult> {
  const k = options.k ?? 5;
  const nControls = options.controls ?? 3;
  const mode = options.mode ?? 'zero';
  if (!Number.isInteger(nControls) || nControls < 0 || nControls > 100) throw new AttnscopeError(`bias heads: controls ${nControls} is out of range; allowed: an integer from 0 to 100`);
  const probe = await biasProbe(model, text, lexicons, options);
  const trace = probe.original;
  const stack = trace.attention[STACK];
  if (!stack) throw new AttnscopeError(`bias heads: ${model.name}'s trace has no self-attention`);
  const [heads] = stack.dims;
  const layers = stack.layers.length;
  if (k > layers * heads) throw new AttnscopeError(`bias heads: k = ${k} but ${model.name} has ${layers * heads} heads`);
  const target = await contrastTarget(model, trace, options.contrast ?? ['he', 'she']);
  const inputs: ModelInputs = { inputIds: trace.tokens.map((t) => t.id), typeIds: trace.tokens.map((t) => t.segment) };
  const causal = model.info.kind === 'decoder';

  const top = topBiasHeads(probe.heads, k);
  const controlSets = randomHeadSets(layers, heads, k, nControls, top, options.seed ?? 1);
  const { value, ablated } = await contrastAblations(model, inputs, target, [top, ...controlSets], mode);

  const attr = await attribute(model, inputs, {
    target: { kind: 'contrast', position: target.position, tokenId: target.tokenId, versusId: target.versusId },
    methods: ['integratedGradients', 'headImportance'],
    steps: options.steps ?? 32,
  });
  const hi = attr.headImportance?.[STACK];
  const ig = attr.integratedGradients;
  if (!hi || !ig) throw new Error('attribute() returned no head importance or integrated gradients');
  const importance = table(hi.normalized.data, layers, heads);
  const importanceTop = topHeadsBy(importance, k);
  const topKeys = new Set(top.map((h) => `${h.layer}:${h.head}`));

  const n = trace.tokens.length;
  const rollout = attentionRollout(trace, { stack: STACK });
  const candidates = trace.tokens.flatMap((t, i) => (t.special ? [] : [i]));
  const controls = controlSets.map((hs, i) => ({ heads: hs, value: ablated[i + 1]! }));
  return {
    probe,
    target: { ...target, value },
    mode,
    ablation: { heads: top, value: ablated[0]! },
    controls,
    controlMean: controls.length ? controls.reduce((s, c) => s + c.value, 0) / controls.length : Number.NaN,
    importance,
    importanceRaw: table(hi.raw.data, layers, heads),
    importanceTop,
    overlap: importanceTop.filter((h) => topKeys.has(`${h.layer}:${h.head}`)).length,
    propagation: layerPropagation(probe.heads, probe.groupTokens, causal, rollout.layers, n),
    faithfulness: attentionAttributionAgreement(stack, ig.scores, target.position, probe.groupTokens, candidates, causal),
    integratedGradients: { scores: Array.from(ig.scores), relativeError: ig.completeness.relativeError, steps: ig.steps },
  };
}

export interface CrowsHeadsOptions {
  k?: number;
  controls?: number;
  seed?: number;
  cache?: PairScoreCache;
  /** Called as work is done: the phase and its progress. */
  onProgress?: (phase: string, done: number, total: number) => void;
}

export interface CrowsAblationRun {
  heads: BiasHead[];
  metric: CrowsPairsMetric;
  rows: CrowsPairRow[];
}

export interface CrowsHeadsResult {
  /** Mean bias attention ratio per head over the pairs' sent_more, on its non-shared tokens, [layer][head]. */
  ratios: number[][];
  /** Pairs whose sent_more had tokens of its own (the others add no ratio). */
  ratioPairs: number;
  before: CrowsAblationRun;
  ablated: CrowsAblationRun;
  controls: CrowsAblationRun[];
}

/** Per head, the mean ratio on the tokens in which each pair's sent_more differs from its sent_less. */
export async function crowsHeadRatios(model: Model, pairs: readonly CrowsPair[], onProgress?: (done: number, total: number) => void): Promise<{ ratios: number[][]; pairs: number }> {
  crowsMethodFor(model);
  const lower = model.info.kind === 'encoder' && (await tokenizerIsUncased(model));
  const causal = model.info.kind === 'decoder';
  const perPair: HeadBiasScore[][] = [];
  let layers = 0;
  let heads = 0;
  for (const [i, p] of pairs.entries()) {
    const more = lower ? p.sentMore.toLowerCase() : p.sentMore;
    const less = lower ? p.sentLess.toLowerCase() : p.sentLess;
    const trace = await model.trace(more);
    const lessIds = (await model.tokenize(less)).map((t) => t.id);
    const shared = new Set(sharedPositions(trace.tokens.map((t) => t.id), lessIds).first);
    const group = trace.tokens.flatMap((t, j) => (!t.special && !shared.has(j) ? [j] : []));
    const stack = trace.attention[STACK]!;
    layers = stack.layers.length;
    heads = stack.dims[0];
    if (group.length > 0) perPair.push(headBiasScores(stack, group, { causal, permutations: 0 }));
    onProgress?.(i + 1, pairs.length);
  }
  return { ratios: meanHeadRatios(perPair, layers, heads), pairs: perPair.length };
}

/** The heads behind a CrowS-Pairs metric (see the file comment). */
export async function crowsHeads(model: Model, pairs: readonly CrowsPair[], options: CrowsHeadsOptions = {}): Promise<CrowsHeadsResult> {
  const k = options.k ?? 5;
  const nControls = options.controls ?? 3;
  const { ratios, pairs: ratioPairs } = await crowsHeadRatios(model, pairs, (d, t) => options.onProgress?.('head ratios', d, t));
  if (ratioPairs === 0) throw new AttnscopeError('bias heads: no pair has tokens of its own in sent_more, so no head ratio can be measured');
  const layers = ratios.length;
  const heads = ratios[0]!.length;
  if (k > layers * heads) throw new AttnscopeError(`bias heads: k = ${k} but ${model.name} has ${layers * heads} heads`);
  const top = topHeadsBy(ratios, k);
  const sets = [top, ...randomHeadSets(layers, heads, k, nControls, top, options.seed ?? 1)];
  const method = crowsMethodFor(model);
  const score = async (hs: BiasHead[] | null, phase: string): Promise<CrowsAblationRun> => {
    const run = await scoreCrowsPairs(model, pairs, {
      cache: hs ? undefined : options.cache,
      headGates: hs ? ablationGates(model, hs.map((h) => ({ stack: STACK, layer: h.layer, head: h.head }))) : undefined,
      onProgress: (d, t) => options.onProgress?.(phase, d, t),
    });
    const rows = crowsPairRows(pairs, run.scores, method === 'masked');
    return { heads: hs ?? [], metric: crowsPairsMetric(rows), rows };
  };
  const before = await score(null, 'scores');
  const runs: CrowsAblationRun[] = [];
  for (const [i, s] of sets.entries()) runs.push(await score(s, i === 0 ? 'ablated' : `control ${i}`));
  return { ratios, ratioPairs, before, ablated: runs[0]!, controls: runs.slice(1) };
}
