/**
 * The models `attnscope serve` offers, and the only ways a request can name one:
 *
 * - `default`: the embedded model;
 * - `folder:<n>/<relative path>`: a checkpoint found under the n-th `--models` folder. Only what
 *   the scan listed is ever opened: the requested id must be one the scan produced (ids are
 *   compared as strings; nothing in a request is joined to a path), and the scan lists only
 *   directories whose real path (symlinks resolved) lies inside the folder's real path;
 * - a Hub id (`org/name[@revision]`): through the Hugging Face cache, downloaded when missing;
 *   never looked up as a local path.
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { AttnscopeError } from '../core/errors.js';
import { defaultModelDir } from '../default-model.js';
import { defaultHubCacheDir, isFile, type Env } from '../io/hf-cache.js';
import { parseHubId, type HubId } from '../io/model-source.js';
import type { ModelEntry } from './protocol.js';

/** Where a request's model is read from. */
export type ModelLocation =
  | { kind: 'dir'; id: string; label: string; dir: string }
  | { kind: 'hub'; id: string; label: string; hub: HubId };

/** How deep the scan of a `--models` folder goes. */
const MAX_DEPTH = 4;
/** Most checkpoints listed per folder (a folder of thousands is cut, not scanned forever). */
const MAX_PER_FOLDER = 500;
/** Longest model id accepted in a request. */
export const MAX_MODEL_ID = 300;

interface Found {
  entry: ModelEntry;
  location: ModelLocation;
}

export interface CatalogOptions {
  /** `--models` folders. */
  folders: readonly string[];
  /** Whether the embedded model is offered (default true). */
  embedded?: boolean;
  /** List the Hugging Face cache (default true). */
  hfCache?: boolean;
  env?: Env;
}

/** Whether `child` is `root` or inside it (both absolute, resolved). */
export function isInside(root: string, child: string): boolean {
  const rel = path.relative(root, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel) && !rel.split(path.sep).includes('..'));
}

async function modelType(dir: string): Promise<string | undefined> {
  try {
    const raw: unknown = JSON.parse(await fs.readFile(path.join(dir, 'config.json'), 'utf8'));
    const t = (raw as { model_type?: unknown }).model_type;
    return typeof t === 'string' ? t : undefined;
  } catch {
    return undefined;
  }
}

export class ModelCatalog {
  private found = new Map<string, Found>();
  private roots: string[] = [];
  private scanning: Promise<void> | null = null;
  private scannedAt = 0;

  constructor(private readonly options: CatalogOptions) {}

  /** The folders' real paths (refused at start when one is missing). */
  async init(): Promise<void> {
    this.roots = [];
    for (const folder of this.options.folders) {
      const real = await fs.realpath(path.resolve(folder)).catch(() => undefined);
      if (!real || !(await fs.stat(real)).isDirectory()) throw new AttnscopeError(`--models ${folder}: not a directory`);
      this.roots.push(real);
    }
    await this.refresh();
  }

  /** Scans again (at most once a second; concurrent callers share a scan). */
  async refresh(): Promise<void> {
    if (this.scanning) return this.scanning;
    if (Date.now() - this.scannedAt < 1000) return;
    this.scanning = this.scan().finally(() => {
      this.scanning = null;
      this.scannedAt = Date.now();
    });
    return this.scanning;
  }

  list(): ModelEntry[] {
    return [...this.found.values()].map((f) => f.entry);
  }

  /**
   * Where the model a request names is read from, or an AttnscopeError saying why it is refused.
   * Nothing in `id` is ever turned into a file path.
   */
  async locate(id: string): Promise<ModelLocation> {
    if (id.length === 0 || id.length > MAX_MODEL_ID) throw new AttnscopeError(`model: an id of 1 to ${MAX_MODEL_ID} characters`);
    let known = this.found.get(id);
    if (!known && !id.startsWith('folder:') && id !== 'default' && !id.startsWith('hf:')) {
      const hub = parseHubId(id);
      if (hub && /^[\w.\-/]+$/.test(hub.revision ?? 'main') && !(hub.revision ?? '').includes('..')) {
        return { kind: 'hub', id, label: id, hub };
      }
    }
    if (!known) {
      await this.refresh();
      known = this.found.get(id);
    }
    if (!known) throw new AttnscopeError(`model: ${JSON.stringify(id.slice(0, 80))} is not offered by this server (GET /api/models lists them; Hub ids look like org/name)`);
    return known.location;
  }

