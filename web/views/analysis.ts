/**
 * The gradient and logit-lens views of the page — saliency, head importance, ablation comparison,
 * logit lens — each painting the layout the SVG export paints (src/views/layout/<view>.ts) from the
 * plain data the page carries (PayloadHeader.analysis). Hovering a cell or bar reports its value
 * in the view's readout and tooltip; in the head-importance grid a click opens the head's heatmap
 * (the head-type grid's wiring). Each view exports itself as SVG and PNG.
 */
import type { AblationData } from '../../src/views/layout/ablation.js';
import { ablationLayout, fmtProb } from '../../src/views/layout/ablation.js';
import type { AnalysisViewName } from '../../src/views/layout/analysis-views.js';
import type { Picture } from '../../src/views/layout/common.js';
import { type HeadImportanceData, headImportanceLayout } from '../../src/views/layout/head-importance.js';
import { type LogitLensData, lensTopK, logitLensLayout } from '../../src/views/layout/logit-lens.js';
import { type SaliencyData, fmtScore, saliencyLayout } from '../../src/views/layout/saliency.js';
import { analysisTitle, renderAblation, renderHeadImportance, renderLogitLens, renderSaliency } from '../../src/views/svg/analysis-views.js';
import type { Ctx } from '../context.js';
import { appendSvgItems, frameWidth, h, replaceChildren, s } from '../dom.js';
import { exportButtons } from '../export.js';
import { wireHeadPicks } from './common.js';

/** The element under the pointer carrying `attr`, inside `wrap`. */
function picked(target: EventTarget | null, attr: string): Element | null {
  return (target as Element | null)?.closest(`[${attr}]`) ?? null;
}

/** A hovered element's readout line(s) and the data-* attributes the readout carries for it. */
interface Hovered {
  text: string;
  data: Record<string, string>;
}

abstract class AnalysisView<D> {
  readonly el: HTMLElement;
  protected readonly toolbar = h('div', { class: 'toolbar' });
  protected readonly readout: HTMLElement;
  protected readonly wrap = h('div', { class: 'scroll analysis-wrap' });
  private key = '';

  constructor(
    protected readonly ctx: Ctx,
    protected readonly name: AnalysisViewName,
    protected readonly data: D,
  ) {
    this.el = h('div', { class: `view analysis-view ${name}-view`, testid: `${name}-view` });
    this.readout = h('div', { class: 'readout', testid: `${name}-readout` });
    this.el.append(this.toolbar, this.readout, this.wrap);
    // Laid out to the App's width (a compare side is half the window): again when it changes.
    window.addEventListener('resize', () => {
      if (!this.el.hidden) this.update();
    });
  }

  protected abstract layout(): Picture;
  protected abstract svg(): string;
  protected abstract idle(): string;
  protected stateKey(): string {
    return '';
  }

  update(): void {
    const { ctx } = this;
    replaceChildren(this.toolbar, h('span', { class: 'spacer' }), exportButtons(ctx, this.name, () => this.svg()));
    const key = `${ctx.state.theme}|${this.stateKey()}|${this.frameWidth()}`;
    if (key === this.key) return;
    this.key = key;
    this.wrap.replaceChildren();
    try {
      const pic = this.layout();
      const svg = s('svg', { width: Math.ceil(pic.width), height: Math.ceil(pic.height), class: `${this.name}-svg`, testid: `${this.name}-svg` });
      appendSvgItems(svg, pic.items);
      this.wrap.append(svg);
      this.show(null);
    } catch (e) {
      this.key = '';
      replaceChildren(this.readout, (e as Error).message);
    }
  }

  /** Reports what `describe` finds under the pointer as it moves over the picture (null, or leaving it: the idle line). */
  protected hover(describe: (e: PointerEvent) => Hovered | null): void {
    this.wrap.addEventListener('pointermove', (e) => this.show(describe(e), e));
    this.wrap.addEventListener('pointerleave', () => this.show(null));
  }

  /** Reports a hovered element (null: the idle line). */
  protected show(lines: Hovered | null, e?: PointerEvent): void {
    for (const a of [...this.readout.attributes]) if (a.name.startsWith('data-') && a.name !== 'data-testid') this.readout.removeAttribute(a.name);
    if (!lines) {
      this.ctx.tooltip.hide();
      replaceChildren(this.readout, h('span', { class: 'muted' }, this.idle()));
      return;
    }
    replaceChildren(this.readout, lines.text);
    for (const [k, v] of Object.entries(lines.data)) this.readout.setAttribute(`data-${k}`, v);
    if (e) this.ctx.tooltip.show(e.clientX, e.clientY, ...lines.text.split('\n'));
  }

  protected title(): string {
    return analysisTitle(this.name, this.ctx.trace.model.name, this.data as never);
  }

  protected frameWidth(): number {
    return frameWidth(this.el);
  }
}

