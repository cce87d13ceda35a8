/**
 * Head view (BertViz style) as SVG: query tokens on the left, key tokens on the right, one line
 * per (query, key) and selected head, coloured by head, opacity = attention weight.
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../../core/errors.js';
import type { Trace } from '../../core/trace.js';
import { headColors, textOn } from '../colors.js';
import { LAYOUT } from '../theme.js';
import {
  type DisplayStack,
  type DisplayToken,
  type PairFilter,
  displayStack,
  hasPair,
  pairFilterAccepts,
  parsePairFilter,
} from '../tokens.js';
import {
  type CommonViewOptions,
  STACK_TITLES,
  attrs,
  checkIndex,
  describeIndices,
  firstGeneratedBoundary,
  fmtAttr,
  generatedClass,
  generationHeader,
  viewHeading,
  fmtValue,
  n,
  resolveCommon,
  resolveIndices,
  svgDocument,
  text,
  textWidth,
  tokenStyle,
  truncate,
  withTokenTip,
  promptBoundary,
} from './common.js';

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
  /** Lines with weight ≤ this are left out (default 0: every nonzero weight gets a line). */
  minWeight?: number;
  /** Print the weights next to the key tokens (default: when a query is highlighted and one head is drawn). */
  showValues?: boolean;
}

/** What the head view draws, before it becomes markup (shared with the interactive view). */
export interface HeadViewModel {
  ds: DisplayStack;
  layer: number;
  heads: number[];
  colors: string[];
  pair: PairFilter;
  query: number | undefined;
}

