/**
 * The heatmap of a long input (thousands of tokens): one canvas that zooms and pans over a pyramid
 * of tiles (src/views/layout/heatmap-tiles.ts) computed on demand from an AttentionSource. The
 * overview (the whole matrix, bins of 2^z cells reduced by max or mean) is streamed strip by strip
 * first; the tiles of the level a view needs are computed nearest the centre first, a few
 * milliseconds at a time so that the page stays interactive, and kept in a small cache. At full
 * zoom the tiles are the exact weights; hover reads the exact weight of the cell from the source.
 * Attention computed on demand is binned in a Web Worker (input.worker, web/long-worker.ts): the
 * page's thread only draws what has arrived; dense sources (nothing to compute) are read here.
 *
 * Mouse: wheel zooms about the pointer, drag pans, double-click zooms in (shift: out).
 * Keyboard (the heatmap focused): + / − zoom, arrows pan (shift: further), 0 fits the matrix.
 */
import type { AttentionSource } from '../../src/core/attention-source.js';
import { type WeightScale, parseColor, weightScale } from '../../src/views/colors.js';
import { type Item, legendItems, truncate } from '../../src/views/layout/common.js';
import {
  type BinRegion,
  type Bins,
  type BlockReader,
  type CellWhich,
  type KeyRange,
  type Reduce,
  type TileView,
  TILE,
  binRegion,
  blockReader,
  cellAtPoint,
  clampView,
  fitView,
  labelIndices,
  levelFor,
  overviewRegion,
  splitColumns,
  tileRegion,
  topLevel,
  viewOf,
  visibleTiles,
  zoomAt,
} from '../../src/views/layout/heatmap-tiles.js';
import type { Theme } from '../../src/views/theme.js';
import { h, sizeCanvas } from '../dom.js';
import type { LongWorker } from '../long-worker.js';
import { pageMark, pageMeasure } from '../long-worker-marks.js';
import { paintItems } from '../paint.js';
import { font } from '../text.js';

export interface TiledHeatmapInput {
  source: AttentionSource;
  layer: number;
  which: CellWhich;
  reduce: Reduce;
  log: boolean;
  /** The keys each query may see (others are masked: blank, never read). */
  mask: KeyRange | null;
  theme: Theme;
  queryLabel(i: number): string;
  keyLabel(i: number): string;
  querySpecial(i: number): boolean;
  keySpecial(i: number): boolean;
  /** Legend caption and axis names [queries, keys]. */
  caption: string;
  axes: [string, string];
  /** Size of the whole canvas in CSS pixels. */
  frame: { width: number; height: number };
  /** Computes bins off the page's thread (attention on demand), or null: computed here between frames. */
  worker?: LongWorker | null;
  /**
   * The arrays the shown layer's weights come from (queries, keys, terms; or the attention layer):
   * another source over the same arrays (a newer partial trace of a stream) shows the same matrix,
   * and keeps the tiles computed and the jobs under way.
   */
  data?: readonly unknown[];
}

export interface TileHit {
  q: number;
  k: number;
  /** The exact weight, read from the source. */
  value: number;
  masked: boolean;
}

/** Dispatched (bubbling) by the heatmap's canvas when a matrix's whole overview is first painted. */
export const OVERVIEW_DRAWN_EVENT = 'attnscope-overview-drawn';

/** Tiles kept (each 256 × 256 bins: max, mean and blank ≈ 576 KB). */
const CACHE_TILES = 48;
/** Bin rows per overview strip (the overview is drawn strip by strip as it streams in). */
const STRIP_BINS = 16;
/** Time the tile jobs may take before yielding to the page. */
const SLICE_MS = 24;
const LABEL_FONT = 11;
const MARGIN = { left: 118, top: 92, right: 150, bottom: 12 };

interface Job {
  key: string;
  /** Computed here, a block per step; or in the worker (its ticket). */
  gen: Generator<number, Bins> | null;
  ticket: { worker: LongWorker; id: number } | null;
  done(bins: Bins): void;
}

interface Strip {
  region: BinRegion;
  bins: Bins | null;
}

