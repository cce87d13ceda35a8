/**
 * Interactive flow diagram and influence tree: paint the layouts of src/views/layout/flow.ts and
 * influence-tree.ts (the ones the SVG export paints) as SVG elements. Flow diagram: a click on a
 * token (label or node) highlights what flows into it, a second click clears it. Influence tree:
 * a click on a node makes it the root. Method, head fusion and pruning are this view's own
 * controls; the export renders the same options; the diagram's drawn edges download as CSV/JSON.
 *
 * The model and the layout (head fusion, the residual graph, pruning, the highlight's mass, the
 * items: seconds of one core at 512 tokens) are computed off the page's thread, in the flow views'
 * worker (web/flow-layout-worker.ts), which keeps the model between requests: a click or a pruning
 * change lays out again on the kept graph. The page's thread only appends the items it gets, in
 * slices of ≈ 12 ms. While a drawing is under way the one on screen stays (dimmed) and the readout
 * names the stage; the controls keep answering. Without workers the page computes the same drawing
 * (web/views/flow-drawing.ts) on its own thread.
 *
 * Attention flow (exact max-flow, O(n³ · L) for one token) runs in a Web Worker of its own
 * (flow-worker.ts): the diagram is drawn with rollout's values in the input column, the readout
 * shows the progress and a cancel button, and the flow's values replace rollout's when the worker is
 * done (kept per token, stack, fusion and step). Above PAGE_FLOW_MAX_NODES the page says so and
 * keeps rollout.
 */
import type { FlowMethod, FlowModel, FlowViewOptions } from '../../src/views/layout/flow.js';
import { flowModel } from '../../src/views/layout/flow.js';
import type { HeadFusion } from '../../src/analysis/rollout.js';
import type { Item, MatrixItem } from '../../src/views/layout/common.js';
import { renderFlowView, renderInfluenceTree } from '../../src/views/svg/flow.js';
import type { Ctx } from '../context.js';
import { aheadWeights, whenIdle } from '../ahead.js';
import { button, frameWidth, h, replaceChildren, s, select, svgElement } from '../dom.js';
import { download, exportButtons } from '../export.js';
import { type FlowDrawStage, flowLayoutWorker } from '../flow-layout-worker.js';
import type { FlowLayoutResult } from '../flow-layout-worker-side.js';
import { type FlowJob, pageFlowLimit, pageWorkersAvailable, startFlowJob } from '../flow-worker.js';
import { type FlowDrawing, type FlowDrawingRequest, type MergedEdges, type MergedNodes, drawnEdgeRows, flowDrawing } from './flow-drawing.js';

/** Appending a large drawing stops for the page after this many milliseconds of a task (appendInSlices). */
const SLICE_MS = 12;
/** Items appended between two looks at the clock. */
const SLICE_STEP = 100;

/** A merged-edges record as a <path>. */
function pathOf(g: MergedEdges): SVGElement {
  return s('path', { d: g.d, stroke: g.stroke, fill: 'none', 'stroke-width': g.width, 'stroke-opacity': g.opacity, class: 'flow-edges', 'data-edges': g.count });
}

/** Merged node marks as a <path>. */
function marksOf(g: MergedNodes): SVGElement {
  return s('path', { d: g.d, fill: g.fill, 'fill-opacity': g.fillOpacity, stroke: g.stroke, 'stroke-width': g.strokeWidth, class: 'flow-nodes', 'data-nodes': g.count });
}

type FlowState = 'idle' | 'running' | 'done' | 'cancelled' | 'error' | 'too-large';

const METHODS: { value: FlowMethod; label: string }[] = [
  { value: 'attention', label: 'attention' },
  { value: 'rollout', label: 'rollout' },
  { value: 'flow', label: 'attention flow' },
];
const FUSIONS: { value: HeadFusion; label: string }[] = [
  { value: 'mean', label: 'mean' },
  { value: 'max', label: 'max' },
  { value: 'min', label: 'min' },
];

/**
 * Stacks of this many attention weights and more (a BERT-base trace from ≈ 240 tokens) have their
 * diagram computed ahead while the page is idle (below it the diagram draws quickly when asked),
 * up to web/ahead.ts AHEAD_WEIGHTS_MAX.
 */
export const FLOW_AHEAD_FROM = 8_000_000;

