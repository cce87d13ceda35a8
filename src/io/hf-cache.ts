/**
 * The Hugging Face cache, laid out exactly as Python's huggingface_hub lays it out, so that files
 * downloaded by either are reused by the other:
 *
 * ```
 * <cache>/models--<org>--<name>/
 *   refs/<revision>                 the commit hash the revision (branch or tag) points to
 *   blobs/<etag>                    file contents, named by ETag (sha256 for LFS files)
 *   snapshots/<commit>/<file>       relative symlinks to ../../blobs/<etag> (copies if symlinks fail)
 *   .no_exist/<commit>/<file>       empty marker: the Hub said this file does not exist
 * ```
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AttnscopeError } from '../core/errors.js';

/** Environment variables as read by the hub code (process.env, or an override in tests). */
export type Env = Readonly<Record<string, string | undefined>>;

/** huggingface_hub's reading of a boolean environment variable. */
export function isTrue(value: string | undefined): boolean {
  return value !== undefined && ['1', 'ON', 'YES', 'TRUE'].includes(value.trim().toUpperCase());
}

/** Expands a leading `~` to the home directory, as Python's os.path.expanduser does. */
export function expandHome(p: string): string {
  return p === '~' || p.startsWith('~/') || p.startsWith(`~${path.sep}`)
    ? path.join(os.homedir(), p.slice(1))
    : p;
}

/** `$HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`. */
export function hfHomeDir(env: Env = process.env): string {
  if (env.HF_HOME) return path.resolve(expandHome(env.HF_HOME));
  const cache = env.XDG_CACHE_HOME ? expandHome(env.XDG_CACHE_HOME) : path.join(os.homedir(), '.cache');
  return path.resolve(cache, 'huggingface');
}

/** `$HF_HUB_CACHE` (or the older `$HUGGINGFACE_HUB_CACHE`), else `<HF_HOME>/hub`. */
export function defaultHubCacheDir(env: Env = process.env): string {
  const explicit = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  return explicit ? path.resolve(expandHome(explicit)) : path.join(hfHomeDir(env), 'hub');
}

/** Whether `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) asks for no network. */
export function offlineFromEnv(env: Env = process.env): boolean {
  return isTrue(env.HF_HUB_OFFLINE) || isTrue(env.TRANSFORMERS_OFFLINE);
}

/**
 * The token huggingface_hub would use: `$HF_TOKEN` (or `$HUGGING_FACE_HUB_TOKEN`), else the file
 * written by `huggingface-cli login` (`$HF_TOKEN_PATH` or `<HF_HOME>/token`).
 */
export async function tokenFromEnv(env: Env = process.env): Promise<string | undefined> {
  const direct = env.HF_TOKEN || env.HUGGING_FACE_HUB_TOKEN;
  if (direct) return direct.trim();
  if (isTrue(env.HF_HUB_DISABLE_IMPLICIT_TOKEN)) return undefined;
  const file = env.HF_TOKEN_PATH ? expandHome(env.HF_TOKEN_PATH) : path.join(hfHomeDir(env), 'token');
  try {
    const token = (await fs.readFile(file, 'utf8')).trim();
    return token || undefined;
  } catch {
    return undefined;
  }
}

/** A full 40-hex-digit git commit hash. */
export function isCommitHash(revision: string): boolean {
  return /^[0-9a-f]{40}$/.test(revision);
}

/** `org/name` → `models--org--name`. */
export function repoFolderName(repoId: string): string {
  return ['models', ...repoId.split('/')].join('--');
}

/**
 * Checks that `file` names something inside the repository (no absolute path, no `..`), so that
 * names read from a checkpoint (e.g. a shard index) cannot reach outside it.
 */
export function checkRepoPath(file: string, what = 'file name'): string {
  const parts = file.split(/[\\/]/);
  if (file === '' || path.isAbsolute(file) || /^[A-Za-z]:/.test(file) || parts.some((p) => p === '..' || p === '')) {
    throw new AttnscopeError(`${JSON.stringify(file)}: invalid ${what}`);
  }
  return parts.join('/');
}

/** One repository's folder in the cache. */
export class RepoCache {
  readonly root: string;

