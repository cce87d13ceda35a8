/**
 * Reverse-mode differentiation of the graphs GraphBuilder makes, emitted as more graph nodes.
 *
 * `appendGradients(g, target, wrt)` walks the builder's node list backwards from a target value,
 * applying one vector-Jacobian product (VJP) rule per node: given the gradient ḡy of the target
 * with respect to each output of the node, a rule emits nodes computing ḡx for each
 * differentiable input. Contributions to a value that fans out are summed (ONNX `Sum`). The
 * gradients come back as Values that can be tapped with `g.output`, so onnxruntime runs forward
 * and backward in one session.
 *
 * - Only nodes on a path from a `wrt` value to the target are differentiated: the active set is
 *   the nodes reachable forwards from `wrt` through differentiable inputs and backwards from the
 *   target. A node there without a rule is an AttnscopeError naming the op and the node.
 * - Integer and boolean inputs (indices, shapes, axes, masks, conditions) are not differentiable:
 *   each rule lists which inputs carry gradients; ops such as Shape, Equal or NonZero have no
 *   differentiable output and stop the walk.
 * - Broadcasting: a rule for a broadcasting op (Add, Mul, Where, Expand, …) produces a gradient
 *   of the output's shape; `unbroadcast` reduces it to the operand's shape at run time (shapes may
 *   be dynamic): sum over the leading axes the operand lacks, then over the axes where the operand
 *   has size 1 and the output does not (found with Shape/Equal/NonZero), keeping dims.
 * - Ranks: a few rules need a static rank (MatMul's transposes of the last two axes, Transpose
 *   without perm); `rankOf` infers it from the declared inputs, weights and constants through the
 *   ops the builder emits.
 * - Float constants are made with CastLike to the tensor they combine with, so the same rules
 *   serve float32 graphs and float64 (test) graphs.
 */
import { AttnscopeError } from '../core/errors.js';
import { FloatAttr, type GraphBuilder, type Value } from './builder.js';
import type { AttributeValue, NodeSpec } from './onnx-model.js';

/** Emits the backward nodes of one node: ḡ for each input (null: none / not differentiable). */
export interface VjpContext {
  readonly g: GraphBuilder;
  readonly node: NodeSpec;
  /** The node's inputs (null: an omitted optional input). */
  readonly x: readonly (Value | null)[];
  /** The node's outputs. */
  readonly y: readonly Value[];
  /** Gradient of the target with respect to each output (null: the output does not reach it). */
  readonly gy: readonly (Value | null)[];
  /** Whether input i needs a gradient (it is on a path from a wrt value). */
  readonly needs: readonly boolean[];
  /** A float scalar constant of the element type of `like`. */
  c(value: number, like: Value): Value;
  /** Zeros of the shape and type of `like`. */
  zerosLike(like: Value): Value;
  /** Reduces `grad` (broadcast shape) to the shape of `operand`. */
  unbroadcast(grad: Value, operand: Value): Value;
  /** Static rank of a value, or an AttnscopeError naming this node. */
  rank(v: Value): number;
  attr<T extends AttributeValue>(name: string, fallback: T): T;
}

export interface VjpRule {
  /** Inputs that carry gradients (others: indices, shapes, axes, conditions). */
  readonly inputs: readonly number[] | 'all';
  /** Outputs that carry gradients (default: all). */
  readonly outputs?: readonly number[];
  readonly vjp: (ctx: VjpContext) => (Value | null)[];
}

const int = (n: NodeSpec, name: string, fallback: number): number => {
  const v = n.attributes?.[name];
  return typeof v === 'number' ? v : fallback;
};

function gy0(ctx: VjpContext): Value {
  return ctx.gy[0]!;
}

/** y = f(x) elementwise with f'(x) built by `deriv`: ḡx = ḡy · f'(x). */
function unary(deriv: (ctx: VjpContext, x: Value, y: Value) => Value): VjpRule {
  return { inputs: [0], vjp: (ctx) => [ctx.g.mul(gy0(ctx), deriv(ctx, ctx.x[0]!, ctx.y[0]!))] };
}

/** Gradient of y = Φ(x)·x (exact GELU) or its tanh form, per ONNX Gelu's `approximate`. */
function geluDerivative(ctx: VjpContext, x: Value): Value {
  const { g } = ctx;
  if (ctx.attr<string>('approximate', 'none') === 'tanh') {
    // y = ½x(1+t), t = tanh(u), u = √(2/π)(x + 0.044715x³):
    // y' = ½(1+t) + ½x(1−t²)·√(2/π)(1 + 3·0.044715x²)
    const k = Math.sqrt(2 / Math.PI);
    const x2 = g.mul(x, x);
    const u = g.mul(ctx.c(k, x), g.add(x, g.mul(ctx.c(0.044715, x), g.mul(x2, x))));
    const t = g.tanh(u);
    const du = g.mul(ctx.c(k, x), g.add(ctx.c(1, x), g.mul(ctx.c(3 * 0.044715, x), x2)));
    const half = ctx.c(0.5, x);
    return g.add(g.mul(half, g.add(ctx.c(1, x), t)), g.mul(g.mul(half, x), g.mul(g.sub(ctx.c(1, x), g.mul(t, t)), du)));
  }
  // y = xΦ(x): y' = Φ(x) + x·φ(x), Φ(x) = ½(1 + erf(x/√2)), φ(x) = exp(−x²/2)/√(2π)
  const cdf = g.mul(ctx.c(0.5, x), g.add(ctx.c(1, x), g.op('Erf', [g.mul(x, ctx.c(Math.SQRT1_2, x))])));
  const pdf = g.mul(g.op('Exp', [g.mul(g.mul(x, x), ctx.c(-0.5, x))]), ctx.c(1 / Math.sqrt(2 * Math.PI), x));
  return g.add(cdf, g.mul(x, pdf));
}

