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
import { type KeyRange, keyRange } from '../src/views/layout/heatmap-tiles.js';
import { pageMark, pageMeasure } from './long-worker-marks.js';
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
  /** The lane it was sent to. */
  lane?: Lane;
  settle(r: LongResult | null): void;
  fail(e: Error): void;
}

export interface LongTicket<T> {
  id: number;
  /** The result, or null when cancelled. */
  result: Promise<T | null>;
}

/** A thread of the pool (a Worker running the page's script), and the LongWorker whose stack it holds now. */
interface Thread {
  worker: Worker;
  finish: () => void;
  owner: LongWorker | null;
  /** Failed: never taken again. */
  broken: boolean;
}

/** A thread as one LongWorker uses it: the jobs sent to it, the layers it holds, the cells of its eager jobs not done yet. */
interface Lane {
  thread: Thread;
  sent: Map<number, Pending>;
  /** Layers it holds, least recently used first. */
  held: number[];
  /** Cells of its eager jobs sent and not done (to share an overview's strips by their work). */
  load: number;
}

/**
 * Workers that share an overview's strips (the first computes everything; the others only strips):
 * the strips are independent, and while the page computes its first view the server waits for its
 * "drawn" (app.ts POST /api/trace/drawn), so the machine's other core is free.
 */
const OVERVIEW_LANES = 2;
/** Threads kept at most (the lanes of two stacks on screen: compare mode's two sides). */
const MAX_THREADS = 2 * OVERVIEW_LANES;

/** Job ids, unique over the page (a thread passes from one LongWorker to another). */
let nextJobId = 1;

export class LongWorker {
  private lanes: Lane[] = [];
  private waiting: Pending[] = [];
  private closed = false;
  /** The worker failed (it could not start, or threw): its jobs were rejected; views compute on the page's thread. */
  broken = false;
  /** Jobs finished so far (tests and readouts). */
  done = 0;

  constructor(
    private trace: Trace,
    private source: AttentionSource,
  ) {
    this.addLane();
  }

  /** Takes a thread of the pool (one no other stack is computing in, or a new one) for this stack; null when none can be had. */
  private addLane(): Lane | null {
    const thread = takeThread(this);
    if (!thread) return null;
    const lane: Lane = { thread, sent: new Map(), held: [], load: 0 };
    this.lanes.push(lane);
    // (keep: false: the layers and jobs of the stack it held before are dropped.)
    this.post(lane, { kind: 'long-views', op: 'stack', spec: stackSpec(this.trace, this.source), keep: false });
    thread.worker.onmessage = (e: MessageEvent<LongReply>) => this.reply(lane, e.data);
    thread.worker.onerror = (e) => {
      thread.broken = true;
      this.broken = true;
      const err = new Error(`long views worker: ${e.message || 'failed'}`);
      for (const p of [...this.inFlight(), ...this.waiting]) p.fail(err);
      for (const l of this.lanes) l.sent.clear();
      this.waiting = [];
    };
    return lane;
  }

  /** Gives up a lane whose thread another stack takes (it computes nothing for this one). */
  yieldLane(thread: Thread): void {
    this.lanes = this.lanes.filter((l) => l.thread !== thread);
  }

  /** Whether `thread` computes nothing for this stack now. */
  idleOn(thread: Thread): boolean {
    const lane = this.lanes.find((l) => l.thread === thread);
    return !lane || lane.sent.size === 0;
  }

  private inFlight(): Pending[] {
    return this.lanes.flatMap((l) => [...l.sent.values()]);
  }

  private post(lane: Lane, req: LongRequest, transfer: Transferable[] = []): void {
    lane.thread.worker.postMessage(req, transfer);
  }

  /** Queues a job (`eager`: sent to a worker at once, see IN_FLIGHT); its result arrives when the worker has computed it. */
  submit<T extends LongResult>(job: LongJob, eager = false): LongTicket<T> {
    const id = nextJobId++;
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
    for (const lane of this.lanes) {
      const inWorker = ids.filter((id) => lane.sent.has(id));
      for (const id of inWorker) {
        const p = lane.sent.get(id)!;
        gone.push(p);
        lane.sent.delete(id);
        if (p.eager) lane.load -= this.cells(p.job);
      }
      if (inWorker.length) this.post(lane, { kind: 'long-views', op: 'cancel', ids: inWorker });
    }
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
    for (const lane of this.lanes) this.post(lane, { kind: 'long-views', op: 'stack', spec: stackSpec(trace, source), keep: true });
  }

  /** The source the worker reads. */
  get reads(): AttentionSource {
    return this.source;
  }

