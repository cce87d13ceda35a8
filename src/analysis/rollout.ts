/**
 * Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"), and the
 * per-layer attention graph that rollout and attention flow (./flow.ts) both read.
 *
 * For each layer l of a self-attention stack (encoder self-attention, or a causal decoder's):
 *   1. fuse the heads: F = mean | max | min over heads of A[h] (per entry, float64). Attention
 *      is per query head, so grouped-query models need nothing special.
 *   2. discard (optional, ratio r in [0, 1)): among the entries of F that may carry weight — not
 *      masked by the model (causal mask, sliding window) and not on the diagonal — the
 *      floor(r · count) smallest are set to 0 (ties broken by the lower flat index first). The
 *      common implementation (jacobgil/vit-explain) zeroes the int(r · n²) smallest of all n²
 *      entries except flat index 0 (the [CLS] self-weight); here masked entries are not counted
 *      (they are zero already, so counting them would discard nothing in a causal model) and the
 *      whole diagonal is kept, so the residual path never loses a token.
 *   3. add the residual: A' = (1 − w) · F + w · I (w = `residual`, default 0.5, the paper's
 *      0.5·A + 0.5·I), then divide each row by its sum (a row whose sum is 0, possible only with
 *      w = 0, stays 0).
 * Rollout multiplies through the layers from `startLayer` to `endLayer`:
 *   R_start = A'_start,  R_l = A'_l · R_(l−1)
 * so R_l[i, j] is how much token i after layer l draws on input token j (the input of
 * `startLayer`). Accumulation is float64; each cumulative R_l is returned as float32.
 *
 * Pure functions of a Trace (or of plain arrays): isomorphic, imports nothing from Node, usable
 * from a Worker.
 */
import { AttnscopeError } from '../core/errors.js';
import type { StackName, Trace } from '../core/trace.js';
import { maskedEntries } from './aggregate.js';
import type { RolloutKernel } from './kernels.js';
import { headKernel } from './wasm/head-kernel.js';

export type HeadFusion = 'mean' | 'max' | 'min';
export const HEAD_FUSIONS: readonly HeadFusion[] = ['mean', 'max', 'min'];

/**
 * Per-layer token × token matrices of one sequence (what the flow diagram draws and attention
 * flow reads): `layers[l]` is row-major [size × size]; row i is a token after layer l, column j a
 * token before it (layer l's input). Raw fused attention, the residual graph, rollout, norm-based
 * attention or ALTI contributions all fit.
 */
export interface LayerMatrices {
  readonly size: number;
  readonly layers: readonly Float32Array[];
  /** The model layer of layers[0] (default 0). */
  readonly firstLayer?: number;
}

export interface GraphOptions {
  /** Self-attention stack: 'self' (default for decoder-only and encoder models), 'encoder' or 'decoder'. */
  stack?: StackName;
  /** How heads are fused (default mean). */
  fusion?: HeadFusion;
  /** Heads fused (default all). */
  heads?: readonly number[];
  /** Share of the fused weights zeroed per layer, in [0, 1) (default 0; see the file comment). */
  discard?: number;
  /** Weight of the residual identity, in [0, 1] (default 0.5). */
  residual?: number;
  /** First layer (default 0). */
  startLayer?: number;
  /** Last layer, inclusive (default the last one). */
  endLayer?: number;
}

/** The attention graph of layers startLayer … endLayer: A'_l per layer (float64, rows sum to 1). */
export interface AttentionGraph {
  stack: StackName;
  size: number;
  startLayer: number;
  endLayer: number;
  fusion: HeadFusion;
  discard: number;
  residual: number;
  /** A'_l for l = startLayer … endLayer (index l − startLayer), row-major [size × size]. */
  layers: Float64Array[];
  /** Per layer, how many entries discarding set to 0. */
  discarded: number[];
}

/** From this many weights (heads × entries) fuseHeads runs on the WebAssembly kernel where it can. */
const KERNEL_FUSE_FROM = 1 << 16;

/**
 * fuseHeads on the WebAssembly SIMD kernel (wasm/head-kernel.as `fuseLayer`: the same float64
 * operations in the same order per entry, so the same values), or null where it cannot run.
 */
