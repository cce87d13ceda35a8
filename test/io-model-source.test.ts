import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import { defaultHubCacheDir, offlineFromEnv, RepoCache, tokenFromEnv } from '../src/io/hf-cache.js';
import { parseHubId, resolveModelSource, type ModelSourceOptions } from '../src/io/model-source.js';

const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures');
const BERT = path.join(FIXTURES, 'bert');
const COMMIT = '0123456789abcdef0123456789abcdef01234567';
/** Nothing listens here: any network use fails the test. */
const NO_HUB = 'http://127.0.0.1:9';

let tmp: string;
beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'attnscope-src-'));
});
afterEach(async () => fs.rm(tmp, { recursive: true, force: true }));

async function failure(promise: Promise<unknown>): Promise<Error> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(AttnscopeError);
  return error as Error;
}

/**
 * Builds the cache Python's huggingface_hub leaves after `snapshot_download(repo_id)`: blobs named
 * by ETag, relative symlinks from the snapshot (or copies, as on Windows without symlinks), the ref,
 * and a .no_exist marker.
 */
async function pythonCache(cacheDir: string, repoId: string, names: string[], symlinks = true): Promise<string> {
  const root = path.join(cacheDir, `models--${repoId.replaceAll('/', '--')}`);
  await fs.mkdir(path.join(root, 'refs'), { recursive: true });
  await fs.writeFile(path.join(root, 'refs', 'main'), COMMIT);
  await fs.mkdir(path.join(root, 'blobs'), { recursive: true });
  await fs.mkdir(path.join(root, 'snapshots', COMMIT), { recursive: true });
  for (const [i, name] of names.entries()) {
    const etag = `${String(i).padStart(2, '0')}${'ab'.repeat(19)}`;
    await fs.copyFile(path.join(BERT, name), path.join(root, 'blobs', etag));
    const pointer = path.join(root, 'snapshots', COMMIT, name);
    if (symlinks) await fs.symlink(path.join('..', '..', 'blobs', etag), pointer);
    else await fs.copyFile(path.join(BERT, name), pointer);
  }
  await fs.mkdir(path.join(root, '.no_exist', COMMIT), { recursive: true });
  await fs.writeFile(path.join(root, '.no_exist', COMMIT, 'tokenizer.model'), '');
  return root;
}

describe('local directories', () => {
  it('resolves an absolute path', async () => {
    const model = await resolveModelSource(BERT);
    expect(model.name).toBe('bert');
    expect(model.dir).toBe(BERT);
    expect(await model.path('config.json')).toBe(path.join(BERT, 'config.json'));
    expect(await model.path('pytorch_model.bin')).toBeUndefined();
  });

  it('resolves a relative path', async () => {
    const model = await resolveModelSource(path.relative(process.cwd(), BERT));
    expect(model.dir).toBe(BERT);
  });

  it('prefers a directory on disk over a Hub id of the same name', async () => {
    await fs.mkdir(path.join(tmp, 'org', 'model'), { recursive: true });
    await fs.copyFile(path.join(BERT, 'config.json'), path.join(tmp, 'org', 'model', 'config.json'));
    const cwd = process.cwd();
    process.chdir(tmp);
    try {
      const model = await resolveModelSource('org/model', { endpoint: NO_HUB, env: { HF_HOME: tmp } });
      expect(model.dir).toBe(path.join(await fs.realpath(tmp), 'org', 'model'));
    } finally {
      process.chdir(cwd);
    }
  });

  it('requires config.json', async () => {
    const error = await failure(resolveModelSource(tmp));
    expect(error.message).toBe(`${tmp}: not a model directory (no config.json)`);
  });

  it('rejects a file', async () => {
    const file = path.join(BERT, 'config.json');
    const error = await failure(resolveModelSource(file));
    expect(error.message).toBe(`${file}: not a model directory (it is a file)`);
  });

  it('reports a path that does not exist', async () => {
    for (const p of ['./no/such/dir', '/no/such/dir', 'a/b/c', '../nothing']) {
      expect((await failure(resolveModelSource(p, { endpoint: NO_HUB, env: { HF_HOME: tmp } }))).message).toBe(
        `${p}: no such file or directory`,
      );
    }
  });

  it('refuses file names that leave the model directory', async () => {
    const model = await resolveModelSource(BERT);
    await expect(model.path('../bert/config.json')).rejects.toThrow('invalid file name');
    await expect(model.path('/etc/passwd')).rejects.toThrow(AttnscopeError);
  });
});

