/**
 * DistilBERT: BERT-like post-LN encoder without token types; queries are divided by √headDim
 * before the product (the stored queries are the undivided ones).
 */
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { attention, mergeHeads, splitHeads, tapBlockContributions } from './attention.js';
import { tapEmbeddings, tapLayer, tapLogitLens, tapMlp } from './layer-taps.js';
import { encoderInfo, layerNormLayer, linearLayer } from './layers.js';
import { maskedLmHead } from './heads.js';
import type { ModelConfig } from './config.js';

const EPS = 1e-12;

function describe(config: ModelConfig): ArchitectureInfo {
  const hidden = config.int(['dim', 'hidden_size']);
  const heads = config.int(['n_heads', 'num_attention_heads']);
  const layers = config.int(['n_layers', 'num_hidden_layers']);
  return { ...encoderInfo(config, layers, heads, hidden, config.int('max_position_embeddings')), contributions: { norm: 'post', eps: EPS } };
}

async function block(ctx: BuildContext, x: Value, p: string, layer: number, info: ArchitectureInfo): Promise<Value> {
  const { g, config } = ctx;
  const { numHeads: heads, headDim } = info;
  const q = splitHeads(g, await linearLayer(ctx, x, `${p}.attention.q_lin`), heads, headDim);
  const k = splitHeads(g, await linearLayer(ctx, x, `${p}.attention.k_lin`), heads, headDim);
  const v = splitHeads(g, await linearLayer(ctx, x, `${p}.attention.v_lin`), heads, headDim);
  const context = attention(ctx, {
    stack: 'self', layer, q, k, v,
    numHeads: heads, numKvHeads: heads, headDim,
    scale: 1 / Math.sqrt(headDim), scaleStyle: 'query-mul',
    outputProjection: { weight: await ctx.weight(`${p}.attention.out_lin.weight`), layout: 'out-in' },
  });
  const sa = await linearLayer(ctx, mergeHeads(g, context, heads, headDim), `${p}.attention.out_lin`);
  const residualSum = g.add(sa, x);
  const h = await layerNormLayer(ctx, residualSum, `${p}.sa_layer_norm`, EPS);
  tapBlockContributions(ctx, 'self', layer, {
    input: x, residualSum, outputBias: await ctx.weight(`${p}.attention.out_lin.bias`),
    norm: { weight: await ctx.weight(`${p}.sa_layer_norm.weight`), bias: await ctx.weight(`${p}.sa_layer_norm.bias`) },
  });
  const inner = tapMlp(ctx, 'self', layer, activation(g, config.str('activation', 'gelu'), await linearLayer(ctx, h, `${p}.ffn.lin1`)));
  const ffn = await linearLayer(ctx, inner, `${p}.ffn.lin2`);
  const output = await layerNormLayer(ctx, g.add(ffn, h), `${p}.output_layer_norm`, EPS);
  tapLayer(ctx, 'self', layer, { input: x, attention: h, output });
  return output;
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
