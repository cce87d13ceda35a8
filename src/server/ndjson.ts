/**
 * The app's newline-delimited JSON answers (POST /api/analysis, POST /api/bias): progress lines as
 * a run goes, then its result, or one error line. The run's signal fires when the client goes away,
 * when the answer's body is cancelled or when a line cannot be written; a run that then ends with
 * AbortError sends nothing more.
 */
import { AttnscopeError } from '../core/errors.js';
import { AbortError } from './abortable.js';
import type { ApiError, ProgressFrame } from './protocol.js';
import { RequestError } from './request-checks.js';

/** One line of an answer whose result is R (protocol.ts AnalysisLine, BiasLine). */
export type NdjsonLine<R> = ({ type: 'progress' } & ProgressFrame) | { type: 'result'; result: R } | ({ type: 'error' } & ApiError);

const encoder = new TextEncoder();

/** A line: its JSON (non-finite numbers as null, as JSON.stringify writes them) and a newline. */
export function ndjsonLine<R>(line: NdjsonLine<R>): Uint8Array<ArrayBuffer> {
  return encoder.encode(`${JSON.stringify(line)}\n`);
}

/** An error's message on one line, at most 600 characters. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message.replace(/[\r\n]+/g, ' ').slice(0, 600) : String(e);
}

/** A streamed answer: the signal to run with, and the response that streams the run's lines. */
export interface LineStream {
  /** Fires when the request's signal does, when the body is cancelled, or when a line cannot be written. */
  signal: AbortSignal;
  /**
   * The answer: `run` sends progress lines and resolves with the result (the `result` line); a
   * failure is an `error` line (a RequestError's names its field), logged unless it is a
   * RequestError or AttnscopeError (a bad input, not a bug); AbortError ends the answer silently.
   * `what` names the run in the log ("analysis failed").
   */
  respond<R>(headers: Record<string, string>, what: string, run: (send: (line: NdjsonLine<R>) => void) => Promise<R>): Response;
}

/** A streamed answer to a request whose client may go away (`requestSignal`, the request's own). */
export function lineStream(requestSignal: AbortSignal): LineStream {
  const own = new AbortController();
  return {
    signal: AbortSignal.any([requestSignal, own.signal]),
    respond<R>(headers: Record<string, string>, what: string, run: (send: (line: NdjsonLine<R>) => void) => Promise<R>): Response {
      const stream = new ReadableStream<Uint8Array>({
        async start(out) {
          const send = (line: NdjsonLine<R>) => {
            try {
              out.enqueue(ndjsonLine(line));
            } catch {
              own.abort(); // the client went away
            }
          };
          try {
            send({ type: 'result', result: await run(send) });
          } catch (e) {
            if (!(e instanceof AbortError)) {
              if (!(e instanceof RequestError) && !(e instanceof AttnscopeError)) console.error(`attnscope serve: ${what} failed`, e);
              send({ type: 'error', error: messageOf(e), ...(e instanceof RequestError && e.field ? { field: e.field } : {}) });
            }
          }
          try {
            out.close();
          } catch {
            // already closed
          }
        },
        cancel() {
          own.abort();
        },
      });
      return new Response(stream, { headers });
    },
  };
}
