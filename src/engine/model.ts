/**
 * The model core: runs an architecture's graph through a Runtime and assembles Traces
 * (tokens → graph → runtime → Trace), generation included. It imports nothing from Node: the
 * configuration, tokenizer, weights, runtime and graph cache come in through the small
 * interfaces below (src/engine/load.ts provides them in Node).
 */
import { topKPredictions, type VocabLogits } from '../analysis/predictions.js';
import { AttnscopeError } from '../core/errors.js';
import { timed } from '../core/profile.js';
import type { ModelInfo, StackName, Token, Trace } from '../core/trace.js';
import type { BuildOptions, BuiltModel, ExternalWeight, GraphBuilder } from '../graph/builder.js';
import type { WeightStore } from '../io/weights.js';
import type { Architecture, ArchitectureInfo, BuildContext, ModelInputs, TapRequest } from '../models/architecture.js';
import { bandedAttention, QUERY_BANDS } from '../models/attention.js';
import { createBuildContext } from '../models/build-context.js';
import type { ModelConfig } from '../models/config.js';
import { generateDecoder, generateEncoderDecoder, type GenerateOptions } from '../generation/decode.js';
import type { DecodingModel } from '../generation/decoding-model.js';
import type { GraphSession, Runtime, RuntimeTensor, SessionOptions } from '../runtime/runtime.js';
import { assembleTrace, toFloat32 } from './assemble.js';
import { onDemandBands, resolveAttentionMode, type AttentionMode } from './attention-mode.js';
import { collectLogitLens } from './layer-states.js';
import type { LanguageCodes } from '../tokenizer/language-codes.js';

/** What the model core needs from a tokenizer (the Node loader gives the full `AttnTokenizer`). */
export interface ModelTokenizer {
  readonly mask?: { readonly text: string; readonly id: number | null };
  /** Tokens of a text (and pair) with the specials the tokenizer adds; `maxLength` truncates as transformers does. */
  encode(text: string, pair?: string, options?: { maxLength?: number; srcLang?: string }): Promise<Token[]>;
  /** Translation tokenizers (mBART, M2M100, NLLB): their language codes. */
  readonly languages?: LanguageCodes;
  /** Tokens of a decoder text, for tokenizers with a separate target side (Marian); else `encode` serves. */
  readonly encodeTarget?: (text: string) => Promise<Token[]>;
  tokensFromIds(ids: readonly number[], typeIds?: readonly number[]): Token[];
  decode(ids: readonly number[], skipSpecial?: boolean): string;
  idToToken(id: number): string | null;
}

/** Where prepared graphs are kept between runs (used only with runtimes that open model files). */
export interface GraphCacheHooks {
  /** A model file holding `built` (graph and weights) the runtime can open, or undefined when not cached. */
  find(built: BuiltModel): Promise<string | undefined>;
  /** Stores `built` for later runs. */
  write(built: BuiltModel): Promise<void>;
  /** One prepared weight's bytes, read from the cache (stored there first if missing). */
  weight?(w: ExternalWeight): Promise<Uint8Array>;
}

/** Everything a Model is made of. */
export interface ModelParts<T extends ModelTokenizer = ModelTokenizer> {
  /** Display name: the Hub id or the directory's base name. */
  name: string;
  config: ModelConfig;
  architecture: Architecture;
  /** `architecture.describe(config)` when the caller has it already (it is computed once per model). */
  architectureInfo?: ArchitectureInfo;
  tokenizer: T | null;
  weights: WeightStore;
  runtime: Runtime;
  /** Threads per operator (default: the runtime's). */
  threads?: number;
  /** generation_config.json, when the checkpoint has one. */
  generationConfig?: Readonly<Record<string, unknown>>;
  graphCache?: GraphCacheHooks;
}

