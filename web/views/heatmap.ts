/**
 * Interactive heatmap: the query × key matrix of one head, the mean or max over heads, or every
 * head of the layer; token labels on both axes; hover shows the exact value; legend; log scale.
 * Long inputs (above LONG_TOKENS, or attention computed on demand) switch to the tiled heatmap
 * (heatmap-tiles.ts): zoom and pan over tiles read a block at a time from the attention source.
 */
import type { StackName, Trace } from '../../src/core/trace.js';
import { headColors } from '../../src/views/colors.js';
import { displayMask, heatmapMatrix } from '../../src/views/layout/heatmap.js';
import { renderHeatmap } from '../../src/views/svg/heatmap.js';
import type { DisplayStack } from '../../src/views/tokens.js';
import type { Ctx, HeatmapMode } from '../context.js';
import { button, checkbox, frameWidth, h, replaceChildren, select } from '../dom.js';
import { download, exportButtons } from '../export.js';
import { type MatrixHit, MatrixGrid } from '../matrix.js';
import { gridTokenOptions, headSelect, layerSelect, stackHeaders } from './common.js';
import { LONG_TOKENS, type Reduce, keyRange } from '../../src/views/layout/heatmap-tiles.js';
import { type DisplayToken } from '../../src/views/tokens.js';
import { longWorker } from '../long-worker.js';
import { LongDenseHost, pageSource, pageTokens } from '../source.js';
import { type TileHit, TiledHeatmap } from './heatmap-tiles.js';

const MODES: { value: HeatmapMode; label: string }[] = [
  { value: 'head', label: 'one head' },
  { value: 'mean', label: 'mean over heads' },
  { value: 'max', label: 'max over heads' },
  { value: 'all', label: 'every head of the layer' },
];

export class HeatmapView {
  readonly el = h('div', { class: 'view heatmap-view', testid: 'heatmap-view' });
  private readonly toolbar = h('div', { class: 'toolbar' });
  private readonly readout = h('div', { class: 'readout', testid: 'heatmap-readout' });
  private readonly grid = new MatrixGrid('heatmap-canvas');
  private ds: DisplayStack | null = null;
  private masked: Uint8Array | null = null;
  private key = '';
  /** Long inputs: the tiled heatmap (or the one it took over, see `shownTiles`), how its bins are reduced, where it is (rows × keys shown). */
  private tiles = new TiledHeatmap();
  /** Whether the tiled heatmap was given a matrix yet (a new view may take over another's first). */
  private tilesSet = false;
  private readonly zoomLine = h('div', { class: 'readout muted', testid: 'heatmap-zoom' });
  private readonly body = h('div', { class: 'scroll' });
  private reduce: Reduce = 'max';
  /** Dense (the grid) or long (the tiles): the elements each form shows. */
  private readonly host = new LongDenseHost((long) => {
    this.key = '';
    if (long) {
      replaceChildren(this.body, this.tiles.el);
      this.readout.after(this.zoomLine);
    } else {
      replaceChildren(this.body, this.grid.el);
      this.zoomLine.remove();
    }
  });

  constructor(private readonly ctx: Ctx) {
    this.body.append(this.grid.el);
    this.el.append(this.toolbar, this.readout, this.body);
    this.grid.onHover((hit, e) => this.hover(hit, e));
    this.wireTiles();
    // The matrix fills the window: lay it out again when the window changes size.
    window.addEventListener('resize', () => {
      this.key = '';
      if (!this.el.hidden) this.update();
    });
  }

