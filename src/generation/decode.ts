/**
 * Incremental decoding with a key/value cache: the prompt runs once, then each new token runs
 * alone against the cached keys and values of every earlier position (one position of compute
 * per token). The attention rows of every step are kept and assembled into whole-sequence stacks.
 */
import { AttnscopeError } from '../core/errors.js';
import type { GenerationInfo, LayerStack, StackName, Token, Trace } from '../core/trace.js';
import type { GenerateOptions, Model } from '../engine.js';
import type { TapRequest } from '../models/architecture.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { assembleRows, type StepRows } from './rows.js';
import { createSampler, validateSampling, type Choice } from './sampling.js';

export interface DecodeResult {
  newIds: number[];
  steps: Choice[];
  stoppedBy: 'eos' | 'length';
  /** Per stack decoded incrementally ('self' for decoders; 'decoder' and 'cross' for encoder-decoders). */
  attention: Partial<Record<StackName, LayerStack>>;
  queries?: Partial<Record<StackName, LayerStack>>;
  keys?: Partial<Record<StackName, LayerStack>>;
}

function float32(t: RuntimeTensor | undefined, name: string): Float32Array {
  if (!t) throw new Error(`graph output ${name} missing`);
  if (t.type !== 'float32') throw new Error(`graph output ${name} is ${t.type}; incremental decoding taps float32`);
  return t.data as Float32Array;
}

/** Collects one stack's per-step rows of one tap kind ('attention', 'queries', 'keys'). */
class StackRows {
  readonly steps: StepRows[] = [];
  d0 = 0;
  cols = 0;

  constructor(
    private readonly kind: string,
    private readonly stack: StackName,
    private readonly layers: number,
  ) {}

  add(out: Record<string, RuntimeTensor>, start: number): void {
    const first = out[`${this.kind}.${this.stack}.0`];
    if (!first) throw new Error(`graph output ${this.kind}.${this.stack}.0 missing`);
    const [, d0, rows, width] = first.dims as [number, number, number, number];
    this.d0 = d0;
    this.cols = Math.max(this.cols, width);
    const layers: Float32Array[] = [];
    for (let l = 0; l < this.layers; l++) layers.push(float32(out[`${this.kind}.${this.stack}.${l}`], `${this.kind}.${this.stack}.${l}`));
    this.steps.push({ start, rows, width, layers });
  }

  /** Whole-sequence stack; attention rows are padded to `cols` (all keys), q/k rows are headDim wide. */
  build(total: number, cols = this.cols): LayerStack {
    return assembleRows(this.steps, this.d0, total, cols);
  }
}

/**
 * Runs `promptIds` (positions 0…) and then one token at a time, choosing each from the logits of
 * the last position, until `maxNew` tokens or an end-of-sequence id. The last chosen token is
 * run too, so every generated token has its attention row. `extra` feeds go to every step
 * (e.g. the encoder's hidden states for an encoder-decoder's decoder).
 */
export async function decodeIncrementally(
  model: Model,
  taps: TapRequest,
  stacks: readonly StackName[],
  promptIds: readonly number[],
  maxNew: number,
  choose: (logits: Float32Array) => Choice,
  eos: ReadonlySet<number>,
  extra: Readonly<Record<string, RuntimeTensor>>,
  /** Which ModelInputs field carries the ids being decoded. */
  idsField: 'inputIds' | 'decoderInputIds' = 'inputIds',
  baseInputs: { inputIds: readonly number[] } = { inputIds: [] },
): Promise<DecodeResult> {
  const d = model.architecture.describe(model.config);
  const cacheStack: StackName = stacks[0]!;
  const layers = d.stacks[cacheStack] ?? d.numLayers;
  const collect = (kind: string) => new Map(stacks.map((s) => [s, new StackRows(kind, s, d.stacks[s] ?? layers)] as const));
  const attention = collect('attention');
  const queries = taps.qk ? collect('queries') : null;
  const keys = taps.qk ? collect('keys') : null;

  // An empty cache: [1, kvHeads, 0, headDim] per layer.
  let past: Record<string, RuntimeTensor> = {};
  for (let l = 0; l < layers; l++) {
    const empty: RuntimeTensor = { type: 'float32', dims: [1, d.numKeyValueHeads, 0, d.headDim], data: new Float32Array(0) };
    past[`past_key.${cacheStack}.${l}`] = empty;
    past[`past_value.${cacheStack}.${l}`] = empty;
  }

  const newIds: number[] = [];
  const steps: Choice[] = [];
  let stoppedBy: DecodeResult['stoppedBy'] = 'length';
  let feed: readonly number[] = promptIds;
  let position = 0;
  for (;;) {
    const inputs = { ...baseInputs, [idsField]: feed, pastLength: position };
    const out = await model.run(taps, inputs, { ...extra, ...past });
    for (const rows of attention.values()) rows.add(out, position);
    for (const rows of queries?.values() ?? []) rows.add(out, position);
    for (const rows of keys?.values() ?? []) rows.add(out, position);
    position += feed.length;
    const finished = newIds.length === maxNew || (newIds.length > 0 && eos.has(newIds[newIds.length - 1]!));
    if (finished) {
      if (newIds.length < maxNew) stoppedBy = 'eos';
      break;
    }
    const logits = out.logits;
    if (!logits) throw new Error('graph output logits missing');
    const vocab = logits.dims[logits.dims.length - 1]!;
    const data = float32(logits, 'logits');
    const choice = choose(data.subarray(data.length - vocab));
    newIds.push(choice.id);
    steps.push(choice);
    const next: Record<string, RuntimeTensor> = {};
    for (let l = 0; l < layers; l++) {
      for (const kind of ['key', 'value']) {
        const present = out[`present_${kind}.${cacheStack}.${l}`];
        if (!present) throw new Error(`graph output present_${kind}.${cacheStack}.${l} missing`);
        next[`past_${kind}.${cacheStack}.${l}`] = present;
      }
    }
    past = next;
    feed = [choice.id];
  }

  const total = position;
  const result: DecodeResult = { newIds, steps, stoppedBy, attention: {} };
  for (const [stack, rows] of attention) result.attention[stack] = rows.build(total, stack === 'cross' ? undefined : total);
  if (queries && keys) {
    result.queries = {};
    result.keys = {};
    for (const [stack, rows] of queries) result.queries[stack] = rows.build(total);
    // Cross-attention keys are the encoder's positions, all computed at the first step.
    for (const [stack, rows] of keys) result.keys[stack] = stack === 'cross' ? { dims: [rows.d0, rows.steps[0]!.rows, rows.cols], layers: rows.steps[0]!.layers } : rows.build(total);
  }
  return result;
}

