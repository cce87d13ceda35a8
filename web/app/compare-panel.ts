/**
 * The app's compare panel: the comparison of side A's and side B's traces (compareTraces, the
 * analysis `attnscope compare` runs) shown by the comparison page's component (web/views/compare.ts,
 * embedded): A, B and A − B for the pair of the layer and head on screen, the head ranking, and the
 * ranking as CSV/JSON. Computed once both traces are complete, after they are drawn.
 */
import { type Comparison, compareTraces, comparisonCsv, comparisonRows } from '../../src/analysis/compare.js';
import type { StackName, Trace } from '../../src/core/trace.js';
import type { ThemeName } from '../../src/views/theme.js';
import { button, h, replaceChildren } from '../dom.js';
import { download } from '../export.js';
import { CompareApp } from '../views/compare.js';

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

  constructor(private readonly onSelect: (layer: number, head: number | null) => void) {
    replaceChildren(this.el, h('div', { class: 'compare-panel-head' }, h('h2', {}, 'Difference A − B and the heads that changed most'), h('span', { class: 'spacer' }), this.tools), this.message, this.body);
  }

  get comparison(): Comparison | null {
    return this.cmp;
  }

  clear(message = ''): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
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
      try {
        const sameText = inputs.textB === undefined || inputs.textB === inputs.textA;
        const cmp = compareTraces(inputs.a, inputs.b, { stack: inputs.stack, ...(sameText ? { text: inputs.textA } : {}) });
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
    }, 30);
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
