/**
 * Model view layout: a grid of layer × head thumbnails, each the attention matrix of one head,
 * computed once as plain data. The SVG writer (src/views/svg/model-view.ts) and the page
 * (web/views/model.ts) paint it: the frame items under the cells, the cells as images, the marks
 * (frame, generation boundaries, the newest row) over each. Each cell carries what its tooltip says:
 * its layer and head, its largest weight and its strongest query → key pairs.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { StackName, Trace } from '../../core/trace.js';
import { headColors, weightScale } from '../colors.js';
import { describeGeneration, traceGeneration } from '../generation.js';
import { type CommonViewOptions, describeIndices, firstGeneratedBoundary, resolveCommon, resolveIndices, stepDescription } from '../svg/common.js';
import { LAYOUT, type Theme } from '../theme.js';
import { type DisplayStack, type DisplayToken, displayStack } from '../tokens.js';
import { displayMask } from './heatmap.js';
import { type Item, type MatrixItem, type ScaleSpec, STACK_TITLES, legendItems, scaleSpec, stackAxes, textWidth, truncate, wrapText } from './common.js';

export interface ModelViewOptions extends CommonViewOptions {
  /** Layers to include (default all). */
  layers?: readonly number[];
  /** Heads to include (default all). */
  heads?: readonly number[];
  /** Side of each cell in pixels (default 72, or what fits `fitWidth`). */
  cellSize?: number;
  /** Width the view should fit (the page's width): cells of 40 to 96 pixels per row of heads. Ignored with cellSize. */
  fitWidth?: number;
  /**
   * Colour range: 'cell' scales each cell to its own largest weight (the default, so that
   * patterns show next to attention sinks), 'global' maps 0–1 for every cell.
   */
  normalize?: 'cell' | 'global';
  /** Logarithmic colour scale. */
  log?: boolean;
  /** Strongest query → key pairs each cell names in its tooltip (default 3). */
  pairs?: number;
  /**
   * 'figure' (the default) draws the title, the generation lines and the note under the grid;
   * 'page' leaves them out (the page shows them in its header, generation bar and readout).
   */
  frame?: 'figure' | 'page';
  /** The display stack of these options when the caller has it already (the page caches them); made here otherwise. */
  display?: DisplayStack;
}

/** One query → key weight of a cell, with the token labels (display indices of the view's display stack). */
export interface CellPair {
  q: number;
  k: number;
  value: number;
}

export interface ModelCell {
  layer: number;
  head: number;
  /** Grid row (index into `layers`) and column (index into `heads`). */
  row: number;
  col: number;
  x: number;
  y: number;
  width: number;
  height: number;
  /** Offset of the head's [queries × keys] matrix in `ds.layers[layer]`. */
  offset: number;
  /** Largest weight of the cell. */
  max: number;
  /** Colour scale the cell is painted with. */
  scale: ScaleSpec;
  /** The strongest pairs, strongest first (rows whose only possible key is themselves left out: their weight is 1 by construction). */
  pairs: CellPair[];
  /** Tooltip: layer, head, strongest pairs (one per line). */
  tip: string;
  /** The cell's matrix as a layout item (masked entries — causal mask, sliding window — left blank). */
  matrix: MatrixItem;
  /** Painted over the cell's image: its frame, where generated tokens start (dashed), the newest token's row (outlined). */
  marks: Item[];
}

export interface ModelViewLayout {
  width: number;
  height: number;
  background: string;
  stack: StackName;
  title: string;
  /** What a cell shows (the figure writes it under the grid). */
  note: string;
  /** The display stack the cells show (only the chosen layers computed). */
  ds: DisplayStack;
  nq: number;
  nk: number;
  layers: number[];
  heads: number[];
  grid: { x: number; y: number; cw: number; ch: number; gap: number };
  /** Largest side of a cell's image in pixels (longer matrices are averaged down). */
  maxImage: number;
  /** Painted under the cells: title, generation lines, head and layer labels, legend, note. */
  items: Item[];
  cells: ModelCell[];
}

/** Figures grow to fit their title up to this width; longer titles wrap. */
export const MAX_TITLE_WIDTH = 1100;

/** A weight for tooltips: 3 decimals, '<0.001' for tiny ones. */
function fmtPair(v: number): string {
  return v === 0 ? '0' : v < 0.001 ? '<0.001' : v.toFixed(3);
}

