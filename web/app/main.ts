/**
 * The web app of `attnscope serve`: text inputs and a model picker above the same views the
 * standalone page shows (web/app.ts and web/views, one implementation), fed by a trace streamed
 * from the server layer by layer (side.ts). Edits re-trace after a short pause; the URL holds the
 * state (model, texts, view, stack, layer, head, display options, compare state) so that a link
 * reopens what was on screen.
 *
 * Compare mode: a second side (model B and/or text B) next to the first, navigation synchronised
 * (view, stack, layer, head and display options move together; layers at the same relative depth
 * when the models differ in depth), and below them the comparison page's component (compare-panel.ts):
 * A − B of the pair on screen and the head ranking; a click on a ranked head moves both sides to it.
 *
 * Export (the menu): PNG (at the scale chosen) and SVG of the view on screen (the views' own
 * export path, web/export.ts), the standalone HTML page and the trace file (.safetensors / JSON)
 * of the current input (the server makes them with the CLI's code), the predictions table and the
 * compare ranking as CSV / JSON; a session saved to a file and reopened (session.ts); a share link.
 */
import { depthLayer } from '../../src/analysis/compare.js';
import { analysisTable, predictionRows, tableCsv, tableJson } from './tables.js';
import type { ModelEntry, ModelsResponse, ProgressFrame, TraceRequest } from '../../src/server/protocol.js';
import type { App, HostedViews } from '../app.js';
import { AnalysisHost, isAnalysisTab } from './analysis-host.js';
import { BiasPanel } from './bias-panel.js';
import { VIEWS, type State } from '../context.js';
import { button, h, replaceChildren } from '../dom.js';
import { download, getPngScale, setPngScale } from '../export.js';
import { ComparePanel } from './compare-panel.js';
import { ModelPicker } from './picker.js';
import { parseSession, sessionFile } from './session.js';
import { selectHead, Side, type SideHost } from './side.js';
import { ApiRefusal, fetchModels, loadModel, type Incoming } from './stream.js';
import { readUrlState, writeUrlState, type UrlState } from './url-state.js';
import { rememberScript, runFlowWorker } from '../flow-worker.js';
import { prestartLongWorker } from '../long-worker.js';

/** Pause after the last keystroke before tracing again. */
const EDIT_PAUSE_MS = 350;

const DEFAULT_TEXT = 'Once upon a time, there was a little girl who loved to play in the park.';

/** The attention views a standalone page can open on (the server's export refuses others). */
const PAGE_VIEWS = new Set<string>(VIEWS.map((v) => v.name));

/** What moves together on both sides in compare mode. */
const SYNCED: readonly (keyof State)[] = ['view', 'stack', 'layer', 'heads', 'neuronHead', 'heatmapHead', 'heatmapMode', 'heatmapLog', 'modelOpen', 'modelNormalize', 'modelLog', 'theme', 'hideSpecial', 'mergeSubwords', 'prettify', 'pair'];

class ServeApp implements SideHost {
  private models: ModelEntry[] = [];
  private limits: ModelsResponse['limits'] | null = null;
  private hubDownloads = true;
  private url: UrlState;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private encoderDecoder = false;
  /** Side A's model whose kind the last header told (before it: the decoder text and generation length are not sent). */
  private kindModel: string | null = null;
  /** Propagating a change from one side to the other (the other side's change is not sent back). */
  private syncing = false;
  private readonly revisions: { a?: string; b?: string } = {};
  /** The revisions a reopened session was saved with (a different one is pointed out). */
  private sessionRevisions: { a?: string; b?: string } = {};

