/**
 * `attnscope serve` streams a long input's trace in the on-demand form, q/k first (issue 13.4: the
 * first layer on screen before the model has finished): the run sends layer 0's queries and keys
 * (and score terms) and is then held until the client has read them, so they reach the client
 * before the rest of layer 0 (its attention and MLP output, computed in the next segment) exists;
 * no probabilities are sent, and the queries and keys are PyTorch's (reference.json). The
 * threshold is lowered to 0 tokens so a fixture's short text counts as long. No timing involved.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { Model, tapsKey } from '../src/engine/model.js';
import { PREVIEW_QUERIES } from '../src/graph/partition.js';
import { FrameReader, PREVIEW_TENSOR_INDEX, type Frame, type StreamHeader, type StreamTensor } from '../src/server/protocol.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { FIXTURES, flat, maxAbsDiff, readReference } from './helpers/reference.js';

let server: RunningServer;

/** The llama fixture's config.json (its head counts). */
function llamaConfig(): { hidden_size: number; num_attention_heads: number; num_key_value_heads: number } {
  return JSON.parse(readFileSync(join(FIXTURES, 'llama', 'config.json'), 'utf8')) as ReturnType<typeof llamaConfig>;
}

beforeAll(async () => {
  server = await startServer({ port: 0, folders: [FIXTURES], hfCache: false, env: { HF_HUB_OFFLINE: '1' }, graphCache: false, bundle: { js: '/* app */', css: '/* app */' } });
  server.traces.onDemandAbove = 0;
  // No page here draws a first view and says so (POST /api/trace/drawn): no pause unless a test sets one.
  server.traces.firstLayerPauseMs = 0;
});

afterAll(async () => {
  await server?.close();
});

/** Reads a trace answer to its end, handing each frame to `onFrame` as it comes; the frames' types. */
async function readAll(res: Response, onFrame: (f: Frame) => void | Promise<void>): Promise<string[]> {
  const reader = new FrameReader();
  const types: string[] = [];
  const body = res.body!.getReader();
  for (;;) {
    const { done, value } = await body.read();
    if (done) return types;
    for (const f of reader.push(value)) {
      types.push(f.type);
      await onFrame(f);
    }
  }
}