/** "“g” → “<s>” 0.837" */
export function describePair(p: CellPair, queryTokens: readonly DisplayToken[], keyTokens: readonly DisplayToken[]): string {
  const q = queryTokens[p.q]!;
  const k = keyTokens[p.k]!;
  return `${p.q} “${truncate(q.label, 16)}” → ${p.k} “${truncate(k.label, 16)}” ${fmtPair(p.value)}`;
}

/**
 * The `count` largest weights of a [nq × nk] matrix at `offset`. A query row whose only nonzero
 * weight is on a key it cannot avoid — the first token of a causal stack, which can only see
 * itself — is skipped: its weight 1 says nothing about the head.
 */
export function strongestPairs(data: Float32Array, offset: number, nq: number, nk: number, count: number, masked?: Uint8Array | null): CellPair[] {
  if (count <= 0) return [];
  const best: CellPair[] = [];
  for (let q = 0; q < nq; q++) {
    const base = offset + q * nk;
    if (masked) {
      // The model's mask leaves this row one key: its weight is 1 whatever the head does.
      let open = 0;
      for (let k = 0; k < nk && open < 2; k++) if (masked[q * nk + k] !== 1) open++;
      if (open === 1) continue;
    }
    let nonzero = 0;
    for (let k = 0; k < nk && nonzero < 2; k++) if (data[base + k]! > 0) nonzero++;
    // Without a recorded mask, a causal first row: everything after the diagonal is exactly 0 and it sees one key.
    if (!masked && nonzero === 1 && q === 0 && nk > 1) {
      let causal = true;
      for (let qq = 1; qq < Math.min(nq, 4) && causal; qq++) for (let k = qq + 1; k < nk; k++) if (data[offset + qq * nk + k] !== 0) causal = false;
      if (causal && nq > 1) continue;
    }
    for (let k = 0; k < nk; k++) {
      const v = data[base + k]!;
      if (!(v > 0)) continue;
      if (best.length === count && v <= best[count - 1]!.value) continue;
      let i = best.length < count ? best.length : count - 1;
      best[i] = { q, k, value: v };
      while (i > 0 && best[i - 1]!.value < best[i]!.value) {
        [best[i - 1], best[i]] = [best[i]!, best[i - 1]!];
        i--;
      }
    }
  }
  return best;
}

/**
 * Title and generation lines at the top, wrapped to `width` (a figure has no tooltip to carry
 * what a cut would hide): the bold title, the "prompt | generated" legend with how the tokens
 * were generated, and at a step which token is the newest (`mark`: how the view shows its row).
 */
export function headingItems(
  trace: Trace,
  stack: StackName,
  ds: DisplayStack,
  title: string,
  x: number,
  y: number,
  width: number,
  theme: Theme,
  mark: string | null,
): { items: Item[]; y: number } {
  const items: Item[] = [];
  const tfs = LAYOUT.titleFontSize;
  const fs = LAYOUT.smallFontSize;
  if (title) {
    for (const line of wrapText(title, tfs, width)) {
      items.push({ kind: 'text', x, y: y + tfs, text: line, size: tfs, fill: theme.text, bold: true, className: 'view-title' });
      y += tfs + 5;
    }
    y += 7;
  }
  const gen = traceGeneration(trace);
  if (gen) {
    const lead = 'prompt | generated';
    const [first, ...more] = wrapText(`${lead} · ${describeGeneration(gen)}`, fs, width);
    items.push({
      kind: 'text',
      x,
      y: y + fs,
      text: first!,
      size: fs,
      fill: theme.muted,
      className: 'generation-legend',
      spans: [
        { text: 'prompt', fill: theme.text },
        { text: ' | ', fill: theme.muted },
        { text: 'generated', fill: theme.generated, italic: true },
        { text: first!.slice(lead.length), fill: theme.muted },
      ],
    });
    y += fs + 6;
    for (const line of more) {
      items.push({ kind: 'text', x, y: y + fs, text: line, size: fs, fill: theme.muted, className: 'generation-legend' });
      y += fs + 6;
    }
    if (ds.step !== null) {
      for (const line of wrapText(stepDescription(trace, stack, ds, mark), fs, width)) {
        items.push({ kind: 'text', x, y: y + fs, text: line, size: fs, fill: theme.text, className: 'generation-step', data: { step: ds.step } });
        y += fs + 6;
      }
    }
    y += 4;
  }
  return { items, y };
}

