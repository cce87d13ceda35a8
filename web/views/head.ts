/**
 * Interactive head view: query tokens left, key tokens right, one line per (query, key, head),
 * opacity = weight, one colour per head. Swatches toggle (click) or solo (double-click) heads;
 * hovering a token shows only its lines and the values; a click pins it.
 *
 * Layout constants, colours and the data model are the SVG export's (renderHeadView), so the
 * export looks like the page. Lines are SVG elements when there are few; above LINE_LIMIT the
 * all-tokens picture is drawn on a canvas (a 12-head, 512-token layer has 3 million lines).
 */
import { headColors, textOn } from '../../src/views/colors.js';
import { firstGeneratedBoundary } from '../../src/views/svg/common.js';
import { renderHeadView } from '../../src/views/svg/head-view.js';
import { LAYOUT } from '../../src/views/theme.js';
import { type DisplayStack, PAIR_FILTERS, type PairFilter, hasPair, pairFilterAccepts } from '../../src/views/tokens.js';
import type { Ctx, Focus } from '../context.js';
import { type Option, button, h, replaceChildren, s, select, sizeCanvas } from '../dom.js';
import { exportButtons } from '../export.js';
import { measure, truncate } from '../text.js';
import { layerSelect, stackHeaders } from './common.js';

/** Above this many lines the unfocused picture goes to a canvas. */
export const LINE_LIMIT = 20000;
/** The canvas draws at most this many lines (the strongest). */
export const MAX_CANVAS_LINES = 20000;
/** Total pixels of line the overview canvas may draw. */
const PIXEL_BUDGET = 20e6;

/** The weight above which at most `limit` of the heads' weights lie (0 when all fit). */
function weightCutoff(W: Float32Array, heads: number[], size: number, limit: number): number {
  const BINS = 2048;
  const hist = new Uint32Array(BINS);
  let n = 0;
  for (const hd of heads) {
    for (let i = hd * size, e = (hd + 1) * size; i < e; i++) {
      const w = W[i]!;
      if (!(w > 0)) continue;
      // Log bins from 1e-8 to 1.
      const b = Math.max(0, Math.min(BINS - 1, Math.floor(((Math.log10(Math.min(1, w)) + 8) / 8) * (BINS - 1))));
      hist[b]!++;
      n++;
    }
  }
  if (n <= limit) return 0;
  let acc = 0;
  for (let b = BINS - 1; b >= 0; b--) {
    acc += hist[b]!;
    if (acc > limit) return 10 ** (((b + 1) / (BINS - 1)) * 8 - 8);
  }
  return 0;
}

interface Geometry {
  top: number;
  leftX: number;
  lineX1: number;
  lineX2: number;
  rightX: number;
  rightW: number;
  leftBlocksX: number;
  rightBlocksX: number;
  width: number;
  height: number;
  rowH: number;
}

export class HeadView {
  readonly el = h('div', { class: 'view head-view', testid: 'head-view' });
  private readonly toolbar = h('div', { class: 'toolbar' });
  private readonly swatches = h('div', { class: 'swatches', testid: 'head-swatches' });
  private readonly readout = h('div', { class: 'readout', testid: 'head-readout' });
  private readonly wrap = h('div', { class: 'head-wrap' });
  private svg: SVGSVGElement = s('svg');
  private readonly canvas = h('canvas', { class: 'head-lines-canvas', testid: 'head-lines-canvas' });
  private linesGroup: SVGGElement = s('g');
  private overlay: SVGGElement = s('g');
  private ds: DisplayStack | null = null;
  private geo: Geometry | null = null;
  private hover: Focus | null = null;
  private structureKey = '';
  private canvasNote = '';
  private canvasToken = 0;

  constructor(private readonly ctx: Ctx) {
    this.el.append(this.toolbar, this.swatches, this.readout, this.wrap);
    this.wrap.append(this.canvas);
  }

  private visibleHeads(): number[] {
    return this.ctx.state.heads.flatMap((on, h) => (on ? [h] : []));
  }

