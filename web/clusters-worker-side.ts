/**
 * The worker side of the head clusters view (web/views/head-clusters.ts): the page's own script
 * running as a Web Worker (flow-worker.ts `runFlowWorker` hands these requests here) computes the
 * head table of one stack, then the projection (UMAP or PCA) and k-means of
 * src/analysis/cluster.ts — the same `headClusteringOf` the page's thread and the SVG export run,
 * with the same seed, so the clustering is the same value for value. It posts a progress message
 * for each stage, then the clustering (or the error's message), through the one job message type
 * and handler of web/job-worker.ts (the page side: clusters-worker.ts, through flow-worker.ts
 * startWorkerJob).
 */
import type { Trace } from '../src/core/trace.js';
import type { HeadClustering } from '../src/analysis/cluster.js';
import { clusterHeads, headFeatureRows } from '../src/analysis/cluster.js';
import { headTable } from '../src/analysis/head-types.js';
import type { HeadClustersOptions } from '../src/views/layout/head-clusters.js';
import { type JobPost, type JobReply, runJob } from './job-worker.js';

/** The trace (already at its step: only what the head table reads) and the view's options without step. */
export interface ClustersRequest {
  kind: 'clusters';
  trace: Trace;
  options: Omit<HeadClustersOptions, 'step' | 'clustering'>;
}

export type ClustersStage = 'table' | 'projection';

/** The clustering's replies: progress names the stage starting, then the clustering (web/job-worker.ts). */
export type ClustersReply = JobReply<ClustersStage, HeadClustering>;

export function isClustersRequest(data: unknown): data is ClustersRequest {
  return typeof data === 'object' && data !== null && (data as { kind?: unknown }).kind === 'clusters';
}

/** Computes the clustering of a request, posting each stage as it starts, then the clustering or the error's message. */
export function runClustersRequest(req: ClustersRequest, post: JobPost<ClustersStage, HeadClustering>): void {
  const { options } = req;
  runJob(post, (progress) => {
    progress('table');
    const table = headTable(req.trace, options.stack ?? 'self', { excludeFirstToken: options.excludeFirstToken });
    progress('projection');
    return { result: clusterHeads(headFeatureRows(table), { projection: options.projection, k: options.clusters, seed: options.clusterSeed }) };
  });
}
