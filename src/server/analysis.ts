/**
 * The analysis views of `attnscope serve` (POST /api/analysis): saliency, head importance,
 * ablation, logit lens and the deep dive, computed for a model and text with the library calls
 * the CLI's `export --view …` makes (engine/gradients.ts attribute, engine/ablation.ts
 * ablateHeads, Model.trace with a logit lens or the residual stream) and turned into the views'
 * data by src/views/analysis-data.ts — the data the standalone page carries, drawn in the app by
 * the page's components.
 *
 * Answers are newline-delimited JSON (protocol.ts AnalysisLine): progress (integrated gradients
 * report their path points), then the result. Results are kept in an LRU bounded in bytes, keyed
 * by model revision, inputs, view and options; identical requests share one run, which stops
 * (between model runs; a worker is terminated) when every request following it has gone. The
 * JavaScript-heavy parts (gradient-weighted rollout, update norms) run in a worker
 * (analysis-worker.ts), so the server keeps answering meanwhile.
 */
import { AttnscopeError } from '../core/errors.js';
import type { LayerStack, StackMap, StackName, Trace } from '../core/trace.js';
import { ablateHeads } from '../engine/ablation.js';
import { attribute, type AttributeOptions } from '../engine/gradients.js';
import type { Model } from '../engine/model.js';
import type { HeadRef } from '../analysis/ablation.js';
import { ablationViewData, headImportanceViewData, logitLensViewData, saliencyViewData, traceAttributions, viewTokenLabel, type TargetNaming } from '../views/analysis-data.js';
import { abortable, onAbortOrDone, throwIfAborted } from './abortable.js';
import type { ModelCatalog } from './catalog.js';
import { Gate } from './gate.js';
import { ByteLru } from './lru.js';
import type { ModelPool } from './pool.js';
import { runInWorker } from './analysis-worker.js';
import { lineStream, ndjsonLine } from './ndjson.js';
import {
  ANALYSIS_KINDS,
  ANALYSIS_MAX_HEADS,
  ANALYSIS_MAX_STEPS,
  ANALYSIS_MEDIA_TYPE,
  type AnalysisData,
  type AnalysisKind,
  type AnalysisOptions,
  type AnalysisRequest,
  type AnalysisResult,
  type ProgressFrame,
  type ServerLimits,
} from './protocol.js';
import { checkInputTokens, isInt, isObject, modelField, optionalTextField, RequestError, requestBody, textField } from './request-checks.js';
import { leaseModel } from './traces.js';

const FIELDS = new Set(['model', 'text', 'textPair', 'decoderText', 'view', 'options']);
/** The options each view takes. */
const VIEW_OPTIONS: Readonly<Record<AnalysisKind, readonly (keyof AnalysisOptions)[]>> = {
  saliency: ['steps', 'position'],
  importance: ['signed', 'position'],
  ablation: ['heads', 'mode', 'topK', 'position'],
  lens: ['topK'],
  deep: [],
};

export type ValidAnalysisRequest = AnalysisRequest & { options: AnalysisOptions };

