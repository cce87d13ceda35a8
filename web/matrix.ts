/**
 * Attention matrices on a canvas: one (with token labels on both axes) or several as small
 * multiples, a colour legend, and hit-testing for hover. Used by the heatmap view and by the
 * model view's enlarged cell. Geometry and colours follow the SVG heatmap export.
 */
import { type WeightScale, colorLut, sequentialInterpolator, textOn, weightScale } from '../src/views/colors.js';
import { LAYOUT, type Theme } from '../src/views/theme.js';
import { sizeCanvas } from './dom.js';
import { font, measure, truncate } from './text.js';
import { h } from './dom.js';

export interface MatrixSpec {
  values: Float32Array;
  /** Title above the matrix (small multiples). */
  title?: string;
  /** Colour mark beside the title (the head colour). */
  color?: string;
}

export interface MatrixLabels {
  query: string[];
  key: string[];
  querySpecial: boolean[];
  keySpecial: boolean[];
  /** Generation traces: labels of generated tokens (drawn in italics, in the theme's generated colour). */
  queryGenerated?: boolean[];
  keyGenerated?: boolean[];
}

/** Generation marks: where the generated rows / columns start (dashed), and the newest token's row (outlined). */
export interface MatrixMarks {
  queryBoundary: number | null;
  keyBoundary: number | null;
  newest: number | null;
}

export interface MatrixGridOptions {
  matrices: MatrixSpec[];
  nq: number;
  nk: number;
  labels: MatrixLabels;
  theme: Theme;
  log: boolean;
  /** Legend caption. */
  caption: string;
  /** Axis names [queries, keys]. */
  axes: [string, string];
  /** Largest side of one matrix in CSS pixels (default: the heatmap's 720 for one, 200 for many). */
  maxSide?: number;
  marks?: MatrixMarks;
}

export interface MatrixHit {
  matrix: number;
  q: number;
  k: number;
  value: number;
}

/** Fast value → [0, 1] position matching WeightScale.t (linear or log, clamped). */
export function scalePosition(scale: WeightScale): (v: number) => number {
  const [min, max] = scale.domain;
  if (scale.log) {
    const l0 = Math.log(min);
    const span = Math.log(max) - l0 || 1;
    return (v) => (v > min ? Math.min(1, (Math.log(v) - l0) / span) : 0);
  }
  const span = max - min || 1;
  return (v) => Math.max(0, Math.min(1, (v - min) / span));
}

/** The colour scale of a set of matrices: 0…max (or log from the smallest positive value). */
export function matrixScale(theme: Theme, matrices: readonly Float32Array[], log: boolean): WeightScale {
  let max = 0;
  let minPos = Infinity;
  for (const m of matrices) {
    for (let i = 0; i < m.length; i++) {
      const v = m[i]!;
      if (v > max) max = v;
      if (v > 0 && v < minPos) minPos = v;
    }
  }
  if (!(max > 0)) max = 1;
  const min = log ? Math.max(Number.isFinite(minPos) ? minPos : max * 1e-6, max * 1e-6) : undefined;
  return weightScale(theme, { max, log, min });
}

/**
 * RGBA pixels of a matrix at (at most) `maxW` × `maxH`, area-averaged when the matrix is larger,
 * so every value still contributes.
 */
export function matrixImage(values: ArrayLike<number>, rows: number, cols: number, pos: (v: number) => number, lut: Uint8Array, maxW = Infinity, maxH = Infinity): ImageData {
  const w = Math.max(1, Math.min(cols, Math.floor(maxW)));
  const hh = Math.max(1, Math.min(rows, Math.floor(maxH)));
  const img = new ImageData(w, hh);
  const px = img.data;
  const put = (i: number, v: number) => {
    const c = Math.round(pos(v) * 255) * 3;
    px[i] = lut[c]!;
    px[i + 1] = lut[c + 1]!;
    px[i + 2] = lut[c + 2]!;
    px[i + 3] = 255;
  };
  if (w === cols && hh === rows) {
    for (let i = 0; i < rows * cols; i++) put(i * 4, values[i]!);
    return img;
  }
  const acc = new Float64Array(w);
  for (let y = 0; y < hh; y++) {
    const r0 = Math.floor((y * rows) / hh);
    const r1 = Math.max(r0 + 1, Math.floor(((y + 1) * rows) / hh));
    acc.fill(0);
    for (let r = r0; r < r1; r++) {
      const base = r * cols;
      for (let x = 0; x < w; x++) {
        const c0 = Math.floor((x * cols) / w);
        const c1 = Math.max(c0 + 1, Math.floor(((x + 1) * cols) / w));
        let s = 0;
        for (let c = c0; c < c1; c++) s += values[base + c]!;
        acc[x]! += s / (c1 - c0);
      }
    }
    for (let x = 0; x < w; x++) put((y * w + x) * 4, acc[x]! / (r1 - r0));
  }
  return img;
}

