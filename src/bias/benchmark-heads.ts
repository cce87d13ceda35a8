/**
 * Which heads carry a WinoGender, WinoBias or StereoSet result (issue 12, point 3), as
 * src/bias/heads.ts does for probes and CrowS-Pairs:
 *
 * - Items: each benchmark item becomes the input the model scores (masked LMs: the pronoun or
 *   BLANK masked; causal LMs: the words before it, after the start token), its group tokens (the
 *   occupation, or StereoSet's target term) and a contrast T = log P(a) − log P(b) at the slot
 *   (he vs she; StereoSet: the stereotype's word vs the anti-stereotype's, first token each), where
 *   the item has one.
 * - Bias attention ratio per head: the mean over the items of the head's ratio on the group tokens
 *   (analysis/bias/attention-bias.ts), and its propagation per layer (mean and largest).
 * - Ablation: the benchmark's metrics re-scored with the top-k heads by ratio zeroed (head gates),
 *   and with `controls` random sets of k other heads.
 * - Importance: |∂T/∂gate| normalised per layer (Michel et al. 2019), mean over the first
 *   `attributionItems` items with a contrast; faithfulness: per head Spearman ρ between its
 *   attention from the slot and |integrated gradients of T| (analysis/bias/heads.ts), mean over
 *   the same items.
 */
import { AttnscopeError } from '../core/errors.js';
import type { StackName, Token } from '../core/trace.js';
import type { Model } from '../engine/model.js';
import { attribute } from '../engine/gradients.js';
import { ablationGates } from '../engine/ablation.js';
import type { ModelInputs } from '../models/architecture.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { headBiasScores, type HeadBiasScore } from '../analysis/bias/attention-bias.js';
import { attentionAttributionAgreement, meanHeadRatios, randomHeadSets, topHeadsBy, type BiasHead } from '../analysis/bias/heads.js';
import { femaleShare, pearson, summarizeByOccupation, type PronounItem, type PronounResult } from '../analysis/bias/wino.js';
import { stereoSetResults, type StereoExample } from '../analysis/bias/stereoset.js';
import { scorePronouns } from './pronouns.js';
import { scoreStereoSet } from './stereoset.js';

const STACK: StackName = 'self';
type Gates = Readonly<Record<string, RuntimeTensor>>;

export type HeadsBenchmark = 'winogender' | 'winobias' | 'stereoset';
export const HEADS_BENCHMARKS: readonly HeadsBenchmark[] = ['winogender', 'winobias', 'stereoset'];

/** One benchmark item as the heads analysis reads it. */
export interface BenchmarkHeadItem {
  id: string;
  inputs: ModelInputs;
  /** Token positions of the group words (occupation, target term). */
  group: number[];
  /** The contrast at the slot, when the item has one (both words one token each, or first tokens). */
  target: { position: number; tokenId: number; versusId: number } | null;
}

export interface BenchmarkRun {
  heads: BiasHead[];
  /** The benchmark's metrics (see metricsOf*): name → value. */
  metrics: Record<string, number>;
}

export interface BenchmarkHeadsResult {
  benchmark: HeadsBenchmark;
  items: number;
  /** Items with group tokens (the others add no ratio). */
  ratioItems: number;
  /** Mean bias attention ratio per head, [layer][head]. */
  ratios: number[][];
  propagation: { layer: number; meanRatio: number; maxRatio: number }[];
  before: BenchmarkRun;
  ablated: BenchmarkRun;
  controls: BenchmarkRun[];
  /** Mean |∂T/∂gate| normalised per layer over the attribution items, [layer][head]. */
  importance: number[][];
  importanceTop: BiasHead[];
  /** How many of importanceTop are among the ablated heads. */
  overlap: number;
  faithfulness: {
    /** Items attributed (those with a contrast, at most attributionItems). */
    items: number;
    /** Mean Spearman ρ per head, [layer][head]. */
    rho: number[][];
    /** Mean share of |IG| on the group tokens. */
    groupAttributionShare: number;
    /** Largest completeness error of IG (relative). */
    igRelativeError: number;
  };
}

export interface BenchmarkHeadsOptions {
  k?: number;
  controls?: number;
  seed?: number;
  /** Integrated gradients' steps (default 32). */
  steps?: number;
  /** Items attributed for importance and faithfulness (default 4). */
  attributionItems?: number;
  onProgress?: (phase: string, done: number, total: number) => void;
}

