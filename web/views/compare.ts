/**
 * The comparison page (src/views/html/compare-page.ts): A and B side by side and A − B on a
 * diverging scale (the layout the SVG export draws, src/views/layout/diff-heatmap.ts), hover for
 * the three values of a cell, and the ranked list of the pairs that changed most: clicking one
 * switches all three heatmaps to it. Export: the current figure as SVG or PNG. The same component
 * is the compare panel of the app of `attnscope serve` (web/app/compare-panel.ts), embedded.
 */
import type { Comparison, HeadDifference, HeadPair } from '../../src/analysis/compare.js';
import type { ComparePayload } from '../../src/views/html/compare-page.js';
import { type Inflate, decodeValues } from '../../src/views/html/payload.js';
import type { DiffLayout } from '../../src/views/layout/diff-heatmap.js';
import { comparisonDiffInput, diffHeatmapLayout, pairLabel, renderComparisonSvg } from '../../src/views/svg/diff-heatmap.js';
import { fmtValue } from '../../src/views/svg/common.js';
import { type ThemeName, getTheme } from '../../src/views/theme.js';
import { button, h, replaceChildren, select, sizeCanvas } from '../dom.js';
import { download, svgToPng } from '../export.js';
import { paintLayout } from '../matrix.js';

interface State {
  index: number;
  theme: ThemeName;
}

/** What the comparison shows besides the Comparison itself. */
export interface CompareInfo {
  nameA: string;
  nameB: string;
  textA?: string;
  textB?: string;
  theme?: ThemeName;
  /** Pairs whose matrices can be opened: ranking[0 … stored − 1] (default: all). */
  stored?: number;
}

export interface CompareHostOptions {
  /**
   * Inside another page (the app of `attnscope serve`): no page title, no theme control (the
   * host's theme), the figure sized to the mount's width, and `onSelect` told of a ranked pair
   * clicked (the host moves its views there).
   */
  embedded?: boolean;
  onSelect?(pair: HeadDifference, index: number): void;
}

/**
 * A and B side by side with A − B, the readout and the ranking of the pairs that changed most:
 * the comparison page's body, and the app's compare panel (one implementation, two hosts).
 */
export class CompareApp {
  private readonly state: State;
  private readonly canvas = h('canvas', { class: 'compare-canvas', testid: 'compare-canvas' });
  private readonly readout = h('div', { class: 'readout', testid: 'compare-readout' });
  private readonly list = h('ol', { class: 'ranking', testid: 'ranking' });
  private readonly toolbar = h('div', { class: 'toolbar' });
  private readonly status = h('span', { class: 'export-status muted', testid: 'compare-export-status' });
  private layout: DiffLayout | null = null;
  private readonly stored: number;

  constructor(
    readonly cmp: Comparison,
    private readonly info: CompareInfo,
    private readonly mount: HTMLElement,
    private readonly options: CompareHostOptions = {},
  ) {
    const dark = window.matchMedia?.('(prefers-color-scheme: dark)').matches;
    this.state = { index: 0, theme: info.theme ?? (dark ? 'dark' : 'light') };
    const ranking = cmp.ranking;
    this.stored = info.stored ?? ranking.length;
    const texts = [info.textA ? `A: “${info.textA}”` : '', info.textB && info.textB !== info.textA ? `B: “${info.textB}”` : ''].filter(Boolean).join(' · ');
    const stored = this.stored < ranking.length ? `${this.stored} of ${ranking.length} pairs stored (the rest: numbers only)` : `${ranking.length} pairs`;
    const root = h(
      'div',
      { class: `app compare${options.embedded ? ' compare-embedded' : ''}`, testid: options.embedded ? 'compare-panel-body' : 'app' },
      options.embedded
        ? null
        : h(
            'header',
            { class: 'topbar' },
            h('span', { class: 'brand' }, 'attnscope'),
            h('span', { class: 'subtitle', testid: 'compare-title' }, `${info.nameA} vs ${info.nameB}`),
            texts ? h('span', { class: 'text muted', title: texts }, texts) : null,
          ),
      h('div', { class: 'bar' }, this.toolbar),
      h('p', { class: 'muted compare-note', testid: 'compare-note' }, `${cmp.note} · ${stored}`),
      this.readout,
      h('div', { class: 'compare-body' }, h('div', { class: 'scroll' }, this.canvas), h('div', { class: 'ranking-panel' }, h('h3', {}, 'Heads that changed most'), this.list)),
    );
    replaceChildren(mount, root);
    this.canvas.addEventListener('pointermove', (e) => this.hover(e));
    this.canvas.addEventListener('pointerleave', () => this.hover(null));
    this.render();
  }

