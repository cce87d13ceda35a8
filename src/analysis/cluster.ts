/**
 * Clustering of heads by their metric profiles (issue 9, point 3): which heads behave alike?
 *
 * Input: one row per head, `{layer, head, features}` — usually every numeric column of the head
 * table (head-metrics.ts metrics and head-types.ts scores, `headFeatureRows`).
 *
 * 1. **Standardise** (`standardise`): each feature to z = (x − mean) / std over the heads, with the
 *    population standard deviation (ddof 0, as scikit-learn's StandardScaler), so that a feature
 *    in bits (distance in tokens, entropy in [0, 1]) weighs as much as any other. A feature that is
 *    missing (NaN, ±∞) for every head is dropped ('missing': e.g. induction on a text where no
 *    token repeats, or the word-class focus scores without word classes); a feature whose finite
 *    values are all equal (max − min ≤ 1e-12 · max(1, |max|, |min|)) is dropped ('constant': it
 *    separates nothing and has no z-score). A value missing for some heads only is set to the
 *    feature's mean over the others (z = 0), so it pulls that head nowhere.
 * 2. **Cluster** with k-means (ml-kmeans, k-means++ initialisation from a seed) on the
 *    standardised features — all of them, not on the 2-D projection: the projection distorts
 *    distances (UMAP keeps neighbourhoods, not distances; PCA drops every component after the
 *    second), so the clusters are those of the heads' full profiles and the scatter only shows
 *    them. Each k runs from `restarts` seeds (seed, seed + 1, …, default 10) and keeps the run
 *    with the least inertia (sum of squared distances to the centroids), as scikit-learn's n_init.
 *    Cluster ids are then renumbered by their first head in layer-major order (cluster 0 holds
 *    head L0 H0), so that the same grouping always gets the same ids.
 * 3. **k** is given, or chosen by the mean silhouette score (Euclidean, on the standardised
 *    features; singletons score 0, as scikit-learn's silhouette_score) over k = 2 … min(maxK = 8,
 *    n − 1, number of distinct profiles); the best score wins, ties go to the smaller k. Fewer than 3
 *    heads, or fewer than 2 distinct profiles: one cluster.
 * 4. **Names**: each cluster by its dominant feature — the one with the largest mean z-score over
 *    its heads, "previous_token ↑"; a cluster below the average on every feature is named by its
 *    most negative one, "entropy ↓". When two clusters would get the same name, each is told apart
 *    by its next strongest feature ("sink ↑, entropy ↓"). One cluster of every head (k = 1) sits at
 *    the mean of every feature: "all heads alike"; without any feature kept: "no varying feature".
 * 5. **Project** to 2-D for the scatter: 'umap' (umap-js; its `random` option fed by a seeded
 *    mulberry32 (core/random.ts) so the picture is the same on every run and platform; n_neighbors = min(15, n − 1),
 *    min_dist 0.1) or 'pca' (ml-pca on the standardised features, centred: deterministic; each
 *    axis' sign fixed so that its largest loading is positive, as scikit-learn's svd_flip).
 *
 * Pure functions; isomorphic (imports nothing from Node).
 */
import { kmeans } from 'ml-kmeans';
import { PCA } from 'ml-pca';
import { UMAP } from 'umap-js';
import { AttnscopeError } from '../core/errors.js';
import { mulberry32 } from '../core/random.js';

/** One head and its features (any names; NaN for a value that is not defined). */
export interface ClusterInputRow {
  layer: number;
  head: number;
  features: Readonly<Record<string, number>>;
}

export type ClusterProjection = 'umap' | 'pca';
export const CLUSTER_PROJECTIONS: readonly ClusterProjection[] = ['umap', 'pca'];

export interface ClusterOptions {
  /** 2-D projection of the scatter (default 'umap'). */
  projection?: ClusterProjection;
  /** Number of clusters; default: chosen by the silhouette score. */
  k?: number;
  /** Largest k tried when choosing (default 8). */
  maxK?: number;
  /** Seed of k-means' initialisations and of UMAP (default 0). */
  seed?: number;
  /** k-means runs per k, keeping the least inertia (default 10). */
  restarts?: number;
}

