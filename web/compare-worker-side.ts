/**
 * The compare panel's ranking off the page's thread, worker side: flow-worker.ts routes a
 * CompareRequest here, which ranks every head pair of two traces (compareTraces,
 * src/analysis/compare.ts) and reports progress at most once a percent, through the one job
 * message type and handler of web/job-worker.ts (the page side: flow-worker.ts startWorkerJob). The page builds the
 * Comparison from the ranking (compareTraces with `ranking`: the matrices a view draws are read
 * from the page's own traces; a function cannot come back from a worker). web/app/compare-panel.ts
 * starts it.
 */
import { compareTraces, type CompareOptions, type HeadDifference } from '../src/analysis/compare.js';
import type { Trace } from '../src/core/trace.js';
import { type JobPost, type JobReply, type Steps, perPercent, runJob } from './job-worker.js';

export interface CompareRequest {
  kind: 'attnscope-compare';
  /** The traces (their compared stack's attention and tokens are enough). */
  a: Trace;
  b: Trace;
  options: Omit<CompareOptions, 'onProgress' | 'ranking'>;
}

/** The ranking's replies: progress in head pairs, then the ranking (web/job-worker.ts). */
export type CompareReply = JobReply<Steps, HeadDifference[]>;

export function isCompareRequest(x: unknown): x is CompareRequest {
  return typeof x === 'object' && x !== null && (x as { kind?: unknown }).kind === 'attnscope-compare';
}

/** Ranks the pairs, posting progress at most once a percent, then the ranking or the error's message. */
export function runCompareRequest(req: CompareRequest, post: JobPost<Steps, HeadDifference[]>): void {
  runJob(post, (progress) => ({ result: compareTraces(req.a, req.b, { ...req.options, onProgress: perPercent(progress) }).ranking }));
}
