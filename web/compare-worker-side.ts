/**
 * The compare panel's ranking off the page's thread, worker side: flow-worker.ts routes a
 * CompareRequest here, which ranks every head pair of two traces (compareTraces,
 * src/analysis/compare.ts) and reports progress at most once a percent. The page builds the
 * Comparison from the ranking (compareTraces with `ranking`: the matrices a view draws are read
 * from the page's own traces; a function cannot come back from a worker). web/app/compare-panel.ts
 * starts it.
 */
import { compareTraces, type CompareOptions, type HeadDifference } from '../src/analysis/compare.js';
import type { Trace } from '../src/core/trace.js';

export interface CompareRequest {
  kind: 'attnscope-compare';
  /** The traces (their compared stack's attention and tokens are enough). */
  a: Trace;
  b: Trace;
  options: Omit<CompareOptions, 'onProgress' | 'ranking'>;
}

export type CompareReply =
  | { type: 'compare-progress'; done: number; total: number }
  | { type: 'compare-done'; ranking: HeadDifference[] }
  | { type: 'compare-error'; message: string };

export function isCompareRequest(x: unknown): x is CompareRequest {
  return typeof x === 'object' && x !== null && (x as { kind?: unknown }).kind === 'attnscope-compare';
}

/** Ranks the pairs, posting progress, then the ranking or the error's message. */
export function runCompareRequest(req: CompareRequest, post: (m: CompareReply) => void): void {
  try {
    let last = -1;
    const cmp = compareTraces(req.a, req.b, {
      ...req.options,
      onProgress: (done, total) => {
        const pct = Math.floor((100 * done) / total);
        if (pct === last) return;
        last = pct;
        post({ type: 'compare-progress', done, total });
      },
    });
    post({ type: 'compare-done', ranking: cmp.ranking });
  } catch (e) {
    post({ type: 'compare-error', message: (e as Error).message });
  }
}
