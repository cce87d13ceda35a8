/**
 * Splits a graph into segments run one after another (layer-by-layer execution, issue 13): the
 * node list, which the builder keeps in topological order, is cut into consecutive ranges, one per
 * layer. A value computed in one segment and read in a later one (the residual stream, masks,
 * rotary tables, a shared position bias) becomes an output of the first and an input of the later
 * ones; graph inputs and weights go to every segment that reads them. Nodes that compute only from
 * weights and constants (the Cast of a 16-bit weight, a constant mask) are repeated in each
 * segment that reads them instead of being carried. Nodes that lead to no graph output are left
 * out: onnxruntime runs every node of a session, dead ones too, and a trace of queries and keys
 * alone leaves the last layer's attention, its MLP and the final norm dead (at 32,768 tokens on
 * the Qwen2.5-0.5B shape, a layer's work and 0.9 GiB of buffers). Running the segments in order on
 * the same feeds computes exactly the nodes of the whole graph that lead to its outputs, so every
 * output is the same.
 *
 * Where the cuts go: the caller names the layer each graph output belongs to (the attention, query
 * or key tap of layer k, keyed `<stack>.<layer>`); between the last such output of one layer and
 * the first of the next, the cut is put where the fewest computed values cross it (the residual
 * stream and what every layer shares), the latest such place: the end of the layer's block. What
 * follows the last layer (the final norm, the head) gets a segment of its own where the last layer
 * is laid out as the one before it. Pure: imports nothing.
 */
import type { ElemType, GraphSpec, InitializerSpec, NodeSpec, ValueInfoSpec } from './onnx-model.js';

/** One segment of a partitioned graph. */
export interface GraphSegment {
  /** The segment as a graph of its own (its inputs: graph inputs it reads, then carried values). */
  graph: GraphSpec;
  /** Layer keys (as `layerOf` gave them) whose outputs this segment computes, in order. */
  layers: string[];
  /** Values computed by earlier segments that this one reads. */
  carriedIn: string[];
  /** Values this segment computes that later segments read (outputs of `graph` besides `outputs`). */
  carriedOut: string[];
  /** Outputs of the whole graph this segment computes. */
  outputs: string[];
}

export interface GraphPartition {
  segments: GraphSegment[];
  /** For every carried value, the last segment that reads it (it can be released after that one). */
  lastUse: ReadonlyMap<string, number>;
}

/** Element type of the outputs of an op whose type does not follow its first input. */
function outputTypes(node: NodeSpec, typeOf: (name: string) => ElemType | undefined): (ElemType | undefined)[] {
  const first = typeOf(node.inputs[0] ?? '');
  switch (node.opType) {
    case 'Shape':
    case 'Size':
    case 'ArgMax':
    case 'ArgMin':
    case 'NonZero':
      return ['int64'];
    case 'TopK':
      return [first, 'int64'];
    case 'Equal':
    case 'Less':
    case 'LessOrEqual':
    case 'Greater':
    case 'GreaterOrEqual':
    case 'Not':
    case 'And':
    case 'Or':
    case 'Xor':
    case 'IsNaN':
    case 'IsInf':
      return ['bool'];
    case 'Cast': {
      const to = node.attributes?.to;
      return [typeof to === 'number' ? typeFromCode(to, node) : undefined];
    }
    case 'CastLike':
      return [typeOf(node.inputs[1] ?? '')];
    case 'Where':
      return [typeOf(node.inputs[1] ?? '')];
    case 'ConstantOfShape': {
      const value = node.attributes?.value;
      return [typeof value === 'object' && value !== null && 'type' in value ? value.type : 'float32'];
    }
    case 'Constant': {
      const value = node.attributes?.value;
      return [typeof value === 'object' && value !== null && 'type' in value ? value.type : undefined];
    }
    default:
      // Elementwise, shape, gather, normalisation and matrix ops: the type of their first input
      // (Split and the like: for every output).
      return node.outputs.map(() => first);
  }
}

const TYPE_CODES: Record<number, ElemType> = { 1: 'float32', 2: 'uint8', 6: 'int32', 7: 'int64', 9: 'bool', 10: 'float16', 11: 'float64', 16: 'bfloat16' };

function typeFromCode(code: number, node: NodeSpec): ElemType {
  const t = TYPE_CODES[code];
  if (!t) throw new Error(`partition: ${node.name} casts to ONNX type ${code}, which attnscope graphs do not use`);
  return t;
}

