/**
 * Mixtral: a Llama-like pre-norm decoder (GQA, RoPE, RMSNorm, sliding window when set) whose MLP
 * is a sparse mixture of experts, as transformers' MixtralSparseMoeBlock computes it:
 *
 *   p = softmax(gate(h)) over num_local_experts; keep the top num_experts_per_tok of p, divide them
 *   by their sum; out = Σ_e w_e · w2(act(w1(h)) · w3(h)) with w_e = 0 for experts not routed to.
 *
 * The routing is inside the graph: every expert runs on every token (dense) and the outputs are
 * added in expert order with the renormalised top-k weights (zeros elsewhere), which is what
 * index_add_ in expert order gives in float32 (adding an exact zero changes nothing).
 *
 * Graph inputs: `input_ids`, `rope_cos`/`rope_sin` [1, 1, seq, headDim], `attention_bias` [1, 1, seq, keys].
 */
import { AttnscopeError } from '../core/errors.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import type { ModelConfig } from './config.js';
import {
  buildMoeLlamaStyleModel, decoderInfo, type DecoderShape, decoderShape, gatedMlp, projection, rotaryDecoderFeeds,
} from './decoder-blocks.js';
import { mixtureOfExperts } from './layers.js';
import { ropeFromConfig, type RopeSpec } from './rope.js';

interface MixtralSpec extends DecoderShape {
  eps: number;
  act: string;
  experts: number;
  topK: number;
  tied: boolean;
  maxPositions: number;
  /** The sliding window of every layer (null: full causal). */
  windows: (number | null)[];
  rope: RopeSpec;
}

function mixtralSpec(config: ModelConfig): MixtralSpec {
  const shape = decoderShape(config, { defaults: { hidden: 4096, heads: 32, layers: 32, kvHeads: 8 }, headDim: {}, evenHeadDim: true });
  const experts = config.int('num_local_experts', 8);
  const topK = config.int('num_experts_per_tok', 2);
  if (experts < 1) throw new AttnscopeError(`${config.source}: num_local_experts should be ≥ 1, got ${experts}`);
  if (topK < 1 || topK > experts) {
    throw new AttnscopeError(`${config.source}: num_experts_per_tok should be in 1…${experts} (num_local_experts), got ${topK}`);
  }
  const maxPositions = config.int('max_position_embeddings', 4096 * 32);
  const configured = config.has('sliding_window') ? config.int('sliding_window') : null;
  if (configured !== null && configured < 1) throw new AttnscopeError(`${config.source}: sliding_window should be ≥ 1, got ${configured}`);
  const rope = ropeFromConfig(config, shape.headDim);
  if (rope.scaling) throw new AttnscopeError(`${config.source}: rope_scaling is not supported for mixtral`);
  return {
    ...shape,
    eps: config.num('rms_norm_eps', 1e-5),
    act: config.str('hidden_act', 'silu'),
    experts,
    topK,
    tied: config.bool('tie_word_embeddings', false),
    maxPositions,
    // MixtralModel builds a sliding-window causal mask for every layer when sliding_window is set;
    // a window at least as long as any input changes nothing.
    windows: new Array<number | null>(shape.layers).fill(configured !== null && configured < maxPositions ? configured : null),
    rope,
  };
}

function describe(config: ModelConfig): ArchitectureInfo {
  const s = mixtralSpec(config);
  return decoderInfo(s, {
    scale: s.headDim ** -0.5,
    windows: s.windows,
    // Every layer is routed; the top-k weights are always renormalised.
    routing: { experts: s.experts, topK: s.topK, normalized: true, layers: Array.from({ length: s.layers }, (_, l) => l) },
  });
}

// --- graph pieces ------------------------------------------------------------------------

/** The experts' gated MLP w2(act(w1(x)) · w3(x)). */
const EXPERT = ['w1', 'w3', 'w2'] as const;

async function build(ctx: BuildContext): Promise<void> {
  const s = mixtralSpec(ctx.config);
  await buildMoeLlamaStyleModel(ctx, {
    ...s,
    parts: (at) => {
      const moe = `${at.prefix}.block_sparse_moe`;
      return {
        project: (y, p) => projection(ctx, y, p.prefix, false),
        // Routed experts: no single MLP activation to tap.
        mlp: (h) => mixtureOfExperts(ctx, h, `${moe}.gate`, at.layer, s.experts, s.topK, true,
          (e) => gatedMlp(ctx, h, { prefix: `${moe}.experts.${e}`, act: s.act, names: EXPERT })),
      };
    },
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  return rotaryDecoderFeeds(mixtralSpec(config), inputs);
}

export const mixtralFamily: Architecture = { modelTypes: ['mixtral'], describe, build, feeds };
