/**
 * Key/value-cache reuse on append (src/server/append.ts): a trace extended from a kept prefix
 * equals a full re-trace of the whole text (attention, queries, keys, score bias, predictions)
 * and PyTorch's attention, on causal fixtures of different families (learned positions, RoPE
 * with grouped keys/values, ALiBi score bias, a sliding window).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LayerStack, Prediction, Token, Trace } from '../src/core/trace.js';
import { traceLayers } from '../src/engine/layerwise.js';
import type { Model } from '../src/engine/model.js';
import type { RuntimeTensor } from '../src/runtime/runtime.js';
import { AppendCache } from '../src/server/append.js';
import { FrameReader, type Frame } from '../src/server/protocol.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { loadFixtureModel } from './helpers/fixture-suite.js';
import { FIXTURES, flat, readReference } from './helpers/reference.js';

function maxDiff(a: LayerStack | undefined, b: LayerStack | undefined): number {
  expect(a).toBeDefined();
  expect(b).toBeDefined();
  expect(a!.dims).toEqual(b!.dims);
  expect(a!.layers.length).toBe(b!.layers.length);
  let d = 0;
  a!.layers.forEach((la, l) => {
    const lb = b!.layers[l]!;
    expect(la.length).toBe(lb.length);
    for (let i = 0; i < la.length; i++) d = Math.max(d, Math.abs(la[i]! - lb[i]!));
  });
  return d;
}

/** Largest difference over entries j ≤ i of [d0, n, n] layers. */
function maxVisibleDiff(a: LayerStack | undefined, b: LayerStack | undefined): number {
  expect(a?.dims).toEqual(b?.dims);
  const [d0, n, m] = b!.dims;
  let d = 0;
  b!.layers.forEach((lb, l) => {
    const la = a!.layers[l]!;
    for (let h = 0; h < d0; h++) for (let i = 0; i < n; i++) for (let j = 0; j <= Math.min(i, m - 1); j++) d = Math.max(d, Math.abs(la[(h * n + i) * m + j]! - lb[(h * n + i) * m + j]!));
  });
  return d;
}

function expectSameTrace(appended: Trace, full: Trace): void {
  expect(appended.tokens.map((t) => t.id)).toEqual(full.tokens.map((t) => t.id));
  expect(maxDiff(appended.attention.self, full.attention.self)).toBeLessThan(1e-5);
  expect(maxDiff(appended.queries?.self, full.queries?.self)).toBeLessThan(1e-4);
  expect(maxDiff(appended.keys?.self, full.keys?.self)).toBeLessThan(1e-4);
  // The score bias where the causal mask lets a query see a key (a reused prefix's row is not recomputed past its own position, as in incremental generation).
  if (full.scores?.self?.bias) expect(maxVisibleDiff(appended.scores?.self?.bias, full.scores.self.bias)).toBeLessThan(1e-4);
  expect(appended.scores?.self?.causal).toBe(full.scores?.self?.causal);
  expect(appended.scores?.self?.scale).toEqual(full.scores?.self?.scale);
  // Predictions: the same top token at every position, probabilities to 1e-4.
  expect(appended.predictions?.map((p) => p.position)).toEqual(full.predictions?.map((p) => p.position));
  appended.predictions!.forEach((p, i) => {
    const q = full.predictions![i]!;
    expect(p.candidates[0]!.id).toBe(q.candidates[0]!.id);
    expect(Math.abs(p.candidates[0]!.probability - q.candidates[0]!.probability)).toBeLessThan(1e-4);
  });
}

/** Attention of `trace` against PyTorch's for the whole reference input. */
function expectReference(trace: Trace, attentions: unknown): void {
  const ref = flat(attentions as never);
  const s = trace.attention.self!;
  const per = s.dims[0] * s.dims[1] * s.dims[2];
  expect(ref.length).toBe(per * s.layers.length);
  let d = 0;
  s.layers.forEach((layer, l) => {
    for (let i = 0; i < per; i++) d = Math.max(d, Math.abs(layer[i]! - ref[l * per + i]!));
  });
  expect(d).toBeLessThan(1e-5);
}

