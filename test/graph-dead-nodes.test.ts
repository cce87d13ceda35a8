/**
 * Dead nodes out of whole-graph runs (graph/builder.ts buildGraph, graph/partition.ts liveNodes):
 * a graph built for some taps holds only the nodes that lead to a tapped output, and only the
 * weights those read. A trace of attention alone (or of queries and keys alone) has no node of
 * the last layer's MLP nor the final norm, and none of their weights; asking for the hidden states
 * or the logits keeps them. On every fixture family, the pruned graph gives the outputs of the
 * graph with its dead nodes kept (both run here by onnxruntime on the reference input) to float32
 * rounding: the same ops on the same values, where onnxruntime may fuse a last-layer op with the
 * one after it once that value has no other (dead) reader; queries and keys bit for bit. Layer by
 * layer, the graph is cut with its dead nodes, so the middle layers stay one graph.
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { traceLayers, type LayerOutputs } from '../src/engine/layerwise.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import type { GraphSpec } from '../src/graph/onnx-model.js';
import type { TapRequest } from '../src/models/architecture.js';
import { differences, LAYERWISE_FIXTURES } from './helpers/layerwise-compare.js';
import { loadFixtureModel } from './helpers/fixture-suite.js';
import { FIXTURES, readReference } from './helpers/reference.js';
import { runGraph } from './helpers/run-graph.js';

const NONE: TapRequest = { attention: false, qk: false, lastHiddenState: false, logits: false };
const ATTENTION: TapRequest = { ...NONE, attention: true };
const QK: TapRequest = { ...NONE, qk: true };

/** The checkpoint tensors a graph reads (weights made 16-bit or transposed at build time by their checkpoint name). */
function weightsRead(graph: GraphSpec): Set<string> {
  return new Set(graph.initializers.map((t) => t.name.replace(/::b?float16$/, '').replace(/\.T$/, '')).filter((n) => !/^const_\d+$/.test(n)));
}

describe('whole graphs without dead nodes (llama fixture: 2 layers)', () => {
  let model!: Model;
  loadFixtureModel('llama', (m) => (model = m));
  const last = 1;
  const lastMlp = ['gate_proj', 'up_proj', 'down_proj'].map((p) => `model.layers.${last}.mlp.${p}.weight`);
  const firstMlp = ['gate_proj', 'up_proj', 'down_proj'].map((p) => `model.layers.0.mlp.${p}.weight`);

  it('attention alone: nothing of the last layer after its scores (output projection, MLP; values unless fused) nor the final norm, none of their weights; the first layer whole', async () => {
    for (const taps of [ATTENTION, QK]) {
      const pruned = await model.buildGraph(taps);
      const kept = await model.buildGraph(taps, { keepDead: true });
      const read = weightsRead(pruned.graph);
      // With the probabilities, the last layer's attention is onnxruntime's fused op (models/attention.ts
      // fusedAttention), which computes the context as well: its values are read. Queries and keys
      // alone run attention in bands of separate ops, whose context is dead.
      const values = `model.layers.${last}.self_attn.v_proj.weight`;
      expect(read.has(values), `${values} read with taps ${JSON.stringify(taps)}`).toBe(taps === ATTENTION);
      // (The graph with its dead nodes reads them: the check below can fail.)
      for (const w of [...lastMlp, 'model.norm.weight', `model.layers.${last}.post_attention_layernorm.weight`, ...(taps === QK ? [values] : []), `model.layers.${last}.self_attn.o_proj.weight`]) {
        expect(weightsRead(kept.graph).has(w), `${w} in the graph with dead nodes`).toBe(true);
        expect(read.has(w), `${w} read with taps ${JSON.stringify(taps)}`).toBe(false);
      }
      for (const w of firstMlp) expect(read.has(w), w).toBe(true);
      // The last MLP's 3 products and more gone; the first layer's remain.
      const matmuls = (g: GraphSpec) => g.nodes.filter((n) => n.opType === 'MatMul').length;
      expect(matmuls(kept.graph) - matmuls(pruned.graph), JSON.stringify(taps)).toBeGreaterThanOrEqual(3);
    }
  });

  it('hidden states or logits asked for: the last MLP and the final norm stay', async () => {
    for (const taps of [{ ...ATTENTION, lastHiddenState: true }, { ...QK, logits: true }]) {
      const read = weightsRead((await model.buildGraph(taps)).graph);
      for (const w of [...lastMlp, 'model.norm.weight']) expect(read.has(w), `${w} with ${JSON.stringify(taps)}`).toBe(true);
      expect(read.has('lm_head.weight')).toBe(taps.logits);
    }
  });
});