export const CLUSTER_DEFAULTS = { projection: 'umap', maxK: 8, seed: 0, restarts: 10 } as const;

/** Features after standardisation: the kept names, their means and deviations, and the z-scores per row. */
export interface Standardised {
  features: string[];
  means: number[];
  stds: number[];
  /** z[i][f]: row i, kept feature f. */
  z: number[][];
  dropped: { feature: string; reason: 'constant' | 'missing' }[];
}

export interface HeadCluster {
  id: number;
  name: string;
  /** The dominant feature and its mean z-score over the cluster's heads. */
  feature: string | null;
  meanZ: number;
  size: number;
  /** Mean z-score of every kept feature over the cluster's heads (the centroid). */
  centroid: Record<string, number>;
}

export interface ClusteredHead {
  layer: number;
  head: number;
  cluster: number;
  clusterName: string;
  x: number;
  y: number;
}

export interface HeadClustering {
  rows: ClusteredHead[];
  clusters: HeadCluster[];
  k: number;
  /** Whether k was chosen by the silhouette score (false: given). */
  chosen: boolean;
  /** Mean silhouette of each k tried (of the given k alone when k was given; NaN where undefined). */
  silhouettes: { k: number; score: number }[];
  /** Mean silhouette of the result (NaN for one cluster or one head per cluster). */
  silhouette: number;
  features: string[];
  dropped: Standardised['dropped'];
  projection: ClusterProjection;
  /** Axis captions of the projection ("UMAP 1", "PC1 (41 %)"). */
  axes: [string, string];
  seed: number;
}

/**
 * Rows of features from a head table: every numeric column of each row except `layer`, `head`
 * and the columns in `exclude` (default: `top_score`, a copy of one of the others), or exactly
 * `columns` when given.
 */
export function headFeatureRows(
  table: readonly ({ layer: number; head: number } & object)[],
  options: { columns?: readonly string[]; exclude?: readonly string[] } = {},
): ClusterInputRow[] {
  const exclude = new Set(['layer', 'head', ...(options.exclude ?? ['top_score'])]);
  return table.map((r) => {
    const rec = r as unknown as Record<string, unknown>;
    const features: Record<string, number> = {};
    const names = options.columns ?? Object.keys(rec).filter((c) => !exclude.has(c) && typeof rec[c] === 'number');
    for (const c of names) {
      const v = rec[c];
      features[c] = typeof v === 'number' ? v : NaN;
    }
    return { layer: r.layer, head: r.head, features };
  });
}

/** The feature names of the rows, in first-seen order. */
function featureNames(rows: readonly ClusterInputRow[]): string[] {
  const seen = new Set<string>();
  for (const r of rows) for (const f of Object.keys(r.features)) seen.add(f);
  return [...seen];
}

/** z-scores of every feature (see the module comment for dropped features and missing values). */
export function standardise(rows: readonly ClusterInputRow[]): Standardised {
  const names = featureNames(rows);
  const n = rows.length;
  const features: string[] = [];
  const means: number[] = [];
  const stds: number[] = [];
  const columns: number[][] = [];
  const dropped: Standardised['dropped'] = [];
  for (const f of names) {
    const vals = rows.map((r) => r.features[f] ?? NaN);
    const finite = vals.filter((v) => Number.isFinite(v));
    if (finite.length === 0) {
      dropped.push({ feature: f, reason: 'missing' });
      continue;
    }
    let lo = Infinity;
    let hi = -Infinity;
    let sum = 0;
    for (const v of finite) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
      sum += v;
    }
    if (hi - lo <= 1e-12 * Math.max(1, Math.abs(hi), Math.abs(lo))) {
      dropped.push({ feature: f, reason: 'constant' });
      continue;
    }
    const mean = sum / finite.length;
    let ss = 0;
    for (const v of finite) ss += (v - mean) * (v - mean);
    const std = Math.sqrt(ss / finite.length);
    features.push(f);
    means.push(mean);
    stds.push(std);
    columns.push(vals.map((v) => (Number.isFinite(v) ? (v - mean) / std : 0)));
  }
  const z = Array.from({ length: n }, (_, i) => columns.map((c) => c[i]!));
  return { features, means, stds, z, dropped };
}

