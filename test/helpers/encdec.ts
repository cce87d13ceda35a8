/**
 * What the encoder-decoder tests compare: attention, queries and keys of every stack (encoder,
 * decoder, cross) of a trace, against PyTorch's reference tensors or against another trace (a
 * generation against one full trace of the tokens it chose), checked in one expectation that
 * lists every difference when one is beyond its tolerance.
 */
import { expect } from 'vitest';
import type { LayerStack, StackName, Trace } from '../../src/core/trace.js';
import type { Model } from '../../src/engine/model.js';
import { maxAbsDiff, refTensor, stackValues, type Reference, type ReferenceInput } from './reference.js';

export const ENC_DEC_STACKS: readonly StackName[] = ['encoder', 'decoder', 'cross'];

/** The model is an encoder-decoder whose stacks have reference.json's layer counts. */
export function expectEncDecStacks(model: Model, ref: Reference): void {
  const layers = ref.attention.num_layers as Record<string, number>;
  expect(model.info.kind).toBe('encoder-decoder');
  expect(model.info.numHeads).toBe(ref.attention.num_heads);
  expect(model.info.headDim).toBe(ref.attention.head_dim);
  expect(model.architecture.describe(model.config).stacks).toEqual({ encoder: layers.encoder, decoder: layers.decoder, cross: layers.decoder });
}

/**
 * Max |Δ| per `attention.<stack>`, `queries.<stack>`, `keys.<stack>` of `trace` against the input's
 * `<stack>_attentions` / `_queries` / `_keys`, and of both last hidden states.
 */
export function encDecReferenceDiffs(trace: Trace, input: ReferenceInput): Record<string, number> {
  const diffs: Record<string, number> = {};
  for (const stack of ENC_DEC_STACKS) {
    diffs[`attention.${stack}`] = maxAbsDiff(stackValues(trace.attention[stack]), refTensor(input, `${stack}_attentions`));
    diffs[`queries.${stack}`] = maxAbsDiff(stackValues(trace.queries?.[stack]), refTensor(input, `${stack}_queries`));
    diffs[`keys.${stack}`] = maxAbsDiff(stackValues(trace.keys?.[stack]), refTensor(input, `${stack}_keys`));
  }
  diffs.encoder_last_hidden_state = maxAbsDiff(trace.encoderLastHiddenState?.data ?? [], refTensor(input, 'encoder_last_hidden_state'));
  diffs.decoder_last_hidden_state = maxAbsDiff(trace.lastHiddenState?.data ?? [], refTensor(input, 'decoder_last_hidden_state'));
  return diffs;
}

/** Max |a − b| over the layers of two stacks (Infinity when their shapes differ). */
export function stackDiff(a: LayerStack | undefined, b: LayerStack | undefined): number {
  if (!a || !b || a.dims.join() !== b.dims.join()) return Number.POSITIVE_INFINITY;
  return maxAbsDiff(stackValues(a), stackValues(b));
}

/** Max |Δ| per `attention.<stack>`, `queries.<stack>`, `keys.<stack>` between two traces (stackDiff). */
export function encDecTraceDiffs(a: Trace, b: Trace): Record<string, number> {
  const diffs: Record<string, number> = {};
  for (const stack of ENC_DEC_STACKS) {
    diffs[`attention.${stack}`] = stackDiff(a.attention[stack], b.attention[stack]);
    diffs[`queries.${stack}`] = stackDiff(a.queries?.[stack], b.queries?.[stack]);
    diffs[`keys.${stack}`] = stackDiff(a.keys?.[stack], b.keys?.[stack]);
  }
  return diffs;
}

/** Every diff within its tolerance (default: attention 1e-5, the rest 1e-4); the message lists them all. */
export function expectDiffsWithin(diffs: Record<string, number>, tolerance = (key: string): number => (key.startsWith('attention.') ? 1e-5 : 1e-4)): void {
  const within = Object.fromEntries(Object.entries(diffs).map(([k, d]) => [k, d <= tolerance(k)]));
  expect(within, JSON.stringify(diffs)).toEqual(Object.fromEntries(Object.keys(diffs).map((k) => [k, true])));
}