/** Checks a parsed body against the API's types and the server's limits (the model's own bounds are checked when it is loaded). */
export function validateAnalysisRequest(body: unknown, limits: ServerLimits): ValidAnalysisRequest {
  const b = requestBody(body, FIELDS, '{model, text, textPair?, decoderText?, view, options?}');
  const model = modelField(b.model);
  if (typeof b.view !== 'string' || !(ANALYSIS_KINDS as readonly string[]).includes(b.view)) throw new RequestError(400, `view: one of ${ANALYSIS_KINDS.join(', ')}`, 'view');
  const view = b.view as AnalysisKind;
  const out: ValidAnalysisRequest = { model, text: textField('text', b.text, limits), view, options: {} };
  const pair = optionalTextField('textPair', b.textPair, limits);
  const decoder = optionalTextField('decoderText', b.decoderText, limits);
  if (pair !== undefined && pair !== '') out.textPair = pair;
  if (decoder !== undefined) out.decoderText = decoder;
  if (b.options !== undefined) {
    if (!isObject(b.options)) throw new RequestError(400, 'options: an object', 'options');
    const o = b.options;
    const allowed = VIEW_OPTIONS[view];
    for (const k of Object.keys(o)) {
      if (!allowed.includes(k as keyof AnalysisOptions)) {
        throw new RequestError(400, `options.${k.slice(0, 40)}: not an option of the ${view} view (${allowed.length ? `it takes: ${allowed.join(', ')}` : 'it takes none'})`, `options.${k.slice(0, 40)}`);
      }
    }
    const opts = out.options;
    if (o.steps !== undefined) {
      if (o.steps !== 'auto' && !(isInt(o.steps) && o.steps >= 1 && o.steps <= ANALYSIS_MAX_STEPS)) throw new RequestError(400, `options.steps: an integer from 1 to ${ANALYSIS_MAX_STEPS}, or 'auto'`, 'options.steps');
      opts.steps = o.steps;
    }
    if (o.position !== undefined) {
      if (!isInt(o.position) || o.position < 0 || o.position >= limits.maxTokens) throw new RequestError(400, `options.position: an integer from 0 to ${limits.maxTokens - 1} (a token position)`, 'options.position');
      opts.position = o.position;
    }
    if (o.signed !== undefined) {
      if (typeof o.signed !== 'boolean') throw new RequestError(400, 'options.signed: true or false', 'options.signed');
      opts.signed = o.signed;
    }
    if (o.mode !== undefined) {
      if (o.mode !== 'zero' && o.mode !== 'mean') throw new RequestError(400, "options.mode: 'zero' or 'mean'", 'options.mode');
      opts.mode = o.mode;
    }
    if (o.topK !== undefined) {
      if (!isInt(o.topK) || o.topK < 1 || o.topK > limits.maxTopK) throw new RequestError(400, `options.topK: an integer from 1 to ${limits.maxTopK}`, 'options.topK');
      opts.topK = o.topK;
    }
    if (o.heads !== undefined) {
      if (!Array.isArray(o.heads) || o.heads.length === 0 || o.heads.length > ANALYSIS_MAX_HEADS) throw new RequestError(400, `options.heads: a list of 1 to ${ANALYSIS_MAX_HEADS} heads {layer, head, stack?}`, 'options.heads');
      opts.heads = o.heads.map((x: unknown, i) => {
        const e = x as Record<string, unknown> | null;
        const stacks = ['self', 'encoder', 'decoder', 'cross'];
        if (typeof e !== 'object' || e === null || !isInt(e.layer) || !isInt(e.head) || e.layer < 0 || e.head < 0 || (e.stack !== undefined && !stacks.includes(e.stack as string)) || Object.keys(e).some((k) => !['layer', 'head', 'stack'].includes(k))) {
          throw new RequestError(400, `options.heads[${i}]: {layer, head, stack?} with non-negative integers (stack: ${stacks.join(', ')})`, 'options.heads');
        }
        return { layer: e.layer, head: e.head, ...(e.stack !== undefined ? { stack: e.stack as StackName } : {}) };
      });
    }
  }
  if (view === 'ablation' && !out.options.heads) throw new RequestError(400, 'options.heads: the ablation view needs the heads to remove, [{layer, head}, …]', 'options.heads');
  return out;
}

/** The options that make a result, in a fixed order (the cache key). */
function optionsKey(req: ValidAnalysisRequest): unknown[] {
  const o = req.options;
  switch (req.view) {
    case 'saliency':
      return [o.steps ?? 'auto', o.position ?? null];
    case 'importance':
      return [o.signed ?? false, o.position ?? null];
    case 'ablation':
      return [[...(o.heads ?? [])].map((x) => `${x.stack ?? ''}:${x.layer}:${x.head}`).sort(), o.mode ?? 'zero', o.topK ?? 10, o.position ?? null];
    case 'lens':
      return [o.topK ?? 5];
    case 'deep':
      return [];
  }
}

type Computed = AnalysisData & { modelName: string; revision: string; ms: number };

