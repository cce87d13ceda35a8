/**
 * The analysis views in the served app: saliency, head importance, ablation, logit lens (the
 * standalone page's components, web/views/analysis.ts, drawing the data the server computes with
 * the CLI's code: POST /api/analysis) and the deep dive (analysis-deep.ts). They are tabs of the
 * page's App beside the attention views (web/app.ts HostedViews). Each is computed when its tab is
 * shown, for the side's current model and text and the view's options (URL state: a link reopens
 * it), with progress and a cancel button; results are kept per request, so going back to a view
 * or re-drawing a side costs nothing. The view's own export buttons (SVG / PNG) serve the app's
 * export menu.
 */
import type { AnalysisKind, AnalysisLine, AnalysisOptions, AnalysisResult, ApiError, TraceRequest } from '../../src/server/protocol.js';
import { ANALYSIS_MEDIA_TYPE } from '../../src/server/protocol.js';
import type { App, HostedViews } from '../app.js';
import type { PageView } from '../context.js';
import { button, checkbox, h, replaceChildren, select } from '../dom.js';
import { AblationView, HeadImportanceView, LogitLensView, SaliencyView } from '../views/analysis.js';
import { DeepDiveView, type DeepMeasure } from './analysis-deep.js';
import { ApiRefusal } from './stream.js';
import type { UrlState } from './url-state.js';

/** The tabs, in order, after the attention views. */
export const ANALYSIS_TABS: readonly { name: AnalysisKind; label: string }[] = [
  { name: 'saliency', label: 'Saliency' },
  { name: 'importance', label: 'Head importance' },
  { name: 'ablation', label: 'Ablation' },
  { name: 'lens', label: 'Logit lens' },
  { name: 'deep', label: 'Deep dive' },
];

export function isAnalysisTab(view: string): view is AnalysisKind {
  return ANALYSIS_TABS.some((t) => t.name === view);
}

/** POSTs an analysis request and reads its NDJSON lines; resolves with the result. */
export async function fetchAnalysis(body: Record<string, unknown>, onProgress: (p: Extract<AnalysisLine, { type: 'progress' }>) => void, signal: AbortSignal): Promise<AnalysisResult> {
  const res = await fetch('/api/analysis', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal });
  if (!res.ok) {
    let e: ApiError = { error: `the server answered ${res.status}` };
    try {
      e = (await res.json()) as ApiError;
    } catch {
      // keep the status
    }
    throw new ApiRefusal(e.error, e.field, res.status);
  }
  if (!res.headers.get('content-type')?.startsWith(ANALYSIS_MEDIA_TYPE) || !res.body) throw new Error('unexpected answer');
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buf += value;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = JSON.parse(buf.slice(0, nl)) as AnalysisLine;
      buf = buf.slice(nl + 1);
      if (line.type === 'progress') onProgress(line);
      else if (line.type === 'error') throw new ApiRefusal(line.error, line.field);
      else return line.result;
    }
    if (done) throw new Error('the answer ended before its result');
  }
}

/** Parses "0:1, 2:3, 4:*" into heads (L:* every head of layer L); null when malformed. */
export function parseHeads(text: string, numHeads: number): { layer: number; head: number }[] | null {
  const out: { layer: number; head: number }[] = [];
  for (const part of text.split(/[\s,]+/).filter(Boolean)) {
    const m = /^(\d{1,4}):(\d{1,4}|\*)$/.exec(part);
    if (!m) return null;
    const layer = Number(m[1]);
    if (m[2] === '*') for (let hd = 0; hd < numHeads; hd++) out.push({ layer, head: hd });
    else out.push({ layer, head: Number(m[2]) });
  }
  return out.length ? out : null;
}

interface Run {
  controller: AbortController;
  promise: Promise<AnalysisResult>;
  progress: { message: string; fraction?: number };
  listeners: Set<() => void>;
}

/** What the host needs from the app around it. */
export interface AnalysisAppHost {
  /** The URL state (the views' options live there). */
  url(): UrlState;
  /** Called after an option changed (the URL is written again). */
  optionsChanged(): void;
  /** A hosted view the app adds itself (the bias panel), or null. */
  extra?(name: PageView, app: App, side: 'a' | 'b'): { el: HTMLElement; update(): void; leave?(): void } | null;
  extraTabs?: readonly { name: PageView; label: string }[];
}

