/**
 * ALBERT: a BERT-like post-LN encoder whose layers share weights (num_hidden_groups groups of
 * inner_group_num layers), with factorised embeddings projected to the hidden size.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import { encoderInfo, layerNormLayer, linearLayer, segmentTypeIds } from './layers.js';
import { maskedLmHead } from './heads.js';
import type { ModelConfig } from './config.js';
import { linearQkvBlock } from './encoder-blocks.js';

function describe(config: ModelConfig): ArchitectureInfo {
  const hidden = config.int('hidden_size');
  const heads = config.int('num_attention_heads');
  const layers = config.int('num_hidden_layers') * config.int('inner_group_num', 1);
  // Layers share weights, so no missing tensor stops a huge count: bound it like num_hidden_layers.
  if (layers > 1024) throw new AttnscopeError(`${config.source}: num_hidden_layers × inner_group_num is ${layers}; allowed: at most 1024 layers`);
  return {
    ...encoderInfo(config, layers, heads, hidden, config.int('max_position_embeddings')),
    contributions: { norm: 'post', eps: config.num('layer_norm_eps', 1e-12) },
  };
}

async function albertLayer(ctx: BuildContext, x: Value, p: string, layer: number, info: ArchitectureInfo): Promise<Value> {
  const { config } = ctx;
  const a = `${p}.attention`;
  return linearQkvBlock(ctx, x, {
    layer, heads: info.numHeads, headDim: info.headDim,
    qkv: [`${a}.query`, `${a}.key`, `${a}.value`],
    attnOut: `${a}.dense`, attnNorm: `${a}.LayerNorm`,
    ffnIn: `${p}.ffn`, ffnOut: `${p}.ffn_output`, ffnNorm: `${p}.full_layer_layer_norm`,
    act: config.str('hidden_act', 'gelu_new'), eps: config.num('layer_norm_eps', 1e-12),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const base = ctx.findPrefix(['albert.', ''], 'embeddings.word_embeddings.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const positions = g.input('position_ids', 'int64', [1, 'seq']);
  const types = g.input('token_type_ids', 'int64', [1, 'seq']);
  const token = g.gather(await ctx.weight(`${base}embeddings.word_embeddings.weight`), ids);
  const position = g.gather(await ctx.weight(`${base}embeddings.position_embeddings.weight`), positions);
  const segment = g.gather(await ctx.weight(`${base}embeddings.token_type_embeddings.weight`), types);
  tapEmbeddings(ctx, 'self', { token, position, segment });
  let x = g.add(g.add(token, position), segment);
  x = await layerNormLayer(ctx, x, `${base}embeddings.LayerNorm`, config.num('layer_norm_eps', 1e-12));
  x = await linearLayer(ctx, x, `${base}encoder.embedding_hidden_mapping_in`);
  const hiddenLayers = config.int('num_hidden_layers');
  const groups = config.int('num_hidden_groups', 1);
  const inner = config.int('inner_group_num', 1);
  let layer = 0;
  for (let i = 0; i < hiddenLayers; i++) {
    const group = Math.floor(i / (hiddenLayers / groups));
    for (let j = 0; j < inner; j++) {
      x = await albertLayer(ctx, x, `${base}encoder.albert_layer_groups.${group}.albert_layers.${j}`, layer++, describe(config));
    }
  }
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  const head = (h: Value): Promise<Value> => maskedLmHead(ctx, h, {
    dense: 'predictions.dense', act: config.str('hidden_act', 'gelu_new'), norm: 'predictions.LayerNorm', eps: config.num('layer_norm_eps', 1e-12),
    decoder: ['predictions.decoder.weight', `${base}embeddings.word_embeddings.weight`], bias: ['predictions.bias', 'predictions.decoder.bias'],
  });
  if (ctx.taps.logits) g.output(await head(x), 'logits');
  await tapLogitLens(ctx, 'self', head);
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const n = inputs.inputIds.length;
  return {
    input_ids: int64Tensor(inputs.inputIds),
    position_ids: int64Tensor(Array.from({ length: n }, (_, i) => i)),
    token_type_ids: int64Tensor(segmentTypeIds(config, inputs.typeIds, n)),
  };
}

export const albertFamily: Architecture = { modelTypes: ['albert'], describe, build, feeds };
