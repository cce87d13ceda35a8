/**
 * Head view layout (BertViz style), computed once as plain data: query tokens on the left, key
 * tokens on the right, one line per (query, key, head) coloured by head with opacity = weight.
 * The SVG writer (src/views/svg/head-view.ts) and the page (web/views/head.ts) paint it.
 *
 * Legibility: rows and the gap between the columns grow to fill the frame they are given; each
 * head's lines leave and reach a row at their own small offset, and lines are painted weakest
 * first, so that strong lines of different heads stay apart and on top instead of blending.
 * Without a focused token at most `maxLines` lines are drawn — the strongest, said in the
 * caption — unless `allLines` asks for every one; a focused token gets all of its lines.
 *
 * Isomorphic: imports nothing from Node.
 */
import { strongestWeights } from '../../analysis/aggregate.js';
import { AttnscopeError } from '../../core/errors.js';
import type { Trace } from '../../core/trace.js';
import { headColors, textOn } from '../colors.js';
import { tokenTipText } from '../generation.js';
import {
  type CommonViewOptions,
  type ResolvedCommon,
  checkIndex,
  firstGeneratedBoundary,
  fmtValue,
  resolveCommon,
  resolveIndices,
} from '../svg/common.js';
import { LAYOUT, type Theme } from '../theme.js';
import { type DisplayStack, type DisplayToken, type PairFilter, displayStack, hasPair, pairFilterAccepts, parsePairFilter, prettifyToken, tokenLabel } from '../tokens.js';
import { type Item, type LineItem, type Picture, type TextItem, labelStep, stackAxes, textWidth, truncate } from './common.js';

/** Lines drawn without a focused token, unless `allLines`. */
export const DEFAULT_MAX_LINES = 1000;

export interface HeadViewOptions extends CommonViewOptions {
  /** Layer to show (default 0). */
  layer?: number;
  /** Heads to draw (default all). */
  heads?: readonly number[];
  /**
   * Highlight one query token (index into the displayed query tokens): only its lines are drawn.
   * At a generation `step` the newest token is highlighted unless another query is given.
   */
  query?: number;
  /** Sentence-pair filter: all, A→B, B→A, A→A, B→B (default all). */
  pair?: PairFilter | string;
  /** Lines with weight ≤ this are left out (default 0: every nonzero weight may get a line). */
  minWeight?: number;
  /** Print the weights next to the key tokens (default: when a query is highlighted and one head is drawn). */
  showValues?: boolean;
  /** Without a highlighted query: draw a line for every weight, not only the strongest `maxLines`. */
  allLines?: boolean;
  /** Without a highlighted query: the most lines drawn, the strongest (default 1000). */
  maxLines?: number;
}

/** What the head view draws, before it becomes a layout (shared with the interactive view). */
export interface HeadViewModel {
  ds: DisplayStack;
  layer: number;
  heads: number[];
  colors: string[];
  pair: PairFilter;
  query: number | undefined;
}

export function headViewModel(trace: Trace, options: HeadViewOptions = {}): HeadViewModel & { common: ResolvedCommon } {
  const common = resolveCommon(trace, options);
  const numLayers = trace.attention[common.stack]!.layers.length;
  const layer = checkIndex(options.layer ?? 0, numLayers, 'layer');
  const ds = displayStack(trace, common.stack, { hideSpecial: options.hideSpecial, mergeSubwords: options.mergeSubwords, layers: [layer], step: options.step });
  const heads = resolveIndices(options.heads, ds.numHeads, 'head');
  const pair = typeof options.pair === 'string' ? parsePairFilter(options.pair) : (options.pair ?? 'all');
  if (pair !== 'all' && !hasPair(ds.queryTokens) && !hasPair(ds.keyTokens)) {
    throw new AttnscopeError(`sentence-pair filter ${pair} needs a sentence pair (trace with --pair)`);
  }
  const query = options.query === undefined ? (ds.newest ?? undefined) : checkIndex(options.query, ds.queryTokens.length, 'query token');
  return { ds, layer, heads, colors: headColors(ds.numHeads), pair, query, common };
}

