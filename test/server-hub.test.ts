/**
 * `attnscope serve` with a Hub id typed in: downloaded through a local stand-in for the Hub into
 * the Hugging Face cache (POST /api/load streams progress, then the trace equals PyTorch's), then
 * offered as a cached model; a repository the Hub does not have is refused in one line.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FrameReader, type ApiError, type Frame, type ModelsResponse, type StreamHeader } from '../src/server/protocol.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { fixtureFiles, startFakeHub, type FakeHub } from './helpers/fake-hub.js';
import { FIXTURES, flat, maxAbsDiff, readReference } from './helpers/reference.js';

let tmp: string;
let hub: FakeHub;
let server: RunningServer;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'attnscope-serve-hub-'));
  hub = await startFakeHub({ 'test-org/tiny-bert': { files: await fixtureFiles(join(FIXTURES, 'bert')) } });
  server = await startServer({
    port: 0,
    folders: [],
    embedded: false,
    graphCache: false,
    bundle: { js: '', css: '' },
    env: { HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(tmp, 'hub'), HF_HOME: join(tmp, 'hf-home') },
  });
});

afterAll(async () => {
  await server?.close();
  await hub?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

async function post(path: string, body: unknown): Promise<Response> {
  return fetch(new URL(path, server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

async function frames(res: Response): Promise<Frame[]> {
  return new FrameReader().push(new Uint8Array(await res.arrayBuffer()));
}

async function models(): Promise<ModelsResponse> {
  return (await (await fetch(new URL('/api/models', server.url))).json()) as ModelsResponse;
}

describe('serve: Hub ids', () => {
  it('downloads a Hub id into the Hugging Face cache with progress, traces it as PyTorch does, then lists it', async () => {
    const before = await models();
    expect(before.hubDownloads).toBe(true);
    expect(before.models.map((m) => m.id)).not.toContain('test-org/tiny-bert');

    const load = await post('/api/load', { model: 'test-org/tiny-bert' });
    expect(load.status).toBe(200);
    const fs = await frames(load);
    expect(fs.at(-1)!.type).toBe('end');
    const progress = fs.filter((f): f is Extract<Frame, { type: 'progress' }> => f.type === 'progress').map((f) => f.value.message);
    expect(progress.some((m) => /test-org\/tiny-bert/.test(m))).toBe(true);
    // The first request hears the load from its first message on.
    expect(progress[0]).toBe('opening test-org/tiny-bert');
    expect(hub.requests.some((r) => r.path.includes('/test-org/tiny-bert/resolve/main/config.json'))).toBe(true);
    expect(existsSync(join(tmp, 'hub', 'models--test-org--tiny-bert'))).toBe(true);

    const ref = readReference('bert').inputs.find((i) => i.id === 'short')!;
    const trace = await frames(await post('/api/trace', { model: 'test-org/tiny-bert', text: ref.text }));
    const header = (trace[0] as { value: StreamHeader }).value;
    expect(header.model.name).toBe('test-org/tiny-bert');
    expect(header.revision).toMatch(/^[0-9a-f]{40}$/);
    const layers = trace.filter((f): f is Extract<Frame, { type: 'layer' }> => f.type === 'layer').sort((a, b) => a.layer - b.layer);
    expect(maxAbsDiff(new Float64Array(layers.flatMap((l) => [...l.values])), flat(ref.attentions!))).toBeLessThanOrEqual(1e-5);

    await expect
      .poll(async () => (await models()).models.find((m) => m.id === 'test-org/tiny-bert')?.origin, { timeout: 5000, interval: 300 })
      .toBe('hf-cache');
  });

  it('a Hub model over the memory budget is refused once its weights are downloaded (the budget named), and not kept loaded', async () => {
    const small = await startServer({
      port: 0,
      folders: [],
      embedded: false,
      graphCache: false,
      bundle: { js: '', css: '' },
      memoryBudgetBytes: 1000,
      env: { HF_ENDPOINT: hub.url, HF_HUB_CACHE: join(tmp, 'hub-small'), HF_HOME: join(tmp, 'hf-home-small') },
    });
    try {
      const load = await frames(await fetch(new URL('/api/load', small.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'test-org/tiny-bert' }) }));
      const error = load.find((f): f is Extract<Frame, { type: 'error' }> => f.type === 'error');
      expect(error?.value.field).toBe('model');
      expect(error?.value.error).toMatch(/^model: test-org\/tiny-bert needs about \d+ MB, more than the server's memory budget \(--memory-budget 0\)$/);
      expect(small.pool.isLoaded('test-org/tiny-bert')).toBe(false);
      expect(small.pool.usedBytes).toBe(0);
    } finally {
      await small.close();
    }
  });

  it('a repository the Hub does not have is refused in one line naming the model', async () => {
    const load = await frames(await post('/api/load', { model: 'test-org/missing' }));
    const error = load.find((f): f is Extract<Frame, { type: 'error' }> => f.type === 'error');
    expect(error?.value.field).toBe('model');
    expect(error?.value.error).toMatch(/test-org\/missing/);
    const res = await post('/api/trace', { model: 'test-org/missing', text: 'hi' });
    expect(res.status).toBe(400);
    const err = (await res.json()) as ApiError;
    expect(err.field).toBe('model');
    expect(err.error).toMatch(/^model: .*test-org\/missing/);
    expect(err.error).not.toMatch(/\n/);
  });
});
