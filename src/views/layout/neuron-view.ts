/**
 * Neuron view layout: for one layer, head and query token, the query vector, every key vector,
 * q ⊙ k, q · k, the scaled scores (with the mask and any recorded bias) and the softmax next to
 * the model's attention — computed once as plain data from the analysis numbers
 * (src/analysis/neuron.ts, used as they are), and painted by the SVG writer
 * (src/views/svg/neuron-view.ts) and the page (web/views/neuron.ts).
 *
 * Isomorphic: imports nothing from Node.
 */
import { type NeuronScores, keyHeadFor, neuronScores } from '../../analysis/neuron.js';
import { AttnscopeError } from '../../core/errors.js';
import type { Trace } from '../../core/trace.js';
import { type WeightScale, divergingScale, headColor } from '../colors.js';
import { predictionNote, stepWindow, tokenNote } from '../generation.js';
import { type CommonViewOptions, checkIndex, firstGeneratedBoundary, fmtValue, resolveCommon } from '../svg/common.js';
import { LAYOUT, type Theme } from '../theme.js';
import { type DisplayToken, prettifyToken, rawDisplayStack, tokenLabel } from '../tokens.js';
import { type Item, type ScaleSpec, STACK_TITLES, legendItems, scaleSpec, textWidth, truncate, wrapText } from './common.js';
import { MAX_TITLE_WIDTH, headingItems } from './model-view.js';

export { keyHeadFor };

export interface NeuronViewOptions extends CommonViewOptions {
  layer?: number;
  head?: number;
  /** Query token position (default: the last token; at a generation step, the newest). */
  query?: number;
}

/**
 * Every number the neuron view shows (computed by analysis/neuron.ts from the trace's queries,
 * keys and score terms), with the tokens it shows them for.
 */
export interface NeuronData extends NeuronScores {
  /** Generation traces: the step shown (keys are those the model had then), or null. */
  step: number | null;
  queryToken: DisplayToken;
  keyTokens: DisplayToken[];
}

/** The neuron view's numbers for the options (layer, head and query default to 0, 0 and the last / newest token). */
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

/** Colour scales of the neuron view: one for q and k components, one for q ⊙ k, symmetric around 0. */
export function neuronScales(d: NeuronScores, theme: Theme): { vecScale: WeightScale; prodScale: WeightScale } {
  let maxVec = 0;
  for (const v of d.q) maxVec = Math.max(maxVec, Math.abs(v));
  for (const k of d.keys) for (const v of k) maxVec = Math.max(maxVec, Math.abs(v));
  let maxProd = 0;
  for (const p of d.products) for (const v of p) maxProd = Math.max(maxProd, Math.abs(v));
  return { vecScale: divergingScale(theme, maxVec), prodScale: divergingScale(theme, maxProd) };
}

/** The mask notes of the neuron view: causal keys, sliding window, or keys masked in the trace. */
export function neuronMaskNotes(d: NeuronScores): string[] {
  const masks = d.masked.filter(Boolean).length;
  const plural = (k: number) => `${k} key${k === 1 ? '' : 's'}`;
  const get = (k: number) => (k === 1 ? 'gets' : 'get');
  if (masks === 0) return ['no mask'];
  if (d.terms === 'assumed') return [d.causal ? `causal mask: the ${plural(masks)} after the query ${get(masks)} −∞` : `mask: ${plural(masks)} ${get(masks)} −∞ (weight 0)`];
  const notes: string[] = [];
  const after = d.masked.filter((m, j) => m && j > d.query).length;
  if (after > 0) notes.push(`causal mask: the ${plural(after)} after the query ${get(after)} −∞`);
  if (masks > after && d.window !== null) notes.push(`sliding window ${d.window}: the ${plural(masks - after)} more than ${d.window - 1} before the query ${get(masks - after)} −∞`);
  return notes;
}

export type NeuronNoteKind = 'dim' | 'scale' | 'kv' | 'mask' | 'bias' | 'softmax' | 'assumed' | 'prediction';

export interface NeuronLayoutOptions extends NeuronViewOptions {
  /** 'figure' (default) writes the title, generation lines and notes; 'page' leaves them to the page. */
  frame?: 'figure' | 'page';
  /** The numbers, when the caller has them already. */
  data?: NeuronData;
  /** A token's label (default its prettified label). */
  label?: (t: DisplayToken) => string;
  /** A token's tooltip (default: its raw text, and for generated or predicted tokens what the trace says). */
  tokenTip?: (side: 'query' | 'key', t: DisplayToken) => string;
  /** Numbers computed from q and k (default 4 significant digits). */
  formatDerived?: (v: number) => string;
  /** The model's attention (default 3 significant digits). */
  formatWeight?: (v: number) => string;
  /** q and k are rounded (a size-limited page): headers of the numbers computed from them say ≈. */
  approx?: boolean;
  /** The softmax error to report (the page passes the one measured on the exact trace); default the shown row's. */
  softmaxError?: number;
}

