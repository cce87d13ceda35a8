/**
 * One side of the app: a trace streamed from the server into the standalone page's App (web/app.ts,
 * the same views), drawn as layers arrive. The app has side A, and side B in compare mode.
 */
import type { Trace } from '../../src/core/trace.js';
import type { TraceRequest } from '../../src/server/protocol.js';
import type { PayloadHeader } from '../../src/views/html/payload.js';
import { App, type HostedViews } from '../app.js';
import { VIEWS, type State, type ViewName } from '../context.js';
import { h, replaceChildren } from '../dom.js';
import { prestartLongWorker } from '../long-worker.js';
import { clearPageMarks } from '../long-worker-marks.js';
import { OVERVIEW_DRAWN_EVENT } from '../views/heatmap-tiles.js';
import { ApiRefusal, layersIn, onDemand, partialTrace, previewTrace, streamTrace, traceDrawn, type Incoming } from './stream.js';
import type { UrlState } from './url-state.js';

/**
 * Layers streamed after the run usually all arrive within a few tens of milliseconds, and each
 * mount of the views costs about as much: the views wait this long after the first layer for the
 * rest before drawing what has come, then redraw a partial trace at most every PARTIAL_MOUNT_MS.
 * Layers streamed as the run computes them (per-layer streaming) come a segment's run apart: the
 * first is drawn at once. A redraw on a longer partial trace keeps what the views computed for
 * the layer shown (the heatmap's tiles, the long views' worker: web/views/heatmap.ts, web/long-worker.ts).
 */
const PARTIAL_DELAY_MS = 150;
const PARTIAL_MOUNT_MS = 1000;

/** How long after the first layer the views wait for more before drawing it. */
function partialDelay(incoming: Incoming): number {
  return incoming.header.streaming === 'per-layer' ? 0 : PARTIAL_DELAY_MS;
}

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

export interface Mounted {
  app: App;
  dispose(): void;
  /** Whether the trace it shows is complete (attention of every layer). */
  complete: boolean;
  /** The trace request it shows. */
  key: string;
  /**
   * A head preview on screen (the shown head of layer 0 before the rest of the layer): what the
   * mount after it takes over, as if the preview had not been mounted.
   */
  preview?: { before: State | undefined; fromPartial: boolean; wanted: UrlState };
}

/** What a side tells the app around it. */
export interface SideHost {
  /** Loads the request's model when it is not loaded yet (progress shown by the host). */
  ensureLoaded(side: Side, model: string, signal: AbortSignal): Promise<void>;
  /** The state the next mount opens on when there is no App to carry it over from. */
  wanted(side: Side): UrlState;
  onStatus(side: Side, text: string): void;
  onProgress(side: Side, fraction: number | null): void;
  onError(side: Side, message: string | null): void;
  onHeader(side: Side, incoming: Incoming): void;
  /** A new App is on screen (complete: every attention layer). */
  onMounted(side: Side, app: App, complete: boolean, fromPartial: boolean): void;
  /** The trace is complete: every tensor in. */
  onDone(side: Side, incoming: Incoming, ms: number): void;
  /** Views the host adds to the page's tabs (the analysis views, the bias panel). */
  hosted(side: Side): HostedViews | undefined;
}

export class Side {
  readonly el: HTMLElement;
  readonly views = h('div', { class: 'serve-views-host' });
  readonly label = h('div', { class: 'side-label' });
  mounted: Mounted | null = null;
  /** The trace request of what is (or is being put) on screen. */
  request: TraceRequest | null = null;
  /** The last complete trace received, with its header. */
  last: Incoming | null = null;
  private controller: AbortController | null = null;
  private seq = 0;
  private lastPartialMount = 0;
  private arrived: { incoming: Incoming; key: string; seq: number } | null = null;
  private firstArrival = 0;
  private paintTimer: ReturnType<typeof setTimeout> | null = null;
  private paintAt = Infinity;
  private frame: number | null = null;
  private traceStart = 0;
  private resolveQk: (() => void) | null = null;
  /** The trace (seq) whose first view the server was told of, or is to be told of when drawn (tellDrawn). */
  private told = 0;

  constructor(
    readonly name: 'a' | 'b',
    private readonly host: SideHost,
  ) {
    this.el = h('section', { class: `side side-${name}`, testid: `side-${name}` }, this.label, this.views);
  }

  /** The body's data attributes (tests and the bench read them) follow side A; every side sets its own. */
  private mark(key: string, value: string): void {
    this.el.dataset[key] = value;
    if (this.name === 'a') document.body.dataset[key] = value;
  }

  abort(): void {
    this.controller?.abort();
    this.controller = null;
    this.seq++;
  }

  clear(): void {
    this.abort();
    this.request = null;
    this.mounted?.dispose();
    this.mounted = null;
    this.last = null;
    replaceChildren(this.views);
    delete this.el.dataset.trace;
    delete this.el.dataset.traced;
  }

