/**
 * BART encoder-decoders as transformers' eager implementations compute them: bart (post-LN
 * blocks) and mbart (pre-LN blocks with a final layer norm in each stack).
 *
 *   encoder: x = LN_emb(shared[ids] · embed_scale + pos[i + 2]); per layer (post-LN):
 *            x = LN(x + out(attn(x))); x = LN(x + fc2(act(fc1(x))))
 *   decoder: y = LN_emb(shared[decoder_ids] · embed_scale + pos[i + 2]); per layer:
 *            y = LN(y + out(self-attn(y) with causal mask)); y = LN(y + out(cross-attn(q = y, k/v = encoder)));
 *            y = LN(y + fc2(act(fc1(y))))
 *
 * Learned positions are offset by 2 (`embed_positions` row = position + 2). embed_scale is
 * √d_model with `scale_embedding`, else 1. The queries are multiplied by head_dim^-0.5 right after
 * q_proj, before the product (the tapped queries are the unscaled ones).
 *
 * Graph inputs: `input_ids` [1, enc], `position_ids` [1, enc], `decoder_input_ids` [1, dec],
 * `decoder_position_ids` [1, dec] and `decoder_attention_bias` [1, 1, dec, dec].
 *
 * With `taps.cache` the graph is one decoder step of incremental decoding, without the encoder:
 * `decoder_input_ids` [1, n] are the new tokens at positions past…past+n−1 (position ids
 * past+i+2), `encoder_hidden_states` [1, enc, d_model] the encoder's output (cross-attention
 * keys/values are projected from it at every step), `decoder_attention_bias` [1, 1, n, past+n],
 * plus the self-attention cache inputs.
 */
import { AttnscopeError } from '../core/errors.js';
import { int64Tensor } from '../runtime/runtime.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import type { ModelConfig } from './config.js';
import { buildSeq2Seq, seq2seqFeeds, seq2seqInfo, seq2seqSpec, type Seq2SeqSpec } from './layers.js';

const MODEL_TYPES = ['bart', 'mbart'] as const;

/** Learned position embeddings are offset by 2 (BartLearnedPositionalEmbedding). */
const POSITION_OFFSET = 2;

/** bart: post-LN blocks; mbart: pre-LN blocks and a final layer norm in each stack; both: layernorm_embedding. */
function spec(config: ModelConfig): Seq2SeqSpec {
  const modelType = config.modelType;
  if (!(MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new AttnscopeError(`${config.source}: model_type '${modelType}' is not a BART-family model`);
  }
  const mbart = modelType === 'mbart';
  return seq2seqSpec(config, { preNorm: mbart, embeddingNorm: true, finalNorm: mbart, act: 'gelu', maxPositions: 1024 });
}

function describe(config: ModelConfig): ArchitectureInfo {
  return seq2seqInfo(spec(config));
}

async function build(ctx: BuildContext): Promise<void> {
  await buildSeq2Seq(ctx, spec(ctx.config), (_stack, prefix) => ctx.weight(`${prefix}.embed_positions.weight`));
}

function feeds(config: ModelConfig, inputs: ModelInputs) {
  return seq2seqFeeds(spec(config), inputs, (ids, past) => int64Tensor(Array.from({ length: ids.length }, (_, i) => past + i + POSITION_OFFSET)));
}

export const bartFamily: Architecture = {
  modelTypes: MODEL_TYPES,
  describe,
  build,
  feeds,
};
