/**
 * Banded attention on demand (models/attention.ts): when no probabilities leave the graph, attention
 * runs in bands of query rows whose causal (and sliding-window) masks are built in the graph from
 * positions, so no queries × keys mask is fed; the number of bands grows with the length. Checked
 * against PyTorch's attention and last hidden state in each fixture's reference.json for several band
 * counts (one band, bands of a few rows, more bands than rows), by hand for the band arithmetic and
 * the fed mask, and for one clear line on a bad band count. `npm test` runs a few representative
 * fixtures and band counts; `npm run test:deep` every fixture at every count.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { attentionSource } from '../src/core/attention-on-demand.js';
import { attentionHead, type AttentionSource } from '../src/core/attention-source.js';
import type { Trace } from '../src/core/trace.js';
import { onDemandBands } from '../src/engine/attention-mode.js';
import type { Model } from '../src/engine/model.js';
import type { ArchitectureInfo } from '../src/models/architecture.js';
import { MAX_QUERY_BANDS, QUERY_BANDS, queryBandCount } from '../src/models/attention.js';
import { causalMask } from '../src/models/masks.js';
import type { ExternalWeight } from '../src/graph/builder.js';
import { encodeModel, type ElemType, type GraphSpec } from '../src/graph/onnx-model.js';
import { loadModel } from '../src/engine/load.js';
import type { RuntimeTensor } from '../src/runtime/runtime.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { DEEP, deepOr } from './helpers/deep.js';
import { loadFixtureModel } from './helpers/fixture-suite.js';
import { FIXTURES, flat, readReference, type Nested } from './helpers/reference.js';

/** The decoder-only fixtures (one causal self stack; falcon-alibi and bloom add ALiBi, mistral-window has a window of 6 under 21–37 tokens): every one under test:deep. */
const CAUSAL = ['bloom', 'cohere', 'falcon', 'falcon-alibi', 'gemma', 'gpt2', 'gpt2-bin', 'gpt_neox', 'gptj', 'llama', 'mistral', 'mistral-window', 'mixtral',
  'olmo', 'opt', 'phi', 'qwen2', 'qwen2_moe', 'stablelm', 'starcoder2', 'stories260k'].filter((name) => existsSync(join(FIXTURES, name, 'reference.json')));

/** npm test: a sliding window shorter than the inputs with GQA and RoPE (also with more bands than rows), ALiBi with the mask. */
const QUICK = ['falcon-alibi', 'mistral-window'];

/** One band; bands of a few rows; more bands than rows (empty ones). */
const BAND_COUNTS = [1, 4, 32];

/**
 * The band counts run for `fixture`: all of BAND_COUNTS under test:deep and for `emptyBands` (one
 * fixture of a describe); elsewhere in npm test one band and bands of a few rows (32 bands, more
 * than most inputs' rows (10–37; 80–93 in the long ones), build the largest graphs: 3–16× the time
 * of 4 bands, 10–16× on the T5 family).
 */
function bandCounts(fixture: string, emptyBands: string): number[] {
  return DEEP || fixture === emptyBands ? BAND_COUNTS : BAND_COUNTS.filter((b) => b <= 4);
}

/** Element types of every value of `graph` (inputs, initializers, node outputs), propagated through the ops our builder emits. */
function valueTypes(graph: GraphSpec): Map<string, ElemType> {
  const types = new Map<string, ElemType>();
  for (const v of [...graph.inputs, ...graph.initializers]) types.set(v.name, v.type);
  const codes: Record<number, ElemType> = { 1: 'float32', 6: 'int32', 7: 'int64', 9: 'bool', 10: 'float16', 16: 'bfloat16' };
  const boolOps = new Set(['Equal', 'Greater', 'GreaterOrEqual', 'Less', 'LessOrEqual', 'Or', 'And', 'Not', 'IsNaN']);
  const int64Ops = new Set(['Shape', 'Size', 'NonZero', 'ArgMax', 'ArgMin']);
  for (const n of graph.nodes) {
    const first = types.get(n.inputs[0] ?? '');
    let t: ElemType | undefined;
    if (n.opType === 'Cast') t = codes[Number(n.attributes?.to)];
    else if (boolOps.has(n.opType)) t = 'bool';
    else if (int64Ops.has(n.opType)) t = 'int64';
    else if (n.opType === 'Where') t = types.get(n.inputs[1]!);
    else if (n.opType === 'ConstantOfShape') t = 'float32';
    else t = first;
    n.outputs.forEach((o, i) => o && types.set(o, n.opType === 'TopK' && i === 1 ? 'int64' : t ?? 'float32'));
  }
  return types;
}

