/**
 * OPT decoders (model_type `opt`), as transformers' OPTForCausalLM computes them: learned absolute
 * positions read at position + 2 (`embed_positions` has max_position_embeddings + 2 rows), optional
 * `project_in` / `project_out` when word_embed_proj_dim differs from hidden_size, pre-LN blocks
 * (do_layer_norm_before; post-LN otherwise, as opt-350m), queries multiplied by head_dim^-0.5
 * right after q_proj, causal mask, ReLU MLP (fc1 / fc2), `final_layer_norm` at the end (pre-LN
 * without `_remove_final_layer_norm`), and the LM head tied to the token embeddings.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { attention, causalMaskInput, mergeHeads, splitHeads, tapBlockContributions } from './attention.js';
import { tapEmbeddings, tapLayer, tapLogitLens, tapMlp } from './layer-taps.js';
import { lmHead } from './heads.js';
import { layerNormLayer, linearLayer } from './layers.js';
import type { ModelConfig } from './config.js';
import { decoderInfo } from './decoder-blocks.js';
import { causalMask } from './masks.js';

/** OPT's learned position table is indexed at position + this offset. */
const POSITION_OFFSET = 2;
const EPS = 1e-5;

function describe(config: ModelConfig): ArchitectureInfo {
  const hidden = config.int('hidden_size');
  const heads = config.int('num_attention_heads');
  const layers = config.int('num_hidden_layers');
  if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: hidden_size ${hidden} is not a multiple of num_attention_heads ${heads}`);
  const headDim = hidden / heads;
  return decoderInfo({ layers, heads, kvHeads: heads, headDim, maxPositions: config.int('max_position_embeddings', 2048) }, {
    // q_proj(x) · head_dim^-0.5, then q·k; causal.
    scale: headDim ** -0.5,
    contributions: { norm: config.bool('do_layer_norm_before', true) ? 'pre' : 'post', eps: EPS },
  });
}

/** A linear layer with a bias when the config enables biases (`enable_bias`, default true). */
async function linear(ctx: BuildContext, x: Value, prefix: string, bias: boolean): Promise<Value> {
  if (bias) return linearLayer(ctx, x, prefix);
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`));
}

/** nn.LayerNorm, with or without its affine parameters (`layer_norm_elementwise_affine`). */
/** The unit scales of non-affine norms, one initializer per norm even when it is applied twice (the logit lens reuses the final one). */
const unitScales = new WeakMap<BuildContext, Map<string, Value>>();

async function norm(ctx: BuildContext, x: Value, prefix: string, affine: boolean, width: number): Promise<Value> {
  if (affine) return layerNormLayer(ctx, x, prefix, EPS);
  let scales = unitScales.get(ctx);
  if (!scales) unitScales.set(ctx, (scales = new Map()));
  let ones = scales.get(prefix);
  if (!ones) scales.set(prefix, (ones = ctx.g.initializer(`${prefix}.ones`, new Float32Array(width).fill(1), [width])));
  return ctx.g.layerNorm(x, ones, null, EPS);
}