for (const fixture of ['gpt2', 'llama', 'falcon-alibi', 'mistral-window']) {
  describe(`append reuses the prefix's key/value cache: ${fixture}`, () => {
    let model!: Model;
    loadFixtureModel(fixture, (m) => (model = m));
    const ref = readReference(fixture);
    const input = [...ref.inputs].sort((a, b) => b.input_ids.length - a.input_ids.length).find((i) => !i.text_pair && i.attentions)!;

    it('a text extended word by word equals a full re-trace and PyTorch', async () => {
      const cache = new AppendCache(64 * 1024 * 1024);
      const words = input.text.split(/(?<= )/);
      const half = words.slice(0, Math.max(1, Math.floor(words.length / 2))).join('');
      const first = await cache.trace(model, 'm', { text: half, qk: true, topK: 3 });
      expect(first.reused).toBe(0);
      expectSameTrace(first.trace, await model.trace(half, { qk: true, topK: 3 }));
      const second = await cache.trace(model, 'm', { text: input.text, qk: true, topK: 3 });
      expect(second.reused).toBeGreaterThan(0);
      expect(second.reused + second.computed).toBe(input.input_ids.length);
      expect(cache.appends).toBe(1);
      expectSameTrace(second.trace, await model.trace(input.text, { qk: true, topK: 3 }));
      expect(second.trace.tokens.map((t) => t.id)).toEqual(input.input_ids);
      expectReference(second.trace, input.attentions);
    });

    it("a first text run layer by layer seeds the cache: the text extended from it equals a full re-trace and PyTorch", async () => {
      const cache = new AppendCache(64 * 1024 * 1024);
      const words = input.text.split(/(?<= )/);
      const half = words.slice(0, Math.max(1, Math.floor(words.length / 2))).join('');
      const outputs: Record<string, RuntimeTensor> = {};
      let tokens: Token[] = [];
      // What the server's first run does: the layers one by one (keys and values tapped), then the seed.
      await traceLayers(model, half, { qk: true, values: true, topK: 3, onStart: (p) => void (tokens = p.tokens) }, (layer) => {
        Object.assign(outputs, layer.outputs);
      });
      const predictions: Prediction[] | undefined = (await model.trace(half, { topK: 3 })).predictions;
      expect(cache.seedBytes(model, tokens.length, true)).toBeLessThanOrEqual(cache.maxBytes);
      expect(cache.seed(model, 'm', { text: half, qk: true, topK: 3 }, tokens, outputs, predictions)).toBe(true);
      expect((await cache.lookup(model, 'm', { text: input.text, qk: true, topK: 3 })).kept).toBe(true);
      expect((await cache.lookup(model, 'm', { text: input.text, qk: false, topK: 3 })).kept).toBe(false);
      const second = await cache.trace(model, 'm', { text: input.text, qk: true, topK: 3 });
      // The first text's tokens that PyTorch's ids of the whole text start with (a trailing space may tokenize otherwise).
      const shared = tokens.findIndex((t, i) => t.id !== input.input_ids[i]);
      const prefix = shared < 0 ? tokens.length : shared;
      expect(prefix).toBeGreaterThan(1);
      expect(second.reused).toBe(prefix);
      expect(second.computed).toBe(input.input_ids.length - prefix);
      expectSameTrace(second.trace, await model.trace(input.text, { qk: true, topK: 3 }));
      expectReference(second.trace, input.attentions);
      // A seed without a tap it needs (values) is refused.
      const noValues = Object.fromEntries(Object.entries(outputs).filter(([k]) => !k.startsWith('values.')));
      expect(new AppendCache(1 << 26).seed(model, 'm', { text: half, qk: true, topK: 3 }, tokens, noValues, predictions)).toBe(false);
    });

    it('a deletion at the end runs nothing; other taps and models keep their own traces', async () => {
      const cache = new AppendCache(64 * 1024 * 1024);
      await cache.trace(model, 'm', { text: input.text, qk: false, topK: 0 });
      const words = input.text.split(/(?<= )/);
      const shorter = words.slice(0, words.length - 1).join('');
      const cut = await cache.trace(model, 'm', { text: shorter, qk: false, topK: 0 });
      const full = await model.trace(shorter, {});
      if (full.tokens.length < input.input_ids.length && full.tokens.every((t, i) => t.id === input.input_ids[i])) expect(cut.computed).toBe(0);
      expect(maxDiff(cut.trace.attention.self, full.attention.self)).toBeLessThan(1e-5);
      // Another model key, or other taps: no reuse.
      expect((await cache.trace(model, 'other', { text: input.text, qk: false, topK: 0 })).reused).toBe(0);
      expect((await cache.trace(model, 'm', { text: input.text, qk: true, topK: 0 })).reused).toBe(0);
    });
  });
}

