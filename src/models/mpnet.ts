/**
 * MPNet encoders (sentence-transformers' all-mpnet-base-v2 and friends) as transformers 4.40's
 * MPNetModel / MPNetForMaskedLM compute them:
 *
 *   x = LayerNorm(word[ids] + position[padding_idx + 1 + i])        (no token types)
 *   bias = relative_attention_bias[bucket(key − query)]  [heads, q, k], computed once
 *   per layer: x = LayerNorm(x + o(softmax(q·kᵀ / √d + bias) · v)); x = LayerNorm(x + ff(x))
 *   masked-LM head: decoder(LayerNorm(gelu(dense(x)))) + bias, decoder tied to the embeddings
 *
 * The relative position bias is the T5 bidirectional bucketing (max_distance 128) of one table
 * owned by the encoder and added to the scaled scores of every layer. HF's compute_position_bias
 * always buckets with 32 buckets whatever relative_attention_num_buckets says, and so do we.
 *
 * Graph inputs: `input_ids` [1, seq], `position_ids` [1, seq] and `position_buckets` int64
 * [seq, seq] (computed in JS with PyTorch's float32 arithmetic).
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { tapName, type Architecture, type ArchitectureInfo, type BuildContext, type ModelInputs } from './architecture.js';
import { tap } from './attention.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import type { ModelConfig } from './config.js';
import { bertFeedForward, idFeeds, linearQkvBlock } from './encoder-blocks.js';
import { maskedLmHead } from './heads.js';
import { encoderInfo, layerNormLayer } from './layers.js';
import { stackScoring } from './scoring.js';

/** HF 4.40 MPNetEncoder.compute_position_bias defaults (its arguments are never passed). */
const NUM_BUCKETS = 32;
const MAX_DISTANCE = 128;

function positionOffset(config: ModelConfig): number {
  return config.int('pad_token_id', 1) + 1;
}

function describe(config: ModelConfig): ArchitectureInfo {
  const hidden = config.int('hidden_size');
  const heads = config.int('num_attention_heads');
  const layers = config.int('num_hidden_layers');
  const tableRows = config.int('relative_attention_num_buckets', 32);
  if (tableRows < NUM_BUCKETS) {
    throw new AttnscopeError(`${config.source}: relative_attention_num_buckets should be ≥ ${NUM_BUCKETS} (transformers always buckets MPNet's positions into ${NUM_BUCKETS}), got ${tableRows}`);
  }
  const info = encoderInfo(config, layers, heads, hidden, config.int('max_position_embeddings') - positionOffset(config));
  // q·k / √d plus the encoder's one relative position bias, the same on every layer.
  info.scoring = {
    self: stackScoring(layers, { scale: 1 / Math.sqrt(info.headDim), causal: false, bias: 'shared', biasKind: 'relative position bias' }),
  };
  info.contributions = { norm: 'post', eps: config.num('layer_norm_eps', 1e-12) };
  return info;
}

const f32 = Math.fround;

/**
 * MPNet's relative_position_bucket for one relative position (key − query), bidirectional, with
 * PyTorch's float32 arithmetic for the logarithmic buckets (a bucket off by one changes the bias).
 */
function relativePositionBucket(relative: number): number {
  const buckets = NUM_BUCKETS / 2;
  const bucket = relative > 0 ? buckets : 0;
  const n = Math.abs(relative);
  const maxExact = buckets / 2;
  if (n < maxExact) return bucket + n;
  const logRatio = f32(Math.log(f32(f32(n) / f32(maxExact))));
  const scaled = f32(f32(logRatio / f32(Math.log(MAX_DISTANCE / maxExact))) * f32(buckets - maxExact));
  return bucket + Math.min(maxExact + Math.trunc(scaled), buckets - 1);
}

/** Bucket indices [n, n] (row: query, column: key) as an int64 tensor. */
function positionBuckets(n: number): RuntimeTensor {
  const data = new BigInt64Array(n * n);
  const byDistance = new Map<number, bigint>();
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let b = byDistance.get(j - i);
      if (b === undefined) {
        b = BigInt(relativePositionBucket(j - i));
        byDistance.set(j - i, b);
      }
      data[i * n + j] = b;
    }
  }
  return { type: 'int64', dims: [n, n], data };
}

/** One post-LN MPNet block: self-attention (+ position bias), add & norm, feed-forward, add & norm. */
async function mpnetLayer(ctx: BuildContext, x: Value, p: string, layer: number, info: ArchitectureInfo, bias: Value): Promise<Value> {
  const a = `${p}.attention`;
  return linearQkvBlock(ctx, x, {
    layer, heads: info.numHeads, headDim: info.headDim,
    qkv: [`${a}.attn.q`, `${a}.attn.k`, `${a}.attn.v`],
    bias,
    attnOut: `${a}.attn.o`, attnNorm: `${a}.LayerNorm`,
    ...bertFeedForward(ctx.config, p),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const info = describe(config);
  const eps = config.num('layer_norm_eps', 1e-12);
  const base = ctx.findPrefix(['mpnet.', ''], 'embeddings.word_embeddings.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const positions = g.input('position_ids', 'int64', [1, 'seq']);
  const buckets = g.input('position_buckets', 'int64', ['seq', 'seq']);
  const words = await ctx.weight(`${base}embeddings.word_embeddings.weight`);
  const token = g.gather(words, ids);
  const position = g.gather(await ctx.weight(`${base}embeddings.position_embeddings.weight`), positions);
  tapEmbeddings(ctx, 'self', { token, position });
  let x = g.add(token, position);
  x = await layerNormLayer(ctx, x, `${base}embeddings.LayerNorm`, eps);
  // [seq, seq, heads] → [1, heads, seq, seq], added to the scaled scores of every layer.
  const table = await ctx.weight(`${base}encoder.relative_attention_bias.weight`);
  const bias = g.unsqueeze(g.transpose(g.gather(table, buckets), [2, 0, 1]), [0]);
  tap(ctx, ctx.taps.qk, bias, tapName('score_bias', 'self', 0));
  for (let l = 0; l < info.numLayers; l++) {
    x = await mpnetLayer(ctx, x, `${base}encoder.layer.${l}`, l, info, bias);
  }
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  const head = (h: Value): Promise<Value> => maskedLmHead(ctx, h, {
    dense: 'lm_head.dense', act: 'gelu', norm: 'lm_head.layer_norm', eps,
    decoder: ['lm_head.decoder.weight', `${base}embeddings.word_embeddings.weight`], bias: ['lm_head.bias', 'lm_head.decoder.bias'],
  });
  if (ctx.taps.logits) g.output(await head(x), 'logits');
  await tapLogitLens(ctx, 'self', head);
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  return { ...idFeeds(inputs.inputIds, positionOffset(config)), position_buckets: positionBuckets(inputs.inputIds.length) };
}

export const mpnetFamily: Architecture = {
  modelTypes: ['mpnet'],
  describe,
  build,
  feeds,
};
