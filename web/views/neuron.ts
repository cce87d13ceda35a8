/**
 * Interactive neuron view: for a layer, head and query token, the query vector, every key vector,
 * q ⊙ k, q · k, the scaled scores (with the mask and any recorded bias) and the softmax, next to
 * the model's attention. Paints the neuron view's layout (src/views/layout/neuron-view.ts, the
 * same the SVG export paints) from analysis/neuron.ts's numbers on the page's queries and keys:
 * text and bars as SVG, vector strips on a canvas; hovering a component shows its value.
 */
import { scaleOf } from '../../src/views/colors.js';
import { stepWindow } from '../../src/views/generation.js';
import { type NeuronData, type NeuronLayout, type NeuronStrip, neuronData, neuronViewLayout } from '../../src/views/layout/neuron-view.js';
import { fmtValue } from '../../src/views/svg/common.js';
import { renderNeuronView } from '../../src/views/svg/neuron-view.js';
import { rawDisplayStack } from '../../src/views/tokens.js';
import type { Ctx } from '../context.js';
import { appendSvgItems, h, replaceChildren, s, select, sizeCanvas } from '../dom.js';
import { exportButtons } from '../export.js';
import { truncate } from '../text.js';
import { headSelect, layerSelect } from './common.js';

interface StripRow {
  /** Row y (top of the cells). */
  y: number;
  kind: 'query' | 'key';
  /** Key index for key rows. */
  j: number;
}

export class NeuronView {
  readonly el = h('div', { class: 'view neuron-view', testid: 'neuron-view' });
  private readonly toolbar = h('div', { class: 'toolbar' });
  private readonly notes = h('div', { class: 'notes', testid: 'neuron-notes' });
  private readonly readout = h('div', { class: 'readout', testid: 'neuron-readout' });
  private readonly wrap = h('div', { class: 'neuron-wrap' });
  private readonly canvas = h('canvas', { class: 'neuron-strips', testid: 'neuron-strips' });
  private data: NeuronData | null = null;
  private layout: NeuronLayout | null = null;
  private rows: StripRow[] = [];
  private strips = { xK: 0, xP: 0, width: 0, cellH: 0, left: 0 };
  private key = '';
  private waiting = false;

  constructor(private readonly ctx: Ctx) {
    this.el.append(this.toolbar, this.notes, this.readout, h('div', { class: 'scroll' }, this.wrap));
    this.canvas.addEventListener('pointermove', (e) => this.hover(e));
    this.canvas.addEventListener('pointerleave', () => {
      this.ctx.tooltip.hide();
    });
  }

  private hasQk(): boolean {
    const { stack } = this.ctx.state;
    return this.ctx.header.tensors.some((t) => t.kind === 'queries' && t.stack === stack);
  }

  update(): void {
    const { ctx } = this;
    const { state } = ctx;
    const stackData = ctx.trace.attention[state.stack]!;
    const step = ctx.step();
    // At a generation step: the queries there were then, the newest by default.
    const nq = step === undefined ? stackData.dims[1] : stepWindow(ctx.trace, state.stack, step).queries;
    const query = Math.min(state.neuronQuery ?? nq - 1, nq - 1);
    const qTokens = rawDisplayStack(ctx.trace, state.stack).queryTokens.slice(0, nq);
    const qk = this.hasQk();
    replaceChildren(
      this.toolbar,
      layerSelect(ctx, 'neuron-layer'),
      headSelect(ctx, 'neuron-head', state.neuronHead, (neuronHead) => ctx.set({ neuronHead })),
      select('neuron-query', 'query token', qTokens.map((t, i) => ({ value: i, label: `${i} ${truncate(ctx.label(t), 20)}` })), query, (neuronQuery) => ctx.set({ neuronQuery })),
      h('span', { class: 'spacer' }),
      qk
        ? exportButtons(ctx, 'neuron', () =>
            renderNeuronView(ctx.trace, { stack: state.stack, layer: state.layer, head: state.neuronHead, query, theme: state.theme, step }),
          )
        : null,
    );
    if (!qk) {
      this.key = '';
      replaceChildren(
        this.notes,
        h('p', { testid: 'neuron-unavailable' }, 'This trace holds no queries and keys for this stack, so there is nothing to show here. Traces made with `attnscope trace --qk`, and every `attnscope view <model>` page, include them.'),
      );
      this.wrap.replaceChildren();
      return;
    }
    if (!ctx.trace.queries?.[state.stack]) {
      // Queries and keys are still being decoded.
      replaceChildren(this.notes, h('p', { class: 'muted' }, 'decoding queries and keys…'));
      if (!this.waiting) {
        this.waiting = true;
        void ctx.qkReady.then(() => {
          this.waiting = false;
          this.update();
        });
      }
      return;
    }
    const key = [state.stack, state.layer, state.neuronHead, query, state.theme, state.prettify, step ?? 'all'].join('|');
    if (key === this.key) return;
    this.key = key;
    try {
      this.data = neuronData(ctx.trace, { stack: state.stack, layer: state.layer, head: state.neuronHead, query, step });
    } catch (e) {
      this.data = null;
      replaceChildren(this.notes, h('p', {}, (e as Error).message));
      this.wrap.replaceChildren();
      return;
    }
    this.render(this.data);
  }

  /** Text of a derived number (from the page's q and k): 4 significant digits, 3 when q/k are rounded. */
  private fmtDerived(v: number): string {
    return fmtValue(v, this.ctx.header.precision.qk === 'f32' ? 4 : 3);
  }

