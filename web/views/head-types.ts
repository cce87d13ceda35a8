/**
 * Interactive head-type grid: paints the layout of src/views/layout/head-types.ts (the one the SVG
 * export paints) as SVG elements. Every head of the stack is a cell coloured by its top type;
 * hovering one lists its type scores against their thresholds, clicking it opens that head's
 * heatmap (heatmap view, its layer, "one head"). "Exclude first token" is this view's control
 * (generation traces: the heads as they attended at the step shown); the export renders the same
 * options, and the head table downloads as CSV or JSON.
 */
import { HEAD_TYPE_THRESHOLDS, type HeadTableRow, headTableCsv, headTableJsonRows } from '../../src/analysis/head-types.js';
import { type HeadTypesOptions, headTypesLayout, headTypesTableOf, typeScoreLines } from '../../src/views/layout/head-types.js';
import { renderHeadTypes } from '../../src/views/svg/head-types.js';
import { resolveCommon } from '../../src/views/svg/common.js';
import { traceAtStep } from '../../src/views/layout/head-clusters.js';
import { type HeadTableJob, startHeadTableJob, tableInWorkers } from '../metrics-worker.js';
import type { Ctx } from '../context.js';
import { wireHeadPicks } from './common.js';
import { aheadWeights, whenIdle } from '../ahead.js';
import { appendSvgItems, button, checkbox, frameWidth, h, replaceChildren, s } from '../dom.js';
import { download, exportButtons } from '../export.js';

/** While a long trace's table arrives, the grid is redrawn at most this often (ms). */
const REDRAW_MS = 120;

const fmt = (v: number) => (Number.isFinite(v) ? v.toFixed(2) : '–');

export class HeadTypesView {
  readonly el = h('div', { class: 'view types-view', testid: 'types-view' });
  private readonly toolbar = h('div', { class: 'toolbar' });
  private readonly readout = h('div', { class: 'readout', testid: 'types-readout' });
  private readonly wrap = h('div', { class: 'scroll types-wrap' });
  private excludeFirst = false;
  /** The table on screen (null while it computes). */
  private table: readonly HeadTableRow[] | null = null;
  /** Every table computed so far, by table key (stack, first token excluded, step). */
  private readonly tables = new Map<string, readonly HeadTableRow[]>();
  private key = '';
  /** A long trace's table computing in workers: the rows received so far (any layer order), and how many layers there are. */
  private job: { key: string; job: HeadTableJob; rows: HeadTableRow[]; layers: Set<number>; numLayers: number } | null = null;
  private jobError: { key: string; message: string } | null = null;
  private redraw: ReturnType<typeof setTimeout> | null = null;

  constructor(private readonly ctx: Ctx) {
    this.el.append(this.toolbar, this.readout, this.wrap);
    // A click opens the head's heatmap.
    wireHeadPicks(ctx, this.wrap, (head, e) => this.hover(head, e));
    // Laid out to the App's width (a compare side is half the window): again when it changes.
    window.addEventListener('resize', () => {
      if (!this.el.hidden) this.update();
    });
    // A long trace's tables, computed ahead while the page is idle (the view may never be opened:
    // the workers run beside the page's thread, and a table asked for meanwhile goes first).
    whenIdle(() => this.prefetch(), 1000);
  }

  /** The key of the table for the view's stack and step, with or without the first token. */
  private tableKeyFor(excludeFirst: boolean): string {
    return [this.ctx.state.stack, excludeFirst, this.ctx.step() ?? 'all'].join('|');
  }

  /**
   * Starts the next table not computed yet (first token kept, then excluded) for a long trace the
   * page may work on ahead (web/ahead.ts: whole, at most AHEAD_WEIGHTS_MAX weights; long: computed
   * in workers, startJob), so that opening this view or toggling "exclude first token" finds the
   * table done; when no table is computing, and again as each one is done.
   */
  private prefetch(): void {
    // Not for a page that has moved on (a new trace's App replaced this one's elements).
    if (this.job || !this.el.isConnected || aheadWeights(this.ctx.trace, this.ctx.state.stack) === 0) return;
    for (const excludeFirst of [false, true]) {
      const tkey = this.tableKeyFor(excludeFirst);
      if (this.tables.has(tkey) || this.jobError?.key === tkey) continue;
      try {
        this.startJob(tkey, excludeFirst);
      } catch {
        // Nothing computed ahead: the view computes (and reports) it when asked.
      }
      return;
    }
  }