export interface TraceOptions {
  /** Second sentence of a pair (sentence B). */
  pair?: string;
  /** Token ids to run instead of tokenizing text. */
  ids?: readonly number[];
  /** Token type (segment) ids to go with `ids`. */
  typeIds?: readonly number[];
  /** Also return per-head queries and keys (and the score terms). */
  qk?: boolean;
  /** Also return the final hidden state. */
  hidden?: boolean;
  /**
   * How attention is recorded: 'dense' (or true, the default) taps every probability
   * (Trace.attention); 'on-demand' taps the queries, keys and score terms instead (Trace.queries,
   * keys, scores; no probabilities leave the graph) and any head's matrix is computed exactly when
   * read (core/attention-on-demand.ts attentionSource); 'auto' is 'on-demand' for inputs of more than
   * `onDemandAbove` tokens; false records no attention (e.g. when only hidden states are wanted).
   */
  attention?: boolean | AttentionMode;
  /** 'auto': the most tokens traced densely (default: engine/attention-mode.ts autoDenseTokens, ~1 GiB of probabilities). */
  onDemandAbove?: number;
  /**
   * On demand: the bands of query rows the graph computes attention in (a power of two; default
   * models/attention.ts queryBandCount of the heads and the length, ~256 MB of scores per band).
   * A run at another length with the same count reuses the session (e.g. a warm-up).
   */
  queryBandCount?: number;
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
  /** Translation tokenizers (mBART, M2M100, NLLB): the source language code (--src-lang) instead of tokenizer_config.json's src_lang. */
  srcLang?: string;
  /**
   * Translation models: the target language code (--tgt-lang). Generation starts the decoder with it
   * (mBART) or forces it as the first token (M2M100, NLLB, mBART-50); a decoder text is encoded with it.
   */
  tgtLang?: string;
  /**
   * Also record what norm-based attention and ALTI need (Trace.contributions: per layer v·W_O per
   * head, the block input, the residual sum, b_O and post-LN parameters). Families that do not
   * build these taps refuse it.
   */
  contributions?: boolean;
  /** Mixture-of-experts models: also record what each layer's router did (Trace.routing). */
  routing?: boolean;
  /** Also record each head's value vectors (Trace.values). */
  values?: boolean;
  /** Also record the token, position and segment embeddings as looked up (Trace.layerStates[stack].embeddings). */
  embeddings?: boolean;
  /** Also record the residual stream before and after attention and after the MLP of every layer (Trace.layerStates[stack].residuals). */
  residuals?: boolean;
  /** Also record the MLP activations of every dense layer (Trace.layerStates[stack].mlpActivations). */
  mlpActivations?: boolean;
  /**
   * Logit lens (Trace.logitLens): each layer's residual through the model's final norm and head,
   * this many top tokens with probabilities per layer and position (1 … vocabulary size).
   */
  logitLens?: number;
  /** A look inside every layer: qk, values, embeddings, residuals and mlpActivations at once. */
  deepDive?: boolean;
}

/** Tokens an encoder-decoder generates when traced without a decoder input. */
const DEFAULT_NEW_TOKENS = 20;

/** What a loaded model tells about itself. */
export interface ModelDescription extends ModelInfo {
  kind: ArchitectureInfo['kind'];
  maxPositions: number;
}

export function tapsKey(t: TapRequest): string {
  // Every tap asked for (set, not false), in a fixed order: new TapRequest fields need no change here.
  return Object.entries(t).filter(([, v]) => v !== undefined && v !== false).map(([k, v]) => `${k}=${String(v)}`).sort().join(':');
}

/**
 * A graph the architecture builds with `taps` and `extend` then grows (e.g. the backward pass of
 * engine/gradients.ts), run as a session cached under `key` (which must name the extension).
 */
export interface GraphExtension {
  key: string;
  extend(ctx: BuildContext): void | Promise<void>;
}

/** Gates of ones (every head as trained) for a stack's `head_gates.<stack>` input [layers, heads]. */
export function onesHeadGates(info: ArchitectureInfo, stack: StackName): RuntimeTensor {
  const layers = info.stacks[stack] ?? 0;
  const heads = info.stackHeads?.[stack] ?? info.numHeads;
  return { type: 'float32', dims: [layers, heads], data: new Float32Array(layers * heads).fill(1) };
}

