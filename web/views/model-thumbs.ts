/**
 * The model view of a long input: every layer × head as a thumbnail of at most THUMB_BINS bins a
 * side, each bin the max or mean of the cells it covers (src/views/layout/heatmap-tiles.ts
 * thumbnailBins), streamed from the AttentionSource head by head a few milliseconds at a time and
 * drawn as each arrives. When reading every row of every head would cost more than THUMB_BUDGET
 * multiply-adds, each bin reads a few rows spread over it (said in the note). A click opens the head.
 * Attention computed on demand is binned in a Web Worker (input.worker, web/long-worker.ts): the
 * page's thread paints each thumbnail as it arrives and shows the progress.
 */
import type { AttentionSource } from '../../src/core/attention-source.js';
import { type WeightScale, parseColor, weightScale } from '../../src/views/colors.js';
import { layerHeadGrid, legendItems } from '../../src/views/layout/common.js';
import { type Bins, type KeyRange, type Reduce, THUMB_BINS, blockReader, thumbnailBins, thumbnailRowsPerBin } from '../../src/views/layout/heatmap-tiles.js';
import type { Theme } from '../../src/views/theme.js';
import { h, sizeCanvas } from '../dom.js';
import type { LongWorker } from '../long-worker.js';
import { paintItems } from '../paint.js';

export interface ThumbGridInput {
  source: AttentionSource;
  /** The keys each query of a layer sees. */
  mask(layer: number): KeyRange | null;
  headDim: number;
  causal: boolean;
  theme: Theme;
  normalize: 'cell' | 'global';
  log: boolean;
  reduce: Reduce;
  frame: { width: number; height: number };
  /** Computes thumbnails off the page's thread (attention on demand), or null: computed here between frames. */
  worker?: LongWorker | null;
}

export interface ThumbCell {
  layer: number;
  head: number;
  x: number;
  y: number;
  size: number;
  /** Bins once computed. */
  bins: Bins | null;
}

const SLICE_MS = 24;
const LEGEND_W = 120;

export class ThumbGrid {
  readonly el = h('div', { class: 'model-thumbs' });
  readonly canvas = h('canvas', { testid: 'model-thumbs' });
  /** Thumbnails computed so far, while they stream in. */
  private readonly progressLine = h('div', { class: 'readout muted', testid: 'model-thumbs-progress' });
  /** The worker's jobs of the current thumbnails (cancelled when they are no longer wanted). */
  private tickets: { worker: LongWorker; ids: number[] } | null = null;
  private input: ThumbGridInput | null = null;
  private dataKey = '';
  private cells: ThumbCell[] = [];
  private queue: { cell: ThumbCell; gen: Generator<number, Bins> }[] = [];
  private pumping = false;
  private token = 0;
  private grid = { x: 0, y: 0, cell: 0 };
  /** Rows read per bin row (THUMB_BINS bins a side). */
  rowsPerBin = 1;
  binSide = 1;
  private pickCb: ((cell: ThumbCell) => void) | null = null;
  private hoverCb: ((cell: ThumbCell | null, e: PointerEvent) => void) | null = null;
  private started = 0;

  constructor() {
    this.el.append(this.progressLine, this.canvas);
    this.canvas.style.display = 'block';
    this.canvas.addEventListener('pointermove', (e) => {
      const cell = this.cellAt(e.offsetX, e.offsetY);
      this.canvas.style.cursor = cell ? 'pointer' : '';
      this.hoverCb?.(cell, e);
    });
    this.canvas.addEventListener('pointerleave', (e) => this.hoverCb?.(null, e));
    this.canvas.addEventListener('click', (e) => {
      const cell = this.cellAt(e.offsetX, e.offsetY);
      if (cell) this.pickCb?.(cell);
    });
  }

  onPick(cb: (cell: ThumbCell) => void): void {
    this.pickCb = cb;
  }

  onHover(cb: (cell: ThumbCell | null, e: PointerEvent) => void): void {
    this.hoverCb = cb;
  }