/** Swaps the last two axes of a value of rank r ≥ 2. */
function swapLast(g: GraphBuilder, v: Value, r: number): Value {
  const perm = Array.from({ length: r }, (_, i) => i);
  perm[r - 2] = r - 1;
  perm[r - 1] = r - 2;
  return g.transpose(v, perm);
}

/**
 * The flat positions (into x, row-major) of the elements an index-selecting op (Gather with
 * axis ≠ 0, Slice, GatherElements) reads: the op applied to an int64 grid 0…size(x)−1 of x's
 * shape. ḡx is then ḡy scattered-added at those positions into zeros.
 */
function scatterThroughGrid(ctx: VjpContext, x: Value, select: (grid: Value) => Value): Value {
  const { g } = ctx;
  const shape = g.shape(x);
  const size = g.op('Size', [x]);
  const grid = g.reshape(g.op('Range', [g.op('Squeeze', [g.ints([0])]), size, g.op('Squeeze', [g.ints([1])])]), shape);
  const flatIdx = g.reshape(select(grid), [-1]);
  const zeros = g.reshape(ctx.zerosLike(x), [-1]);
  const scattered = g.op('ScatterElements', [zeros, flatIdx, g.reshape(gy0(ctx), [-1])], { axis: 0, reduction: 'add' });
  return g.reshape(scattered, shape);
}

