/**
 * onnxruntime's fused `Attention` op (ONNX opset 23) in place of the separate ops
 * (models/attention.ts fusableScale, fusedAttention). Where a family's scores are q·k times a
 * scale plus at most a whole causal mask, its graph holds one Attention node per attention, and
 * that graph gives what the separate ops give (TapRequest.decomposedAttention: the form autodiff
 * differentiates, and the one every graph had before) bit for bit: probabilities, queries, keys,
 * the final hidden state, on every fixture family's reference input. Families whose scores add a
 * bias (T5's relative positions, ALiBi, MPNet, DeBERTa) or that use a product of their own (Marian)
 * keep the separate ops, and so do families that divide by a scale that is not a power of two (the
 * fixtures' head size 8: √8); those are run a second time with half the heads (head size 16,
 * divisor 4 = 2², as bert-base's and gpt2's 64 give 8), where they take the fused op. The
 * fixtures against PyTorch (fixtures-*.test.ts) run the fused form, the default.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine/load.js';
import type { GraphSpec } from '../src/graph/onnx-model.js';
import type { TapRequest } from '../src/models/architecture.js';
import { differences, LAYERWISE_FIXTURES } from './helpers/layerwise-compare.js';
import { FIXTURES, readReference, type ReferenceInput } from './helpers/reference.js';
import { runGraph } from './helpers/run-graph.js';

const attentionNodes = (g: GraphSpec): number => g.nodes.filter((n) => n.opType === 'Attention' && !n.domain).length;

/** Families whose fixtures (not the variants below) keep the separate ops, and why. */
const SEPARATE: Record<string, string> = {
  'deberta-v2': 'disentangled bias', mpnet: 'relative position bias', bloom: 'ALiBi', 'falcon-alibi': 'ALiBi',
  marian: 'q·k summed in order (sequentialDots)',
  albert: 'divides by √8', bert: 'divides by √8', electra: 'divides by √8', 'xlm-roberta': 'divides by √8',
  gpt2: 'divides by √8', olmo: 'divides by √8', starcoder2: 'divides by √8', cohere: 'divides by √8', falcon: 'divides by √8',
};

/** The fixtures of families that divide by √headDim, with half the heads (and key/value heads): head size 16, a divisor of 4. */
const HALF_HEADS: Record<string, Record<string, number>> = {
  albert: { num_attention_heads: 2 },
  bert: { num_attention_heads: 2 },
  electra: { num_attention_heads: 2 },
  'xlm-roberta': { num_attention_heads: 2 },
  gpt2: { n_head: 2 },
  olmo: { num_attention_heads: 2, num_key_value_heads: 2 },
  starcoder2: { num_attention_heads: 2, num_key_value_heads: 1 },
  cohere: { num_attention_heads: 2, num_key_value_heads: 1 },
  falcon: { num_attention_heads: 2, num_kv_heads: 1 },
};

const TAPS: TapRequest = { attention: true, qk: true, lastHiddenState: true, logits: false };

/** Builds `dir`'s model with and without the fused op, runs both on `input`; returns the fused graph's Attention nodes and where the outputs differ. */
async function compare(dir: string, input: ReferenceInput): Promise<{ fused: number; separate: number; differences: string[]; outputs: number }> {
  const model = await loadModel(dir);
  try {
    const fused = await model.buildGraph(TAPS);
    const separate = await model.buildGraph({ ...TAPS, decomposedAttention: true });
    const inputs = {
      inputIds: input.input_ids,
      ...(input.token_type_ids ? { typeIds: input.token_type_ids } : {}),
      ...(input.decoder_input_ids ? { decoderInputIds: input.decoder_input_ids as number[] } : {}),
    };
    const feeds = model.feedsFor(fused.graph.inputs.map((i) => i.name), inputs);
    const a = await runGraph(fused.graph, feeds, fused.external);
    const b = await runGraph(separate.graph, feeds, separate.external);
    return { fused: attentionNodes(fused.graph), separate: attentionNodes(separate.graph), differences: differences(a, b), outputs: Object.keys(a).length };
  } finally {
    await model.dispose();
  }
}

describe('fused attention gives the separate ops\' values bit for bit', () => {
  for (const fixture of LAYERWISE_FIXTURES) {
    it(fixture, async () => {
      const r = await compare(join(FIXTURES, fixture), readReference(fixture).inputs[0]!);
      expect(r.separate).toBe(0);
      if (SEPARATE[fixture]) expect(r.fused, SEPARATE[fixture]).toBe(0);
      else expect(r.fused).toBeGreaterThan(0);
      expect(r.outputs).toBeGreaterThan(2);
      expect(r.differences).toEqual([]);
    });
  }

  const tmp = mkdtempSync(join(tmpdir(), 'attnscope-fused-attention-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  for (const [fixture, heads] of Object.entries(HALF_HEADS)) {
    it(`${fixture} with half the heads (divisor 4: fused)`, async () => {
      const dir = join(tmp, fixture);
      mkdirSync(dir);
      for (const f of readdirSync(join(FIXTURES, fixture))) copyFileSync(join(FIXTURES, fixture, f), join(dir, f));
      const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
      Object.assign(config, heads);
      writeFileSync(join(dir, 'config.json'), JSON.stringify(config));
      const r = await compare(dir, readReference(fixture).inputs[0]!);
      expect(r.fused).toBeGreaterThan(0);
      expect(r.differences).toEqual([]);
    });
  }
});