export class FlowView {
  readonly el: HTMLElement;
  private readonly toolbar = h('div', { class: 'toolbar' });
  private readonly readout: HTMLElement;
  private readonly wrap = h('div', { class: 'scroll flow-wrap' });
  private method: FlowMethod = 'rollout';
  private fusion: HeadFusion = 'mean';
  private keep = 3;
  private threshold = 0;
  private depth = 3;
  /** Highlighted token (diagram) or the root (tree); null: none (diagram) / the last token (tree). */
  private selected: { column: number; token: number } | null = null;
  private key = '';
  /** Without workers: the model (edge matrices) of the last drawing, by what it depends on (a click or a pruning change does not rebuild it). */
  private model: { key: string; model: FlowModel } | null = null;
  /** Drawing requests: a reply is shown only when it answers the newest. */
  private request = 0;
  /** The diagram computed ahead (drawAhead), by its drawing key, until the view first draws. */
  private ahead: { key: string; result: Promise<FlowLayoutResult | null> } | null = null;
  /** Drawing generation: a drawing appended in slices stops when a newer one starts. */
  private drawing = 0;
  /** The drawing on screen (the edges table exports it). */
  private shown: FlowDrawing | null = null;
  /** Attention flow rows computed in the worker, by flowKey. */
  private readonly flows = new Map<string, Float32Array>();
  private job: { key: string; job: FlowJob; done: number; total: number } | null = null;
  private flowNote: { key: string; state: 'cancelled' | 'error' | 'too-large'; message: string } | null = null;
  /** The readout's line (what is drawn). */
  private readonly note = h('span', { class: 'muted' });
  /** What the background drawing is doing (empty when the drawing on screen is current). */
  private readonly stage: HTMLElement;

  constructor(
    private readonly ctx: Ctx,
    private readonly kind: 'diagram' | 'tree',
  ) {
    const id = kind === 'diagram' ? 'flow' : 'influence';
    this.el = h('div', { class: `view ${id}-view`, testid: `${id}-view` });
    this.readout = h('div', { class: 'readout', testid: `${id}-readout` });
    this.stage = h('div', { class: 'flow-stage muted', testid: `${id}-stage` });
    this.el.append(this.toolbar, this.readout, this.wrap);
    // Laid out to the App's width (a compare side is half the window): again when it changes.
    window.addEventListener('resize', () => {
      if (!this.el.hidden) this.update();
    });
    // A long trace's diagram, computed ahead in the flow views' worker while the page is idle.
    if (kind === 'diagram') whenIdle(() => this.drawAhead(), 1000);
    this.wrap.addEventListener('click', (e) => {
      const el = (e.target as Element).closest('[data-token][data-column]');
      const sel = el ? { column: Number(el.getAttribute('data-column')), token: Number(el.getAttribute('data-token')) } : this.markAt(e);
      if (!sel) return;
      const same = this.selected && this.selected.column === sel.column && this.selected.token === sel.token;
      this.selected = same && this.kind === 'diagram' ? null : sel;
      this.key = '';
      this.update();
    });
  }

  /** The node mark under a click on the drawing's merged marks (diagram), from its grid. */
  private markAt(e: MouseEvent): { column: number; token: number } | null {
    const grid = this.shown?.grid;
    const svg = this.wrap.querySelector('svg');
    if (!grid || !svg || !(e.target as Element).closest('path.flow-nodes')) return null;
    const box = svg.getBoundingClientRect();
    const x = e.clientX - box.left;
    const y = e.clientY - box.top;
    const nearest = (xs: number[], v: number) => xs.reduce((best, c, i) => (Math.abs(c - v) < Math.abs(xs[best]! - v) ? i : best), 0);
    const column = nearest(grid.columnX, x);
    const token = nearest(grid.rowY, y);
    return Math.abs(grid.columnX[column]! - x) <= 6 ? { column, token } : null;
  }

  private id(): string {
    return this.kind === 'diagram' ? 'flow' : 'influence';
  }

  /** The view's options as the export takes them. */
  private options(): FlowViewOptions {
    const { state } = this.ctx;
    const step = this.ctx.step();
    return {
      stack: state.stack === 'cross' ? undefined : state.stack,
      theme: state.theme,
      method: this.method,
      fusion: this.fusion,
      keep: this.keep,
      threshold: this.threshold || undefined,
      query: this.selected?.token,
      column: this.selected?.column,
      depth: this.kind === 'tree' ? this.depth : undefined,
      ...(step !== undefined ? { step } : {}),
    };
  }

