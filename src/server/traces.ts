/**
 * Traces for the API: request validation, the result cache (LRU keyed by model revision, inputs
 * and taps, bounded in bytes), identical requests sharing one run, a bound on runs at once, and
 * the conversion of a Trace into the frames of the binary stream (protocol.ts).
 *
 * The engine returns every layer at the end of one forward pass (onnxruntime runs the whole
 * graph), so layers are streamed one frame each as soon as the run ends (`streaming: 'after-run'`).
 */
import { AttnscopeError } from '../core/errors.js';
import type { LayerStack, ScoreTerms, StackName, Trace } from '../core/trace.js';
import type { PayloadScoreTerms } from '../views/html/payload.js';
import type { ModelCatalog } from './catalog.js';
import { AppendCache, appendable } from './append.js';
import { ByteLru } from './lru.js';
import { abortable, type ModelPool } from './pool.js';
import { jsonFrame, layerFrame, type ServerLimits, type StreamHeader, type StreamTensor, type TraceRequest, type TraceTaps } from './protocol.js';

/** A request refused with a status and one line naming the field. */
export class RequestError extends Error {
  constructor(
    readonly status: 400 | 403 | 404 | 413 | 415 | 503,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** A finished trace as the stream sends it (the header is completed per answer). */
export interface TraceResult {
  header: Omit<StreamHeader, 'cached'>;
  layers: Uint8Array[];
  bytes: number;
  loadMs: number;
  runMs: number;
}

const ALLOWED_FIELDS = new Set(['model', 'text', 'textPair', 'decoderText', 'taps']);
const ALLOWED_TAPS = new Set(['qk', 'topK']);

/** Checks a parsed body against the API's types and limits. */
export function validateTraceRequest(body: unknown, limits: ServerLimits): Required<Pick<TraceRequest, 'model' | 'text'>> & TraceRequest & { taps: Required<TraceTaps> } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new RequestError(400, 'body: a JSON object {model, text, textPair?, decoderText?, taps?}');
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) if (!ALLOWED_FIELDS.has(k)) throw new RequestError(400, `${k.slice(0, 40)}: unknown field (allowed: ${[...ALLOWED_FIELDS].join(', ')})`, k.slice(0, 40));
  if (typeof b.model !== 'string') throw new RequestError(400, 'model: a string (an id from GET /api/models, or a Hub id)', 'model');
  const text = (field: string, value: unknown, optional: boolean): string | undefined => {
    if (value === undefined && optional) return undefined;
    if (typeof value !== 'string') throw new RequestError(400, `${field}: a string of at most ${limits.maxTextChars} characters`, field);
    if (value.length > limits.maxTextChars) throw new RequestError(413, `${field}: ${value.length} characters; at most ${limits.maxTextChars} allowed`, field);
    return value;
  };
  const out: TraceRequest & { taps: Required<TraceTaps> } = { model: b.model, text: text('text', b.text, false)!, taps: { qk: false, topK: 0 } };
  const pair = text('textPair', b.textPair, true);
  const decoder = text('decoderText', b.decoderText, true);
  if (pair !== undefined && pair !== '') out.textPair = pair;
  if (decoder !== undefined) out.decoderText = decoder;
  if (b.taps !== undefined) {
    if (typeof b.taps !== 'object' || b.taps === null || Array.isArray(b.taps)) throw new RequestError(400, 'taps: an object {qk?: boolean, topK?: integer}', 'taps');
    const t = b.taps as Record<string, unknown>;
    for (const k of Object.keys(t)) if (!ALLOWED_TAPS.has(k)) throw new RequestError(400, `taps.${k.slice(0, 40)}: unknown tap (allowed: qk, topK)`, `taps.${k.slice(0, 40)}`);
    if (t.qk !== undefined && typeof t.qk !== 'boolean') throw new RequestError(400, 'taps.qk: true or false', 'taps.qk');
    if (t.topK !== undefined && (typeof t.topK !== 'number' || !Number.isInteger(t.topK) || t.topK < 0 || t.topK > limits.maxTopK)) {
      throw new RequestError(400, `taps.topK: an integer from 0 to ${limits.maxTopK}`, 'taps.topK');
    }
    out.taps = { qk: t.qk === true, topK: (t.topK as number | undefined) ?? 0 };
  }
  return out as ReturnType<typeof validateTraceRequest>;
}

/** At most `n` tasks at once; waiting ones leave the queue when their request goes away. */
class Gate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly n: number,
    private readonly maxWaiting: number,
  ) {}

  async run<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    if (this.active >= this.n) {
      if (this.waiting.length >= this.maxWaiting) throw new RequestError(503, `server busy: ${this.maxWaiting} traces are waiting already; try again shortly`);
      let enter!: () => void;
      const turn = new Promise<void>((r) => (enter = r));
      this.waiting.push(enter);
      try {
        await abortable(turn, signal);
      } catch (e) {
        const i = this.waiting.indexOf(enter);
        if (i >= 0) this.waiting.splice(i, 1);
        else this.leave(); // the turn came as the request went away: pass it on
        throw e;
      }
    } else {
      this.active++;
    }
    try {
      return await task();
    } finally {
      this.leave();
    }
  }

  private leave(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  }
}

interface SharedRun {
  promise: Promise<TraceResult>;
  controller: AbortController;
  /** Requests waiting for it. */
  waiters: number;
}

export interface TraceServiceOptions {
  limits: ServerLimits;
  /** Bytes of finished traces kept for repeated requests. */
  cacheBytes: number;
  /** Forward passes at once (default 2). */
  concurrentRuns?: number;
  /** Forward passes that may wait for their turn (default 256); more are refused with 503. */
  maxWaiting?: number;
}

