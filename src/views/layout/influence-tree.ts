/**
 * Token influence tree (Attention Atlas): from one token after the last layer, its `keep`
 * strongest sources in that layer's matrix, then each source's strongest sources one layer down,
 * recursively for `depth` layers. Root on the left, one column per layer going down; each edge
 * labelled with its weight, each node with the product of the weights along its path. The
 * matrices are the flow diagram's (src/views/layout/flow.ts flowModel: fused attention, the
 * residual graph, or a caller's).
 *
 * The SVG writer (src/views/svg/flow.ts) and the page (web/views/flow.ts) paint it.
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../../core/errors.js';
import type { Trace } from '../../core/trace.js';
import { checkIndex } from '../svg/common.js';
import { LAYOUT } from '../theme.js';
import { type Item, type Picture, textWidth, truncate } from './common.js';
import { type FlowModel, type FlowToken, type FlowViewOptions, flowModel, topIndices } from './flow.js';

/** Most nodes a tree may have (keep^depth grows fast). */
export const MAX_TREE_NODES = 400;

export interface TreeNode {
  /** Column of the flow graph (the root: the last one). */
  column: number;
  token: number;
  depth: number;
  /** Weight of the edge from the parent (1 for the root). */
  weight: number;
  /** Product of the weights from the root. */
  path: number;
  parent: number | null;
  x: number;
  y: number;
}

export interface TreeLayout extends Picture {
  model: FlowModel;
  nodes: TreeNode[];
}

const ACCENT = { light: '#cf222e', dark: '#ff7b72' } as const;

/** The influence tree's layout (see the file comment). */
export function influenceTreeLayout(
  trace: Trace,
  options: FlowViewOptions = {},
  place: { top?: number; label?: (t: FlowToken, i: number) => string } = {},
  model: FlowModel = flowModel(trace, options),
): TreeLayout {
  const { tokens, matrices, theme } = model;
  const n = tokens.length;
  const L = matrices.length;
  const keep = options.keep ?? 3;
  if (!Number.isInteger(keep) || keep < 1) throw new AttnscopeError(`influence tree: keep (top-k sources) must be a positive integer, got ${keep}`);
  const threshold = options.threshold ?? 0;
  const root = checkIndex(options.query ?? n - 1, n, 'token');
  const column = checkIndex(options.column ?? L, L + 1, 'column');
  const depth = options.depth ?? Math.min(column, 3);
  if (!Number.isInteger(depth) || depth < 1 || depth > column) throw new AttnscopeError(`influence tree: depth must be 1–${column} (the layers below the root), got ${depth}`);

  // Build the tree breadth-first.
  const nodes: TreeNode[] = [{ column, token: root, depth: 0, weight: 1, path: 1, parent: null, x: 0, y: 0 }];
  const children: number[][] = [[]];
  for (let i = 0; i < nodes.length; i++) {
    const node = nodes[i]!;
    if (node.depth === depth) continue;
    const a = matrices[node.column - 1]!;
    for (const k of topIndices(a, node.token * n, n, keep, threshold)) {
      if (nodes.length >= MAX_TREE_NODES) throw new AttnscopeError(`influence tree: more than ${MAX_TREE_NODES} nodes; lower depth (${depth}) or keep (${keep})`);
      const w = a[node.token * n + k]!;
      children[i]!.push(nodes.length);
      children.push([]);
      nodes.push({ column: node.column - 1, token: k, depth: node.depth + 1, weight: w, path: node.path * w, parent: i, x: 0, y: 0 });
    }
  }

  const m = LAYOUT.margin;
  const sfs = LAYOUT.smallFontSize;
  const fs = LAYOUT.fontSize;
  const top = (place.top ?? m) + sfs + 14;
  const rowH = 26;
  const labelOf = place.label ?? ((t: FlowToken) => t.label);
  const labels = tokens.map((t, i) => truncate(labelOf(t, i)));
  // Each box: the token and, smaller, its position (the same text may stand at several positions).
  const boxW = Math.max(60, ...nodes.map((nd) => textWidth(`${labels[nd.token]!} ${nd.token}`, fs))) + 14;
  const colW = boxW + 90;
  // Leaves get consecutive rows; a parent sits at the middle of its children.
  let row = 0;
  const place2 = (i: number): number => {
    const kids = children[i]!;
    const nd = nodes[i]!;
    nd.x = m + nd.depth * colW;
    if (kids.length === 0) nd.y = top + (row++ + 0.5) * rowH;
    else {
      const ys = kids.map(place2);
      nd.y = (ys[0]! + ys[ys.length - 1]!) / 2;
    }
    return nd.y;
  };
  place2(0);
  const accent = ACCENT[theme.name];
  const items: Item[] = [];
  for (let d = 0; d <= depth; d++) {
    const c = column - d;
    const text = c === 0 ? 'input' : `after layer ${model.firstLayer + c - 1}`;
    items.push({ kind: 'text', x: m + d * colW + boxW / 2, y: top - 10, text, size: sfs, fill: theme.muted, anchor: 'middle', className: 'column-header', data: { column: c } });
  }
  const boxH = 18;
  for (const nd of nodes) {
    if (nd.parent === null) continue;
    const p = nodes[nd.parent]!;
    const x1 = p.x + boxW;
    const x2 = nd.x;
    items.push({ kind: 'line', x1, y1: p.y, x2, y2: nd.y, stroke: accent, width: 0.6 + 4 * nd.weight, opacity: 0.3 + 0.7 * Math.sqrt(nd.weight), className: 'tree-edge', data: { column: nd.column + 1, q: p.token, k: nd.token, weight: Number(nd.weight.toPrecision(6)) } });
    items.push({ kind: 'text', x: x2 - 4, y: nd.y - 4, text: nd.weight.toFixed(2), size: sfs - 1, fill: theme.muted, anchor: 'end', mono: true, className: 'tree-weight' });
  }
  nodes.forEach((nd, i) => {
    const tok = tokens[nd.token]!;
    items.push({
      kind: 'rect', x: nd.x, y: nd.y - boxH / 2, width: boxW, height: boxH, rx: 4, fill: accent, fillOpacity: 0.08 + 0.6 * Math.sqrt(nd.path), stroke: nd.parent === null ? theme.text : theme.grid, strokeWidth: nd.parent === null ? 1.5 : 0.75,
      className: `tree-node${nd.parent === null ? ' root' : ''}`, data: { node: i, column: nd.column, token: nd.token, path: Number(nd.path.toPrecision(6)) },
      tip: `${nd.token}: ${tok.tip} · path weight ${nd.path.toPrecision(3)}`,
    });
    const label = labels[nd.token]!;
    items.push({
      kind: 'text', x: nd.x + 7, y: nd.y + fs * 0.36, text: `${label} ${nd.token}`, size: fs, fill: tok.special ? theme.special : theme.text, bold: nd.parent === null || undefined, className: 'token', data: { column: nd.column, token: nd.token },
      spans: [{ text: label }, { text: ` ${nd.token}`, fill: theme.muted }],
    });
  });
  let bottom = top + row * rowH + 10;
  const notes = [model.caption, `each token's ${keep} strongest sources, ${depth} layer${depth > 1 ? 's' : ''} down; edge labels: weights; box shade: product along the path`];
  let width = m + (depth + 1) * colW - 90 + m;
  for (const note of notes) {
    items.push({ kind: 'text', x: m, y: bottom + sfs, text: note, size: sfs, fill: theme.muted, className: 'flow-note' });
    width = Math.max(width, m + textWidth(note, sfs) + m);
    bottom += sfs + 6;
  }
  return { width, height: bottom + m, background: theme.background, items, model, nodes };
}