  /** Progress / cancel / limit line of attention flow (inside the readout). */
  private readonly flowStatus = h('div', { class: 'flow-status', testid: 'flow-status' });

  /**
   * Attention flow's part of a drawing (the method is attention flow and a token is selected):
   * the worker's row when it is known; else the input column shows rollout's (the drawing's
   * default) while the worker runs, after a cancel or above the size limit, and `start` says the
   * flow worker is to start once the drawing (with its n and matrices) is there. `state`: the
   * status line's state once the drawing is on screen.
   */
  private flowInput(): { values?: Float32Array; start: boolean; state: FlowState } {
    const sel = this.selected;
    if (this.kind !== 'diagram' || this.method !== 'flow' || !sel || sel.column === 0) {
      this.cancelFlow();
      return { start: false, state: 'idle' };
    }
    const key = this.flowKey(sel);
    const cached = this.flows.get(key);
    if (cached) {
      this.cancelFlow();
      return { values: cached, start: false, state: 'done' };
    }
    if (this.flowNote?.key === key) return { start: false, state: this.flowNote.state };
    if (this.job?.key === key) return { start: false, state: 'running' };
    this.cancelFlow();
    this.flowNote = null;
    return { start: true, state: 'idle' };
  }

  /** Starts attention flow of the selected token on a drawing's first matrices (copies: transferred to the flow worker). */
  private startFlow(matrices: Float32Array[], n: number): void {
    const sel = this.selected;
    if (!sel) return;
    const key = this.flowKey(sel);
    const limit = pageFlowLimit(sel.column, n);
    if (limit) {
      this.flowNote = { key, state: 'too-large', message: limit };
      this.flowStatus.dataset.state = 'too-large';
      this.paintFlowStatus();
      return;
    }
    let job: FlowJob;
    try {
      job = startFlowJob({ matrices, n, token: sel.token }, (done, total) => {
        if (this.job?.job !== job) return;
        this.job.done = done;
        this.job.total = total;
        this.paintFlowStatus();
      });
    } catch (e) {
      this.flowNote = { key, state: 'error', message: (e as Error).message };
      this.flowStatus.dataset.state = 'error';
      this.paintFlowStatus();
      return;
    }
    this.job = { key, job, done: 0, total: n };
    this.flowStatus.dataset.state = 'running';
    this.paintFlowStatus();
    job.result.then(
      (values) => {
        if (this.job?.job !== job) return;
        this.job = null;
        if (values) this.flows.set(key, values);
        else this.flowNote = { key, state: 'cancelled', message: 'attention flow cancelled: the input column shows rollout' };
        this.key = '';
        this.update();
      },
      (err: unknown) => {
        if (this.job?.job !== job) return;
        this.job = null;
        this.flowNote = { key, state: 'error', message: (err as Error).message };
        this.key = '';
        this.update();
      },
    );
  }

  private flowKey(sel: { column: number; token: number }): string {
    return [this.ctx.state.stack, this.fusion, this.ctx.step() ?? 'all', sel.column, sel.token].join('|');
  }

  /**
   * Sends the trace's layers to the flow views' worker and has it compute the diagram as the tab
   * first shows it (rollout, the view's defaults), for a stack of FLOW_AHEAD_FROM to
   * AHEAD_WEIGHTS_MAX weights, while the page is idle and the view has not been opened: opening it
   * then only appends the drawing (and a changed option or a click reuses the worker's edge graph).
   */
  private drawAhead(): void {
    if (this.key !== '' || this.ahead || !this.el.isConnected || !pageWorkersAvailable()) return;
    const { state } = this.ctx;
    if (state.stack === 'cross' || aheadWeights(this.ctx.trace, state.stack) < FLOW_AHEAD_FROM || this.method !== 'rollout' || this.selected) return;
    const key = this.drawKey();
    let result: Promise<FlowLayoutResult | null>;
    try {
      result = flowLayoutWorker(this.ctx.trace, this.el).draw(this.kind, state.stack, this.drawingRequest(), () => undefined);
    } catch {
      return; // nothing drawn ahead: the view draws (and reports) it when opened
    }
    this.ahead = { key, result };
    result.then(
      (d) => d && this.el.setAttribute('data-ahead', 'done'),
      () => undefined,
    );
  }

