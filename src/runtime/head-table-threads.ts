/**
 * The head table (analysis/head-types.ts `headTable`) over several cores in Node: the layers are
 * cut into ranges of nearly equal cost (headTableRanges), the first range is computed on the
 * calling thread while worker threads compute the others (each gets a copy of the layers it reads:
 * its range, and layer 0 for js_from_first), and the tables of the ranges are concatenated — the
 * same rows, value for value, as `headTable` on one thread (a layer's values do not depend on the
 * range that holds it). Worker threads are started on first use and kept (unref'd: they do not keep
 * the process alive) for later tables, each with a SharedArrayBuffer of its own that the layers are
 * copied into (kept too: a fresh buffer per table cost more in page faults than the copy itself,
 * ≈ 0.1 s for 7 layers of bert-base at 512 tokens, on the calling thread before its own range).
 * Where a worker cannot start, its range is computed here.
 */
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { StackName, Trace } from '../core/trace.js';
import { defaultStack } from '../analysis/head-metrics.js';
import { type HeadTablePart, headTablePart, runHeadTablePart } from '../analysis/head-table-parts.js';
import { type HeadTableOptions, type HeadTableRow, headTable, headTableRanges } from '../analysis/head-types.js';

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

function takeWorker(): PooledWorker {
  let w = pool.find((p) => !p.busy);
  if (!w) {
    w = { worker: startWorker(), busy: false };
    w.worker.unref();
    const entry = w;
    w.worker.on('exit', () => pool.splice(pool.indexOf(entry) >>> 0, pool.indexOf(entry) >= 0 ? 1 : 0));
    pool.push(w);
  }
  w.busy = true;
  return w;
}

/** The part with its layers copied into the worker's shared buffer (the worker reads them there: nothing is transferred). */
function sharedPart(w: PooledWorker, part: HeadTablePart): HeadTablePart {
  const bytes = part.layers.reduce((n, l) => n + l.byteLength, 0);
  if (!w.shared || w.shared.byteLength < bytes) w.shared = new SharedArrayBuffer(bytes);
  let at = 0;
  const layers = part.layers.map((l) => {
    const copy = new Float32Array(w.shared!, at, l.length);
    copy.set(l);
    at += l.byteLength;
    return copy;
  });
  return { ...part, layers };
}

/** Why the last worker thread failed (for tests and the bench), '' when none did. */
export let headTableThreadFailure = '';

/**
 * One part on a worker thread (`make` builds its message with the trace's own layers, copied into
 * the worker's shared buffer); on a worker failure (not an error of the table) the part is computed
 * here.
 */
function onWorker(make: () => HeadTablePart): Promise<HeadTableRow[]> {
  let w: PooledWorker;
  try {
    w = takeWorker();
  } catch (e) {
    headTableThreadFailure = e instanceof Error ? e.message : String(e);
    return Promise.resolve(runHeadTablePart(make()));
  }
  const part = sharedPart(w, make());
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
        resolve(runHeadTablePart(make()));
      } catch (e) {
        reject(e as Error);
      }
    };
    w.worker.on('message', onMessage);
    w.worker.on('error', onError);
    w.worker.postMessage(part);
  });
}

/** `headTable` computed over `threads` threads (see the module comment); the same rows. */
export async function headTableThreaded(trace: Trace, stackName?: StackName, options: Omit<HeadTableOptions, 'onLayer' | 'layers'> = {}, threads: HeadTableThreadOptions = {}): Promise<HeadTableRow[]> {
  const stack = stackName ?? defaultStack(trace);
  const s = trace.attention[stack];
  if (!s) throw new Error(`the trace has no '${stack}' attention`);
  const n = Math.max(1, Math.floor(threads.threads ?? Math.min(4, availableParallelism())));
  const ranges = headTableRanges(s.layers.length, n, !options.omit?.includes('js_from_first'));
  if (ranges.length === 1) return headTable(trace, stack, options);
  // The other ranges start on worker threads first, then the first one runs here meanwhile.
  const others = ranges.slice(1).map((range) => onWorker(() => headTablePart(trace, stack, options, range, false)));
  // (A rejection of a worker's range is awaited below; keep it from being reported as unhandled meanwhile.)
  for (const o of others) o.catch(() => undefined);
  const first = headTable(trace, stack, { ...options, layers: ranges[0] });
  const rest = await Promise.all(others);
  return [first, ...rest].flat();
}

/** Stops the kept worker threads (tests; a process exits without it). */
export async function stopHeadTableThreads(): Promise<void> {
  const all = pool.splice(0);
  await Promise.all(all.map((p) => p.worker.terminate()));
}
