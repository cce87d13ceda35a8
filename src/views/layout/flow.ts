/**
 * Flow diagram layout, computed once as plain data: the tokens of every layer as columns (column 0
 * the input tokens, column c the tokens after layer firstLayer + c − 1), and between consecutive
 * columns one line per kept edge, weighted by per-layer token × token matrices: raw head-fused
 * attention, the residual graph that rollout multiplies and attention flow runs on, or any
 * matrices a caller gives (norm-based attention, ALTI contributions...). Row q of matrix c − 1
 * is token q in column c, its column k token k in column c − 1.
 *
 * Pruning: per receiving token, its `keep` strongest edges (top-k), and only edges ≥ `threshold`.
 * Highlighting a token (column c, token i) shows what flows into it: its mass 1 is pushed down
 * through the matrices (each row divided by its sum), edge (q → k) carrying mass(q) · M[q, k] /
 * Σ_k' M[q, k']; the input column then holds rollout's row i for the residual graph. A caller may
 * give the input column's values instead (attention flow's row). Highlighted edges are drawn on
 * top (the `keep` strongest per receiving token, above 0.5 % of the mass), the others faded.
 *
 * The SVG writer (src/views/svg/flow.ts) and the page (web/views/flow.ts) paint it.
 *
 * Isomorphic: imports nothing from Node.
 */
import { attentionFlowOfMatrices } from '../../analysis/flow.js';
import { type HeadFusion, type LayerMatrices, attentionGraph, fusedAttention } from '../../analysis/rollout.js';
import { AttnscopeError } from '../../core/errors.js';
import type { StackName, Trace } from '../../core/trace.js';
import { weightScale } from '../colors.js';
import { type CommonViewOptions, checkIndex, fmtValue, resolveCommon } from '../svg/common.js';
import { LAYOUT, type Theme } from '../theme.js';
import { displayStack, rawDisplayStack } from '../tokens.js';
import { type Item, type Picture, textWidth, truncate } from './common.js';

export type FlowMethod = 'attention' | 'rollout' | 'flow';
export const FLOW_VIEW_METHODS: readonly FlowMethod[] = ['attention', 'rollout', 'flow'];

/** Options of the flow diagram and the influence tree. */
export interface FlowViewOptions extends CommonViewOptions {
  /** What weighs the edges (default rollout): fused attention, or the residual graph with rollout's or flow's input values. */
  method?: FlowMethod;
  fusion?: HeadFusion;
  discard?: number;
  residual?: number;
  /** Strongest edges kept per receiving token (default 3). */
  keep?: number;
  /** Edges below this weight are left out (default 0). */
  threshold?: number;
  /** Token highlighted (flow diagram) or the root (influence tree), as an index of the tokens; default: none / the last token. */
  query?: number;
  /** Column of the highlighted token (default the last, the output of the last layer). */
  column?: number;
  /** Influence tree: how many layers down it goes (default min(layers, 3)). */
  depth?: number;
  /** Attention flow: the largest graph computed ((layers + 1) × tokens). */
  maxNodes?: number;
  /** Per-layer matrices to draw instead of a method's (e.g. norm-based attention or ALTI). */
  matrices?: LayerMatrices;
  /** What `matrices` are, for the caption. */
  measure?: string;
}

export interface FlowToken {
  label: string;
  special: boolean;
  /** Tooltip (the raw token). */
  tip: string;
}

/** What the flow diagram and the influence tree draw, resolved from the options. */
export interface FlowModel {
  stack: StackName;
  tokens: FlowToken[];
  /** Edge matrices: matrices[c − 1] joins column c − 1 (columns) to column c (rows). */
  matrices: readonly ArrayLike<number>[];
  firstLayer: number;
  method: FlowMethod | 'custom';
  caption: string;
  theme: Theme;
}

const METHOD_CAPTIONS: Readonly<Record<FlowMethod, string>> = {
  attention: 'edges: attention (heads fused)',
  rollout: 'edges: residual-augmented attention A′ = ½A + ½I · highlight: rollout',
  flow: 'edges: residual-augmented attention A′ (flow capacities) · input values: attention flow',
};

