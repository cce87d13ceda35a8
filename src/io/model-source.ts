/**
 * Turns what the user typed as a model (a directory, or a Hub id like `org/name@revision`) into
 * ModelFiles. Hub models go through the Hugging Face cache shared with Python: a cached snapshot
 * is used without touching the network; missing files are downloaded on demand.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { AttnscopeError } from '../core/errors.js';
import {
  checkRepoPath,
  defaultHubCacheDir,
  expandHome,
  isFile,
  offlineFromEnv,
  RepoCache,
  tokenFromEnv,
  type Env,
} from './hf-cache.js';
import { DEFAULT_ENDPOINT, downloadHubFile, type HubSettings } from './hub-download.js';
import type { ModelFiles } from './model-files.js';
import type { ProgressStream } from './progress.js';

export interface ModelSourceOptions {
  /** Branch, tag or commit of a Hub model (default `main`; an `@revision` suffix also works). */
  readonly revision?: string;
  /** Use only the cache, never the network (default: `$HF_HUB_OFFLINE`). */
  readonly offline?: boolean;
  /** Hugging Face cache directory (default: `$HF_HUB_CACHE`, `$HF_HOME/hub`, `~/.cache/huggingface/hub`). */
  readonly cacheDir?: string;
  /** Hub URL (default: `$HF_ENDPOINT` or https://huggingface.co). */
  readonly endpoint?: string;
  /** Access token for gated or private models (default: `$HF_TOKEN`, or the `huggingface-cli login` token). */
  readonly token?: string;
  /** Download progress bar on stderr: true forces it, false disables it (default: on a terminal, for large files). */
  readonly progress?: boolean;
  /** Where the defaults above are read from (default: process.env). */
  readonly env?: Env;
  /** Where the progress bar is drawn (default: stderr); `attnscope serve` forwards it to the page. */
  readonly progressStream?: ProgressStream;
}

/** A Hub model id with its optional `@revision` suffix. */
export interface HubId {
  readonly repoId: string;
  readonly revision?: string;
}

const NAME = String.raw`\w(?:[\w.-]*\w)?`;
const HUB_ID = new RegExp(`^((?:${NAME}/)?${NAME})(?:@(.+))?$`);

/** Parses `org/name`, `name`, with an optional `@revision`; undefined when it is not such an id. */
export function parseHubId(source: string): HubId | undefined {
  const match = HUB_ID.exec(source);
  if (!match) return undefined;
  const repoId = match[1] as string;
  const name = repoId.slice(repoId.indexOf('/') + 1);
  if (repoId.includes('--') || repoId.includes('..') || name.length > 96 || repoId.endsWith('.git')) return undefined;
  return match[2] === undefined ? { repoId } : { repoId, revision: match[2] };
}

/**
 * Resolves a model source: an existing local directory (which must hold config.json), else a Hub
 * id, looked up in the Hugging Face cache and downloaded from the Hub when needed.
 */
export async function resolveModelSource(source: string, options: ModelSourceOptions = {}): Promise<ModelFiles> {
  const local = path.resolve(expandHome(source));
  const stat = await fs.stat(local).catch(() => undefined);
  if (stat) {
    if (!stat.isDirectory()) throw new AttnscopeError(`${source}: not a model directory (it is a file)`);
    if (!(await isFile(path.join(local, 'config.json')))) {
      throw new AttnscopeError(`${source}: not a model directory (no config.json)`);
    }
    return new LocalModelFiles(path.basename(local), local);
  }
  const id = parseHubId(source);
  if (!id) throw new AttnscopeError(`${source}: no such file or directory`);
  if (id.revision !== undefined && options.revision !== undefined && id.revision !== options.revision) {
    throw new AttnscopeError(`${source}: two different revisions given (@${id.revision} and ${options.revision})`);
  }
  return resolveHubModel(id.repoId, id.revision ?? options.revision ?? 'main', options);
}

/** A Hub model (never a local path), from the cache or downloaded. */
export async function resolveHubModel(repoId: string, revision: string, options: ModelSourceOptions): Promise<ModelFiles> {
  const env = options.env ?? process.env;
  const offline = options.offline ?? offlineFromEnv(env);
  const hub = await hubSettings(options, env, offline);
  const cache = new RepoCache(hub.cacheDir, repoId);
  const label = revision === 'main' ? repoId : `${repoId}@${revision}`;
  checkRepoPath(revision, 'revision');

  const cachedCommit = await cache.resolveCommit(revision);
  if (cachedCommit) {
    const config = await cache.lookup(cachedCommit, 'config.json');
    if (typeof config === 'string') return new HubModelFiles(repoId, cache, cachedCommit, offline ? undefined : hub);
    if (config === null && offline) throw new AttnscopeError(`${label}: not a model repository (no config.json)`);
  }
  if (offline) throw new AttnscopeError(`${label}: not in the Hugging Face cache and HF_HUB_OFFLINE=1`);

  const config = await downloadHubFile(hub, repoId, revision, 'config.json');
  if (!config.found) throw new AttnscopeError(`${label}: not a model repository (no config.json)`);
  return new HubModelFiles(repoId, cache, config.commit, hub);
}

async function hubSettings(options: ModelSourceOptions, env: Env, offline: boolean): Promise<HubSettings> {
  const timeout = Number(env.HF_HUB_DOWNLOAD_TIMEOUT);
  return {
    endpoint: (options.endpoint ?? env.HF_ENDPOINT ?? DEFAULT_ENDPOINT).replace(/\/+$/, ''),
    token: (options.token ?? (offline ? undefined : await tokenFromEnv(env))) || undefined,
    cacheDir: path.resolve(options.cacheDir ?? defaultHubCacheDir(env)),
    timeoutMs: timeout > 0 ? timeout * 1000 : 10_000,
    progress: options.progress,
    env,
    ...(options.progressStream ? { progressStream: options.progressStream } : {}),
  };
}

class LocalModelFiles implements ModelFiles {
  constructor(
    readonly name: string,
    readonly dir: string,
  ) {}

  async path(file: string): Promise<string | undefined> {
    const p = path.join(this.dir, ...checkRepoPath(file).split('/'));
    return (await isFile(p)) ? p : undefined;
  }
}

/** A snapshot of a Hub model; `hub` is undefined when offline (only cached files are found). */
class HubModelFiles implements ModelFiles {
  readonly dir: string;
  private readonly pending = new Map<string, Promise<string | undefined>>();

  constructor(
    readonly name: string,
    private readonly cache: RepoCache,
    private readonly commit: string,
    private readonly hub: HubSettings | undefined,
  ) {
    this.dir = cache.snapshotDir(commit);
  }

  async path(file: string): Promise<string | undefined> {
    const name = checkRepoPath(file);
    let result = this.pending.get(name);
    if (!result) {
      result = this.find(name);
      this.pending.set(name, result);
      result.catch(() => this.pending.delete(name));
    }
    return result;
  }

  private async find(file: string): Promise<string | undefined> {
    const known = await this.cache.lookup(this.commit, file);
    if (known !== undefined || !this.hub) return known ?? undefined;
    const downloaded = await downloadHubFile(this.hub, this.name, this.commit, file);
    return downloaded.found ? downloaded.path : undefined;
  }
}
