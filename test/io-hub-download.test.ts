import { promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import { resolveModelSource, type ModelSourceOptions } from '../src/io/model-source.js';
import { countProgress, createProgress, PROGRESS_MIN_BYTES, wantsProgress } from '../src/io/progress.js';
import {
  fakeCommit,
  fixtureFiles,
  gitBlobSha1,
  sha256,
  startFakeHub,
  type FakeHub,
} from './helpers/fake-hub.js';

const BERT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'bert');
const ID = 'test-org/tiny-bert';
const COMMIT = fakeCommit(ID);
const TOKEN = 'hf_test_secret';

let hub: FakeHub;
let files: Map<string, Buffer>;
let cacheDir: string;

beforeAll(async () => {
  files = await fixtureFiles(BERT);
  const nested = new Map(files).set('1_Pooling/config.json', Buffer.from('{"pooling_mode_mean_tokens": true}\n'));
  const big = new Map(files).set('model.safetensors', Buffer.alloc(PROGRESS_MIN_BYTES + 4096, 7));
  hub = await startFakeHub(
    {
      [ID]: { files: nested },
      'test-org/gated-bert': { files, token: TOKEN },
      'test-org/broken-bert': { files, drop: ['model.safetensors', 'tokenizer.json'] },
      'test-org/corrupt-bert': { files, corrupt: ['model.safetensors'] },
      'test-org/slow-bert': { files, hang: ['model.safetensors'] },
      'test-org/big-bert': { files: big },
      'single-name-bert': { files },
      'test-org/moon-bert': { files, resolveCache: true },
    },
    { 'old-org/tiny-bert': ID },
  );
});
afterAll(async () => hub?.close());

beforeEach(async () => {
  cacheDir = await fs.mkdtemp(path.join(os.tmpdir(), 'attnscope-hub-'));
  hub.requests.length = 0;
});
afterEach(async () => fs.rm(cacheDir, { recursive: true, force: true }));

function options(extra: ModelSourceOptions = {}): ModelSourceOptions {
  return { cacheDir, endpoint: hub.url, env: { HF_HOME: cacheDir }, progress: false, ...extra };
}

/** sha256 of a file on disk, and of a fixture file, to compare contents cheaply. */
const digestOf = async (file: string | undefined) => sha256(await fs.readFile(file!));
const fixtureDigest = (name: string) => sha256(files.get(name)!);

const repoDir = (id = ID) => path.join(cacheDir, `models--${id.replaceAll('/', '--')}`);

async function listFiles(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => !e.isDirectory())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}

