/**
 * Runs a built graph once in onnxruntime-node (a session of its own, released after) on the feeds
 * among `feeds` that are its inputs; for tests that compare graphs and their parts.
 */
import type { ExternalWeight } from '../../src/graph/builder.js';
import { encodeModel, type GraphSpec } from '../../src/graph/onnx-model.js';
import { nodeRuntime } from '../../src/runtime/onnxruntime-node.js';
import type { RuntimeTensor } from '../../src/runtime/runtime.js';

export async function runGraph(graph: GraphSpec, feeds: Record<string, RuntimeTensor>, external: readonly ExternalWeight[] = []): Promise<Record<string, RuntimeTensor>> {
  const externalData = await Promise.all(external.map(async (w) => ({ path: w.path, data: await w.load() })));
  const session = await nodeRuntime.createSession({ model: encodeModel(graph), externalData });
  try {
    const names = new Set(graph.inputs.map((i) => i.name));
    return await session.run(Object.fromEntries(Object.entries(feeds).filter(([k]) => names.has(k))));
  } finally {
    await session.release();
  }
}
