/**
 * Clustering of heads (src/analysis/cluster.ts): z-scores against a hand computation, the
 * silhouette against a brute-force re-computation written here, and planted clusters — hand traces
 * whose heads are previous-token, sink, self or uniform heads — recovered with the planted number
 * of clusters, named by the planted feature, the same on every run with a seed.
 */
import { describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import { headTable } from '../src/analysis/head-types.js';
import { CLUSTER_TABLE_HEADER, clusterHeads, clusterTableCsv, clusteringJson, headFeatureRows, silhouette, standardise, type ClusterInputRow } from '../src/analysis/cluster.js';
import { handTrace } from './helpers/hand-trace.js';

const row = (layer: number, head: number, features: Record<string, number>): ClusterInputRow => ({ layer, head, features });

describe('standardise', () => {
  it('z-scores with the population deviation, constant and missing features dropped, partly missing values at the mean', () => {
    const rows = [
      row(0, 0, { a: 1, c: 5, m: NaN, p: 2 }),
      row(0, 1, { a: 2, c: 5, m: NaN, p: NaN }),
      row(1, 0, { a: 3, c: 5, m: NaN, p: 6 }),
      row(1, 1, { a: 6, c: 5, m: NaN, p: 4 }),
    ];
    const s = standardise(rows);
    expect(s.features).toEqual(['a', 'p']);
    expect(s.dropped).toEqual([
      { feature: 'c', reason: 'constant' },
      { feature: 'm', reason: 'missing' },
    ]);
    // a: mean 3, squared deviations 4 + 1 + 0 + 9 = 14, variance 14 / 4 = 3.5.
    const sa = Math.sqrt(3.5);
    expect(s.means[0]).toBeCloseTo(3, 12);
    expect(s.stds[0]).toBeCloseTo(sa, 12);
    expect(s.z.map((r) => r[0])).toEqual([-2 / sa, -1 / sa, 0, 3 / sa].map((v) => expect.closeTo(v, 12)));
    // p: finite values 2, 6, 4: mean 4, variance (4 + 4 + 0) / 3; the missing one sits at z = 0.
    const sp = Math.sqrt(8 / 3);
    expect(s.z.map((r) => r[1])).toEqual([-2 / sp, 0, 2 / sp, 0].map((v) => expect.closeTo(v, 12)));
  });
});

/** Brute force, from a full distance matrix: per point, the mean distance to each cluster. */
function bruteSilhouette(points: number[][], labels: number[]): number {
  const n = points.length;
  const D = points.map((p) => points.map((q) => Math.hypot(...p.map((v, i) => v - q[i]!))));
  const clusters = [...new Set(labels)];
  let total = 0;
  for (let i = 0; i < n; i++) {
    const members = (c: number) => labels.map((l, j) => (l === c && j !== i ? j : -1)).filter((j) => j >= 0);
    const own = members(labels[i]!);
    if (own.length === 0) continue; // a singleton scores 0
    const a = own.reduce((s, j) => s + D[i]![j]!, 0) / own.length;
    const b = Math.min(...clusters.filter((c) => c !== labels[i]).map((c) => members(c).reduce((s, j) => s + D[i]![j]!, 0) / members(c).length));
    total += (b - a) / Math.max(a, b);
  }
  return total / n;
}

describe('silhouette', () => {
  it('equals a brute-force computation on random points and labellings', () => {
    let seed = 12345;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
    for (let trial = 0; trial < 20; trial++) {
      const n = 5 + (trial % 9);
      const d = 1 + (trial % 4);
      const k = 2 + (trial % Math.min(4, n - 2));
      const points = Array.from({ length: n }, () => Array.from({ length: d }, () => rand() * 10));
      // Every cluster present, the rest random.
      const labels = Array.from({ length: n }, (_, i) => (i < k ? i : Math.floor(rand() * k)));
      expect(silhouette(points, labels)).toBeCloseTo(bruteSilhouette(points, labels), 12);
    }
  });

  it('is 1 − a/b by hand on two pairs, and NaN for one cluster or all singletons', () => {
    // Points 0, 1 (cluster 0) and 10, 11 (cluster 1) on a line.
    const pts = [[0], [1], [10], [11]];
    // Point 0: a = 1, b = (10 + 11) / 2 = 10.5 → 1 − 1/10.5; point 1: a = 1, b = 9.5; symmetric.
    const expected = (2 * (1 - 1 / 10.5) + 2 * (1 - 1 / 9.5)) / 4;
    expect(silhouette(pts, [0, 0, 1, 1])).toBeCloseTo(expected, 14);
    expect(silhouette(pts, [0, 0, 0, 0])).toBeNaN();
    expect(silhouette(pts, [0, 1, 2, 3])).toBeNaN();
  });
});

/** Planted kinds by head index: 0 previous-token, 1 sink (first token), 2 self, 3 uniform. */
const KINDS = ['previous_token', 'sink', 'self', 'uniform'] as const;
function plantedTrace(causal: boolean) {
  return handTrace(Array.from({ length: 16 }, (_, i) => `w${i}`), {
    layers: 4,
    heads: 4,
    weight: (l, h, q, k) => {
      if (causal && k > q) return 0;
      if (h === 3) return 1 + 0.05 * ((l + k) % 2);
      // The planted key gets 1; every other key a little, more in later layers.
      const target = h === 0 ? Math.max(0, q - 1) : h === 1 ? 0 : q;
      return k === target ? 1 : 0.02 + 0.01 * l;
    },
  });
}

describe('clusterHeads on planted heads', () => {
  for (const causal of [true, false]) {
    it(`recovers previous-token, sink, self and uniform heads (${causal ? 'causal' : 'bidirectional'}), k = 4 by the silhouette, named by the planted feature`, () => {
      const table = headTable(plantedTrace(causal), 'self');
      for (const projection of ['pca', 'umap'] as const) {
        const c = clusterHeads(headFeatureRows(table), { projection, seed: 7 });
        expect(c.k).toBe(4);
        expect(c.chosen).toBe(true);
        // k = 4 has the best silhouette of every k tried (2 … 8).
        expect(c.silhouettes.map((s) => s.k)).toEqual([2, 3, 4, 5, 6, 7, 8]);
        const best = c.silhouettes.reduce((a, b) => (b.score > a.score ? b : a));
        expect(best.k).toBe(4);
        // Same kind ⇔ same cluster (ids renumbered by the first head: head h of layer 0 is in cluster h).
        for (const r of c.rows) expect(r.cluster).toBe(r.head);
        expect(c.clusters.map((cl) => cl.size)).toEqual([4, 4, 4, 4]);
        const names = c.clusters.map((cl) => cl.name);
        expect(names.slice(0, 3)).toEqual(['previous_token ↑', 'sink ↑', 'self ↑']);
        // Uniform heads: named by a feature of broad attention (their weights' quantiles or entropy are the highest).
        expect(c.clusters[3]!.feature).toMatch(/^(entropy|p25|p50|p75|p90)$/);
        expect(names[3]).toMatch(/ ↑$/);
        // The named feature really is the cluster's largest mean z-score (recomputed here from the rows).
        for (const cl of c.clusters) {
          const z = (f: string) => {
            const vals = table.map((r) => (r as unknown as Record<string, number>)[f]!);
            const mean = vals.reduce((a, b) => a + b, 0) / vals.length;
            const sd = Math.sqrt(vals.reduce((a, b) => a + (b - mean) ** 2, 0) / vals.length);
            const mine = table.filter((r) => r.head === cl.id).map((r) => ((r as unknown as Record<string, number>)[f]! - mean) / sd);
            return mine.reduce((a, b) => a + b, 0) / mine.length;
          };
          const top = Math.max(...c.features.map(z));
          expect(z(cl.feature!)).toBeCloseTo(top, 9);
          expect(cl.meanZ).toBeCloseTo(top, 9);
        }
        expect(c.rows.map((r) => [r.layer, r.head])).toEqual(table.map((r) => [r.layer, r.head]));
        for (const r of c.rows) {
          expect(Number.isFinite(r.x) && Number.isFinite(r.y)).toBe(true);
          expect(r.clusterName).toBe(KINDS[r.head] === 'uniform' ? names[3] : `${KINDS[r.head]} ↑`);
        }
      }
    });
  }

  it('is the same on every run with a seed (UMAP coordinates included), and PCA needs no seed', () => {
    const rows = headFeatureRows(headTable(plantedTrace(true), 'self'));
    const a = clusterHeads(rows, { projection: 'umap', seed: 3 });
    const b = clusterHeads(rows, { projection: 'umap', seed: 3 });
    expect(b.rows).toEqual(a.rows);
    const c = clusterHeads(rows, { projection: 'umap', seed: 4 });
    expect(c.rows.map((r) => r.cluster)).toEqual(a.rows.map((r) => r.cluster));
    expect(c.rows.map((r) => r.x)).not.toEqual(a.rows.map((r) => r.x));
    const p = clusterHeads(rows, { projection: 'pca', seed: 1 });
    const q = clusterHeads(rows, { projection: 'pca', seed: 2 });
    expect(q.rows.map((r) => [r.x, r.y])).toEqual(p.rows.map((r) => [r.x, r.y]));
    expect(p.axes[0]).toMatch(/^PC1 \(\d+ %\)$/);
  });

  it('PCA coordinates are the standardised profiles projected on the two leading principal axes', () => {
    const rows = headFeatureRows(headTable(plantedTrace(false), 'self'));
    const c = clusterHeads(rows, { projection: 'pca' });
    const z = standardise(rows).z;
    // The first axis carries the largest variance: no unit direction's projections vary more
    // than PC1's (checked against the coordinate axes and random directions), and PC1 ⟂ PC2.
    const variance = (v: number[]) => {
      const m = v.reduce((a, b) => a + b, 0) / v.length;
      return v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length;
    };
    const v1 = variance(c.rows.map((r) => r.x));
    const v2 = variance(c.rows.map((r) => r.y));
    expect(v1).toBeGreaterThanOrEqual(v2);
    const d = z[0]!.length;
    let seed = 99;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5;
    for (let t = 0; t < 50; t++) {
      const dir = Array.from({ length: d }, rand);
      const norm = Math.hypot(...dir);
      expect(variance(z.map((r) => r.reduce((s, v, i) => s + (v * dir[i]!) / norm, 0)))).toBeLessThanOrEqual(v1 * (1 + 1e-9));
    }
    const mx = c.rows.reduce((s, r) => s + r.x, 0) / c.rows.length;
    const my = c.rows.reduce((s, r) => s + r.y, 0) / c.rows.length;
    expect(c.rows.reduce((s, r) => s + (r.x - mx) * (r.y - my), 0) / c.rows.length).toBeCloseTo(0, 9);
    // Distances in the plane never exceed those of the full profiles (an orthogonal projection).
    for (let i = 0; i < z.length; i++) {
      for (let j = 0; j < i; j++) {
        const full = Math.hypot(...z[i]!.map((v, f) => v - z[j]![f]!));
        expect(Math.hypot(c.rows[i]!.x - c.rows[j]!.x, c.rows[i]!.y - c.rows[j]!.y)).toBeLessThanOrEqual(full + 1e-9);
      }
    }
  });

  it('a given k is used as is; bad options are one clear error', () => {
    const rows = headFeatureRows(headTable(plantedTrace(true), 'self'));
    const c = clusterHeads(rows, { k: 2, projection: 'pca' });
    expect(c.k).toBe(2);
    expect(c.chosen).toBe(false);
    expect(c.silhouettes).toHaveLength(1);
    expect(new Set(c.rows.map((r) => r.cluster))).toEqual(new Set([0, 1]));
    const all = clusterHeads(rows, { k: 1, projection: 'pca' });
    expect(all.clusters).toEqual([expect.objectContaining({ id: 0, name: 'all heads alike', feature: null, size: 16 })]);
    expect(all.silhouette).toBeNaN();
    expect(() => clusterHeads(rows, { k: 17 })).toThrow(AttnscopeError);
    expect(() => clusterHeads(rows, { k: 17 })).toThrow(/k \(clusters\): expected an integer from 1 to 16, got 17/);
    expect(() => clusterHeads(rows, { k: 1.5 })).toThrow(/k \(clusters\)/);
    expect(() => clusterHeads(rows, { projection: 'tsne' as 'pca' })).toThrow(/projection: expected umap or pca, got 'tsne'/);
    expect(() => clusterHeads([], {})).toThrow(/at least one head/);
    // Identical profiles: one cluster, however many heads.
    const same = Array.from({ length: 5 }, (_, i) => row(0, i, { a: 1, b: 2 }));
    const one = clusterHeads(same, { projection: 'pca' });
    expect(one.k).toBe(1);
    expect(one.clusters[0]!.name).toBe('no varying feature');
    expect(() => clusterHeads(same, { k: 2 })).toThrow(/only 1 distinct profile/);
  });

  it('writes the table as CSV and JSON (layer, head, cluster, cluster_name, x, y)', () => {
    const rows = headFeatureRows(headTable(plantedTrace(true), 'self'));
    const c = clusterHeads(rows, { projection: 'pca' });
    const csv = clusterTableCsv(c).trimEnd().split('\n');
    expect(csv[0]).toBe(CLUSTER_TABLE_HEADER.join(','));
    expect(csv).toHaveLength(17);
    const cells = csv[1]!.split(',');
    expect(cells.slice(0, 4)).toEqual(['0', '0', '0', 'previous_token ↑']);
    expect(Number(cells[4])).toBeCloseTo(c.rows[0]!.x, 4);
    const json = clusteringJson(c) as { rows: { cluster_name: string }[]; k: number; clusters: { name: string; size: number }[] };
    expect(json.k).toBe(4);
    expect(json.rows[5]!.cluster_name).toBe('sink ↑');
    expect(json.clusters.map((x) => x.size)).toEqual([4, 4, 4, 4]);
  });
});
