/**
 * Interactive neuron view: for a layer, head and query token, the query vector, every key vector,
 * q ⊙ k, q · k, the scaled scores (with the mask and any position bias) and the softmax, next to
 * the model's attention. The numbers come from the export's `neuronData` (the same computation
 * as the SVG), on the page's queries and keys. Vector strips are drawn on a canvas; hovering a
 * component shows its value.
 */
import { headColor } from '../../src/views/colors.js';
import { stepWindow } from '../../src/views/generation.js';
import { firstGeneratedBoundary, fmtValue } from '../../src/views/svg/common.js';
import { type NeuronData, neuronData, neuronMaskNotes, neuronScales, renderNeuronView } from '../../src/views/svg/neuron-view.js';
import { LAYOUT } from '../../src/views/theme.js';
import { rawDisplayStack } from '../../src/views/tokens.js';
import type { Ctx } from '../context.js';
import { h, replaceChildren, s, select, sizeCanvas } from '../dom.js';
import { exportButtons } from '../export.js';
import { drawLegend } from '../matrix.js';
import { measure, truncate } from '../text.js';
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
    const theme = ctx.theme();
    const facts = ctx.header.stacks[d.stack];
    const lossy = ctx.header.precision.qk !== 'f32';
    const showBias = d.bias !== null;
    const N = LAYOUT.neuron;
    const fs = LAYOUT.fontSize;
    const sfs = LAYOUT.smallFontSize;
    const m = LAYOUT.margin;
    const nk = d.keyTokens.length;
    const rowH = N.rowHeight;
    const cellH = rowH - 6;
    const stripW = Math.max(N.strip, Math.min(4 * N.strip, d.headDim * N.minComponent));
    const approx = lossy ? '≈ ' : '';

    // Notes.
    const notes: (string | HTMLElement)[] = [`head dim ${d.headDim}`, `q·k ${d.scaleNote}`];
    const kv = h('span', { testid: 'neuron-kv-head' }, d.numKeyValueHeads < d.numHeads
      ? `grouped-query attention: query head ${d.head} reads key head ${d.kvHead} (${d.numHeads} query heads share ${d.numKeyValueHeads} key heads)`
      : `query head ${d.head} reads key head ${d.kvHead}`);
    notes.push(kv);
    notes.push(...neuronMaskNotes(d));
    if (showBias) notes.push(`${d.biasKind ?? 'bias'}: the model adds it to the scaled scores (column “bias”, as recorded)`);
    if (facts?.maxSoftmaxError != null) notes.push(`softmax(score) = the model's attention (max |Δ| ${fmtValue(facts.maxSoftmaxError, 2)} on the exact trace)`);
    else notes.push(`softmax(score) = the model's attention (max |Δ| ${fmtValue(d.maxSoftmaxError, 2)})`);
    if (d.note) notes.push(d.note);
    const precision = lossy
      ? h('p', { class: 'precision', testid: 'neuron-precision' }, `To keep this file small, q and k are stored rounded to ${ctx.header.precision.qk?.slice(5)} decimals (shown exactly at that precision); q·k, the scores and the softmax computed from them are approximate (≈). The attention column is the model's own.`)
      : null;
    replaceChildren(this.notes, h('p', { class: 'muted' }, ...notes.flatMap((n, i) => (i ? [' · ', n] : [n]))), precision);

    // Columns (as in the SVG export).
    const labels = d.keyTokens.map((t, j) => `${j} ${truncate(ctx.label(t))}`);
    const qLabel = truncate(ctx.label(d.queryToken));
    // Wide enough for every key label and for the (bold) query label above them.
    const labelW = Math.max(60, measure(`q  ${d.query} ${qLabel}`, fs, 'bold'), ...labels.map((l) => measure(l, fs))) + 8;
    const numW = N.numberColumn;
    const xLabel = m + labelW;
    const xK = xLabel + 10;
    const xP = xK + stripW + 16;
    const xDot = xP + stripW + 16 + numW;
    // With a bias: q·k, + bias, = score (scale · q·k + bias); without: q·k, × scale.
    const xBias = showBias ? xDot + numW : xDot;
    const xScore = xBias + numW;
    const xSoft = xScore + numW;
    const xBar = xSoft + 12;
    const barW = 120;
    const width = xBar + barW + 70;

    const svg = s('svg', { class: 'neuron-svg', testid: 'neuron-svg' });
    let y = m;
    const qEl = s('text', { x: xLabel, y: y + rowH / 2 + fs * 0.36, 'text-anchor': 'end', class: `token query${d.queryToken.special ? ' special' : ''}${d.queryToken.generated ? ' generated' : ''}`, 'font-weight': 'bold', testid: 'neuron-query-label' }, `q  ${d.query} ${qLabel}`);
    qEl.append(s('title', {}, `query ${d.query}: ${ctx.tokenTip('query', d.queryToken)}`));
    svg.append(qEl);
    svg.append(s('rect', { x: xP, y: y + 3, width: 10, height: cellH, fill: headColor(d.head, d.numHeads) }));
    svg.append(s('text', { x: xP + 16, y: y + rowH / 2 + sfs * 0.36, class: 'muted small' }, `query head ${d.head}${d.numKeyValueHeads < d.numHeads ? ` → key head ${d.kvHead}` : ''}`));
    const rows: StripRow[] = [{ y: y + 3, kind: 'query', j: -1 }];
    y += rowH + 10;
    const header = (x: number, label: string, anchor: 'start' | 'end' = 'end') => s('text', { x, y: y + sfs, 'text-anchor': anchor, class: 'muted small header' }, label);
    svg.append(
      header(xLabel, 'key'),
      header(xK, 'k', 'start'),
      header(xP, 'q ⊙ k', 'start'),
      header(xDot, `${approx}q · k`),
      header(xScore, `${approx}${showBias || d.scale === 1 ? 'score' : `× ${fmtValue(d.scale, 3)}`}`),
      header(xSoft, `${approx}softmax`),
      header(xBar, 'attention (model)', 'start'),
    );
    if (showBias) svg.append(header(xBias, '+ bias'));
    y += sfs + 8;
    svg.append(s('line', { x1: m, y1: y - 3, x2: width - 40, y2: y - 3, stroke: theme.grid }));
    const rowsTop = y;
    const frag = document.createDocumentFragment();
    const color = headColor(d.head, d.numHeads);
    for (let j = 0; j < nk; j++) {
      const t = d.keyTokens[j]!;
      const ry = rowsTop + j * rowH;
      const ty = ry + rowH / 2 + fs * 0.36;
      const masked = d.masked[j]!;
      const g = s('g', { class: `key-row${masked ? ' masked' : ''}`, 'data-k': j, testid: `neuron-row-${j}` });
      if (masked) g.append(s('rect', { x: m, y: ry, width: width - 40 - m, height: rowH, fill: theme.masked }));
      if (j === d.query && d.stack !== 'cross') g.append(s('rect', { x: m, y: ry, width: 4, height: rowH, fill: color }));
      const label = s('text', { x: xLabel, y: ty, 'text-anchor': 'end', class: `token key${t.special ? ' special' : ''}${t.generated ? ' generated' : ''}${masked ? ' dim' : ''}` }, labels[j]!);
      label.append(s('title', {}, `key ${j}: ${ctx.tokenTip('key', t)}`));
      g.append(label);
      const num = (x: number, v: number, cls: string, text = this.fmtDerived(v), dim = false) =>
        s('text', { x, y: ty, 'text-anchor': 'end', class: `num ${cls}${dim ? ' dim' : ''}`, testid: `neuron-${cls}-${j}`, 'data-value': String(v) }, text);
      g.append(num(xDot, d.dots[j]!, 'dot', undefined, masked));
      g.append(masked ? num(xScore, -Infinity, 'score', '−∞', true) : num(xScore, d.scores[j]!, 'score'));
      if (d.bias) g.append(num(xBias, d.bias[j]!, 'bias', undefined, masked));
      g.append(num(xSoft, d.softmax[j]!, 'softmax', undefined, masked));
      const w = d.attention[j]!;
      g.append(s('rect', { x: xBar, y: ry + 4, width: Math.max(0, barW * Math.min(1, w)), height: rowH - 8, fill: color, class: 'attention-bar' }));
      g.append(s('text', { x: xBar + barW * Math.min(1, w) + 4, y: ty - 1, class: 'muted small num attention', testid: `neuron-attention-${j}`, 'data-value': String(w) }, ctx.fmtWeight(w)));
      frag.append(g);
      rows.push({ y: ry + 3, kind: 'key', j });
    }
    svg.append(frag);
    const gk = firstGeneratedBoundary(d.keyTokens);
    if (gk !== null) svg.append(s('line', { x1: m, y1: rowsTop + gk * rowH, x2: width - 40, y2: rowsTop + gk * rowH, class: 'prompt-boundary', 'data-axis': 'key', testid: 'neuron-boundary' }));
    const tableBottom = rowsTop + nk * rowH + 14;
    svg.setAttribute('width', String(Math.ceil(width)));
    svg.setAttribute('height', String(Math.ceil(tableBottom + 150)));
    this.rows = rows;
    this.strips = { xK, xP, width: stripW, cellH, left: xK };

    // Strips and legends on one canvas over the SVG.
    const { vecScale, prodScale } = neuronScales(d, theme);
    const cw = xP + stripW + 2;
    const c = sizeCanvas(this.canvas, cw, tableBottom + 150);
    const strip = (values: ArrayLike<number>, x: number, yy: number, scale: typeof vecScale) => {
      const dim = values.length;
      const w = stripW / dim;
      for (let i = 0; i < dim; i++) {
        c.fillStyle = scale.color(values[i]!);
        c.fillRect(x + i * w, yy, w + 0.05, cellH);
      }
      c.strokeStyle = theme.grid;
      c.lineWidth = 1;
      c.strokeRect(x - 0.5, yy - 0.5, stripW + 1, cellH + 1);
    };
    strip(d.q, xK, rows[0]!.y, vecScale);
    for (let j = 0; j < nk; j++) {
      strip(d.keys[j]!, xK, rows[j + 1]!.y, vecScale);
      strip(d.products[j]!, xP, rows[j + 1]!.y, prodScale);
    }
    const lw = drawLegend(c, vecScale, theme, m, tableBottom, 90, 'q, k components');
    drawLegend(c, prodScale, theme, m + lw + 40, tableBottom, 90, 'q ⊙ k components');
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

