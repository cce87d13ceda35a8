/**
 * The API of `attnscope serve` against a real HTTP server on 127.0.0.1 (ephemeral port): traces
 * equal to PyTorch's (the fixtures' reference.json), the binary stream's frames, the result cache,
 * limits with one-line JSON errors naming the field, path checks (nothing outside the --models
 * folders is offered or read, whatever the request says), Host/Origin checks, the CSP, shared
 * loads, the memory budget, and many concurrent clients.
 */
import { cpSync, mkdirSync, mkdtempSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FrameReader, type ApiError, type Frame, type ModelsResponse, type StreamHeader, type StreamTensor } from '../src/server/protocol.js';
import type { Prediction } from '../src/core/trace.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { FIXTURES, flat, maxAbsDiff, readReference } from './helpers/reference.js';

const BUNDLE = { js: '/* app */', css: '/* app */' };
const SECRET = 'attnscope-test-secret-do-not-serve';

let tmp: string;
let models: string;
let hubCache: string;
let server: RunningServer;

function env(): Record<string, string> {
  return { HF_HUB_OFFLINE: '1', HF_HUB_CACHE: hubCache, HF_HOME: join(tmp, 'hf-home') };
}

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'attnscope-serve-'));
  models = join(tmp, 'models');
  hubCache = join(tmp, 'hub');
  mkdirSync(models);
  mkdirSync(hubCache);
  cpSync(join(FIXTURES, 'bert'), join(models, 'bert'), { recursive: true });
  mkdirSync(join(models, 'nested', 'deeper'), { recursive: true });
  cpSync(join(FIXTURES, 'gpt2'), join(models, 'nested', 'deeper', 'gpt2'), { recursive: true });
  // Outside the folder: a checkpoint and a secret file, reachable only through symlinks.
  const outside = join(tmp, 'outside');
  cpSync(join(FIXTURES, 'bert'), join(outside, 'ckpt'), { recursive: true });
  writeFileSync(join(outside, 'secret.txt'), SECRET);
  symlinkSync(join(outside, 'ckpt'), join(models, 'linked-out'));
  symlinkSync(outside, join(models, 'linked-parent'));
  mkdirSync(join(models, 'config-out'));
  symlinkSync(join(outside, 'ckpt', 'config.json'), join(models, 'config-out', 'config.json'));
  server = await startServer({ port: 0, folders: [models], hfCache: true, env: env(), graphCache: false, bundle: BUNDLE, limits: { maxTokens: 40, maxTextChars: 2000, maxBodyBytes: 8192 } });
});