function fuseOnKernel(layer: Float32Array, hs: readonly number[], size: number, how: HeadFusion): Float64Array | null {
  let at = { w: 0, offs: 0, out: 0 };
  const got = headKernel((lay) => {
    at = { w: lay.take(hs.length * size * 4), offs: lay.take(hs.length * 4), out: lay.take(size * 8) };
  });
  if (!got) return null;
  try {
    const buf = got.k.memory.buffer;
    const f32 = new Float32Array(buf);
    // The selected heads, one after the other (head j at j · size).
    hs.forEach((h, j) => f32.set(layer.subarray(h * size, (h + 1) * size), (at.w >> 2) + j * size));
    new Int32Array(buf, at.offs, hs.length).set(hs.map((_, j) => j * size));
    got.k.fuseLayer(at.w, at.offs, hs.length, size, how === 'mean' ? 0 : how === 'max' ? 1 : 2, at.out);
    return new Float64Array(buf, at.out, size).slice();
  } finally {
    got.release();
  }
}

/** Entries of a fused layer handled per block (fuseHeads: 32 KB of float64, within the first-level cache). */
const FUSE_BLOCK = 4096;

/**
 * The fusion of heads of one [numHeads, n, n] layer, per entry, in float64. Block by block (every
 * head over one block of entries before the next block), so the float64 sums stay in the cache
 * instead of going to memory once per head; the same operations in the same order per entry as
 * one pass per head (heads in the given order), so the same values.
 */
export function fuseHeads(layer: Float32Array, numHeads: number, rows: number, cols: number, how: HeadFusion, heads?: readonly number[]): Float64Array {
  const size = rows * cols;
  const hs = heads ?? Array.from({ length: numHeads }, (_, h) => h);
  if (hs.length === 0) throw new AttnscopeError('head fusion: no heads selected');
  if (size * hs.length >= KERNEL_FUSE_FROM) {
    const fused = fuseOnKernel(layer, hs, size, how);
    if (fused) return fused;
  }
  const out = new Float64Array(size);
  const offs = Int32Array.from(hs, (h) => h * size);
  for (let start = 0; start < size; start += FUSE_BLOCK) {
    const end = Math.min(size, start + FUSE_BLOCK);
    if (how === 'mean') {
      for (let j = 0; j < offs.length; j++) {
        const off = offs[j]!;
        for (let i = start; i < end; i++) out[i]! += layer[off + i]!;
      }
      const k = hs.length;
      for (let i = start; i < end; i++) out[i]! /= k;
      continue;
    }
    const first = offs[0]!;
    for (let i = start; i < end; i++) out[i] = layer[first + i]!;
    for (let j = 1; j < offs.length; j++) {
      const off = offs[j]!;
      if (how === 'max') for (let i = start; i < end; i++) out[i] = Math.max(out[i]!, layer[off + i]!);
      else for (let i = start; i < end; i++) out[i] = Math.min(out[i]!, layer[off + i]!);
    }
  }
  return out;
}

/**
 * Zeroes, in place, the floor(ratio · count) smallest entries of an n × n matrix among the `count`
 * entries that are neither on the diagonal nor masked (1 in `masked`); ties: lower flat index
 * first. Returns how many were zeroed.
 */
export function discardLowest(m: Float64Array, n: number, ratio: number, masked?: Uint8Array | null): number {
  checkRatio(ratio, 'discard');
  if (ratio === 0) return 0;
  const candidates = new Int32Array(n * n);
  let size = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      const f = i * n + j;
      if (i !== j && masked?.[f] !== 1) candidates[size++] = f;
    }
  }
  const count = Math.floor(ratio * size);
  if (count === 0) return 0;
  // The count-th smallest value (selection in linear expected time, no sort), then every
  // candidate below it and, of those equal to it, the first ones by flat index until count are zeroed.
  const values = new Float64Array(size);
  for (let c = 0; c < size; c++) values[c] = m[candidates[c]!]!;
  const cut = kthSmallest(values.slice(), count - 1);
  let below = 0;
  for (let c = 0; c < size; c++) if (values[c]! < cut) below++;
  let ties = count - below;
  for (let c = 0; c < size; c++) {
    const v = values[c]!;
    if (v < cut) m[candidates[c]!] = 0;
    else if (v === cut && ties > 0) {
      m[candidates[c]!] = 0;
      ties--;
    }
  }
  return count;
}

/**
 * The k-th smallest (0-based) of `a` (no NaN), reordering `a`: Hoare partitioning around the
 * median of three, recursing into the side that holds rank k (expected linear time; the
 * median-of-three pivot keeps sorted and constant inputs linear too).
 */
