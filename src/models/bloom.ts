/**
 * BLOOM decoders (model_type `bloom`): word embeddings followed by `word_embeddings_layernorm`,
 * pre-LayerNorm blocks with a fused `query_key_value` projection laid out per head as [q | k | v],
 * no position embeddings but ALiBi: scores = baddbmm(alibi, q, kᵀ, beta=1, alpha=1/√headDim),
 * i.e. headDim^-0.5·q·kᵀ + slope[h]·key position, then the causal mask; BLOOM's tanh GELU; `ln_f`
 * and an LM head tied to the embeddings.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { type Architecture, type ArchitectureInfo, type BuildContext, type ModelInputs } from './architecture.js';
import { attention, causalMaskInput, mergeHeads, tapBlockContributions } from './attention.js';
import { tapEmbeddings, tapLayer, tapLogitLens, tapMlp } from './layer-taps.js';
import { lmHead } from './heads.js';
import { alibiBias, layerNormLayer, linearLayer } from './layers.js';
import type { ModelConfig } from './config.js';
import { causalMask } from './masks.js';
import { stackScoring } from './scoring.js';

function describe(config: ModelConfig): ArchitectureInfo {
  const hidden = config.int(['hidden_size', 'n_embed']);
  const heads = config.int(['n_head', 'num_attention_heads']);
  const layers = config.int(['n_layer', 'num_hidden_layers']);
  if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not divisible by n_head ${heads}`);
  const headDim = hidden / heads;
  return {
    kind: 'decoder',
    numLayers: layers,
    numHeads: heads,
    numKeyValueHeads: heads,
    headDim,
    // ALiBi has no learned positions: any length.
    maxPositions: Number.POSITIVE_INFINITY,
    stacks: { self: layers },
    // ALiBi is one feed every layer adds: tapped once (layer 0's), not one [heads, n, n] output per layer.
    scoring: { self: stackScoring(layers, { scale: 1 / Math.sqrt(headDim), causal: true, bias: 'shared', biasKind: 'ALiBi' }) },
    contributions: { norm: 'pre' },
  };
}

/** bloom_gelu_forward: x·0.5·(1 + tanh(0.79788456·x·(1 + 0.044715·x²))). */
function bloomGelu(ctx: BuildContext, x: Value): Value {
  const { g } = ctx;
  const inner = g.mul(g.mul(g.scalar(0.79788456), x), g.add(g.scalar(1), g.mul(g.mul(g.scalar(0.044715), x), x)));
  return g.mul(g.mul(x, g.scalar(0.5)), g.add(g.scalar(1), g.tanh(inner)));
}

async function block(ctx: BuildContext, x: Value, p: string, layer: number, info: ArchitectureInfo, alibi: Value, mask: Value): Promise<Value> {
  const { g, config } = ctx;
  const eps = config.num('layer_norm_epsilon', 1e-5);
  const { numHeads: heads, headDim } = info;
  const ln1 = await layerNormLayer(ctx, x, `${p}.input_layernorm`, eps);
  const fused = g.reshape(await linearLayer(ctx, ln1, `${p}.self_attention.query_key_value`), [0, 0, heads, 3 * headDim]);
  const [q, k, v] = g.split(fused, [headDim, headDim, headDim], 3).map((t) => g.transpose(t, [0, 2, 1, 3])) as [Value, Value, Value];
  // baddbmm: alibi + alpha·(q·kᵀ); the causal mask only where alibi + 0 leaves the sum unchanged.
  const context = attention(ctx, {
    stack: 'self', layer, q, k, v,
    numHeads: heads, numKvHeads: heads, headDim,
    scale: 1 / Math.sqrt(headDim), scaleStyle: 'scores-mul',
    bias: alibi,
    mask,
    outputProjection: { weight: await ctx.weight(`${p}.self_attention.dense.weight`), layout: 'out-in' },
  });
  const residualPostLn = config.bool('apply_residual_connection_post_layernorm', false);
  const residual = residualPostLn ? ln1 : x;
  const attnOut = g.add(await linearLayer(ctx, mergeHeads(g, context, heads, headDim), `${p}.self_attention.dense`), residual);
  // The residual term of token i is what the block adds back: x_i, or LN(x_i) with apply_residual_connection_post_layernorm.
  tapBlockContributions(ctx, 'self', layer, { input: residual, residualSum: attnOut, outputBias: await ctx.weight(`${p}.self_attention.dense.bias`) });
  const ln2 = await layerNormLayer(ctx, attnOut, `${p}.post_attention_layernorm`, eps);
  const inner = tapMlp(ctx, 'self', layer, bloomGelu(ctx, await linearLayer(ctx, ln2, `${p}.mlp.dense_h_to_4h`)));
  const output = g.add(await linearLayer(ctx, inner, `${p}.mlp.dense_4h_to_h`), residualPostLn ? ln2 : attnOut);
  tapLayer(ctx, 'self', layer, { input: x, attention: attnOut, output });
  return output;
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const info = describe(config);
  const eps = config.num('layer_norm_epsilon', 1e-5);
  const base = ctx.findPrefix(['transformer.', ''], 'word_embeddings.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const mask = causalMaskInput(ctx, 'attention_bias', null);
  // ALiBi built in the graph from the key positions (one row over the keys; tapped by layer 0's attention).
  const alibi = alibiBias(ctx, info.numHeads);
  let x = g.gather(await ctx.weight(`${base}word_embeddings.weight`), ids);
  tapEmbeddings(ctx, 'self', { token: x });
  x = await layerNormLayer(ctx, x, `${base}word_embeddings_layernorm`, eps);
  for (let l = 0; l < info.numLayers; l++) x = await block(ctx, x, `${base}h.${l}`, l, info, alibi, mask);
  x = await layerNormLayer(ctx, x, `${base}ln_f`, eps);
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  if (ctx.taps.logits) g.output(await lmHead(ctx, x, ['lm_head.weight', `${base}word_embeddings.weight`]), 'logits');
  await tapLogitLens(ctx, 'self', async (h) => lmHead(ctx, await layerNormLayer(ctx, h, `${base}ln_f`, eps), ['lm_head.weight', `${base}word_embeddings.weight`]));
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const n = inputs.inputIds.length;
  const past = inputs.pastLength ?? 0;
  return {
    input_ids: int64Tensor(inputs.inputIds),
    attention_bias: causalMask(n, { pastLength: past }),
  };
}

export const bloomFamily: Architecture = { modelTypes: ['bloom'], describe, build, feeds };
