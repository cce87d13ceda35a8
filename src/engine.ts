/**
 * loadModel / trace: wires a model source → tokenizer → architecture graph → runtime → Trace.
 */
import { readFile } from 'node:fs/promises';
import { AttnscopeError } from './core/errors.js';
import { timed } from './core/profile.js';
import { float16ToFloat32 } from './core/tensor.js';
import type { LayerStack, ModelInfo, Prediction, StackMap, StackName, Token, Trace } from './core/trace.js';
import { defaultModelDir } from './default-model.js';
import type { ModelFiles } from './io/model-files.js';
import { checkpointCacheDir, findCachedModel, graphCacheRoot, writeCachedModel } from './io/graph-cache.js';
import { resolveModelSource } from './io/model-source.js';
import { openWeights } from './io/open-weights.js';
import type { WeightStore } from './io/weights.js';
import type { Architecture, ArchitectureInfo, ModelInputs, TapRequest } from './models/architecture.js';
import { createBuildContext } from './models/build-context.js';
import { ModelConfig } from './models/config.js';
import { architectureFor } from './models/registry.js';
import { nodeRuntime } from './runtime/onnxruntime-node.js';
import { decodeIncrementally, generateEncoderDecoder, generationInfo } from './generation/decode.js';
import { createSampler, validateSampling, type SamplingOptions } from './generation/sampling.js';
import type { GraphSession, Runtime, RuntimeTensor } from './runtime/runtime.js';
import { loadTokenizer, type AttnTokenizer } from './tokenizer/load-tokenizer.js';

/** Softmax of each requested row, and its k most probable tokens (ties: lower id first, as torch.topk). */
export function topKPredictions(
  logits: { rows: number; vocab: number; data: Float32Array },
  positions: readonly number[],
  k: number,
  kind: Prediction['kind'],
  tokenText: (id: number) => string,
): Prediction[] {
  const { vocab, data } = logits;
  return positions.map((position) => {
    const row = data.subarray(position * vocab, (position + 1) * vocab);
    let max = Number.NEGATIVE_INFINITY;
    for (const v of row) if (v > max) max = v;
    let sum = 0;
    for (const v of row) sum += Math.exp(v - max);
    // The k best ids so far, best first; a strictly greater value is needed to pass an equal one.
    const order: number[] = [];
    const keep = Math.min(k, vocab);
    for (let id = 0; id < vocab; id++) {
      const v = row[id]!;
      if (order.length === keep && v <= row[order[keep - 1]!]!) continue;
      let at = order.length;
      while (at > 0 && row[order[at - 1]!]! < v) at--;
      order.splice(at, 0, id);
      if (order.length > keep) order.pop();
    }
    return {
      position,
      kind,
      candidates: order.map((id) => ({ id, token: tokenText(id), probability: Math.exp(row[id]! - max) / sum })),
    };
  });
}

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate (generation stops earlier at the end-of-sequence token). */
  maxNewTokens: number;
  /** Prompt token ids instead of text. */
  ids?: readonly number[];
  /** Also return per-head queries and keys. */
  qk?: boolean;
}

export interface LoadOptions {
  /** Hub revision (branch, tag or commit); also accepted as `id@revision`. */
  revision?: string;
  /** Never touch the network (also HF_HUB_OFFLINE=1). */
  offline?: boolean;
  /** Graph runtime (default: onnxruntime-node). */
  runtime?: Runtime;
  /** Threads per operator (default: all cores). */
  threads?: number;
  /** Show download progress on stderr. */
  progress?: boolean;
  /**
   * Directory of the graph cache (prepared graphs and weights kept on disk between runs), or
   * false for none. Default: $ATTNSCOPE_CACHE, else ~/.cache/attnscope/graphs ('off' disables).
   */
  graphCache?: string | false;
}

export interface TraceOptions {
  /** Second sentence of a pair (sentence B). */
  pair?: string;
  /** Token ids to run instead of tokenizing text. */
  ids?: readonly number[];
  /** Token type (segment) ids to go with `ids`. */
  typeIds?: readonly number[];
  /** Also return per-head queries and keys. */
  qk?: boolean;
  /** Also return the final hidden state. */
  hidden?: boolean;
  /** Skip attention (e.g. when only hidden states are wanted). */
  attention?: boolean;
  /** Cut inputs longer than the model's maximum positions instead of failing. */
  truncate?: boolean;
  /** Encoder-decoder models: the decoder's target text (tokenized, then shifted right behind the start token). */
  decoderText?: string;
  /** Encoder-decoder models: decoder input ids, used as given. */
  decoderIds?: readonly number[];
  /** Also return the prediction head's raw logits. */
  logits?: boolean;
  /**
   * Add the head's top-k predictions: at each [MASK]/<mask> for masked LMs, the next token at
   * every position for causal LMs and decoders.
   */
  topK?: number;
  /** Encoder-decoders without a decoder input: how many tokens to generate (default 20). */
  maxNewTokens?: number;
}