export function kthSmallest(a: Float64Array, k: number): number {
  if (!(k >= 0 && k < a.length)) throw new RangeError(`kthSmallest: rank ${k} outside 0–${a.length - 1}`);
  let lo = 0;
  let hi = a.length - 1;
  while (hi > lo) {
    const mid = (lo + hi) >>> 1;
    // Median of a[lo], a[mid], a[hi] as the pivot.
    let x = a[lo]!;
    let y = a[mid]!;
    let z = a[hi]!;
    if (x > y) [x, y] = [y, x];
    if (y > z) [y, z] = [z, y];
    if (x > y) [x, y] = [y, x];
    const pivot = y;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i]! < pivot) i++;
      while (a[j]! > pivot) j--;
      if (i <= j) {
        const t = a[i]!;
        a[i] = a[j]!;
        a[j] = t;
        i++;
        j--;
      }
    }
    // Now a[lo..j] ≤ pivot ≤ a[i..hi], and a[j+1..i−1] = pivot.
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return pivot;
  }
  return a[k]!;
}

/** (1 − w) · F + w · I, rows divided by their sums (rows summing to 0 stay 0), in place. */
export function addResidual(m: Float64Array, n: number, residual: number): Float64Array {
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (let j = 0; j < n; j++) {
      const v = (1 - residual) * m[i * n + j]! + (i === j ? residual : 0);
      m[i * n + j] = v;
      sum += v;
    }
    if (sum > 0) for (let j = 0; j < n; j++) m[i * n + j]! /= sum;
  }
  return m;
}

function checkRatio(value: number, what: string): void {
  if (!(value >= 0 && value < 1)) throw new AttnscopeError(`${what}: expected a share in [0, 1), got ${value}`);
}

/** The default self-attention stack of a trace for rollout and flow. */
function selfStack(trace: Trace, stack: StackName | undefined): StackName {
  const s = stack ?? (trace.attention.self ? 'self' : trace.attention.encoder ? 'encoder' : trace.attention.decoder ? 'decoder' : undefined);
  if (s === undefined) throw new AttnscopeError('rollout: the trace has no self-attention stack');
  if (s === 'cross') throw new AttnscopeError("rollout: the cross stack (decoder → encoder) is not a token-to-token chain; use stack 'encoder' or 'decoder'");
  if (!trace.attention[s]) throw new AttnscopeError(`rollout: the trace has no '${s}' attention (it has: ${Object.keys(trace.attention).join(', ')})`);
  return s;
}

/** Checks a layer range against a stack's layer count. */
export function layerRange(numLayers: number, start: number | undefined, end: number | undefined): [number, number] {
  const s = start ?? 0;
  const e = end ?? numLayers - 1;
  const ok = (v: number) => Number.isInteger(v) && v >= 0 && v < numLayers;
  if (!ok(s)) throw new AttnscopeError(`start layer ${s} is out of range (the trace has ${numLayers} layers: 0–${numLayers - 1})`);
  if (!ok(e)) throw new AttnscopeError(`end layer ${e} is out of range (the trace has ${numLayers} layers: 0–${numLayers - 1})`);
  if (e < s) throw new AttnscopeError(`end layer ${e} is before start layer ${s}`);
  return [s, e];
}

/** The options of attentionGraph, checked against a trace, with defaults filled in. */
interface GraphSpec {
  stack: StackName;
  numHeads: number;
  n: number;
  fusion: HeadFusion;
  discard: number;
  residual: number;
  heads: readonly number[] | undefined;
  startLayer: number;
  endLayer: number;
}

function graphSpec(trace: Trace, options: GraphOptions): GraphSpec {
  const stack = selfStack(trace, options.stack);
  const s = trace.attention[stack]!;
  const [numHeads, nq, nk] = s.dims;
  if (nq !== nk) throw new AttnscopeError(`rollout: the '${stack}' attention is ${nq} queries × ${nk} keys; rollout needs every position as a query (a trace of the whole sequence)`);
  const fusion = options.fusion ?? 'mean';
  if (!HEAD_FUSIONS.includes(fusion)) throw new AttnscopeError(`head fusion: expected ${HEAD_FUSIONS.join(', ')}, got '${String(fusion)}'`);
  const discard = options.discard ?? 0;
  checkRatio(discard, 'discard');
  const residual = options.residual ?? 0.5;
  if (!(residual >= 0 && residual <= 1)) throw new AttnscopeError(`residual: expected a weight in [0, 1], got ${residual}`);
  if (options.heads) for (const h of options.heads) if (!Number.isInteger(h) || h < 0 || h >= numHeads) throw new AttnscopeError(`head ${h} is out of range (the trace has ${numHeads}: 0–${numHeads - 1})`);
  if (options.heads && options.heads.length === 0) throw new AttnscopeError('head fusion: no heads selected');
  const [startLayer, endLayer] = layerRange(s.layers.length, options.startLayer, options.endLayer);
  return { stack, numHeads, n: nq, fusion, discard, residual, heads: options.heads, startLayer, endLayer };
}

