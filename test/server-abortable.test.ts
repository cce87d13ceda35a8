/**
 * The server's abortable waits (src/server/abortable.ts) on real timers and real AbortSignals:
 * a pause resolves after its time and at once on abort, an abortable promise gives its outcome or
 * AbortError at once, a "leave" runs once whichever way it comes, and none of them leaves an abort
 * listener on the signal (node:events getEventListeners) or a timer keeping the process alive (a
 * child process that pauses for an hour and aborts ends at once).
 */
import { execFile } from 'node:child_process';
import { getEventListeners } from 'node:events';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { AbortError, abortable, onAbortOrDone, pause, throwIfAborted } from '../src/server/abortable.js';

const listeners = (signal: AbortSignal) => getEventListeners(signal, 'abort').length;
/** 'first' when `p` has settled before the next turn of the event loop (setImmediate), else 'later'. */
const settlesAtOnce = (p: Promise<unknown>) => {
  const first = () => 'first';
  return Promise.race([p.then(first, first), new Promise((r) => setImmediate(() => r('later')))]);
};

describe('pause', () => {
  it('resolves after the time on a real timer, and leaves no listener and no timer behind', async () => {
    const signal = new AbortController().signal;
    const t0 = performance.now();
    let done = false;
    const p = pause(80, signal).then(() => (done = true));
    expect(listeners(signal)).toBe(1);
    await new Promise((r) => setTimeout(r, 20));
    expect(done).toBe(false);
    await p;
    // Node may fire a timer up to 1 ms before its time (it counts whole milliseconds).
    expect(performance.now() - t0).toBeGreaterThanOrEqual(79);
    expect(listeners(signal)).toBe(0);
  });

  it('ends at once when the signal fires (timer cleared, listener gone), and at once on a signal that has fired', async () => {
    const c = new AbortController();
    const p = pause(60_000, c.signal);
    expect(listeners(c.signal)).toBe(1);
    c.abort();
    expect(await settlesAtOnce(p)).toBe('first');
    await expect(p).resolves.toBeUndefined();
    expect(listeners(c.signal)).toBe(0);
    const again = pause(60_000, c.signal);
    expect(await settlesAtOnce(again)).toBe('first');
  });

  it('leaves no timer keeping the process alive: a process that pauses for an hour, then aborts, ends by itself', async () => {
    const source = new URL('../src/server/abortable.ts', import.meta.url).href;
    const script = `import { pause } from ${JSON.stringify(source)};
      const c = new AbortController();
      const p = pause(3_600_000, c.signal);
      setTimeout(() => c.abort(), 50);
      await p;
      await pause(3_600_000, c.signal);
      process.stdout.write('ended');`;
    // Were the hour's timer left pending, the process would still be running when the minute is up (and be killed).
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', import.meta.resolve('tsx'), '--input-type=module', '-e', script], { timeout: 60_000 });
    expect(stdout).toBe('ended');
  });

  it('works without a signal', async () => {
    const t0 = performance.now();
    await pause(30);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(29);
  });
});

describe('abortable', () => {
  it("gives the promise's value or error and takes its listener off", async () => {
    const signal = new AbortController().signal;
    await expect(abortable(Promise.resolve(7), signal)).resolves.toBe(7);
    expect(listeners(signal)).toBe(0);
    const boom = new Error('boom');
    await expect(abortable(Promise.reject(boom), signal)).rejects.toBe(boom);
    expect(listeners(signal)).toBe(0);
    // One long-lived signal over many waits collects no listeners.
    for (let i = 0; i < 50; i++) await abortable(new Promise((r) => setTimeout(r, 0)), signal);
    expect(listeners(signal)).toBe(0);
  });

  it('rejects with AbortError at once when the signal fires, while the promise itself goes on', async () => {
    const c = new AbortController();
    let finish!: (v: string) => void;
    const shared = new Promise<string>((r) => (finish = r));
    const p = abortable(shared, c.signal);
    expect(listeners(c.signal)).toBe(1);
    c.abort();
    expect(await settlesAtOnce(p)).toBe('first');
    const e = await p.catch((x: unknown) => x);
    expect(e).toBeInstanceOf(AbortError);
    expect((e as Error).name).toBe('AbortError');
    expect((e as Error).message).toBe('the client went away');
    expect(listeners(c.signal)).toBe(0);
    finish('still');
    await expect(shared).resolves.toBe('still');
  });

  it('rejects at once on a signal that has fired, and a later rejection of the promise is handled', async () => {
    const c = new AbortController();
    c.abort();
    let fail!: (e: Error) => void;
    const shared = new Promise<never>((_, reject) => (fail = reject));
    const unhandled: unknown[] = [];
    const onUnhandled = (r: unknown) => unhandled.push(r);
    process.on('unhandledRejection', onUnhandled);
    try {
      await expect(abortable(shared, c.signal)).rejects.toBeInstanceOf(AbortError);
      fail(new Error('late'));
      await new Promise((r) => setImmediate(r));
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('without a signal is the promise itself', () => {
    const p = Promise.resolve(1);
    expect(abortable(p)).toBe(p);
  });
});

describe('onAbortOrDone', () => {
  it('runs once when called, and takes its listener off', () => {
    const c = new AbortController();
    let runs = 0;
    const done = onAbortOrDone(c.signal, () => runs++);
    expect(listeners(c.signal)).toBe(1);
    expect(runs).toBe(0);
    done();
    done();
    expect(runs).toBe(1);
    expect(listeners(c.signal)).toBe(0);
    c.abort();
    expect(runs).toBe(1);
  });

  it('runs once when the signal fires (calling it afterwards does nothing)', () => {
    const c = new AbortController();
    let runs = 0;
    const done = onAbortOrDone(c.signal, () => runs++);
    c.abort();
    expect(runs).toBe(1);
    expect(listeners(c.signal)).toBe(0);
    done();
    expect(runs).toBe(1);
  });

  it('runs at once on a signal that has fired, and only when called without a signal', () => {
    const c = new AbortController();
    c.abort();
    let runs = 0;
    const done = onAbortOrDone(c.signal, () => runs++);
    expect(runs).toBe(1);
    done();
    expect(runs).toBe(1);
    let plain = 0;
    const leave = onAbortOrDone(undefined, () => plain++);
    expect(plain).toBe(0);
    leave();
    leave();
    expect(plain).toBe(1);
  });
});

describe('throwIfAborted', () => {
  it('throws AbortError only once the signal has fired', () => {
    const c = new AbortController();
    expect(() => throwIfAborted(c.signal)).not.toThrow();
    expect(() => throwIfAborted(undefined)).not.toThrow();
    c.abort();
    expect(() => throwIfAborted(c.signal)).toThrow(AbortError);
  });
});