/** The VJP rules, by ONNX op type (default domain, opset 21). */
export const VJP_RULES: Readonly<Record<string, VjpRule>> = {
  // ḡx = ḡy
  Identity: { inputs: [0], vjp: (ctx) => [gy0(ctx)] },
  // y = a + b: ḡa = Σ_broadcast ḡy, ḡb likewise
  Add: {
    inputs: 'all',
    vjp: (ctx) => [ctx.needs[0] ? ctx.unbroadcast(gy0(ctx), ctx.x[0]!) : null, ctx.needs[1] ? ctx.unbroadcast(gy0(ctx), ctx.x[1]!) : null],
  },
  // y = a − b: ḡa = ḡy, ḡb = −ḡy
  Sub: { inputs: 'all', vjp: (ctx) => [ctx.needs[0] ? ctx.unbroadcast(gy0(ctx), ctx.x[0]!) : null, ctx.needs[1] ? ctx.unbroadcast(ctx.g.neg(gy0(ctx)), ctx.x[1]!) : null] },
  // y = a·b: ḡa = ḡy·b, ḡb = ḡy·a
  Mul: {
    inputs: 'all',
    vjp: (ctx) => [
      ctx.needs[0] ? ctx.unbroadcast(ctx.g.mul(gy0(ctx), ctx.x[1]!), ctx.x[0]!) : null,
      ctx.needs[1] ? ctx.unbroadcast(ctx.g.mul(gy0(ctx), ctx.x[0]!), ctx.x[1]!) : null,
    ],
  },
  // y = a/b: ḡa = ḡy/b, ḡb = −ḡy·y/b
  Div: {
    inputs: 'all',
    vjp: (ctx) => {
      const { g } = ctx;
      const [a, b] = [ctx.x[0]!, ctx.x[1]!];
      return [
        ctx.needs[0] ? ctx.unbroadcast(g.div(gy0(ctx), b), a) : null,
        ctx.needs[1] ? ctx.unbroadcast(g.neg(g.div(g.mul(gy0(ctx), ctx.y[0]!), b)), b) : null,
      ];
    },
  },
  // y = aᵇ: ḡa = ḡy·b·aᵇ⁻¹, ḡb = ḡy·y·ln a (a > 0)
  Pow: {
    inputs: 'all',
    vjp: (ctx) => {
      const { g } = ctx;
      const [a, b] = [ctx.x[0]!, ctx.x[1]!];
      const bLike = g.op('CastLike', [b, a]);
      return [
        ctx.needs[0] ? ctx.unbroadcast(g.mul(gy0(ctx), g.mul(bLike, g.pow(a, g.sub(bLike, ctx.c(1, a))))), a) : null,
        ctx.needs[1] ? ctx.unbroadcast(g.mul(gy0(ctx), g.mul(ctx.y[0]!, g.op('Log', [a]))), b) : null,
      ];
    },
  },
  // ḡx = −ḡy
  Neg: { inputs: [0], vjp: (ctx) => [ctx.g.neg(gy0(ctx))] },
  // y = √x: y' = 1/(2y)
  Sqrt: unary((ctx, x, y) => ctx.g.div(ctx.c(0.5, x), y)),
  // y = 1/x: y' = −y²
  Reciprocal: unary((ctx, _x, y) => ctx.g.neg(ctx.g.mul(y, y))),
  // y = eˣ: y' = y
  Exp: unary((_ctx, _x, y) => y),
  // y = ln x: y' = 1/x
  Log: unary((ctx, x) => ctx.g.reciprocal(x)),
  // y = tanh x: y' = 1 − y²
  Tanh: unary((ctx, x, y) => ctx.g.sub(ctx.c(1, x), ctx.g.mul(y, y))),
  // y = σ(x): y' = y(1 − y)
  Sigmoid: unary((ctx, x, y) => ctx.g.mul(y, ctx.g.sub(ctx.c(1, x), y))),
  // y = max(x, 0): y' = [x > 0]
  Relu: { inputs: [0], vjp: (ctx) => [ctx.g.where(ctx.g.op('Greater', [ctx.x[0]!, ctx.c(0, ctx.x[0]!)]), gy0(ctx), ctx.c(0, gy0(ctx)))] },
  // y = |x|: y' = sign x
  Abs: unary((ctx, x) => ctx.g.op('Sign', [x])),
  // y = erf x: y' = 2/√π · exp(−x²)
  Erf: unary((ctx, x) => ctx.g.mul(ctx.c(2 / Math.sqrt(Math.PI), x), ctx.g.op('Exp', [ctx.g.neg(ctx.g.mul(x, x))]))),
  // GELU (exact or tanh): see geluDerivative
  Gelu: unary((ctx, x) => geluDerivative(ctx, x)),
  // y = clip(x, lo, hi): y' = [lo ≤ x ≤ hi] (as torch.clamp); the bounds are treated as constants
  Clip: {
    inputs: [0],
    vjp: (ctx) => {
      const { g } = ctx;
      const x = ctx.x[0]!;
      let inside: Value | null = null;
      const both = (c: Value): Value => (inside ? g.op('And', [inside, c]) : c);
      if (ctx.x[1]) inside = both(g.op('GreaterOrEqual', [x, ctx.x[1]]));
      if (ctx.x[2]) inside = both(g.op('LessOrEqual', [x, ctx.x[2]]));
      return [inside ? g.where(inside, gy0(ctx), ctx.c(0, gy0(ctx))) : gy0(ctx)];
    },
  },
  // y = c ? a : b: ḡa = c ? ḡy : 0, ḡb = c ? 0 : ḡy (then un-broadcast); c is not differentiable
  Where: {
    inputs: [1, 2],
    vjp: (ctx) => {
      const { g } = ctx;
      const zero = ctx.c(0, gy0(ctx));
      return [
        null,
        ctx.needs[1] ? ctx.unbroadcast(g.where(ctx.x[0]!, gy0(ctx), zero), ctx.x[1]!) : null,
        ctx.needs[2] ? ctx.unbroadcast(g.where(ctx.x[0]!, zero, gy0(ctx)), ctx.x[2]!) : null,
      ];
    },
  },
  // Cast to a float type: ḡx = ḡy cast back to x's type; casts to integer/bool types stop gradients
  Cast: {
    inputs: [0],
    vjp: (ctx) => [[1, 10, 11, 16].includes(int(ctx.node, 'to', 1)) ? ctx.g.op('CastLike', [gy0(ctx), ctx.x[0]!]) : null],
  },
  CastLike: { inputs: [0], vjp: (ctx) => [ctx.g.op('CastLike', [gy0(ctx), ctx.x[0]!])] },
  // Y = A·B (batched, broadcasting; A, B of rank ≥ 2 or B 1-D is not supported):
  // ḡA = ḡY·Bᵀ, ḡB = Aᵀ·ḡY, each summed over broadcast batch axes. B 2-D: ḡB = A₂ᵀ·ḡY₂ with
  // A and ḡY flattened to [−1, K] and [−1, N] (the batch sum inside one product).
  MatMul: {
    inputs: 'all',
    vjp: (ctx) => {
      const { g } = ctx;
      const [a, b] = [ctx.x[0]!, ctx.x[1]!];
      const gy = gy0(ctx);
      const rb = ctx.rank(b);
      const ra = ctx.needs[1] || rb !== 2 ? ctx.rank(a) : 2;
      if (ra < 2 || rb < 2) throw new AttnscopeError(`autodiff: MatMul with a 1-D operand (node '${ctx.node.name}') has no gradient rule`);
      const out: (Value | null)[] = [null, null];
      if (ctx.needs[0]) out[0] = ctx.unbroadcast(g.matMul(gy, swapLast(g, b, rb)), a);
      if (ctx.needs[1]) {
        if (rb === 2) {
          const a2 = g.reshape(a, g.concat([g.ints([-1]), g.shape(a, -1)], 0));
          const gy2 = g.reshape(gy, g.concat([g.ints([-1]), g.shape(gy, -1)], 0));
          out[1] = g.matMul(g.transpose(a2, [1, 0]), gy2);
        } else {
          out[1] = ctx.unbroadcast(g.matMul(swapLast(g, a, ra), gy), b);
        }
      }
      return out;
    },
  },
  // ḡx = transpose(ḡy, perm⁻¹)
  Transpose: {
    inputs: [0],
    vjp: (ctx) => {
      const p = ctx.node.attributes?.perm;
      let perm: readonly number[];
      if (Array.isArray(p)) perm = p as readonly number[];
      else {
        const r = ctx.rank(ctx.x[0]!);
        perm = Array.from({ length: r }, (_, i) => r - 1 - i);
      }
      const inv = new Array<number>(perm.length);
      perm.forEach((axis, i) => { inv[axis] = i; });
      return [ctx.g.transpose(gy0(ctx), inv)];
    },
  },
  // Shape-only ops: ḡx = reshape(ḡy, shape(x))
  Reshape: { inputs: [0], vjp: (ctx) => [ctx.g.reshape(gy0(ctx), ctx.g.shape(ctx.x[0]!))] },
  Squeeze: { inputs: [0], vjp: (ctx) => [ctx.g.reshape(gy0(ctx), ctx.g.shape(ctx.x[0]!))] },
  Unsqueeze: { inputs: [0], vjp: (ctx) => [ctx.g.reshape(gy0(ctx), ctx.g.shape(ctx.x[0]!))] },
  Flatten: { inputs: [0], vjp: (ctx) => [ctx.g.reshape(gy0(ctx), ctx.g.shape(ctx.x[0]!))] },
  // y = expand(x, shape): ḡx = ḡy summed over the broadcast axes
  Expand: { inputs: [0], vjp: (ctx) => [ctx.unbroadcast(gy0(ctx), ctx.x[0]!)] },
  // y = data[idx] along axis: ḡdata = scatter-add of ḡy at idx into zeros (axis 0: ScatterND with
  // idx[..., None]; other axes: through an index grid, see scatterThroughGrid)
  Gather: {
    inputs: [0],
    vjp: (ctx) => {
      const { g } = ctx;
      const [data, idx] = [ctx.x[0]!, ctx.x[1]!];
      const axis = int(ctx.node, 'axis', 0);
      if (axis === 0) {
        const idx1 = g.unsqueeze(idx, [-1]);
        return [g.op('ScatterND', [ctx.zerosLike(data), idx1, gy0(ctx)], { reduction: 'add' })];
      }
      return [scatterThroughGrid(ctx, data, (grid) => g.gather(grid, idx, axis))];
    },
  },
  // y[i][j] = data[idx[i][j]][j] (along axis): ḡdata = ScatterElements-add of ḡy at idx
  GatherElements: {
    inputs: [0],
    vjp: (ctx) => [
      ctx.g.op('ScatterElements', [ctx.zerosLike(ctx.x[0]!), ctx.x[1]!, gy0(ctx)], { axis: int(ctx.node, 'axis', 0), reduction: 'add' }),
    ],
  },
  // y = data with updates written at idx (no reduction, indices assumed distinct):
  // ḡdata = ḡy with the written positions zeroed, ḡupdates = ḡy read at idx
  ScatterElements: {
    inputs: [0, 2],
    vjp: (ctx) => {
      const { g } = ctx;
      if (ctx.attr<string>('reduction', 'none') !== 'none') throw new AttnscopeError(`autodiff: ScatterElements with a reduction (node '${ctx.node.name}') has no gradient rule`);
      const axis = int(ctx.node, 'axis', 0);
      const [idx, upd] = [ctx.x[1]!, ctx.x[2]!];
      return [
        ctx.needs[0] ? g.op('ScatterElements', [gy0(ctx), idx, ctx.zerosLike(upd)], { axis }) : null,
        null,
        ctx.needs[2] ? g.op('GatherElements', [gy0(ctx), idx], { axis }) : null,
      ];
    },
  },
  // y = x[starts:ends:steps]: ḡx = ḡy placed back at the selected positions, zeros elsewhere
  Slice: {
    inputs: [0],
    vjp: (ctx) => [scatterThroughGrid(ctx, ctx.x[0]!, (grid) => ctx.g.op('Slice', [grid, ...ctx.x.slice(1)]))],
  },
  // y = concat(xᵢ, axis): ḡxᵢ = the slice of ḡy where xᵢ sits (Split by the inputs' sizes)
  Concat: {
    inputs: 'all',
    vjp: (ctx) => {
      const { g } = ctx;
      const axis = int(ctx.node, 'axis', 0);
      const inputs = ctx.x.map((v) => v!);
      const sizes = g.concat(inputs.map((v) => (axis === -1 ? g.shape(v, -1) : g.shape(v, axis, axis + 1))), 0);
      return g.node('Split', [gy0(ctx), sizes], { axis }, inputs.length);
    },
  },
  // (y₁…yₙ) = split(x, axis): ḡx = concat(ḡyᵢ, zeros for outputs that do not reach the target)
  Split: {
    inputs: [0],
    vjp: (ctx) => [ctx.g.concat(ctx.y.map((y, i) => ctx.gy[i] ?? ctx.zerosLike(y)), int(ctx.node, 'axis', 0))],
  },
  // y = Σ_axes x: ḡx = expand(ḡy with the reduced axes restored, shape(x))
  ReduceSum: {
    inputs: [0],
    vjp: (ctx) => [reduceBack(ctx)],
  },
  // y = mean_axes x: ḡx = expand(ḡy, shape(x)) · size(y)/size(x)
  ReduceMean: {
    inputs: [0],
    vjp: (ctx) => {
      const { g } = ctx;
      const count = (v: Value): Value => g.op('CastLike', [g.op('Size', [v]), gy0(ctx)]);
      const ratio = g.div(count(ctx.y[0]!), count(ctx.x[0]!));
      return [g.mul(reduceBack(ctx), ratio)];
    },
  },
  // y = softmax(x) along axis: ḡx = y ⊙ (ḡy − Σ_axis ḡy ⊙ y)
  Softmax: {
    inputs: [0],
    vjp: (ctx) => {
      const { g } = ctx;
      const y = ctx.y[0]!;
      const dot = g.op('ReduceSum', [g.mul(gy0(ctx), y), g.ints([int(ctx.node, 'axis', -1)])], { keepdims: 1 });
      return [g.mul(y, g.sub(gy0(ctx), dot))];
    },
  },
  // y = log softmax(x) along axis: ḡx = ḡy − exp(y) ⊙ Σ_axis ḡy
  LogSoftmax: {
    inputs: [0],
    vjp: (ctx) => {
      const { g } = ctx;
      const total = g.op('ReduceSum', [gy0(ctx), g.ints([int(ctx.node, 'axis', -1)])], { keepdims: 1 });
      return [g.sub(gy0(ctx), g.mul(g.op('Exp', [ctx.y[0]!]), total))];
    },
  },
  // y = x̂·γ + β, x̂ = (x − μ)·r, r = 1/√(σ² + ε) over the axes from `axis` on (n of them):
  // ḡγ = Σ ḡy·x̂, ḡβ = Σ ḡy (over the leading axes), and with ĝ = ḡy·γ:
  // ḡx = r·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂))
  LayerNormalization: {
    inputs: 'all',
    outputs: [0],
    vjp: (ctx) => {
      const { g } = ctx;
      const [x, scale, bias] = [ctx.x[0]!, ctx.x[1]!, ctx.x[2]];
      const axis = int(ctx.node, 'axis', -1);
      const first = axis < 0 ? axis : axis - ctx.rank(x);
      const axes = g.ints(Array.from({ length: -first }, (_, i) => first + i));
      const eps = ctx.node.attributes?.epsilon;
      const epsValue = eps instanceof FloatAttr ? eps.value : typeof eps === 'number' ? eps : 1e-5;
      const mean = (v: Value): Value => g.op('ReduceMean', [v, axes], { keepdims: 1 });
      const centred = g.sub(x, mean(x));
      const r = g.reciprocal(g.sqrt(g.add(mean(g.mul(centred, centred)), ctx.c(epsValue, x))));
      const xhat = g.mul(centred, r);
      const gy = gy0(ctx);
      const out: (Value | null)[] = [null, null, null];
      if (ctx.needs[0]) {
        const gh = g.mul(gy, scale);
        out[0] = g.mul(r, g.sub(g.sub(gh, mean(gh)), g.mul(xhat, mean(g.mul(gh, xhat)))));
      }
      if (ctx.needs[1]) out[1] = ctx.unbroadcast(g.mul(gy, xhat), scale);
      if (bias && ctx.needs[2]) out[2] = ctx.unbroadcast(gy, bias);
      return out;
    },
  },
  // y = cumsum(x, axis): ḡx = cumsum of ḡy in the other direction (same `exclusive`)
  CumSum: {
    inputs: [0],
    vjp: (ctx) => [
      ctx.g.op('CumSum', [gy0(ctx), ctx.x[1]!], { exclusive: int(ctx.node, 'exclusive', 0), reverse: 1 - int(ctx.node, 'reverse', 0) }),
    ],
  },
  // (values, indices) = topk(x): ḡx = ḡvalues scattered-added at indices into zeros
  TopK: {
    inputs: [0],
    outputs: [0],
    vjp: (ctx) => [
      ctx.g.op('ScatterElements', [ctx.zerosLike(ctx.x[0]!), ctx.y[1]!, gy0(ctx)], { axis: int(ctx.node, 'axis', -1), reduction: 'add' }),
    ],
  },
  // y = triangle of x: ḡx = the same triangle of ḡy
  Trilu: {
    inputs: [0],
    vjp: (ctx) => [ctx.g.op('Trilu', ctx.x[1] ? [gy0(ctx), ctx.x[1]] : [gy0(ctx)], { upper: int(ctx.node, 'upper', 1) })],
  },
  // y = Σᵢ xᵢ (broadcasting): ḡxᵢ = ḡy un-broadcast to xᵢ
  Sum: { inputs: 'all', vjp: (ctx) => ctx.x.map((v, i) => (ctx.needs[i] ? ctx.unbroadcast(gy0(ctx), v!) : null)) },
};

