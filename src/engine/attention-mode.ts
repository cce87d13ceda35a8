/**
 * How a trace records attention (TraceOptions.attention): every probability ('dense'), or the
 * queries, keys and score terms from which any head's probabilities are computed when read
 * ('on-demand', core/attention-on-demand.ts), or whichever fits the input ('auto': on demand above
 * a number of tokens). The dense probabilities of a Llama-3.2-1B-sized model are 8.6 GB of float32
 * at 2,048 tokens and 137 GB at 8,192; its queries and keys are about 1.3 GB at 8,192.
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../core/errors.js';
import type { StackName } from '../core/trace.js';
import type { ArchitectureInfo } from '../models/architecture.js';
import { MAX_QUERY_BANDS, queryBandCount } from '../models/attention.js';

export type AttentionMode = 'dense' | 'on-demand' | 'auto';

export const ATTENTION_MODES: readonly AttentionMode[] = ['dense', 'on-demand', 'auto'];

/** 'auto' keeps the probabilities dense while every stack's maps take at most this much float32. */
export const AUTO_DENSE_BUDGET_BYTES = 2 ** 30;

/** Bytes of float32 probabilities of every stack, layer and head for `tokens` (and `decoderTokens`) tokens. */
export function denseAttentionBytes(info: ArchitectureInfo, tokens: number, decoderTokens?: number): number {
  let cells = 0;
  const m = decoderTokens ?? tokens;
  for (const [stack, layers] of Object.entries(info.stacks) as [StackName, number][]) {
    const heads = info.stackHeads?.[stack] ?? info.numHeads;
    const [q, k] = stack === 'decoder' ? [m, m] : stack === 'cross' ? [m, tokens] : [tokens, tokens];
    cells += layers * heads * q * k;
  }
  return cells * 4;
}

/**
 * The most tokens 'auto' traces densely: the largest n whose maps (n tokens on every stack) take at
 * most AUTO_DENSE_BUDGET_BYTES (1,365 for a 12 × 12-head model; 724 for 16 × 32 heads).
 */