  /** Keeps a computed table (the view's data-tables counts them). */
  private keep(tkey: string, table: readonly HeadTableRow[]): void {
    this.tables.set(tkey, table);
    this.el.setAttribute('data-tables', String(this.tables.size));
  }

  /** The view's options as the export takes them. */
  private options(): HeadTypesOptions {
    const { state } = this.ctx;
    return { stack: state.stack, theme: state.theme, excludeFirstToken: this.excludeFirst || undefined, step: this.ctx.step() };
  }

  private fileName(ext: string): string {
    const { ctx } = this;
    const base = `${ctx.trace.model.name}-head-types-${ctx.state.stack}${this.excludeFirst ? '-exclude-first' : ''}`.replace(/[^A-Za-z0-9._-]+/g, '_');
    return `attnscope-${base}.${ext}`;
  }

  update(): void {
    const { ctx } = this;
    const { state } = ctx;
    replaceChildren(
      this.toolbar,
      checkbox('types-exclude-first', 'exclude first token', this.excludeFirst, (v) => {
        this.excludeFirst = v;
        this.update();
      }),
      h('span', { class: 'spacer' }),
      button('types-csv', 'CSV', () => this.table && download(new Blob([headTableCsv(this.table)], { type: 'text/csv' }), this.fileName('csv')), 'Download the head table (metrics, type scores, top type) as CSV'),
      button(
        'types-json',
        'JSON',
        () =>
          this.table &&
          download(
            new Blob([`${JSON.stringify({ model: ctx.trace.model.name, stack: state.stack, excludeFirstToken: this.excludeFirst, thresholds: HEAD_TYPE_THRESHOLDS, rows: headTableJsonRows(this.table) }, null, 1)}\n`], { type: 'application/json' }),
            this.fileName('json'),
          ),
        'Download the head table as JSON',
      ),
      exportButtons(ctx, 'types', () => renderHeadTypes(ctx.trace, { ...this.options(), table: this.table ?? undefined })),
    );
    const tkey = this.tableKeyFor(this.excludeFirst);
    const progress = this.job?.key === tkey ? this.job.rows.length : -1;
    const key = [tkey, state.theme, state.layer, state.heatmapHead, frameWidth(this.el), progress].join('|');
    if (key === this.key) return;
    this.key = key;
    this.wrap.replaceChildren();
    try {
      this.table = this.tables.get(tkey) ?? null;
      if (!this.table) {
        if (this.jobError?.key === tkey) throw new Error(this.jobError.message);
        // A long trace: the table is computed in workers and the grid fills in layer by layer.
        if (!this.startJob(tkey, this.excludeFirst)) {
          this.table = headTypesTableOf(ctx.trace, this.options());
          this.keep(tkey, this.table);
        }
      }
      const rows = this.table ?? this.job?.rows ?? [];
      if (rows.length === 0) {
        this.el.setAttribute('data-typed', '0');
        this.paintProgress();
        return;
      }
      const layout = headTypesLayout(rows, ctx.theme(), {
        frame: { width: frameWidth(this.el), height: Math.max(480, window.innerHeight - 150) },
        // Outline the head the heatmap shows.
        selected: { layer: state.layer, head: state.heatmapHead },
      });
      const svg = s('svg', { width: Math.ceil(layout.width), height: Math.ceil(layout.height), class: 'types-svg', testid: 'types-svg' });
      appendSvgItems(svg, layout.items);
      this.wrap.append(svg);
      this.el.setAttribute('data-typed', String(layout.cells.length - layout.untyped));
      this.hover(null);
    } catch (e) {
      this.table = null;
      this.el.removeAttribute('data-computing');
      replaceChildren(this.readout, (e as Error).message);
    }
  }

