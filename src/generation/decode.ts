/**
 * Incremental decoding with a key/value cache: the prompt runs once, then each new token runs
 * alone against the cached keys and values of every earlier position (one position of compute
 * per token). The rows of every step (attention, queries, keys, score bias) are kept and
 * assembled into whole-sequence outputs, which the model turns into a Trace as it does a full run's.
 *
 * Attention on demand (GenerateOptions.attention 'on-demand', or 'auto' above a length): no
 * probabilities are tapped. The prompt pass runs attention in bands of query rows (no layer's
 * scores held whole) and returns only the last position's logits (last-position.ts); each step
 * then stores its token's query rows into arrays allocated once for the whole sequence, and the
 * keys of every position are the final cache itself. The trace keeps queries, keys and score
 * terms, from which any step's attention row is computed exactly when read
 * (core/attention-on-demand.ts). What decoding holds is the cache and the query rows: nothing
 * grows per step beyond them; a position bias is kept as one row over the keys (ALiBi) or one
 * vector over the offsets j − i (T5), each step adding its new key or offset (bias-rows.ts).
 */
import { AttnscopeError } from '../core/errors.js';
import type { GenerationInfo, StackName, Token, Trace } from '../core/trace.js';
import { resolveAttentionMode, type AttentionMode } from '../engine/attention-mode.js';
import { tapName, type TapKind, type TapRequest } from '../models/architecture.js';
import { relativeBiasOutput } from '../models/attention.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import { languageCodeId } from '../tokenizer/language-codes.js';
import type { DecodingExtension, DecodingModel } from './decoding-model.js';
import { LAST_POSITION_LOGITS } from './last-position.js';
import { CompactBiasRows } from './bias-rows.js';
import { assembleRows, GrowingRows, type StepRows } from './rows.js';
import { createSampler, validateSampling, type Choice, type SamplingOptions } from './sampling.js';

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (generation stops earlier at the end-of-sequence token). */
  maxNewTokens: number;
  /** Prompt token ids instead of text. */
  ids?: readonly number[];
  /** Also return per-head queries and keys (and the score terms). */
  qk?: boolean;
  /** Translation tokenizers: the source language code of the prompt (--src-lang). */
  srcLang?: string | undefined;
  /**
   * Translation models: the target language (--tgt-lang), selected as transformers does: mBART
   * (the source code after the text) starts the decoder with the code (decoder_start_token_id);
   * M2M100, NLLB and mBART-50 (the code before the text) force it after the start token
   * (forced_bos_token_id).
   */
  tgtLang?: string | undefined;
  /**
   * How the trace records attention: every probability ('dense', the default), or the queries,
   * keys and score terms each row is computed from when read ('on-demand': memory and time per
   * token independent of the rows already generated), or 'on-demand' when the prompt plus the new
   * tokens exceed `onDemandAbove` tokens ('auto'; default: engine/attention-mode.ts autoDenseTokens).
   */
  attention?: AttentionMode | undefined;
  /** 'auto's threshold in tokens (prompt + new tokens; encoder-decoders: either side). */
  onDemandAbove?: number | undefined;
}

/**
 * The decoder's first ids before anything is generated: decoder_start_token_id, then the token
 * forced at the first step (--tgt-lang's code, or the checkpoint's forced_bos_token_id); for
 * mBART with --tgt-lang the code alone, as the start token. transformers' forced token is the
 * only one its logits processor allows, so it is as good as given.
 */
export function decoderPrompt(model: DecodingModel, tgtLang: string | undefined): number[] {
  const start = model.decoderStartId;
  if (tgtLang === undefined) return model.forcedBosId === undefined ? [start] : [start, model.forcedBosId];
  const id = languageCodeId(model.languages, tgtLang, '--tgt-lang', `${model.name}'s tokenizer`);
  return model.languages?.targetStyle === 'decoder-start' ? [id] : [start, id];
}

export interface DecodeResult {
  newIds: number[];
  steps: Choice[];
  stoppedBy: 'eos' | 'length';
  /**
   * Whole-sequence tap outputs of the stacks decoded incrementally ('self' for decoders;
   * 'decoder' and 'cross' for encoder-decoders), named and shaped as a full run's
   * (`tapName(kind, stack, layer)`, [1, d0, rows, cols]).
   */
  outputs: Record<string, RuntimeTensor>;
}