/** ReduceSum/ReduceMean backward: ḡy with the reduced axes restored, expanded to shape(x). */
function reduceBack(ctx: VjpContext): Value {
  const { g } = ctx;
  const x = ctx.x[0]!;
  let gy = gy0(ctx);
  const axes = ctx.x[1];
  const keep = int(ctx.node, 'keepdims', 1);
  if (!axes) {
    // all axes reduced: ḡy is a scalar (or all-ones shape), which expands as it is
    if (int(ctx.node, 'noop_with_empty_axes', 0) === 1) return gy;
  } else if (!keep) {
    gy = g.op('Unsqueeze', [gy, axes]);
  }
  return g.expand(gy, g.shape(x));
}

/** Ops whose outputs carry no gradient (shapes, comparisons, indices, constants). */
export const NON_DIFFERENTIABLE_OPS: ReadonlySet<string> = new Set([
  'Shape', 'Size', 'Equal', 'Less', 'LessOrEqual', 'Greater', 'GreaterOrEqual', 'Not', 'And', 'Or', 'Xor',
  'ConstantOfShape', 'Range', 'NonZero', 'ArgMax', 'ArgMin', 'Sign', 'IsNaN', 'IsInf', 'EyeLike', 'OneHot',
]);

export interface GradientOptions {
  /** Extra or replacement rules, by op type. */
  rules?: Readonly<Record<string, VjpRule>>;
}