export function flowModel(trace: Trace, options: FlowViewOptions = {}): FlowModel {
  const common = resolveCommon(trace, options);
  const stack = options.stack ?? (common.stack === 'cross' ? 'encoder' : common.stack);
  if (stack === 'cross') throw new AttnscopeError("flow diagram: the cross stack is not a token-to-token chain; use stack 'encoder' or 'decoder'");
  if (options.hideSpecial || options.mergeSubwords) throw new AttnscopeError('flow diagram: --hide-special and --merge-subwords do not apply (rollout and flow need every token)');
  // At a generation step: the first promptLength + step tokens (causal rows are what the model computed then).
  const ds = options.step !== undefined ? displayStack(trace, stack, { step: options.step }) : rawDisplayStack(trace, stack);
  const tokens = ds.queryTokens.map((t) => ({ label: t.label, special: t.special, tip: t.raw }));
  const full = trace.attention[stack]!;
  if (ds.queryTokens.length !== full.dims[1]) {
    const n = ds.queryTokens.length;
    trace = { ...trace, attention: { [stack]: { dims: [full.dims[0], n, n], layers: ds.layers } }, scores: trace.scores?.[stack] ? { [stack]: trace.scores[stack] } : undefined };
  }
  if (options.matrices) {
    const m = options.matrices;
    if (m.size !== tokens.length) throw new AttnscopeError(`flow diagram: the matrices are ${m.size} × ${m.size}, the trace has ${tokens.length} tokens`);
    return { stack, tokens, matrices: m.layers, firstLayer: m.firstLayer ?? 0, method: 'custom', caption: `edges: ${options.measure ?? 'given matrices'}`, theme: common.theme };
  }
  const method = options.method ?? 'rollout';
  if (!FLOW_VIEW_METHODS.includes(method)) throw new AttnscopeError(`flow diagram: unknown method '${String(method)}' (expected ${FLOW_VIEW_METHODS.join(', ')})`);
  const fusion = options.fusion ?? 'mean';
  let matrices: readonly Float32Array[];
  if (method === 'attention') {
    if (options.discard !== undefined || options.residual !== undefined) throw new AttnscopeError('flow diagram: discard and residual apply to rollout and flow, not to attention');
    matrices = fusedAttention(trace, { stack, fusion }).layers;
  } else {
    matrices = attentionGraph(trace, { stack, fusion, discard: options.discard, residual: options.residual }).layers.map((a) => Float32Array.from(a));
  }
  const extra = [fusion !== 'mean' ? `${fusion} over heads` : '', options.discard ? `discard ${options.discard}` : '', options.residual !== undefined && method !== 'attention' ? `residual ${options.residual}` : ''].filter(Boolean);
  const caption = METHOD_CAPTIONS[method].replace('½A + ½I', options.residual !== undefined ? `(1−w)A + wI` : '½A + ½I') + (extra.length ? ` · ${extra.join(', ')}` : '');
  return { stack, tokens, matrices, firstLayer: 0, method, caption, theme: common.theme };
}

/** Mass flowing into (column, token), pushed down through the (row-normalised) matrices: per column, per token. */
export function flowMass(matrices: readonly ArrayLike<number>[], n: number, column: number, token: number): Float64Array[] {
  const mass = Array.from({ length: column + 1 }, () => new Float64Array(n));
  mass[column]![token] = 1;
  for (let c = column; c >= 1; c--) {
    const m = matrices[c - 1]!;
    const up = mass[c]!;
    const down = mass[c - 1]!;
    for (let q = 0; q < n; q++) {
      if (up[q] === 0) continue;
      let sum = 0;
      for (let k = 0; k < n; k++) sum += Math.max(0, m[q * n + k]!);
      if (!(sum > 0)) continue;
      for (let k = 0; k < n; k++) down[k]! += (up[q]! * Math.max(0, m[q * n + k]!)) / sum;
    }
  }
  return mass;
}

/** Indices of the `keep` largest of values[off … off + n) that are ≥ threshold and > 0, strongest first (ties: lower index). */
export function topIndices(values: ArrayLike<number>, off: number, n: number, keep: number, threshold: number): number[] {
  // Insertion into a short sorted list: O(n · keep), no sort of the whole row.
  const top: number[] = [];
  for (let k = 0; k < n; k++) {
    const v = values[off + k]!;
    if (!(v > 0 && v >= threshold)) continue;
    let p: number;
    if (top.length < keep) {
      top.push(k);
      p = top.length - 1;
    } else {
      if (!(v > values[off + top[keep - 1]!]!)) continue; // ties: the lower index stays
      p = keep - 1;
    }
    while (p > 0 && values[off + top[p - 1]!]! < v) {
      top[p] = top[p - 1]!;
      p--;
    }
    top[p] = k;
  }
  return top;
}