  /**
   * Starts (or keeps) the workers' job for table key `tkey` (with or without the first token) when
   * the trace is long enough; false when the table is to be computed here. Cancels a job of another
   * key. While the view is hidden (a table computed ahead) nothing is drawn.
   */
  private startJob(tkey: string, excludeFirst: boolean): boolean {
    const { ctx } = this;
    if (this.job?.key === tkey) return true;
    this.job?.job.cancel();
    this.job = null;
    this.el.removeAttribute('data-computing');
    const { stack } = resolveCommon(ctx.trace, this.options());
    const step = ctx.step();
    const at = step === undefined ? ctx.trace : traceAtStep(ctx.trace, stack, step);
    if (!tableInWorkers(at, stack)) return false;
    const numLayers = at.attention[stack]!.layers.length;
    let job: HeadTableJob;
    try {
      job = startHeadTableJob(at, stack, { excludeFirstToken: excludeFirst || undefined }, (rows) => {
        if (this.job?.job !== job) return;
        if (!this.el.isConnected) {
          job.cancel();
          return;
        }
        this.job.rows.push(...rows);
        for (const r of rows) this.job.layers.add(r.layer);
        if (this.el.hidden) return;
        // The first layer is drawn at once, then the grid is redrawn at most every REDRAW_MS while layers arrive.
        if (this.job.rows.length === rows.length) this.update();
        else if (this.redraw === null) {
          this.redraw = setTimeout(() => {
            this.redraw = null;
            if (this.job?.job === job) this.update();
          }, REDRAW_MS);
        }
      });
    } catch {
      return false;
    }
    this.job = { key: tkey, job, rows: [], layers: new Set(), numLayers };
    this.el.setAttribute('data-computing', 'true');
    job.result.then(
      (table) => {
        if (this.job?.job !== job) return;
        this.job = null;
        this.el.removeAttribute('data-computing');
        if (!table) return;
        this.keep(tkey, table);
        this.key = '';
        if (!this.el.hidden) this.update();
        this.prefetch();
      },
      (err: unknown) => {
        if (this.job?.job !== job) return;
        this.job = null;
        this.el.removeAttribute('data-computing');
        this.jobError = { key: tkey, message: `head table: ${(err as Error).message}` };
        this.key = '';
        if (!this.el.hidden) this.update();
      },
    );
    return true;
  }

  /** The readout while the workers compute: layers done, a progress bar. */
  private paintProgress(): void {
    const j = this.job;
    if (!j || this.table) return;
    const progress = h('progress', { max: String(j.numLayers), value: String(j.layers.size), testid: 'types-progress' });
    this.readout.setAttribute('data-layers-done', String(j.layers.size));
    replaceChildren(
      this.readout,
      h('span', { class: 'muted' }, `computing the head table in the background: ${j.layers.size} of ${j.numLayers} layers done · the grid fills in as they arrive `),
      progress,
    );
  }

  private hover(at: { layer: number; head: number } | null, e?: PointerEvent): void {
    const table = this.table ?? this.job?.rows;
    if (!table) return;
    const { ctx } = this;
    if (!this.table && !at) {
      ctx.tooltip.hide();
      for (const a of ['data-layer', 'data-head', 'data-type']) this.readout.removeAttribute(a);
      this.paintProgress();
      return;
    }
    const row = at ? table.find((r) => r.layer === at.layer && r.head === at.head) : undefined;
    if (!row) {
      ctx.tooltip.hide();
      for (const a of ['data-layer', 'data-head', 'data-type']) this.readout.removeAttribute(a);
      const typed = table.filter((r) => r.top_type).length;
      replaceChildren(this.readout, h('span', { class: 'muted' }, `${typed} of ${table.length} heads have a type · hover a cell for its scores, click it to open the head's heatmap`));
      return;
    }
    const line = `layer ${row.layer} · head ${row.head}`;
    const scores = typeScoreLines(row);
    replaceChildren(
      this.readout,
      `${line} · `,
      h('b', { testid: 'types-name' }, row.top_type ?? 'no type'),
      ' · ',
      h(
        'span',
        { testid: 'types-scores' },
        ...scores.map((sc, i) =>
          h('span', { class: sc.passes ? 'pass' : 'muted', 'data-type': sc.type, 'data-score': Number.isFinite(sc.score) ? String(sc.score) : '' }, `${i ? ', ' : ''}${sc.type} ${fmt(sc.score)}${sc.passes ? ' ≥ ' : ' < '}${sc.threshold}`),
        ),
      ),
    );
    this.readout.setAttribute('data-layer', String(row.layer));
    this.readout.setAttribute('data-head', String(row.head));
    this.readout.setAttribute('data-type', row.top_type ?? '');
    const others = scores.filter((sc) => sc.type !== row.top_type).slice(0, 3).map((sc) => `${sc.type} ${fmt(sc.score)}`).join(', ');
    if (e) ctx.tooltip.show(e.clientX, e.clientY, line, `${row.top_type ? `${row.top_type} ${fmt(row.top_score)} · then` : 'no type ·'} ${others}`);
  }
}