/**
 * Appends to `g` the nodes computing ∂target/∂w for every w in `wrt` and returns them (same
 * order, each with w's shape). The target should be a scalar (a non-scalar target is summed).
 * A wrt value that does not reach the target gets zeros.
 */
export function appendGradients(g: GraphBuilder, target: Value, wrt: readonly Value[], options: GradientOptions = {}): Value[] {
  const rules = { ...VJP_RULES, ...options.rules };
  const nodes = [...g.graphNodes];
  const wrtNames = new Set(wrt.map((w) => w.name));

  // Forward: values that depend differentiably on a wrt value.
  const forward = new Set(wrtNames);
  const active: NodeSpec[] = [];
  for (const n of nodes) {
    if (NON_DIFFERENTIABLE_OPS.has(n.opType)) continue;
    const rule = rules[n.opType];
    const diffIn = n.inputs.some((name, i) => name !== '' && forward.has(name) && (!rule || rule.inputs === 'all' || rule.inputs.includes(i)));
    if (!diffIn) continue;
    if (n.opType === 'Cast' && ![1, 10, 11, 16].includes(int(n, 'to', 1))) continue;
    n.outputs.forEach((o, i) => { if (!rule?.outputs || rule.outputs.includes(i)) forward.add(o); });
    active.push(n);
  }
  // Backward: values the target depends on.
  const backward = new Set([target.name]);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    if (n.outputs.some((o) => backward.has(o))) for (const name of n.inputs) if (name) backward.add(name);
  }
  const onPath = active.filter((n) => n.outputs.some((o) => backward.has(o) && forward.has(o)));

  const ranks = new Map<string, number | undefined>();
  const producers = new Map<string, { node: NodeSpec; index: number }>();
  for (const n of nodes) n.outputs.forEach((o, index) => producers.set(o, { node: n, index }));
  const rankOf = (name: string): number | undefined => rankOfValue(g, name, producers, ranks);

  const grads = new Map<string, Value[]>();
  const addGrad = (name: string, v: Value): void => {
    const list = grads.get(name);
    if (list) list.push(v);
    else grads.set(name, [v]);
  };
  const total = new Map<string, Value>();
  const gradOf = (name: string): Value | null => {
    const done = total.get(name);
    if (done) return done;
    const list = grads.get(name);
    if (!list) return null;
    const v = list.length === 1 ? list[0]! : g.op('Sum', list);
    total.set(name, v);
    return v;
  };
  const shapes = new ShapeCache(g);
  const statics = new StaticShapes(g, producers);
  const casts = new Map<string, Value>();
  const c = (value: number, like: Value): Value => {
    const key = `${value}|${like.name}`;
    let v = casts.get(key);
    if (!v) casts.set(key, (v = g.op('CastLike', [g.scalar(value), like])));
    return v;
  };
  const zerosLike = (like: Value): Value => g.expand(c(0, like), shapes.shape(like));

  if (forward.has(target.name)) addGrad(target.name, g.expand(c(1, target), shapes.shape(target)));

  for (let i = onPath.length - 1; i >= 0; i--) {
    const node = onPath[i]!;
    const gy = node.outputs.map((o) => gradOf(o));
    if (gy.every((v) => v === null)) continue;
    const rule = rules[node.opType];
    if (!rule) {
      throw new AttnscopeError(
        `autodiff: no gradient rule for ONNX op '${node.opType}' (node '${node.name}'), which lies between the target and a value to differentiate; ops with rules: ${Object.keys(rules).sort().join(', ')}`,
      );
    }
    const needs = node.inputs.map((name, k) => name !== '' && forward.has(name) && (rule.inputs === 'all' || rule.inputs.includes(k)));
    const ctx: VjpContext = {
      g, node, gy, needs, c, zerosLike,
      x: node.inputs.map((name) => (name ? { name } : null)),
      y: node.outputs.map((name) => ({ name })),
      // No un-broadcast nodes where the static shapes prove the gradient has the operand's shape already.
      unbroadcast: (grad, operand) => (statics.gradientFits(node, operand) ? grad : unbroadcast(g, grad, operand, shapes)),
      rank: (v) => {
        const r = rankOf(v.name);
        if (r === undefined) throw new AttnscopeError(`autodiff: the gradient of ${node.opType} (node '${node.name}') needs the static rank of '${v.name}', which cannot be inferred`);
        return r;
      },
      attr: <T extends AttributeValue>(name: string, fallback: T): T => (node.attributes?.[name] as T | undefined) ?? fallback,
    };
    const gx = rule.vjp(ctx);
    node.inputs.forEach((name, k) => {
      const v = gx[k];
      if (v && needs[k]) addGrad(name, v);
    });
  }
  return wrt.map((w) => gradOf(w.name) ?? zerosLike(w));
}

