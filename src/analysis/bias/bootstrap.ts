/**
 * Confidence intervals of benchmark scores by the percentile bootstrap over items (pairs,
 * sentences): `resamples` samples of n items drawn with replacement (seeded), the statistic on
 * each, and the (α/2, 1 − α/2) quantiles of those values (linear interpolation between order
 * statistics, numpy's default 'linear' method). For CrowS-Pairs the statistic is metric.py's
 * metric, 100 · successes / n, over the resampled rows (neutral rows count in n, as in the metric).
 */
import { AttnscopeError } from '../../core/errors.js';
import { mulberry32 } from '../../core/random.js';
import type { CrowsPairRow, CrowsPairsMetric } from './crows-pairs.js';

export interface Interval {
  /** The statistic on the items as they are. */
  value: number;
  low: number;
  high: number;
  /** Items it is over. */
  n: number;
}

export interface BootstrapOptions {
  /** Default 1000. */
  resamples?: number;
  /** Default 0.95. */
  level?: number;
  seed?: number;
}

/** The q-quantile (0 ≤ q ≤ 1) of sorted values, linear between order statistics. */
export function quantileSorted(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(sorted.length - 1, lo + 1);
  return sorted[lo]! + (pos - lo) * (sorted[hi]! - sorted[lo]!);
}

/** Percentile-bootstrap interval of the mean of `values` (see the file comment); NaN bounds for no values. */
export function bootstrapMean(values: readonly number[], options: BootstrapOptions = {}): Interval {
  const B = options.resamples ?? 1000;
  const level = options.level ?? 0.95;
  if (!Number.isInteger(B) || B < 1 || B > 1_000_000) throw new AttnscopeError(`bootstrap: resamples ${B} is out of range; allowed: an integer from 1 to 1000000`);
  if (!(level > 0 && level < 1)) throw new AttnscopeError(`bootstrap: level ${level} is out of range; allowed: between 0 and 1`);
  const n = values.length;
  if (n === 0) return { value: Number.NaN, low: Number.NaN, high: Number.NaN, n: 0 };
  const value = values.reduce((a, b) => a + b, 0) / n;
  const rand = mulberry32(options.seed ?? 1);
  const stats: number[] = [];
  for (let b = 0; b < B; b++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += values[Math.floor(rand() * n)]!;
    stats.push(s / n);
  }
  stats.sort((a, b) => a - b);
  const alpha = 1 - level;
  return { value, low: quantileSorted(stats, alpha / 2), high: quantileSorted(stats, 1 - alpha / 2), n };
}

export interface CrowsIntervals {
  overall: Interval;
  byBiasType: Record<string, Interval>;
  byDirection: Record<'stereo' | 'antistereo', Interval>;
}

/** Bootstrap intervals of the CrowS-Pairs metric overall, per bias type and per direction (100 · success rate). */
export function crowsIntervals(rows: readonly CrowsPairRow[], metric: CrowsPairsMetric, options: BootstrapOptions = {}): CrowsIntervals {
  const of = (rs: readonly CrowsPairRow[]) => bootstrapMean(rs.map((r) => 100 * r.score), options);
  return {
    overall: of(rows),
    byBiasType: Object.fromEntries(Object.keys(metric.byBiasType).map((t) => [t, of(rows.filter((r) => r.pair.biasType === t))])),
    byDirection: { stereo: of(rows.filter((r) => r.pair.direction === 'stereo')), antistereo: of(rows.filter((r) => r.pair.direction === 'antistereo')) },
  };
}