  /** Text of a q or k component at the precision the page holds it. */
  private fmtComponent(v: number): string {
    const level = this.ctx.header.precision.qk;
    if (!level || level === 'f32') return fmtValue(v, 4);
    return v.toFixed(Number(level.slice(5))).replace(/^-/, '−');
  }

  private render(d: NeuronData): void {
    const { ctx } = this;
    const { state } = ctx;
    const theme = ctx.theme();
    const facts = ctx.header.stacks[d.stack];
    const lossy = ctx.header.precision.qk !== 'f32';
    const layout = neuronViewLayout(ctx.trace, {
      stack: state.stack,
      layer: d.layer,
      head: d.head,
      query: d.query,
      step: ctx.step(),
      theme: state.theme,
      frame: 'page',
      data: d,
      label: (t) => ctx.label(t),
      tokenTip: (side, t) => ctx.tokenTip(side, t),
      formatDerived: (v) => this.fmtDerived(v),
      formatWeight: (v) => ctx.fmtWeight(v),
      approx: lossy,
      ...(facts?.maxSoftmaxError != null ? { softmaxError: facts.maxSoftmaxError } : {}),
    });
    this.layout = layout;

    // Notes (the figure writes them as text lines; the page as one paragraph).
    const notes = layout.notes.map((n) => (n.kind === 'kv' ? h('span', { testid: 'neuron-kv-head' }, n.text) : n.text));
    if (!layout.notes.some((n) => n.kind === 'kv')) notes.splice(2, 0, h('span', { testid: 'neuron-kv-head' }, `query head ${d.head} reads key head ${d.kvHead}`));
    const precision = lossy
      ? h('p', { class: 'precision', testid: 'neuron-precision' }, `To keep this file small, q and k are stored rounded to ${ctx.header.precision.qk?.slice(5)} decimals (shown exactly at that precision); q·k, the scores and the softmax computed from them are approximate (≈). The attention column is the model's own.`)
      : null;
    replaceChildren(this.notes, h('p', { class: 'muted' }, ...notes.flatMap((n, i) => (i ? [' · ', n] : [n]))), precision);

    // Text, numbers and bars as SVG; the strips on a canvas over it (hover reads their components).
    const svg = s('svg', { class: 'neuron-svg', testid: 'neuron-svg', width: Math.ceil(layout.width), height: Math.ceil(layout.height) });
    appendSvgItems(svg, layout.items);
    const frag = document.createDocumentFragment();
    for (const row of layout.rows) {
      const g = s('g', { class: `key-row${row.masked ? ' masked' : ''}`, 'data-k': row.k, testid: `neuron-row-${row.k}` });
      appendSvgItems(g, row.items);
      frag.append(g);
    }
    svg.append(frag);
    const { xK, xP, width: stripW, height: cellH } = layout.strips;
    const c = sizeCanvas(this.canvas, xP + stripW + 2, layout.height);
    const vector = scaleOf(layout.scales.vector, theme);
    const product = scaleOf(layout.scales.product, theme);
    const strip = (st: NeuronStrip) => {
      const scale = st.scale === 'vector' ? vector : product;
      const dim = st.values.length;
      const w = st.width / dim;
      for (let i = 0; i < dim; i++) {
        c.fillStyle = scale.color(st.values[i]!);
        c.fillRect(st.x + i * w, st.y, w + 0.05, st.height);
      }
      c.strokeStyle = theme.grid;
      c.lineWidth = 1;
      c.strokeRect(st.x - 0.5, st.y - 0.5, st.width + 1, st.height + 1);
    };
    strip(layout.queryStrip);
    for (const row of layout.rows) row.strips.forEach(strip);
    this.rows = [{ y: layout.queryStrip.y, kind: 'query', j: -1 }, ...layout.rows.map((r) => ({ y: r.strips[0]!.y, kind: 'key' as const, j: r.k }))];
    this.strips = { xK, xP, width: stripW, cellH, left: xK };
    this.wrap.replaceChildren(svg, this.canvas);
    replaceChildren(this.readout, h('span', { class: 'muted' }, 'hover a vector component for its value'));
  }

  private hover(e: PointerEvent): void {
    const d = this.data;
    if (!d) return;
    const { xK, xP, width, cellH } = this.strips;
    const row = this.rows.find((r) => e.offsetY >= r.y && e.offsetY < r.y + cellH);
    const inK = e.offsetX >= xK && e.offsetX < xK + width;
    const inP = e.offsetX >= xP && e.offsetX < xP + width;
    if (!row || (!inK && !inP) || (row.kind === 'query' && !inK)) {
      this.ctx.tooltip.hide();
      return;
    }
    const i = Math.min(d.headDim - 1, Math.floor(((e.offsetX - (inK ? xK : xP)) / width) * d.headDim));
    let text: string;
    let value: number;
    if (row.kind === 'query') {
      value = d.q[i]!;
      text = `q[${i}] = ${this.fmtComponent(value)}`;
    } else if (inK) {
      value = d.keys[row.j]![i]!;
      text = `k${row.j}[${i}] = ${this.fmtComponent(value)}`;
    } else {
      value = d.products[row.j]![i]!;
      text = `q[${i}] × k${row.j}[${i}] = ${this.fmtComponent(d.q[i]!)} × ${this.fmtComponent(d.keys[row.j]![i]!)} = ${this.fmtDerived(value)}`;
    }
    replaceChildren(this.readout, h('span', { testid: 'neuron-component' }, text));
    this.readout.setAttribute('data-value', String(value));
    this.readout.setAttribute('data-component', String(i));
    this.readout.setAttribute('data-row', row.kind === 'query' ? 'q' : String(row.j));
    this.ctx.tooltip.show(e.clientX, e.clientY, text);
  }
}

