/**
 * Traces for the API: request validation, the result cache (LRU keyed by model revision, inputs
 * and taps, bounded in bytes), identical requests sharing one run, a bound on runs at once, and
 * the conversion of a Trace into the frames of the binary stream (protocol.ts).
 *
 * Single forward passes run layer by layer (engine/layerwise.ts) and each layer's frames are sent
 * as soon as it is computed (`streaming: 'per-layer'`); a run that every request waiting for it
 * has left (the browser moved on, or went away) stops before its next layer. A causal model's
 * first run of a text (no kept token prefix in append.ts) streams layer by layer too, with the keys
 * and values tapped, and then seeds append.ts's key/value cache, so that a later edit that only
 * appends text runs only the new tokens. Generation (encoder-decoders without a decoder text) and
 * causal texts extending a kept prefix (append.ts) return every layer at the end of their run,
 * then streamed one frame each (`streaming: 'after-run'`). Finished answers are kept in the cache
 * as the frames they sent. A request naming a `head` gets, in an on-demand stream, that head's
 * queries and keys of layer 0 before the layer itself (engine/layerwise.ts previewHead; not kept in
 * the cache).
 */
import { randomUUID } from 'node:crypto';
import { AttnscopeError } from '../core/errors.js';
import { expandBias, scoresWithoutPositionBias } from '../core/position-bias.js';
import type { LayerStack, ModelInfo, Prediction, ScoreTerms, StackName, Trace } from '../core/trace.js';
import { toFloat32 } from '../engine/assemble.js';
import { openPreviewSession, traceLayers, type HeadPreview, type LayerOutputs, type LayerwiseOptions, type PreparedRun } from '../engine/layerwise.js';
import { tapName, type ArchitectureInfo } from '../models/architecture.js';
import { relativeBiasOutput } from '../models/attention.js';
import type { RuntimeTensor } from '../runtime/runtime.js';
import type { PayloadScoreTerms } from '../views/html/payload.js';
import type { ModelCatalog, ModelLocation } from './catalog.js';
import { AppendCache, appendable, type AppendRequest } from './append.js';
import { Gate } from './gate.js';
import { ByteLru } from './lru.js';
import { isInt, isObject, locateModel, modelField, optionalTextField, RequestError, requestBody, textField } from './request-checks.js';
import { abortable, onAbortOrDone, pause } from './abortable.js';
import type { Lease, ModelPool } from './pool.js';
import { jsonFrame, layerFrame, PREVIEW_TENSOR_INDEX, type ServerLimits, type StreamEnd, type StreamHeader, type StreamTensor, type TraceRequest, type TraceTaps } from './protocol.js';

export { RequestError };

/**
 * Finds a request's model and leases it from the pool: a model the catalog does not offer is a 404,
 * one that cannot be loaded a 400, both naming the field `model`.
 */
export async function leaseModel(catalog: ModelCatalog, pool: ModelPool, model: string, signal?: AbortSignal): Promise<{ location: ModelLocation; lease: Lease }> {
  const location = await locateModel(catalog, model);
  const lease = await pool.acquire(location, undefined, signal).catch((e: unknown) => {
    if (e instanceof AttnscopeError) throw new RequestError(400, e.message.startsWith('model:') ? e.message : `model: ${e.message}`, 'model');
    throw e;
  });
  return { location, lease };
}

/** A finished trace as the stream sends it (the header is completed per answer). */
export interface TraceResult {
  header: Omit<StreamHeader, 'cached'>;
  /** The frames after the header, end frame excepted (layers; with per-layer streaming also tensor declarations and predictions). */
  layers: Uint8Array[];
  bytes: number;
  loadMs: number;
  runMs: number;
}

const ALLOWED_FIELDS = new Set(['model', 'text', 'textPair', 'decoderText', 'maxNewTokens', 'taps', 'head']);
/** Bound of `head` before the model is known (then its own head count bounds it: checkTokens). */
const MAX_HEAD = 4095;
const ALLOWED_TAPS = new Set(['qk', 'topK']);

