/**
 * What the page's flow views draw, as plain data that crosses a worker's boundary: the layout of
 * src/views/layout/flow.ts (or influence-tree.ts) for the view's options and frame, with the faded
 * edges of a large diagram already merged into a few paths, the readout's note and attributes, and
 * the drawn edges as typed arrays (the edges table). The flow views' worker
 * (web/flow-layout-worker-side.ts) computes it off the page's thread; without workers the page
 * computes it itself with the same function, so both give the same drawing value for value.
 *
 * Browser-safe and DOM-free (it runs in a Worker).
 */
import type { Trace } from '../../src/core/trace.js';
import type { Item } from '../../src/views/layout/common.js';
import { type FlowModel, type FlowToken, type FlowViewOptions, flowLayout, flowMass } from '../../src/views/layout/flow.js';
import { influenceTreeLayout } from '../../src/views/layout/influence-tree.js';

/** From this many faded edges, they are drawn as a few paths (mergeFadedEdges); from this many plain node marks likewise (mergePlainNodes). */
export const MERGE_FADED_FROM = 2000;

/** What a drawing depends on besides the model. */
export interface FlowDrawingRequest {
  view: 'diagram' | 'tree';
  /** The view's options (never `matrices`: the model comes from the trace). */
  options: Omit<FlowViewOptions, 'matrices'>;
  /** Space to fill. */
  frame: { width: number; height: number };
  /** Token labels as written (prettify off) instead of prettified. */
  raw: boolean;
  /** Diagram with attention flow: the highlighted token's flow row when the page has it; without it the input column shows rollout's (never computed here). */
  inputValues?: Float32Array;
}

/** Faded edges of one look (stroke, width and opacity rounded to 1/20) as one path. */
export interface MergedEdges {
  stroke: string;
  width: number;
  opacity: number;
  /** `M x1 y1 L x2 y2` per edge. */
  d: string;
  /** How many edges. */
  count: number;
}

/** Plain node marks of one look (fill, its opacity rounded to 1/20, stroke) as one path. */
export interface MergedNodes {
  fill: string;
  fillOpacity: number;
  stroke: string;
  strokeWidth: number;
  /** `M x y h w v h h −w Z` per mark. */
  d: string;
  count: number;
}

/** The drawn (pruned) edges: edge i joins token q[i] of column[i] to token k[i] of column[i] − 1. */
export interface DrawnEdges {
  column: Int32Array;
  q: Int32Array;
  k: Int32Array;
  weight: Float64Array;
}

export interface FlowDrawing {
  width: number;
  height: number;
  /** Paint order: faded edges merged into paths, the other lines, plain node marks merged into paths, the other items (marks, labels, notes). */
  paths: MergedEdges[];
  lines: Item[];
  nodePaths: MergedNodes[];
  nodes: Item[];
  /** Diagram: the centre of node (column c, token t) is (columnX[c], rowY[t]) (a click on a merged mark is found from it). */
  grid?: { columnX: number[]; rowY: number[] };
  /** Tokens per column. */
  n: number;
  /** The model layer of the first edge column. */
  firstLayer: number;
  /** The readout's line. */
  note: string;
  /** The readout's data attributes (null: removed). */
  readout: Record<string, string | null>;
  edges: DrawnEdges;
  /** The model's caption (what the edges are). */
  caption: string;
}

/**
 * The drawing's edge lines with, when there are many, the edges that are not highlighted as one
 * path per look instead of one <line> each: a 512-token diagram has ≈ 18,000 of them, which the
 * browser takes seconds to create. Highlighted edges stay lines (with their data). The SVG export
 * keeps every line.
 */