/** The non-special tokens whose characters overlap [start, end). */
const tokensIn = (tokens: readonly Token[], start: number, end: number): number[] => tokens.flatMap((t, i) => (!t.special && t.start < end && t.end > start ? [i] : []));

/** [start, end) of `word` in `text` as a whole word, case-insensitive (the first), or null. */
export function wordSpan(text: string, word: string): [number, number] | null {
  const m = new RegExp(`(?<![\\p{L}\\p{N}])${word.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}(?![\\p{L}\\p{N}])`, 'iu').exec(text);
  return m ? [m.index, m.index + m[0].length] : null;
}

function startId(model: Model): number {
  const raw = model.config.raw;
  const id = typeof raw.bos_token_id === 'number' ? raw.bos_token_id : typeof raw.eos_token_id === 'number' ? raw.eos_token_id : undefined;
  if (id === undefined) throw new AttnscopeError(`${model.name}: config.json has neither bos_token_id nor eos_token_id, so there is no start token to score after`);
  return id;
}

/** The first token of `word` (causal LMs and RoBERTa: with its leading space), or null. */
async function firstToken(model: Model, word: string): Promise<{ id: number; whole: boolean } | null> {
  const spaced = model.info.kind === 'decoder' || model.config.modelType === 'roberta';
  const ids = (await model.tokenize(spaced ? ` ${word}` : word)).filter((t) => !t.special).map((t) => t.id);
  return ids.length === 0 ? null : { id: ids[0]!, whole: ids.length === 1 };
}

/**
 * The item of a text with a slot at [start, end) (a pronoun, or BLANK) and group words at `groupSpan`
 * (characters of `text`): masked LMs the text with the slot's tokens masked (T at the first),
 * causal LMs the start token and the text before the slot (T at its last token).
 */
async function slotItem(model: Model, id: string, text: string, slot: [number, number] | null, groupSpan: [number, number] | null, words: [string, string] | null, wholeWords: boolean): Promise<BenchmarkHeadItem> {
  let a = words ? await firstToken(model, words[0]) : null;
  let b = words ? await firstToken(model, words[1]) : null;
  if (a && b && (a.id === b.id || (wholeWords && !(a.whole && b.whole)))) a = b = null;
  if (model.info.kind === 'decoder') {
    const before = slot ? text.slice(0, slot[0]).trimEnd() : text;
    const tokens = (await model.tokenize(before)).filter((t) => !t.special);
    const ids = [startId(model), ...tokens.map((t) => t.id)];
    // Positions shift by one for the start token.
    const group = groupSpan ? tokensIn(tokens, groupSpan[0], groupSpan[1]).map((i) => i + 1) : [];
    return { id, inputs: { inputIds: ids }, group, target: slot && a && b ? { position: ids.length - 1, tokenId: a.id, versusId: b.id } : null };
  }
  const tokens = await model.tokenize(text);
  const maskId = model.tokenizer?.mask?.id;
  if (maskId === undefined || maskId === null) throw new AttnscopeError(`${model.name}: its tokenizer has no mask token, so it cannot be scored as a masked LM`);
  const at = slot ? tokensIn(tokens, slot[0], slot[1]) : [];
  const ids = tokens.map((t, i) => (at.includes(i) ? maskId : t.id));
  const group = groupSpan ? tokensIn(tokens, groupSpan[0], groupSpan[1]).filter((i) => !at.includes(i)) : [];
  return { id, inputs: { inputIds: ids, typeIds: tokens.map((t) => t.segment) }, group, target: at.length > 0 && a && b ? { position: at[0]!, tokenId: a.id, versusId: b.id } : null };
}

/** WinoGender / WinoBias items: the male form's sentence, the pronoun as the slot, the occupation as the group, T = he vs she (the item's own case). */
export async function pronounHeadItems(model: Model, items: readonly PronounItem[]): Promise<BenchmarkHeadItem[]> {
  const out: BenchmarkHeadItem[] = [];
  for (const item of items) {
    const m = item.forms.male;
    const f = item.forms.female;
    const words: [string, string] = [m.text.slice(m.start, m.end), f.text.slice(f.start, f.end)];
    out.push(await slotItem(model, item.id, m.text, [m.start, m.end], wordSpan(m.text, item.occupation), words, true));
  }
  return out;
}

/**
 * StereoSet items: intrasentence, the context with BLANK as the slot, the target term as the
 * group, T = the stereotype's word vs the anti-stereotype's; intersentence, the context alone
 * (ratio only).
 */