/** Checks a parsed body against the API's types and limits. */
export function validateTraceRequest(body: unknown, limits: ServerLimits): Required<Pick<TraceRequest, 'model' | 'text'>> & TraceRequest & { taps: Required<TraceTaps> } {
  const b = requestBody(body, ALLOWED_FIELDS, '{model, text, textPair?, decoderText?, taps?, head?}');
  const out: TraceRequest & { taps: Required<TraceTaps> } = { model: modelField(b.model), text: textField('text', b.text, limits), taps: { qk: false, topK: 0 } };
  const pair = optionalTextField('textPair', b.textPair, limits);
  const decoder = optionalTextField('decoderText', b.decoderText, limits);
  if (pair !== undefined && pair !== '') out.textPair = pair;
  if (decoder !== undefined) out.decoderText = decoder;
  if (b.maxNewTokens !== undefined) {
    const n = b.maxNewTokens;
    if (!isInt(n) || n < 1 || n > limits.maxNewTokens) throw new RequestError(400, `maxNewTokens: an integer from 1 to ${limits.maxNewTokens}`, 'maxNewTokens');
    out.maxNewTokens = n;
  }
  if (b.head !== undefined) {
    if (!isInt(b.head) || b.head < 0 || b.head > MAX_HEAD) throw new RequestError(400, `head: an integer from 0 to ${MAX_HEAD}`, 'head');
    out.head = b.head;
  }
  if (b.taps !== undefined) {
    if (!isObject(b.taps)) throw new RequestError(400, 'taps: an object {qk?: boolean, topK?: integer}', 'taps');
    const t = b.taps;
    for (const k of Object.keys(t)) if (!ALLOWED_TAPS.has(k)) throw new RequestError(400, `taps.${k.slice(0, 40)}: unknown tap (allowed: qk, topK)`, `taps.${k.slice(0, 40)}`);
    if (t.qk !== undefined && typeof t.qk !== 'boolean') throw new RequestError(400, 'taps.qk: true or false', 'taps.qk');
    if (t.topK !== undefined && (!isInt(t.topK) || t.topK < 0 || t.topK > limits.maxTopK)) {
      throw new RequestError(400, `taps.topK: an integer from 0 to ${limits.maxTopK}`, 'taps.topK');
    }
    out.taps = { qk: t.qk === true, topK: (t.topK as number | undefined) ?? 0 };
  }
  return out as ReturnType<typeof validateTraceRequest>;
}

/** A run shared by identical requests; its frames are kept as they are made, for every request following it. */
interface SharedRun {
  promise: Promise<TraceResult>;
  controller: AbortController;
  /** The run's name for its followers' pages (TraceAnswer.run), to tell it their first view is drawn. */
  id: string;
  /** Fires when a page following the run has drawn its first view (TraceService.drawn): the pause after the first segment ends. */
  drawn: AbortController;
  /** Requests waiting for it. */
  waiters: number;
  /** Set once the tokens are known (before the first layer). */
  header?: Omit<StreamHeader, 'cached'>;
  /** Frames after the header made so far. */
  frames: Uint8Array[];
  /** Resolves (and is replaced) whenever the header or a frame is added, and when the run ends. */
  changed: Promise<void>;
  notify(): void;
  /** The requests following the run: frames each has handed to its connection and had taken (see `handedOut`). */
  followers: Set<{ taken: number }>;
  /** Resolves (and is replaced) whenever a follower's connection has taken every frame made so far. */
  caughtUp: Promise<void>;
  notifyCaughtUp(): void;
}

/** A trace answer being sent: its frames as they are made. */
export interface TraceAnswer {
  cached: boolean;
  frames: AsyncGenerator<Uint8Array>;
  /** The run sending them (not for a cached answer): the page names it when its first view is drawn (TraceService.drawn). */
  run?: string;
}

/** What a run reports to TraceServiceOptions.onLayerSent (tests follow the order of events with it). */
export interface LayerEvent {
  /** The segment's index in the run and the number of segments. */
  index: number;
  count: number;
  /** The run's signal: it fires when every request following the run has gone. */
  signal: AbortSignal;
  /**
   * Where the time went (bench/layerwise.ts --app): milliseconds from the run's start (after its
   * turn and lease) to the input tokenized and to this segment's frames made; the segment's session
   * (opened or found open) and weights, its run, the encoding of its frames, the wait for the
   * connections to take them; their bytes.
   */
  timing: { preparedAt: number; sentAt: number; session: number; run: number; encode: number; handOut: number; bytes: number };
  /** The event of the head preview (requests naming a `head`), before the first segment's own. */
  preview?: true;
}

export interface TraceServiceOptions {
  limits: ServerLimits;
  /** Bytes of finished traces kept for repeated requests. */
  cacheBytes: number;
  /** Forward passes at once (default 2). */
  concurrentRuns?: number;
  /** Forward passes that may wait for their turn (default 256); more are refused with 503. */
  maxWaiting?: number;
  /**
   * Called (and awaited) by a per-layer run after each layer's frames were handed to the requests
   * following it and before the next layer is computed.
   */
  onLayerSent?: (event: LayerEvent) => void | Promise<void>;
}

export class TraceService {
  readonly cache: ByteLru<string, TraceResult>;
  private readonly inflight = new Map<string, SharedRun>();
  private readonly gate: Gate;
  /** Forward passes run (a test reads it to see cache hits and shared runs). */
  runs = 0;
  /** See TraceServiceOptions.onLayerSent (settable, for tests following a run's events). */
  onLayerSent: TraceServiceOptions['onLayerSent'];
  /**
   * Per-layer runs record attention on demand (queries and keys; the page computes the blocks it
   * shows) above this many tokens; default: engine/attention-mode.ts autoDenseTokens of the model
   * (~1 GiB of probabilities: 724 tokens for 16 layers × 32 heads). Settable (tests).
   */
  onDemandAbove: number | undefined = undefined;
  /**
   * The longest an on-demand per-layer run waits after handing out its first segment (the
   * embeddings and layer 0's queries and keys; or the head preview) before it runs the next one,
   * so that the page decodes, mounts and computes the first layer's view without the server's run
   * on every core (bench/layerwise.ts --app; one pause per trace). The page ends the wait when
   * its view is drawn (`drawn`), a request leaving ends it too; clients that say nothing (not
   * the app) wait this long once. Settable (tests).
   */
  firstLayerPauseMs = FIRST_LAYER_PAUSE_MS;