interface SharedRun {
  promise: Promise<Computed>;
  controller: AbortController;
  waiters: number;
  listeners: Set<(p: ProgressFrame) => void>;
}

export interface AnalysisServiceOptions {
  limits: ServerLimits;
  /** Bytes of results kept (default 64 MiB). */
  cacheBytes?: number;
  /** Analyses computed at once (default 1: each runs the model many times); more wait their turn. */
  concurrentRuns?: number;
  /** Analyses that may wait (default 32); more are refused with 503. */
  maxWaiting?: number;
}

export class AnalysisService {
  readonly cache: ByteLru<string, Computed>;
  private readonly inflight = new Map<string, SharedRun>();
  private readonly gate: Gate;
  /** Analyses computed (a test reads it to see cache hits and shared runs). */
  runs = 0;

  constructor(
    private readonly catalog: ModelCatalog,
    private readonly pool: ModelPool,
    private readonly options: AnalysisServiceOptions,
  ) {
    this.cache = new ByteLru(options.cacheBytes ?? 64 * 2 ** 20);
    this.gate = new Gate(options.concurrentRuns ?? 1, options.maxWaiting ?? 32, 'analyses');
  }

  /**
   * Starts (or joins) the computation of a validated request. Refusals that do not need a run
   * (an unknown model, too many tokens, heads or positions the model does not have) reject here,
   * so the route answers them with a status; `follow` then gives the progress and the result.
   */
  async open(req: ValidAnalysisRequest, signal: AbortSignal): Promise<{ cached: Computed } | { follow: (onProgress: (p: ProgressFrame) => void) => Promise<Computed> }> {
    const { location, lease } = await leaseModel(this.catalog, this.pool, req.model, signal);
    let run: SharedRun | undefined;
    try {
      const key = JSON.stringify([location.id, lease.revision, req.text, req.textPair ?? null, req.decoderText ?? null, req.view, optionsKey(req)]);
      const hit = this.cache.get(key);
      if (hit) return { cached: hit };
      await this.check(lease.model, req);
      run = this.inflight.get(key);
      if (!run) {
        const controller = new AbortController();
        const listeners = new Set<(p: ProgressFrame) => void>();
        const progress = (p: ProgressFrame) => listeners.forEach((l) => l(p));
        const shared: SharedRun = { controller, waiters: 0, listeners, promise: undefined as unknown as Promise<Computed> };
        shared.promise = (async () => {
          await this.gate.enter(controller.signal, (ahead) => progress({ stage: 'queue', message: `waiting for ${ahead} analysis run${ahead === 1 ? '' : 's'} before this one` }));
          try {
            // The run holds the model itself: the requests that asked for it may all be gone by now.
            const own = await this.pool.acquire(location);
            try {
              this.runs++;
              const t0 = performance.now();
              const data = await computeAnalysis(own.model, req, progress, controller.signal);
              return { ...data, modelName: own.model.name, revision: own.revision, ms: Math.round(performance.now() - t0) };
            } finally {
              own.release();
            }
          } finally {
            this.gate.leave();
          }
        })()
          .then((r) => {
            this.cache.set(key, r, JSON.stringify(r).length * 2 + 1024);
            return r;
          })
          .finally(() => this.inflight.delete(key));
        shared.promise.catch(() => undefined);
        this.inflight.set(key, shared);
        run = shared;
      }
    } finally {
      lease.release();
    }
    const joined = run;
    joined.waiters++;
    const leave = onAbortOrDone(signal, () => {
      if (--joined.waiters === 0) joined.controller.abort();
    });
    return {
      follow: async (onProgress) => {
        joined.listeners.add(onProgress);
        try {
          return await abortable(joined.promise, signal);
        } finally {
          joined.listeners.delete(onProgress);
          leave();
        }
      },
    };
  }

