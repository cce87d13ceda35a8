/**
 * Pegasus encoder-decoders as transformers' eager implementation computes them: BART-style
 * pre-LN blocks (x + f(LN(x))) with a final layer norm in each stack, no embedding layer norm,
 * token embeddings × √d_model (scale_embedding) plus sinusoidal positions from 0
 * (PegasusSinusoidalPositionalEmbedding: sin of the even angles in the first half of the
 * columns, cos of the odd ones in the second half), queries × head_dim^-0.5, logits =
 * lm_head + final_logits_bias. The position table is computed here (Hub checkpoints need not
 * store it).
 */
import { int64Tensor } from '../runtime/runtime.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import type { ModelConfig } from './config.js';
import { buildSeq2Seq, seq2seqFeeds, seq2seqInfo, seq2seqSpec, sinusoidalPositionTable, type Seq2SeqSpec } from './layers.js';

function spec(config: ModelConfig): Seq2SeqSpec {
  return seq2seqSpec(config, { preNorm: true, embeddingNorm: false, finalNorm: true, act: 'gelu', maxPositions: 1024 });
}

function describe(config: ModelConfig): ArchitectureInfo {
  return seq2seqInfo(spec(config));
}

async function build(ctx: BuildContext): Promise<void> {
  const s = spec(ctx.config);
  await buildSeq2Seq(ctx, s, async (stack) =>
    ctx.g.initializer(`${stack}.sinusoidal_positions`, sinusoidalPositionTable(s.maxPositions, s.dModel), [s.maxPositions, s.dModel]));
}

function feeds(config: ModelConfig, inputs: ModelInputs) {
  return seq2seqFeeds(spec(config), inputs, (ids, past) => int64Tensor(Array.from({ length: ids.length }, (_, i) => past + i)));
}

export const pegasusFamily: Architecture = {
  modelTypes: ['pegasus'],
  describe,
  build,
  feeds,
};