  private readonly sideA = new Side('a', this);
  private readonly sideB = new Side('b', this);
  /** The analysis views (saliency, head importance, ablation, logit lens, deep dive): tabs of every side's App, computed by the server on request. */
  private readonly analysis = new AnalysisHost({
    url: () => this.url,
    optionsChanged: () => this.syncUrl(false),
    extraTabs: [{ name: 'bias', label: 'Bias' }],
    extra: (name, _app, side) => (name === 'bias' ? this.biasView(side) : null),
  });
  private readonly hostedViews = { a: this.analysis.hosted(() => this.sideA.request, 'a'), b: this.analysis.hosted(() => this.sideB.request, 'b') };
  /** The bias panel (web/app/bias-panel.ts): one, shown in side A's Bias tab; it runs when asked. */
  private readonly bias = new BiasPanel({ model: () => this.url.model ?? null, text: () => this.text.value, theme: () => this.sideA.mounted?.app.state.theme ?? 'light' });
  private biasInputs = '';
  private readonly panel = new ComparePanel((layer, head) => this.selectPair(layer, head));
  private readonly pickerA = new ModelPicker({ models: () => this.models, hubDownloads: () => this.hubDownloads }, (id) => this.pick(id));
  private readonly pickerB = new ModelPicker({ models: () => this.models, hubDownloads: () => this.hubDownloads }, (id) => this.pickB(id), 'b-', 'Pick model B');
  private readonly vs = h('span', { class: 'vs muted', testid: 'vs' }, 'vs');
  private readonly text = h('textarea', { class: 'text-input', testid: 'text-input', rows: 1, spellcheck: false, 'aria-label': 'text', placeholder: 'Type or paste a text' });
  private readonly pair = h('textarea', { class: 'text-input', testid: 'pair-input', rows: 1, spellcheck: false, 'aria-label': 'second text (sentence B)', placeholder: 'Sentence B (optional)' });
  private readonly decoder = h('textarea', { class: 'text-input', testid: 'decoder-input', rows: 1, spellcheck: false, 'aria-label': 'decoder text', placeholder: 'Decoder text (empty: the model generates)' });
  private readonly gen = h('input', { type: 'number', min: 1, step: 1, class: 'gen-input', testid: 'gen-input', 'aria-label': 'tokens to generate', placeholder: '20' });
  private readonly genField = h('label', { class: 'field gen-field', testid: 'gen-field', hidden: true }, h('span', { class: 'field-label' }, 'generate'), this.gen, h('span', { class: 'muted' }, 'tokens'));
  private readonly textB = h('textarea', { class: 'text-input', testid: 'text-b-input', rows: 1, spellcheck: false, 'aria-label': "side B's text", placeholder: 'Empty: the same text as A' });
  private readonly textLabel = h('span', { class: 'field-label' }, 'text');
  private readonly pairField = h('label', { class: 'field', testid: 'pair-field' }, h('span', { class: 'field-label' }, 'B'), this.pair);
  private readonly decoderField = h('label', { class: 'field', testid: 'decoder-field' }, h('span', { class: 'field-label' }, 'decoder'), this.decoder);
  private readonly textBField = h('label', { class: 'field', testid: 'text-b-field' }, h('span', { class: 'field-label' }, 'text B'), this.textB);
  private readonly pairToggle = button('pair-toggle', '+ sentence B', () => this.togglePair(), 'Add a second sentence (sentence pairs)');
  private readonly compareToggle = button('compare-toggle', 'compare', () => this.setCompare(!this.url.compare), 'Compare side by side: a second model and/or a second text (c)');
  private readonly status = h('span', { class: 'status', testid: 'status', role: 'status' });
  private readonly statusB = h('span', { class: 'status', testid: 'status-b', role: 'status' });
  private readonly error = h('p', { class: 'trace-error', testid: 'trace-error', hidden: true });
  private readonly errorB = h('p', { class: 'trace-error', testid: 'trace-error-b', hidden: true });
  private readonly progress = h('div', { class: 'progress', testid: 'progress' }, h('div', { class: 'progress-fill' }));
  private readonly views = h('div', { class: 'serve-views', testid: 'views' });
  private readonly exportStatus = h('span', { class: 'export-status muted', testid: 'export-status', role: 'status' });
  private readonly scale = h('select', { testid: 'png-scale', 'aria-label': 'PNG scale' });
  private readonly sessionInput = h('input', { type: 'file', accept: '.json,application/json', testid: 'session-file', hidden: true });
  private readonly shareUrl = h('input', { type: 'text', readonly: true, class: 'share-url', testid: 'share-url', 'aria-label': 'link to this state' });
  private readonly sharePanel = h('div', { class: 'menu-panel share-panel', testid: 'share-panel', hidden: true });
  private readonly menuPanel = h('div', { class: 'menu-panel', testid: 'export-panel', hidden: true });
  private readonly help = h(
    'div',
    { class: 'shortcuts', testid: 'shortcuts', hidden: true },
    h('h2', {}, 'Keyboard shortcuts'),
    h(
      'dl',
      {},
      ...(
        [
          ['[  ]', 'previous / next layer'],
          [',  .', 'previous / next head'],
          ['1 … 9, 0', `views: ${VIEWS.map((v) => v.label).join(', ')}`],
          ['/', 'search models'],
          ['e', 'edit the text'],
          ['c', 'compare mode on / off'],
          ['Esc', 'close, unpin'],
          ['?', 'this help'],
        ] as const
      ).flatMap(([k, d]) => [h('dt', {}, h('kbd', {}, k)), h('dd', {}, d)]),
    ),
  );

