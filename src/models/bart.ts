/**
 * BART encoder-decoders as transformers' eager implementations compute them: bart (post-LN
 * blocks) and mbart (pre-LN blocks with a final layer norm in each stack).
 *
 *   encoder: x = LN_emb(shared[ids] · embed_scale + pos[i + 2]); per layer (post-LN):
 *            x = LN(x + out(attn(x))); x = LN(x + fc2(act(fc1(x))))
 *   decoder: y = LN_emb(shared[decoder_ids] · embed_scale + pos[i + 2]); per layer:
 *            y = LN(y + out(self-attn(y) with causal mask)); y = LN(y + out(cross-attn(q = y, k/v = encoder)));
 *            y = LN(y + fc2(act(fc1(y))))
 *
 * Learned positions are offset by 2 (`embed_positions` row = position + 2). embed_scale is
 * √d_model with `scale_embedding`, else 1. The queries are multiplied by head_dim^-0.5 right after
 * q_proj, before the product (the tapped queries are the unscaled ones).
 *
 * Graph inputs: `input_ids` [1, enc], `position_ids` [1, enc], `decoder_input_ids` [1, dec],
 * `decoder_position_ids` [1, dec] and `decoder_attention_bias` [1, 1, dec, dec].
 *
 * With `taps.cache` the graph is one decoder step of incremental decoding, without the encoder:
 * `decoder_input_ids` [1, n] are the new tokens at positions past…past+n−1 (position ids
 * past+i+2), `encoder_hidden_states` [1, enc, d_model] the encoder's output (cross-attention
 * keys/values are projected from it at every step), `decoder_attention_bias` [1, 1, n, past+n],
 * plus the self-attention cache inputs.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import { int64Tensor, type RuntimeTensor } from '../runtime/runtime.js';
import { activation } from './activations.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs } from './architecture.js';
import { attention, mergeHeads, splitHeads } from './attention.js';
import type { ModelConfig } from './config.js';
import { requiredBias } from './layers.js';
import { causalMask } from './masks.js';
import { stackScoring } from './scoring.js';

const MODEL_TYPES = ['bart', 'mbart'] as const;

/** BartLearnedPositionalEmbedding's offset: row = position + 2. */
const POSITION_OFFSET = 2;

/** nn.LayerNorm's default epsilon, which BART's layer norms use. */
const LAYER_NORM_EPS = 1e-5;

export interface BartSpec {
  modelType: string;
  dModel: number;
  encoderLayers: number;
  decoderLayers: number;
  encoderHeads: number;
  decoderHeads: number;
  act: string;
  /** √d_model with scale_embedding, else null (× 1.0). */
  embedScale: number | null;
  /** mbart: layer norm before each sub-layer, and a final layer norm in each stack. */
  preNorm: boolean;
  maxPositions: number;
  tied: boolean;
}

export function bartSpec(config: ModelConfig): BartSpec {
  const modelType = config.modelType;
  if (!(MODEL_TYPES as readonly string[]).includes(modelType)) {
    throw new AttnscopeError(`${config.source}: model_type '${modelType}' is not a BART-family model`);
  }
  const dModel = config.int('d_model', 1024);
  const s: BartSpec = {
    modelType,
    dModel,
    encoderLayers: config.int('encoder_layers', 12),
    decoderLayers: config.int('decoder_layers', 12),
    encoderHeads: config.int('encoder_attention_heads', 16),
    decoderHeads: config.int('decoder_attention_heads', 16),
    act: config.str('activation_function', 'gelu'),
    embedScale: config.bool('scale_embedding', false) ? Math.sqrt(dModel) : null,
    preNorm: modelType === 'mbart',
    maxPositions: config.int('max_position_embeddings', 1024),
    tied: config.bool('tie_word_embeddings', true),
  };
  for (const heads of [s.encoderHeads, s.decoderHeads]) {
    if (dModel % heads !== 0) throw new AttnscopeError(`${config.source}: d_model ${dModel} is not a multiple of the number of attention heads ${heads}`);
  }
  return s;
}

function describe(config: ModelConfig): ArchitectureInfo {
  const s = bartSpec(config);
  return {
    kind: 'encoder-decoder',
    numLayers: s.encoderLayers,
    numHeads: s.encoderHeads,
    numKeyValueHeads: s.encoderHeads,
    headDim: s.dModel / s.encoderHeads,
    maxPositions: s.maxPositions,
    stacks: { encoder: s.encoderLayers, decoder: s.decoderLayers, cross: s.decoderLayers },
    // Queries × head_dim^-0.5 of each stack's heads (cross-attention uses the decoder's).
    scoring: {
      encoder: stackScoring(s.encoderLayers, { scale: (s.dModel / s.encoderHeads) ** -0.5, causal: false }),
      decoder: stackScoring(s.decoderLayers, { scale: (s.dModel / s.decoderHeads) ** -0.5, causal: true }),
      cross: stackScoring(s.decoderLayers, { scale: (s.dModel / s.decoderHeads) ** -0.5, causal: false }),
    },
  };
}

