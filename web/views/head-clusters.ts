/**
 * Interactive head clusters scatter: paints the layout of src/views/layout/head-clusters.ts (the
 * one the SVG export paints) as SVG elements. Every head of the stack is a point coloured by its
 * cluster; hovering one names it and its cluster, clicking it opens that head's heatmap (heatmap
 * view, its layer, "one head"). Projection, number of clusters and "exclude first token" are
 * this view's controls (generation traces: the heads as they attended at the step shown); the export renders the same options, and the cluster table downloads as
 * CSV or JSON.
 */
import { type ClusterProjection, type HeadClustering, clusterTableCsv, clusteringJson } from '../../src/analysis/cluster.js';
import { headClusteringOf, headClustersLayout } from '../../src/views/layout/head-clusters.js';
import { renderHeadClusters } from '../../src/views/svg/head-clusters.js';
import type { HeadClustersOptions } from '../../src/views/layout/head-clusters.js';
import type { Ctx } from '../context.js';
import { wireHeadPicks } from './common.js';
import { appendSvgItems, button, checkbox, frameWidth, h, replaceChildren, s, select } from '../dom.js';
import { download, exportButtons } from '../export.js';
import { pageWorkersAvailable } from '../flow-worker.js';
import { type ClustersJob, startClustersJob } from '../clusters-worker.js';
import type { ClustersStage } from '../clusters-worker-side.js';

const PROJECTIONS: { value: ClusterProjection; label: string }[] = [
  { value: 'umap', label: 'UMAP' },
  { value: 'pca', label: 'PCA' },
];

export class HeadClustersView {
  readonly el = h('div', { class: 'view clusters-view', testid: 'clusters-view' });
  private readonly toolbar = h('div', { class: 'toolbar' });
  private readonly readout = h('div', { class: 'readout', testid: 'clusters-readout' });
  private readonly wrap = h('div', { class: 'scroll clusters-wrap' });
  private projection: ClusterProjection = 'umap';
  /** Number of clusters; 0: chosen by the silhouette score. */
  private k = 0;
  private excludeFirst = false;
  private clustering: HeadClustering | null = null;
  private clusteringKey = '';
  private key = '';
  /** The clustering computing in a worker (pages that can start workers): its key and stage. */
  private job: { key: string; job: ClustersJob; stage: ClustersStage | null } | null = null;
  /** The key whose clustering the user cancelled: not started again until asked. */
  private cancelledKey = '';

  constructor(private readonly ctx: Ctx) {
    this.el.append(this.toolbar, this.readout, this.wrap);
    // A click opens the head's heatmap.
    wireHeadPicks(ctx, this.wrap, (head, e) => this.hover(head, e));
    // Laid out to the App's width (a compare side is half the window): again when it changes.
    window.addEventListener('resize', () => {
      if (!this.el.hidden) this.update();
    });
  }

  /** The view's options as the export takes them. */
  private options(): HeadClustersOptions {
    const { state } = this.ctx;
    return {
      stack: state.stack,
      theme: state.theme,
      projection: this.projection,
      clusters: this.k || undefined,
      excludeFirstToken: this.excludeFirst || undefined,
      step: this.ctx.step(),
    };
  }

  private fileName(ext: string): string {
    const { ctx } = this;
    const base = `${ctx.trace.model.name}-clusters-${ctx.state.stack}-${this.projection}`.replace(/[^A-Za-z0-9._-]+/g, '_');
    return `attnscope-${base}.${ext}`;
  }

  update(): void {
    const { ctx } = this;
    const { state } = ctx;
    const set = (patch: () => void) => {
      patch();
      this.update();
    };
    const nHeads = ctx.numLayers() * ctx.numHeads();
    const ks = [{ value: 0, label: 'auto (silhouette)' }, ...Array.from({ length: Math.max(0, Math.min(12, nHeads) - 1) }, (_, i) => ({ value: i + 2, label: String(i + 2) }))];
    replaceChildren(
      this.toolbar,
      select('clusters-projection', 'projection', PROJECTIONS, this.projection, (v) => set(() => (this.projection = v))),
      select('clusters-k', 'clusters', ks, this.k, (v) => set(() => (this.k = v))),
      checkbox('clusters-exclude-first', 'exclude first token', this.excludeFirst, (v) => set(() => (this.excludeFirst = v))),
      h('span', { class: 'spacer' }),
      button('clusters-csv', 'CSV', () => this.clustering && download(new Blob([clusterTableCsv(this.clustering)], { type: 'text/csv' }), this.fileName('csv')), 'Download the cluster table as CSV'),
      button('clusters-json', 'JSON', () => this.clustering && download(new Blob([`${JSON.stringify(clusteringJson(this.clustering), null, 1)}\n`], { type: 'application/json' }), this.fileName('json')), 'Download the clusters (names, centroids, silhouettes, table) as JSON'),
      exportButtons(ctx, 'clusters', () => renderHeadClusters(ctx.trace, { ...this.options(), clustering: this.clustering ?? undefined })),
    );
    const ckey = [state.stack, this.projection, this.k, this.excludeFirst, ctx.step() ?? 'all'].join('|');
    const key = [ckey, state.theme, state.layer, state.heatmapHead, frameWidth(this.el)].join('|');
    if (key === this.key) return;
    this.key = key;
    this.wrap.replaceChildren();
    if (ckey !== this.clusteringKey || !this.clustering) {
      this.clustering = null;
      this.el.removeAttribute('data-k');
      if (this.job && this.job.key !== ckey) this.stopJob();
      if (pageWorkersAvailable()) {
        if (ckey === this.cancelledKey) {
          this.showCancelled();
          return;
        }
        if (!this.job) this.startJob(ckey);
        this.showProgress();
        return;
      }
    }
    try {
      if (ckey !== this.clusteringKey || !this.clustering) {
        this.clustering = headClusteringOf(ctx.trace, this.options());
        this.clusteringKey = ckey;
      }
      const c = this.clustering;
      const layout = headClustersLayout(c, ctx.theme(), {
        frame: { width: frameWidth(this.el), height: Math.max(480, window.innerHeight - 150) },
        // Ring the head the heatmap shows.
        selected: { layer: state.layer, head: state.heatmapHead },
      });
      const svg = s('svg', { width: Math.ceil(layout.width), height: Math.ceil(layout.height), class: 'clusters-svg', testid: 'clusters-svg' });
      appendSvgItems(svg, layout.items);
      this.wrap.append(svg);
      this.el.setAttribute('data-k', String(c.k));
      this.hover(null);
    } catch (e) {
      this.clustering = null;
      this.clusteringKey = '';
      replaceChildren(this.readout, (e as Error).message);
    }
  }