  async trace(req: TraceRequest): Promise<void> {
    this.controller?.abort();
    const controller = new AbortController();
    this.controller = controller;
    const seq = ++this.seq;
    const key = JSON.stringify(req);
    this.request = req;
    this.host.onError(this, null);
    this.mark('trace', 'loading');
    const t0 = performance.now();
    this.traceStart = t0;
    // The page's readouts of the first view's time describe this trace from now on (they would grow with every trace).
    clearPageMarks();
    // A long trace's views compute in a worker whose script comes from the server: fetched now, while the server is idle.
    prestartLongWorker();
    try {
      await this.host.ensureLoaded(this, req.model, controller.signal);
      this.host.onStatus(this, 'tracing…');
      this.host.onProgress(this, 0.1);
      this.mark('trace', 'streaming');
      const head = this.previewHead();
      const callbacks = { onHeader: (inc: Incoming) => this.host.onHeader(this, inc), onLayer: (inc: Incoming) => this.layerArrived(inc, key, seq), onPreview: (inc: Incoming) => this.layerArrived(inc, key, seq) };
      const incoming = await streamTrace(head === undefined ? req : { ...req, head }, callbacks, controller.signal);
      if (seq !== this.seq) return;
      this.layerArrived(incoming, key, seq);
      this.paint();
      const ms = performance.now() - t0;
      this.last = incoming;
      this.host.onProgress(this, null);
      this.mark('firstLayerMs', String(Math.round(incoming.firstLayerMs ?? ms)));
      this.mark('traceMs', String(Math.round(ms)));
      this.mark('traced', key);
      this.mark('doneAt', performance.now().toFixed(1));
      this.mark('trace', 'done');
      this.host.onDone(this, incoming, ms);
    } catch (e) {
      if (controller.signal.aborted || seq !== this.seq) return;
      this.host.onProgress(this, null);
      this.host.onStatus(this, '');
      this.host.onError(this, e instanceof ApiRefusal ? e.message : `the trace failed: ${(e as Error).message}`);
      this.mark('trace', 'error');
    }
  }

  /**
   * The head to ask a preview of (the request's `head`): the heatmap's head when the heatmap shows
   * one head (the view it opens on: the one on screen, else the URL's), else none.
   */
  private previewHead(): number | undefined {
    const shown = this.mounted?.preview;
    const before = shown ? shown.before : this.mounted?.app.state;
    const wanted = shown ? shown.wanted : this.host.wanted(this);
    const view = before?.view ?? wanted.view;
    const mode = before?.heatmapMode ?? wanted.heatmapMode ?? 'head';
    // (Not in compare mode: side B opens where A is, which a one-head preview is not.)
    if (view !== 'heatmap' || mode !== 'head' || wanted.compare) return undefined;
    return before?.heatmapHead ?? wanted.head ?? 0;
  }

  /** Whether the views on screen are not yet of request `key` (none, another trace's, or a head preview of it). */
  private firstOf(key: string): boolean {
    return this.mounted?.key !== key || this.mounted.preview !== undefined;
  }