describe('serve: a long input streams q/k first', () => {
  for (const fixture of ['bert', 'llama']) {
    it(`${fixture}: layer 0's queries and keys reach the client before the rest of layer 0 is computed`, async () => {
      const ref = readReference(fixture);
      const input = ref.inputs.find((i) => !i.text_pair && i.queries && i.keys)!;
      const layers = ref.attention.num_layers as number;
      const events: string[] = [];
      let got!: () => void;
      const gotQk = new Promise<void>((r) => (got = r));
      server.traces.onLayerSent = async ({ index }) => {
        events.push(`computed segment ${index}`);
        if (index === 0) await gotQk;
      };
      try {
        const res = await fetch(new URL('/api/trace', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: `folder:0/${fixture}`, text: input.text }) });
        expect(res.status).toBe(200);
        const reader = new FrameReader();
        const frames: Frame[] = [];
        const tensors: StreamTensor[] = [];
        const body = res.body!.getReader();
        for (;;) {
          const { done, value } = await body.read();
          if (done) break;
          for (const f of reader.push(value)) {
            frames.push(f);
            if (f.type === 'header') tensors.push(...f.value.tensors);
            if (f.type === 'tensor') tensors[f.value.index] = f.value;
            if (f.type === 'layer') {
              const t = tensors[f.tensor]!;
              events.push(`received ${t.kind} ${f.layer}`);
              if (events.includes('received queries 0') && events.includes('received keys 0')) got();
            }
          }
        }
        const header = (frames[0] as { value: StreamHeader }).value;
        expect(header.streaming).toBe('per-layer');
        // On demand: no probabilities, the score terms instead.
        expect(tensors.filter((t) => t.kind === 'attention')).toEqual([]);
        expect(header.scores?.self).toBeDefined();
        // Queries and keys of layer 0 came while segment 0 (embeddings, layer 0's q/k) was the only one computed.
        const second = events.indexOf('computed segment 1');
        expect(second).toBeGreaterThan(events.indexOf('received queries 0'));
        expect(second).toBeGreaterThan(events.indexOf('received keys 0'));
        for (const kind of ['queries', 'keys'] as const) {
          const index = tensors.findIndex((t) => t.kind === kind && t.stack === 'self');
          const got = frames.filter((f): f is Extract<Frame, { type: 'layer' }> => f.type === 'layer' && f.tensor === index).sort((a, b) => a.layer - b.layer);
          expect(got.map((f) => f.layer)).toEqual(Array.from({ length: layers }, (_, l) => l));
          expect(maxAbsDiff(new Float64Array(got.flatMap((f) => [...f.values])), flat(input[kind] as never))).toBeLessThanOrEqual(1e-4);
        }
        expect(frames.at(-1)!.type).toBe('end');
      } finally {
        server.traces.onLayerSent = undefined;
      }
    });
  }

  it("a request naming a head gets that head's queries and its key head's keys of layer 0 first, before layer 0 is computed; not kept in the cache", async () => {
    const ref = readReference('llama');
    const input = ref.inputs.find((i) => !i.text_pair && i.queries && i.keys)!;
    const head = 3;
    const events: string[] = [];
    let got!: () => void;
    const gotPreview = new Promise<void>((r) => (got = r));
    server.traces.onLayerSent = async ({ index, preview }) => {
      events.push(preview ? 'sent preview' : `computed segment ${index}`);
      // The run goes on once the client has read the preview.
      if (preview) await gotPreview;
    };
    const text = input.text;
    const read = async (body: object): Promise<Frame[]> => {
      const res = await fetch(new URL('/api/trace', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'folder:0/llama', text, ...body }) });
      expect(res.status).toBe(200);
      const frames: Frame[] = [];
      await readAll(res, (f) => {
        frames.push(f);
        if (f.type === 'layer' && f.tensor >= PREVIEW_TENSOR_INDEX.keys) {
          events.push(`received preview ${f.tensor === PREVIEW_TENSOR_INDEX.queries ? 'queries' : 'keys'}`);
          if (f.tensor === PREVIEW_TENSOR_INDEX.keys) got();
        }
      });
      return frames;
    };
    const pause = server.traces.firstLayerPauseMs;
    server.traces.firstLayerPauseMs = 0;
    try {
      // taps.qk (sent on demand anyway) makes it another request than the first test's, not in the cache yet.
      const frames = await read({ head, taps: { qk: true } });
      const declared = frames.filter((f): f is Extract<Frame, { type: 'tensor' }> => f.type === 'tensor' && f.value.head !== undefined).map((f) => f.value);
      const n = input.input_ids.length;
      const config = llamaConfig();
      const heads = config.num_attention_heads;
      const d = config.hidden_size / heads;
      const kvHeads = config.num_key_value_heads;
      const kvHead = Math.floor((head * kvHeads) / heads);
      expect(declared).toEqual([
        { kind: 'queries', stack: 'self', dims: [1, n, d], layers: 1, index: PREVIEW_TENSOR_INDEX.queries, head },
        { kind: 'keys', stack: 'self', dims: [1, n, d], layers: 1, index: PREVIEW_TENSOR_INDEX.keys, head: kvHead },
      ]);
      // Sent (and read) before the first segment (every head of layer 0) was computed.
      const segment0 = events.indexOf('computed segment 0');
      expect(segment0).toBeGreaterThan(events.indexOf('received preview queries'));
      expect(segment0).toBeGreaterThan(events.indexOf('received preview keys'));
      expect(segment0).toBeGreaterThan(events.indexOf('sent preview'));
      expect(events.indexOf('received preview queries')).toBeGreaterThanOrEqual(0);
      const layerOf = (index: number) => frames.find((f): f is Extract<Frame, { type: 'layer' }> => f.type === 'layer' && f.tensor === index)!;
      expect(layerOf(PREVIEW_TENSOR_INDEX.queries).layer).toBe(0);
      // PyTorch's queries of that head and keys of its key head (reference.json).
      expect(maxAbsDiff(layerOf(PREVIEW_TENSOR_INDEX.queries).values, flat((input.queries as unknown as number[][][][])[0]![head] as never))).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(layerOf(PREVIEW_TENSOR_INDEX.keys).values, flat((input.keys as unknown as number[][][][])[0]![kvHead] as never))).toBeLessThanOrEqual(1e-4);
      // The stream's own tensors are as without a preview: every layer's queries and keys follow.
      const header = (frames[0] as { value: StreamHeader }).value;
      expect(header.tensors.filter((t) => t.kind === 'attention')).toEqual([]);
      expect(frames.filter((f) => f.type === 'layer' && f.tensor < PREVIEW_TENSOR_INDEX.keys)).toHaveLength(2 * (ref.attention.num_layers as number));
      // The cached answer (the same text again) has no preview.
      const again = await read({ head, taps: { qk: true } });
      expect(again.some((f) => f.type === 'tensor' && f.value.head !== undefined)).toBe(false);
      expect(again.filter((f) => f.type === 'layer')).toHaveLength(2 * (ref.attention.num_layers as number));
    } finally {
      server.traces.onLayerSent = undefined;
      server.traces.firstLayerPauseMs = pause;
    }
  });

  it('a head the model does not have is refused with 400 naming the field', async () => {
    const heads = llamaConfig().num_attention_heads;
    for (const [head, message] of [[heads, `head: an integer from 0 to ${heads - 1}`], [-1, 'head: an integer from 0 to 4095'], [1.5, 'head: an integer from 0 to 4095']] as const) {
      const res = await fetch(new URL('/api/trace', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'folder:0/llama', text: 'a short text', head }) });
      expect(res.status).toBe(400);
      const body = (await res.json()) as { error: string; field: string };
      expect(body.field).toBe('head');
      expect(body.error).toContain(message);
    }
  });

  it("the page's word that its first view is drawn (POST /api/trace/drawn naming the answer's run) ends the pause after the first segment: the run goes on to the end", async () => {
    const ref = readReference('llama');
    const input = ref.inputs.find((i) => !i.text_pair && i.queries && i.keys)!;
    const pause = server.traces.firstLayerPauseMs;
    const computed: number[] = [];
    server.traces.onLayerSent = ({ index, preview }) => void (preview || computed.push(index));
    // Far longer than the test may take: only the page's word ends it.
    server.traces.firstLayerPauseMs = 600_000;
    const post = (body: unknown) => fetch(new URL('/api/trace/drawn', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    try {
      const res = await fetch(new URL('/api/trace', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'folder:0/llama', text: `${input.text} (drawn)`, head: 1 }) });
      expect(res.status).toBe(200);
      const run = res.headers.get('x-attnscope-run');
      expect(run).toMatch(/^[0-9a-f-]{36}$/);
      let told = false;
      const types = await readAll(res, async (f) => {
        // The preview is in (its two layer frames, under the preview's indices): the page has drawn it.
        if (!told && f.type === 'layer' && f.tensor === PREVIEW_TENSOR_INDEX.keys) {
          told = true;
          expect(computed).toEqual([]);
          expect((await post({ run })).status).toBe(204);
        }
      });
      expect(told).toBe(true);
      expect(types.at(-1)).toBe('end');
      expect(computed).toEqual(Array.from({ length: computed.length }, (_, i) => i));
      expect(computed.length).toBeGreaterThan(1);
      // A run no longer under way: nothing to end, still 204; a malformed body: 400 naming the field.
      expect((await post({ run })).status).toBe(204);
      const bad = await post({ run: 5 });
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { field: string }).field).toBe('run');
    } finally {
      server.traces.onLayerSent = undefined;
      server.traces.firstLayerPauseMs = pause;
    }
  });

  it("a request ended by the server's side while its client still reads (its signal fired) ends its answer quietly: no stack printed, the stream closes", async () => {
    const ref = readReference('llama');
    const input = ref.inputs.find((i) => !i.text_pair && i.queries && i.keys)!;
    const pause = server.traces.firstLayerPauseMs;
    const open = server.traces.open;
    const printed = [vi.spyOn(console, 'error').mockImplementation(() => undefined), vi.spyOn(console, 'info').mockImplementation(() => undefined), vi.spyOn(console, 'warn').mockImplementation(() => undefined)];
    // As bench/layerwise.ts ends a trace: the signal the trace was opened with fires, the connection stays.
    const own = new AbortController();
    server.traces.open = (req, signal) => open.call(server.traces, req, AbortSignal.any([own.signal, ...(signal ? [signal] : [])]));
    server.traces.firstLayerPauseMs = 600_000;
    try {
      const res = await fetch(new URL('/api/trace', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'folder:0/llama', text: `${input.text} (ended by the server)` }) });
      expect(res.status).toBe(200);
      let layers = 0;
      const types = await readAll(res, (f) => {
        // Layer 0's q/k in, the run pausing: end the request on the server's side.
        if (f.type === 'layer' && ++layers === 2) own.abort();
      });
      expect(layers).toBe(2);
      expect(types).not.toContain('end');
      await server.traces.settled();
      expect(printed.flatMap((p) => p.mock.calls)).toEqual([]);
    } finally {
      server.traces.open = open;
      server.traces.firstLayerPauseMs = pause;
      for (const p of printed) p.mockRestore();
    }
  });

  it('the pause after the first segment (the page drawing layer 0) ends at once when the request leaves: no second segment runs', async () => {
    const ref = readReference('llama');
    const input = ref.inputs.find((i) => !i.text_pair && i.queries && i.keys)!;
    const computed: number[] = [];
    const pause = server.traces.firstLayerPauseMs;
    // A client leaving is an ordinary event: nothing printed (no stack, no internal error).
    const printed = [vi.spyOn(console, 'error').mockImplementation(() => undefined), vi.spyOn(console, 'info').mockImplementation(() => undefined), vi.spyOn(console, 'warn').mockImplementation(() => undefined)];
    server.traces.onLayerSent = ({ index }) => void computed.push(index);
    // Far longer than the test may take: only the request leaving ends it.
    server.traces.firstLayerPauseMs = 600_000;
    const controller = new AbortController();
    try {
      const res = await fetch(new URL('/api/trace', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'folder:0/llama', text: `${input.text} (not cached)` }), signal: controller.signal });
      expect(res.status).toBe(200);
      const reader = new FrameReader();
      const tensors: StreamTensor[] = [];
      const received = new Set<string>();
      const body = res.body!.getReader();
      while (!(received.has('queries 0') && received.has('keys 0'))) {
        const { done, value } = await body.read();
        if (done) throw new Error('the stream ended before layer 0 came');
        for (const f of reader.push(value)) {
          if (f.type === 'header') tensors.push(...f.value.tensors);
          if (f.type === 'tensor') tensors[f.value.index] = f.value;
          if (f.type === 'layer') received.add(`${tensors[f.tensor]!.kind} ${f.layer}`);
        }
      }
      // Layer 0's q/k are in and the run is pausing: leave.
      controller.abort();
      await server.traces.settled();
      expect(computed).toEqual([0]);
      // The server's side of the connection has seen it close (its request signal, the stream's end).
      await new Promise((r) => setTimeout(r, 50));
      expect(printed.flatMap((p) => p.mock.calls)).toEqual([]);
    } finally {
      for (const p of printed) p.mockRestore();
      server.traces.onLayerSent = undefined;
      server.traces.firstLayerPauseMs = pause;
    }
  });
});

