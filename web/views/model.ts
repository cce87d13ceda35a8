/**
 * Interactive model view: paints the model view's layout (src/views/layout/model-view.ts, the same
 * the SVG export paints) on one canvas — every chosen layer × head as a small attention image (one
 * draw per cell, whatever the input length). Hover a cell for its layer, head and strongest
 * query → key pairs; click it to open it large with token labels. Stays interactive at 12 × 12
 * heads and 512 tokens: images are area-averaged to the cell size and drawn layer by layer across
 * animation frames. Long inputs (above LONG_TOKENS, or attention computed on demand) show thumbnails
 * streamed from the attention source instead (model-thumbs.ts); a click opens the head's heatmap.
 */
import { displayMask } from '../../src/views/layout/heatmap.js';
import { type ModelCell, type ModelViewLayout, modelCellAt, modelViewLayout } from '../../src/views/layout/model-view.js';
import { renderModelView } from '../../src/views/svg/model-view.js';
import type { DisplayStack } from '../../src/views/tokens.js';
import type { Ctx } from '../context.js';
import { button, checkbox, h, replaceChildren, select, sizeCanvas } from '../dom.js';
import { download, exportButtons } from '../export.js';
import { MatrixGrid, matrixItemImage } from '../matrix.js';
import { paintItems } from '../paint.js';
import { gridTokenOptions, stackHeaders } from './common.js';
import { keyRange, type Reduce } from '../../src/views/layout/heatmap-tiles.js';
import { longWorker } from '../long-worker.js';
import { LongDenseHost, pageSource } from '../source.js';
import { type ThumbCell, ThumbGrid } from './model-thumbs.js';

export class ModelView {
  readonly el = h('div', { class: 'view model-view', testid: 'model-view' });
  private readonly toolbar = h('div', { class: 'toolbar' });
  private readonly chooser = h('div', { class: 'chooser' });
  private readonly readout = h('div', { class: 'readout', testid: 'model-readout' });
  private readonly canvas = h('canvas', { class: 'model-canvas', testid: 'model-canvas' });
  /** Outline of the hovered cell. */
  private readonly hoverBox = h('div', { class: 'model-hover', testid: 'model-hover' });
  private readonly detail = h('div', { class: 'model-detail', testid: 'model-detail', role: 'dialog' });
  private readonly detailGrid = new MatrixGrid('model-detail-canvas');
  private readonly detailReadout = h('div', { class: 'readout', testid: 'model-detail-readout' });
  private ds: DisplayStack | null = null;
  private layout: ModelViewLayout | null = null;
  private key = '';
  private drawToken = 0;
  private detailKey = '';
  private hovered: ModelCell | null = null;
  /** Long inputs: streamed thumbnails, how their bins are reduced. */
  private readonly thumbs = new ThumbGrid();
  private readonly scroll = h('div', { class: 'scroll model-scroll' });
  private reduce: Reduce = 'max';
  /** Dense (every cell drawn from whole matrices) or long (streamed thumbnails): the elements each form shows. */
  private readonly host = new LongDenseHost((long) => {
    this.key = '';
    if (long) {
      replaceChildren(this.scroll, this.thumbs.el);
      this.chooser.hidden = true;
      this.detail.style.display = 'none';
    } else {
      replaceChildren(this.scroll, this.canvas, this.hoverBox);
      this.chooser.hidden = false;
    }
  });

  constructor(private readonly ctx: Ctx) {
    this.scroll.append(this.canvas, this.hoverBox);
    this.el.append(this.toolbar, this.chooser, this.readout, this.scroll, this.detail);
    this.thumbs.onPick((cell) => this.ctx.set({ view: 'heatmap', layer: cell.layer, heatmapMode: 'head', heatmapHead: cell.head }));
    this.thumbs.onHover((cell, e) => this.hoverThumb(cell, e));
    this.canvas.addEventListener('pointermove', (e) => {
      const cell = this.cellAt(e.offsetX, e.offsetY);
      this.canvas.style.cursor = cell ? 'pointer' : '';
      this.hover(cell);
      if (!cell) {
        this.ctx.tooltip.hide();
        return;
      }
      this.ctx.tooltip.show(e.clientX, e.clientY, ...this.cellTip(cell), 'click to open');
    });
    this.canvas.addEventListener('pointerleave', () => {
      this.hover(null);
      this.ctx.tooltip.hide();
    });
    this.canvas.addEventListener('click', (e) => {
      const cell = this.cellAt(e.offsetX, e.offsetY);
      if (cell) this.ctx.set({ modelOpen: { layer: cell.layer, head: cell.head } });
    });
    this.detailGrid.onHover((hit, e) => {
      const ds = this.ds;
      const open = this.ctx.state.modelOpen;
      if (!ds || !open) return;
      if (!hit) {
        this.ctx.tooltip.hide();
        replaceChildren(this.detailReadout, h('span', { class: 'muted' }, 'hover a cell for its exact value'));
        this.detailReadout.removeAttribute('data-value');
        return;
      }
      const line = `${hit.q} “${this.ctx.label(ds.queryTokens[hit.q]!)}” → ${hit.k} “${this.ctx.label(ds.keyTokens[hit.k]!)}”`;
      const value = hit.masked ? 'masked' : this.ctx.fmtWeight(hit.value);
      replaceChildren(this.detailReadout, `${line}: `, h('b', {}, value), hit.masked ? h('span', { class: 'muted' }, ' (the model gives this key no weight)') : null);
      this.detailReadout.setAttribute('data-value', String(hit.value));
      if (hit.masked) this.detailReadout.setAttribute('data-masked', 'true');
      else this.detailReadout.removeAttribute('data-masked');
      const q = ds.queryTokens[hit.q]!;
      const k = ds.keyTokens[hit.k]!;
      const tips = [q.generated ? `${hit.q}: ${this.ctx.tokenTip('query', q)}` : '', k.generated ? `${hit.k}: ${this.ctx.tokenTip('key', k)}` : ''].filter(Boolean);
      this.ctx.tooltip.show(e.clientX, e.clientY, line, value, ...tips);
    });
  }