describe('AppendCache bounds', () => {
  let model!: Model;
  loadFixtureModel('gpt2', (m) => (model = m));
  it('keeps nothing larger than its byte bound', async () => {
    const cache = new AppendCache(1000);
    await cache.trace(model, 'm', { text: 'Hello there, my friend', qk: false, topK: 0 });
    expect((await cache.trace(model, 'm', { text: 'Hello there, my friend and more', qk: false, topK: 0 })).reused).toBe(0);
  });
});

describe('the server traces an appended text through the kept prefix', () => {
  let server!: RunningServer;
  beforeAll(async () => {
    server = await startServer({ port: 0, folders: [FIXTURES], hfCache: false, graphCache: false, env: { HF_HUB_OFFLINE: '1' }, bundle: { js: '', css: '' } });
  });
  afterAll(async () => {
    await server?.close();
  });

  async function traceOver(text: string): Promise<{ layers: Float32Array[]; streaming: string }> {
    const res = await fetch(new URL('/api/trace', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'folder:0/gpt2', text, taps: { qk: true, topK: 3 } }) });
    expect(res.status).toBe(200);
    const reader = new FrameReader();
    const frames: Frame[] = reader.push(new Uint8Array(await res.arrayBuffer()));
    const header = frames.find((f) => f.type === 'header')!;
    const attention = header.type === 'header' ? header.value.tensors.findIndex((t) => t.kind === 'attention') : -1;
    return { layers: frames.flatMap((f) => (f.type === 'layer' && f.tensor === attention ? [f.values] : [])), streaming: header.type === 'header' ? header.value.streaming : '' };
  }

  it('the second request reuses the first one’s key/value cache and answers PyTorch’s attention', async () => {
    const input = readReference('gpt2').inputs.find((i) => !i.text_pair && i.attentions && i.text.includes(' '))!;
    const words = input.text.split(/(?<= )/);
    // The first run streams layer by layer and seeds the cache; the appended text runs only its new tokens.
    expect((await traceOver(words.slice(0, Math.ceil(words.length / 2)).join(''))).streaming).toBe('per-layer');
    expect(server.traces.append.appends).toBe(0);
    const { layers, streaming } = await traceOver(input.text);
    expect(streaming).toBe('after-run');
    expect(server.traces.append.appends).toBe(1);
    expect(server.traces.append.reusedTokens).toBeGreaterThan(0);
    const ref = flat(input.attentions!);
    const per = layers[0]!.length;
    expect(ref.length).toBe(per * layers.length);
    let d = 0;
    layers.forEach((l, i) => l.forEach((v, j) => (d = Math.max(d, Math.abs(v - ref[i * per + j]!)))));
    expect(d).toBeLessThan(1e-5);
  });
});