export function mergeFadedEdges(lines: readonly Item[]): { paths: MergedEdges[]; lines: Item[] } {
  const faded = lines.filter((it) => it.kind === 'line' && it.className === 'flow-edge');
  if (faded.length < MERGE_FADED_FROM) return { paths: [], lines: [...lines] };
  const groups = new Map<string, MergedEdges & { parts: string[] }>();
  for (const it of faded) {
    if (it.kind !== 'line') continue;
    const width = Math.round((it.width ?? 1) * 20) / 20;
    const opacity = Math.round((it.opacity ?? 1) * 20) / 20;
    const key = `${it.stroke}|${width}|${opacity}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { stroke: it.stroke, width, opacity, d: '', count: 0, parts: [] }));
    g.parts.push(`M${it.x1.toFixed(1)} ${it.y1.toFixed(1)}L${it.x2.toFixed(1)} ${it.y2.toFixed(1)}`);
  }
  const paths = [...groups.values()].map(({ parts, ...g }) => ({ ...g, d: parts.join(''), count: parts.length }));
  return { paths, lines: lines.filter((it) => !(it.kind === 'line' && it.className === 'flow-edge')) };
}

/**
 * The node marks other than the selected one, when there are many: one path per look (fill,
 * opacity rounded to 1/20: the highlight's mass, stroke) instead of one <rect> each (13 × 512 of
 * them at 512 tokens, which the page's thread takes long to lay out and paint). The page finds a
 * click on them from the grid; their tooltips (the mass through each) are left out there. The SVG
 * export keeps every rect.
 */
export function mergePlainNodes(nodes: readonly Item[]): { paths: MergedNodes[]; nodes: Item[] } {
  const plain = (it: Item) => it.kind === 'rect' && it.className === 'flow-node';
  const count = nodes.reduce((a, it) => a + (plain(it) ? 1 : 0), 0);
  if (count < MERGE_FADED_FROM) return { paths: [], nodes: [...nodes] };
  const groups = new Map<string, MergedNodes & { parts: string[] }>();
  for (const it of nodes) {
    if (it.kind !== 'rect' || !plain(it)) continue;
    const fill = it.fill ?? 'none';
    const fillOpacity = Math.round((it.fillOpacity ?? 1) * 20) / 20;
    const stroke = it.stroke ?? 'none';
    const strokeWidth = it.strokeWidth ?? 1;
    const key = `${fill}|${fillOpacity}|${stroke}|${strokeWidth}`;
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { fill, fillOpacity, stroke, strokeWidth, d: '', count: 0, parts: [] }));
    g.parts.push(`M${it.x.toFixed(1)} ${it.y.toFixed(1)}h${it.width.toFixed(1)}v${it.height.toFixed(1)}h${(-it.width).toFixed(1)}Z`);
  }
  const paths = [...groups.values()].map(({ parts, ...g }) => ({ ...g, d: parts.join(''), count: parts.length }));
  return { paths, nodes: nodes.filter((it) => !plain(it)) };
}

/** The drawing of a view from its model (see the file comment). */
export function flowDrawing(trace: Trace, req: FlowDrawingRequest, model: FlowModel): FlowDrawing {
  const { options, frame } = req;
  const label = (t: FlowToken) => (req.raw ? t.tip : t.label);
  const n = model.tokens.length;
  const base = { n, firstLayer: model.firstLayer, caption: model.caption };
  if (req.view === 'tree') {
    const numLayers = model.matrices.length;
    const column = options.column ?? numLayers;
    const layout = influenceTreeLayout(trace, { ...options, depth: Math.min(options.depth ?? 3, column) }, { label }, model);
    const root = layout.nodes[0]!;
    return {
      ...base,
      width: layout.width,
      height: layout.height,
      paths: [],
      lines: [],
      nodePaths: [],
      nodes: layout.items,
      note: `influence tree of token ${root.token} “${model.tokens[root.token]!.label}” · ${layout.nodes.length} nodes · click a node to make it the root`,
      readout: { token: String(root.token), column: String(root.column), nodes: String(layout.nodes.length) },
      edges: { column: new Int32Array(0), q: new Int32Array(0), k: new Int32Array(0), weight: new Float64Array(0) },
    };
  }
  let inputValues: ArrayLike<number> | undefined = req.inputValues;
  // Attention flow without the worker's row yet: rollout's (the pushed-down mass), never max-flow here.
  if (!inputValues && model.method === 'flow' && options.query !== undefined && (options.column ?? model.matrices.length) > 0) {
    inputValues = flowMass(model.matrices, n, options.column ?? model.matrices.length, options.query)[0]!;
  }
  const layout = flowLayout(trace, options, { frame, label, inputValues }, model);
  const merged = mergeFadedEdges(layout.lines);
  const marks = mergePlainNodes(layout.nodes);
  const hl = layout.highlight;
  const note = hl
    ? `what flows into token ${hl.token} “${model.tokens[hl.token]!.label}” (${hl.column === 0 ? 'input' : `after layer ${model.firstLayer + hl.column - 1}`}): ${hl.edges.length} edges highlighted · click it again to clear`
    : `${layout.edges.length} of ${layout.totalEdges} edges drawn · click a token to highlight what flows into it`;
  const m = layout.edges.length;
  const edges: DrawnEdges = { column: new Int32Array(m), q: new Int32Array(m), k: new Int32Array(m), weight: new Float64Array(m) };
  layout.edges.forEach((e, i) => {
    edges.column[i] = e.column;
    edges.q[i] = e.q;
    edges.k[i] = e.k;
    edges.weight[i] = e.weight;
  });
  return {
    ...base,
    width: layout.width,
    height: layout.height,
    paths: merged.paths,
    lines: merged.lines,
    nodePaths: marks.paths,
    nodes: marks.nodes,
    grid: { columnX: layout.columnX, rowY: layout.rowY },
    note,
    readout: {
      highlighted: String(hl ? hl.edges.length : 0),
      edges: String(layout.edges.length),
      column: hl ? String(hl.column) : null,
      token: hl ? String(hl.token) : null,
    },
    edges,
  };
}

/** The buffers of a drawing that can be transferred. */
export function drawingTransfer(d: FlowDrawing): Transferable[] {
  return [d.edges.column.buffer, d.edges.q.buffer, d.edges.k.buffer, d.edges.weight.buffer];
}

/** The drawn edges as rows: layer (the model's), receiving column, token q after the layer, token k before it, weight. */
export function drawnEdgeRows(d: FlowDrawing): { layer: number; column: number; query: number; key: number; weight: number }[] {
  return Array.from(d.edges.column, (c, i) => ({ layer: d.firstLayer + c - 1, column: c, query: d.edges.q[i]!, key: d.edges.k[i]!, weight: d.edges.weight[i]! }));
}
