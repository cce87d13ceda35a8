/**
 * The web app of `attnscope serve`: text inputs and a model picker above the same views the
 * standalone page shows (web/app.ts and web/views, one implementation), fed by a trace streamed
 * from the server layer by layer. Edits re-trace after a short pause; the URL holds the state
 * (model, texts, view, stack, layer, head) so that a link reopens what was on screen.
 */
import type { Trace } from '../../src/core/trace.js';
import type { PayloadHeader } from '../../src/views/html/payload.js';
import type { ModelEntry, ModelsResponse, ProgressFrame, TraceRequest } from '../../src/server/protocol.js';
import { App } from '../app.js';
import { VIEWS, type State, type ViewName } from '../context.js';
import { button, h, replaceChildren } from '../dom.js';
import { ApiRefusal, fetchModels, loadModel, partialTrace, streamTrace, type Incoming } from './stream.js';
import { readUrlState, writeUrlState, type UrlState } from './url-state.js';
import { rememberScript, runFlowWorker } from '../flow-worker.js';

/** Pause after the last keystroke before tracing again. */
const EDIT_PAUSE_MS = 350;
/**
 * Layers streamed after the run usually all arrive within a few tens of milliseconds, and each
 * mount of the views costs about as much: the views wait this long after the first layer for the
 * rest before drawing what has come, then redraw a partial trace at most every PARTIAL_MOUNT_MS.
 */
const PARTIAL_DELAY_MS = 150;
const PARTIAL_MOUNT_MS = 1000;

const DEFAULT_TEXT = 'Once upon a time, there was a little girl who loved to play in the park.';

/**
 * Runs `make` with every listener it adds to document and window tied to one AbortSignal, so an
 * App replaced by the next trace leaves no listener (and no trace) behind.
 */
function scopedListeners<T>(make: () => T): { value: T; dispose(): void } {
  const controller = new AbortController();
  const targets: EventTarget[] = [document, window];
  const originals = targets.map((t) => t.addEventListener);
  targets.forEach((t, i) => {
    const original = originals[i]!;
    t.addEventListener = function (this: EventTarget, type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions) {
      const opts: AddEventListenerOptions = typeof options === 'boolean' ? { capture: options } : { ...options };
      opts.signal = controller.signal;
      original.call(this, type, listener, opts);
    };
  });
  try {
    return { value: make(), dispose: () => controller.abort() };
  } finally {
    targets.forEach((t, i) => {
      t.addEventListener = originals[i]!;
    });
  }
}

interface Mounted {
  app: App;
  dispose(): void;
  /** Whether the trace it shows is complete (attention of every layer). */
  complete: boolean;
  /** The trace request it shows. */
  key: string;
}

class ServeApp {
  private models: ModelEntry[] = [];
  private limits: ModelsResponse['limits'] | null = null;
  private hubDownloads = true;
  private url: UrlState;
  private mounted: Mounted | null = null;
  private controller: AbortController | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private lastPartialMount = 0;
  private encoderDecoder = false;
  private traceSeq = 0;