  /** What the drawing on screen depends on (a new drawing when it changes). */
  private drawKey(): string {
    const { state } = this.ctx;
    return [state.stack, state.theme, state.prettify, this.method, this.fusion, this.keep, this.threshold, this.depth, this.selected?.column, this.selected?.token, this.ctx.step() ?? 'all', frameWidth(this.el)].join('|');
  }

  /** The drawing request of the view's options. */
  private drawingRequest(values?: Float32Array): FlowDrawingRequest {
    const { state } = this.ctx;
    const { stack: _stack, ...options } = this.options();
    return { view: this.kind, options, frame: { width: frameWidth(this.el), height: Math.max(420, window.innerHeight - 200) }, raw: !state.prettify, ...(values ? { inputValues: values } : {}) };
  }

  /**
   * The view's SVG export, computed in the flow views' worker when the page has workers. The
   * diagram: with attention flow's values when the worker has them; while it runs, after a
   * cancel or above the limit, the rollout diagram (named so in its caption) rather than
   * computing flow on the way.
   */
  private async exportSvg(): Promise<string> {
    const numLayers = this.ctx.numLayers();
    let req = this.drawingRequest();
    const sel = this.selected;
    if (this.kind === 'tree') req = { ...req, options: { ...req.options, depth: Math.min(this.depth, sel?.column ?? numLayers) } };
    else if (this.method === 'flow' && sel && sel.column > 0) {
      const values = this.flows.get(this.flowKey(sel));
      req = values ? { ...req, inputValues: values } : { ...req, options: { ...req.options, method: 'rollout' } };
    }
    const stack = this.ctx.state.stack;
    if (stack === 'cross') throw new Error('the flow views follow one self-attention stack: choose the encoder or decoder stack');
    if (pageWorkersAvailable()) {
      const svg = await flowLayoutWorker(this.ctx.trace, this.el).svg(this.kind, stack, req);
      if (svg === null) throw new Error('a newer export replaced this one');
      return svg;
    }
    const o = { ...req.options, stack };
    return this.kind === 'tree' ? renderInfluenceTree(this.ctx.trace, o) : renderFlowView(this.ctx.trace, o, req.inputValues ? { inputValues: req.inputValues } : {});
  }

  private cancelFlow(): void {
    const j = this.job;
    this.job = null;
    j?.job.cancel();
  }

  private paintFlowStatus(): void {
    const st = this.flowStatus;
    const state = st.dataset.state ?? 'idle';
    if (state === 'running' && this.job) {
      const { done, total } = this.job;
      st.dataset.done = String(done);
      st.dataset.total = String(total);
      const cancel = h('button', { type: 'button', testid: 'flow-cancel' }, 'cancel');
      cancel.addEventListener('click', () => {
        const j = this.job;
        if (!j) return;
        this.job = null;
        this.flowNote = { key: j.key, state: 'cancelled', message: 'attention flow cancelled: the input column shows rollout' };
        st.dataset.state = 'cancelled';
        j.job.cancel();
        this.key = '';
        this.update();
      });
      const progress = h('progress', { max: String(total), value: String(done), testid: 'flow-progress' });
      replaceChildren(st, `attention flow in the background: ${done} of ${total} max-flows · input column: rollout until it is done `, progress, ' ', cancel);
    } else if ((state === 'cancelled' || state === 'error' || state === 'too-large') && this.flowNote) {
      const parts: (string | HTMLElement)[] = [this.flowNote.message];
      if (state !== 'too-large') {
        const again = h('button', { type: 'button', testid: 'flow-restart' }, 'compute attention flow');
        again.addEventListener('click', () => {
          this.flowNote = null;
          this.key = '';
          this.update();
        });
        parts.push(' ', again);
      }
      replaceChildren(st, ...parts);
    } else if (state === 'done') {
      replaceChildren(st, 'input column: attention flow (computed in the background)');
    } else {
      replaceChildren(st);
    }
  }

  /** The background drawing's stage in the readout (null: the drawing on screen is current). */
  private paintStage(s: FlowDrawStage | null): void {
    if (!s) {
      this.el.removeAttribute('data-computing');
      replaceChildren(this.stage);
      return;
    }
    this.el.setAttribute('data-computing', s.stage);
    if (!this.stage.isConnected) this.readout.append(this.stage);
    const what = this.kind === 'diagram' ? 'flow diagram' : 'influence tree';
    const text =
      s.stage === 'sending'
        ? `handing the attention to the background worker: layer ${s.done} of ${s.total}`
        : s.stage === 'waiting'
          ? `the ${what} waits for the background worker`
          : s.stage === 'model'
            ? `${what} in the background: fusing heads and building the edge graph`
            : `${what} in the background: pruning and laying out`;
    replaceChildren(this.stage, text);
  }