/** Tokens an encoder-decoder generates when traced without a decoder input. */
const DEFAULT_NEW_TOKENS = 20;

/** What a loaded model tells about itself. */
export interface ModelDescription extends ModelInfo {
  kind: ArchitectureInfo['kind'];
  maxPositions: number;
}

function toFloat32(t: RuntimeTensor): Float32Array {
  if (t.type === 'float32') return t.data as Float32Array;
  if (t.type === 'float16') return float16ToFloat32(t.data as Uint16Array);
  throw new Error(`unexpected tap type ${t.type}`);
}

function tapsKey(t: TapRequest): string {
  return `${+t.attention}${+t.qk}${+t.lastHiddenState}${+t.logits}${t.cache ? ':cache' : ''}`;
}

export class Model {
  private readonly sessions = new Map<string, Promise<GraphSession>>();
  /** Graph-cache writes still under way. */
  private readonly cacheWrites: Promise<void>[] = [];

  constructor(
    readonly files: ModelFiles,
    readonly config: ModelConfig,
    readonly architecture: Architecture,
    readonly tokenizer: AttnTokenizer | null,
    private readonly weights: WeightStore,
    private readonly runtime: Runtime,
    private readonly threads: number | undefined,
    /** generation_config.json, when the checkpoint has one. */
    readonly generationConfig: Readonly<Record<string, unknown>> = {},
    /** Where this checkpoint's prepared graphs are cached on disk; none: always build in memory. */
    private readonly graphCacheDir?: string,
  ) {}

  get name(): string {
    return this.files.name;
  }

  get info(): ModelDescription {
    const d = this.architecture.describe(this.config);
    return { ...this.modelInfo(d), kind: d.kind, maxPositions: d.maxPositions };
  }

  /** The graph session for a set of taps, built once and cached. */
  session(taps: TapRequest): Promise<GraphSession> {
    const key = tapsKey(taps);
    let s = this.sessions.get(key);
    if (!s) {
      s = this.buildSession(taps);
      this.sessions.set(key, s);
      s.catch(() => this.sessions.delete(key));
    }
    return s;
  }

  private async buildSession(taps: TapRequest): Promise<GraphSession> {
    const ctx = createBuildContext(this.config, this.weights, taps);
    const built = await timed('build the graph', async () => {
      await this.architecture.build(ctx);
      return ctx.g.build();
    });
    const options = { threads: this.threads };
    const fromFile = this.runtime.createSessionFromFile?.bind(this.runtime);
    const cacheDir = fromFile ? this.graphCacheDir : undefined;
    if (cacheDir) {
      const cached = await findCachedModel(cacheDir, built).catch(() => undefined);
      if (cached) return timed('create the runtime session (cached graph)', () => fromFile!(cached, options));
    }
    const externalData = await timed('read the weights', () => Promise.all(built.external.map(async (w) => ({ path: w.path, data: await w.load() }))));
    const session = await timed('create the runtime session', () => this.runtime.createSession({ model: built.model, externalData }, options));
    if (cacheDir) {
      // Cache the prepared graph for the next run while this one goes on (dispose() waits for it);
      // started after the session exists so the two do not compete. A cache that cannot be
      // written (read-only, disk full) only costs the next run time.
      this.cacheWrites.push(writeCachedModel(cacheDir, built).then(() => undefined, () => undefined));
    }
    return session;
  }

  private requireTokenizer(): AttnTokenizer {
    if (!this.tokenizer) throw new AttnscopeError(`${this.name}: no tokenizer.json; pass token ids instead of text`);
    return this.tokenizer;
  }

  /**
   * Tokenizes text (and an optional pair) as the model's tokenizer does; with `maxLength`,
   * truncated as transformers does (the longer sequence of a pair first, specials kept).
   */
  async tokenize(text: string, pair?: string, maxLength?: number): Promise<Token[]> {
    if (text.trim() === '' && !pair) throw new AttnscopeError('empty text: nothing to trace');
    return this.requireTokenizer().encode(text, pair, { maxLength });
  }

