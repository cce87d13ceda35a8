/**
 * Neuron view as SVG: for one layer, head and query token, the query vector, every key vector,
 * their elementwise products, the dot products, the scaled scores (with the mask and any position
 * bias) and the softmax, all from the trace's queries, keys and attention.
 *
 * Isomorphic: imports nothing from Node.
 */
import { type NeuronScores, keyHeadFor, neuronScores } from '../../analysis/neuron.js';
import { AttnscopeError } from '../../core/errors.js';
import type { Trace } from '../../core/trace.js';
import { type WeightScale, divergingScale, headColor } from '../colors.js';
import { LAYOUT, type Theme } from '../theme.js';
import { stepWindow } from '../generation.js';
import { type DisplayToken, rawDisplayStack } from '../tokens.js';
import {
  type CommonViewOptions,
  STACK_TITLES,
  attrs,
  checkIndex,
  firstGeneratedBoundary,
  fmtAttr,
  generatedClass,
  generationHeader,
  viewHeading,
  promptBoundary,
  tokenStyle,
  withTokenTip,
  fmtValue,
  legend,
  n,
  resolveCommon,
  svgDocument,
  text,
  textWidth,
  truncate,
  PIXELATED_CLASS,
} from './common.js';
import { matrixDataUri } from './image.js';

export interface NeuronViewOptions extends CommonViewOptions {
  layer?: number;
  head?: number;
  /** Query token position (default: the last token; at a generation step, the newest). */
  query?: number;
}

export { keyHeadFor };

/**
 * Every number the neuron view shows (computed by analysis/neuron.ts from the trace's queries,
 * keys and score terms), with the tokens it shows them for (shared with the interactive view).
 */
export interface NeuronData extends NeuronScores {
  /** Generation traces: the step shown (keys are those the model had then), or null. */
  step: number | null;
  queryToken: DisplayToken;
  keyTokens: DisplayToken[];
}

/** Colour scales of the neuron view: one for q and k components, one for q ⊙ k, symmetric around 0. */
export function neuronScales(d: NeuronData, theme: Theme): { vecScale: WeightScale; prodScale: WeightScale } {
  let maxVec = 0;
  for (const v of d.q) maxVec = Math.max(maxVec, Math.abs(v));
  for (const k of d.keys) for (const v of k) maxVec = Math.max(maxVec, Math.abs(v));
  let maxProd = 0;
  for (const p of d.products) for (const v of p) maxProd = Math.max(maxProd, Math.abs(v));
  return { vecScale: divergingScale(theme, maxVec), prodScale: divergingScale(theme, maxProd) };
}

export function neuronData(trace: Trace, options: NeuronViewOptions = {}): NeuronData {
  const common = resolveCommon(trace, options);
  const stack = common.stack;
  if (!trace.queries || !trace.keys) {
    throw new AttnscopeError('the neuron view needs the queries and keys: trace with --qk (or export from a model, which asks for them)');
  }
  const att = trace.attention[stack]!;
  const layer = checkIndex(options.layer ?? 0, att.layers.length, 'layer');
  const head = checkIndex(options.head ?? 0, att.dims[0], 'head');
  // At a generation step: the queries and keys the model had then (the newest query by default).
  const win = options.step === undefined ? { queries: att.dims[1], keys: att.dims[2] } : stepWindow(trace, stack, options.step);
  const query = checkIndex(options.query ?? win.queries - 1, win.queries, 'query token');
  const scores = neuronScores(trace, { stack, layer, head, query, keys: win.keys });
  const ds = rawDisplayStack(trace, stack);
  return { ...scores, step: options.step ?? null, queryToken: ds.queryTokens[query]!, keyTokens: ds.keyTokens.slice(0, win.keys) };
}