  /** Computes the clustering of `key` in a worker; when it arrives, the view draws it (if still wanted). */
  private startJob(key: string): void {
    const job = startClustersJob(this.ctx.trace, this.options(), (stage) => {
      if (this.job?.job !== job) return;
      this.job.stage = stage;
      this.showProgress();
    });
    this.job = { key, job, stage: null };
    this.el.setAttribute('data-computing', 'true');
    job.result.then(
      (c) => {
        if (this.job?.job !== job) return;
        this.job = null;
        this.el.removeAttribute('data-computing');
        if (!c) return;
        this.clustering = c;
        this.clusteringKey = key;
        this.key = '';
        if (!this.el.hidden) this.update();
      },
      (e: unknown) => {
        if (this.job?.job !== job) return;
        this.job = null;
        this.el.removeAttribute('data-computing');
        this.key = '';
        replaceChildren(this.readout, (e as Error).message);
      },
    );
  }

  private stopJob(): void {
    this.job?.job.cancel();
    this.job = null;
    this.el.removeAttribute('data-computing');
  }

  private showProgress(): void {
    const stage = this.job?.stage;
    const what = stage === 'projection' ? `projecting the heads (${this.projection === 'umap' ? 'UMAP' : 'PCA'}) and clustering them` : 'computing the head table';
    this.readout.removeAttribute('data-layer');
    this.readout.removeAttribute('data-head');
    replaceChildren(
      this.readout,
      h('span', { class: 'muted', testid: 'clusters-progress' }, `clustering in the background: ${what}… `),
      button('clusters-cancel', 'cancel', () => {
        if (!this.job) return;
        this.cancelledKey = this.job.key;
        this.stopJob();
        this.showCancelled();
      }, 'Stop computing the clusters'),
    );
  }

  private showCancelled(): void {
    replaceChildren(
      this.readout,
      h('span', { class: 'muted', testid: 'clusters-cancelled' }, 'clustering cancelled · '),
      button('clusters-compute', 'compute', () => {
        this.cancelledKey = '';
        this.key = '';
        this.update();
      }, 'Compute the clusters'),
    );
  }

  private hover(at: { layer: number; head: number } | null, e?: PointerEvent): void {
    const c = this.clustering;
    if (!c) return;
    const { ctx } = this;
    const row = at ? c.rows.find((r) => r.layer === at.layer && r.head === at.head) : undefined;
    if (!row) {
      ctx.tooltip.hide();
      this.readout.removeAttribute('data-layer');
      this.readout.removeAttribute('data-head');
      const dropped = c.dropped.length ? ` (${c.dropped.length} constant or undefined left out)` : '';
      replaceChildren(this.readout, h('span', { class: 'muted' }, `${c.rows.length} heads in ${c.k} clusters by ${c.features.length} metrics${dropped} · hover a point to name it, click it to open the head's heatmap`));
      return;
    }
    const cluster = c.clusters[row.cluster]!;
    const line = `layer ${row.layer} · head ${row.head}`;
    replaceChildren(this.readout, `${line} · cluster ${row.cluster}: `, h('b', { testid: 'clusters-name' }, row.clusterName), h('span', { class: 'muted' }, ` (${cluster.size} heads) · click to open its heatmap`));
    this.readout.setAttribute('data-layer', String(row.layer));
    this.readout.setAttribute('data-head', String(row.head));
    this.readout.setAttribute('data-cluster', String(row.cluster));
    if (e) ctx.tooltip.show(e.clientX, e.clientY, line, `cluster ${row.cluster}: ${row.clusterName}`);
  }
}
