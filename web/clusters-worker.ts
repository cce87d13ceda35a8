/**
 * The head clusters view's clustering off the page's thread: one Web Worker running the page's own
 * script (flow-worker.ts startPageWorker; clusters-worker-side.ts computes it there) gets the
 * trace's attention of one stack (at the view's step) and computes the head table, the projection
 * and k-means — `headClusteringOf`'s code with the same seed, so the same clustering as on the
 * page's thread. It starts through flow-worker.ts startWorkerJob, as attention flow and the compare
 * panel's ranking do: progress names the stage; cancelling terminates the worker.
 */
import type { Trace } from '../src/core/trace.js';
import type { HeadClustering } from '../src/analysis/cluster.js';
import { type HeadClustersOptions, traceAtStep } from '../src/views/layout/head-clusters.js';
import { resolveCommon } from '../src/views/svg/common.js';
import { type WorkerJob, startWorkerJob } from './flow-worker.js';
import type { ClustersRequest, ClustersStage } from './clusters-worker-side.js';

/** The clustering (null when cancelled), and cancel (terminates the worker). */
export type ClustersJob = WorkerJob<HeadClustering>;

/** Starts the clustering of a view's options in a worker; `onStage` hears each stage as it starts. */
export function startClustersJob(trace: Trace, options: HeadClustersOptions, onStage: (stage: ClustersStage) => void): ClustersJob {
  const { stack } = resolveCommon(trace, options);
  // Only what the head table reads: the stack's attention (cut to the step) and the tokens.
  const at: Trace = options.step === undefined ? { model: trace.model, tokens: trace.tokens, attention: { [stack]: trace.attention[stack] } } : traceAtStep(trace, stack, options.step);
  if (options.step === undefined && trace.decoderTokens) at.decoderTokens = trace.decoderTokens;
  const req: ClustersRequest = {
    kind: 'clusters',
    trace: at,
    options: { stack, projection: options.projection, clusters: options.clusters, excludeFirstToken: options.excludeFirstToken, clusterSeed: options.clusterSeed },
  };
  return startWorkerJob<ClustersStage, HeadClustering>('head clusters', req, [], onStage);
}
