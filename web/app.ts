/** The page: title, view tabs, shared controls, and the four views. */
import type { StackName, Trace } from '../src/core/trace.js';
import type { PayloadHeader } from '../src/views/html/payload.js';
import { type TraceGeneration, describeGeneration, predictionNote, probabilityNote, traceGeneration } from '../src/views/generation.js';
import { stepDescription } from '../src/views/svg/common.js';
import { STACK_TITLES } from '../src/views/layout/common.js';
import { type ThemeName, getTheme } from '../src/views/theme.js';
import { type DisplayToken, prettifyToken, tokenLabel } from '../src/views/tokens.js';
import { isLongPage, pageSource, pageStacks } from './source.js';
import { type Ctx, DisplayCache, type PageView, type State, VIEWS, weightFormatter } from './context.js';
import { ANALYSIS_VIEW_LABELS, ANALYSIS_VIEW_NAMES, type AnalysisViewName } from '../src/views/layout/analysis-views.js';
import { AblationView, HeadImportanceView, LogitLensView, SaliencyView } from './views/analysis.js';
import { Tooltip, button, checkbox, h, replaceChildren, select } from './dom.js';
import { HeadView } from './views/head.js';
import { HeatmapView } from './views/heatmap.js';
import { FlowView } from './views/flow.js';
import { HeadClustersView } from './views/head-clusters.js';
import { HeadTypesView } from './views/head-types.js';
import { GroupedView } from './views/grouped.js';
import { ModelView } from './views/model.js';
import { NeuronView } from './views/neuron.js';
import { PredictionsPanel } from './predictions.js';

const STACK_LABELS: Readonly<Record<StackName, string>> = STACK_TITLES;
/** Views that work at any length (they read attention a block at a time). */
const LONG_VIEWS: readonly PageView[] = ['head', 'model', 'heatmap'];

interface View {
  el: HTMLElement;
  update(): void;
  /** Called when another view is shown (a hosted view stops its work). */
  leave?(): void;
}

/**
 * Views a host adds to the page's tabs (the served app: the analysis views computed on request,
 * the bias panel): their names and labels in tab order, and a maker called once per App.
 */
export interface HostedViews {
  views: readonly { name: PageView; label: string }[];
  make(name: PageView, app: App): View;
}

/** The analysis views whose data the page carries (their tabs follow the attention views'). */
function analysisViews(header: PayloadHeader): AnalysisViewName[] {
  const a = header.analysis ?? {};
  const has: Record<AnalysisViewName, boolean> = { saliency: !!a.saliency, importance: !!a.importance, ablation: !!a.ablation, lens: !!a.lens };
  return ANALYSIS_VIEW_NAMES.filter((v) => has[v]);
}

/** Every tab of the page, in order (then a host's views not carried by the page). */
function pageViews(header: PayloadHeader, hosted?: HostedViews): { name: PageView; label: string }[] {
  const own = [...VIEWS, ...analysisViews(header).map((name) => ({ name, label: ANALYSIS_VIEW_LABELS[name] }))];
  return [...own, ...(hosted?.views ?? []).filter((v) => !own.some((o) => o.name === v.name))];
}