export class Model<T extends ModelTokenizer = ModelTokenizer> implements DecodingModel {
  readonly name: string;
  readonly config: ModelConfig;
  readonly architecture: Architecture;
  readonly tokenizer: T | null;
  /** generation_config.json, when the checkpoint has one. */
  readonly generationConfig: Readonly<Record<string, unknown>>;
  /** The architecture's description of this checkpoint (stacks, heads, positions, scoring). */
  readonly architectureInfo: ArchitectureInfo;
  /** What the model tells about itself. */
  readonly info: Readonly<ModelDescription>;
  private readonly weights: WeightStore;
  private readonly runtime: Runtime;
  private readonly threads: number | undefined;
  private readonly graphCache: GraphCacheHooks | undefined;
  private readonly sessions = new Map<string, Promise<GraphSession>>();
  /** Graph-cache writes still under way. */
  private readonly cacheWrites: Promise<void>[] = [];
  /**
   * The architecture sets no position limit (ALiBi, relative buckets): maxPositions is the memory
   * bound of attention on demand (onDemandTokenLimit), and runs that record attention densely stop
   * at denseTokenLimit.
   */
  private readonly unboundedPositions: boolean;
  /** The most tokens a dense trace of a model without a position limit takes (tracedTokenLimit); Infinity otherwise. */
  readonly denseTokenLimit: number;
  private weightBytesMemo: number | undefined;

  /** Bytes of every checkpoint tensor as float32 (what the runtime holds of them when it keeps every layer). */
  get weightBytes(): number {
    this.weightBytesMemo ??= this.weights.names().reduce((sum, name) => sum + this.weights.shape(name).reduce((a, b) => a * b, 1) * 4, 0);
    return this.weightBytesMemo;
  }

  constructor(parts: ModelParts<T>) {
    this.name = parts.name;
    this.config = parts.config;
    this.architecture = parts.architecture;
    this.tokenizer = parts.tokenizer;
    this.weights = parts.weights;
    this.runtime = parts.runtime;
    this.threads = parts.threads;
    this.generationConfig = parts.generationConfig ?? {};
    this.graphCache = parts.graphCache;
    const described = parts.architectureInfo ?? parts.architecture.describe(parts.config);
    // A model without a position limit (T5's relative positions, ALiBi) still gets one: the most
    // tokens whose queries and keys fit in memory on demand; dense runs stop where their attention
    // maps would not (beyond either the runtime or V8 dies without a message).
    this.unboundedPositions = !Number.isFinite(described.maxPositions);
    this.denseTokenLimit = this.unboundedPositions ? tracedTokenLimit(described) : Number.POSITIVE_INFINITY;
    const d = this.unboundedPositions ? { ...described, maxPositions: onDemandTokenLimit(described) } : described;
    this.architectureInfo = d;
    this.info = { ...this.traceModelInfo(), kind: d.kind, maxPositions: d.maxPositions };
  }

  /** The Trace's `model` field (a new object each time). */
  traceModelInfo(): ModelInfo {
    const d = this.architectureInfo;
    return {
      name: this.name,
      modelType: this.config.modelType,
      numLayers: d.numLayers,
      numHeads: d.numHeads,
      numKeyValueHeads: d.numKeyValueHeads,
      headDim: d.headDim,
    };
  }

  /** The graph session for a set of taps, built once and cached. */
  session(taps: TapRequest, extension?: GraphExtension): Promise<GraphSession> {
    const key = extension ? `${tapsKey(taps)}+${extension.key}` : tapsKey(taps);
    let s = this.sessions.get(key);
    if (!s) {
      s = this.buildSession(taps, extension);
      this.sessions.set(key, s);
      s.catch(() => this.sessions.delete(key));
    }
    return s;
  }

  private async buildSession(taps: TapRequest, extension?: GraphExtension): Promise<GraphSession> {
    const ctx = createBuildContext(this.config, this.weights, taps, this.architectureInfo);
    const built = await timed('build the graph', async () => {
      await this.architecture.build(ctx);
      if (extension) await extension.extend(ctx);
      return ctx.g.build();
    });
    return this.openBuilt(built);
  }

  /**
   * The graph of `taps` as built, not encoded (engine/layerwise.ts cuts it into per-layer
   * segments, with its dead nodes kept, and opens each with `cachedSession`).
   */
  async buildGraph(taps: TapRequest, options?: BuildOptions): Promise<Awaited<ReturnType<GraphBuilder['buildGraph']>>> {
    const ctx = createBuildContext(this.config, this.weights, taps, this.architectureInfo);
    await this.architecture.build(ctx);
    return ctx.g.buildGraph(options);
  }

  /**
   * A session made by `make` (e.g. from `openBuilt`), kept under `key` with the model's other
   * sessions (one per key; released by `dispose`).
   */
  cachedSession(key: string, make: () => Promise<GraphSession>): Promise<GraphSession> {
    let s = this.sessions.get(key);
    if (!s) {
      s = make();
      this.sessions.set(key, s);
      s.catch(() => this.sessions.delete(key));
    }
    return s;
  }