// --- graph pieces ------------------------------------------------------------------------

async function linear(ctx: BuildContext, x: Value, prefix: string): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`), await requiredBias(ctx, prefix));
}

async function layerNorm(ctx: BuildContext, x: Value, prefix: string): Promise<Value> {
  return ctx.g.layerNorm(x, await ctx.weight(`${prefix}.weight`), await requiredBias(ctx, prefix), LAYER_NORM_EPS);
}

/** BartAttention: q from `h` (× head_dim^-0.5), k/v from `kv`, + mask; returns out_proj(context). */
async function bartAttention(
  ctx: BuildContext, h: Value, kv: Value, prefix: string, heads: number, headDim: number,
  stack: 'encoder' | 'decoder' | 'cross', layer: number, mask: Value | null,
): Promise<Value> {
  const { g } = ctx;
  const scale = headDim ** -0.5;
  const projected = await linear(ctx, h, `${prefix}.q_proj`);
  const q = splitHeads(g, projected, heads, headDim);
  // HF scales q_proj's output before splitting heads. Scaling here (rather than the split
  // queries right before the product) also keeps onnxruntime from folding the scale into the
  // q·k MatMul, which would round like scores · scale instead.
  const scaledQ = splitHeads(g, g.mul(projected, g.scalar(scale)), heads, headDim);
  const k = splitHeads(g, await linear(ctx, kv, `${prefix}.k_proj`), heads, headDim);
  const v = splitHeads(g, await linear(ctx, kv, `${prefix}.v_proj`), heads, headDim);
  const context = attention(ctx, {
    stack, layer, q, k, v,
    numHeads: heads, numKvHeads: heads, headDim,
    scale, scaleStyle: 'query-mul', scaledQ,
    bias: mask,
  });
  return linear(ctx, mergeHeads(g, context, heads, headDim), `${prefix}.out_proj`);
}

/** A residual sub-layer: post-LN (bart) LN(x + f(x)) or pre-LN (mbart) x + f(LN(x)). */
async function residual(
  ctx: BuildContext, s: BartSpec, x: Value, norm: string, f: (h: Value) => Promise<Value>,
): Promise<Value> {
  const { g } = ctx;
  if (s.preNorm) return g.add(x, await f(await layerNorm(ctx, x, norm)));
  return layerNorm(ctx, g.add(x, await f(x)), norm);
}

interface StackOptions {
  stack: 'encoder' | 'decoder';
  prefix: string;
  layers: number;
  heads: number;
  mask: Value | null;
  encoderOutput: Value | null;
}

async function runStack(ctx: BuildContext, s: BartSpec, tokens: Value, positions: Value, embed: Value, o: StackOptions): Promise<Value> {
  const { g } = ctx;
  const headDim = s.dModel / o.heads;
  let x = g.gather(embed, tokens);
  if (s.embedScale !== null) x = g.mul(x, g.scalar(s.embedScale));
  x = g.add(x, g.gather(await ctx.weight(`${o.prefix}.embed_positions.weight`), positions));
  x = await layerNorm(ctx, x, `${o.prefix}.layernorm_embedding`);
  for (let l = 0; l < o.layers; l++) {
    const p = `${o.prefix}.layers.${l}`;
    x = await residual(ctx, s, x, `${p}.self_attn_layer_norm`, (h) =>
      bartAttention(ctx, h, h, `${p}.self_attn`, o.heads, headDim, o.stack, l, o.mask));
    const encoderOutput = o.encoderOutput;
    if (encoderOutput) {
      x = await residual(ctx, s, x, `${p}.encoder_attn_layer_norm`, (h) =>
        bartAttention(ctx, h, encoderOutput, `${p}.encoder_attn`, o.heads, headDim, 'cross', l, null));
    }
    x = await residual(ctx, s, x, `${p}.final_layer_norm`, async (h) =>
      linear(ctx, activation(g, s.act, await linear(ctx, h, `${p}.fc1`)), `${p}.fc2`));
  }
  if (s.preNorm) x = await layerNorm(ctx, x, `${o.prefix}.layer_norm`);
  return x;
}

async function build(ctx: BuildContext): Promise<void> {
  const { g, config } = ctx;
  const s = bartSpec(config);
  const base = ctx.findPrefix(['model.', ''], 'encoder.layers.0.self_attn.q_proj.weight');
  if (!ctx.hasWeight(`${base}decoder.layers.0.self_attn.q_proj.weight`)) {
    throw new AttnscopeError(`${config.source}: the checkpoint has no decoder (an encoder-only ${s.modelType} checkpoint is not supported)`);
  }
  // A decoder step (taps.cache) sees past + new keys; the full graph sees the new ones only.
  const step = ctx.taps.cache ?? false;
  if (step && s.decoderHeads !== s.encoderHeads) {
    // The engine sizes the empty first cache from describe() (the encoder's heads).
    throw new AttnscopeError(`${config.source}: incremental decoding needs as many decoder as encoder attention heads (${s.decoderHeads} vs ${s.encoderHeads})`);
  }
  const ids = step ? null : g.input('input_ids', 'int64', [1, 'enc_seq']);
  const positions = step ? null : g.input('position_ids', 'int64', [1, 'enc_seq']);
  const decoderIds = g.input('decoder_input_ids', 'int64', [1, 'dec_seq']);
  const decoderPositions = g.input('decoder_position_ids', 'int64', [1, 'dec_seq']);
  const causal = g.input('decoder_attention_bias', 'float32', [1, 1, 'dec_seq', step ? 'dec_keys' : 'dec_seq']);

  // encoder.embed_tokens and decoder.embed_tokens are tied to `shared`.
  const embedding = async (stack: string): Promise<Value> => {
    const name = [`${base}shared.weight`, `${base}${stack}.embed_tokens.weight`].find((n) => ctx.hasWeight(n));
    if (!name) throw new AttnscopeError(`checkpoint has no '${base}shared.weight' (is it a ${s.modelType} checkpoint?)`);
    return ctx.weight(name);
  };

  let encoderOutput: Value;
  if (!ids || !positions) {
    // Decoder step: the encoder ran once before; its final hidden states come in as an input.
    encoderOutput = g.input('encoder_hidden_states', 'float32', [1, 'enc_seq', s.dModel]);
  } else {
    encoderOutput = await runStack(ctx, s, ids, positions, await embedding('encoder'), {
      stack: 'encoder', prefix: `${base}encoder`, layers: s.encoderLayers, heads: s.encoderHeads, mask: null, encoderOutput: null,
    });
    if (ctx.taps.lastHiddenState) g.output(encoderOutput, 'encoder_last_hidden_state');
  }
  const decoderEmbedding = await embedding('decoder');
  const decoderOutput = await runStack(ctx, s, decoderIds, decoderPositions, decoderEmbedding, {
    stack: 'decoder', prefix: `${base}decoder`, layers: s.decoderLayers, heads: s.decoderHeads, mask: causal, encoderOutput,
  });
  if (ctx.taps.lastHiddenState) g.output(decoderOutput, 'last_hidden_state');
  if (ctx.taps.logits) {
    const head = !s.tied && ctx.hasWeight('lm_head.weight') ? await ctx.weight('lm_head.weight') : decoderEmbedding;
    let logits = g.linear(decoderOutput, head);
    const finalBias = await ctx.optionalWeight('final_logits_bias'); // [1, vocab]
    if (finalBias) logits = g.add(logits, finalBias);
    g.output(logits, 'logits');
  }
}

/** Embedding rows of positions past…past+n−1. */
function positionIds(n: number, past = 0): RuntimeTensor {
  return int64Tensor(Array.from({ length: n }, (_, i) => past + i + POSITION_OFFSET));
}

function feeds(config: ModelConfig, inputs: ModelInputs): Record<string, RuntimeTensor> {
  const s = bartSpec(config);
  const decoderIds = inputs.decoderInputIds;
  if (!decoderIds || decoderIds.length === 0) throw new AttnscopeError(`${s.modelType} is an encoder-decoder model: decoder input ids are required`);
  // Incremental decoding: the new decoder tokens sit at positions past…past+n−1.
  const past = inputs.pastLength ?? 0;
  for (const [what, n] of [['input', inputs.inputIds.length], ['decoder input', past + decoderIds.length]] as const) {
    if (n > s.maxPositions) throw new AttnscopeError(`${what} too long: ${n} tokens, but the model accepts at most ${s.maxPositions}`);
  }
  return {
    input_ids: int64Tensor(inputs.inputIds),
    position_ids: positionIds(inputs.inputIds.length),
    decoder_input_ids: int64Tensor(decoderIds),
    decoder_position_ids: positionIds(decoderIds.length, past),
    decoder_attention_bias: causalMask(decoderIds.length, { pastLength: past }),
  };
}

export const bartFamily: Architecture = {
  modelTypes: MODEL_TYPES,
  describe,
  build,
  feeds,
};
