/**
 * What the layers do to each token's hidden state, from a trace's residual stream
 * (Trace.layerStates, TraceOptions.residuals): how much each sub-layer's update changes each
 * token (update norms), and a 2-D principal-component projection of every layer's token states
 * (ml-pca). Pure functions of a Trace; sums in float64.
 */
import { PCA } from 'ml-pca';
import { AttnscopeError } from '../core/errors.js';
import type { Matrix, Residuals, StackName, Trace } from '../core/trace.js';

/** The stack read when none is named: `self`, else the decoder (encoder-decoders). */
function defaultStack(trace: Trace): StackName {
  const states = trace.layerStates ?? {};
  if (states.self) return 'self';
  if (states.decoder) return 'decoder';
  if (states.encoder) return 'encoder';
  return 'self';
}

/** The residual stream of a stack, or one clear error naming what to re-trace with. */
export function residualsOf(trace: Trace, stack?: StackName): { stack: StackName; residuals: Residuals } {
  const s = stack ?? defaultStack(trace);
  const residuals = trace.layerStates?.[s]?.residuals;
  if (!residuals) {
    const have = Object.entries(trace.layerStates ?? {}).filter(([, v]) => v?.residuals).map(([k]) => k);
    throw new AttnscopeError(
      `the trace has no residual stream for the ${s} stack (${have.length > 0 ? `it has: ${have.join(', ')}` : 're-trace with --deep-dive, or residuals: true'})`,
    );
  }
  return { stack: s, residuals };
}

/** Euclidean norm of each row of `m`, in float64. */
function rowNorms(m: Matrix): Float64Array {
  const [rows, cols] = m.dims;
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) {
      const v = m.data[r * cols + c]!;
      s += v * v;
    }
    out[r] = Math.sqrt(s);
  }
  return out;
}

/** Norm of each row of `after − before`, differences taken in float64. */
function updateRowNorms(after: Matrix, before: Matrix): Float64Array {
  const [rows, cols] = after.dims;
  const out = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let c = 0; c < cols; c++) {
      const d = after.data[r * cols + c]! - before.data[r * cols + c]!;
      s += d * d;
    }
    out[r] = Math.sqrt(s);
  }
  return out;
}

function ratio(a: Float64Array, b: Float64Array): Float64Array {
  return a.map((v, i) => (b[i]! > 0 ? v / b[i]! : 0));
}

/** One sub-layer's update of one layer, per token. */
export interface SubLayerUpdate {
  /** ‖update‖ per token: the change of the residual stream across the sub-layer. */
  norm: Float64Array;
  /** ‖update‖ / ‖stream entering the sub-layer‖ per token (0 where that stream is zero). */
  relative: Float64Array;
}

/** The updates of one layer, per token. */
export interface LayerUpdates {
  layer: number;
  /** ‖input‖ per token: the residual stream entering the layer. */
  residual: Float64Array;
  /** attention[l] − input[l]. */
  attention: SubLayerUpdate;
  /** Decoders of encoder-decoders: cross[l] − attention[l]. */
  cross?: SubLayerUpdate;
  /** output[l] − (cross[l] ?? attention[l]): the MLP's update (with its norm, in post-LN blocks). */
  mlp: SubLayerUpdate;
}

export interface UpdateNorms {
  stack: StackName;
  layers: LayerUpdates[];
}

/**
 * How much attention (and cross attention) and the MLP change each token in every layer: the
 * norm of each update of the residual stream (see Residuals in core/trace.ts), and that norm
 * relative to the stream it is added to. In post-LN blocks (BERT) an update includes what the
 * layer norm after the sub-layer does.
 */
export function updateNorms(trace: Trace, stack?: StackName): UpdateNorms {
  const { stack: s, residuals } = residualsOf(trace, stack);
  const layers = residuals.input.map((input, l): LayerUpdates => {
    const attn = residuals.attention[l]!;
    const cross = residuals.cross?.[l];
    const beforeMlp = cross ?? attn;
    const residual = rowNorms(input);
    const sub = (after: Matrix, before: Matrix, beforeNorm: Float64Array): SubLayerUpdate => {
      const norm = updateRowNorms(after, before);
      return { norm, relative: ratio(norm, beforeNorm) };
    };
    const attnNorms = rowNorms(attn);
    const out: LayerUpdates = {
      layer: l,
      residual,
      attention: sub(attn, input, residual),
      mlp: sub(residuals.output[l]!, beforeMlp, cross ? rowNorms(cross) : attnNorms),
    };
    if (cross) out.cross = sub(cross, attn, attnNorms);
    return out;
  });
  return { stack: s, layers };
}

/** The 2-D projection of one row of states. */
export interface StateProjection {
  /** 0 = the embedding output (layer 0's input), l + 1 = the output of layer l. */
  row: number;
  /** [tokens, 2] row-major: each token's coordinates on the first two principal components. */
  points: Float64Array;
  /** Share of the total variance each of the two components explains (0 where there is none). */
  explained: [number, number];
}

export interface StatePca {
  stack: StackName;
  rows: StateProjection[];
}

/**
 * Each layer's token states projected on their own first two principal components (ml-pca,
 * centred, not scaled), for the embedding output and every layer's output. A component's sign is
 * arbitrary in PCA; here it is fixed so that its largest coordinate (by absolute value) is
 * positive. With one token, or states that do not vary, the coordinates are 0.
 */
export function hiddenStatePca(trace: Trace, stack?: StackName): StatePca {
  const { stack: s, residuals } = residualsOf(trace, stack);
  const states = [residuals.input[0]!, ...residuals.output];
  return { stack: s, rows: states.map((m, row) => ({ row, ...project2d(m) })) };
}

function project2d(m: Matrix): { points: Float64Array; explained: [number, number] } {
  const [rows, cols] = m.dims;
  const points = new Float64Array(rows * 2);
  if (rows < 2) return { points, explained: [0, 0] };
  const data: number[][] = Array.from({ length: rows }, (_, r) => Array.from(m.data.subarray(r * cols, (r + 1) * cols)));
  const pca = new PCA(data, { center: true, scale: false });
  const comps = Math.min(2, pca.getExplainedVariance().length);
  const scores = pca.predict(data, { nComponents: comps }).to2DArray();
  const variance = pca.getExplainedVariance();
  const explained: [number, number] = [0, 0];
  for (let c = 0; c < comps; c++) {
    const column = scores.map((r) => r[c]!);
    let largest = 0;
    for (const v of column) if (Math.abs(v) > Math.abs(largest)) largest = v;
    const sign = largest < 0 ? -1 : 1;
    for (let r = 0; r < rows; r++) points[r * 2 + c] = sign * column[r]! + 0;
    const share = variance[c]!;
    explained[c] = Number.isFinite(share) ? share : 0;
  }
  return { points, explained };
}
