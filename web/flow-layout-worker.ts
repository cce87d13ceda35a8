/**
 * The flow views' drawing off the page's thread, page side: one Web Worker per trace running the
 * page's own script (flow-worker.ts startPageWorker; flow-layout-worker-side.ts there), shared by
 * the flow diagram and the influence tree. The trace's stack goes to it once, one layer per
 * message and per task (a bert-base layer at 512 tokens is 12.6 MB: copying all of them at once
 * would hold the page's thread), then each drawing request gets the drawing back (FlowDrawing:
 * items to append, merged faded edges, the readout). One request per view is in the worker at a
 * time; a newer one waits in its place (the one it replaces is answered null), so the worker never
 * computes drawings nobody will see. The worker ends when neither view is in the document any more
 * (the app replaced the trace's views), or when it fails (the next request starts another).
 */
import type { StackName, Trace } from '../src/core/trace.js';
import type { FlowLayoutRequest, FlowLayoutResult, FlowLayoutStage } from './flow-layout-worker-side.js';
import { startPageWorker } from './flow-worker.js';
import type { JobReply } from './job-worker.js';
import type { FlowDrawingRequest } from './views/flow-drawing.js';

/** What a view is told while its drawing is under way. */
export type FlowDrawStage = { stage: 'sending'; done: number; total: number } | { stage: 'waiting' } | { stage: FlowLayoutStage };

/** A view's slot: one call in the worker and one waiting per slot (a view's drawings, its exports). */
type Slot = 'diagram' | 'tree' | 'diagram-svg' | 'tree-svg';

interface Call<R> {
  id: number;
  view: Slot;
  message: FlowLayoutRequest;
  onStage: (s: FlowDrawStage) => void;
  resolve: (v: R | null) => void;
  reject: (e: Error) => void;
}

type AnyCall = Call<FlowLayoutResult> | Call<string>;

const drawers = new WeakMap<Trace, FlowLayoutWorker>();
let nextTraceId = 1;

/** The drawing worker of a trace's flow views (one per trace). */
export function flowLayoutWorker(trace: Trace, el: HTMLElement): FlowLayoutWorker {
  let d = drawers.get(trace);
  if (!d) drawers.set(trace, (d = new FlowLayoutWorker(trace)));
  d.watch(el);
  return d;
}

export class FlowLayoutWorker {
  private worker: { worker: Worker; finish: () => void } | null = null;
  private readonly traceId = nextTraceId++;
  /** Stacks whose layers are queued or sent to the current worker. */
  private readonly sent = new Set<StackName>();
  /** Messages waiting for their task (layers, then the requests after them). */
  private readonly queue: (() => void)[] = [];
  private pumping = false;
  private nextId = 1;
  /** In the worker: at most one call per view; waiting: the newest call per view. */
  private readonly running = new Map<number, AnyCall>();
  private readonly waiting = new Map<Slot, AnyCall>();
  private readonly els = new Set<HTMLElement>();
  private timer: ReturnType<typeof setInterval> | null = null;

  constructor(private readonly trace: Trace) {}

  /** Ends the worker once none of the watched elements is in the document. */
  watch(el: HTMLElement): void {
    this.els.add(el);
    this.timer ??= setInterval(() => {
      if ([...this.els].some((e) => e.isConnected)) return;
      this.stop(new Error('the flow views were closed'));
      clearInterval(this.timer!);
      this.timer = null;
      drawers.delete(this.trace);
    }, 5000);
  }

  /** The drawing of a view's request (null: a newer request of the same view replaced it). */
  draw(view: 'diagram' | 'tree', stack: StackName, request: FlowDrawingRequest, onStage: (s: FlowDrawStage) => void, matricesUpTo?: number): Promise<FlowLayoutResult | null> {
    const id = this.nextId++;
    return this.call<FlowLayoutResult>(view, stack, { kind: 'flow-layout', op: 'draw', id, traceId: this.traceId, stack, request, ...(matricesUpTo !== undefined ? { matricesUpTo } : {}) }, onStage);
  }

  /** A view as an SVG document, computed in the worker. */
  svg(view: 'diagram' | 'tree', stack: StackName, request: FlowDrawingRequest): Promise<string | null> {
    const id = this.nextId++;
    return this.call<string>(`${view}-svg`, stack, { kind: 'flow-layout', op: 'svg', id, traceId: this.traceId, stack, request }, () => undefined);
  }