/** A graph's nodes indexed: which node computes each value, and which compute from weights and constants only. */
interface NodeIndex {
  /** The index (in `graph.nodes`) of the node computing each value. */
  producer: ReadonlyMap<string, number>;
  /** Per node: computed from initializers and constant nodes only, and no graph output (repeated where read instead of carried). */
  constant: readonly boolean[];
  /** An initializer or an output of a constant node. */
  isConstant(name: string): boolean;
  /**
   * The nodes computing `names` and, transitively, those they read (node indices), entering only
   * nodes `enter` admits.
   */
  ancestors(names: Iterable<string>, enter?: (node: number) => boolean): Set<number>;
}

/** The index of the node computing each value. */
function producers(nodes: readonly NodeSpec[]): Map<string, number> {
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => n.outputs.forEach((o) => o && producer.set(o, i)));
  return producer;
}

/** NodeIndex.ancestors over `nodes` with their `producer` map. */
function ancestorsOf(nodes: readonly NodeSpec[], producer: ReadonlyMap<string, number>, names: Iterable<string>, enter: (node: number) => boolean = () => true): Set<number> {
  const found = new Set<number>();
  const pending = [...names];
  for (let name = pending.pop(); name !== undefined; name = pending.pop()) {
    const p = producer.get(name);
    if (p === undefined || found.has(p) || !enter(p)) continue;
    found.add(p);
    for (const x of nodes[p]!.inputs) if (x !== '') pending.push(x);
  }
  return found;
}

/**
 * The nodes (indices into `nodes`) from which one of `outputs` is reachable. The others are dead:
 * nothing asked for reads what they compute, yet onnxruntime runs every node of a session (a trace
 * of attention alone leaves the last layer's MLP and the final norm dead). GraphBuilder.buildGraph
 * leaves them out of whole graphs, partitionByLayer out of its segments.
 */
export function liveNodes(nodes: readonly NodeSpec[], outputs: Iterable<string>): Set<number> {
  return ancestorsOf(nodes, producers(nodes), outputs);
}

/** The NodeIndex of `graph` (its nodes in topological order, as the builder and partitionByLayer keep them). */
function indexNodes(graph: GraphSpec): NodeIndex {
  const nodes = graph.nodes;
  const producer = producers(nodes);
  const outputNames = new Set(graph.outputs.map((o) => o.name));
  const initializerNames = new Set(graph.initializers.map((t) => t.name));
  const constant = new Array<boolean>(nodes.length).fill(false);
  const isConstant = (name: string) => initializerNames.has(name) || (producer.has(name) && constant[producer.get(name)!]!);
  nodes.forEach((n, i) => {
    constant[i] = !n.outputs.some((o) => outputNames.has(o)) && n.inputs.every((x) => x === '' || isConstant(x));
  });
  const ancestors = (names: Iterable<string>, enter?: (node: number) => boolean): Set<number> => ancestorsOf(nodes, producer, names, enter);
  return { producer, constant, isConstant, ancestors };
}

/** The element type of every value of the graph, as far as its ops tell. */
export function valueTypes(graph: GraphSpec): Map<string, ElemType> {
  const types = new Map<string, ElemType>();
  for (const i of graph.inputs) types.set(i.name, i.type);
  for (const t of graph.initializers) types.set(t.name, t.type);
  const typeOf = (name: string) => types.get(name);
  for (const n of graph.nodes) {
    const out = outputTypes(n, typeOf);
    n.outputs.forEach((o, i) => {
      const t = out[i];
      if (t) types.set(o, t);
    });
  }
  return types;
}

export interface PartitionOptions {
  /**
   * Outputs handed out before the rest of their layer runs (a layer's queries and keys): the
   * segment ends right after the last of them is computed, and the rest of the layer runs in the
   * next segment with the next layer's early outputs (so segments are: the embeddings and layer 0's
   * early outputs; the rest of layer k and layer k + 1's early outputs; …; the rest of the last
   * layer and the head). Outputs computed between a layer's early outputs stay in its early part.
   */
  early?: (output: string) => boolean;
}

/** The stack of a layer key: keys are `<stack>.<layer>` (or any key: then one stack). */
function stackOf(key: string): string {
  return key.slice(0, Math.max(0, key.lastIndexOf('.')));
}

/**
 * Cuts `graph` into one segment per layer (see PartitionOptions.early for layers cut in two). `layerOf(outputName)` names the layer a graph output
 * belongs to (undefined for outputs of no layer: logits, hidden states); layers are ordered by
 * where their outputs are computed. Layers whose outputs interleave share a segment. A graph
 * without layer outputs is one segment.
 */