  cellAt(x: number, y: number): ThumbCell | null {
    const { x: gx, y: gy, cell } = this.grid;
    const col = Math.floor((x - gx) / cell);
    const row = Math.floor((y - gy) / cell);
    const s = this.input?.source;
    if (!s || col < 0 || row < 0 || col >= s.numHeads || row >= s.numLayers) return null;
    return this.cells[row * s.numHeads + col] ?? null;
  }

  /** Thumbnails computed so far, and in all. */
  progress(): { done: number; total: number } {
    return { done: this.cells.filter((c) => c.bins).length, total: this.cells.length };
  }

  set(input: ThumbGridInput): void {
    const s = input.source;
    const dataKey = [s.stack, s.numLayers, s.numHeads, s.numQueries, s.numKeys].join('|');
    const fresh = dataKey !== this.dataKey || this.input?.source !== s;
    this.input = input;
    const L = s.numLayers;
    const H = s.numHeads;
    const { cell, grid, axes } = layerHeadGrid(L, H, 8, { side: 640, minCell: 24, maxCell: 120 }, LEGEND_W, input.theme, input.frame);
    this.grid = { x: grid.x, y: grid.y, cell };
    if (fresh) {
      this.dataKey = dataKey;
      this.token++;
      this.rowsPerBin = thumbnailRowsPerBin(L * H, s.numQueries, s.numKeys, input.headDim, input.causal);
      this.binSide = Math.ceil(s.numQueries / THUMB_BINS);
      this.cells = [];
      this.queue = [];
      if (this.tickets) this.tickets.worker.cancel(this.tickets.ids);
      this.tickets = null;
      const worker = input.worker ?? null;
      const token = this.token;
      const ids: number[] = [];
      for (let l = 0; l < L; l++) {
        for (let hd = 0; hd < H; hd++) {
          const c: ThumbCell = { layer: l, head: hd, x: 0, y: 0, size: 0, bins: null };
          this.cells.push(c);
          if (!worker) {
            this.queue.push({ cell: c, gen: thumbnailBins(blockReader(s, l, hd), s.numQueries, s.numKeys, input.mask(l), this.rowsPerBin) });
            continue;
          }
          const t = worker.submit<{ bins: Bins }>({ what: 'thumb', layer: l, head: hd, rowsPerBin: this.rowsPerBin });
          ids.push(t.id);
          t.result.then(
            (r) => {
              if (!r || token !== this.token) return;
              c.bins = r.bins;
              this.paintCell(c);
              this.status();
            },
            (e: Error) => {
              // The worker failed: compute the thumbnail here instead.
              this.canvas.dataset.error = e.message;
              if (token !== this.token) return;
              this.queue.push({ cell: c, gen: thumbnailBins(blockReader(s, l, hd), s.numQueries, s.numKeys, input.mask(l), this.rowsPerBin) });
              this.pump();
            },
          );
        }
      }
      if (worker) this.tickets = { worker, ids };
      this.started = performance.now();
    }
    for (const c of this.cells) Object.assign(c, { x: grid.x + c.head * cell + 2, y: grid.y + c.layer * cell + 2, size: cell - 4 });
    const width = Math.max(input.frame.width, grid.x + grid.width + LEGEND_W + 40);
    const height = Math.max(grid.y + grid.height + 24, 200);
    const ctx = sizeCanvas(this.canvas, width, height);
    ctx.fillStyle = input.theme.background;
    ctx.fillRect(0, 0, width, height);
    paintItems(ctx, axes);
    const legendScale = weightScale(input.theme, { max: 1, log: input.log, min: input.log ? 1e-4 : undefined });
    const caption = input.normalize === 'cell' ? 'per cell (its max = darkest)' : `weight${input.log ? ' (log)' : ''}`;
    paintItems(ctx, legendItems(legendScale, grid.x + grid.width + 24, grid.y, caption, input.theme, Math.min(160, Math.max(80, grid.height - 40))).items);
    for (const c of this.cells) this.paintCell(c);
    Object.assign(this.canvas.dataset, { gridX: String(grid.x), gridY: String(grid.y), cell: String(cell), layers: String(L), heads: String(H), rowsPerBin: String(this.rowsPerBin), binSide: String(this.binSide) });
    this.status();
    this.pump();
  }

