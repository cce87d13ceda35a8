/**
 * The head clusters view's clustering off the page's thread: one Web Worker running the page's own
 * script (flow-worker.ts startPageWorker; clusters-worker-side.ts computes it there) gets the
 * trace's attention of one stack (at the view's step) and computes the head table, the projection
 * and k-means — `headClusteringOf`'s code with the same seed, so the same clustering as on the
 * page's thread. Progress names the stage; cancelling terminates the worker.
 */
import type { Trace } from '../src/core/trace.js';
import type { HeadClustering } from '../src/analysis/cluster.js';
import { type HeadClustersOptions, traceAtStep } from '../src/views/layout/head-clusters.js';
import { resolveCommon } from '../src/views/svg/common.js';
import { startPageWorker } from './flow-worker.js';
import type { ClustersReply, ClustersRequest, ClustersStage } from './clusters-worker-side.js';

export interface ClustersJob {
  /** The clustering, or null when cancelled. */
  result: Promise<HeadClustering | null>;
  cancel(): void;
}

/** Starts the clustering of a view's options in a worker; `onStage` hears each stage as it starts. */
export function startClustersJob(trace: Trace, options: HeadClustersOptions, onStage: (stage: ClustersStage) => void): ClustersJob {
  const { stack } = resolveCommon(trace, options);
  // Only what the head table reads: the stack's attention (cut to the step) and the tokens.
  const at: Trace = options.step === undefined ? { model: trace.model, tokens: trace.tokens, attention: { [stack]: trace.attention[stack] } } : traceAtStep(trace, stack, options.step);
  if (options.step === undefined && trace.decoderTokens) at.decoderTokens = trace.decoderTokens;
  const { worker, finish } = startPageWorker('head clusters');
  let settled = false;
  let settle: (v: HeadClustering | null) => void = () => undefined;
  let fail: (e: Error) => void = () => undefined;
  const result = new Promise<HeadClustering | null>((resolve, reject) => {
    settle = resolve;
    fail = reject;
  });
  const end = () => {
    settled = true;
    finish();
  };
  worker.onmessage = (e: MessageEvent<ClustersReply>) => {
    if (settled) return;
    const m = e.data;
    if (m.type === 'progress') onStage(m.stage);
    else if (m.type === 'done') {
      end();
      settle(m.clustering);
    } else {
      end();
      fail(new Error(m.message));
    }
  };
  worker.onerror = (e) => {
    e.preventDefault();
    if (settled) return;
    end();
    fail(new Error(`head clusters worker failed: ${e.message || 'unknown error'}`));
  };
  const req: ClustersRequest = {
    kind: 'clusters',
    trace: at,
    options: { stack, projection: options.projection, clusters: options.clusters, excludeFirstToken: options.excludeFirstToken, clusterSeed: options.clusterSeed },
  };
  worker.postMessage(req);
  return {
    result,
    cancel() {
      if (settled) return;
      end();
      settle(null);
    },
  };
}
