/**
 * Interactive head view: paints the head-view layout (src/views/layout/head-view.ts, the one the
 * SVG export paints) as SVG elements, laid out to fill the page. Swatches toggle (click) or solo
 * (double-click) heads; hovering a token shows all of its lines and the per-head weights; a click
 * pins it. Without a focus the strongest lines are drawn (as in the export), said in the readout.
 * Long inputs (above LONG_TOKENS, or attention computed on demand) show a scrolling strip of tokens
 * with the top-k keys of each query in view, a token search and jump-to-token (head-long.ts).
 */
import { headColors, textOn } from '../../src/views/colors.js';
import type { Item } from '../../src/views/layout/common.js';
import { type HeadFocus, type HeadLayout, type HeadViewOptions, headFocus, headViewLayout } from '../../src/views/layout/head-view.js';
import { renderHeadView } from '../../src/views/svg/head-view.js';
import { PAIR_FILTERS, type PairFilter, hasPair } from '../../src/views/tokens.js';
import type { Ctx, Focus } from '../context.js';
import { type Option, appendSvgItems, button, h, replaceChildren, s, select } from '../dom.js';
import { exportButtons } from '../export.js';
import { layerSelect } from './common.js';
import { isLongPage, pageSource, pageTokens } from '../source.js';
import { LongHeadStrip } from './head-long.js';

/** Smallest row in the page: every token keeps a label to hover. */
const PAGE_MIN_ROW = 12;
/** Largest row in the page: short inputs grow to fill the height. */
const PAGE_MAX_ROW = 30;

export class HeadView {
  readonly el = h('div', { class: 'view head-view', testid: 'head-view' });
  private readonly toolbar = h('div', { class: 'toolbar' });
  private readonly swatches = h('div', { class: 'swatches', testid: 'head-swatches' });
  private readonly readout = h('div', { class: 'readout', testid: 'head-readout' });
  private readonly wrap = h('div', { class: 'head-wrap' });
  private svg: SVGSVGElement = s('svg');
  private linesGroup: SVGGElement = s('g');
  private under: SVGGElement = s('g');
  private over: SVGGElement = s('g');
  private layout: HeadLayout | null = null;
  private hover: Focus | null = null;
  private structureKey = '';
  private drawnFocus = '';
  /** Long inputs: the scrolling strip with top-k lines. */
  private readonly strip = new LongHeadStrip();
  private long = false;

  constructor(private readonly ctx: Ctx) {
    this.el.append(this.toolbar, this.swatches, this.readout, this.wrap);
    window.addEventListener('resize', () => {
      this.structureKey = '';
      if (!this.el.hidden) this.update();
    });
  }

  private visibleHeads(): number[] {
    return this.ctx.state.heads.flatMap((on, h) => (on ? [h] : []));
  }

  /** The newest token's row at a generation step (the default focus then), or null. */
  private newest(): Focus | null {
    const ds = this.layout?.model.ds;
    return ds && ds.step !== null && ds.newest !== null ? { side: 'query', index: ds.newest } : null;
  }

  private focus(): Focus | null {
    return this.hover ?? this.ctx.state.pinned ?? this.newest();
  }

  /** The view's options as the export takes them. */
  private options(): HeadViewOptions {
    const { state } = this.ctx;
    const heads = this.visibleHeads();
    return {
      stack: state.stack,
      layer: state.layer,
      theme: state.theme,
      hideSpecial: state.hideSpecial,
      mergeSubwords: state.mergeSubwords,
      heads: heads.length ? heads : undefined,
      pair: state.pair,
      step: this.ctx.step(),
    };
  }

  update(): void {
    const { state } = this.ctx;
    if (isLongPage(this.ctx.trace, state.stack)) {
      this.updateLong();
      return;
    }
    if (this.long) {
      this.long = false;
      this.structureKey = '';
      this.strip.el.remove();
    }
    const key = [state.stack, state.layer, state.hideSpecial, state.mergeSubwords, state.prettify, state.theme, state.pair, state.heads.join(''), this.ctx.step() ?? 'all'].join('|');
    if (key !== this.structureKey) {
      this.structureKey = key;
      this.hover = null;
      this.buildStructure();
    }
    this.renderToolbar();
    this.renderSwatches();
    this.drawLines();
  }

