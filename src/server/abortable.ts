/**
 * Waits of the server that a request's AbortSignal ends (the client went away). The one place that
 * listens for 'abort' and takes the listener off again once the wait is over, so that a signal that
 * outlives many waits (a request following a long run) collects no listeners, and no timer is left
 * to keep the process alive.
 *
 * - `abortable(promise, signal)`: the promise, or AbortError as soon as the signal fires.
 * - `pause(ms, signal)`: resolves after `ms`, or at once when the signal fires (Node's
 *   timers/promises setTimeout, which clears its timer and its listener either way).
 * - `onAbortOrDone(signal, fn)`: `fn` once, on abort or when the caller says it is done, whichever
 *   comes first (a request leaving a shared run).
 * - `throwIfAborted(signal)`: AbortError between steps of a run whose signal has fired.
 */
import { setTimeout as delay } from 'node:timers/promises';

/** A request (or a run all its requests left) ended because its signal fired. */
export class AbortError extends Error {
  constructor() {
    super('the client went away');
    this.name = 'AbortError';
  }
}

/** Throws AbortError if `signal` has fired. */
export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new AbortError();
}

/**
 * Runs `fn` once: when `signal` fires (at once if it has fired already) or when the function this
 * returns is called, whichever comes first. The abort listener is taken off either way.
 */
export function onAbortOrDone(signal: AbortSignal | undefined, fn: () => void): () => void {
  let ran = false;
  const once = () => {
    if (ran) return;
    ran = true;
    signal?.removeEventListener('abort', once);
    fn();
  };
  if (signal?.aborted) once();
  else signal?.addEventListener('abort', once, { once: true });
  return once;
}

/**
 * `promise`'s outcome, or a rejection with AbortError as soon as `signal` fires (the promise itself
 * goes on, for others sharing it).
 */
export function abortable<T>(promise: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return promise;
  return new Promise<T>((resolve, reject) => {
    const done = onAbortOrDone(signal, () => reject(new AbortError()));
    // Settled first, then `done`: its reject of a settled promise does nothing, and the listener
    // is off before whoever awaits this goes on.
    promise.then(
      (v) => {
        resolve(v);
        done();
      },
      (e: unknown) => {
        reject(e);
        done();
      },
    );
  });
}

/** Resolves after `ms`, or at once when `signal` fires; it never rejects. */
export async function pause(ms: number, signal?: AbortSignal): Promise<void> {
  try {
    await delay(ms, undefined, { signal });
  } catch (e) {
    if (!signal?.aborted) throw e;
  }
}