function distance(a: readonly number[], b: readonly number[]): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i]! - b[i]!) ** 2;
  return Math.sqrt(s);
}

/**
 * Mean silhouette score of a labelling (Euclidean): for each point, a = mean distance to the
 * others of its cluster, b = the smallest mean distance to another cluster, s = (b − a) / max(a, b);
 * 0 for points alone in their cluster. NaN unless 2 ≤ number of clusters ≤ n − 1.
 */
export function silhouette(points: readonly (readonly number[])[], labels: readonly number[]): number {
  const n = points.length;
  const ids = [...new Set(labels)];
  if (ids.length < 2 || ids.length > n - 1) return NaN;
  const index = new Map(ids.map((id, i) => [id, i]));
  const sizes = new Array<number>(ids.length).fill(0);
  for (const l of labels) sizes[index.get(l)!]!++;
  let total = 0;
  const sums = new Float64Array(ids.length);
  for (let i = 0; i < n; i++) {
    sums.fill(0);
    for (let j = 0; j < n; j++) if (j !== i) sums[index.get(labels[j]!)!]! += distance(points[i]!, points[j]!);
    const own = index.get(labels[i]!)!;
    if (sizes[own]! <= 1) continue;
    const a = sums[own]! / (sizes[own]! - 1);
    let b = Infinity;
    for (let c = 0; c < ids.length; c++) if (c !== own) b = Math.min(b, sums[c]! / sizes[c]!);
    const m = Math.max(a, b);
    total += m > 0 ? (b - a) / m : 0;
  }
  return total / n;
}

/** k-means from `restarts` seeds, the least inertia kept; labels renumbered by first point. */
export function kMeansBest(points: readonly (readonly number[])[], k: number, seed: number, restarts: number): { labels: number[]; inertia: number } {
  const data = points.map((p) => [...p]);
  let best: { labels: number[]; inertia: number } | null = null;
  for (let r = 0; r < restarts; r++) {
    const res = kmeans(data, k, { seed: (seed + r) >>> 0, initialization: 'kmeans++', maxIterations: 300 });
    let inertia = 0;
    for (let i = 0; i < data.length; i++) inertia += distance(data[i]!, res.centroids[res.clusters[i]!]!) ** 2;
    if (!best || inertia < best.inertia - 1e-12) best = { labels: res.clusters, inertia };
  }
  // Canonical ids: in order of each cluster's first point.
  const order = new Map<number, number>();
  for (const l of best!.labels) if (!order.has(l)) order.set(l, order.size);
  return { labels: best!.labels.map((l) => order.get(l)!), inertia: best!.inertia };
}

function distinctCount(points: readonly (readonly number[])[]): number {
  return new Set(points.map((p) => p.map((v) => v.toPrecision(12)).join(','))).size;
}

/** Names of clusters by their dominant features (see the module comment). */
function nameClusters(features: readonly string[], centroids: readonly number[][]): { name: string; feature: string | null; meanZ: number }[] {
  // Each cluster's features ranked: positive means from the largest, else the most negative.
  const ranked = centroids.map((c) => {
    const idx = features.map((_, f) => f);
    const pos = idx.filter((f) => c[f]! > 0).sort((a, b) => c[b]! - c[a]!);
    const neg = idx.filter((f) => c[f]! <= 0).sort((a, b) => c[a]! - c[b]!);
    return pos.length ? [...pos, ...neg] : neg;
  });
  const term = (c: number, f: number) => `${features[f]} ${centroids[c]![f]! > 0 ? '↑' : '↓'}`;
  const depth = centroids.map(() => 1);
  // A cluster at the mean of every feature (k = 1: all heads) has no distinctive one.
  const flat = centroids.map((c) => c.every((v) => Math.abs(v) < 1e-9));
  const nameOf = (c: number) =>
    features.length === 0 ? 'no varying feature' : flat[c] ? 'all heads alike' : ranked[c]!.slice(0, depth[c]).map((f) => term(c, f)).join(', ');
  for (let round = 0; round < features.length; round++) {
    const names = centroids.map((_, c) => nameOf(c));
    let clash = false;
    names.forEach((nm, c) => {
      if (names.indexOf(nm) !== names.lastIndexOf(nm) && depth[c]! < features.length) {
        depth[c]!++;
        clash = true;
      }
    });
    if (!clash) break;
  }
  return centroids.map((c, i) => {
    const f = flat[i] ? undefined : ranked[i]![0];
    return { name: nameOf(i), feature: f === undefined ? null : features[f]!, meanZ: f === undefined ? NaN : c[f]! };
  });
}