afterAll(async () => {
  await server?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

async function post(path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(new URL(path, server.url), {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

async function frames(res: Response): Promise<Frame[]> {
  const reader = new FrameReader();
  const out = reader.push(new Uint8Array(await res.arrayBuffer()));
  expect(reader.pending).toBe(0);
  return out;
}

/** The answer's predictions: in its header (after-run streaming) or their own frame (per-layer). */
function predictionsOf(fs: Frame[]): Prediction[] | undefined {
  const frame = fs.find((f): f is Extract<Frame, { type: 'predictions' }> => f.type === 'predictions');
  return frame ? frame.value.predictions : (fs[0] as { value: StreamHeader }).value.predictions;
}

/** The header's tensors and those declared later by tensor frames, by index. */
function tensorsOf(fs: Frame[]): StreamTensor[] {
  const tensors = [...(fs[0] as { value: StreamHeader }).value.tensors];
  for (const f of fs) if (f.type === 'tensor') tensors[f.value.index] = f.value;
  return tensors;
}

async function refusal(res: Response): Promise<ApiError> {
  expect(res.headers.get('content-type')).toMatch(/^application\/json/);
  const body = (await res.json()) as ApiError;
  expect(body.error).not.toMatch(/\n/);
  return body;
}

describe('serve: models and pages', () => {
  it('lists the embedded model and the checkpoints inside --models, never one reached through a symlink out', async () => {
    const res = await fetch(new URL('/api/models', server.url));
    expect(res.status).toBe(200);
    const body = (await res.json()) as ModelsResponse;
    const ids = body.models.map((m) => m.id).sort();
    expect(ids).toEqual(['default', 'folder:0/bert', 'folder:0/nested/deeper/gpt2']);
    expect(body.models.find((m) => m.id === 'folder:0/bert')!.modelType).toBe('bert');
    expect(body.hubDownloads).toBe(false);
    expect(body.limits.maxTokens).toBe(40);
  });

  it('sends a strict Content-Security-Policy and no-sniff on the page and the API', async () => {
    for (const path of ['/', '/api/models', '/nope']) {
      const res = await fetch(new URL(path, server.url));
      const csp = res.headers.get('content-security-policy') ?? '';
      expect(csp).toContain("default-src 'none'");
      expect(csp).toContain("script-src 'self'");
      expect(csp).not.toMatch(/script-src[^;]*unsafe-inline/);
      expect(csp).not.toMatch(/https?:/);
      expect(csp).toContain("frame-ancestors 'none'");
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    }
    const page = await (await fetch(server.url)).text();
    // The page runs no inline script: only /app.js, named by its content's digest, and /early.js
    // (which starts the long views' workers on /app.js before it has run), named alike.
    const script = /<script defer src="(\/app\.js\?v=([0-9a-f]{16}))"><\/script>/.exec(page);
    expect(script).not.toBeNull();
    expect(page.match(/<script/g)!.length).toBe(2);
    expect(page).toContain(`<script async src="/early.js?v=${script![2]!}" data-app="${script![1]!}"></script>`);
    const early = await fetch(new URL(`/early.js?v=${script![2]!}`, server.url));
    expect(early.headers.get('content-type')).toMatch(/^text\/javascript/);
    expect(early.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    expect(await early.text()).toContain("op: 'warm'");
    // That URL is cached for good (the page's workers load it again from the cache); another or none is revalidated.
    const named = await fetch(new URL(script![1]!, server.url));
    expect(named.headers.get('cache-control')).toBe('public, max-age=31536000, immutable');
    const bare = await fetch(new URL('/app.js', server.url));
    expect(bare.headers.get('cache-control')).toBe('no-cache');
    expect(await bare.text()).toBe(await named.text());
    expect((await fetch(new URL(`/app.js?v=${'0'.repeat(16)}`, server.url))).headers.get('cache-control')).toBe('no-cache');
    expect(page).toContain(`href="/app.css?v=${script![2]!}"`);
  });

  it('refuses requests for another host name (DNS rebinding) and posts from another origin', async () => {
    const { request } = await import('node:http');
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(new URL('/api/models', server.url), { headers: { host: 'attacker.example' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(403);
    for (const origin of ['http://attacker.example', 'null', `http://localhost:1`]) {
      const res = await post('/api/trace', { model: 'default', text: 'hi' }, { origin });
      expect(res.status).toBe(403);
      expect((await refusal(res)).field).toBe('origin');
    }
    // The server's own page may.
    const own = await post('/api/trace', { model: 'default', text: 'hi' }, { origin: new URL(server.url).origin });
    expect(own.status).toBe(200);
    await own.arrayBuffer();
  });
});

describe('serve: traces', () => {
  it('streams a trace equal to PyTorch: header, one frame per layer, end', async () => {
    const ref = readReference('bert').inputs.find((i) => i.id === 'short')!;
    const res = await post('/api/trace', { model: 'folder:0/bert', text: ref.text, taps: { qk: true } });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('application/vnd.attnscope.frames');
    const fs = await frames(res);
    expect(fs[0]!.type).toBe('header');
    expect(fs.at(-1)!.type).toBe('end');
    const header = (fs[0] as { value: StreamHeader }).value;
    expect(header.tokens.map((t) => t.id)).toEqual(ref.input_ids);
    // An encoder runs layer by layer: each layer is sent as it is computed.
    expect(header.streaming).toBe('per-layer');
    const tensors = tensorsOf(fs);
    const attention = tensors.findIndex((t) => t.kind === 'attention' && t.stack === 'self');
    const layers = fs.filter((f): f is Extract<Frame, { type: 'layer' }> => f.type === 'layer' && f.tensor === attention).sort((a, b) => a.layer - b.layer);
    expect(layers.map((l) => l.layer)).toEqual([0, 1]);
    const got = new Float64Array(layers.flatMap((l) => [...l.values]));
    expect(maxAbsDiff(got, flat(ref.attentions!))).toBeLessThanOrEqual(1e-5);
    // Layer by layer: layer 0's attention, queries and keys, then layer 1's; in a layer, attention first.
    const order = fs.flatMap((f) => (f.type === 'layer' ? [`${f.layer}:${tensors[f.tensor]!.kind}`] : []));
    expect(order).toEqual(['0:attention', '0:queries', '0:keys', '1:attention', '1:queries', '1:keys']);
    const queries = tensors.findIndex((t) => t.kind === 'queries' && t.stack === 'self');
    const q = fs.filter((f): f is Extract<Frame, { type: 'layer' }> => f.type === 'layer' && f.tensor === queries).flatMap((l) => [...l.values]);
    expect(maxAbsDiff(q, flat(ref.queries!))).toBeLessThanOrEqual(1e-4);
  });

  it('answers a repeated request from the cache without running the model again', async () => {
    const body = { model: 'folder:0/bert', text: 'the cache keeps this one', taps: { qk: false } };
    const first = await post('/api/trace', body);
    expect(first.headers.get('x-attnscope-cache')).toBe('miss');
    const a = new Uint8Array(await first.arrayBuffer());
    const runs = server.traces.runs;
    const second = await post('/api/trace', body);
    expect(second.headers.get('x-attnscope-cache')).toBe('hit');
    const b = await frames(second);
    expect(server.traces.runs).toBe(runs);
    expect((b[0] as { value: StreamHeader }).value.cached).toBe(true);
    const fa = new FrameReader().push(a).filter((f) => f.type === 'layer');
    const fb = b.filter((f) => f.type === 'layer');
    expect(fb).toEqual(fa);
    // Other taps are another entry.
    const third = await post('/api/trace', { ...body, taps: { qk: true } });
    expect(third.headers.get('x-attnscope-cache')).toBe('miss');
    await third.arrayBuffer();
  });

  it('gives a masked LM predictions only where the text has a mask, and a causal LM at every position', async () => {
    const noMask = await frames(await post('/api/trace', { model: 'folder:0/bert', text: 'no mask here', taps: { topK: 3 } }));
    expect(predictionsOf(noMask)).toBeUndefined();
    const withMask = await frames(await post('/api/trace', { model: 'folder:0/bert', text: 'the cat [MASK] on the mat', taps: { topK: 3 } }));
    const preds = predictionsOf(withMask)!;
    expect(preds).toHaveLength(1);
    expect(preds[0]!.candidates).toHaveLength(3);
    expect(preds[0]!.kind).toBe('masked');
    const causal = await frames(await post('/api/trace', { model: 'folder:0/nested/deeper/gpt2', text: 'every position', taps: { topK: 2 } }));
    const header = (causal[0] as { value: StreamHeader }).value;
    expect(predictionsOf(causal)!.map((p) => p.position)).toEqual(header.tokens.map((_, i) => i));
  });
});

describe('serve: limits', () => {
  const cases: [string, unknown, number, string, RegExp][] = [
    ['text too long', { model: 'default', text: 'x'.repeat(2001) }, 413, 'text', /at most 2000/],
    ['text not a string', { model: 'default', text: 5 }, 400, 'text', /a string/],
    ['model missing', { text: 'hi' }, 400, 'model', /a string/],
    ['unknown field', { model: 'default', text: 'hi', path: '/etc' }, 400, 'path', /unknown field/],
    ['unknown tap', { model: 'default', text: 'hi', taps: { hidden: true } }, 400, 'taps.hidden', /unknown tap/],
    ['topK out of range', { model: 'default', text: 'hi', taps: { topK: 21 } }, 400, 'taps.topK', /0 to 20/],
    ['topK not an integer', { model: 'default', text: 'hi', taps: { topK: 1.5 } }, 400, 'taps.topK', /integer/],
    ['body not an object', [1, 2], 400, undefined as unknown as string, /JSON object/],
    ['maxNewTokens out of range', { model: 'default', text: 'hi', maxNewTokens: 129 }, 400, 'maxNewTokens', /an integer from 1 to 128/],
    ['maxNewTokens for a model without a decoder', { model: 'folder:0/bert', text: 'hi', maxNewTokens: 3 }, 400, 'maxNewTokens', /only for an encoder-decoder model .* an encoder\)/],
  ];
  for (const [name, body, status, field, message] of cases) {
    it(`refuses: ${name}`, async () => {
      const res = await post('/api/trace', body);
      expect(res.status).toBe(status);
      const err = await refusal(res);
      if (field) expect(err.field).toBe(field);
      expect(err.error).toMatch(message);
    });
  }

  it('refuses a body over the limit, bad JSON and another content type', async () => {
    const big = await post('/api/trace', JSON.stringify({ model: 'default', text: 'y'.repeat(9000) }));
    expect(big.status).toBe(413);
    expect((await refusal(big)).field).toBe('body');
    const bad = await post('/api/trace', '{"model": ');
    expect(bad.status).toBe(400);
    expect((await refusal(bad)).error).toMatch(/not valid JSON/);
    const form = await post('/api/trace', 'model=default', { 'content-type': 'application/x-www-form-urlencoded' });
    expect(form.status).toBe(415);
  });

  it('refuses more tokens than --max-tokens, naming the count and the limit', async () => {
    const text = Array.from({ length: 60 }, (_, i) => `w${i}`).join(' ');
    const res = await post('/api/trace', { model: 'folder:0/bert', text });
    expect(res.status).toBe(413);
    const err = await refusal(res);
    expect(err.field).toBe('text');
    expect(err.error).toMatch(/^text: \d+ tokens; at most 40 allowed/);
  });

  it('refuses a decoder text for a model without a decoder', async () => {
    const res = await post('/api/trace', { model: 'folder:0/bert', text: 'hi', decoderText: 'there' });
    expect(res.status).toBe(400);
    expect((await refusal(res)).field).toBe('decoderText');
  });
});

describe('serve: no path outside the model folders', () => {
  const refused = [
    '../../etc',
    '../../../../../../etc/passwd',
    '/etc',
    '/etc/passwd',
    'folder:0/../../etc',
    'folder:0/../outside/ckpt',
    'folder:0/linked-out',
    'folder:0/linked-parent/ckpt',
    'folder:0/config-out',
    'folder:0/%2e%2e%2f%2e%2e%2fetc',
    '%2e%2e%2f%2e%2e%2fetc%2fpasswd',
    '..%2F..%2Fetc',
    'folder:0/bert\u0000',
    'folder:0/bert\u0000/../../etc',
    '..\\..\\windows',
    'C:\\Windows\\system32',
    '~/.ssh',
    'file:///etc/passwd',
    'folder:1/bert',
    'folder:0',
    'folder:0/',
    'folder:0/./bert',
    'folder:0/nested/../bert',
  ];
  for (const model of refused) {
    it(`refuses model ${JSON.stringify(model)} with one line naming the field`, async () => {
      for (const path of ['/api/trace', '/api/load']) {
        const res = await post(path, { model, text: 'hi' });
        expect(res.status).toBeGreaterThanOrEqual(400);
        expect(res.status).toBeLessThan(500);
        const err = await refusal(res);
        expect(err.field).toBe('model');
        expect(err.error).not.toContain(SECRET);
      }
    });
  }

  it('a symlinked checkpoint out of the folder is not loaded even though it is a valid checkpoint', async () => {
    // What the symlink points to is a real checkpoint: only the folder rule keeps it out.
    expect(statSync(join(models, 'linked-out', 'config.json')).isFile()).toBe(true);
    expect(server.pool.isLoaded('folder:0/linked-out')).toBe(false);
  });

  it('a Hub id is looked up only in the Hugging Face cache (offline here): refused with a clear message', async () => {
    const res = await post('/api/trace', { model: 'outside/ckpt', text: 'hi' });
    expect(res.status).toBe(400);
    const err = await refusal(res);
    expect(err.field).toBe('model');
    expect(err.error).toMatch(/not in the Hugging Face cache and the server is offline/);
  });

  it('URL paths with encoded dots, slashes and null bytes find nothing', async () => {
    const { request } = await import('node:http');
    const raw = (path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const u = new URL(server.url);
        const req = request({ host: u.hostname, port: u.port, path, headers: { host: u.host } }, (res) => {
          let body = '';
          res.setEncoding('utf8');
          res.on('data', (c: string) => (body += c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        });
        req.on('error', reject);
        req.end();
      });
    for (const path of ['/../../outside/secret.txt', '/%2e%2e/%2e%2e/outside/secret.txt', '/..%2f..%2foutside%2fsecret.txt', '/app.js%00', '/app.js/..%2f..%2fsecret.txt', '/%2e%2e%2f%2e%2e%2fetc%2fpasswd', '/api/models/..%2f..%2fetc']) {
      const r = await raw(path);
      expect(r.status === 404 || r.status === 400, path).toBe(true);
      expect(r.body).not.toContain(SECRET);
      expect(r.body).not.toContain('root:');
    }
  });
});

describe('serve: loads and memory', () => {
  it('concurrent requests for a model not yet loaded share one load', async () => {
    const fresh = await startServer({ port: 0, folders: [models], hfCache: false, embedded: false, env: env(), graphCache: false, bundle: BUNDLE });
    try {
      const id = 'folder:0/nested/deeper/gpt2';
      expect(fresh.pool.isLoaded(id)).toBe(false);
      const answers = await Promise.all(
        Array.from({ length: 6 }, async (_, i) => {
          const r = await fetch(new URL(i === 5 ? '/api/load' : '/api/trace', fresh.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: id, text: `shared load ${i % 2}` }) });
          return { status: r.status, frames: await frames(r) };
        }),
      );
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 200]);
      expect(fresh.pool.loads).toBe(1);
      for (const a of answers) expect(a.frames.at(-1)!.type).toBe('end');
      // Two distinct texts: identical requests share a run (or hit the cache).
      expect(fresh.traces.runs).toBe(2);
    } finally {
      await fresh.close();
    }
  });

  it('keeps loaded models within the memory budget, unloading the least recently used', async () => {
    const size = (dir: string) => statSync(join(dir, 'model.safetensors')).size;
    // Room for the larger of the two (counted twice their weight files), not for both.
    const budget = Math.max(size(join(FIXTURES, 'bert')), size(join(FIXTURES, 'gpt2'))) * 2 + 1000;
    const small = await startServer({ port: 0, folders: [models], hfCache: false, embedded: false, env: env(), graphCache: false, bundle: BUNDLE, memoryBudgetBytes: budget });
    try {
      const trace = async (model: string) => {
        const r = await fetch(new URL('/api/trace', small.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, text: 'budget' }) });
        expect(r.status).toBe(200);
        await r.arrayBuffer();
      };
      await trace('folder:0/bert');
      expect(small.pool.isLoaded('folder:0/bert')).toBe(true);
      await trace('folder:0/nested/deeper/gpt2');
      expect(small.pool.isLoaded('folder:0/nested/deeper/gpt2')).toBe(true);
      expect(small.pool.isLoaded('folder:0/bert')).toBe(false);
      expect(small.pool.unloads).toBe(1);
      expect(small.pool.usedBytes).toBeLessThanOrEqual(budget);
      // Loaded again on demand.
      await trace('folder:0/bert');
      expect(small.pool.isLoaded('folder:0/bert')).toBe(true);
    } finally {
      await small.close();
    }
  });

  it('a model larger than the whole budget is refused with the budget named', async () => {
    const tiny = await startServer({ port: 0, folders: [models], hfCache: false, embedded: false, env: env(), graphCache: false, bundle: BUNDLE, memoryBudgetBytes: 1000 });
    try {
      const r = await fetch(new URL('/api/trace', tiny.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'folder:0/bert', text: 'x' }) });
      expect(r.status).toBe(400);
      const err = (await r.json()) as ApiError;
      expect(err.field).toBe('model');
      expect(err.error).toMatch(/memory budget \(--memory-budget/);
    } finally {
      await tiny.close();
    }
  });

  it('50 concurrent clients on loopback: every answer complete, no 5xx, the server still answers', async () => {
    const texts = Array.from({ length: 10 }, (_, i) => `client text number ${i}`);
    const answers = await Promise.all(
      Array.from({ length: 50 }, async (_, i) => {
        const r = await post('/api/trace', { model: 'folder:0/bert', text: texts[i % texts.length], taps: { qk: i % 3 === 0 } });
        const fs = r.status === 200 ? await frames(r) : [];
        return { status: r.status, end: fs.at(-1)?.type };
      }),
    );
    expect(answers.filter((a) => a.status >= 500)).toEqual([]);
    expect(answers.every((a) => a.status === 200 && a.end === 'end')).toBe(true);
    expect((await fetch(new URL('/api/models', server.url))).status).toBe(200);
  });

  it('a client that goes away mid-request leaves the server answering', async () => {
    const controller = new AbortController();
    const pending = post('/api/trace', { model: 'default', text: 'going away' }).catch(() => undefined);
    void pending;
    const res = fetch(new URL('/api/trace', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'default', text: 'cancelled request' }), signal: controller.signal }).catch((e: unknown) => e);
    controller.abort();
    expect(await res).toBeInstanceOf(Error);
    await pending;
    const after = await post('/api/trace', { model: 'default', text: 'still here' });
    expect(after.status).toBe(200);
    expect((await frames(after)).at(-1)!.type).toBe('end');
  });
});