  constructor(private readonly root: HTMLElement) {
    this.url = readUrlState(location.search);
    for (const s of [1, 2, 3, 4]) this.scale.append(h('option', { value: String(s) }, `${s}×`));
    this.scale.value = String(getPngScale());
    this.scale.addEventListener('change', () => setPngScale(Number(this.scale.value)));
    const menuButton = button('export-menu', 'export ▾', () => this.toggleMenu(this.menuPanel), 'Export the view, the page, the trace, tables; save or open a session');
    const shareButton = button('share-button', 'share', () => this.share(), 'A link to what is on screen');
    this.buildMenu();
    replaceChildren(this.sharePanel, h('p', { class: 'muted' }, 'This link reopens the models, texts, view, layer, head and options on screen:'), this.shareUrl, h('span', { class: 'muted', testid: 'share-status' }));
    const bar = h(
      'header',
      { class: 'serve-bar' },
      h('span', { class: 'brand' }, 'attnscope'),
      this.pickerA.el,
      this.vs,
      this.pickerB.el,
      this.status,
      h('span', { class: 'spacer' }),
      this.compareToggle,
      h('div', { class: 'menu' }, menuButton, this.menuPanel),
      h('div', { class: 'menu' }, shareButton, this.sharePanel),
      button('help-button', '?', () => (this.help.hidden = !this.help.hidden), 'Keyboard shortcuts (?)'),
    );
    const inputs = h(
      'section',
      { class: 'inputs', testid: 'inputs' },
      h('label', { class: 'field' }, this.textLabel, this.text),
      this.pairField,
      this.decoderField,
      this.genField,
      this.textBField,
      h('div', { class: 'input-actions' }, this.pairToggle),
    );
    this.sideB.label.append(this.statusB);
    this.sideB.el.insertBefore(this.errorB, this.sideB.views);
    replaceChildren(root, h('div', { class: 'serve' }, bar, inputs, this.progress, this.error, this.views, this.panel.el, this.help, this.sessionInput));
    this.applyInputs();
    this.decoderField.hidden = true;
    for (const el of [this.text, this.pair, this.decoder, this.textB]) {
      el.addEventListener('input', () => {
        fitHeight(el);
        this.retrace(EDIT_PAUSE_MS);
      });
    }
    requestAnimationFrame(() => [this.text, this.pair, this.decoder, this.textB].forEach(fitHeight));
    this.decoder.addEventListener('input', () => this.showGen());
    this.gen.addEventListener('input', () => this.retrace(EDIT_PAUSE_MS));
    document.addEventListener('click', (e) => {
      // A click outside closes a menu; not the script's own clicks (a download's link).
      if (!e.isTrusted) return;
      const t = e.target as Element;
      for (const panel of [this.menuPanel, this.sharePanel]) if (!panel.hidden && !panel.parentElement!.contains(t)) panel.hidden = true;
    });
    document.addEventListener('keydown', (e) => this.shortcut(e));
    this.sessionInput.addEventListener('change', () => void this.openSession());
    window.addEventListener('popstate', () => {
      this.url = readUrlState(location.search);
      this.applyInputs();
      this.restart();
    });
  }

  async start(): Promise<void> {
    try {
      const r = await fetchModels();
      this.models = r.models;
      this.limits = r.limits;
      this.hubDownloads = r.hubDownloads;
    } catch (e) {
      this.showError(this.sideA, `could not list the models: ${(e as Error).message}`);
      document.body.dataset.ready = 'error';
      return;
    }
    this.url.model ??= this.models[0]?.id ?? 'default';
    if (this.limits) this.text.maxLength = this.pair.maxLength = this.decoder.maxLength = this.textB.maxLength = this.limits.maxTextChars;
    if (this.limits) this.gen.max = String(this.limits.maxNewTokens);
    this.pickerA.show(this.url.model);
    this.pickerB.show(this.url.modelB ?? this.url.model);
    document.body.dataset.ready = 'true';
    this.retrace(0);
  }

  /** Puts the URL state into the inputs and the compare layout. */
  private applyInputs(): void {
    this.text.value = this.url.text ?? DEFAULT_TEXT;
    this.pair.value = this.url.pair ?? '';
    this.decoder.value = this.url.decoder ?? '';
    this.gen.value = this.url.maxNewTokens !== undefined ? String(this.url.maxNewTokens) : '';
    this.showGen();
    this.textB.value = this.url.textB ?? '';
    this.pairField.hidden = this.url.pair === undefined;
    this.pairToggle.textContent = this.pairField.hidden ? '+ sentence B' : '− sentence B';
    if (this.models.length) {
      this.pickerA.show(this.url.model ?? 'default');
      this.pickerB.show(this.url.modelB ?? this.url.model ?? 'default');
    }
    this.layoutCompare();
  }

  private layoutCompare(): void {
    const on = this.url.compare === true;
    this.vs.hidden = !on;
    this.pickerB.el.hidden = !on;
    this.textBField.hidden = !on;
    this.textLabel.textContent = on ? 'text A' : 'text';
    this.compareToggle.setAttribute('aria-pressed', String(on));
    this.compareToggle.classList.toggle('on', on);
    this.views.classList.toggle('compare', on);
    this.sideA.label.hidden = !on;
    this.sideB.label.hidden = !on;
    replaceChildren(this.views, this.sideA.el, on ? this.sideB.el : null);
    this.panel.el.hidden = !on;
    document.body.dataset.mode = on ? 'compare' : 'single';
    if (on) requestAnimationFrame(() => fitHeight(this.textB));
    // The views lay out to their side's width (half the window in compare mode): again when it changes.
    requestAnimationFrame(() => window.dispatchEvent(new Event('resize')));
  }

  /** Compare mode on or off. */
  private setCompare(on: boolean): void {
    if (on === (this.url.compare === true)) return;
    this.url.compare = on;
    if (!on) {
      this.url.modelB = undefined;
      this.url.textB = undefined;
      this.sideB.clear();
      this.panel.clear();
    } else {
      this.pickerB.show(this.url.modelB ?? this.url.model ?? 'default');
    }
    this.layoutCompare();
    this.retrace(0);
  }

  /** Traces again from the URL state, every side's views opened anew on it (popstate, a session). */
  private restart(): void {
    this.sideA.clear();
    this.sideB.clear();
    this.panel.clear();
    this.retrace(0);
  }

  // --- models -------------------------------------------------------------------------------------