function float32(t: RuntimeTensor | undefined, name: string): Float32Array {
  if (!t) throw new Error(`graph output ${name} missing`);
  if (t.type !== 'float32') throw new Error(`graph output ${name} is ${t.type}; incremental decoding taps float32`);
  return t.data as Float32Array;
}

/** What decoding collects from each step's outputs, and gives back as whole-sequence outputs. */
interface Collector {
  add(out: Readonly<Record<string, RuntimeTensor>>, start: number): void;
  outputs(total: number): Record<string, RuntimeTensor>;
}

/** The layer outputs of one tap kind of a stack at a step, and their [d0, rows, width]. */
function stepLayers(out: Readonly<Record<string, RuntimeTensor>>, kind: TapKind, stack: StackName, layers: number): { layers: Float32Array[]; dims: [number, number, number] } {
  const arrays: Float32Array[] = [];
  for (let l = 0; l < layers; l++) arrays.push(float32(out[tapName(kind, stack, l)], tapName(kind, stack, l)));
  const [, d0, rows, width] = out[tapName(kind, stack, 0)]!.dims as [number, number, number, number];
  return { layers: arrays, dims: [d0, rows, width] };
}

/** One stack's rows of one tap kind (queries), written into arrays allocated once (rows.ts GrowingRows). */
class PreallocatedRows implements Collector {
  private readonly rows: GrowingRows;

  constructor(
    readonly kind: TapKind,
    readonly stack: StackName,
    private readonly layers: number,
    capacity: number,
  ) {
    this.rows = new GrowingRows(capacity);
  }

  add(out: Readonly<Record<string, RuntimeTensor>>, start: number): void {
    const { layers, dims } = stepLayers(out, this.kind, this.stack, this.layers);
    this.rows.add(layers, dims[0], dims[1], dims[2], start);
  }

  outputs(total: number): Record<string, RuntimeTensor> {
    const stack = this.rows.stack(total);
    const out: Record<string, RuntimeTensor> = {};
    stack.layers.forEach((data, l) => {
      out[tapName(this.kind, this.stack, l)] = { type: 'float32', dims: [1, ...stack.dims], data };
    });
    return out;
  }
}

/**
 * The keys of every position of the cached stack: the cache after the last step (present_key.*,
 * [1, kvHeads, total, headDim]), which holds the keys exactly as each step tapped them.
 */
class CacheKeys implements Collector {
  private last: Readonly<Record<string, RuntimeTensor>> = {};

  constructor(
    readonly stack: StackName,
    private readonly layers: number,
  ) {}

  add(out: Readonly<Record<string, RuntimeTensor>>): void {
    this.last = out;
  }

  outputs(total: number): Record<string, RuntimeTensor> {
    const out: Record<string, RuntimeTensor> = {};
    for (let l = 0; l < this.layers; l++) {
      const name = tapName('present_key', this.stack, l);
      const present = this.last[name];
      if (!present || present.dims[2] !== total) throw new Error(`graph output ${name} missing or not of ${total} positions`);
      out[tapName('keys', this.stack, l)] = { type: 'float32', dims: present.dims, data: float32(present, name) };
    }
    return out;
  }
}

/** Collects one stack's per-step rows of one tap kind. */
class StackRows implements Collector {
  readonly steps: StepRows[] = [];
  private d0 = 0;
  private cols = 0;

  constructor(
    readonly kind: TapKind,
    readonly stack: StackName,
    /** Outputs per step: the stack's layers (1 for a bias all layers share). */
    private readonly layers: number,
  ) {}

  add(out: Readonly<Record<string, RuntimeTensor>>, start: number): void {
    const { layers, dims } = stepLayers(out, this.kind, this.stack, this.layers);
    const [d0, rows, width] = dims;
    this.d0 = d0;
    this.cols = Math.max(this.cols, width);
    this.steps.push({ start, rows, width, layers });
  }

  /**
   * The whole sequence as graph outputs: rows of later steps below those of earlier ones, rows
   * narrower than the widest (keys a position could not see yet) zero-padded on the right.
   * `firstStepOnly`: what the first step computed for every position (cross-attention keys).
   */
  outputs(total: number): Record<string, RuntimeTensor> {
    // Cross-attention keys are the encoder's positions, all computed at the first step.
    const firstStepOnly = this.kind === 'keys' && this.stack === 'cross';
    const first = this.steps[0]!;
    const stack = firstStepOnly ? { dims: [this.d0, first.rows, first.width] as const, layers: first.layers } : assembleRows(this.steps, this.d0, total, this.cols);
    const out: Record<string, RuntimeTensor> = {};
    stack.layers.forEach((data, l) => {
      out[tapName(this.kind, this.stack, l)] = { type: 'float32', dims: [1, ...stack.dims], data };
    });
    return out;
  }
}

