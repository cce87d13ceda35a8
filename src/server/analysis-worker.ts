/**
 * JavaScript-heavy analysis work of `attnscope serve` in worker_threads workers, so the server
 * keeps answering other requests meanwhile (the model runs themselves are in onnxruntime's own
 * threads already). `runInWorker(task, input)` starts a worker for one task and resolves with its
 * output; when the request's signal fires the worker is terminated, which stops the work at once.
 * At most `MAX_WORKERS` run at a time; more wait their turn (and leave the queue when cancelled).
 *
 * This one module is both sides: imported by the server it is the runner, started as a worker it
 * runs the task named in its workerData. Under tsx / vitest (sources, `.ts`) the worker registers
 * tsx's loader first; built (`.js`) it starts directly.
 */
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { attentionAttributions } from '../analysis/attribution.js';
import { updateNorms } from '../analysis/hidden-states.js';
import type { TokenAttribution, Trace } from '../core/trace.js';
import { abortable, throwIfAborted } from './abortable.js';
import { Gate } from './gate.js';

/** The tasks a worker runs: each a pure function of a structured-cloneable input. */
export const WORKER_TASKS = {
  /** attention × gradient and gradient-weighted rollout of a trace holding attention and attributions.attentionGrad. */
  attentionAttributions: (trace: Trace): Record<string, TokenAttribution> => attentionAttributions(trace),
  /** The deep dive's update norms of a trace holding layerStates.residuals (Float64Arrays as plain arrays). */
  updateNorms: (trace: Trace) => {
    const u = updateNorms(trace);
    const arr = (a: Float64Array) => Array.from(a);
    const sub = (s: { norm: Float64Array; relative: Float64Array }) => ({ norm: arr(s.norm), relative: arr(s.relative) });
    return { stack: u.stack, layers: u.layers.map((l) => ({ residual: arr(l.residual), attention: sub(l.attention), mlp: sub(l.mlp), ...(l.cross ? { cross: sub(l.cross) } : {}) })) };
  },
} as const;

export type WorkerTask = keyof typeof WORKER_TASKS;
export type TaskInput<K extends WorkerTask> = Parameters<(typeof WORKER_TASKS)[K]>[0];
export type TaskOutput<K extends WorkerTask> = ReturnType<(typeof WORKER_TASKS)[K]>;

const MARK = 'attnscope-analysis-worker';

/** Workers at once: the cores, at least 1, at most 4 (each holds a copy of its input). */
export const MAX_WORKERS = Math.max(1, Math.min(4, availableParallelism() - 1));

/** Turns to run a worker: MAX_WORKERS at once, the rest wait in line (no bound on the line: the analyses before it have theirs). */
const turns = new Gate(MAX_WORKERS, Number.POSITIVE_INFINITY, 'analysis workers');

/** Workers running now (tests check that a cancelled task's worker is gone). */
export function runningWorkers(): number {
  return live.size;
}
const live = new Set<Worker>();

function startWorker(task: WorkerTask, input: unknown, transfer: readonly ArrayBuffer[]): Worker {
  const self = new URL(import.meta.url);
  const data = { [MARK]: true, task, input };
  if (!self.pathname.endsWith('.ts')) return new Worker(self, { workerData: data, transferList: [...transfer] });
  // Sources (tsx, vitest): register tsx's loader in the worker, then load this module.
  const tsx = pathToFileURL(createRequire(import.meta.url).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href;
  const boot = `import(${JSON.stringify(tsx)}).then((t) => { t.register(); return import(${JSON.stringify(self.href)}); });`;
  return new Worker(boot, { eval: true, workerData: data, transferList: [...transfer] });
}

/**
 * Runs `task` on `input` in a worker. `transfer`: buffers of `input` moved rather than copied (they
 * are unusable here afterwards). Rejects with AbortError when `signal` fires (the worker is terminated).
 */
export async function runInWorker<K extends WorkerTask>(task: K, input: TaskInput<K>, options: { signal?: AbortSignal; transfer?: readonly ArrayBuffer[] } = {}): Promise<TaskOutput<K>> {
  const { signal } = options;
  throwIfAborted(signal);
  return turns.run(async () => {
    // Aborted while waiting for the turn (an aborted signal fires no more events).
    throwIfAborted(signal);
    const worker = startWorker(task, input, options.transfer ?? []);
    live.add(worker);
    try {
      return await abortable(outputOf<TaskOutput<K>>(worker, task), signal);
    } finally {
      live.delete(worker);
      await worker.terminate();
    }
  }, signal);
}

/** The worker's output, or its error (with the error's name, so an AttnscopeError stays one), or its stopping early. */
function outputOf<T>(worker: Worker, task: WorkerTask): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    worker.once('message', (m: { ok: true; output: T } | { ok: false; error: string; name: string }) => {
      if (m.ok) return resolve(m.output);
      const e = new Error(m.error);
      e.name = m.name;
      reject(e);
    });
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`the analysis worker (${task}) stopped with code ${code}`)));
  });
}

// As a worker: run the task and post its output (or its error) back.
if (!isMainThread && (workerData as Record<string, unknown> | null)?.[MARK] === true && parentPort) {
  const { task, input } = workerData as { task: WorkerTask; input: never };
  const port = parentPort;
  try {
    const run = WORKER_TASKS[task] as (x: never) => unknown;
    port.postMessage({ ok: true, output: run(input) });
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    port.postMessage({ ok: false, error: err.message, name: err.name });
  }
}