  /** Jobs queued or running. */
  get pending(): number {
    return this.waiting.length + this.lanes.reduce((n, l) => n + l.sent.size, 0);
  }

  /** Workers this stack's jobs run in now. */
  get workers(): number {
    return this.lanes.length;
  }

  /** Cancels what it computes and gives its threads back to the pool (the next stacks take them, warm). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const p of [...this.inFlight(), ...this.waiting]) p.settle(null);
    this.waiting = [];
    for (const lane of this.lanes) {
      if (lane.sent.size) this.post(lane, { kind: 'long-views', op: 'cancel', ids: [...lane.sent.keys()] });
      // Its layers' memory back (the next stack's would replace them only when it takes the thread).
      for (const layer of lane.held) this.post(lane, { kind: 'long-views', op: 'drop', layer });
      lane.sent.clear();
      releaseThread(lane.thread);
    }
    this.lanes = [];
  }

  private reply(lane: Lane, m: LongReply): void {
    const p = lane.sent.get(m.id);
    if (!p) return; // cancelled
    lane.sent.delete(m.id);
    if (p.eager) lane.load -= this.cells(p.job);
    this.done++;
    if (m.timing) jobMarks(m.timing, p.sentAt ?? m.timing.queuedAt - performance.timeOrigin);
    if ('error' in m) p.fail(new Error(m.error));
    else p.settle(m);
    this.send();
  }

  /**
   * Sends the eager jobs, each to the lane with the least eager work left (a second lane is taken
   * for them where the machine has more than one core), then waiting jobs (most urgent first) to the
   * first lane while it holds fewer than IN_FLIGHT, with the layers they read.
   */
  private send(): void {
    for (;;) {
      if (this.closed || this.broken || this.waiting.length === 0) return;
      // A lane given up to another stack: take one again.
      const primary = this.lanes[0] ?? this.addLane();
      if (!primary) return;
      let best = this.waiting.findIndex((p) => p.eager);
      let lane = primary;
      if (best >= 0) {
        if (this.lanes.length < OVERVIEW_LANES && helpersWanted()) this.addLane();
        for (const l of this.lanes) if (l.load < lane.load) lane = l;
      } else {
        if (primary.sent.size >= IN_FLIGHT) return;
        best = 0;
        for (let i = 1; i < this.waiting.length; i++) if (PRIORITY[this.waiting[i]!.job.what] < PRIORITY[this.waiting[best]!.job.what]) best = i;
      }
      const p = this.waiting.splice(best, 1)[0]!;
      this.ensureLayer(lane, p.job.layer);
      lane.sent.set(p.id, p);
      if (p.eager) lane.load += this.cells(p.job);
      p.sentAt = performance.now();
      this.post(lane, { kind: 'long-views', op: 'job', id: p.id, job: p.job });
    }
  }

  /** A job's cells (jobCells) under its layer's mask. */
  private cells(job: LongJob): number {
    const terms = this.trace.scores![this.source.stack]!;
    return jobCells(job, keyRange(terms, this.source.stack, job.layer, this.source.numQueries, this.source.numKeys));
  }