type Dim = number | string;

/**
 * Static shapes through the builder's ops, with symbolic dimensions: a graph input's named
 * dimensions (e.g. 'seq', equal wherever the builder declares them, as its feeds guarantee) and a
 * fresh name for each dimension nothing is known about (equal only to itself as it propagates).
 * Used to leave out un-broadcasting (about 8 nodes each) where the gradient provably has the
 * operand's shape; anything not inferred keeps the run-time un-broadcast.
 */
class StaticShapes {
  private readonly memo = new Map<string, readonly Dim[] | null>();
  private fresh = 0;
  constructor(private readonly g: GraphBuilder, private readonly producers: ReadonlyMap<string, { node: NodeSpec; index: number }>) {}

  private unknown(): string {
    return `?${this.fresh++}`;
  }

  /** Whether the gradient a rule of `node` passes to `unbroadcast` for `operand` already has its shape. */
  gradientFits(node: NodeSpec, operand: Value): boolean {
    const op = this.shape(operand.name);
    if (!op) return false;
    const same = (a: readonly Dim[] | null, b: readonly Dim[]): boolean => !!a && a.length === b.length && a.every((d, i) => d === b[i]);
    switch (node.opType) {
      case 'Add': case 'Sub': case 'Mul': case 'Div': case 'Pow': case 'Where': case 'Sum': case 'Expand':
        return same(this.shape(node.outputs[0]!), op); // the gradient has the output's shape
      case 'LayerNormalization':
        return same(this.shape(node.inputs[0]!), op); // the gradient has x's shape
      case 'MatMul': {
        // [batch…, m, n] gradients of an operand [batch'…, m, n]: no sum when the batch axes agree.
        const y = this.shape(node.outputs[0]!);
        return !!y && y.length === op.length && op.length >= 2 && same(y.slice(0, -2), op.slice(0, -2));
      }
      default:
        return false;
    }
  }

  shape(name: string): readonly Dim[] | null {
    const m = this.memo.get(name);
    if (m !== undefined) return m;
    this.memo.set(name, null); // cycle guard
    const out = this.infer(name);
    this.memo.set(name, out);
    return out;
  }

