/**
 * The worker side of the long views (long-worker.ts starts it): the page's own script running as a
 * Web Worker (flow-worker.ts `runFlowWorker` hands these requests here) holds one attention stack
 * kept as queries and keys, the layers the page sent, and computes what the views ask for —
 * heatmap bins (tiles, overview strips), model-view thumbnails and the head view's top-k keys —
 * with attention computed on demand (src/core/attention-on-demand.ts, its WebAssembly kernel where
 * it runs). Jobs run block by block for up to SLICE_MS, then yield, so cancels and newer jobs
 * are read while a long job runs; each finished job posts its result (typed arrays transferred).
 */
import { onDemandKernel, queryKeyAttentionSource } from '../src/core/attention-on-demand.js';
import type { AttentionSource } from '../src/core/attention-source.js';
import type { ScoreTerms, StackName } from '../src/core/trace.js';
import { topKeys } from '../src/views/layout/head-long.js';
import { type BinRegion, type Bins, type CellWhich, binRegion, blockReader, keyRange, thumbnailBins } from '../src/views/layout/heatmap-tiles.js';

/** What the worker needs of the stack: its sizes and score terms (the layers come one by one). */
export interface LongStackSpec {
  stack: StackName;
  numLayers: number;
  numHeads: number;
  kvHeads: number;
  numQueries: number;
  numKeys: number;
  headDim: number;
  scale: number[];
  causal: boolean;
  window: (number | null)[];
}

/** One computation: bins of a region of one head (or the mean / max over heads), a thumbnail, or top-k keys of rows. */
export type LongJob =
  | { what: 'bins'; layer: number; which: CellWhich; region: BinRegion }
  | { what: 'thumb'; layer: number; head: number; rowsPerBin: number }
  | { what: 'topk'; layer: number; head: number; r0: number; r1: number; k: number };

export type LongRequest = { kind: 'long-views' } & (
  /** keep: the same stack with more layers (the layers held and the jobs stay). */
  | { op: 'stack'; spec: LongStackSpec; keep: boolean }
  | { op: 'layer'; layer: number; queries: Float32Array; keys: Float32Array; bias: Float32Array | null; biasForm?: BiasForm }
  | { op: 'drop'; layer: number }
  | { op: 'job'; id: number; job: LongJob }
  | { op: 'cancel'; ids: number[] }
  /** Compiles the kernel and runs the binning once on a small made-up head (a worker started ahead of need: its first strips then run optimised code). */
  | { op: 'warm' }
);

export type LongResult = { bins: Bins } | { topk: { index: Int32Array; value: Float32Array } };
/**
 * Where a job's time went in the worker, in epoch milliseconds (the page and the worker share the
 * machine's clock): when it came, its first and last step, and the time spent in its steps; and
 * which kernel computed its blocks.
 */
export interface LongJobTiming {
  queuedAt: number;
  startAt: number;
  endAt: number;
  computeMs: number;
  kernel: 'wasm' | 'js';
}
export type LongReply = { kind: 'long-views'; id: number; timing?: LongJobTiming } & (LongResult | { error: string });

export function isLongRequest(data: unknown): data is LongRequest {
  return typeof data === 'object' && data !== null && (data as { kind?: unknown }).kind === 'long-views';
}

interface Running {
  id: number;
  gen: Generator<number, LongResult>;
  /** Epoch ms it came and its first step (0: not started); ms spent in its steps. */
  queuedAt: number;
  startAt: number;
  computeMs: number;
}

/** The machine's clock in milliseconds (the page's and the worker's agree). */
const epoch = (): number => performance.timeOrigin + performance.now();

/** The worker's state (one stack per worker). */
let spec: LongStackSpec | null = null;
const layers = new Map<number, AttentionSource>();
const queue: Running[] = [];
let pumping = false;

/**
 * How a layer's bias is laid out (core/position-bias.ts): [heads, queries, keys] ('dense', the
 * default), one row over the keys broadcast over the queries ('broadcast', ALiBi), or one value per
 * offset j − i ('relative', T5).
 */
export type BiasForm = 'dense' | 'broadcast' | 'relative';

/** One layer's source: its queries, keys and terms as a one-layer stack. */
function layerSource(s: LongStackSpec, layer: number, queries: Float32Array, keys: Float32Array, bias: Float32Array | null, form: BiasForm = 'dense'): AttentionSource {
  const terms: ScoreTerms = {
    scale: [s.scale[layer]!],
    causal: s.causal,
    window: [s.window[layer] ?? null],
    ...(bias && form === 'relative' ? { positionBias: { kind: 'relative' as const, dims: [s.numHeads, s.numQueries, s.numKeys] as const, layers: [bias] } } : {}),
    ...(bias && form !== 'relative' ? { bias: { dims: [s.numHeads, form === 'broadcast' ? 1 : s.numQueries, s.numKeys] as const, layers: [bias] } } : {}),
  };
  return queryKeyAttentionSource(s.stack, { dims: [s.numHeads, s.numQueries, s.headDim], layers: [queries] }, { dims: [s.kvHeads, s.numKeys, s.headDim], layers: [keys] }, terms);
}