/** The analysis state shared by every App the sides mount: results and runs per request. */
export class AnalysisHost {
  private readonly results = new Map<string, AnalysisResult>();
  private readonly runs = new Map<string, Run>();
  /** Requests the user cancelled: not started again until asked. */
  private readonly cancelled = new Set<string>();
  private readonly errors = new Map<string, string>();

  constructor(private readonly host: AnalysisAppHost) {}

  /** The hosted views of one side: `request()` gives the trace request the side shows. */
  hosted(request: () => TraceRequest | null, side: 'a' | 'b'): HostedViews {
    return {
      views: [...ANALYSIS_TABS, ...(this.host.extraTabs ?? [])],
      make: (name, app) => {
        if (isAnalysisTab(name)) return new AnalysisPanel(this, name, app, request);
        const extra = this.host.extra?.(name, app, side);
        if (!extra) throw new Error(`no view ${name}`);
        return extra;
      },
    };
  }

  url(): UrlState {
    return this.host.url();
  }

  setOptions(patch: Partial<UrlState>): void {
    Object.assign(this.host.url(), patch);
    this.host.optionsChanged();
  }

  /** The request body of a view for a side's trace request, with the view's options from the URL. */
  body(view: AnalysisKind, req: TraceRequest, app: App): Record<string, unknown> {
    const u = this.host.url();
    const options: AnalysisOptions = {};
    if ((view === 'saliency' || view === 'importance' || view === 'ablation') && u.target !== undefined) options.position = u.target;
    if (view === 'saliency' && u.igSteps !== undefined) options.steps = u.igSteps;
    if (view === 'importance' && u.signed) options.signed = true;
    if (view === 'ablation') {
      options.heads = parseHeads(u.ablate ?? '', app.numHeads()) ?? [{ layer: app.state.layer, head: app.state.heatmapHead }];
      if (u.ablateMode === 'mean') options.mode = 'mean';
    }
    if (view === 'lens' && u.lensK !== undefined) options.topK = u.lensK;
    return { model: req.model, text: req.text, ...(req.textPair !== undefined ? { textPair: req.textPair } : {}), ...(req.decoderText !== undefined ? { decoderText: req.decoderText } : {}), view, ...(Object.keys(options).length ? { options } : {}) };
  }

  /** The result an analysis tab shows for a side's request, if computed. */
  resultFor(view: AnalysisKind, req: TraceRequest, app: App): AnalysisResult | undefined {
    return this.results.get(JSON.stringify(this.body(view, req, app)));
  }

  result(key: string): AnalysisResult | undefined {
    return this.results.get(key);
  }

  error(key: string): string | undefined {
    return this.errors.get(key);
  }

  run(key: string): Run | undefined {
    return this.runs.get(key);
  }

  isCancelled(key: string): boolean {
    return this.cancelled.has(key);
  }

  /** Starts (or joins) the computation of `body`; `changed` is called on progress and at the end. */
  start(key: string, body: Record<string, unknown>, changed: () => void): void {
    this.cancelled.delete(key);
    this.errors.delete(key);
    let run = this.runs.get(key);
    if (!run) {
      const controller = new AbortController();
      const r: Run = { controller, progress: { message: 'starting…', fraction: 0 }, listeners: new Set(), promise: undefined as unknown as Promise<AnalysisResult> };
      const notify = () => r.listeners.forEach((l) => l());
      r.promise = fetchAnalysis(
        body,
        (p) => {
          r.progress = { message: p.message, ...(p.fraction !== undefined ? { fraction: p.fraction } : {}) };
          notify();
        },
        controller.signal,
      );
      r.promise.then(
        (result) => {
          // Keep a bounded number of results (each is small: rows of numbers per token).
          if (this.results.size >= 64) this.results.delete(this.results.keys().next().value!);
          this.results.set(key, result);
        },
        (e: unknown) => {
          if (!controller.signal.aborted) this.errors.set(key, e instanceof ApiRefusal ? e.message : `the analysis failed: ${(e as Error).message}`);
        },
      ).finally(() => {
        this.runs.delete(key);
        notify();
      });
      this.runs.set(key, r);
      run = r;
    }
    run.listeners.add(changed);
  }

  /** Stops a run (the server stops it too: the request is aborted). */
  cancel(key: string): void {
    const r = this.runs.get(key);
    this.cancelled.add(key);
    r?.controller.abort();
  }

