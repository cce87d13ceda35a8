/**
 * The app's streamed NDJSON answers (src/server/ndjson.ts), read back through a real Response body:
 * progress lines then the result; an error line (naming a RequestError's field; an unexpected error
 * logged, a bad input not); nothing more after AbortError; the run's signal firing when the
 * request's does and when the body is cancelled.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import { AbortError, abortable } from '../src/server/abortable.js';
import { lineStream, messageOf, ndjsonLine } from '../src/server/ndjson.js';
import { RequestError } from '../src/server/request-checks.js';

const lines = async (res: Response) =>
  (await res.text())
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as unknown);

afterEach(() => {
  vi.restoreAllMocks();
});

describe('lineStream', () => {
  it('streams progress lines, then the result, with the headers given', async () => {
    const answer = lineStream(new AbortController().signal);
    const res = answer.respond<{ n: number }>({ 'Content-Type': 'application/x-ndjson', 'X-Test': 'yes' }, 'test', async (send) => {
      send({ type: 'progress', stage: 'run', message: 'half', fraction: 0.5 });
      send({ type: 'progress', stage: 'run', message: 'done' });
      return { n: 3 };
    });
    expect(res.headers.get('content-type')).toBe('application/x-ndjson');
    expect(res.headers.get('x-test')).toBe('yes');
    expect(await lines(res)).toEqual([
      { type: 'progress', stage: 'run', message: 'half', fraction: 0.5 },
      { type: 'progress', stage: 'run', message: 'done' },
      { type: 'result', result: { n: 3 } },
    ]);
    expect(answer.signal.aborted).toBe(false);
  });

  it("ends with an error line: a RequestError's names its field, only an unexpected error is logged", async () => {
    const log = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const fail = (e: unknown) => lineStream(new AbortController().signal).respond({}, 'test run', () => Promise.reject(e));
    expect(await lines(fail(new RequestError(400, 'text: too long\nreally', 'text')))).toEqual([{ type: 'error', error: 'text: too long really', field: 'text' }]);
    expect(await lines(fail(new AttnscopeError('model: no such head')))).toEqual([{ type: 'error', error: 'model: no such head' }]);
    expect(log).not.toHaveBeenCalled();
    const bug = new TypeError('x is undefined');
    expect(await lines(fail(bug))).toEqual([{ type: 'error', error: 'x is undefined' }]);
    expect(log).toHaveBeenCalledTimes(1);
    expect(log).toHaveBeenCalledWith('attnscope serve: test run failed', bug);
  });

  it('sends nothing more after AbortError', async () => {
    const res = lineStream(new AbortController().signal).respond({}, 'test', async (send) => {
      send({ type: 'progress', stage: 'queue', message: 'waiting' });
      throw new AbortError();
    });
    expect(await lines(res)).toEqual([{ type: 'progress', stage: 'queue', message: 'waiting' }]);
  });

  it("fires its signal when the request's fires: the run ends and the answer closes", async () => {
    const request = new AbortController();
    const answer = lineStream(request.signal);
    const res = answer.respond({}, 'test', async (send) => {
      send({ type: 'progress', stage: 'run', message: 'started' });
      return abortable(new Promise<number>(() => undefined), answer.signal);
    });
    request.abort();
    expect(answer.signal.aborted).toBe(true);
    expect(await lines(res)).toEqual([{ type: 'progress', stage: 'run', message: 'started' }]);
  });

  it('fires its signal when the body is cancelled (the client went away)', async () => {
    const answer = lineStream(new AbortController().signal);
    let ended: unknown;
    const res = answer.respond({}, 'test', (send) => {
      send({ type: 'progress', stage: 'run', message: 'started' });
      return abortable(new Promise<number>(() => undefined), answer.signal).catch((e: unknown) => {
        ended = e;
        throw e;
      });
    });
    const reader = res.body!.getReader();
    const first = await reader.read();
    expect(JSON.parse(new TextDecoder().decode(first.value))).toEqual({ type: 'progress', stage: 'run', message: 'started' });
    expect(answer.signal.aborted).toBe(false);
    await reader.cancel();
    expect(answer.signal.aborted).toBe(true);
    await new Promise((r) => setImmediate(r));
    expect(ended).toBeInstanceOf(AbortError);
  });
});

describe('ndjsonLine and messageOf', () => {
  it('writes one JSON line, non-finite numbers as null', () => {
    const text = new TextDecoder().decode(ndjsonLine({ type: 'result', result: { a: Number.NaN, b: [Infinity, -Infinity, 1.5], c: 'x\ny' } }));
    expect(text).toBe('{"type":"result","result":{"a":null,"b":[null,null,1.5],"c":"x\\ny"}}\n');
  });

  it('gives an error message on one line, at most 600 characters', () => {
    expect(messageOf(new Error('a\r\nb\nc'))).toBe('a b c');
    expect(messageOf(new Error('x'.repeat(700)))).toBe('x'.repeat(600));
    expect(messageOf('plain')).toBe('plain');
  });
});
