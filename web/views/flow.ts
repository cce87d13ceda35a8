/**
 * Interactive flow diagram and influence tree: paint the layouts of src/views/layout/flow.ts and
 * influence-tree.ts (the ones the SVG export paints) as SVG elements. Flow diagram: a click on a
 * token (label or node) highlights what flows into it, a second click clears it. Influence tree:
 * a click on a node makes it the root. Method, head fusion and pruning are this view's own
 * controls; the export renders the same options.
 */
import type { FlowMethod, FlowViewOptions } from '../../src/views/layout/flow.js';
import { flowLayout, flowModel } from '../../src/views/layout/flow.js';
import { influenceTreeLayout } from '../../src/views/layout/influence-tree.js';
import type { HeadFusion } from '../../src/analysis/rollout.js';
import { renderFlowView, renderInfluenceTree } from '../../src/views/svg/flow.js';
import type { Ctx } from '../context.js';
import { appendSvgItems, h, replaceChildren, s, select } from '../dom.js';
import { exportButtons } from '../export.js';

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

  constructor(
    private readonly ctx: Ctx,
    private readonly kind: 'diagram' | 'tree',
  ) {
    const id = kind === 'diagram' ? 'flow' : 'influence';
    this.el = h('div', { class: `view ${id}-view`, testid: `${id}-view` });
    this.readout = h('div', { class: 'readout', testid: `${id}-readout` });
    this.el.append(this.toolbar, this.readout, this.wrap);
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
      exportButtons(ctx, id, () => (this.kind === 'diagram' ? renderFlowView(ctx.trace, this.options()) : renderInfluenceTree(ctx.trace, { ...this.options(), depth: Math.min(this.depth, this.selected?.column ?? numLayers) }))),
    );
    const { state } = ctx;
    const key = [state.stack, state.theme, state.prettify, this.method, this.fusion, this.keep, this.threshold, this.depth, this.selected?.column, this.selected?.token].join('|');
    if (key === this.key) return;
    this.key = key;
    this.wrap.replaceChildren();
    try {
      if (state.stack === 'cross') throw new Error('the flow views follow one self-attention stack: choose the encoder or decoder stack');
      const options = this.options();
      const model = flowModel(ctx.trace, options);
      // Prettified labels, or the raw tokens when "prettify tokens" is off.
      const label = (t: { label: string; tip: string }) => (state.prettify ? t.label : t.tip);
      const width = Math.max(640, document.documentElement.clientWidth - 48);
      const height = Math.max(420, window.innerHeight - 200);
      let items;
      let size: { width: number; height: number };
      let note: string;
      if (this.kind === 'diagram') {
        const layout = flowLayout(ctx.trace, options, { frame: { width, height }, label }, model);
        items = [...layout.lines, ...layout.nodes];
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
      const svg = s('svg', { width: Math.ceil(size.width), height: Math.ceil(size.height), class: `${this.id()}-svg`, testid: `${this.id()}-svg` });
      appendSvgItems(svg, items);
      this.wrap.append(svg);
    } catch (e) {
      this.readout.removeAttribute('data-highlighted');
      replaceChildren(this.readout, (e as Error).message);
    }
  }
}
