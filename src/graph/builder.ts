/**
 * A small typed builder for ONNX graphs. Architectures describe their forward pass with it;
 * any intermediate value can be made a graph output ("tapped").
 */
import {
  encodeModel,
  FloatAttr,
  type AttributeValue,
  type ElemType,
  type GraphSpec,
  type InitializerSpec,
  type NodeSpec,
  type ValueInfoSpec,
} from './onnx-model.js';
import { liveNodes } from './partition.js';

export { FloatAttr, type ElemType } from './onnx-model.js';

/** A value (tensor) flowing through the graph, named by the output that produces it. */
export interface Value {
  readonly name: string;
}

/** Opset of the default ONNX domain the builder emits (LayerNormalization, Gelu, ...). */
export const OPSET = 21;

/**
 * Ops of the default domain newer than OPSET, with the opset that brought them: a graph holding one
 * is declared at that opset, others stay at OPSET. (The builder's other ops mean the same at 21 and
 * 23, and onnxruntime fuses them alike: a graph with the fused Attention op gives the separate ops'
 * graph at 21 bit for bit, test/graph-fused-attention.test.ts; the same graph without it at 21 and
 * at 23 gave the same kernels and values on the llama, gpt2 and bert fixtures, checked once.)
 */
const NEWER_OPS: Readonly<Record<string, number>> = { Attention: 23 };

/** Weights this large are kept out of the protobuf, as external data. */
const EXTERNAL_THRESHOLD = 64 * 1024;

/** Float32 data, now or when the graph is encoded (weights are read only if needed). */
export type FloatSource = Float32Array | (() => Promise<Float32Array>);

/**
 * How a weight is stored in the encoded model: float32, or the checkpoint's own 16-bit type with a
 * Cast to float32 in the graph (onnxruntime folds it into a float32 constant when the session is
 * created, so the arithmetic is unchanged and the stored graph takes half the disk).
 */
export type WeightStorage = 'float32' | 'float16' | 'bfloat16';

/** A weight the encoded model references by file name instead of holding it. */
export interface ExternalWeight {
  /** File name the model's external-data entry points at (relative to the model file). */
  path: string;
  byteLength: number;
  /** The little-endian bytes in the weight's storage type (reads the checkpoint, transposes if needed). */
  load(): Promise<Uint8Array>;
}

/** How `build` and `buildGraph` treat the graph. */
export interface BuildOptions {
  /**
   * Keep nodes from which no graph output is reachable (default false: they are left out, and the
   * weights and constants only they read with them). onnxruntime would run them all the same: a
   * trace of attention alone leaves the last layer's MLP and the final norm dead. graph/partition.ts
   * keeps them to place its cuts as in a graph whose outputs are all live.
   */
  keepDead?: boolean;
}

/** An encoded model and the weights it references. */
export interface BuiltModel {
  model: Uint8Array;
  external: ExternalWeight[];
}

interface Weight {
  name: string;
  dims: readonly number[];
  load: () => Promise<Float32Array>;
  storage: WeightStorage;
}

/**
 * float32 values that are exact float16 or bfloat16 values (they were read from such a
 * checkpoint) back to their 16-bit patterns; exact, no rounding needed.
 */
export function toStorage16(data: Float32Array, storage: 'float16' | 'bfloat16'): Uint16Array {
  const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
  const out = new Uint16Array(data.length);
  if (storage === 'bfloat16') {
    for (let i = 0; i < bits.length; i++) out[i] = bits[i]! >>> 16;
    return out;
  }
  for (let i = 0; i < bits.length; i++) {
    const x = bits[i]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    if (exp === 0xff) out[i] = sign | 0x7c00 | (x & 0x7fffff ? 0x200 : 0);
    else if (exp >= 113) out[i] = sign | ((exp - 112) << 10) | ((x & 0x7fffff) >>> 13);
    else out[i] = sign | Math.round(Math.abs(data[i]!) * 2 ** 24); // float16 subnormals (and zero)
  }
  return out;
}

/**
 * Reads a weight once for all who ask while it is being read, and keeps nothing afterwards: a
 * weight is held only by whoever uses it, so a graph's weights can be streamed one at a time into
 * the graph cache (peak memory near the largest tensor, not the whole model); one asked for again
 * later is read again.
 */
