/**
 * Graph outputs → the Trace's look inside every layer: Trace.layerStates (embedding parts, the
 * residual stream, MLP activations; see models/layer-taps.ts) and Trace.logitLens. Imports
 * nothing from Node.
 */
import type { EmbeddingParts, LayerStateMap, LayerStates, LogitLens, Matrix, Residuals, StackName } from '../core/trace.js';
import { tapName, type ArchitectureInfo, type TapKind } from '../models/architecture.js';
import { embeddingTapName, lensTapName } from '../models/layer-taps.js';
import { float16ToFloat32 } from '../core/tensor.js';
import type { RuntimeTensor } from '../runtime/runtime.js';

function toFloat32(t: RuntimeTensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') return float16ToFloat32(t.data as Uint16Array);
  throw new Error(`unexpected tap type ${t.type}`);
}

/** A [1, rows, cols] output as a Matrix. */
function matrix(t: RuntimeTensor): Matrix {
  return { dims: [t.dims[1]!, t.dims[2]!], data: toFloat32(t) };
}

/** The `kind` outputs of a stack's layers as matrices, or undefined when layer 0 has none. */
function perLayer(outputs: Readonly<Record<string, RuntimeTensor>>, kind: TapKind, stack: StackName, layers: number): Matrix[] | undefined {
  if (!outputs[tapName(kind, stack, 0)]) return undefined;
  return Array.from({ length: layers }, (_, l) => {
    const t = outputs[tapName(kind, stack, l)];
    if (!t) throw new Error(`graph output ${tapName(kind, stack, l)} missing`);
    return matrix(t);
  });
}

/** Stacks whose states are recorded: the residual streams (cross attention is a sub-layer of the decoder's). */
const STATE_STACKS: readonly StackName[] = ['self', 'encoder', 'decoder'];

/** Every stack's embedding parts, residual stream and MLP activations that the graph tapped, or undefined when none. */
export function collectLayerStates(outputs: Readonly<Record<string, RuntimeTensor>>, info: ArchitectureInfo): LayerStateMap | undefined {
  const map: LayerStateMap = {};
  for (const stack of STATE_STACKS) {
    const layers = info.stacks[stack];
    if (layers === undefined) continue;
    const states: LayerStates = {};
    const token = outputs[embeddingTapName('token', stack)];
    if (token) {
      const parts: EmbeddingParts = { token: matrix(token) };
      const position = outputs[embeddingTapName('position', stack)];
      if (position) parts.position = matrix(position);
      const segment = outputs[embeddingTapName('segment', stack)];
      if (segment) parts.segment = matrix(segment);
      states.embeddings = parts;
    }
    const input = perLayer(outputs, 'resid_input', stack, layers);
    if (input) {
      const residuals: Residuals = {
        input,
        attention: perLayer(outputs, 'resid_attention', stack, layers) ?? [],
        output: perLayer(outputs, 'resid_output', stack, layers) ?? [],
      };
      const cross = perLayer(outputs, 'resid_cross', stack, layers);
      if (cross) residuals.cross = cross;
      if (residuals.attention.length !== layers || residuals.output.length !== layers) throw new Error(`graph outputs resid_attention/resid_output of the ${stack} stack missing`);
      states.residuals = residuals;
    }
    const mlp = Array.from({ length: layers }, (_, l) => {
      const t = outputs[tapName('mlp_activation', stack, l)];
      return t ? matrix(t) : null;
    });
    if (mlp.some((m) => m !== null)) states.mlpActivations = mlp;
    if (Object.keys(states).length > 0) map[stack] = states;
  }
  return Object.keys(map).length > 0 ? map : undefined;
}

/**
 * The logit lens the graph computed (`lens_ids` / `lens_probabilities` rows 0 … layers of the
 * stack), with token texts from `tokenText`; undefined when it was not tapped.
 */
export function collectLogitLens(
  outputs: Readonly<Record<string, RuntimeTensor>>, info: ArchitectureInfo, tokenText: (id: number) => string,
): LogitLens | undefined {
  for (const stack of ['self', 'decoder'] as const) {
    const layers = info.stacks[stack];
    if (layers === undefined || !outputs[lensTapName('lens_ids', stack, 0)]) continue;
    const rows = Array.from({ length: layers + 1 }, (_, row) => {
      const ids = outputs[lensTapName('lens_ids', stack, row)];
      const probs = outputs[lensTapName('lens_probabilities', stack, row)];
      if (!ids || !probs) throw new Error(`graph output ${lensTapName('lens_ids', stack, row)} missing`);
      const raw = ids.data;
      const idArray = raw instanceof BigInt64Array ? Int32Array.from(raw, Number) : Int32Array.from(raw as ArrayLike<number>);
      return { ids: idArray, probabilities: toFloat32(probs), tokens: Array.from(idArray, tokenText), k: ids.dims[2]! };
    });
    return { stack, topK: rows[0]!.k, layers: rows.map(({ ids, probabilities, tokens }) => ({ ids, probabilities, tokens })) };
  }
  return undefined;
}