/** Draws a vertical legend (gradient bar, ticks, caption) with its top-left at (x, y); returns its width. */
export function drawLegend(c: CanvasRenderingContext2D, scale: WeightScale, theme: Theme, x: number, y: number, barH: number, caption: string): number {
  const sfs = LAYOUT.smallFontSize;
  const barW = LAYOUT.heatmap.legendWidth;
  c.font = font(sfs);
  c.fillStyle = theme.muted;
  c.textAlign = 'left';
  c.textBaseline = 'alphabetic';
  c.fillText(caption, x, y + sfs);
  const top = y + sfs + 10;
  const grad = c.createLinearGradient(0, top, 0, top + barH);
  for (let i = 0; i <= 16; i++) grad.addColorStop(i / 16, scale.interpolate(1 - i / 16));
  c.fillStyle = grad;
  c.fillRect(x, top, barW, barH);
  c.strokeStyle = theme.grid;
  c.lineWidth = 1;
  c.strokeRect(x - 0.5, top - 0.5, barW + 1, barH + 1);
  let w = measure(caption, sfs);
  c.fillStyle = theme.muted;
  c.strokeStyle = theme.muted;
  for (const t of scale.ticks(5)) {
    const ty = top + barH * (1 - scale.t(t));
    c.beginPath();
    c.moveTo(x + barW, ty);
    c.lineTo(x + barW + 4, ty);
    c.stroke();
    const label = scale.format(t);
    c.fillText(label, x + barW + 6, ty + sfs * 0.35);
    w = Math.max(w, barW + 6 + measure(label, sfs));
  }
  return w;
}

interface Layout {
  cell: number;
  cols: number;
  originX: number;
  originY: number;
  mw: number;
  mh: number;
  gapX: number;
  gapY: number;
}

export class MatrixGrid {
  readonly el = h('div', { class: 'matrix-grid' });
  readonly canvas = h('canvas', { class: 'matrix-canvas' });
  private readonly overlay = h('canvas', { class: 'matrix-overlay' });
  private layout: Layout | null = null;
  private opts: MatrixGridOptions | null = null;
  private hoverCb: ((hit: MatrixHit | null, e: PointerEvent) => void) | null = null;
  scale: WeightScale | null = null;

  constructor(testid: string) {
    this.canvas.setAttribute('data-testid', testid);
    this.el.append(this.canvas, this.overlay);
    this.canvas.addEventListener('pointermove', (e) => this.hoverCb?.(this.hit(e), e));
    this.canvas.addEventListener('pointerleave', (e) => {
      this.mark(null);
      this.hoverCb?.(null, e);
    });
  }

  onHover(cb: (hit: MatrixHit | null, e: PointerEvent) => void): void {
    this.hoverCb = cb;
  }

  /** The matrix cell under a pointer event, or null. */
  hit(e: { offsetX: number; offsetY: number }): MatrixHit | null {
    const L = this.layout;
    const o = this.opts;
    if (!L || !o) return null;
    for (let i = 0; i < o.matrices.length; i++) {
      const x0 = L.originX + (i % L.cols) * (L.mw + L.gapX);
      const y0 = L.originY + Math.floor(i / L.cols) * (L.mh + L.gapY);
      const k = Math.floor((e.offsetX - x0) / L.cell);
      const q = Math.floor((e.offsetY - y0) / L.cell);
      if (q >= 0 && q < o.nq && k >= 0 && k < o.nk) {
        this.mark({ matrix: i, q, k, value: 0 });
        return { matrix: i, q, k, value: o.matrices[i]!.values[q * o.nk + k]! };
      }
    }
    this.mark(null);
    return null;
  }

  /** Outlines a cell (and its row and column) on the overlay. */
  mark(hit: MatrixHit | null): void {
    const L = this.layout;
    const o = this.opts;
    if (!L || !o) return;
    const c = this.overlay.getContext('2d')!;
    c.save();
    c.setTransform(1, 0, 0, 1, 0, 0);
    c.clearRect(0, 0, this.overlay.width, this.overlay.height);
    c.restore();
    if (!hit) return;
    const x0 = L.originX + (hit.matrix % L.cols) * (L.mw + L.gapX);
    const y0 = L.originY + Math.floor(hit.matrix / L.cols) * (L.mh + L.gapY);
    c.strokeStyle = o.theme.name === 'dark' ? 'rgba(255,255,255,0.45)' : 'rgba(0,0,0,0.35)';
    c.lineWidth = 1;
    c.strokeRect(x0 - 0.5, y0 + hit.q * L.cell - 0.5, L.mw + 1, L.cell + 1);
    c.strokeRect(x0 + hit.k * L.cell - 0.5, y0 - 0.5, L.cell + 1, L.mh + 1);
    c.strokeStyle = o.theme.name === 'dark' ? '#ffffff' : '#000000';
    c.lineWidth = 2;
    c.strokeRect(x0 + hit.k * L.cell - 1, y0 + hit.q * L.cell - 1, L.cell + 2, L.cell + 2);
  }

