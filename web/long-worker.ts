/**
 * The long views' computation off the page's thread: a Web Worker running the page's own script
 * (flow-worker.ts startPageWorker; long-worker-side.ts computes there) holds one attention stack
 * kept as queries and keys and computes heatmap bins, model-view thumbnails and the head view's
 * top-k keys on demand. One worker per on-demand source, shared by the views that read it; the
 * page sends it the layers its jobs read (copies; at most a few held at once) and at most a few jobs
 * at a time, tiles and top-k before thumbnails, so that a newer request never waits behind a long
 * queue. A job's result resolves its promise; a cancelled job resolves to null.
 *
 * Where no worker can start (no Worker, or the page's script unknown), `longWorker` returns null and
 * the views compute on the page's thread a few milliseconds at a time, as before; a worker that fails
 * rejects its jobs, and the views compute them on the page's thread instead.
 */
import type { AttentionSource } from '../src/core/attention-source.js';
import type { Trace } from '../src/core/trace.js';
import { pageWorkersAvailable, startPageWorker } from './flow-worker.js';
import { sourceTrace } from './source.js';
import type { BiasForm, LongJob, LongJobTiming, LongReply, LongRequest, LongResult, LongStackSpec } from './long-worker-side.js';

/**
 * Jobs the worker holds at once (it runs them in order): enough that it does not wait for the
 * page's thread (busy painting what came) between jobs, few enough that a newer job waits behind
 * at most a few blocks. Jobs submitted `eager` (a heatmap overview's strips, which are always
 * wanted) go at once, all of them: the worker computes the whole overview without waiting for the
 * page's thread, which mounts and paints meanwhile (its long tasks held the next strips back).
 */
const IN_FLIGHT = 4;
/** Layers the worker holds at once (each job reads one). */
const LAYERS_HELD = 4;
/** Workers kept (one per on-demand source read lately). */
const WORKERS_KEPT = 2;

/** Lower runs first: what the user is looking at (tiles, top-k) before the model view's thumbnails. */
const PRIORITY: Record<LongJob['what'], number> = { bins: 0, topk: 0, thumb: 1 };

interface Pending {
  id: number;
  job: LongJob;
  /** When it was posted to the worker (page ms). */
  sentAt?: number;
  /** Sent at once, whatever the worker holds (see IN_FLIGHT). */
  eager: boolean;
  settle(r: LongResult | null): void;
  fail(e: Error): void;
}

export interface LongTicket<T> {
  id: number;
  /** The result, or null when cancelled. */
  result: Promise<T | null>;
}

export class LongWorker {
  private readonly worker: Worker;
  private readonly finish: () => void;
  private nextId = 1;
  private waiting: Pending[] = [];
  private readonly sent = new Map<number, Pending>();
  /** Layers the worker holds, least recently used first. */
  private held: number[] = [];
  private closed = false;
  /** The worker failed (it could not start, or threw): its jobs were rejected; views compute on the page's thread. */
  broken = false;
  /** Jobs finished so far (tests and readouts). */
  done = 0;

  constructor(
    private trace: Trace,
    private source: AttentionSource,
  ) {
    const { worker, finish } = spare ?? startLongWorker();
    spare = null;
    this.worker = worker;
    this.finish = finish;
    this.post({ kind: 'long-views', op: 'stack', spec: stackSpec(trace, source), keep: false });
    worker.onmessage = (e: MessageEvent<LongReply>) => this.reply(e.data);
    worker.onerror = (e) => {
      this.broken = true;
      const err = new Error(`long views worker: ${e.message || 'failed'}`);
      for (const p of [...this.sent.values(), ...this.waiting]) p.fail(err);
      this.sent.clear();
      this.waiting = [];
    };
  }

  private post(req: LongRequest, transfer: Transferable[] = []): void {
    this.worker.postMessage(req, transfer);
  }

  /** Queues a job (`eager`: sent to the worker at once, see IN_FLIGHT); its result arrives when the worker has computed it. */
  submit<T extends LongResult>(job: LongJob, eager = false): LongTicket<T> {
    const id = this.nextId++;
    let settle: (r: LongResult | null) => void = () => undefined;
    let fail: (e: Error) => void = () => undefined;
    const result = new Promise<T | null>((resolve, reject) => {
      settle = resolve as (r: LongResult | null) => void;
      fail = reject;
    });
    if (this.broken) fail(new Error('long views worker: failed'));
    else {
      this.waiting.push({ id, job, eager, settle, fail });
      this.send();
    }
    return { id, result };
  }

