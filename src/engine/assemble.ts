/**
 * Graph outputs → Trace: the per-layer tap outputs (`tapName(kind, stack, layer)`, each
 * [1, d0, rows, cols]) become the Trace's layer stacks, and the hidden states and score terms
 * join them. Imports nothing from Node.
 */
import { float16ToFloat32 } from '../core/tensor.js';
import type { LayerStack, ModelInfo, Routing, StackMap, StackName, Token, Trace } from '../core/trace.js';
import { tapName, type ArchitectureInfo, type TapKind } from '../models/architecture.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { collectContributions } from './contribution-taps.js';
import { collectLayerStates } from './layer-states.js';
import { collectScores } from './scores.js';

/** A float tap as float32 (float16 outputs converted). */
export function toFloat32(t: RuntimeTensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') return float16ToFloat32(t.data as Uint16Array);
  throw new Error(`unexpected tap type ${t.type}`);
}

/** One stack's `kind` outputs for layers 0 … layers−1, or undefined when the graph has none for that stack. */
export function tapStack(outputs: Readonly<Record<string, RuntimeTensor>>, kind: TapKind, stack: StackName, layers: number): LayerStack | undefined {
  const first = outputs[tapName(kind, stack, 0)];
  if (!first) return undefined;
  const arrays: Float32Array[] = [];
  for (let l = 0; l < layers; l++) {
    const t = outputs[tapName(kind, stack, l)];
    if (!t) throw new Error(`graph output ${tapName(kind, stack, l)} missing`);
    arrays.push(toFloat32(t));
  }
  return { dims: first.dims.slice(1) as [number, number, number], layers: arrays };
}

/** Every stack of the architecture that has `kind` outputs. */
export function tapStacks(outputs: Readonly<Record<string, RuntimeTensor>>, kind: TapKind, info: ArchitectureInfo): StackMap {
  const map: StackMap = {};
  for (const [stack, layers] of Object.entries(info.stacks) as [StackName, number][]) {
    const s = tapStack(outputs, kind, stack, layers);
    if (s) map[stack] = s;
  }
  return map;
}

/**
 * The Trace of one run's outputs: attention of every stack tapped, queries and keys (with their
 * score terms) when tapped, and the final hidden states when present.
 */
export function assembleTrace(model: ModelInfo, info: ArchitectureInfo, tokens: Token[], outputs: Readonly<Record<string, RuntimeTensor>>): Trace {
  const trace: Trace = { model: { ...model }, tokens, attention: tapStacks(outputs, 'attention', info) };
  const queries = tapStacks(outputs, 'queries', info);
  if (Object.keys(queries).length > 0) {
    trace.queries = queries;
    trace.keys = tapStacks(outputs, 'keys', info);
    const scores = collectScores(info, outputs as Record<string, RuntimeTensor>);
    if (Object.keys(scores).length > 0) trace.scores = scores;
  }
  const hidden = outputs.last_hidden_state;
  if (hidden) trace.lastHiddenState = { dims: [hidden.dims[1]!, hidden.dims[2]!], data: toFloat32(hidden) };
  const encoderHidden = outputs.encoder_last_hidden_state;
  if (encoderHidden) trace.encoderLastHiddenState = { dims: [encoderHidden.dims[1]!, encoderHidden.dims[2]!], data: toFloat32(encoderHidden) };
  const contributions = collectContributions(outputs, info);
  if (contributions) trace.contributions = contributions;
  const routing = routingOf(outputs, info);
  if (routing) trace.routing = routing;
  const values = tapStacks(outputs, 'values', info);
  if (Object.keys(values).length > 0) trace.values = values;
  const layerStates = collectLayerStates(outputs, info);
  if (layerStates) trace.layerStates = layerStates;
  return trace;
}

/** The routing of every routed layer (`router_*.self.<layer>` outputs), or undefined when not tapped. */
function routingOf(outputs: Readonly<Record<string, RuntimeTensor>>, info: ArchitectureInfo): Routing | undefined {
  const r = info.routing;
  if (!r || r.layers.length === 0 || !outputs[tapName('router_probabilities', 'self', r.layers[0]!)]) return undefined;
  const get = (kind: TapKind, layer: number): RuntimeTensor => {
    const t = outputs[tapName(kind, 'self', layer)];
    if (!t) throw new Error(`graph output ${tapName(kind, 'self', layer)} missing`);
    return t;
  };
  return {
    experts: r.experts,
    topK: r.topK,
    normalized: r.normalized,
    layers: r.layers.map((layer) => {
      const probabilities = get('router_probabilities', layer);
      const selected = get('router_selected', layer).data;
      return {
        layer,
        probabilities: { dims: [probabilities.dims[1]!, probabilities.dims[2]!], data: toFloat32(probabilities) },
        selected: selected instanceof BigInt64Array ? Int32Array.from(selected, Number) : Int32Array.from(selected as ArrayLike<number>),
        weights: toFloat32(get('router_weights', layer)),
      };
    }),
  };
}