/** The residual-augmented, head-fused, row-normalised attention A'_l of layers start … end (see the file comment). */
export function attentionGraph(trace: Trace, options: GraphOptions = {}): AttentionGraph {
  const { stack, numHeads, n, fusion, discard, residual, heads, startLayer, endLayer } = graphSpec(trace, options);
  const s = trace.attention[stack]!;
  const layers: Float64Array[] = [];
  const discarded: number[] = [];
  for (let l = startLayer; l <= endLayer; l++) {
    const f = fuseHeads(s.layers[l]!, numHeads, n, n, fusion, heads);
    discarded.push(discard > 0 ? discardLowest(f, n, discard, maskedEntries(trace, stack, l)) : 0);
    layers.push(addResidual(f, n, residual));
  }
  return { stack, size: n, startLayer, endLayer, fusion, discard, residual, layers, discarded };
}

/**
 * A · B of n × n row-major matrices in float64: four rows of A at a time share each row of B
 * (2–3× faster than one row at a time); entries of A that are 0 (masked, discarded) are skipped.
 */
function multiply(a: ArrayLike<number>, b: Float64Array, n: number): Float64Array {
  const out = new Float64Array(n * n);
  let i = 0;
  for (; i + 3 < n; i += 4) {
    const o0 = i * n;
    const o1 = o0 + n;
    const o2 = o1 + n;
    const o3 = o2 + n;
    for (let k = 0; k < n; k++) {
      const a0 = a[o0 + k]!;
      const a1 = a[o1 + k]!;
      const a2 = a[o2 + k]!;
      const a3 = a[o3 + k]!;
      if (a0 === 0 && a1 === 0 && a2 === 0 && a3 === 0) continue;
      const bk = k * n;
      for (let j = 0; j < n; j++) {
        const v = b[bk + j]!;
        out[o0 + j]! += a0 * v;
        out[o1 + j]! += a1 * v;
        out[o2 + j]! += a2 * v;
        out[o3 + j]! += a3 * v;
      }
    }
  }
  for (; i < n; i++) {
    const oi = i * n;
    for (let k = 0; k < n; k++) {
      const aik = a[oi + k]!;
      if (aik === 0) continue;
      const bk = k * n;
      for (let j = 0; j < n; j++) out[oi + j]! += aik * b[bk + j]!;
    }
  }
  return out;
}

/** Cumulative products R_l = A'_l · R_(l−1) (R_first = A'_first) of n × n matrices, float64 accumulation, each returned as float32. */
export function rolloutOfMatrices(layers: readonly ArrayLike<number>[], n: number): Float32Array[] {
  const out: Float32Array[] = [];
  let r: Float64Array | null = null;
  for (const a of layers) {
    if (a.length !== n * n) throw new AttnscopeError(`rollout: a layer matrix has ${a.length} entries, expected ${n} × ${n}`);
    let next: Float64Array;
    if (r === null) next = Float64Array.from(a);
    else next = multiply(a, r, n);
    r = next;
    out.push(Float32Array.from(r));
  }
  return out;
}

export interface RolloutResult extends LayerMatrices {
  stack: StackName;
  startLayer: number;
  endLayer: number;
  /** Cumulative rollout after each layer: layers[i] is R after layer startLayer + i. */
  layers: Float32Array[];
  /** The graph it multiplied (A'_l per layer). */
  graph: AttentionGraph;
}

/** Attention rollout of a trace's self-attention stack (see the file comment). */
export function attentionRollout(trace: Trace, options: GraphOptions = {}): RolloutResult {
  const graph = attentionGraph(trace, options);
  return {
    stack: graph.stack,
    size: graph.size,
    firstLayer: graph.startLayer,
    startLayer: graph.startLayer,
    endLayer: graph.endLayer,
    layers: rolloutOfMatrices(graph.layers, graph.size),
    graph,
  };
}