  /** Drops jobs not computed yet (their promises resolve to null). */
  cancel(ids: readonly number[]): void {
    if (ids.length === 0) return;
    const set = new Set(ids);
    const gone = this.waiting.filter((p) => set.has(p.id));
    this.waiting = this.waiting.filter((p) => !set.has(p.id));
    const inWorker = ids.filter((id) => this.sent.has(id));
    for (const id of inWorker) {
      gone.push(this.sent.get(id)!);
      this.sent.delete(id);
    }
    if (inWorker.length) this.post({ kind: 'long-views', op: 'cancel', ids: inWorker });
    for (const p of gone) p.settle(null);
    this.send();
  }

  /**
   * Reads `source` from now on: the same stack with more layers (a partial trace of a stream grown by
   * the layers that arrived since, sharing every layer this worker read, see `extends`). The layers
   * the worker holds and the jobs queued or running stay.
   */
  rebind(trace: Trace, source: AttentionSource): void {
    this.trace = trace;
    this.source = source;
    this.post({ kind: 'long-views', op: 'stack', spec: stackSpec(trace, source), keep: true });
  }

  /** The source the worker reads. */
  get reads(): AttentionSource {
    return this.source;
  }

  /** Jobs queued or running. */
  get pending(): number {
    return this.waiting.length + this.sent.size;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of [...this.sent.values(), ...this.waiting]) p.settle(null);
    this.sent.clear();
    this.waiting = [];
    this.finish();
  }

  private reply(m: LongReply): void {
    const p = this.sent.get(m.id);
    if (!p) return; // cancelled
    this.sent.delete(m.id);
    this.done++;
    if (m.timing) jobMarks(m.timing, p.sentAt ?? m.timing.queuedAt - performance.timeOrigin);
    if ('error' in m) p.fail(new Error(m.error));
    else p.settle(m);
    this.send();
  }

  /** Sends the eager jobs, then waiting jobs (most urgent first) while the worker holds fewer than IN_FLIGHT, with the layers they read. */
  private send(): void {
    for (;;) {
      if (this.closed || this.waiting.length === 0) return;
      let best = this.waiting.findIndex((p) => p.eager);
      if (best < 0) {
        if (this.sent.size >= IN_FLIGHT) return;
        best = 0;
        for (let i = 1; i < this.waiting.length; i++) if (PRIORITY[this.waiting[i]!.job.what] < PRIORITY[this.waiting[best]!.job.what]) best = i;
      }
      const p = this.waiting.splice(best, 1)[0]!;
      this.ensureLayer(p.job.layer);
      this.sent.set(p.id, p);
      p.sentAt = performance.now();
      this.post({ kind: 'long-views', op: 'job', id: p.id, job: p.job });
    }
  }

  private ensureLayer(layer: number): void {
    const at = this.held.indexOf(layer);
    if (at >= 0) {
      this.held.splice(at, 1);
      this.held.push(layer);
      return;
    }
    // Drop the least recently used layers no job in the worker reads.
    const reading = new Set([...this.sent.values()].map((p) => p.job.layer));
    for (let i = 0; this.held.length >= LAYERS_HELD && i < this.held.length; ) {
      const l = this.held[i]!;
      if (reading.has(l)) i++;
      else {
        this.held.splice(i, 1);
        this.post({ kind: 'long-views', op: 'drop', layer: l });
      }
    }
    const stack = this.source.stack;
    // Compact copies, transferred (the page keeps its trace; a layer may be a view of a larger buffer,
    // which a structured clone would copy whole).
    const queries = this.trace.queries![stack]!.layers[layer]!.slice();
    const keys = this.trace.keys![stack]!.layers[layer]!.slice();
    const terms = this.trace.scores![stack]!;
    const bias = (terms.positionBias ?? terms.bias)?.layers[layer]?.slice() ?? null;
    const biasForm: BiasForm = terms.positionBias ? 'relative' : terms.bias?.dims[1] === 1 && this.source.numQueries !== 1 ? 'broadcast' : 'dense';
    this.post({ kind: 'long-views', op: 'layer', layer, queries, keys, bias, biasForm }, [queries.buffer, keys.buffer, ...(bias ? [bias.buffer] : [])]);
    performance.mark('attnscope:worker-layer-sent', { detail: { layer, bytes: queries.byteLength + keys.byteLength + (bias?.byteLength ?? 0) } });
    this.held.push(layer);
  }
}

/** A long views worker, its start marked (bench/layerwise.ts --app reads the page's attnscope: marks). */
function startLongWorker(): { worker: Worker; finish: () => void } {
  performance.mark('attnscope:worker-start');
  return startPageWorker('long views');
}

/**
 * A finished job's time as the page's measures: posted → started in the worker (the message and
 * the jobs before it), its steps' compute time (kernel in the detail), and its end → here.
 */
