/**
 * The app's compare panel: the comparison of side A's and side B's traces (compareTraces, the
 * analysis `attnscope compare` runs) shown by the comparison page's component (web/views/compare.ts,
 * embedded): A, B and A − B for the pair of the layer and head on screen, the head ranking, and the
 * ranking as CSV/JSON. Computed once both traces are complete, after they are drawn. Ranking every
 * head pair is the heavy part (2–3 s of CPU for two bert-base traces at 512 tokens): it runs in a
 * Web Worker started from the page's script (web/compare-worker-side.ts), with progress and a
 * cancel button, so the page stays responsive; the page then builds the comparison from that
 * ranking. Without workers it runs here.
 */
import { type CompareOptions, type Comparison, type HeadDifference, compareTraces, comparisonCsv, comparisonRows } from '../../src/analysis/compare.js';
import type { StackName, Trace } from '../../src/core/trace.js';
import type { ThemeName } from '../../src/views/theme.js';
import type { CompareRequest } from '../compare-worker-side.js';
import { button, h, replaceChildren } from '../dom.js';
import { download } from '../export.js';
import { type WorkerJob, pageWorkersAvailable, startWorkerJob } from '../flow-worker.js';
import type { Steps } from '../job-worker.js';
import { CompareApp } from '../views/compare.js';

/** What the worker needs of a trace: the compared stack's attention and the tokens. */
function slim(t: Trace, stack: StackName): Trace {
  const s = t.attention[stack];
  return { model: t.model, tokens: t.tokens, ...(t.decoderTokens ? { decoderTokens: t.decoderTokens } : {}), attention: s ? { [stack]: s } : {} };
}

type RankingJob = WorkerJob<HeadDifference[]>;

/** Ranks the head pairs of `a` and `b` in a worker running the page's script (the one job runner of flow-worker.ts). */
function startRankingJob(a: Trace, b: Trace, options: CompareRequest['options'], onProgress: (done: number, total: number) => void): RankingJob {
  const stack = options.stack ?? 'self';
  const req: CompareRequest = { kind: 'attnscope-compare', a: slim(a, stack), b: a === b ? slim(a, stack) : slim(b, stack), options };
  return startWorkerJob<Steps, HeadDifference[]>('comparison', req, [], (p) => onProgress(p.done, p.total));
}

export interface CompareInputs {
  a: Trace;
  b: Trace;
  nameA: string;
  nameB: string;
  textA: string;
  /** B's text when it differs from A's. */
  textB?: string;
  stack: StackName;
  theme: ThemeName;
}

export class ComparePanel {
  readonly el = h('section', { class: 'compare-panel', testid: 'compare-panel' });
  private readonly body = h('div', { class: 'compare-panel-body' });
  private readonly message = h('p', { class: 'compare-message muted', testid: 'compare-message' });
  private readonly tools = h('span', { class: 'export' });
  private app: CompareApp | null = null;
  private cmp: Comparison | null = null;
  private key = '';
  private timer: ReturnType<typeof setTimeout> | null = null;
  private job: RankingJob | null = null;

  constructor(private readonly onSelect: (layer: number, head: number | null) => void) {
    replaceChildren(this.el, h('div', { class: 'compare-panel-head' }, h('h2', {}, 'Difference A − B and the heads that changed most'), h('span', { class: 'spacer' }), this.tools), this.message, this.body);
  }

  get comparison(): Comparison | null {
    return this.cmp;
  }

