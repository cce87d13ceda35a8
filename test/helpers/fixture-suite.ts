/**
 * The checks every fixture family shares: a describe block that loads the fixture once, the model
 * described as reference.json records it, one input's self-attention trace against PyTorch's
 * tensors, and cached decoding against full re-runs.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../../src/core/trace.js';
import { loadModel, type LoadOptions } from '../../src/engine/load.js';
import type { Model } from '../../src/engine/model.js';
import { FIXTURES, flat, maxAbsDiff, readReference, stackValues, type Reference, type ReferenceInput } from './reference.js';

export interface FixtureSuite {
  ref: Reference;
  /** The loaded model (available inside tests). */
  model(): Model;
}

/**
 * `describe('fixture <name>')` with the model loaded once, and a first test that the layer, head
 * and head-size counts (and `kind`, when given) are reference.json's.
 */
export function describeFixture(fixture: string, kind: Model['info']['kind'] | null, body: (suite: FixtureSuite) => void): void {
  describe(`fixture ${fixture}`, () => {
    const ref = readReference(fixture);
    let model: Model | undefined;
    loadFixtureModel(fixture, (m) => (model = m));

    it('describes the model as PyTorch does', () => {
      const m = model!;
      expect(m.info.numLayers).toBe(ref.attention.num_layers);
      expect(m.info.numHeads).toBe(ref.attention.num_heads);
      expect(m.info.numKeyValueHeads).toBe(ref.attention.num_kv_heads);
      expect(m.info.headDim).toBe(ref.attention.head_dim);
      if (kind) expect(m.info.kind).toBe(kind);
    });

    body({ ref, model: () => model! });
  });
}

/**
 * Inside a describe: loads the fixture's model before its tests (handing it to `set`) and
 * disposes of it after them.
 */
export function loadFixtureModel(fixture: string, set: (model: Model) => void): void {
  let loaded: Model | undefined;
  beforeAll(async () => {
    loaded = await loadModel(join(FIXTURES, fixture));
    set(loaded);
  });
  afterAll(async () => {
    await loaded?.dispose();
  });
}

/**
 * Inside a describe: loads the models of several fixtures at once (with `options`) before its
 * tests, handing them to `set` in the order named, and disposes of them after them.
 */
export function loadFixtureModels<const N extends readonly string[]>(
  fixtures: N, options: LoadOptions, set: (models: { -readonly [K in keyof N]: Model }) => void,
): void {
  let loaded: Model[] = [];
  beforeAll(async () => {
    loaded = await Promise.all(fixtures.map((f) => loadModel(join(FIXTURES, f), options)));
    set(loaded as { -readonly [K in keyof N]: Model });
  });
  afterAll(async () => {
    for (const m of loaded) await m.dispose();
  });
}

/**
 * Self-attention (≤ 1e-5), per-head queries and keys and the last hidden state (≤ 1e-4) of `trace`
 * against the reference input, and its logits (≤ 1e-4) when `logits` is set.
 */
export function expectSelfTraceMatches(trace: Trace, input: ReferenceInput, logits = false): void {
  const attn = maxAbsDiff(stackValues(trace.attention.self), flat(input.attentions!));
  const q = maxAbsDiff(stackValues(trace.queries?.self), flat(input.queries!));
  const k = maxAbsDiff(stackValues(trace.keys?.self), flat(input.keys!));
  const h = maxAbsDiff(trace.lastHiddenState?.data ?? [], flat(input.last_hidden_state!));
  const got: Record<string, boolean> = { attn: attn <= 1e-5, q: q <= 1e-4, k: k <= 1e-4, h: h <= 1e-4 };
  let message = `attn ${attn} q ${q} k ${k} hidden ${h}`;
  if (logits) {
    const l = maxAbsDiff(trace.logits?.data ?? [], flat(input.logits!));
    got.logits = l <= 1e-4;
    message += ` logits ${l}`;
  }
  expect(got, message).toEqual(Object.fromEntries(Object.keys(got).map((key) => [key, true])));
}

/**
 * `it`: the logits of the input's ids (token type ids left at their default zeros, as the
 * references were computed: test/fixtures/README.md, "Logits") are within 1e-4 of its reference.
 */
export function itLogitsMatch(model: () => Model, input: ReferenceInput, head: string): void {
  it(`input '${input.id}': the ${head}'s logits match`, async () => {
    const trace = await model().trace(null, { ids: input.input_ids, logits: true, attention: false });
    const diff = maxAbsDiff(trace.logits?.data ?? [], flat(input.logits!));
    expect(diff, `logits differ by ${diff}`).toBeLessThanOrEqual(1e-4);
  });
}