/**
 * `attentionRollout` with the heavy part on a native kernel (kernels.ts `runtimeKernel`: head
 * fusion, residual and the float64 products in onnxruntime), or in JavaScript without one. Same
 * result, to float64 round-off (the products sum in another order); with `discard` the graph is
 * built here (the sort) and only the products run on the kernel.
 */
export async function attentionRolloutWith(trace: Trace, options: GraphOptions = {}, kernel?: RolloutKernel): Promise<RolloutResult> {
  if (!kernel) return attentionRollout(trace, options);
  const spec = graphSpec(trace, options);
  const { stack, n, startLayer, endLayer } = spec;
  let graph: AttentionGraph;
  let layers: Float32Array[];
  if (spec.discard > 0) {
    graph = attentionGraph(trace, options);
    layers = await kernel.rolloutChain(graph.layers, n);
  } else {
    const s = trace.attention[stack]!;
    const r = await kernel.rollout(s.layers.slice(startLayer, endLayer + 1), spec.numHeads, n, { fusion: spec.fusion, residual: spec.residual, heads: spec.heads });
    graph = { stack, size: n, startLayer, endLayer, fusion: spec.fusion, discard: 0, residual: spec.residual, layers: r.graph, discarded: r.graph.map(() => 0) };
    layers = r.rollout;
  }
  return { stack, size: n, firstLayer: startLayer, startLayer, endLayer, layers, graph };
}

/**
 * Rows of the last cumulative rollout R_end, on demand: row i is e_iᵀ · A'_end ⋯ A'_start, a
 * vector pushed through the layers (O(L · n²) per row instead of L products of n × n matrices),
 * float64. `rows[i]` of the result is R_end's row `tokens[i]` (float64, sums to 1 when every
 * A' row does). Equal to `attentionRollout(…).layers.at(-1)` rows up to round-off.
 */
export function rolloutRows(trace: Trace, tokens: readonly number[], options: GraphOptions = {}): Float64Array[] {
  const graph = attentionGraph(trace, options);
  return rolloutRowsOfMatrices(graph.layers, graph.size, tokens);
}

/** `rolloutRows` of a graph's per-layer n × n matrices (layers[0] applied first). */
export function rolloutRowsOfMatrices(layers: readonly ArrayLike<number>[], n: number, tokens: readonly number[]): Float64Array[] {
  return tokens.map((t) => {
    if (!Number.isInteger(t) || t < 0 || t >= n) throw new AttnscopeError(`rollout: token ${t} is out of range (0–${n - 1})`);
    let v = new Float64Array(n);
    v[t] = 1;
    for (let l = layers.length - 1; l >= 0; l--) {
      const a = layers[l]!;
      if (a.length !== n * n) throw new AttnscopeError(`rollout: a layer matrix has ${a.length} entries, expected ${n} × ${n}`);
      const next = new Float64Array(n);
      for (let q = 0; q < n; q++) {
        const vq = v[q]!;
        if (vq === 0) continue;
        const off = q * n;
        for (let k = 0; k < n; k++) next[k]! += vq * a[off + k]!;
      }
      v = next;
    }
    return v;
  });
}

/** The head-fused raw attention of each layer (no discard, no residual), as LayerMatrices. */
export function fusedAttention(trace: Trace, options: Pick<GraphOptions, 'stack' | 'fusion' | 'heads' | 'startLayer' | 'endLayer'> = {}): LayerMatrices & { stack: StackName } {
  const stack = selfStack(trace, options.stack);
  const s = trace.attention[stack]!;
  const [numHeads, nq, nk] = s.dims;
  if (nq !== nk) throw new AttnscopeError(`attention graph: the '${stack}' attention is ${nq} queries × ${nk} keys; it needs every position as a query`);
  const [startLayer, endLayer] = layerRange(s.layers.length, options.startLayer, options.endLayer);
  const layers: Float32Array[] = [];
  for (let l = startLayer; l <= endLayer; l++) layers.push(Float32Array.from(fuseHeads(s.layers[l]!, numHeads, nq, nk, options.fusion ?? 'mean', options.heads)));
  return { stack, size: nq, layers, firstLayer: startLayer };
}