  private scaleFor(bins: Bins): WeightScale {
    const input = this.input!;
    const values = input.reduce === 'max' ? bins.max : bins.mean;
    let peak = 0;
    let min = Infinity;
    for (let i = 0; i < values.length; i++) {
      if (bins.blank[i] === 1) continue;
      if (values[i]! > peak) peak = values[i]!;
      if (values[i]! > 0 && values[i]! < min) min = values[i]!;
    }
    const max = input.normalize === 'cell' && peak > 0 ? peak : 1;
    return weightScale(input.theme, { max, log: input.log, min: input.log ? Math.max(Number.isFinite(min) ? min : max * 1e-4, max * 1e-4) : undefined });
  }

  private paintCell(c: ThumbCell): void {
    const input = this.input!;
    const ctx = this.canvas.getContext('2d')!;
    const dpr = this.canvas.width / Math.max(1, parseFloat(this.canvas.style.width) || 1);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    if (!c.bins) {
      ctx.fillStyle = input.theme.panel;
      ctx.fillRect(c.x, c.y, c.size, c.size);
      return;
    }
    const bins = c.bins;
    const scale = this.scaleFor(bins);
    const values = input.reduce === 'max' ? bins.max : bins.mean;
    const img = new ImageData(bins.cols, bins.rows);
    const blank = parseColor(input.theme.background);
    for (let i = 0; i < bins.rows * bins.cols; i++) {
      const o = i * 4;
      if (bins.blank[i] === 1) {
        img.data[o] = blank[0];
        img.data[o + 1] = blank[1];
        img.data[o + 2] = blank[2];
      } else {
        const k = scale.index(values[i]!) * 3;
        img.data[o] = scale.lut[k]!;
        img.data[o + 1] = scale.lut[k + 1]!;
        img.data[o + 2] = scale.lut[k + 2]!;
      }
      img.data[o + 3] = 255;
    }
    const off = document.createElement('canvas');
    off.width = bins.cols;
    off.height = bins.rows;
    off.getContext('2d')!.putImageData(img, 0, 0);
    const s = this.input!.source;
    // Non-square matrices keep their aspect inside the square cell.
    const w = (c.size * s.numKeys) / Math.max(s.numQueries, s.numKeys);
    const hh = (c.size * s.numQueries) / Math.max(s.numQueries, s.numKeys);
    ctx.imageSmoothingEnabled = bins.cols > w * dpr;
    ctx.drawImage(off, c.x, c.y, w, hh);
    ctx.strokeStyle = input.theme.grid;
    ctx.lineWidth = 1;
    ctx.strokeRect(c.x - 0.5, c.y - 0.5, w + 1, hh + 1);
  }

  private pump(): void {
    if (this.pumping || this.queue.length === 0) return;
    this.pumping = true;
    const token = this.token;
    setTimeout(() => {
      this.pumping = false;
      if (token !== this.token) {
        this.pump();
        return;
      }
      // Hidden (another tab): stop; the next set() (the view shown again) continues.
      if (this.canvas.offsetParent === null) return;
      const t0 = performance.now();
      while (this.queue.length && performance.now() - t0 < SLICE_MS) {
        const job = this.queue[0]!;
        const r = job.gen.next();
        if (r.done) {
          this.queue.shift();
          job.cell.bins = r.value;
          this.paintCell(job.cell);
        }
      }
      this.status();
      this.pump();
    }, 0);
  }

  private status(): void {
    const { done, total } = this.progress();
    this.canvas.dataset.done = String(done);
    this.canvas.dataset.drawn = done === total ? 'true' : 'false';
    this.canvas.dataset.compute = this.input?.worker ? 'worker' : 'page';
    this.progressLine.textContent =
      done === total ? `${total} thumbnails` : `computing thumbnails${this.input?.worker ? ' in a worker' : ''}: ${done} of ${total} (${Math.floor((100 * done) / Math.max(1, total))}%) · each appears as it is ready`;
    if (done === total && this.started) {
      this.canvas.dataset.drawMs = (performance.now() - this.started).toFixed(0);
      this.started = 0;
    }
  }
}
