/**
 * Downloading one file of a Hub model into the Hugging Face cache, as huggingface_hub does:
 * `GET {endpoint}/{id}/resolve/{revision}/{file}`, metadata from the Hub's headers (`X-Repo-Commit`,
 * `X-Linked-Etag` / `ETag`, `X-Linked-Size`), redirects followed (to the CDN for LFS files, or
 * relative ones for renamed repos), the body written to a temporary file in `blobs/` and renamed
 * once complete and verified, then linked from `snapshots/<commit>/<file>`.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, promises as fs } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { AttnscopeError } from '../core/errors.js';
import { exists, isCommitHash, RepoCache, type Env } from './hf-cache.js';
import { createProgress, wantsProgress, type Progress, type ProgressStream } from './progress.js';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

/** Where and how to download. */
export interface HubSettings {
  /** The Hub's base URL, e.g. `https://huggingface.co` (`$HF_ENDPOINT`). */
  readonly endpoint: string;
  /** Sent as `Authorization: Bearer <token>` to the endpoint (never to the hosts it redirects to). */
  readonly token?: string;
  /** The Hugging Face cache directory (`$HF_HUB_CACHE`). */
  readonly cacheDir: string;
  /** Give up when a connection stays silent this long. */
  readonly timeoutMs: number;
  /** Progress bar: true forces it, false disables it, undefined shows it on a terminal. */
  readonly progress?: boolean;
  readonly env?: Env;
  readonly progressStream?: ProgressStream;
}

/** A downloaded (or already cached) file, or one the Hub says does not exist. */
export type HubFile =
  | { readonly found: true; readonly commit: string; readonly path: string }
  | { readonly found: false; readonly commit?: string };

/** `{endpoint}/{repoId}/resolve/{revision}/{file}`, quoted as huggingface_hub quotes it. */
export function hubFileUrl(endpoint: string, repoId: string, revision: string, file: string): string {
  const quotedFile = file.split('/').map(encodeURIComponent).join('/');
  return `${endpoint}/${repoId}/resolve/${encodeURIComponent(revision)}/${quotedFile}`;
}

/** Fetches `file` of `repoId` at `revision` into the cache (reusing blobs already there). */
export async function downloadHubFile(
  hub: HubSettings,
  repoId: string,
  revision: string,
  file: string,
): Promise<HubFile> {
  const cache = new RepoCache(hub.cacheDir, repoId);
  const what = `${repoId}/${file}`;
  const { res, meta, url } = await get(new URL(hubFileUrl(hub.endpoint, repoId, revision, file)), hub, what);
  const status = res.statusCode ?? 0;

  if (status !== 200) {
    res.resume();
    const code = header(res, 'x-error-code');
    if (status === 404 && (code === 'EntryNotFound' || code === undefined)) {
      const commit = meta.commit;
      if (commit) {
        await cache.writeRef(revision, commit);
        await cache.markMissing(commit, file);
      }
      return { found: false, commit };
    }
    throw httpError(res, url, hub, repoId, revision, file);
  }

  const commit = meta.commit ?? (isCommitHash(revision) ? revision : undefined);
  if (!commit || !meta.etag) {
    res.destroy();
    const missing = commit ? 'ETag' : 'X-Repo-Commit';
    throw new AttnscopeError(
      `${what}: ${hub.endpoint} sent no ${missing} header; is HF_ENDPOINT a Hugging Face Hub?`,
    );
  }
  await cache.writeRef(revision, commit);

  const pointer = cache.snapshotFile(commit, file);
  if (await exists(pointer)) {
    res.destroy();
    return { found: true, commit, path: pointer };
  }
  if (await exists(cache.blobPath(meta.etag))) {
    res.destroy(); // same contents already cached under another name or revision
    return { found: true, commit, path: await cache.linkBlob(commit, file, meta.etag) };
  }

  const size = meta.linkedSize ?? contentLength(res);
  const temp = await cache.tempBlobPath(meta.etag);
  const stream = hub.progressStream ?? process.stderr;
  const progress = wantsProgress(size, hub.progress, stream, hub.env)
    ? createProgress(file, size ?? 0, stream)
    : undefined;
  try {
    await saveBody(res, temp, size, meta.sha256, progress, what);
    await fs.rename(temp, cache.blobPath(meta.etag));
  } catch (error) {
    res.destroy();
    await fs.rm(temp, { force: true });
    if (error instanceof AttnscopeError) throw error;
    throw new AttnscopeError(
      `${what}: download from ${url.origin} failed (${describe(error)}); nothing was saved`,
      { cause: error },
    );
  }
  return { found: true, commit, path: await cache.linkBlob(commit, file, meta.etag) };
}