export function autoDenseTokens(info: ArchitectureInfo): number {
  let lo = 1;
  let hi = 1 << 20;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (denseAttentionBytes(info, mid) <= AUTO_DENSE_BUDGET_BYTES) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** Refuses anything but 'dense', 'on-demand', 'auto' (and the booleans of the older option). */
export function checkAttentionMode(value: unknown, what = 'attention'): AttentionMode | boolean {
  if (typeof value === 'boolean' || ATTENTION_MODES.includes(value as AttentionMode)) return value as AttentionMode | boolean;
  throw new AttnscopeError(`${what}: '${String(value)}' is not a way to record attention; allowed: ${ATTENTION_MODES.join(', ')}`);
}

/**
 * What a run taps: 'dense' probabilities, 'on-demand' (queries, keys, score terms) or 'none'
 * (attention false). `onDemandAbove` is 'auto's threshold (default `autoDenseTokens(info)`): inputs
 * with more tokens (encoder or decoder side) go on demand.
 */
export function resolveAttentionMode(
  option: AttentionMode | boolean | undefined,
  info: ArchitectureInfo,
  tokens: number,
  decoderTokens?: number,
  onDemandAbove?: number,
): 'dense' | 'on-demand' | 'none' {
  const mode = checkAttentionMode(option ?? 'dense');
  if (mode === false) return 'none';
  if (mode === true || mode === 'dense') return 'dense';
  if (mode === 'on-demand') return 'on-demand';
  if (onDemandAbove !== undefined && !(Number.isInteger(onDemandAbove) && onDemandAbove >= 0)) {
    throw new AttnscopeError(`on-demand threshold ${onDemandAbove} is not a whole number of tokens (0 or more)`);
  }
  const limit = onDemandAbove ?? autoDenseTokens(info);
  return Math.max(tokens, decoderTokens ?? 0) > limit ? 'on-demand' : 'dense';
}

/**
 * The bands of query rows an on-demand graph computes attention in for `tokens` (and
 * `decoderTokens`) tokens: `requested` (TraceOptions.queryBandCount) when given, else
 * models/attention.ts queryBandCount of the most heads any stack has and the longer side. A power of
 * two from 1 to MAX_QUERY_BANDS.
 */
export function onDemandBands(info: ArchitectureInfo, tokens: number, decoderTokens?: number, requested?: number): number {
  if (requested !== undefined) {
    const ok = Number.isInteger(requested) && requested >= 1 && requested <= MAX_QUERY_BANDS && (requested & (requested - 1)) === 0;
    if (!ok) throw new AttnscopeError(`queryBandCount: ${requested} bands of query rows; allowed: a power of two from 1 to ${MAX_QUERY_BANDS}`);
    return requested;
  }
  const heads = Math.max(...(Object.keys(info.stacks) as StackName[]).map((s) => info.stackHeads?.[s] ?? info.numHeads));
  return queryBandCount(heads, Math.max(tokens, decoderTokens ?? 0));
}

/**
 * 'auto' execution runs the whole graph while its predicted peak memory (wholeRunPeakBytes) stays
 * within this many bytes (TraceRunOptions.memoryBudget; the CLI takes the smaller of this and half
 * the machine's memory): 8 GB, the laptop the long-context goals are set for. Above it the model
 * runs layer by layer, reading each layer's weights as it runs.
 */
export const AUTO_WHOLE_BUDGET_BYTES = 8e9;

/**
 * What a whole-graph run holds besides the weights and its outputs: one band's scores and
 * intermediates, the MLP's bands of rows, the hidden states, the runtime's arena (measured: 1.0 GB
 * for the Llama-3.2-1B shape at 2,048 tokens on demand; BENCHMARKS.md, long contexts).
 */
const RUN_SCRATCH_BYTES = 2 ** 30;

/** Float32 bytes of every stack's queries and keys on demand (the taps a long trace keeps). */
export function onDemandTapBytes(info: ArchitectureInfo, tokens: number, decoderTokens?: number): number {
  const m = decoderTokens ?? tokens;
  let bytes = 0;
  for (const [stack, layers] of Object.entries(info.stacks) as [StackName, number][]) {
    const heads = info.stackHeads?.[stack] ?? info.numHeads;
    const [q, k] = stack === 'decoder' ? [m, m] : stack === 'cross' ? [m, tokens] : [tokens, tokens];
    bytes += layers * (heads * q + info.numKeyValueHeads * k) * info.headDim * 4;
  }
  return bytes;
}

/**
 * Predicted peak memory of a whole-graph run: every weight as float32 (`weightBytes`), the
 * attention outputs twice (the runtime holds them to the end of the run, then they are copied out:
 * dense probabilities or the queries and keys on demand) and the run's scratch. An upper bound
 * for models whose embedding table is memory-mapped (only the rows of the input's tokens are read):
 * the Llama-3.2-1B shape at 2,048 tokens on demand is predicted at 6.7 GB and peaks at 5.6 GB.
 */
export function wholeRunPeakBytes(info: ArchitectureInfo, weightBytes: number, tokens: number, mode: 'dense' | 'on-demand', decoderTokens?: number): number {
  const outputs = mode === 'dense' ? denseAttentionBytes(info, tokens, decoderTokens) : onDemandTapBytes(info, tokens, decoderTokens);
  return weightBytes + 2 * outputs + RUN_SCRATCH_BYTES;
}

/** Refuses a memory budget that is not a positive number of bytes. */
export function checkMemoryBudget(bytes: number, what = 'memoryBudget'): number {
  if (!(Number.isFinite(bytes) && bytes > 0)) throw new AttnscopeError(`${what}: ${String(bytes)} is not a memory budget; allowed: a positive number of bytes`);
  return bytes;
}
