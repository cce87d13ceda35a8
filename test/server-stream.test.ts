/**
 * Per-layer streaming of `attnscope serve` (issue 11 point 3): each layer's frames reach the client
 * before the next layer is computed (the run is held after layer 0 until the client has read layer
 * 0's frame: without streaming it would never get it and the test would time out, no timing
 * involved); a client that goes away mid-run stops the run (no further layer is computed); the
 * answer equals PyTorch's attention, also for an encoder-decoder (encoder layers, then decoder
 * and cross attention together) and T5's shared position bias; the finished answer is cached.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FrameReader, type Frame, type StreamHeader, type StreamTensor } from '../src/server/protocol.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { FIXTURES, flat, maxAbsDiff, readReference } from './helpers/reference.js';

const BUNDLE = { js: '/* app */', css: '/* app */' };
let server: RunningServer;

beforeAll(async () => {
  server = await startServer({ port: 0, folders: [FIXTURES], hfCache: false, env: { HF_HUB_OFFLINE: '1' }, graphCache: false, bundle: BUNDLE });
});

afterAll(async () => {
  await server?.close();
});

function post(body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(new URL('/api/trace', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), ...(signal ? { signal } : {}) });
}

/** Reads frames off a response as they arrive, calling `onFrame` for each; returns them all. */
async function read(res: Response, onFrame: (f: Frame) => void | Promise<void> = () => undefined): Promise<Frame[]> {
  const reader = new FrameReader();
  const out: Frame[] = [];
  const body = res.body!.getReader();
  for (;;) {
    const { done, value } = await body.read();
    if (done) break;
    for (const f of reader.push(value)) {
      out.push(f);
      await onFrame(f);
    }
  }
  expect(reader.pending).toBe(0);
  return out;
}

function tensorsOf(fs: Frame[]): StreamTensor[] {
  const tensors = [...(fs[0] as { value: StreamHeader }).value.tensors];
  for (const f of fs) if (f.type === 'tensor') tensors[f.value.index] = f.value;
  return tensors;
}

function layersOf(fs: Frame[], tensors: StreamTensor[], kind: string, stack: string): Float64Array {
  const index = tensors.findIndex((t) => t.kind === kind && t.stack === stack);
  const frames = fs.filter((f): f is Extract<Frame, { type: 'layer' }> => f.type === 'layer' && f.tensor === index).sort((a, b) => a.layer - b.layer);
  return new Float64Array(frames.flatMap((f) => [...f.values]));
}

