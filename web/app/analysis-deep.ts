/**
 * The deep dive of the served app: how much each layer's attention (and cross attention) and MLP
 * change every token's residual stream (analysis/hidden-states.ts updateNorms, computed by the
 * server: DeepDiveData). One grid per sub-layer, layers × tokens, each cell the update's norm
 * relative to the stream it is added to (or its absolute norm), on the sequential scale of the
 * attention views; the stream's own norm per layer in a third grid. Hover a cell for its values.
 * The layout is one Picture painted into the page and into the SVG / PNG export.
 */
import type { DeepDiveData } from '../../src/server/protocol.js';
import { weightScale } from '../../src/views/colors.js';
import { type Item, type Picture, fitText, textWidth } from '../../src/views/layout/common.js';
import { svgDocument, svgItems } from '../../src/views/svg/common.js';
import { LAYOUT, type Theme } from '../../src/views/theme.js';
import type { Ctx } from '../context.js';
import { appendSvgItems, frameWidth, h, replaceChildren, s, select } from '../dom.js';
import { exportButtons } from '../export.js';

export type DeepMeasure = 'relative' | 'norm';

interface Grid {
  name: string;
  title: string;
  /** [layer][token]. */
  values: number[][];
}

function grids(data: DeepDiveData, measure: DeepMeasure): Grid[] {
  const pick = (g: { norm: number[]; relative: number[] }) => (measure === 'relative' ? g.relative : g.norm);
  const out: Grid[] = [{ name: 'attention', title: measure === 'relative' ? '‖attention update‖ / ‖stream‖' : '‖attention update‖', values: data.layers.map((l) => pick(l.attention)) }];
  if (data.layers.some((l) => l.cross)) out.push({ name: 'cross', title: measure === 'relative' ? '‖cross-attention update‖ / ‖stream‖' : '‖cross-attention update‖', values: data.layers.map((l) => (l.cross ? pick(l.cross) : l.residual.map(() => 0))) });
  out.push({ name: 'mlp', title: measure === 'relative' ? '‖MLP update‖ / ‖stream‖' : '‖MLP update‖', values: data.layers.map((l) => pick(l.mlp)) });
  out.push({ name: 'residual', title: '‖residual stream entering the layer‖', values: data.layers.map((l) => l.residual) });
  return out;
}

export const fmtNorm = (v: number): string => (v === 0 ? '0' : Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4 ? String(Number(v.toPrecision(3))) : v.toExponential(2));

/** The deep dive's picture: one grid per measure, each with its own colour scale (0 … its largest value). */
export function deepDiveLayout(data: DeepDiveData, theme: Theme, options: { measure: DeepMeasure; maxWidth: number; top?: number }): Picture {
  const m = LAYOUT.margin;
  const fs = LAYOUT.fontSize;
  const sfs = LAYOUT.smallFontSize;
  const n = data.tokens.length;
  const L = data.layers.length;
  const labelW = Math.ceil(textWidth('layer 00', fs)) + 10;
  const cell = Math.max(10, Math.min(40, Math.floor((options.maxWidth - 2 * m - labelW) / Math.max(1, n))));
  const ch = Math.max(12, Math.min(26, cell));
  const tokenH = Math.ceil(Math.min(120, Math.max(...data.tokens.map((t) => textWidth(fitText(t, sfs, 110).text, sfs))))) + 8;
  const items: Item[] = [];
  let y = options.top ?? m;
  const gridX = m + labelW;
  let right = gridX + n * cell;
  for (const g of grids(data, options.measure)) {
    y += fs + 4;
    let max = 0;
    for (const row of g.values) for (const v of row) if (Number.isFinite(v)) max = Math.max(max, v);
    items.push({ kind: 'text', x: m, y, text: `${g.title} · largest ${fmtNorm(max)}`, size: fs, fill: theme.text, bold: true, className: 'deep-title', data: { grid: g.name } });
    y += 8;
    const scale = weightScale(theme, { max: max > 0 ? max : 1 });
    // Token labels over the columns, rotated.
    for (let p = 0; p < n; p++) {
      items.push({ kind: 'text', x: gridX + p * cell + cell / 2 + sfs * 0.35, y: y + tokenH - 4, text: fitText(data.tokens[p]!, sfs, 110).text, size: sfs, fill: theme.text, anchor: 'start', rotate: -90, className: 'deep-token', data: { position: p } });
    }
    y += tokenH;
    for (let l = 0; l < L; l++) {
      items.push({ kind: 'text', x: gridX - 6, y: y + ch / 2 + fs * 0.35, text: `layer ${l}`, size: fs, fill: theme.muted, anchor: 'end', className: 'deep-layer' });
      for (let p = 0; p < n; p++) {
        const v = g.values[l]![p]!;
        items.push({
          kind: 'rect',
          x: gridX + p * cell,
          y,
          width: cell - 1,
          height: ch - 1,
          fill: scale.color(v),
          className: 'deep-cell',
          data: { grid: g.name, layer: l, position: p, value: v },
          tip: `${g.title} · layer ${l} · “${data.tokens[p]}” (position ${p}): ${fmtNorm(v)}`,
        });
      }
      y += ch;
    }
    y += 10;
    right = Math.max(right, gridX + n * cell);
  }
  return { width: right + m, height: y + m, background: theme.background, items };
}

