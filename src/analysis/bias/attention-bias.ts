/**
 * Which heads attend to a group's tokens more than their share of the sequence would give them.
 *
 * Bias attention ratio of a head for token set G (Attention Atlas' head score, defined here
 * exactly): over the query rows q, the attention mass on G's keys the row can see, divided by G's
 * share of those keys, as a ratio of sums:
 *
 *     BAR = Σ_q Σ_{k∈G, k visible from q} a[q,k]  /  Σ_q |G ∩ visible(q)| / |visible(q)|
 *
 * (visible: every key for bidirectional attention, keys k ≤ q for causal; rows that see no G
 * token add nothing to either sum). 1 = attention in proportion to G's share; 2 = twice it. The
 * self-reinforcement variant takes only G's own rows as queries (the group attending to itself).
 *
 * Permutation test per head: the same statistic on `permutations` random sets of |G| positions
 * drawn from the candidate positions (by default the non-special ones), p = (1 + #{null ≥
 * observed}) / (1 + permutations) — exact under the null that G is a random set of candidates —
 * with the Benjamini–Hochberg false discovery rate (q-values) across every head tested, and
 * Holm's family-wise adjustment.
 */
import { AttnscopeError } from '../../core/errors.js';
import type { LayerStack } from '../../core/trace.js';
import { mulberry32 } from '../../core/random.js';

export interface BiasRatioOptions {
  /** Causal attention: query q sees keys 0…q. */
  causal: boolean;
  /** Only these query rows (the self-reinforcement variant passes G itself); default every row. */
  queries?: readonly number[];
}

/** BAR of one head matrix [rows, cols] (row-major) for key set `group`. NaN when no row sees a G token. */
export function biasAttentionRatio(matrix: ArrayLike<number>, rows: number, cols: number, group: readonly number[], options: BiasRatioOptions): number {
  const queries = options.queries ?? Array.from({ length: rows }, (_, i) => i);
  let mass = 0;
  let share = 0;
  for (const q of queries) {
    const visible = options.causal ? Math.min(q + 1, cols) : cols;
    let inG = 0;
    let m = 0;
    for (const k of group) {
      if (k >= visible) continue;
      inG++;
      m += matrix[q * cols + k]!;
    }
    if (inG === 0) continue;
    mass += m;
    share += inG / visible;
  }
  return share === 0 ? Number.NaN : mass / share;
}

export interface HeadBiasScore {
  layer: number;
  head: number;
  /** BAR over every query row. */
  ratio: number;
  /** BAR over G's own rows (self-reinforcement). */
  selfRatio: number;
  /** One-sided permutation p-value of `ratio` (NaN when not tested). */
  p: number;
  /** Benjamini–Hochberg q-value across the heads. */
  q: number;
  /** Holm-adjusted p-value across the heads. */
  holm: number;
}

export interface PermutationOptions {
  causal: boolean;
  /** Random sets drawn per head (default 1000). */
  permutations?: number;
  /** Positions random sets are drawn from (default: every position). */
  candidates?: readonly number[];
  seed?: number;
}

/** `k` distinct positions of `from`, uniformly (partial Fisher–Yates). */
function sample(from: readonly number[], k: number, rand: () => number): number[] {
  const a = [...from];
  for (let i = 0; i < k; i++) {
    const j = i + Math.floor(rand() * (a.length - i));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a.slice(0, k).sort((x, y) => x - y);
}

/** Benjamini–Hochberg q-values (NaN p-values stay NaN and do not count). */
export function benjaminiHochberg(ps: readonly number[]): number[] {
  const idx = ps.map((p, i) => [p, i] as const).filter(([p]) => Number.isFinite(p)).sort((a, b) => a[0] - b[0]);
  const m = idx.length;
  const out = ps.map(() => Number.NaN);
  let min = 1;
  for (let r = m - 1; r >= 0; r--) {
    const [p, i] = idx[r]!;
    min = Math.min(min, (p * m) / (r + 1));
    out[i] = min;
  }
  return out;
}

/** Holm's step-down adjusted p-values (NaN p-values stay NaN and do not count). */
export function holm(ps: readonly number[]): number[] {
  const idx = ps.map((p, i) => [p, i] as const).filter(([p]) => Number.isFinite(p)).sort((a, b) => a[0] - b[0]);
  const m = idx.length;
  const out = ps.map(() => Number.NaN);
  let max = 0;
  idx.forEach(([p, i], r) => {
    max = Math.max(max, Math.min(1, (m - r) * p));
    out[i] = max;
  });
  return out;
}

/** Every head's BAR, self-reinforcement BAR and permutation test for `group` in one attention stack. */
export function headBiasScores(stack: LayerStack, group: readonly number[], options: PermutationOptions): HeadBiasScore[] {
  const [heads, rows, cols] = stack.dims;
  if (group.length === 0) throw new AttnscopeError('bias attention: no group tokens in the text');
  const bad = group.find((g) => !Number.isInteger(g) || g < 0 || g >= cols);
  if (bad !== undefined) throw new AttnscopeError(`bias attention: group position ${bad} is outside the ${cols} keys`);
  const candidates = options.candidates ?? Array.from({ length: cols }, (_, i) => i);
  const B = options.permutations ?? 1000;
  const rand = mulberry32(options.seed ?? 1);
  // The same random sets for every head, so heads are tested alike.
  const nulls = candidates.length > group.length && B > 0 ? Array.from({ length: B }, () => sample(candidates, group.length, rand)) : [];
  const scores: HeadBiasScore[] = [];
  stack.layers.forEach((layer, l) => {
    for (let h = 0; h < heads; h++) {
      const m = layer.subarray(h * rows * cols, (h + 1) * rows * cols);
      const ratio = biasAttentionRatio(m, rows, cols, group, { causal: options.causal });
      const selfRatio = biasAttentionRatio(m, rows, cols, group, { causal: options.causal, queries: group.filter((g) => g < rows) });
      let p = Number.NaN;
      if (nulls.length > 0 && Number.isFinite(ratio)) {
        let atLeast = 0;
        for (const s of nulls) if (biasAttentionRatio(m, rows, cols, s, { causal: options.causal }) >= ratio) atLeast++;
        p = (1 + atLeast) / (1 + nulls.length);
      }
      scores.push({ layer: l, head: h, ratio, selfRatio, p, q: Number.NaN, holm: Number.NaN });
    }
  });
  const q = benjaminiHochberg(scores.map((s) => s.p));
  const hp = holm(scores.map((s) => s.p));
  scores.forEach((s, i) => {
    s.q = q[i]!;
    s.holm = hp[i]!;
  });
  return scores;
}