export function partitionByLayer(graph: GraphSpec, layerOf: (output: string) => string | undefined, options: PartitionOptions = {}): GraphPartition {
  const early = options.early ?? (() => false);
  const nodes = graph.nodes;
  // Nodes computed from weights and constants only (not graph outputs themselves): repeated where read.
  const index = indexNodes(graph);
  const { producer, constant } = index;
  // Nodes some graph output reads, directly or not; the others are run by no segment.
  const live = index.ancestors(graph.outputs.map((o) => o.name));

  // Layers (their early outputs apart), in order of their first output; each one's range of node indices.
  type Range = { key: string; early: boolean; lo: number; hi: number };
  const ranges: Range[] = [];
  const byKey = new Map<string, Range>();
  for (const o of graph.outputs) {
    const key = layerOf(o.name);
    if (key === undefined) continue;
    const at = producer.get(o.name);
    if (at === undefined) throw new Error(`partition: graph output ${o.name} is not computed by any node`);
    const isEarly = early(o.name);
    const id = `${key}${isEarly ? ' early' : ''}`;
    const r = byKey.get(id);
    if (r) {
      r.lo = Math.min(r.lo, at);
      r.hi = Math.max(r.hi, at);
    } else {
      const nr = { key, early: isEarly, lo: at, hi: at };
      byKey.set(id, nr);
      ranges.push(nr);
    }
  }
  ranges.sort((a, b) => a.lo - b.lo);
  // Interleaved layers (one's outputs before the other's last) share a group.
  const groups: { keys: string[]; early: boolean; lo: number; hi: number }[] = [];
  for (const r of ranges) {
    const last = groups[groups.length - 1];
    if (last && r.lo <= last.hi) {
      if (!last.keys.includes(r.key)) last.keys.push(r.key);
      last.hi = Math.max(last.hi, r.hi);
      last.early &&= r.early;
    } else {
      groups.push({ keys: [r.key], early: r.early, lo: r.lo, hi: r.hi });
    }
  }

  // Values crossing a cut before node c: computed (by a placed node) before c, read at or after c.
  // Values computed before a stack's first layer and read by its later layers (masks, rotary
  // tables, the encoder's output for a decoder, a position bias) count as crossing every later cut:
  // they add the same to every place a cut may go, and the end of their use (in the last layer)
  // must not draw a cut into that layer.
  const stackStarts: number[] = [];
  groups.forEach((gr, i) => {
    if (i === 0 || stackOf(gr.keys[0]!) !== stackOf(groups[i - 1]!.keys[0]!)) stackStarts.push(i);
  });
  /** Computed before a stack's first layer and still read after its second layer began. */
  const shared = (p: number, last: number): boolean =>
    stackStarts.some((i) => p < groups[i]!.lo && (i === 0 || p > groups[i - 1]!.hi) && !stackStarts.includes(i + 1) && i + 1 < groups.length && last > groups[i + 1]!.lo);
  const lastRead = new Map<string, number>();
  // (Dead nodes count here: the cuts fall where they would in a graph of the same layers whose
  // outputs are all live, so the middle layers stay the same graph whatever the last one leaves dead.)
  nodes.forEach((n, i) => {
    if (constant[i]) return;
    for (const x of n.inputs) if (x !== '') lastRead.set(x, i);
  });
  const delta = new Int32Array(nodes.length + 2);
  for (const [name, last] of lastRead) {
    const p = producer.get(name);
    if (p === undefined || constant[p] || last <= p) continue;
    const end = shared(p, last) ? nodes.length : last;
    delta[p + 1]! += 1; // crosses cuts p+1 … end
    delta[end + 1]! -= 1;
  }
  const crossing = new Int32Array(nodes.length + 1);
  for (let c = 0, run = 0; c <= nodes.length; c++) crossing[c] = run += delta[c]!;

  // A cut right after a group of early outputs; none between the rest of a layer and the next
  // layer's early outputs (they share a segment); elsewhere where the fewest values cross.
  const cuts: number[] = [];
  const segmentGroups: number[][] = [groups.length > 0 ? [0] : []];
  for (let g = 0; g + 1 < groups.length; g++) {
    const a = groups[g]!;
    const b = groups[g + 1]!;
    if (!a.early && b.early && stackOf(a.keys[0]!) === stackOf(b.keys[0]!)) {
      segmentGroups[segmentGroups.length - 1]!.push(g + 1);
      continue;
    }
    if (a.early) {
      cuts.push(a.hi + 1);
    } else {
      const from = a.hi + 1;
      const to = b.lo;
      let best = to;
      for (let c = to; c >= from; c--) if (crossing[c]! < crossing[best]!) best = c;
      cuts.push(best);
    }
    segmentGroups.push([g + 1]);
  }
  const lastGroup = groups[groups.length - 1];
  if (lastGroup?.early && lastGroup.hi + 1 < nodes.length) {
    // The rest of the last layer and the head.
    cuts.push(lastGroup.hi + 1);
    segmentGroups.push([]);
  } else {
    // The last layer cut off from what follows it (the final norm, the head), where the layer
    // before it was cut, when the two are the same ops: it is then the same graph as the middle
    // layers (engine/layerwise.ts runs it on their shared session instead of on a session of its
    // own beside the shared one's buffers), and the rest is a small segment.
    const end = lastLayerEnd(nodes, cuts, groups, segmentGroups);
    if (end !== undefined) {
      cuts.push(end);
      segmentGroups.push([]);
    }
  }

  // Segment of every placed node.
  const segmentOf = new Int32Array(nodes.length);
  for (let i = 0, s = 0; i < nodes.length; i++) {
    while (s < cuts.length && i >= cuts[s]!) s++;
    segmentOf[i] = s;
  }
  const count = cuts.length + 1;
  const types = valueTypes(graph);
  const inputInfo = new Map(graph.inputs.map((i) => [i.name, i] as const));
  const outputInfo = new Map(graph.outputs.map((o) => [o.name, o] as const));
  const initializerInfo = new Map(graph.initializers.map((t) => [t.name, t] as const));

  const lastUse = new Map<string, number>();
  const members: number[][] = Array.from({ length: count }, () => []);
  nodes.forEach((_, i) => !constant[i] && live.has(i) && members[segmentOf[i]!]!.push(i));
  const carriedIn: Set<string>[] = Array.from({ length: count }, () => new Set());
  const carriedOut: Set<string>[] = Array.from({ length: count }, () => new Set());
  for (let s = 0; s < count; s++) {
    for (const i of members[s]!) {
      for (const x of nodes[i]!.inputs) {
        const p = producer.get(x);
        if (p === undefined || constant[p] || segmentOf[p] === s) continue;
        carriedIn[s]!.add(x);
        carriedOut[segmentOf[p]!]!.add(x);
        lastUse.set(x, Math.max(lastUse.get(x) ?? 0, s));
      }
    }
  }

  const segments: GraphSegment[] = [];
  for (let s = 0; s < count; s++) {
    const own = members[s]!;
    // The constant nodes this segment's nodes read, with what they read in turn (in graph order).
    const constants = index.ancestors(own.flatMap((i) => nodes[i]!.inputs), (p) => constant[p]!);
    const segNodes = [...[...constants].sort((a, b) => a - b), ...own].map((i) => nodes[i]!);
    const read = new Set<string>();
    for (const n of segNodes) for (const x of n.inputs) if (x !== '') read.add(x);
    const initializers: InitializerSpec[] = [];
    for (const name of read) {
      const t = initializerInfo.get(name);
      if (t) initializers.push(t);
    }
    const inputs: ValueInfoSpec[] = graph.inputs.filter((i) => read.has(i.name) && !initializerInfo.has(i.name));
    for (const name of carriedIn[s]!) inputs.push(valueInfo(name, types, inputInfo));
    const outs: string[] = [];
    for (const i of own) for (const o of nodes[i]!.outputs) if (outputInfo.has(o)) outs.push(o);
    const outputs: ValueInfoSpec[] = outs.map((o) => outputInfo.get(o)!);
    for (const name of carriedOut[s]!) if (!outputInfo.has(name)) outputs.push(valueInfo(name, types, inputInfo));
    const layers = [...new Set(segmentGroups[s]!.flatMap((g) => groups[g]!.keys))];
    segments.push({
      graph: { name: `${graph.name}.${s}`, nodes: segNodes, initializers, inputs, outputs, opsetVersion: graph.opsetVersion },
      layers,
      carriedIn: [...carriedIn[s]!],
      carriedOut: [...carriedOut[s]!],
      outputs: outs,
    });
  }
  // A last segment that computes no output nor anything carried (the rest of the last layer after
  // its early outputs, when nothing after them is asked for) is not run.
  while (segments.length > 1 && segments[segments.length - 1]!.outputs.length === 0 && segments[segments.length - 1]!.carriedOut.length === 0) {
    const dropped = segments.length - 1;
    segments.pop();
    for (const [name, s] of lastUse) if (s === dropped) lastUse.set(name, dropped - 1);
  }
  // A graph without layer outputs: one segment holding every layer key there is (none).
  return { segments, lastUse };
}