describe('downloading from the Hub into the Hugging Face cache', () => {
  it('lays files out exactly as huggingface_hub does', async () => {
    const model = await resolveModelSource(ID, options());
    expect(model.name).toBe(ID);
    expect(model.dir).toBe(path.join(repoDir(), 'snapshots', COMMIT));

    const root = repoDir();
    expect(await fs.readFile(path.join(root, 'refs', 'main'), 'utf8')).toBe(COMMIT);

    // A regular file: blob named by its git sha1 ETag.
    const config = await model.path('config.json');
    expect(config).toBe(path.join(root, 'snapshots', COMMIT, 'config.json'));
    const configSha = gitBlobSha1(files.get('config.json')!);
    expect(await fs.readlink(config!)).toBe(path.join('..', '..', 'blobs', configSha));
    expect(await digestOf(path.join(root, 'blobs', configSha))).toBe(fixtureDigest('config.json'));

    // An LFS file: the 302's X-Linked-Etag (sha256) names the blob, not the CDN's ETag.
    const weights = await model.path('model.safetensors');
    const weightsSha = sha256(files.get('model.safetensors')!);
    expect(await fs.readlink(weights!)).toBe(path.join('..', '..', 'blobs', weightsSha));
    expect(await digestOf(weights)).toBe(fixtureDigest('model.safetensors'));

    // A file in a subfolder links one level further up.
    const pooling = await model.path('1_Pooling/config.json');
    expect(await fs.readlink(pooling!)).toMatch(/^\.\.\/\.\.\/\.\.\/blobs\/[0-9a-f]{40}$/);

    expect(await listFiles(root)).toEqual(
      [
        `blobs/${configSha}`,
        `blobs/${weightsSha}`,
        `blobs/${gitBlobSha1(Buffer.from('{"pooling_mode_mean_tokens": true}\n'))}`,
        'refs/main',
        `snapshots/${COMMIT}/1_Pooling/config.json`,
        `snapshots/${COMMIT}/config.json`,
        `snapshots/${COMMIT}/model.safetensors`,
      ].sort(),
    );
    // Files after config.json are fetched at the pinned commit, the LFS one through the CDN.
    expect(hub.requests.map((r) => r.path)).toEqual([
      `/${ID}/resolve/main/config.json`,
      `/${ID}/resolve/${COMMIT}/model.safetensors`,
      `/cdn/${ID}/${weightsSha}`,
      `/${ID}/resolve/${COMMIT}/1_Pooling/config.json`,
    ]);
  });

  it('uses no network the second time', async () => {
    const first = await resolveModelSource(ID, options());
    await first.path('model.safetensors');
    await first.path('tokenizer.json');
    const before = hub.requests.length;

    const second = await resolveModelSource(ID, options());
    expect(await second.path('config.json')).toBe(path.join(second.dir, 'config.json'));
    expect(await digestOf(await second.path('model.safetensors'))).toBe(fixtureDigest('model.safetensors'));
    expect(await second.path('tokenizer.json')).toBeDefined();
    expect(hub.requests.length).toBe(before);

    // A file not yet in the snapshot is still downloaded when online.
    expect(await second.path('vocab.txt')).toBeDefined();
    expect(hub.requests.length).toBe(before + 1);
  });

  it('records files the Hub does not have in .no_exist, and does not ask again', async () => {
    const model = await resolveModelSource(ID, options());
    expect(await model.path('pytorch_model.bin')).toBeUndefined();
    expect(await fs.stat(path.join(repoDir(), '.no_exist', COMMIT, 'pytorch_model.bin'))).toBeTruthy();
    const before = hub.requests.length;
    const again = await resolveModelSource(ID, options());
    expect(await again.path('pytorch_model.bin')).toBeUndefined();
    expect(hub.requests.length).toBe(before);
  });

  it('downloads a file once when it is asked for concurrently', async () => {
    const model = await resolveModelSource(ID, options());
    const paths = await Promise.all([model.path('model.safetensors'), model.path('model.safetensors')]);
    expect(paths[0]).toBe(paths[1]);
    expect(hub.requests.filter((r) => r.path.startsWith('/cdn/')).length).toBe(1);
  });

  it('resolves a pinned @commit without writing a ref', async () => {
    const model = await resolveModelSource(`${ID}@${COMMIT}`, options());
    expect(model.dir).toBe(path.join(repoDir(), 'snapshots', COMMIT));
    expect(hub.requests[0]?.path).toBe(`/${ID}/resolve/${COMMIT}/config.json`);
    expect(await listFiles(path.join(repoDir(), 'refs'))).toEqual([]);
    // The revision option does the same.
    const same = await resolveModelSource(ID, options({ revision: COMMIT }));
    expect(same.dir).toBe(model.dir);
  });

  it('reports an unknown revision', async () => {
    await expect(resolveModelSource(`${ID}@v9`, options())).rejects.toThrow(
      `${ID}: revision "v9" not found on the Hub`,
    );
  });

  it('reports an unknown repository', async () => {
    const error = await resolveModelSource('nobody/nothing', options()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AttnscopeError);
    expect((error as Error).message).toBe('nobody/nothing: model not found on the Hub');
  });

  it('works with a single-name id', async () => {
    const model = await resolveModelSource('single-name-bert', options());
    const commit = fakeCommit('single-name-bert');
    expect(model.dir).toBe(path.join(cacheDir, 'models--single-name-bert', 'snapshots', commit));
  });

  it('follows the relative redirect of a renamed repository, caching under the requested id', async () => {
    const model = await resolveModelSource('old-org/tiny-bert', options());
    expect(model.dir).toBe(path.join(repoDir('old-org/tiny-bert'), 'snapshots', COMMIT));
    expect(await digestOf(await model.path('model.safetensors'))).toBe(fixtureDigest('model.safetensors'));
  });

  it("reads metadata past the Hub's relative 307 to /api/resolve-cache", async () => {
    const model = await resolveModelSource('test-org/moon-bert', options());
    const commit = fakeCommit('test-org/moon-bert');
    const config = await model.path('config.json');
    const etag = gitBlobSha1(files.get('config.json')!);
    expect(await fs.readlink(config!)).toBe(path.join('..', '..', 'blobs', etag));
    expect(await fs.readFile(path.join(repoDir('test-org/moon-bert'), 'refs', 'main'), 'utf8')).toBe(commit);
    expect(hub.requests.map((r) => r.path)).toEqual([
      '/test-org/moon-bert/resolve/main/config.json',
      `/api/resolve-cache/models/test-org/moon-bert/${commit}/config.json`,
    ]);
  });

  it('sends the token, and asks for it on gated models', async () => {
    const denied = await resolveModelSource('test-org/gated-bert', options()).catch((e: unknown) => e);
    expect(denied).toBeInstanceOf(AttnscopeError);
    expect((denied as Error).message).toMatch(/^test-org\/gated-bert: gated model.*HF_TOKEN/);

    const wrong = resolveModelSource('test-org/gated-bert', options({ token: 'hf_wrong' }));
    await expect(wrong).rejects.toThrow(/HF_TOKEN was refused/);

    hub.requests.length = 0;
    const model = await resolveModelSource('test-org/gated-bert', options({ env: { HF_TOKEN: TOKEN } }));
    expect(await digestOf(await model.path('model.safetensors'))).toBe(fixtureDigest('model.safetensors'));
    const hubRequests = hub.requests.filter((r) => !r.path.startsWith('/cdn/'));
    expect(hubRequests.length).toBe(2);
    for (const r of hubRequests) expect(r.authorization).toBe(`Bearer ${TOKEN}`);
  });

  it('leaves nothing behind when the connection drops mid-body', async () => {
    const model = await resolveModelSource('test-org/broken-bert', options());
    const root = repoDir('test-org/broken-bert');
    const before = await listFiles(root);

    const lfs = await model.path('model.safetensors').catch((e: unknown) => e);
    expect(lfs).toBeInstanceOf(AttnscopeError);
    expect((lfs as Error).message).toBe(
      `test-org/broken-bert/model.safetensors: download from ${hub.url} failed (connection lost); nothing was saved`,
    );
    await expect(model.path('tokenizer.json')).rejects.toThrow(/tokenizer\.json: download .* failed/);

    expect(await listFiles(root)).toEqual(before);
    expect((await listFiles(root)).some((f) => f.includes('incomplete'))).toBe(false);
    // A failed download is retried by the next call rather than remembered.
    await expect(model.path('model.safetensors')).rejects.toThrow(AttnscopeError);
  });

  it('rejects an LFS file whose bytes do not match its sha256', async () => {
    const model = await resolveModelSource('test-org/corrupt-bert', options());
    await expect(model.path('model.safetensors')).rejects.toThrow(/does not match its sha256/);
    const left = await listFiles(repoDir('test-org/corrupt-bert'));
    expect(left.filter((f) => f.includes('safetensors') || f.includes('incomplete'))).toEqual([]);
  });

  it('times out on a silent server (HF_HUB_DOWNLOAD_TIMEOUT)', async () => {
    const env = { HF_HUB_DOWNLOAD_TIMEOUT: '0.3', HF_HOME: cacheDir };
    const model = await resolveModelSource('test-org/slow-bert', options({ env }));
    await expect(model.path('model.safetensors')).rejects.toThrow(
      /model\.safetensors: download from .* failed \(no answer for 0\.3 s\)/,
    );
    expect((await listFiles(repoDir('test-org/slow-bert'))).some((f) => f.includes('incomplete'))).toBe(false);
  });

  it('names the endpoint when it cannot be reached', async () => {
    const closed = await unusedPort();
    const endpoint = `http://127.0.0.1:${closed}`;
    await expect(resolveModelSource(ID, options({ endpoint }))).rejects.toThrow(
      `cannot reach the Hugging Face Hub at ${endpoint} (ECONNREFUSED)`,
    );
  });

  it('reads HF_ENDPOINT and HF_HUB_CACHE from the environment', async () => {
    const env = { HF_ENDPOINT: `${hub.url}/`, HF_HUB_CACHE: cacheDir, HF_HOME: cacheDir };
    const model = await resolveModelSource(ID, { env, progress: false });
    expect(model.dir).toBe(path.join(repoDir(), 'snapshots', COMMIT));
  });

  it('shows a progress bar for large files when asked', async () => {
    const model = await resolveModelSource('test-org/big-bert', options({ progress: true }));
    const written: string[] = [];
    const original = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string | Uint8Array) => {
      written.push(String(chunk));
      return true;
    }) as typeof process.stderr.write;
    try {
      await model.path('model.safetensors');
      await model.path('tokenizer.json'); // small: no bar
    } finally {
      process.stderr.write = original;
    }
    const output = written.join('');
    expect(output).toContain('model.safetensors');
    expect(output).toContain('100%  10.5 MB / 10.5 MB');
    expect(output).not.toContain('tokenizer.json');
  });
});