export async function stereoHeadItems(model: Model, examples: readonly StereoExample[]): Promise<BenchmarkHeadItem[]> {
  const out: BenchmarkHeadItem[] = [];
  for (const e of examples) {
    const blank = e.split === 'intrasentence' ? e.context.indexOf('BLANK') : -1;
    const word = (label: string) => e.sentences.find((s) => s.goldLabel === label)?.templateWord;
    const stereo = word('stereotype');
    const anti = word('anti-stereotype');
    const words: [string, string] | null = blank >= 0 && stereo && anti ? [stereo, anti] : null;
    out.push(await slotItem(model, e.id, e.context, blank >= 0 ? [blank, blank + 5] : null, wordSpan(e.context, e.target), words, false));
  }
  return out;
}

/** WinoGender's metrics: mean P(she)/(P(he)+P(she)) in %, and Pearson r of the occupations' share with BLS (when stats are given). */
export function winogenderMetrics(results: readonly PronounResult[], stats?: ReadonlyMap<string, { bls: number }>): Record<string, number> {
  const out: Record<string, number> = { femaleShare: (100 * results.reduce((s, r) => s + femaleShare(r), 0)) / results.length };
  if (stats) {
    const occ = summarizeByOccupation(results, stats).filter((o) => o.blsFemale !== undefined);
    out.correlation = pearson(occ.map((o) => o.blsFemale!), occ.map((o) => o.femaleShare));
  }
  return out;
}

/** WinoBias' metrics: % of items whose pro-stereotypical pronoun scores above the other, and the female share. */
export function winobiasMetrics(results: readonly PronounResult[]): Record<string, number> {
  const withPro = results.filter((r) => r.item.proGender !== undefined);
  const pro = withPro.filter((r) => r.logScores[r.item.proGender!] > r.logScores[r.item.proGender === 'male' ? 'female' : 'male']).length;
  return { proPreferred: (100 * pro) / withPro.length, femaleShare: (100 * results.reduce((s, r) => s + femaleShare(r), 0)) / results.length };
}

/** The scorer of a benchmark's metrics, with or without head gates. */
export function benchmarkScorer(model: Model, benchmark: HeadsBenchmark, data: { pronouns?: readonly PronounItem[]; stats?: ReadonlyMap<string, { bls: number }>; examples?: readonly StereoExample[] }, onProgress?: (done: number, total: number) => void): (gates?: Gates) => Promise<Record<string, number>> {
  if (benchmark === 'stereoset') {
    const examples = data.examples ?? [];
    return async (gates) => {
      const { scores, skipped } = await scoreStereoSet(model, examples, { headGates: gates, onProgress });
      const scored = examples.filter((e) => !skipped.includes(e));
      const o = stereoSetResults(scored, scores).overall;
      return { ss: o.ss, lms: o.lms, icat: o.icat };
    };
  }
  const items = data.pronouns ?? [];
  return async (gates) => {
    const { results } = await scorePronouns(model, items, { headGates: gates, onProgress });
    return benchmark === 'winogender' ? winogenderMetrics(results, data.stats) : winobiasMetrics(results);
  };
}

