/**
 * Interactive flow diagram and influence tree: paint the layouts of src/views/layout/flow.ts and
 * influence-tree.ts (the ones the SVG export paints) as SVG elements. Flow diagram: a click on a
 * token (label or node) highlights what flows into it, a second click clears it. Influence tree:
 * a click on a node makes it the root. Method, head fusion and pruning are this view's own
 * controls; the export renders the same options.
 *
 * Attention flow (exact max-flow, O(n³ · L) for one token) runs in a Web Worker (flow-worker.ts):
 * the diagram is drawn at once with rollout's values in the input column, the readout shows the
 * progress and a cancel button, and the flow's values replace rollout's when the worker is done
 * (kept per token, stack and fusion). Above PAGE_FLOW_MAX_NODES the page says so and keeps rollout.
 */
import type { FlowMethod, FlowModel, FlowViewOptions } from '../../src/views/layout/flow.js';
import type { Item } from '../../src/views/layout/common.js';
import { flowLayout, flowMass, flowModel } from '../../src/views/layout/flow.js';
import { influenceTreeLayout } from '../../src/views/layout/influence-tree.js';
import type { HeadFusion } from '../../src/analysis/rollout.js';
import { renderFlowView, renderInfluenceTree } from '../../src/views/svg/flow.js';
import type { Ctx } from '../context.js';
import { appendSvgItems, frameWidth, h, replaceChildren, s, select } from '../dom.js';
import { exportButtons } from '../export.js';
import { type FlowJob, pageFlowLimit, startFlowJob } from '../flow-worker.js';

/** Items appended per task when a drawing is large (appendInSlices). */
const SLICE = 1500;
/** From this many faded edges, the page draws them as a few paths (mergeFadedEdges). */
const MERGE_FADED_FROM = 2000;

/**
 * The drawing's edge lines with, when there are many, the edges that are not highlighted drawn as
 * one <path> per look (stroke, width and opacity, rounded to 1/20 of the range) instead of one
 * <line> each: a 512-token diagram has ≈ 18,000 of them, which the browser takes seconds to
 * create. Highlighted edges stay lines (with their data). The SVG export keeps every line.
 */