describe('Hub ids', () => {
  it('parses org/name, name and @revision', () => {
    expect(parseHubId('google-bert/bert-base-uncased')).toEqual({ repoId: 'google-bert/bert-base-uncased' });
    expect(parseHubId('gpt2')).toEqual({ repoId: 'gpt2' });
    expect(parseHubId('org/name@v1.0')).toEqual({ repoId: 'org/name', revision: 'v1.0' });
    expect(parseHubId('org/name@refs/pr/1')).toEqual({ repoId: 'org/name', revision: 'refs/pr/1' });
    for (const bad of ['a/b/c', './x', '/x', '-x', 'x--y/z', 'a..b', 'org/name@', '~/x', 'C:\\x', '']) {
      expect(parseHubId(bad)).toBeUndefined();
    }
  });

  it('refuses two different revisions', async () => {
    const options = { revision: 'v2', endpoint: NO_HUB, env: { HF_HOME: tmp } };
    const error = await failure(resolveModelSource('org/name@v1', options));
    expect(error.message).toBe('org/name@v1: two different revisions given (@v1 and v2)');
  });

  it('refuses a revision that would leave the cache', async () => {
    await failure(resolveModelSource('org/name@../../x', { cacheDir: tmp, offline: true, env: { HF_HOME: tmp } }));
  });
});

describe('the Hugging Face cache', () => {
  it('is found where huggingface_hub looks', () => {
    const home = os.homedir();
    expect(defaultHubCacheDir({})).toBe(path.join(home, '.cache', 'huggingface', 'hub'));
    expect(defaultHubCacheDir({ XDG_CACHE_HOME: '/x' })).toBe('/x/huggingface/hub');
    expect(defaultHubCacheDir({ HF_HOME: '/h' })).toBe('/h/hub');
    expect(defaultHubCacheDir({ HF_HOME: '~/h' })).toBe(path.join(home, 'h', 'hub'));
    expect(defaultHubCacheDir({ HF_HOME: '/h', HF_HUB_CACHE: '/c' })).toBe('/c');
    expect(defaultHubCacheDir({ HUGGINGFACE_HUB_CACHE: '/old' })).toBe('/old');
  });

  it('reads HF_HUB_OFFLINE like huggingface_hub', () => {
    expect(offlineFromEnv({})).toBe(false);
    expect(offlineFromEnv({ HF_HUB_OFFLINE: '1' })).toBe(true);
    expect(offlineFromEnv({ HF_HUB_OFFLINE: 'true' })).toBe(true);
    expect(offlineFromEnv({ HF_HUB_OFFLINE: '0' })).toBe(false);
    expect(offlineFromEnv({ TRANSFORMERS_OFFLINE: 'yes' })).toBe(true);
  });

  it('finds the token in HF_TOKEN or the login file', async () => {
    expect(await tokenFromEnv({ HF_TOKEN: 'hf_a', HF_HOME: tmp })).toBe('hf_a');
    expect(await tokenFromEnv({ HF_HOME: tmp })).toBeUndefined();
    await fs.writeFile(path.join(tmp, 'token'), 'hf_file\n');
    expect(await tokenFromEnv({ HF_HOME: tmp })).toBe('hf_file');
    expect(await tokenFromEnv({ HF_HOME: tmp, HF_HUB_DISABLE_IMPLICIT_TOKEN: '1' })).toBeUndefined();
  });

  it('reuses a snapshot left by Python without any network', async () => {
    const root = await pythonCache(tmp, 'org/bert', ['config.json', 'model.safetensors', 'tokenizer.json']);
    const model = await resolveModelSource('org/bert', { cacheDir: tmp, endpoint: NO_HUB, env: { HF_HOME: tmp } });
    expect(model.name).toBe('org/bert');
    expect(model.dir).toBe(path.join(root, 'snapshots', COMMIT));
    const weights = await model.path('model.safetensors');
    expect(weights).toBe(path.join(root, 'snapshots', COMMIT, 'model.safetensors'));
    const expected = await fs.readFile(path.join(BERT, 'model.safetensors'));
    expect((await fs.readFile(weights!)).equals(expected)).toBe(true);
    // Recorded as absent by Python: undefined, no network.
    expect(await model.path('tokenizer.model')).toBeUndefined();
    // Not in the snapshot: online, it is downloaded, so the (absent) Hub is reported.
    await expect(model.path('vocab.txt')).rejects.toThrow(`cannot reach the Hugging Face Hub at ${NO_HUB}`);
  });

  it('reuses a snapshot of copies (no symlinks), as on Windows', async () => {
    await pythonCache(tmp, 'org/bert', ['config.json', 'vocab.txt'], false);
    const model = await resolveModelSource('org/bert', { cacheDir: tmp, endpoint: NO_HUB, env: { HF_HOME: tmp } });
    expect(await model.path('vocab.txt')).toBe(path.join(model.dir, 'vocab.txt'));
  });

  it('resolves @commit from the snapshot folder when there is no ref for it', async () => {
    await pythonCache(tmp, 'org/bert', ['config.json']);
    const options = { cacheDir: tmp, offline: true, env: { HF_HOME: tmp } };
    const model = await resolveModelSource(`org/bert@${COMMIT}`, options);
    expect(path.basename(model.dir)).toBe(COMMIT);
  });

  it('reads the cache directory from HF_HOME', async () => {
    await pythonCache(path.join(tmp, 'hub'), 'org/bert', ['config.json']);
    const model = await resolveModelSource('org/bert', { endpoint: NO_HUB, env: { HF_HOME: tmp } });
    expect(model.dir).toBe(path.join(tmp, 'hub', 'models--org--bert', 'snapshots', COMMIT));
  });
});