/** A vector drawn as a strip of coloured cells. */
export interface NeuronStrip {
  kind: 'query-vector' | 'key-vector' | 'product';
  /** Key index (−1 for the query). */
  k: number;
  values: ArrayLike<number>;
  x: number;
  y: number;
  width: number;
  height: number;
  scale: 'vector' | 'product';
}

/** One key's row: its items (label, numbers, attention bar) and strips. */
export interface NeuronRow {
  k: number;
  masked: boolean;
  y: number;
  height: number;
  items: Item[];
  strips: NeuronStrip[];
}

export interface NeuronLayout {
  width: number;
  height: number;
  background: string;
  title: string;
  data: NeuronData;
  notes: { kind: NeuronNoteKind; text: string }[];
  /** Title, generation lines and notes (figure), the query row, column headers, rule, boundary, legends. */
  items: Item[];
  queryStrip: NeuronStrip;
  rows: NeuronRow[];
  scales: { vector: ScaleSpec; product: ScaleSpec };
  /** Left edges of the k and q ⊙ k strips and their width. */
  strips: { xK: number; xP: number; width: number; height: number };
}

/** The neuron view's layout. */
export function neuronViewLayout(trace: Trace, options: NeuronLayoutOptions = {}): NeuronLayout {
  if (options.mergeSubwords || options.hideSpecial) {
    throw new AttnscopeError('the neuron view shows every token\'s own vectors: --merge-subwords and --hide-special do not apply to it');
  }
  const d = options.data ?? neuronData(trace, options);
  const { theme } = resolveCommon(trace, options);
  const figure = options.frame !== 'page';
  const label = options.label ?? ((t: DisplayToken) => t.label);
  const show = (c: string) => tokenLabel(prettifyToken(c, trace.model.modelType));
  const tokenTip =
    options.tokenTip ??
    ((side: 'query' | 'key', t: DisplayToken) => {
      const note = tokenNote(trace, d.stack, side, t.positions, show);
      return note ? `${t.raw} · ${note}` : t.raw;
    });
  const fmtD = options.formatDerived ?? ((v: number) => fmtValue(v));
  const fmtW = options.formatWeight ?? ((v: number) => fmtValue(v, 3));
  const approx = options.approx ? '≈ ' : '';
  const N = LAYOUT.neuron;
  const fs = LAYOUT.fontSize;
  const sfs = LAYOUT.smallFontSize;
  const m = LAYOUT.margin;
  const nk = d.keyTokens.length;
  const stripW = Math.max(N.strip, Math.min(4 * N.strip, d.headDim * N.minComponent));
  const rowH = N.rowHeight;
  const cellH = rowH - 6;
  const { vecScale, prodScale } = neuronScales(d, theme);
  const color = headColor(d.head, d.numHeads);

  // Columns. Wide enough for every key label and the (bold) query label above them.
  const qLabel = truncate(label(d.queryToken));
  const keyLabels = d.keyTokens.map((t, j) => `${j} ${truncate(label(t))}`);
  const labelW = Math.max(60, textWidth(`q  ${d.query} ${qLabel}`, fs) * 1.08, ...keyLabels.map((l) => textWidth(l, fs))) + 8;
  const numW = N.numberColumn;
  const xLabel = m + labelW; // right edge of the key labels
  const xK = xLabel + 10;
  const xP = xK + stripW + 16;
  const xDot = xP + stripW + 16 + numW; // numbers are right-aligned at their column's right edge
  // With a bias: q·k, × scale (unless 1), + bias, = score; without: q·k, then the score (= × scale).
  const showScaled = d.bias !== null && d.scale !== 1;
  const xScaled = showScaled ? xDot + numW : xDot;
  const xBias = d.bias ? xScaled + numW : xScaled;
  const xScore = xBias + numW;
  const xSoft = xScore + numW;
  const xBar = xSoft + 12;
  const barW = 120;
  const contentRight = xBar + barW + 60;

  // Notes.
  const notes: { kind: NeuronNoteKind; text: string }[] = [
    { kind: 'dim', text: `head dim ${d.headDim}` },
    { kind: 'scale', text: `q·k ${d.scaleNote}` },
  ];
  if (d.numKeyValueHeads < d.numHeads) {
    notes.push({ kind: 'kv', text: `grouped-query attention: query head ${d.head} reads key head ${d.kvHead} (${d.numHeads} query heads share ${d.numKeyValueHeads} key heads)` });
  }
  for (const text of neuronMaskNotes(d)) notes.push({ kind: 'mask', text });
  if (d.bias) notes.push({ kind: 'bias', text: `${d.biasKind ?? 'bias'}: the model adds it to the scaled scores (column “bias”, as recorded)` });
  const err = options.softmaxError ?? d.maxSoftmaxError;
  notes.push({ kind: 'softmax', text: `softmax(score) = the model's attention (max |Δ| ${fmtValue(err, 2)}${options.softmaxError !== undefined ? ' on the exact trace' : ''})` });
  if (d.note) notes.push({ kind: 'assumed', text: d.note });
  const predicted = predictionNote(trace, d.stack, 'query', d.queryToken.positions, show);
  if (predicted) notes.push({ kind: 'prediction', text: `the model’s head at query ${d.query} “${truncate(label(d.queryToken))}” ${predicted}` });

  const items: Item[] = [];
  let y = m;
  const title =
    options.title === false
      ? ''
      : (options.title ??
        `${trace.model.name} · ${STACK_TITLES[d.stack]} · layer ${d.layer} · head ${d.head} · query ${d.query} “${qLabel}”` + (d.step !== null ? ` · step ${d.step}` : ''));
  const width = Math.max(contentRight, 560, figure ? Math.min(MAX_TITLE_WIDTH, textWidth(title, LAYOUT.titleFontSize)) + 2 * m : 0);
  if (figure) {
    const raw = rawDisplayStack(trace, d.stack);
    const newest = d.step !== null ? stepWindow(trace, d.stack, d.step).newest : null;
    const heading = headingItems(trace, d.stack, { ...raw, step: d.step, newest }, title, m, y, width - 2 * m, theme, newest === d.query ? 'the query below' : null);
    items.push(...heading.items);
    y = heading.y - 4;
    // Notes on lines that fit the figure.
    const lines: string[] = [];
    let cur = '';
    for (const { text } of notes) {
      if (cur && textWidth(`${cur} · ${text}`, sfs) > width - 2 * m) {
        lines.push(cur);
        cur = text;
      } else cur = cur ? `${cur} · ${text}` : text;
    }
    if (cur) lines.push(cur);
    for (const line of lines.flatMap((l) => wrapText(l, sfs, width - 2 * m))) {
      items.push({ kind: 'text', x: m, y: y + sfs, text: line, size: sfs, fill: theme.muted, className: 'note' });
      y += sfs + 5;
    }
    y += 8;
  }

  // Query row.
  const qt = d.queryToken;
  items.push({
    kind: 'text',
    x: xLabel,
    y: y + rowH / 2 + fs * 0.36,
    text: `q  ${d.query} ${qLabel}`,
    size: fs,
    anchor: 'end',
    bold: true,
    fill: qt.special ? theme.special : qt.generated ? theme.generated : theme.text,
    italic: qt.generated,
    className: `token query${qt.special ? ' special' : ''}${qt.generated ? ' generated' : ''}`,
    data: { index: d.query, testid: 'neuron-query-label' },
    tip: `query ${d.query}: ${tokenTip('query', qt)}`,
  });
  const queryStrip: NeuronStrip = { kind: 'query-vector', k: -1, values: d.q, x: xK, y: y + 3, width: stripW, height: cellH, scale: 'vector' };
  items.push({ kind: 'rect', x: xP, y: y + 3, width: 10, height: cellH, fill: color });
  items.push({ kind: 'text', x: xP + 16, y: y + rowH / 2 + sfs * 0.36, text: `query head ${d.head}${d.numKeyValueHeads < d.numHeads ? ` → key head ${d.kvHead}` : ''}`, size: sfs, fill: theme.muted });
  y += rowH + 10;

  // Column headers.
  const header = (x: number, text: string, anchor: 'start' | 'end' = 'end') =>
    items.push({ kind: 'text', x, y: y + sfs, text, size: sfs, fill: theme.muted, anchor, bold: true, className: 'header' });
  header(xLabel, 'key');
  header(xK, 'k', 'start');
  header(xP, 'q ⊙ k', 'start');
  header(xDot, `${approx}q · k`);
  if (showScaled) header(xScaled, `${approx}× ${fmtValue(d.scale, 3)}`);
  if (d.bias) header(xBias, '+ bias');
  header(xScore, `${approx}${d.bias || d.scale === 1 ? 'score' : `× ${fmtValue(d.scale, 3)}`}`);
  header(xSoft, `${approx}softmax`);
  header(xBar, 'attention (model)', 'start');
  y += sfs + 8;
  items.push({ kind: 'line', x1: m, y1: y - 3, x2: contentRight - 40, y2: y - 3, stroke: theme.grid, width: 1 });

  // Key rows.
  const rowsTop = y;
  const rows: NeuronRow[] = [];
  for (let j = 0; j < nk; j++) {
    const t = d.keyTokens[j]!;
    const ry = rowsTop + j * rowH;
    const ty = ry + rowH / 2 + fs * 0.36;
    const masked = d.masked[j]!;
    const dim = masked ? theme.muted : theme.text;
    const r: Item[] = [];
    if (masked) r.push({ kind: 'rect', x: m, y: ry, width: contentRight - 40 - m, height: rowH, fill: theme.masked, className: 'masked' });
    if (j === d.query && d.stack !== 'cross') r.push({ kind: 'rect', x: m, y: ry, width: 4, height: rowH, fill: color, className: 'query-mark' });
    r.push({
      kind: 'text',
      x: xLabel,
      y: ty,
      text: keyLabels[j]!,
      size: fs,
      anchor: 'end',
      fill: t.special ? theme.special : t.generated ? theme.generated : masked ? theme.muted : theme.text,
      italic: t.generated,
      className: `token key${t.special ? ' special' : ''}${t.generated ? ' generated' : ''}${masked ? ' dim' : ''}`,
      data: { index: j },
      tip: `key ${j}: ${tokenTip('key', t)}`,
    });
    const num = (x: number, v: number, cls: string, text: string, fill: string) =>
      r.push({ kind: 'text', x, y: ty, text, size: fs, anchor: 'end', fill, className: cls, data: { k: j, value: v, testid: `neuron-${cls}-${j}` } });
    num(xDot, d.dots[j]!, 'dot', fmtD(d.dots[j]!), dim);
    if (showScaled) num(xScaled, d.scaled[j]!, 'scaled', fmtD(d.scaled[j]!), dim);
    if (d.bias) num(xBias, d.bias[j]!, 'bias', fmtD(d.bias[j]!), dim);
    if (masked) num(xScore, Number.NEGATIVE_INFINITY, 'score', '−∞', theme.muted);
    else num(xScore, d.scores[j]!, 'score', fmtD(d.scores[j]!), theme.text);
    num(xSoft, d.softmax[j]!, 'softmax', fmtD(d.softmax[j]!), dim);
    const w = d.attention[j]!;
    const bw = barW * Math.max(0, Math.min(1, w));
    r.push({ kind: 'rect', x: xBar, y: ry + 4, width: bw, height: rowH - 8, fill: color, className: 'attention-bar', data: { k: j, value: w } });
    r.push({ kind: 'text', x: xBar + bw + 4, y: ty - 1, text: fmtW(w), size: sfs, fill: theme.muted, className: 'attention', data: { k: j, value: w, testid: `neuron-attention-${j}` } });
    rows.push({
      k: j,
      masked,
      y: ry,
      height: rowH,
      items: r,
      strips: [
        { kind: 'key-vector', k: j, values: d.keys[j]!, x: xK, y: ry + 3, width: stripW, height: cellH, scale: 'vector' },
        { kind: 'product', k: j, values: d.products[j]!, x: xP, y: ry + 3, width: stripW, height: cellH, scale: 'product' },
      ],
    });
  }
  const gk = firstGeneratedBoundary(d.keyTokens);
  if (gk !== null) {
    items.push({ kind: 'line', x1: m, y1: rowsTop + gk * rowH, x2: contentRight - 40, y2: rowsTop + gk * rowH, stroke: theme.generated, width: 1.25, dash: [4, 3], className: 'prompt-boundary', data: { axis: 'key', testid: 'neuron-boundary' } });
  }
  y = rowsTop + nk * rowH + 14;

  // Legends, side by side below the table.
  const lg1 = legendItems(vecScale, m, y, 'q, k components', theme, 90);
  const lg2 = legendItems(prodScale, m + lg1.width + 40, y, 'q ⊙ k components', theme, 90);
  items.push(...lg1.items, ...lg2.items);
  y += Math.max(lg1.height, lg2.height) + m;

  return {
    width,
    height: y,
    background: theme.background,
    title,
    data: d,
    notes,
    items,
    queryStrip,
    rows,
    scales: { vector: scaleSpec(vecScale, 'diverging'), product: scaleSpec(prodScale, 'diverging') },
    strips: { xK, xP, width: stripW, height: cellH },
  };
}
