/**
 * Graph outputs → Trace.contributions: the `contributions` taps of each stack (see
 * ContributionTaps in core/trace.ts and TapRequest.contributions). Imports nothing from Node.
 */
import { float16ToFloat32 } from '../core/tensor.js';
import type { ContributionMap, ContributionTaps, LayerStack, Matrix, StackName } from '../core/trace.js';
import { tapName, type ArchitectureInfo } from '../models/architecture.js';
import type { RuntimeTensor } from '../runtime/runtime.js';

function toFloat32(t: RuntimeTensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') return float16ToFloat32(t.data as Uint16Array);
  throw new Error(`unexpected tap type ${t.type}`);
}

/** The `transformed_values` outputs of a stack [1, heads, keys, hidden] as a LayerStack, or undefined when not tapped. */
function transformedStack(outputs: Readonly<Record<string, RuntimeTensor>>, stack: StackName, layers: number): LayerStack | undefined {
  const first = outputs[tapName('transformed_values', stack, 0)];
  if (!first) return undefined;
  const arrays = Array.from({ length: layers }, (_, l) => {
    const t = outputs[tapName('transformed_values', stack, l)];
    if (!t) throw new Error(`graph output ${tapName('transformed_values', stack, l)} missing`);
    return toFloat32(t);
  });
  return { dims: [first.dims[1]!, first.dims[2]!, first.dims[3]!], layers: arrays };
}

/** A [1, rows, cols] output as a Matrix. */
function matrix(t: RuntimeTensor): Matrix {
  return { dims: [t.dims[1]!, t.dims[2]!], data: toFloat32(t) };
}

/** Every stack's contributions taps, or undefined when the graph has none. */
export function collectContributions(outputs: Readonly<Record<string, RuntimeTensor>>, info: ArchitectureInfo): ContributionMap | undefined {
  const spec = info.contributions;
  if (!spec) return undefined;
  const map: ContributionMap = {};
  for (const [stack, layers] of Object.entries(info.stacks) as [StackName, number][]) {
    const transformedValues = transformedStack(outputs, stack, layers);
    if (!transformedValues) continue;
    const get = (kind: 'layer_input' | 'residual_sum', l: number): RuntimeTensor => {
      const t = outputs[tapName(kind, stack, l)];
      if (!t) throw new Error(`graph output ${tapName(kind, stack, l)} missing`);
      return t;
    };
    const hidden = transformedValues.dims[2];
    const entry: ContributionTaps = {
      norm: spec.norm,
      transformedValues,
      layerInput: Array.from({ length: layers }, (_, l) => matrix(get('layer_input', l))),
      residualSum: Array.from({ length: layers }, (_, l) => matrix(get('residual_sum', l))),
      outputBias: Array.from({ length: layers }, (_, l) => {
        const b = outputs[tapName('output_bias', stack, l)];
        return b ? toFloat32(b) : new Float32Array(hidden);
      }),
    };
    if (spec.norm === 'post') {
      entry.layerNorm = Array.from({ length: layers }, (_, l) => {
        const w = outputs[tapName('norm_weight', stack, l)];
        const b = outputs[tapName('norm_bias', stack, l)];
        if (!w || !b) throw new Error(`graph output ${tapName('norm_weight', stack, l)}/norm_bias missing`);
        return { weight: toFloat32(w), bias: toFloat32(b), eps: spec.eps ?? 1e-12 };
      });
    }
    map[stack] = entry;
  }
  return Object.keys(map).length > 0 ? map : undefined;
}