  private call<R>(view: Slot, stack: StackName, message: FlowLayoutRequest & { id: number }, onStage: (s: FlowDrawStage) => void): Promise<R | null> {
    return new Promise<R | null>((resolve, reject) => {
      this.ensure(stack);
      const call = { id: message.id, view, message, onStage, resolve, reject } as unknown as AnyCall;
      const busy = [...this.running.values()].some((c) => c.view === view);
      if (busy || this.queue.length > 0) {
        const old = this.waiting.get(view);
        if (old) old.resolve(null);
        this.waiting.set(view, call);
        onStage(this.queue.length > 0 ? this.sendingStage() : { stage: 'waiting' });
        this.pump();
        return;
      }
      this.send(call);
    });
  }

  private sendingStage(): FlowDrawStage {
    const s = this.trace.attention[[...this.sent].at(-1)!];
    const total = s?.layers.length ?? 0;
    return { stage: 'sending', done: Math.max(0, total - this.queue.length), total };
  }

  private send(call: AnyCall): void {
    this.running.set(call.id, call);
    call.onStage({ stage: 'waiting' });
    this.worker!.worker.postMessage(call.message);
  }

  /** Starts the worker and queues the stack's layers when they are not there yet. */
  private ensure(stack: StackName): void {
    if (!this.worker) {
      const w = startPageWorker('flow views');
      w.worker.onmessage = (e: MessageEvent<JobReply<FlowLayoutStage, FlowLayoutResult | string>>) => this.reply(e.data);
      w.worker.onerror = (e) => {
        e.preventDefault();
        this.stop(new Error(`flow views worker failed: ${e.message || 'unknown error'}`));
      };
      this.worker = w;
      this.sent.clear();
    }
    if (this.sent.has(stack)) return;
    this.sent.add(stack);
    const s = this.trace.attention[stack];
    if (!s) throw new Error(`the trace has no '${stack}' attention`);
    const t = this.trace;
    // What flowModel reads besides the attention: the model, the tokens, a generation's steps.
    const slim: Trace = { model: t.model, tokens: t.tokens, attention: {}, ...(t.decoderTokens ? { decoderTokens: t.decoderTokens } : {}), ...(t.generation ? { generation: t.generation } : {}) };
    const worker = this.worker.worker;
    const traceId = this.traceId;
    worker.postMessage({ kind: 'flow-layout', op: 'stack', traceId, trace: slim, stack, dims: s.dims, layers: s.layers.length } satisfies FlowLayoutRequest);
    s.layers.forEach((data, layer) => this.queue.push(() => worker.postMessage({ kind: 'flow-layout', op: 'layer', traceId, stack, layer, data } satisfies FlowLayoutRequest)));
  }

  /** Posts the queued layers one per task, then the waiting calls. */
  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    const step = () => {
      if (!this.worker) {
        this.pumping = false;
        return;
      }
      const next = this.queue.shift();
      if (next) {
        next();
        for (const c of this.waiting.values()) c.onStage(this.sendingStage());
        setTimeout(step, 0);
        return;
      }
      this.pumping = false;
      this.sendWaiting();
    };
    setTimeout(step, 0);
  }

  private sendWaiting(): void {
    for (const [view, call] of [...this.waiting]) {
      if ([...this.running.values()].some((c) => c.view === view)) continue;
      this.waiting.delete(view);
      this.send(call);
    }
  }

  private reply(m: JobReply<FlowLayoutStage, FlowLayoutResult | string>): void {
    const call = m.id === undefined ? undefined : this.running.get(m.id);
    if (!call) return;
    if (m.type === 'progress') {
      call.onStage({ stage: m.progress });
      return;
    }
    this.running.delete(call.id);
    if (m.type === 'done') (call.resolve as (v: FlowLayoutResult | string) => void)(m.result);
    else call.reject(new Error(m.message));
    if (this.queue.length === 0) this.sendWaiting();
  }

  /** Ends the worker: calls under way or waiting fail with `why`. */
  private stop(why: Error): void {
    this.worker?.finish();
    this.worker = null;
    this.sent.clear();
    this.queue.length = 0;
    this.pumping = false;
    for (const c of [...this.running.values(), ...this.waiting.values()]) c.reject(why);
    this.running.clear();
    this.waiting.clear();
  }
}