  /** Waits until no analysis is under way (tests: after a cancel, the run has stopped). */
  async settled(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight.values()].map((r) => r.promise));
  }

  /** Refuses inputs over the token limits, and heads or positions the model does not have. */
  private async check(model: Model, req: ValidAnalysisRequest): Promise<void> {
    const { tokens, decoderPositions } = await checkInputTokens(model, req, this.options.limits.maxTokens);
    const positions = decoderPositions ?? tokens.length;
    const info = model.architectureInfo;
    if ((req.view === 'lens' || req.view === 'deep') && info.kind === 'encoder-decoder' && req.decoderText === undefined) {
      throw new RequestError(400, `decoderText: the ${req.view === 'lens' ? 'logit lens' : 'deep dive'} of an encoder-decoder model reads its decoder's layers: give a decoder text`, 'decoderText');
    }
    const { position, heads } = req.options;
    // Generated decoder inputs (no decoder text) have a length known only after generation: the engine checks those.
    if (position !== undefined && (info.kind !== 'encoder-decoder' || req.decoderText !== undefined) && position >= positions) {
      throw new RequestError(400, `options.position: ${position} is past the last ${info.kind === 'encoder-decoder' ? 'decoder ' : ''}token (positions 0 to ${positions - 1})`, 'options.position');
    }
    for (const [i, hd] of (heads ?? []).entries()) {
      const stack = hd.stack ?? defaultStack(model);
      const layers = info.stacks[stack];
      if (layers === undefined) throw new RequestError(400, `options.heads[${i}]: ${model.name} has no '${stack}' attention (it has: ${Object.keys(info.stacks).join(', ')})`, 'options.heads');
      const nHeads = info.stackHeads?.[stack] ?? info.numHeads;
      if (hd.layer >= layers || hd.head >= nHeads) throw new RequestError(400, `options.heads[${i}]: layer ${hd.layer} head ${hd.head} is out of range (${stack}: layers 0 to ${layers - 1}, heads 0 to ${nHeads - 1})`, 'options.heads');
    }
  }
}

function defaultStack(model: Model): StackName {
  return model.architectureInfo.stacks.self !== undefined ? 'self' : 'encoder';
}

/** The buffers of a stack map's layers, each once (transferred to the worker). */
function buffersOf(...maps: (StackMap | undefined)[]): ArrayBuffer[] {
  const out = new Set<ArrayBuffer>();
  for (const m of maps) for (const s of Object.values(m ?? {}) as LayerStack[]) for (const l of s.layers) if (l.buffer instanceof ArrayBuffer) out.add(l.buffer);
  return [...out];
}

