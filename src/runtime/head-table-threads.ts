/**
 * The head table (analysis/head-types.ts `headTable`) over several cores in Node: the layers are
 * cut into ranges of nearly equal cost (headTableRanges), the first range is computed on the
 * calling thread while worker threads compute the others (each gets a copy of the layers it reads:
 * its range, and layer 0 for js_from_first), and the tables of the ranges are concatenated — the
 * same rows, value for value, as `headTable` on one thread (a layer's values do not depend on the
 * range that holds it). Worker threads are started on first use and kept (unref'd: they do not keep
 * the process alive) for later tables, each with a SharedArrayBuffer of its own that the layers are
 * copied into (kept too: a fresh buffer per table cost more in page faults than the copy itself,
 * ≈ 0.1 s for 7 layers of bert-base at 512 tokens). The calling thread copies a worker's first two
 * layers, starts it, and copies the rest between the layers of its own range (a worker waits for a
 * layer not in yet): the worker starts after ≈ 2 copies instead of all 7 (≈ 25 ms at 512 tokens),
 * and the two threads' shares even out (the calling thread's copies against the worker's re-read
 * of layer 0). Where a worker cannot start, its range is computed here.
 */
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { StackName, Trace } from '../core/trace.js';
import { defaultStack } from '../analysis/head-metrics.js';
import { type HeadTablePart, type PartOptions, headTablePart, runHeadTablePart } from '../analysis/head-table-parts.js';
import { type HeadTableRow, headTable, headTableRanges } from '../analysis/head-types.js';
import type { HeadTableThreadMessage } from './head-table-thread.js';

export interface HeadTableThreadOptions {
  /** Threads in all, the calling one included (default: the machine's cores, at most 4). */
  threads?: number;
}

type Reply = { ok: true; rows: HeadTableRow[] } | { ok: false; message: string };

interface PooledWorker {
  worker: Worker;
  busy: boolean;
  /** Where this worker's parts' layers are copied (grown when a part needs more). */
  shared?: SharedArrayBuffer;
  /** How many of the current part's layers are in `shared` (one int32 over a SharedArrayBuffer of its own). */
  ready: Int32Array;
}

const pool: PooledWorker[] = [];

/** A new worker thread running head-table-thread (its .ts source under tsx/vitest, else the built .js). */
function startWorker(): Worker {
  const here = import.meta.url;
  if (here.endsWith('.ts')) {
    // Running from the sources (tsx, vitest): the thread registers tsx's loader, then imports its source.
    const pkg = createRequire(here).resolve('tsx/package.json');
    const api = pathToFileURL(join(dirname(pkg), 'dist', 'esm', 'api', 'index.mjs')).href;
    const thread = new URL('./head-table-thread.ts', here).href;
    const code = `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(thread)}); });`;
    return new Worker(code, { eval: true });
  }
  return new Worker(new URL('./head-table-thread.js', here));
}

/** A new idle worker in the pool (unref'd: it does not keep the process alive). */
function addWorker(): PooledWorker {
  const w: PooledWorker = { worker: startWorker(), busy: false, ready: new Int32Array(new SharedArrayBuffer(4)) };
  w.worker.unref();
  // A worker that fails while idle (started ahead, warmHeadTableThreads) is dropped, not left to throw
  // in the process; a busy one's failure is its table's (onWorker).
  w.worker.on('error', (e: Error) => {
    if (w.busy) return;
    headTableThreadFailure = e.message;
    void w.worker.terminate();
  });
  w.worker.on('exit', () => {
    const at = pool.indexOf(w);
    if (at >= 0) pool.splice(at, 1);
  });
  pool.push(w);
  return w;
}

function takeWorker(): PooledWorker {
  const w = pool.find((p) => !p.busy) ?? addWorker();
  w.busy = true;
  return w;
}

/** Threads in all for `threads` (the calling one included). */
function threadCount(threads: HeadTableThreadOptions): number {
  return Math.max(1, Math.floor(threads.threads ?? Math.min(4, availableParallelism())));
}

/**
 * Starts the worker threads a later `headTableThreaded(…, threads)` takes, and has each compile the
 * kernel, so that the table does not wait for them: for a caller that knows a large table is coming
 * (the CLI while the model traces). Returns at once; the workers are kept (unref'd) as the table's are.
 * Where a worker cannot start, nothing happens (the table will say why, or compute its range here).
 */
export function warmHeadTableThreads(threads: HeadTableThreadOptions = {}): void {
  try {
    for (let idle = pool.filter((p) => !p.busy).length; idle < threadCount(threads) - 1; idle++) {
      const message: HeadTableThreadMessage = { warm: true };
      addWorker().worker.postMessage(message);
    }
  } catch (e) {
    headTableThreadFailure = e instanceof Error ? e.message : String(e);
  }
}

/**
 * A part's layers on their way to a worker: views of the worker's shared buffer, filled in
 * layerIndex order by `fill` (on the calling thread, between the layers of its own range), each
 * one announced through the worker's `ready` count (the worker waits there for a layer not in yet).
 */
