/**
 * The app's bias panel (issue 12, point 4): the panels of `attnscope bias report` for the model on
 * screen, computed by the server (POST /api/bias, src/server/bias.ts: the report's own code and
 * defaults) and painted by the report page's painter (web/views/bias-report.ts: the same layouts
 * and SVG writers as the export) — CrowS-Pairs scores with bootstrap intervals on the subset and
 * limit chosen here, per bias type, the WinoGender occupation plot, the head map of bias
 * attention, the ablation effect, the propagation, and the probe of the current text.
 *
 * A run takes seconds to minutes: it starts only from the Run button, shows the server's progress,
 * can be cancelled (the request is aborted; the server stops), and the server keeps finished
 * reports, so running the same settings again answers at once. The report downloads as JSON (the
 * file `bias report` writes beside its page), each panel as SVG or PNG.
 *
 * Hosted by main.ts (helper C1): `el` goes where views go; show() / hide() / inputsChanged().
 */
import { CROWS_BIAS_TYPES } from '../../src/analysis/bias/crows-pairs.js';
import { biasReportJson, type BiasReport } from '../../src/analysis/bias/report.js';
import { BIAS_LIMITS, type ApiError, type BiasLine, type BiasRequest, type BiasResult } from '../../src/server/protocol.js';
import type { ThemeName } from '../../src/views/theme.js';
import { button, h, replaceChildren } from '../dom.js';
import { download } from '../export.js';
import { biasProbeSection, paintBiasPanels } from '../views/bias-report.js';

export interface BiasPanelHost {
  /** The model id side A traces with. */
  model(): string | null;
  /** The text on screen (the probe's default). */
  text(): string;
  theme(): ThemeName;
}

const safeName = (x: string): string => x.replace(/[^A-Za-z0-9._-]+/g, '_');
const fmt = (v: number | null | undefined, d = 2): string => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(d) : '–');

function numberInput(testid: string, label: string, value: number, min: number, max: number, title: string): { field: HTMLLabelElement; input: HTMLInputElement } {
  const input = h('input', { type: 'number', testid, min: String(min), max: String(max), step: '1', value: String(value), style: 'width: 5.5em', 'aria-label': label });
  return { field: h('label', { class: 'control', title }, h('span', {}, label), input), input };
}

export class BiasPanel {
  readonly el: HTMLElement = h('section', { class: 'bias-app-panel', testid: 'bias-panel', style: 'padding: 4px 12px 24px' });
  private readonly biasType = h('select', { testid: 'bias-type', 'aria-label': 'CrowS-Pairs bias type' });
  private readonly limit = numberInput('bias-limit', 'pairs', BIAS_LIMITS.defaultLimit, 0, BIAS_LIMITS.maxPairs, `The first N CrowS-Pairs pairs (of the type chosen) and WinoGender sentences (0: none; at most ${BIAS_LIMITS.maxPairs})`);
  private readonly k = numberInput('bias-k', 'k', 5, 1, BIAS_LIMITS.maxK, 'Heads ablated: the k most bias-focused');
  private readonly controls = numberInput('bias-controls', 'controls', 3, 0, BIAS_LIMITS.maxControls, 'Random sets of k other heads ablated for comparison');
  private readonly steps = numberInput('bias-steps', 'IG steps', 32, 1, BIAS_LIMITS.maxSteps, 'Integrated-gradients steps (faithfulness)');
  private readonly permutations = numberInput('bias-permutations', 'permutations', 1000, 0, BIAS_LIMITS.maxPermutations, 'Random token sets per head in the permutation test');
  private readonly bootstrap = numberInput('bias-bootstrap', 'bootstrap', 1000, 1, BIAS_LIMITS.maxBootstrap, 'Bootstrap resamples over the pairs (the intervals)');
  private readonly ablationPairs = numberInput('bias-ablation-pairs', 'ablation pairs', 0, 0, BIAS_LIMITS.maxAblationPairs, 'Also re-score the first N pairs with the top k CrowS-Pairs heads zeroed (slow)');
  private readonly probeText = h('textarea', { class: 'text-input', testid: 'bias-text', rows: 2, spellcheck: false, 'aria-label': 'probe text', placeholder: 'Probe text: a sentence with group words (masked LMs: with the mask token where he/she is read); empty: the default probes' });
  private readonly runButton = button('bias-run', 'Run', () => this.run(), 'Compute the bias report for this model (seconds to minutes)');
  private readonly cancelButton = button('bias-cancel', 'Cancel', () => this.cancel(), 'Stop the run');
  private readonly jsonButton = button('bias-json', 'JSON', () => this.exportJson(), 'Download the report’s numbers as JSON (as attnscope bias report writes them)');
  private readonly progressFill = h('div', { class: 'progress-fill' });
  private readonly progress = h('div', { class: 'progress', testid: 'bias-progress' }, this.progressFill);
  private readonly status = h('span', { class: 'muted', testid: 'bias-status', role: 'status' }, 'Not run yet: choose the pairs and the probe text, then Run.');
  private readonly error = h('p', { class: 'trace-error', testid: 'bias-error', hidden: true });
  private readonly summary = h('p', { testid: 'bias-summary' });
  private readonly notes = h('details', { class: 'bias-notes', testid: 'bias-notes' });
  private readonly panels = h('div', { class: 'bias-panels', testid: 'bias-panels' });
  private readonly probes = h('div', { testid: 'bias-probes-host' });
  private abort: AbortController | null = null;
  private result: BiasResult | null = null;
  /** The model and theme the result was painted for. */
  private paintedTheme: ThemeName | null = null;
  private textEdited = false;
  private shown = false;

