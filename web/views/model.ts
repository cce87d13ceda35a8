/**
 * Interactive model view: every chosen layer × head as a small attention image on one canvas
 * (one draw per cell, whatever the input length), hover to identify a cell, click to open it large
 * with token labels. Stays interactive at 12 × 12 heads and 512 tokens: images are area-averaged
 * to the cell size and drawn layer by layer across animation frames.
 */
import { colorLut, headColors, sequentialInterpolator, weightScale } from '../../src/views/colors.js';
import { firstGeneratedBoundary } from '../../src/views/svg/common.js';
import { renderModelView } from '../../src/views/svg/model-view.js';
import { LAYOUT } from '../../src/views/theme.js';
import type { DisplayStack } from '../../src/views/tokens.js';
import type { Ctx } from '../context.js';
import { button, checkbox, h, replaceChildren, select, sizeCanvas } from '../dom.js';
import { exportButtons } from '../export.js';
import { type MatrixMarks, MatrixGrid, drawLegend, drawMarks, matrixImage, scalePosition } from '../matrix.js';
import { font } from '../text.js';
import { stackHeaders } from './common.js';

interface GridLayout {
  layers: number[];
  heads: number[];
  gridX: number;
  gridY: number;
  cw: number;
  ch: number;
  gap: number;
}

export class ModelView {
  readonly el = h('div', { class: 'view model-view', testid: 'model-view' });
  private readonly toolbar = h('div', { class: 'toolbar' });
  private readonly chooser = h('div', { class: 'chooser' });
  private readonly readout = h('div', { class: 'readout', testid: 'model-readout' });
  private readonly canvas = h('canvas', { class: 'model-canvas', testid: 'model-canvas' });
  private readonly detail = h('div', { class: 'model-detail', testid: 'model-detail', role: 'dialog' });
  private readonly detailGrid = new MatrixGrid('model-detail-canvas');
  private readonly detailReadout = h('div', { class: 'readout', testid: 'model-detail-readout' });
  private ds: DisplayStack | null = null;
  private layout: GridLayout | null = null;
  private key = '';
  private drawToken = 0;
  private detailKey = '';

  constructor(private readonly ctx: Ctx) {
    this.el.append(this.toolbar, this.chooser, this.readout, h('div', { class: 'scroll' }, this.canvas), this.detail);
    this.canvas.addEventListener('pointermove', (e) => {
      const cell = this.cellAt(e.offsetX, e.offsetY);
      this.canvas.style.cursor = cell ? 'pointer' : '';
      if (!cell) {
        this.ctx.tooltip.hide();
        return;
      }
      this.ctx.tooltip.show(e.clientX, e.clientY, `layer ${cell.layer} · head ${cell.head}`, 'click to open');
    });
    this.canvas.addEventListener('pointerleave', () => this.ctx.tooltip.hide());
    this.canvas.addEventListener('click', (e) => {
      const cell = this.cellAt(e.offsetX, e.offsetY);
      if (cell) this.ctx.set({ modelOpen: cell });
    });
    this.detailGrid.onHover((hit, e) => {
      const ds = this.ds;
      const open = this.ctx.state.modelOpen;
      if (!ds || !open) return;
      if (!hit) {
        this.ctx.tooltip.hide();
        replaceChildren(this.detailReadout, h('span', { class: 'muted' }, 'hover a cell for its exact value'));
        this.detailReadout.removeAttribute('data-value');
        return;
      }
      const line = `${hit.q} “${this.ctx.label(ds.queryTokens[hit.q]!)}” → ${hit.k} “${this.ctx.label(ds.keyTokens[hit.k]!)}”`;
      const value = this.ctx.fmtWeight(hit.value);
      replaceChildren(this.detailReadout, `${line}: `, h('b', {}, value));
      this.detailReadout.setAttribute('data-value', String(hit.value));
      const q = ds.queryTokens[hit.q]!;
      const k = ds.keyTokens[hit.k]!;
      const tips = [q.generated ? `${hit.q}: ${this.ctx.tokenTip('query', q)}` : '', k.generated ? `${hit.k}: ${this.ctx.tokenTip('key', k)}` : ''].filter(Boolean);
      this.ctx.tooltip.show(e.clientX, e.clientY, line, value, ...tips);
    });
  }