/** How decoding records attention, and the graphs it runs. */
export interface DecodeRecording {
  /** 'dense': per-step rows of every tap assembled; 'on-demand': queries preallocated, keys from the final cache, no probabilities. */
  mode: 'dense' | 'on-demand';
  /** Taps of the steps after the first (default: `taps`). */
  stepTaps?: TapRequest;
  /** The graph extension every run uses (e.g. LAST_POSITION_LOGITS), if any. */
  extension?: DecodingExtension;
}

/**
 * Runs `promptIds` (positions 0…) and then one token at a time, choosing each from the logits of
 * the last position, until `maxNew` tokens or an end-of-sequence id. The last chosen token is
 * run too, so every generated token has its attention row. `extra` feeds go to every step
 * (e.g. the encoder's hidden states for an encoder-decoder's decoder). `stacks[0]` is the stack
 * whose self-attention keys and values are cached. `taps` are those of the first run (the prompt).
 */
export async function decodeIncrementally(
  model: DecodingModel,
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
  recording: DecodeRecording = { mode: 'dense' },
): Promise<DecodeResult> {
  const d = model.architectureInfo;
  const cacheStack: StackName = stacks[0]!;
  const layers = d.stacks[cacheStack] ?? d.numLayers;
  const layersOf = (s: StackName): number => d.stacks[s] ?? layers;
  const onDemand = recording.mode === 'on-demand';
  if (onDemand && (taps.attention || !taps.qk || !taps.cache)) throw new Error('decoding on demand taps queries and keys with the cache, and no probabilities');
  const collectors: Collector[] = [];
  for (const s of stacks) {
    if (onDemand) {
      collectors.push(new PreallocatedRows('queries', s, layersOf(s), promptIds.length + maxNew));
      collectors.push(s === cacheStack ? new CacheKeys(s, layersOf(s)) : new StackRows('keys', s, layersOf(s)));
    } else {
      collectors.push(new StackRows('attention', s, layersOf(s)));
      if (!taps.qk) continue;
      collectors.push(new StackRows('queries', s, layersOf(s)), new StackRows('keys', s, layersOf(s)));
    }
    const bias = d.scoring[s]?.bias ?? 'none';
    // On demand, a position bias (ALiBi, relative buckets) is kept compact as the rows come (bias-rows.ts).
    const biasOutputs = bias === 'shared' ? 1 : layersOf(s);
    if (taps.qk && bias !== 'none') collectors.push(onDemand ? new CompactBiasRows(s, biasOutputs, promptIds.length + maxNew) : new StackRows('score_bias', s, biasOutputs));
  }
  const run = (t: TapRequest, inputs: Parameters<DecodingModel['run']>[1], feeds: Readonly<Record<string, RuntimeTensor>>): Promise<Record<string, RuntimeTensor>> =>
    recording.extension ? model.runExtended(t, recording.extension, inputs, feeds) : model.run(t, inputs, feeds);

  // An empty cache: [1, kvHeads, 0, headDim] per layer.
  let past: Record<string, RuntimeTensor> = {};
  for (let l = 0; l < layers; l++) {
    const empty: RuntimeTensor = { type: 'float32', dims: [1, d.numKeyValueHeads, 0, d.headDim], data: new Float32Array(0) };
    past[tapName('past_key', cacheStack, l)] = empty;
    past[tapName('past_value', cacheStack, l)] = empty;
  }

  const newIds: number[] = [];
  const steps: Choice[] = [];
  let stoppedBy: DecodeResult['stoppedBy'] = 'length';
  let feed: readonly number[] = promptIds;
  let position = 0;
  for (;;) {
    const inputs = { ...baseInputs, [idsField]: feed, pastLength: position };
    const out = await run(position === 0 ? taps : (recording.stepTaps ?? taps), inputs, { ...extra, ...past });
    for (const rows of collectors) rows.add(out, position);
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
      for (const [present, cached] of [['present_key', 'past_key'], ['present_value', 'past_value']] as const) {
        const name = tapName(present, cacheStack, l);
        if (!out[name]) throw new Error(`graph output ${name} missing`);
        next[tapName(cached, cacheStack, l)] = out[name];
      }
    }
    past = next;
    feed = [choice.id];
  }

  const outputs: Record<string, RuntimeTensor> = {};
  for (const rows of collectors) Object.assign(outputs, rows.outputs(position));
  return { newIds, steps, stoppedBy, outputs };
}

