/**
 * Trace.scores from an architecture's scoring and its graph outputs: the scale per layer, the
 * masks (causal, sliding windows) and the additive bias the model put on q·k, recorded next to
 * the queries and keys (only stacks whose queries were tapped get score terms).
 *
 * Isomorphic: imports nothing from Node.
 */
import { compactScoreTerms } from '../core/position-bias.js';
import type { LayerStack, PositionBias, ScoreMap, ScoreTerms, StackName } from '../core/trace.js';
import { tapName, type ArchitectureInfo, type StackScoring } from '../models/architecture.js';
import { relativeBiasOutput } from '../models/attention.js';
import type { RuntimeTensor } from '../runtime/runtime.js';

/** How many `score_bias` outputs a stack's graph has per run: 0, 1 (shared: layer 0's) or one per layer. */
export function biasOutputs(scoring: StackScoring, layers: number): number {
  return scoring.bias === 'none' ? 0 : scoring.bias === 'shared' ? 1 : layers;
}

function float32(t: RuntimeTensor | undefined, name: string): Float32Array {
  if (!t) throw new Error(`graph output ${name} missing`);
  if (t.type !== 'float32') throw new Error(`graph output ${name} is ${t.type}; score terms are tapped as float32`);
  return t.data as Float32Array;
}

/**
 * The score terms of one stack from its scoring and the bias of its tapped layers (`bias.layers`:
 * one array per `score_bias` output, see `biasOutputs`; a shared bias is spread over every layer,
 * the same array each time; [heads, 1, keys] outputs are broadcast over the queries). The bias is
 * kept in its smallest exact form (core/position-bias.ts compactScoreTerms): ALiBi as one row over
 * the keys, relative position buckets as one vector over j − i, so a long input's terms hold
 * O(heads · n) per distinct layer, not O(heads · n²). A bias already compact (`positionBias`, from
 * generation on demand) is kept as it is.
 */
export function stackScoreTerms(scoring: StackScoring, layers: number, bias?: LayerStack | PositionBias): ScoreTerms {
  const terms: ScoreTerms = { scale: [...scoring.scale], causal: scoring.causal, window: [...scoring.window] };
  if (scoring.bias !== 'none') {
    if (!bias) throw new Error(`score bias missing for a stack whose scoring has a ${scoring.bias} bias`);
    const expected = biasOutputs(scoring, layers);
    if (bias.layers.length !== expected) throw new Error(`score bias has ${bias.layers.length} layers, expected ${expected}`);
    const spread = (b: readonly Float32Array[]): Float32Array[] => (scoring.bias === 'shared' ? new Array<Float32Array>(layers).fill(b[0]!) : [...b]);
    if ('kind' in bias) terms.positionBias = { kind: bias.kind, dims: bias.dims, layers: spread(bias.layers) };
    else terms.bias = scoring.bias === 'shared' ? { dims: bias.dims, layers: spread(bias.layers) } : shareEqualLayers(bias);
    if (scoring.biasKind !== undefined) terms.biasKind = scoring.biasKind;
  }
  return compactScoreTerms(terms);
}

/**
 * On-demand graphs (models/attention.ts positionBias) and generation on demand (generation/bias-rows.ts)
 * hand a relative bias over as `score_bias_relative.<stack>.<layer>` [1, heads, queries + keys − 1]
 * outputs instead of [1, heads, queries, keys].
 */
export { relativeBiasOutput };

/**
 * The bias with layers equal to layer 0's (bit for bit) sharing its array: a per-layer output that
 * is the same in every layer (BLOOM's and Falcon's ALiBi) is then held, and stored in trace files,
 * once instead of once per layer (which costs as much as the dense attention). DeBERTa's
 * disentangled terms differ per layer and stay as they are.
 */
function shareEqualLayers(bias: LayerStack): LayerStack {
  const first = bias.layers[0];
  if (!first || bias.layers.length < 2) return bias;
  for (let l = 1; l < bias.layers.length; l++) {
    const other = bias.layers[l]!;
    if (other === first) continue;
    if (other.length !== first.length) return bias;
    for (let i = 0; i < first.length; i++) if (!Object.is(other[i], first[i])) return bias;
  }
  return { dims: bias.dims, layers: new Array<Float32Array>(bias.layers.length).fill(first) };
}

/**
 * Trace.scores from the outputs of one (non-incremental) graph run: one entry per stack whose
 * queries were tapped (`qk`), with its `score_bias.<stack>.<layer>` outputs as the bias.
 * `only` restricts it to some stacks (e.g. the encoder of an encoder-decoder's first run).
 */
export function collectScores(info: ArchitectureInfo, outputs: Record<string, RuntimeTensor>, only?: readonly StackName[]): ScoreMap {
  const map: ScoreMap = {};
  for (const [stack, layers] of Object.entries(info.stacks) as [StackName, number][]) {
    if (only && !only.includes(stack)) continue;
    const scoring = info.scoring[stack];
    if (!scoring || !outputs[tapName('queries', stack, 0)]) continue;
    let bias: LayerStack | PositionBias | undefined;
    const n = biasOutputs(scoring, layers);
    const relative = outputs[relativeBiasOutput(stack, 0)];
    if (n > 0 && relative) {
      const arrays: Float32Array[] = [];
      for (let l = 0; l < n; l++) arrays.push(float32(outputs[relativeBiasOutput(stack, l)], relativeBiasOutput(stack, l)));
      const q = outputs[tapName('queries', stack, 0)]!.dims[2]!;
      const k = relative.dims[2]! - q + 1;
      bias = { kind: 'relative', dims: [relative.dims[1]!, q, k], layers: arrays };
    } else if (n > 0) {
      const first = outputs[tapName('score_bias', stack, 0)];
      if (!first) throw new Error(`graph output ${tapName('score_bias', stack, 0)} missing`);
      const arrays: Float32Array[] = [];
      for (let l = 0; l < n; l++) arrays.push(float32(outputs[tapName('score_bias', stack, l)], tapName('score_bias', stack, l)));
      bias = { dims: first.dims.slice(1) as [number, number, number], layers: arrays };
    }
    map[stack] = stackScoreTerms(scoring, layers, bias);
  }
  return map;
}