/** 2-D coordinates of the standardised rows, and the axes' captions. */
export function projectHeads(z: readonly (readonly number[])[], projection: ClusterProjection, seed: number): { points: [number, number][]; axes: [string, string] } {
  const n = z.length;
  const d = z[0]?.length ?? 0;
  if (n === 0) return { points: [], axes: ['', ''] };
  if (d === 0 || n === 1) return { points: z.map(() => [0, 0]), axes: projection === 'umap' ? ['UMAP 1', 'UMAP 2'] : ['PC1', 'PC2'] };
  if (projection === 'pca') {
    const pca = new PCA(z.map((r) => [...r]), { center: true, scale: false });
    const comps = Math.min(2, d, n);
    const scores = pca.predict(z.map((r) => [...r]), { nComponents: comps }).to2DArray();
    const loadings = pca.getLoadings().to2DArray();
    const explained = pca.getExplainedVariance();
    const points: [number, number][] = scores.map((s) => [s[0] ?? 0, s[1] ?? 0]);
    for (let c = 0; c < comps; c++) {
      const l = loadings[c]!;
      let big = 0;
      for (const v of l) if (Math.abs(v) > Math.abs(big)) big = v;
      if (big < 0) for (const p of points) p[c] = -p[c]!;
    }
    const pct = (c: number) => (explained[c] !== undefined && Number.isFinite(explained[c]) ? ` (${Math.round(explained[c]! * 100)} %)` : '');
    return { points, axes: [`PC1${pct(0)}`, `PC2${pct(1)}`] };
  }
  if (n < 3) return projectHeads(z, 'pca', seed);
  const umap = new UMAP({ nComponents: 2, nNeighbors: Math.min(15, n - 1), minDist: 0.1, random: mulberry32(seed) });
  const emb = umap.fit(z.map((r) => [...r]));
  return { points: emb.map((p) => [p[0]!, p[1]!]), axes: ['UMAP 1', 'UMAP 2'] };
}

function checkInt(value: number | undefined, what: string, lo: number, hi: number): void {
  if (value === undefined) return;
  if (!Number.isInteger(value) || value < lo || value > hi) throw new AttnscopeError(`${what}: expected an integer from ${lo} to ${hi}, got ${value}`);
}