  private pick(id: string): void {
    this.url.model = id;
    this.retrace(0);
  }

  private pickB(id: string): void {
    this.url.modelB = id === this.url.model ? undefined : id;
    this.retrace(0);
  }

  async ensureLoaded(side: Side, model: string, signal: AbortSignal): Promise<void> {
    const entry = this.models.find((m) => m.id === model);
    if (entry?.loaded) return;
    this.setStatus(side, `loading ${entry?.label ?? model}…`);
    this.setProgress(side, 0.05);
    await loadModel(model, (p: ProgressFrame) => {
      this.setStatus(side, p.message);
      // The bar follows the download (the trace's own progress starts again from 10 %).
      if (p.fraction !== undefined) this.setProgress(side, Math.max(0.05, p.fraction));
    }, signal);
    if (entry) entry.loaded = true;
    else this.models.push({ id: model, label: model, origin: 'hub', loaded: true });
    (side === this.sideA ? this.pickerA : this.pickerB).show(model);
  }

  // --- inputs -------------------------------------------------------------------------------------

  private togglePair(): void {
    this.pairField.hidden = !this.pairField.hidden;
    this.pairToggle.textContent = this.pairField.hidden ? '+ sentence B' : '− sentence B';
    if (!this.pairField.hidden) {
      fitHeight(this.pair);
      this.pair.focus();
    } else {
      this.pair.value = '';
      this.retrace(0);
    }
  }

  private request(): TraceRequest {
    const req: TraceRequest = { model: this.url.model ?? 'default', text: this.text.value, taps: { qk: true, topK: 5 } };
    if (!this.pairField.hidden && this.pair.value !== '') req.textPair = this.pair.value;
    if (this.encoderDecoder && this.kindModel === req.model) {
      if (this.decoder.value !== '') req.decoderText = this.decoder.value;
      else if (this.genCount() !== undefined) req.maxNewTokens = this.genCount();
    }
    return req;
  }

  /** The generation length typed (clamped to the server's limit); undefined when empty or not a count. */
  private genCount(): number | undefined {
    const n = Number(this.gen.value);
    if (this.gen.value === '' || !Number.isInteger(n) || n < 1) return undefined;
    return Math.min(n, this.limits?.maxNewTokens ?? n);
  }

  /** The generation length is asked for an encoder-decoder model without a decoder text only. */
  private showGen(): void {
    this.genField.hidden = !this.encoderDecoder || this.decoder.value !== '';
  }

  private requestB(): TraceRequest {
    const a = this.request();
    const req: TraceRequest = { ...a, model: this.url.modelB ?? a.model, text: this.textB.value !== '' ? this.textB.value : a.text };
    const kind = this.sideB.last?.header.kind;
    if (req.decoderText !== undefined && kind !== undefined && kind !== 'encoder-decoder') delete req.decoderText;
    if (req.maxNewTokens !== undefined && kind !== undefined && kind !== 'encoder-decoder') delete req.maxNewTokens;
    return req;
  }

