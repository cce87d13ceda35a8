/**
 * Native kernels for the heavy analysis loops, run as small ONNX graphs through a `Runtime`
 * (onnxruntime-node in Node: multi-threaded, vectorised). The analyses stay pure functions: the
 * synchronous ones (rollout.ts `attentionRollout`, head-metrics.ts) are plain JavaScript and
 * run anywhere; the `…With(kernel)` variants take a kernel object the caller provides and fall
 * back to the JavaScript path without one. This module only builds graphs (src/graph) and talks to
 * the `Runtime` interface, so it imports nothing from Node: the Node side passes `nodeRuntime`.
 *
 * Rollout (`rollout`): per layer, the chosen heads of the attention [heads, n, n] (float32, as
 * traced) are fused — max and min exactly (elementwise Max / Min); the mean as a float32 sum of
 * the k heads (a MatMul with a row of ones: a float64 sum of 37.7 M entries would cost more than
 * all the rest), which is the one step in float32: relative error ≤ k · 2⁻²⁴ per fused entry (≈ 7e-7
 * for 12 heads) —, then cast to float64: the residual added ((1 − w) · F + w · I), each row
 * divided by its sum (rows summing to 0 stay 0), and the cumulative products R_l = A'_l · R_(l−1)
 * taken by MatMul in float64. R_l is returned as float32 like rollout.ts. Measured against the
 * float64 path (test/analysis-rollout-kernel.test.ts, bench/analysis-flow.ts): max, min and
 * discard agree to float64 round-off; mean fusion within about 1e-6 relative.
 * `rolloutChain` takes the graph A'_l already built (rollout with discard: the sort stays in
 * JavaScript) and only multiplies.
 *
 * Sessions are built once per graph shape (layer count, fusion, head selection) and reused:
 * token counts are symbolic dimensions.
 */
import { GraphBuilder, type Value } from '../graph/builder.js';
import type { GraphSession, Runtime, RuntimeTensor } from '../runtime/runtime.js';

/** Head fusion (rollout.ts HeadFusion; spelled out here so that rollout.ts can import this module). */
type HeadFusion = 'mean' | 'max' | 'min';

/** ONNX TensorProto element types used by Cast. */
const DOUBLE = 11;
const FLOAT = 1;

/** The rollout kernels (see the module comment). */
export interface RolloutKernel {
  /**
   * A'_l (float64, rows summing to 1) and the cumulative rollout R_l (float32) of raw attention
   * layers ([numHeads, n, n] float32 each), for fusion `fusion` over `heads` (default all).
   */
  rollout(
    layers: readonly Float32Array[],
    numHeads: number,
    n: number,
    options: { fusion: HeadFusion; residual: number; heads?: readonly number[] },
  ): Promise<{ graph: Float64Array[]; rollout: Float32Array[] }>;
  /** Cumulative products R_l = A'_l · R_(l−1) of n × n float64 matrices, each as float32. */
  rolloutChain(layers: readonly Float64Array[], n: number): Promise<Float32Array[]>;
}

/** An analysis kernel object: the rollout kernels, and the sessions it holds until `release`. */
export interface AnalysisKernel extends RolloutKernel {
  readonly runtime: string;
  /** Frees the runtime sessions. */
  release(): Promise<void>;
}

export interface KernelOptions {
  /** Intra-op threads of each session (default: the runtime's default, all cores). */
  threads?: number;
}

/**
 * The fused-rollout graph for L layers of `numHeads` heads, `k` of them fused (inputs a0 … a(L−1)
 * [numHeads, n, n] float32, w [] double, and heads [k] int64 when a subset is fused).
 * Mean fusion: a float32 MatMul of ones[1, k] with the heads (the one float32 step, see the module
 * comment); max and min: elementwise Max / Min of the heads (exact).
 */