  /** Which layer × head cell a canvas position falls in. */
  cellAt(x: number, y: number): ModelCell | null {
    return this.layout ? modelCellAt(this.layout, x, y) : null;
  }

  /** The tooltip lines of a cell: layer and head, then its strongest pairs with the page's token labels and weights. */
  private cellTip(cell: ModelCell): string[] {
    const ds = this.layout!.ds;
    const pairs = cell.pairs.map((p) => `${p.q} “${this.ctx.label(ds.queryTokens[p.q]!)}” → ${p.k} “${this.ctx.label(ds.keyTokens[p.k]!)}”  ${this.ctx.fmtWeight(p.value)}`);
    return [`layer ${cell.layer} · head ${this.ctx.headLabel(cell.head)}`, ...(pairs.length ? ['strongest query → key:', ...pairs] : [])];
  }

  /** Marks the hovered cell (data attributes for tools and tests, and an outline). */
  private hover(cell: ModelCell | null): void {
    if (cell === this.hovered) return;
    this.hovered = cell;
    if (cell) {
      this.canvas.dataset.hoverLayer = String(cell.layer);
      this.canvas.dataset.hoverHead = String(cell.head);
      const b = this.hoverBox.style;
      b.left = `${this.canvas.offsetLeft + cell.x - 2}px`;
      b.top = `${this.canvas.offsetTop + cell.y - 2}px`;
      b.width = `${cell.width}px`;
      b.height = `${cell.height}px`;
      b.display = 'block';
    } else {
      delete this.canvas.dataset.hoverLayer;
      delete this.canvas.dataset.hoverHead;
      this.hoverBox.style.display = 'none';
    }
  }

  private chosen(flags: boolean[]): number[] {
    return flags.flatMap((on, i) => (on ? [i] : []));
  }

  update(): void {
    const { ctx } = this;
    const { state } = ctx;
    if (this.host.form(ctx.trace, state.stack)) {
      this.updateLong();
      return;
    }
    replaceChildren(
      this.toolbar,
      select('model-normalize', 'colour', [
        { value: 'cell', label: 'per cell (cell max = darkest)' },
        { value: 'global', label: 'global (0 to 1)' },
      ] as const, state.modelNormalize, (modelNormalize) => ctx.set({ modelNormalize })),
      checkbox('model-log', 'log scale', state.modelLog, (modelLog) => ctx.set({ modelLog })),
      h('span', { class: 'spacer' }),
      exportButtons(ctx, 'model', () =>
        renderModelView(ctx.trace, {
          stack: state.stack,
          theme: state.theme,
          hideSpecial: state.hideSpecial,
          mergeSubwords: state.mergeSubwords,
          layers: this.chosen(state.modelLayers),
          heads: this.chosen(state.modelHeads),
          normalize: state.modelNormalize,
          log: state.modelLog,
          step: ctx.step(),
        }),
      ),
    );
    const chips = (kind: 'layer' | 'head', flags: boolean[], set: (f: boolean[]) => void) =>
      h(
        'div',
        { class: 'chips', testid: `model-${kind}s` },
        h('span', { class: 'muted' }, `${kind}s`),
        ...flags.map((on, i) => {
          const b = h('button', { type: 'button', class: `chip${on ? ' on' : ''}`, testid: `model-${kind}-${i}`, 'aria-pressed': on ? 'true' : 'false' }, String(i));
          b.addEventListener('click', () => {
            const f = flags.slice();
            f[i] = !f[i];
            if (f.some(Boolean)) set(f);
          });
          b.addEventListener('dblclick', () => set(flags.map((_, k) => k === i)));
          return b;
        }),
        button(`model-${kind}s-all`, 'all', () => set(flags.map(() => true))),
      );
    replaceChildren(
      this.chooser,
      chips('layer', state.modelLayers, (modelLayers) => ctx.set({ modelLayers })),
      chips('head', state.modelHeads, (modelHeads) => ctx.set({ modelHeads })),
    );
    const layers = this.chosen(state.modelLayers);
    const heads = this.chosen(state.modelHeads);
    const width = this.el.clientWidth || window.innerWidth;
    const key = [state.stack, state.hideSpecial, state.mergeSubwords, state.theme, state.modelNormalize, state.modelLog, layers.join(','), heads.join(','), ctx.step() ?? 'all', state.prettify, Math.round(width / 40)].join('|');
    if (key !== this.key) {
      this.key = key;
      try {
        this.ds = ctx.display(layers);
        this.draw(layers, heads, width);
      } catch (e) {
        this.ds = null;
        this.layout = null;
        replaceChildren(this.readout, (e as Error).message);
      }
    }
    this.updateDetail();
  }