/**
 * transformers' ForcedEOSTokenLogitsProcessor: the `maxNew`-th token (the last one the length limit
 * allows) is `forced` (forced_eos_token_id), with the model's probability of it; earlier ones are
 * `choose`'s. Without a forced id, `choose` itself.
 */
export function forcingLastToken(choose: (logits: Float32Array) => Choice, forced: number | undefined, maxNew: number): (logits: Float32Array) => Choice {
  if (forced === undefined) return choose;
  let calls = 0;
  return (logits) => {
    calls += 1;
    if (calls < maxNew) return choose(logits);
    if (!(Number.isInteger(forced) && forced >= 0 && forced < logits.length)) {
      throw new AttnscopeError(`forced_eos_token_id ${forced} is outside the model's vocabulary of ${logits.length}`);
    }
    let max = Number.NEGATIVE_INFINITY;
    for (const v of logits) if (v > max) max = v;
    let sum = 0;
    for (const v of logits) sum += Math.exp(v - max);
    return { id: forced, probability: Math.exp(logits[forced]! - max) / sum };
  };
}

export function generationInfo(options: GenerateOptions, promptLength: number, result: DecodeResult): GenerationInfo {
  const strategy = options.strategy ?? 'greedy';
  return {
    promptLength,
    strategy,
    ...(strategy === 'sample'
      ? { temperature: options.temperature ?? 1, topK: options.sampleTopK ?? 0, topP: options.topP ?? 1, seed: options.seed ?? 0 }
      : {}),
    stoppedBy: result.stoppedBy,
    steps: result.steps.map((s) => ({ id: s.id, probability: s.probability })),
  };
}

function checkMaxNew(maxNew: number): void {
  if (!Number.isInteger(maxNew) || maxNew < 1) throw new AttnscopeError(`--max-new-tokens must be a positive integer, got ${maxNew}`);
}

/** 'dense' or 'on-demand' for a generation of `tokens` (and `decoderTokens`) positions. */
function recordedAttention(model: DecodingModel, options: GenerateOptions, tokens: number, decoderTokens?: number): 'dense' | 'on-demand' {
  const mode = resolveAttentionMode(options.attention, model.architectureInfo, tokens, decoderTokens, options.onDemandAbove);
  if (mode === 'none') throw new AttnscopeError(`generate: attention ${String(options.attention)} is not a way to record attention; allowed: dense, on-demand, auto`);
  return mode;
}

/**
 * The prompt pass of a decoder generating on demand: the cache graph with queries and keys tapped,
 * attention in bands of query rows, the last position's logits only. Steps run the same session
 * (one row: the bands are one row and fifteen empty ones).
 */
export const ON_DEMAND_TAPS: TapRequest = { attention: false, qk: true, lastHiddenState: true, logits: true, cache: true, queryBands: true };

/**
 * Decoder generation: the prompt and then each new token, decoded incrementally; the trace holds
 * the prompt's attention and each generated token's row over all earlier tokens.
 */
export async function generateDecoder(model: DecodingModel, text: string | null, options: GenerateOptions): Promise<Trace> {
  validateSampling(options);
  const maxNew = options.maxNewTokens;
  checkMaxNew(maxNew);
  if (options.tgtLang !== undefined) throw new AttnscopeError(`--tgt-lang: ${model.name} is a decoder; a target language applies to encoder-decoder translation models`);
  const prompt = options.ids ? model.tokensFromIds(options.ids) : await model.tokenize(text ?? '', undefined, undefined, options.srcLang);
  const maxPositions = model.architectureInfo.maxPositions;
  if (prompt.length + maxNew > maxPositions) {
    throw new AttnscopeError(`generation too long: ${prompt.length} prompt tokens + ${maxNew} new tokens = ${prompt.length + maxNew}, but ${model.name} accepts at most ${maxPositions} positions`);
  }
  const onDemand = recordedAttention(model, options, prompt.length + maxNew) === 'on-demand';
  const taps: TapRequest = onDemand ? ON_DEMAND_TAPS : { attention: true, qk: options.qk ?? false, lastHiddenState: false, logits: true, cache: true };
  const recording: DecodeRecording = onDemand ? { mode: 'on-demand', extension: LAST_POSITION_LOGITS } : { mode: 'dense' };
  const choose = forcingLastToken(createSampler(options), model.forcedEosId, maxNew);
  const result = await decodeIncrementally(model, taps, ['self'], prompt.map((t) => t.id), maxNew, choose, model.eosIds(), {}, 'inputIds', { inputIds: [] }, recording);
  const generated = model.tokensFromIds(result.newIds).map((t) => ({ ...t, generated: true }));
  const trace = model.assemble([...prompt, ...generated], result.outputs);
  trace.generation = generationInfo(options, prompt.length, result);
  return trace;
}