describe('offline mode', () => {
  const offline = (extra: ModelSourceOptions = {}): ModelSourceOptions => ({
    cacheDir: tmp,
    endpoint: NO_HUB,
    env: { HF_HUB_OFFLINE: '1', HF_HOME: tmp },
    ...extra,
  });

  it('fails clearly when the model is not cached', async () => {
    expect((await failure(resolveModelSource('org/bert', offline()))).message).toBe(
      'org/bert: not in the Hugging Face cache and HF_HUB_OFFLINE=1',
    );
    expect((await failure(resolveModelSource('org/bert@v2', offline()))).message).toBe(
      'org/bert@v2: not in the Hugging Face cache and HF_HUB_OFFLINE=1',
    );
  });

  it('serves cached files and nothing else', async () => {
    await pythonCache(tmp, 'org/bert', ['config.json', 'tokenizer.json']);
    const model = await resolveModelSource('org/bert', offline());
    expect(await model.path('tokenizer.json')).toBe(path.join(model.dir, 'tokenizer.json'));
    expect(await model.path('model.safetensors')).toBeUndefined(); // no network attempted
  });

  it('follows the offline option over the environment', async () => {
    await expect(resolveModelSource('org/bert', offline({ offline: false }))).rejects.toThrow('cannot reach');
    await expect(
      resolveModelSource('org/bert', { cacheDir: tmp, endpoint: NO_HUB, env: { HF_HOME: tmp }, offline: true }),
    ).rejects.toThrow('HF_HUB_OFFLINE=1');
  });

  it('reports a cached repository without config.json', async () => {
    const root = await pythonCache(tmp, 'org/bert', ['vocab.txt']);
    await fs.writeFile(path.join(root, '.no_exist', COMMIT, 'config.json'), '');
    expect((await failure(resolveModelSource('org/bert', offline()))).message).toBe(
      'org/bert: not a model repository (no config.json)',
    );
  });
});

describe('RepoCache', () => {
  it('links a blob into a snapshot, by copy when symlinks are unavailable', async () => {
    const cache = new RepoCache(tmp, 'org/bert');
    await fs.mkdir(path.dirname(cache.blobPath('e1')), { recursive: true });
    await fs.writeFile(cache.blobPath('e1'), 'hello');
    const linked = await cache.linkBlob(COMMIT, 'sub/a.txt', 'e1');
    expect(await fs.readlink(linked)).toBe(path.join('..', '..', '..', 'blobs', 'e1'));
    const copied = await cache.linkBlob(COMMIT, 'b.txt', 'e1', false);
    expect((await fs.lstat(copied)).isSymbolicLink()).toBe(false);
    expect(await fs.readFile(copied, 'utf8')).toBe('hello');
  });

  it('writes refs, nested ones included, but not for a commit hash', async () => {
    const cache = new RepoCache(tmp, 'org/bert');
    await cache.writeRef('refs/pr/1', COMMIT);
    await cache.writeRef(COMMIT, COMMIT);
    expect(await fs.readFile(path.join(cache.root, 'refs', 'refs', 'pr', '1'), 'utf8')).toBe(COMMIT);
    expect(await fs.readdir(path.join(cache.root, 'refs'))).toEqual(['refs']);
    expect(await cache.resolveCommit('refs/pr/1')).toBe(COMMIT);
  });
});