  /** Forgets a view's listener (it was replaced). */
  unlisten(key: string, changed: () => void): void {
    this.runs.get(key)?.listeners.delete(changed);
  }
}

const STEPS: readonly { value: number | 'auto'; label: string }[] = [
  { value: 'auto', label: 'auto (to 1% completeness)' },
  { value: 16, label: '16' },
  { value: 64, label: '64' },
  { value: 256, label: '256' },
];
const LENS_K = [1, 3, 5, 10] as const;

/** One analysis tab of one App: its options, the run's progress and cancel button, then the page's component. */
class AnalysisPanel {
  readonly el: HTMLElement;
  private readonly options = h('div', { class: 'toolbar analysis-options' });
  private readonly status = h('div', { class: 'analysis-status', hidden: true });
  private readonly message = h('span', { class: 'analysis-message' });
  private readonly bar = h('div', { class: 'progress active analysis-progress' }, h('div', { class: 'progress-fill' }));
  private readonly errorEl = h('p', { class: 'trace-error', hidden: true });
  private readonly content = h('div', { class: 'analysis-content' });
  private shownKey = '';
  private inner: { update(): void } | null = null;
  private listening: string | null = null;
  private readonly changed = () => this.update();

  constructor(
    private readonly host: AnalysisHost,
    private readonly view: AnalysisKind,
    private readonly app: App,
    private readonly request: () => TraceRequest | null,
  ) {
    this.el = h('div', { class: `view analysis-host`, testid: `${view}-host` }, this.options, this.status, this.errorEl, this.content);
    this.status.dataset.testid = `${view}-status`;
    this.errorEl.dataset.testid = `${view}-error`;
    this.status.append(this.message, button(`${view}-cancel`, 'cancel', () => this.cancel(), 'Stop this analysis (the server stops too)'), this.bar);
  }

  private key(): { key: string; body: Record<string, unknown> } | null {
    const req = this.request();
    if (!req) return null;
    const body = this.host.body(this.view, req, this.app);
    return { key: JSON.stringify(body), body };
  }

  private cancel(): void {
    const k = this.key();
    if (k) this.host.cancel(k.key);
  }

  leave(): void {
    // A run keeps going while another view is shown (its result is kept for coming back); the cancel button stops it.
    if (this.listening) this.host.unlisten(this.listening, this.changed);
    this.listening = null;
  }

  update(): void {
    this.renderOptions();
    const k = this.key();
    if (!k) return;
    const { key, body } = k;
    const result = this.host.result(key);
    const run = this.host.run(key);
    this.el.dataset.state = result ? 'done' : run ? 'running' : this.host.error(key) ? 'error' : this.host.isCancelled(key) ? 'cancelled' : 'idle';
    if (result) {
      this.status.hidden = true;
      this.errorEl.hidden = true;
      if (this.shownKey !== key) {
        this.shownKey = key;
        this.inner = this.component(result);
        replaceChildren(this.content, (this.inner as unknown as { el: HTMLElement }).el);
      }
      this.inner?.update();
      this.el.dataset.ms = String(result.ms);
      this.el.dataset.cached = String(result.cached);
      return;
    }
    this.shownKey = '';
    this.inner = null;
    replaceChildren(this.content);
    const error = this.host.error(key);
    if (error) {
      this.status.hidden = true;
      this.errorEl.hidden = false;
      replaceChildren(this.errorEl, error, ' ', button(`${this.view}-run`, 'try again', () => this.start(key, body)));
      return;
    }
    this.errorEl.hidden = true;
    if (!run && this.host.isCancelled(key)) {
      this.status.hidden = false;
      this.bar.hidden = true;
      replaceChildren(this.message, 'cancelled · ', button(`${this.view}-run`, 'run', () => this.start(key, body), 'Compute this analysis'));
      (this.status.querySelector(`[data-testid=${this.view}-cancel]`) as HTMLElement).hidden = true;
      return;
    }
    if (!run) return this.start(key, body);
    // A run another App's view started (a side re-drawn): follow it.
    if (this.listening !== key) return this.start(key, body);
    this.status.hidden = false;
    this.bar.hidden = false;
    (this.status.querySelector(`[data-testid=${this.view}-cancel]`) as HTMLElement).hidden = false;
    this.message.textContent = run.progress.message;
    (this.bar.firstElementChild as HTMLElement).style.width = `${Math.round((run.progress.fraction ?? 0) * 100)}%`;
  }

