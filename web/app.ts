/** The page: title, view tabs, shared controls, and the four views. */
import type { StackName, Trace } from '../src/core/trace.js';
import type { PayloadHeader } from '../src/views/html/payload.js';
import { type ThemeName, getTheme } from '../src/views/theme.js';
import { traceStacks } from '../src/views/tokens.js';
import { type Ctx, DisplayCache, type State, VIEWS, type ViewName, weightFormatter } from './context.js';
import { Tooltip, checkbox, h, replaceChildren, select } from './dom.js';
import { HeadView } from './views/head.js';
import { HeatmapView } from './views/heatmap.js';
import { ModelView } from './views/model.js';
import { NeuronView } from './views/neuron.js';

const STACK_LABELS: Record<StackName, string> = {
  self: 'self-attention',
  encoder: 'encoder',
  decoder: 'decoder',
  cross: 'cross (decoder → encoder)',
};

interface View {
  el: HTMLElement;
  update(): void;
}

function initialState(trace: Trace, header: PayloadHeader): State {
  const stack = traceStacks(trace)[0]!;
  const s = trace.attention[stack]!;
  const numHeads = s.dims[0];
  const numLayers = s.layers.length;
  const view = VIEWS.some((v) => v.name === header.view) ? (header.view as ViewName) : 'head';
  const theme: ThemeName =
    header.theme === 'dark' || header.theme === 'light'
      ? header.theme
      : window.matchMedia?.('(prefers-color-scheme: dark)').matches
        ? 'dark'
        : 'light';
  return {
    view,
    theme,
    hideSpecial: false,
    mergeSubwords: false,
    prettify: true,
    stack,
    layer: 0,
    heads: Array.from({ length: numHeads }, () => true),
    pair: 'all',
    pinned: null,
    neuronHead: 0,
    neuronQuery: null,
    heatmapMode: 'head',
    heatmapHead: 0,
    heatmapLog: false,
    modelLayers: Array.from({ length: numLayers }, () => true),
    modelHeads: Array.from({ length: numHeads }, () => true),
    modelNormalize: 'cell',
    modelLog: false,
    modelOpen: null,
  };
}

export class App implements Ctx {
  readonly state: State;
  readonly tooltip = new Tooltip();
  readonly fmtWeight: (v: number) => string;
  private readonly cache: DisplayCache;
  private readonly root: HTMLElement;
  private readonly tabs = h('nav', { class: 'tabs', role: 'tablist', testid: 'tabs' });
  private readonly controls = h('div', { class: 'shared-controls', testid: 'shared-controls' });
  private readonly main = h('main', { class: 'views' });
  private readonly views: Record<ViewName, View>;
  private scheduled = false;

  constructor(
    readonly trace: Trace,
    readonly header: PayloadHeader,
    readonly qkReady: Promise<void>,
    mount: HTMLElement,
  ) {
    this.state = initialState(trace, header);
    this.cache = new DisplayCache(trace);
    this.fmtWeight = weightFormatter(header);
    this.views = { head: new HeadView(this), model: new ModelView(this), neuron: new NeuronView(this), heatmap: new HeatmapView(this) };
    const nTokens = trace.tokens.length + (trace.decoderTokens ? ` + ${trace.decoderTokens.length}` : '');
    const subtitle = `${trace.model.name} (${trace.model.modelType}) · ${trace.model.numLayers} layers × ${trace.model.numHeads} heads · ${nTokens} tokens`;
    this.root = h(
      'div',
      { class: 'app', testid: 'app' },
      h(
        'header',
        { class: 'topbar' },
        h('span', { class: 'brand' }, 'attnscope'),
        h('span', { class: 'subtitle', testid: 'subtitle' }, subtitle),
        header.text ? h('span', { class: 'text muted', testid: 'source-text', title: header.text }, `“${header.text}”`) : null,
      ),
      h('div', { class: 'bar' }, this.tabs, this.controls),
      this.main,
      this.tooltip.el,
    );
    replaceChildren(mount, this.root);
    for (const v of Object.values(this.views)) this.main.append(v.el);
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') this.set({ modelOpen: null, pinned: null });
    });
    this.render();
  }

  set(patch: Partial<State>): void {
    const before = this.state.stack;
    Object.assign(this.state, patch);
    if (patch.stack && patch.stack !== before) {
      const s = this.trace.attention[patch.stack]!;
      this.state.layer = Math.min(this.state.layer, s.layers.length - 1);
      this.state.pinned = null;
      this.state.modelOpen = null;
      this.state.neuronQuery = null;
    }
    if (patch.hideSpecial !== undefined || patch.mergeSubwords !== undefined) this.state.pinned = patch.pinned ?? null;
    if (this.scheduled) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.render();
    });
  }

  theme() {
    return getTheme(this.state.theme);
  }

  display(layers: readonly number[]) {
    const { stack, hideSpecial, mergeSubwords } = this.state;
    return this.cache.get(stack, hideSpecial, mergeSubwords, layers);
  }

  label(t: { label: string; raw: string }): string {
    return this.state.prettify ? t.label : t.raw;
  }

  numLayers(): number {
    return this.trace.attention[this.state.stack]!.layers.length;
  }

  numHeads(): number {
    return this.trace.attention[this.state.stack]!.dims[0];
  }

  private applyTheme(): void {
    const t = this.theme();
    const root = document.documentElement;
    root.dataset.theme = t.name;
    const vars: Record<string, string> = {
      '--bg': t.background,
      '--panel': t.panel,
      '--text': t.text,
      '--muted': t.muted,
      '--grid': t.grid,
      '--highlight': t.highlight,
      '--special': t.special,
      '--masked': t.masked,
    };
    for (const [k, v] of Object.entries(vars)) root.style.setProperty(k, v);
  }

  private render(): void {
    const { state } = this;
    this.applyTheme();
    replaceChildren(
      this.tabs,
      ...VIEWS.map((v) => {
        const b = h('button', { type: 'button', role: 'tab', class: `tab${v.name === state.view ? ' active' : ''}`, testid: `tab-${v.name}`, 'aria-selected': v.name === state.view ? 'true' : 'false' }, v.label);
        b.addEventListener('click', () => this.set({ view: v.name }));
        return b;
      }),
    );
    const stacks = traceStacks(this.trace);
    const neuron = state.view === 'neuron';
    replaceChildren(
      this.controls,
      stacks.length > 1 ? select('stack', 'attention', stacks.map((s) => ({ value: s, label: STACK_LABELS[s] })), state.stack, (stack) => this.set({ stack })) : null,
      checkbox('hide-special', 'hide special tokens', state.hideSpecial, (hideSpecial) => this.set({ hideSpecial }), neuron),
      checkbox('merge-subwords', 'merge sub-words', state.mergeSubwords, (mergeSubwords) => this.set({ mergeSubwords }), neuron),
      checkbox('prettify', 'prettify tokens', state.prettify, (prettify) => this.set({ prettify })),
      select('theme', 'theme', [
        { value: 'light', label: 'light' },
        { value: 'dark', label: 'dark' },
      ] as const, state.theme, (theme) => this.set({ theme })),
    );
    for (const [name, view] of Object.entries(this.views) as [ViewName, View][]) {
      const active = name === state.view;
      view.el.hidden = !active;
      if (active) view.update();
    }
  }
}