  private renderToolbar(): void {
    const { ctx } = this;
    const { state } = ctx;
    const ds = this.layout?.model.ds;
    const pairOk = ds ? hasPair(ds.queryTokens) || hasPair(ds.keyTokens) : false;
    const pairOptions: Option<PairFilter>[] = PAIR_FILTERS.map((p) => ({ value: p, label: p === 'all' ? 'all pairs' : p }));
    replaceChildren(
      this.toolbar,
      layerSelect(ctx, 'head-layer'),
      pairOk ? select('head-pair', 'sentences', pairOptions, state.pair, (pair) => ctx.set({ pair })) : null,
      button('head-all', 'all heads', () => ctx.set({ heads: state.heads.map(() => true) }), 'Show every head'),
      h('span', { class: 'spacer' }),
      exportButtons(ctx, 'head', () => {
        const f = state.pinned;
        // At a step the export highlights the newest token unless another one is pinned.
        return renderHeadView(ctx.trace, { ...this.options(), query: f && f.side === 'query' ? f.index : undefined });
      }),
    );
  }

  private renderSwatches(): void {
    const { state } = this.ctx;
    const n = this.ctx.numHeads();
    const colors = headColors(n);
    const buttons = Array.from({ length: n }, (_, hd) => {
      const on = state.heads[hd] ?? true;
      const b = h('button', {
        type: 'button',
        class: `swatch${on ? ' on' : ''}`,
        testid: `head-swatch-${hd}`,
        'data-head': hd,
        'aria-pressed': on ? 'true' : 'false',
        title: `head ${hd}: click to toggle, double-click to show only this head`,
      }, String(hd));
      b.style.setProperty('--swatch', colors[hd]!);
      b.style.color = on ? textOn(colors[hd]!) : '';
      b.addEventListener('click', () => {
        const heads = this.ctx.state.heads.slice();
        heads[hd] = !heads[hd];
        this.ctx.set({ heads });
      });
      b.addEventListener('dblclick', () => this.ctx.set({ heads: this.ctx.state.heads.map((_, i) => i === hd) }));
      return b;
    });
    replaceChildren(this.swatches, h('span', { class: 'muted' }, 'heads'), ...buttons, h('span', { class: 'hint muted' }, 'click: toggle · double-click: solo · hover a token: its lines · click a token: pin'));
  }

  /** The space the diagram fills: the view's width, the window's height below the controls. */
  private frame(): { width: number; height: number } {
    const width = Math.max(480, (this.el.clientWidth || document.documentElement.clientWidth - 32) - 2);
    const top = this.wrap.getBoundingClientRect().top;
    const height = Math.max(420, window.innerHeight - (top > 0 ? top : 220) - 12);
    return { width, height };
  }

