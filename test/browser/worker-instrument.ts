/**
 * An init script for the browser tests of work the page moves into Web Workers (openPage's `init`,
 * run before the page's own script): it wraps the page's Worker to count the workers started and
 * terminated and to hold back the messages a test names, kept in page order until the test
 * releases them, so that what the page does while a job is pending is checked without timing.
 */
import type { Page } from 'playwright-core';

export interface WorkerCounts {
  /** Workers constructed. */
  started: number;
  /** terminate() calls. */
  terminated: number;
  /** Messages posted to a worker that matched `hold` (held or, after holding stopped, passed on). */
  matched: number;
}

/**
 * The init script. `hold`: a JavaScript expression over a posted message `m` (not null), e.g.
 * "m.kind === 'clusters'"; the messages it is true of are held until released (none without it).
 * `holdReplies`: the same over a worker's message to the page's `onmessage` (e.g. a one-shot job's
 * "m.type === 'done'"), held until released, so that a job stays running however fast it computes.
 */
export function instrumentWorkers(hold?: string, holdReplies?: string): string {
  return `
(() => {
  const counts = (window.__workers = { started: 0, terminated: 0, matched: 0 });
  const held = [];
  let holding = true;
  const W = window.Worker;
  window.Worker = class extends W {
    constructor(...a) { super(...a); counts.started++; }
    terminate() { counts.terminated++; return super.terminate(); }
    get onmessage() { return this.__onmessage ?? null; }
    set onmessage(fn) {
      this.__onmessage = fn;
      super.onmessage = fn === null ? null : (e) => {
        const m = e.data;
        if (m && (${holdReplies ?? 'false'})) {
          counts.matched++;
          if (holding) { held.push(() => fn.call(this, e)); return; }
        }
        return fn.call(this, e);
      };
    }
    postMessage(...a) {
      const m = a[0];
      if (m && (${hold ?? 'false'})) {
        counts.matched++;
        if (holding) { held.push(() => super.postMessage(...a)); return; }
      }
      return super.postMessage(...a);
    }
  };
  window.__workerHeld = () => held.length;
  window.__workerRelease = (stop) => { if (stop) holding = false; const h = held.splice(0); for (const f of h) f(); return h.length; };
})();
`;
}

type Instrumented = { __workers: WorkerCounts; __workerHeld(): number; __workerRelease(stop: boolean): number };

/** The counts so far. */
export const workerCounts = (page: Page): Promise<WorkerCounts> => page.evaluate(() => ({ ...(window as unknown as Instrumented).__workers }));

/** How many messages are held now. */
export const heldMessages = (page: Page): Promise<number> => page.evaluate(() => (window as unknown as Instrumented).__workerHeld());

/**
 * Posts the messages held so far, in page order, and returns how many; with `stopHolding`, later
 * matching messages go through too (else they are held again).
 */
export const releaseHeld = (page: Page, stopHolding = false): Promise<number> =>
  page.evaluate((stop) => (window as unknown as Instrumented).__workerRelease(stop), stopHolding);

/** Waits until `count` messages are held (within `timeout` ms: the page's default timeout without it). */
export const waitForHeld = async (page: Page, count: number, timeout?: number): Promise<void> => {
  await page.waitForFunction((n) => (window as unknown as Instrumented).__workerHeld() === n, count, timeout === undefined ? {} : { timeout });
};