  private wireTiles(): void {
    this.tiles.onHover((hit, e) => this.hoverLong(hit, e));
    this.tiles.onView(() => this.zoomNote());
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
      layerSelect(ctx, 'heatmap-layer'),
      select('heatmap-mode', 'show', MODES, state.heatmapMode, (heatmapMode) => ctx.set({ heatmapMode })),
      state.heatmapMode === 'head' ? headSelect(ctx, 'heatmap-head', state.heatmapHead, (heatmapHead) => ctx.set({ heatmapHead })) : null,
      checkbox('heatmap-log', 'log scale', state.heatmapLog, (heatmapLog) => ctx.set({ heatmapLog })),
      h('span', { class: 'spacer' }),
      exportButtons(ctx, 'heatmap', () =>
        renderHeatmap(ctx.trace, {
          stack: state.stack,
          layer: state.layer,
          theme: state.theme,
          hideSpecial: state.hideSpecial,
          mergeSubwords: state.mergeSubwords,
          head: state.heatmapMode === 'head' ? state.heatmapHead : undefined,
          aggregate: state.heatmapMode === 'head' ? undefined : state.heatmapMode,
          log: state.heatmapLog,
          step: ctx.step(),
        }),
      ),
    );
    const key = [state.stack, state.layer, state.hideSpecial, state.mergeSubwords, state.prettify, state.theme, state.heatmapMode, state.heatmapHead, state.heatmapLog, ctx.step() ?? 'all'].join('|');
    if (key === this.key) return;
    this.key = key;
    let ds: DisplayStack;
    try {
      ds = ctx.display([state.layer]);
    } catch (e) {
      this.ds = null;
      replaceChildren(this.readout, (e as Error).message);
      return;
    }
    this.ds = ds;
    this.masked = displayMask(ctx.trace, ds, state.layer);
    const mode = state.heatmapMode;
    const colors = headColors(ds.numHeads);
    const matrices =
      mode === 'all'
        ? Array.from({ length: ds.numHeads }, (_, hd) => ({ values: heatmapMatrix(ds, state.layer, hd), title: `head ${hd}`, color: colors[hd] }))
        : [{ values: heatmapMatrix(ds, state.layer, mode === 'head' ? state.heatmapHead : mode) }];
    this.grid.draw({
      matrices,
      nq: ds.queryTokens.length,
      nk: ds.keyTokens.length,
      ...gridTokenOptions(ctx, ds),
      theme: ctx.theme(),
      log: state.heatmapLog,
      caption: mode === 'mean' ? 'mean weight' : mode === 'max' ? 'max weight' : 'attention weight',
      axes: stackHeaders(state.stack),
      masked: this.masked,
      // Fill the page: single matrices grow up to 36 px cells, small multiples share the width.
      frame: { width: frameWidth(this.el), height: Math.max(480, window.innerHeight - 150) },
      maxCell: mode === 'all' ? 22 : 36,
    });
    this.grid.canvas.setAttribute('data-mode', mode);
    this.hover(null);
  }

  private hover(hit: MatrixHit | null, e?: PointerEvent): void {
    const ds = this.ds;
    if (!ds) return;
    const { ctx } = this;
    const { state } = ctx;
    if (!hit) {
      ctx.tooltip.hide();
      const newest = ds.newest !== null ? ` · outlined: the newest token's row (${ds.newest} “${ctx.label(ds.queryTokens[ds.newest]!)}”)` : '';
      replaceChildren(this.readout, h('span', { class: 'muted' }, `layer ${state.layer}${newest} · hover a cell for its exact value`));
      this.readout.removeAttribute('data-value');
      return;
    }
    const mode = state.heatmapMode;
    const what = mode === 'all' ? `head ${ctx.headLabel(hit.matrix)}` : mode === 'head' ? `head ${ctx.headLabel(state.heatmapHead)}` : `${mode} over ${ds.numHeads} heads`;
    const q = ds.queryTokens[hit.q]!;
    const k = ds.keyTokens[hit.k]!;
    const value = hit.masked ? 'masked' : ctx.fmtWeight(hit.value);
    const line = `${hit.q} “${ctx.label(q)}” → ${hit.k} “${ctx.label(k)}”`;
    replaceChildren(this.readout, `${line} · ${what}: `, h('b', { testid: 'heatmap-value' }, value), hit.masked ? h('span', { class: 'muted' }, ' (the model gives this key no weight)') : null);
    this.readout.setAttribute('data-q', String(hit.q));
    this.readout.setAttribute('data-k', String(hit.k));
    this.readout.setAttribute('data-matrix', String(hit.matrix));
    this.readout.setAttribute('data-value', String(hit.value));
    if (hit.masked) this.readout.setAttribute('data-masked', 'true');
    else this.readout.removeAttribute('data-masked');
    if (e) {
      const tips = [q.generated ? `${hit.q}: ${ctx.tokenTip('query', q)}` : '', k.generated ? `${hit.k}: ${ctx.tokenTip('key', k)}` : ''].filter(Boolean);
      ctx.tooltip.show(e.clientX, e.clientY, line, hit.masked ? 'masked' : `${what}: ${value}`, ...tips);
    }
  }

  // --- long inputs: the tiled heatmap -----------------------------------------------------------------

  private updateLong(): void {
    const { ctx } = this;
    const { state } = ctx;
    const source = pageSource(ctx.trace, state.stack);
    // Every head as small multiples is not offered at this length: one head, or the mean / max over heads.
    const mode = state.heatmapMode === 'all' ? 'head' : state.heatmapMode;
    const goto = h('input', { type: 'text', testid: 'heatmap-goto', placeholder: 'query, key', size: 11, title: 'Go to a cell: query and key positions (e.g. 4096, 17), or a query alone' });
    goto.addEventListener('keydown', (e) => {
      if (e.key !== 'Enter') return;
      const [q, k] = goto.value.split(/[\s,;×x]+/).filter(Boolean).map(Number);
      if (q === undefined || !Number.isInteger(q) || q < 0 || q >= source.numQueries) {
        goto.setCustomValidity(`query: a position from 0 to ${source.numQueries - 1}`);
        goto.reportValidity();
        return;
      }
      const key = k !== undefined && Number.isInteger(k) && k >= 0 && k < source.numKeys ? k : Math.min(q, source.numKeys - 1);
      goto.setCustomValidity('');
      this.tiles.zoomTo(Math.max(0, q - 16), q + 16, Math.max(0, key - 16), key + 16);
    });
    replaceChildren(
      this.toolbar,
      layerSelect(ctx, 'heatmap-layer'),
      select('heatmap-mode', 'show', MODES.filter((m) => m.value !== 'all'), mode, (heatmapMode) => ctx.set({ heatmapMode })),
      mode === 'head' ? headSelect(ctx, 'heatmap-head', state.heatmapHead, (heatmapHead) => ctx.set({ heatmapHead })) : null,
      select('heatmap-reduce', 'bins', [
        { value: 'max', label: 'max of the cells' },
        { value: 'mean', label: 'mean of the cells' },
      ] as const, this.reduce, (reduce) => {
        this.reduce = reduce;
        this.key = '';
        this.update();
      }),
      checkbox('heatmap-log', 'log scale', state.heatmapLog, (heatmapLog) => ctx.set({ heatmapLog })),
      button('heatmap-fit', 'fit', () => this.tiles.fit(), 'The whole matrix (0)'),
      button('heatmap-zoom-in', '+', () => this.tiles.zoom(2), 'Zoom in (+, wheel, double-click)'),
      button('heatmap-zoom-out', '−', () => this.tiles.zoom(0.5), 'Zoom out (−, wheel, shift + double-click)'),
      h('label', {}, 'go to ', goto),
      h('span', { class: 'spacer' }),
      button('export-png', 'PNG', () => this.tiles.canvas.toBlob((b) => b && download(b, `heatmap-layer${state.layer}.png`)), 'This view as a PNG image'),
    );
    // Fill the window below the controls.
    const top = this.body.getBoundingClientRect().top;
    const frame = { width: frameWidth(this.el), height: Math.max(420, Math.floor(window.innerHeight - (top > 0 ? top : 230) - 20)) };
    const key = [state.stack, state.layer, mode, state.heatmapHead, state.heatmapLog, state.theme, state.prettify, this.reduce, frame.width, frame.height].join('|');
    const data = layerData(ctx.trace, state.stack, state.layer);
    if (!this.tilesSet) {
      // A page remounted on a longer partial trace (web/app/side.ts): the heatmap the page it
      // replaces showed for this layer goes on here, with its canvas, tiles and jobs under way.
      const shown = data[0] ? shownTiles.get(data[0]) : undefined;
      if (shown && shown !== this.tiles) {
        this.tiles = shown;
        this.wireTiles();
        replaceChildren(this.body, shown.el);
        this.key = '';
      }
    }
    this.tiles.resume();
    if (key === this.key) return;
    this.key = key;
    this.tilesSet = true;
    if (data[0]) shownTiles.set(data[0], this.tiles);
    const tokens = pageTokens(ctx.trace, state.stack);
    const label = (t: DisplayToken | undefined) => (t ? ctx.label(t) : '');
    this.tiles.set({
      source,
      layer: state.layer,
      which: mode === 'head' ? state.heatmapHead : mode,
      reduce: this.reduce,
      log: state.heatmapLog,
      mask: keyRange(ctx.trace.scores?.[state.stack], state.stack, state.layer, source.numQueries, source.numKeys),
      theme: ctx.theme(),
      queryLabel: (i) => label(tokens.query[i]),
      keyLabel: (i) => label(tokens.key[i]),
      querySpecial: (i) => tokens.query[i]?.special ?? false,
      keySpecial: (i) => tokens.key[i]?.special ?? false,
      caption: mode === 'mean' ? 'mean weight' : mode === 'max' ? 'max weight' : 'attention weight',
      axes: stackHeaders(state.stack),
      frame,
      worker: longWorker(source),
      data,
    });
    this.tiles.canvas.setAttribute('data-mode', mode);
    this.hoverLong(null);
    this.zoomNote();
  }

  /** Where the view is: rows and keys shown, the level, what is computed. */
  private zoomNote(): void {
    if (!this.host.long) return;
    const t = this.tiles;
    const { w, h: hh } = t.box;
    const v = t.view;
    const q0 = Math.max(0, Math.floor(v.y));
    const q1 = Math.min(t.nq, Math.ceil(v.y + hh / v.scale));
    const k0 = Math.max(0, Math.floor(v.x));
    const k1 = Math.min(t.nk, Math.ceil(v.x + w / v.scale));
    const z = t.level();
    const what = z === 0 ? 'exact weights' : `${this.reduce} of ${2 ** z}×${2 ** z} cells per bin`;
    const busy = t.pending() ? ` · computing ${t.pending()} block${t.pending() > 1 ? 's' : ''}…` : '';
    const held = cellsComputed(t.cellsRead);
    replaceChildren(
      this.zoomLine,
      `queries ${q0}–${q1 - 1} × keys ${k0}–${k1 - 1} of ${t.nq} × ${t.nk} · ${what} · ${held}${busy} · wheel or +/− zoom, drag or arrows pan, 0 fits`,
    );
  }

  private hoverLong(hit: TileHit | null, e?: PointerEvent): void {
    const { ctx } = this;
    const { state } = ctx;
    if (!hit) {
      ctx.tooltip.hide();
      const how = pageSource(ctx.trace, state.stack).onDemand ? 'attention computed on demand from queries and keys' : `above ${LONG_TOKENS}: read block by block`;
      replaceChildren(this.readout, h('span', { class: 'muted' }, `layer ${state.layer} · ${this.tiles.nq} tokens (${how}) · hover a cell for its exact value`));
      this.readout.removeAttribute('data-value');
      return;
    }
    const tokens = pageTokens(ctx.trace, state.stack);
    const mode = state.heatmapMode === 'all' ? 'head' : state.heatmapMode;
    const what = mode === 'head' ? `head ${ctx.headLabel(state.heatmapHead)}` : `${mode} over ${ctx.numHeads()} heads`;
    const q = tokens.query[hit.q];
    const k = tokens.key[hit.k];
    const value = hit.masked ? 'masked' : ctx.fmtWeight(hit.value);
    const line = `${hit.q} “${q ? ctx.label(q) : ''}” → ${hit.k} “${k ? ctx.label(k) : ''}”`;
    replaceChildren(this.readout, `${line} · ${what}: `, h('b', { testid: 'heatmap-value' }, value), hit.masked ? h('span', { class: 'muted' }, ' (the model gives this key no weight)') : null);
    this.readout.setAttribute('data-q', String(hit.q));
    this.readout.setAttribute('data-k', String(hit.k));
    this.readout.setAttribute('data-matrix', '0');
    this.readout.setAttribute('data-value', String(hit.value));
    if (hit.masked) this.readout.setAttribute('data-masked', 'true');
    else this.readout.removeAttribute('data-masked');
    if (e) ctx.tooltip.show(e.clientX, e.clientY, line, hit.masked ? 'masked' : `${what}: ${value}`);
  }
}