  clear(message = ''): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.job?.cancel();
    this.job = null;
    this.app = null;
    this.cmp = null;
    this.key = '';
    replaceChildren(this.body);
    replaceChildren(this.tools);
    this.message.textContent = message;
    delete document.body.dataset.compare;
  }

  /**
   * Compares the two traces (after the views are drawn: a large comparison takes a moment),
   * then shows the pair of (layer, head). The same inputs again only move to the pair.
   */
  update(inputs: CompareInputs, layer: number, head: number | null): void {
    const key = `${inputs.nameA}|${inputs.nameB}|${inputs.stack}|${inputs.textA}|${inputs.textB ?? ''}`;
    if (key === this.key && inputs.a === this.lastA && inputs.b === this.lastB) {
      this.app?.setTheme(inputs.theme);
      this.show(layer, head);
      return;
    }
    this.clear('comparing…');
    this.key = key;
    this.lastA = inputs.a;
    this.lastB = inputs.b;
    document.body.dataset.compare = 'computing';
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.compute(inputs, key, layer, head);
    }, 30);
  }

  /** Ranks the pairs (in a worker when the page can start one), then shows the comparison. */
  private async compute(inputs: CompareInputs, key: string, layer: number, head: number | null): Promise<void> {
    const sameText = inputs.textB === undefined || inputs.textB === inputs.textA;
    const options: Omit<CompareOptions, 'onProgress' | 'ranking'> = { stack: inputs.stack, ...(sameText ? { text: inputs.textA } : {}) };
    let ranking: HeadDifference[] | undefined;
    if (pageWorkersAvailable()) {
      const job = startRankingJob(inputs.a, inputs.b, options, (done, total) => {
        this.message.textContent = `comparing… ${done} of ${total} head pairs ranked`;
        this.message.dataset.done = String(done);
      });
      this.job = job;
      replaceChildren(this.tools, button('compare-cancel', 'cancel', () => this.cancel(inputs, layer, head), 'Stop the comparison (the views stay as they are)'));
      try {
        const r = await job.result;
        if (this.key !== key || this.job !== job) return;
        this.job = null;
        replaceChildren(this.tools);
        if (r === null) return;
        ranking = r;
      } catch (e) {
        if (this.key !== key) return;
        this.job = null;
        replaceChildren(this.tools);
        this.message.textContent = `These two traces cannot be compared: ${(e as Error).message}`;
        document.body.dataset.compare = 'error';
        return;
      }
    }
    try {
      const cmp = compareTraces(inputs.a, inputs.b, { ...options, ...(ranking ? { ranking } : {}) });
      this.cmp = cmp;
      this.message.textContent = '';
      const info = { nameA: inputs.nameA, nameB: inputs.nameB, textA: inputs.textA, theme: inputs.theme, ...(sameText ? {} : { textB: inputs.textB! }) };
      this.app = new CompareApp(cmp, info, this.body, { embedded: true, onSelect: (pair) => this.onSelect(pair.layer, pair.head) });
      replaceChildren(
        this.tools,
        button('ranking-csv', 'ranking CSV', () => download(new Blob([comparisonCsv(cmp)], { type: 'text/csv' }), this.fileName('csv')), 'Download the head ranking as CSV'),
        button('ranking-json', 'ranking JSON', () => download(new Blob([`${JSON.stringify(comparisonRows(cmp), null, 1)}\n`], { type: 'application/json' }), this.fileName('json')), 'Download the head ranking as JSON'),
      );
      this.show(layer, head);
      document.body.dataset.compare = 'done';
    } catch (e) {
      this.message.textContent = `These two traces cannot be compared: ${(e as Error).message}`;
      document.body.dataset.compare = 'error';
    }
  }

  /** Stops the ranking under way; a button starts it again. */
  private cancel(inputs: CompareInputs, layer: number, head: number | null): void {
    this.job?.cancel();
    this.job = null;
    this.message.textContent = 'comparison cancelled';
    document.body.dataset.compare = 'cancelled';
    replaceChildren(
      this.tools,
      button('compare-run', 'compare', () => {
        this.key = '';
        this.update(inputs, layer, head);
      }, 'Compare A and B'),
    );
  }

  private lastA: Trace | null = null;
  private lastB: Trace | null = null;

  private fileName(ext: string): string {
    return `attnscope-compare-ranking-${this.key.split('|').slice(0, 2).join('-vs-')}`.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 120) + `.${ext}`;
  }

  /** Shows A's (layer, head), or the layer's mean when heads are not matched one to one. */
  show(layer: number, head: number | null): void {
    if (!this.app) return;
    if (!this.app.showPair(layer, head)) this.app.showPair(layer, null);
  }

  /** The figure shown, as SVG (for the app's export menu). */
  svg(): string | null {
    return this.app?.svg() ?? null;
  }
}
