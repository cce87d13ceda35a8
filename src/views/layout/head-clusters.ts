/**
 * Head clusters scatter, computed once as plain data: every head of a stack as a point at its
 * 2-D projection (analysis/cluster.ts: UMAP or PCA of the standardised metric profiles), filled
 * with its cluster's colour and labelled "L3 H5"; a legend naming each cluster by its dominant
 * feature with its size; the projection's axis captions and a note saying what was clustered.
 * PCA axes share one scale (a unit is as long across as up, so distances on the page compare);
 * UMAP axes have no unit and each fills the plot.
 * The SVG writer (src/views/svg/head-clusters.ts) and the page (web/views/head-clusters.ts) paint
 * it; points carry data-layer / data-head / data-cluster so that the page can open a head.
 *
 * Isomorphic: imports nothing from Node.
 */
import { type ClusterProjection, type HeadCluster, type HeadClustering, clusterHeads, headFeatureRows } from '../../analysis/cluster.js';
import { headTable } from '../../analysis/head-types.js';
import type { StackName, Trace } from '../../core/trace.js';
import { stepWindow } from '../generation.js';
import { headColors } from '../colors.js';
import { type CommonViewOptions, resolveCommon } from '../svg/common.js';
import { LAYOUT, type Theme } from '../theme.js';
import { type Item, type Picture, textWidth, wrapText } from './common.js';

export interface HeadClustersOptions extends CommonViewOptions {
  /** 2-D projection (default umap). */
  projection?: ClusterProjection;
  /** Number of clusters (default: chosen by the silhouette score). */
  clusters?: number;
  /** Seed of k-means and UMAP (default 0). */
  clusterSeed?: number;
  /** Measure the heads without the first token (TransformerLens' exclude_bos). */
  excludeFirstToken?: boolean;
  /** A clustering computed elsewhere (e.g. on the repeated-token probe) instead of the trace's. */
  clustering?: HeadClustering;
  /** Write "L3 H5" beside every point (default: at most 64 heads; always in the tooltip). */
  pointLabels?: boolean;
}

/**
 * A generation trace as it was at `step` (stepWindow: the first promptLength + step tokens): the
 * stack's attention cut to that window, its tokens with it. Score terms, queries and keys are left
 * out (masks then come from zero weights, as for traces written without them).
 */
export function traceAtStep(trace: Trace, stack: StackName, step: number): Trace {
  const w = stepWindow(trace, stack, step);
  const s = trace.attention[stack]!;
  const [heads, nq, nk] = s.dims;
  if (w.queries === nq && w.keys === nk) return trace;
  const layers = s.layers.map((a) => {
    const out = new Float32Array(heads * w.queries * w.keys);
    for (let h = 0; h < heads; h++) {
      for (let q = 0; q < w.queries; q++) {
        const from = (h * nq + q) * nk;
        out.set(a.subarray(from, from + w.keys), (h * w.queries + q) * w.keys);
      }
    }
    return out;
  });
  const cut: Trace = { model: trace.model, tokens: trace.tokens, attention: { [stack]: { dims: [heads, w.queries, w.keys], layers } } };
  if (trace.decoderTokens) cut.decoderTokens = trace.decoderTokens;
  if (stack === 'self') cut.tokens = trace.tokens.slice(0, w.keys);
  else if (stack !== 'encoder') cut.decoderTokens = (trace.decoderTokens ?? []).slice(0, w.queries);
  return cut;
}

/** The clustering a view shows: the given one, or the trace's head table (at `step`) clustered with the options. */
export function headClusteringOf(trace: Trace, options: HeadClustersOptions = {}): HeadClustering {
  if (options.clustering) return options.clustering;
  const { stack } = resolveCommon(trace, options);
  const at = options.step === undefined ? trace : traceAtStep(trace, stack, options.step);
  const table = headTable(at, stack, { excludeFirstToken: options.excludeFirstToken });
  return clusterHeads(headFeatureRows(table), { projection: options.projection, k: options.clusters, seed: options.clusterSeed });
}

export interface ClusterPoint {
  layer: number;
  head: number;
  cluster: number;
  /** Centre on the picture. */
  x: number;
  y: number;
  color: string;
  label: string;
}

export interface HeadClustersLayout extends Picture {
  points: ClusterPoint[];
  /** The plot area (points inside it). */
  plot: { x: number; y: number; width: number; height: number };
  /** Colour of each cluster (index = cluster id). */
  colors: string[];
  radius: number;
}

export interface HeadClustersPlace {
  /** y where the picture starts (below a heading). */
  top?: number;
  /** Space to fill (default: a 520 px square plot). */
  frame?: { width?: number; height?: number };
  /** A head drawn ringed (the page's current head). */
  selected?: { layer: number; head: number } | null;
  pointLabels?: boolean;
}

export const CLUSTER_PLOT = { side: 520, minSide: 280, radius: 6, pad: 0.06, legendSwatch: 10 } as const;