  tokensFromIds(ids: readonly number[], typeIds?: readonly number[]): Token[] {
    if (ids.length === 0) throw new AttnscopeError('empty input: no token ids');
    if (typeIds && typeIds.length !== ids.length) {
      throw new AttnscopeError(`--type-ids has ${typeIds.length} values but there are ${ids.length} token ids`);
    }
    if (this.tokenizer) return this.tokenizer.tokensFromIds([...ids], typeIds ? [...typeIds] : undefined);
    return ids.map((id, i) => ({ id, text: String(id), start: 0, end: 0, special: false, segment: typeIds?.[i] ?? 0, word: null }));
  }

  /**
   * Runs the model on a text (or on token ids) and returns its Trace. An encoder-decoder given
   * no decoder input generates it (greedily, up to `maxNewTokens`): the trace is then a
   * generation trace.
   */
  async trace(text: string | null, options: TraceOptions = {}): Promise<Trace> {
    if (this.info.kind === 'encoder-decoder' && !options.decoderIds && options.decoderText === undefined) {
      if (options.pair !== undefined) throw new AttnscopeError(`${this.name}: --pair does not apply to an encoder-decoder model`);
      return this.generate(text, { ids: options.ids, maxNewTokens: options.maxNewTokens ?? DEFAULT_NEW_TOKENS, qk: options.qk });
    }
    const truncateAt = options.truncate && Number.isFinite(this.info.maxPositions) ? this.info.maxPositions : undefined;
    let tokens = options.ids ? this.tokensFromIds(options.ids, options.typeIds) : await this.tokenize(text ?? '', options.pair, truncateAt);
    tokens = this.fitLength(tokens, options.truncate ?? false, 'text');
    const inputs: ModelInputs = { inputIds: tokens.map((t) => t.id), typeIds: tokens.map((t) => t.segment) };
    let decoderTokens: Token[] | undefined;
    if (this.info.kind === 'encoder-decoder') {
      decoderTokens = this.fitLength(await this.decoderTokens(options), options.truncate ?? false, 'decoder input');
      inputs.decoderInputIds = decoderTokens.map((t) => t.id);
    } else if (options.decoderIds || options.decoderText !== undefined) {
      throw new AttnscopeError(`${this.name} is not an encoder-decoder model: --decoder-text/--decoder-ids do not apply`);
    }
    const taps: TapRequest = {
      attention: options.attention ?? true,
      qk: options.qk ?? false,
      lastHiddenState: options.hidden ?? false,
      logits: (options.logits ?? false) || (options.topK ?? 0) > 0,
    };
    const maskPositions = options.topK && this.info.kind === 'encoder' ? this.maskPositions(tokens) : [];
    const out = await this.run(taps, inputs);
    const trace = this.assemble(tokens, out);
    if (decoderTokens) trace.decoderTokens = decoderTokens;
    const logits = out.logits;
    if (logits && options.logits) trace.logits = { dims: [logits.dims[1]!, logits.dims[2] ?? 1], data: toFloat32(logits) };
    if (logits && options.topK) {
      const positions = this.info.kind === 'encoder' ? maskPositions : (decoderTokens ?? tokens).map((_, i) => i);
      trace.predictions = topKPredictions(this.checkVocabLogits(logits), positions, options.topK, this.info.kind === 'encoder' ? 'masked' : 'next', (id) => this.tokenizer?.idToToken(id) ?? String(id));
    }
    return trace;
  }

  /** Positions of the tokenizer's mask token; an error when there are none or the model has no mask token. */
  private maskPositions(tokens: readonly Token[]): number[] {
    const mask = this.tokenizer?.mask;
    if (!mask || mask.id === null) throw new AttnscopeError(`${this.name}: its tokenizer has no mask token, so there is nothing to predict`);
    const positions = tokens.flatMap((t, i) => (t.id === mask.id ? [i] : []));
    if (positions.length === 0) throw new AttnscopeError(`the text has no ${mask.text} token to predict (write ${mask.text} where a word should be filled in)`);
    return positions;
  }

  /** Logits over the vocabulary as [positions, vocab]; an error for heads that score rather than predict tokens. */
  private checkVocabLogits(logits: RuntimeTensor): { rows: number; vocab: number; data: Float32Array } {
    if (logits.dims.length !== 3 || logits.dims[2]! < 2) {
      throw new AttnscopeError(`${this.name}: its head (${String(this.config.raw.architectures ?? 'unknown')}) scores tokens rather than predicting them; it has no masked-LM head`);
    }
    return { rows: logits.dims[1]!, vocab: logits.dims[2]!, data: toFloat32(logits) };
  }