const rowTopResult = { nonzero: 0, kept: 0 };

/**
 * The entries > 0 of values[off … off + n) (counted), and the indices and values of the `keep`
 * largest of those ≥ threshold into topK / topV, strongest first, ties: the lower index first (what
 * topIndices returns), in one pass with the k-th value held in a local. The returned object is reused.
 */
function rowTop(values: ArrayLike<number>, off: number, n: number, keep: number, threshold: number, topK: Int32Array, topV: Float64Array): { nonzero: number; kept: number } {
  let nonzero = 0;
  let kept = 0;
  let floor = -Infinity;
  for (let k = 0; k < n; k++) {
    const v = values[off + k]!;
    if (!(v > 0)) continue;
    nonzero++;
    if (!(v >= threshold)) continue;
    let p: number;
    if (kept < keep) p = kept++;
    else if (v > floor) p = keep - 1;
    else continue;
    while (p > 0 && topV[p - 1]! < v) {
      topV[p] = topV[p - 1]!;
      topK[p] = topK[p - 1]!;
      p--;
    }
    topV[p] = v;
    topK[p] = k;
    if (kept === keep) floor = topV[keep - 1]!;
  }
  rowTopResult.nonzero = nonzero;
  rowTopResult.kept = kept;
  return rowTopResult;
}

export interface FlowEdge {
  /** The receiving column (1 … L); the edge joins token q of column `column` to token k of column − 1. */
  column: number;
  q: number;
  k: number;
  weight: number;
}

export interface FlowLayout extends Picture {
  model: FlowModel;
  columns: number;
  size: number;
  /** Centre of node (column c, token t): (columnX[c], rowY[t]). */
  columnX: number[];
  rowY: number[];
  /** Edges kept by the pruning (drawn), and how many nonzero edges there were. */
  edges: FlowEdge[];
  totalEdges: number;
  /** The highlighted token, its mass per column and the edges drawn highlighted. */
  highlight: { column: number; token: number; mass: Float64Array[]; edges: FlowEdge[]; inputValues: ArrayLike<number> } | null;
  /** Line items (edges: faded, then highlighted), node and label items (painted over them). */
  lines: Item[];
  nodes: Item[];
}

export interface FlowPlace {
  /** y where the diagram starts (below a heading). */
  top?: number;
  /** Space to fill (default 1100 × 700). */
  frame?: { width?: number; height?: number };
  /** Values of the input column for the highlight (e.g. attention flow's row); default the pushed-down mass. */
  inputValues?: ArrayLike<number>;
  /** Token label as shown (default the prettified label). */
  label?: (t: FlowToken, i: number) => string;
}

const ACCENT = { light: '#cf222e', dark: '#ff7b72' } as const;

