/**
 * From bias scores to heads (issue 12, point 3): pure functions over attention, head scores and
 * attributions; src/bias/heads.ts runs the model.
 *
 * - Selection: the top-k bias-focused heads (largest bias attention ratio, heads significant at
 *   q < 0.05 first), and random head sets of the same size for the control (seeded, drawn from
 *   the other heads).
 * - Propagation per layer: the heads' mean and largest bias attention ratio, how many are
 *   significant, and the ratio of the attention rollout up to that layer (Abnar & Zuidema 2020:
 *   head-mean attention with half residual, multiplied through the layers), i.e. how much of what
 *   each position carries after layer l came from the group tokens, against their share.
 * - Faithfulness per head: Spearman's rank correlation, over the non-special tokens, between the
 *   attention the target position gives each token and the magnitude of its integrated-gradients
 *   attribution; also the group tokens' share of that attention against their share of |IG|.
 *   ρ near 1: the head looks where the attribution says the prediction comes from; near 0 or
 *   below: it does not (attention is not explanation).
 */
import { AttnscopeError } from '../../core/errors.js';
import type { LayerStack } from '../../core/trace.js';
import { mulberry32 } from '../../core/random.js';
import { biasAttentionRatio, type HeadBiasScore } from './attention-bias.js';

/** A head of the stack the bias scores are of. */
export interface BiasHead {
  layer: number;
  head: number;
}

/** Ranks 1…n, ties sharing their mean rank (as scipy.stats.rankdata's 'average'). */
export function averageRanks(xs: readonly number[]): number[] {
  const idx = xs.map((_, i) => i).sort((a, b) => xs[a]! - xs[b]!);
  const ranks = new Array<number>(xs.length);
  for (let i = 0; i < idx.length; ) {
    let j = i;
    while (j + 1 < idx.length && xs[idx[j + 1]!] === xs[idx[i]!]) j++;
    const r = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) ranks[idx[k]!] = r;
    i = j + 1;
  }
  return ranks;
}

/** Pearson correlation of two equally long lists (NaN when either is constant or shorter than 2). */
function pearsonOf(a: readonly number[], b: readonly number[]): number {
  const n = a.length;
  if (n < 2) return Number.NaN;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i]!;
    mb += b[i]!;
  }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    sab += (a[i]! - ma) * (b[i]! - mb);
    saa += (a[i]! - ma) ** 2;
    sbb += (b[i]! - mb) ** 2;
  }
  return saa === 0 || sbb === 0 ? Number.NaN : sab / Math.sqrt(saa * sbb);
}

/** Spearman's ρ: Pearson's r of the average ranks (NaN when either list is constant). */
export function spearman(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) throw new Error(`spearman: ${a.length} vs ${b.length} values`);
  return pearsonOf(averageRanks(a), averageRanks(b));
}

/**
 * The k heads the ablation removes: significant heads (q < alpha) by falling ratio, then the
 * others by falling ratio (heads with a NaN ratio last), ties by layer then head.
 */
export function topBiasHeads(scores: readonly HeadBiasScore[], k: number, alpha = 0.05): BiasHead[] {
  if (!Number.isInteger(k) || k < 1) throw new AttnscopeError(`bias heads: k must be a positive integer, got ${k}`);
  const key = (s: HeadBiasScore) => [s.q < alpha ? 0 : 1, Number.isFinite(s.ratio) ? -s.ratio : Number.POSITIVE_INFINITY, s.layer, s.head];
  const sorted = [...scores].sort((a, b) => {
    const ka = key(a);
    const kb = key(b);
    for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i]! - kb[i]!;
    return 0;
  });
  return sorted.slice(0, k).map((s) => ({ layer: s.layer, head: s.head }));
}

/** The k heads of largest value in a [layers][heads] table (ties by layer then head). */
export function topHeadsBy(values: readonly (readonly number[])[], k: number): BiasHead[] {
  const all = values.flatMap((row, layer) => row.map((v, head) => ({ layer, head, v: Number.isFinite(v) ? v : Number.NEGATIVE_INFINITY })));
  all.sort((a, b) => b.v - a.v || a.layer - b.layer || a.head - b.head);
  return all.slice(0, k).map(({ layer, head }) => ({ layer, head }));
}

/**
 * `sets` random sets of `k` distinct heads (of layers × heads), none of them in `exclude`, each
 * uniformly drawn (seeded partial Fisher–Yates), sorted by layer then head.
 */