function once(source: FloatSource): () => Promise<Float32Array> {
  if (typeof source !== 'function') return () => Promise.resolve(source);
  let pending: Promise<Float32Array> | undefined;
  return () => {
    if (!pending) {
      const p = source();
      pending = p;
      const forget = (): void => {
        if (pending === p) pending = undefined;
      };
      p.then(forget, forget);
    }
    return pending;
  };
}

/** FNV-1a, for short file-name suffixes that keep sanitised names distinct. */
function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return h.toString(16).padStart(8, '0');
}

/** A file name for a weight: its name made safe, plus a hash of the exact name. */
export function externalFileName(name: string): string {
  return `${name.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 120)}-${fnv1a(name)}.bin`;
}

function bytesOf(data: Float32Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Row-major [rows, cols] → [cols, rows], in cache-sized tiles. */
export function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  const dst = new Float32Array(src.length);
  const T = 32;
  for (let r0 = 0; r0 < rows; r0 += T) {
    const rEnd = Math.min(rows, r0 + T);
    for (let c0 = 0; c0 < cols; c0 += T) {
      const cEnd = Math.min(cols, c0 + T);
      for (let c = c0; c < cEnd; c++) {
        let o = c * rows + r0;
        for (let r = r0, i = r0 * cols + c; r < rEnd; r++, i += cols) dst[o++] = src[i]!;
      }
    }
  }
  return dst;
}

export class GraphBuilder {
  private readonly nodes: NodeSpec[] = [];
  private readonly initializers: InitializerSpec[] = [];
  /** Weights by name (read lazily), so they can be transformed at build time (see `linear`). */
  private readonly weights = new Map<string, Weight>();
  private readonly transposedCache = new Map<string, Value>();
  private readonly inputs: ValueInfoSpec[] = [];
  private readonly outputs: ValueInfoSpec[] = [];
  private readonly constCache = new Map<string, Value>();
  private readonly usedNames = new Set<string>();
  private counter = 0;

  constructor(readonly name = 'attnscope') {}

  private fresh(hint: string): string {
    let name = `${hint}_${this.counter++}`;
    while (this.usedNames.has(name)) name = `${hint}_${this.counter++}`;
    this.usedNames.add(name);
    return name;
  }

  input(name: string, type: ElemType, shape: readonly (number | string)[]): Value {
    this.usedNames.add(name);
    this.inputs.push({ name, type, shape });
    return { name };
  }

  /** Marks `value` as a graph output called `name`. */
  output(value: Value, name: string, type: ElemType = 'float32', shape?: readonly (number | string)[]): void {
    const finalName = this.identityAs(value, name);
    this.outputs.push({ name: finalName, type, shape });
  }

  private identityAs(value: Value, name: string): string {
    if (this.usedNames.has(name)) throw new Error(`graph already has a value named ${name}`);
    this.usedNames.add(name);
    this.nodes.push({ opType: 'Identity', inputs: [value.name], outputs: [name], name: `${name}/Identity` });
    return name;
  }

  /**
   * Adds a float32 weight: its data (not copied), or a function reading it, called only when
   * the graph is encoded and the weight is needed.
   */
  initializer(name: string, data: FloatSource, dims: readonly number[], storage: WeightStorage = 'float32'): Value {
    if (this.usedNames.has(name)) throw new Error(`graph already has a value named ${name}`);
    this.usedNames.add(name);
    this.weights.set(name, { name, dims, load: once(data), storage });
    return { name };
  }

  /** A constant tensor, deduplicated by value. */
  private constant(type: ElemType, data: Float32Array | BigInt64Array, dims: readonly number[]): Value {
    const key = `${type}:${dims.join('x')}:${Array.from(data as ArrayLike<number | bigint>).join(',')}`;
    const cached = this.constCache.get(key);
    if (cached) return cached;
    const name = `const_${this.counter++}`;
    this.usedNames.add(name);
    this.initializers.push({ name, type, dims, raw: bytesOf(data) });
    const value = { name };
    this.constCache.set(key, value);
    return value;
  }

  /** A float32 scalar constant. */
  scalar(value: number): Value {
    return this.constant('float32', Float32Array.of(value), []);
  }

  /** A 1-D int64 constant (shapes, axes, indices). */
  ints(values: readonly number[]): Value {
    return this.constant('int64', BigInt64Array.from(values.map((v) => BigInt(v))), [values.length]);
  }

