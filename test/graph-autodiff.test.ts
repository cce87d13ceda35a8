/**
 * Reverse-mode autodiff of builder graphs (src/graph/autodiff.ts): for each op, a tiny graph
 * y = op(inputs), target T = Σ y³ + Σ y² (so every element of y matters, unevenly); onnxruntime runs
 * the forward pass and the appended backward nodes, and each gradient is compared with central
 * finite differences of T, obtained by re-running the same graph with one input element moved by
 * ±h. Graphs are float64 (h = 1e-5) wherever onnxruntime's CPU provider has a double kernel for
 * the op; the ops it only has float kernels for (Gelu, Erf) run in float32 with h = 1e-2 and a
 * tolerance of 3e-3 of the largest gradient (float32 rounding divided by h, plus O(h²) truncation).
 * Errors are measured against the largest |finite difference| of the input.
 */
// Telemetry off before the binding loads, as src/runtime does.
import '../src/runtime/ort-environment.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import { appendGradients } from '../src/graph/autodiff.js';
import { GraphBuilder, type Value } from '../src/graph/builder.js';
import { mulberry32 as prng } from '../src/core/random.js';

type Float = 'float64' | 'float32';

interface InputSpec {
  dims: number[];
  /** 'any': uniform in [−1.5, 1.5]; 'pos': in [0.5, 2]; or the values. */
  data?: 'any' | 'pos' | number[];
  /** Differentiate with respect to it (default true). */
  wrt?: boolean;
}

interface Case {
  name: string;
  type?: Float;
  inputs: Record<string, InputSpec>;
  /** Largest error allowed, relative to the largest |finite difference| (default: 1e-7 in float64, 3e-3 in float32). */
  tol?: number;
  forward(g: GraphBuilder, v: Record<string, Value>): Value;
}

const size = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

/** The float constant `value` as the type of `like`. */
const k = (g: GraphBuilder, value: number, like: Value): Value => g.op('CastLike', [g.scalar(value), like]);

/** T = Σ y³ + Σ y². */
function objective(g: GraphBuilder, y: Value): Value {
  const y2 = g.mul(y, y);
  return g.add(g.op('ReduceSum', [g.mul(y2, y)], { keepdims: 0 }), g.op('ReduceSum', [y2], { keepdims: 0 }));
}

const measured: Record<string, number> = {};

async function checkCase(c: Case): Promise<number> {
  const type = c.type ?? 'float64';
  const g = new GraphBuilder('autodiff-test');
  const rand = prng(c.name.length * 7919 + c.name.charCodeAt(0));
  const values: Record<string, Value> = {};
  const data: Record<string, number[]> = {};
  for (const [name, spec] of Object.entries(c.inputs)) {
    values[name] = g.input(name, type, spec.dims);
    const n = size(spec.dims);
    const d = spec.data ?? 'any';
    data[name] = Array.isArray(d) ? d : Array.from({ length: n }, () => (d === 'pos' ? 0.5 + 1.5 * rand() : 3 * rand() - 1.5));
  }
  const target = objective(g, c.forward(g, values));
  const wrt = Object.keys(c.inputs).filter((n) => c.inputs[n]!.wrt !== false);
  const grads = appendGradients(g, target, wrt.map((n) => values[n]!));
  g.output(target, 'target', type);
  grads.forEach((gr, i) => g.output(gr, `grad_${wrt[i]}`, type));
  const session = await ort.InferenceSession.create((await g.build()).model);
  try {
    const Arr = type === 'float64' ? Float64Array : Float32Array;
    const feeds = (over?: { name: string; index: number; delta: number }): Record<string, ort.Tensor> => {
      const out: Record<string, ort.Tensor> = {};
      for (const [name, spec] of Object.entries(c.inputs)) {
        const arr = Arr.from(data[name]!);
        if (over && over.name === name) arr[over.index] = data[name]![over.index]! + over.delta;
        out[name] = new ort.Tensor(type, arr, spec.dims);
      }
      return out;
    };
    const result = await session.run(feeds());
    const h = type === 'float64' ? 1e-5 : 1e-2;
    let worst = 0;
    for (const name of wrt) {
      const grad = result[`grad_${name}`]!;
      expect(grad.dims).toEqual(c.inputs[name]!.dims);
      const got = Array.from(grad.data as Float64Array | Float32Array, Number);
      const fd: number[] = [];
      for (let i = 0; i < got.length; i++) {
        const plus = Number((await session.run(feeds({ name, index: i, delta: h }), ['target'])).target!.data[0]);
        const minus = Number((await session.run(feeds({ name, index: i, delta: -h }), ['target'])).target!.data[0]);
        fd.push((plus - minus) / (2 * h));
      }
      const scale = Math.max(1e-12, ...fd.map(Math.abs));
      const err = Math.max(...got.map((v, i) => Math.abs(v - fd[i]!))) / scale;
      worst = Math.max(worst, err);
    }
    measured[c.name] = worst;
    return worst;
  } finally {
    await session.release();
  }
}

