/**
 * Attention matrices on a canvas: one (with token labels on both axes) or several as small
 * multiples, a colour legend, and hit-testing for hover. Used by the heatmap view and by the
 * model view's enlarged cell. Geometry and colours follow the SVG heatmap export.
 */
import { type WeightScale, colorLut, divergingInterpolator, parseColor, scaleOf, sequentialInterpolator, textOn } from '../src/views/colors.js';
import { type Item, type MatrixItem, downsample } from '../src/views/layout/common.js';
import { type GridLayout, type GridToken, matrixGridLayout } from '../src/views/layout/heatmap.js';
import { LAYOUT, type Theme } from '../src/views/theme.js';
import { h, sizeCanvas } from './dom.js';
import { paintItems } from './paint.js';
import { font } from './text.js';

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
  /** 1 per masked cell (nq × nk): drawn blank, "masked" on hover. */
  masked?: Uint8Array | null;
  /** Sentence segments of the rows and columns (a pair's boundary is marked). */
  querySegments?: readonly number[];
  keySegments?: readonly number[];
  /** Token label tooltips. */
  queryTips?: readonly (string | undefined)[];
  keyTips?: readonly (string | undefined)[];
  /** Space to fill (default: the export's 1200 × 720). */
  frame?: { width?: number; height?: number };
  /** Largest cell side (default 22). */
  maxCell?: number;
  /** Write values in large cells (default true). */
  showValues?: boolean;
  /** Longest label in characters (default LAYOUT.maxLabelChars). */
  labelChars?: number;
}

export interface MatrixHit {
  matrix: number;
  q: number;
  k: number;
  value: number;
  /** The model masked this entry (no weight was possible). */
  masked: boolean;
}

/**
 * RGBA pixels of a matrix item at (at most) `maxW` × `maxH`: each value through the colour
 * ramp, masked cells in their blank colour; area-averaged when the matrix is larger.
 */
export function matrixItemImage(it: MatrixItem, theme: Theme, maxW = Infinity, maxH = Infinity): ImageData {
  const { rows, cols } = it;
  const off = it.offset ?? 0;
  const scale = scaleOf(it.scale, theme);
  const lut = colorLut(it.scale.ramp === 'sequential' ? sequentialInterpolator(theme) : divergingInterpolator(theme));
  const blank = parseColor(it.maskedFill ?? theme.background);
  const w = Math.max(1, Math.min(cols, Math.floor(maxW)));
  const hh = Math.max(1, Math.min(rows, Math.floor(maxH)));
  const img = new ImageData(w, hh);
  const px = img.data;
  const put = (i: number, v: number, masked: boolean) => {
    if (masked) {
      px[i] = blank[0];
      px[i + 1] = blank[1];
      px[i + 2] = blank[2];
    } else {
      const c = scale.index(v) * 3;
      px[i] = lut[c]!;
      px[i + 1] = lut[c + 1]!;
      px[i + 2] = lut[c + 2]!;
    }
    px[i + 3] = 255;
  };
  if (w === cols && hh === rows) {
    for (let i = 0; i < rows * cols; i++) put(i * 4, it.values[off + i]!, it.masked?.[i] === 1);
    return img;
  }
  const small = downsample(it.values, off, rows, cols, w, hh, it.masked);
  for (let i = 0; i < w * hh; i++) put(i * 4, small.mean[i]!, small.blank[i] === 1);
  return img;
}

/**
 * Paints layout items on a canvas whose context is scaled to CSS pixels (`dpr` device pixels per
 * CSS pixel): matrices as images (masked cells blank), everything else through paintItems, in order.
 */
export function paintLayout(c: CanvasRenderingContext2D, items: readonly Item[], theme: Theme, dpr = 1): void {
  const off = document.createElement('canvas');
  let run: Item[] = [];
  const flush = () => {
    if (run.length) paintItems(c, run);
    run = [];
  };
  for (const it of items) {
    if (it.kind !== 'matrix') {
      run.push(it);
      continue;
    }
    flush();
    const img = matrixItemImage(it, theme, it.width * dpr, it.height * dpr);
    off.width = img.width;
    off.height = img.height;
    off.getContext('2d')!.putImageData(img, 0, 0);
    c.imageSmoothingEnabled = img.width >= it.width * dpr;
    c.drawImage(off, it.x, it.y, it.width, it.height);
    if (it.valueFont) {
      const scale = scaleOf(it.scale, theme);
      const fs = it.valueFont;
      const cw = it.width / it.cols;
      const ch = it.height / it.rows;
      c.font = font(fs);
      c.textAlign = 'center';
      c.textBaseline = 'alphabetic';
      for (let q = 0; q < it.rows; q++) {
        for (let k = 0; k < it.cols; k++) {
          const i = q * it.cols + k;
          const v = it.values[(it.offset ?? 0) + i]!;
          if (it.masked?.[i] === 1 || !(v >= 0.005)) continue;
          c.fillStyle = textOn(scale.color(v));
          c.fillText(v >= 0.995 ? '1' : v.toFixed(2).replace(/^0/, ''), it.x + (k + 0.5) * cw, it.y + (q + 0.5) * ch + fs * 0.36);
        }
      }
    }
  }
  flush();
}

