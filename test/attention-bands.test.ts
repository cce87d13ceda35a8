/**
 * Banded attention on demand (models/attention.ts): when no probabilities leave the graph, attention
 * runs in bands of query rows whose causal (and sliding-window) masks are built in the graph from
 * positions, so no queries × keys mask is fed; the number of bands grows with the length. Checked
 * against PyTorch's attention and last hidden state in each fixture's reference.json for several band
 * counts (one band, bands of a few rows, more bands than rows), by hand for the band arithmetic and
 * the fed mask, and for one clear line on a bad band count.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { attentionSource } from '../src/core/attention-on-demand.js';
import { attentionHead } from '../src/core/attention-source.js';
import type { Trace } from '../src/core/trace.js';
import { onDemandBands } from '../src/engine/attention-mode.js';
import type { Model } from '../src/engine/model.js';
import type { ArchitectureInfo } from '../src/models/architecture.js';
import { MAX_QUERY_BANDS, QUERY_BANDS, queryBandCount } from '../src/models/attention.js';
import { causalMask } from '../src/models/masks.js';
import { deepOr } from './helpers/deep.js';
import { loadFixtureModel } from './helpers/fixture-suite.js';
import { FIXTURES, flat, readReference, type Nested } from './helpers/reference.js';

/** The decoder-only fixtures (one causal self stack; falcon-alibi and bloom add ALiBi, mistral-window has a window of 6 under 21–37 tokens): every one under test:deep. */
const CAUSAL = ['bloom', 'cohere', 'falcon', 'falcon-alibi', 'gemma', 'gpt2', 'gpt2-bin', 'gpt_neox', 'gptj', 'llama', 'mistral', 'mistral-window', 'mixtral',
  'olmo', 'opt', 'phi', 'qwen2', 'qwen2_moe', 'stablelm', 'starcoder2', 'stories260k'].filter((name) => existsSync(join(FIXTURES, name, 'reference.json')));

/** npm test: a sliding window shorter than the inputs with GQA and RoPE, ALiBi with the mask. */
const QUICK = ['falcon-alibi', 'mistral-window'];

/** One band; bands of a few rows; more bands than rows (empty ones). */
const BAND_COUNTS = [1, 4, 32];

describe.each(deepOr(CAUSAL, QUICK))('fixture %s: banded attention on demand with masks built in the graph', (fixture) => {
  const ref = readReference(fixture);
  let model: Model;
  loadFixtureModel(fixture, (m) => (model = m));

  it('feeds no queries × keys mask', async () => {
    const session = await model.session({ attention: false, qk: true, lastHiddenState: true, logits: false });
    expect(session.inputNames.filter((n) => n.startsWith('attention_bias'))).toEqual([]);
    // The dense graph still reads the fed mask (its probabilities are tapped whole anyway).
    const dense = await model.session({ attention: true, qk: false, lastHiddenState: false, logits: false });
    expect(dense.inputNames).toContain('attention_bias');
  });

  it.each(BAND_COUNTS)('%i bands: every input, layer and head within 1e-5 of PyTorch (masked cells exactly 0), last hidden state within 1e-4', async (bands) => {
    for (const input of ref.inputs) {
      const trace: Trace = await model.trace(null, { ids: input.input_ids, attention: 'on-demand', hidden: true, queryBandCount: bands });
      expect(trace.attention).toEqual({});
      const source = attentionSource(trace, 'self');
      const reference = flat(input.attentions as Nested);
      const { numLayers: layers, numHeads: heads, numQueries: n } = source;
      expect(reference).toHaveLength(layers * heads * n * n);
      for (let layer = 0; layer < layers; layer++) {
        for (let head = 0; head < heads; head++) {
          const got = attentionHead(source, layer, head);
          const at = (layer * heads + head) * n * n;
          let d = 0;
          for (let c = 0; c < n * n; c++) {
            d = Math.max(d, Math.abs(got[c]! - reference[at + c]!));
            if (reference[at + c] === 0) expect(got[c], `${fixture} ${input.id} layer ${layer} head ${head} cell ${c}`).toBe(0);
          }
          expect(d, `${fixture} ${input.id} ${bands} bands layer ${layer} head ${head}`).toBeLessThanOrEqual(1e-5);
        }
      }
      // The last hidden state goes through every layer's banded attention.
      const hidden = flat(input.last_hidden_state as Nested);
      let dh = 0;
      for (let i = 0; i < hidden.length; i++) dh = Math.max(dh, Math.abs(trace.lastHiddenState!.data[i]! - hidden[i]!));
      expect(dh, `${fixture} ${input.id} last hidden state`).toBeLessThanOrEqual(1e-4);
    }
  });
});