/** `it`: tracing the input's text (and pair) gives its ids and reference self-attention (≤ 1e-5). */
export function itTracesFromText(model: () => Model, input: ReferenceInput): void {
  it(`input '${input.id}': tracing from text gives the same trace as from ids`, async () => {
    const fromText = await model().trace(input.text, { pair: input.text_pair });
    expect(fromText.tokens.map((t) => t.id)).toEqual(input.input_ids);
    expect(maxAbsDiff(stackValues(fromText.attention.self), flat(input.attentions!))).toBeLessThanOrEqual(1e-5);
  });
}

/**
 * A masked-LM trace of a text with one mask token (`maskId`) predicts there, and only there: the
 * candidates are the top three of the logits row at that position (ties to the lower id).
 */
export function expectMaskPredictions(trace: Trace, maskId: number | null): void {
  const maskPositions = trace.tokens.flatMap((t, i) => (t.id === maskId ? [i] : []));
  expect(maskPositions).toHaveLength(1);
  expect(trace.predictions!.map((p) => p.position)).toEqual(maskPositions);
  const vocab = trace.logits!.dims[1];
  for (const p of trace.predictions!) {
    expect(p.kind).toBe('masked');
    const row = Array.from(trace.logits!.data.subarray(p.position * vocab, (p.position + 1) * vocab));
    const top = row.map((v, id) => ({ v, id })).sort((a, b) => b.v - a.v || a.id - b.id).slice(0, 3).map((e) => e.id);
    expect(p.candidates.map((c) => c.id)).toEqual(top);
  }
}

/** The tokens greedy decoding picks when every step is a full (uncached) run over the sequence so far. */
export async function argmaxOfFullRuns(model: Model, prompt: readonly number[], steps: number): Promise<number[]> {
  const chain: number[] = [];
  for (let i = 0; i < steps; i++) {
    const full = await model.trace(null, { ids: [...prompt, ...chain], logits: true, attention: false });
    const cols = full.logits!.dims[1];
    const last = full.logits!.data.subarray(full.logits!.data.length - cols);
    let best = 0;
    for (let v = 1; v < cols; v++) if (last[v]! > last[best]!) best = v;
    chain.push(best);
  }
  return chain;
}

/**
 * Generates `maxNewTokens` with the key/value cache and checks that it chose the argmax of full
 * re-runs and that its attention (≤ 1e-5), queries and keys (≤ 1e-4) are those of one full run
 * over the same tokens. Returns both traces for further checks.
 */
export async function expectCachedDecodingMatchesFullRuns(
  model: Model,
  prompt: readonly number[],
  maxNewTokens: number,
): Promise<{ cached: Trace; full: Trace }> {
  const cached = await model.generate(null, { ids: [...prompt], maxNewTokens, qk: true });
  const ids = cached.tokens.map((t) => t.id);
  const generated = ids.slice(prompt.length);
  expect(generated.length).toBeGreaterThan(0);
  expect(generated).toEqual(await argmaxOfFullRuns(model, prompt, generated.length));
  const full = await model.trace(null, { ids, qk: true });
  expect(cached.attention.self!.dims).toEqual(full.attention.self!.dims);
  expect(maxAbsDiff(stackValues(cached.attention.self), stackValues(full.attention.self))).toBeLessThanOrEqual(1e-5);
  expect(maxAbsDiff(stackValues(cached.queries?.self), stackValues(full.queries?.self))).toBeLessThanOrEqual(1e-4);
  expect(maxAbsDiff(stackValues(cached.keys?.self), stackValues(full.keys?.self))).toBeLessThanOrEqual(1e-4);
  return { cached, full };
}

/**
 * Traces the input's text (queries, keys, last hidden state and logits) and checks the ids, then
 * every tensor against the reference (expectSelfTraceMatches with logits). Returns the trace.
 */
export async function expectTextTraceMatches(model: Model, input: ReferenceInput): Promise<Trace> {
  const tokens = await model.tokenize(input.text);
  expect(tokens.map((t) => t.id)).toEqual(input.input_ids);
  const trace = await model.trace(input.text, { qk: true, hidden: true, logits: true });
  expect(trace.tokens.map((t) => t.id)).toEqual(input.input_ids);
  expectSelfTraceMatches(trace, input, true);
  return trace;
}

/** Every layer's recorded scale is reference.json's `attention.scale` (the one the neuron view uses). */
export function expectScaleMatches(trace: Trace, ref: Reference): void {
  const scale = (ref.attention as unknown as { scale: number }).scale;
  for (const s of trace.scores!.self!.scale) expect(Math.abs(s - scale)).toBeLessThanOrEqual(1e-7);
}