export class MatrixGrid {
  readonly el = h('div', { class: 'matrix-grid' });
  readonly canvas = h('canvas', { class: 'matrix-canvas' });
  private readonly overlay = h('canvas', { class: 'matrix-overlay' });
  private layout: GridLayout | null = null;
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
    for (let i = 0; i < L.matrices.length; i++) {
      const { x: x0, y: y0 } = L.matrices[i]!;
      const k = Math.floor((e.offsetX - x0) / L.cell);
      const q = Math.floor((e.offsetY - y0) / L.cell);
      if (q >= 0 && q < o.nq && k >= 0 && k < o.nk) {
        const hit = { matrix: i, q, k, value: o.matrices[i]!.values[q * o.nk + k]!, masked: o.masked?.[q * o.nk + k] === 1 };
        this.mark(hit);
        return hit;
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
    const { x: x0, y: y0 } = L.matrices[hit.matrix]!;
    c.strokeStyle = o.theme.name === 'dark' ? 'rgba(255,255,255,0.45)' : 'rgba(0,0,0,0.35)';
    c.lineWidth = 1;
    c.strokeRect(x0 - 0.5, y0 + hit.q * L.cell - 0.5, L.mw + 1, L.cell + 1);
    c.strokeRect(x0 + hit.k * L.cell - 0.5, y0 - 0.5, L.cell + 1, L.mh + 1);
    c.strokeStyle = o.theme.name === 'dark' ? '#ffffff' : '#000000';
    c.lineWidth = 2;
    c.strokeRect(x0 + hit.k * L.cell - 1, y0 + hit.q * L.cell - 1, L.cell + 2, L.cell + 2);
  }

  /** Lays the matrices out (matrixGridLayout, as the heatmap export does) and paints them. */
  draw(o: MatrixGridOptions): void {
    this.opts = o;
    const token = (labels: string[], special: boolean[], generated: boolean[] | undefined, segments: readonly number[] | undefined, tips: readonly (string | undefined)[] | undefined): GridToken[] =>
      labels.map((label, i) => ({ label, special: special[i] ?? false, generated: generated?.[i] ?? false, segment: segments?.[i] ?? 0, tip: tips?.[i] }));
    const single = o.matrices.length === 1;
    const side = Math.max(o.nq, o.nk);
    const L = matrixGridLayout({
      matrices: o.matrices.map((m) => ({ values: m.values, title: m.title, color: m.color })),
      rows: token(o.labels.query, o.labels.querySpecial, o.labels.queryGenerated, o.querySegments, o.queryTips),
      cols: token(o.labels.key, o.labels.keySpecial, o.labels.keyGenerated, o.keySegments, o.keyTips),
      theme: o.theme,
      log: o.log,
      caption: o.caption,
      axes: { query: o.axes[0], key: o.axes[1] },
      newest: o.marks?.newest ?? null,
      masked: o.masked,
      showValues: single ? o.showValues : undefined,
      frame: o.frame ?? (o.maxSide !== undefined ? (single ? { width: o.maxSide + 2 * LAYOUT.margin + 200, height: o.maxSide + LAYOUT.margin * 2 + 120 } : undefined) : undefined),
      maxCell: o.maxCell ?? (o.maxSide !== undefined && !single ? Math.min(LAYOUT.heatmap.cell, o.maxSide / side) : undefined),
      labelChars: o.labelChars,
    });
    this.layout = L;
    this.scale = scaleOf(L.scale, o.theme);
    // Geometry for tests and tools: where matrix i's cell (q, k) is.
    for (const [k, v] of Object.entries({ cell: L.cell, cols: L.cols, originX: L.originX, originY: L.originY, mw: L.mw, mh: L.mh, gapX: L.gapX, gapY: L.gapY, nq: o.nq, nk: o.nk, labelFont: L.labelFont })) this.canvas.dataset[k] = String(v);
    if (o.marks?.newest != null) this.canvas.dataset.newest = String(o.marks.newest);
    else delete this.canvas.dataset.newest;
    const c = sizeCanvas(this.canvas, L.width, L.height);
    sizeCanvas(this.overlay, L.width, L.height);
    c.fillStyle = o.theme.background;
    c.fillRect(0, 0, L.width, L.height);
    paintLayout(c, L.items, o.theme, this.canvas.width / Math.max(1, Math.ceil(L.width)));
    this.el.style.width = `${Math.ceil(L.width)}px`;
    this.el.style.height = `${Math.ceil(L.height)}px`;
  }
}