/** What the Hub's headers say about a file. */
interface FileMeta {
  commit?: string;
  /** The blob's name: `X-Linked-Etag` (sha256 of an LFS file) or `ETag`, without quotes. */
  etag?: string;
  /** The expected sha256 of the contents (LFS files). */
  sha256?: string;
  linkedSize?: number;
}

function readMeta(res: http.IncomingMessage): FileMeta {
  const linked = normalizeEtag(header(res, 'x-linked-etag'));
  const etag = linked ?? normalizeEtag(header(res, 'etag'));
  return {
    commit: header(res, 'x-repo-commit'),
    etag: etag && /^[\w.-]+$/.test(etag) && !/^\.+$/.test(etag) ? etag : undefined,
    sha256: linked && /^[0-9a-f]{64}$/.test(linked) ? linked : undefined,
    linkedSize: parseSize(header(res, 'x-linked-size')),
  };
}

/** `W/"abc"` → `abc`. */
function normalizeEtag(etag: string | undefined): string | undefined {
  const value = etag?.replace(/^W\//, '').replace(/^"|"$/g, '');
  return value || undefined;
}

/**
 * GET `url`, following redirects. The file's metadata is read as huggingface_hub reads it: from the
 * first answer that is not a relative redirect (relative ones are the Hub's internal hops, e.g. to
 * `/api/resolve-cache/...` or for a renamed repo) and carries `X-Repo-Commit`, which for LFS files
 * is the 302 to the CDN; failing that, from the final answer, with any commit hash seen on the way.
 */
async function get(
  start: URL,
  hub: HubSettings,
  what: string,
): Promise<{ res: http.IncomingMessage; meta: FileMeta; url: URL }> {
  let url = start;
  let meta: FileMeta | undefined;
  let commitSeen: string | undefined;
  for (let hop = 0; ; hop++) {
    const res = await send(url, hub, what);
    const redirect = [301, 302, 303, 307, 308].includes(res.statusCode ?? 0);
    const location = redirect ? header(res, 'location') : undefined;
    const relative = location !== undefined && !/^([a-z][a-z\d+.-]*:)?\/\//i.test(location);
    commitSeen ??= header(res, 'x-repo-commit');
    if (!meta && !relative && header(res, 'x-repo-commit')) meta = readMeta(res);
    if (location === undefined) {
      const final = readMeta(res);
      return { res, meta: meta ?? { ...final, commit: final.commit ?? commitSeen }, url };
    }
    res.resume();
    if (hop >= 10) throw new AttnscopeError(`${what}: too many redirects from ${hub.endpoint}`);
    url = new URL(location, url);
  }
}

/** One GET request; rejects with an AttnscopeError naming the host when it cannot be reached. */
function send(url: URL, hub: HubSettings, what: string): Promise<http.IncomingMessage> {
  const headers: Record<string, string> = {
    'User-Agent': 'attnscope (node)',
    'Accept-Encoding': 'identity',
  };
  if (hub.token && url.origin === originOf(hub.endpoint)) headers.Authorization = `Bearer ${hub.token}`;
  const client = url.protocol === 'https:' ? https : url.protocol === 'http:' ? http : undefined;
  if (!client) {
    const error = new AttnscopeError(`${what}: cannot download from ${url.origin} (unsupported protocol)`);
    return Promise.reject(error);
  }
  return new Promise((resolve, reject) => {
    let response: http.IncomingMessage | undefined;
    const req = client.get(url, { headers }, (res) => {
      response = res;
      resolve(res);
    });
    req.setTimeout(hub.timeoutMs, () => {
      const error = Object.assign(new Error(`no answer for ${hub.timeoutMs / 1000} s`), { code: 'ETIMEDOUT' });
      if (response) response.destroy(error);
      else req.destroy(error);
    });
    req.on('error', (error) => {
      if (response) return; // surfaced by the response stream
      const where =
        url.origin === originOf(hub.endpoint)
          ? `the Hugging Face Hub at ${hub.endpoint}`
          : `${url.origin} (redirected from ${hub.endpoint})`;
      reject(
        new AttnscopeError(
          `cannot reach ${where} (${describe(error)}) to download ${what}; check the network or HF_ENDPOINT, ` +
            'or set HF_HUB_OFFLINE=1 to use only the local cache',
          { cause: error },
        ),
      );
    });
  });
}

/** Streams the body to `temp`, checking its size and (for LFS files) its sha256. */
async function saveBody(
  res: http.IncomingMessage,
  temp: string,
  size: number | undefined,
  sha256: string | undefined,
  progress: Progress | undefined,
  what: string,
): Promise<void> {
  const hash = sha256 ? createHash('sha256') : undefined;
  let received = 0;
  const count = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      received += chunk.length;
      hash?.update(chunk);
      progress?.update(received);
      callback(null, chunk);
    },
  });
  try {
    await pipeline(res, count, createWriteStream(temp, { flags: 'wx' }));
  } finally {
    progress?.done();
  }
  if (size !== undefined && received !== size) {
    throw new AttnscopeError(`${what}: download cut short (${received} of ${size} bytes); nothing was saved`);
  }
  const digest = hash?.digest('hex');
  if (sha256 && digest !== sha256) {
    throw new AttnscopeError(`${what}: downloaded file does not match its sha256 (${sha256}); nothing was saved`);
  }
}