/**
 * Where the last layer ends if it is laid out as the one before it: the previous segment holds
 * one layer (not the first segment, which holds the embeddings too), the last segment begins with
 * one layer of the same stack whose outputs sit at the same places from the segment's start, and
 * the ops from the last cut on repeat the previous segment's one for one, with nodes left after
 * them. Undefined otherwise.
 */
function lastLayerEnd(nodes: readonly NodeSpec[], cuts: readonly number[], groups: readonly { keys: string[]; lo: number; hi: number }[], segmentGroups: readonly number[][]): number | undefined {
  const s = segmentGroups.length - 1;
  if (s < 2 || segmentGroups[s]!.length !== 1 || segmentGroups[s - 1]!.length !== 1) return undefined;
  const prev = groups[segmentGroups[s - 1]![0]!]!;
  const last = groups[segmentGroups[s]![0]!]!;
  const start = cuts[s - 2]!;
  const at = cuts[s - 1]!;
  const length = at - start;
  const end = at + length;
  if (end >= nodes.length || prev.keys.length !== 1 || last.keys.length !== 1) return undefined;
  if (stackOf(prev.keys[0]!) !== stackOf(last.keys[0]!)) return undefined;
  if (prev.lo - start !== last.lo - at || prev.hi - start !== last.hi - at) return undefined;
  for (let i = 0; i < length; i++) if (nodes[start + i]!.opType !== nodes[at + i]!.opType) return undefined;
  return end;
}