  /** Adds a node and returns its outputs. */
  node(opType: string, inputs: readonly (Value | null)[], attributes?: Record<string, AttributeValue>, numOutputs = 1, domain?: string): Value[] {
    const outs: string[] = [];
    for (let i = 0; i < numOutputs; i++) outs.push(this.fresh(opType));
    this.nodes.push({
      opType,
      inputs: inputs.map((v) => (v ? v.name : '')),
      outputs: outs,
      name: `${outs[0]}/node`,
      attributes,
      domain,
    });
    return outs.map((name) => ({ name }));
  }

  /**
   * Adds a node whose outputs are optional: only those `wanted` are named (ONNX: an output with an
   * empty name does not exist, and the op may skip computing it); returns them, null for the others.
   */
  nodeWith(opType: string, inputs: readonly (Value | null)[], attributes: Record<string, AttributeValue>, wanted: readonly boolean[], domain?: string): (Value | null)[] {
    const outs = wanted.map((w) => (w ? this.fresh(opType) : ''));
    const last = outs.reduce((end, o, i) => (o ? i + 1 : end), 0);
    if (last === 0) throw new Error(`${opType}: a node needs at least one output`);
    this.nodes.push({
      opType,
      inputs: inputs.map((v) => (v ? v.name : '')),
      outputs: outs.slice(0, last),
      name: `${outs.find((o) => o)!}/node`,
      attributes,
      domain,
    });
    return outs.map((name) => (name ? { name } : null));
  }

  op(opType: string, inputs: readonly (Value | null)[], attributes?: Record<string, AttributeValue>): Value {
    return this.node(opType, inputs, attributes)[0]!;
  }

  /**
   * Puts `make(value)` in the place of `value` for every node already in the graph that reads it
   * (graph outputs included): the nodes `make` adds are moved right after `value`'s producer, so
   * the graph stays topologically sorted, and the later readers get the returned value. For
   * rewrites such as mixing a baseline into the word-embedding lookup. `make` may only read values
   * defined before that point (graph inputs, weights, constants, `value`, earlier nodes).
   */
  intercept(value: Value, make: (v: Value) => Value): Value {
    const at = this.nodes.findIndex((n) => n.outputs.includes(value.name));
    const before = this.nodes.length;
    const replacement = make(value);
    const added = this.nodes.splice(before);
    for (let i = at + 1; i < this.nodes.length; i++) {
      const n = this.nodes[i]!;
      if (n.inputs.includes(value.name)) this.nodes[i] = { ...n, inputs: n.inputs.map((x) => (x === value.name ? replacement.name : x)) };
    }
    this.nodes.splice(at + 1, 0, ...added);
    return replacement;
  }

  /**
   * Declares the first dimension of every graph input whose first dimension is 1 (and that has
   * more than one) as a symbolic dimension of its own, `<dim>.<input name>`: for batched runs,
   * where inputs that differ per batch item are fed stacked and the others still as one row that
   * broadcasts (one shared name would tell onnxruntime they are equal, and it plans memory so).
   */
  batchInputs(dim = 'batch'): void {
    for (let i = 0; i < this.inputs.length; i++) {
      const spec = this.inputs[i]!;
      if (spec.shape && spec.shape.length >= 2 && spec.shape[0] === 1) this.inputs[i] = { ...spec, shape: [`${dim}.${spec.name}`, ...spec.shape.slice(1)] };
    }
  }

  /** Stops returning graph output `name` (the value stays in the graph for the nodes that read it). */
  dropOutput(name: string): void {
    const i = this.outputs.findIndex((o) => o.name === name);
    if (i < 0) throw new Error(`graph has no output named ${name}`);
    this.outputs.splice(i, 1);
  }

  /** The nodes so far, in order (read-only; for passes that extend the graph, e.g. autodiff). */
  get graphNodes(): readonly NodeSpec[] { return this.nodes; }