function* run(job: LongJob): Generator<number, LongResult> {
  const s = spec;
  if (!s) throw new Error('long views: no stack was sent to the worker');
  const source = layers.get(job.layer);
  if (!source) throw new Error(`long views: layer ${job.layer} was not sent to the worker`);
  const mask = keyRange({ scale: s.scale, causal: s.causal, window: s.window }, s.stack, job.layer, s.numQueries, s.numKeys);
  if (job.what === 'bins') return { bins: yield* binRegion(blockReader(source, 0, job.which), job.region, mask) };
  if (job.what === 'thumb') return { bins: yield* thumbnailBins(blockReader(source, 0, job.head), s.numQueries, s.numKeys, mask, job.rowsPerBin) };
  return { topk: topKeys(source.block(0, job.head, job.r0, job.r1, 0, s.numKeys), job.r1 - job.r0, s.numKeys, job.k) };
}

function transfers(r: LongResult): Transferable[] {
  return 'bins' in r ? [r.bins.max.buffer, r.bins.mean.buffer, r.bins.blank.buffer] : [r.topk.index.buffer, r.topk.value.buffer];
}

/** Time the worker computes before it reads its messages again (cancels, newer jobs). */
const SLICE_MS = 12;

/**
 * Yields to the worker's messages, then runs `tick`: through a MessageChannel where there is one,
 * since nested setTimeout(0) calls are held back to 4 ms each after the fifth (HTML timers), which
 * made an overview of 32 one-block strips wait ~8 ms per strip.
 */
const yieldThen: (tick: () => void) => void = (() => {
  if (typeof MessageChannel === 'undefined') return (tick: () => void) => void setTimeout(tick, 0);
  const channel = new MessageChannel();
  let next: (() => void) | null = null;
  channel.port1.onmessage = () => {
    const t = next;
    next = null;
    t?.();
  };
  return (tick: () => void) => {
    next = tick;
    channel.port2.postMessage(null);
  };
})();

/** Runs jobs a step (one block) at a time for up to SLICE_MS, then yields to the worker's messages; again until none is left. */
function pump(post: (m: LongReply, transfer?: Transferable[]) => void): void {
  if (pumping || queue.length === 0) return;
  pumping = true;
  yieldThen(() => {
    pumping = false;
    const t0 = performance.now();
    for (let job = queue[0]; job && performance.now() - t0 < SLICE_MS; job = queue[0]) {
      try {
        const s0 = performance.now();
        if (job.startAt === 0) job.startAt = performance.timeOrigin + s0;
        const r = job.gen.next();
        job.computeMs += performance.now() - s0;
        if (r.done) {
          queue.shift();
          const timing: LongJobTiming = { queuedAt: job.queuedAt, startAt: job.startAt, endAt: epoch(), computeMs: job.computeMs, kernel: onDemandKernel() };
          post({ kind: 'long-views', id: job.id, timing, ...r.value }, transfers(r.value));
        }
      } catch (err) {
        queue.shift();
        post({ kind: 'long-views', id: job.id, error: (err as Error).message });
      }
    }
    pump(post);
  });
}

/** Query and key rows of the warm-up head: enough work for the engine to optimise the kernel and the binning, a few ms. */
const WARM_TOKENS = 256;
const WARM_DIM = 64;

/**
 * Runs the work of an overview once on a small made-up causal head (WARM_TOKENS², values from a fixed
 * sequence): compiles the WebAssembly kernel and gets the block and binning code optimised before
 * the first real strip, which otherwise ran cold (20–220 ms for the first strip of a new worker).
 * Its result is dropped.
 */
function warmUp(): void {
  const values = (seed: number) => Float32Array.from({ length: WARM_TOKENS * WARM_DIM }, (_, i) => Math.sin(i * 0.618 + seed) * 0.5);
  const source = queryKeyAttentionSource('self', { dims: [1, WARM_TOKENS, WARM_DIM], layers: [values(1)] }, { dims: [1, WARM_TOKENS, WARM_DIM], layers: [values(2)] }, { scale: [0.125], causal: true, window: [null] });
  const mask = keyRange({ scale: [0.125], causal: true, window: [null] }, 'self', 0, WARM_TOKENS, WARM_TOKENS);
  const f = 4;
  // Strips as the overview's (16 bin rows of f × f cells).
  for (let r0 = 0; r0 < WARM_TOKENS; r0 += 16 * f) {
    const it = binRegion(blockReader(source, 0, 0), { r0, r1: r0 + 16 * f, c0: 0, c1: WARM_TOKENS, f }, mask);
    while (!it.next().done);
  }
}

/** Handles one request of the page (the state persists between requests). */
export function onLongRequest(req: LongRequest, post: (m: LongReply, transfer?: Transferable[]) => void): void {
  switch (req.op) {
    case 'stack':
      spec = req.spec;
      if (req.keep) return;
      layers.clear();
      queue.length = 0;
      return;
    case 'layer':
      if (spec) layers.set(req.layer, layerSource(spec, req.layer, req.queries, req.keys, req.bias, req.biasForm));
      return;
    case 'drop':
      layers.delete(req.layer);
      return;
    case 'cancel': {
      const ids = new Set(req.ids);
      for (let i = queue.length - 1; i >= 0; i--) if (ids.has(queue[i]!.id)) queue.splice(i, 1);
      return;
    }
    case 'warm':
      warmUp();
      return;
    case 'job':
      queue.push({ id: req.id, gen: run(req.job), queuedAt: epoch(), startAt: 0, computeMs: 0 });
      pump(post);
      return;
  }
}
