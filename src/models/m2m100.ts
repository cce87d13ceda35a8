/**
 * M2M100 / NLLB translation models as transformers' eager implementation computes them:
 * BART-style pre-LN blocks (x + f(LN(x))) with a final layer norm in each stack, no embedding
 * layer norm, token embeddings × √d_model (scale_embedding), queries × head_dim^-0.5, logits =
 * lm_head (tied to `shared`, no bias).
 *
 * Positions (M2M100SinusoidalPositionalEmbedding, not stored in checkpoints): a table of
 * max_position_embeddings + 2 rows computed in float32, [sin(p·f) | cos(p·f)] with
 * f_i = exp(−i · ln(10000) / (d/2 − 1)), the padding row zeroed; a token's row is
 * padding_idx + its 1-based count among the non-padding tokens (padding tokens get padding_idx),
 * so positions start at padding_idx + 1 (2 with the usual pad id 1).
 */
import { AttnscopeError } from '../core/errors.js';
import { int64Tensor } from '../runtime/runtime.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import type { ModelConfig } from './config.js';
import { buildSeq2Seq, seq2seqFeeds, seq2seqInfo, seq2seqSpec, type Seq2SeqSpec } from './layers.js';

/** M2M100SinusoidalPositionalEmbedding.offset */
const OFFSET = 2;

function spec(config: ModelConfig): Seq2SeqSpec {
  return seq2seqSpec(config, { preNorm: true, embeddingNorm: false, finalNorm: true, act: 'relu', maxPositions: 1024 });
}

function padId(config: ModelConfig): number {
  return config.int('pad_token_id', 1);
}

/** get_embedding(rows, dim, padding_idx), step by step in float32 as PyTorch computes it. */
export function m2m100PositionTable(rows: number, dim: number, paddingIdx: number | null): Float32Array {
  const f = Math.fround;
  const half = Math.floor(dim / 2);
  if (half < 2) throw new AttnscopeError(`d_model ${dim} is too small for M2M100's sinusoidal positions (needs ≥ 4)`);
  const step = f(-(Math.log(10000) / (half - 1)));
  const freq = Array.from({ length: half }, (_, i) => f(Math.exp(f(i * step))));
  const out = new Float32Array(rows * dim);
  for (let p = 0; p < rows; p++) {
    if (p === paddingIdx) continue;
    for (let i = 0; i < half; i++) {
      const angle = f(p * freq[i]!);
      out[p * dim + i] = Math.sin(angle);
      out[p * dim + half + i] = Math.cos(angle);
    }
  }
  return out;
}

function describe(config: ModelConfig): ArchitectureInfo {
  return seq2seqInfo(spec(config));
}

async function build(ctx: BuildContext): Promise<void> {
  const s = spec(ctx.config);
  const rows = s.maxPositions + OFFSET;
  const table = m2m100PositionTable(rows, s.dModel, padId(ctx.config));
  await buildSeq2Seq(ctx, s, async (stack) => ctx.g.initializer(`${stack}.sinusoidal_positions`, table, [rows, s.dModel]));
}

function feeds(config: ModelConfig, inputs: ModelInputs) {
  const pad = padId(config);
  // create_position_ids_from_input_ids: cumsum of the non-padding mask (+ past), padding_idx added.
  return seq2seqFeeds(spec(config), inputs, (ids, past) => {
    let count = 0;
    return int64Tensor(ids.map((id) => (id === pad ? pad : (count += 1, count + past + pad))));
  });
}

export const m2m100Family: Architecture = {
  modelTypes: ['m2m_100'],
  describe,
  build,
  feeds,
};