  constructor(
    private readonly catalog: ModelCatalog,
    private readonly pool: ModelPool,
    private readonly options: TraceServiceOptions,
  ) {
    this.cache = new ByteLru(options.cacheBytes);
    this.onLayerSent = options.onLayerSent;
    this.gate = new Gate(options.concurrentRuns ?? 2, options.maxWaiting ?? 256, 'traces');
    this.append = new AppendCache(Math.min(options.cacheBytes, 256 * 1024 * 1024));
  }

  /** Causal models: kept prefixes whose key/value cache an appended text reuses (append.ts). */
  readonly append: AppendCache;

  /** The finished trace of a validated request, and whether it came from the cache. */
  async trace(req: ReturnType<typeof validateTraceRequest>, signal?: AbortSignal): Promise<{ result: TraceResult; cached: boolean }> {
    const found = await this.start(req, signal);
    if ('result' in found) return { result: found.result, cached: true };
    try {
      return { result: await abortable(found.run.promise, signal), cached: false };
    } finally {
      found.leave();
    }
  }

  /**
   * The answer to a validated request as frames, sent as they are made: the header once the input
   * is tokenized, then each layer as it is computed. Refusals (unknown model, too many tokens, a
   * failure before the first layer) reject; a failure later ends the frames with an error.
   * Leaving the frames early (or `signal` firing) leaves the run, which stops before its next
   * layer when no request follows it any more.
   */
  async open(req: ReturnType<typeof validateTraceRequest>, signal?: AbortSignal): Promise<TraceAnswer> {
    const found = await this.start(req, signal);
    if ('result' in found) return { cached: true, frames: replay(found.result) };
    const { run, leave } = found;
    try {
      while (!run.header) {
        const changed = run.changed;
        // A run that fails before its header rejects here (and the request gets its status).
        await abortable(Promise.race([changed, run.promise]), signal);
      }
    } catch (e) {
      leave();
      throw e;
    }
    return { cached: false, frames: follow(run, leave, signal), run: run.id };
  }

  /**
   * A page following run `id` (TraceAnswer.run) has drawn its first view: the run's pause after its
   * first segment ends (at once if it is pausing, or is not needed when it comes). Whether such a
   * run is under way.
   */
  drawn(id: string): boolean {
    const run = [...this.inflight.values()].find((r) => r.id === id);
    run?.drawn.abort();
    return run !== undefined;
  }

  /** The cached result of a request, or the shared run answering it (joined: call `leave` when done with it). */
  private async start(req: ReturnType<typeof validateTraceRequest>, signal?: AbortSignal): Promise<{ result: TraceResult } | { run: SharedRun; leave: () => void }> {
    const { location, lease } = await leaseModel(this.catalog, this.pool, req.model, signal);
    try {
      const key = JSON.stringify([location.id, lease.revision, req.text, req.textPair ?? null, req.decoderText ?? null, req.maxNewTokens ?? null, req.taps.qk, req.taps.topK]);
      const hit = this.cache.get(key);
      if (hit) return { result: hit };
      const predict = await this.checkTokens(lease.model, req);
      let run = this.inflight.get(key);
      if (!run) {
        // One run for identical requests; it stops when every request waiting for it has gone.
        const controller = new AbortController();
        let wake!: () => void;
        let wakeCaughtUp!: () => void;
        const shared: SharedRun = {
          controller,
          id: randomUUID(),
          drawn: new AbortController(),
          waiters: 0,
          frames: [],
          changed: new Promise<void>((r) => (wake = r)),
          notify: () => {
            const w = wake;
            shared.changed = new Promise<void>((r) => (wake = r));
            w();
          },
          followers: new Set(),
          caughtUp: new Promise<void>((r) => (wakeCaughtUp = r)),
          notifyCaughtUp: () => {
            const w = wakeCaughtUp;
            shared.caughtUp = new Promise<void>((r) => (wakeCaughtUp = r));
            w();
          },
          promise: undefined as unknown as Promise<TraceResult>,
        };
        shared.promise = this.gate
          .run(async () => {
            // The run holds the model itself: the requests that asked for it may all be gone by now.
            const own = await this.pool.acquire(location);
            try {
              return await this.run(own.model, location.id, own.revision, { ...req, taps: { ...req.taps, topK: predict ? req.taps.topK : 0 } }, lease.loadMs, shared);
            } finally {
              own.release();
            }
          }, controller.signal)
          .then((r) => {
            this.cache.set(key, r, r.bytes + 1024);
            return r;
          })
          .finally(() => {
            this.inflight.delete(key);
            shared.notify();
          });
        shared.promise.catch(() => undefined);
        run = shared;
        this.inflight.set(key, run);
      }
      const joined = run;
      joined.waiters++;
      // Once, when the request's signal fires or it is done with the run.
      const leave = onAbortOrDone(signal, () => {
        if (--joined.waiters === 0) joined.controller.abort();
      });
      return { run: joined, leave };
    } finally {
      lease.release();
    }
  }