/** The model view's layout. */
export function modelViewLayout(trace: Trace, options: ModelViewOptions = {}): ModelViewLayout {
  const common = resolveCommon(trace, options);
  const { theme, stack } = common;
  const stackData = trace.attention[stack]!;
  const layers = resolveIndices(options.layers, stackData.layers.length, 'layer');
  const ds = options.display ?? displayStack(trace, stack, { hideSpecial: options.hideSpecial, mergeSubwords: options.mergeSubwords, layers, step: options.step });
  const heads = resolveIndices(options.heads, ds.numHeads, 'head');
  const colors = headColors(ds.numHeads);
  const nq = ds.queryTokens.length;
  const nk = ds.keyTokens.length;
  const normalize = options.normalize ?? 'cell';
  const log = options.log ?? false;
  const pairCount = options.pairs ?? 3;

  const m = LAYOUT.margin;
  const fs = LAYOUT.smallFontSize;
  const gap = LAYOUT.model.cellGap;
  // Cells follow the matrix's aspect ratio (cross attention is not square) within 2:1, so that a
  // long, short matrix still gets readable rows.
  const ratio = nk / nq;
  const widen = Math.min(2, Math.max(0.5, Math.sqrt(ratio)));
  const rowLabelW = textWidth(`layer ${Math.max(...layers)}`, fs) + 10;
  const legendW = 110;
  let cell = options.cellSize ?? LAYOUT.model.cell;
  if (options.cellSize === undefined && options.fitWidth !== undefined) {
    const avail = Math.max(400, options.fitWidth - 2 * m - rowLabelW - 24 - legendW);
    cell = Math.max(40, Math.min(96, Math.floor(avail / heads.length / widen) - gap));
  }
  const cw = cell * widen;
  const ch = Math.max(cell / 2, Math.min(2 * cell, cw / ratio));
  const gridX = m + rowLabelW;
  const gridW = heads.length * (cw + gap) - gap;
  const legendX = gridX + gridW + 20;
  const axes = stackAxes(stack);
  const qBoundary = firstGeneratedBoundary(ds.queryTokens);
  const kBoundary = firstGeneratedBoundary(ds.keyTokens);
  const masks = new Map<number, Uint8Array | null>();
  const maskOf = (l: number): Uint8Array | null => {
    if (!masks.has(l)) masks.set(l, displayMask(trace, ds, l));
    return masks.get(l)!;
  };
  const note =
    `each cell: ${axes.query} ↓ × ${axes.key} → (${nq} × ${nk})` +
    (normalize === 'cell' ? ' · colour: each cell scaled to its own largest weight' : '') +
    (qBoundary !== null || kBoundary !== null ? ' · dashed: where the generated tokens start' : '') +
    (ds.newest !== null ? ' · outlined: the newest token’s row' : '') +
    (layers.some((l) => maskOf(l) !== null) ? ' · blank: masked (no weight possible)' : '');
  const title =
    options.title === false
      ? ''
      : (options.title ??
        `${trace.model.name} · ${STACK_TITLES[stack]} · layers ${describeIndices(layers, stackData.layers.length)} × heads ${describeIndices(heads, ds.numHeads)}` +
          (ds.step !== null ? ` · step ${ds.step}` : ''));
  // The figure is as wide as its grid and legend, and as its title up to MAX_TITLE_WIDTH (at least
  // 560 px); longer text lines wrap inside it.
  const width = Math.max(legendX + legendW + m, 560, Math.min(MAX_TITLE_WIDTH, textWidth(title, LAYOUT.titleFontSize)) + 2 * m);
  const textW = width - 2 * m;
  const figure = options.frame !== 'page';
  const heading = figure ? headingItems(trace, stack, ds, title, m, m, textW, theme, 'outlined row of each cell') : { items: [], y: m };
  const items: Item[] = [...heading.items];
  let y = heading.y;
  heads.forEach((h, j) => {
    const x = gridX + j * (cw + gap);
    items.push({ kind: 'text', x: x + cw / 2, y: y + fs, text: `head ${h}`, size: fs, fill: theme.muted, anchor: 'middle', className: 'head-label', data: { head: h } });
    items.push({ kind: 'rect', x, y: y + fs + 4, width: cw, height: 3, fill: colors[h]!, className: 'head-swatch' });
  });
  y += fs + 12;
  const gridY = y;
  const gridH = layers.length * (ch + gap) - gap;

  const cells: ModelCell[] = [];
  layers.forEach((l, i) => {
    const cy = gridY + i * (ch + gap);
    items.push({ kind: 'text', x: gridX - 8, y: cy + ch / 2 + fs * 0.36, text: `layer ${l}`, size: fs, fill: theme.muted, anchor: 'end', className: 'layer-label', data: { layer: l } });
    const data = ds.layers[l]!;
    const mask = maskOf(l);
    heads.forEach((h, j) => {
      const cx = gridX + j * (cw + gap);
      const offset = h * nq * nk;
      let max = 0;
      for (let p = 0; p < nq * nk; p++) if (data[offset + p]! > max) max = data[offset + p]!;
      const scale = scaleSpec(weightScale(theme, { max: normalize === 'cell' ? max : 1, log }));
      const pairs = strongestPairs(data, offset, nq, nk, pairCount, mask);
      const tip = [
        `layer ${l} · head ${h}`,
        ...(pairs.length ? ['strongest query → key:', ...pairs.map((p) => describePair(p, ds.queryTokens, ds.keyTokens))] : []),
      ].join('\n');
      const marks: Item[] = [];
      const matrix: MatrixItem = { kind: 'matrix', x: cx, y: cy, width: cw, height: ch, rows: nq, cols: nk, values: data, offset, scale, maskedFill: theme.background, ...(mask ? { masked: mask } : {}) };
      cells.push({ layer: l, head: h, row: i, col: j, x: cx, y: cy, width: cw, height: ch, offset, max, scale, pairs, tip, matrix, marks });
      marks.push({ kind: 'rect', x: cx - 0.5, y: cy - 0.5, width: cw + 1, height: ch + 1, fill: null, stroke: theme.grid, strokeWidth: 1, className: 'cell-frame' });
      if (qBoundary !== null) {
        const by = cy + (qBoundary * ch) / nq;
        marks.push({ kind: 'line', x1: cx, y1: by, x2: cx + cw, y2: by, stroke: theme.generated, width: 1, dash: [2, 2], className: 'prompt-boundary', data: { axis: 'query' } });
      }
      if (kBoundary !== null) {
        const bx = cx + (kBoundary * cw) / nk;
        marks.push({ kind: 'line', x1: bx, y1: cy, x2: bx, y2: cy + ch, stroke: theme.generated, width: 1, dash: [2, 2], className: 'prompt-boundary', data: { axis: 'key' } });
      }
      if (ds.newest !== null) {
        marks.push({ kind: 'rect', x: cx - 0.75, y: cy + (ds.newest * ch) / nq - 0.75, width: cw + 1.5, height: ch / nq + 1.5, fill: null, stroke: theme.text, strokeWidth: 1.5, className: 'newest-row', data: { q: ds.newest } });
      }
    });
  });

  const lg = legendItems(
    weightScale(theme, { max: 1, log, min: log ? 1e-4 : 0 }),
    legendX,
    gridY,
    normalize === 'cell' ? 'weight / cell max' : 'attention weight',
    theme,
    Math.min(LAYOUT.heatmap.legendHeight, Math.max(80, gridH - 24)),
  );
  items.push(...lg.items);
  let noteY = gridY + Math.max(gridH, lg.height) + (figure ? 18 : 0);
  if (figure) {
    wrapText(note, fs, textW).forEach((line, i) => {
      if (i) noteY += fs + 5;
      items.push({ kind: 'text', x: m, y: noteY, text: line, size: fs, fill: theme.muted, className: 'model-note' });
    });
  }

  return {
    width: Math.max(width, legendX + lg.width + m),
    height: noteY + m,
    background: theme.background,
    stack,
    title,
    note,
    ds,
    nq,
    nk,
    layers,
    heads,
    grid: { x: gridX, y: gridY, cw, ch, gap },
    maxImage: LAYOUT.model.maxImage,
    items,
    cells,
  };
}

/** The cell at a point of the layout, or null (between cells, outside the grid). */
export function modelCellAt(layout: ModelViewLayout, x: number, y: number): ModelCell | null {
  const { grid } = layout;
  const j = Math.floor((x - grid.x) / (grid.cw + grid.gap));
  const i = Math.floor((y - grid.y) / (grid.ch + grid.gap));
  if (i < 0 || j < 0 || i >= layout.layers.length || j >= layout.heads.length) return null;
  if (x - grid.x - j * (grid.cw + grid.gap) > grid.cw || y - grid.y - i * (grid.ch + grid.gap) > grid.ch) return null;
  return layout.cells[i * layout.heads.length + j] ?? null;
}