  private async scan(): Promise<void> {
    const found = new Map<string, Found>();
    if (this.options.embedded !== false) {
      const dir = defaultModelDir();
      found.set('default', {
        entry: { id: 'default', label: `default (${path.basename(dir)}, embedded)`, origin: 'default', ...(await typeField(dir)) },
        location: { kind: 'dir', id: 'default', label: path.basename(dir), dir },
      });
    }
    for (const [n, root] of this.roots.entries()) {
      const dirs: string[] = [];
      await walk(root, root, 0, dirs);
      for (const dir of dirs.sort()) {
        const rel = path.relative(root, dir).split(path.sep).join('/');
        const id = `folder:${n}/${rel}`;
        const label = `${rel || path.basename(root)}`;
        found.set(id, { entry: { id, label, origin: 'folder', ...(await typeField(dir)) }, location: { kind: 'dir', id, label, dir } });
      }
    }
    if (this.options.hfCache !== false) {
      for (const f of await hfCacheModels(defaultHubCacheDir(this.options.env))) found.set(f.entry.id, f);
    }
    this.found = found;
  }
}

async function typeField(dir: string): Promise<{ modelType?: string }> {
  const t = await modelType(dir);
  return t ? { modelType: t } : {};
}

/** Checkpoint directories (holding config.json) under `dir`, real paths inside `root` only. */
async function walk(root: string, dir: string, depth: number, out: string[]): Promise<void> {
  if (out.length >= MAX_PER_FOLDER) return;
  const real = await fs.realpath(dir).catch(() => undefined);
  if (!real || !isInside(root, real)) return;
  if (await isFile(path.join(real, 'config.json'))) {
    const config = await fs.realpath(path.join(real, 'config.json')).catch(() => undefined);
    // config.json itself may be a symlink out of the folder: such a checkpoint is not listed.
    if (config && isInside(root, config)) out.push(real);
    return;
  }
  if (depth >= MAX_DEPTH) return;
  const entries = await fs.readdir(real, { withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (e.name.startsWith('.') || e.name === 'node_modules') continue;
    if (e.isDirectory() || e.isSymbolicLink()) await walk(root, path.join(real, e.name), depth + 1, out);
  }
}

/** Models of the Hugging Face cache with a snapshot holding config.json (`main`, else the newest). */
async function hfCacheModels(cacheDir: string): Promise<Found[]> {
  const entries = await fs.readdir(cacheDir, { withFileTypes: true }).catch(() => []);
  const out: Found[] = [];
  for (const e of entries) {
    if (!e.isDirectory() || !e.name.startsWith('models--')) continue;
    const repoId = e.name.slice('models--'.length).split('--').join('/');
    const hub = parseHubId(repoId);
    if (!hub) continue;
    const repo = path.join(cacheDir, e.name);
    const main = await fs.readFile(path.join(repo, 'refs', 'main'), 'utf8').catch(() => undefined);
    const snapshots = await fs.readdir(path.join(repo, 'snapshots')).catch(() => [] as string[]);
    const commit = main?.trim() && snapshots.includes(main.trim()) ? main.trim() : snapshots.sort()[0];
    if (!commit || !/^[0-9a-f]{40}$/.test(commit)) continue;
    const dir = path.join(repo, 'snapshots', commit);
    if (!(await isFile(path.join(dir, 'config.json')))) continue;
    const id = main?.trim() === commit ? repoId : `${repoId}@${commit}`;
    out.push({
      entry: { id, label: `${repoId} (Hugging Face cache)`, origin: 'hf-cache', ...(await typeField(dir)) },
      location: { kind: 'hub', id, label: repoId, hub: main?.trim() === commit ? { repoId } : { repoId, revision: commit } },
    });
  }
  return out;
}

/** A revision stamp of a local checkpoint: names, sizes and modification times of its files. */
export async function dirRevision(dir: string): Promise<string> {
  const hash = createHash('sha256');
  const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const st = await fs.stat(path.join(dir, e.name)).catch(() => undefined);
    if (st?.isFile()) hash.update(`${e.name}\0${st.size}\0${st.mtimeMs}\n`);
  }
  return hash.digest('hex').slice(0, 16);
}

/** Bytes of the weight files of a checkpoint directory (the memory a loaded model is counted for). */
export async function weightBytes(dir: string): Promise<number> {
  let total = 0;
  const entries = await fs.readdir(dir).catch(() => [] as string[]);
  for (const name of entries) {
    if (!/\.(safetensors|bin|pt|pth|onnx|gguf)$/.test(name)) continue;
    const st = await fs.stat(path.join(dir, name)).catch(() => undefined);
    if (st?.isFile()) total += st.size;
  }
  return total;
}