/** Draws a vector as a strip of coloured cells (rects, or one image when long). */
function strip(values: ArrayLike<number>, x: number, y: number, width: number, height: number, scale: WeightScale, theme: Theme, cls: string): string {
  const d = values.length;
  const cw = width / d;
  let s = `<g class="${cls}">`;
  if (cw >= 3) {
    for (let i = 0; i < d; i++) {
      s += `<rect x="${n(x + i * cw)}" y="${n(y)}" width="${n(cw + 0.05)}" height="${n(height)}" fill="${scale.color(values[i]!)}"/>`;
    }
  } else {
    const img = matrixDataUri(values, 0, 1, d, scale);
    s += `<image${attrs({ x, y, width, height, preserveAspectRatio: 'none', 'image-rendering': 'optimizeSpeed', class: PIXELATED_CLASS, href: img.uri })}/>`;
  }
  s += `<rect${attrs({ x: x - 0.5, y: y - 0.5, width: width + 1, height: height + 1, fill: 'none', stroke: theme.grid, 'stroke-width': 1 })}/>`;
  return `${s}</g>`;
}

/** Renders the neuron view as a standalone SVG document. */
export function renderNeuronView(trace: Trace, options: NeuronViewOptions = {}): string {
  if (options.mergeSubwords || options.hideSpecial) {
    throw new AttnscopeError('the neuron view shows every token\'s own vectors: --merge-subwords and --hide-special do not apply to it');
  }
  const d = neuronData(trace, options);
  const { theme, idPrefix } = resolveCommon(trace, options);
  const N = LAYOUT.neuron;
  const fs = LAYOUT.fontSize;
  const sfs = LAYOUT.smallFontSize;
  const m = LAYOUT.margin;
  const nk = d.keyTokens.length;
  const stripW = Math.max(N.strip, Math.min(4 * N.strip, d.headDim * N.minComponent));
  const rowH = N.rowHeight;
  const cellH = rowH - 6;

  const { vecScale, prodScale } = neuronScales(d, theme);

  let y: number = m;
  let body = '';
  const qLabel = truncate(d.queryToken.label);
  const title =
    options.title === false
      ? ''
      : (options.title ??
        `${trace.model.name} · ${STACK_TITLES[d.stack]} · layer ${d.layer} · head ${d.head} · query ${d.query} “${qLabel}”` + (d.step !== null ? ` · step ${d.step}` : ''));
  const raw = rawDisplayStack(trace, d.stack);
  const newest = d.step !== null ? stepWindow(trace, d.stack, d.step).newest : null;
  const heading = viewHeading(title, 8, m, y, (at) =>
    generationHeader(trace, d.stack, { ...raw, step: d.step, newest }, m, at, theme, newest === d.query ? 'the query below' : null),
  );
  body += heading.svg;
  y = heading.y;
  const notes: string[] = [`head dim ${d.headDim}`, `q·k ${d.scaleNote}`];
  if (d.numKeyValueHeads < d.numHeads) {
    notes.push(`grouped-query attention: query head ${d.head} reads key head ${d.kvHead} (${d.numHeads} query heads share ${d.numKeyValueHeads} key heads)`);
  }
  notes.push(...neuronMaskNotes(d));
  if (d.bias) notes.push(`${d.biasKind ?? 'bias'}: the model adds it to the scaled scores (column “bias”, as recorded)`);
  notes.push(`softmax(score) = the model's attention (max |Δ| ${fmtValue(d.maxSoftmaxError, 2)})`);
  if (d.note) notes.push(d.note);
  // Notes wrap onto lines of at most ~110 characters.
  const noteLines: string[] = [];
  let cur = '';
  for (const part of notes) {
    if (cur && (cur + ' · ' + part).length > 110) {
      noteLines.push(cur);
      cur = part;
    } else cur = cur ? `${cur} · ${part}` : part;
  }
  if (cur) noteLines.push(cur);
  for (const line of noteLines) {
    body += text(m, y + sfs, line, { 'font-size': sfs, fill: theme.muted, class: 'note' });
    y += sfs + 5;
  }
  y += 8;

  // Columns.
  // Wide enough for every key label and for the (bold) query label above them.
  const labelW = Math.max(60, textWidth(`q  ${d.query} ${qLabel}`, fs) * 1.08, ...d.keyTokens.map((t, j) => textWidth(`${j} ${truncate(t.label)}`, fs))) + 8;
  const numW = N.numberColumn;
  const xLabel = m + labelW; // right edge of the key labels
  const xK = xLabel + 10;
  const xP = xK + stripW + 16;
  const xDot = xP + stripW + 16 + numW; // numbers are right-aligned at the column's right edge
  // With a bias: q·k, × scale (unless 1), + bias, = score; without: q·k, score (= × scale).
  const showScaled = d.bias !== null && d.scale !== 1;
  const xScaled = showScaled ? xDot + numW : xDot;
  const xBias = d.bias ? xScaled + numW : xScaled;
  const xScore = xBias + numW;
  const xSoft = xScore + numW;
  const xBar = xSoft + 12;
  const barW = 120;
  const contentRight = xBar + barW + 60;

  // Query row.
  body += withTokenTip(
    trace,
    d.stack,
    'query',
    d.queryToken,
    text(xLabel, y + rowH / 2 + fs * 0.36, `q  ${d.query} ${qLabel}`, { 'text-anchor': 'end', 'font-weight': 'bold', ...tokenStyle(d.queryToken, theme), class: `token query${generatedClass(d.queryToken)}` }),
  );
  body += strip(d.q, xK, y + 3, stripW, cellH, vecScale, theme, 'query-vector');
  body += `<rect${attrs({ x: xP, y: y + 3, width: 10, height: cellH, fill: headColor(d.head, d.numHeads) })}/>`;
  body += text(xP + 16, y + rowH / 2 + sfs * 0.36, `query head ${d.head}${d.numKeyValueHeads < d.numHeads ? ` → key head ${d.kvHead}` : ''}`, { 'font-size': sfs, fill: theme.muted });
  y += rowH + 10;

  // Header.
  const header = (x: number, label: string, anchor: 'start' | 'end' = 'end') =>
    text(x, y + sfs, label, { 'font-size': sfs, fill: theme.muted, 'text-anchor': anchor, 'font-weight': 'bold' });
  body += header(xLabel, 'key');
  body += header(xK, 'k', 'start');
  body += header(xP, 'q ⊙ k', 'start');
  body += header(xDot, 'q · k');
  if (showScaled) body += header(xScaled, `× ${fmtValue(d.scale, 3)}`);
  if (d.bias) body += header(xBias, '+ bias');
  body += header(xScore, d.bias ? 'score' : d.scale === 1 ? 'score' : `× ${fmtValue(d.scale, 3)}`);
  body += header(xSoft, 'softmax');
  body += header(xBar, 'attention', 'start');
  y += sfs + 8;
  body += `<line${attrs({ x1: m, y1: y - 3, x2: contentRight - 40, y2: y - 3, stroke: theme.grid, 'stroke-width': 1 })}/>`;

  const num = (x: number, yy: number, v: number, cls: string, j: number, fill = theme.text) =>
    text(x, yy, fmtValue(v), { 'text-anchor': 'end', class: cls, 'data-k': j, 'data-value': Number.isFinite(v) ? fmtAttr(v) : String(v), fill });
  const rowsTop = y;
  for (let j = 0; j < nk; j++) {
    const t = d.keyTokens[j]!;
    const ry = rowsTop + j * rowH;
    const ty = ry + rowH / 2 + fs * 0.36;
    const masked = d.masked[j]!;
    if (masked) body += `<rect${attrs({ x: m, y: ry, width: contentRight - 40 - m, height: rowH, fill: theme.masked })}/>`;
    if (j === d.query && d.stack !== 'cross') body += `<rect${attrs({ x: m, y: ry, width: 4, height: rowH, fill: headColor(d.head, d.numHeads) })}/>`;
    body += `<g class="key-row" data-k="${j}"${masked ? ' data-masked="true"' : ''}>`;
    const style = tokenStyle(t, theme);
    body += withTokenTip(
      trace,
      d.stack,
      'key',
      t,
      text(xLabel, ty, `${j} ${truncate(t.label)}`, { 'text-anchor': 'end', ...style, fill: masked && !t.special ? theme.muted : style.fill, class: `token key${generatedClass(t)}` }),
    );
    body += strip(d.keys[j]!, xK, ry + 3, stripW, cellH, vecScale, theme, 'key-vector');
    body += strip(d.products[j]!, xP, ry + 3, stripW, cellH, prodScale, theme, 'product');
    const dim = masked ? theme.muted : theme.text;
    body += num(xDot, ty, d.dots[j]!, 'dot', j, dim);
    if (masked) {
      body += text(xScore, ty, '−∞', { 'text-anchor': 'end', class: 'score', 'data-k': j, 'data-value': '-Infinity', fill: theme.muted });
    } else {
      body += num(xScore, ty, d.scores[j]!, 'score', j);
    }
    if (showScaled) body += num(xScaled, ty, d.scaled[j]!, 'scaled', j, dim);
    if (d.bias) body += num(xBias, ty, d.bias[j]!, 'bias', j, dim);
    body += num(xSoft, ty, d.softmax[j]!, 'softmax', j, dim);
    const w = d.attention[j]!;
    body += `<rect${attrs({ x: xBar, y: ry + 4, width: Math.max(0, barW * w), height: rowH - 8, fill: headColor(d.head, d.numHeads), class: 'attention-bar', 'data-k': j, 'data-value': fmtAttr(w) })}/>`;
    body += text(xBar + barW * w + 4, ty - 1, fmtValue(w, 3), { 'font-size': sfs, fill: theme.muted, class: 'attention', 'data-k': j, 'data-value': fmtAttr(w) });
    body += '</g>';
  }
  const gk = firstGeneratedBoundary(d.keyTokens);
  if (gk !== null) body += promptBoundary(m, rowsTop + gk * rowH, contentRight - 40, rowsTop + gk * rowH, theme, 'key');
  y = rowsTop + nk * rowH + 14;

  // Legends, side by side below the table.
  const lg1 = legend(vecScale, m, y, theme, `${idPrefix}-neuron-vec`, 'q, k components', 90);
  const lg2 = legend(prodScale, m + lg1.width + 40, y, theme, `${idPrefix}-neuron-prod`, 'q ⊙ k components', 90);
  body += lg1.svg + lg2.svg;
  y += Math.max(lg1.height, lg2.height) + m;

  const width = Math.max(contentRight, m + textWidth(title, LAYOUT.titleFontSize) + m, m + (heading.width) + m, ...noteLines.map((l) => m + textWidth(l, sfs) + m));
  return svgDocument(width, y, theme, body, { title: title || 'neuron view', className: 'attnscope-neuron-view' });
}

/** The mask notes of the neuron view: causal keys, sliding window, or keys masked in the trace. */
export function neuronMaskNotes(d: NeuronScores): string[] {
  const masks = d.masked.filter(Boolean).length;
  const plural = (k: number) => `${k} key${k === 1 ? '' : 's'}`;
  if (masks === 0) return ['no mask'];
  if (d.terms === 'assumed') return [d.causal ? `causal mask: the ${plural(masks)} after the query get −∞` : `mask: ${plural(masks)} get −∞ (weight 0)`];
  const notes: string[] = [];
  const after = d.masked.filter((m, j) => m && j > d.query).length;
  if (after > 0) notes.push(`causal mask: the ${plural(after)} after the query get −∞`);
  if (masks > after && d.window !== null) notes.push(`sliding window ${d.window}: the ${plural(masks - after)} more than ${d.window - 1} before the query get −∞`);
  return notes;
}
