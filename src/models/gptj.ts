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
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { causalMaskInput, splitHeads } from './attention.js';
import { tapEmbeddings, tapLogitLens } from './layer-taps.js';
import type { ModelConfig } from './config.js';
import { lmHead } from './heads.js';
import { layerNormLayer, linearLayer, preNormBlock } from './layers.js';
import { causalMask } from './masks.js';
import { stackScoring } from './scoring.js';
import { applyRotary, type RopeSpec, type Rotary, rotaryFeeds, rotaryInputs } from './rope.js';

interface GptjSpec {
  layers: number;
  heads: number;
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
  return {
    kind: 'decoder',
    numLayers: s.layers,
    numHeads: s.heads,
    numKeyValueHeads: s.heads,
    headDim: s.headDim,
    maxPositions: s.maxPositions,
    stacks: { self: s.layers },
    scoring: { self: stackScoring(s.layers, { scale: s.headDim ** -0.5, causal: true }) },
    contributions: { norm: 'pre' },
  };
}

async function projection(ctx: BuildContext, x: Value, prefix: string): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`), (await ctx.optionalWeight(`${prefix}.bias`)) ?? undefined);
}

async function block(ctx: BuildContext, s: GptjSpec, x: Value, p: string, layer: number, rotary: Rotary, mask: Value): Promise<Value> {
  const { g } = ctx;
  return preNormBlock(ctx, x, {
    layer, heads: s.heads, kvHeads: s.heads, headDim: s.headDim,
    scale: s.headDim ** -0.5, scaleStyle: 'scores-div', mask,
    inputNorm: (y) => layerNormLayer(ctx, y, `${p}.ln_1`, s.eps),
    qkv: async (h) => {
      const head = async (name: string): Promise<Value> => splitHeads(g, await projection(ctx, h, `${p}.attn.${name}`), s.heads, s.headDim);
      return {
        q: applyRotary(g, await head('q_proj'), rotary.cos, rotary.sin, s.rope),
        k: applyRotary(g, await head('k_proj'), rotary.cos, rotary.sin, s.rope),
        v: await head('v_proj'),
      };
    },
    outProj: `${p}.attn.out_proj`,
    outBias: await ctx.optionalWeight(`${p}.attn.out_proj.bias`),
    // Parallel block: x + (mlp(ln_1(x)) + attn(ln_1(x))).
    parallel: true,
    mlp: async (h, tap) => linearLayer(ctx, tap(activation(g, s.act, await linearLayer(ctx, h, `${p}.mlp.fc_in`))), `${p}.mlp.fc_out`),
  });
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = gptjSpec(config);
  const base = ctx.findPrefix(['transformer.', ''], 'wte.weight');
  const ids = g.input('input_ids', 'int64', [1, 'seq']);
  const mask = causalMaskInput(ctx, 'attention_bias', null);
  const rotary = rotaryInputs(g, s.rope);
  let x = g.gather(await ctx.weight(`${base}wte.weight`), ids);
  tapEmbeddings(ctx, 'self', { token: x });
  for (let l = 0; l < s.layers; l++) x = await block(ctx, s, x, `${base}h.${l}`, l, rotary, mask);
  x = await layerNormLayer(ctx, x, `${base}ln_f`, s.eps);
  if (ctx.taps.lastHiddenState) g.output(x, 'last_hidden_state');
  if (ctx.taps.logits) g.output(await lmHead(ctx, x, ['lm_head.weight', `${base}wte.weight`], 'lm_head.bias'), 'logits');
  await tapLogitLens(ctx, 'self', async (h) => lmHead(ctx, await layerNormLayer(ctx, h, `${base}ln_f`, s.eps), ['lm_head.weight', `${base}wte.weight`], 'lm_head.bias'));
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const s = gptjSpec(config);
  const n = inputs.inputIds.length;
  const past = inputs.pastLength ?? 0;
  return {
    input_ids: int64Tensor(inputs.inputIds),
    attention_bias: causalMask(n, { pastLength: past }),
    ...rotaryFeeds(s.rope, n, past),
  };
}

export const gptjFamily: Architecture = { modelTypes: ['gptj'], describe, build, feeds };