  private draw(layers: number[], heads: number[], pageWidth: number): void {
    const { ctx } = this;
    const { state } = ctx;
    const theme = ctx.theme();
    const layout = modelViewLayout(ctx.trace, {
      stack: state.stack,
      theme: state.theme,
      hideSpecial: state.hideSpecial,
      mergeSubwords: state.mergeSubwords,
      layers,
      heads,
      normalize: state.modelNormalize,
      log: state.modelLog,
      step: ctx.step(),
      fitWidth: pageWidth,
      frame: 'page',
      display: this.ds ?? undefined,
    });
    this.layout = layout;
    this.hover(null);
    const { ds, nq, nk, grid } = layout;
    const { x: gridX, y: gridY, cw, ch, gap } = grid;
    for (const [k, v] of Object.entries({ gridX, gridY, cw, ch, gap })) this.canvas.dataset[k] = String(v);
    this.canvas.dataset.layers = layers.join(',');
    this.canvas.dataset.heads = heads.join(',');
    const width = layout.width;
    const height = Math.max(layout.height, gridY + 200);
    const c = sizeCanvas(this.canvas, width, height);
    const dpr = this.canvas.width / width;
    c.fillStyle = layout.background;
    c.fillRect(0, 0, width, height);
    paintItems(c, layout.items);
    const off = document.createElement('canvas');
    this.canvas.dataset.nq = String(nq);
    this.canvas.dataset.nk = String(nk);
    if (ds.newest !== null) this.canvas.dataset.newest = String(ds.newest);
    else delete this.canvas.dataset.newest;
    const token = ++this.drawToken;
    this.canvas.setAttribute('data-drawn', 'false');
    const started = performance.now();
    let row = 0;
    const perRow = heads.length;
    const drawRow = () => {
      if (token !== this.drawToken) return; // a newer draw started
      const frameStart = performance.now();
      // Draw layers until ~30 ms have passed, then yield to the browser.
      while (row < layers.length && (row === 0 || performance.now() - frameStart < 30)) {
        for (const cell of layout.cells.slice(row * perRow, (row + 1) * perRow)) {
          const img = matrixItemImage(cell.matrix, theme, cell.width * dpr, cell.height * dpr);
          off.width = img.width;
          off.height = img.height;
          off.getContext('2d')!.putImageData(img, 0, 0);
          c.imageSmoothingEnabled = img.width >= cell.width * dpr;
          c.drawImage(off, cell.x, cell.y, cell.width, cell.height);
          paintItems(c, cell.marks);
        }
        row++;
      }
      if (row < layers.length) requestAnimationFrame(drawRow);
      else {
        this.canvas.setAttribute('data-drawn', 'true');
        this.canvas.setAttribute('data-draw-ms', (performance.now() - started).toFixed(1));
      }
    };
    drawRow();
    replaceChildren(
      this.readout,
      h('span', { class: 'muted', testid: 'model-note' }, `${layers.length} layers × ${heads.length} heads · ${layout.note} · hover a cell for its strongest pairs, click to open it`),
    );
  }

