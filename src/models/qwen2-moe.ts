/**
 * Qwen2-MoE: a Qwen2 decoder (GQA, RoPE, RMSNorm, q/k/v biases) whose MLP is, in the layers
 * transformers makes sparse, a mixture of experts plus a shared expert, as Qwen2MoeSparseMoeBlock
 * computes it:
 *
 *   p = softmax(gate(h)) over num_experts; keep the top num_experts_per_tok of p (divided by their
 *   sum when norm_topk_prob); out = Σ_e w_e · expert_e(h) + sigmoid(shared_expert_gate(h)) · shared_expert(h)
 *   with expert(x) = down(act(gate(x)) · up(x)) and w_e = 0 for experts not routed to.
 *
 * Layers listed in mlp_only_layers, or not on the decoder_sparse_step grid, have a plain MLP of
 * intermediate_size. The routing is inside the graph: every expert runs on every token (dense)
 * and the outputs are added in expert order with the top-k weights (zeros elsewhere), which is
 * what index_add_ in expert order gives in float32 (adding an exact zero changes nothing).
 *
 * Graph inputs: `input_ids`, `rope_cos`/`rope_sin` [1, 1, seq, headDim], `attention_bias`
 * [1, 1, seq, keys] (plus `attention_bias_sliding` when sliding-window and full layers are mixed).
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import type { ModelConfig } from './config.js';
import {
  buildMoeLlamaStyleModel, decoderInfo, type DecoderShape, decoderShape, gatedMlp, projection, rotaryDecoderFeeds,
} from './decoder-blocks.js';
import { linearLayer, mixtureOfExperts } from './layers.js';
import { ropeFromConfig, type RopeSpec } from './rope.js';

interface Qwen2MoeSpec extends DecoderShape {
  eps: number;
  act: string;
  experts: number;
  topK: number;
  normTopK: boolean;
  /** Per layer: a sparse MoE block (true) or a plain MLP of intermediate_size (false). */
  sparse: boolean[];
  tied: boolean;
  maxPositions: number;
  /** Sliding window of each layer (query i sees keys j with i − w < j ≤ i), null for full causal attention. */
  windows: (number | null)[];
  rope: RopeSpec;
}

function qwen2MoeSpec(config: ModelConfig): Qwen2MoeSpec {
  const shape = decoderShape(config, { defaults: { hidden: 2048, heads: 16, layers: 24 }, headDim: {}, evenHeadDim: true });
  const { layers, headDim } = shape;
  const experts = config.int('num_experts', 60);
  const topK = config.int('num_experts_per_tok', 4);
  if (experts < 0) throw new AttnscopeError(`${config.source}: num_experts should be ≥ 0, got ${experts}`);
  if (experts > 0 && (topK < 1 || topK > experts)) {
    throw new AttnscopeError(`${config.source}: num_experts_per_tok should be in 1…${experts} (num_experts), got ${topK}`);
  }
  const step = config.int('decoder_sparse_step', 1);
  if (step < 1) throw new AttnscopeError(`${config.source}: decoder_sparse_step should be ≥ 1, got ${step}`);
  const rawOnly = config.raw.mlp_only_layers;
  if (rawOnly !== undefined && rawOnly !== null && !(Array.isArray(rawOnly) && rawOnly.every((v) => Number.isInteger(v)))) {
    throw new AttnscopeError(`${config.source}: mlp_only_layers should be a list of layer indices`);
  }
  const mlpOnly = new Set<number>(Array.isArray(rawOnly) ? (rawOnly as number[]) : []);
  // Qwen2MoeDecoderLayer: sparse unless listed in mlp_only_layers, when there are experts and (i + 1) % step == 0.
  const sparse = Array.from({ length: layers }, (_, i) => !mlpOnly.has(i) && experts > 0 && (i + 1) % step === 0);
  const maxPositions = config.int('max_position_embeddings', 32768);
  const rope = ropeFromConfig(config, headDim);
  if (rope.scaling) throw new AttnscopeError(`${config.source}: rope_scaling is not supported for qwen2_moe`);
  return {
    ...shape,
    eps: config.num('rms_norm_eps', 1e-6),
    act: config.str('hidden_act', 'silu'),
    experts,
    topK,
    normTopK: config.bool('norm_topk_prob', false),
    sparse,
    tied: config.bool('tie_word_embeddings', false),
    maxPositions,
    windows: readWindows(config, layers, maxPositions),
    rope,
  };
}

/** Per-layer sliding windows as for Qwen2: only with use_sliding_window, on layers ≥ max_window_layers. */
function readWindows(config: ModelConfig, layers: number, maxPositions: number): (number | null)[] {
  const configured = config.has('sliding_window') ? config.int('sliding_window') : null;
  const window = config.bool('use_sliding_window', false) ? configured : null;
  if (window !== null && window < 1) throw new AttnscopeError(`${config.source}: sliding_window should be ≥ 1, got ${window}`);
  const from = config.int('max_window_layers', 28);
  // A window at least as long as any input changes nothing.
  return Array.from({ length: layers }, (_, i) => (window !== null && i >= from && window < maxPositions ? window : null));
}

function describe(config: ModelConfig): ArchitectureInfo {
  const s = qwen2MoeSpec(config);
  return decoderInfo(s, {
    scale: s.headDim ** -0.5,
    windows: s.windows,
    // Routed layers only (none when num_experts is 0: the model is then dense).
    ...(s.sparse.some(Boolean)
      ? { routing: { experts: s.experts, topK: s.topK, normalized: s.normTopK, layers: s.sparse.flatMap((sparse, l) => (sparse ? [l] : [])) } }
      : {}),
  });
}

// --- graph pieces ------------------------------------------------------------------------

/** Qwen2MoeSparseMoeBlock: the routed experts plus sigmoid(shared_expert_gate(h)) · shared_expert(h). */
async function sparseMoe(ctx: BuildContext, s: Qwen2MoeSpec, h: Value, prefix: string, layer: number): Promise<Value> {
  const { g } = ctx;
  const routed = await mixtureOfExperts(ctx, h, `${prefix}.gate`, layer, s.experts, s.topK, s.normTopK, (e) => gatedMlp(ctx, h, { prefix: `${prefix}.experts.${e}`, act: s.act }));
  const shared = g.mul(g.sigmoid(await projection(ctx, h, `${prefix}.shared_expert_gate`, false)), await gatedMlp(ctx, h, { prefix: `${prefix}.shared_expert`, act: s.act }));
  return g.add(routed, shared);
}

async function build(ctx: BuildContext): Promise<void> {
  const s = qwen2MoeSpec(ctx.config);
  await buildMoeLlamaStyleModel(ctx, {
    ...s,
    parts: (at) => {
      const m = `${at.prefix}.mlp`;
      return {
        // Qwen2's q/k/v projections always have a bias (o_proj none).
        project: (y, p) => linearLayer(ctx, y, p.prefix),
        // A dense layer's MLP (Qwen2MoeMLP, down(act(gate(h)) · up(h))) activation is tapped; routed layers' experts are not.
        mlp: (h, tap) => (s.sparse[at.layer] ? sparseMoe(ctx, s, h, m, at.layer) : gatedMlp(ctx, h, { prefix: m, act: s.act }, tap)),
      };
    },
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  return rotaryDecoderFeeds(qwen2MoeSpec(config), inputs);
}

export const qwen2MoeFamily: Architecture = { modelTypes: ['qwen2_moe'], describe, build, feeds };
