/**
 * Attention flow (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", §3 and their
 * reference code `compute_flows`), computed exactly with Dinic's max-flow in float64.
 *
 * The graph: one node per (layer c, token t), c = 0 … L where c = 0 are the input tokens (before
 * the first layer of the range) and c is the output of layer (startLayer + c − 1). Between
 * consecutive columns every pair (c, q) → (c − 1, k) is an edge of capacity A'[q, k], the
 * residual-augmented, head-fused, row-normalised attention of that layer (rollout.ts
 * attentionGraph: (1 − w) · fused + w · I, rows summing to 1; the paper uses w = 0.5, mean fusion,
 * no discard). Edges of capacity 0 (masked, discarded) are left out.
 *
 * Direction and normalisation, as the reference code: the flow from output token i (node (L, i))
 * to input token j (node (0, j)) is the value of a maximum flow with source (L, i) and sink (0, j)
 * along edges pointing from a query down to its keys (the same value as a flow from j up to i
 * over the reversed edges). Each output row is then divided by its sum over the input tokens, so
 * `values[i, ·]` sums to 1 (rows whose flows are all 0 stay 0); the raw max-flow values are kept
 * in `raw` (each at most 1, the capacity leaving the source).
 *
 * Cost: one max-flow per (output token, input token) pair on a graph of (L + 1) · n nodes and up
 * to L · n² edges, so roughly n² · L · n² work: fine for short inputs, far from interactive for
 * long ones. `maxNodes` bounds (L + 1) · n (an AttnscopeError above it); see BENCHMARKS.md for
 * what finishes within a second.
 *
 * Pure functions of plain arrays (and of a Trace through rollout.ts): isomorphic, no Node imports,
 * usable from a Worker (inputs and outputs are typed arrays, transferable).
 */
import { AttnscopeError } from '../core/errors.js';
import type { StackName, Trace } from '../core/trace.js';
import { type GraphOptions, type LayerMatrices, attentionGraph } from './rollout.js';

/** Residual capacities at or below this count as saturated (float64 round-off of sums of weights). */
const EPS = 1e-13;

/** Default bound on the graph's nodes, (L + 1) · n: 13 × 64 (bert-base-sized, 64 tokens). */
export const FLOW_MAX_NODES = 13 * 64;

/** A directed graph with float64 capacities in compressed adjacency form, reusable across many max-flow runs. */
export class FlowNetwork {
  readonly numNodes: number;
  /** Edge e goes to `to[e]`; edge e ^ 1 is its reverse (capacity 0). */
  private readonly to: Int32Array;
  private readonly cap: Float64Array;
  private readonly res: Float64Array;
  /** Edges of node u: order[start[u]] … order[start[u + 1] − 1]. */
  private readonly start: Int32Array;
  private readonly order: Int32Array;
  private readonly level: Int32Array;
  private readonly it: Int32Array;
  private readonly queue: Int32Array;

  /** `edges`: [from, to, capacity] triples (capacities ≥ 0; parallel edges allowed). */
  constructor(numNodes: number, edges: readonly (readonly [number, number, number])[]) {
    this.numNodes = numNodes;
    const m = edges.length;
    this.to = new Int32Array(2 * m);
    this.cap = new Float64Array(2 * m);
    this.res = new Float64Array(2 * m);
    const from = new Int32Array(2 * m);
    const degree = new Int32Array(numNodes + 1);
    edges.forEach(([u, v, c], e) => {
      if (!(u >= 0 && u < numNodes && v >= 0 && v < numNodes)) throw new AttnscopeError(`max-flow: edge ${u} → ${v} is outside the ${numNodes} nodes`);
      if (!(c >= 0)) throw new AttnscopeError(`max-flow: edge ${u} → ${v} has capacity ${c} (expected ≥ 0)`);
      this.to[2 * e] = v;
      this.cap[2 * e] = c;
      from[2 * e] = u;
      this.to[2 * e + 1] = u;
      from[2 * e + 1] = v;
      degree[u + 1]!++;
      degree[v + 1]!++;
    });
    for (let u = 0; u < numNodes; u++) degree[u + 1]! += degree[u]!;
    this.start = degree;
    this.order = new Int32Array(2 * m);
    const fill = degree.slice(0, numNodes);
    for (let e = 0; e < 2 * m; e++) this.order[fill[from[e]!]!++] = e;
    this.level = new Int32Array(numNodes);
    this.it = new Int32Array(numNodes);
    this.queue = new Int32Array(numNodes);
  }