describe('serve: per-layer streaming', () => {
  it("sends layer 0 before layer 1 is computed, and the whole answer is PyTorch's", async () => {
    const ref = readReference('bert').inputs[0]!;
    const events: string[] = [];
    let first: Frame[] = [];
    let gotFirst!: () => void;
    const firstArrived = new Promise<void>((r) => (gotFirst = r));
    server.traces.onLayerSent = async ({ index }) => {
      events.push(`computed ${index}`);
      // Hold the run after layer 0 until the client has layer 0's frame.
      if (index === 0) await firstArrived;
    };
    try {
      const res = await post({ model: 'folder:0/bert', text: ref.text, taps: { qk: true } });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-attnscope-cache')).toBe('miss');
      const fs = (first = await read(res, (f) => {
        if (f.type === 'layer') {
          events.push(`received ${f.layer}`);
          if (f.layer === 0) gotFirst();
        }
      }));
      expect((fs[0] as { value: StreamHeader }).value.streaming).toBe('per-layer');
      // Layer 0's frames (attention, queries, keys) arrived before layer 1 was computed.
      expect(events.indexOf('received 0')).toBeLessThan(events.indexOf('computed 1'));
      expect(events.filter((e) => e.startsWith('computed'))).toEqual(['computed 0', 'computed 1']);
      const tensors = tensorsOf(fs);
      expect(maxAbsDiff(layersOf(fs, tensors, 'attention', 'self'), flat(ref.attentions!))).toBeLessThanOrEqual(1e-5);
      expect(maxAbsDiff(layersOf(fs, tensors, 'keys', 'self'), flat(ref.keys!))).toBeLessThanOrEqual(1e-4);
      expect(fs.at(-1)!.type).toBe('end');
    } finally {
      server.traces.onLayerSent = undefined;
    }
    // Finished answers are cached: the same request again runs nothing and sends the same layers.
    const runs = server.traces.runs;
    const again = await post({ model: 'folder:0/bert', text: ref.text, taps: { qk: true } });
    expect(again.headers.get('x-attnscope-cache')).toBe('hit');
    const cached = await read(again);
    expect(server.traces.runs).toBe(runs);
    expect([...layersOf(cached, tensorsOf(cached), 'attention', 'self')]).toEqual([...layersOf(first, tensorsOf(first), 'attention', 'self')]);
  });

  for (const fixture of ['gpt2', 'llama', 'stories260k']) {
    it(`${fixture} (causal): the first text streams layer by layer and seeds the key/value cache an appended text reuses`, async () => {
      const ref = readReference(fixture);
      const numLayers = ref.attention.num_layers as number;
      const input = [...ref.inputs].sort((a, b) => b.input_ids.length - a.input_ids.length).find((i) => !i.text_pair && i.attentions)!;
      const words = input.text.split(/(?<= )/);
      const first = words.slice(0, Math.ceil(words.length / 2)).join('').trimEnd();
      const model = `folder:0/${fixture}`;
      const events: string[] = [];
      let gotFirst!: () => void;
      const firstArrived = new Promise<void>((r) => (gotFirst = r));
      let segments = 0;
      server.traces.onLayerSent = async ({ index, count }) => {
        events.push(`computed ${index}`);
        segments = count;
        if (index === 0) await firstArrived;
      };
      let fs: Frame[];
      try {
        const res = await post({ model, text: first, taps: { topK: 2 } });
        expect(res.status).toBe(200);
        fs = await read(res, (f) => {
          if (f.type === 'layer') {
            events.push(`received ${f.layer}`);
            if (f.layer === 0) gotFirst();
          }
        });
      } finally {
        server.traces.onLayerSent = undefined;
      }
      const header = (fs[0] as { value: StreamHeader }).value;
      expect(header.streaming).toBe('per-layer');
      expect(events.indexOf('received 0')).toBeLessThan(events.indexOf('computed 1'));
      // One segment per layer, and with predictions asked for (topK), the final norm and head in a
      // segment of no layer of their own where the last layer runs on the middle layers' shared session.
      expect(events.filter((e) => e.startsWith('computed')).length).toBe(segments);
      expect([numLayers, numLayers + 1]).toContain(segments);
      expect(events.filter((e) => e.startsWith('received')).sort()).toEqual(Array.from({ length: numLayers }, (_, l) => `received ${l}`).sort());
      // Only what was asked for is sent: attention (no queries, keys, values or score terms for the seed's taps), predictions.
      const tensors = tensorsOf(fs);
      expect(tensors.map((t) => t.kind)).toEqual(['attention']);
      expect(header.scores).toBeUndefined();
      const predicted = fs.find((f) => f.type === 'predictions');
      expect(predicted?.type === 'predictions' ? predicted.value.predictions.map((p) => p.position) : []).toEqual(header.tokens.map((_, i) => i));
      // A causal model's rows of a token prefix are PyTorch's rows of the whole text, cut to the prefix's columns.
      const m = header.tokens.length;
      const n = input.input_ids.length;
      expect(header.tokens.map((t) => t.id)).toEqual(input.input_ids.slice(0, m));
      const full = flat(input.attentions!);
      const heads = ref.attention.num_heads;
      const cut = new Float64Array(numLayers * heads * m * m);
      for (let lh = 0; lh < numLayers * heads; lh++) for (let i = 0; i < m; i++) for (let j = 0; j < m; j++) cut[(lh * m + i) * m + j] = full[(lh * n + i) * n + j]!;
      expect(maxAbsDiff(layersOf(fs, tensors, 'attention', 'self'), cut)).toBeLessThanOrEqual(1e-5);

      // The whole text extends the first: only its new tokens run, fed the seeded keys and values.
      const appends = server.traces.append.appends;
      const reused = server.traces.append.reusedTokens;
      const res = await post({ model, text: input.text, taps: { topK: 2 } });
      const whole = await read(res);
      expect((whole[0] as { value: StreamHeader }).value.streaming).toBe('after-run');
      expect(server.traces.append.appends).toBe(appends + 1);
      expect(server.traces.append.reusedTokens).toBe(reused + m);
      expect((whole[0] as { value: StreamHeader }).value.tokens.map((t) => t.id)).toEqual(input.input_ids);
      expect(maxAbsDiff(layersOf(whole, tensorsOf(whole), 'attention', 'self'), full)).toBeLessThanOrEqual(1e-5);
    });
  }

  it('stops the run when the client goes away mid-run: no further layer is computed', async () => {
    const computed: number[] = [];
    const controller = new AbortController();
    server.traces.onLayerSent = async ({ index, signal }) => {
      computed.push(index);
      // Hold the run after layer 0 until the server has seen the client go (the run's signal fires).
      if (index === 0 && !signal.aborted) await new Promise((r) => signal.addEventListener('abort', r, { once: true }));
    };
    try {
      const res = await post({ model: 'folder:0/bert', text: 'a text the client will not wait for' }, controller.signal);
      const done = read(res, (f) => {
        // The client leaves as soon as it has the first layer; then the run may go on.
        if (f.type === 'layer') controller.abort();
      }).catch((e: unknown) => e);
      expect(await done).toBeInstanceOf(Error);
      await server.traces.settled();
      expect(computed).toEqual([0]);
    } finally {
      server.traces.onLayerSent = undefined;
    }
  });

  it('an encoder-decoder without a decoder text generates maxNewTokens tokens (greedy: the shorter run is the longer one’s beginning)', async () => {
    const ref = readReference('bart').inputs[0]!;
    const gen = async (maxNewTokens: number) => {
      const res = await post({ model: 'folder:0/bart', text: ref.text, maxNewTokens, taps: { qk: false } });
      expect(res.status).toBe(200);
      const fs = await read(res);
      const header = (fs[0] as { value: StreamHeader }).value;
      return { header, decoder: layersOf(fs, tensorsOf(fs), 'attention', 'decoder'), heads: tensorsOf(fs).find((t) => t.kind === 'attention' && t.stack === 'decoder')!.dims[0] };
    };
    const short = await gen(2);
    const long = await gen(5);
    for (const [g, n] of [[short, 2], [long, 5]] as const) {
      expect(g.header.generation!.steps.length).toBeLessThanOrEqual(n);
      if (g.header.generation!.stoppedBy === 'length') expect(g.header.generation!.steps.length).toBe(n);
    }
    const s = short.header.generation!.steps.map((x) => x.id);
    expect(long.header.generation!.steps.map((x) => x.id).slice(0, s.length)).toEqual(s);
    // Decoder self-attention is causal: the shorter run's rows are the longer run's top-left block.
    const m = short.header.decoderTokens!.length;
    const M = long.header.decoderTokens!.length;
    expect(M).toBeGreaterThan(m);
    const layers = short.decoder.length / (short.heads * m * m);
    let diff = 0;
    for (let l = 0; l < layers; l++) {
      for (let h = 0; h < short.heads; h++) {
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < m; j++) diff = Math.max(diff, Math.abs(short.decoder[((l * short.heads + h) * m + i) * m + j]! - long.decoder[((l * short.heads + h) * M + i) * M + j]!));
        }
      }
    }
    expect(diff).toBeLessThanOrEqual(1e-5);
    // Refused where it does not apply, in one line naming the field.
    for (const body of [{ model: 'folder:0/bart', text: ref.text, decoderText: 'x', maxNewTokens: 2 }, { model: 'folder:0/bart', text: ref.text, maxNewTokens: 0 }]) {
      const res = await post(body);
      expect(res.status).toBe(400);
      expect(((await res.json()) as { field: string }).field).toBe('maxNewTokens');
    }
  });

  it('streams an encoder-decoder: encoder layers, then decoder and cross attention (T5: shared position bias)', async () => {
    for (const fixture of ['bart', 't5']) {
      const ref = readReference(fixture).inputs[0]!;
      const res = await post({ model: `folder:0/${fixture}`, text: ref.text, decoderText: ref.decoder_text as string, taps: { qk: true } });
      expect(res.status).toBe(200);
      const fs = await read(res);
      const header = (fs[0] as { value: StreamHeader }).value;
      expect(header.streaming).toBe('per-layer');
      expect(header.decoderTokens!.map((t) => t.id)).toEqual(ref.decoder_input_ids);
      const tensors = tensorsOf(fs);
      const order = fs.flatMap((f) => (f.type === 'layer' && tensors[f.tensor]!.kind === 'attention' ? [`${tensors[f.tensor]!.stack}.${f.layer}`] : []));
      expect(order).toEqual(['encoder.0', 'encoder.1', 'decoder.0', 'cross.0', 'decoder.1', 'cross.1']);
      for (const [stack, key] of [['encoder', 'encoder_attentions'], ['decoder', 'decoder_attentions'], ['cross', 'cross_attentions']] as const) {
        expect(maxAbsDiff(layersOf(fs, tensors, 'attention', stack), flat(ref[key] as never)), `${fixture} ${stack}`).toBeLessThanOrEqual(1e-5);
      }
      if (fixture === 't5') {
        // The shared bias is sent with every layer: PyTorch's position_bias (with the mask added on the decoder side).
        const bias = tensorsOf(fs).findIndex((t) => t.kind === 'scoreBias' && t.stack === 'encoder');
        const layers = fs.filter((f) => f.type === 'layer' && f.tensor === bias);
        expect(layers.length).toBe(2);
        expect(maxAbsDiff(layersOf(fs, tensors, 'scoreBias', 'encoder').subarray(0, layers[0]!.type === 'layer' ? layers[0]!.values.length : 0), flat(ref.encoder_position_bias as never))).toBeLessThanOrEqual(1e-5);
      }
    }
  });
});