async function block(ctx: BuildContext, x: Value, p: string, layer: number, info: ArchitectureInfo, mask: Value): Promise<Value> {
  const { g, config } = ctx;
  const { numHeads: heads, headDim } = info;
  const hidden = heads * headDim;
  const bias = config.bool('enable_bias', true);
  const affine = config.bool('layer_norm_elementwise_affine', true);
  const preLn = config.bool('do_layer_norm_before', true);
  const scale = headDim ** -0.5;

  const h = preLn ? await norm(ctx, x, `${p}.self_attn_layer_norm`, affine, hidden) : x;
  const projected = await linear(ctx, h, `${p}.self_attn.q_proj`, bias);
  const q = splitHeads(g, projected, heads, headDim);
  const scaledQ = splitHeads(g, g.mul(projected, g.scalar(scale)), heads, headDim);
  const k = splitHeads(g, await linear(ctx, h, `${p}.self_attn.k_proj`, bias), heads, headDim);
  const v = splitHeads(g, await linear(ctx, h, `${p}.self_attn.v_proj`, bias), heads, headDim);
  const context = attention(ctx, {
    stack: 'self', layer, q, k, v,
    numHeads: heads, numKvHeads: heads, headDim,
    scale, scaleStyle: 'query-mul', scaledQ,
    mask,
    outputProjection: { weight: await ctx.weight(`${p}.self_attn.out_proj.weight`), layout: 'out-in' },
  });
  const residualSum = g.add(x, await linear(ctx, mergeHeads(g, context, heads, headDim), `${p}.self_attn.out_proj`, bias));
  const x1 = preLn ? residualSum : await norm(ctx, residualSum, `${p}.self_attn_layer_norm`, affine, hidden);
  if (ctx.taps.contributions) {
    const ln = `${p}.self_attn_layer_norm`;
    const postNorm = preLn ? undefined : affine
      ? { weight: await ctx.weight(`${ln}.weight`), bias: await ctx.weight(`${ln}.bias`) }
      : { weight: g.initializer(`${ln}.taps.ones`, new Float32Array(hidden).fill(1), [hidden]), bias: g.initializer(`${ln}.taps.zeros`, new Float32Array(hidden), [hidden]) };
    tapBlockContributions(ctx, 'self', layer, {
      input: x, residualSum, outputBias: bias ? await ctx.weight(`${p}.self_attn.out_proj.bias`) : null, ...(postNorm ? { norm: postNorm } : {}),
    });
  }

  const h2 = preLn ? await norm(ctx, x1, `${p}.final_layer_norm`, affine, hidden) : x1;
  const inner = tapMlp(ctx, 'self', layer, activation(g, config.str('activation_function', 'relu'), await linear(ctx, h2, `${p}.fc1`, bias)));
  let out = g.add(x1, await linear(ctx, inner, `${p}.fc2`, bias));
  if (!preLn) out = await norm(ctx, out, `${p}.final_layer_norm`, affine, hidden);
  tapLayer(ctx, 'self', layer, { input: x, attention: x1, output: out });
  return out;
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const info = describe(config);
  const base = ctx.findPrefix(['model.decoder.', 'decoder.', ''], 'embed_tokens.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const positions = g.input('position_ids', 'int64', [1, 'seq']);
  const mask = causalMaskInput(ctx, 'attention_bias', null);
  const embed = await ctx.weight(`${base}embed_tokens.weight`);
  let tokens = g.gather(embed, ids);
  const position = g.gather(await ctx.weight(`${base}embed_positions.weight`), positions);
  tapEmbeddings(ctx, 'self', { token: tokens, position });
  if (ctx.hasWeight(`${base}project_in.weight`)) tokens = g.linear(tokens, await ctx.weight(`${base}project_in.weight`));
  let x = g.add(tokens, position);
  for (let l = 0; l < info.numLayers; l++) {
    x = await block(ctx, x, `${base}layers.${l}`, l, info, mask);
  }
  // The final norm and project_out, then the head: what the logit lens reads every layer through.
  const finish = async (h: Value): Promise<Value> => {
    let y = h;
    if (config.bool('do_layer_norm_before', true) && !config.bool('_remove_final_layer_norm', false)) {
      y = await norm(ctx, y, `${base}final_layer_norm`, config.bool('layer_norm_elementwise_affine', true), info.numHeads * info.headDim);
    }
    if (ctx.hasWeight(`${base}project_out.weight`)) y = g.linear(y, await ctx.weight(`${base}project_out.weight`));
    return y;
  };
  x = await finish(x);
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  if (ctx.taps.logits) g.output(await lmHead(ctx, x, ['lm_head.weight', `${base}embed_tokens.weight`]), 'logits');
  await tapLogitLens(ctx, 'self', async (h) => lmHead(ctx, await finish(h), ['lm_head.weight', `${base}embed_tokens.weight`]));
}

function feeds(_config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const n = inputs.inputIds.length;
  const past = inputs.pastLength ?? 0;
  return {
    input_ids: int64Tensor(inputs.inputIds),
    // Position = cumsum(attention_mask) − 1 (no padding here), read at + 2.
    position_ids: int64Tensor(Array.from({ length: n }, (_, i) => past + i + POSITION_OFFSET)),
    attention_bias: causalMask(n, { pastLength: past }),
  };
}

export const optFamily: Architecture = { modelTypes: ['opt'], describe, build, feeds };
