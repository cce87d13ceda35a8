/**
 * GPT-J decoders (model_type `gptj`), as transformers 4.40's eager GPTJModel:
 *
 *   x = wte(ids)
 *   per layer: h = ln_1(x); x = x + out_proj(attn(rope(q), rope(k), v)) + fc_out(act(fc_in(h)))
 *   last_hidden_state = ln_f(x); logits = lm_head(last_hidden_state) (with bias)
 *
 * q/k/v/out projections without biases, rotary in the interleaved layout (rotate_every_two:
 * pairs (x0, x1), (x2, x3), ...) on the first rotary_dim dims of each head (all of them when
 * rotary_dim is unset), scores q·kᵀ / √head_dim in float32, causal mask.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import type { ModelConfig } from './config.js';
import { decoderInfo, decoderTrunk, layerMasks, rotaryDecoderFeeds, rotaryQkv } from './decoder-blocks.js';
import { lmHead } from './heads.js';
import { layerNormLayer, linearLayer, preNormBlock } from './layers.js';
import { type RopeSpec, type Rotary, rotaryInputs } from './rope.js';

interface GptjSpec {
  layers: number;
  heads: number;
  /** No grouped keys/values: as many as query heads. */
  kvHeads: number;
  headDim: number;
  eps: number;
  act: string;
  maxPositions: number;
  rope: RopeSpec;
}

function gptjSpec(config: ModelConfig): GptjSpec {
  const hidden = config.int(['n_embd', 'hidden_size'], 4096);
  const heads = config.int(['n_head', 'num_attention_heads'], 16);
  const layers = config.int(['n_layer', 'num_hidden_layers'], 28);
  if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: n_embd ${hidden} is not a multiple of n_head ${heads}`);
  const headDim = hidden / heads;
  const rotaryDims = config.has('rotary_dim') ? config.int('rotary_dim') : headDim;
  if (rotaryDims % 2 !== 0 || rotaryDims <= 0 || rotaryDims > headDim) {
    throw new AttnscopeError(`${config.source}: rotary_dim is ${rotaryDims}; allowed: an even number from 2 to the head size ${headDim}`);
  }
  if (config.object('rope_scaling')) throw new AttnscopeError(`${config.source}: rope_scaling is not supported for gptj (GPT-J has none)`);
  return {
    layers,
    heads,
    kvHeads: heads,
    headDim,
    eps: config.num('layer_norm_epsilon', 1e-5),
    act: config.str('activation_function', 'gelu_new'),
    maxPositions: config.int(['n_positions', 'max_position_embeddings'], 2048),
    // create_sinusoidal_positions: inv_freq = 1 / 10000^(2i/rotary_dim), sin/cos repeated per pair.
    rope: { base: 10000, rotaryDims, headDim, style: 'interleaved' },
  };
}

function describe(config: ModelConfig): ArchitectureInfo {
  const s = gptjSpec(config);
  return decoderInfo(s, { scale: s.headDim ** -0.5 });
}

/** A linear layer with its bias when the checkpoint has one (GPT-J's attention has none). */
async function optionalBiasLinear(ctx: BuildContext, x: Value, prefix: string): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`), (await ctx.optionalWeight(`${prefix}.bias`)) ?? undefined);
}

async function block(ctx: BuildContext, s: GptjSpec, x: Value, p: string, layer: number, rotary: Rotary, mask: Value): Promise<Value> {
  const { g } = ctx;
  return preNormBlock(ctx, x, {
    layer, heads: s.heads, kvHeads: s.heads, headDim: s.headDim,
    scale: s.headDim ** -0.5, scaleStyle: 'scores-div', mask,
    inputNorm: (y) => layerNormLayer(ctx, y, `${p}.ln_1`, s.eps),
    qkv: (h) => rotaryQkv(ctx, h, { ...s, prefix: `${p}.attn`, rotary, project: (y, proj) => optionalBiasLinear(ctx, y, proj.prefix) }),
    outProj: `${p}.attn.out_proj`,
    outBias: await ctx.optionalWeight(`${p}.attn.out_proj.bias`),
    // Parallel block: x + (mlp(ln_1(x)) + attn(ln_1(x))).
    parallel: true,
    mlp: async (h, tap) => linearLayer(ctx, tap(activation(g, s.act, await linearLayer(ctx, h, `${p}.mlp.fc_in`))), `${p}.mlp.fc_out`),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const s = gptjSpec(ctx.config);
  const base = ctx.findPrefix(['transformer.', ''], 'wte.weight');
  const masks = layerMasks(ctx, new Array<null>(s.layers).fill(null));
  const rotary = rotaryInputs(ctx.g, s.rope);
  await decoderTrunk(ctx, {
    embedding: `${base}wte.weight`,
    layers: s.layers,
    block: (x, l) => block(ctx, s, x, `${base}h.${l}`, l, rotary, masks[l]!),
    finalNorm: (x) => layerNormLayer(ctx, x, `${base}ln_f`, s.eps),
    // lm_head with a bias (the embeddings when it is absent).
    readout: (h) => lmHead(ctx, h, ['lm_head.weight', `${base}wte.weight`], 'lm_head.bias'),
  });
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  return rotaryDecoderFeeds(gptjSpec(config), inputs);
}

export const gptjFamily: Architecture = { modelTypes: ['gptj'], describe, build, feeds };