  /** The wait of an on-demand run after the first layer's view is sent (see firstLayerPauseMs); ends when every request has left. */
  private async firstLayerPause(shared: SharedRun): Promise<void> {
    if (this.firstLayerPauseMs > 0) await pause(this.firstLayerPauseMs, AbortSignal.any([shared.controller.signal, shared.drawn.signal]));
  }

  /** Waits until no run and no warm-up is under way (tests: after a cancel, the run has stopped). */
  async settled(): Promise<void> {
    while (this.inflight.size > 0 || this.warming.size > 0) await Promise.allSettled([...[...this.inflight.values()].map((r) => r.promise), ...this.warming]);
  }

  /** Warm-ups under way (warmUp). */
  private readonly warming = new Set<Promise<void>>();

  /**
   * Opens, after a model is loaded (POST /api/load) and while no text is known yet, the session
   * of the one-head preview its on-demand traces start with (engine/layerwise.ts
   * openPreviewSession; cold, that session is most of the time to the first view: the 1B shape's
   * takes ≈ 9 s), when an input within the token limit is traced on demand. The session is kept
   * under its graph, so a trace of any length whose preview is the same graph takes it (one of
   * another graph opens its own). Holds `lease` until done, then releases it; a failure is dropped
   * (the trace opens the session itself). Resolves when done.
   */
  warmUp(lease: Lease): Promise<void> {
    const model = lease.model;
    const tokens = Math.min(this.options.limits.maxTokens, model.info.maxPositions);
    // As runByLayer asks (the preview's graph does not depend on the head, the length or topK).
    const options: LayerwiseOptions = { qk: true, attention: 'auto', qkFirst: 'on-demand', ...(this.onDemandAbove !== undefined ? { onDemandAbove: this.onDemandAbove } : {}) };
    const done = (async () => {
      try {
        if (model.info.kind !== 'encoder-decoder' && Number.isFinite(tokens) && tokens > 0) await openPreviewSession(model, tokens, options);
      } catch {
        // (The first trace opens it, and reports what fails.)
      } finally {
        lease.release();
      }
    })();
    this.warming.add(done);
    void done.then(() => this.warming.delete(done));
    return done;
  }

  /**
   * Refuses inputs over the token limits. Returns whether predictions can be made: a masked LM
   * predicts only at mask tokens, so a text without one gets its trace without predictions.
   */
  private async checkTokens(model: Awaited<ReturnType<ModelPool['acquire']>>['model'], req: TraceRequest): Promise<boolean> {
    const max = Math.min(this.options.limits.maxTokens, model.info.maxPositions);
    const why = max < this.options.limits.maxTokens ? `the model's ${model.info.maxPositions} positions` : `the server's --max-tokens`;
    const tokens = await model.tokenize(req.text, req.textPair).catch((e: unknown) => {
      throw new RequestError(400, `text: ${(e as Error).message}`, 'text');
    });
    if (tokens.length > max) {
      const field = req.textPair !== undefined ? 'text, textPair' : 'text';
      throw new RequestError(413, `${field}: ${tokens.length} tokens; at most ${max} allowed (${why})`, req.textPair !== undefined ? 'textPair' : 'text');
    }
    if (req.decoderText !== undefined) {
      if (model.info.kind !== 'encoder-decoder') throw new RequestError(400, `decoderText: ${model.name} is not an encoder-decoder model (leave decoderText out)`, 'decoderText');
      const tok = model.tokenizer;
      const decoder = tok?.encodeTarget ? await tok.encodeTarget(req.decoderText) : await model.tokenize(req.decoderText);
      if (decoder.length + 1 > max) throw new RequestError(413, `decoderText: ${decoder.length} tokens; at most ${max - 1} allowed (${why})`, 'decoderText');
    }
    if (req.textPair !== undefined && model.info.kind === 'encoder-decoder') throw new RequestError(400, `textPair: does not apply to an encoder-decoder model (${model.name})`, 'textPair');
    if (req.maxNewTokens !== undefined && (model.info.kind !== 'encoder-decoder' || req.decoderText !== undefined)) {
      throw new RequestError(400, `maxNewTokens: only for an encoder-decoder model traced without decoderText (${model.name} is ${model.info.kind === 'encoder-decoder' ? 'given a decoder text' : `an ${model.info.kind}`})`, 'maxNewTokens');
    }
    if (req.maxNewTokens !== undefined && req.maxNewTokens + 1 > max) throw new RequestError(413, `maxNewTokens: ${req.maxNewTokens}; at most ${max - 1} allowed (${why})`, 'maxNewTokens');
    const heads = model.architectureInfo.numHeads;
    if (req.head !== undefined && req.head >= heads) throw new RequestError(400, `head: an integer from 0 to ${heads - 1} (${model.name} has ${heads} heads)`, 'head');
    if (model.info.kind !== 'encoder') return true;
    const mask = model.tokenizer?.mask;
    return mask !== undefined && mask.id !== null && tokens.some((t) => t.id === mask.id);
  }