const unary = (name: string, op: string, data: InputSpec['data'] = 'any', type: Float = 'float64', attrs?: Record<string, string | number>): Case => ({
  name, type, inputs: { x: { dims: [2, 3], data } }, forward: (g, v) => g.op(op, [v.x!], attrs),
});

const CASES: Case[] = [
  { name: 'Add [2,3,4] + [4]', inputs: { a: { dims: [2, 3, 4] }, b: { dims: [4] } }, forward: (g, v) => g.add(v.a!, v.b!) },
  { name: 'Add [2,1,4] + [3,1]', inputs: { a: { dims: [2, 1, 4] }, b: { dims: [3, 1] } }, forward: (g, v) => g.add(v.a!, v.b!) },
  { name: 'Sub [3,1] − [2,1,4]', inputs: { a: { dims: [3, 1] }, b: { dims: [2, 1, 4] } }, forward: (g, v) => g.sub(v.a!, v.b!) },
  { name: 'Mul [2,1,4] * [3,1]', inputs: { a: { dims: [2, 1, 4] }, b: { dims: [3, 1] } }, forward: (g, v) => g.mul(v.a!, v.b!) },
  { name: 'Mul [2,3] * scalar []', inputs: { a: { dims: [2, 3] }, b: { dims: [] } }, forward: (g, v) => g.mul(v.a!, v.b!) },
  { name: 'Div [2,3,4] / [3,1]', inputs: { a: { dims: [2, 3, 4] }, b: { dims: [3, 1], data: 'pos' } }, forward: (g, v) => g.div(v.a!, v.b!) },
  { name: 'Pow [2,3] ^ [3]', inputs: { a: { dims: [2, 3], data: 'pos' }, b: { dims: [3] } }, forward: (g, v) => g.pow(v.a!, v.b!) },
  unary('Neg', 'Neg'),
  unary('Sqrt', 'Sqrt', 'pos'),
  unary('Reciprocal', 'Reciprocal', 'pos'),
  unary('Exp', 'Exp'),
  unary('Log', 'Log', 'pos'),
  unary('Tanh', 'Tanh'),
  unary('Sigmoid', 'Sigmoid'),
  unary('Relu', 'Relu', [-1.2, 0.3, 0.9, -0.4, 1.1, -0.05]),
  unary('Abs', 'Abs', [-1.2, 0.3, 0.9, -0.4, 1.1, -0.05]),
  unary('Erf (float32)', 'Erf', 'any', 'float32'),
  unary('Gelu exact (float32)', 'Gelu', 'any', 'float32', { approximate: 'none' }),
  unary('Gelu tanh (float32)', 'Gelu', 'any', 'float32', { approximate: 'tanh' }),
  {
    name: 'Clip [−0.5, 0.8]',
    inputs: { x: { dims: [2, 3], data: [-1.2, 0.3, 0.9, -0.4, 1.1, -0.05] } },
    forward: (g, v) => g.op('Clip', [v.x!, k(g, -0.5, v.x!), k(g, 0.8, v.x!)]),
  },
  {
    name: 'Where [2,3] ? [2,3] : [3]',
    inputs: { a: { dims: [2, 3] }, b: { dims: [3] } },
    forward: (g, v) => g.where(g.op('Greater', [v.a!, k(g, 0, v.a!)]), v.a!, v.b!),
  },
  { name: 'MatMul [2,3,4]·[4,5]', inputs: { a: { dims: [2, 3, 4] }, b: { dims: [4, 5] } }, forward: (g, v) => g.matMul(v.a!, v.b!) },
  { name: 'MatMul [2,1,3,4]·[3,4,2]', inputs: { a: { dims: [2, 1, 3, 4] }, b: { dims: [3, 4, 2] } }, forward: (g, v) => g.matMul(v.a!, v.b!) },
  { name: 'MatMul [3,4]·[2,4,5]', inputs: { a: { dims: [3, 4] }, b: { dims: [2, 4, 5] } }, forward: (g, v) => g.matMul(v.a!, v.b!) },
  { name: 'Transpose [2,3,4] perm 2,0,1', inputs: { x: { dims: [2, 3, 4] } }, forward: (g, v) => g.transpose(v.x!, [2, 0, 1]) },
  { name: 'Reshape [2,3,4] → [4,6]', inputs: { x: { dims: [2, 3, 4] } }, forward: (g, v) => g.reshape(v.x!, [4, 6]) },
  { name: 'Unsqueeze/Squeeze', inputs: { x: { dims: [2, 3] } }, forward: (g, v) => g.mul(g.unsqueeze(v.x!, [1]), g.squeeze(g.unsqueeze(v.x!, [0, 3]), [3])) },
  { name: 'Expand [3,1] → [2,3,4]', inputs: { x: { dims: [3, 1] } }, forward: (g, v) => g.expand(v.x!, g.ints([2, 3, 4])) },
  { name: 'Gather axis 0, repeated ids', inputs: { x: { dims: [4, 3] } }, forward: (g, v) => g.gather(v.x!, g.reshape(g.ints([2, 0, 2, 3, 2, 1]), [2, 3]), 0) },
  { name: 'Gather axis 1, scalar id', inputs: { x: { dims: [2, 4, 3] } }, forward: (g, v) => g.gather(v.x!, g.op('Squeeze', [g.ints([2])]), 1) },
  { name: 'Gather axis 0, negative ids', inputs: { x: { dims: [4, 3] } }, forward: (g, v) => g.gather(v.x!, g.ints([-1, 0, -1]), 0) },
  { name: 'Gather axis 1, negative ids', inputs: { x: { dims: [2, 4] } }, forward: (g, v) => g.gather(v.x!, g.ints([-2, 1]), 1) },
  {
    name: 'GatherElements, negative ids',
    inputs: { x: { dims: [2, 3] } },
    forward: (g, v) => g.op('GatherElements', [v.x!, g.reshape(g.ints([-1, 0, -1, 1]), [2, 2])], { axis: 1 }),
  },
  { name: 'Gather axis −1', inputs: { x: { dims: [2, 4] } }, forward: (g, v) => g.gather(v.x!, g.ints([3, 3, 0]), -1) },
  {
    name: 'GatherElements axis 1',
    inputs: { x: { dims: [2, 3] } },
    forward: (g, v) => g.op('GatherElements', [v.x!, g.reshape(g.ints([2, 2, 0, 1, 0, 1, 1, 1]), [2, 4])], { axis: 1 }),
  },
  {
    name: 'ScatterElements (data and updates)',
    inputs: { x: { dims: [2, 4] }, u: { dims: [2, 2] } },
    forward: (g, v) => g.op('ScatterElements', [v.x!, g.reshape(g.ints([3, 0, 1, 2]), [2, 2]), v.u!], { axis: 1 }),
  },
  { name: 'Slice with steps and negative bounds', inputs: { x: { dims: [3, 5] } }, forward: (g, v) => g.slice(v.x!, [0, -1], [3, 0], [0, 1], [2, -2]) },
  { name: 'Concat axis 1', inputs: { a: { dims: [2, 1, 3] }, b: { dims: [2, 2, 3] } }, forward: (g, v) => g.concat([v.a!, v.b!, v.a!], 1) },
  { name: 'Concat axis −1', inputs: { a: { dims: [2, 2] }, b: { dims: [2, 3] } }, forward: (g, v) => g.concat([v.b!, v.a!], -1) },
  {
    name: 'Split, one output unused',
    inputs: { x: { dims: [2, 6] } },
    forward: (g, v) => {
      const [a, , c] = g.split(v.x!, [2, 3, 1], 1);
      return g.mul(a!, c!);
    },
  },
  { name: 'ReduceSum axes [0,2], keepdims 0', inputs: { x: { dims: [2, 3, 4] } }, forward: (g, v) => g.op('ReduceSum', [v.x!, g.ints([0, 2])], { keepdims: 0 }) },
  { name: 'ReduceSum all axes', inputs: { x: { dims: [2, 3] } }, forward: (g, v) => g.op('ReduceSum', [v.x!], { keepdims: 1 }) },
  { name: 'ReduceMean axis −1, keepdims 1', inputs: { x: { dims: [2, 3, 4] } }, forward: (g, v) => g.reduceMean(v.x!, [-1]) },
  { name: 'ReduceMean axis 1, keepdims 0', inputs: { x: { dims: [2, 3, 4] } }, forward: (g, v) => g.reduceMean(v.x!, [1], false) },
  { name: 'Softmax axis −1', inputs: { x: { dims: [2, 3, 4] } }, forward: (g, v) => g.softmax(v.x!) },
  { name: 'Softmax axis 1', inputs: { x: { dims: [2, 3, 4] } }, forward: (g, v) => g.softmax(v.x!, 1) },
  { name: 'LogSoftmax', inputs: { x: { dims: [2, 5] } }, forward: (g, v) => g.op('LogSoftmax', [v.x!], { axis: -1 }) },
  {
    name: 'LayerNormalization (x, scale, bias)',
    inputs: { x: { dims: [2, 3, 5] }, s: { dims: [5] }, b: { dims: [5] } },
    forward: (g, v) => g.layerNorm(v.x!, v.s!, v.b!, 1e-5),
  },
  { name: 'LayerNormalization without bias', inputs: { x: { dims: [3, 4] }, s: { dims: [4] } }, forward: (g, v) => g.layerNorm(v.x!, v.s!, null, 1e-3) },
  { name: 'CumSum', inputs: { x: { dims: [2, 4] } }, forward: (g, v) => g.op('CumSum', [v.x!, g.ints([1])]) },
  { name: 'CumSum exclusive reverse', inputs: { x: { dims: [2, 4] } }, forward: (g, v) => g.op('CumSum', [v.x!, g.ints([1])], { exclusive: 1, reverse: 1 }) },
  {
    name: 'TopK values',
    inputs: { x: { dims: [2, 5], data: [0.1, 0.9, -0.3, 0.5, 0.7, -1, 0.2, 1.3, 0.4, -0.6] } },
    forward: (g, v) => g.node('TopK', [v.x!, g.ints([2])], { axis: -1 }, 2)[0]!,
  },
  { name: 'Trilu lower', inputs: { x: { dims: [3, 3] } }, forward: (g, v) => g.op('Trilu', [v.x!], { upper: 0 }) },
  { name: 'Sum of three, broadcasting', inputs: { a: { dims: [2, 3] }, b: { dims: [3] }, c: { dims: [2, 1] } }, forward: (g, v) => g.op('Sum', [v.a!, v.b!, v.c!]) },
  // the float32 round trip rounds x by ~6e-8 relative, which the float64 finite difference (h = 1e-5) sees
  { name: 'Cast to float32 and back', tol: 3e-3, inputs: { x: { dims: [2, 3] } }, forward: (g, v) => g.op('CastLike', [g.op('Cast', [v.x!], { to: 1 }), v.x!]) },
  {
    name: 'fan-out: x·x + tanh(x) + x/2',
    inputs: { x: { dims: [2, 3] } },
    forward: (g, v) => g.add(g.add(g.mul(v.x!, v.x!), g.tanh(v.x!)), g.div(v.x!, k(g, 2, v.x!))),
  },
  {
    name: 'shape path not differentiated: x · cast(shape(x)[1])',
    inputs: { x: { dims: [2, 3] } },
    forward: (g, v) => g.mul(v.x!, g.op('CastLike', [g.shape(v.x!, 1, 2), v.x!])),
  },
  {
    name: 'chain LayerNorm → MatMul → Softmax → Gather → ReduceSum',
    inputs: { x: { dims: [1, 4, 6] }, s: { dims: [6] }, b: { dims: [6] }, w: { dims: [6, 5] } },
    forward: (g, v) => {
      const h = g.softmax(g.matMul(g.layerNorm(v.x!, v.s!, v.b!, 1e-5), v.w!));
      return g.op('ReduceSum', [g.gather(h, g.ints([1, 3]), 1), g.ints([1])], { keepdims: 0 });
    },
  },
  {
    name: 'attention-like block with a constant mask',
    inputs: { q: { dims: [1, 2, 3, 4] }, kk: { dims: [1, 2, 3, 4] }, vv: { dims: [1, 2, 3, 4] } },
    forward: (g, v) => {
      const scores = g.div(g.matMul(v.q!, g.transpose(v.kk!, [0, 1, 3, 2])), k(g, 2, v.q!));
      const causal = g.op('Trilu', [g.expand(k(g, 1, v.q!), g.ints([3, 3]))], { upper: 0 });
      const masked = g.where(g.op('Equal', [causal, k(g, 0, v.q!)]), k(g, -1e4, v.q!), scores);
      return g.matMul(g.softmax(masked), v.vv!);
    },
  },
];