export function generationInfo(options: GenerateOptions, promptLength: number, result: DecodeResult): GenerationInfo {
  const strategy = options.strategy ?? 'greedy';
  return {
    promptLength,
    strategy,
    ...(strategy === 'sample'
      ? { temperature: options.temperature ?? 1, topK: options.topK ?? 0, topP: options.topP ?? 1, seed: options.seed ?? 0 }
      : {}),
    stoppedBy: result.stoppedBy,
    steps: result.steps.map((s) => ({ id: s.id, probability: s.probability })),
  };
}

/**
 * Encoder-decoder generation: the encoder runs once (its attention and hidden states), then the
 * decoder decodes incrementally from decoder_start_token_id with a cache of its self-attention
 * keys/values, reading the encoder's hidden states at every step.
 */
export async function generateEncoderDecoder(model: Model, text: string | null, options: GenerateOptions): Promise<Trace> {
  validateSampling(options);
  const maxNew = options.maxNewTokens;
  if (!Number.isInteger(maxNew) || maxNew < 1) throw new AttnscopeError(`--max-new-tokens must be a positive integer, got ${maxNew}`);
  const tokens: Token[] = options.ids ? model.tokensFromIds(options.ids) : await model.tokenize(text ?? '');
  const info = model.info;
  if (tokens.length > info.maxPositions) throw new AttnscopeError(`text too long: ${tokens.length} tokens, but ${model.name} accepts at most ${info.maxPositions}`);
  if (1 + maxNew > info.maxPositions) {
    throw new AttnscopeError(`generation too long: 1 start token + ${maxNew} new tokens = ${1 + maxNew}, but ${model.name}'s decoder accepts at most ${info.maxPositions} positions`);
  }
  const start = model.decoderStartId;
  const inputIds = tokens.map((t) => t.id);
  // 1. The encoder, once: its attention (and q/k) and its final hidden states.
  const encoderTaps: TapRequest = { attention: true, qk: options.qk ?? false, lastHiddenState: true, logits: false };
  const encoded = await model.run(encoderTaps, { inputIds, decoderInputIds: [start] });
  const encoderHidden = encoded.encoder_last_hidden_state;
  if (!encoderHidden) throw new Error('graph output encoder_last_hidden_state missing');
  // 2. The decoder, incrementally.
  const stepTaps: TapRequest = { attention: true, qk: options.qk ?? false, lastHiddenState: false, logits: true, cache: true };
  const result = await decodeIncrementally(
    model, stepTaps, ['decoder', 'cross'], [start], maxNew, createSampler(options), model.eosIds(),
    { encoder_hidden_states: encoderHidden }, 'decoderInputIds', { inputIds },
  );
  const decoderTokens = model.tokensFromIds([start, ...result.newIds]).map((t, i) => (i > 0 ? { ...t, generated: true } : t));
  const d = model.architecture.describe(model.config);
  const encoderStack = (kind: string): LayerStack => {
    const layers: Float32Array[] = [];
    for (let l = 0; l < (d.stacks.encoder ?? 0); l++) layers.push(float32(encoded[`${kind}.encoder.${l}`], `${kind}.encoder.${l}`));
    const dims = encoded[`${kind}.encoder.0`]!.dims;
    return { dims: [dims[1]!, dims[2]!, dims[3]!], layers };
  };
  const trace: Trace = {
    model: model.modelInfo(d),
    tokens,
    decoderTokens,
    attention: { encoder: encoderStack('attention'), ...result.attention },
  };
  if (options.qk && result.queries && result.keys) {
    trace.queries = { encoder: encoderStack('queries'), ...result.queries };
    trace.keys = { encoder: encoderStack('keys'), ...result.keys };
  }
  trace.generation = generationInfo(options, 1, result);
  return trace;
}