  private async run(model: Awaited<ReturnType<ModelPool['acquire']>>['model'], modelId: string, revision: string, req: ReturnType<typeof validateTraceRequest>, loadMs: number, shared: SharedRun): Promise<TraceResult> {
    this.runs++;
    const t0 = performance.now();
    const modelKey = `${modelId}@${revision}`;
    const causal = { text: req.text, qk: req.taps.qk, topK: req.taps.topK };
    if (appendable(model, req)) {
      // A causal model's first run of a text: layer by layer, then kept for appends (append.ts).
      const found = await this.append.lookup(model, modelKey, causal).catch((e: unknown) => {
        throw e instanceof AttnscopeError ? new RequestError(400, e.message, 'text') : e;
      });
      if (!found.kept) {
        const seed = this.append.seedBytes(model, found.tokens, causal.qk) <= this.append.maxBytes;
        return this.runByLayer(model, modelId, revision, req, loadMs, shared, t0, seed ? { modelKey, request: causal } : undefined);
      }
    } else if (model.info.kind !== 'encoder-decoder' || req.decoderText !== undefined) {
      return this.runByLayer(model, modelId, revision, req, loadMs, shared, t0);
    }
    let trace: Trace;
    try {
      // Causal models extending a kept token prefix: through the key/value cache (append.ts).
      trace = appendable(model, req) ? (await this.append.trace(model, modelKey, causal)).trace : await model.trace(req.text, {
        ...(req.textPair !== undefined ? { pair: req.textPair } : {}),
        ...(req.decoderText !== undefined ? { decoderText: req.decoderText } : {}),
        ...(req.maxNewTokens !== undefined ? { maxNewTokens: req.maxNewTokens } : {}),
        qk: req.taps.qk,
        ...(req.taps.topK > 0 ? { topK: req.taps.topK } : {}),
      });
    } catch (e) {
      if (e instanceof AttnscopeError) throw new RequestError(400, e.message, 'text');
      throw e;
    }
    const runMs = performance.now() - t0;
    const result = traceResult(trace, modelId, revision, loadMs, runMs, model.info.kind);
    shared.header = result.header;
    shared.frames.push(...result.layers);
    shared.notify();
    return result;
  }

