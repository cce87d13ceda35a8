/**
 * Head clusters scatter layout on clusterings written by hand: where each point goes (one scale
 * for both PCA axes, each UMAP axis filling the plot), colours by cluster, labels "L3 H5", the
 * legend's names and sizes, the selected ring, data attributes the page reads, and what the SVG
 * writer makes of it (names escaped, a real trace through renderSvg('clusters')).
 */
import { describe, expect, it } from 'vitest';
import type { HeadClustering } from '../src/analysis/cluster.js';
import { type Item, type RectItem, type TextItem, textWidth } from '../src/views/layout/common.js';
import { CLUSTER_PLOT, headClustersLayout } from '../src/views/layout/head-clusters.js';
import { renderSvg } from '../src/views/svg/index.js';
import { renderClusterScatter } from '../src/views/svg/head-clusters.js';
import { DARK, LIGHT } from '../src/views/theme.js';
import { handTrace } from './helpers/hand-trace.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

/** Four heads in two clusters, at hand-picked coordinates. */
function clustering(projection: 'pca' | 'umap', names: [string, string] = ['sink ↑', 'previous_token ↑']): HeadClustering {
  const pts: [number, number, number, number, number][] = [
    // layer, head, cluster, x, y
    [0, 0, 0, -2, 1],
    [0, 1, 1, 2, 0],
    [1, 0, 0, -1, 0.5],
    [1, 1, 1, 4, -1],
  ];
  return {
    rows: pts.map(([layer, head, cluster, x, y]) => ({ layer, head, cluster, clusterName: names[cluster]!, x, y })),
    clusters: [
      { id: 0, name: names[0], feature: 'sink', meanZ: 1.2, size: 2, centroid: { sink: 1.2, entropy: -0.8, self: 0.1 } },
      { id: 1, name: names[1], feature: 'previous_token', meanZ: 1.1, size: 2, centroid: { previous_token: 1.1, sink: -1.2, self: -0.1 } },
    ],
    k: 2,
    chosen: true,
    silhouettes: [{ k: 2, score: 0.5 }, { k: 3, score: NaN }],
    silhouette: 0.5,
    features: ['sink', 'entropy', 'self', 'previous_token'],
    dropped: [{ feature: 'induction', reason: 'missing' }],
    projection,
    axes: projection === 'pca' ? ['PC1 (70 %)', 'PC2 (20 %)'] : ['UMAP 1', 'UMAP 2'],
    seed: 0,
  };
}

const points = (items: readonly Item[]) => items.filter((it): it is RectItem => it.kind === 'rect' && (it.className ?? '').split(' ').includes('head-point'));
const texts = (items: readonly Item[], cls: string) => items.filter((it): it is TextItem => it.kind === 'text' && it.className === cls);