export class SaliencyView extends AnalysisView<SaliencyData> {
  constructor(ctx: Ctx, data: SaliencyData) {
    super(ctx, 'saliency', data);
    this.hover((e) => {
      const el = picked(e.target, 'data-row');
      const row = el ? Number(el.getAttribute('data-row')) : NaN;
      const p = el?.getAttribute('data-position');
      if (!el || p === null || p === undefined || !Number.isInteger(row)) return null;
      const pos = Number(p);
      const r = this.data.rows[row]!;
      const v = r.scores[pos]!;
      return { text: `${this.data.tokens[pos]} (position ${pos}) · ${r.method}: ${fmtScore(v)}`, data: { row: String(row), position: String(pos), value: String(v) } };
    });
  }
  protected layout(): Picture {
    return saliencyLayout(this.data, this.ctx.theme(), { maxWidth: this.frameWidth() });
  }
  protected svg(): string {
    return renderSaliency(this.data, { theme: this.ctx.state.theme, title: this.title() });
  }
  protected idle(): string {
    return `target: ${this.data.target} · hover a token for its score`;
  }
}

export class HeadImportanceView extends AnalysisView<HeadImportanceData> {
  constructor(ctx: Ctx, data: HeadImportanceData) {
    super(ctx, 'importance', data);
    // A click opens the head's heatmap (on the stack the importance is of).
    this.wrap.addEventListener(
      'click',
      (e) => {
        const stack = this.data.stack;
        if (stack && stack !== ctx.state.stack && picked(e.target, 'data-head') && ctx.trace.attention[stack]) ctx.set({ stack });
      },
      { capture: true },
    );
    wireHeadPicks(ctx, this.wrap, (head, e) => {
      const v = head ? this.data.values[head.layer]?.[head.head] : undefined;
      if (!head || v === undefined) return this.show(null);
      this.show({ text: `layer ${head.layer} · head ${head.head} · importance ${fmtScore(v)}`, data: { layer: String(head.layer), head: String(head.head), value: String(v) } }, e);
    });
  }
  protected override stateKey(): string {
    const { state } = this.ctx;
    return `${state.layer}|${state.heatmapHead}|${state.stack}`;
  }
  protected layout(): Picture {
    const { state } = this.ctx;
    const same = !this.data.stack || this.data.stack === state.stack;
    return headImportanceLayout(this.data, this.ctx.theme(), {
      frame: { width: this.frameWidth(), height: Math.max(480, window.innerHeight - 150) },
      selected: same ? { layer: state.layer, head: state.heatmapHead } : null,
    });
  }
  protected svg(): string {
    return renderHeadImportance(this.data, { theme: this.ctx.state.theme, title: this.title() });
  }
  protected idle(): string {
    return `target: ${this.data.target} · hover a head for its importance, click it to open the head's heatmap`;
  }
}

export class AblationView extends AnalysisView<AblationData> {
  constructor(ctx: Ctx, data: AblationData) {
    super(ctx, 'ablation', data);
    this.hover((e) => {
      const el = picked(e.target, 'data-side');
      const i = el ? Number(el.getAttribute('data-index')) : NaN;
      const tokens = this.shownTokens();
      if (!el || !Number.isInteger(i) || i >= tokens.length) return null;
      const c = tokens[i]!;
      return { text: `${c.token} · before ${fmtProb(c.before)} · after ${fmtProb(c.after)}`, data: { index: String(i), token: c.token, before: String(c.before), after: String(c.after) } };
    });
  }
  private shown: AblationData['candidates'] | null = null;
  private shownTokens(): AblationData['candidates'] {
    return this.shown ?? [];
  }
  protected layout(): Picture {
    const lay = ablationLayout(this.data, this.ctx.theme());
    // The candidates in the order drawn (the layout sorts them).
    const byToken = new Map(this.data.candidates.map((c) => [c.token, c]));
    this.shown = lay.tokens.map((t) => byToken.get(t)!);
    return lay;
  }
  protected svg(): string {
    return renderAblation(this.data, { theme: this.ctx.state.theme, title: this.title() });
  }
  protected idle(): string {
    return `KL ${fmtScore(this.data.kl)} nats · cosine ${this.data.cosine.toFixed(4)} · hover a bar for both probabilities`;
  }
}

export class LogitLensView extends AnalysisView<LogitLensData> {
  constructor(ctx: Ctx, data: LogitLensData) {
    super(ctx, 'lens', data);
    this.hover((e) => {
      const el = picked(e.target, 'data-position');
      const r = el ? Number(el.getAttribute('data-row')) : NaN;
      if (!el || !el.hasAttribute('data-row') || !Number.isInteger(r)) return null;
      const p = Number(el.getAttribute('data-position'));
      const cands = this.data.cells[r]![p]!;
      return { text: `${this.data.layers[r]} · position ${p} “${this.data.tokens[p]}”\n${lensTopK(cands)}`, data: { row: String(r), position: String(p), token: cands[0]!.token, value: String(cands[0]!.probability) } };
    });
  }
  protected layout(): Picture {
    return logitLensLayout(this.data, this.ctx.theme(), { maxWidth: this.frameWidth() });
  }
  protected svg(): string {
    return renderLogitLens(this.data, { theme: this.ctx.state.theme, title: this.title() });
  }
  protected idle(): string {
    return `the top ${this.data.predicts} at every layer and position · hover a cell for its top ${this.data.cells[0]![0]!.length}`;
  }
}