  /**
   * One forward pass layer by layer: the header once tokenized, each layer's frames as soon as it is
   * computed. With `seed` (a causal model's first run of a text), the keys and values are tapped too
   * (queries and keys are not sent unless asked for, values never) and, once every layer has run,
   * the whole run is kept in the append cache for texts extending it.
   */
  private async runByLayer(model: Awaited<ReturnType<ModelPool['acquire']>>['model'], modelId: string, revision: string, req: ReturnType<typeof validateTraceRequest>, loadMs: number, shared: SharedRun, t0: number, seed?: { modelKey: string; request: AppendRequest }): Promise<TraceResult> {
    const info = model.architectureInfo;
    let frames: LayerFrames | undefined;
    let prepared: PreparedRun | undefined;
    let predictions: Prediction[] | undefined;
    let preparedAt = 0;
    const options: LayerwiseOptions = {
      ...(req.textPair !== undefined ? { pair: req.textPair } : {}),
      ...(req.decoderText !== undefined ? { decoderText: req.decoderText } : {}),
      qk: req.taps.qk || seed !== undefined,
      ...(seed ? { values: true } : {}),
      ...(req.taps.topK > 0 ? { topK: req.taps.topK } : {}),
      // Long inputs: queries and keys instead of probabilities (the page computes the blocks it
      // shows), each layer's q/k sent before the rest of the layer runs.
      attention: 'auto' as const,
      ...(this.onDemandAbove !== undefined ? { onDemandAbove: this.onDemandAbove } : {}),
      qkFirst: 'on-demand' as const,
      signal: shared.controller.signal,
      onStart: (p: PreparedRun) => {
        preparedAt = performance.now() - t0;
        prepared = p;
        // An on-demand trace is not kept for appends (append.ts keeps probabilities).
        if (!p.taps.attention) seed = undefined;
        // The header declares what the request asked for (not the taps added for the seed); an
        // on-demand trace always sends its queries, keys and score terms.
        frames = new LayerFrames(info, model.traceModelInfo(), { ...p, taps: { ...p.taps, qk: req.taps.qk || !p.taps.attention } }, modelId, revision, model.info.kind);
        shared.header = frames.header;
        shared.notify();
      },
    };
    // What the seed keeps of each layer (whole-sequence outputs of the self-attention stack).
    const kept: Record<string, RuntimeTensor> = {};
    /** Frames of the head preview: sent to the requests following the run, not kept in the cache. */
    const previewFrames = new Set<Uint8Array>();
    let previewed = false;
    /**
     * Adds a segment's frames (or the preview's) for the requests following the run and waits
     * until their connections have taken them: the next segment runs on this thread
     * (onnxruntime-node runs and opens sessions synchronously), so that the connections write
     * nothing while it runs.
     */
    const send = async (make: () => Uint8Array[], index: number, count: number, ms: { session: number; run: number }, preview: boolean): Promise<void> => {
      const e0 = performance.now();
      const made = make();
      const encode = performance.now() - e0;
      if (preview) for (const m of made) previewFrames.add(m);
      shared.frames.push(...made);
      shared.notify();
      const sentAt = performance.now() - t0;
      if (preview || index + 1 < count) await handedOut(shared, HAND_OUT_WAIT_MS);
      const timing = { preparedAt, sentAt, ...ms, encode, handOut: performance.now() - t0 - sentAt, bytes: made.reduce((n, x) => n + x.byteLength, 0) };
      await this.onLayerSent?.({ index, count, signal: shared.controller.signal, timing, ...(preview ? { preview: true } : {}) });
    };
    if (req.head !== undefined) {
      options.previewHead = req.head;
      options.onPreview = async (p) => {
        await send(() => frames!.preview(p), 0, p.count, p.ms, true);
        previewed = true;
        await this.firstLayerPause(shared);
      };
    }
    try {
      await traceLayers(model, req.text, options, async (layer) => {
        const f = frames!;
        if (req.taps.topK > 0 && layer.outputs.logits) {
          // Predictions with the last layer (from the head's logits, as Model.trace makes them).
          predictions = model.traceOf(prepared!, { logits: layer.outputs.logits }, { topK: req.taps.topK }).predictions;
          if (predictions?.length) shared.frames.push(jsonFrame('predictions', { predictions }));
        }
        let sent = layer;
        if (seed) {
          for (const [name, t] of Object.entries(layer.outputs)) if ((req.taps.qk ? SEED_QK_KINDS : SEED_KINDS).test(name)) kept[name] = t;
          if (!req.taps.qk) sent = { ...layer, outputs: Object.fromEntries(Object.entries(layer.outputs).filter(([name]) => !QK_KINDS.test(name))) };
        }
        await send(() => f.layer(sent), layer.index, layer.count, layer.ms, false);
        // On demand, the page computes the first layer's view from its queries and keys: the next
        // segment (a whole layer's work on every core) waits a moment so as not to compete with it
        // (after the head preview instead, when one was sent).
        if (layer.index === 0 && layer.count > 1 && !prepared!.taps.attention && !previewed) await this.firstLayerPause(shared);
      });
    } catch (e) {
      if (e instanceof AttnscopeError) throw new RequestError(400, e.message, 'text');
      throw e;
    }
    if (seed) this.append.seed(model, seed.modelKey, seed.request, prepared!.tokens, kept, predictions);
    const runMs = performance.now() - t0;
    const layers = shared.frames.filter((f) => !previewFrames.has(f));
    return { header: frames!.header, layers, bytes: layers.reduce((n, x) => n + x.length, 0), loadMs, runMs };
  }
}

/** Outputs a seed of the append cache keeps (with queries and keys asked for, or not), and those sent only when they are asked for. */
const SEED_QK_KINDS = /^(attention|queries|keys|values|score_bias)\.self\.\d+$/;
const SEED_KINDS = /^(attention|keys|values)\.self\.\d+$/;
const QK_KINDS = /^(queries|keys|values|score_bias)\./;

/** A cached answer's frames. */
async function* replay(result: TraceResult): AsyncGenerator<Uint8Array> {
  yield* answerFrames(result, true);
}

/** A shared run's frames as they are made, from the first; an error frame if it fails after the header. */
async function* follow(run: SharedRun, leave: () => void, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
  const me = { taken: 0 };
  run.followers.add(me);
  try {
    yield jsonFrame('header', { ...run.header!, cached: false });
    let sent = 0;
    for (;;) {
      while (sent < run.frames.length) yield run.frames[sent++]!;
      // Asked for a frame past the last one: the connection has taken every frame (app.ts pulls a
      // frame only once the previous one is written out).
      me.taken = sent;
      run.notifyCaughtUp();
      const changed = run.changed;
      const outcome = await abortable(
        Promise.race([changed.then(() => 'more' as const), run.promise.then((r) => r, (e: unknown) => ({ error: e }))]),
        signal,
      );
      if (outcome === 'more') continue;
      while (sent < run.frames.length) yield run.frames[sent++]!;
      if ('error' in outcome) {
        const e = outcome.error;
        yield jsonFrame('error', { error: e instanceof Error ? e.message : String(e), ...(e instanceof RequestError && e.field ? { field: e.field } : {}) });
        return;
      }
      yield jsonFrame('end', endOf(outcome, false));
      return;
    }
  } finally {
    run.followers.delete(me);
    run.notifyCaughtUp();
    leave();
  }
}

