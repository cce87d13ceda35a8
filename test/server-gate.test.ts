/**
 * The bound on runs at once shared by the trace and analysis services (src/server/gate.ts): turns
 * up to n, a line of at most maxWaiting (then a 503 naming the runs), the number ahead told to a
 * waiting request, a request that goes away leaving the line, and a turn handed to the next in line.
 */
import { describe, expect, it } from 'vitest';
import { Gate } from '../src/server/gate.js';
import { RequestError } from '../src/server/request-checks.js';

const settled = () => new Promise((r) => setTimeout(r, 0));

describe('server gate', () => {
  it('gives n turns at once, queues the rest in order, refuses past maxWaiting, hands turns on', async () => {
    const gate = new Gate(2, 2, 'analyses');
    await gate.enter();
    await gate.enter();
    const order: string[] = [];
    const ahead: number[] = [];
    const a = gate.enter(undefined, (n) => ahead.push(n)).then(() => order.push('a'));
    const b = gate.enter(undefined, (n) => ahead.push(n)).then(() => order.push('b'));
    expect(ahead).toEqual([2, 3]);
    const refused = await gate.enter().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(RequestError);
    expect((refused as RequestError).status).toBe(503);
    expect((refused as RequestError).message).toBe('server busy: 2 analyses are waiting already; try again shortly');
    await settled();
    expect(order).toEqual([]);
    gate.leave();
    await a;
    expect(order).toEqual(['a']);
    gate.leave();
    await b;
    expect(order).toEqual(['a', 'b']);
  });

  it('a request that goes away leaves the line; the next one gets its place', async () => {
    const gate = new Gate(1, 4, 'traces');
    await gate.enter();
    const gone = new AbortController();
    const first = gate.enter(gone.signal).then(() => 'entered', (e: unknown) => e);
    let second = false;
    const next = gate.enter().then(() => (second = true));
    gone.abort();
    expect(await first).not.toBe('entered');
    gate.leave();
    await next;
    expect(second).toBe(true);
    // One turn is held now (the second's): a run waits for it, then gets it.
    const ran: number[] = [];
    const run = gate.run(async () => ran.push(1));
    await settled();
    expect(ran).toEqual([]);
    gate.leave();
    await run;
    expect(ran).toEqual([1]);
    // Every turn is back: the next enter is at once (no queue callback).
    const queued: number[] = [];
    await gate.enter(undefined, (n) => queued.push(n));
    expect(queued).toEqual([]);
  });
});