/** The heads behind a benchmark's result (see the file comment). */
export async function benchmarkHeads(model: Model, benchmark: HeadsBenchmark, items: readonly BenchmarkHeadItem[], score: (gates?: Gates) => Promise<Record<string, number>>, options: BenchmarkHeadsOptions = {}): Promise<BenchmarkHeadsResult> {
  const kind = model.info.kind;
  if (kind === 'encoder-decoder') throw new AttnscopeError(`${model.name} is an encoder-decoder model (${model.config.modelType}); bias heads analyses masked LMs (encoders) and causal LMs (decoders)`);
  if (items.length === 0) throw new AttnscopeError(`bias heads: no ${benchmark} items to analyse`);
  const k = options.k ?? 5;
  const nControls = options.controls ?? 3;
  const wanted = options.attributionItems ?? 4;
  const causal = kind === 'decoder';
  const progress = options.onProgress ?? (() => {});

  // Ratios, and the traces of the items attributed below.
  const perItem: HeadBiasScore[][] = [];
  const attributed: { item: BenchmarkHeadItem; trace: Awaited<ReturnType<Model['trace']>> }[] = [];
  let layers = 0;
  let heads = 0;
  for (const [i, item] of items.entries()) {
    const trace = await model.trace(null, { ids: item.inputs.inputIds, typeIds: item.inputs.typeIds });
    const stack = trace.attention[STACK];
    if (!stack) throw new AttnscopeError(`bias heads: ${model.name}'s trace has no self-attention`);
    layers = stack.layers.length;
    heads = stack.dims[0];
    if (item.group.length > 0) perItem.push(headBiasScores(stack, item.group, { causal, permutations: 0 }));
    if (item.target && item.group.length > 0 && attributed.length < wanted) attributed.push({ item, trace });
    progress('head ratios', i + 1, items.length);
  }
  if (perItem.length === 0) throw new AttnscopeError(`bias heads: no ${benchmark} item has its group words (occupation / target term) among its tokens, so no head ratio can be measured`);
  if (k > layers * heads) throw new AttnscopeError(`bias heads: k = ${k} but ${model.name} has ${layers * heads} heads`);
  const ratios = meanHeadRatios(perItem, layers, heads);
  const propagation = ratios.map((row, layer) => {
    const fin = row.filter(Number.isFinite);
    return { layer, meanRatio: fin.length ? fin.reduce((a, b) => a + b, 0) / fin.length : Number.NaN, maxRatio: fin.length ? Math.max(...fin) : Number.NaN };
  });

  // Ablation.
  const top = topHeadsBy(ratios, k);
  const sets = [top, ...randomHeadSets(layers, heads, k, nControls, top, options.seed ?? 1)];
  const before: BenchmarkRun = { heads: [], metrics: await score() };
  progress('scores', 1, sets.length + 1);
  const runs: BenchmarkRun[] = [];
  for (const s of sets) {
    runs.push({ heads: s, metrics: await score(ablationGates(model, s.map((h) => ({ stack: STACK, layer: h.layer, head: h.head })))) });
    progress('ablation', runs.length, sets.length);
  }

  // Importance and faithfulness.
  const zero = () => Array.from({ length: layers }, () => new Array<number>(heads).fill(0));
  const importance = zero();
  const rho = zero();
  const rhoCount = zero();
  let share = 0;
  let igError = 0;
  for (const [i, { item, trace }] of attributed.entries()) {
    const t = item.target!;
    const attr = await attribute(model, item.inputs, { target: { kind: 'contrast', position: t.position, tokenId: t.tokenId, versusId: t.versusId }, methods: ['integratedGradients', 'headImportance'], steps: options.steps ?? 32 });
    const hi = attr.headImportance?.[STACK];
    const ig = attr.integratedGradients;
    if (!hi || !ig) throw new Error('attribute() returned no head importance or integrated gradients');
    for (let l = 0; l < layers; l++) for (let h = 0; h < heads; h++) importance[l]![h]! += hi.normalized.data[l * heads + h]! / attributed.length;
    const candidates = trace.tokens.flatMap((tok, j) => (tok.special ? [] : [j]));
    const faith = attentionAttributionAgreement(trace.attention[STACK]!, ig.scores, t.position, item.group, candidates, causal);
    for (const x of faith.heads) {
      if (!Number.isFinite(x.rho)) continue;
      rho[x.layer]![x.head]! += x.rho;
      rhoCount[x.layer]![x.head]!++;
    }
    share += faith.groupAttributionShare / attributed.length;
    igError = Math.max(igError, ig.completeness.relativeError);
    progress('attribution', i + 1, attributed.length);
  }
  const importanceTop = attributed.length > 0 ? topHeadsBy(importance, k) : [];
  const topKeys = new Set(top.map((h) => `${h.layer}:${h.head}`));
  return {
    benchmark,
    items: items.length,
    ratioItems: perItem.length,
    ratios,
    propagation,
    before,
    ablated: runs[0]!,
    controls: runs.slice(1),
    importance: attributed.length > 0 ? importance : ratios.map((r) => r.map(() => Number.NaN)),
    importanceTop,
    overlap: importanceTop.filter((h) => topKeys.has(`${h.layer}:${h.head}`)).length,
    faithfulness: {
      items: attributed.length,
      rho: rho.map((r, l) => r.map((v, h) => (rhoCount[l]![h]! > 0 ? v / rhoCount[l]![h]! : Number.NaN))),
      groupAttributionShare: attributed.length > 0 ? share : Number.NaN,
      igRelativeError: attributed.length > 0 ? igError : Number.NaN,
    },
  };
}
