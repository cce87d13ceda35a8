/**
 * DistilBERT: BERT-like post-LN encoder without token types; queries are divided by √headDim
 * before the product (the stored queries are the undivided ones).
 */
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import { encoderInfo, layerNormLayer } from './layers.js';
import { maskedLmHead } from './heads.js';
import type { ModelConfig } from './config.js';
import { linearQkvBlock } from './encoder-blocks.js';

const EPS = 1e-12;

function describe(config: ModelConfig): ArchitectureInfo {
  const hidden = config.int(['dim', 'hidden_size']);
  const heads = config.int(['n_heads', 'num_attention_heads']);
  const layers = config.int(['n_layers', 'num_hidden_layers']);
  return { ...encoderInfo(config, layers, heads, hidden, config.int('max_position_embeddings')), contributions: { norm: 'post', eps: EPS } };
}

async function block(ctx: BuildContext, x: Value, p: string, layer: number, info: ArchitectureInfo): Promise<Value> {
  const a = `${p}.attention`;
  return linearQkvBlock(ctx, x, {
    layer, heads: info.numHeads, headDim: info.headDim,
    qkv: [`${a}.q_lin`, `${a}.k_lin`, `${a}.v_lin`],
    // DistilBERT scales the queries, not the scores.
    scaleStyle: 'query-mul',
    attnOut: `${a}.out_lin`, attnNorm: `${p}.sa_layer_norm`,
    ffnIn: `${p}.ffn.lin1`, ffnOut: `${p}.ffn.lin2`, ffnNorm: `${p}.output_layer_norm`,
    act: ctx.config.str('activation', 'gelu'), eps: EPS,
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const info = describe(config);
  const base = ctx.findPrefix(['distilbert.', ''], 'embeddings.word_embeddings.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const positions = g.input('position_ids', 'int64', [1, 'seq']);
  const token = g.gather(await ctx.weight(`${base}embeddings.word_embeddings.weight`), ids);
  const position = g.gather(await ctx.weight(`${base}embeddings.position_embeddings.weight`), positions);
  tapEmbeddings(ctx, 'self', { token, position });
  let x = await layerNormLayer(ctx, g.add(token, position), `${base}embeddings.LayerNorm`, EPS);
  for (let l = 0; l < info.numLayers; l++) x = await block(ctx, x, `${base}transformer.layer.${l}`, l, info);
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  const head = (h: Value): Promise<Value> => maskedLmHead(ctx, h, {
    dense: 'vocab_transform', act: config.str('activation', 'gelu'), norm: 'vocab_layer_norm', eps: EPS,
    decoder: ['vocab_projector.weight', `${base}embeddings.word_embeddings.weight`], bias: ['vocab_projector.bias'],
  });
  if (ctx.taps.logits) g.output(await head(x), 'logits');
  await tapLogitLens(ctx, 'self', head);
}

function feeds(_config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  return {
    input_ids: int64Tensor(inputs.inputIds),
    position_ids: int64Tensor(inputs.inputIds.map((_, i) => i)),
  };
}

export const distilbertFamily: Architecture = { modelTypes: ['distilbert'], describe, build, feeds };