  /**
   * The drawing's elements into their groups, in order (each part: a parent, how many, how to
   * make element i, and how many to make between two looks at the clock): at once when few, else for at most SLICE_MS per task (the page keeps
   * answering between them; a newer drawing stops an older one's slices). Merged paths are parts
   * too: a 512-token diagram's path data is ≈ 0.7 MB to parse.
   */
  private appendInSlices(parts: readonly (readonly [Element, number, (i: number) => Element, number])[]): void {
    const gen = ++this.drawing;
    const total = parts.reduce((a, [, count]) => a + count, 0);
    const put = (parent: Element, from: number, to: number, make: (i: number) => Element) => {
      const frag = document.createDocumentFragment();
      for (let i = from; i < to; i++) frag.append(make(i));
      parent.append(frag);
    };
    if (total <= SLICE_STEP) {
      for (const [parent, count, make] of parts) put(parent, 0, count, make);
      return;
    }
    this.el.setAttribute('data-drawing', 'true');
    let part = 0;
    let at = 0;
    const step = () => {
      if (gen !== this.drawing) return;
      const t0 = performance.now();
      while (part < parts.length && performance.now() - t0 < SLICE_MS) {
        const [parent, count, make, per] = parts[part]!;
        const to = Math.min(count, at + per);
        put(parent, at, to, make);
        at = to;
        if (at >= count) {
          part++;
          at = 0;
        }
      }
      if (part < parts.length) setTimeout(step, 0);
      else this.el.removeAttribute('data-drawing');
    };
    step();
  }

  /** The drawn edges as CSV or JSON (the diagram's edges table). */
  private edgesTable(kind: 'csv' | 'json'): void {
    const d = this.shown;
    if (!d) return;
    const rows = drawnEdgeRows(d);
    const name = `attnscope-${this.ctx.trace.model.name}-flow-edges`.replace(/[^A-Za-z0-9._-]+/g, '_');
    if (kind === 'csv') {
      const lines = ['layer,column,query,key,weight', ...rows.map((r) => `${r.layer},${r.column},${r.query},${r.key},${r.weight}`)];
      download(new Blob([`${lines.join('\n')}\n`], { type: 'text/csv' }), `${name}.csv`);
    } else {
      const body = { model: this.ctx.trace.model.name, stack: this.ctx.state.stack, edges: d.caption, keep: this.keep, threshold: this.threshold, tokens: d.n, rows };
      download(new Blob([`${JSON.stringify(body, null, 1)}\n`], { type: 'application/json' }), `${name}.json`);
    }
  }