  private infer(name: string): readonly Dim[] | null {
    const known = this.g.describeValue(name);
    if (known) return known.shape;
    const p = this.producers.get(name);
    if (!p) return null;
    const n = p.node;
    const x = (i: number): readonly Dim[] | null => (n.inputs[i] ? this.shape(n.inputs[i]!) : null);
    const ints = (i: number): readonly number[] | undefined => (n.inputs[i] ? this.g.describeValue(n.inputs[i]!)?.ints : undefined);
    const broadcast = (shapes: (readonly Dim[] | null)[]): Dim[] | null => {
      if (shapes.some((s) => !s)) return null;
      const rank = Math.max(...shapes.map((s) => s!.length));
      const out: Dim[] = [];
      for (let k = 0; k < rank; k++) {
        const dims = shapes.map((s) => s![s!.length - rank + k] ?? 1);
        const big = dims.filter((d) => d !== 1);
        out.push(big.length === 0 ? 1 : big.every((d) => d === big[0]) ? big[0]! : this.unknown());
      }
      return out;
    };
    const axis = (a: number, r: number): number => (a < 0 ? a + r : a);
    switch (n.opType) {
      case 'Identity': case 'Neg': case 'Sqrt': case 'Reciprocal': case 'Exp': case 'Log': case 'Tanh': case 'Sigmoid': case 'Relu':
      case 'Abs': case 'Erf': case 'Gelu': case 'Clip': case 'Cast': case 'CastLike': case 'Softmax': case 'LogSoftmax': case 'CumSum':
      case 'Trilu': case 'Sign': case 'Not':
        return p.index === 0 ? x(0) : null;
      case 'LayerNormalization':
        return p.index === 0 ? x(0) : null;
      case 'Add': case 'Sub': case 'Mul': case 'Div': case 'Pow': case 'Sum': case 'Where': case 'Equal': case 'Less': case 'Greater': case 'And': case 'Or':
        return broadcast(n.inputs.map((_, i) => x(i)));
      case 'MatMul': {
        const [a, b] = [x(0), x(1)];
        if (!a || !b || a.length < 2 || b.length < 2) return null;
        const batch = broadcast([a.slice(0, -2), b.slice(0, -2)]);
        return batch && [...batch, a[a.length - 2]!, b[b.length - 1]!];
      }
      case 'Transpose': {
        const a = x(0);
        const perm = n.attributes?.perm;
        if (!a) return null;
        return Array.isArray(perm) ? (perm as number[]).map((i) => a[i]!) : [...a].reverse();
      }
      case 'Reshape': {
        const a = x(0);
        const target = ints(1);
        if (!target) return null;
        if (n.attributes?.allowzero) return null;
        const out: Dim[] = target.map((d, i) => (d === 0 ? (a?.[i] ?? this.unknown()) : d === -1 ? this.unknown() : d));
        // One −1 among numbers: the input's element count over the others', when all are numbers.
        const minus = target.indexOf(-1);
        if (minus >= 0 && a && a.every((d) => typeof d === 'number') && out.every((d, i) => i === minus || typeof d === 'number')) {
          const total = (a as number[]).reduce((s, d) => s * d, 1);
          const rest = out.reduce((s: number, d, i) => (i === minus ? s : s * (d as number)), 1);
          if (rest > 0) out[minus] = total / rest;
        }
        return out;
      }
      case 'Unsqueeze': {
        const a = x(0);
        const ax = ints(1);
        if (!a || !ax) return null;
        const r = a.length + ax.length;
        const set = new Set(ax.map((v) => axis(v, r)));
        const out: Dim[] = [];
        let k = 0;
        for (let i = 0; i < r; i++) out.push(set.has(i) ? 1 : a[k++]!);
        return out;
      }
      case 'Squeeze': {
        const a = x(0);
        const ax = ints(1);
        if (!a || !ax) return null;
        const set = new Set(ax.map((v) => axis(v, a.length)));
        return a.filter((_, i) => !set.has(i));
      }
      case 'Gather': {
        const [d, i] = [x(0), x(1)];
        if (!d || !i) return null;
        const ax = axis(int(n, 'axis', 0), d.length);
        return [...d.slice(0, ax), ...i, ...d.slice(ax + 1)];
      }
      case 'ReduceSum': case 'ReduceMean': case 'ReduceMax': {
        const a = x(0);
        const ax = n.inputs[1] ? ints(1) : undefined;
        if (!a || (n.inputs[1] && !ax)) return null;
        const set = new Set((ax ?? a.map((_, i) => i)).map((v) => axis(v, a.length)));
        if (ax && ax.length === 0) return int(n, 'noop_with_empty_axes', 0) ? a : null;
        return int(n, 'keepdims', 1) ? a.map((d, i) => (set.has(i) ? 1 : d)) : a.filter((_, i) => !set.has(i));
      }
      case 'Concat': {
        const shapes = n.inputs.map((_, i) => x(i));
        if (shapes.some((s) => !s)) return null;
        const first = shapes[0]!;
        const ax = axis(int(n, 'axis', 0), first.length);
        const along = shapes.map((s) => s![ax]!);
        const sum = along.every((d) => typeof d === 'number') ? (along as number[]).reduce((s, d) => s + d, 0) : this.unknown();
        return first.map((d, i) => (i === ax ? sum : d));
      }
      case 'Split': {
        const a = x(0);
        if (!a) return null;
        const ax = axis(int(n, 'axis', 0), a.length);
        const sizes = ints(1);
        return a.map((d, i) => (i === ax ? (sizes?.[p.index] ?? this.unknown()) : d));
      }
      case 'Slice': {
        const a = x(0);
        const axes = ints(3);
        if (!a || !axes) return null;
        const set = new Set(axes.map((v) => axis(v, a.length)));
        return a.map((d, i) => (set.has(i) ? this.unknown() : d));
      }
      default:
        return null;
    }
  }
}

/** Static rank of a graph value, inferred through the builder's ops as the backward pass does (undefined: unknown). */
export function inferRank(g: GraphBuilder, value: Value): number | undefined {
  const producers = new Map<string, { node: NodeSpec; index: number }>();
  for (const n of g.graphNodes) n.outputs.forEach((o, index) => producers.set(o, { node: n, index }));
  return rankOfValue(g, value.name, producers, new Map());
}

/** Shape, rank and int64 scalar nodes made once per pass (fewer nodes for the runtime to fold). */
export class ShapeCache {
  private readonly shapes = new Map<string, Value>();
  private readonly ranks = new Map<string, Value>();
  private readonly ints = new Map<number, Value>();
  constructor(private readonly g: GraphBuilder) {}
  shape(v: Value): Value {
    let s = this.shapes.get(v.name);
    if (!s) this.shapes.set(v.name, (s = this.g.shape(v)));
    return s;
  }
  /** The rank as an int64 scalar. */
  rank(v: Value): Value {
    let r = this.ranks.get(v.name);
    if (!r) this.ranks.set(v.name, (r = this.g.op('Size', [this.shape(v)])));
    return r;
  }
  /** An int64 scalar constant. */
  int(value: number): Value {
    let c = this.ints.get(value);
    if (!c) this.ints.set(value, (c = this.g.op('Squeeze', [this.g.ints([value])])));
    return c;
  }
}

/**
 * Sums `grad` (the broadcast result's shape) down to `operand`'s shape: first over the leading
 * axes the operand lacks, then (keeping dims) over the axes where the operand has size 1 and the
 * gradient does not. Both steps are computed from run-time shapes and are no-ops when nothing
 * was broadcast.
 */