  /** Runs the graph for a set of taps on prepared inputs (plus extra feeds such as past keys); returns its outputs by name. */
  async run(taps: TapRequest, inputs: ModelInputs, extra: Readonly<Record<string, RuntimeTensor>> = {}): Promise<Record<string, RuntimeTensor>> {
    const session = await this.session(taps);
    const allFeeds = { ...this.architecture.feeds(this.config, inputs), ...extra };
    const feeds: Record<string, RuntimeTensor> = {};
    for (const name of session.inputNames) {
      const f = allFeeds[name];
      if (!f) throw new Error(`architecture gave no feed for graph input ${name}`);
      feeds[name] = f;
    }
    return timed(`run (${inputs.inputIds.length} tokens)`, () => session.run(feeds));
  }

  /**
   * Generates up to `maxNewTokens` tokens after a prompt, decoding incrementally with a key/value
   * cache (each new token costs one position), and returns the trace of the whole sequence: the
   * prompt's attention and each generated token's row over all earlier tokens, every layer and head.
   */
  async generate(text: string | null, options: GenerateOptions): Promise<Trace> {
    const info = this.info;
    if (info.kind === 'encoder') throw new AttnscopeError(`${this.name} is an encoder (${this.config.modelType}); it does not generate text`);
    if (info.kind === 'encoder-decoder') return generateEncoderDecoder(this, text, options);
    validateSampling(options);
    const maxNew = options.maxNewTokens;
    if (!Number.isInteger(maxNew) || maxNew < 1) throw new AttnscopeError(`--max-new-tokens must be a positive integer, got ${maxNew}`);
    const prompt = options.ids ? this.tokensFromIds(options.ids) : await this.tokenize(text ?? '');
    if (prompt.length + maxNew > info.maxPositions) {
      throw new AttnscopeError(`generation too long: ${prompt.length} prompt tokens + ${maxNew} new tokens = ${prompt.length + maxNew}, but ${this.name} accepts at most ${info.maxPositions} positions`);
    }
    const taps: TapRequest = { attention: true, qk: options.qk ?? false, lastHiddenState: false, logits: true, cache: true };
    const result = await decodeIncrementally(this, taps, ['self'], prompt.map((t) => t.id), maxNew, createSampler(options), this.eosIds(), {});
    const generated = this.tokensFromIds(result.newIds).map((t) => ({ ...t, generated: true }));
    const tokens = [...prompt, ...generated];
    const trace: Trace = { model: this.modelInfo(this.architecture.describe(this.config)), tokens, attention: result.attention };
    if (result.queries && result.keys) {
      trace.queries = result.queries;
      trace.keys = result.keys;
    }
    trace.generation = generationInfo(options, prompt.length, result);
    return trace;
  }

  /** End-of-sequence ids from generation_config.json / config.json. */
  eosIds(): Set<number> {
    const raw = this.generationConfig.eos_token_id ?? this.config.raw.eos_token_id;
    const ids = Array.isArray(raw) ? raw : [raw];
    return new Set(ids.filter((x): x is number => typeof x === 'number'));
  }

  /** The id the decoder starts from: decoder_start_token_id of generation_config.json, else of config.json. */
  get decoderStartId(): number {
    const id = this.generationConfig.decoder_start_token_id ?? this.config.raw.decoder_start_token_id;
    if (typeof id !== 'number') {
      throw new AttnscopeError(`${this.name}: neither generation_config.json nor config.json has a decoder_start_token_id, so the decoder cannot start`);
    }
    return id;
  }

  /** Decoder input tokens: given ids, or the decoder text tokenized and shifted right behind the start token. */
  private async decoderTokens(options: TraceOptions): Promise<Token[]> {
    if (options.decoderIds) {
      if (options.decoderIds.length === 0) throw new AttnscopeError('--decoder-ids is empty');
      return this.tokensFromIds(options.decoderIds);
    }
    if (options.decoderText === undefined || options.decoderText.trim() === '') throw new AttnscopeError('empty decoder text');
    const labels = await this.requireTokenizer().encode(options.decoderText);
    return this.tokensFromIds([this.decoderStartId, ...labels.slice(0, -1).map((t) => t.id)]);
  }

  private fitLength(tokens: Token[], truncate: boolean, what: string): Token[] {
    const max = this.info.maxPositions;
    if (tokens.length <= max) return tokens;
    if (!truncate) {
      throw new AttnscopeError(`${what} too long: ${tokens.length} tokens, but ${this.name} accepts at most ${max} (use --truncate to cut it)`);
    }
    const last = tokens[tokens.length - 1]!;
    const kept = tokens.slice(0, max);
    // Keep the closing special token (e.g. [SEP], </s>) as the tokenizer's own truncation does.
    if (last.special) kept[max - 1] = last;
    return kept;
  }