  /**
   * A prepared weight's bytes (as `w.load` gives them): from the graph cache when there is one (no
   * checkpoint read nor transpose after the first time), else prepared from the checkpoint.
   */
  async preparedWeight(w: ExternalWeight): Promise<Uint8Array> {
    const cache = this.graphCache;
    return cache?.weight ? cache.weight(w).catch(() => w.load()) : w.load();
  }

  /** A runtime session for an encoded graph and its weights, through the graph cache when there is one. */
  async openBuilt(built: BuiltModel, sessionOptions: Omit<SessionOptions, 'threads'> = {}): Promise<GraphSession> {
    const options = { ...sessionOptions, threads: this.threads };
    const fromFile = this.runtime.createSessionFromFile?.bind(this.runtime);
    const cache = fromFile ? this.graphCache : undefined;
    if (fromFile && cache) {
      const cached = await cache.find(built).catch(() => undefined);
      if (cached) return timed('create the runtime session (cached graph)', () => fromFile(cached, options));
    }
    const externalData = await timed('read the weights', () => Promise.all(built.external.map(async (w) => ({ path: w.path, data: await w.load() }))));
    const session = await timed('create the runtime session', () => this.runtime.createSession({ model: built.model, externalData }, options));
    if (cache) {
      // Cache the prepared graph for the next run while this one goes on (dispose() waits for it);
      // started after the session exists so the two do not compete. A cache that cannot be
      // written (read-only, disk full) only costs the next run time.
      this.cacheWrites.push(cache.write(built).then(() => undefined, () => undefined));
    }
    return session;
  }

  private requireTokenizer(): T {
    if (!this.tokenizer) throw new AttnscopeError(`${this.name}: no tokenizer.json; pass token ids instead of text`);
    return this.tokenizer;
  }

  /**
   * Tokenizes text (and an optional pair) as the model's tokenizer does; with `maxLength`,
   * truncated as transformers does (the longer sequence of a pair first, specials kept). Any
   * text the tokenizer turns into tokens is accepted (whitespace too); none at all is an error.
   */
  async tokenize(text: string, pair?: string, maxLength?: number, srcLang?: string): Promise<Token[]> {
    const tokens = await this.requireTokenizer().encode(text, pair, srcLang === undefined ? { maxLength } : { maxLength, srcLang });
    if (tokens.length === 0) throw new AttnscopeError(`empty text: ${this.name}'s tokenizer gives no tokens for ${JSON.stringify(text.slice(0, 20))}, so there is nothing to run`);
    return tokens;
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
    const { kind } = this.info;
    this.checkTraceOptions(options);
    const deep = options.deepDive ?? false;
    if (kind === 'encoder-decoder' && !options.decoderIds && options.decoderText === undefined) {
      if (options.pair !== undefined) throw new AttnscopeError(`${this.name}: --pair does not apply to an encoder-decoder model`);
      if (deep || options.logitLens || options.values || options.embeddings || options.residuals || options.mlpActivations) {
        throw new AttnscopeError(`${this.name}: a look inside the layers (--deep-dive, --logit-lens) needs a decoder input on an encoder-decoder model (--decoder-text or --decoder-ids)`);
      }
      // Generating always records attention: dense, or on demand (the older boolean option: dense).
      const attention = typeof options.attention === 'boolean' ? undefined : options.attention;
      return this.generate(text, { ids: options.ids, maxNewTokens: options.maxNewTokens ?? DEFAULT_NEW_TOKENS, qk: options.qk, attention, onDemandAbove: options.onDemandAbove, srcLang: options.srcLang, tgtLang: options.tgtLang });
    }
    const prepared = await this.prepareRun(text, options);
    return this.traceOf(prepared, await this.run(prepared.taps, prepared.inputs), options);
  }