function initialState(trace: Trace, header: PayloadHeader, hosted?: HostedViews): State {
  const stack = pageStacks(trace)[0]!;
  // Dense or computed on demand (long traces keep queries and keys instead of attention).
  const { numHeads, numLayers } = pageSource(trace, stack);
  const view = pageViews(header, hosted).some((v) => v.name === header.view) ? (header.view as PageView) : 'head';
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
    step: null,
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
  private readonly views: Partial<Record<PageView, View>>;
  private scheduled = false;
  private readonly predictionsPanel: PredictionsPanel;
  readonly gen: TraceGeneration | null;
  /** Generation traces: the step control (built once, so that dragging the slider is never interrupted). */
  private readonly genBar = h('div', { class: 'generation-bar', testid: 'generation-bar' });
  private readonly stepSlider = h('input', { type: 'range', min: 0, step: 1, testid: 'step-slider', 'aria-label': 'generation step' });
  private readonly stepLabel = h('span', { class: 'step-label', testid: 'step-label' });
  private readonly stepAll = button('step-all', 'all', () => this.set({ step: null }), 'Show the whole sequence');
  private readonly stepReadout = h('span', { class: 'step-readout', testid: 'step-readout' });
  /** Long inputs: what a view that reads whole matrices says instead (heatmap, model and head views read blocks). */
  private readonly longNote = h('p', { class: 'readout muted', testid: 'long-note' });

  constructor(
    readonly trace: Trace,
    readonly header: PayloadHeader,
    readonly qkReady: Promise<void>,
    mount: HTMLElement,
    private readonly hosted?: HostedViews,
    /** The model's number of each head of the trace (web/app/side.ts: a head preview's one head); default 0, 1, … */
    private readonly headNumbers?: readonly number[],
  ) {
    this.state = initialState(trace, header, hosted);
    this.gen = traceGeneration(trace);
    this.cache = new DisplayCache(trace);
    this.fmtWeight = weightFormatter(header);
    this.predictionsPanel = new PredictionsPanel(this);
    this.views = { head: new HeadView(this), model: new ModelView(this), neuron: new NeuronView(this), heatmap: new HeatmapView(this), words: new GroupedView(this, 'words'), sentences: new GroupedView(this, 'sentences'), flow: new FlowView(this, 'diagram'), influence: new FlowView(this, 'tree'), clusters: new HeadClustersView(this), types: new HeadTypesView(this) };
    const analysis = header.analysis ?? {};
    if (analysis.saliency) this.views.saliency = new SaliencyView(this, analysis.saliency);
    if (analysis.importance) this.views.importance = new HeadImportanceView(this, analysis.importance);
    if (analysis.ablation) this.views.ablation = new AblationView(this, analysis.ablation);
    if (analysis.lens) this.views.lens = new LogitLensView(this, analysis.lens);
    for (const v of hosted?.views ?? []) this.views[v.name] ??= hosted!.make(v.name, this);
    const nTokens = trace.tokens.length + (trace.decoderTokens ? ` + ${trace.decoderTokens.length}` : '');
    const facts = `(${trace.model.modelType}) · ${trace.model.numLayers} layers × ${trace.model.numHeads} heads · ${nTokens} tokens`;
    const generated = this.gen ? `generated: ${describeGeneration(this.gen)}` : '';
    // Header items wrap onto more lines when the page is narrow and are cut with an ellipsis, never
    // clipped: the full text is each one's tooltip.
    this.root = h(
      'div',
      { class: 'app', testid: 'app' },
      h(
        'header',
        { class: 'topbar' },
        h('span', { class: 'brand' }, 'attnscope'),
        h(
          'span',
          { class: 'subtitle', testid: 'subtitle', title: `${trace.model.name} ${facts}` },
          h('span', { class: 'model-name', testid: 'model-name' }, trace.model.name),
          h('span', { class: 'facts' }, facts),
        ),
        header.text ? h('span', { class: 'text muted', testid: 'source-text', title: header.text }, `“${header.text}”`) : null,
        this.gen ? h('span', { class: 'generation-info', testid: 'generation-info', title: generated }, generated) : null,
      ),
      h('div', { class: 'bar' }, this.tabs, this.controls),
      this.gen ? this.genBar : null,
      this.predictionsPanel.el,
      this.main,
      this.tooltip.el,
    );
    replaceChildren(mount, this.root);
    for (const v of Object.values(this.views)) this.main.append(v.el);
    this.main.append(this.longNote);
    document.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') this.set({ modelOpen: null, pinned: null });
      // ←/→ step through a generation (form controls keep their own arrow keys).
      if ((e.key === 'ArrowLeft' || e.key === 'ArrowRight') && this.gen && !e.altKey && !e.ctrlKey && !e.metaKey) {
        const t = e.target as HTMLElement | null;
        if (t && /^(INPUT|SELECT|TEXTAREA)$/.test(t.tagName)) return;
        e.preventDefault();
        this.stepBy(e.key === 'ArrowLeft' ? -1 : 1);
      }
    });
    if (this.gen) this.buildGenerationBar(this.gen.steps);
    this.render();
  }

  /** Steps in order 0 (the prompt), 1, …, steps, then "all"; moves `delta` along them. */
  stepBy(delta: number): void {
    if (!this.gen) return;
    const all = this.gen.steps + 1;
    const at = this.state.step ?? all;
    const next = Math.max(0, Math.min(all, at + delta));
    this.set({ step: next === all ? null : next });
  }

  private buildGenerationBar(steps: number): void {
    this.stepSlider.max = String(steps + 1);
    this.stepSlider.addEventListener('input', () => {
      const v = Number(this.stepSlider.value);
      this.set({ step: v > steps ? null : v });
    });
    const legend = h(
      'span',
      { class: 'generation-legend', testid: 'generation-legend', title: 'token labels: prompt tokens plain, generated tokens in italics and their own colour; a dashed line where the generated tokens start' },
      h('span', { class: 'legend-prompt' }, 'prompt'),
      h('span', { class: 'muted' }, ' | '),
      h('span', { class: 'legend-generated' }, 'generated'),
    );
    replaceChildren(
      this.genBar,
      h('span', { class: 'muted' }, 'step'),
      button('step-prev', '◀', () => this.stepBy(-1), 'Previous step (←)'),
      this.stepSlider,
      button('step-next', '▶', () => this.stepBy(1), 'Next step (→)'),
      this.stepAll,
      this.stepLabel,
      this.stepReadout,
      h('span', { class: 'spacer' }),
      legend,
    );
  }

  private renderGenerationBar(): void {
    const gen = this.gen;
    if (!gen) return;
    const step = this.state.step;
    this.stepSlider.value = String(step ?? gen.steps + 1);
    this.stepAll.setAttribute('aria-pressed', step === null ? 'true' : 'false');
    this.stepAll.classList.toggle('on', step === null);
    this.genBar.dataset.step = step === null ? 'all' : String(step);
    const total = gen.promptLength + gen.steps;
    if (step === null) {
      this.stepLabel.textContent = `all ${total} tokens`;
      const all = `${gen.promptLength} prompt + ${gen.steps} generated · ← → or the slider step through the generation token by token`;
      replaceChildren(this.stepReadout, h('span', { class: 'muted' }, all));
      this.stepReadout.title = all;
      return;
    }
    this.stepLabel.textContent = `step ${step} / ${gen.steps} · ${gen.promptLength + step} tokens`;
    let text: string;
    try {
      const ds = this.display([this.state.layer]);
      const { view } = this.state;
      const mark = view === 'head' ? 'highlighted' : view === 'neuron' ? (this.state.neuronQuery === null ? 'the query' : null) : 'outlined row';
      text = stepDescription(this.trace, this.state.stack, ds, mark).replace(/^step \d+ of \d+(:| ·) /, '');
    } catch (e) {
      text = (e as Error).message;
    }
    replaceChildren(this.stepReadout, text);
    this.stepReadout.title = text;
  }

  step(): number | undefined {
    return this.gen && this.state.step !== null ? this.state.step : undefined;
  }

  tokenTip(side: 'query' | 'key', t: DisplayToken): string {
    const notes = [
      probabilityNote(this.trace, this.state.stack, side, t.positions),
      predictionNote(this.trace, this.state.stack, side, t.positions, (c) => this.candidateLabel(c)),
    ].filter(Boolean);
    return notes.length ? `${t.raw} · ${notes.join('; ')}` : t.raw;
  }

  /** A predicted token as the page shows tokens (prettified or raw). */
  candidateLabel(token: string): string {
    return this.state.prettify ? tokenLabel(prettifyToken(token, this.trace.model.modelType)) : token;
  }

  set(patch: Partial<State>): void {
    const before = this.state.stack;
    const beforeStep = this.state.step;
    Object.assign(this.state, patch);
    if (patch.stack && patch.stack !== before) {
      this.state.layer = Math.min(this.state.layer, pageSource(this.trace, patch.stack).numLayers - 1);
      this.state.pinned = null;
      this.state.modelOpen = null;
      this.state.neuronQuery = null;
    }
    if (patch.hideSpecial !== undefined || patch.mergeSubwords !== undefined) this.state.pinned = patch.pinned ?? null;
    if (patch.step !== undefined && patch.step !== beforeStep) {
      // Another step: another sequence length, so token indices start over.
      this.state.pinned = patch.pinned ?? null;
      this.state.neuronQuery = patch.neuronQuery ?? null;
    }
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
    return this.cache.get(stack, hideSpecial, mergeSubwords, layers, this.step());
  }

  label(t: { label: string; raw: string }): string {
    return this.state.prettify ? t.label : t.raw;
  }

  numLayers(): number {
    return pageSource(this.trace, this.state.stack).numLayers;
  }

  numHeads(): number {
    return pageSource(this.trace, this.state.stack).numHeads;
  }

  /** A head of the trace's number in the model (see headNumbers). */
  headNumber(head: number): number {
    return this.headNumbers?.[head] ?? head;
  }

  headLabel(head: number): string {
    return String(this.headNumber(head));
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
      '--generated': t.generated,
      '--masked': t.masked,
    };
    for (const [k, v] of Object.entries(vars)) root.style.setProperty(k, v);
  }

  private render(): void {
    const { state } = this;
    this.applyTheme();
    replaceChildren(
      this.tabs,
      ...pageViews(this.header, this.hosted).map((v) => {
        const b = h('button', { type: 'button', role: 'tab', class: `tab${v.name === state.view ? ' active' : ''}`, testid: `tab-${v.name}`, 'aria-selected': v.name === state.view ? 'true' : 'false' }, v.label);
        b.addEventListener('click', () => this.set({ view: v.name }));
        return b;
      }),
    );
    const stacks = pageStacks(this.trace);
    // Attention computed on demand (no dense matrices): only the views that read blocks can show it.
    const long = isLongPage(this.trace, state.stack);
    const onDemand = long && pageSource(this.trace, state.stack).onDemand;
    // Long inputs are shown token by token: hiding specials and merging sub-words do not apply there.
    const neuron = onDemand || (long && LONG_VIEWS.includes(state.view)) || state.view === 'neuron' || state.view === 'flow' || state.view === 'influence' || state.view === 'clusters' || state.view === 'types';
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
    this.renderGenerationBar();
    this.predictionsPanel.update();
    const blocked = onDemand && !LONG_VIEWS.includes(state.view);
    this.longNote.hidden = !blocked;
    if (blocked) this.longNote.textContent = `This trace keeps queries and keys, not attention (${pageSource(this.trace, state.stack).numQueries} tokens): this view needs whole attention matrices; the heatmap, model and head views compute attention block by block.`;
    for (const [name, view] of Object.entries(this.views) as [PageView, View][]) {
      const active = name === state.view && !blocked;
      const shown = !view.el.hidden;
      view.el.hidden = !active;
      if (active) view.update();
      else if (shown) view.leave?.();
    }
  }
}