  /** Traces the current inputs after `delay` ms (a newer edit restarts the wait and cancels a trace under way). */
  private retrace(delay: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      const req = this.request();
      this.url.text = req.text;
      this.url.pair = this.pairField.hidden ? undefined : this.pair.value;
      // Until the model's kind is known (the first header), the inputs from the URL are kept as they are.
      const known = this.kindModel === req.model;
      this.url.decoder = known ? req.decoderText : this.decoder.value || undefined;
      this.url.maxNewTokens = known ? req.maxNewTokens : this.genCount();
      if (this.url.compare) this.url.textB = this.textB.value !== '' ? this.textB.value : undefined;
      this.syncUrl(true);
      // The bias panel does not re-run by itself (a run takes long): it marks its result stale.
      const biasInputs = JSON.stringify([req.model, req.text]);
      if (biasInputs !== this.biasInputs) {
        if (this.biasInputs !== '') this.bias.inputsChanged();
        this.biasInputs = biasInputs;
      }
      void this.sideA.trace(req);
      if (this.url.compare) void this.sideB.trace(this.requestB());
    }, delay);
  }

  // --- the sides (SideHost) ---------------------------------------------------------------------------

  wanted(side: Side): UrlState {
    if (side === this.sideA) return this.url;
    // B opens where A is.
    const a = this.sideA.mounted?.app;
    if (!a) return this.url;
    const s = a.state;
    return { ...this.url, view: s.view, stack: s.stack, layer: s.layer, head: s.heatmapHead, theme: s.theme, hideSpecial: s.hideSpecial, mergeSubwords: s.mergeSubwords, prettify: s.prettify, heatmapMode: s.heatmapMode };
  }

  hosted(side: Side): HostedViews {
    return this.hostedViews[side.name];
  }

  /** The Bias tab of a side's App: the one bias panel in side A; side B says where it is. */
  private biasView(side: 'a' | 'b'): { el: HTMLElement; update(): void; leave(): void } {
    const el = h('div', { class: 'view bias-host', testid: `bias-host-${side}` });
    if (side === 'b') {
      el.append(h('p', { class: 'readout muted' }, 'The bias panel probes model A (the left side).'));
      return { el, update: () => undefined, leave: () => undefined };
    }
    return {
      el,
      update: () => {
        if (this.bias.el.parentElement !== el) el.append(this.bias.el);
        this.bias.show();
      },
      leave: () => this.bias.hide(),
    };
  }

  onStatus(side: Side, text: string): void {
    this.setStatus(side, text);
  }

  onProgress(side: Side, fraction: number | null): void {
    this.setProgress(side, fraction);
  }

  onError(side: Side, message: string | null): void {
    if (message === null) this.hideError(side);
    else this.showError(side, message);
  }

  onHeader(side: Side, inc: Incoming): void {
    if (side !== this.sideA) return;
    this.encoderDecoder = inc.header.kind === 'encoder-decoder';
    const first = side.request !== null && this.kindModel !== side.request.model;
    if (side.request) this.kindModel = side.request.model;
    this.decoderField.hidden = !this.encoderDecoder;
    this.showGen();
    this.pairToggle.hidden = this.encoderDecoder;
    if (this.encoderDecoder) fitHeight(this.decoder);
    // The first trace of a model could not send the decoder text or generation length (its kind was unknown): again with them.
    if (first && side.request && this.encoderDecoder) {
      const want = this.request();
      if (want.decoderText !== side.request.decoderText || want.maxNewTokens !== side.request.maxNewTokens) this.retrace(0);
    }
  }

  onMounted(side: Side, app: App, _complete: boolean, fromPartial: boolean): void {
    const other = side === this.sideA ? this.sideB : this.sideA;
    const set = app.set.bind(app);
    app.set = (patch: Partial<State>) => {
      set(patch);
      if (!this.syncing) this.propagate(side, patch);
      queueMicrotask(() => this.syncUrl(false));
    };
    // B follows A: a new B (partial or complete) opens where A is; A's new trace keeps its own state.
    void fromPartial;
    if (side === this.sideB && this.sideA.mounted) this.copyNavigation(this.sideA.mounted.app, app);
    else if (side === this.sideA && other.mounted && this.url.compare) this.copyNavigation(app, other.mounted.app);
    this.setLabel(side);
    this.syncUrl(false);
    this.updateCompare();
  }

  onDone(side: Side, incoming: Incoming, ms: number): void {
    const rev = incoming.header.revision;
    if (side === this.sideA) this.revisions.a = rev;
    else this.revisions.b = rev;
    const n = incoming.trace.tokens.length + (incoming.trace.decoderTokens ? incoming.trace.decoderTokens.length : 0);
    const timing = incoming.header.cached ? 'cached' : `run ${incoming.end?.runMs ?? 0} ms${incoming.end?.loadMs ? ` · load ${incoming.end.loadMs} ms` : ''}`;
    const saved = this.sessionRevisions[side.name];
    const changed = saved !== undefined && saved !== rev ? ` · the model changed since the session was saved (${saved.slice(0, 12)} → ${rev.slice(0, 12)})` : '';
    this.setStatus(side, `${n} tokens · ${incoming.header.model.numLayers} layers × ${incoming.header.model.numHeads} heads · first layer ${Math.round(incoming.firstLayerMs ?? ms)} ms · all ${Math.round(ms)} ms · ${timing}${changed}`);
    this.setLabel(side);
    this.updateCompare();
  }

  private setLabel(side: Side): void {
    const name = side.last?.header.model.name ?? side.mounted?.app.trace.model.name ?? '';
    const status = side === this.sideB ? this.statusB : null;
    replaceChildren(side.label, h('b', {}, side === this.sideA ? 'A' : 'B'), ` ${name}`, status ? ' · ' : null, status);
  }

  /** Sends a change of one side's navigation to the other (compare mode). */
  private propagate(from: Side, patch: Partial<State>): void {
    const fromApp = from.mounted?.app;
    if (!fromApp) return;
    const to = from === this.sideA ? this.sideB : this.sideA;
    const toApp = this.url.compare ? to.mounted?.app : undefined;
    if (toApp && SYNCED.some((k) => k in patch)) this.copyNavigation(fromApp, toApp, patch);
    // The compare panel follows A's layer and head.
    const a = this.sideA.mounted?.app;
    if (this.url.compare && a) {
      if ('stack' in patch || 'theme' in patch) this.updateCompare();
      else if ('layer' in patch || 'heatmapHead' in patch) this.panel.show(a.state.layer, a.state.heatmapHead);
    }
  }

  /** `to` takes `from`'s view, stack, layer (at the same relative depth), head and display options. */
  private copyNavigation(from: App, to: App, patch?: Partial<State>): void {
    const s = from.state;
    const keys = patch ? SYNCED.filter((k) => k in patch) : SYNCED;
    const out: Partial<State> = {};
    const toLayers = to.trace.attention[s.stack] ? to.trace.attention[s.stack]!.layers.length : to.numLayers();
    const toHeads = to.trace.attention[s.stack] ? to.trace.attention[s.stack]!.dims[0] : to.numHeads();
    const clampHead = (x: number) => Math.max(0, Math.min(toHeads - 1, x));
    for (const k of keys) {
      switch (k) {
        case 'stack':
          if (to.trace.attention[s.stack]) out.stack = s.stack;
          break;
        case 'layer':
          out.layer = Math.min(toLayers - 1, depthLayer(s.layer, from.numLayers(), toLayers));
          break;
        case 'heads':
          if (s.heads.length === to.state.heads.length) out.heads = s.heads.slice();
          break;
        case 'neuronHead':
          out.neuronHead = clampHead(s.neuronHead);
          break;
        case 'heatmapHead':
          out.heatmapHead = clampHead(s.heatmapHead);
          break;
        case 'modelOpen':
          out.modelOpen = s.modelOpen && s.modelOpen.head < toHeads ? { layer: Math.min(toLayers - 1, depthLayer(s.modelOpen.layer, from.numLayers(), toLayers)), head: s.modelOpen.head } : null;
          break;
        default:
          (out as Record<string, unknown>)[k] = s[k];
      }
    }
    this.syncing = true;
    try {
      to.set(out);
    } finally {
      this.syncing = false;
    }
  }

  /** A ranked pair clicked in the compare panel: both sides move to it. */
  private selectPair(layer: number, head: number | null): void {
    const a = this.sideA.mounted?.app;
    if (!a) return;
    a.set({ layer, ...(head !== null ? selectHead(a.state, head) : {}) });
  }

  private updateCompare(): void {
    if (!this.url.compare) return;
    const a = this.sideA.mounted;
    const b = this.sideB.mounted;
    if (!a?.complete || !b?.complete || !this.sideA.last || !this.sideB.last) return;
    if (this.sideA.el.dataset.trace !== 'done' || this.sideB.el.dataset.trace !== 'done') return;
    const s = a.app.state;
    const stack = b.app.trace.attention[s.stack] ? s.stack : b.app.state.stack;
    const textA = this.sideA.last.page.text ?? '';
    const textB = this.sideB.last.page.text ?? '';
    this.panel.update(
      {
        a: a.app.trace,
        b: b.app.trace,
        nameA: a.app.trace.model.name,
        nameB: b.app.trace.model.name,
        textA,
        ...(textB !== textA ? { textB } : {}),
        stack,
        theme: s.theme,
      },
      s.layer,
      s.heatmapHead,
    );
  }

  // --- URL state ----------------------------------------------------------------------------------

  private syncUrl(push: boolean): void {
    const m = this.sideA.mounted;
    const s = m?.app.state;
    if (s) {
      this.url.view = s.view;
      this.url.stack = s.stack;
      // While layers are still arriving, the layer asked for may not be there yet: keep asking for it.
      if (m.complete || this.url.layer === undefined || s.layer > this.url.layer) this.url.layer = s.layer;
      // (A head preview's one head is the model's head it shows.)
      this.url.head = m.app.headNumber(s.heatmapHead);
      this.url.theme = s.theme;
      this.url.hideSpecial = s.hideSpecial || undefined;
      this.url.mergeSubwords = s.mergeSubwords || undefined;
      this.url.prettify = s.prettify ? undefined : false;
      this.url.heatmapMode = s.heatmapMode === 'head' ? undefined : s.heatmapMode;
    }
    const search = writeUrlState(this.url);
    if (search === location.search) return;
    if (push) history.pushState(null, '', search || location.pathname);
    else history.replaceState(null, '', search || location.pathname);
  }

  // --- export, sessions, share ------------------------------------------------------------------------

  private toggleMenu(panel: HTMLElement): void {
    const open = panel.hidden;
    this.menuPanel.hidden = true;
    this.sharePanel.hidden = true;
    panel.hidden = !open;
  }

  private buildMenu(): void {
    const item = (testid: string, label: string, run: () => void | Promise<void>, title: string) =>
      button(testid, label, () => {
        this.exportStatus.textContent = '';
        void (async () => {
          try {
            await run();
          } catch (e) {
            this.exportStatus.textContent = `export failed: ${(e as Error).message}`;
          }
        })();
      }, title);
    replaceChildren(
      this.menuPanel,
      h('h3', {}, 'The view on screen'),
      h('div', { class: 'menu-row' }, h('label', {}, 'PNG scale ', this.scale), item('export-view-png', 'PNG', () => this.viewExport('png'), 'The view on screen as PNG, at the scale chosen'), item('export-view-svg', 'SVG', () => this.viewExport('svg'), 'The view on screen as SVG')),
      h('h3', {}, 'The current input (side A)'),
      h('div', { class: 'menu-row' }, item('export-html', 'page (HTML)', () => this.serverExport('html'), 'The standalone HTML page of this input, opening on this view (as attnscope view --out)'), item('export-safetensors', 'trace .safetensors', () => this.serverExport('safetensors'), 'The trace file (as attnscope trace --out x.safetensors)'), item('export-json', 'trace JSON', () => this.serverExport('json'), 'The trace file as JSON')),
      h('div', { class: 'menu-row' }, item('export-compare-html', 'comparison page (HTML)', () => this.comparePage(), 'Compare mode: the comparison page of A and B (as attnscope compare --html)')),
      h('h3', {}, 'Tables'),
      h('div', { class: 'menu-row' }, item('export-predictions-csv', 'predictions CSV', () => this.predictions('csv'), 'The predictions beside the tokens as CSV'), item('export-predictions-json', 'predictions JSON', () => this.predictions('json'), 'The predictions as JSON'), h('span', { class: 'muted' }, 'head types, clusters: in their views; compare ranking: in the compare panel')),
      h('div', { class: 'menu-row' }, item('export-analysis-csv', 'analysis CSV', () => this.analysisExport('csv'), 'The analysis tab on screen (saliency, importance, ablation, logit lens, deep dive) as CSV'), item('export-analysis-json', 'analysis JSON', () => this.analysisExport('json'), 'The analysis tab on screen as JSON')),
      h('h3', {}, 'Session'),
      h('div', { class: 'menu-row' }, item('session-save', 'save session', () => this.saveSession(), 'Save the models, texts, view and options to a file'), item('session-open', 'open session…', () => this.sessionInput.click(), 'Reopen a saved session (the texts are traced again)')),
      this.exportStatus,
    );
  }

  /** The view's own SVG/PNG export (web/export.ts), in side A. */
  private viewExport(kind: 'png' | 'svg'): void {
    const app = this.sideA.mounted?.app;
    if (!app) throw new Error('nothing on screen yet');
    const b = this.sideA.views.querySelector<HTMLButtonElement>(`[data-testid=${app.state.view}-export-${kind}]`);
    if (!b) throw new Error(`the ${app.state.view} view has no ${kind.toUpperCase()} export`);
    b.click();
    this.exportStatus.textContent = `${kind.toUpperCase()} of the ${app.state.view} view${kind === 'png' ? ` at ${getPngScale()}×` : ''}`;
  }

  private async serverExport(format: 'html' | 'json' | 'safetensors'): Promise<void> {
    const req = this.request();
    const app = this.sideA.mounted?.app;
    const body: Record<string, unknown> = { model: req.model, text: req.text, format };
    if (req.textPair !== undefined) body.textPair = req.textPair;
    if (req.decoderText !== undefined) body.decoderText = req.decoderText;
    if (format === 'html' && app) {
      if (PAGE_VIEWS.has(app.state.view)) body.view = app.state.view;
      body.theme = app.state.theme;
    }
    this.exportStatus.textContent = `making the ${format === 'html' ? 'page' : 'trace file'}…`;
    await this.downloadFrom('/api/export', body, `attnscope.${format}`);
  }

  /** Compare mode: the comparison page of A's and B's inputs, made by the server as `attnscope compare --html`. */
  private async comparePage(): Promise<void> {
    if (!this.url.compare) throw new Error('the comparison page needs compare mode (the compare button)');
    const side = (r: TraceRequest) => ({ model: r.model, text: r.text, ...(r.textPair !== undefined ? { textPair: r.textPair } : {}), ...(r.decoderText !== undefined ? { decoderText: r.decoderText } : {}) });
    const body = { a: side(this.request()), b: side(this.requestB()), theme: this.sideA.mounted?.app.state.theme ?? 'light' };
    this.exportStatus.textContent = 'making the comparison page…';
    await this.downloadFrom('/api/compare-page', body, 'attnscope-compare.html');
  }

  /** POSTs `body` and downloads the answer under the name the server gives. */
  private async downloadFrom(path: string, body: unknown, fallback: string): Promise<void> {
    const res = await fetch(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    if (!res.ok) {
      let message = `the server answered ${res.status}`;
      try {
        message = ((await res.json()) as { error: string }).error;
      } catch {
        // keep the status
      }
      throw new ApiRefusal(message);
    }
    const name = /filename="([^"]+)"/.exec(res.headers.get('content-disposition') ?? '')?.[1] ?? fallback;
    download(await res.blob(), name);
    this.exportStatus.textContent = `${name} downloaded`;
  }

  private predictions(kind: 'csv' | 'json'): void {
    const app = this.sideA.mounted?.app;
    if (!app?.trace.predictions?.length) throw new Error('this trace has no predictions (a masked LM predicts at mask tokens only)');
    const rows = predictionRows(app.trace);
    const base = `attnscope-${app.trace.model.name}-predictions`.replace(/[^A-Za-z0-9._-]+/g, '_');
    if (kind === 'json') download(new Blob([`${JSON.stringify(rows, null, 1)}\n`], { type: 'application/json' }), `${base}.json`);
    else {
      const cols = ['position', 'token', 'rank', 'candidate', 'probability'] as const;
      const cell = (v: string | number) => (typeof v === 'number' ? String(v) : /[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
      download(new Blob([`${[cols.join(','), ...rows.map((r) => cols.map((c) => cell(r[c])).join(','))].join('\n')}\n`], { type: 'text/csv' }), `${base}.csv`);
    }
  }

  /** The analysis tab on screen (side A) as a table. */
  private analysisExport(kind: 'csv' | 'json'): void {
    const app = this.sideA.mounted?.app;
    const req = this.sideA.request;
    const view = app?.state.view;
    if (!app || !req || !view || !isAnalysisTab(view)) throw new Error('open an analysis tab first (saliency, head importance, ablation, logit lens, deep dive)');
    const result = this.analysis.resultFor(view, req, app);
    if (!result) throw new Error(`the ${view} analysis is not computed yet`);
    const table = analysisTable(result);
    const base = `attnscope-${result.modelName}-${view}`.replace(/[^A-Za-z0-9._-]+/g, '_');
    if (kind === 'json') download(new Blob([tableJson(table)], { type: 'application/json' }), `${base}.json`);
    else download(new Blob([tableCsv(table)], { type: 'text/csv' }), `${base}.csv`);
    this.exportStatus.textContent = `${base}.${kind} downloaded`;
  }

  private saveSession(): void {
    this.syncUrl(false);
    const file = sessionFile(this.url, this.revisions);
    const stamp = file.saved.replace(/[:.]/g, '-').slice(0, 19);
    download(new Blob([`${JSON.stringify(file, null, 1)}\n`], { type: 'application/json' }), `attnscope-session-${stamp}.json`);
    this.exportStatus.textContent = 'session saved';
  }

  private async openSession(): Promise<void> {
    const f = this.sessionInput.files?.[0];
    this.sessionInput.value = '';
    if (!f) return;
    try {
      if (f.size > 1_000_000) throw new Error(`${f.size} bytes; a session file is at most 1 MB`);
      const session = parseSession(await f.text());
      this.url = session.state;
      this.applyInputs();
      history.pushState(null, '', writeUrlState(this.url) || location.pathname);
      this.menuPanel.hidden = true;
      this.restart();
      this.sessionRevisions = session.revisions ?? {};
      this.exportStatus.textContent = `session of ${session.saved || 'an unknown date'} opened`;
    } catch (e) {
      this.exportStatus.textContent = `could not open ${f.name.slice(0, 80)}: ${(e as Error).message}`;
      this.menuPanel.hidden = false;
    }
  }

  private share(): void {
    this.syncUrl(false);
    this.shareUrl.value = location.href;
    this.toggleMenu(this.sharePanel);
    if (this.sharePanel.hidden) return;
    this.shareUrl.select();
    const status = this.sharePanel.querySelector<HTMLElement>('[data-testid=share-status]')!;
    status.textContent = '';
    navigator.clipboard?.writeText(location.href).then(
      () => (status.textContent = ' copied to the clipboard'),
      () => (status.textContent = ' select and copy it'),
    );
  }

  // --- keyboard -----------------------------------------------------------------------------------

  private shortcut(e: KeyboardEvent): void {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const target = e.target as HTMLElement | null;
    const typing = target && /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName);
    if (e.key === 'Escape') {
      this.help.hidden = true;
      this.menuPanel.hidden = true;
      this.sharePanel.hidden = true;
      if (this.pickerA.isOpen) this.pickerA.open(false);
      if (this.pickerB.isOpen) this.pickerB.open(false);
      if (typing) target.blur();
      return;
    }
    if (typing) return;
    const app = this.sideA.mounted?.app;
    const views = VIEWS.map((v) => v.name);
    if (e.key === '?') this.help.hidden = !this.help.hidden;
    else if (e.key === '/') this.pickerA.open(true);
    else if (e.key === 'e') this.text.focus();
    else if (e.key === 'c') this.setCompare(!this.url.compare);
    else if (!app) return;
    else if (e.key === '[' || e.key === ']') {
      const n = app.numLayers();
      app.set({ layer: (app.state.layer + (e.key === ']' ? 1 : n - 1)) % n });
    } else if (e.key === ',' || e.key === '.') {
      const n = app.numHeads();
      const head = (app.state.heatmapHead + (e.key === '.' ? 1 : n - 1)) % n;
      app.set(selectHead(app.state, head));
    } else if (/^[0-9]$/.test(e.key)) {
      const i = e.key === '0' ? 9 : Number(e.key) - 1;
      const view = views[i];
      if (view) app.set({ view });
    } else return;
    e.preventDefault();
  }

  // --- status ---------------------------------------------------------------------------------------

  private setStatus(side: Side, text: string): void {
    const el = side === this.sideA ? this.status : this.statusB;
    el.textContent = text;
    el.title = text;
  }

  private setProgress(side: Side, fraction: number | null): void {
    if (side !== this.sideA) return;
    this.progress.classList.toggle('active', fraction !== null);
    (this.progress.firstElementChild as HTMLElement).style.width = `${Math.round((fraction ?? 0) * 100)}%`;
  }

  private showError(side: Side, message: string): void {
    const el = side === this.sideA ? this.error : this.errorB;
    el.textContent = side === this.sideA ? message : `B: ${message}`;
    el.hidden = false;
  }

  private hideError(side: Side): void {
    (side === this.sideA ? this.error : this.errorB).hidden = true;
  }
}

/** Grows a text box with its text (up to about eight lines; then it scrolls). */
function fitHeight(el: HTMLTextAreaElement): void {
  if (el.offsetParent === null) return;
  el.style.height = 'auto';
  el.style.height = `${Math.min(el.scrollHeight + 2, 180)}px`;
}

// The same script runs as the attention-flow worker (web/flow-worker.ts): there is no document there.
if (typeof document === 'undefined') runFlowWorker();
else {
  rememberScript();
  // The long views' threads (long-worker.ts) start with the page, beside its first requests, not
  // with the first trace request: a new page's first view then does not wait for, nor share the
  // cores with, their script's compile and warm-up while the server computes it.
  prestartLongWorker();
  const mount = document.getElementById('attnscope-serve');
  if (mount) void new ServeApp(mount).start();
}