function valueInfo(name: string, types: ReadonlyMap<string, ElemType>, inputs: ReadonlyMap<string, ValueInfoSpec>): ValueInfoSpec {
  const known = inputs.get(name);
  if (known) return known;
  const type = types.get(name);
  if (!type) throw new Error(`partition: the element type of ${name} is unknown (an op partition.ts does not know the output type of)`);
  return { name, type };
}

/**
 * A segment with its large initializers turned into graph inputs, and the form it shares with
 * segments that compute the same thing on other weights (the layers of one stack, usually). Two
 * segments with equal `key` are the same graph up to the names of their values and symbolic
 * dimensions and the contents of their large initializers: one runtime session of either runs the
 * other, fed its own weights (engine/layerwise.ts). `inputs` and `outputs` list the segment's
 * value names in the order the form's positions give them.
 */
export interface SharedSegmentForm {
  key: string;
  /** The segment as a graph whose large initializers are inputs (after its own inputs). */
  graph: GraphSpec;
  /** Names of `graph`'s inputs, in order: the segment's inputs, then the initializers made inputs. */
  inputs: string[];
  /** Names of `graph`'s outputs, in order. */
  outputs: string[];
  /** The initializers made inputs (in the order of `inputs` after the segment's own). */
  weights: InitializerSpec[];
}

/** Initializers of at most this many bytes stay in the graph (and their bytes in the form's key). */
export const SHARED_CONSTANT_BYTES = 4096;

let unshareable = 0;

function initializerBytes(t: InitializerSpec): number {
  return t.external ? t.external.length : t.raw?.byteLength ?? 0;
}

function hex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += (b < 16 ? '0' : '') + b.toString(16);
  return s;
}

/**
 * The shared form of a segment's graph: the initializers `isWeight` picks (default: those of more
 * than SHARED_CONSTANT_BYTES or stored outside the model) become inputs; the key spells the graph with its values numbered in
 * order of appearance (inputs, initializers, node outputs), symbolic dimensions numbered likewise,
 * and small initializers and node attributes by value.
 */
export function sharedSegmentForm(graph: GraphSpec, isWeight: (t: InitializerSpec) => boolean = (t) => t.external !== undefined || initializerBytes(t) > SHARED_CONSTANT_BYTES): SharedSegmentForm {
  // (A large constant inside an attribute makes the segment one of a kind.)
  const ids = new Map<string, number>();
  const id = (name: string): number | '' => {
    if (name === '') return '';
    let v = ids.get(name);
    if (v === undefined) ids.set(name, (v = ids.size));
    return v;
  };
  const symbols = new Map<string, number>();
  const dim = (d: number | string): number | string => {
    if (typeof d === 'number') return d;
    let v = symbols.get(d);
    if (v === undefined) symbols.set(d, (v = symbols.size));
    return `s${v}`;
  };
  const weights = graph.initializers.filter(isWeight);
  const constants = graph.initializers.filter((t) => !weights.includes(t));
  const parts: unknown[] = [];
  for (const i of graph.inputs) parts.push(['in', id(i.name), i.type, i.shape?.map(dim) ?? null]);
  for (const t of weights) parts.push(['w', id(t.name), t.type, t.dims]);
  for (const t of constants) parts.push(['c', id(t.name), t.type, t.dims, hex(t.raw ?? new Uint8Array(0))]);
  const attribute = (_: string, v: unknown): unknown => {
    if (v instanceof Uint8Array) return v.byteLength <= SHARED_CONSTANT_BYTES ? hex(v) : { unshareable: ++unshareable };
    if (typeof v === 'object' && v !== null && 'name' in v && 'dims' in v) {
      const { name: _name, ...rest } = v as InitializerSpec;
      return rest;
    }
    return v;
  };
  for (const n of graph.nodes) {
    parts.push([n.opType, n.domain ?? '', n.inputs.map(id), n.outputs.map(id), JSON.stringify(n.attributes ?? {}, attribute)]);
  }
  parts.push(['out', graph.outputs.map((o) => [id(o.name), o.type, o.shape?.map(dim) ?? null])]);
  const asInputs: ValueInfoSpec[] = weights.map((t) => ({ name: t.name, type: t.type, shape: t.dims }));
  return {
    key: JSON.stringify(parts),
    graph: { ...graph, initializers: constants, inputs: [...graph.inputs, ...asInputs] },
    inputs: [...graph.inputs.map((i) => i.name), ...weights.map((t) => t.name)],
    outputs: graph.outputs.map((o) => o.name),
    weights,
  };
}