export function unbroadcast(g: GraphBuilder, grad: Value, operand: Value, shapes: ShapeCache = new ShapeCache(g)): Value {
  const operandShape = shapes.shape(operand);
  const extra = g.sub(shapes.rank(grad), shapes.rank(operand));
  const leading = g.op('Range', [shapes.int(0), extra, shapes.int(1)]);
  const g1 = g.op('ReduceSum', [grad, leading], { keepdims: 0, noop_with_empty_axes: 1 });
  const differs = g.op('Not', [g.op('Equal', [operandShape, g.shape(g1)])]);
  const axes = g.reshape(g.op('NonZero', [differs]), [-1]);
  return g.op('ReduceSum', [g1, axes], { keepdims: 1, noop_with_empty_axes: 1 });
}

const SAME_RANK = new Set([
  'Identity', 'Neg', 'Sqrt', 'Reciprocal', 'Exp', 'Log', 'Tanh', 'Sigmoid', 'Relu', 'Abs', 'Erf', 'Gelu', 'Clip', 'Cast',
  'CastLike', 'Softmax', 'LogSoftmax', 'LayerNormalization', 'CumSum', 'Slice', 'Concat', 'Split', 'Trilu', 'TopK',
  'ScatterElements', 'ScatterND',
]);
const BROADCAST = new Set(['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Where', 'Sum', 'Equal', 'Less', 'Greater', 'And', 'Or']);

/** Static rank of a value, inferred through the ops the builder emits (undefined: unknown). */
function rankOfValue(
  g: GraphBuilder,
  name: string,
  producers: ReadonlyMap<string, { node: NodeSpec; index: number }>,
  memo: Map<string, number | undefined>,
): number | undefined {
  if (memo.has(name)) return memo.get(name);
  const known = g.describeValue(name);
  if (known) {
    memo.set(name, known.shape.length);
    return known.shape.length;
  }
  const p = producers.get(name);
  if (!p) return undefined;
  memo.set(name, undefined); // cycle guard
  const n = p.node;
  const r = (i: number): number | undefined => (n.inputs[i] ? rankOfValue(g, n.inputs[i]!, producers, memo) : undefined);
  const ints = (i: number): readonly number[] | undefined => (n.inputs[i] ? g.describeValue(n.inputs[i]!)?.ints : undefined);
  let out: number | undefined;
  if (SAME_RANK.has(n.opType)) out = r(0);
  else if (BROADCAST.has(n.opType)) {
    const rs = n.inputs.map((_, i) => r(i));
    out = rs.every((x) => x !== undefined) ? Math.max(...(rs as number[])) : undefined;
  } else {
    switch (n.opType) {
      case 'MatMul': {
        const [a, b] = [r(0), r(1)];
        out = a !== undefined && b !== undefined && a >= 2 && b >= 2 ? Math.max(a, b) : undefined;
        break;
      }
      case 'Transpose': {
        const perm = n.attributes?.perm;
        out = Array.isArray(perm) ? perm.length : r(0);
        break;
      }
      case 'Reshape':
        out = n.inputs[1] ? vectorLength(g, n.inputs[1], producers, memo) : undefined;
        break;
      case 'Unsqueeze': {
        const a = ints(1);
        const x = r(0);
        out = a && x !== undefined ? x + a.length : undefined;
        break;
      }
      case 'Squeeze': {
        const a = ints(1);
        const x = r(0);
        out = a && x !== undefined ? x - a.length : undefined;
        break;
      }
      case 'Gather': {
        const [d, i] = [r(0), r(1)];
        out = d !== undefined && i !== undefined ? d - 1 + i : undefined;
        break;
      }
      case 'GatherElements':
        out = r(1);
        break;
      case 'Expand': {
        const x = r(0);
        const s = n.inputs[1] ? vectorLength(g, n.inputs[1], producers, memo) : undefined;
        out = x !== undefined && s !== undefined ? Math.max(x, s) : undefined;
        break;
      }
      case 'ReduceSum':
      case 'ReduceMean':
      case 'ReduceMax': {
        const x = r(0);
        if (x === undefined) break;
        if (int(n, 'keepdims', 1)) out = x;
        else {
          const a = ints(1);
          out = a ? x - a.length : n.inputs[1] ? undefined : 0;
        }
        break;
      }
      case 'Shape':
      case 'Size':
        out = n.opType === 'Shape' ? 1 : 0;
        break;
      default:
        out = undefined;
    }
  }
  memo.set(name, out);
  return out;
}

/**
 * Static length of a 1-D int64 vector (a shape operand of Reshape/Expand): constants, Shape (the
 * rank of its input, cut by start/end), Concat of such vectors. Undefined: unknown.
 */
function vectorLength(
  g: GraphBuilder,
  name: string,
  producers: ReadonlyMap<string, { node: NodeSpec; index: number }>,
  memo: Map<string, number | undefined>,
): number | undefined {
  const known = g.describeValue(name);
  if (known) return typeof known.shape[0] === 'number' ? known.shape[0] : undefined;
  const n = producers.get(name)?.node;
  if (!n) return undefined;
  if (n.opType === 'Concat') {
    let total = 0;
    for (const i of n.inputs) {
      const len = vectorLength(g, i, producers, memo);
      if (len === undefined) return undefined;
      total += len;
    }
    return total;
  }
  if (n.opType === 'Shape') {
    const r = rankOfValue(g, n.inputs[0]!, producers, memo);
    if (r === undefined) return undefined;
    const clampAxis = (v: number): number => Math.min(r, Math.max(0, v < 0 ? v + r : v));
    return Math.max(0, clampAxis(int(n, 'end', r)) - clampAxis(int(n, 'start', 0)));
  }
  if (n.opType === 'Identity' || n.opType === 'Cast') return vectorLength(g, n.inputs[0]!, producers, memo);
  return undefined;
}