  /**
   * Records a layer's arrival and plans the next mount of the views: at once (next frame) when
   * every attention layer is in; else PARTIAL_DELAY_MS after the first layer (the first layer
   * drawn while the others still come), then at most every PARTIAL_MOUNT_MS.
   */
  private layerArrived(incoming: Incoming, key: string, seq: number): void {
    if (seq !== this.seq) return;
    const now = performance.now();
    if (this.arrived?.seq !== seq) this.firstArrival = now;
    this.arrived = { incoming, key, seq };
    const at = incoming.attentionDone ? now : this.firstOf(key) ? this.firstArrival + partialDelay(incoming) : this.lastPartialMount + PARTIAL_MOUNT_MS;
    this.schedulePaint(at);
  }

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
    if (!a || a.seq !== this.seq) return;
    const { incoming, key } = a;
    const { got, total } = layersIn(incoming);
    this.host.onProgress(this, incoming.attentionDone ? null : 0.1 + 0.9 * (got / Math.max(1, total)));
    if (this.mounted?.key === key && this.mounted.complete) {
      if (incoming.done) this.resolveQk?.();
      return;
    }
    const firstOnScreen = this.mounted?.key !== key;
    const fromPreview = this.mounted?.preview !== undefined;
    if (incoming.attentionDone) {
      let resolve!: () => void;
      const qkReady = new Promise<void>((r) => (resolve = r));
      this.resolveQk = () => {
        this.mark('qkReady', 'true');
        resolve();
      };
      this.mount(incoming.trace, incoming.page, qkReady, key, true);
      if (incoming.done) this.resolveQk();
    } else {
      const now = performance.now();
      const wait = this.firstOf(key) ? this.firstArrival + partialDelay(incoming) : this.lastPartialMount + PARTIAL_MOUNT_MS;
      if (now < wait) {
        this.schedulePaint(wait);
        return;
      }
      const partial = partialTrace(incoming);
      // Before the first layer: the shown head's preview, when it came (once).
      const preview = partial || !firstOnScreen ? null : previewTrace(incoming);
      if (!partial && !preview) return;
      this.lastPartialMount = now;
      this.mount(partial ?? preview!, incoming.page, new Promise<void>(() => undefined), key, false, preview ? [incoming.preview!.head] : undefined);
      if (preview) {
        // (The views of the whole layer take the preview's worker threads once its overview is done: long-worker.ts.)
        this.host.onStatus(this, `tracing… head ${incoming.preview!.head} of layer 0 on screen`);
      } else {
        this.host.onStatus(this, `tracing… ${got} of ${total} layers on screen`);
      }
    }
    if (fromPreview && this.mounted?.preview === undefined) this.mark('layerPaintAt', performance.now().toFixed(1));
    // From the request to the first layer drawn.
    if (firstOnScreen) {
      this.mark('firstPaintMs', String(Math.round(performance.now() - this.traceStart)));
      // performance.now() when it was drawn (the bench measures from the last keystroke).
      this.mark('firstPaintAt', performance.now().toFixed(1));
      this.tellDrawn(incoming, a.seq);
    }
  }

  /**
   * Tells the server when this trace's first view is drawn (stream.ts traceDrawn; an on-demand run
   * waits for it before its next segment): when the heatmap's overview is painted, or, with no
   * heatmap computing one on screen, once the views are painted.
   */
  private tellDrawn(incoming: Incoming, seq: number): void {
    const run = incoming.run;
    if (!run || this.told === seq || !onDemand(incoming.header)) return;
    this.told = seq;
    let sent = false;
    const send = () => {
      if (sent || seq !== this.seq) return;
      sent = true;
      this.views.removeEventListener(OVERVIEW_DRAWN_EVENT, send);
      traceDrawn(run);
    };
    this.views.addEventListener(OVERVIEW_DRAWN_EVENT, send);
    // The App renders at an animation frame: look for its heatmap after that frame.
    requestAnimationFrame(() =>
      requestAnimationFrame(() => {
        const tiles = this.views.querySelector<HTMLElement>('[data-testid=heatmap-tiles]');
        if (!tiles || tiles.dataset.overview === 'done') send();
      }),
    );
  }

  /**
   * Shows a trace with the standalone page's App, keeping what the user had chosen. A head preview
   * names the model's head its one head is (`previewHeads`: the views label it so).
   */
  private mount(trace: Trace, page: PayloadHeader, qkReady: Promise<void>, key: string, complete: boolean, previewHeads?: readonly number[]): void {
    const preview = previewHeads !== undefined;
    // A head preview (one head) carries nothing over: the mount after it opens as the preview did.
    const shown = this.mounted?.preview;
    const before = shown ? shown.before : this.mounted?.app.state;
    // A partial trace had fewer layers: what was asked for (e.g. layer 4) applies to the next mount.
    const fromPartial = shown ? shown.fromPartial : this.mounted !== null && !this.mounted.complete;
    // (The preview's App wrote its one head into the URL state.)
    const wanted = shown ? shown.wanted : { ...this.host.wanted(this) };
    this.mark('qkReady', 'false');
    const hosted = this.host.hosted(this);
    const known = (v: string | undefined) => VIEWS.some((x) => x.name === v) || (hosted?.views ?? []).some((x) => x.name === v);
    const view: ViewName | undefined = before?.view ?? (known(wanted.view) ? (wanted.view as ViewName) : undefined);
    const header: PayloadHeader = { ...page, ...(view ? { view } : {}), ...(!before && wanted.theme ? { theme: wanted.theme } : {}) };
    this.mounted?.dispose();
    const host = h('div', { class: 'serve-app' });
    const { value: app, dispose } = scopedListeners(() => new App(trace, header, qkReady, host, hosted, previewHeads));
    replaceChildren(this.views, host);
    this.mounted = { app, dispose, complete, key, ...(preview ? { preview: { before, fromPartial, wanted } } : {}) };
    app.set(carryState(app, before, wanted, fromPartial));
    this.host.onMounted(this, app, complete, fromPartial);
  }
}

/** What a head selection sets in every view: the heatmap's and neuron view's head, the head view's only head, the open model-view cell. */
export function selectHead(state: State, head: number): Partial<State> {
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
    if (url.hideSpecial !== undefined) patch.hideSpecial = url.hideSpecial;
    if (url.mergeSubwords !== undefined) patch.mergeSubwords = url.mergeSubwords;
    if (url.prettify !== undefined) patch.prettify = url.prettify;
    if (url.heatmapMode !== undefined) patch.heatmapMode = url.heatmapMode;
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