  /** Which layer × head cell a canvas position falls in. */
  cellAt(x: number, y: number): { layer: number; head: number } | null {
    const L = this.layout;
    if (!L) return null;
    const j = Math.floor((x - L.gridX) / (L.cw + L.gap));
    const i = Math.floor((y - L.gridY) / (L.ch + L.gap));
    if (i < 0 || j < 0 || i >= L.layers.length || j >= L.heads.length) return null;
    if (x - L.gridX - j * (L.cw + L.gap) > L.cw || y - L.gridY - i * (L.ch + L.gap) > L.ch) return null;
    return { layer: L.layers[i]!, head: L.heads[j]! };
  }

  private chosen(flags: boolean[]): number[] {
    return flags.flatMap((on, i) => (on ? [i] : []));
  }

  update(): void {
    const { ctx } = this;
    const { state } = ctx;
    replaceChildren(
      this.toolbar,
      select('model-normalize', 'colour', [
        { value: 'cell', label: 'per cell (cell max = darkest)' },
        { value: 'global', label: 'global (0 to 1)' },
      ] as const, state.modelNormalize, (modelNormalize) => ctx.set({ modelNormalize })),
      checkbox('model-log', 'log scale', state.modelLog, (modelLog) => ctx.set({ modelLog })),
      h('span', { class: 'spacer' }),
      exportButtons(ctx, 'model', () =>
        renderModelView(ctx.trace, {
          stack: state.stack,
          theme: state.theme,
          hideSpecial: state.hideSpecial,
          mergeSubwords: state.mergeSubwords,
          layers: this.chosen(state.modelLayers),
          heads: this.chosen(state.modelHeads),
          normalize: state.modelNormalize,
          log: state.modelLog,
          step: ctx.step(),
        }),
      ),
    );
    const chips = (kind: 'layer' | 'head', flags: boolean[], set: (f: boolean[]) => void) =>
      h(
        'div',
        { class: 'chips', testid: `model-${kind}s` },
        h('span', { class: 'muted' }, `${kind}s`),
        ...flags.map((on, i) => {
          const b = h('button', { type: 'button', class: `chip${on ? ' on' : ''}`, testid: `model-${kind}-${i}`, 'aria-pressed': on ? 'true' : 'false' }, String(i));
          b.addEventListener('click', () => {
            const f = flags.slice();
            f[i] = !f[i];
            if (f.some(Boolean)) set(f);
          });
          b.addEventListener('dblclick', () => set(flags.map((_, k) => k === i)));
          return b;
        }),
        button(`model-${kind}s-all`, 'all', () => set(flags.map(() => true))),
      );
    replaceChildren(
      this.chooser,
      chips('layer', state.modelLayers, (modelLayers) => ctx.set({ modelLayers })),
      chips('head', state.modelHeads, (modelHeads) => ctx.set({ modelHeads })),
    );
    const layers = this.chosen(state.modelLayers);
    const heads = this.chosen(state.modelHeads);
    const key = [state.stack, state.hideSpecial, state.mergeSubwords, state.theme, state.modelNormalize, state.modelLog, layers.join(','), heads.join(','), ctx.step() ?? 'all'].join('|');
    if (key !== this.key) {
      this.key = key;
      try {
        this.ds = ctx.display(layers);
        this.draw(this.ds, layers, heads);
      } catch (e) {
        this.ds = null;
        replaceChildren(this.readout, (e as Error).message);
      }
    }
    this.updateDetail();
  }