export class TraceService {
  readonly cache: ByteLru<string, TraceResult>;
  private readonly inflight = new Map<string, SharedRun>();
  private readonly gate: Gate;
  /** Forward passes run (a test reads it to see cache hits and shared runs). */
  runs = 0;

  constructor(
    private readonly catalog: ModelCatalog,
    private readonly pool: ModelPool,
    private readonly options: TraceServiceOptions,
  ) {
    this.cache = new ByteLru(options.cacheBytes);
    this.gate = new Gate(options.concurrentRuns ?? 2, options.maxWaiting ?? 256);
    this.append = new AppendCache(Math.min(options.cacheBytes, 256 * 1024 * 1024));
  }

  /** Causal models: kept prefixes whose key/value cache an appended text reuses (append.ts). */
  readonly append: AppendCache;

  /** The finished trace of a validated request, and whether it came from the cache. */
  async trace(req: ReturnType<typeof validateTraceRequest>, signal?: AbortSignal): Promise<{ result: TraceResult; cached: boolean }> {
    let location;
    try {
      location = await this.catalog.locate(req.model);
    } catch (e) {
      if (e instanceof AttnscopeError) throw new RequestError(404, e.message, 'model');
      throw e;
    }
    const lease = await this.pool.acquire(location, undefined, signal).catch((e: unknown) => {
      if (e instanceof AttnscopeError) throw new RequestError(400, e.message.startsWith('model:') ? e.message : `model: ${e.message}`, 'model');
      throw e;
    });
    try {
      const key = JSON.stringify([location.id, lease.revision, req.text, req.textPair ?? null, req.decoderText ?? null, req.taps.qk, req.taps.topK]);
      const hit = this.cache.get(key);
      if (hit) return { result: hit, cached: true };
      const predict = await this.checkTokens(lease.model, req);
      let run = this.inflight.get(key);
      if (!run) {
        // One run for identical requests; it leaves the queue only when every request waiting for it has gone.
        const controller = new AbortController();
        const promise = this.gate
          .run(async () => {
            // The run holds the model itself: the requests that asked for it may all be gone by now.
            const own = await this.pool.acquire(location);
            try {
              return await this.run(own.model, location.id, own.revision, { ...req, taps: { ...req.taps, topK: predict ? req.taps.topK : 0 } }, lease.loadMs);
            } finally {
              own.release();
            }
          }, controller.signal)
          .then((r) => {
            this.cache.set(key, r, r.bytes + 1024);
            return r;
          })
          .finally(() => this.inflight.delete(key));
        promise.catch(() => undefined);
        run = { waiters: 0, controller, promise };
        this.inflight.set(key, run);
      }
      const joined = run;
      joined.waiters++;
      const leave = () => {
        if (--joined.waiters === 0) joined.controller.abort();
      };
      signal?.addEventListener('abort', leave, { once: true });
      try {
        return { result: await abortable(joined.promise, signal), cached: false };
      } finally {
        signal?.removeEventListener('abort', leave);
        if (!signal?.aborted) joined.waiters--;
      }
    } finally {
      lease.release();
    }
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
    if (model.info.kind !== 'encoder') return true;
    const mask = model.tokenizer?.mask;
    return mask !== undefined && mask.id !== null && tokens.some((t) => t.id === mask.id);
  }

  private async run(model: Awaited<ReturnType<ModelPool['acquire']>>['model'], modelId: string, revision: string, req: ReturnType<typeof validateTraceRequest>, loadMs: number): Promise<TraceResult> {
    this.runs++;
    const t0 = performance.now();
    let trace: Trace;
    try {
      // Causal models: through the key/value cache, reusing a kept token prefix (append.ts).
      trace = appendable(model, req) ? (await this.append.trace(model, `${modelId}@${revision}`, { text: req.text, qk: req.taps.qk, topK: req.taps.topK })).trace : await model.trace(req.text, {
        ...(req.textPair !== undefined ? { pair: req.textPair } : {}),
        ...(req.decoderText !== undefined ? { decoderText: req.decoderText } : {}),
        qk: req.taps.qk,
        ...(req.taps.topK > 0 ? { topK: req.taps.topK } : {}),
      });
    } catch (e) {
      if (e instanceof AttnscopeError) throw new RequestError(400, e.message, 'text');
      throw e;
    }
    const runMs = performance.now() - t0;
    return traceResult(trace, modelId, revision, loadMs, runMs, model.info.kind);
  }
}

/** The header and layer frames of a Trace. */
export function traceResult(trace: Trace, modelId: string, revision: string, loadMs: number, runMs: number, kind: StreamHeader['kind']): TraceResult {
  const sources: { t: StreamTensor; layers: readonly Float32Array[] }[] = [];
  const scoreBias: Partial<Record<StackName, LayerStack>> = {};
  for (const [stack, terms] of Object.entries(trace.scores ?? {}) as [StackName, ScoreTerms][]) if (terms.bias) scoreBias[stack] = terms.bias;
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
      const { bias, ...rest } = terms;
      scores[stack] = { ...rest, hasBias: bias !== undefined };
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
  const layers = order.map(([i, l]) => layerFrame(i, l, sources[i]!.layers[l]!));
  return { header, layers, bytes: layers.reduce((n, f) => n + f.length, 0), loadMs, runMs };
}

/** The frames of one answer: header, layers, end. */
export function* answerFrames(result: TraceResult, cached: boolean): Generator<Uint8Array> {
  yield jsonFrame('header', { ...result.header, cached });
  yield* result.layers;
  yield jsonFrame('end', { loadMs: cached ? 0 : Math.round(result.loadMs), runMs: cached ? 0 : Math.round(result.runMs), bytes: result.bytes });
}