/** A token a head view focuses on. */
export interface HeadFocus {
  side: 'query' | 'key';
  index: number;
}

/** Where the layout goes and how the host names tokens. */
export interface HeadFrame {
  /** Width to fill (the page's view width); default: what the diagram needs. */
  width?: number;
  /** Height to fill with rows (the page's visible height); default 1000 (exports). */
  height?: number;
  /** Smallest row height (default 3: long inputs stay one picture, every n-th token labelled; the page uses 12). */
  minRow?: number;
  /** y where the layout starts (below a heading). */
  top?: number;
  /** Draw the head swatches (exports; the page has its own buttons). */
  swatches?: boolean;
  /** Room for weight blocks beside both columns (the page, where either side can be focused). */
  blocksBothSides?: boolean;
  /** Largest row height (default 22; the page lets short inputs grow to 30). */
  maxRow?: number;
  /** Token text as shown (default: the display label). */
  label?: (t: DisplayToken) => string;
  /** Tooltip of a token label (default: generated tokens' probability note). */
  tokenTip?: (side: 'query' | 'key', t: DisplayToken, index: number) => string | undefined;
  /** Weight as printed beside the blocks (default 4 significant digits). */
  formatWeight?: (v: number) => string;
}

/** The lines' count and rule, for the caption. */
export interface LineStats {
  drawn: number;
  /** Candidate lines (weights above minWeight that pass the pair filter). */
  total: number;
  /** Smallest weight drawn when capped, else 0. */
  cutoff: number;
  capped: boolean;
}

export interface HeadLayout extends Picture {
  model: HeadViewModel;
  theme: Theme;
  /**
   * Row geometry: query row i is centred at top + (i + 0.5) * queryRow, key row k at
   * top + (k + 0.5) * keyRow. Both columns span the same height (cross attention: the shorter
   * column's rows are taller). rowHeight and fontSize are the longer column's.
   */
  top: number;
  rowHeight: number;
  fontSize: number;
  queryRow: number;
  keyRow: number;
  queryFont: number;
  keyFont: number;
  /** Right edge of the query labels, left edge of the key labels, line ends. */
  leftX: number;
  rightX: number;
  lineX1: number;
  lineX2: number;
  leftWidth: number;
  rightWidth: number;
  /** Where weight blocks start beside the query (left) and key (right) columns. */
  leftBlocksX: number;
  rightBlocksX: number;
  /** Vertical offset of each head's line ends within a row. */
  headOffset: readonly number[];
  labels: { query: string[]; key: string[] };
  /** Static items (headers, swatches, labels, boundaries, sentence marks, caption). */
  frame: Item[];
  /** The focus (null: the whole picture). */
  focus: HeadFocus | null;
  /** Under the lines: the focused token's highlight. */
  under: Item[];
  lines: LineItem[];
  /** Over the labels: per-head weight blocks and values beside the other column. */
  over: Item[];
  stats: LineStats;
  /** "lines: ..." — which lines are drawn. */
  caption: string;
}


function defaultTip(trace: Trace, ds: DisplayStack) {
  return (side: 'query' | 'key', t: DisplayToken): string | undefined => {
    // Generated tokens' probabilities and the head's predictions (--top-k) at the token.
    return tokenTipText(trace, ds.stack, side, t, (c) => tokenLabel(prettifyToken(c, trace.model.modelType)));
  };
}

function tokenFill(t: DisplayToken, theme: Theme): string {
  return t.generated ? (t.special ? theme.special : theme.generated) : t.special ? theme.special : theme.text;
}

const nf = (v: number) => v.toLocaleString('en');