  /**
   * What the builder knows statically about a graph input, weight or constant: its element type,
   * its shape (strings are symbolic dimensions) and, for small int64 constants, their values.
   * Undefined for values computed by nodes.
   */
  describeValue(name: string): { type: ElemType; shape: readonly (number | string)[]; ints?: readonly number[] } | undefined {
    const input = this.inputs.find((i) => i.name === name);
    if (input) return { type: input.type, shape: input.shape ?? [] };
    const w = this.weights.get(name);
    if (w) return { type: 'float32', shape: w.dims };
    const c = this.initializers.find((t) => t.name === name);
    if (!c) return undefined;
    if (c.type !== 'int64' || !c.raw) return { type: c.type, shape: c.dims };
    const view = new BigInt64Array(c.raw.buffer.slice(c.raw.byteOffset, c.raw.byteOffset + c.raw.byteLength));
    return { type: c.type, shape: c.dims, ints: Array.from(view, (v) => Number(v)) };
  }

  // --- elementwise -------------------------------------------------------------
  add(a: Value, b: Value): Value { return this.op('Add', [a, b]); }
  sub(a: Value, b: Value): Value { return this.op('Sub', [a, b]); }
  mul(a: Value, b: Value): Value { return this.op('Mul', [a, b]); }
  div(a: Value, b: Value): Value { return this.op('Div', [a, b]); }
  pow(a: Value, b: Value): Value { return this.op('Pow', [a, b]); }
  neg(a: Value): Value { return this.op('Neg', [a]); }
  sqrt(a: Value): Value { return this.op('Sqrt', [a]); }
  reciprocal(a: Value): Value { return this.op('Reciprocal', [a]); }
  tanh(a: Value): Value { return this.op('Tanh', [a]); }
  sigmoid(a: Value): Value { return this.op('Sigmoid', [a]); }
  relu(a: Value): Value { return this.op('Relu', [a]); }
  where(cond: Value, a: Value, b: Value): Value { return this.op('Where', [cond, a, b]); }

  /** Exact GELU (erf form) or its tanh approximation, as ONNX Gelu (opset 20). */
  gelu(a: Value, approximate: 'none' | 'tanh' = 'none'): Value {
    return this.op('Gelu', [a], { approximate });
  }

  /** x · sigmoid(x). */
  silu(a: Value): Value { return this.mul(a, this.sigmoid(a)); }

  // --- linear algebra ----------------------------------------------------------
  matMul(a: Value, b: Value): Value { return this.op('MatMul', [a, b]); }

  /**
   * PyTorch `nn.Linear`: x · Wᵀ + b, with W stored [out, in]. The weight is transposed here, once,
   * so the graph holds a plain MatMul with a constant [in, out] matrix: the form onnxruntime
   * pre-packs and runs fastest (Gemm/FusedMatMul with transB run ~3× slower, and a Transpose
   * node costs seconds of constant folding at session creation).
   */
  linear(x: Value, weight: Value, bias?: Value): Value {
    const y = this.matMul(x, this.transposed2d(weight));
    return bias ? this.add(y, bias) : y;
  }

  /** The transpose of a 2-D weight: computed at build time for initializers, a Transpose node otherwise. */
  transposed2d(weight: Value): Value {
    const cached = this.transposedCache.get(weight.name);
    if (cached) return cached;
    const w = this.weights.get(weight.name);
    let out: Value;
    if (w && w.dims.length === 2) {
      const [rows, cols] = w.dims as [number, number];
      out = this.initializer(`${weight.name}.T`, async () => transpose2d(await w.load(), rows, cols), [cols, rows], w.storage);
    } else {
      out = this.transpose(weight, [1, 0]);
    }
    this.transposedCache.set(weight.name, out);
    return out;
  }

  transpose(a: Value, perm: readonly number[]): Value { return this.op('Transpose', [a], { perm }); }
  reshape(a: Value, shape: readonly number[] | Value): Value {
    return this.op('Reshape', [a, Array.isArray(shape) ? this.ints(shape) : (shape as Value)]);
  }
  unsqueeze(a: Value, axes: readonly number[]): Value { return this.op('Unsqueeze', [a, this.ints(axes)]); }
  squeeze(a: Value, axes: readonly number[]): Value { return this.op('Squeeze', [a, this.ints(axes)]); }
  concat(values: readonly Value[], axis: number): Value { return this.op('Concat', values, { axis }); }
  gather(data: Value, indices: Value, axis = 0): Value { return this.op('Gather', [data, indices], { axis }); }
  expand(a: Value, shape: Value): Value { return this.op('Expand', [a, shape]); }
  shape(a: Value, start?: number, end?: number): Value {
    const attrs: Record<string, AttributeValue> = {};
    if (start !== undefined) attrs.start = start;
    if (end !== undefined) attrs.end = end;
    return this.op('Shape', [a], attrs);
  }
  slice(a: Value, starts: readonly number[] | Value, ends: readonly number[] | Value, axes: readonly number[], steps?: readonly number[]): Value {
    const s = Array.isArray(starts) ? this.ints(starts) : (starts as Value);
    const e = Array.isArray(ends) ? this.ints(ends) : (ends as Value);
    const inputs = [a, s, e, this.ints(axes)];
    if (steps) inputs.push(this.ints(steps));
    return this.op('Slice', inputs);
  }
  split(a: Value, sizes: readonly number[], axis: number): Value[] {
    return this.node('Split', [a, this.ints(sizes)], { axis }, sizes.length);
  }

