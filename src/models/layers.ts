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