  constructor(private readonly host: BiasPanelHost) {
    this.biasType.append(h('option', { value: '' }, 'all bias types'), ...CROWS_BIAS_TYPES.map((t) => h('option', { value: t }, t)));
    this.probeText.addEventListener('input', () => (this.textEdited = true));
    this.cancelButton.disabled = true;
    this.jsonButton.disabled = true;
    const settings = h(
      'details',
      { class: 'bias-settings', testid: 'bias-settings' },
      h('summary', {}, 'settings'),
      h('div', { style: 'display: flex; flex-wrap: wrap; gap: 10px; margin: 6px 0' }, this.k.field, this.controls.field, this.steps.field, this.permutations.field, this.bootstrap.field, this.ablationPairs.field),
    );
    replaceChildren(
      this.el,
      h('h2', { style: 'margin: 8px 0' }, 'Bias'),
      h(
        'div',
        { class: 'bias-controls', style: 'display: flex; flex-wrap: wrap; gap: 10px; align-items: center' },
        h('label', { class: 'control', title: 'CrowS-Pairs pairs of this bias type only' }, h('span', {}, 'CrowS-Pairs'), this.biasType),
        this.limit.field,
        this.runButton,
        this.cancelButton,
        this.jsonButton,
        button('bias-use-text', 'use the text on screen', () => {
          this.probeText.value = this.host.text();
          this.textEdited = false;
        }, 'Probe the text typed above'),
      ),
      h('label', { class: 'field', style: 'display: flex; gap: 6px; margin: 6px 0' }, h('span', { class: 'field-label' }, 'probe'), this.probeText),
      settings,
      this.progress,
      h('div', {}, this.status),
      this.error,
      this.summary,
      this.notes,
      this.panels,
      this.probes,
    );
  }

  /** The panel is on screen: fill the probe text, repaint for the theme. */
  show(): void {
    this.shown = true;
    if (!this.textEdited && this.probeText.value === '') this.probeText.value = this.host.text();
    if (this.result && this.paintedTheme !== this.host.theme()) this.paint(this.result.report);
  }

  /** The panel left the screen: a run under way is cancelled (the last result stays). */
  hide(): void {
    this.shown = false;
    this.cancel();
  }

  /** The model or the text changed: the probe text follows the text unless edited; the result is marked as of the old inputs. */
  inputsChanged(): void {
    if (!this.textEdited) this.probeText.value = this.host.text();
    if (this.result && this.result.report.model !== undefined) this.status.textContent = 'The model or text changed since this report: Run to update it.';
  }

  /** The request the controls describe (the server fills in the rest with the CLI's defaults). */
  request(): BiasRequest | null {
    const model = this.host.model();
    if (!model) return null;
    const req: BiasRequest = { model, limit: Number(this.limit.input.value), k: Number(this.k.input.value), controls: Number(this.controls.input.value), steps: Number(this.steps.input.value), permutations: Number(this.permutations.input.value), bootstrap: Number(this.bootstrap.input.value), ablationPairs: Number(this.ablationPairs.input.value) };
    if (this.biasType.value) req.biasType = this.biasType.value;
    const text = this.probeText.value.trim();
    if (text) req.text = this.probeText.value;
    return req;
  }