export function randomHeadSets(layers: number, heads: number, k: number, sets: number, exclude: readonly BiasHead[], seed = 1): BiasHead[][] {
  const excluded = new Set(exclude.map((h) => h.layer * heads + h.head));
  const pool = Array.from({ length: layers * heads }, (_, i) => i).filter((i) => !excluded.has(i));
  if (sets > 0 && pool.length < k) throw new AttnscopeError(`bias heads: a control set of ${k} heads needs ${k} heads outside the ablated ones, but only ${pool.length} are left; give a smaller --k or --controls 0`);
  const rand = mulberry32(seed);
  const out: BiasHead[][] = [];
  for (let s = 0; s < sets; s++) {
    const a = [...pool];
    for (let i = 0; i < k; i++) {
      const j = i + Math.floor(rand() * (a.length - i));
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    out.push(a.slice(0, k).sort((x, y) => x - y).map((i) => ({ layer: Math.floor(i / heads), head: i % heads })));
  }
  return out;
}

export interface LayerPropagation {
  layer: number;
  /** Mean over the layer's heads of the bias attention ratio (finite ones). */
  meanRatio: number;
  maxRatio: number;
  /** Heads of the layer significant at q < 0.05. */
  significant: number;
  /** Bias attention ratio of the attention rollout up to and including this layer (NaN when not given). */
  rolloutRatio: number;
}

/**
 * Per layer: the heads' mean and largest ratio and significant count, and the ratio of each
 * cumulative rollout matrix (`rollout[l]`, n × n, rows the positions after layer l) on `group`.
 */
export function layerPropagation(scores: readonly HeadBiasScore[], group: readonly number[], causal: boolean, rollout?: readonly ArrayLike<number>[], size?: number): LayerPropagation[] {
  const layers = Math.max(-1, ...scores.map((s) => s.layer)) + 1;
  const out: LayerPropagation[] = [];
  for (let l = 0; l < layers; l++) {
    const hs = scores.filter((s) => s.layer === l);
    const finite = hs.map((s) => s.ratio).filter(Number.isFinite);
    const r = rollout?.[l];
    out.push({
      layer: l,
      meanRatio: finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : Number.NaN,
      maxRatio: finite.length ? Math.max(...finite) : Number.NaN,
      significant: hs.filter((s) => s.q < 0.05).length,
      rolloutRatio: r && size !== undefined ? biasAttentionRatio(r, size, size, group, { causal }) : Number.NaN,
    });
  }
  return out;
}

export interface HeadFaithfulness {
  layer: number;
  head: number;
  /** Spearman ρ over the candidate tokens: attention from the target position vs |IG|. */
  rho: number;
  /** Group tokens' share of the target row's attention over the candidates. */
  groupAttentionShare: number;
}

export interface Faithfulness {
  /** The query row read (the target position). */
  position: number;
  /** Tokens compared (non-special, visible from the target position). */
  tokens: number[];
  /** Group tokens' share of Σ|IG| over `tokens`. */
  groupAttributionShare: number;
  heads: HeadFaithfulness[];
}

/**
 * Per head, Spearman's ρ between the attention row of `position` and |ig| over `candidates` (the
 * keys that row can see), and the group's share of both (see the file comment).
 */
export function attentionAttributionAgreement(stack: LayerStack, ig: ArrayLike<number>, position: number, group: readonly number[], candidates: readonly number[], causal: boolean): Faithfulness {
  const [heads, rows, cols] = stack.dims;
  if (!(Number.isInteger(position) && position >= 0 && position < rows)) throw new AttnscopeError(`faithfulness: position ${position} is outside the ${rows} rows`);
  if (ig.length !== cols) throw new AttnscopeError(`faithfulness: ${ig.length} attributions for ${cols} tokens`);
  const tokens = candidates.filter((k) => k >= 0 && k < cols && (!causal || k <= position));
  const inGroup = new Set(group);
  const absIg = tokens.map((k) => Math.abs(ig[k]!));
  const igTotal = absIg.reduce((a, b) => a + b, 0);
  const igGroup = tokens.reduce((s, k, i) => s + (inGroup.has(k) ? absIg[i]! : 0), 0);
  const out: HeadFaithfulness[] = [];
  stack.layers.forEach((layer, l) => {
    for (let h = 0; h < heads; h++) {
      const off = (h * rows + position) * cols;
      const att = tokens.map((k) => layer[off + k]!);
      const total = att.reduce((a, b) => a + b, 0);
      const g = tokens.reduce((s, k, i) => s + (inGroup.has(k) ? att[i]! : 0), 0);
      out.push({ layer: l, head: h, rho: spearman(att, absIg), groupAttentionShare: total > 0 ? g / total : Number.NaN });
    }
  });
  return { position, tokens, groupAttributionShare: igTotal > 0 ? igGroup / igTotal : Number.NaN, heads: out };
}

/** Mean over items of each head's ratio ([layers][heads]; NaN ratios skipped; NaN where none is finite). */
export function meanHeadRatios(perItem: readonly (readonly HeadBiasScore[])[], layers: number, heads: number): number[][] {
  const sum = Array.from({ length: layers }, () => new Array<number>(heads).fill(0));
  const count = Array.from({ length: layers }, () => new Array<number>(heads).fill(0));
  for (const scores of perItem) {
    for (const s of scores) {
      if (!Number.isFinite(s.ratio)) continue;
      sum[s.layer]![s.head]! += s.ratio;
      count[s.layer]![s.head]!++;
    }
  }
  return sum.map((row, l) => row.map((v, h) => (count[l]![h]! > 0 ? v / count[l]![h]! : Number.NaN)));
}