/** The largest value (most elements) onnxruntime computes running `graph` on `feeds`: every node output made a graph output. */
async function largestValues(built: { graph: GraphSpec; external: ExternalWeight[] }, feeds: Record<string, RuntimeTensor>): Promise<{ name: string; dims: readonly number[]; size: number }> {
  const types = valueTypes(built.graph);
  // onnxruntime-node hands out no bfloat16 tensors (Falcon's ALiBi rounding): those stay inside.
  const outputs = built.graph.nodes.flatMap((n) => n.outputs.filter((o) => o !== '')).map((name) => ({ name, type: types.get(name)! })).filter((o) => o.type !== 'bfloat16');
  const externalData = await Promise.all(built.external.map(async (w) => ({ path: w.path, data: await w.load() })));
  const session = await nodeRuntime.createSession({ model: encodeModel({ ...built.graph, outputs }), externalData });
  try {
    const out = await session.run(feeds);
    let largest = { name: '', dims: [] as readonly number[], size: 0 };
    for (const [name, t] of Object.entries(out)) {
      const size = sizeOf(t.dims);
      if (size > largest.size) largest = { name, dims: t.dims, size };
    }
    return largest;
  } finally {
    await session.release();
  }
}

function sizeOf(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

/** Every layer and head of `source` within `tolerance` of PyTorch's [layer][head][q][k] `reference`, its masked (zero) cells exactly 0. */
function expectStackMatches(source: AttentionSource, reference: Float64Array, tolerance: number, where: string): void {
  const { numLayers: layers, numHeads: heads, numQueries: q, numKeys: k } = source;
  expect(reference).toHaveLength(layers * heads * q * k);
  for (let layer = 0; layer < layers; layer++) {
    for (let head = 0; head < heads; head++) {
      const got = attentionHead(source, layer, head);
      const at = (layer * heads + head) * q * k;
      let d = 0;
      for (let c = 0; c < q * k; c++) {
        d = Math.max(d, Math.abs(got[c]! - reference[at + c]!));
        if (reference[at + c] === 0) expect(got[c], `${where} layer ${layer} head ${head} cell ${c}`).toBe(0);
      }
      expect(d, `${where} layer ${layer} head ${head}`).toBeLessThanOrEqual(tolerance);
    }
  }
}

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

  it.each(bandCounts(fixture, 'mistral-window'))('%i bands: every input, layer and head within 1e-5 of PyTorch (masked cells exactly 0), last hidden state within 1e-4', async (bands) => {
    for (const input of ref.inputs) {
      const trace: Trace = await model.trace(null, { ids: input.input_ids, attention: 'on-demand', hidden: true, queryBandCount: bands });
      expect(trace.attention).toEqual({});
      expectStackMatches(attentionSource(trace, 'self'), flat(input.attentions as Nested), 1e-5, `${fixture} ${input.id} ${bands} bands`);
      // The last hidden state goes through every layer's banded attention.
      const hidden = flat(input.last_hidden_state as Nested);
      let dh = 0;
      for (let i = 0; i < hidden.length; i++) dh = Math.max(dh, Math.abs(trace.lastHiddenState!.data[i]! - hidden[i]!));
      expect(dh, `${fixture} ${input.id} last hidden state`).toBeLessThanOrEqual(1e-4);
    }
  });
});

/** The T5 family (relative position buckets; umt5 a table per layer): every one in npm test, more bands than rows on umt5. */
const RELATIVE = ['t5', 'mt5', 'umt5'].filter((name) => existsSync(join(FIXTURES, name, 'reference.json')));