  /** The Trace of a prepared run's graph outputs (as `trace` makes it; engine/layerwise.ts gathers them by layer). */
  traceOf(prepared: Awaited<ReturnType<Model['prepareRun']>>, out: Readonly<Record<string, RuntimeTensor>>, options: TraceOptions): Trace {
    const { kind } = this.info;
    const { tokens, decoderTokens, maskPositions } = prepared;
    const trace = this.assemble(tokens, out);
    if (decoderTokens) trace.decoderTokens = decoderTokens;
    const logits = out.logits;
    if (logits && options.logits) trace.logits = { dims: [logits.dims[1]!, logits.dims[2] ?? 1], data: toFloat32(logits) };
    if (options.logitLens) {
      const lens = collectLogitLens(out, this.architectureInfo, (id) => this.tokenizer?.idToToken(id) ?? String(id));
      if (!lens) throw new AttnscopeError(`--logit-lens: ${this.name} (${this.config.modelType}) has no language-model head to read the layers through`);
      trace.logitLens = lens;
    }
    if (logits && options.topK) {
      const positions = kind === 'encoder' ? maskPositions : (decoderTokens ?? tokens).map((_, i) => i);
      trace.predictions = topKPredictions(this.checkVocabLogits(logits), positions, options.topK, kind === 'encoder' ? 'masked' : 'next', (id) => this.tokenizer?.idToToken(id) ?? String(id));
    }
    return trace;
  }

  /**
   * What a single forward pass of `trace` runs (not a generation): the tokens (and decoder tokens),
   * the graph inputs, the taps and, for masked LMs asked for predictions, the mask positions.
   */
  async prepareRun(text: string | null, options: TraceOptions): Promise<{ tokens: Token[]; decoderTokens?: Token[]; inputs: ModelInputs; taps: TapRequest; maskPositions: number[] }> {
    const { kind, maxPositions } = this.info;
    const deep = options.deepDive ?? false;
    const truncateAt = options.truncate && Number.isFinite(maxPositions) ? maxPositions : undefined;
    let tokens = options.ids ? this.tokensFromIds(options.ids, options.typeIds) : await this.tokenize(text ?? '', options.pair, truncateAt, options.srcLang);
    tokens = this.fitLength(tokens, options.truncate ?? false, 'text');
    const inputs: ModelInputs = { inputIds: tokens.map((t) => t.id), typeIds: tokens.map((t) => t.segment) };
    let decoderTokens: Token[] | undefined;
    if (kind === 'encoder-decoder') {
      decoderTokens = this.fitLength(await this.decoderTokens(options), options.truncate ?? false, 'decoder input');
      inputs.decoderInputIds = decoderTokens.map((t) => t.id);
    } else if (options.decoderIds || options.decoderText !== undefined) {
      throw new AttnscopeError(`${this.name} is not an encoder-decoder model: --decoder-text/--decoder-ids do not apply`);
    }
    const recorded = resolveAttentionMode(options.attention, this.architectureInfo, tokens.length, decoderTokens?.length, options.onDemandAbove);
    if (recorded !== 'on-demand') {
      // Dense maps (or none: the graph is not banded) of a model without a position limit: its memory bound.
      tokens = this.fitDense(tokens, options.truncate ?? false, 'text');
      inputs.inputIds = tokens.map((t) => t.id);
      inputs.typeIds = tokens.map((t) => t.segment);
      if (decoderTokens) {
        decoderTokens = this.fitDense(decoderTokens, options.truncate ?? false, 'decoder input');
        inputs.decoderInputIds = decoderTokens.map((t) => t.id);
      }
    }
    const taps: TapRequest = {
      attention: recorded === 'dense',
      qk: (options.qk ?? false) || recorded === 'on-demand',
      lastHiddenState: options.hidden ?? false,
      logits: (options.logits ?? false) || (options.topK ?? 0) > 0,
      ...(options.contributions ? { contributions: true } : {}),
      ...(options.routing ? { routing: true } : {}),
      ...(options.values || deep ? { values: true } : {}),
      ...(options.embeddings || deep ? { embeddings: true } : {}),
      ...(options.residuals || deep ? { residuals: true } : {}),
      ...(options.mlpActivations || deep ? { mlpActivations: true } : {}),
      ...(options.logitLens ? { logitLens: options.logitLens } : {}),
    };
    if (deep) taps.qk = true;
    if (bandedAttention(taps)) {
      const bands = onDemandBands(this.architectureInfo, tokens.length, decoderTokens?.length, options.queryBandCount);
      if (bands !== QUERY_BANDS) taps.queryBandCount = bands;
    }
    const maskPositions = options.topK && kind === 'encoder' ? this.maskPositions(tokens) : [];
    return { tokens, ...(decoderTokens ? { decoderTokens } : {}), inputs, taps, maskPositions };
  }

