/**
 * A bound on the runs a service makes at once (traces, analyses): at most `n` hold a turn, the
 * others wait in line, at most `maxWaiting` of them (one more is a 503). A request that goes away
 * while waiting leaves the line; a turn that came just as it went is passed on.
 */
import { abortable } from './abortable.js';
import { RequestError } from './request-checks.js';

export class Gate {
  private active = 0;
  private readonly waiting: (() => void)[] = [];

  /** `what` names the runs in the 503's message ("server busy: 256 traces are waiting already"). */
  constructor(
    private readonly n: number,
    private readonly maxWaiting: number,
    private readonly what: string,
  ) {}

  /**
   * Resolves with a turn (give it back with leave()). `onQueued(ahead)`, when it has to wait, is
   * told how many runs are ahead of it (running or waiting).
   */
  async enter(signal?: AbortSignal, onQueued?: (ahead: number) => void): Promise<void> {
    if (this.active < this.n) {
      this.active++;
      return;
    }
    if (this.waiting.length >= this.maxWaiting) throw new RequestError(503, `server busy: ${this.waiting.length} ${this.what} are waiting already; try again shortly`);
    onQueued?.(this.active + this.waiting.length);
    let enter!: () => void;
    const turn = new Promise<void>((r) => (enter = r));
    this.waiting.push(enter);
    try {
      await abortable(turn, signal);
    } catch (e) {
      const i = this.waiting.indexOf(enter);
      if (i >= 0) this.waiting.splice(i, 1);
      else this.leave(); // the turn came as the request went away: pass it on
      throw e;
    }
  }

  /** Gives a turn back: to the first in line, if any. */
  leave(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.active--;
  }

  /** `task` run in a turn. */
  async run<T>(task: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.enter(signal);
    try {
      return await task();
    } finally {
      this.leave();
    }
  }
}