export function headViewModel(trace: Trace, options: HeadViewOptions = {}): HeadViewModel & { common: ReturnType<typeof resolveCommon> } {
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

function columnWidth(tokens: DisplayToken[], fontSize: number): number {
  return Math.max(24, ...tokens.map((t) => textWidth(truncate(t.label), fontSize)));
}

/** Renders the head view as a standalone SVG document. */
export function renderHeadView(trace: Trace, options: HeadViewOptions = {}): string {
  const model = headViewModel(trace, options);
  const { ds, layer, heads, colors, pair, query, common } = model;
  const { theme } = common;
  const L = LAYOUT.head;
  const fs = LAYOUT.fontSize;
  const minWeight = options.minWeight ?? 0;
  const showValues = options.showValues ?? (query !== undefined && heads.length === 1);
  const nq = ds.queryTokens.length;
  const nk = ds.keyTokens.length;
  const weights = ds.layers[layer]!;

  const m = LAYOUT.margin;
  let y: number = m;
  let body = '';

  // Title.
  const title =
    options.title === false
      ? ''
      : (options.title ??
        `${trace.model.name} · ${STACK_TITLES[common.stack]} · layer ${layer} · head${heads.length > 1 ? 's' : ''} ${describeIndices(heads, ds.numHeads)}` +
          (pair !== 'all' ? ` · ${pair}` : '') +
          (ds.step !== null ? ` · step ${ds.step}` : ''));
  const heading = viewHeading(title, 10, m, y, (at) => generationHeader(trace, common.stack, ds, m, at, theme, query === ds.newest ? 'highlighted' : null));
  body += heading.svg;
  y = heading.y;

  // Column geometry.
  const leftW = columnWidth(ds.queryTokens, fs);
  const rightW = columnWidth(ds.keyTokens, fs);
  const blocks = query !== undefined ? heads.length * 7 + 6 : 0; // per-head weight blocks beside the keys
  const valuesW = showValues ? textWidth('0.0000', LAYOUT.smallFontSize) + 10 : 0;
  const segMarks = hasPair(ds.queryTokens) || hasPair(ds.keyTokens) ? 16 : 0;
  const cross = common.stack === 'cross';
  const leftHeader = cross ? 'decoder (queries)' : 'queries';
  const rightHeader = cross ? 'encoder (keys)' : 'keys';
  const leftX = m + segMarks + Math.max(leftW, textWidth(leftHeader, LAYOUT.smallFontSize)); // right edge of the query labels
  const lineX1 = leftX + L.labelPad;
  const lineX2 = lineX1 + L.gap;
  const rightX = lineX2 + L.labelPad; // left edge of the key labels
  const contentW = rightX + Math.max(rightW + blocks + valuesW, textWidth(rightHeader, LAYOUT.smallFontSize)) + segMarks + m;

  // Head swatches (all heads; the unselected ones hollow), wrapping to the content width.
  const sw = L.swatch;
  const perRow = Math.max(1, Math.floor((Math.max(contentW, 320) - 2 * m + L.swatchGap) / (sw + L.swatchGap)));
  const selected = new Set(heads);
  body += text(m, y + LAYOUT.smallFontSize, 'heads', { 'font-size': LAYOUT.smallFontSize, fill: theme.muted });
  y += LAYOUT.smallFontSize + 4;
  for (let h = 0; h < ds.numHeads; h++) {
    const sx = m + (h % perRow) * (sw + L.swatchGap);
    const sy = y + Math.floor(h / perRow) * (sw + L.swatchGap);
    const on = selected.has(h);
    body +=
      `<g class="head-swatch" data-head="${h}"${on ? '' : ' data-off="true"'}>` +
      `<rect${attrs({ x: sx + 0.5, y: sy + 0.5, width: sw - 1, height: sw - 1, rx: 3, fill: on ? colors[h] : 'none', stroke: colors[h], 'stroke-width': 1 })}/>` +
      text(sx + sw / 2, sy + sw / 2 + 3.5, String(h), {
        'font-size': h >= 10 ? 8.5 : 10,
        'text-anchor': 'middle',
        fill: on ? textOn(colors[h]!) : theme.muted,
      }) +
      '</g>';
  }
  y += Math.ceil(ds.numHeads / perRow) * (sw + L.swatchGap) + 8;

  // Column headers.
  body += text(leftX, y + LAYOUT.smallFontSize, leftHeader, { 'font-size': LAYOUT.smallFontSize, fill: theme.muted, 'text-anchor': 'end' });
  body += text(rightX, y + LAYOUT.smallFontSize, rightHeader, { 'font-size': LAYOUT.smallFontSize, fill: theme.muted });
  y += LAYOUT.smallFontSize + 8;

  const top = y;
  const rowY = (i: number) => top + i * L.rowHeight + L.rowHeight / 2;

  // Highlight of the selected query.
  if (query !== undefined) {
    const w = textWidth(truncate(ds.queryTokens[query]!.label), fs) + 8;
    body += `<rect${attrs({ x: leftX - w + 4, y: rowY(query) - L.rowHeight / 2 + 1, width: w, height: L.rowHeight - 2, rx: 3, fill: theme.highlight })}/>`;
  }

  // Lines: one group per head.
  let lines = '';
  for (const h of heads) {
    let g = '';
    for (let q = 0; q < nq; q++) {
      if (query !== undefined && q !== query) continue;
      const qs = ds.queryTokens[q]!.segment;
      const base = (h * nq + q) * nk;
      for (let k = 0; k < nk; k++) {
        const w = weights[base + k]!;
        if (!(w > minWeight)) continue;
        if (!pairFilterAccepts(pair, qs, ds.keyTokens[k]!.segment)) continue;
        g += `<line x1="${n(lineX1)}" y1="${n(rowY(q))}" x2="${n(lineX2)}" y2="${n(rowY(k))}" stroke-opacity="${fmtAttr(w)}" data-q="${q}" data-k="${k}"/>`;
      }
    }
    lines += `<g class="head-lines" data-head="${h}" stroke="${colors[h]}" stroke-width="${L.lineWidth}" stroke-linecap="round">${g}</g>`;
  }
  body += `<g class="lines">${lines}</g>`;

  // Token labels.
  const label = (t: DisplayToken, x: number, yy: number, anchor: 'start' | 'end', side: 'query' | 'key', i: number) =>
    withTokenTip(
      trace,
      common.stack,
      side,
      t,
      text(x, yy + fs * 0.36, truncate(t.label), {
        'text-anchor': anchor,
        ...tokenStyle(t, theme),
        class: `token ${side}${generatedClass(t)}`,
        'data-index': i,
        'font-weight': side === 'query' && i === query ? 'bold' : undefined,
      }),
    );
  ds.queryTokens.forEach((t, i) => (body += label(t, leftX, rowY(i), 'end', 'query', i)));
  ds.keyTokens.forEach((t, i) => (body += label(t, rightX, rowY(i), 'start', 'key', i)));

  // Where the generated tokens start: a dashed line across each column.
  const gq = firstGeneratedBoundary(ds.queryTokens);
  if (gq !== null) body += promptBoundary(m + segMarks, top + gq * L.rowHeight, leftX + 2, top + gq * L.rowHeight, theme, 'query');
  const gk = firstGeneratedBoundary(ds.keyTokens);
  if (gk !== null) body += promptBoundary(rightX - 2, top + gk * L.rowHeight, rightX + rightW, top + gk * L.rowHeight, theme, 'key');

  // Per-head weight blocks and values beside the keys of the highlighted query.
  if (query !== undefined) {
    const bx = rightX + rightW + 6;
    const qs = ds.queryTokens[query]!.segment;
    for (let k = 0; k < nk; k++) {
      if (!pairFilterAccepts(pair, qs, ds.keyTokens[k]!.segment)) continue;
      heads.forEach((h, j) => {
        const w = weights[(h * nq + query) * nk + k]!;
        body += `<rect${attrs({ x: bx + j * 7, y: rowY(k) - 6, width: 6, height: 12, fill: colors[h], 'fill-opacity': fmtAttr(w), class: 'weight-block', 'data-head': h, 'data-k': k })}/>`;
      });
      if (showValues) {
        const h = heads[0]!;
        const w = weights[(h * nq + query) * nk + k]!;
        body += text(bx + heads.length * 7 + 4, rowY(k) + LAYOUT.smallFontSize * 0.36, fmtValue(w, 3), {
          'font-size': LAYOUT.smallFontSize,
          fill: theme.muted,
          class: 'weight-value',
          'data-k': k,
          'data-value': fmtAttr(w),
        });
      }
    }
  }

  // Sentence A/B marks beside the columns.
  if (segMarks) {
    const mark = (tokens: DisplayToken[], x: number) => {
      for (const seg of [0, 1]) {
        const idx = tokens.flatMap((t, i) => (t.segment === seg ? [i] : []));
        if (idx.length === 0) continue;
        const y0 = rowY(idx[0]!) - L.rowHeight / 2 + 3;
        const y1 = rowY(idx[idx.length - 1]!) + L.rowHeight / 2 - 3;
        body += `<line${attrs({ x1: x, y1: y0, x2: x, y2: y1, stroke: theme.grid, 'stroke-width': 2 })}/>`;
        body += text(x + (x < leftX ? -4 : 4), (y0 + y1) / 2 + 4, seg === 0 ? 'A' : 'B', {
          'font-size': LAYOUT.smallFontSize,
          fill: theme.muted,
          'text-anchor': x < leftX ? 'end' : 'start',
        });
      }
    };
    mark(ds.queryTokens, m + 10);
    mark(ds.keyTokens, contentW - m - 10);
  }

  const height = top + Math.max(nq, nk) * L.rowHeight + m;
  const width = Math.max(contentW, m + textWidth(title, LAYOUT.titleFontSize) + m, m + (heading.width) + m, 320);
  return svgDocument(width, height, theme, body, { title: title || 'head view', className: 'attnscope-head-view' });
}