/**
 * The tiled heatmap last given each layer's data (keyed by the layer's queries array, or its
 * attention array): as layers stream in, the app mounts a new page on each longer partial trace,
 * whose heatmap takes over the one showing the same layer instead of computing its overview again.
 */
const shownTiles = new WeakMap<object, TiledHeatmap>();

/**
 * The arrays a layer's weights come from: its queries, keys, scale, window and bias (attention on
 * demand), or its attention. Partial traces of one stream share them (web/app/stream.ts partialTrace).
 */
function layerData(trace: Trace, stack: StackName, layer: number): unknown[] {
  const dense = trace.attention[stack]?.layers[layer];
  if (dense) return [dense];
  const q = trace.queries?.[stack]?.layers[layer];
  const k = trace.keys?.[stack]?.layers[layer];
  const terms = trace.scores?.[stack];
  if (!q || !k || !terms) return [];
  const bias = (terms.positionBias ?? terms.bias)?.layers;
  return [q, k, terms.scale[layer], terms.window[layer], bias?.[Math.min(layer, bias.length - 1)]];
}

/** "N cells computed" in words. */
function cellsComputed(n: number): string {
  return `${n >= 1e6 ? `${(n / 1e6).toFixed(1)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(0)} k` : String(n)} weights read so far`;
}