function httpError(
  res: http.IncomingMessage,
  url: URL,
  hub: HubSettings,
  repoId: string,
  revision: string,
  file: string,
): AttnscopeError {
  const status = res.statusCode ?? 0;
  const code = header(res, 'x-error-code');
  const message = header(res, 'x-error-message');
  const tokenHint = hub.token
    ? 'the token in HF_TOKEN was refused or has no access to it'
    : 'set HF_TOKEN to a token that has access';
  switch (code) {
    case 'RepoNotFound':
      return new AttnscopeError(
        `${repoId}: model not found on the Hub` +
          (status === 401 ? ` (if it is private or gated, ${tokenHint})` : ''),
      );
    case 'RevisionNotFound':
      return new AttnscopeError(`${repoId}: revision "${revision}" not found on the Hub`);
    case 'GatedRepo':
      return new AttnscopeError(
        `${repoId}: gated model, access denied (HTTP ${status}); ` +
          `request access at ${hub.endpoint}/${repoId} and ${tokenHint}`,
      );
    case 'DisabledRepo':
      return new AttnscopeError(`${repoId}: this model has been disabled on the Hub`);
  }
  if (status === 401 || status === 403) {
    return new AttnscopeError(
      `${repoId}: access denied (HTTP ${status}) by ${url.origin}; for a gated or private model, ${tokenHint}`,
    );
  }
  if (status === 429) {
    return new AttnscopeError(
      `${repoId}/${file}: too many requests to ${hub.endpoint} (HTTP 429); wait and retry, or set HF_TOKEN`,
    );
  }
  return new AttnscopeError(
    `${repoId}/${file}: HTTP ${status}${res.statusMessage ? ` ${res.statusMessage}` : ''} from ${url.origin}` +
      (message ? `: ${message}` : ''),
  );
}

function header(res: http.IncomingMessage, name: string): string | undefined {
  const value = res.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function contentLength(res: http.IncomingMessage): number | undefined {
  return parseSize(header(res, 'content-length'));
}

function parseSize(value: string | undefined): number | undefined {
  const n = value === undefined || value.trim() === '' ? Number.NaN : Number(value);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

function originOf(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    const inner = error instanceof AggregateError ? error.errors[0] : undefined;
    const innerCode = inner instanceof Error ? (inner as { code?: unknown }).code : undefined;
    const name = typeof code === 'string' ? code : typeof innerCode === 'string' ? innerCode : undefined;
    if (name === 'ECONNRESET' || error.message === 'aborted') return 'connection lost';
    if (name === 'ETIMEDOUT') return error.message.startsWith('no answer') ? error.message : 'timed out';
    return name ?? error.message;
  }
  return String(error);
}