  private draw(ds: DisplayStack, layers: number[], heads: number[]): void {
    const { ctx } = this;
    const { state } = ctx;
    const theme = ctx.theme();
    const nq = ds.queryTokens.length;
    const nk = ds.keyTokens.length;
    const m = LAYOUT.margin;
    const fs = LAYOUT.smallFontSize;
    const gap = LAYOUT.model.cellGap;
    // Cells follow the matrix's aspect ratio within 2:1 (as in the SVG export), so that a wide
    // matrix — cross attention, or its first rows at a generation step — keeps readable rows;
    // they fit the width of the page at 40 to 96 pixels per unit.
    const ratio = nk / nq;
    const widen = Math.min(2, Math.max(0.5, Math.sqrt(ratio)));
    const avail = Math.max(400, (this.el.clientWidth || window.innerWidth) - 2 * m - 200);
    const cell = Math.max(40, Math.min(96, Math.floor(avail / heads.length / widen) - gap));
    const cw = cell * widen;
    const ch = Math.max(cell / 2, Math.min(2 * cell, cw / ratio));
    const gridX = m + 64;
    const gridY = m + fs + 12;
    const gridW = heads.length * (cw + gap) - gap;
    const gridH = layers.length * (ch + gap) - gap;
    const width = gridX + gridW + 24 + 130;
    const height = gridY + Math.max(gridH, 200) + m;
    this.layout = { layers, heads, gridX, gridY, cw, ch, gap };
    for (const [k, v] of Object.entries({ gridX, gridY, cw, ch, gap })) this.canvas.dataset[k] = String(v);
    this.canvas.dataset.layers = layers.join(',');
    this.canvas.dataset.heads = heads.join(',');
    const c = sizeCanvas(this.canvas, width, height);
    const dpr = this.canvas.width / width;
    c.fillStyle = theme.background;
    c.fillRect(0, 0, width, height);
    const colors = headColors(ds.numHeads);
    c.font = font(fs);
    c.textAlign = 'center';
    heads.forEach((hd, j) => {
      const x = gridX + j * (cw + gap);
      c.fillStyle = theme.muted;
      c.fillText(`head ${hd}`, x + cw / 2, m + fs);
      c.fillStyle = colors[hd]!;
      c.fillRect(x, m + fs + 4, cw, 3);
    });
    c.textAlign = 'right';
    layers.forEach((l, i) => {
      c.fillStyle = theme.muted;
      c.fillText(`layer ${l}`, gridX - 8, gridY + i * (ch + gap) + ch / 2 + fs * 0.36);
    });
    const normalize = state.modelNormalize;
    const log = state.modelLog;
    const legendScale = weightScale(theme, { max: 1, log, min: log ? 1e-4 : 0 });
    drawLegend(c, legendScale, theme, gridX + gridW + 24, gridY, Math.min(LAYOUT.heatmap.legendHeight, Math.max(80, gridH - 24)), normalize === 'cell' ? 'weight / cell max' : 'attention weight');
    const lut = colorLut(sequentialInterpolator(theme));
    const off = document.createElement('canvas');
    const marks = marksOf(ds);
    this.canvas.dataset.nq = String(nq);
    this.canvas.dataset.nk = String(nk);
    if (ds.newest !== null) this.canvas.dataset.newest = String(ds.newest);
    else delete this.canvas.dataset.newest;
    const token = ++this.drawToken;
    this.canvas.setAttribute('data-drawn', 'false');
    const started = performance.now();
    let row = 0;
    const drawRow = () => {
      if (token !== this.drawToken) return; // a newer draw started
      const frameStart = performance.now();
      // Draw layers until ~30 ms have passed, then yield to the browser.
      while (row < layers.length && (row === 0 || performance.now() - frameStart < 30)) {
        const l = layers[row]!;
        const data = ds.layers[l]!;
        heads.forEach((hd, j) => {
          const offset = hd * nq * nk;
          const values = data.subarray(offset, offset + nq * nk);
          let max = 0;
          for (let p = 0; p < values.length; p++) if (values[p]! > max) max = values[p]!;
          const scale = weightScale(theme, { max: normalize === 'cell' ? max : 1, log });
          const img = matrixImage(values, nq, nk, scalePosition(scale), lut, cw * dpr, ch * dpr);
          off.width = img.width;
          off.height = img.height;
          off.getContext('2d')!.putImageData(img, 0, 0);
          const x = gridX + j * (cw + gap);
          const y = gridY + row * (ch + gap);
          c.imageSmoothingEnabled = img.width >= cw * dpr;
          c.drawImage(off, x, y, cw, ch);
          c.strokeStyle = theme.grid;
          c.lineWidth = 1;
          c.strokeRect(x - 0.5, y - 0.5, cw + 1, ch + 1);
          drawMarks(c, marks, x, y, cw, ch, ch / nq, cw / nk, theme);
        });
        row++;
      }
      if (row < layers.length) requestAnimationFrame(drawRow);
      else {
        this.canvas.setAttribute('data-drawn', 'true');
        this.canvas.setAttribute('data-draw-ms', (performance.now() - started).toFixed(1));
      }
    };
    drawRow();
    const [qName, kName] = stackHeaders(state.stack);
    const notes = [
      marks.queryBoundary !== null || marks.keyBoundary !== null ? 'dashed: where the generated tokens start' : '',
      ds.newest !== null ? `outlined: the newest token's row (${ds.newest} “${ctx.label(ds.queryTokens[ds.newest]!)}”)` : '',
    ].filter(Boolean);
    replaceChildren(
      this.readout,
      h('span', { class: 'muted', testid: 'model-note' }, `${layers.length} layers × ${heads.length} heads · each cell: ${qName} ↓ × ${kName} → (${nq} × ${nk})${notes.map((n) => ` · ${n}`).join('')} · click a cell to open it`),
    );
  }