  private bfs(s: number, t: number): boolean {
    const { level, queue, start, order, to, res } = this;
    level.fill(-1);
    level[s] = 0;
    let head = 0;
    let tail = 0;
    queue[tail++] = s;
    while (head < tail) {
      const u = queue[head++]!;
      for (let p = start[u]!; p < start[u + 1]!; p++) {
        const e = order[p]!;
        const v = to[e]!;
        if (level[v]! < 0 && res[e]! > EPS) {
          level[v] = level[u]! + 1;
          queue[tail++] = v;
        }
      }
    }
    return level[t]! >= 0;
  }

  /**
   * Pushes up to `limit` from u towards t along level-increasing residual edges, splitting it over
   * as many edges as it takes (one traversal serves many paths); returns what was pushed.
   */
  private push(u: number, t: number, limit: number): number {
    if (u === t) return limit;
    const { level, it, start, order, to, res } = this;
    let pushed = 0;
    const end = start[u + 1]!;
    for (; it[u]! < end; it[u]!++) {
      const e = order[it[u]!]!;
      const v = to[e]!;
      if (!(res[e]! > EPS) || level[v] !== level[u]! + 1) continue;
      const d = this.push(v, t, Math.min(limit - pushed, res[e]!));
      if (d > 0) {
        res[e]! -= d;
        res[e ^ 1]! += d;
        pushed += d;
        if (limit - pushed <= EPS) return pushed; // this edge may carry more: keep it[u]
      }
    }
    level[u] = -1; // nothing more gets through u in this phase
    return pushed;
  }

  /** The value of a maximum flow from s to t (Dinic: BFS level graphs, blocking flows by multi-path DFS). */
  maxFlow(s: number, t: number): number {
    if (s === t) throw new AttnscopeError('max-flow: source and sink are the same node');
    const { it, start, res } = this;
    res.set(this.cap);
    let total = 0;
    while (this.bfs(s, t)) {
      for (let u = 0; u < this.numNodes; u++) it[u] = start[u]!;
      for (;;) {
        const f = this.push(s, t, Infinity);
        if (!(f > 0)) break;
        total += f;
      }
    }
    return total;
  }
}

/** Node id of token t in column c of a layered graph of n tokens per column. */
export function layeredNode(c: number, t: number, n: number): number {
  return c * n + t;
}

/**
 * The layered flow network of per-layer n × n matrices: column 0 the inputs, column c the output
 * of layers[c − 1]; edge (c, q) → (c − 1, k) of capacity layers[c − 1][q, k] where it is > 0.
 */
export function layeredNetwork(layers: readonly ArrayLike<number>[], n: number): FlowNetwork {
  const edges: [number, number, number][] = [];
  layers.forEach((a, l) => {
    if (a.length !== n * n) throw new AttnscopeError(`attention flow: layer matrix ${l} has ${a.length} entries, expected ${n} × ${n}`);
    for (let q = 0; q < n; q++) {
      for (let k = 0; k < n; k++) {
        const c = a[q * n + k]!;
        if (c > 0) edges.push([layeredNode(l + 1, q, n), layeredNode(l, k, n), c]);
      }
    }
  });
  return new FlowNetwork((layers.length + 1) * n, edges);
}

export interface FlowOfMatricesOptions {
  /** Largest (L + 1) · n allowed (default FLOW_MAX_NODES); above it: an AttnscopeError. */
  maxNodes?: number;
  /** Output tokens (rows) to compute (default all). Rows not asked for are left 0. */
  targets?: readonly number[];
  /** Also return the flow from every intermediate column to the inputs (default: the last column only). */
  allLayers?: boolean;
  /** Called after each max-flow with how many are done and how many there are (a Worker reports progress with it). */
  onProgress?: (done: number, total: number) => void;
}