/** Whether two inputs' `data` name the same arrays. */
function sameData(a: readonly unknown[] | undefined, b: readonly unknown[] | undefined): boolean {
  return !!a && !!b && a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Nice tick step (1, 2 or 5 × 10^n cells) so that ticks are at least `minPx` apart at `scale` px per cell. */
function tickStep(scale: number, minPx: number): number {
  const raw = minPx / scale;
  const p = 10 ** Math.floor(Math.log10(Math.max(1, raw)));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

export class TiledHeatmap {
  readonly el = h('div', { class: 'tiled-heatmap', testid: 'heatmap-tiles-wrap', tabindex: 0 });
  readonly canvas = h('canvas', { testid: 'heatmap-tiles' });
  private readonly overlay = h('canvas');
  private input: TiledHeatmapInput | null = null;
  private read: BlockReader | null = null;
  private dataKey = '';
  /** The matrix (dataKey) whose whole overview was painted last (a readout mark once per matrix). */
  private overviewPainted = '';
  view: TileView = { scale: 1, x: 0, y: 0 };
  private strips: Strip[] = [];
  private tiles = new Map<string, Bins>();
  private images = new Map<string, HTMLCanvasElement>();
  private jobs: Job[] = [];
  private running = new Set<string>();
  private pumping = false;
  private paused = false;
  private drawQueued = false;
  private scale: WeightScale | null = null;
  private scaleKey = '';
  private hoverCb: ((hit: TileHit | null, e: PointerEvent) => void) | null = null;
  private viewCb: (() => void) | null = null;
  private drag: { x: number; y: number; vx: number; vy: number; moved: boolean } | null = null;
  private hovered: { q: number; k: number } | null = null;
  /** Cells read from the source so far for this matrix (tests and the readout). */
  cellsRead = 0;

  constructor() {
    this.el.style.position = 'relative';
    this.el.style.outline = 'none';
    this.overlay.style.position = 'absolute';
    this.overlay.style.left = '0';
    this.overlay.style.top = '0';
    this.overlay.style.pointerEvents = 'none';
    this.canvas.style.display = 'block';
    this.canvas.style.cursor = 'crosshair';
    this.canvas.style.touchAction = 'none';
    this.el.append(this.canvas, this.overlay);
    this.canvas.addEventListener('wheel', (e) => this.wheel(e), { passive: false });
    this.canvas.addEventListener('pointerdown', (e) => {
      this.drag = { x: e.clientX, y: e.clientY, vx: this.view.x, vy: this.view.y, moved: false };
      this.canvas.setPointerCapture(e.pointerId);
      this.el.focus({ preventScroll: true });
    });
    this.canvas.addEventListener('pointermove', (e) => {
      const d = this.drag;
      if (d && (d.moved || Math.hypot(e.clientX - d.x, e.clientY - d.y) > 3)) {
        d.moved = true;
        this.canvas.style.cursor = 'grabbing';
        this.setView({ scale: this.view.scale, x: d.vx - (e.clientX - d.x) / this.view.scale, y: d.vy - (e.clientY - d.y) / this.view.scale });
        return;
      }
      this.hover(e);
    });
    this.canvas.addEventListener('pointerup', (e) => {
      this.drag = null;
      this.canvas.style.cursor = 'crosshair';
      this.canvas.releasePointerCapture(e.pointerId);
    });
    this.canvas.addEventListener('pointerleave', (e) => {
      this.hovered = null;
      this.markHover();
      this.hoverCb?.(null, e);
    });
    this.canvas.addEventListener('dblclick', (e) => {
      const { px, py } = this.local(e);
      this.zoom(e.shiftKey ? 1 / 4 : 4, px, py);
    });
    this.el.addEventListener('keydown', (e) => this.key(e));
  }

  onHover(cb: (hit: TileHit | null, e: PointerEvent) => void): void {
    this.hoverCb = cb;
  }

  /** Called after every change of the view (zoom, pan) and when tiles arrive. */
  onView(cb: () => void): void {
    this.viewCb = cb;
  }

  /** The matrix viewport (where cells are drawn) in canvas CSS pixels. */
  get box(): { x: number; y: number; w: number; h: number } {
    const f = this.input?.frame ?? { width: 800, height: 600 };
    return { x: MARGIN.left, y: MARGIN.top, w: Math.max(64, f.width - MARGIN.left - MARGIN.right), h: Math.max(64, f.height - MARGIN.top - MARGIN.bottom) };
  }

  get nq(): number {
    return this.input?.source.numQueries ?? 0;
  }

  get nk(): number {
    return this.input?.source.numKeys ?? 0;
  }

  /** The pyramid level the current view draws from. */
  level(): number {
    const top = topLevel(this.nq, this.nk);
    const z = levelFor(this.view.scale, this.dpr(), top);
    // One level under the overview gains at most a factor of two: draw the overview.
    return z >= top - 1 ? top : z;
  }

  /** Jobs not finished (overview strips and tiles). */
  pending(): number {
    return this.jobs.length;
  }

  /** Whether the overview has streamed in completely. */
  overviewDone(): boolean {
    return this.strips.length > 0 && this.strips.every((s) => s.bins !== null);
  }

  set(input: TiledHeatmapInput): void {
    const prev = this.input;
    const dataKey = [input.source.stack, input.source.numQueries, input.source.numKeys, input.layer, input.which].join('|');
    const sameSource = prev?.source === input.source || sameData(prev?.data, input.data);
    const resized = !prev || prev.frame.width !== input.frame.width || prev.frame.height !== input.frame.height;
    this.input = input;
    if (dataKey !== this.dataKey || !sameSource) {
      // Another layer or head of the same matrix keeps the view (compare heads at one place).
      const keepView = !!prev && sameSource ? this.view : null;
      this.dataKey = dataKey;
      this.read = this.counted(blockReader(input.source, input.layer, input.which));
      this.cellsRead = 0;
      this.tiles.clear();
      this.images.clear();
      this.dropJobs(this.jobs);
      this.jobs = [];
      this.running.clear();
      this.scaleKey = '';
      this.scale = null;
      const all = overviewRegion(this.nq, this.nk);
      const stripCells = STRIP_BINS * all.f;
      this.strips = [];
      for (let r0 = 0; r0 < this.nq; r0 += stripCells) this.strips.push({ region: { ...all, r0, r1: Math.min(this.nq, r0 + stripCells) }, bins: null });
      for (const strip of this.strips) {
        this.jobs.push(this.job(`overview:${strip.region.r0}`, strip.region, (b) => (strip.bins = b)));
      }
      const { w, h: hh } = this.box;
      this.view = keepView ? clampView(keepView, this.nq, this.nk, w, hh) : fitView(this.nq, this.nk, w, hh);
    } else {
      // The same matrix read through a newer source (reads made from now on use it).
      if (prev && prev.source !== input.source) this.read = this.counted(blockReader(input.source, input.layer, input.which));
      if (resized) {
        const { w, h: hh } = this.box;
        this.view = clampView(this.view, this.nq, this.nk, w, hh);
      }
    }
    if (resized) {
      sizeCanvas(this.canvas, input.frame.width, input.frame.height);
      sizeCanvas(this.overlay, input.frame.width, input.frame.height);
    }
    this.updateScale();
    this.requestTiles();
    this.draw();
    this.pump();
  }

  /** `read`, counting the cells it reads. */
  private counted(read: BlockReader): BlockReader {
    return (r0, r1, c0, c1) => {
      this.cellsRead += (r1 - r0) * (c1 - c0);
      return read(r0, r1, c0, c1);
    };
  }

  /** Continues computing after the view was hidden. */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.pump();
  }

  /** Shows rows [q0, q1) × keys [k0, k1) as large as they fit. */
  zoomTo(q0: number, q1: number, k0: number, k1: number): void {
    const { w, h: hh } = this.box;
    this.setView(viewOf(q0, q1, k0, k1, this.nq, this.nk, w, hh));
  }

  /** The whole matrix. */
  fit(): void {
    const { w, h: hh } = this.box;
    this.setView(fitView(this.nq, this.nk, w, hh));
  }

  /** Zooms by `factor` about viewport point (px, py) (default: the centre). */
  zoom(factor: number, px?: number, py?: number): void {
    const { w, h: hh } = this.box;
    this.setView(zoomAt(this.view, factor, px ?? w / 2, py ?? hh / 2, this.nq, this.nk, w, hh));
  }

  /** The exact weight of cell (q, k) and whether it is masked. */
  cell(q: number, k: number): TileHit {
    const m = this.input!.mask;
    const masked = m !== null && (k < m.lo(q) || k >= m.hi(q));
    const value = masked ? 0 : this.read!(q, q + 1, k, k + 1)[0]!;
    return { q, k, value, masked };
  }

  private dpr(): number {
    return this.canvas.width / Math.max(1, this.input?.frame.width ?? 1);
  }

  private setView(v: TileView): void {
    const { w, h: hh } = this.box;
    this.view = clampView(v, this.nq, this.nk, w, hh);
    this.requestTiles();
    this.draw();
    this.pump();
    if (this.hovered) this.markHover();
  }

  private local(e: { offsetX: number; offsetY: number }): { px: number; py: number } {
    return { px: e.offsetX - MARGIN.left, py: e.offsetY - MARGIN.top };
  }

  private wheel(e: WheelEvent): void {
    e.preventDefault();
    const { px, py } = this.local(e);
    const unit = e.deltaMode === 1 ? 32 : e.deltaMode === 2 ? 400 : 1;
    this.zoom(Math.exp(-e.deltaY * unit * 0.002), px, py);
  }

  private key(e: KeyboardEvent): void {
    const { w, h: hh } = this.box;
    const step = (e.shiftKey ? 0.75 : 0.25) / this.view.scale;
    const pan = (dx: number, dy: number) => this.setView({ scale: this.view.scale, x: this.view.x + dx * w * step, y: this.view.y + dy * hh * step });
    const actions: Record<string, () => void> = {
      '+': () => this.zoom(2),
      '=': () => this.zoom(2),
      '-': () => this.zoom(0.5),
      _: () => this.zoom(0.5),
      '0': () => this.fit(),
      Home: () => this.fit(),
      ArrowLeft: () => pan(-1, 0),
      ArrowRight: () => pan(1, 0),
      ArrowUp: () => pan(0, -1),
      ArrowDown: () => pan(0, 1),
    };
    const act = actions[e.key];
    if (!act) return;
    e.preventDefault();
    act();
  }

  private hover(e: PointerEvent): void {
    const { px, py } = this.local(e);
    const { w, h: hh } = this.box;
    const at = px >= 0 && py >= 0 && px < w && py < hh ? cellAtPoint(this.view, px, py, this.nq, this.nk) : null;
    this.hovered = at;
    this.markHover();
    this.hoverCb?.(at ? this.cell(at.q, at.k) : null, e);
  }

  /** Outlines the hovered cell (and its row and column) on the overlay. */
  private markHover(): void {
    const c = this.overlay.getContext('2d')!;
    c.save();
    c.setTransform(1, 0, 0, 1, 0, 0);
    c.clearRect(0, 0, this.overlay.width, this.overlay.height);
    c.restore();
    const at = this.hovered;
    const input = this.input;
    if (!at || !input) return;
    const { x: bx, y: by, w, h: hh } = this.box;
    const s = this.view.scale;
    const x = bx + (at.k - this.view.x) * s;
    const y = by + (at.q - this.view.y) * s;
    const dark = input.theme.name === 'dark';
    c.save();
    c.beginPath();
    c.rect(bx, by, w, hh);
    c.clip();
    c.strokeStyle = dark ? 'rgba(255,255,255,0.4)' : 'rgba(0,0,0,0.3)';
    c.lineWidth = 1;
    c.strokeRect(bx - 0.5, y - 0.5, w + 1, Math.max(1, s) + 1);
    c.strokeRect(x - 0.5, by - 0.5, Math.max(1, s) + 1, hh + 1);
    c.strokeStyle = dark ? '#ffffff' : '#000000';
    c.lineWidth = 2;
    c.strokeRect(x - 1, y - 1, Math.max(2, s) + 2, Math.max(2, s) + 2);
    c.restore();
  }

  // --- computing ------------------------------------------------------------------------------------

  private requestTiles(): void {
    const input = this.input;
    if (!input || !this.read) return;
    const z = this.level();
    const top = topLevel(this.nq, this.nk);
    // Drop queued tiles the view no longer needs (the overview strips always stay).
    const { w, h: hh } = this.box;
    const wanted = z >= top ? [] : visibleTiles(this.view, w, hh, z, this.nq, this.nk);
    // One job per row band of missing tiles (a source computed on demand pays for whole rows).
    const bands = new Map<number, number[]>();
    for (const t of wanted) {
      if (this.tiles.has(`${z}:${t.ty}:${t.tx}`)) continue;
      (bands.get(t.ty) ?? bands.set(t.ty, []).get(t.ty)!).push(t.tx);
    }
    const keys = new Set([...bands].map(([ty, txs]) => `${z}:${ty}:${Math.min(...txs)}-${Math.max(...txs)}`));
    const keep = (j: Job) => j.key.startsWith('overview:') || keys.has(j.key) || this.covers(j.key, z, bands);
    this.dropJobs(this.jobs.filter((j) => !keep(j)));
    this.jobs = this.jobs.filter(keep);
    for (const [ty, txs] of bands) {
      const tx0 = Math.min(...txs);
      const tx1 = Math.max(...txs);
      const key = `${z}:${ty}:${tx0}-${tx1}`;
      if (this.jobs.some((j) => j.key === key || this.covers(j.key, z, new Map([[ty, txs]])))) continue;
      const first = tileRegion(z, ty, tx0, this.nq, this.nk);
      const last = tileRegion(z, ty, tx1, this.nq, this.nk);
      this.jobs.push(
        this.job(key, { ...first, c1: last.c1 }, (b) => {
          splitColumns(b).forEach((bins, i) => this.tiles.set(`${z}:${ty}:${tx0 + i}`, bins));
          while (this.tiles.size > CACHE_TILES) {
            const oldest = this.tiles.keys().next().value!;
            this.tiles.delete(oldest);
            for (const k of this.images.keys()) if (k.startsWith(`${oldest}|`)) this.images.delete(k);
          }
        }),
      );
    }
    this.status();
  }

  /**
   * A job binning `region`: in the worker when there is one (its result, when it arrives, is drawn),
   * else a generator the page runs between frames (pump).
   */
  private job(key: string, region: BinRegion, done: (bins: Bins) => void): Job {
    const input = this.input!;
    const worker = input.worker ?? null;
    if (!worker) return { key, gen: binRegion(this.read!, region, input.mask), ticket: null, done };
    // The overview's strips all go to the worker at once (long-worker.ts IN_FLIGHT).
    const ticket = worker.submit<{ bins: Bins }>({ what: 'bins', layer: input.layer, which: input.which, region }, key.startsWith('overview:'));
    const job: Job = { key, gen: null, ticket: { worker, id: ticket.id }, done };
    ticket.result.then(
      (r) => {
        const at = this.jobs.indexOf(job);
        if (!r || at < 0) return;
        this.jobs.splice(at, 1);
        this.cellsRead += (region.r1 - region.r0) * (region.c1 - region.c0);
        if (key.startsWith('overview:')) pageMark('overview-strip');
        done(r.bins);
        this.updateScale();
        this.draw();
        this.status();
        this.viewCb?.();
      },
      (e: Error) => {
        // The worker failed: compute the job here instead.
        const at = this.jobs.indexOf(job);
        this.canvas.dataset.error = e.message;
        if (at < 0) return;
        this.jobs[at] = { key, gen: binRegion(this.read!, region, this.input!.mask), ticket: null, done };
        this.pump();
      },
    );
    return job;
  }

  /** Cancels the worker's part of jobs no longer wanted. */
  private dropJobs(jobs: Job[]): void {
    for (const j of jobs) if (j.ticket) j.ticket.worker.cancel([j.ticket.id]);
  }

  /** Whether a queued band job (key z:ty:tx0-tx1) computes every tile a band still misses. */
  private covers(jobKey: string, z: number, bands: Map<number, number[]>): boolean {
    const m = /^(\d+):(\d+):(\d+)-(\d+)$/.exec(jobKey);
    if (!m || Number(m[1]) !== z) return false;
    const txs = bands.get(Number(m[2]));
    return !!txs && txs.every((tx) => tx >= Number(m[3]) && tx <= Number(m[4]));
  }

  /** Runs jobs for a slice of time, then yields to the page; again until none is left. */
  private pump(): void {
    if (this.pumping || !this.jobs.some((j) => j.gen)) return;
    this.pumping = true;
    setTimeout(() => {
      this.pumping = false;
      // Hidden (another tab): stop until the view is shown again (resume).
      if (this.canvas.offsetParent === null) {
        this.paused = true;
        return;
      }
      const t0 = performance.now();
      let finished = false;
      let job = this.jobs.find((j) => j.gen);
      while (job && performance.now() - t0 < SLICE_MS) {
        const r = job.gen!.next();
        if (r.done) {
          this.jobs.splice(this.jobs.indexOf(job), 1);
          job.done(r.value);
          finished = true;
          job = this.jobs.find((j) => j.gen);
        }
      }
      if (finished) {
        this.updateScale();
        this.draw();
      }
      this.status();
      this.pump();
      this.viewCb?.();
    }, 0);
  }

  private updateScale(): void {
    const input = this.input;
    if (!input) return;
    let peak = 0;
    let min = Infinity;
    const done = this.overviewDone();
    for (const s of this.strips) {
      if (!s.bins) continue;
      peak = Math.max(peak, s.bins.peak);
      if (s.bins.minPositive > 0) min = Math.min(min, s.bins.minPositive);
    }
    // Until the overview is complete, the scale runs to 1 (no weight is larger).
    const max = done && peak > 0 ? peak : 1;
    const lo = Number.isFinite(min) ? Math.max(min, max * 1e-6) : max * 1e-4;
    const key = `${max}|${input.log ? lo : 0}|${input.log}|${input.theme.name}`;
    if (key === this.scaleKey) return;
    this.scaleKey = key;
    this.scale = weightScale(input.theme, { max, log: input.log, min: input.log ? lo : undefined });
    this.images.clear();
  }

  // --- drawing --------------------------------------------------------------------------------------

  /** An image of bins (reduced as chosen), coloured with the current scale; cached per tile. */
  private image(key: string, bins: Bins): HTMLCanvasElement {
    const input = this.input!;
    const ikey = `${key}|${input.reduce}|${this.scaleKey}`;
    const have = this.images.get(ikey);
    if (have) return have;
    const values = input.reduce === 'max' ? bins.max : bins.mean;
    const img = new ImageData(bins.cols, bins.rows);
    const px = img.data;
    const lut = this.scale!.lut;
    const blank = parseColor(input.theme.background);
    const scale = this.scale!;
    for (let i = 0; i < bins.rows * bins.cols; i++) {
      const o = i * 4;
      if (bins.blank[i] === 1) {
        px[o] = blank[0];
        px[o + 1] = blank[1];
        px[o + 2] = blank[2];
      } else {
        const c = scale.index(values[i]!) * 3;
        px[o] = lut[c]!;
        px[o + 1] = lut[c + 1]!;
        px[o + 2] = lut[c + 2]!;
      }
      px[o + 3] = 255;
    }
    const canvas = document.createElement('canvas');
    canvas.width = bins.cols;
    canvas.height = bins.rows;
    canvas.getContext('2d')!.putImageData(img, 0, 0);
    this.images.set(ikey, canvas);
    return canvas;
  }

  private draw(): void {
    if (this.drawQueued) return;
    this.drawQueued = true;
    this.canvas.dataset.ready = 'false';
    requestAnimationFrame(() => {
      this.drawQueued = false;
      this.paint();
    });
  }

  /** Paints the canvas now: overview, tiles, labels, legend, minimap. */
  paint(): void {
    const input = this.input;
    if (!input || !this.scale) return;
    const p0 = performance.now();
    const overviewDone = this.overviewDone();
    const c = this.canvas.getContext('2d')!;
    const dpr = this.dpr();
    c.setTransform(dpr, 0, 0, dpr, 0, 0);
    const theme = input.theme;
    const { width, height } = input.frame;
    c.fillStyle = theme.background;
    c.fillRect(0, 0, width, height);
    const { x: bx, y: by, w, h: hh } = this.box;
    const v = this.view;
    const s = v.scale;
    const nq = this.nq;
    const nk = this.nk;
    // Matrix area (clipped to the viewport).
    c.save();
    c.beginPath();
    c.rect(bx, by, w, hh);
    c.clip();
    const place = (region: BinRegion, canvas: HTMLCanvasElement) => {
      const x = bx + (region.c0 - v.x) * s;
      const y = by + (region.r0 - v.y) * s;
      c.drawImage(canvas, x, y, canvas.width * region.f * s, canvas.height * region.f * s);
    };
    const z = this.level();
    const top = topLevel(nq, nk);
    // Smooth only when shrinking an image (bins smaller than device pixels); cells stay sharp squares.
    c.imageSmoothingEnabled = false;
    for (const strip of this.strips) if (strip.bins) place(strip.region, this.image(`overview:${strip.region.r0}`, strip.bins));
    let drawn = 0;
    if (z < top) {
      for (const t of visibleTiles(v, w, hh, z, nq, nk)) {
        const key = `${z}:${t.ty}:${t.tx}`;
        const bins = this.tiles.get(key);
        if (!bins) continue;
        place(tileRegion(z, t.ty, t.tx, nq, nk), this.image(key, bins));
        drawn++;
      }
    }
    // Values in cells large enough to read them (full zoom: exact tiles).
    if (z === 0 && s >= 30) this.paintValues(c);
    c.restore();
    // Frame of the matrix.
    const mx0 = Math.max(bx, bx + (0 - v.x) * s);
    const my0 = Math.max(by, by + (0 - v.y) * s);
    const mx1 = Math.min(bx + w, bx + (nk - v.x) * s);
    const my1 = Math.min(by + hh, by + (nq - v.y) * s);
    c.strokeStyle = theme.grid;
    c.lineWidth = 1;
    c.strokeRect(mx0 - 0.5, my0 - 0.5, mx1 - mx0 + 1, my1 - my0 + 1);
    this.paintLabels(c, mx0, my0, mx1, my1);
    this.paintSide(c);
    this.canvas.dataset.tilesDrawn = String(drawn);
    this.status();
    // Readouts (bench/layerwise.ts --app): each paint, and the first with the whole overview.
    pageMeasure('heatmap-paint', { start: p0 });
    if (overviewDone && this.overviewPainted !== this.dataKey) {
      this.overviewPainted = this.dataKey;
      pageMark('overview-painted');
      this.canvas.dispatchEvent(new CustomEvent(OVERVIEW_DRAWN_EVENT, { bubbles: true }));
    }
  }

  /** The view and progress as data attributes (for tools and tests); ready: nothing left to compute or paint. */
  private status(): void {
    const input = this.input;
    if (!input) return;
    const { x: bx, y: by, w, h: hh } = this.box;
    const v = this.view;
    Object.assign(this.canvas.dataset, {
      nq: String(this.nq),
      nk: String(this.nk),
      scale: String(v.scale),
      viewX: String(v.x),
      viewY: String(v.y),
      originX: String(bx),
      originY: String(by),
      vw: String(w),
      vh: String(hh),
      level: String(this.level()),
      top: String(topLevel(this.nq, this.nk)),
      overview: this.overviewDone() ? 'done' : 'building',
      reduce: input.reduce,
      pending: String(this.jobs.length),
      compute: input.worker ? 'worker' : 'page',
      cellsRead: String(this.cellsRead),
      ready: this.overviewDone() && this.jobs.length === 0 && !this.drawQueued ? 'true' : 'false',
    });
  }

  /** Writes each visible weight in its cell (full zoom). */
  private paintValues(c: CanvasRenderingContext2D): void {
    const { x: bx, y: by, w, h: hh } = this.box;
    const v = this.view;
    const s = v.scale;
    const fs = Math.min(11, s * 0.32);
    c.font = font(fs);
    c.textAlign = 'center';
    const q0 = Math.max(0, Math.floor(v.y));
    const q1 = Math.min(this.nq, Math.ceil(v.y + hh / s));
    const k0 = Math.max(0, Math.floor(v.x));
    const k1 = Math.min(this.nk, Math.ceil(v.x + w / s));
    for (let q = q0; q < q1; q++) {
      for (let k = k0; k < k1; k++) {
        const t = this.tiles.get(`0:${Math.floor(q / TILE)}:${Math.floor(k / TILE)}`);
        if (!t) continue;
        const i = (q % TILE) * t.cols + (k % TILE);
        if (t.blank[i] === 1) continue;
        const value = t.max[i]!;
        if (!(value >= 0.005)) continue;
        const bg = this.scale!.rgb(value);
        c.fillStyle = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2] > 140 ? '#111' : '#fff';
        c.fillText(value >= 0.995 ? '1' : value.toFixed(2).replace(/^0/, ''), bx + (k - v.x + 0.5) * s, by + (q - v.y + 0.5) * s + fs * 0.36);
      }
    }
  }

  /** Token labels (zoomed in) or position ticks (zoomed out) on both axes, and the axis names. */
  private paintLabels(c: CanvasRenderingContext2D, mx0: number, my0: number, mx1: number, my1: number): void {
    const input = this.input!;
    const theme = input.theme;
    const { x: bx, y: by, w, h: hh } = this.box;
    const v = this.view;
    const s = v.scale;
    c.font = font(LABEL_FONT);
    c.fillStyle = theme.muted;
    c.textAlign = 'right';
    c.fillText(`${input.axes[0]} ↓`, bx - 8, by - 10);
    c.fillText(`${input.axes[1]} →`, bx - 8, by - 26);
    const words = s >= LABEL_FONT - 3;
    if (words) {
      // Token text, every step-th so that labels never overlap.
      c.textAlign = 'right';
      for (const q of labelIndices(v.y, s, hh, this.nq, LABEL_FONT)) {
        const y = by + (q - v.y + 0.5) * s + LABEL_FONT * 0.36;
        if (y < by || y > by + hh + LABEL_FONT) continue;
        c.fillStyle = input.querySpecial(q) ? theme.special : theme.text;
        c.fillText(`${truncate(input.queryLabel(q), 12)} ${q}`, bx - 6, y);
      }
      for (const k of labelIndices(v.x, s, w, this.nk, LABEL_FONT)) {
        const x = bx + (k - v.x + 0.5) * s;
        if (x < bx || x > bx + w) continue;
        c.save();
        c.translate(x + LABEL_FONT * 0.36, by - 6);
        c.rotate(-Math.PI / 2);
        c.textAlign = 'left';
        c.fillStyle = input.keySpecial(k) ? theme.special : theme.text;
        c.fillText(`${k} ${truncate(input.keyLabel(k), 12)}`, 0, 0);
        c.restore();
      }
      return;
    }
    // Position ticks.
    c.fillStyle = theme.muted;
    c.strokeStyle = theme.muted;
    c.lineWidth = 1;
    const stepQ = tickStep(s, 28);
    c.textAlign = 'right';
    for (let q = Math.ceil(Math.max(0, v.y) / stepQ) * stepQ; q <= Math.min(this.nq, v.y + hh / s); q += stepQ) {
      const y = by + (q - v.y) * s;
      if (y < my0 - 0.5 || y > my1 + 0.5) continue;
      c.beginPath();
      c.moveTo(mx0 - 4, y);
      c.lineTo(mx0, y);
      c.stroke();
      c.fillText(String(q), mx0 - 6, y + LABEL_FONT * 0.36);
    }
    const stepK = tickStep(s, 56);
    c.textAlign = 'center';
    for (let k = Math.ceil(Math.max(0, v.x) / stepK) * stepK; k <= Math.min(this.nk, v.x + w / s); k += stepK) {
      const x = bx + (k - v.x) * s;
      if (x < mx0 - 0.5 || x > mx1 + 0.5) continue;
      c.beginPath();
      c.moveTo(x, my0 - 4);
      c.lineTo(x, my0);
      c.stroke();
      c.fillText(String(k), x, my0 - 7);
    }
  }

  /** The legend and, zoomed in, a minimap of the overview with the view's rectangle. */
  private paintSide(c: CanvasRenderingContext2D): void {
    const input = this.input!;
    const theme = input.theme;
    const { x: bx, y: by, w, h: hh } = this.box;
    const x0 = bx + w + 20;
    const z = this.level();
    const f = overviewRegion(this.nq, this.nk).f;
    const caption = `${input.caption}${input.log ? ' (log)' : ''}`;
    const lg = legendItems(this.scale!, x0, by, caption, theme, Math.min(160, Math.max(80, hh / 2 - 60)));
    paintItems(c, lg.items as Item[]);
    const note = z === 0 ? 'cells: exact weights' : `bins of ${2 ** z}×${2 ** z}: ${input.reduce}`;
    const ny = by + lg.height + 16;
    c.font = font(LABEL_FONT);
    c.textAlign = 'left';
    c.fillStyle = theme.muted;
    c.fillText(note, x0, ny);
    // Minimap (zoomed in): the overview, the view's rectangle.
    const v0 = this.view;
    const whole = v0.x <= 0 && v0.y <= 0 && v0.x + w / v0.scale >= this.nk && v0.y + hh / v0.scale >= this.nq;
    const side = Math.min(MARGIN.right - 28, hh - (ny - by) - 24);
    if (side < 40 || whole) return;
    const my = ny + 10;
    const ms = side / Math.max(this.nq, this.nk);
    c.fillStyle = theme.panel;
    c.fillRect(x0, my, this.nk * ms, this.nq * ms);
    c.imageSmoothingEnabled = true;
    for (const strip of this.strips) {
      if (!strip.bins) continue;
      const img = this.image(`overview:${strip.region.r0}`, strip.bins);
      c.drawImage(img, x0 + strip.region.c0 * ms, my + strip.region.r0 * ms, strip.bins.cols * f * ms, strip.bins.rows * f * ms);
    }
    c.strokeStyle = theme.grid;
    c.strokeRect(x0 - 0.5, my - 0.5, this.nk * ms + 1, this.nq * ms + 1);
    const v = this.view;
    const rx = x0 + Math.max(0, v.x) * ms;
    const ry = my + Math.max(0, v.y) * ms;
    const rw = Math.min(this.nk, v.x + w / v.scale) * ms - Math.max(0, v.x) * ms;
    const rh = Math.min(this.nq, v.y + hh / v.scale) * ms - Math.max(0, v.y) * ms;
    c.strokeStyle = theme.name === 'dark' ? '#ffffff' : '#d62728';
    c.lineWidth = 1.5;
    c.strokeRect(rx, ry, Math.max(2, rw), Math.max(2, rh));
    c.fillStyle = theme.muted;
    c.fillText('overview', x0, my + this.nq * ms + 14);
  }
}
