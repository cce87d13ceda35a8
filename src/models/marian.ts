/**
 * Marian translation models (MarianMTModel, the Helsinki-NLP opus-mt checkpoints) as transformers'
 * eager implementation computes them: BART's post-LN blocks (LN(x + f(x))) without an embedding
 * layer norm or final layer norms, token embeddings × √d_model (scale_embedding) plus sinusoidal
 * positions from 0 (MarianSinusoidalPositionalEmbedding: float64 angles rounded to float32, sin in
 * the first half of the columns, cos in the second), queries × head_dim^-0.5 right after q_proj,
 * logits = lm_head + final_logits_bias. The decoder starts from decoder_start_token_id (the pad
 * token). The position table is computed here: Hub checkpoints need not store it.
 */
import { int64Tensor } from '../runtime/runtime.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import type { ModelConfig } from './config.js';
import { buildSeq2Seq, seq2seqFeeds, seq2seqInfo, seq2seqSpec, sinusoidalPositionTable, type Seq2SeqSpec } from './layers.js';

function spec(config: ModelConfig): Seq2SeqSpec {
  return { ...seq2seqSpec(config, { preNorm: false, embeddingNorm: false, finalNorm: false, act: 'gelu', maxPositions: 1024 }), sequentialDots: true };
}

function describe(config: ModelConfig): ArchitectureInfo {
  return seq2seqInfo(spec(config));
}

async function build(ctx: BuildContext): Promise<void> {
  const s = spec(ctx.config);
  const table = sinusoidalPositionTable(s.maxPositions, s.dModel);
  await buildSeq2Seq(ctx, s, async (stack) => ctx.g.initializer(`${stack}.sinusoidal_positions`, table, [s.maxPositions, s.dModel]));
}

function feeds(config: ModelConfig, inputs: ModelInputs) {
  return seq2seqFeeds(spec(config), inputs, (ids, past) => int64Tensor(Array.from({ length: ids.length }, (_, i) => past + i)));
}

export const marianFamily: Architecture = {
  modelTypes: ['marian'],
  describe,
  build,
  feeds,
};