  private assemble(tokens: Token[], out: Record<string, RuntimeTensor>): Trace {
    const d = this.architecture.describe(this.config);
    const collect = (kind: 'attention' | 'queries' | 'keys'): StackMap => {
      const map: StackMap = {};
      for (const [stack, layers] of Object.entries(d.stacks) as [StackName, number][]) {
        const first = out[`${kind}.${stack}.0`];
        if (!first) continue;
        const arrays: Float32Array[] = [];
        for (let l = 0; l < layers; l++) {
          const t = out[`${kind}.${stack}.${l}`];
          if (!t) throw new Error(`graph output ${kind}.${stack}.${l} missing`);
          arrays.push(toFloat32(t));
        }
        const dims = first.dims.slice(1) as [number, number, number];
        map[stack] = { dims, layers: arrays } satisfies LayerStack;
      }
      return map;
    };
    const trace: Trace = { model: this.modelInfo(d), tokens, attention: collect('attention') };
    if (out['queries.self.0'] || out['queries.encoder.0']) {
      trace.queries = collect('queries');
      trace.keys = collect('keys');
    }
    const hidden = out.last_hidden_state;
    if (hidden) trace.lastHiddenState = { dims: [hidden.dims[1]!, hidden.dims[2]!], data: toFloat32(hidden) };
    const encoderHidden = out.encoder_last_hidden_state;
    if (encoderHidden) trace.encoderLastHiddenState = { dims: [encoderHidden.dims[1]!, encoderHidden.dims[2]!], data: toFloat32(encoderHidden) };
    return trace;
  }

  modelInfo(d: ArchitectureInfo): ModelInfo {
    return {
      name: this.name,
      modelType: this.config.modelType,
      numLayers: d.numLayers,
      numHeads: d.numHeads,
      numKeyValueHeads: d.numKeyValueHeads,
      headDim: d.headDim,
    };
  }

  /** Releases the runtime sessions and open files, after finishing any graph-cache writes. */
  async dispose(): Promise<void> {
    await Promise.all(this.cacheWrites);
    const sessions = [...this.sessions.values()];
    this.sessions.clear();
    for (const s of sessions) await (await s.catch(() => null))?.release();
    await this.weights.close();
  }
}

/** Reads a JSON object file, naming the file in the error when it is not one. */
async function readJsonObject(path: string): Promise<Record<string, unknown>> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new AttnscopeError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new AttnscopeError(`${path}: not a JSON object`);
  return raw as Record<string, unknown>;
}

async function readConfig(files: ModelFiles): Promise<ModelConfig> {
  const path = await files.path('config.json');
  if (!path) throw new AttnscopeError(`${files.name}: not a model directory (no config.json)`);
  return new ModelConfig(await readJsonObject(path), path);
}

async function readGenerationConfig(files: ModelFiles): Promise<Record<string, unknown>> {
  const path = await files.path('generation_config.json');
  return path ? readJsonObject(path) : {};
}

async function readTokenizer(files: ModelFiles): Promise<AttnTokenizer | null> {
  const tokenizerJson = await files.path('tokenizer.json');
  if (!tokenizerJson) return null;
  return loadTokenizer({
    tokenizerJson,
    tokenizerConfig: await files.path('tokenizer_config.json'),
    specialTokensMap: await files.path('special_tokens_map.json'),
  });
}

/**
 * Opens a checkpoint: a local directory, a Hub id (`org/name[@revision]`, through the Hugging
 * Face cache), or, with no source, the embedded stories260k model.
 */
export async function loadModel(source?: string, options: LoadOptions = {}): Promise<Model> {
  const files = await resolveModelSource(source ?? defaultModelDir(), {
    revision: options.revision,
    offline: options.offline,
    progress: options.progress,
  });
  const config = await readConfig(files);
  const architecture = architectureFor(config.modelType);
  architecture.describe(config); // validates the config early
  const tokenizer = await readTokenizer(files);
  const weights = await openWeights(files);
  const generationConfig = await readGenerationConfig(files);
  const cacheRoot = options.graphCache === false ? undefined : (options.graphCache ?? graphCacheRoot());
  const cacheDir = cacheRoot ? await checkpointCacheDir(cacheRoot, files.dir, config.modelType) : undefined;
  return new Model(files, config, architecture, tokenizer, weights, options.runtime ?? nodeRuntime, options.threads, generationConfig, cacheDir);
}