/** Clusters heads by their features (see the module comment). */
export function clusterHeads(rows: readonly ClusterInputRow[], options: ClusterOptions = {}): HeadClustering {
  const n = rows.length;
  const projection = options.projection ?? CLUSTER_DEFAULTS.projection;
  if (!CLUSTER_PROJECTIONS.includes(projection)) throw new AttnscopeError(`projection: expected ${CLUSTER_PROJECTIONS.join(' or ')}, got '${String(projection)}'`);
  const seed = options.seed ?? CLUSTER_DEFAULTS.seed;
  checkInt(seed, 'seed', 0, 0xffffffff);
  const restarts = options.restarts ?? CLUSTER_DEFAULTS.restarts;
  checkInt(restarts, 'restarts', 1, 1000);
  const maxK = options.maxK ?? CLUSTER_DEFAULTS.maxK;
  checkInt(maxK, 'maxK', 2, 1000);
  if (n === 0) throw new AttnscopeError('clustering needs at least one head');
  checkInt(options.k, 'k (clusters)', 1, n);

  const std = standardise(rows);
  const z = std.z;
  const distinct = std.features.length === 0 ? 1 : distinctCount(z);
  let k: number;
  let labels: number[];
  const silhouettes: { k: number; score: number }[] = [];
  const chosen = options.k === undefined;
  if (options.k !== undefined) {
    if (options.k > distinct) throw new AttnscopeError(`k (clusters) ${options.k}: the heads have only ${distinct} distinct profile${distinct === 1 ? '' : 's'}`);
    k = options.k;
    labels = k === 1 ? z.map(() => 0) : kMeansBest(z, k, seed, restarts).labels;
    silhouettes.push({ k, score: silhouette(z, labels) });
  } else {
    const top = Math.min(maxK, n - 1, distinct);
    k = 1;
    labels = z.map(() => 0);
    let bestScore = -Infinity;
    for (let kk = 2; kk <= top; kk++) {
      const res = kMeansBest(z, kk, seed, restarts);
      const score = silhouette(z, res.labels);
      silhouettes.push({ k: kk, score });
      if (score > bestScore + 1e-12) {
        bestScore = score;
        k = kk;
        labels = res.labels;
      }
    }
  }
  const d = std.features.length;
  const centroids = Array.from({ length: k }, () => new Array<number>(d).fill(0));
  const sizes = new Array<number>(k).fill(0);
  labels.forEach((l, i) => {
    sizes[l]!++;
    for (let f = 0; f < d; f++) centroids[l]![f]! += z[i]![f]!;
  });
  for (let c = 0; c < k; c++) for (let f = 0; f < d; f++) centroids[c]![f]! /= sizes[c]! || 1;
  const names = nameClusters(std.features, centroids);
  const clusters: HeadCluster[] = names.map((nm, c) => ({
    id: c,
    name: nm.name,
    feature: nm.feature,
    meanZ: nm.meanZ,
    size: sizes[c]!,
    centroid: Object.fromEntries(std.features.map((f, i) => [f, centroids[c]![i]!])),
  }));
  const { points, axes } = projectHeads(z, projection, seed);
  return {
    rows: rows.map((r, i) => ({ layer: r.layer, head: r.head, cluster: labels[i]!, clusterName: clusters[labels[i]!]!.name, x: points[i]![0], y: points[i]![1] })),
    clusters,
    k,
    chosen,
    silhouettes,
    silhouette: silhouette(z, labels),
    features: std.features,
    dropped: std.dropped,
    projection,
    axes,
    seed,
  };
}

/** The cluster table's columns. */
export const CLUSTER_TABLE_HEADER = ['layer', 'head', 'cluster', 'cluster_name', 'x', 'y'] as const;

const cell = (v: number): number | null => (Number.isFinite(v) ? Number(v.toPrecision(6)) : null);

/** The cluster table as plain JSON objects (one per head). */
export function clusterTableJsonRows(c: HeadClustering): { layer: number; head: number; cluster: number; cluster_name: string; x: number | null; y: number | null }[] {
  return c.rows.map((r) => ({ layer: r.layer, head: r.head, cluster: r.cluster, cluster_name: r.clusterName, x: cell(r.x), y: cell(r.y) }));
}

function csvField(s: string): string {
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** The cluster table as CSV (RFC 4180; header CLUSTER_TABLE_HEADER). */
export function clusterTableCsv(c: HeadClustering): string {
  const lines = [CLUSTER_TABLE_HEADER.join(',')];
  for (const r of clusterTableJsonRows(c)) lines.push([r.layer, r.head, r.cluster, csvField(r.cluster_name), r.x ?? '', r.y ?? ''].join(','));
  return `${lines.join('\n')}\n`;
}

/** The whole result as JSON: parameters, clusters (names, sizes, centroids), silhouettes and the table. */
export function clusteringJson(c: HeadClustering): Record<string, unknown> {
  return {
    projection: c.projection,
    seed: c.seed,
    k: c.k,
    kChosenBySilhouette: c.chosen,
    silhouette: cell(c.silhouette),
    silhouettes: c.silhouettes.map((s) => ({ k: s.k, score: cell(s.score) })),
    features: c.features,
    dropped: c.dropped,
    axes: c.axes,
    clusters: c.clusters.map((cl) => ({ id: cl.id, name: cl.name, feature: cl.feature, meanZ: cell(cl.meanZ), size: cl.size, centroid: Object.fromEntries(Object.entries(cl.centroid).map(([f, v]) => [f, cell(v)])) })),
    rows: clusterTableJsonRows(c),
  };
}