/**
 * Encoder-decoder generation: the encoder runs once (its attention and hidden states), then the
 * decoder decodes incrementally from decoder_start_token_id with a cache of its self-attention
 * keys/values, reading the encoder's hidden states at every step.
 */
export async function generateEncoderDecoder(model: DecodingModel, text: string | null, options: GenerateOptions): Promise<Trace> {
  validateSampling(options);
  const maxNew = options.maxNewTokens;
  checkMaxNew(maxNew);
  const tokens: Token[] = options.ids ? model.tokensFromIds(options.ids) : await model.tokenize(text ?? '', undefined, undefined, options.srcLang);
  const d = model.architectureInfo;
  if (tokens.length > d.maxPositions) throw new AttnscopeError(`text too long: ${tokens.length} tokens, but ${model.name} accepts at most ${d.maxPositions}`);
  const decoderIds = decoderPrompt(model, options.tgtLang);
  if (1 + maxNew > d.maxPositions) {
    throw new AttnscopeError(`generation too long: 1 start token + ${maxNew} new tokens = ${1 + maxNew}, but ${model.name}'s decoder accepts at most ${d.maxPositions} positions`);
  }
  // A forced first token counts as one of the new tokens, as in transformers' max_new_tokens.
  const toGenerate = maxNew - (decoderIds.length - 1);
  const start = decoderIds[0]!;
  const inputIds = tokens.map((t) => t.id);
  const onDemand = recordedAttention(model, options, tokens.length, decoderIds.length + toGenerate) === 'on-demand';
  const qk = (options.qk ?? false) || onDemand;
  // 1. The encoder, once: its attention (and q/k, score bias) and its final hidden states.
  const encoderTaps: TapRequest = { attention: !onDemand, qk, lastHiddenState: true, logits: false };
  const encoded = await model.run(encoderTaps, { inputIds, decoderInputIds: [start] });
  const encoderHidden = encoded.encoder_last_hidden_state;
  if (!encoderHidden) throw new Error('graph output encoder_last_hidden_state missing');
  // 2. The decoder, incrementally.
  const stepTaps: TapRequest = { attention: !onDemand, qk, lastHiddenState: false, logits: true, cache: true };
  const result = await decodeIncrementally(
    model, stepTaps, ['decoder', 'cross'], decoderIds, toGenerate, forcingLastToken(createSampler(options), model.forcedEosId, toGenerate), model.eosIds(),
    { encoder_hidden_states: encoderHidden }, 'decoderInputIds', { inputIds }, { mode: onDemand ? 'on-demand' : 'dense' },
  );
  // The encoder's taps from the first run, the decoder's from the incremental one.
  const outputs: Record<string, RuntimeTensor> = {};
  const encoderLayers = d.stacks.encoder ?? 0;
  for (const kind of ['attention', 'queries', 'keys', 'score_bias'] as const) {
    for (let l = 0; l < encoderLayers; l++) {
      // On demand the encoder's relative bias comes as one vector over j − i (score_bias_relative).
      for (const name of kind === 'score_bias' ? [tapName(kind, 'encoder', l), relativeBiasOutput('encoder', l)] : [tapName(kind, 'encoder', l)]) {
        if (encoded[name]) outputs[name] = encoded[name];
      }
    }
  }
  Object.assign(outputs, result.outputs);
  const trace = model.assemble(tokens, outputs);
  trace.decoderTokens = model.tokensFromIds([...decoderIds, ...result.newIds]).map((t, i) => (i >= decoderIds.length ? { ...t, generated: true } : t));
  trace.generation = generationInfo(options, decoderIds.length, result);
  return trace;
}