/** The flow diagram's layout (see the file comment). */
export function flowLayout(trace: Trace, options: FlowViewOptions = {}, place: FlowPlace = {}, model: FlowModel = flowModel(trace, options)): FlowLayout {
  const { tokens, matrices, theme } = model;
  const n = tokens.length;
  const L = matrices.length;
  const C = L + 1;
  const keep = options.keep ?? 3;
  if (!Number.isInteger(keep) || keep < 1) throw new AttnscopeError(`flow diagram: keep (top-k edges per token) must be a positive integer, got ${keep}`);
  const threshold = options.threshold ?? 0;
  if (!(threshold >= 0 && threshold <= 1)) throw new AttnscopeError(`flow diagram: threshold must be in [0, 1], got ${threshold}`);
  const m = LAYOUT.margin;
  const sfs = LAYOUT.smallFontSize;
  const top = (place.top ?? m) + sfs + 10;
  const frameW = place.frame?.width ?? 1100;
  const frameH = place.frame?.height ?? 700;
  const headerH = sfs + 10;
  const rowH = Math.max(9, Math.min(24, (frameH - top - headerH - 3 * sfs - m) / Math.max(1, n)));
  const fs = Math.min(LAYOUT.fontSize, Math.max(7, rowH * 0.62));
  const labelOf = place.label ?? ((t: FlowToken) => t.label);
  const labels = tokens.map((t, i) => truncate(labelOf(t, i)));
  const labelW = Math.max(24, ...labels.map((l) => textWidth(l, fs))) + 8;

  // Highlight: which token, its mass per column, and the input column's values.
  let highlight: FlowLayout['highlight'] = null;
  if (options.query !== undefined) {
    const token = checkIndex(options.query, n, 'token');
    const column = checkIndex(options.column ?? L, C, 'column');
    const mass = flowMass(matrices, n, column, token);
    let inputValues: ArrayLike<number> = mass[0]!;
    if (place.inputValues) inputValues = place.inputValues;
    else if (model.method === 'flow' && column > 0) {
      const f = attentionFlowOfMatrices(matrices.slice(0, column), n, { targets: [token], maxNodes: options.maxNodes });
      inputValues = f.values[0]!.slice(token * n, (token + 1) * n);
    }
    highlight = { column, token, mass, edges: [], inputValues };
  }
  const valueW = highlight ? textWidth('0.000', fs) + 10 : 0;

  const x0 = m + valueW + labelW + 6;
  const colGap = C > 1 ? Math.max(36, Math.min(150, (frameW - x0 - labelW - 6 - m) / (C - 1))) : 0;
  const columnX = Array.from({ length: C }, (_, c) => x0 + c * colGap);
  const y0 = top + headerH;
  const rowY = Array.from({ length: n }, (_, t) => y0 + (t + 0.5) * rowH);
  const right = columnX[C - 1]! + 6 + labelW;

  // Pruned edges.
  const edges: FlowEdge[] = [];
  let totalEdges = 0;
  let maxW = 0;
  const topK = new Int32Array(keep);
  const topV = new Float64Array(keep);
  for (let c = 1; c < C; c++) {
    const a = matrices[c - 1]!;
    for (let q = 0; q < n; q++) {
      // One pass per row: the nonzero count and the row's top `keep` (as topIndices: ties keep the lower index).
      const got = rowTop(a, q * n, n, keep, threshold, topK, topV);
      totalEdges += got.nonzero;
      for (let i = 0; i < got.kept; i++) {
        const w = topV[i]!;
        edges.push({ column: c, q, k: topK[i]!, weight: w });
        if (w > maxW) maxW = w;
      }
    }
  }
  if (!(maxW > 0)) maxW = 1;
  const scale = weightScale(theme, { max: maxW });
  const lines: Item[] = [];
  const nodes: Item[] = [];
  const faded = highlight !== null;
  // Weakest first, so strong edges are on top.
  const sorted = edges.slice().sort((a, b) => a.weight - b.weight);
  for (const e of sorted) {
    const t = e.weight / maxW;
    lines.push({
      kind: 'line',
      x1: columnX[e.column - 1]! + 3,
      y1: rowY[e.k]!,
      x2: columnX[e.column]! - 3,
      y2: rowY[e.q]!,
      stroke: scale.color(Math.max(e.weight, maxW * 0.25)),
      width: 0.4 + 2.6 * t,
      opacity: faded ? 0.12 : 0.25 + 0.75 * t,
      className: 'flow-edge',
      data: { column: e.column, q: e.q, k: e.k, weight: Number(e.weight.toPrecision(6)) },
    });
  }
  const accent = ACCENT[theme.name];
  if (highlight) {
    const { mass, column } = highlight;
    for (let c = column; c >= 1; c--) {
      const a = matrices[c - 1]!;
      for (let q = 0; q < n; q++) {
        const mq = mass[c]![q]!;
        if (!(mq > 0.005)) continue;
        let sum = 0;
        for (let k = 0; k < n; k++) sum += Math.max(0, a[q * n + k]!);
        const contrib = new Float64Array(n);
        for (let k = 0; k < n; k++) contrib[k] = (mq * Math.max(0, a[q * n + k]!)) / sum;
        for (const k of topIndices(contrib, 0, n, keep, 0.005)) highlight.edges.push({ column: c, q, k, weight: contrib[k]! });
      }
    }
    for (const e of highlight.edges.slice().sort((a, b) => a.weight - b.weight)) {
      lines.push({
        kind: 'line',
        x1: columnX[e.column - 1]! + 3,
        y1: rowY[e.k]!,
        x2: columnX[e.column]! - 3,
        y2: rowY[e.q]!,
        stroke: accent,
        width: 0.8 + 4 * Math.sqrt(e.weight),
        opacity: 0.35 + 0.65 * Math.sqrt(e.weight),
        className: 'flow-edge highlighted',
        data: { column: e.column, q: e.q, k: e.k, flow: Number(e.weight.toPrecision(6)) },
      });
    }
  }

  // Column headers.
  for (let c = 0; c < C; c++) {
    const text = c === 0 ? 'input' : `${model.firstLayer + c - 1}`;
    nodes.push({ kind: 'text', x: columnX[c]!, y: top + sfs, text, size: sfs, fill: theme.muted, anchor: 'middle', className: 'column-header', data: { column: c } });
  }
  nodes.push({ kind: 'text', x: (columnX[0]! + columnX[C - 1]!) / 2, y: top - 4, text: 'layer →', size: sfs, fill: theme.muted, anchor: 'middle', className: 'axis-name' });
  // Nodes: small marks, filled by the highlight's mass.
  const nodeH = Math.max(3, Math.min(10, rowH * 0.5));
  for (let c = 0; c < C; c++) {
    const colMass = highlight && c <= highlight.column ? highlight.mass[c]! : null;
    let colMax = 0;
    if (colMass) for (const v of colMass) colMax = Math.max(colMax, v);
    for (let t = 0; t < n; t++) {
      const mv = colMass ? colMass[t]! : 0;
      const on = highlight !== null && highlight.column === c && highlight.token === t;
      nodes.push({
        kind: 'rect',
        x: columnX[c]! - 3,
        y: rowY[t]! - nodeH / 2,
        width: 6,
        height: nodeH,
        rx: 1.5,
        fill: mv > 0 && colMax > 0 ? accent : theme.panel,
        fillOpacity: mv > 0 && colMax > 0 ? Math.max(0.15, mv / colMax) : 1,
        stroke: on ? theme.text : theme.grid,
        strokeWidth: on ? 1.5 : 0.75,
        className: `flow-node${on ? ' selected' : ''}`,
        data: { column: c, token: t, ...(colMass ? { mass: Number(mv.toPrecision(6)) } : {}) },
        tip: `${c === 0 ? 'input' : `after layer ${model.firstLayer + c - 1}`} · ${t} ${tokens[t]!.tip}${colMass ? ` · ${fmtValue(mv)}` : ''}`,
      });
    }
  }
  // Labels: inputs on the left, outputs of the last column on the right (both clickable: their node's column).
  for (let t = 0; t < n; t++) {
    const tok = tokens[t]!;
    const fill = tok.special ? theme.special : theme.text;
    const selected = (c: number) => highlight !== null && highlight.column === c && highlight.token === t;
    nodes.push({ kind: 'text', x: columnX[0]! - 8, y: rowY[t]! + fs * 0.36, text: labels[t]!, size: fs, fill, anchor: 'end', bold: selected(0) || undefined, className: 'token input', data: { column: 0, token: t }, tip: `${t}: ${tok.tip}` });
    nodes.push({ kind: 'text', x: columnX[C - 1]! + 8, y: rowY[t]! + fs * 0.36, text: labels[t]!, size: fs, fill, bold: selected(C - 1) || undefined, className: 'token output', data: { column: C - 1, token: t }, tip: `${t}: ${tok.tip}` });
    if (highlight) {
      const v = highlight.inputValues[t]!;
      nodes.push({ kind: 'text', x: m + valueW - 6, y: rowY[t]! + fs * 0.36, text: v > 0 ? v.toFixed(3) : '·', size: fs, fill: v > 0 ? accent : theme.muted, anchor: 'end', mono: true, className: 'input-value', data: { token: t, value: Number(Number(v).toPrecision(6)) } });
    }
  }
  // Caption lines under the diagram.
  let bottom = y0 + n * rowH + 8;
  const notes = [
    model.caption,
    `pruned: top ${keep} per token${threshold > 0 ? `, ≥ ${threshold}` : ''} (${edges.length} of ${totalEdges} edges drawn)`,
    highlight
      ? `highlighted: what flows into ${highlight.column === 0 ? 'input' : `layer ${model.firstLayer + highlight.column - 1}`} token ${highlight.token} “${labels[highlight.token]}”; left: ${model.method === 'flow' ? 'its attention flow' : model.method === 'rollout' ? 'its rollout' : 'the pushed-down share'} per input token`
      : 'click a token to highlight what flows into it',
  ];
  let width = right + m;
  for (const note of notes) {
    nodes.push({ kind: 'text', x: m, y: bottom + sfs, text: note, size: sfs, fill: theme.muted, className: 'flow-note' });
    width = Math.max(width, m + textWidth(note, sfs) + m);
    bottom += sfs + 6;
  }
  return { width, height: bottom + m, background: theme.background, items: [...lines, ...nodes], model, columns: C, size: n, columnX, rowY, edges, totalEdges, highlight, lines, nodes };
}