  /**
   * Refuses the options this model cannot trace before anything runs (what `trace` checks; a
   * layer-by-layer run, engine/layerwise.ts traceModel, checks the same): contributions where they
   * are not wired, routing without mixture-of-experts layers, a logit-lens size that is not an
   * integer from 1 to the vocabulary size.
   */
  checkTraceOptions(options: TraceOptions): void {
    if (options.contributions && !this.architectureInfo.contributions) {
      throw new AttnscopeError(`--contributions: not available for ${this.name} (${this.config.modelType}); norm-based attention and ALTI are wired for the self-attention of bert, roberta, xlm-roberta, camembert, electra, distilbert, albert, deberta-v2 (not with a ConvLayer), mpnet, gpt2, opt, olmo, starcoder2, bloom, stablelm, gpt_neox, phi, gptj, cohere, falcon, mixtral, qwen2_moe, the llama family (llama, mistral, qwen2, gemma) and the encoder and decoder self-attention of t5, mt5, umt5, bart, mbart, marian, m2m100 and pegasus (not cross attention)`);
    }
    if (options.routing && !this.architectureInfo.routing) {
      throw new AttnscopeError(`--routing: ${this.name} (${this.config.modelType}) has no mixture-of-experts layers; routing is recorded for mixtral and qwen2_moe`);
    }
    const k = options.logitLens;
    if (k === undefined) return;
    const vocab = this.config.has('vocab_size') ? this.config.int('vocab_size') : Infinity;
    if (!Number.isInteger(k) || k < 1 || k > vocab) {
      throw new AttnscopeError(`--logit-lens: ${k} top tokens is out of range; allowed: 1 to ${Number.isFinite(vocab) ? `${vocab} (${this.name}'s vocab_size)` : 'the vocabulary size'}`);
    }
  }

  /** The Trace of graph outputs named as a full run names them (see DecodingModel.assemble). */
  assemble(tokens: Token[], outputs: Readonly<Record<string, RuntimeTensor>>): Trace {
    return assembleTrace(this.traceModelInfo(), this.architectureInfo, tokens, outputs);
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
  private checkVocabLogits(logits: RuntimeTensor): VocabLogits {
    if (logits.dims.length !== 3 || logits.dims[2]! < 2) {
      throw new AttnscopeError(`${this.name}: its head (${String(this.config.raw.architectures ?? 'unknown')}) scores tokens rather than predicting them; it has no masked-LM head`);
    }
    return { rows: logits.dims[1]!, vocab: logits.dims[2]!, data: toFloat32(logits) };
  }

  /** Runs the graph for a set of taps on prepared inputs (plus extra feeds such as past keys); returns its outputs by name. */
  async run(taps: TapRequest, inputs: ModelInputs, extra: Readonly<Record<string, RuntimeTensor>> = {}): Promise<Record<string, RuntimeTensor>> {
    return this.runExtended(taps, undefined, inputs, extra);
  }

  /**
   * Like `run`, on the graph of `taps` grown by `extension` (when given). Head gates
   * (`head_gates.<stack>`) not in `extra` are fed as ones.
   */
  async runExtended(taps: TapRequest, extension: GraphExtension | undefined, inputs: ModelInputs, extra: Readonly<Record<string, RuntimeTensor>> = {}): Promise<Record<string, RuntimeTensor>> {
    this.checkInputs(inputs);
    const session = await this.session(taps, extension);
    const feeds = this.feedsFor(session.inputNames, inputs, extra);
    return timed(`run (${inputs.inputIds.length} tokens)`, () => session.run(feeds));
  }

  /** The feeds of graph inputs `names` for `inputs` (plus `extra`); head gates not in `extra` are ones. */
  feedsFor(names: readonly string[], inputs: ModelInputs, extra: Readonly<Record<string, RuntimeTensor>> = {}): Record<string, RuntimeTensor> {
    this.checkInputs(inputs);
    const allFeeds = { ...this.architecture.feeds(this.config, inputs), ...extra };
    const feeds: Record<string, RuntimeTensor> = {};
    for (const name of names) {
      const gated = name.startsWith('head_gates.') && !allFeeds[name] ? (name.slice('head_gates.'.length) as StackName) : null;
      const f = gated ? onesHeadGates(this.architectureInfo, gated) : allFeeds[name];
      if (!f) throw new Error(`architecture gave no feed for graph input ${name}`);
      feeds[name] = f;
    }
    return feeds;
  }

  /**
   * Token ids within the embedding tables (config.json's vocab_size, type_vocab_size): beyond them
   * the runtime's gather fails without saying which id or why (a tokenizer larger than the
   * model, an id or --type-ids typed by hand).
   */
  private checkInputs(inputs: ModelInputs): void {
    const limits: [readonly number[] | undefined, string, string][] = [
      [inputs.inputIds, 'vocab_size', 'token id'],
      [inputs.decoderInputIds, 'vocab_size', 'decoder token id'],
      // A single token type (RoBERTa) is fed as zeros whatever the segments.
      [this.config.has('type_vocab_size') && this.config.int('type_vocab_size') > 1 ? inputs.typeIds : undefined, 'type_vocab_size', 'token type id'],
    ];
    for (const [ids, key, what] of limits) {
      if (!ids || !this.config.has(key)) continue;
      const size = this.config.int(key);
      const bad = ids.find((id) => !(Number.isInteger(id) && id >= 0 && id < size));
      if (bad !== undefined) {
        const hint = key === 'type_vocab_size' ? '' : ' (is the tokenizer made for this model?)';
        throw new AttnscopeError(`${what} ${bad} is outside ${this.name}'s ${key} of ${size} (${this.config.source}); allowed: 0 to ${size - 1}${hint}`);
      }
    }
  }

  /**
   * Generates up to `maxNewTokens` tokens after a prompt, decoding incrementally with a key/value
   * cache (each new token costs one position), and returns the trace of the whole sequence: the
   * prompt's attention and each generated token's row over all earlier tokens, every layer and head.
   */
  async generate(text: string | null, options: GenerateOptions): Promise<Trace> {
    const kind = this.info.kind;
    if (kind === 'encoder') throw new AttnscopeError(`${this.name} is an encoder (${this.config.modelType}); it does not generate text`);
    if (this.unboundedPositions) {
      const prompt = options.ids?.length ?? (await this.tokenize(text ?? '', undefined, undefined, options.srcLang)).length;
      if (kind === 'encoder-decoder') this.checkDenseGeneration(options, prompt, 1 + options.maxNewTokens);
      else this.checkDenseGeneration(options, prompt + options.maxNewTokens);
    }
    return kind === 'encoder-decoder' ? generateEncoderDecoder(this, text, options) : generateDecoder(this, text, options);
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

  /** Translation tokenizers: their language codes (for --src-lang / --tgt-lang). */
  get languages(): LanguageCodes | undefined {
    return this.tokenizer?.languages;
  }

  /** forced_bos_token_id of generation_config.json, else of config.json: the first token generation must produce. */
  get forcedBosId(): number | undefined {
    const id = this.generationConfig.forced_bos_token_id ?? this.config.raw.forced_bos_token_id;
    return typeof id === 'number' ? id : undefined;
  }

  /**
   * forced_eos_token_id of generation_config.json, else of config.json (the first of a list): the
   * token transformers' ForcedEOSTokenLogitsProcessor forces when generation reaches its length limit.
   */
  get forcedEosId(): number | undefined {
    const raw = this.generationConfig.forced_eos_token_id ?? this.config.raw.forced_eos_token_id;
    const id = Array.isArray(raw) ? raw[0] : raw;
    return typeof id === 'number' ? id : undefined;
  }

  /** Decoder input tokens: given ids, or the decoder text tokenized and shifted right behind the start token. */
  private async decoderTokens(options: TraceOptions): Promise<Token[]> {
    // --tgt-lang: the decoder text in target mode, as transformers' text_target encodes it.
    const targetLang = options.tgtLang === undefined ? {} : { srcLang: options.tgtLang };
    if (options.decoderIds) {
      if (options.decoderIds.length === 0) throw new AttnscopeError('--decoder-ids is empty');
      return this.tokensFromIds(options.decoderIds);
    }
    const tokenizer = this.requireTokenizer();
    const target = options.decoderText ?? '';
    const labels = await (tokenizer.encodeTarget ? tokenizer.encodeTarget(target) : tokenizer.encode(target, undefined, targetLang));
    if (labels.length === 0) throw new AttnscopeError(`empty decoder text: ${this.name}'s tokenizer gives no tokens for it`);
    return this.tokensFromIds([this.decoderStartId, ...labels.slice(0, -1).map((t) => t.id)]);
  }

  private fitLength(tokens: Token[], truncate: boolean, what: string, max = this.info.maxPositions): Token[] {
    if (tokens.length <= max) return tokens;
    if (!truncate) {
      const why = !this.unboundedPositions
        ? `${this.name} accepts at most ${max}`
        : max === this.denseTokenLimit
          ? `the attention maps of more than ${max} tokens would not fit in ${TRACE_BUDGET_GIB} GiB (${this.name} sets no position limit; attention on demand, --attention on-demand, goes to ${this.info.maxPositions})`
          : `the queries and keys of more than ${max} tokens would not fit in ${ON_DEMAND_BUDGET_GIB} GiB on demand (${this.name} sets no position limit)`;
      throw new AttnscopeError(`${what} too long: ${tokens.length} tokens, but ${why} (use --truncate to cut it)`);
    }
    const last = tokens[tokens.length - 1]!;
    const kept = tokens.slice(0, max);
    // Keep the closing special token (e.g. [SEP], </s>) as the tokenizer's own truncation does.
    if (last.special) kept[max - 1] = last;
    return kept;
  }

  /** fitLength against the dense bound of a model without a position limit (denseTokenLimit). */
  private fitDense(tokens: Token[], truncate: boolean, what: string): Token[] {
    return this.fitLength(tokens, truncate, what, this.denseTokenLimit);
  }

  /**
   * Refuses a generation recorded densely beyond denseTokenLimit (a model without a position limit:
   * on demand it may go to maxPositions), before any run: `tokens` the encoder's or the decoder's
   * whole sequence, `decoderTokens` an encoder-decoder's decoder side.
   */
  private checkDenseGeneration(options: GenerateOptions, tokens: number, decoderTokens?: number): void {
    if (!this.unboundedPositions) return;
    const mode = resolveAttentionMode(options.attention ?? 'dense', this.architectureInfo, tokens, decoderTokens, options.onDemandAbove);
    const longest = Math.max(tokens, decoderTokens ?? 0);
    if (mode !== 'on-demand' && longest > this.denseTokenLimit) {
      throw new AttnscopeError(`generation too long: ${longest} positions, but the attention maps of more than ${this.denseTokenLimit} tokens would not fit in ${TRACE_BUDGET_GIB} GiB (${this.name} sets no position limit; attention on demand, --attention on-demand, goes to ${this.info.maxPositions})`);
    }
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

/** Memory the attention maps of one trace may take when the model sets no length limit (T5's relative positions). */
const TRACE_BUDGET_GIB = 1;

/** Memory the queries and keys of an on-demand trace may take when the model sets no length limit. */
const ON_DEMAND_BUDGET_GIB = 8;

/**
 * Most tokens whose queries and keys (every stack and layer, float32: what an on-demand trace holds,
 * its biases being O(n) since they are built per band) fit in ON_DEMAND_BUDGET_GIB: 43,690 for
 * BLOOM-560m (24 layers, 16 heads of 64), 116,508 for t5-small. Each band's scores stay near 256 MiB.
 */
function onDemandTokenLimit(info: ArchitectureInfo): number {
  let perToken = 0;
  for (const [stack, layers] of Object.entries(info.stacks) as [StackName, number][]) {
    const heads = info.stackHeads?.[stack] ?? info.numHeads;
    perToken += layers * (heads + info.numKeyValueHeads) * info.headDim * 4;
  }
  return Math.max(1, Math.floor((ON_DEMAND_BUDGET_GIB * 2 ** 30) / Math.max(1, perToken)));
}

/** Most tokens whose attention maps (every stack, layer and head; float32) fit in TRACE_BUDGET_GIB. */
function tracedTokenLimit(info: ArchitectureInfo): number {
  const layers = Object.values(info.stacks).reduce((a: number, b) => a + (b ?? 0), 0);
  const maps = Math.max(1, layers * info.numHeads);
  return Math.max(1, Math.floor(Math.sqrt((TRACE_BUDGET_GIB * 2 ** 30) / 4 / maps)));
}