  private buildStructure(): void {
    const { ctx } = this;
    this.svg.remove();
    this.drawnFocus = '';
    let layout: HeadLayout;
    try {
      const heads = this.visibleHeads();
      // With no head selected the labels are still laid out (lines: none).
      layout = headViewLayout(ctx.trace, { ...this.options(), heads: heads.length ? heads : undefined }, {
        ...this.frame(),
        minRow: PAGE_MIN_ROW,
        maxRow: PAGE_MAX_ROW,
        blocksBothSides: true,
        label: (t) => ctx.label(t),
        tokenTip: (side, t, i) => `${side} ${i}: ${ctx.tokenTip(side, t)}`,
        formatWeight: (v) => ctx.fmtWeight(v),
      });
    } catch (e) {
      this.layout = null;
      this.svg = s('svg');
      replaceChildren(this.readout, (e as Error).message);
      return;
    }
    this.layout = layout;
    const svg = s('svg', { width: Math.ceil(layout.width), height: Math.ceil(layout.height), class: 'head-svg', testid: 'head-svg' });
    this.under = s('g', { class: 'focus-under' });
    this.linesGroup = s('g', { class: 'lines', testid: 'head-lines' });
    this.over = s('g', { class: 'focus-overlay' });
    const labels = s('g', { class: 'labels' });
    // The caption goes to the readout; everything else of the frame is drawn.
    appendSvgItems(labels, layout.frame.filter((it) => it.className !== 'lines-caption'), (it) => {
      if (it.kind !== 'text' || !it.data || it.data.side === undefined) return it.className === 'prompt-boundary' ? { testid: `head-boundary-${it.data?.axis}` } : {};
      const t = it.data.side === 'query' ? layout.model.ds.queryTokens[Number(it.data.index)]! : layout.model.ds.keyTokens[Number(it.data.index)]!;
      return { testid: `head-${it.data.side}-${it.data.index}`, class: `${it.className}${t.special ? ' special' : ''}` };
    });
    svg.append(this.under, this.linesGroup, labels, this.over);
    svg.addEventListener('pointermove', (e) => {
      const el = (e.target as Element).closest('[data-side]');
      const f: Focus | null = el ? { side: el.getAttribute('data-side') as Focus['side'], index: Number(el.getAttribute('data-index')) } : this.hover;
      if (f?.side !== this.hover?.side || f?.index !== this.hover?.index) {
        this.hover = f;
        this.drawLines();
      }
      const block = (e.target as Element).closest('[data-block]');
      if (block) {
        const [q, k] = [Number(block.getAttribute('data-q')), Number(block.getAttribute('data-k'))];
        this.ctx.tooltip.show(e.clientX, e.clientY, ...this.valueLines(q, k));
      } else this.ctx.tooltip.hide();
    });
    svg.addEventListener('pointerleave', () => {
      this.ctx.tooltip.hide();
      if (this.hover) {
        this.hover = null;
        this.drawLines();
      }
    });
    svg.addEventListener('click', (e) => {
      const el = (e.target as Element).closest('[data-side]');
      if (!el) return;
      const f: Focus = { side: el.getAttribute('data-side') as Focus['side'], index: Number(el.getAttribute('data-index')) };
      const p = this.ctx.state.pinned;
      this.ctx.set({ pinned: p && p.side === f.side && p.index === f.index ? null : f });
    });
    this.svg = svg;
    this.wrap.append(svg);
  }

  /** "head h: value" lines for one (query, key) over the visible heads. */
  private valueLines(q: number, k: number): string[] {
    const { ds, layer } = this.layout!.model;
    const w = ds.layers[layer]!;
    const nq = ds.queryTokens.length;
    const nk = ds.keyTokens.length;
    return [
      `${this.ctx.label(ds.queryTokens[q]!)} → ${this.ctx.label(ds.keyTokens[k]!)}`,
      ...this.visibleHeads().map((hd) => `head ${hd}: ${this.ctx.fmtWeight(w[(hd * nq + q) * nk + k]!)}`),
    ];
  }