  private readonly modelButton = h('button', { type: 'button', class: 'picker-button', testid: 'model-button', 'aria-haspopup': 'listbox', title: 'Pick a model (/)' });
  private readonly search = h('input', { type: 'search', class: 'picker-search', testid: 'model-search', placeholder: 'Search models, or type a Hub id (org/name) and press Enter', 'aria-label': 'search models', autocomplete: 'off', spellcheck: false });
  private readonly list = h('ul', { class: 'picker-list', testid: 'model-list', role: 'listbox' });
  private readonly pickerHint = h('p', { class: 'picker-hint muted', testid: 'picker-hint' });
  private readonly panel = h('div', { class: 'picker-panel', testid: 'model-panel', hidden: true }, this.search, this.list, this.pickerHint);
  private readonly text = h('textarea', { class: 'text-input', testid: 'text-input', rows: 1, spellcheck: false, 'aria-label': 'text', placeholder: 'Type or paste a text' });
  private readonly pair = h('textarea', { class: 'text-input', testid: 'pair-input', rows: 1, spellcheck: false, 'aria-label': 'second text (sentence B)', placeholder: 'Sentence B (optional)' });
  private readonly decoder = h('textarea', { class: 'text-input', testid: 'decoder-input', rows: 1, spellcheck: false, 'aria-label': 'decoder text', placeholder: 'Decoder text (empty: the model generates)' });
  private readonly pairField = h('label', { class: 'field', testid: 'pair-field' }, h('span', { class: 'field-label' }, 'B'), this.pair);
  private readonly decoderField = h('label', { class: 'field', testid: 'decoder-field' }, h('span', { class: 'field-label' }, 'decoder'), this.decoder);
  private readonly pairToggle = button('pair-toggle', '+ sentence B', () => this.togglePair(), 'Add a second sentence (sentence pairs)');
  private readonly status = h('span', { class: 'status', testid: 'status', role: 'status' });
  private readonly error = h('p', { class: 'trace-error', testid: 'trace-error', hidden: true });
  private readonly progress = h('div', { class: 'progress', testid: 'progress' }, h('div', { class: 'progress-fill' }));
  private readonly views = h('div', { class: 'serve-views', testid: 'views' });
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
          ['Esc', 'close, unpin'],
          ['?', 'this help'],
        ] as const
      ).flatMap(([k, d]) => [h('dt', {}, h('kbd', {}, k)), h('dd', {}, d)]),
    ),
  );

  constructor(private readonly root: HTMLElement) {
    this.url = readUrlState(location.search);
    const bar = h(
      'header',
      { class: 'serve-bar' },
      h('span', { class: 'brand' }, 'attnscope'),
      h('div', { class: 'picker' }, this.modelButton, this.panel),
      this.status,
      h('span', { class: 'spacer' }),
      button('help-button', '?', () => (this.help.hidden = !this.help.hidden), 'Keyboard shortcuts (?)'),
    );
    const inputs = h(
      'section',
      { class: 'inputs', testid: 'inputs' },
      h('label', { class: 'field' }, h('span', { class: 'field-label' }, 'text'), this.text),
      this.pairField,
      this.decoderField,
      h('div', { class: 'input-actions' }, this.pairToggle),
    );
    replaceChildren(root, h('div', { class: 'serve' }, bar, inputs, this.progress, this.error, this.views, this.help));
    this.text.value = this.url.text ?? DEFAULT_TEXT;
    this.pair.value = this.url.pair ?? '';
    this.decoder.value = this.url.decoder ?? '';
    this.pairField.hidden = this.url.pair === undefined;
    this.decoderField.hidden = true;
    for (const el of [this.text, this.pair, this.decoder]) {
      el.addEventListener('input', () => {
        fitHeight(el);
        this.edited();
      });
    }
    requestAnimationFrame(() => [this.text, this.pair, this.decoder].forEach(fitHeight));
    this.modelButton.addEventListener('click', () => this.openPicker(this.panel.hidden));
    this.search.addEventListener('input', () => this.renderList());
    this.search.addEventListener('keydown', (e) => this.searchKey(e));
    this.list.addEventListener('keydown', (e) => this.listKey(e));
    document.addEventListener('click', (e) => {
      if (!this.panel.hidden && !(e.target as Element).closest('.picker')) this.openPicker(false);
    });
    document.addEventListener('keydown', (e) => this.shortcut(e));
    window.addEventListener('popstate', () => {
      this.url = readUrlState(location.search);
      this.text.value = this.url.text ?? DEFAULT_TEXT;
      this.pair.value = this.url.pair ?? '';
      this.decoder.value = this.url.decoder ?? '';
      this.pairField.hidden = this.url.pair === undefined;
      this.retrace(0);
    });
  }

  async start(): Promise<void> {
    try {
      const r = await fetchModels();
      this.models = r.models;
      this.limits = r.limits;
      this.hubDownloads = r.hubDownloads;
    } catch (e) {
      this.showError(`could not list the models: ${(e as Error).message}`);
      document.body.dataset.ready = 'error';
      return;
    }
    this.url.model ??= this.models[0]?.id ?? 'default';
    if (this.limits) this.text.maxLength = this.pair.maxLength = this.decoder.maxLength = this.limits.maxTextChars;
    this.renderModelButton();
    this.renderList();
    document.body.dataset.ready = 'true';
    this.retrace(0);
  }

  // --- the model picker ---------------------------------------------------------------------------

  private renderModelButton(): void {
    const id = this.url.model ?? '';
    const entry = this.models.find((m) => m.id === id);
    replaceChildren(this.modelButton, h('span', { class: 'picker-model', testid: 'model-current' }, entry?.label ?? id), h('span', { class: 'caret' }, '▾'));
    this.modelButton.title = `${id} · pick a model (/)`;
  }

  private openPicker(open: boolean): void {
    this.panel.hidden = !open;
    this.modelButton.setAttribute('aria-expanded', String(open));
    if (open) {
      this.search.value = '';
      this.renderList();
      this.search.focus();
    }
  }

  private filtered(): ModelEntry[] {
    const words = this.search.value.toLowerCase().split(/\s+/).filter(Boolean);
    return this.models.filter((m) => {
      const hay = `${m.label} ${m.id} ${m.modelType ?? ''} ${m.origin}`.toLowerCase();
      return words.every((w) => hay.includes(w));
    });
  }

  private renderList(): void {
    const shown = this.filtered();
    const origin: Record<ModelEntry['origin'], string> = { default: 'embedded', folder: 'folder', 'hf-cache': 'HF cache', hub: 'Hub' };
    replaceChildren(
      this.list,
      ...shown.slice(0, 200).map((m) => {
        const b = h(
          'button',
          { type: 'button', class: `picker-item${m.id === this.url.model ? ' current' : ''}`, testid: 'model-item', 'data-id': m.id, role: 'option', 'aria-selected': m.id === this.url.model ? 'true' : 'false', title: m.id },
          h('span', { class: 'picker-label' }, m.label),
          h('span', { class: 'picker-tags' }, m.modelType ? h('span', { class: 'tag' }, m.modelType) : null, h('span', { class: 'tag muted' }, origin[m.origin]), m.loaded ? h('span', { class: 'tag loaded', title: 'in memory' }, '●') : null),
        );
        b.addEventListener('click', () => this.pick(m.id));
        return h('li', {}, b);
      }),
    );
    const q = this.search.value.trim();
    this.pickerHint.textContent =
      shown.length === 0 && q
        ? this.hubDownloads
          ? `No model matches. Enter loads “${q}” from the Hugging Face Hub (downloaded once into its cache).`
          : `No model matches, and the server is offline (HF_HUB_OFFLINE): only cached Hub models can be used.`
        : `${shown.length} of ${this.models.length} models · ↑↓ Enter to pick · a Hub id (org/name) + Enter downloads it`;
  }

  private searchKey(e: KeyboardEvent): void {
    const items = [...this.list.querySelectorAll<HTMLButtonElement>('.picker-item')];
    const at = items.indexOf(document.activeElement as HTMLButtonElement);
    if (e.key === 'ArrowDown' && items.length) {
      e.preventDefault();
      items[Math.min(items.length - 1, at + 1)]!.focus();
    } else if (e.key === 'Enter') {
      e.preventDefault();
      const q = this.search.value.trim();
      const first = this.filtered()[0];
      if (first) this.pick(first.id);
      else if (q) this.pick(q);
    } else if (e.key === 'Escape') {
      this.openPicker(false);
      this.modelButton.focus();
    }
  }

  /** ↑ ↓ move through the list (↑ from the first item goes back to the search), Esc closes it. */
  private listKey(e: KeyboardEvent): void {
    const items = [...this.list.querySelectorAll<HTMLButtonElement>('.picker-item')];
    const at = items.indexOf(document.activeElement as HTMLButtonElement);
    if (e.key === 'ArrowDown') items[Math.min(items.length - 1, at + 1)]?.focus();
    else if (e.key === 'ArrowUp') (at <= 0 ? this.search : items[at - 1]!).focus();
    else if (e.key === 'Escape') {
      this.openPicker(false);
      this.modelButton.focus();
    } else return;
    e.preventDefault();
    e.stopPropagation();
  }

  private pick(id: string): void {
    this.openPicker(false);
    if (id === this.url.model) return;
    this.url.model = id;
    this.renderModelButton();
    this.retrace(0);
  }

  // --- inputs -------------------------------------------------------------------------------------

  private togglePair(): void {
    this.pairField.hidden = !this.pairField.hidden;
    this.pairToggle.textContent = this.pairField.hidden ? '+ sentence B' : '− sentence B';
    if (!this.pairField.hidden) {
      fitHeight(this.pair);
      this.pair.focus();
    }
    else {
      this.pair.value = '';
      this.retrace(0);
    }
  }

  private edited(): void {
    this.retrace(EDIT_PAUSE_MS);
  }

  private request(): TraceRequest {
    const req: TraceRequest = { model: this.url.model ?? 'default', text: this.text.value, taps: { qk: true, topK: 5 } };
    if (!this.pairField.hidden && this.pair.value !== '') req.textPair = this.pair.value;
    if (this.encoderDecoder && this.decoder.value !== '') req.decoderText = this.decoder.value;
    return req;
  }

  /** Traces the current inputs after `delay` ms (a newer edit restarts the wait and cancels a trace under way). */
  private retrace(delay: number): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.trace();
    }, delay);
  }

  private async trace(): Promise<void> {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    const seq = ++this.traceSeq;
    const req = this.request();
    const key = JSON.stringify(req);
    this.url.text = req.text;
    this.url.pair = this.pairField.hidden ? undefined : this.pair.value;
    this.url.decoder = req.decoderText;
    this.syncUrl(true);
    this.hideError();
    document.body.dataset.trace = 'loading';
    const t0 = performance.now();
    this.traceStart = t0;
    try {
      const entry = this.models.find((m) => m.id === req.model);
      if (!entry?.loaded) {
        this.setStatus(`loading ${entry?.label ?? req.model}…`);
        this.setProgress(0.05);
        await loadModel(req.model, (p) => this.loadProgress(p), controller.signal);
        if (entry) entry.loaded = true;
        else this.models.push({ id: req.model, label: req.model, origin: 'hub', loaded: true });
        this.renderModelButton();
      }
      this.setStatus('tracing…');
      this.setProgress(0.1);
      document.body.dataset.trace = 'streaming';
      const incoming = await streamTrace(
        req,
        {
          onHeader: (inc) => {
            this.encoderDecoder = inc.header.kind === 'encoder-decoder';
            this.decoderField.hidden = !this.encoderDecoder;
            this.pairToggle.hidden = this.encoderDecoder;
            if (this.encoderDecoder) fitHeight(this.decoder);
          },
          onLayer: (inc) => this.layerArrived(inc, key, seq),
        },
        controller.signal,
      );
      if (seq !== this.traceSeq) return;
      this.layerArrived(incoming, key, seq);
      this.paint();
      const ms = performance.now() - t0;
      const n = incoming.trace.tokens.length + (incoming.trace.decoderTokens ? incoming.trace.decoderTokens.length : 0);
      const timing = incoming.header.cached ? 'cached' : `run ${incoming.end?.runMs ?? 0} ms${incoming.end?.loadMs ? ` · load ${incoming.end.loadMs} ms` : ''}`;
      this.setStatus(`${n} tokens · ${incoming.header.model.numLayers} layers × ${incoming.header.model.numHeads} heads · first layer ${Math.round(incoming.firstLayerMs ?? ms)} ms · all ${Math.round(ms)} ms · ${timing}`);
      this.setProgress(null);
      document.body.dataset.trace = 'done';
      document.body.dataset.firstLayerMs = String(Math.round(incoming.firstLayerMs ?? ms));
      document.body.dataset.traceMs = String(Math.round(ms));
      document.body.dataset.traced = key;
    } catch (e) {
      if (controller.signal.aborted || seq !== this.traceSeq) return;
      this.setProgress(null);
      this.setStatus('');
      this.showError(e instanceof ApiRefusal ? e.message : `the trace failed: ${(e as Error).message}`);
      document.body.dataset.trace = 'error';
    }
  }

  private loadProgress(p: ProgressFrame): void {
    this.setStatus(p.message);
    if (p.fraction !== undefined) this.setProgress(0.05 + 0.05 * p.fraction);
  }

  /**
   * Records a layer's arrival and plans the next mount of the views: at once (next frame) when
   * every attention layer is in; else PARTIAL_DELAY_MS after the first layer (the first layer
   * drawn while the others still come), then at most every PARTIAL_MOUNT_MS.
   */
  private layerArrived(incoming: Incoming, key: string, seq: number): void {
    if (seq !== this.traceSeq) return;
    const now = performance.now();
    if (this.arrived?.seq !== seq) this.firstArrival = now;
    this.arrived = { incoming, key, seq };
    const at = incoming.attentionDone ? now : this.mounted?.key !== key ? this.firstArrival + PARTIAL_DELAY_MS : this.lastPartialMount + PARTIAL_MOUNT_MS;
    this.schedulePaint(at);
  }

  private arrived: { incoming: Incoming; key: string; seq: number } | null = null;
  private firstArrival = 0;
  private paintTimer: ReturnType<typeof setTimeout> | null = null;
  private paintAt = Infinity;
  private frame: number | null = null;
  private traceStart = 0;

  /** A paint at time `at` (performance.now) or earlier. */
  private schedulePaint(at: number): void {
    if (at >= this.paintAt || this.frame !== null) return;
    if (this.paintTimer !== null) clearTimeout(this.paintTimer);
    this.paintAt = at;
    this.paintTimer = setTimeout(() => {
      this.paintTimer = null;
      this.paintAt = Infinity;
      this.frame ??= requestAnimationFrame(() => this.paint());
    }, Math.max(0, at - performance.now()));
  }

  /** Mounts what has arrived (see layerArrived); called at an animation frame, or directly when the stream ends. */
  private paint(): void {
    if (this.frame !== null) cancelAnimationFrame(this.frame);
    this.frame = null;
    if (this.paintTimer !== null) clearTimeout(this.paintTimer);
    this.paintTimer = null;
    this.paintAt = Infinity;
    const a = this.arrived;
    if (!a || a.seq !== this.traceSeq) return;
    const { incoming, key } = a;
    const total = incoming.header.tensors.filter((t) => t.kind === 'attention').reduce((n, t) => n + t.layers, 0);
    const got = Object.values(incoming.received).reduce((n, v) => n + (v ?? 0), 0);
    this.setProgress(incoming.attentionDone ? null : 0.1 + 0.9 * (got / Math.max(1, total)));
    if (this.mounted?.key === key && this.mounted.complete) {
      if (incoming.done) this.resolveQk?.();
      return;
    }
    const firstOnScreen = this.mounted?.key !== key;
    if (incoming.attentionDone) {
      let resolve!: () => void;
      const qkReady = new Promise<void>((r) => (resolve = r));
      this.resolveQk = () => {
        document.body.dataset.qkReady = 'true';
        resolve();
      };
      this.mount(incoming.trace, incoming.page, qkReady, key, true);
      if (incoming.done) this.resolveQk();
    } else {
      const now = performance.now();
      const wait = this.mounted?.key !== key ? this.firstArrival + PARTIAL_DELAY_MS : this.lastPartialMount + PARTIAL_MOUNT_MS;
      if (now < wait) {
        this.schedulePaint(wait);
        return;
      }
      const partial = partialTrace(incoming);
      if (!partial) return;
      this.lastPartialMount = now;
      this.mount(partial, incoming.page, new Promise<void>(() => undefined), key, false);
      this.setStatus(`tracing… ${got} of ${total} layers on screen`);
    }
    // From the request to the first layer drawn.
    if (firstOnScreen) document.body.dataset.firstPaintMs = String(Math.round(performance.now() - this.traceStart));
  }

  private resolveQk: (() => void) | null = null;

  /** Shows a trace with the standalone page's App, keeping what the user had chosen. */
  private mount(trace: Trace, page: PayloadHeader, qkReady: Promise<void>, key: string, complete: boolean): void {
    const before = this.mounted?.app.state;
    // A partial trace had fewer layers: what the URL asked for (e.g. layer 4) applies to the next mount.
    const fromPartial = this.mounted !== null && !this.mounted.complete;
    const wanted = this.url;
    document.body.dataset.qkReady = 'false';
    const view: ViewName | undefined = before?.view ?? (VIEWS.some((v) => v.name === wanted.view) ? (wanted.view as ViewName) : undefined);
    const header: PayloadHeader = view ? { ...page, view } : page;
    this.mounted?.dispose();
    const host = h('div', { class: 'serve-app' });
    const { value: app, dispose } = scopedListeners(() => new App(trace, header, qkReady, host));
    replaceChildren(this.views, host);
    this.mounted = { app, dispose, complete, key };
    app.set(carryState(app, before, wanted, fromPartial));
    const set = app.set.bind(app);
    app.set = (patch: Partial<State>) => {
      set(patch);
      queueMicrotask(() => this.syncUrl(false));
    };
    this.syncUrl(false);
  }

  // --- URL state ----------------------------------------------------------------------------------

  private syncUrl(push: boolean): void {
    const s = this.mounted?.app.state;
    if (s) {
      this.url.view = s.view;
      this.url.stack = s.stack;
      // While layers are still arriving, the layer asked for may not be there yet: keep asking for it.
      if (this.mounted!.complete || this.url.layer === undefined || s.layer > this.url.layer) this.url.layer = s.layer;
      this.url.head = s.heatmapHead;
    }
    const search = writeUrlState(this.url);
    if (search === location.search) return;
    if (push) history.pushState(null, '', search || location.pathname);
    else history.replaceState(null, '', search || location.pathname);
  }

  // --- keyboard -----------------------------------------------------------------------------------

  private shortcut(e: KeyboardEvent): void {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const target = e.target as HTMLElement | null;
    const typing = target && /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName);
    if (e.key === 'Escape') {
      this.help.hidden = true;
      if (!this.panel.hidden) this.openPicker(false);
      if (typing) target.blur();
      return;
    }
    if (typing) return;
    const app = this.mounted?.app;
    const views = VIEWS.map((v) => v.name);
    if (e.key === '?') this.help.hidden = !this.help.hidden;
    else if (e.key === '/') this.openPicker(true);
    else if (e.key === 'e') this.text.focus();
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

  private setStatus(text: string): void {
    this.status.textContent = text;
    this.status.title = text;
  }

  private setProgress(fraction: number | null): void {
    this.progress.classList.toggle('active', fraction !== null);
    (this.progress.firstElementChild as HTMLElement).style.width = `${Math.round((fraction ?? 0) * 100)}%`;
  }

  private showError(message: string): void {
    this.error.textContent = message;
    this.error.hidden = false;
  }

  private hideError(): void {
    this.error.hidden = true;
  }
}

