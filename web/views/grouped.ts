/**
 * Interactive word- and sentence-level heatmaps: one layer's head (or the mean / max over its heads)
 * summarised per word or per sentence by a rule (mean, max, sum, share; see
 * src/views/layout/grouped-heatmap.ts, which computes what is shown, as for the SVG export).
 * Hovering a cell reads its value; clicking it drills into the token block behind it (token labels,
 * token weights, masked entries blank); "back" (or Escape) returns to the units. The export renders
 * what is shown, drilled or not.
 */
import { type GroupBy, type GroupCellRule, type GroupedHeatmapOptions, type GroupedModel, GROUP_CELL_RULES, groupedDrill, groupedHeatmapModel, groupedWhat } from '../../src/views/layout/grouped-heatmap.js';
import { renderGroupedHeatmap } from '../../src/views/svg/grouped-heatmap.js';
import { prettifyToken, tokenLabel } from '../../src/views/tokens.js';
import type { Ctx } from '../context.js';
import { button, checkbox, frameWidth, h, replaceChildren, select } from '../dom.js';
import { exportButtons } from '../export.js';
import { type MatrixHit, MatrixGrid } from '../matrix.js';
import { headSelect, layerSelect, stackHeaders } from './common.js';

type Mode = 'head' | 'mean' | 'max';

const MODES: { value: Mode; label: string }[] = [
  { value: 'head', label: 'one head' },
  { value: 'mean', label: 'mean over heads' },
  { value: 'max', label: 'max over heads' },
];

const RULE_LABELS: Readonly<Record<GroupCellRule, string>> = {
  mean: 'mean of the block',
  max: 'max of the block',
  sum: 'sum of the block',
  share: 'share of the row',
};

export class GroupedView {
  readonly el: HTMLElement;
  private readonly toolbar = h('div', { class: 'toolbar' });
  private readonly crumbs: HTMLElement;
  private readonly readout: HTMLElement;
  private readonly grid: MatrixGrid;
  private mode: Mode = 'mean';
  private head = 0;
  private rule: GroupCellRule;
  private log = false;
  private drill: { row: number; col: number } | null = null;
  private model: GroupedModel | null = null;
  private block: ReturnType<typeof groupedDrill> | null = null;
  private key = '';

