/**
 * Interactive heatmap: the query × key matrix of one head, the mean or max over heads, or every
 * head of the layer; token labels on both axes; hover shows the exact value; legend; log scale.
 */
import { headColors } from '../../src/views/colors.js';
import { displayMask, heatmapMatrix } from '../../src/views/layout/heatmap.js';
import { renderHeatmap } from '../../src/views/svg/heatmap.js';
import type { DisplayStack } from '../../src/views/tokens.js';
import type { Ctx, HeatmapMode } from '../context.js';
import { checkbox, h, replaceChildren, select } from '../dom.js';
import { exportButtons } from '../export.js';
import { type MatrixHit, MatrixGrid } from '../matrix.js';
import { gridTokenOptions, headSelect, layerSelect, stackHeaders } from './common.js';

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

  constructor(private readonly ctx: Ctx) {
    const body = h('div', { class: 'scroll' }, this.grid.el);
    this.el.append(this.toolbar, this.readout, body);
    this.grid.onHover((hit, e) => this.hover(hit, e));
    // The matrix fills the window: lay it out again when the window changes size.
    window.addEventListener('resize', () => {
      this.key = '';
      if (!this.el.hidden) this.update();
    });
  }

  update(): void {
    const { ctx } = this;
    const { state } = ctx;
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
      frame: { width: Math.max(640, document.documentElement.clientWidth - 48), height: Math.max(480, window.innerHeight - 150) },
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
    const what = mode === 'all' ? `head ${hit.matrix}` : mode === 'head' ? `head ${state.heatmapHead}` : `${mode} over ${ds.numHeads} heads`;
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
}
