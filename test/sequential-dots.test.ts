/**
 * sequentialLinear and sequentialProduct (src/models/layers.ts) sum every dot product left to
 * right in float32, each product rounded before it is added and a linear layer's bias added last.
 * Checked bit for bit against that loop written here with Math.fround, on values of widely
 * different magnitudes (where the order changes the float32 result) and with more input columns
 * than one CumSum chunk takes, so the running sum is carried across chunks.
 */
import { describe, expect, it } from 'vitest';
import { GraphBuilder, type Value } from '../src/graph/builder.js';
import type { BuildContext } from '../src/models/architecture.js';
import { ModelConfig } from '../src/models/config.js';
import { sequentialLinear, sequentialProduct } from '../src/models/layers.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';

const f = Math.fround;

/** Deterministic values spanning 2^-12 … 2^12 with both signs. */
function values(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => {
    s = (s * 1103515245 + 12345) % 2147483648;
    const u = s / 2147483648;
    return f((u < 0.5 ? -1 : 1) * (0.5 + u) * 2 ** (Math.floor(u * 1000) % 25 - 12));
  });
}

/** Σ_k a_k·b_k left to right in float32 (+ bias last); also the float64 sum rounded once. */
function sequentialSum(a: (k: number) => number, b: (k: number) => number, n: number, bias?: number): { f32: number; f64: number } {
  let acc = 0;
  let exact = 0;
  for (let k = 0; k < n; k++) {
    acc = f(acc + f(a(k) * b(k)));
    exact += a(k) * b(k);
  }
  return bias === undefined ? { f32: acc, f64: f(exact) } : { f32: f(acc + bias), f64: f(exact + bias) };
}

/** A build context over plain initializers (what sequentialLinear reads: weight, bias). */
function context(g: GraphBuilder, tensors: Record<string, { data: Float32Array; dims: number[] }>): BuildContext {
  const made = new Map<string, Value>();
  const weight = async (name: string): Promise<Value> => {
    const t = tensors[name];
    if (!t) throw new Error(`no ${name}`);
    if (!made.has(name)) made.set(name, g.initializer(name, t.data, t.dims));
    return made.get(name)!;
  };
  return {
    g,
    config: new ModelConfig({ model_type: 'marian' }, 'config.json'),
    taps: { attention: false, qk: false, lastHiddenState: false, logits: false },
    weight,
    optionalWeight: async (name) => (tensors[name] ? weight(name) : null),
    hasWeight: (name) => name in tensors,
    findPrefix: () => '',
  };
}

async function run(g: GraphBuilder, feeds: Record<string, { data: Float32Array; dims: number[] }>): Promise<Float32Array> {
  const built = await g.build();
  const session = await nodeRuntime.createSession({ model: built.model, externalData: [] });
  try {
    const out = await session.run(Object.fromEntries(Object.entries(feeds).map(([k, v]) => [k, { type: 'float32' as const, ...v }])));
    return out.y!.data as Float32Array;
  } finally {
    await session.release();
  }
}

describe('float32 dot products summed left to right', () => {
  it('sequentialLinear: x·Wᵀ + b over 80 input columns (three CumSum chunks) equals the Math.fround loop bit for bit', async () => {
    const [seq, inF, outF] = [3, 80, 5];
    const x = values(seq * inF, 7);
    const w = values(outF * inF, 11);
    const b = values(outF, 13);
    const g = new GraphBuilder('test');
    const ctx = context(g, { 'p.weight': { data: w, dims: [outF, inF] }, 'p.bias': { data: b, dims: [outF] } });
    g.output(await sequentialLinear(ctx, g.input('x', 'float32', [1, seq, inF]), 'p', inF), 'y');
    const y = await run(g, { x: { data: x, dims: [1, seq, inF] } });
    const expected = new Float32Array(seq * outF);
    let orderMatters = 0;
    for (let i = 0; i < seq; i++) {
      for (let o = 0; o < outF; o++) {
        const s = sequentialSum((k) => x[i * inF + k]!, (k) => w[o * inF + k]!, inF, b[o]!);
        expected[i * outF + o] = s.f32;
        if (s.f32 !== s.f64) orderMatters++;
      }
    }
    expect(Array.from(y)).toEqual(Array.from(expected));
    // The values are such that summing in another order (here: exactly) gives other float32 results.
    expect(orderMatters).toBeGreaterThan(0);
  });

  it('sequentialProduct: q·kᵀ per head over head_dim equals the Math.fround loop bit for bit', async () => {
    const [heads, nq, nk, d] = [2, 3, 4, 24];
    const q = values(heads * nq * d, 17);
    const kT = values(heads * d * nk, 19);
    const g = new GraphBuilder('test');
    const ctx = context(g, {});
    g.output(sequentialProduct(ctx, g.input('q', 'float32', [1, heads, nq, d]), g.input('kT', 'float32', [1, heads, d, nk]), d), 'y');
    const y = await run(g, { q: { data: q, dims: [1, heads, nq, d] }, kT: { data: kT, dims: [1, heads, d, nk] } });
    const expected: number[] = [];
    let orderMatters = 0;
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < nq; i++) {
        for (let j = 0; j < nk; j++) {
          const s = sequentialSum((k) => q[(h * nq + i) * d + k]!, (k) => kT[(h * d + k) * nk + j]!, d);
          expected.push(s.f32);
          if (s.f32 !== s.f64) orderMatters++;
        }
      }
    }
    expect(Array.from(y)).toEqual(expected);
    expect(orderMatters).toBeGreaterThan(0);
  });
});