  constructor(
    readonly cacheDir: string,
    readonly repoId: string,
  ) {
    this.root = path.join(path.resolve(cacheDir), repoFolderName(repoId));
  }

  snapshotDir(commit: string): string {
    return path.join(this.root, 'snapshots', commit);
  }

  snapshotFile(commit: string, file: string): string {
    return path.join(this.snapshotDir(commit), ...file.split('/'));
  }

  blobPath(etag: string): string {
    return path.join(this.root, 'blobs', etag);
  }

  private refPath(revision: string): string {
    return path.join(this.root, 'refs', ...checkRepoPath(revision, 'revision').split('/'));
  }

  private noExistPath(commit: string, file: string): string {
    return path.join(this.root, '.no_exist', commit, ...file.split('/'));
  }

  async readRef(revision: string): Promise<string | undefined> {
    try {
      const commit = (await fs.readFile(this.refPath(revision), 'utf8')).trim();
      return commit || undefined;
    } catch {
      return undefined;
    }
  }

  /** Records that `revision` points to `commit` (nothing to record when it is that commit). */
  async writeRef(revision: string, commit: string): Promise<void> {
    if (revision === commit || (await this.readRef(revision)) === commit) return;
    await writeAtomic(this.refPath(revision), commit);
  }

  /**
   * The commit a revision resolves to in the cache, as huggingface_hub finds it: the ref file if
   * there is one, else a snapshot folder named by the revision itself (a commit hash).
   */
  async resolveCommit(revision: string): Promise<string | undefined> {
    const fromRef = await this.readRef(revision);
    if (fromRef) return fromRef;
    if (!isCommitHash(revision)) return undefined;
    return (await isDirectory(this.snapshotDir(revision))) ? revision : undefined;
  }

  /**
   * What the cache knows about `file` at `commit`: its path, `null` when the Hub said it does not
   * exist, undefined when the cache does not know.
   */
  async lookup(commit: string, file: string): Promise<string | null | undefined> {
    const pointer = this.snapshotFile(commit, file);
    if (await isFile(pointer)) return pointer;
    if (await exists(this.noExistPath(commit, file))) return null;
    return undefined;
  }

  async markMissing(commit: string, file: string): Promise<void> {
    const marker = this.noExistPath(commit, file);
    await fs.mkdir(path.dirname(marker), { recursive: true });
    await fs.writeFile(marker, '');
  }

  /** A temporary name in `blobs/` for a download of the blob `etag` (renamed once complete). */
  async tempBlobPath(etag: string): Promise<string> {
    await fs.mkdir(path.join(this.root, 'blobs'), { recursive: true });
    return `${this.blobPath(etag)}.${process.pid}-${randomBytes(4).toString('hex')}.incomplete`;
  }

  /**
   * Makes `snapshots/<commit>/<file>` point to `blobs/<etag>` (a relative symlink; where symlinks
   * are not allowed, a hard link or else a copy) and returns its path.
   */
  async linkBlob(commit: string, file: string, etag: string, symlinks = true): Promise<string> {
    const pointer = this.snapshotFile(commit, file);
    const blob = this.blobPath(etag);
    await fs.mkdir(path.dirname(pointer), { recursive: true });
    const temp = `${pointer}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
    try {
      if (!symlinks) throw new Error('symlinks disabled');
      await fs.symlink(path.relative(path.dirname(pointer), blob), temp);
    } catch {
      await fs.link(blob, temp).catch(() => fs.copyFile(blob, temp));
    }
    try {
      await fs.rename(temp, pointer);
    } catch (error) {
      await fs.rm(temp, { force: true });
      throw error;
    }
    return pointer;
  }
}

async function writeAtomic(file: string, content: string): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  const temp = `${file}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
  await fs.writeFile(temp, content);
  await fs.rename(temp, file);
}

export async function exists(p: string): Promise<boolean> {
  try {
    await fs.stat(p);
    return true;
  } catch {
    return false;
  }
}

export async function isFile(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isFile();
  } catch {
    return false;
  }
}

export async function isDirectory(p: string): Promise<boolean> {
  try {
    return (await fs.stat(p)).isDirectory();
  } catch {
    return false;
  }
}