  /** Shows ranked pair `index`. */
  select(index: number): void {
    if (index >= 0 && index < this.stored && index !== this.state.index) this.set({ index });
  }

  /** Shows the pair of A's (layer, head) (head null: the layer's mean), when it is ranked; returns whether it is. */
  showPair(layer: number, head: number | null): boolean {
    const i = this.cmp.ranking.findIndex((r) => r.layer === layer && (r.head === head || r.head === null));
    if (i < 0 || i >= this.stored) return false;
    this.select(i);
    return true;
  }

  /** The host's theme (embedded). */
  setTheme(theme: ThemeName): void {
    if (theme !== this.state.theme) this.set({ theme });
  }

  get index(): number {
    return this.state.index;
  }

  /** The ranked pair shown as SVG (with the ranking, as the export draws it). */
  svg(): string {
    return this.figure(true);
  }

  private set(patch: Partial<State>): void {
    const before = this.state.index;
    Object.assign(this.state, patch);
    this.render();
    if (this.state.index !== before) this.options.onSelect?.(this.cmp.ranking[this.state.index]!, this.state.index);
  }

  private figure(forExport: boolean): string {
    return renderComparisonSvg(this.cmp, { theme: this.state.theme, nameA: this.info.nameA, nameB: this.info.nameB, index: this.state.index, ranking: forExport });
  }

  private async exportAs(kind: 'svg' | 'png'): Promise<void> {
    try {
      this.status.textContent = '';
      const svg = this.figure(true);
      const blob = kind === 'svg' ? new Blob([svg], { type: 'image/svg+xml' }) : await svgToPng(svg);
      const pair = this.cmp.ranking[this.state.index]!;
      const name = `attnscope-compare-${this.info.nameA}-vs-${this.info.nameB}-layer${pair.layer}-${pair.head === null ? 'mean' : `head${pair.head}`}`.replace(/[^A-Za-z0-9._-]+/g, '_');
      download(blob, `${name}.${kind}`);
    } catch (e) {
      this.status.textContent = `export failed: ${(e as Error).message}`;
    }
  }

  private render(): void {
    const { state, info, cmp } = this;
    const embedded = this.options.embedded === true;
    const theme = getTheme(state.theme);
    if (!embedded) {
      document.documentElement.dataset.theme = theme.name;
      for (const [k, v] of Object.entries({ '--bg': theme.background, '--panel': theme.panel, '--text': theme.text, '--muted': theme.muted, '--grid': theme.grid, '--highlight': theme.highlight, '--special': theme.special })) {
        document.documentElement.style.setProperty(k, v);
      }
    }
    replaceChildren(
      this.toolbar,
      embedded
        ? null
        : select('compare-theme', 'theme', [
            { value: 'light', label: 'light' },
            { value: 'dark', label: 'dark' },
          ] as const, state.theme, (t) => this.set({ theme: t })),
      h('span', { class: 'spacer' }),
      h(
        'span',
        { class: 'export' },
        this.status,
        button('compare-export-svg', 'SVG', () => void this.exportAs('svg'), 'Download this comparison as SVG'),
        button('compare-export-png', 'PNG', () => void this.exportAs('png'), 'Download this comparison as PNG'),
      ),
    );
    // The ranked list: stored pairs are buttons.
    replaceChildren(
      this.list,
      ...cmp.ranking.map((r, i) => {
        const label = `${pairLabel(r)}`;
        const value = `JS ${r.jsDivergence.toPrecision(3)} · max |Δ| ${r.maxAbsDiff.toPrecision(3)}`;
        const b = h('button', { type: 'button', class: `ranked${i === state.index ? ' active' : ''}`, testid: `ranked-head-${i}`, 'aria-pressed': i === state.index ? 'true' : 'false', title: value }, h('b', {}, label), ' ', h('span', { class: 'muted' }, value));
        if (i < this.stored) b.addEventListener('click', () => this.set({ index: i }));
        else b.disabled = true;
        return h('li', {}, b);
      }),
    );
    const input = comparisonDiffInput(cmp, { theme: state.theme, nameA: info.nameA, nameB: info.nameB, index: state.index, ranking: false });
    const width = embedded ? (this.mount.clientWidth || document.documentElement.clientWidth) - 480 : document.documentElement.clientWidth - 420;
    const L = diffHeatmapLayout({ ...input, frameWidth: Math.max(embedded ? 480 : 900, width), maxCell: 30 });
    this.layout = L;
    const c = sizeCanvas(this.canvas, L.width, L.height);
    c.fillStyle = theme.background;
    c.fillRect(0, 0, L.width, L.height);
    paintLayout(c, L.items, theme, this.canvas.width / Math.max(1, Math.ceil(L.width)));
    const pair = cmp.ranking[state.index]!;
    const d = this.canvas.dataset;
    d.index = String(state.index);
    d.layer = String(pair.layer);
    d.head = pair.head === null ? 'mean' : String(pair.head);
    d.layerB = String(pair.layerB);
    d.headB = pair.headB === null ? 'mean' : String(pair.headB);
    d.cell = String(L.cell);
    d.maxAbsDiff = String(L.maxAbsDiff);
    for (const p of L.panels) {
      d[`${p.name}X`] = String(p.x);
      d[`${p.name}Y`] = String(p.y);
    }
    this.hover(null);
  }