class Feed {
  private done = 0;
  readonly part: HeadTablePart;
  constructor(
    private readonly from: HeadTablePart,
    private readonly ready: Int32Array,
    shared: SharedArrayBuffer,
  ) {
    let at = 0;
    const layers = from.layers.map((l) => {
      const view = new Float32Array(shared, at, l.length);
      at += l.byteLength;
      return view;
    });
    this.part = { ...from, layers };
    Atomics.store(ready, 0, 0);
  }
  /** Layers still to copy. */
  get left(): number {
    return this.part.layers.length - this.done;
  }
  /** Copies the next `count` layers (at most the rest) and tells the worker. */
  fill(count: number): void {
    const end = Math.min(this.part.layers.length, this.done + count);
    if (end <= this.done) return;
    for (; this.done < end; this.done++) this.part.layers[this.done]!.set(this.from.layers[this.done]!);
    Atomics.store(this.ready, 0, this.done);
    Atomics.notify(this.ready, 0);
  }
}

/** The layers a feed copies before its worker starts (the first layer it reads, and the one after). */
const FEED_AHEAD = 2;

/** A feed's layers in the shared buffer of its worker (grown when the part needs more). */
function feedFor(w: PooledWorker, part: HeadTablePart): Feed {
  const bytes = part.layers.reduce((n, l) => n + l.byteLength, 0);
  if (!w.shared || w.shared.byteLength < bytes) w.shared = new SharedArrayBuffer(bytes);
  return new Feed(part, w.ready, w.shared);
}

/** Why the last worker thread failed (for tests and the bench), '' when none did. */
export let headTableThreadFailure = '';

/**
 * One part on a worker thread (`part` with the trace's own layers; they reach the worker's shared
 * buffer through a feed, added to `feeds` for the caller to fill); on a worker failure (not an
 * error of the table) the part is computed here.
 */
function onWorker(part: HeadTablePart, feeds: Feed[]): Promise<HeadTableRow[]> {
  let w: PooledWorker;
  try {
    w = takeWorker();
  } catch (e) {
    headTableThreadFailure = e instanceof Error ? e.message : String(e);
    return Promise.resolve(runHeadTablePart(part));
  }
  const feed = feedFor(w, part);
  feed.fill(FEED_AHEAD);
  feeds.push(feed);
  return new Promise<HeadTableRow[]>((resolve, reject) => {
    const done = () => {
      w.worker.off('message', onMessage);
      w.worker.off('error', onError);
      w.busy = false;
    };
    const onMessage = (m: Reply) => {
      done();
      if (m.ok) resolve(m.rows);
      else reject(new Error(m.message));
    };
    const onError = (e: Error) => {
      done();
      headTableThreadFailure = e.message;
      void w.worker.terminate();
      try {
        resolve(runHeadTablePart(part));
      } catch (e) {
        reject(e as Error);
      }
    };
    w.worker.on('message', onMessage);
    w.worker.on('error', onError);
    const message: HeadTableThreadMessage = { part: feed.part, ready: w.ready };
    w.worker.postMessage(message);
  });
}

/** `headTable` computed over `threads` threads (see the module comment); the same rows. */
export async function headTableThreaded(trace: Trace, stackName?: StackName, options: PartOptions = {}, threads: HeadTableThreadOptions = {}): Promise<HeadTableRow[]> {
  const stack = stackName ?? defaultStack(trace);
  const s = trace.attention[stack];
  if (!s) throw new Error(`the trace has no '${stack}' attention`);
  const n = threadCount(threads);
  const ranges = headTableRanges(s.layers.length, n, !options.omit?.includes('js_from_first'));
  if (ranges.length === 1) return headTable(trace, stack, options);
  // The other ranges start on worker threads first (each with its first layers in), then the first
  // one runs here meanwhile, copying the workers' next layers after each of its own: spread so that
  // every copy is made by the end of its range, and at least FEED_AHEAD a time, to stay ahead.
  const feeds: Feed[] = [];
  // (The parts first: a bad option throws here, before a worker is taken.)
  const parts = ranges.slice(1).map((range) => headTablePart(trace, stack, options, range, false));
  const others = parts.map((part) => onWorker(part, feeds));
  // (A rejection of a worker's range is awaited below; keep it from being reported as unhandled meanwhile.)
  for (const o of others) o.catch(() => undefined);
  let mine = ranges[0]!.to - ranges[0]!.from;
  const onLayer = (): void => {
    mine--;
    for (const f of feeds) f.fill(Math.max(FEED_AHEAD, Math.ceil(f.left / Math.max(1, mine))));
  };
  let first: HeadTableRow[];
  try {
    first = headTable(trace, stack, { ...options, layers: ranges[0], onLayer });
  } finally {
    // Whatever happened here, no worker is left waiting for a layer.
    for (const f of feeds) f.fill(f.left);
  }
  const rest = await Promise.all(others);
  return [first, ...rest].flat();
}

/** How many worker threads are kept (busy or idle). */
export function headTableThreadsKept(): number {
  return pool.length;
}

/** Stops the kept worker threads (tests; a process exits without it). */
export async function stopHeadTableThreads(): Promise<void> {
  const all = pool.splice(0);
  await Promise.all(all.map((p) => p.worker.terminate()));
}