function jobMarks(t: LongJobTiming, sentAt: number): void {
  const at = (epochMs: number) => epochMs - performance.timeOrigin;
  const now = performance.now();
  try {
    performance.measure('attnscope:worker-wait', { start: sentAt, end: Math.max(sentAt, at(t.startAt)) });
    performance.measure('attnscope:worker-job', { start: at(t.startAt), end: Math.max(at(t.startAt), at(t.endAt)) });
    performance.measure('attnscope:worker-compute', { start: at(t.startAt), duration: t.computeMs, detail: { kernel: t.kernel } });
    performance.measure('attnscope:worker-reply', { start: Math.min(now, at(t.endAt)), end: now });
  } catch {
    // measures are readouts only
  }
}

/** What the worker is told of a stack: its sizes and score terms. */
function stackSpec(trace: Trace, source: AttentionSource): LongStackSpec {
  const stack = source.stack;
  const q = trace.queries![stack]!;
  const k = trace.keys![stack]!;
  const terms = trace.scores![stack]!;
  return {
    stack,
    numLayers: source.numLayers,
    numHeads: q.dims[0],
    kvHeads: k.dims[0],
    numQueries: q.dims[1],
    numKeys: k.dims[1],
    headDim: q.dims[2],
    scale: [...terms.scale],
    causal: terms.causal,
    window: [...terms.window],
  };
}

/**
 * Whether `next` (a stack of a newer partial trace) continues `prev`: same sizes and terms, and
 * every layer of `prev` the same arrays (the app's partial traces of one stream share their layers).
 */
function extendsStack(prev: Trace, next: Trace, stack: AttentionSource['stack']): boolean {
  const [pq, pk, pt] = [prev.queries?.[stack], prev.keys?.[stack], prev.scores?.[stack]];
  const [nq, nk, nt] = [next.queries?.[stack], next.keys?.[stack], next.scores?.[stack]];
  if (!pq || !pk || !pt || !nq || !nk || !nt) return false;
  if (nq.layers.length < pq.layers.length || nq.dims.join() !== pq.dims.join() || nk.dims.join() !== pk.dims.join() || pt.causal !== nt.causal) return false;
  const pb = (pt.positionBias ?? pt.bias)?.layers;
  const nb = (nt.positionBias ?? nt.bias)?.layers;
  if (!!pt.positionBias !== !!nt.positionBias || !!pb !== !!nb || pt.bias?.dims.join() !== nt.bias?.dims.join()) return false;
  // A bias tapped once (one layer for all) or per layer.
  const biasOf = (b: readonly Float32Array[] | undefined, l: number) => b?.[Math.min(l, b.length - 1)];
  for (let l = 0; l < pq.layers.length; l++) {
    if (pq.layers[l] !== nq.layers[l] || pk.layers[l] !== nk.layers[l] || pt.scale[l] !== nt.scale[l] || pt.window[l] !== nt.window[l] || biasOf(pb, l) !== biasOf(nb, l)) return false;
  }
  return true;
}

const workers: { source: AttentionSource; worker: LongWorker }[] = [];

/** A worker started ahead of need (prestartLongWorker), taken by the next LongWorker. */
let spare: { worker: Worker; finish: () => void } | null = null;

/**
 * Starts the long views' next worker now. The served app's workers load the page's script from
 * the server (its CSP allows no blob: worker), and the server answers nothing while it runs a
 * model segment (onnxruntime-node runs on its main thread): a worker started when the first layer
 * is drawn waited for the next segment's run (tens of seconds for a 1B model at 2,048 tokens).
 * Started when a trace is requested, it has its script by the time the first layer arrives.
 */
export function prestartLongWorker(): void {
  if (spare || !pageWorkersAvailable()) return;
  try {
    spare = startLongWorker();
  } catch {
    spare = null;
  }
}

/**
 * The worker computing for an on-demand source of the page (web/source.ts pageSource; made on first
 * use and shared by the views), or null where the page computes on its own thread: a dense source
 * (reading it costs nothing to compute), a source pageSource did not make, or no way to start a worker.
 */
export function longWorker(source: AttentionSource): LongWorker | null {
  const trace = sourceTrace(source);
  if (!trace) return null;
  const stack = source.stack;
  if (!source.onDemand || trace.attention[stack] || !trace.queries?.[stack] || !trace.keys?.[stack] || !trace.scores?.[stack]) return null;
  if (!pageWorkersAvailable()) return null;
  const known = workers.find((w) => w.source === source);
  if (known) return known.worker.broken ? null : known.worker;
  // A newer partial trace of the same stream (the app remounts as layers arrive): the same worker,
  // with what it holds and computes, reads the longer stack.
  const grown = workers.find((w) => !w.worker.broken && w.source.stack === stack && extendsStack(sourceTrace(w.source)!, trace, stack));
  if (grown) {
    grown.worker.rebind(trace, source);
    grown.source = source;
    return grown.worker;
  }
  let worker: LongWorker;
  try {
    worker = new LongWorker(trace, source);
  } catch {
    return null;
  }
  workers.push({ source, worker });
  while (workers.length > WORKERS_KEPT) workers.shift()!.worker.close();
  return worker;
}