  private hover(e: PointerEvent | null): void {
    const L = this.layout;
    if (!L) return;
    const rows = this.cmp.rowsA.length;
    const cols = this.cmp.colsA.length;
    if (e) {
      for (const p of L.panels) {
        const k = Math.floor((e.offsetX - p.x) / L.cell);
        const q = Math.floor((e.offsetY - p.y) / L.cell);
        if (q < 0 || q >= rows || k < 0 || k >= cols) continue;
        const { a, b } = this.cmp.matrices(this.cmp.ranking[this.state.index]!);
        const i = q * cols + k;
        const lab = (u: { label: string }[], j: number) => u[j]!.label;
        replaceChildren(
          this.readout,
          `A: ${lab(this.cmp.rowsA, q)} → ${lab(this.cmp.colsA, k)} `,
          h('b', { testid: 'compare-a' }, fmtValue(a[i]!)),
          ` · B: ${lab(this.cmp.rowsB, q)} → ${lab(this.cmp.colsB, k)} `,
          h('b', { testid: 'compare-b' }, fmtValue(b[i]!)),
          ' · A − B ',
          h('b', { testid: 'compare-diff' }, fmtValue(a[i]! - b[i]!)),
        );
        this.readout.dataset.q = String(q);
        this.readout.dataset.k = String(k);
        return;
      }
    }
    const pair = this.cmp.ranking[this.state.index]!;
    replaceChildren(this.readout, h('span', { class: 'muted' }, `${pairLabel(pair)} · rank ${pair.rank} · JS ${pair.jsDivergence.toPrecision(3)} bits · hover a cell for A, B and A − B`));
    delete this.readout.dataset.q;
    delete this.readout.dataset.k;
  }
}

/** Mounts the comparison page from its header and blobs. */
export async function bootCompare(mount: HTMLElement, headerEl: HTMLElement, blob: (i: number) => Uint8Array, inflate: Inflate): Promise<void> {
  const header = JSON.parse(headerEl.textContent ?? '') as ComparePayload;
  if (header.format !== 'attnscope-compare') throw new Error(`unknown page data format '${String(header.format)}'`);
  const matrices: { a: Float32Array; b: Float32Array }[] = [];
  for (let i = 0; i < header.stored; i++) {
    const a = decodeValues(await inflate(blob(2 * i), header.blobRawLengths[2 * i]!), { kind: 'f32' });
    const b = decodeValues(await inflate(blob(2 * i + 1), header.blobRawLengths[2 * i + 1]!), { kind: 'f32' });
    matrices.push({ a, b });
  }
  const ranking = header.ranking;
  const cmp: Comparison = {
    alignment: header.alignment,
    matching: header.matching,
    stack: header.stack,
    rowsA: header.rowsA,
    colsA: header.colsA,
    rowsB: header.rowsB,
    colsB: header.colsB,
    ranking,
    note: header.note,
    matrices: (pair: HeadPair) => {
      const i = ranking.indexOf(pair as (typeof ranking)[number]);
      const m = matrices[i];
      if (!m) throw new Error(`pair ${i + 1} is not stored in this page`);
      return m;
    },
  };
  const info: CompareInfo = { nameA: header.nameA, nameB: header.nameB, stored: header.stored };
  if (header.textA !== undefined) info.textA = header.textA;
  if (header.textB !== undefined) info.textB = header.textB;
  if (header.theme !== undefined) info.theme = header.theme;
  new CompareApp(cmp, info, mount);
}