describe.each(RELATIVE)('fixture %s: banded attention on demand with the relative position bias built per band', (fixture) => {
  const ref = readReference(fixture);
  let model: Model;
  loadFixtureModel(fixture, (m) => (model = m));

  it.each(bandCounts(fixture, 'umt5'))("%i bands: encoder, decoder and cross attention within 1e-5 of PyTorch's (masked cells exactly 0), hidden states within 1e-4", async (bands) => {
    for (const input of ref.inputs) {
      const decoderIds = input.decoder_input_ids as number[];
      const trace = await model.trace(null, { ids: input.input_ids, decoderIds, attention: 'on-demand', hidden: true, queryBandCount: bands });
      expect(trace.attention).toEqual({});
      // The position bias as recorded on demand: one vector over j − i per head, not [heads, q, k].
      for (const stack of ['encoder', 'decoder'] as const) {
        const pb = trace.scores![stack]!.positionBias!;
        expect(pb.layers[0]).toHaveLength(pb.dims[0] * (pb.dims[1] + pb.dims[2] - 1));
      }
      // The fixture README's float32 noise bound, 2e-5: mt5's and umt5's float32 references are
      // themselves up to 1.25e-5 from a float64 recomputation (fixtures-mt5.test.ts); here ≤ 1.03e-5.
      for (const stack of ['encoder', 'decoder', 'cross'] as const) {
        expectStackMatches(attentionSource(trace, stack), flat(input[`${stack}_attentions`] as Nested), 2e-5, `${fixture} ${input.id} ${bands} bands ${stack}`);
      }
      const hidden = flat(input.decoder_last_hidden_state as Nested);
      let dh = 0;
      for (let i = 0; i < hidden.length; i++) dh = Math.max(dh, Math.abs(trace.lastHiddenState!.data[i]! - hidden[i]!));
      expect(dh, `${fixture} ${input.id} decoder last hidden state`).toBeLessThanOrEqual(1e-4);
    }
  });
});

/**
 * Every value's size in the graph as onnxruntime runs it for a given input, read from the built
 * graph with shape inference over the fed shapes: no input and no intermediate of a banded graph holds
 * queries × keys values per head (only a band's rows), while the dense graph does.
 */
describe('nothing of size queries × keys is fed or held on demand (bloom, falcon-alibi, t5, umt5)', () => {
  const cases = ['bloom', 'falcon-alibi', 't5', 'umt5'].filter((name) => existsSync(join(FIXTURES, name, 'reference.json')));
  it.each(cases)('%s: the inputs fed are O(n) and no value reaches n² per head; the dense graph has [1, heads, n, n] values', async (fixture) => {
    const model = await loadModel(join(FIXTURES, fixture));
    try {
      // A long input (n = 300) and 8 bands: each band's scores are [heads, 38, 300] at most.
      const n = 300;
      const ids = Array.from({ length: n }, (_, i) => 5 + ((i * 37) % 200));
      const inputs = { inputIds: ids, ...(model.info.kind === 'encoder-decoder' ? { decoderInputIds: ids.slice(0, n) } : {}) };
      const feeds = model.architecture.feeds(model.config, inputs);
      const heads = model.info.numHeads;
      for (const [taps, banded] of [[{ attention: false, qk: true, lastHiddenState: true, logits: false, queryBandCount: 8 }, true], [{ attention: true, qk: true, lastHiddenState: true, logits: false }, false]] as const) {
        const built = await model.buildGraph(taps);
        const fed = built.graph.inputs.map((i) => i.name);
        const largest = await largestValues(built, Object.fromEntries(Object.entries(feeds).filter(([k]) => fed.includes(k))));
        const perHead = n * n;
        if (banded) {
          for (const name of fed) expect(sizeOf(feeds[name]!.dims), `${fixture} input ${name}`).toBeLessThan(perHead);
          // One band's [1, heads, ⌈n/8⌉, n] scores, an eighth of one [heads, n, n] layer.
          expect(largest.size, `${fixture}: ${largest.name} [${largest.dims.join(', ')}]`).toBeLessThanOrEqual(heads * Math.ceil(n / 8) * n);
        } else {
          expect(largest.size, fixture).toBeGreaterThanOrEqual(heads * perHead);
        }
      }
    } finally {
      await model.dispose();
    }
  }, 600_000);
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