  // --- reductions and normalisation ---------------------------------------------
  reduceMean(a: Value, axes: readonly number[], keepdims = true): Value {
    return this.op('ReduceMean', [a, this.ints(axes)], { keepdims: keepdims ? 1 : 0 });
  }
  softmax(a: Value, axis = -1): Value { return this.op('Softmax', [a], { axis }); }

  /** LayerNorm over the last axis, as `nn.LayerNorm(eps)`. */
  layerNorm(x: Value, scale: Value, bias: Value | null, eps: number): Value {
    return this.op('LayerNormalization', bias ? [x, scale, bias] : [x, scale], { axis: -1, epsilon: new FloatAttr(eps) });
  }

  /**
   * Serialises the graph as an ONNX model. Weights of 64 KiB or more stay outside the protobuf
   * as external data, not read yet (no copy in the model, no 2 GiB protobuf limit, and a cached
   * model needs none of them read); smaller ones are read and stored in it. Only nodes that lead
   * to a graph output are emitted (see BuildOptions.keepDead), and only initializers some emitted
   * node reads (a weight used only transposed is not emitted twice, a dead layer's not at all).
   */
  async build(options: BuildOptions = {}): Promise<BuiltModel> {
    const { graph, external } = await this.buildGraph(options);
    return { model: encodeModel(graph), external };
  }

  /** The graph `build` encodes, as a GraphSpec with its external weights (graph/partition.ts splits it by layer). */
  async buildGraph(options: BuildOptions = {}): Promise<{ graph: GraphSpec; external: ExternalWeight[] }> {
    const live = options.keepDead ? undefined : liveNodes(this.nodes, this.outputs.map((o) => o.name));
    const kept = live ? this.nodes.filter((_, i) => live.has(i)) : this.nodes;
    const used = new Set<string>();
    for (const n of kept) for (const i of n.inputs) used.add(i);
    const initializers = this.initializers.filter((t) => used.has(t.name));
    const external: ExternalWeight[] = [];
    // 16-bit weights: stored as such, each with a Cast to float32 ahead of every other node.
    const casts: NodeSpec[] = [];
    for (const w of this.weights.values()) {
      if (!used.has(w.name)) continue;
      const wide = w.storage === 'float32';
      const storedName = wide ? w.name : `${w.name}::${w.storage}`;
      const type: ElemType = w.storage;
      const bytes = async (): Promise<Uint8Array> => {
        const data = await w.load();
        return bytesOf(w.storage === 'float32' ? data : toStorage16(data, w.storage));
      };
      const byteLength = w.dims.reduce((a, b) => a * b, 1) * (wide ? 4 : 2);
      if (byteLength >= EXTERNAL_THRESHOLD) {
        const path = externalFileName(storedName);
        initializers.push({ name: storedName, type, dims: w.dims, external: { location: path, length: byteLength } });
        external.push({ path, byteLength, load: bytes });
      } else {
        initializers.push({ name: storedName, type, dims: w.dims, raw: await bytes() });
      }
      if (!wide) casts.push({ opType: 'Cast', inputs: [storedName], outputs: [w.name], name: `${w.name}/Cast`, attributes: { to: 1 } });
    }
    const nodes = casts.length > 0 ? [...casts, ...kept] : kept;
    const opsetVersion = kept.reduce((v, n) => (n.domain ? v : Math.max(v, NEWER_OPS[n.opType] ?? v)), OPSET);
    return { graph: { name: this.name, nodes, initializers, inputs: this.inputs, outputs: this.outputs, opsetVersion }, external };
  }
}
