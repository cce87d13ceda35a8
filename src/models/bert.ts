/**
 * BERT family encoders: bert, roberta (and xlm-roberta, camembert), electra.
 * Post-LayerNorm blocks; absolute learned positions (RoBERTa's start at padding_idx + 1);
 * ELECTRA projects its smaller embeddings to the hidden size first.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { maskedLmHead } from './heads.js';
import type { ModelConfig } from './config.js';
import { bertFeedForward, idFeeds, linearQkvBlock } from './encoder-blocks.js';
import { encoderInfo, layerNormLayer, linearLayer, segmentTypeIds } from './layers.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';

const ROBERTA_LIKE = new Set(['roberta', 'xlm-roberta', 'camembert']);

/** Offset of the first position id: RoBERTa counts from padding_idx + 1. */
function positionOffset(config: ModelConfig): number {
  return ROBERTA_LIKE.has(config.modelType) ? config.int('pad_token_id', 1) + 1 : 0;
}

function describe(config: ModelConfig): ArchitectureInfo {
  const hidden = config.int('hidden_size');
  const heads = config.int('num_attention_heads');
  const layers = config.int('num_hidden_layers');
  const positionType = config.str('position_embedding_type', 'absolute');
  if (positionType !== 'absolute') {
    throw new AttnscopeError(`${config.source}: position_embedding_type '${positionType}' is not supported (only 'absolute')`);
  }
  return {
    ...encoderInfo(config, layers, heads, hidden, config.int('max_position_embeddings') - positionOffset(config)),
    contributions: { norm: 'post', eps: config.num('layer_norm_eps', 1e-12) },
  };
}

/** One post-LN BERT block: self-attention, add & norm, feed-forward, add & norm. */
async function bertLayer(ctx: BuildContext, x: Value, p: string, layer: number, info: ArchitectureInfo): Promise<Value> {
  const a = `${p}.attention`;
  return linearQkvBlock(ctx, x, {
    layer, heads: info.numHeads, headDim: info.headDim,
    qkv: [`${a}.self.query`, `${a}.self.key`, `${a}.self.value`],
    attnOut: `${a}.output.dense`, attnNorm: `${a}.output.LayerNorm`,
    ...bertFeedForward(ctx.config, p),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const info = describe(config);
  const base = ctx.findPrefix([`${config.modelType.replace('-', '_')}.`, 'roberta.', 'bert.', 'electra.', ''], 'embeddings.word_embeddings.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const positions = g.input('position_ids', 'int64', [1, 'seq']);
  const token = g.gather(await ctx.weight(`${base}embeddings.word_embeddings.weight`), ids);
  const position = g.gather(await ctx.weight(`${base}embeddings.position_embeddings.weight`), positions);
  let x = g.add(token, position);
  const typeTable = await ctx.optionalWeight(`${base}embeddings.token_type_embeddings.weight`);
  const segment = typeTable ? g.gather(typeTable, g.input('token_type_ids', 'int64', [1, 'seq'])) : null;
  if (segment) x = g.add(x, segment);
  tapEmbeddings(ctx, 'self', { token, position, segment });
  x = await layerNormLayer(ctx, x, `${base}embeddings.LayerNorm`, config.num('layer_norm_eps', 1e-12));
  if (ctx.hasWeight(`${base}embeddings_project.weight`)) x = await linearLayer(ctx, x, `${base}embeddings_project`);
  for (let l = 0; l < info.numLayers; l++) {
    x = await bertLayer(ctx, x, `${base}encoder.layer.${l}`, l, info);
  }
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  if (ctx.taps.logits) g.output(await predictionHead(ctx, x, base), 'logits');
  // ELECTRA's discriminator scores tokens rather than predicting them: nothing to read a lens through.
  if (!ctx.hasWeight('discriminator_predictions.dense.weight')) await tapLogitLens(ctx, 'self', (h) => predictionHead(ctx, h, base));
}

/**
 * The checkpoint's prediction head: BERT's and RoBERTa's masked-LM heads, ELECTRA's generator
 * (masked LM) or discriminator (one replaced-token score per position).
 */
async function predictionHead(ctx: BuildContext, x: Value, base: string): Promise<Value> {
  const { g, config } = ctx;
  const eps = config.num('layer_norm_eps', 1e-12);
  const embeddings = `${base}embeddings.word_embeddings.weight`;
  if (ctx.hasWeight('discriminator_predictions.dense.weight')) {
    const h = activation(g, config.str('hidden_act', 'gelu'), await linearLayer(ctx, x, 'discriminator_predictions.dense'));
    return g.squeeze(await linearLayer(ctx, h, 'discriminator_predictions.dense_prediction'), [-1]);
  }
  if (ctx.hasWeight('generator_predictions.dense.weight')) {
    return maskedLmHead(ctx, x, {
      dense: 'generator_predictions.dense', act: 'gelu', norm: 'generator_predictions.LayerNorm', eps,
      decoder: ['generator_lm_head.weight', embeddings], bias: ['generator_lm_head.bias'],
    });
  }
  if (ctx.hasWeight('lm_head.dense.weight')) {
    return maskedLmHead(ctx, x, {
      dense: 'lm_head.dense', act: 'gelu', norm: 'lm_head.layer_norm', eps,
      decoder: ['lm_head.decoder.weight', embeddings], bias: ['lm_head.bias', 'lm_head.decoder.bias'],
    });
  }
  return maskedLmHead(ctx, x, {
    dense: 'cls.predictions.transform.dense', act: config.str('hidden_act', 'gelu'), norm: 'cls.predictions.transform.LayerNorm', eps,
    decoder: ['cls.predictions.decoder.weight', embeddings], bias: ['cls.predictions.bias', 'cls.predictions.decoder.bias'],
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  return {
    ...idFeeds(inputs.inputIds, positionOffset(config)),
    token_type_ids: int64Tensor(segmentTypeIds(config, inputs.typeIds, inputs.inputIds.length)),
  };
}

export const bertFamily: Architecture = {
  modelTypes: ['bert', 'roberta', 'xlm-roberta', 'camembert', 'electra'],
  describe,
  build,
  feeds,
};