describe('head clusters layout', () => {
  it('PCA: one scale for both axes, second axis up, the points centred in the plot', () => {
    const L = headClustersLayout(clustering('pca'), LIGHT);
    const P = points(L.items);
    expect(P).toHaveLength(4);
    const centre = (r: RectItem) => [r.x + r.width / 2, r.y + r.height / 2] as const;
    const [a, b, , d] = P.map(centre);
    // x spans 6 (−2 … 4), y spans 2: the larger span fills the inner side.
    const inner = L.plot.width * (1 - 2 * CLUSTER_PLOT.pad) - 2 * L.radius;
    const unit = inner / 6;
    expect(d![0] - a![0]).toBeCloseTo(6 * unit, 9);
    // y: head (0,0) at 1, head (0,1) at 0 → one unit higher on the page (smaller y).
    expect(b![1] - a![1]).toBeCloseTo(1 * unit, 9);
    const midX = (a![0] + d![0]) / 2;
    expect(midX).toBeCloseTo(L.plot.x + L.plot.width / 2, 9);
    const ys = P.map((p) => centre(p)[1]);
    expect((Math.min(...ys) + Math.max(...ys)) / 2).toBeCloseTo(L.plot.y + L.plot.height / 2, 9);
    for (const p of P) {
      expect(p.rx).toBe(p.width / 2);
      expect(p.x).toBeGreaterThanOrEqual(L.plot.x);
      expect(p.x + p.width).toBeLessThanOrEqual(L.plot.x + L.plot.width);
    }
  });

  it('UMAP: each axis fills the plot', () => {
    const L = headClustersLayout(clustering('umap'), LIGHT);
    const cs = points(L.items).map((r) => [r.x + r.width / 2, r.y + r.height / 2]);
    const inner = L.plot.width * (1 - 2 * CLUSTER_PLOT.pad) - 2 * L.radius;
    const xs = cs.map((c) => c[0]!);
    const ys = cs.map((c) => c[1]!);
    expect(Math.max(...xs) - Math.min(...xs)).toBeCloseTo(inner, 9);
    expect(Math.max(...ys) - Math.min(...ys)).toBeCloseTo(inner, 9);
  });

  it('colours by cluster, labels "L1 H0", data for the page, tooltips, the legend with names and sizes, the selected ring', () => {
    const c = clustering('pca');
    const L = headClustersLayout(c, DARK, { selected: { layer: 1, head: 1 } });
    const P = points(L.items);
    expect(P.map((p) => p.data)).toEqual([
      { layer: 0, head: 0, cluster: 0 },
      { layer: 0, head: 1, cluster: 1 },
      { layer: 1, head: 0, cluster: 0 },
      { layer: 1, head: 1, cluster: 1 },
    ]);
    expect(P[0]!.fill).toBe(P[2]!.fill);
    expect(P[1]!.fill).toBe(P[3]!.fill);
    expect(P[0]!.fill).not.toBe(P[1]!.fill);
    expect(P[2]!.tip).toBe('L1 H0 · cluster 0: sink ↑');
    expect(texts(L.items, 'point-label').map((t) => t.text)).toEqual(['L0 H0', 'L0 H1', 'L1 H0', 'L1 H1']);
    // Labels are painted before the points (no label hides a point).
    const firstPoint = L.items.findIndex((it) => it.className?.startsWith('head-point'));
    const lastLabel = L.items.map((it) => it.className).lastIndexOf('point-label');
    expect(lastLabel).toBeLessThan(firstPoint);
    expect(texts(L.items, 'cluster-name').map((t) => t.text)).toEqual(['sink ↑ (2)', 'previous_token ↑ (2)']);
    // What else sets a cluster apart (|mean z| ≥ 0.5 beside the named feature).
    expect(texts(L.items, 'cluster-also').map((t) => t.text)).toEqual(['then entropy ↓ −0.8', 'then sink ↓ −1.2']);
    const swatches = L.items.filter((it): it is RectItem => it.kind === 'rect' && it.className === 'legend-swatch');
    expect(swatches.map((s) => s.fill)).toEqual([P[0]!.fill, P[1]!.fill]);
    expect(texts(L.items, 'legend-caption')[0]!.text).toBe('2 clusters (k-means, k by silhouette) · silhouette 0.50');
    const ringed = P.filter((p) => p.className === 'head-point selected');
    expect(ringed.map((p) => p.data)).toEqual([{ layer: 1, head: 1, cluster: 1 }]);
    expect(ringed[0]!.stroke).toBe(DARK.text);
    expect(texts(L.items, 'cluster-note').map((t) => t.text).join(' ')).toMatch(/k-means on 4 standardised features of 4 heads; the PCA projection only places them .*induction \(missing\)/);
    expect(L.background).toBe(DARK.background);
  });

  it('labels only while there are at most 64 heads (always in the tooltip)', () => {
    const base = clustering('umap');
    const many: HeadClustering = { ...base, rows: Array.from({ length: 72 }, (_, i) => ({ layer: Math.floor(i / 12), head: i % 12, cluster: i % 2, clusterName: base.clusters[i % 2]!.name, x: i, y: (i * 7) % 13 })) };
    const L = headClustersLayout(many, LIGHT);
    expect(texts(L.items, 'point-label')).toHaveLength(0);
    expect(points(L.items)[71]!.tip).toBe('L5 H11 · cluster 1: previous_token ↑');
    expect(texts(headClustersLayout(many, LIGHT, { pointLabels: true }).items, 'point-label')).toHaveLength(72);
  });

  it('places each label beside its point where it overlaps no point and no other label', () => {
    const base = clustering('pca');
    // Twelve heads on a tight 4 × 3 grid (≈ 44 px apart) and one far away: "right of the point"
    // would run into the next point of the row.
    const rows = Array.from({ length: 12 }, (_, i) => ({ layer: Math.floor(i / 4), head: i % 4, cluster: i % 2, clusterName: '', x: 0.1 * (i % 4), y: 0.1 * Math.floor(i / 4) }));
    rows.push({ layer: 3, head: 0, cluster: 0, clusterName: '', x: 1, y: 0 });
    const L = headClustersLayout({ ...base, rows }, LIGHT);
    const labels = texts(L.items, 'point-label');
    expect(labels).toHaveLength(13);
    const P = points(L.items);
    expect(P[1]!.x - P[0]!.x).toBeLessThan(textWidth('L0 H0', labels[0]!.size) + 2 * L.radius);
    expect(labels.filter((t) => t.anchor === 'middle').length).toBeGreaterThan(0);
    const boxOf = (t: TextItem) => {
      const w = textWidth(t.text, t.size);
      const x0 = t.anchor === 'end' ? t.x - w : t.anchor === 'middle' ? t.x - w / 2 : t.x;
      // Baseline y: the glyphs span about 0.8 of the size above it and 0.2 below.
      return { x0, x1: x0 + w, y0: t.y - 0.8 * t.size, y1: t.y + 0.2 * t.size };
    };
    const overlap = (a: { x0: number; x1: number; y0: number; y1: number }, b: typeof a) => a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1;
    const dots = points(L.items).map((p) => ({ x0: p.x, x1: p.x + p.width, y0: p.y, y1: p.y + p.height }));
    labels.forEach((t, i) => {
      const b = boxOf(t);
      for (const d of dots) expect(overlap(b, d)).toBe(false);
      labels.forEach((u, j) => {
        if (j !== i) expect(overlap(b, boxOf(u))).toBe(false);
      });
      expect(b.x0).toBeGreaterThanOrEqual(L.plot.x);
      expect(b.x1).toBeLessThanOrEqual(L.plot.x + L.plot.width);
    });
  });

  it('SVG: cluster names escaped, points as circles with their data and tooltips', () => {
    const svg = renderClusterScatter(clustering('pca', ['<b>&"x"', 'y ↑']), { title: 'T <1>' });
    const doc = parseXml(svg);
    const rects = findAll(doc, 'rect', (a) => (a.class ?? '').startsWith('head-point'));
    expect(rects).toHaveLength(4);
    expect(rects[0]!.attrs['data-layer']).toBe('0');
    expect(rects[3]!.attrs['data-head']).toBe('1');
    expect(Number(rects[0]!.attrs.rx)).toBe(Number(rects[0]!.attrs.width) / 2);
    const names = findAll(doc, 'text', (a) => a.class === 'cluster-name').map(textOf);
    expect(names[0]).toBe('<b>&"x" (2)');
    expect(svg).not.toContain('<b>&');
    expect(findAll(doc, 'text').map(textOf)).toContain('T <1>');
  });

  it('renderSvg("clusters") clusters a trace\'s heads and draws every one', () => {
    const trace = handTrace(Array.from({ length: 10 }, (_, i) => `t${i}`), {
      layers: 3,
      heads: 4,
      weight: (_l, h, q, k) => (k > q ? 0 : h === 0 ? (k === Math.max(0, q - 1) ? 1 : 0.03) : h === 1 ? (k === 0 ? 1 : 0.03) : 1 + h * k * 0.01),
    });
    const svg = renderSvg('clusters', trace, { projection: 'pca' });
    const doc = parseXml(svg);
    const rects = findAll(doc, 'rect', (a) => (a.class ?? '').startsWith('head-point'));
    expect(rects.map((r) => `${r.attrs['data-layer']}.${r.attrs['data-head']}`)).toEqual(['0.0', '0.1', '0.2', '0.3', '1.0', '1.1', '1.2', '1.3', '2.0', '2.1', '2.2', '2.3']);
    // Heads planted alike share a cluster.
    const clusterOf = (l: number, h: number) => rects[l * 4 + h]!.attrs['data-cluster'];
    for (let l = 1; l < 3; l++) for (let h = 0; h < 4; h++) expect(clusterOf(l, h)).toBe(clusterOf(0, h));
    expect(clusterOf(0, 0)).not.toBe(clusterOf(0, 1));
    expect(findAll(doc, 'text').map(textOf)[0]).toBe('hand-made · self-attention · heads clustered by their metrics (PCA)');
  });
});
