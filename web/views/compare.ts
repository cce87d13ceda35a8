/**
 * The comparison page (src/views/html/compare-page.ts): A and B side by side and A − B on a
 * diverging scale (the layout the SVG export draws, src/views/layout/diff-heatmap.ts), hover for
 * the three values of a cell, and the ranked list of the pairs that changed most: clicking one
 * switches all three heatmaps to it. Export: the current figure as SVG or PNG.
 */
import type { Comparison, HeadPair } from '../../src/analysis/compare.js';
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

class CompareApp {
  private readonly state: State;
  private readonly canvas = h('canvas', { class: 'compare-canvas', testid: 'compare-canvas' });
  private readonly readout = h('div', { class: 'readout', testid: 'compare-readout' });
  private readonly list = h('ol', { class: 'ranking', testid: 'ranking' });
  private readonly toolbar = h('div', { class: 'toolbar' });
  private readonly status = h('span', { class: 'export-status muted', testid: 'compare-export-status' });
  private layout: DiffLayout | null = null;
  private readonly cmp: Comparison;

  constructor(
    private readonly header: ComparePayload,
    matrices: { a: Float32Array; b: Float32Array }[],
    mount: HTMLElement,
  ) {
    const dark = window.matchMedia?.('(prefers-color-scheme: dark)').matches;
    this.state = { index: 0, theme: header.theme ?? (dark ? 'dark' : 'light') };
    const ranking = header.ranking;
    this.cmp = {
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
    const texts = [header.textA ? `A: “${header.textA}”` : '', header.textB && header.textB !== header.textA ? `B: “${header.textB}”` : ''].filter(Boolean).join(' · ');
    const stored = header.stored < ranking.length ? `${header.stored} of ${ranking.length} pairs stored (the rest: numbers only)` : `${ranking.length} pairs`;
    const root = h(
      'div',
      { class: 'app compare', testid: 'app' },
      h(
        'header',
        { class: 'topbar' },
        h('span', { class: 'brand' }, 'attnscope'),
        h('span', { class: 'subtitle', testid: 'compare-title' }, `${header.nameA} vs ${header.nameB}`),
        texts ? h('span', { class: 'text muted', title: texts }, texts) : null,
      ),
      h('div', { class: 'bar' }, this.toolbar),
      h('p', { class: 'muted compare-note', testid: 'compare-note' }, `${header.note} · ${stored}`),
      this.readout,
      h('div', { class: 'compare-body' }, h('div', { class: 'scroll' }, this.canvas), h('div', { class: 'ranking-panel' }, h('h3', {}, 'Heads that changed most'), this.list)),
    );
    replaceChildren(mount, root);
    this.canvas.addEventListener('pointermove', (e) => this.hover(e));
    this.canvas.addEventListener('pointerleave', () => this.hover(null));
    this.render();
  }

  private set(patch: Partial<State>): void {
    Object.assign(this.state, patch);
    this.render();
  }

  private figure(forExport: boolean): string {
    return renderComparisonSvg(this.cmp, { theme: this.state.theme, nameA: this.header.nameA, nameB: this.header.nameB, index: this.state.index, ranking: forExport });
  }

  private async exportAs(kind: 'svg' | 'png'): Promise<void> {
    try {
      this.status.textContent = '';
      const svg = this.figure(true);
      const blob = kind === 'svg' ? new Blob([svg], { type: 'image/svg+xml' }) : await svgToPng(svg);
      const pair = this.header.ranking[this.state.index]!;
      const name = `attnscope-compare-${this.header.nameA}-vs-${this.header.nameB}-layer${pair.layer}-${pair.head === null ? 'mean' : `head${pair.head}`}`.replace(/[^A-Za-z0-9._-]+/g, '_');
      download(blob, `${name}.${kind}`);
    } catch (e) {
      this.status.textContent = `export failed: ${(e as Error).message}`;
    }
  }

  private render(): void {
    const { state, header } = this;
    const theme = getTheme(state.theme);
    document.documentElement.dataset.theme = theme.name;
    for (const [k, v] of Object.entries({ '--bg': theme.background, '--panel': theme.panel, '--text': theme.text, '--muted': theme.muted, '--grid': theme.grid, '--highlight': theme.highlight, '--special': theme.special })) {
      document.documentElement.style.setProperty(k, v);
    }
    replaceChildren(
      this.toolbar,
      select('compare-theme', 'theme', [
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
      ...header.ranking.map((r, i) => {
        const label = `${pairLabel(r)}`;
        const value = `JS ${r.jsDivergence.toPrecision(3)} · max |Δ| ${r.maxAbsDiff.toPrecision(3)}`;
        const b = h('button', { type: 'button', class: `ranked${i === state.index ? ' active' : ''}`, testid: `ranked-head-${i}`, 'aria-pressed': i === state.index ? 'true' : 'false', title: value }, h('b', {}, label), ' ', h('span', { class: 'muted' }, value));
        if (i < header.stored) b.addEventListener('click', () => this.set({ index: i }));
        else b.disabled = true;
        return h('li', {}, b);
      }),
    );
    const input = comparisonDiffInput(this.cmp, { theme: state.theme, nameA: header.nameA, nameB: header.nameB, index: state.index, ranking: false });
    const L = diffHeatmapLayout({ ...input, frameWidth: Math.max(900, document.documentElement.clientWidth - 420), maxCell: 30 });
    this.layout = L;
    const c = sizeCanvas(this.canvas, L.width, L.height);
    c.fillStyle = theme.background;
    c.fillRect(0, 0, L.width, L.height);
    paintLayout(c, L.items, theme, this.canvas.width / Math.max(1, Math.ceil(L.width)));
    const pair = header.ranking[state.index]!;
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
    const rows = this.header.rowsA.length;
    const cols = this.header.colsA.length;
    if (e) {
      for (const p of L.panels) {
        const k = Math.floor((e.offsetX - p.x) / L.cell);
        const q = Math.floor((e.offsetY - p.y) / L.cell);
        if (q < 0 || q >= rows || k < 0 || k >= cols) continue;
        const { a, b } = this.cmp.matrices(this.header.ranking[this.state.index]!);
        const i = q * cols + k;
        const lab = (u: { label: string }[], j: number) => u[j]!.label;
        replaceChildren(
          this.readout,
          `A: ${lab(this.header.rowsA, q)} → ${lab(this.header.colsA, k)} `,
          h('b', { testid: 'compare-a' }, fmtValue(a[i]!)),
          ` · B: ${lab(this.header.rowsB, q)} → ${lab(this.header.colsB, k)} `,
          h('b', { testid: 'compare-b' }, fmtValue(b[i]!)),
          ' · A − B ',
          h('b', { testid: 'compare-diff' }, fmtValue(a[i]! - b[i]!)),
        );
        this.readout.dataset.q = String(q);
        this.readout.dataset.k = String(k);
        return;
      }
    }
    const pair = this.header.ranking[this.state.index]!;
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
  new CompareApp(header, matrices, mount);
}