  constructor(
    private readonly ctx: Ctx,
    private readonly by: GroupBy,
  ) {
    this.rule = by === 'sentences' ? 'mean' : 'share';
    this.el = h('div', { class: `view grouped-view ${by}-view`, testid: `${by}-view` });
    this.crumbs = h('div', { class: 'readout crumbs', testid: `${by}-crumbs` });
    this.readout = h('div', { class: 'readout', testid: `${by}-readout` });
    this.grid = new MatrixGrid(`${by}-canvas`);
    this.el.append(this.toolbar, this.crumbs, this.readout, h('div', { class: 'scroll' }, this.grid.el));
    this.grid.onHover((hit, e) => this.hover(hit, e));
    this.grid.canvas.addEventListener('click', (e) => {
      if (this.drill) return;
      const hit = this.grid.hit(e);
      if (hit) this.open({ row: hit.q, col: hit.k });
    });
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && this.drill && !this.el.hidden) this.open(null);
    });
    window.addEventListener('resize', () => {
      this.key = '';
      if (!this.el.hidden) this.update();
    });
  }

  private open(drill: { row: number; col: number } | null): void {
    this.drill = drill;
    this.key = '';
    this.update();
  }

  private set(patch: () => void): void {
    patch();
    // Another matrix: its units may differ, so a drilled cell no longer applies.
    this.drill = null;
    this.update();
  }

  /** The texts of the input's segments: the page's text when it is one text, else rebuilt from the tokens. */
  private texts(): (string | undefined)[] | undefined {
    const { trace, header } = this.ctx;
    if (header.text === undefined || trace.tokens.some((t) => t.segment > 0) || trace.generation) return undefined;
    return [header.text];
  }

  /** The options as the export takes them. */
  private options(): GroupedHeatmapOptions {
    const { state } = this.ctx;
    return {
      by: this.by,
      stack: state.stack,
      theme: state.theme,
      layer: state.layer,
      head: this.mode === 'head' ? this.head : undefined,
      aggregate: this.mode === 'head' ? undefined : this.mode,
      rule: this.rule,
      hideSpecial: state.hideSpecial,
      texts: this.texts(),
      log: this.log,
      drill: this.drill ?? undefined,
      step: this.ctx.step(),
    };
  }

  update(): void {
    const { ctx } = this;
    const { state } = ctx;
    const by = this.by;
    this.head = Math.min(this.head, ctx.numHeads() - 1);
    replaceChildren(
      this.toolbar,
      layerSelect(ctx, `${by}-layer`),
      select(`${by}-mode`, 'show', MODES, this.mode, (v) => this.set(() => (this.mode = v))),
      this.mode === 'head' ? headSelect(ctx, `${by}-head`, this.head, (v) => this.set(() => (this.head = v))) : null,
      select(`${by}-rule`, 'rule', GROUP_CELL_RULES.map((r) => ({ value: r, label: RULE_LABELS[r] })), this.rule, (v) => this.set(() => (this.rule = v))),
      checkbox(`${by}-log`, 'log scale', this.log, (v) => {
        this.log = v;
        this.key = '';
        this.update();
      }),
      this.drill ? button(`${by}-back`, `← back to ${by}`, () => this.open(null), `Back to the ${by} matrix (Esc)`) : null,
      h('span', { class: 'spacer' }),
      exportButtons(ctx, by, () => renderGroupedHeatmap(ctx.trace, this.options())),
    );
    const key = [state.stack, state.layer, state.hideSpecial, state.theme, this.mode, this.head, this.rule, this.log, this.drill ? `${this.drill.row},${this.drill.col}` : '-', ctx.step() ?? 'all'].join('|');
    if (key === this.key) return;
    this.key = key;
    try {
      const { drill: _drill, log: _log, ...modelOptions } = this.options();
      this.model = groupedHeatmapModel(ctx.trace, modelOptions);
    } catch (e) {
      this.model = null;
      replaceChildren(this.crumbs);
      replaceChildren(this.readout, (e as Error).message);
      return;
    }
    const model = this.model;
    if (this.drill && (this.drill.row >= model.rows.length || this.drill.col >= model.cols.length)) this.drill = null;
    const frame = { width: frameWidth(this.el), height: Math.max(480, window.innerHeight - 180) };
    const [qAxis, kAxis] = stackHeaders(state.stack);
    if (this.drill) {
      const block = groupedDrill(model, this.drill.row, this.drill.col);
      this.block = block;
      const tok = (p: number, side: 'q' | 'k') => (side === 'q' ? model.queries : model.keys)[p]!;
      const lab = (p: number, side: 'q' | 'k') => (state.prettify ? tokenLabel(prettifyToken(tok(p, side).text, ctx.trace.model.modelType)) : tok(p, side).text);
      this.grid.draw({
        matrices: [{ values: block.values }],
        nq: block.rows.length,
        nk: block.cols.length,
        labels: {
          query: block.rows.map((p) => lab(p, 'q')),
          key: block.cols.map((p) => lab(p, 'k')),
          querySpecial: block.rows.map((p) => tok(p, 'q').special),
          keySpecial: block.cols.map((p) => tok(p, 'k').special),
        },
        queryTips: block.rows.map((p) => `query ${p}: ${tok(p, 'q').text}`),
        keyTips: block.cols.map((p) => `key ${p}: ${tok(p, 'k').text}`),
        theme: ctx.theme(),
        log: this.log,
        caption: 'attention weight',
        axes: [qAxis, kAxis],
        masked: block.masked,
        frame,
        maxCell: 48,
      });
      const r = model.rows[this.drill.row]!;
      const c = model.cols[this.drill.col]!;
      replaceChildren(
        this.crumbs,
        button(`${by}-crumb-back`, by, () => this.open(null), `Back to the ${by} matrix`),
        ' › ',
        h('b', { testid: `${by}-drill-title` }, `“${r.label}” → “${c.label}”`),
        h('span', { class: 'muted' }, ` · ${block.rows.length} × ${block.cols.length} tokens · cell ${this.drill.row}, ${this.drill.col} · ${this.rule}: ${ctx.fmtWeight(model.values[this.drill.row * model.cols.length + this.drill.col]!)}`),
      );
      this.el.setAttribute('data-drill', `${this.drill.row},${this.drill.col}`);
    } else {
      this.block = null;
      const units = (side: 'q' | 'k') => (side === 'q' ? model.rows : model.cols);
      const tip = (side: 'q' | 'k') =>
        units(side).map((u) => {
          const tokens = side === 'q' ? model.queries : model.keys;
          return `${u.label} · ${u.tokens.length} token${u.tokens.length === 1 ? '' : 's'}: ${u.tokens.map((p) => tokens[p]!.text).join(' ')}`;
        });
      this.grid.draw({
        matrices: [{ values: model.values }],
        nq: model.rows.length,
        nk: model.cols.length,
        labels: {
          query: model.rows.map((u) => u.label),
          key: model.cols.map((u) => u.label),
          querySpecial: model.rows.map((u) => u.special),
          keySpecial: model.cols.map((u) => u.special),
        },
        querySegments: model.rows.map((u) => u.segment),
        keySegments: model.cols.map((u) => u.segment),
        queryTips: tip('q'),
        keyTips: tip('k'),
        theme: ctx.theme(),
        log: this.log,
        caption: RULE_LABELS[this.rule],
        axes: [`query ${by}`, `key ${by}`],
        masked: model.unitMasked,
        frame,
        maxCell: 48,
        labelChars: by === 'sentences' ? 40 : undefined,
      });
      replaceChildren(
        this.crumbs,
        h('b', {}, by),
        h('span', { class: 'muted' }, ` · ${model.rows.length} × ${model.cols.length} · layer ${model.layer} · ${groupedWhat(model)} · click a cell for its tokens`),
      );
      this.el.removeAttribute('data-drill');
    }
    this.el.setAttribute('data-rule', this.rule);
    this.el.setAttribute('data-rows', String(this.drill ? this.block!.rows.length : model.rows.length));
    this.el.setAttribute('data-cols', String(this.drill ? this.block!.cols.length : model.cols.length));
    this.hover(null);
  }

  private hover(hit: MatrixHit | null, e?: PointerEvent): void {
    const model = this.model;
    if (!model) return;
    const { ctx } = this;
    const by = this.by;
    for (const a of ['data-q', 'data-k', 'data-value', 'data-masked']) this.readout.removeAttribute(a);
    if (!hit) {
      ctx.tooltip.hide();
      replaceChildren(this.readout, h('span', { class: 'muted' }, this.drill ? 'hover a cell for its token weight · back (Esc) returns to the matrix' : 'hover a cell for its value · click it for the token block behind it'));
      return;
    }
    const what = groupedWhat(model);
    let line: string;
    let detail: string;
    if (this.drill && this.block) {
      const qp = this.block.rows[hit.q]!;
      const kp = this.block.cols[hit.k]!;
      const lab = (text: string) => (ctx.state.prettify ? tokenLabel(prettifyToken(text, ctx.trace.model.modelType)) : text);
      line = `${qp} “${lab(model.queries[qp]!.text)}” → ${kp} “${lab(model.keys[kp]!.text)}”`;
      detail = `${what}: `;
    } else {
      const r = model.rows[hit.q]!;
      const c = model.cols[hit.k]!;
      line = `“${r.label}” → “${c.label}”`;
      detail = `${what}, ${this.rule}: `;
    }
    const value = hit.masked ? 'masked' : ctx.fmtWeight(hit.value);
    replaceChildren(this.readout, `${line} · ${detail}`, h('b', { testid: `${by}-value` }, value));
    this.readout.setAttribute('data-q', String(hit.q));
    this.readout.setAttribute('data-k', String(hit.k));
    this.readout.setAttribute('data-value', String(hit.value));
    if (hit.masked) this.readout.setAttribute('data-masked', 'true');
    if (e) ctx.tooltip.show(e.clientX, e.clientY, line, `${detail}${value}`);
  }
}
