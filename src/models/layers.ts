/**
 * Building blocks shared by the architecture files: linear and LayerNorm layers read from the
 * checkpoint, what a plain multi-head encoder tells about itself, token type ids from segments.
 * Model files import these, never another model file.
 */
import { AttnscopeError, quote } from '../core/errors.js';
import type { Value } from '../graph/builder.js';
import type { ArchitectureInfo, BuildContext } from './architecture.js';
import type { ModelConfig } from './config.js';
import { stackScoring } from './scoring.js';

/**
 * `prefix.bias` of a layer the architecture always builds with a bias. A checkpoint without it is
 * refused, naming the tensor: run with a zero bias it would give wrong attention without a word
 * (transformers warns that the weight is newly initialised).
 */
export async function requiredBias(ctx: BuildContext, prefix: string): Promise<Value> {
  if (!ctx.hasWeight(`${prefix}.bias`)) {
    throw new AttnscopeError(
      `checkpoint has ${quote(`${prefix}.weight`)} but not ${quote(`${prefix}.bias`)}, which every ${ctx.config.modelType} checkpoint has: it is damaged or incomplete`,
    );
  }
  return ctx.weight(`${prefix}.bias`);
}

/** Linear layer `prefix.weight` / `prefix.bias`. */
export async function linearLayer(ctx: BuildContext, x: Value, prefix: string): Promise<Value> {
  return ctx.g.linear(x, await ctx.weight(`${prefix}.weight`), await requiredBias(ctx, prefix));
}

/** nn.LayerNorm `prefix.weight` / `prefix.bias`. */
export async function layerNormLayer(ctx: BuildContext, x: Value, prefix: string, eps: number): Promise<Value> {
  return ctx.g.layerNorm(x, await ctx.weight(`${prefix}.weight`), await requiredBias(ctx, prefix), eps);
}

/** What an encoder with multi-head self-attention (no grouped keys) tells about itself. */
export function encoderInfo(config: ModelConfig, layers: number, heads: number, hidden: number, maxPositions: number): ArchitectureInfo {
  if (hidden % heads !== 0) throw new AttnscopeError(`${config.source}: hidden size ${hidden} is not a multiple of ${heads} heads`);
  const headDim = hidden / heads;
  return {
    kind: 'encoder',
    numLayers: layers,
    numHeads: heads,
    numKeyValueHeads: heads,
    headDim,
    maxPositions,
    stacks: { self: layers },
    // Bidirectional, q·k / √headDim (BERT, ALBERT, ELECTRA divide the scores; DistilBERT the queries).
    scoring: { self: stackScoring(layers, { scale: 1 / Math.sqrt(headDim), causal: false }) },
  };
}

/**
 * Token type ids from segments. Models with a single token type (RoBERTa) get zeros for both
 * sentences of a pair, as their tokenizers produce.
 */
export function segmentTypeIds(config: ModelConfig, segments: readonly number[] | undefined, n: number): number[] {
  const types = config.int('type_vocab_size', 2);
  if (!segments || types <= 1) return new Array<number>(n).fill(0);
  return [...segments];
}

/**
 * ALiBi slopes as transformers' `build_alibi_tensor` (BLOOM, Falcon) computes them, in float32:
 * for the largest power of two n ≤ heads, base 2^(−8/n) raised to 1..n; the remaining heads take
 * the odd powers 1, 3, 5, ... of 2^(−8/2n) (interleaving the slopes of 2n heads).
 */
export function alibiSlopes(heads: number): Float32Array {
  const f = Math.fround;
  const closest = Math.pow(2, Math.floor(Math.log2(heads)));
  const base = f(Math.pow(2, -Math.pow(2, -(Math.log2(closest) - 3))));
  const slopes = new Float32Array(heads);
  for (let i = 0; i < closest; i++) slopes[i] = f(Math.pow(base, i + 1));
  if (closest !== heads) {
    const extraBase = f(Math.pow(2, -Math.pow(2, -(Math.log2(2 * closest) - 3))));
    const remaining = Math.min(closest, heads - closest);
    for (let i = 0; i < remaining; i++) slopes[closest + i] = f(Math.pow(extraBase, 2 * i + 1));
  }
  return slopes;
}

/** Rounds a float32 value to bfloat16 (round to nearest, ties to even), returned as a number. */
export function toBfloat16(x: number): number {
  const bits = new Uint32Array(new Float32Array([x]).buffer);
  const u = bits[0]!;
  if ((u & 0x7f800000) === 0x7f800000) return x;
  bits[0] = ((u + 0x7fff + ((u >>> 16) & 1)) & 0xffff0000) >>> 0;
  return new Float32Array(bits.buffer)[0]!;
}

/**
 * The ALiBi term `slope[h] · key position` as a feed [1, heads, queries, pastLength + queries]
 * (the same row for every query; no mask). With `bfloat16`, slopes and products are rounded to
 * bfloat16 as Falcon's build_alibi_tensor does.
 */
export function alibiFeed(heads: number, queries: number, pastLength: number, bfloat16 = false): { type: 'float32'; dims: number[]; data: Float32Array } {
  const slopes = alibiSlopes(heads);
  const keys = pastLength + queries;
  const data = new Float32Array(heads * queries * keys);
  for (let h = 0; h < heads; h++) {
    const slope = bfloat16 ? toBfloat16(slopes[h]!) : slopes[h]!;
    for (let j = 0; j < keys; j++) {
      const v = bfloat16 ? toBfloat16(Math.fround(slope * j)) : Math.fround(slope * j);
      for (let i = 0; i < queries; i++) data[(h * queries + i) * keys + j] = v;
    }
  }
  return { type: 'float32', dims: [1, heads, queries, keys], data };
}