  private start(key: string, body: Record<string, unknown>): void {
    if (this.listening && this.listening !== key) this.host.unlisten(this.listening, this.changed);
    this.listening = key;
    this.host.start(key, body, this.changed);
    this.update();
  }

  private component(result: AnalysisResult): { el: HTMLElement; update(): void } {
    switch (result.view) {
      case 'saliency':
        return new SaliencyView(this.app, result.data);
      case 'importance':
        return new HeadImportanceView(this.app, result.data);
      case 'ablation':
        return new AblationView(this.app, result.data);
      case 'lens':
        return new LogitLensView(this.app, result.data);
      case 'deep':
        return new DeepDiveView(this.app, result.data, () => this.host.url().deepMeasure ?? 'relative', (m: DeepMeasure) => {
          this.host.setOptions({ deepMeasure: m === 'relative' ? undefined : m });
          this.update();
        });
    }
  }

  private renderOptions(): void {
    const u = this.host.url();
    const set = (patch: Partial<UrlState>) => {
      this.host.setOptions(patch);
      this.update();
    };
    // The target: the prediction at a position (the decoder's for encoder-decoders).
    const targetSelect = () => {
      const tokens = this.app.trace.decoderTokens ?? this.app.trace.tokens;
      const options: { value: number; label: string }[] = [{ value: -1, label: 'the last position (masked LMs: the first mask)' }, ...tokens.map((t, i) => ({ value: i, label: `${i}: ${this.app.candidateLabel(t.text)}` }))];
      const value = u.target !== undefined && u.target < tokens.length ? u.target : -1;
      return select(`${this.view}-target`, 'target: the prediction at', options, value, (v) => set({ target: v < 0 ? undefined : v }));
    };
    switch (this.view) {
      case 'saliency':
        replaceChildren(this.options, targetSelect(), select('saliency-steps', 'integrated gradients: steps', STEPS, STEPS.find((s) => s.value === u.igSteps)?.value ?? 'auto', (v) => set({ igSteps: v === 'auto' ? undefined : v })));
        break;
      case 'importance':
        replaceChildren(this.options, targetSelect(), checkbox('importance-signed', 'signed ∂T/∂g (not normalized)', u.signed === true, (v) => set({ signed: v || undefined })));
        break;
      case 'ablation': {
        const input = h('input', { type: 'text', class: 'heads-input', testid: 'ablation-heads', 'aria-label': 'heads to remove', placeholder: `${this.app.state.layer}:${this.app.state.heatmapHead} (the selected head)`, spellcheck: false });
        input.value = u.ablate ?? '';
        const apply = () => {
          const v = input.value.trim();
          if (v !== '' && !parseHeads(v, this.app.numHeads())) {
            input.setCustomValidity('layer:head, separated by commas (L:* for a whole layer)');
            input.reportValidity();
            return;
          }
          input.setCustomValidity('');
          set({ ablate: v === '' ? undefined : v });
        };
        input.addEventListener('change', apply);
        input.addEventListener('keydown', (e) => {
          if (e.key === 'Enter') apply();
        });
        replaceChildren(
          this.options,
          targetSelect(),
          h('label', { class: 'control' }, h('span', {}, 'remove heads'), input),
          button('ablation-selected', 'the selected head', () => set({ ablate: `${this.app.state.layer}:${this.app.state.heatmapHead}` }), 'Remove the head selected in the other views (layer:head)'),
          select('ablation-mode', 'mode', [
            { value: 'zero', label: 'zero' },
            { value: 'mean', label: 'mean' },
          ] as const, u.ablateMode ?? 'zero', (v) => set({ ablateMode: v === 'zero' ? undefined : v })),
        );
        break;
      }
      case 'lens':
        replaceChildren(this.options, select('lens-k', 'top tokens per cell', LENS_K.map((k) => ({ value: k, label: String(k) })), (LENS_K as readonly number[]).includes(u.lensK ?? 5) ? (u.lensK ?? 5) : 5, (v) => set({ lensK: v === 5 ? undefined : v })));
        break;
      case 'deep':
        replaceChildren(this.options);
        break;
    }
  }
}