/** See TraceService.firstLayerPauseMs. */
const FIRST_LAYER_PAUSE_MS = 1500;

/** The longest a run waits for its followers' connections to take a segment's frames before it runs the next segment. */
const HAND_OUT_WAIT_MS = 10_000;

/**
 * Resolves once every request following `run` has had its connection take every frame made so far
 * (or after `limitMs`: a client that reads slowly, or not at all, does not hold the run longer).
 */
async function handedOut(run: SharedRun, limitMs: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), limitMs)));
  try {
    while ([...run.followers].some((f) => f.taken < run.frames.length)) {
      if ((await Promise.race([run.caughtUp, late])) === 'late') return;
    }
  } finally {
    clearTimeout(timer);
  }
}

function endOf(result: TraceResult, cached: boolean): StreamEnd {
  return { loadMs: cached ? 0 : Math.round(result.loadMs), runMs: cached ? 0 : Math.round(result.runMs), bytes: result.bytes };
}

/** Stream names of the graph's tensor kinds, in the order a layer's frames are sent. */
const LAYER_KINDS = [['attention', 'attention'], ['scoreBias', 'score_bias'], ['queries', 'queries'], ['keys', 'keys']] as const;

/**
 * The frames of a per-layer run: the header (attention tensors declared with their shapes from
 * the token counts), then per layer its attention, score bias, queries and keys (each tensor other
 * than attention declared by a `tensor` frame before its first layer). A shared score bias (one
 * output for every layer, T5) is sent again with each layer.
 */
class LayerFrames {
  readonly header: Omit<StreamHeader, 'cached'>;
  private readonly index = new Map<string, number>();
  private readonly shared = new Map<StackName, RuntimeTensor>();

  constructor(
    private readonly info: ArchitectureInfo,
    model: ModelInfo,
    prepared: PreparedRun,
    modelId: string,
    revision: string,
    kind: StreamHeader['kind'],
  ) {
    const n = prepared.tokens.length;
    const m = prepared.decoderTokens?.length ?? n;
    const tensors: StreamTensor[] = [];
    if (prepared.taps.attention) {
      for (const stack of STACK_ORDER) {
        const layers = info.stacks[stack];
        if (!layers) continue;
        const heads = info.stackHeads?.[stack] ?? info.numHeads;
        const [q, k] = stack === 'decoder' ? [m, m] : stack === 'cross' ? [m, n] : [n, n];
        this.index.set(`attention.${stack}`, tensors.length);
        tensors.push({ kind: 'attention', stack, dims: [heads, q, k], layers });
      }
    }
    this.header = { model, tokens: prepared.tokens, tensors, kind, modelId, revision, streaming: 'per-layer' };
    if (prepared.decoderTokens) this.header.decoderTokens = prepared.decoderTokens;
    if (prepared.taps.qk) {
      const scores: NonNullable<StreamHeader['scores']> = {};
      for (const stack of STACK_ORDER) {
        const scoring = info.scoring[stack];
        if (!scoring || !info.stacks[stack]) continue;
        scores[stack] = { scale: [...scoring.scale], causal: scoring.causal, window: [...scoring.window], ...(scoring.biasKind !== undefined && scoring.bias !== 'none' ? { biasKind: scoring.biasKind } : {}), hasBias: scoring.bias !== 'none' };
      }
      this.header.scores = scores;
    }
  }

  /** The frames of a head preview: its queries and keys declared (with `head`) and sent under PREVIEW_TENSOR_INDEX. */
  preview(p: HeadPreview): Uint8Array[] {
    const out: Uint8Array[] = [];
    for (const [kind, t, head] of [['queries', p.queries, p.head], ['keys', p.keys, p.kvHead]] as const) {
      const index = PREVIEW_TENSOR_INDEX[kind];
      const dims = t.dims.slice(1) as [number, number, number];
      out.push(jsonFrame('tensor', { kind, stack: p.stack, dims, layers: 1, index, head }), layerFrame(index, p.layer, toFloat32(t)));
    }
    return out;
  }