describe('progress bar', () => {
  it('shows only for large files, on a terminal or when forced', () => {
    const tty = { isTTY: true, write: () => true };
    const pipe = { write: () => true };
    expect(wantsProgress(PROGRESS_MIN_BYTES, undefined, tty, {})).toBe(true);
    expect(wantsProgress(PROGRESS_MIN_BYTES, undefined, tty, { HF_HUB_DISABLE_PROGRESS_BARS: '1' })).toBe(false);
    expect(wantsProgress(PROGRESS_MIN_BYTES, false, tty, {})).toBe(false);
    expect(wantsProgress(PROGRESS_MIN_BYTES, undefined, pipe, {})).toBe(false);
    expect(wantsProgress(PROGRESS_MIN_BYTES, true, pipe, {})).toBe(true);
    expect(wantsProgress(1000, true, tty, {})).toBe(false);
    expect(wantsProgress(undefined, true, tty, {})).toBe(false);
  });

  it('redraws one line on a terminal with bytes, total and file name', () => {
    const out: string[] = [];
    let t = 0;
    const terminal = { isTTY: true, write: (s: string) => out.push(s) };
    const bar = createProgress('model.safetensors', 20_000_000, terminal, () => t);
    for (let i = 1; i <= 20; i++) {
      t += 50;
      bar.update(i * 1_000_000);
    }
    bar.done();
    expect(out.length).toBe(11); // throttled to one redraw per 100 ms, plus the final line
    expect(out.every((s) => s.startsWith('\r\x1b[2Kmodel.safetensors'))).toBe(true);
    expect(out.at(-1)).toMatch(/100%  20\.0 MB \/ 20\.0 MB  20\.0 MB\/s\n$/);
  });

  it('counts items on a log: a line at each tenth with count, rate and time left, then the final line', () => {
    const out: string[] = [];
    let t = 0;
    const log = { write: (s: string) => out.push(s) };
    const bar = countProgress('crows-pairs', false, log, () => t);
    for (let i = 1; i <= 40; i++) {
      t += 500; // 2 items a second
      bar.update(i, 40);
    }
    bar.done();
    // The first item, then tenths 0.1 … 0.9 once each (items 4, 8, …, 36), then done().
    expect(out).toHaveLength(11);
    expect(out[0]).toBe(`crows-pairs  █${'░'.repeat(23)}   2%  1/40  2.0/s  ETA 20s\n`);
    expect(out[1]).toBe(`crows-pairs  ${'█'.repeat(2)}${'░'.repeat(22)}  10%  4/40  2.0/s  ETA 18s\n`);
    expect(out.at(-1)).toBe(`crows-pairs  ${'█'.repeat(24)} 100%  40/40  2.0/s\n`);
    const before = out.length;
    const quiet = countProgress('x', true, log);
    quiet.update(1, 2);
    quiet.done();
    expect(out).toHaveLength(before);
  });
});

function unusedPort(): Promise<number> {
  return new Promise((resolve) => {
    const server = http.createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