  private setProgress(fraction: number | null): void {
    this.progress.classList.toggle('active', fraction !== null);
    this.progressFill.style.width = fraction === null ? '0' : `${Math.round(100 * Math.max(0, Math.min(1, fraction)))}%`;
    this.progress.setAttribute('data-fraction', fraction === null ? '' : String(fraction));
  }

  private showError(message: string | null): void {
    this.error.hidden = message === null;
    this.error.textContent = message ?? '';
  }

  cancel(): void {
    if (!this.abort) return;
    this.abort.abort();
    this.abort = null;
    this.status.textContent = 'Cancelled.';
    this.setProgress(null);
    this.runButton.disabled = false;
    this.cancelButton.disabled = true;
  }

  async run(): Promise<void> {
    const req = this.request();
    if (!req) {
      this.showError('Pick a model first.');
      return;
    }
    this.abort?.abort();
    const abort = new AbortController();
    this.abort = abort;
    this.showError(null);
    this.runButton.disabled = true;
    this.cancelButton.disabled = false;
    this.status.textContent = 'Starting…';
    this.setProgress(0);
    try {
      const result = await postBias(req, abort.signal, (l) => {
        if (this.abort !== abort) return;
        this.status.textContent = l.message;
        if (l.fraction !== undefined) this.setProgress(l.fraction);
      });
      if (this.abort !== abort) return;
      this.result = result;
      this.status.textContent = result.cached ? 'From the server’s cache.' : `Computed in ${(result.ms / 1000).toFixed(1)} s.`;
      this.paint(result.report);
    } catch (e) {
      if (abort.signal.aborted) return;
      this.status.textContent = 'Failed.';
      this.showError((e as Error).message);
    } finally {
      if (this.abort === abort) {
        this.abort = null;
        this.setProgress(null);
        this.runButton.disabled = false;
        this.cancelButton.disabled = true;
      }
    }
  }

  private paint(r: BiasReport): void {
    const theme = this.host.theme();
    this.paintedTheme = theme;
    this.jsonButton.disabled = false;
    const c = r.crowsPairs;
    const w = r.winogender;
    replaceChildren(
      this.summary,
      h('b', {}, r.model),
      ` (${r.kind === 'masked' ? 'masked LM' : 'causal LM'}) · `,
      c ? h('span', { testid: 'bias-metric', 'data-value': c.metric.metric }, `CrowS-Pairs ${fmt(c.metric.metric)} on ${c.pairs} pairs${c.biasType ? ` (${c.biasType})` : ''}, 95% interval ${fmt(c.intervals.overall.low)}–${fmt(c.intervals.overall.high)}`) : 'no CrowS-Pairs pairs',
      ' · ',
      w ? `WinoGender ${w.sentences} sentences, r = ${fmt(w.correlation)} with the occupations' share of women` : 'no WinoGender sentences',
    );
    replaceChildren(this.notes, h('summary', {}, 'How to read these panels'), h('ul', {}, ...r.notes.map((n) => h('li', { style: 'margin: 4px 0' }, n))));
    paintBiasPanels(this.panels, r, theme, (m) => (this.status.textContent = m));
    replaceChildren(this.probes, biasProbeSection(r, theme));
  }

  private exportJson(): void {
    const r = this.result?.report;
    if (!r) return;
    download(new Blob([biasReportJson(r)], { type: 'application/json' }), `attnscope-bias-report-${safeName(r.model)}.json`);
    this.status.textContent = 'JSON downloaded.';
  }

  /** Whether the panel is on screen (main.ts may ask). */
  get visible(): boolean {
    return this.shown;
  }
}

/** POST /api/bias: reads the NDJSON lines, reporting progress; the result, or the server's one-line error. */
export async function postBias(req: BiasRequest, signal: AbortSignal, onProgress: (p: Extract<BiasLine, { type: 'progress' }>) => void): Promise<BiasResult> {
  const res = await fetch('/api/bias', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(req), signal });
  if (!res.ok || !res.body) {
    let body: ApiError | null = null;
    try {
      body = (await res.json()) as ApiError;
    } catch {
      // not JSON
    }
    throw new Error(body?.error ?? `the server answered ${res.status}`);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (value) buffer += value;
    let nl: number;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl).trim();
      buffer = buffer.slice(nl + 1);
      if (!line) continue;
      const l = JSON.parse(line) as BiasLine;
      if (l.type === 'progress') onProgress(l);
      else if (l.type === 'error') throw new Error(l.error);
      else return l.result;
    }
    if (done) break;
  }
  throw new Error('the bias run ended without a result');
}