/** Grows a text box with its text (up to about eight lines; then it scrolls). */
function fitHeight(el: HTMLTextAreaElement): void {
  if (el.offsetParent === null) return;
  el.style.height = 'auto';
  el.style.height = `${Math.min(el.scrollHeight + 2, 180)}px`;
}

/** What a head selection sets in every view: the heatmap's and neuron view's head, the head view's only head, the open model-view cell. */
function selectHead(state: State, head: number): Partial<State> {
  const patch: Partial<State> = { heatmapHead: head, neuronHead: head, heads: state.heads.map((_, i) => i === head) };
  if (state.modelOpen) patch.modelOpen = { layer: state.modelOpen.layer, head };
  return patch;
}

/** The state a new App takes over from the one it replaces (or from the URL on the first trace). */
function carryState(app: App, before: State | undefined, url: UrlState, fromPartial: boolean): Partial<State> {
  const layers = app.numLayers();
  const heads = app.numHeads();
  const s = app.state;
  const clampLayer = (l: number) => Math.max(0, Math.min(layers - 1, l));
  const clampHead = (x: number) => Math.max(0, Math.min(heads - 1, x));
  if (!before) {
    const patch: Partial<State> = {};
    if (url.stack && app.trace.attention[url.stack]) patch.stack = url.stack;
    if (url.layer !== undefined) patch.layer = clampLayer(url.layer);
    if (url.head !== undefined) Object.assign(patch, selectHead(s, clampHead(url.head)));
    return patch;
  }
  const sameHeads = before.heads.length === heads;
  const patch: Partial<State> = {
    theme: before.theme,
    hideSpecial: before.hideSpecial,
    mergeSubwords: before.mergeSubwords,
    prettify: before.prettify,
    layer: clampLayer(fromPartial && url.layer !== undefined ? url.layer : before.layer),
    pair: before.pair,
    neuronHead: clampHead(before.neuronHead),
    heatmapMode: before.heatmapMode,
    heatmapHead: clampHead(before.heatmapHead),
    heatmapLog: before.heatmapLog,
    modelNormalize: before.modelNormalize,
    modelLog: before.modelLog,
    modelLayers: Array.from({ length: layers }, (_, l) => before.modelLayers[l] ?? true),
  };
  if (app.trace.attention[before.stack]) patch.stack = before.stack;
  if (sameHeads) {
    patch.heads = before.heads.slice();
    patch.modelHeads = before.modelHeads.slice();
  }
  if (before.modelOpen && before.modelOpen.layer < layers && before.modelOpen.head < heads) patch.modelOpen = before.modelOpen;
  return patch;
}

// The same script runs as the attention-flow worker (web/flow-worker.ts): there is no document there.
if (typeof document === 'undefined') runFlowWorker();
else {
  rememberScript();
  const mount = document.getElementById('attnscope-serve');
  if (mount) void new ServeApp(mount).start();
}