  private ensureLayer(lane: Lane, layer: number): void {
    const held = lane.held;
    const at = held.indexOf(layer);
    if (at >= 0) {
      held.splice(at, 1);
      held.push(layer);
      return;
    }
    // Drop the least recently used layers no job in the worker reads.
    const reading = new Set([...lane.sent.values()].map((p) => p.job.layer));
    for (let i = 0; held.length >= LAYERS_HELD && i < held.length; ) {
      const l = held[i]!;
      if (reading.has(l)) i++;
      else {
        held.splice(i, 1);
        this.post(lane, { kind: 'long-views', op: 'drop', layer: l });
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
    this.post(lane, { kind: 'long-views', op: 'layer', layer, queries, keys, bias, biasForm }, [queries.buffer, keys.buffer, ...(bias ? [bias.buffer] : [])]);
    pageMark('worker-layer-sent', { layer, bytes: queries.byteLength + keys.byteLength + (bias?.byteLength ?? 0), lane: this.lanes.indexOf(lane) });
    held.push(layer);
  }
}

/** The cells a job computes: a bins job's unmasked cells (an overview strip of a causal matrix grows with its rows), else 0. */
function jobCells(job: LongJob, mask: KeyRange | null): number {
  if (job.what !== 'bins') return 0;
  const { r0, r1, c0, c1 } = job.region;
  if (!mask) return (r1 - r0) * (c1 - c0);
  let n = 0;
  for (let r = r0; r < r1; r++) n += Math.max(0, Math.min(c1, mask.hi(r)) - Math.max(c0, mask.lo(r)));
  return n;
}

/** Whether an overview's strips are shared with a second worker: where the page can start one and the machine has a second core. */
function helpersWanted(): boolean {
  return pageWorkersAvailable() && (navigator.hardwareConcurrency ?? 1) > 1;
}

/** A long views worker, its start marked (bench/layerwise.ts --app reads the page's attnscope: marks). */
function startLongWorker(): { worker: Worker; finish: () => void } {
  pageMark('worker-start');
  return startPageWorker('long views');
}

/**
 * A finished job's time as the page's measures: posted → started in the worker (the message and
 * the jobs before it), its steps' compute time (kernel in the detail), and its end → here.
 */
function jobMarks(t: LongJobTiming, sentAt: number): void {
  const at = (epochMs: number) => epochMs - performance.timeOrigin;
  const now = performance.now();
  pageMeasure('worker-wait', { start: sentAt, end: Math.max(sentAt, at(t.startAt)) });
  pageMeasure('worker-job', { start: at(t.startAt), end: Math.max(at(t.startAt), at(t.endAt)) });
  pageMeasure('worker-compute', { start: at(t.startAt), duration: t.computeMs, detail: { kernel: t.kernel } });
  pageMeasure('worker-reply', { start: Math.min(now, at(t.endAt)), end: now });
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

/**
 * The long views' threads: Workers running the page's script, each holding one stack (one
 * LongWorker's) at a time. A stack takes a thread that no stack holds, else one whose stack
 * computes nothing in it (the stack takes another when it needs one again, sending its layers
 * again), else a new one up to MAX_THREADS: a new trace on the same page, or layer 0 after its head
 * preview, computes in threads already started, their script loaded and their code compiled.
 */
const threads: Thread[] = [];

/**
 * A worker the served page started before its app script ran (src/server/app.ts EARLY_SCRIPT: the
 * same script, told to warm), taken once; undefined when none is left.
 */
function earlyWorker(): { worker: Worker; finish: () => void } | undefined {
  const early = (globalThis as { attnscopeEarlyWorkers?: Worker[] }).attnscopeEarlyWorkers;
  const worker = early?.shift();
  return worker && { worker, finish: () => worker.terminate() };
}

function newThread(warm: boolean): Thread | null {
  try {
    const early = earlyWorker();
    const { worker, finish } = early ?? startLongWorker();
    // Compiles the kernel and warms the binning before the first job (long-worker-side.ts warmUp; an early worker was told so).
    if (warm && !early) worker.postMessage({ kind: 'long-views', op: 'warm' } satisfies LongRequest);
    const thread: Thread = { worker, finish, owner: null, broken: false };
    threads.push(thread);
    return thread;
  } catch {
    return null;
  }
}

/** A thread for `owner` (see `threads`), or null when none can be had (all MAX_THREADS busy; or no worker starts). */
function takeThread(owner: LongWorker): Thread | null {
  const free = threads.find((t) => !t.broken && t.owner === null) ?? threads.find((t) => !t.broken && t.owner !== owner && t.owner!.idleOn(t));
  const thread = free ?? (threads.filter((t) => !t.broken).length < MAX_THREADS || owner.workers === 0 ? newThread(false) : null);
  if (!thread) return null;
  thread.owner?.yieldLane(thread);
  thread.owner = owner;
  return thread;
}

/** A thread its stack no longer needs: kept for the next (at most MAX_THREADS kept), or ended. */
function releaseThread(thread: Thread): void {
  thread.owner = null;
  thread.worker.onmessage = null;
  if (thread.broken || threads.filter((t) => !t.broken).length > MAX_THREADS) {
    threads.splice(threads.indexOf(thread), 1);
    thread.finish();
  }
}

/** Threads that a new stack could take now (no stack holds them, or their stack computes nothing in them). */
function available(): number {
  return threads.filter((t) => !t.broken && (t.owner === null || t.owner.idleOn(t))).length;
}

/**
 * Starts the long views' threads a new trace's first view will use (one per lane an overview uses)
 * unless threads it can take are there already, and has them compile and warm their code. The served
 * app's workers load the page's script from the server (its CSP allows no blob: worker; the script
 * is cached for good, app.ts `?v=`), and the server answers nothing while it runs a model segment
 * (onnxruntime-node runs on its main thread): started when a trace is requested, they have their
 * script and their kernel compiled by the time the first layer arrives.
 */
export function prestartLongWorker(): void {
  if (!pageWorkersAvailable()) return;
  const want = helpersWanted() ? OVERVIEW_LANES : 1;
  for (let n = available(); n < want && threads.filter((t) => !t.broken).length < MAX_THREADS; n++) if (!newThread(true)) return;
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