describe('the graph cache keeps graphs of other taps apart (llama fixture)', () => {
  const tmp = mkdtempSync(join(tmpdir(), 'attnscope-dead-nodes-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  let model!: Model;
  loadFixtureModel('llama', (m) => (model = m));

  it("a cache holding the attention-only graph (without the head's weight) is not taken for a trace asking for logits", async () => {
    const ids = readReference('llama').inputs[0]!.input_ids;
    const cached = await loadModel(join(FIXTURES, 'llama'), { graphCache: tmp });
    const files = () => readdirSync(tmp).flatMap((dir) => readdirSync(join(tmp, dir)));
    try {
      await cached.trace(null, { ids });
      await cached.dispose();
      // The pruned attention-only graph reads no head: its weight file is not in the cache.
      expect(files().filter((f) => f.startsWith('lm_head'))).toEqual([]);
      const again = await loadModel(join(FIXTURES, 'llama'), { graphCache: tmp });
      try {
        const withLogits = await again.trace(null, { ids, logits: true, hidden: true });
        const fresh = await model.trace(null, { ids, logits: true, hidden: true });
        expect(differences({ l: withLogits.logits, h: withLogits.lastHiddenState, a: withLogits.attention }, { l: fresh.logits, h: fresh.lastHiddenState, a: fresh.attention })).toEqual([]);
      } finally {
        await again.dispose();
      }
      expect(files().filter((f) => f.startsWith('lm_head'))).toHaveLength(1);
      expect(files().filter((f) => f.endsWith('.onnx'))).toHaveLength(2);
    } finally {
      await cached.dispose();
    }
  });
});

describe('layer by layer: the graph is cut with its dead nodes (stories260k: 5 layers)', () => {
  let model!: Model;
  loadFixtureModel('stories260k', (m) => (model = m));

  it('attention alone: the middle layers 1-3 run on one shared session (a pruned graph would move the cut before the last layer into it)', async () => {
    const seen: LayerOutputs[] = [];
    await traceLayers(model, null, { ids: [1, 403, 12, 77, 300, 9, 45] }, (l) => void seen.push(l));
    expect(seen.map((s) => s.layers.map((l) => l.layer))).toEqual([[0], [1], [2], [3], [4]]);
    expect(seen.map((s) => s.shared)).toEqual([false, true, true, true, false]);
    expect(Object.keys(seen[4]!.outputs)).toEqual(['attention.self.4']);
  });
});

for (const fixture of LAYERWISE_FIXTURES) {
  describe(`the pruned graph gives the outputs of the graph with its dead nodes: ${fixture}`, () => {
    let model!: Model;
    loadFixtureModel(fixture, (m) => (model = m));

    it('attention alone (to float32 rounding), queries and keys alone (bit for bit)', async () => {
      const input = readReference(fixture).inputs[0]!;
      const decoderIds = input.decoder_input_ids as number[] | undefined;
      const feeds = model.architecture.feeds(model.config, {
        inputIds: input.input_ids,
        ...(input.token_type_ids ? { typeIds: input.token_type_ids } : {}),
        ...(decoderIds ? { decoderInputIds: decoderIds } : {}),
      });
      for (const taps of [ATTENTION, QK]) {
        const pruned = await model.buildGraph(taps);
        const kept = await model.buildGraph(taps, { keepDead: true });
        expect(pruned.graph.outputs.map((o) => o.name)).toEqual(kept.graph.outputs.map((o) => o.name));
        const a = await runGraph(pruned.graph, feeds, pruned.external);
        const b = await runGraph(kept.graph, feeds, kept.external);
        expect(Object.keys(a).length, fixture).toBeGreaterThan(0);
        expect(differences(a, b, taps.attention ? 1e-6 : 0), `${fixture} ${JSON.stringify(taps)}`).toEqual([]);
      }
    });
  });
}