  draw(o: MatrixGridOptions): void {
    this.opts = o;
    const H = LAYOUT.heatmap;
    const m = LAYOUT.margin;
    const n = o.matrices.length;
    const single = n === 1;
    const side = Math.max(o.nq, o.nk);
    const cell = single
      ? Math.max(H.minCell, Math.min(H.cell, (o.maxSide ?? H.maxMatrix) / side))
      : Math.max(1, Math.min(H.cell, (o.maxSide ?? H.multipleSide) / side));
    const fs = single ? Math.min(LAYOUT.fontSize, Math.max(7, cell * 0.62)) : Math.min(LAYOUT.smallFontSize, Math.max(6, cell * 0.72));
    const step = Math.max(1, Math.ceil((fs * 1.1) / cell));
    const showLabels = single || cell >= 4;
    const qLabels = o.labels.query.map((l) => truncate(l));
    const kLabels = o.labels.key.map((l) => truncate(l));
    const widest = (labels: string[]) => Math.max(20, ...labels.filter((_, i) => i % step === 0).map((l) => measure(l, fs)));
    const qW = showLabels ? widest(qLabels) + 8 : 0;
    const kH = showLabels ? widest(kLabels) + 8 : 0;
    const axisFs = LAYOUT.smallFontSize;
    const headFs = LAYOUT.smallFontSize;
    const cols = single ? 1 : n <= 4 ? n : n <= 16 ? 4 : Math.ceil(Math.sqrt(n));
    const rows = Math.ceil(n / cols);
    const gapX = single ? 0 : 16;
    const gapY = single ? 0 : headFs + 12;
    const mw = o.nk * cell;
    const mh = o.nq * cell;
    const originX = m + axisFs + 8 + qW;
    const originY = m + axisFs + 6 + kH + (single ? 2 : headFs + 8);
    const gridW = cols * (mw + gapX) - gapX;
    const gridH = rows * (mh + gapY) - gapY;
    const scale = matrixScale(o.theme, o.matrices.map((x) => x.values), o.log);
    this.scale = scale;
    const legendX = originX + gridW + 24;
    const legendH = Math.min(H.legendHeight, Math.max(100, gridH - 20));
    const legendW = Math.max(90, measure(o.caption + (o.log ? ' (log)' : ''), LAYOUT.smallFontSize) + 10);
    const width = legendX + legendW + m;
    const height = originY + Math.max(gridH, legendH + 30) + m;
    this.layout = { cell, cols, originX, originY, mw, mh, gapX, gapY };
    // Geometry for tests and tools: where matrix i's cell (q, k) is.
    for (const [k, v] of Object.entries({ cell, cols, originX, originY, mw, mh, gapX, gapY, nq: o.nq, nk: o.nk })) this.canvas.dataset[k] = String(v);
    if (o.marks?.newest != null) this.canvas.dataset.newest = String(o.marks.newest);
    else delete this.canvas.dataset.newest;

    const c = sizeCanvas(this.canvas, width, height);
    sizeCanvas(this.overlay, width, height);
    const theme = o.theme;
    c.fillStyle = theme.background;
    c.fillRect(0, 0, width, height);
    // Axis names.
    c.font = font(axisFs);
    c.fillStyle = theme.muted;
    c.textAlign = 'center';
    c.fillText(`${o.axes[1]} →`, originX + (single ? mw : gridW) / 2, m + axisFs);
    c.save();
    c.translate(m + axisFs / 2, originY + (single ? mh : gridH) / 2);
    c.rotate(Math.PI / 2);
    c.fillText(`${o.axes[0]} →`, 0, 0);
    c.restore();

    const lut = colorLut(sequentialInterpolator(theme));
    const pos = scalePosition(scale);
    const off = document.createElement('canvas');
    const dpr = this.canvas.width / width;
    o.matrices.forEach((spec, i) => {
      const col = i % cols;
      const row = Math.floor(i / cols);
      const x0 = originX + col * (mw + gapX);
      const y0 = originY + row * (mh + gapY);
      // Pixels at matrix resolution (averaged down when the cells are smaller than a device pixel).
      const img = matrixImage(spec.values, o.nq, o.nk, pos, lut, mw * dpr, mh * dpr);
      off.width = img.width;
      off.height = img.height;
      off.getContext('2d')!.putImageData(img, 0, 0);
      c.imageSmoothingEnabled = img.width < mw * dpr ? false : true;
      c.drawImage(off, x0, y0, mw, mh);
      c.strokeStyle = theme.grid;
      c.lineWidth = 1;
      c.strokeRect(x0 - 0.5, y0 - 0.5, mw + 1, mh + 1);
      if (o.marks) drawMarks(c, o.marks, x0, y0, mw, mh, mh / o.nq, mw / o.nk, theme);
      if (spec.title) {
        if (spec.color) {
          c.fillStyle = spec.color;
          c.fillRect(x0, y0 - headFs - 7, 8, 8);
        }
        c.font = font(headFs);
        c.fillStyle = theme.muted;
        c.textAlign = 'left';
        c.fillText(spec.title, x0 + 12, y0 - 6);
      }
      // Values inside large cells.
      if (single && cell >= H.cell) {
        const vfs = Math.min(LAYOUT.smallFontSize, cell * 0.34);
        c.font = font(vfs);
        c.textAlign = 'center';
        for (let q = 0; q < o.nq; q++) {
          for (let k = 0; k < o.nk; k++) {
            const v = spec.values[q * o.nk + k]!;
            c.fillStyle = textOn(scale.color(v));
            c.fillText(v === 0 ? '0' : v >= 0.995 ? '1' : v.toFixed(2).replace(/^0/, ''), x0 + (k + 0.5) * cell, y0 + (q + 0.5) * cell + vfs * 0.36);
          }
        }
      }
      if (!showLabels) return;
      c.font = font(fs);
      if (col === 0) {
        c.textAlign = 'right';
        const newest = o.marks?.newest ?? null;
        qLabels.forEach((l, q) => {
          if (q % step && q !== newest) return;
          const gen = o.labels.queryGenerated?.[q] ?? false;
          c.font = font(fs, q === newest ? 'bold' : '', gen);
          c.fillStyle = o.labels.querySpecial[q] ? theme.special : gen ? theme.generated : theme.text;
          c.fillText(l, x0 - 6, y0 + (q + 0.5) * cell + fs * 0.36);
        });
      }
      if (row === 0) {
        c.textAlign = 'left';
        const yb = y0 - (single ? 6 : headFs + 12);
        kLabels.forEach((l, k) => {
          if (k % step) return;
          c.save();
          c.translate(x0 + (k + 0.5) * cell + fs * 0.36, yb);
          c.rotate(-Math.PI / 2);
          const gen = o.labels.keyGenerated?.[k] ?? false;
          c.font = font(fs, '', gen);
          c.fillStyle = o.labels.keySpecial[k] ? theme.special : gen ? theme.generated : theme.text;
          c.fillText(l, 0, 0);
          c.restore();
        });
      }
    });
    drawLegend(c, scale, theme, legendX, originY, legendH, o.caption + (o.log ? ' (log)' : ''));
    this.el.style.width = `${Math.ceil(width)}px`;
    this.el.style.height = `${Math.ceil(height)}px`;
  }
}