/** The head view's layout (see the file comment). */
export function headViewLayout(
  trace: Trace,
  options: HeadViewOptions = {},
  frame: HeadFrame = {},
  model: HeadViewModel & { common: ResolvedCommon } = headViewModel(trace, options),
): HeadLayout {
  const { ds, heads, colors, common } = model;
  const { theme } = common;
  const L = LAYOUT.head;
  const m = LAYOUT.margin;
  const sfs = LAYOUT.smallFontSize;
  const nq = ds.queryTokens.length;
  const nk = ds.keyTokens.length;
  const n = Math.max(nq, nk);
  const label = frame.label ?? ((t: DisplayToken) => t.label);
  const tip = frame.tokenTip ?? defaultTip(trace, ds);
  let y = frame.top ?? m;
  const items: Item[] = [];

  // Head swatches (exports): all heads, the unselected ones hollow.
  const selected = new Set(heads);
  const swatchRows = (perRow: number) => Math.ceil(ds.numHeads / perRow);
  let swatchBlock = 0;
  if (frame.swatches) swatchBlock = sfs + 4 + swatchRows(16) * (L.swatch + L.swatchGap) + 8;
  const captionH = sfs + 10;

  // Rows fill the height.
  const availH = (frame.height ?? 1000) - y - swatchBlock - captionH - (sfs + 8) - m;
  const rowHeight = Math.max(frame.minRow ?? 3, Math.min(frame.maxRow ?? L.rowHeight, availH / n));
  const fontOf = (row: number) => Math.min(15, Math.max(8, row * 0.6));
  const fontSize = fontOf(rowHeight);
  const queryRow = (n * rowHeight) / nq;
  const keyRow = (n * rowHeight) / nk;
  const queryFont = fontOf(queryRow);
  const keyFont = fontOf(keyRow);
  const stepQ = labelStep(queryRow, queryFont);
  const stepK = labelStep(keyRow, keyFont);

  const labelsQ = ds.queryTokens.map((t) => truncate(label(t)));
  const labelsK = ds.keyTokens.map((t) => truncate(label(t)));
  // textWidth is an estimate: 10 % slack keeps long labels off the weight blocks beside them.
  const widest = (ls: string[], step: number, fs: number) => Math.max(24, ...ls.map((l, i) => (i % step === 0 ? 1.1 * textWidth(l, fs) : 0)));
  const leftWidth = widest(labelsQ, stepQ, queryFont);
  const rightWidth = widest(labelsK, stepK, keyFont);
  const axes = stackAxes(common.stack);
  const blocksW = heads.length * 7 + 6 + textWidth('0.00000', sfs) + 8;
  const focusSide = model.query !== undefined ? 'query' : null;
  const leftBlocks = frame.blocksBothSides ? blocksW : 0;
  const rightBlocks = frame.blocksBothSides || focusSide === 'query' ? blocksW : 0;
  const segMarks = hasPair(ds.queryTokens) || hasPair(ds.keyTokens) ? 16 : 0;
  const diagramH = n * rowHeight;
  const fixedW = 2 * m + 2 * segMarks + leftBlocks + Math.max(leftWidth, textWidth(axes.query, sfs)) + 2 * L.labelPad + Math.max(rightWidth, textWidth(axes.key, sfs)) + rightBlocks;
  // The gap between the columns: wide enough to read slopes, up to the frame's width.
  const maxGap = Math.max(360, 1.5 * diagramH);
  const gap = frame.width !== undefined ? Math.max(L.gap, Math.min(maxGap, frame.width - fixedW)) : Math.max(L.gap, Math.min(560, 1.2 * diagramH));
  const contentW = fixedW + gap;
  const x0 = frame.width !== undefined ? Math.max(0, (frame.width - contentW) / 2) : 0;
  const leftBlocksX = x0 + m + segMarks;
  const leftX = leftBlocksX + leftBlocks + Math.max(leftWidth, textWidth(axes.query, sfs));
  const lineX1 = leftX + L.labelPad;
  const lineX2 = lineX1 + gap;
  const rightX = lineX2 + L.labelPad;
  const rightBlocksX = rightX + rightWidth + 6;
  const width = Math.max(frame.width ?? 0, x0 + contentW);

  if (frame.swatches) {
    const sw = L.swatch;
    const perRow = Math.max(1, Math.floor((Math.max(contentW, 320) - 2 * m + L.swatchGap) / (sw + L.swatchGap)));
    items.push({ kind: 'text', x: x0 + m, y: y + sfs, text: 'heads', size: sfs, fill: theme.muted });
    y += sfs + 4;
    for (let h = 0; h < ds.numHeads; h++) {
      const sx = x0 + m + (h % perRow) * (sw + L.swatchGap);
      const sy = y + Math.floor(h / perRow) * (sw + L.swatchGap);
      const on = selected.has(h);
      items.push({
        kind: 'rect', x: sx + 0.5, y: sy + 0.5, width: sw - 1, height: sw - 1, rx: 3, fill: on ? colors[h]! : null, stroke: colors[h]!, strokeWidth: 1,
        className: 'head-swatch', data: on ? { head: h } : { head: h, off: 'true' },
      });
      items.push({ kind: 'text', x: sx + sw / 2, y: sy + sw / 2 + 3.5, text: String(h), size: h >= 10 ? 8.5 : 10, anchor: 'middle', fill: on ? textOn(colors[h]!) : theme.muted });
    }
    y += swatchRows(perRow) * (sw + L.swatchGap) + 8;
  }

  // Column headers.
  items.push({ kind: 'text', x: leftX, y: y + sfs, text: axes.query, size: sfs, fill: theme.muted, anchor: 'end', className: 'column-header' });
  items.push({ kind: 'text', x: rightX, y: y + sfs, text: axes.key, size: sfs, fill: theme.muted, className: 'column-header' });
  y += sfs + 8;
  const top = y;
  const rowY = (side: 'query' | 'key', i: number) => top + (i + 0.5) * (side === 'query' ? queryRow : keyRow);

  // Token labels.
  const labelItem = (t: DisplayToken, text: string, side: 'query' | 'key', i: number): TextItem => ({
    kind: 'text',
    x: side === 'query' ? leftX : rightX,
    y: rowY(side, i) + (side === 'query' ? queryFont : keyFont) * 0.36,
    text,
    size: side === 'query' ? queryFont : keyFont,
    anchor: side === 'query' ? 'end' : 'start',
    fill: tokenFill(t, theme),
    italic: t.generated || undefined,
    bold: (side === 'query' && i === model.query) || undefined,
    className: `token ${side}${t.generated ? ' generated' : ''}`,
    data: { side, index: i },
    tip: tip(side, t, i),
  });
  const newest = ds.newest;
  ds.queryTokens.forEach((t, i) => {
    if (i % stepQ === 0 || i === newest || i === model.query) items.push(labelItem(t, labelsQ[i]!, 'query', i));
  });
  ds.keyTokens.forEach((t, i) => {
    if (i % stepK === 0) items.push(labelItem(t, labelsK[i]!, 'key', i));
  });

  // Where the generated tokens start: a dashed line across each column.
  const boundary = (tokens: DisplayToken[], x1: number, x2: number, axis: 'query' | 'key') => {
    const g = firstGeneratedBoundary(tokens);
    if (g === null) return;
    const by = top + g * (axis === 'query' ? queryRow : keyRow);
    items.push({ kind: 'line', x1, y1: by, x2, y2: by, stroke: theme.generated, width: 1.25, dash: [4, 3], className: 'prompt-boundary', data: { axis, index: g } });
  };
  boundary(ds.queryTokens, leftX - leftWidth - 2, leftX + 2, 'query');
  boundary(ds.keyTokens, rightX - 2, rightX + rightWidth + 2, 'key');

  // Sentence A/B bars beside the columns.
  if (segMarks) {
    const mark = (tokens: DisplayToken[], x: number, left: boolean) => {
      const side = left ? 'query' : 'key';
      const row = left ? queryRow : keyRow;
      for (const seg of [0, 1]) {
        const idx = tokens.flatMap((t, i) => (t.segment === seg ? [i] : []));
        if (idx.length === 0) continue;
        const y0 = rowY(side, idx[0]!) - row / 2 + 3;
        const y1 = rowY(side, idx[idx.length - 1]!) + row / 2 - 3;
        items.push({ kind: 'line', x1: x, y1: y0, x2: x, y2: y1, stroke: theme.grid, width: 2, className: 'segment-bar', data: { segment: seg === 0 ? 'A' : 'B' } });
        items.push({ kind: 'text', x: x + (left ? -4 : 4), y: (y0 + y1) / 2 + 4, text: seg === 0 ? 'A' : 'B', size: sfs, fill: theme.muted, anchor: left ? 'end' : 'start' });
      }
    };
    mark(ds.queryTokens, x0 + m + 10, true);
    mark(ds.keyTokens, x0 + contentW - m - 10, false);
  }

  // Each head's lines leave and reach a row at their own offset (heads side by side, not on top of each other).
  const spread = heads.length > 1 ? Math.min(rowHeight * 0.55, heads.length * 1.6) : 0;
  const headOffset = Array.from({ length: ds.numHeads }, () => 0);
  heads.forEach((h, j) => (headOffset[h] = heads.length > 1 ? (j / (heads.length - 1) - 0.5) * spread : 0));

  const captionY = top + diagramH + 8 + sfs;
  const height = captionY + m;
  const base: HeadLayout = {
    width,
    height,
    background: theme.background,
    items: [],
    model,
    theme,
    top,
    rowHeight,
    fontSize,
    queryRow,
    keyRow,
    queryFont,
    keyFont,
    leftX,
    rightX,
    lineX1,
    lineX2,
    leftWidth,
    rightWidth,
    leftBlocksX,
    rightBlocksX,
    headOffset,
    labels: { query: labelsQ, key: labelsK },
    frame: items,
    focus: null,
    under: [],
    lines: [],
    over: [],
    stats: { drawn: 0, total: 0, cutoff: 0, capped: false },
    caption: '',
  };
  const focus: HeadFocus | null = model.query !== undefined ? { side: 'query', index: model.query } : null;
  const f = headFocus(base, focus, options, frame);
  const captionItem: TextItem = { kind: 'text', x: x0 + m, y: captionY, text: f.caption, size: sfs, fill: theme.muted, className: 'lines-caption' };
  const out = { ...base, ...f, frame: [...items, captionItem] };
  out.items = [...out.under, ...out.lines, ...out.frame, ...out.over];
  return out;
}

