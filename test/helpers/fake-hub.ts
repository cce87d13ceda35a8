/**
 * A local stand-in for huggingface.co: `/{id}/resolve/{revision}/{file}` answered with the headers
 * the Hub sends (ETag, X-Repo-Commit, and for LFS files a 302 to a "CDN" path on the same server
 * with X-Linked-Etag / X-Linked-Size), 404 with X-Error-Code for missing files, repos and
 * revisions, 401 for gated repos without the right token, a relative 307 for renamed repos.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';

export interface FakeRepo {
  /** File name (may contain `/`) → contents. */
  readonly files: ReadonlyMap<string, Buffer>;
  /** Commit hash that `main` points to (default: derived from the repo id). */
  readonly commit?: string;
  /** Requests must send `Authorization: Bearer <token>`, else 401 GatedRepo. */
  readonly token?: string;
  /**
   * Answer regular files as huggingface.co does today: a relative 307 to
   * `/api/resolve-cache/models/{id}/{commit}/{file}` carrying X-Repo-Commit but no ETag, which then
   * serves the file with both.
   */
  readonly resolveCache?: boolean;
  /** Files whose body is cut off halfway (the connection is destroyed). */
  readonly drop?: readonly string[];
  /** Files whose headers are sent but whose body never comes. */
  readonly hang?: readonly string[];
  /** Files served with wrong bytes (same length) under the right X-Linked-Etag. */
  readonly corrupt?: readonly string[];
}

export interface FakeHubRequest {
  readonly method: string;
  readonly path: string;
  readonly authorization?: string;
}

export interface FakeHub {
  readonly url: string;
  readonly requests: FakeHubRequest[];
  close(): Promise<void>;
}

export function fakeCommit(repoId: string): string {
  return createHash('sha1').update(`commit:${repoId}`).digest('hex');
}