/** The data of one analysis view for a request, with the CLI's library calls (export-command.ts exportAnalysisView). */
export async function computeAnalysis(model: Model, req: ValidAnalysisRequest, progress: (p: ProgressFrame) => void, signal: AbortSignal): Promise<AnalysisData> {
  const o = req.options;
  const naming: TargetNaming = { tokenText: (id) => model.tokenizer?.idToToken(id) ?? null };
  const step = (message: string, fraction?: number) => progress({ stage: 'run', message, ...(fraction !== undefined ? { fraction } : {}) });
  step(req.view === 'lens' ? 'running the model through the logit lens' : req.view === 'deep' ? 'recording the residual stream' : 'running the model', 0.02);
  const base = { pair: req.textPair, decoderText: req.decoderText };
  const trace: Trace = await model.trace(req.text, {
    ...base,
    ...(req.view === 'lens' ? { logitLens: o.topK ?? 5 } : req.view === 'deep' ? { residuals: true, attention: false } : { attention: true }),
  });
  throwIfAborted(signal);
  if (req.view === 'lens') return { view: 'lens', data: logitLensViewData(trace) };
  if (req.view === 'deep') {
    step('update norms of every layer (worker)', 0.6);
    const input: Trace = { model: trace.model, tokens: trace.tokens, ...(trace.decoderTokens ? { decoderTokens: trace.decoderTokens } : {}), attention: {}, layerStates: trace.layerStates };
    const u = await runInWorker('updateNorms', input, { signal });
    const tokens = (u.stack === 'decoder' ? trace.decoderTokens : trace.tokens) ?? trace.tokens;
    return { view: 'deep', data: { stack: u.stack, tokens: tokens.map((t) => viewTokenLabel(t.text, trace.model.modelType)), layers: u.layers } };
  }
  const inputs = { inputIds: trace.tokens.map((t) => t.id), typeIds: trace.tokens.map((t) => t.segment), ...(trace.decoderTokens ? { decoderInputIds: trace.decoderTokens.map((t) => t.id) } : {}) };
  const target: AttributeOptions['target'] = o.position !== undefined ? { kind: 'token', position: o.position } : undefined;
  if (req.view === 'ablation') {
    const heads: HeadRef[] = (o.heads ?? []).map((x) => ({ stack: x.stack ?? defaultStack(model), layer: x.layer, head: x.head }));
    step(`running the model with ${heads.length} head${heads.length === 1 ? '' : 's'} removed`, 0.4);
    const result = await ablateHeads(model, inputs, { heads, mode: o.mode ?? 'zero', topK: o.topK ?? 10, ...(o.position !== undefined ? { position: o.position } : {}) });
    return { view: 'ablation', data: ablationViewData(trace, result, naming) };
  }
  if (req.view === 'importance') {
    step('gradients of the head gates', 0.4);
    const result = await attribute(model, inputs, { methods: ['headImportance'], ...(target ? { target } : {}), signal });
    trace.attributions = traceAttributions(result);
    return { view: 'importance', data: headImportanceViewData(trace, { ...naming, normalization: o.signed ? 'signed' : 'michel' }) };
  }
  // Saliency: the methods `attnscope export --view saliency` draws.
  step('gradients at the input', 0.05);
  const result = await attribute(model, inputs, {
    methods: ['gradient', 'gradXInput', 'integratedGradients', 'attentionGrad'],
    steps: o.steps ?? 'auto',
    maxSteps: ANALYSIS_MAX_STEPS,
    ...(target ? { target } : {}),
    signal,
    onProgress: (p) => step(`integrated gradients: ${p.done} of ${p.total} new path points (${p.steps} steps)`, 0.05 + 0.85 * (p.done / Math.max(1, p.total))),
  });
  throwIfAborted(signal);
  trace.attributions = traceAttributions(result);
  if (result.attentionGrad) {
    step('attention × gradient and gradient-weighted rollout (worker)', 0.92);
    const attention = result.attention ?? trace.attention;
    const input: Trace = {
      model: trace.model,
      tokens: trace.tokens,
      ...(trace.decoderTokens ? { decoderTokens: trace.decoderTokens } : {}),
      attention,
      attributions: { target: trace.attributions.target, scores: {}, attentionGrad: result.attentionGrad },
    };
    const scores = await runInWorker('attentionAttributions', input, { signal, transfer: result.attention ? buffersOf(result.attention, result.attentionGrad) : buffersOf(result.attentionGrad) }).catch((e: unknown) => {
      // An AttnscopeError of the worker keeps its meaning (a clear 400-class message).
      throw e instanceof Error && e.name === 'AttnscopeError' ? new AttnscopeError(e.message) : e;
    });
    Object.assign(trace.attributions.scores, scores);
  }
  return { view: 'saliency', data: saliencyViewData(trace, naming) };
}

/** The answer to a validated request: progress lines, then the result (or an error line). Refusals reject (the route answers them with a status). */
export async function analysisResponse(service: AnalysisService, req: ValidAnalysisRequest, requestSignal: AbortSignal): Promise<Response> {
  const answer = lineStream(requestSignal);
  const opened = await service.open(req, answer.signal);
  const headers = { 'Content-Type': ANALYSIS_MEDIA_TYPE, 'Cache-Control': 'no-store', 'X-Attnscope-Cache': 'cached' in opened ? 'hit' : 'miss' };
  if ('cached' in opened) {
    const { ms: _ms, ...rest } = opened.cached;
    const result = { ...rest, cached: true, ms: 0 } as AnalysisResult;
    return new Response(ndjsonLine({ type: 'result', result }), { headers });
  }
  const follow = opened.follow;
  return answer.respond<AnalysisResult>(headers, 'analysis', async (send) => ({ ...(await follow((p) => send({ type: 'progress', ...p }))), cached: false }) as AnalysisResult);
}