/**
 * The focus-dependent part of a head layout: the lines (all of a focused token's, or the strongest
 * `maxLines` of the picture), the highlight under the focused label, and the weight blocks (and,
 * with one head, the values) beside the other column. The page calls it on hover.
 */
export function headFocus(
  layout: HeadLayout,
  focus: HeadFocus | null,
  options: Pick<HeadViewOptions, 'minWeight' | 'allLines' | 'maxLines' | 'showValues'> = {},
  frame: Pick<HeadFrame, 'formatWeight'> = {},
): Pick<HeadLayout, 'focus' | 'under' | 'lines' | 'over' | 'stats' | 'caption'> {
  const { model, theme, top, queryRow, keyRow } = layout;
  const { ds, heads, colors, pair, layer } = model;
  const nq = ds.queryTokens.length;
  const nk = ds.keyTokens.length;
  const W = ds.layers[layer]!;
  const floor = options.minWeight ?? 0;
  const rowQ = (i: number) => top + (i + 0.5) * queryRow;
  const rowK = (i: number) => top + (i + 0.5) * keyRow;
  const accepts = (q: number, k: number) => pairFilterAccepts(pair, ds.queryTokens[q]!.segment, ds.keyTokens[k]!.segment);
  const fmt = frame.formatWeight ?? ((v: number) => fmtValue(v, 4));
  const size = nq * nk;

  // Candidate lines: indices into the layer's [heads, nq, nk] array.
  let candidates: Int32Array | undefined;
  if (focus) {
    const list: number[] = [];
    for (const h of heads) {
      if (focus.side === 'query') {
        for (let k = 0; k < nk; k++) if (accepts(focus.index, k)) list.push((h * nq + focus.index) * nk + k);
      } else {
        for (let q = 0; q < nq; q++) if (accepts(q, focus.index)) list.push((h * nq + q) * nk + focus.index);
      }
    }
    candidates = Int32Array.from(list);
  } else if (pair !== 'all' || heads.length !== ds.numHeads) {
    const list = new Int32Array(heads.length * size);
    let c = 0;
    for (const h of heads) {
      for (let q = 0; q < nq; q++) {
        for (let k = 0; k < nk; k++) if (pair === 'all' || accepts(q, k)) list[c++] = (h * nq + q) * nk + k;
      }
    }
    candidates = list.subarray(0, c);
  } else {
    candidates = undefined; // every weight of the layer
  }
  const limit = focus || options.allLines ? Number.MAX_SAFE_INTEGER : Math.max(1, options.maxLines ?? DEFAULT_MAX_LINES);
  const strongest = strongestWeights(W.subarray(0, ds.numHeads * size), limit, floor, candidates);
  const capped = strongest.indices.length < strongest.total;
  const lines: LineItem[] = [];
  const width = heads.length > 1 ? 1.5 : LAYOUT.head.lineWidth;
  for (const i of strongest.indices) {
    const h = Math.floor(i / size);
    const r = i - h * size;
    const q = Math.floor(r / nk);
    const k = r - q * nk;
    const off = layout.headOffset[h] ?? 0;
    lines.push({
      kind: 'line',
      x1: layout.lineX1,
      y1: rowQ(q) + off,
      x2: layout.lineX2,
      y2: rowK(k) + off,
      stroke: colors[h]!,
      width,
      opacity: Math.min(1, W[i]!),
      data: { head: h, q, k },
    });
  }

  const under: Item[] = [];
  const over: Item[] = [];
  if (focus) {
    const fi = focus.index;
    const text = focus.side === 'query' ? layout.labels.query[fi]! : layout.labels.key[fi]!;
    const fRow = focus.side === 'query' ? queryRow : keyRow;
    const fy = (focus.side === 'query' ? rowQ : rowK)(fi);
    const w = textWidth(text, focus.side === 'query' ? layout.queryFont : layout.keyFont) + 8;
    const hx = focus.side === 'query' ? layout.leftX - w + 4 : layout.rightX - 4;
    const hh = Math.min(fRow, 28) - 2;
    under.push({ kind: 'rect', x: hx, y: fy - hh / 2, width: w, height: hh, rx: 3, fill: theme.highlight, className: 'focus-highlight' });
    const oRow = focus.side === 'query' ? keyRow : queryRow;
    const rowY = focus.side === 'query' ? rowK : rowQ;
    const other = focus.side === 'query' ? nk : nq;
    const bx = focus.side === 'query' ? layout.rightBlocksX : layout.leftBlocksX;
    const showValues = options.showValues ?? heads.length === 1;
    const sfs = LAYOUT.smallFontSize;
    const bh = Math.min(12, oRow - 2);
    for (let j = 0; j < other; j++) {
      const [q, k] = focus.side === 'query' ? [fi, j] : [j, fi];
      if (!accepts(q, k)) continue;
      heads.forEach((h, c) => {
        const wv = W[(h * nq + q) * nk + k]!;
        over.push({ kind: 'rect', x: bx + c * 7, y: rowY(j) - bh / 2, width: 6, height: bh, fill: colors[h]!, fillOpacity: Math.min(1, wv), className: 'weight-block', data: { head: h, q, k } });
      });
      if (showValues) {
        const h = heads[0]!;
        const wv = W[(h * nq + q) * nk + k]!;
        over.push({
          kind: 'text', x: bx + heads.length * 7 + 4, y: rowY(j) + sfs * 0.36, text: fmt(wv), size: Math.min(sfs, Math.max(7, oRow * 0.6)), fill: theme.muted,
          className: 'weight-value', data: { q, k, value: wv, index: j },
        });
      }
    }
  }
  const what = focus ? `${focus.side} ${focus.index} “${focus.side === 'query' ? layout.labels.query[focus.index] : layout.labels.key[focus.index]}”` : '';
  const caption = focus
    ? `lines: ${what}, all ${nf(lines.length)} of its nonzero weights · opacity = weight`
    : capped
      ? `lines: the ${nf(lines.length)} strongest of ${nf(strongest.total)} weights (≥ ${fmtValue(strongest.cutoff, 3)}) · opacity = weight`
      : `lines: all ${nf(lines.length)} ${floor > 0 ? `weights > ${fmtValue(floor, 3)}` : 'nonzero weights'} · opacity = weight`;
  return {
    focus,
    under,
    lines,
    over,
    stats: { drawn: lines.length, total: strongest.total, cutoff: capped ? strongest.cutoff : 0, capped },
    caption,
  };
}