describe.each(deepOr(CAUSAL, ['llama', 'mixtral', 'qwen2_moe']))('fixture %s: one token on demand (bands without rows)', (fixture) => {
  const ref = readReference(fixture);
  let model: Model;
  loadFixtureModel(fixture, (m) => (model = m));

  it("its hidden state is row 0 of PyTorch's (a causal model's first position reads only itself)", async () => {
    const input = ref.inputs[0]!;
    const trace = await model.trace(null, { ids: input.input_ids.slice(0, 1), attention: 'on-demand', hidden: true });
    const hidden = flat(input.last_hidden_state as Nested);
    const width = trace.lastHiddenState!.dims[1];
    let d = 0;
    for (let i = 0; i < width; i++) d = Math.max(d, Math.abs(trace.lastHiddenState!.data[i]! - hidden[i]!));
    expect(d).toBeLessThanOrEqual(1e-4);
  });
});

describe('band counts and the fed mask, by hand', () => {
  it('bands grow with the length as a power of two: ~256 MiB of float32 scores per band', () => {
    // heads · n² · 4 bytes / 256 MiB, rounded up to a power of two, at least 16.
    expect(queryBandCount(32, 2048)).toBe(QUERY_BANDS); // 2 GiB / 256 MiB = 8 → 16
    expect(queryBandCount(32, 5792)).toBe(16); // 32 · 5792² · 4 = 4.29e9 < 16 · 2^28 = 4.295e9
    expect(queryBandCount(32, 5793)).toBe(32);
    expect(queryBandCount(32, 8192)).toBe(32); // 8 GiB / 256 MiB = 32
    expect(queryBandCount(14, 8192)).toBe(16); // 3.5 GiB → 14 → 16
    expect(queryBandCount(14, 32768)).toBe(256); // 56 GiB → 224 → 256
    expect(queryBandCount(64, 1 << 20)).toBe(MAX_QUERY_BANDS);
  });

  it('onDemandBands takes the most heads of any stack and the longer side, or a requested power of two', () => {
    const info = { numHeads: 8, stackHeads: { encoder: 8, decoder: 32, cross: 32 }, stacks: { encoder: 2, decoder: 2, cross: 2 } } as unknown as ArchitectureInfo;
    expect(onDemandBands(info, 100, 8192)).toBe(32);
    expect(onDemandBands(info, 8192, 10)).toBe(32);
    expect(onDemandBands(info, 8192, 10, 2)).toBe(2);
    for (const bad of [0, 3, 2048, 1.5]) {
      expect(() => onDemandBands(info, 10, undefined, bad)).toThrow(`queryBandCount: ${bad} bands of query rows; allowed: a power of two from 1 to ${MAX_QUERY_BANDS}`);
    }
  });

  it('the fed causal mask: 0 where a query may read a key, the most negative float32 where not (after a cache, with a window)', () => {
    const M = -3.4028234663852886e38;
    const mask = causalMask(3, { pastLength: 1, window: 2 });
    expect(mask.dims).toEqual([1, 1, 3, 4]);
    // Query positions 1, 2, 3; keys 0..3; masked when j > i or i − j ≥ 2.
    expect(Array.from(mask.data as Float32Array)).toEqual([
      0, 0, M, M,
      M, 0, 0, M,
      M, M, 0, 0,
    ]);
  });
});