export interface FlowMatrices {
  size: number;
  /**
   * Row-normalised flows: values[c − 1] is [n × n], row i the flow from node (c, i) to each input
   * token, divided by the row's sum. Only the last column unless `allLayers`.
   */
  values: Float32Array[];
  /** The raw max-flow values, same layout (float64). */
  raw: Float64Array[];
  /** Columns the rows of `values` belong to (1 … L). */
  columns: number[];
}

/** Checks the size limit of attention flow (one clear line above it). */
export function checkFlowSize(numLayers: number, n: number, maxNodes: number = FLOW_MAX_NODES): void {
  const nodes = (numLayers + 1) * n;
  if (nodes > maxNodes) {
    throw new AttnscopeError(
      `attention flow: the graph has ${nodes} nodes (${numLayers + 1} columns × ${n} tokens), above the limit of ${maxNodes} (maxNodes / --max-nodes); ` +
        'exact max-flow needs one run per (output, input) token pair: use rollout, fewer layers (--start-layer/--end-layer), a shorter text, or raise the limit',
    );
  }
}

/** Attention flow of per-layer n × n capacity matrices (see the file comment): pure and Worker-friendly. */
export function attentionFlowOfMatrices(layers: readonly ArrayLike<number>[], n: number, options: FlowOfMatricesOptions = {}): FlowMatrices {
  const L = layers.length;
  if (L === 0) throw new AttnscopeError('attention flow: no layers');
  checkFlowSize(L, n, options.maxNodes);
  const targets = options.targets ?? Array.from({ length: n }, (_, i) => i);
  for (const i of targets) if (!Number.isInteger(i) || i < 0 || i >= n) throw new AttnscopeError(`attention flow: token ${i} is out of range (0–${n - 1})`);
  const net = layeredNetwork(layers, n);
  const columns = options.allLayers ? Array.from({ length: L }, (_, c) => c + 1) : [L];
  const values: Float32Array[] = [];
  const raw: Float64Array[] = [];
  const total = columns.length * targets.length * n;
  let done = 0;
  for (const c of columns) {
    const r = new Float64Array(n * n);
    const v = new Float32Array(n * n);
    for (const i of targets) {
      let sum = 0;
      for (let j = 0; j < n; j++) {
        const f = net.maxFlow(layeredNode(c, i, n), layeredNode(0, j, n));
        r[i * n + j] = f;
        sum += f;
        options.onProgress?.(++done, total);
      }
      if (sum > 0) for (let j = 0; j < n; j++) v[i * n + j] = r[i * n + j]! / sum;
    }
    values.push(v);
    raw.push(r);
  }
  return { size: n, values, raw, columns };
}

export interface FlowOptions extends GraphOptions, FlowOfMatricesOptions {}

export interface FlowResult extends LayerMatrices {
  stack: StackName;
  startLayer: number;
  endLayer: number;
  /** Row-normalised flow after each layer computed: layers[i] belongs to model layer `layerOf[i]`. */
  layers: Float32Array[];
  layerOf: number[];
  /** Raw max-flow values, same layout. */
  raw: Float64Array[];
}

/** Attention flow of a trace's self-attention stack over layers startLayer … endLayer (see the file comment). */
export function attentionFlow(trace: Trace, options: FlowOptions = {}): FlowResult {
  const s = trace.attention[options.stack ?? (trace.attention.self ? 'self' : 'encoder')];
  if (s) {
    // Refuse before building the graph.
    const numLayers = (options.endLayer ?? s.layers.length - 1) - (options.startLayer ?? 0) + 1;
    if (numLayers > 0) checkFlowSize(numLayers, s.dims[1], options.maxNodes);
  }
  const graph = attentionGraph(trace, options);
  const flows = attentionFlowOfMatrices(graph.layers, graph.size, options);
  return {
    stack: graph.stack,
    size: graph.size,
    firstLayer: graph.startLayer + flows.columns[0]! - 1,
    startLayer: graph.startLayer,
    endLayer: graph.endLayer,
    layers: flows.values,
    layerOf: flows.columns.map((c) => graph.startLayer + c - 1),
    raw: flows.raw,
  };
}