  update(): void {
    const { ctx } = this;
    const id = this.id();
    const set = (patch: () => void) => () => {
      patch();
      this.key = '';
      this.update();
    };
    const numLayers = ctx.numLayers();
    replaceChildren(
      this.toolbar,
      select(`${id}-method`, 'measure', METHODS, this.method, (v) => set(() => (this.method = v))()),
      select(`${id}-fusion`, 'heads', FUSIONS, this.fusion, (v) => set(() => (this.fusion = v))()),
      select(`${id}-keep`, this.kind === 'diagram' ? 'top-k per token' : 'sources per token', [1, 2, 3, 4, 5, 8].map((k) => ({ value: k, label: String(k) })), this.keep, (v) => set(() => (this.keep = v))()),
      this.kind === 'diagram'
        ? select(`${id}-threshold`, 'min weight', [0, 0.01, 0.05, 0.1, 0.2, 0.3].map((t) => ({ value: t, label: String(t) })), this.threshold, (v) => set(() => (this.threshold = v))())
        : select(`${id}-depth`, 'depth', Array.from({ length: Math.min(6, numLayers) }, (_, d) => ({ value: d + 1, label: String(d + 1) })), Math.min(this.depth, numLayers), (v) => set(() => (this.depth = v))()),
      h('span', { class: 'spacer' }),
      ...(this.kind === 'diagram'
        ? [button(`${id}-edges-csv`, 'edges CSV', () => this.edgesTable('csv'), 'Download the drawn edges (layer, receiving token, source token, weight) as CSV'), button(`${id}-edges-json`, 'edges JSON', () => this.edgesTable('json'), 'Download the drawn edges as JSON')]
        : []),
      exportButtons(ctx, id, () => this.exportSvg()),
    );
    const { state } = ctx;
    const key = this.drawKey();
    if (key === this.key) return;
    this.key = key;
    // The drawing computed ahead, when it is this one (used once).
    const ahead = this.ahead?.key === key ? this.ahead.result : null;
    this.ahead = null;
    const gen = ++this.request;
    try {
      if (state.stack === 'cross') throw new Error('the flow views follow one self-attention stack: choose the encoder or decoder stack');
      const stack = state.stack;
      const flow = this.flowInput();
      const req = this.drawingRequest(flow.values);
      const column = this.selected?.column ?? 0;
      if (pageWorkersAvailable()) {
        // Off the page's thread: the drawing on screen stays (dimmed) until the new one is there.
        this.wrap.querySelector('svg')?.style.setProperty('opacity', '0.55');
        this.paintStage({ stage: 'waiting' });
        (ahead ?? flowLayoutWorker(ctx.trace, this.el).draw(this.kind, stack, req, (st) => gen === this.request && this.paintStage(st), flow.start ? column : undefined))
          .then(
            (d) => {
              if (gen !== this.request || !d) return;
              this.show(d, flow.state, d.modelReused);
              if (flow.start && d.matrices) this.startFlow(d.matrices, d.n);
            },
            (e: unknown) => gen === this.request && this.showError(e as Error),
          );
        return;
      }
      const modelKey = [stack, state.theme, this.method, this.fusion, ctx.step() ?? 'all'].join('|');
      const reused = this.model?.key === modelKey;
      if (!reused) this.model = { key: modelKey, model: flowModel(ctx.trace, { ...req.options, stack }) };
      const model = this.model!.model;
      this.show(flowDrawing(ctx.trace, req, model), flow.state, reused);
      if (flow.start) this.startFlow(model.matrices.slice(0, column).map((m) => Float32Array.from(m)), model.tokens.length);
    } catch (e) {
      this.showError(e as Error);
    }
  }

  private showError(e: Error): void {
    this.paintStage(null);
    this.shown = null;
    this.wrap.replaceChildren();
    this.readout.removeAttribute('data-highlighted');
    replaceChildren(this.readout, e.message);
  }

  /** Puts a drawing on screen: the readout at once, the SVG's items in slices. */
  private show(d: FlowDrawing, flowState: FlowState, modelReused: boolean): void {
    this.shown = d;
    this.paintStage(null);
    // Whether the edge graph was built for this drawing or kept from an earlier one (a click, a pruning change).
    this.readout.setAttribute('data-model', modelReused ? 'reused' : 'built');
    for (const [name, v] of Object.entries(d.readout)) {
      if (v === null) this.readout.removeAttribute(`data-${name}`);
      else this.readout.setAttribute(`data-${name}`, v);
    }
    this.note.textContent = d.note;
    replaceChildren(this.readout, this.note, this.stage, this.flowStatus);
    this.flowStatus.dataset.state = flowState;
    this.paintFlowStatus();
    const svg = s('svg', { width: Math.ceil(d.width), height: Math.ceil(d.height), class: `${this.id()}-svg`, testid: `${this.id()}-svg` });
    // Paint order: faded edges, highlighted lines, node marks, labels (each group filled in slices).
    const edgePaths = s('g', { class: 'flow-edge-paths' });
    const lines = s('g', { class: 'flow-lines' });
    const markPaths = s('g', { class: 'flow-mark-paths' });
    const nodes = s('g', { class: 'flow-marks' });
    svg.append(edgePaths, lines, markPaths, nodes);
    const item = (items: readonly Item[]) => (i: number) => svgElement(items[i] as Exclude<Item, MatrixItem>);
    this.appendInSlices([
      [edgePaths, d.paths.length, (i) => pathOf(d.paths[i]!), 1],
      [lines, d.lines.length, item(d.lines), SLICE_STEP],
      [markPaths, d.nodePaths.length, (i) => marksOf(d.nodePaths[i]!), 1],
      [nodes, d.nodes.length, item(d.nodes), SLICE_STEP],
    ]);
    this.wrap.replaceChildren(svg);
  }
}