  private updateDetail(): void {
    const { ctx } = this;
    const { state } = ctx;
    const open = state.modelOpen;
    const ds = this.ds;
    if (!open || !ds) {
      this.detail.style.display = 'none';
      this.detailKey = '';
      return;
    }
    const key = [open.layer, open.head, this.key, state.prettify].join('|');
    this.detail.style.display = 'flex';
    if (key === this.detailKey) return;
    this.detailKey = key;
    const d = ctx.display([open.layer]);
    const nq = d.queryTokens.length;
    const nk = d.keyTokens.length;
    const values = d.layers[open.layer]!.subarray(open.head * nq * nk, (open.head + 1) * nq * nk);
    const close = button('model-detail-close', '✕ close', () => ctx.set({ modelOpen: null }), 'Close (Esc)');
    const title = h('div', { class: 'detail-title', testid: 'model-detail-title' }, `layer ${open.layer} · head ${open.head}`);
    const panel = h('div', { class: 'detail-panel' }, h('div', { class: 'detail-head' }, title, h('span', { class: 'spacer' }), close), this.detailReadout, h('div', { class: 'scroll' }, this.detailGrid.el));
    replaceChildren(this.detail, panel);
    this.detail.onclick = (e) => {
      if (e.target === this.detail) ctx.set({ modelOpen: null });
    };
    this.detailGrid.draw({
      matrices: [{ values }],
      nq,
      nk,
      labels: {
        query: d.queryTokens.map((t) => ctx.label(t)),
        key: d.keyTokens.map((t) => ctx.label(t)),
        querySpecial: d.queryTokens.map((t) => t.special),
        keySpecial: d.keyTokens.map((t) => t.special),
        queryGenerated: d.queryTokens.map((t) => t.generated),
        keyGenerated: d.keyTokens.map((t) => t.generated),
      },
      theme: ctx.theme(),
      log: state.modelLog,
      caption: 'attention weight',
      axes: stackHeaders(state.stack),
      marks: marksOf(d),
    });
    replaceChildren(this.detailReadout, h('span', { class: 'muted' }, 'hover a cell for its exact value'));
  }
}

function marksOf(ds: DisplayStack): MatrixMarks {
  return { queryBoundary: firstGeneratedBoundary(ds.queryTokens), keyBoundary: firstGeneratedBoundary(ds.keyTokens), newest: ds.newest };
}