  /** The frames of one computed segment: declarations of tensors new in it first, then the layers. */
  layer(layer: LayerOutputs): Uint8Array[] {
    const declarations: Uint8Array[] = [];
    const frames: Uint8Array[] = [];
    for (const [kind, graphKind] of LAYER_KINDS) {
      for (const { stack, layer: l } of layer.layers) {
        const name = tapName(graphKind, stack, l);
        let t: RuntimeTensor | undefined = layer.outputs[name] ?? (kind === 'scoreBias' ? this.relativeBias(layer, stack, l) : undefined);
        if (kind === 'scoreBias' && this.info.scoring[stack]?.bias === 'shared') {
          // One output (layer 0's) for every layer.
          if (t) this.shared.set(stack, t);
          else t = this.shared.get(stack);
        }
        if (!t) continue;
        const dims = t.dims.slice(1) as [number, number, number];
        const key = `${kind}.${stack}`;
        let index = this.index.get(key);
        if (index === undefined) {
          index = this.index.size;
          this.index.set(key, index);
          declarations.push(jsonFrame('tensor', { kind, stack, dims, layers: this.info.stacks[stack] ?? 1, index }));
        } else if (kind === 'attention') {
          const declared = this.header.tensors[index]!;
          if (declared.dims.join() !== dims.join()) throw new Error(`${name}: shape [${dims.join(', ')}], but the header declared [${declared.dims.join(', ')}]`);
        }
        // Attention that is zero above the diagonal (causal) goes as its lower triangle (protocol.ts).
        frames.push(layerFrame(index, l, toFloat32(t), kind === 'attention' ? dims : undefined));
      }
    }
    return [...declarations, ...frames];
  }

  /**
   * A relative position bias computed on demand (`score_bias_relative.<stack>.<layer>`, one value
   * per offset j − i) as the dense [1, heads, queries, keys] the page reads; undefined without one.
   */
  private relativeBias(layer: LayerOutputs, stack: StackName, l: number): RuntimeTensor | undefined {
    const vector = layer.outputs[relativeBiasOutput(stack, l)];
    const queries = layer.outputs[tapName('queries', stack, l)]?.dims[2];
    if (!vector || queries === undefined) return undefined;
    const heads = vector.dims[1]!;
    const keys = vector.dims[2]! - queries + 1;
    return { type: 'float32', dims: [1, heads, queries, keys], data: expandBias(toFloat32(vector), 'relative', heads, queries, keys) };
  }
}

const STACK_ORDER: readonly StackName[] = ['self', 'encoder', 'decoder', 'cross'];

/** The header and layer frames of a Trace. */
export function traceResult(trace: Trace, modelId: string, revision: string, loadMs: number, runMs: number, kind: StreamHeader['kind']): TraceResult {
  const sources: { t: StreamTensor; layers: readonly Float32Array[] }[] = [];
  const scoreBias: Partial<Record<StackName, LayerStack>> = {};
  // The page reads dense or broadcast biases: a relative one (T5) travels expanded.
  for (const [stack, terms] of Object.entries(scoresWithoutPositionBias(trace.scores ?? {})) as [StackName, ScoreTerms][]) if (terms.bias) scoreBias[stack] = terms.bias;
  // Attention of every stack first, so the views can draw before queries and keys arrive.
  for (const kind of ['attention', 'scoreBias', 'queries', 'keys'] as const) {
    const map = kind === 'scoreBias' ? scoreBias : trace[kind];
    if (!map) continue;
    for (const stack of ['self', 'encoder', 'decoder', 'cross'] as const) {
      const s = map[stack];
      if (s) sources.push({ t: { kind, stack, dims: [s.dims[0], s.dims[1], s.dims[2]], layers: s.layers.length }, layers: s.layers });
    }
  }
  const header: Omit<StreamHeader, 'cached'> = {
    model: trace.model,
    tokens: trace.tokens,
    tensors: sources.map((s) => s.t),
    kind,
    modelId,
    revision,
    streaming: 'after-run',
  };
  if (trace.decoderTokens) header.decoderTokens = trace.decoderTokens;
  if (trace.predictions?.length) header.predictions = trace.predictions;
  if (trace.generation) header.generation = trace.generation;
  if (trace.scores) {
    const scores: Partial<Record<StackName, PayloadScoreTerms>> = {};
    for (const [stack, terms] of Object.entries(trace.scores) as [StackName, ScoreTerms][]) {
      const { bias, positionBias, ...rest } = terms;
      scores[stack] = { ...rest, hasBias: bias !== undefined || positionBias !== undefined };
    }
    header.scores = scores;
  }
  // Layer order: layer 0 of every attention stack, then layer 1, …; then the other tensors.
  const order: [number, number][] = [];
  const attention = sources.map((s, i) => [s, i] as const).filter(([s]) => s.t.kind === 'attention');
  const maxLayers = Math.max(0, ...attention.map(([s]) => s.layers.length));
  for (let l = 0; l < maxLayers; l++) for (const [s, i] of attention) if (l < s.layers.length) order.push([i, l]);
  sources.forEach((s, i) => {
    if (s.t.kind !== 'attention') for (let l = 0; l < s.layers.length; l++) order.push([i, l]);
  });
  const layers = order.map(([i, l]) => layerFrame(i, l, sources[i]!.layers[l]!, sources[i]!.t.kind === 'attention' ? sources[i]!.t.dims : undefined));
  return { header, layers, bytes: layers.reduce((n, f) => n + f.length, 0), loadMs, runMs };
}

/** The frames of one answer: header, layers, end. */
export function* answerFrames(result: TraceResult, cached: boolean): Generator<Uint8Array> {
  yield jsonFrame('header', { ...result.header, cached });
  yield* result.layers;
  yield jsonFrame('end', endOf(result, cached));
}