/** The deep dive in the page (a view of the App, hosted by the served app). */
export class DeepDiveView {
  readonly el: HTMLElement;
  private readonly toolbar = h('div', { class: 'toolbar' });
  private readonly readout = h('div', { class: 'readout', testid: 'deep-readout' });
  private readonly wrap = h('div', { class: 'scroll analysis-wrap' });
  private key = '';

  constructor(
    private readonly ctx: Ctx,
    private readonly data: DeepDiveData,
    private readonly measure: () => DeepMeasure,
    private readonly setMeasure: (m: DeepMeasure) => void,
  ) {
    this.el = h('div', { class: 'view analysis-view deep-view', testid: 'deep-view' });
    this.el.append(this.toolbar, this.readout, this.wrap);
    this.wrap.addEventListener('pointermove', (e) => {
      const el = (e.target as Element | null)?.closest('[data-grid][data-layer]');
      if (!el) return this.idle();
      const v = Number(el.getAttribute('data-value'));
      const l = el.getAttribute('data-layer')!;
      const p = Number(el.getAttribute('data-position'));
      const text = `${el.getAttribute('data-grid')} · layer ${l} · “${this.data.tokens[p]}” (position ${p}): ${fmtNorm(v)}`;
      replaceChildren(this.readout, text);
      for (const k of ['grid', 'layer', 'position', 'value']) this.readout.setAttribute(`data-${k}`, el.getAttribute(`data-${k}`)!);
      this.ctx.tooltip.show(e.clientX, e.clientY, text);
    });
    this.wrap.addEventListener('pointerleave', () => this.idle());
  }

  private idle(): void {
    this.ctx.tooltip.hide();
    for (const k of ['grid', 'layer', 'position', 'value']) this.readout.removeAttribute(`data-${k}`);
    replaceChildren(this.readout, h('span', { class: 'muted' }, `${this.data.stack} stack · how much each layer's attention and MLP change each token · hover a cell for its value`));
  }

  private title(): string {
    return `${this.ctx.trace.model.name} · deep dive: residual-stream updates per layer`;
  }

  svg(): string {
    const theme = this.ctx.theme();
    const top = LAYOUT.margin + LAYOUT.titleFontSize + 8;
    const pic = deepDiveLayout(this.data, theme, { measure: this.measure(), maxWidth: 1400, top });
    const heading = `<text x="${LAYOUT.margin}" y="${LAYOUT.margin + LAYOUT.titleFontSize}" font-size="${LAYOUT.titleFontSize}" font-weight="bold" fill="${theme.text}">${escapeXml(this.title())}</text>`;
    return svgDocument(pic.width, pic.height, theme, heading + svgItems(pic.items, theme, 'attnscope-deep'), { title: this.title(), className: 'attnscope-deep' });
  }

  update(): void {
    const measure = this.measure();
    replaceChildren(
      this.toolbar,
      select('deep-measure', 'measure', [
        { value: 'relative', label: 'relative to the stream' },
        { value: 'norm', label: 'absolute norm' },
      ] as const, measure, (m) => this.setMeasure(m)),
      h('span', { class: 'spacer' }),
      exportButtons(this.ctx, 'deep', () => this.svg()),
    );
    const width = frameWidth(this.el);
    const key = `${this.ctx.state.theme}|${measure}|${width}`;
    if (key === this.key) return;
    this.key = key;
    const pic = deepDiveLayout(this.data, this.ctx.theme(), { measure, maxWidth: width });
    const svg = s('svg', { width: Math.ceil(pic.width), height: Math.ceil(pic.height), class: 'deep-svg', testid: 'deep-svg' });
    appendSvgItems(svg, pic.items);
    this.wrap.replaceChildren(svg);
    this.idle();
  }
}

function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