/** The label of a head: "L3 H5". */
export function headLabel(layer: number, head: number): string {
  return `L${layer} H${head}`;
}

/** The features that set a cluster apart after its name's: "then entropy ↑ 1.2, sparsity ↓ −0.9" (mean z-scores). */
export function alsoLine(cl: HeadCluster, count = 2): string {
  const named = new Set(cl.name.split(', ').map((t) => t.replace(/ [↑↓]$/, '')));
  const rest = Object.entries(cl.centroid)
    .filter(([f, v]) => !named.has(f) && Math.abs(v) >= 0.5)
    .sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]))
    .slice(0, count);
  return rest.length ? `then ${rest.map(([f, v]) => `${f} ${v > 0 ? '↑' : '↓'} ${v > 0 ? '' : '−'}${Math.abs(v).toFixed(1)}`).join(', ')}` : '';
}

/** Lays out the scatter of a clustering (see the file comment). */
export function headClustersLayout(c: HeadClustering, theme: Theme, place: HeadClustersPlace = {}): HeadClustersLayout {
  const m = LAYOUT.margin;
  const sfs = LAYOUT.smallFontSize;
  const top = place.top ?? m;
  const colors = headColors(Math.max(1, c.k));
  const n = c.rows.length;
  const r = n > 200 ? 4 : CLUSTER_PLOT.radius;
  const showLabels = place.pointLabels ?? n <= 64;

  // Legend: caption, then one swatch and name per cluster.
  const caption = `${c.k} cluster${c.k === 1 ? '' : 's'} (k-means${c.chosen ? ', k by silhouette' : ''})${Number.isFinite(c.silhouette) ? ` · silhouette ${c.silhouette.toFixed(2)}` : ''}`;
  const legendLines = c.clusters.map((cl) => `${cl.name} (${cl.size})`);
  const legendW = Math.max(
    textWidth(caption, sfs),
    ...legendLines.map((l) => CLUSTER_PLOT.legendSwatch + 8 + textWidth(l, LAYOUT.fontSize)),
    ...c.clusters.map((cl) => CLUSTER_PLOT.legendSwatch + 8 + textWidth(alsoLine(cl), sfs)),
  );

  // Plot: a square filling the frame beside the legend and the axis captions.
  const axisBand = sfs + 10;
  const left = m + axisBand;
  const frameW = place.frame?.width;
  const frameH = place.frame?.height;
  let side: number = CLUSTER_PLOT.side;
  if (frameW !== undefined) side = Math.min(side * 2, frameW - left - 24 - legendW - m);
  if (frameH !== undefined) side = Math.min(side, frameH - top - axisBand - 60 - m);
  side = Math.max(CLUSTER_PLOT.minSide, side);
  const plot = { x: left, y: top, width: side, height: side };

  // The points' box centred in the plot.
  const xs = c.rows.map((p) => p.x);
  const ys = c.rows.map((p) => p.y);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs);
  const y0 = Math.min(...ys);
  const y1 = Math.max(...ys);
  // PCA keeps distances: one scale for both axes. UMAP's axes have no unit: each fills the plot.
  const inner = side * (1 - 2 * CLUSTER_PLOT.pad) - 2 * r;
  const equal = c.projection === 'pca';
  const sx = inner / ((equal ? Math.max(x1 - x0, y1 - y0) : x1 - x0) || 1);
  const sy = inner / ((equal ? Math.max(x1 - x0, y1 - y0) : y1 - y0) || 1);
  const cx = plot.x + side / 2;
  const cy = plot.y + side / 2;
  const mx = (x0 + x1) / 2;
  const my = (y0 + y1) / 2;

  const items: Item[] = [];
  items.push({ kind: 'rect', x: plot.x, y: plot.y, width: side, height: side, fill: theme.panel, stroke: theme.grid, strokeWidth: 1, className: 'plot-frame' });
  items.push({ kind: 'text', x: plot.x + side / 2, y: plot.y + side + sfs + 6, text: c.axes[0], size: sfs, fill: theme.muted, anchor: 'middle', className: 'axis-name' });
  items.push({ kind: 'text', x: plot.x - 8, y: plot.y + side / 2, text: c.axes[1], size: sfs, fill: theme.muted, anchor: 'middle', rotate: -90, className: 'axis-name' });

  const points: ClusterPoint[] = c.rows.map((p) => ({
    layer: p.layer,
    head: p.head,
    cluster: p.cluster,
    x: cx + (p.x - mx) * sx,
    // Screen y grows downwards: the projection's second axis up.
    y: cy - (p.y - my) * sy,
    color: colors[p.cluster] ?? theme.muted,
    label: headLabel(p.layer, p.head),
  }));
  // Labels first, so that no label ever hides a point.
  if (showLabels) {
    const fs = Math.max(8, sfs - 1);
    // Each label goes right of its point, else left, above or below — the first spot that stays in
    // the plot and overlaps no point and no label placed before it; the right side when none does.
    type Box = { x0: number; y0: number; x1: number; y1: number };
    const taken: Box[] = points.map((p) => ({ x0: p.x - r, y0: p.y - r, x1: p.x + r, y1: p.y + r }));
    const hits = (b: Box, skip: number) => taken.some((t, i) => i !== skip && b.x0 < t.x1 && t.x0 < b.x1 && b.y0 < t.y1 && t.y0 < b.y1);
    const inside = (b: Box) => b.x0 >= plot.x + 1 && b.x1 <= plot.x + side - 1 && b.y0 >= plot.y + 1 && b.y1 <= plot.y + side - 1;
    points.forEach((p, i) => {
      const w = textWidth(p.label, fs);
      const h = fs;
      const spots: { x: number; y: number; anchor: 'start' | 'end' | 'middle'; box: Box }[] = [
        { x: p.x + r + 3, y: p.y + fs * 0.35, anchor: 'start', box: { x0: p.x + r + 3, y0: p.y - h / 2, x1: p.x + r + 3 + w, y1: p.y + h / 2 } },
        { x: p.x - r - 3, y: p.y + fs * 0.35, anchor: 'end', box: { x0: p.x - r - 3 - w, y0: p.y - h / 2, x1: p.x - r - 3, y1: p.y + h / 2 } },
        { x: p.x, y: p.y - r - 3, anchor: 'middle', box: { x0: p.x - w / 2, y0: p.y - r - 3 - h, x1: p.x + w / 2, y1: p.y - r - 3 } },
        { x: p.x, y: p.y + r + 3 + fs * 0.8, anchor: 'middle', box: { x0: p.x - w / 2, y0: p.y + r + 3, x1: p.x + w / 2, y1: p.y + r + 3 + h } },
      ];
      const spot = spots.find((o) => inside(o.box) && !hits(o.box, i)) ?? spots.find((o) => inside(o.box)) ?? spots[0]!;
      taken.push(spot.box);
      items.push({
        kind: 'text', x: spot.x, y: spot.y, text: p.label, size: fs, fill: theme.muted, anchor: spot.anchor,
        className: 'point-label', data: { layer: p.layer, head: p.head },
      });
    });
  }

  const sel = place.selected;
  for (const p of points) {
    const name = c.clusters[p.cluster]?.name ?? '';
    const selected = sel != null && sel.layer === p.layer && sel.head === p.head;
    items.push({
      kind: 'rect',
      x: p.x - r,
      y: p.y - r,
      width: 2 * r,
      height: 2 * r,
      rx: r,
      fill: p.color,
      stroke: selected ? theme.text : theme.background,
      strokeWidth: selected ? 2.5 : 1,
      className: `head-point${selected ? ' selected' : ''}`,
      data: { layer: p.layer, head: p.head, cluster: p.cluster },
      tip: `${p.label} · cluster ${p.cluster}: ${name}`,
    });
  }
  const lx = plot.x + side + 24;
  let ly = plot.y + sfs;
  items.push({ kind: 'text', x: lx, y: ly, text: caption, size: sfs, fill: theme.muted, className: 'legend-caption' });
  ly += 10;
  c.clusters.forEach((cl, i) => {
    ly += LAYOUT.fontSize + 8;
    const s = CLUSTER_PLOT.legendSwatch;
    items.push({ kind: 'rect', x: lx, y: ly - s + 1, width: s, height: s, rx: s / 2, fill: colors[i] ?? theme.muted, className: 'legend-swatch', data: { cluster: cl.id } });
    items.push({ kind: 'text', x: lx + s + 8, y: ly, text: legendLines[i]!, size: LAYOUT.fontSize, fill: theme.text, className: 'cluster-name', data: { cluster: cl.id } });
    const also = alsoLine(cl);
    if (also) {
      ly += sfs + 4;
      items.push({ kind: 'text', x: lx + s + 8, y: ly, text: also, size: sfs, fill: theme.muted, className: 'cluster-also', data: { cluster: cl.id } });
    }
  });

  // What was clustered, wrapped to the picture's width.
  const width = Math.max(lx + legendW, plot.x + side) + m;
  const dropped = c.dropped.length ? ` · dropped: ${c.dropped.map((d) => `${d.feature} (${d.reason})`).join(', ')}` : '';
  const note = `k-means on ${c.features.length} standardised features of ${n} heads; the ${c.projection === 'umap' ? 'UMAP' : 'PCA'} projection only places them (seed ${c.seed})${dropped}`;
  let y = plot.y + side + sfs + 6 + 8;
  for (const line of wrapText(note, sfs, width - 2 * m)) {
    y += sfs + 4;
    items.push({ kind: 'text', x: m, y, text: line, size: sfs, fill: theme.muted, className: 'cluster-note' });
  }
  const bottom = Math.max(y, ly) + m;
  return { width, height: bottom, background: theme.background, items, points, plot, colors, radius: r };
}