describe('autodiff: each rule against central finite differences', () => {
  for (const c of CASES) {
    it(c.name, async () => {
      const err = await checkCase(c);
      expect(err).toBeLessThan(c.tol ?? ((c.type ?? 'float64') === 'float64' ? 1e-7 : 3e-3));
    });
  }
  it('report', () => {
    if (process.env.AUTODIFF_REPORT) console.log(JSON.stringify(measured, null, 1));
  });
});

describe('autodiff: graph structure', () => {
  it('the gradient with respect to an intermediate value is the adjoint of its consumers (h = tanh x, T = Σ h³ + Σ h²)', async () => {
    const g = new GraphBuilder('intermediate');
    const x = g.input('x', 'float64', [4]);
    const h = g.tanh(x);
    const t = objective(g, h);
    const [gh, gx] = appendGradients(g, t, [h, x]);
    g.output(gh!, 'gh', 'float64');
    g.output(gx!, 'gx', 'float64');
    const session = await ort.InferenceSession.create((await g.build()).model);
    const xs = [-0.7, 0.1, 0.4, 1.3];
    const out = await session.run({ x: new ort.Tensor('float64', Float64Array.from(xs), [4]) });
    await session.release();
    xs.forEach((xi, i) => {
      const hi = Math.tanh(xi);
      const dh = 3 * hi * hi + 2 * hi;
      expect(Number(out.gh!.data[i])).toBeCloseTo(dh, 12);
      expect(Number(out.gx!.data[i])).toBeCloseTo(dh * (1 - hi * hi), 12);
    });
  });

  it('a value that does not reach the target gets zeros; nodes off the path need no rule', async () => {
    const g = new GraphBuilder('unreached');
    const x = g.input('x', 'float64', [3]);
    const z = g.input('z', 'float64', [2]);
    g.output(g.op('Cos', [x]), 'unrelated', 'float64'); // no rule for Cos, but not on the path
    const t = objective(g, g.tanh(x));
    const [gz] = appendGradients(g, t, [z]);
    g.output(gz!, 'gz', 'float64');
    const session = await ort.InferenceSession.create((await g.build()).model);
    const out = await session.run({ x: new ort.Tensor('float64', Float64Array.of(0.1, 0.2, 0.3), [3]), z: new ort.Tensor('float64', Float64Array.of(1, 2), [2]) });
    await session.release();
    expect(Array.from(out.gz!.data as Float64Array)).toEqual([0, 0]);
  });

  it('an op without a rule on the path is an AttnscopeError naming the op and the node', () => {
    const g = new GraphBuilder('missing');
    const x = g.input('x', 'float32', [3]);
    const y = g.op('Cos', [x]);
    const t = g.op('ReduceSum', [g.tanh(y)], { keepdims: 0 });
    let error: unknown;
    try {
      appendGradients(g, t, [x]);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(AttnscopeError);
    expect((error as Error).message).toContain("no gradient rule for ONNX op 'Cos'");
    expect((error as Error).message).toContain(`node '${y.name}/node'`);
  });
});