/** Dashed prompt | generated boundaries and the newest row's outline over a matrix drawn at (x0, y0). */
export function drawMarks(c: CanvasRenderingContext2D, marks: MatrixMarks, x0: number, y0: number, mw: number, mh: number, rowH: number, colW: number, theme: Theme): void {
  c.save();
  c.strokeStyle = theme.generated;
  c.lineWidth = rowH >= 6 ? 1.25 : 1;
  c.setLineDash(rowH >= 6 ? [4, 3] : [2, 2]);
  c.beginPath();
  if (marks.queryBoundary !== null) {
    c.moveTo(x0, y0 + marks.queryBoundary * rowH);
    c.lineTo(x0 + mw, y0 + marks.queryBoundary * rowH);
  }
  if (marks.keyBoundary !== null) {
    c.moveTo(x0 + marks.keyBoundary * colW, y0);
    c.lineTo(x0 + marks.keyBoundary * colW, y0 + mh);
  }
  c.stroke();
  c.setLineDash([]);
  if (marks.newest !== null) {
    const w = rowH >= 6 ? 2 : 1.5;
    c.strokeStyle = theme.text;
    c.lineWidth = w;
    c.strokeRect(x0 - w / 2, y0 + marks.newest * rowH - w / 2, mw + w, rowH + w);
  }
  c.restore();
}