  /** The newest token's row at a generation step (the default focus then), or null. */
  private newest(): Focus | null {
    const ds = this.ds;
    return ds && ds.step !== null && ds.newest !== null ? { side: 'query', index: ds.newest } : null;
  }

  private focus(): Focus | null {
    return this.hover ?? this.ctx.state.pinned ?? this.newest();
  }

  update(): void {
    const { state } = this.ctx;
    const key = [state.stack, state.layer, state.hideSpecial, state.mergeSubwords, state.prettify, state.theme, this.ctx.step() ?? 'all'].join('|');
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
    const ds = this.ds;
    const pairOk = ds ? hasPair(ds.queryTokens) || hasPair(ds.keyTokens) : false;
    const pairOptions: Option<PairFilter>[] = PAIR_FILTERS.map((p) => ({ value: p, label: p === 'all' ? 'all pairs' : p }));
    replaceChildren(
      this.toolbar,
      layerSelect(ctx, 'head-layer'),
      pairOk ? select('head-pair', 'sentences', pairOptions, state.pair, (pair) => ctx.set({ pair })) : null,
      button('head-all', 'all heads', () => ctx.set({ heads: state.heads.map(() => true) }), 'Show every head'),
      h('span', { class: 'spacer' }),
      exportButtons(ctx, 'head', () => {
        const heads = this.visibleHeads();
        const f = state.pinned;
        return renderHeadView(ctx.trace, {
          stack: state.stack,
          layer: state.layer,
          theme: state.theme,
          hideSpecial: state.hideSpecial,
          mergeSubwords: state.mergeSubwords,
          heads: heads.length ? heads : undefined,
          pair: state.pair,
          // At a step the export highlights the newest token unless another one is pinned.
          query: f && f.side === 'query' ? f.index : undefined,
          step: ctx.step(),
        });
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

  private buildStructure(): void {
    const { ctx } = this;
    const { state } = ctx;
    this.svg.remove();
    let ds: DisplayStack;
    try {
      ds = ctx.display([state.layer]);
    } catch (e) {
      this.ds = null;
      this.svg = s('svg');
      replaceChildren(this.readout, (e as Error).message);
      return;
    }
    this.ds = ds;
    const theme = ctx.theme();
    const L = LAYOUT.head;
    const fs = LAYOUT.fontSize;
    const sfs = LAYOUT.smallFontSize;
    const m = LAYOUT.margin;
    const nq = ds.queryTokens.length;
    const nk = ds.keyTokens.length;
    const nHeads = ds.numHeads;
    const labelsQ = ds.queryTokens.map((t) => truncate(ctx.label(t)));
    const labelsK = ds.keyTokens.map((t) => truncate(ctx.label(t)));
    const leftW = Math.max(24, ...labelsQ.map((l) => measure(l, fs)));
    const rightW = Math.max(24, ...labelsK.map((l) => measure(l, fs)));
    const blocksW = nHeads * 7 + 6 + measure('0.00000', sfs) + 8;
    const segMarks = hasPair(ds.queryTokens) || hasPair(ds.keyTokens) ? 16 : 0;
    const leftBlocksX = m + segMarks;
    const leftX = leftBlocksX + blocksW + leftW;
    const lineX1 = leftX + L.labelPad;
    const lineX2 = lineX1 + L.gap;
    const rightX = lineX2 + L.labelPad;
    const rightBlocksX = rightX + rightW + 6;
    const width = rightBlocksX + blocksW + segMarks + m;
    const headerY = m;
    const top = headerY + sfs + 10;
    const rowH = L.rowHeight;
    const height = top + Math.max(nq, nk) * rowH + m;
    this.geo = { top, leftX, lineX1, lineX2, rightX, rightW, leftBlocksX, rightBlocksX, width, height, rowH };
    const rowY = (i: number) => top + i * rowH + rowH / 2;

    const svg = s('svg', { width: Math.ceil(width), height: Math.ceil(height), class: 'head-svg', testid: 'head-svg' });
    const [qHeader, kHeader] = stackHeaders(state.stack);
    svg.append(
      s('text', { x: leftX, y: headerY + sfs, 'text-anchor': 'end', class: 'muted small' }, qHeader),
      s('text', { x: rightX, y: headerY + sfs, class: 'muted small' }, kHeader),
    );
    this.overlay = s('g', { class: 'focus-overlay' });
    this.linesGroup = s('g', { class: 'lines', testid: 'head-lines', 'stroke-width': L.lineWidth, 'stroke-linecap': 'round' });
    svg.append(this.overlay, this.linesGroup);
    const tokenText = (label: string, x: number, i: number, side: 'query' | 'key', anchor: 'start' | 'end') => {
      const t = side === 'query' ? ds.queryTokens[i]! : ds.keyTokens[i]!;
      const cls = ['token', side, t.special ? 'special' : '', t.generated ? 'generated' : ''].filter(Boolean).join(' ');
      const el = s('text', { x, y: rowY(i) + fs * 0.36, 'text-anchor': anchor, class: cls, 'data-side': side, 'data-index': i, testid: `head-${side}-${i}` }, label);
      const title = s('title');
      title.textContent = `${side} ${i}: ${ctx.tokenTip(side, t)}`;
      el.append(title);
      return el;
    };
    const labels = s('g', { class: 'labels' });
    labelsQ.forEach((l, i) => labels.append(tokenText(l, leftX, i, 'query', 'end')));
    labelsK.forEach((l, i) => labels.append(tokenText(l, rightX, i, 'key', 'start')));
    svg.append(labels);
    // Where the generated tokens start: a dashed line across each column.
    const boundary = (tokens: typeof ds.queryTokens, x1: number, x2: number, axis: string) => {
      const g = firstGeneratedBoundary(tokens);
      if (g === null) return;
      const y = top + g * rowH;
      svg.append(s('line', { x1, y1: y, x2, y2: y, class: 'prompt-boundary', 'data-axis': axis, testid: `head-boundary-${axis}`, 'data-index': g }));
    };
    boundary(ds.queryTokens, leftX - leftW - 2, leftX + 2, 'query');
    boundary(ds.keyTokens, rightX - 2, rightX + rightW + 2, 'key');
    if (segMarks) {
      const marks = (tokens: typeof ds.queryTokens, x: number, left: boolean) => {
        for (const seg of [0, 1]) {
          const idx = tokens.flatMap((t, i) => (t.segment === seg ? [i] : []));
          if (idx.length === 0) continue;
          const y0 = rowY(idx[0]!) - rowH / 2 + 3;
          const y1 = rowY(idx[idx.length - 1]!) + rowH / 2 - 3;
          svg.append(
            s('line', { x1: x, y1: y0, x2: x, y2: y1, stroke: theme.grid, 'stroke-width': 2 }),
            s('text', { x: x + (left ? -4 : 4), y: (y0 + y1) / 2 + 4, 'text-anchor': left ? 'end' : 'start', class: 'muted small' }, seg === 0 ? 'A' : 'B'),
          );
        }
      };
      marks(ds.queryTokens, m + 10, true);
      marks(ds.keyTokens, width - m - 10, false);
    }
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
    this.wrap.prepend(svg);
    this.canvas.style.left = `${lineX1 - 2}px`;
    this.canvas.style.top = '0px';
  }

  /** "head h: value" lines for one (query, key) over the visible heads. */
  private valueLines(q: number, k: number): string[] {
    const ds = this.ds!;
    const w = ds.layers[this.ctx.state.layer]!;
    const nq = ds.queryTokens.length;
    const nk = ds.keyTokens.length;
    return [
      `${this.ctx.label(ds.queryTokens[q]!)} → ${this.ctx.label(ds.keyTokens[k]!)}`,
      ...this.visibleHeads().map((hd) => `head ${hd}: ${this.ctx.fmtWeight(w[(hd * nq + q) * nk + k]!)}`),
    ];
  }

  private drawLines(): void {
    const ds = this.ds;
    const geo = this.geo;
    if (!ds || !geo) return;
    const { ctx } = this;
    const { state } = ctx;
    const theme = ctx.theme();
    const colors = headColors(ds.numHeads);
    const heads = this.visibleHeads();
    const focus = this.focus();
    const nq = ds.queryTokens.length;
    const nk = ds.keyTokens.length;
    const W = ds.layers[state.layer]!;
    const pair = state.pair;
    const rowY = (i: number) => geo.top + i * geo.rowH + geo.rowH / 2;
    this.linesGroup.replaceChildren();
    this.overlay.replaceChildren();
    for (const el of this.svg.querySelectorAll('.token.focused')) el.classList.remove('focused');
    this.svg.classList.toggle('has-focus', focus !== null);

    const accepts = (q: number, k: number) => pairFilterAccepts(pair, ds.queryTokens[q]!.segment, ds.keyTokens[k]!.segment);
    // Count the unfocused picture's lines to pick SVG or canvas.
    let total = 0;
    if (!focus) {
      for (const hd of heads) for (let i = hd * nq * nk, e = (hd + 1) * nq * nk; i < e; i++) if (W[i]! > 0) total++;
    }
    const useCanvas = !focus && total > LINE_LIMIT;
    this.canvasNote = '';
    if (!useCanvas) this.canvasToken++;
    this.canvas.style.display = useCanvas ? 'block' : 'none';
    this.linesGroup.setAttribute('data-mode', useCanvas ? 'canvas' : 'svg');
    if (useCanvas) {
      // Long inputs: the strongest MAX_CANVAS_LINES lines, drawn across animation frames (each
      // line of a 512-token view is thousands of pixels long). Hovering a token shows all of its lines.
      // Software rasterisers fill ~50 M pixels/s: keep the picture's total line length within budget.
      const avgLength = Math.max(LAYOUT.head.gap, (Math.max(nq, nk) * geo.rowH) / 3) * LAYOUT.head.lineWidth;
      const maxLines = Math.max(1000, Math.min(MAX_CANVAS_LINES, Math.floor(PIXEL_BUDGET / avgLength)));
      const cutoff = weightCutoff(W, heads, nq * nk, maxLines);
      const c = sizeCanvas(this.canvas, geo.lineX2 - geo.lineX1 + 4, geo.height);
      c.lineWidth = LAYOUT.head.lineWidth;
      c.lineCap = 'round';
      const x2 = geo.lineX2 - geo.lineX1 + 2;
      const lines: number[] = [];
      for (const hd of heads) {
        for (let q = 0; q < nq; q++) {
          const base = (hd * nq + q) * nk;
          for (let k = 0; k < nk; k++) {
            const w = W[base + k]!;
            if (w >= cutoff && w > 0 && accepts(q, k)) lines.push(base + k);
          }
        }
      }
      // Weakest first, so the strong lines end on top.
      lines.sort((a, b) => W[a]! - W[b]!);
      const token = ++this.canvasToken;
      this.canvas.setAttribute('data-drawn', 'false');
      let i = 0;
      const step = () => {
        if (token !== this.canvasToken) return;
        const t0 = performance.now();
        while (i < lines.length && performance.now() - t0 < 24) {
          for (let e = Math.min(lines.length, i + 500); i < e; i++) {
            const p = lines[i]!;
            const hd = Math.floor(p / (nq * nk));
            const q = Math.floor((p % (nq * nk)) / nk);
            const k = p % nk;
            c.strokeStyle = colors[hd]!;
            c.globalAlpha = Math.min(1, W[p]!);
            c.beginPath();
            c.moveTo(2, rowY(q));
            c.lineTo(x2, rowY(k));
            c.stroke();
          }
        }
        if (i < lines.length) requestAnimationFrame(step);
        else this.canvas.setAttribute('data-drawn', 'true');
      };
      step();
      this.linesGroup.setAttribute('data-count', String(total));
      this.canvasNote = lines.length < total ? `drawing the ${lines.length.toLocaleString('en')} strongest of ${total.toLocaleString('en')} lines (weight ≥ ${ctx.fmtWeight(cutoff)}); hover a token for all of its lines` : '';
    } else {
      const frag = document.createDocumentFragment();
      let count = 0;
      for (const hd of heads) {
        const g = s('g', { stroke: colors[hd]!, 'data-head': hd, class: 'head-lines' });
        const add = (q: number, k: number) => {
          const w = W[(hd * nq + q) * nk + k]!;
          if (!(w > 0) || !accepts(q, k)) return;
          g.append(s('line', { x1: geo.lineX1, y1: rowY(q), x2: geo.lineX2, y2: rowY(k), 'stroke-opacity': Math.min(1, w), 'data-q': q, 'data-k': k }));
          count++;
        };
        if (!focus) for (let q = 0; q < nq; q++) for (let k = 0; k < nk; k++) add(q, k);
        else if (focus.side === 'query') for (let k = 0; k < nk; k++) add(focus.index, k);
        else for (let q = 0; q < nq; q++) add(q, focus.index);
        frag.append(g);
      }
      this.linesGroup.append(frag);
      this.linesGroup.setAttribute('data-count', String(count));
    }

    if (!focus) {
      delete this.readout.dataset.focus;
      replaceChildren(
        this.readout,
        h('span', { class: 'muted' }, heads.length ? `layer ${state.layer} · ${heads.length} of ${ds.numHeads} heads · ` : 'no head selected: click a swatch'),
        heads.length ? h('span', { class: 'muted', testid: 'head-canvas-note' }, this.canvasNote || `${this.linesGroup.getAttribute('data-count')} lines`) : null,
      );
      return;
    }
    // Focus: highlight, and per-head weight blocks (and values) beside the other column.
    const fi = focus.index;
    const label = this.svg.querySelector(`[data-side="${focus.side}"][data-index="${fi}"]`);
    label?.classList.add('focused');
    const bw = label ? (label as SVGTextElement).getBBox().width + 8 : 40;
    const hx = focus.side === 'query' ? geo.leftX - bw + 4 : geo.rightX - 4;
    this.overlay.append(s('rect', { x: hx, y: rowY(fi) - geo.rowH / 2 + 1, width: bw, height: geo.rowH - 2, rx: 3, fill: theme.highlight }));
    const other = focus.side === 'query' ? nk : nq;
    const bx = focus.side === 'query' ? geo.rightBlocksX : geo.leftBlocksX;
    const sfs = LAYOUT.smallFontSize;
    for (let j = 0; j < other; j++) {
      const [q, k] = focus.side === 'query' ? [fi, j] : [j, fi];
      if (!accepts(q, k)) continue;
      const g = s('g', { class: 'weights', 'data-block': '', 'data-q': q, 'data-k': k });
      heads.forEach((hd, n) => {
        const w = W[(hd * nq + q) * nk + k]!;
        g.append(s('rect', { x: bx + n * 7, y: rowY(j) - 6, width: 6, height: 12, fill: colors[hd]!, 'fill-opacity': Math.min(1, w), class: 'weight-block' }));
      });
      if (heads.length === 1) {
        const w = W[(heads[0]! * nq + q) * nk + k]!;
        g.append(s('text', { x: bx + 7 + 4, y: rowY(j) + sfs * 0.36, class: 'muted small weight-value', testid: `head-value-${j}`, 'data-value': String(w) }, ctx.fmtWeight(w)));
      }
      // A transparent hit area so the tooltip shows the values of every visible head.
      g.append(s('rect', { x: bx - 2, y: rowY(j) - geo.rowH / 2, width: heads.length * 7 + 60, height: geo.rowH, fill: 'transparent' }));
      this.overlay.append(g);
    }
    const t = focus.side === 'query' ? ds.queryTokens[fi]! : ds.keyTokens[fi]!;
    const pinned = state.pinned && state.pinned.side === focus.side && state.pinned.index === fi;
    const isNewest = !this.hover && !state.pinned && this.newest() !== null;
    this.readout.dataset.focus = `${focus.side}:${fi}`;
    replaceChildren(
      this.readout,
      `${isNewest ? `step ${ds.step}: newest token · ` : ''}${focus.side} ${fi} “${ctx.label(t)}” · ${this.linesGroup.getAttribute('data-count')} lines`,
      h('span', { class: 'muted' }, isNewest ? ' · hover another token for its lines' : pinned ? ' · pinned (click it again to release)' : ' · click to pin'),
    );
  }
}