function rolloutGraph(L: number, fusion: HeadFusion, k: number, selectHeads: boolean): GraphBuilder {
  const b = new GraphBuilder('attnscope-rollout');
  const w = b.input('w', 'float64', []);
  const heads = selectHeads ? b.input('heads', 'int64', [k]) : null;
  const ones = b.initializer('ones', new Float32Array(k).fill(1), [1, k]);
  const one = b.op('Cast', [b.scalar(1)], { to: DOUBLE });
  const zero = b.op('Cast', [b.scalar(0)], { to: DOUBLE });
  const keep = b.sub(one, w);
  let r: Value | null = null;
  for (let l = 0; l < L; l++) {
    let x = b.input(`a${l}`, 'float32', ['h', 'n', 'n']);
    if (heads) x = b.gather(x, heads, 0);
    let f: Value;
    if (fusion === 'mean') {
      const sum = b.reshape(b.matMul(ones, b.reshape(x, [k, -1])), b.shape(x, 1));
      f = b.div(b.op('Cast', [sum], { to: DOUBLE }), b.op('Cast', [b.scalar(k)], { to: DOUBLE }));
    } else if (k === 1) {
      f = b.op('Cast', [b.squeeze(x, [0])], { to: DOUBLE });
    } else {
      const parts = b.node('Split', [x], { axis: 0, num_outputs: k }, k);
      f = b.op('Cast', [b.squeeze(b.op(fusion === 'max' ? 'Max' : 'Min', parts), [0])], { to: DOUBLE });
    }
    const eye = b.op('EyeLike', [f]);
    const p = b.add(b.mul(f, keep), b.mul(eye, w));
    const s = b.op('ReduceSum', [p, b.ints([1])], { keepdims: 1 });
    const g = b.div(p, b.where(b.op('Greater', [s, zero]), s, one));
    b.output(g, `g${l}`, 'float64', ['n', 'n']);
    r = r === null ? g : b.matMul(g, r);
    b.output(b.op('Cast', [r], { to: FLOAT }), `r${l}`, 'float32', ['n', 'n']);
  }
  return b;
}

/** The chain graph for L layers (inputs g0 … g(L−1) [n, n] float64). */
function chainGraph(L: number): GraphBuilder {
  const b = new GraphBuilder('attnscope-rollout-chain');
  let r: Value | null = null;
  for (let l = 0; l < L; l++) {
    const g = b.input(`g${l}`, 'float64', ['n', 'n']);
    r = r === null ? g : b.matMul(g, r);
    b.output(b.op('Cast', [r], { to: FLOAT }), `r${l}`, 'float32', ['n', 'n']);
  }
  return b;
}

/** Analysis kernels running on `runtime` (Node: `nodeRuntime` from src/runtime/onnxruntime-node.ts). */
export function runtimeKernel(runtime: Runtime, options: KernelOptions = {}): AnalysisKernel {
  const sessions = new Map<string, Promise<GraphSession>>();
  const session = (key: string, make: () => GraphBuilder): Promise<GraphSession> => {
    let s = sessions.get(key);
    if (!s) {
      s = (async () => {
        const built = await make().build();
        return runtime.createSession({ model: built.model, externalData: [] }, { threads: options.threads });
      })();
      sessions.set(key, s);
      s.catch(() => sessions.delete(key));
    }
    return s;
  };
  const out32 = (t: RuntimeTensor | undefined): Float32Array => {
    if (!t || !(t.data instanceof Float32Array)) throw new Error('rollout kernel: missing float32 output');
    return t.data;
  };
  return {
    runtime: runtime.name,
    async rollout(layers, numHeads, n, { fusion, residual, heads }) {
      const L = layers.length;
      const k = heads ? heads.length : numHeads;
      const s = await session(`rollout:${L}:${fusion}:${k}:${heads ? 'some' : 'all'}`, () => rolloutGraph(L, fusion, k, heads !== undefined));
      const feeds: Record<string, RuntimeTensor> = { w: { type: 'float64', dims: [], data: Float64Array.of(residual) } };
      if (heads) feeds.heads = { type: 'int64', dims: [heads.length], data: BigInt64Array.from(heads, (h) => BigInt(h)) };
      layers.forEach((a, l) => (feeds[`a${l}`] = { type: 'float32', dims: [numHeads, n, n], data: a }));
      const res = await s.run(feeds);
      const graph: Float64Array[] = [];
      const rollout: Float32Array[] = [];
      for (let l = 0; l < L; l++) {
        const g = res[`g${l}`];
        if (!g || !(g.data instanceof Float64Array)) throw new Error('rollout kernel: missing float64 output');
        graph.push(g.data);
        rollout.push(out32(res[`r${l}`]));
      }
      return { graph, rollout };
    },
    async rolloutChain(layers, n) {
      const L = layers.length;
      const s = await session(`chain:${L}`, () => chainGraph(L));
      const feeds: Record<string, RuntimeTensor> = {};
      layers.forEach((g, l) => (feeds[`g${l}`] = { type: 'float64', dims: [n, n], data: g }));
      const res = await s.run(feeds);
      return layers.map((_, l) => out32(res[`r${l}`]));
    },
    async release() {
      const all = [...sessions.values()];
      sessions.clear();
      await Promise.all(all.map(async (p) => (await p.catch(() => null))?.release()));
    },
  };
}