function mergeFadedEdges(lines: readonly Item[]): { paths: SVGElement[]; lines: Item[] } {
  const faded = lines.filter((it) => it.kind === 'line' && it.className === 'flow-edge');
  if (faded.length < MERGE_FADED_FROM) return { paths: [], lines: [...lines] };
  const groups = new Map<string, { stroke: string; width: number; opacity: number; d: string[] }>();
  for (const it of faded) {
    if (it.kind !== 'line') continue;
    const width = Math.round((it.width ?? 1) * 20) / 20;
    const opacity = Math.round((it.opacity ?? 1) * 20) / 20;
    const key = `${it.stroke}|${width}|${opacity}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { stroke: it.stroke, width, opacity, d: [] }));
    g.d.push(`M${it.x1.toFixed(1)} ${it.y1.toFixed(1)}L${it.x2.toFixed(1)} ${it.y2.toFixed(1)}`);
  }
  const paths = [...groups.values()].map((g) => s('path', { d: g.d.join(''), stroke: g.stroke, fill: 'none', 'stroke-width': g.width, 'stroke-opacity': g.opacity, class: 'flow-edges', 'data-edges': g.d.length }));
  return { paths, lines: lines.filter((it) => !(it.kind === 'line' && it.className === 'flow-edge')) };
}

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
  /** The model (edge matrices) of the last drawing, by what it depends on: a click or a pruning change does not rebuild it. */
  private model: { key: string; model: FlowModel } | null = null;
  /** Drawing generation: a drawing appended in slices stops when a newer one starts. */
  private drawing = 0;
  /** Attention flow rows computed in the worker, by flowKey. */
  private readonly flows = new Map<string, Float32Array>();
  private job: { key: string; job: FlowJob; done: number; total: number } | null = null;
  private flowNote: { key: string; state: 'cancelled' | 'error'; message: string } | null = null;

  constructor(
    private readonly ctx: Ctx,
    private readonly kind: 'diagram' | 'tree',
  ) {
    const id = kind === 'diagram' ? 'flow' : 'influence';
    this.el = h('div', { class: `view ${id}-view`, testid: `${id}-view` });
    this.readout = h('div', { class: 'readout', testid: `${id}-readout` });
    this.el.append(this.toolbar, this.readout, this.wrap);
    // Laid out to the App's width (a compare side is half the window): again when it changes.
    window.addEventListener('resize', () => {
      if (!this.el.hidden) this.update();
    });
    this.wrap.addEventListener('click', (e) => {
      const el = (e.target as Element).closest('[data-token][data-column]');
      if (!el) return;
      const sel = { column: Number(el.getAttribute('data-column')), token: Number(el.getAttribute('data-token')) };
      const same = this.selected && this.selected.column === sel.column && this.selected.token === sel.token;
      this.selected = same && this.kind === 'diagram' ? null : sel;
      this.key = '';
      this.update();
    });
  }

  private id(): string {
    return this.kind === 'diagram' ? 'flow' : 'influence';
  }

  /** The view's options as the export takes them. */
  private options(): FlowViewOptions {
    const { state } = this.ctx;
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
    };
  }

  /** Progress / cancel / limit line of attention flow (inside the readout). */
  private readonly flowStatus = h('div', { class: 'flow-status', testid: 'flow-status' });

  /**
   * The input column's values while the method is attention flow and a token is selected: the
   * worker's row when it is known; else rollout's (the pushed-down mass) while the worker runs,
   * after a cancel or above the size limit. Starts the worker when needed. Undefined otherwise.
   */
  private flowValues(matrices: readonly ArrayLike<number>[], n: number, context: string): { values: ArrayLike<number> } | undefined {
    const sel = this.selected;
    if (this.kind !== 'diagram' || this.method !== 'flow' || !sel || sel.column === 0) {
      this.cancelFlow();
      this.flowStatus.dataset.state = 'idle';
      return undefined;
    }
    const key = this.flowKey(context, sel);
    const cached = this.flows.get(key);
    if (cached) {
      this.cancelFlow();
      this.flowStatus.dataset.state = 'done';
      return { values: cached };
    }
    const rollout = { values: flowMass(matrices, n, sel.column, sel.token)[0]! };
    const limit = pageFlowLimit(sel.column, n);
    if (limit) {
      this.cancelFlow();
      this.flowStatus.dataset.state = 'too-large';
      this.flowNote = { key, state: 'error', message: limit };
      return rollout;
    }
    if (this.flowNote?.key === key) {
      this.flowStatus.dataset.state = this.flowNote.state;
      return rollout;
    }
    if (this.job?.key === key) return rollout;
    this.cancelFlow();
    this.flowNote = null;
    // The worker gets copies (transferred): the page keeps its own matrices.
    const copies = matrices.slice(0, sel.column).map((m) => Float32Array.from(m));
    const job = startFlowJob({ matrices: copies, n, token: sel.token }, (done, total) => {
      if (this.job?.job !== job) return;
      this.job.done = done;
      this.job.total = total;
      this.paintFlowStatus();
    });
    this.job = { key, job, done: 0, total: n };
    this.flowStatus.dataset.state = 'running';
    job.result.then(
      (values) => {
        if (this.job?.job !== job) return;
        this.job = null;
        if (values) {
          this.flows.set(key, values);
          this.flowStatus.dataset.state = 'done';
        } else {
          this.flowNote = { key, state: 'cancelled', message: 'attention flow cancelled: the input column shows rollout' };
          this.flowStatus.dataset.state = 'cancelled';
        }
        this.key = '';
        this.update();
      },
      (err: unknown) => {
        if (this.job?.job !== job) return;
        this.job = null;
        this.flowNote = { key, state: 'error', message: (err as Error).message };
        this.flowStatus.dataset.state = 'error';
        this.key = '';
        this.update();
      },
    );
    return rollout;
  }

  private flowContext(): string {
    return [this.ctx.state.stack, this.fusion].join('|');
  }

  private flowKey(context: string, sel: { column: number; token: number }): string {
    return `${context}|${sel.column}|${sel.token}`;
  }

  /**
   * The diagram's SVG export: with attention flow's values when the worker has them; while it
   * runs, after a cancel or above the limit, the rollout diagram (named so in its caption) rather
   * than computing flow here on the page's thread.
   */
  private exportDiagram(): string {
    const options = this.options();
    const sel = this.selected;
    if (options.method !== 'flow' || !sel || sel.column === 0) return renderFlowView(this.ctx.trace, options);
    const values = this.flows.get(this.flowKey(this.flowContext(), sel));
    return values ? renderFlowView(this.ctx.trace, options, { inputValues: values }) : renderFlowView(this.ctx.trace, { ...options, method: 'rollout' });
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

  /**
   * The drawing's items into the SVG: at once when few, else in slices of SLICE items, one per task
   * (the page keeps answering between them; a newer drawing stops an older one's slices).
   */
  private appendInSlices(svg: SVGElement, items: readonly Item[]): void {
    const gen = ++this.drawing;
    if (items.length <= SLICE) {
      appendSvgItems(svg, items);
      return;
    }
    this.el.setAttribute('data-drawing', 'true');
    let at = 0;
    const step = () => {
      if (gen !== this.drawing) return;
      appendSvgItems(svg, items.slice(at, at + SLICE));
      at += SLICE;
      if (at < items.length) setTimeout(step, 0);
      else this.el.removeAttribute('data-drawing');
    };
    step();
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
      exportButtons(ctx, id, () => (this.kind === 'diagram' ? this.exportDiagram() : renderInfluenceTree(ctx.trace, { ...this.options(), depth: Math.min(this.depth, this.selected?.column ?? numLayers) }))),
    );
    const { state } = ctx;
    const key = [state.stack, state.theme, state.prettify, this.method, this.fusion, this.keep, this.threshold, this.depth, this.selected?.column, this.selected?.token, frameWidth(this.el)].join('|');
    if (key === this.key) return;
    this.key = key;
    this.wrap.replaceChildren();
    try {
      if (state.stack === 'cross') throw new Error('the flow views follow one self-attention stack: choose the encoder or decoder stack');
      const options = this.options();
      const modelKey = [state.stack, this.method, this.fusion, ctx.step() ?? 'all'].join('|');
      if (this.model?.key !== modelKey) this.model = { key: modelKey, model: flowModel(ctx.trace, options) };
      const model = this.model.model;
      // Prettified labels, or the raw tokens when "prettify tokens" is off.
      const label = (t: { label: string; tip: string }) => (state.prettify ? t.label : t.tip);
      const width = frameWidth(this.el);
      const height = Math.max(420, window.innerHeight - 200);
      let items;
      let paths: SVGElement[] = [];
      let size: { width: number; height: number };
      let note: string;
      if (this.kind === 'diagram') {
        const flow = this.flowValues(model.matrices, model.tokens.length, this.flowContext());
        const layout = flowLayout(ctx.trace, options, { frame: { width, height }, label, inputValues: flow?.values }, model);
        const merged = mergeFadedEdges(layout.lines);
        paths = merged.paths;
        items = [...merged.lines, ...layout.nodes];
        size = layout;
        const hl = layout.highlight;
        this.readout.setAttribute('data-highlighted', String(hl ? hl.edges.length : 0));
        this.readout.setAttribute('data-edges', String(layout.edges.length));
        note = hl
          ? `what flows into token ${hl.token} “${model.tokens[hl.token]!.label}” (${hl.column === 0 ? 'input' : `after layer ${model.firstLayer + hl.column - 1}`}): ${hl.edges.length} edges highlighted · click it again to clear`
          : `${layout.edges.length} of ${layout.totalEdges} edges drawn · click a token to highlight what flows into it`;
        if (hl) {
          this.readout.setAttribute('data-column', String(hl.column));
          this.readout.setAttribute('data-token', String(hl.token));
        } else {
          this.readout.removeAttribute('data-column');
          this.readout.removeAttribute('data-token');
        }
      } else {
        const column = this.selected?.column ?? numLayers;
        const layout = influenceTreeLayout(ctx.trace, { ...options, depth: Math.min(this.depth, column) }, { label }, model);
        items = layout.items;
        size = layout;
        const root = layout.nodes[0]!;
        this.readout.setAttribute('data-token', String(root.token));
        this.readout.setAttribute('data-column', String(root.column));
        this.readout.setAttribute('data-nodes', String(layout.nodes.length));
        note = `influence tree of token ${root.token} “${model.tokens[root.token]!.label}” · ${layout.nodes.length} nodes · click a node to make it the root`;
      }
      replaceChildren(this.readout, h('span', { class: 'muted' }, note));
      this.readout.append(this.flowStatus);
      this.paintFlowStatus();
      const svg = s('svg', { width: Math.ceil(size.width), height: Math.ceil(size.height), class: `${this.id()}-svg`, testid: `${this.id()}-svg` });
      svg.append(...paths);
      this.appendInSlices(svg, items);
      this.wrap.append(svg);
    } catch (e) {
      this.readout.removeAttribute('data-highlighted');
      replaceChildren(this.readout, (e as Error).message);
    }
  }
}