/** What `headPreview` needs to know of a segment's queries and keys. */
export interface HeadPreviewSpec {
  /** The graph outputs holding the layer's queries [1, heads, n, d] and keys [1, kvHeads, n, d]. */
  queries: string;
  keys: string;
  heads: number;
  kvHeads: number;
  headDim: number;
}

/**
 * A segment split for a one-head preview: `preview` computes one query head's queries and one key
 * head's keys (outputs `preview.queries`, `preview.keys`, each [1, 1, n, d]) and what the rest of
 * the segment reads of the nodes it shares with it (`handed`: the embeddings, the normed input);
 * `rest` is the segment without those shared nodes, reading `handed` as inputs. Which head: the
 * int64 [d] inputs `preview.columns.queries` and `preview.columns.keys` hold the columns of the
 * projection weights (head h: h·d … h·d + d − 1), gathered before the (much smaller) product, so
 * that one session serves every head.
 */
export interface HeadPreviewSplit {
  preview: GraphSpec;
  rest: GraphSpec;
  handed: string[];
}

export const PREVIEW_QUERIES = 'preview.queries';
export const PREVIEW_KEYS = 'preview.keys';
export const PREVIEW_COLUMNS = { queries: 'preview.columns.queries', keys: 'preview.columns.keys' } as const;

/** Ops that act on each head's rows on their own (after the split into heads), with the axis they may take. */
const PER_HEAD_OPS = new Set(['Identity', 'Add', 'Sub', 'Mul', 'Div', 'Neg', 'Sqrt', 'Reciprocal', 'Pow', 'Cast', 'Split', 'Concat', 'ReduceMean']);

/**
 * The preview split of `segment` (see HeadPreviewSplit), or undefined when its queries or keys do
 * not come from the pattern it knows: a projection `MatMul(x, W)` (+ a bias), reshaped to
 * [.., heads, d] and transposed to [1, heads, n, d], then only ops within each head's rows
 * (rotary embedding, per-head norms) whose other inputs are the same for every head.
 */