  private drawLines(): void {
    const layout = this.layout;
    if (!layout) return;
    const { ctx } = this;
    const { state } = ctx;
    const { ds } = layout.model;
    const heads = this.visibleHeads();
    const focus = this.focus();
    const fkey = focus ? `${focus.side}:${focus.index}` : 'none';
    if (fkey === this.drawnFocus) return;
    this.drawnFocus = fkey;
    for (const el of this.svg.querySelectorAll('.token.focused')) el.classList.remove('focused');
    this.svg.classList.toggle('has-focus', focus !== null);
    const part = heads.length === 0 ? null : focus && layout.focus?.side === focus.side && layout.focus.index === focus.index ? layout : headFocus(layout, focus as HeadFocus | null, {}, { formatWeight: (v) => ctx.fmtWeight(v) });
    const lines = part?.lines ?? [];
    this.under.replaceChildren();
    this.over.replaceChildren();
    this.linesGroup.replaceChildren();
    appendSvgItems(this.linesGroup, lines);
    this.linesGroup.setAttribute('data-mode', 'svg');
    this.linesGroup.setAttribute('data-count', String(lines.length));
    if (part) {
      appendSvgItems(this.under, part.under);
      // Blocks and values, grouped per (query, key) with a transparent hit area for the tooltip.
      const groups = new Map<string, Item[]>();
      for (const it of part.over) {
        const key = `${it.data?.q}:${it.data?.k}`;
        (groups.get(key) ?? groups.set(key, []).get(key)!).push(it);
      }
      for (const [key, items] of groups) {
        const [q, k] = key.split(':').map(Number) as [number, number];
        const g = s('g', { class: 'weights', 'data-block': '', 'data-q': q, 'data-k': k });
        appendSvgItems(g, items, (it) => (it.className === 'weight-value' ? { testid: `head-value-${it.data?.index}`, 'data-value': String(it.data?.value) } : {}));
        const first = items[0]!;
        if (first.kind === 'rect') g.append(s('rect', { x: first.x - 2, y: first.y - 4, width: heads.length * 7 + 60, height: first.height + 8, fill: 'transparent' }));
        this.over.append(g);
      }
    }

    if (!focus || !part) {
      delete this.readout.dataset.focus;
      replaceChildren(
        this.readout,
        h('span', { class: 'muted' }, heads.length ? `layer ${state.layer} · ${heads.length} of ${ds.numHeads} heads · ` : 'no head selected: click a swatch'),
        part ? h('span', { class: 'muted', testid: 'head-canvas-note' }, `${part.caption}${part.stats.capped ? ' · hover a token for all of its lines' : ''}`) : null,
      );
      return;
    }
    const fi = focus.index;
    this.svg.querySelector(`[data-side="${focus.side}"][data-index="${fi}"]`)?.classList.add('focused');
    const t = focus.side === 'query' ? ds.queryTokens[fi]! : ds.keyTokens[fi]!;
    const pinned = state.pinned && state.pinned.side === focus.side && state.pinned.index === fi;
    const isNewest = !this.hover && !state.pinned && this.newest() !== null;
    this.readout.dataset.focus = `${focus.side}:${fi}`;
    replaceChildren(
      this.readout,
      `${isNewest ? `step ${ds.step}: newest token · ` : ''}${focus.side} ${fi} “${ctx.label(t)}” · ${lines.length} lines`,
      h('span', { class: 'muted' }, isNewest ? ' · hover another token for its lines' : pinned ? ' · pinned (click it again to release)' : ' · click to pin'),
    );
  }

  // --- long inputs ----------------------------------------------------------------------------------------

  private updateLong(): void {
    const { ctx } = this;
    const { state } = ctx;
    if (!this.long) {
      this.long = true;
      this.svg.remove();
      this.layout = null;
      this.structureKey = '';
      this.wrap.append(this.strip.el);
    }
    replaceChildren(
      this.toolbar,
      layerSelect(ctx, 'head-layer'),
      button('head-all', 'all heads', () => ctx.set({ heads: state.heads.map(() => true) }), 'Show every head'),
    );
    this.renderSwatches();
    const source = pageSource(ctx.trace, state.stack);
    const tokens = pageTokens(ctx.trace, state.stack);
    const heads = this.visibleHeads();
    replaceChildren(this.readout, h('span', { class: 'muted', testid: 'head-canvas-note' }, `layer ${state.layer} · ${heads.length} of ${source.numHeads} heads · ${source.numQueries} tokens: the rows in view, each query's strongest keys (computed a band of rows at a time)`));
    const top = this.wrap.getBoundingClientRect().top;
    this.strip.set({
      source,
      layer: state.layer,
      heads,
      theme: ctx.theme(),
      queryLabels: tokens.query.map((t) => ctx.label(t)),
      keyLabels: tokens.key.map((t) => ctx.label(t)),
      querySpecial: tokens.query.map((t) => t.special),
      keySpecial: tokens.key.map((t) => t.special),
      fmtWeight: (v) => ctx.fmtWeight(v),
      height: Math.max(300, window.innerHeight - (top > 0 ? top : 220) - 60),
    });
  }
}