describe('serve: POST /api/load opens the head preview session before any text', () => {
  it("the session is kept under the preview's graph, not the plan's taps (which hold the input's band count): a trace asking other taps opens no preview session of its own, and its preview is PyTorch's", async () => {
    const ref = readReference('llama');
    const input = ref.inputs.find((i) => !i.text_pair && i.queries && i.keys)!;
    const maxTokens = 4096;
    // A server of its own: the model is not loaded yet, no session open.
    const own = await startServer({ port: 0, folders: [FIXTURES], hfCache: false, env: { HF_HUB_OFFLINE: '1' }, graphCache: false, bundle: { js: '/* app */', css: '/* app */' }, limits: { maxTokens } });
    own.traces.onDemandAbove = 0;
    own.traces.firstLayerPauseMs = 0;
    // Every session the models open, and whether its graph is a head preview (its output named PREVIEW_QUERIES).
    const opened: boolean[] = [];
    const openBuilt = Model.prototype.openBuilt;
    const spy = vi.spyOn(Model.prototype, 'openBuilt').mockImplementation(function (this: Model, built, options) {
      opened.push(Buffer.from(built.model).includes(PREVIEW_QUERIES));
      return openBuilt.call(this, built, options);
    });
    const previews = () => opened.filter((p) => p).length;
    try {
      const load = await fetch(new URL('/api/load', own.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'folder:0/llama' }) });
      expect(load.status).toBe(200);
      await load.arrayBuffer();
      await own.traces.settled();
      // Opened in the background after the load, before any trace: the preview's session only.
      expect(previews()).toBe(1);
      expect(opened).toEqual([true]);
      // The trace asks for predictions (as the app does: taps.topK), the warm-up did not: other taps, another plan.
      const lease = await own.pool.acquire(await own.catalog.locate('folder:0/llama'));
      const n = input.input_ids.length;
      const taps = async (topK: number) => tapsKey((await lease.model.prepareRun(null, { ids: Array.from({ length: n }, () => 0), qk: true, attention: 'auto', onDemandAbove: 0, topK })).taps);
      expect(await taps(5)).not.toBe(await taps(0));
      lease.release();
      const head = 2;
      const res = await fetch(new URL('/api/trace', own.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'folder:0/llama', text: input.text, head, taps: { topK: 5 } }) });
      expect(res.status).toBe(200);
      const frames: Frame[] = [];
      const types = await readAll(res, (f) => void frames.push(f));
      expect(types.at(-1)).toBe('end');
      // The trace's segments opened sessions, but no second preview session.
      expect(opened.length).toBeGreaterThan(1);
      expect(previews()).toBe(1);
      const layerOf = (index: number) => frames.find((f): f is Extract<Frame, { type: 'layer' }> => f.type === 'layer' && f.tensor === index)!;
      const config = llamaConfig();
      const kvHead = Math.floor((head * config.num_key_value_heads) / config.num_attention_heads);
      expect(maxAbsDiff(layerOf(PREVIEW_TENSOR_INDEX.queries).values, flat((input.queries as unknown as number[][][][])[0]![head] as never))).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff(layerOf(PREVIEW_TENSOR_INDEX.keys).values, flat((input.keys as unknown as number[][][][])[0]![kvHead] as never))).toBeLessThanOrEqual(1e-4);
    } finally {
      spy.mockRestore();
      await own.close();
    }
  });
});
