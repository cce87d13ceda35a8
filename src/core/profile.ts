/**
 * Phase timings for the curious: with ATTNSCOPE_PROFILE=1 in the environment, each phase
 * (reading weights, building the graph, creating the session, running, writing) prints its
 * duration on stderr.
 */
const enabled = typeof process !== 'undefined' && Boolean(process.env?.ATTNSCOPE_PROFILE);

export async function timed<T>(phase: string, body: () => Promise<T>): Promise<T> {
  if (!enabled) return body();
  const t0 = performance.now();
  try {
    return await body();
  } finally {
    process.stderr.write(`[attnscope] ${phase}: ${(performance.now() - t0).toFixed(0)} ms\n`);
  }
}