/** The ETag the Hub gives a regular (non-LFS) file: its git blob sha1. */
export function gitBlobSha1(data: Buffer): string {
  return createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Where the "CDN" serves an LFS file (the Hub redirects there). */
export function cdnPath(repoId: string, data: Buffer): string {
  return `/cdn/${repoId}/${sha256(data)}`;
}

export function isLfs(file: string): boolean {
  return /\.(safetensors|bin|onnx)$/.test(file);
}

/** The files of a fixture directory (not its reference outputs), as a FakeRepo file map. */
export async function fixtureFiles(dir: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>();
  for (const name of await fs.readdir(dir)) {
    if (name === 'reference.json') continue;
    files.set(name, await fs.readFile(path.join(dir, name)));
  }
  return files;
}

export async function startFakeHub(
  repos: Readonly<Record<string, FakeRepo>>,
  renamed: Readonly<Record<string, string>> = {},
): Promise<FakeHub> {
  const requests: FakeHubRequest[] = [];
  const cdn = new Map<string, { data: Buffer; repo: FakeRepo; file: string }>();
  for (const [repoId, repo] of Object.entries(repos)) {
    for (const [file, data] of repo.files) if (isLfs(file)) cdn.set(cdnPath(repoId, data), { data, repo, file });
  }

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    requests.push({ method: req.method ?? 'GET', path: url.pathname, authorization: req.headers.authorization });
    const head = req.method === 'HEAD';

    const send = (status: number, headers: Record<string, string>, body: Buffer = Buffer.alloc(0)): void => {
      res.writeHead(status, { 'Content-Length': String(body.length), ...headers });
      res.end(head ? undefined : body);
    };
    const fail = (status: number, code: string, message: string, extra: Record<string, string> = {}): void =>
      send(status, { 'X-Error-Code': code, 'X-Error-Message': message, ...extra }, Buffer.from(message));

    if (url.pathname.startsWith('/cdn/')) {
      const entry = cdn.get(url.pathname);
      if (!entry) return fail(404, 'NotFound', 'no such object');
      return serveBody(res, entry.data, `"cdn-${sha256(entry.data).slice(0, 16)}"`, entry.repo, entry.file, head);
    }

    const cached = /^\/api\/resolve-cache\/models\/(.+)\/([0-9a-f]{40})\/(.+)$/.exec(url.pathname);
    if (cached) {
      const [, repoId = '', commit = '', file = ''] = cached;
      const repo = repos[repoId];
      const data = repo?.files.get(decodeURIComponent(file));
      if (!repo || !data) return fail(404, 'EntryNotFound', 'Entry not found');
      res.setHeader('X-Repo-Commit', commit);
      return serveBody(res, data, `"${gitBlobSha1(data)}"`, repo, file, head);
    }

    const at = url.pathname.indexOf('/resolve/');
    if (at < 0) return fail(404, 'NotFound', 'not a resolve URL');
    const repoId = url.pathname.slice(1, at);
    const [rawRevision = '', ...rest] = url.pathname.slice(at + '/resolve/'.length).split('/');
    const revision = decodeURIComponent(rawRevision);
    const file = rest.map(decodeURIComponent).join('/');

    const target = renamed[repoId];
    if (target) {
      res.writeHead(307, { Location: `/${target}${url.pathname.slice(at)}`, 'Content-Length': '0' });
      return res.end();
    }
    const repo = repos[repoId];
    if (!repo) return fail(404, 'RepoNotFound', 'Repository not found');
    if (repo.token && req.headers.authorization !== `Bearer ${repo.token}`) {
      return fail(401, 'GatedRepo', 'Access to this model is restricted');
    }
    const commit = repo.commit ?? fakeCommit(repoId);
    if (revision !== 'main' && revision !== commit) {
      return fail(404, 'RevisionNotFound', 'Invalid rev id');
    }
    const data = repo.files.get(file);
    if (!data) return fail(404, 'EntryNotFound', 'Entry not found', { 'X-Repo-Commit': commit });

    if (isLfs(file)) {
      const host = req.headers.host ?? 'localhost';
      const body = Buffer.from('Found. Redirecting');
      res.writeHead(302, {
        Location: `http://${host}${cdnPath(repoId, data)}`,
        ETag: `W/"${gitBlobSha1(Buffer.from(`lfs pointer ${sha256(data)}`))}"`,
        'X-Linked-Etag': `"${sha256(data)}"`,
        'X-Linked-Size': String(data.length),
        'X-Repo-Commit': commit,
        'Content-Length': String(body.length),
      });
      return res.end(head ? undefined : body);
    }
    if (repo.resolveCache) {
      const etag = encodeURIComponent(`"${gitBlobSha1(data)}"`);
      res.writeHead(307, {
        Location: `/api/resolve-cache/models/${repoId}/${commit}/${rest.join('/')}?etag=${etag}`,
        'X-Repo-Commit': commit,
        'Content-Length': '0',
      });
      return res.end();
    }
    res.setHeader('X-Repo-Commit', commit);
    return serveBody(res, data, `"${gitBlobSha1(data)}"`, repo, file, head);
  });

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function serveBody(
  res: http.ServerResponse,
  data: Buffer,
  etag: string,
  repo: FakeRepo,
  file: string,
  head: boolean,
): void {
  res.writeHead(200, { 'Content-Length': String(data.length), ETag: etag, 'Content-Type': 'application/octet-stream' });
  if (head) return void res.end();
  if (repo.hang?.includes(file)) return void res.flushHeaders();
  if (repo.drop?.includes(file)) {
    res.write(data.subarray(0, data.length >> 1), () => res.socket?.destroy());
    return;
  }
  if (repo.corrupt?.includes(file)) {
    const wrong = Buffer.from(data);
    wrong[wrong.length - 1] = (wrong[wrong.length - 1] ?? 0) ^ 0xff;
    return void res.end(wrong);
  }
  res.end(data);
}

/**
 * Puts `process.env` back to `saved` (a copy taken before pointing it at a fake hub) in place, not
 * by assigning a plain object to it: the unit suite's files share their worker process
 * (vitest.config.ts), whose environment must stay the real one for the files after.
 */
export function restoreEnv(saved: NodeJS.ProcessEnv): void {
  for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
  Object.assign(process.env, saved);
}