  private updateDetail(): void {
    const { ctx } = this;
    const { state } = ctx;
    const open = state.modelOpen;
    const ds = this.ds;
    if (!open || !ds) {
      this.detail.style.display = 'none';
      this.detailKey = '';
      return;
    }
    const key = [open.layer, open.head, this.key, state.prettify].join('|');
    this.detail.style.display = 'flex';
    if (key === this.detailKey) return;
    this.detailKey = key;
    const d = ctx.display([open.layer]);
    const nq = d.queryTokens.length;
    const nk = d.keyTokens.length;
    const values = d.layers[open.layer]!.subarray(open.head * nq * nk, (open.head + 1) * nq * nk);
    const close = button('model-detail-close', '✕ close', () => ctx.set({ modelOpen: null }), 'Close (Esc)');
    const title = h('div', { class: 'detail-title', testid: 'model-detail-title' }, `layer ${open.layer} · head ${ctx.headLabel(open.head)}`);
    const panel = h('div', { class: 'detail-panel' }, h('div', { class: 'detail-head' }, title, h('span', { class: 'spacer' }), close), this.detailReadout, h('div', { class: 'scroll' }, this.detailGrid.el));
    replaceChildren(this.detail, panel);
    this.detail.onclick = (e) => {
      if (e.target === this.detail) ctx.set({ modelOpen: null });
    };
    this.detailGrid.draw({
      matrices: [{ values }],
      nq,
      nk,
      // As in the heatmap: token labels and tooltips, generation marks, the pair boundary, masked entries blank.
      ...gridTokenOptions(ctx, d),
      theme: ctx.theme(),
      log: state.modelLog,
      caption: 'attention weight',
      axes: stackHeaders(state.stack),
      masked: displayMask(ctx.trace, d, open.layer),
    });
    replaceChildren(this.detailReadout, h('span', { class: 'muted' }, 'hover a cell for its exact value'));
  }

  // --- long inputs: thumbnails streamed from the attention source ---------------------------------------

  private updateLong(): void {
    const { ctx } = this;
    const { state } = ctx;
    const source = pageSource(ctx.trace, state.stack);
    replaceChildren(
      this.toolbar,
      select('model-normalize', 'colour', [
        { value: 'cell', label: 'per cell (cell max = darkest)' },
        { value: 'global', label: 'global (0 to 1)' },
      ] as const, state.modelNormalize, (modelNormalize) => ctx.set({ modelNormalize })),
      select('model-reduce', 'bins', [
        { value: 'max', label: 'max of the cells' },
        { value: 'mean', label: 'mean of the cells' },
      ] as const, this.reduce, (reduce) => {
        this.reduce = reduce;
        this.update();
      }),
      checkbox('model-log', 'log scale', state.modelLog, (modelLog) => ctx.set({ modelLog })),
      h('span', { class: 'spacer' }),
      button('export-png', 'PNG', () => this.thumbs.canvas.toBlob((b) => b && download(b, 'model-view.png')), 'This view as a PNG image'),
    );
    const terms = ctx.trace.scores?.[state.stack];
    const top = this.scroll.getBoundingClientRect().top;
    this.thumbs.set({
      source,
      mask: (layer) => keyRange(terms, state.stack, layer, source.numQueries, source.numKeys),
      headDim: ctx.trace.model.headDim,
      causal: terms?.causal ?? false,
      theme: ctx.theme(),
      normalize: state.modelNormalize,
      log: state.modelLog,
      reduce: this.reduce,
      worker: longWorker(source),
      frame: { width: Math.max(480, (this.el.clientWidth || document.documentElement.clientWidth) - 24), height: Math.max(360, window.innerHeight - (top > 0 ? top : 200) - 16) },
    });
    this.hoverThumb(null);
  }

  /** The readout of the long model view: what the thumbnails are, or the hovered head. */
  private hoverThumb(cell: ThumbCell | null, e?: PointerEvent): void {
    const { ctx } = this;
    const t = this.thumbs;
    const s = pageSource(ctx.trace, ctx.state.stack);
    if (!cell) {
      ctx.tooltip.hide();
      delete t.canvas.dataset.hoverLayer;
      delete t.canvas.dataset.hoverHead;
      const f = t.binSide;
      const rows = t.rowsPerBin >= f ? 'every row read' : `${t.rowsPerBin} of every ${f} rows read (the exact cells: open the head)`;
      replaceChildren(
        this.readout,
        h('span', { class: 'muted', testid: 'model-note' }, `${s.numLayers} layers × ${s.numHeads} heads · ${s.numQueries} tokens · each thumbnail: bins of ${f}×${f} cells, their ${this.reduce}; ${rows} · click a head to open it`),
      );
      return;
    }
    t.canvas.dataset.hoverLayer = String(cell.layer);
    t.canvas.dataset.hoverHead = String(cell.head);
    let peak = '';
    if (cell.bins) {
      let m = 0;
      for (let i = 0; i < cell.bins.max.length; i++) if (cell.bins.blank[i] === 0 && cell.bins.max[i]! > m) m = cell.bins.max[i]!;
      peak = `largest weight read: ${ctx.fmtWeight(m)}`;
    }
    if (e) ctx.tooltip.show(e.clientX, e.clientY, `layer ${cell.layer} · head ${ctx.headLabel(cell.head)}`, cell.bins ? peak : 'computing…', 'click to open');
  }
}