export function headPreview(segment: GraphSegment, spec: HeadPreviewSpec): HeadPreviewSplit | undefined {
  const graph = segment.graph;
  const index = indexNodes(graph);
  const { constant, isConstant } = index;
  const producer = (name: string): NodeSpec | undefined => {
    const p = index.producer.get(name);
    return p === undefined ? undefined : graph.nodes[p];
  };
  const inits = new Map(graph.initializers.map((t) => [t.name, t] as const));
  const inputs = new Map(graph.inputs.map((i) => [i.name, i] as const));
  const intValues = (name: string): number[] | undefined => {
    const t = inits.get(name);
    if (!t || t.type !== 'int64' || !t.raw) return undefined;
    const copy = t.raw.slice();
    return Array.from(new BigInt64Array(copy.buffer, 0, copy.byteLength / 8), Number);
  };
  /** The initializer a value is, or is a Cast (or Identity) of. */
  const initializerOf = (name: string): InitializerSpec | undefined => {
    const t = inits.get(name);
    if (t) return t;
    const p = producer(name);
    return p && (p.opType === 'Cast' || p.opType === 'Identity') ? initializerOf(p.inputs[0]!) : undefined;
  };
  /** The same for every head: an initializer (or a Cast of one) of rank ≤ 2 or [·, 1, ·, ·], or a graph input shaped [·, 1, ·, ·]. */
  const sharedByHeads = (name: string): boolean => {
    const t = inits.get(name);
    if (t) return t.dims.length <= 2 || (t.dims.length === 4 && t.dims[1] === 1);
    const i = inputs.get(name);
    if (i) return i.shape !== undefined && (i.shape.length <= 2 || (i.shape.length === 4 && i.shape[1] === 1));
    const p = producer(name);
    return p !== undefined && (p.opType === 'Cast' || p.opType === 'Identity') && sharedByHeads(p.inputs[0]!);
  };
  interface Projection { matmul: NodeSpec; bias?: NodeSpec; reshape: NodeSpec; transpose: NodeSpec; chain: NodeSpec[]; x: string }
  const trace = (output: string, heads: number): Projection | undefined => {
    const chain: NodeSpec[] = [];
    const seen = new Set<NodeSpec>();
    let root: Omit<Projection, 'chain'> | undefined;
    const walk = (value: string): boolean => {
      const n = producer(value);
      if (!n) return false;
      if (seen.has(n)) return true;
      seen.add(n);
      if (n.opType === 'Transpose') {
        const perm = n.attributes?.perm;
        const reshape = producer(n.inputs[0]!);
        if (root || !Array.isArray(perm) || perm.join() !== '0,2,1,3' || reshape?.opType !== 'Reshape') return false;
        const shape = intValues(reshape.inputs[1]!);
        if (!shape || shape.length !== 4 || shape[2] !== heads || shape[3] !== spec.headDim) return false;
        let proj = producer(reshape.inputs[0]!);
        let bias: NodeSpec | undefined;
        if (proj?.opType === 'Add') {
          bias = proj;
          const [a, b] = proj.inputs;
          const biasValue = isConstant(b!) ? b! : a!;
          const t = initializerOf(biasValue);
          if (!t || t.dims.length !== 1 || t.dims[0] !== heads * spec.headDim) return false;
          proj = producer(biasValue === b ? a! : b!);
        }
        if (proj?.opType !== 'MatMul' || !isConstant(proj.inputs[1]!)) return false;
        root = { matmul: proj, ...(bias ? { bias } : {}), reshape, transpose: n, x: proj.inputs[0]! };
        return true;
      }
      if (!PER_HEAD_OPS.has(n.opType) || n.outputs.length > 2) return false;
      if (n.opType === 'Split' || n.opType === 'Concat') {
        const axis = n.attributes?.axis;
        if (axis !== 3 && axis !== -1) return false;
      }
      if (n.opType === 'ReduceMean') {
        const axes = n.attributes?.axes ?? intValues(n.inputs[1] ?? '');
        if (!Array.isArray(axes) || axes.length !== 1 || (axes[0] !== 3 && axes[0] !== -1)) return false;
      }
      let onChain = 0;
      for (const [i, x] of n.inputs.entries()) {
        if (x === '') continue;
        if ((n.opType === 'Split' || n.opType === 'ReduceMean') && i > 0) {
          if (!inits.has(x)) return false;
          continue;
        }
        if (sharedByHeads(x)) continue;
        if (!walk(x)) return false;
        onChain++;
      }
      if (onChain === 0) return false;
      chain.push(n);
      return true;
    };
    if (!walk(output) || !root) return undefined;
    // In graph order (the walk found them last first).
    const order = new Map(graph.nodes.map((n, i) => [n, i] as const));
    chain.sort((a, b) => order.get(a)! - order.get(b)!);
    return { ...root, chain: chain.filter((n) => n !== root!.transpose) };
  };
  const q = trace(spec.queries, spec.heads);
  const k = trace(spec.keys, spec.kvHeads);
  if (!q || !k) return undefined;

  // The nodes both need before their projections (embeddings, the input norm), with their constants.
  const prefix = index.ancestors([q.x, k.x]);
  // The weights' own nodes (a 16-bit weight's Cast, a transpose): constants, also in the preview.
  const weightNodes = index.ancestors([q, k].flatMap((p) => [p.matmul.inputs[1]!, ...(p.bias ? p.bias.inputs : [])]));
  // A constant node stays in the rest too (repeated, as partitionByLayer does); computed ones move (in graph order).
  const moved = new Set([...prefix].filter((i) => !constant[i]).sort((a, b) => a - b));
  const segmentOutputs = new Set(segment.outputs);
  if ([...moved].some((i) => graph.nodes[i]!.outputs.some((o) => segmentOutputs.has(o)))) return undefined;
  // The rest: the nodes not moved, and of the constant ones only those it still reads (not the embedding table's Cast).
  const computed = graph.nodes.flatMap((n, i) => (moved.has(i) || constant[i] ? [] : n.outputs));
  const needed = index.ancestors(computed, (i) => !moved.has(i));
  const restNodes = graph.nodes.filter((_, i) => needed.has(i));
  const restReads = new Set(restNodes.flatMap((n) => n.inputs));
  const carriedOut = new Set(segment.carriedOut);
  const handed = [...moved].flatMap((i) => graph.nodes[i]!.outputs).filter((o) => o !== '' && (restReads.has(o) || carriedOut.has(o)));

  // The preview: the prefix, then per projection the gathered columns, the product, the reshape into one head and the per-head ops.
  const types = valueTypes(graph);
  const nodes: NodeSpec[] = graph.nodes.filter((_, i) => prefix.has(i) || (weightNodes.has(i) && constant[i]));
  const extra: InitializerSpec[] = [];
  const headOf = (p: Projection, tag: 'queries' | 'keys', output: string): void => {
    const rename = new Map<string, string>();
    const name = (v: string) => rename.get(v) ?? v;
    const own = (v: string) => {
      const r = `${v}#${tag}`;
      rename.set(v, r);
      return r;
    };
    const w = `${p.matmul.inputs[1]!}#${tag}-columns`;
    nodes.push({ opType: 'Gather', name: `${w}.gather`, inputs: [p.matmul.inputs[1]!, PREVIEW_COLUMNS[tag]], outputs: [w], attributes: { axis: 1 } });
    nodes.push({ ...p.matmul, name: `${p.matmul.name}#${tag}`, inputs: [p.x, w], outputs: [own(p.matmul.outputs[0]!)] });
    if (p.bias) {
      const [a, b] = p.bias.inputs;
      const biasValue = a === p.matmul.outputs[0] ? b! : a!;
      const cut = `${biasValue}#${tag}-columns`;
      nodes.push({ opType: 'Gather', name: `${cut}.gather`, inputs: [biasValue, PREVIEW_COLUMNS[tag]], outputs: [cut], attributes: { axis: 0 } });
      nodes.push({ ...p.bias, name: `${p.bias.name}#${tag}`, inputs: [name(p.matmul.outputs[0]!), cut], outputs: [own(p.bias.outputs[0]!)] });
    }
    const shape = intValues(p.reshape.inputs[1]!)!;
    const shapeName = `${p.reshape.inputs[1]!}#one-head`;
    extra.push({ name: shapeName, type: 'int64', dims: [4], raw: new Uint8Array(BigInt64Array.from([shape[0]!, shape[1]!, 1, shape[3]!].map(BigInt)).buffer) });
    nodes.push({ ...p.reshape, name: `${p.reshape.name}#${tag}`, inputs: [name(p.reshape.inputs[0]!), shapeName], outputs: [own(p.reshape.outputs[0]!)] });
    for (const n of [p.transpose, ...p.chain]) nodes.push({ ...n, name: `${n.name}#${tag}`, inputs: n.inputs.map(name), outputs: n.outputs.map((o) => (o === '' ? o : own(o))) });
    nodes.push({ opType: 'Identity', name: `${output}.identity`, inputs: [name(tag === 'queries' ? spec.queries : spec.keys)], outputs: [output] });
  };
  headOf(q, 'queries', PREVIEW_QUERIES);
  headOf(k, 'keys', PREVIEW_KEYS);
  const reads = new Set(nodes.flatMap((n) => n.inputs));
  const outputType = (name: string) => types.get(name) ?? 'float32';
  const preview: GraphSpec = {
    name: `${graph.name}.preview`,
    nodes,
    initializers: [...graph.initializers.filter((t) => reads.has(t.name)), ...extra],
    inputs: [
      ...graph.inputs.filter((i) => reads.has(i.name)),
      { name: PREVIEW_COLUMNS.queries, type: 'int64', shape: [spec.headDim] },
      { name: PREVIEW_COLUMNS.keys, type: 'int64', shape: [spec.headDim] },
    ],
    outputs: [
      { name: PREVIEW_QUERIES, type: outputType(spec.queries), shape: [1, 1, 'seq', spec.headDim] },
      { name: PREVIEW_KEYS, type: outputType(spec.keys), shape: [1, 1, 'seq', spec.headDim] },
      ...handed.map((name) => ({ name, type: types.get(name)! })),
    ],
    opsetVersion: graph.opsetVersion,
  };
  const rest: GraphSpec = {
    name: `${graph.name}.rest`,
    nodes: restNodes,
    initializers: graph.initializers.filter((t) => restReads.has(t.name)),
    inputs: [...graph.inputs.filter((i) => restReads.has(i.name)), ...handed.filter((h) => restReads.has(h)).map((name) => ({ name, type: types.get(name)! }))],
    outputs: graph.outputs.filter((o) => !handed.includes(o.name)),
    opsetVersion: graph.opsetVersion,
  };
  return { preview, rest, handed };
}
