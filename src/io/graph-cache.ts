/**
 * The graph cache: a model's ONNX graph and its prepared weights (transposed for MatMul) kept on
 * disk, so the next run of the same checkpoint reads nothing through JavaScript: onnxruntime
 * memory-maps the weight files and the session is ready in a fraction of the time. The first run
 * prepares the cache by streaming the weights into it one at a time, then opens it the same way.
 * Layer-by-layer runs read the weights they feed their shared segments from the same files
 * (readCachedWeight), so they transpose nothing after the first run either.
 *
 *   <root>/<checkpoint key>/<graph hash>.onnx      one per set of taps
 *   <root>/<checkpoint key>/<weight file>.bin      shared by every graph of that checkpoint
 *
 *   <root>/<checkpoint key>/checkpoint.json     what the checkpoint is; its modification time is
 *                                              when the checkpoint was last used (for LRU eviction)
 *
 * The checkpoint key hashes the checkpoint's files (names, sizes, modification times) and the
 * cache format; the graph hash is the hash of the encoded graph itself, so a change in attnscope
 * that changes a graph never reuses a stale one. Every file is written to a temporary name and
 * renamed, so a file in the cache is always complete.
 *
 * The cache is bounded: after each write, the least recently used checkpoints are removed until
 * the whole cache fits its cap ($ATTNSCOPE_CACHE_MAX, default 20 GB); the one just used stays.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { AttnscopeError } from '../core/errors.js';
import type { BuiltModel, ExternalWeight } from '../graph/builder.js';

/** Bumped when the layout or the meaning of cached files changes (2: 16-bit weights kept 16-bit). */
const CACHE_FORMAT = 2;

/** The file describing a cached checkpoint; its modification time is the checkpoint's last use. */
const USAGE_FILE = 'checkpoint.json';

/** Default size cap of the whole cache. */
export const DEFAULT_CACHE_MAX = 20e9;

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12, kib: 2 ** 10, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };

/** Parses a size such as "20GB", "500 MB", "1.5g", "2GiB" or a byte count; `what` names the setting in errors. */
export function parseSize(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(text);
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined) throw new AttnscopeError(`${what}: expected a size such as 20GB, 500MB or a number of bytes, got '${text.slice(0, 40)}'`);
  return Math.round(Number(m[1]) * unit);
}

/** The cache's size cap: $ATTNSCOPE_CACHE_MAX, else 20 GB. */
export function graphCacheMax(env: NodeJS.ProcessEnv = process.env): number {
  const setting = env.ATTNSCOPE_CACHE_MAX;
  return setting ? parseSize(setting, 'ATTNSCOPE_CACHE_MAX') : DEFAULT_CACHE_MAX;
}

/** What checkpointCacheDir was told about each checkpoint directory, written into it with the first graph. */
const described = new Map<string, { source: string; modelType: string }>();

/** config.json and the checkpoint's weight files (single, sharded, or their index), by Hugging Face's names. */
const CHECKPOINT_FILE = /^(config\.json|(model|pytorch_model)([-.][\w-]+)?\.(safetensors|bin)|(model\.safetensors|pytorch_model\.bin)\.index\.json)$/;

/**
 * Where graphs are cached: $ATTNSCOPE_CACHE, else $XDG_CACHE_HOME/attnscope/graphs, else
 * ~/.cache/attnscope/graphs; undefined when ATTNSCOPE_CACHE is 'off' (or '0').
 */
export function graphCacheRoot(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const setting = env.ATTNSCOPE_CACHE;
  if (setting === 'off' || setting === '0' || setting === 'false') return undefined;
  if (setting) return setting;
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'attnscope', 'graphs');
}

const sha256 = (data: string | Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** The cache directory of the checkpoint in `modelDir` (its config and weight files' names, sizes and times). */
export async function checkpointCacheDir(root: string, modelDir: string, modelType: string): Promise<string> {
  const entries = (await readdir(modelDir)).filter((name) => CHECKPOINT_FILE.test(name)).sort();
  const parts: string[] = [];
  for (const name of entries) {
    const s = await stat(join(modelDir, name)); // follows the Hub cache's symlinks to the blobs
    parts.push(`${name}:${s.size}:${s.mtimeMs}`);
  }
  const dir = join(root, sha256(JSON.stringify({ format: CACHE_FORMAT, modelType, files: parts })).slice(0, 32));
  described.set(dir, { source: modelDir, modelType });
  return dir;
}

/** Marks the checkpoint in `dir` as just used (creating its description if missing). */
async function touch(dir: string): Promise<void> {
  const path = join(dir, USAGE_FILE);
  const now = new Date();
  try {
    await utimes(path, now, now);
  } catch {
    const info = described.get(dir) ?? { source: 'unknown', modelType: 'unknown' };
    await writeAtomically(path, new TextEncoder().encode(`${JSON.stringify({ ...info, format: CACHE_FORMAT })}\n`));
  }
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}

/** Writes `data` to `path` through a temporary file in the same directory. */
async function writeAtomically(path: string, data: Uint8Array): Promise<void> {
  const tmp = `${path}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, data);
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
}

const modelPathOf = (dir: string, built: BuiltModel): string => join(dir, `${sha256(built.model).slice(0, 32)}.onnx`);

/**
 * The cached model file of `built` in `dir` when all its weight files are complete there
 * (writing the small model file itself if only it is missing, e.g. for a new set of taps);
 * undefined when weights are missing.
 */
export async function findCachedModel(dir: string, built: BuiltModel): Promise<string | undefined> {
  for (const weight of built.external) {
    if ((await sizeOf(join(dir, weight.path))) !== weight.byteLength) return undefined;
  }
  const modelPath = modelPathOf(dir, built);
  if ((await sizeOf(modelPath)) !== built.model.length) await writeAtomically(modelPath, built.model);
  await touch(dir).catch(() => undefined);
  return modelPath;
}

/**
 * Writes the model file of `built` and whichever of its weight files are missing into `dir`, one
 * weight at a time (each read by its `load`, written, and let go before the next is read: peak
 * memory near the largest weight, whatever the size of the model). The model file is written
 * last, so its presence means the whole graph is there.
 */
export async function writeCachedModel(dir: string, built: BuiltModel): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const weight of built.external) {
    const path = join(dir, weight.path);
    if ((await sizeOf(path)) !== weight.byteLength) await writeAtomically(path, await weight.load());
  }
  const modelPath = modelPathOf(dir, built);
  if ((await sizeOf(modelPath)) !== built.model.length) await writeAtomically(modelPath, built.model);
  await touch(dir);
  await pruneGraphCache(join(dir, '..'), graphCacheMax(), dir);
  return modelPath;
}

/**
 * The bytes of one prepared weight (transposed for MatMul, in its stored dtype) from its file in
 * `dir`, read there when it is complete; otherwise prepared by its `load` (the checkpoint read,
 * transposed) and written into `dir` for the next read. What a layer-by-layer run feeds its shared
 * segments each run (engine/layerwise.ts), so that no run but the first transposes a weight.
 */
export async function readCachedWeight(dir: string, weight: ExternalWeight): Promise<Uint8Array> {
  const path = join(dir, weight.path);
  if ((await sizeOf(path)) === weight.byteLength) {
    const data = await readFile(path);
    if (data.byteLength === weight.byteLength) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  const data = await weight.load();
  // (A cache that cannot be written only costs the next run time.)
  await mkdir(dir, { recursive: true }).then(() => writeAtomically(path, data)).catch(() => undefined);
  return data;
}

/** One cached checkpoint. */
export interface CachedCheckpoint {
  /** Its directory in the cache. */
  dir: string;
  /** Bytes of all its files. */
  bytes: number;
  /** When it was last used (ms since the epoch). */
  lastUsed: number;
  /** The checkpoint directory it was prepared from, and its model type, when known. */
  source?: string;
  modelType?: string;
  /** Graphs (sets of taps) cached for it. */
  graphs: number;
}

/** Every checkpoint in the cache at `root`, most recently used first. */
export async function listGraphCache(root: string): Promise<CachedCheckpoint[]> {
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return [];
  }
  const out: CachedCheckpoint[] = [];
  for (const name of names) {
    // Only directories named like checkpoint keys: the cache root may be set to a shared folder.
    if (!/^[0-9a-f]{32}$/.test(name)) continue;
    const dir = join(root, name);
    let files: string[];
    try {
      if (!(await stat(dir)).isDirectory()) continue;
      files = await readdir(dir);
    } catch {
      continue;
    }
    let bytes = 0;
    let newest = 0;
    let graphs = 0;
    for (const f of files) {
      const s = await stat(join(dir, f)).catch(() => undefined);
      if (!s) continue;
      bytes += s.size;
      newest = Math.max(newest, s.mtimeMs);
      if (f.endsWith('.onnx')) graphs++;
    }
    const entry: CachedCheckpoint = { dir, bytes, lastUsed: newest, graphs };
    const usage = await stat(join(dir, USAGE_FILE)).catch(() => undefined);
    if (usage) {
      entry.lastUsed = usage.mtimeMs;
      try {
        const info = JSON.parse(await readFile(join(dir, USAGE_FILE), 'utf8')) as { source?: unknown; modelType?: unknown };
        if (typeof info.source === 'string') entry.source = info.source;
        if (typeof info.modelType === 'string') entry.modelType = info.modelType;
      } catch {
        // a damaged description: the sizes still count
      }
    }
    out.push(entry);
  }
  return out.sort((a, b) => b.lastUsed - a.lastUsed);
}

/**
 * Removes least recently used checkpoints from the cache at `root` until it holds at most
 * `maxBytes` (never `keep`, the one in use), and temporary files left by interrupted writes.
 * Returns what was removed.
 */
export async function pruneGraphCache(root: string, maxBytes: number, keep?: string): Promise<CachedCheckpoint[]> {
  const entries = await listGraphCache(root);
  for (const e of entries) {
    for (const f of await readdir(e.dir).catch(() => [] as string[])) {
      // Another process may be writing: only temporary files older than an hour are leftovers.
      const path = join(e.dir, f);
      if (f.endsWith('.tmp') && Date.now() - ((await stat(path).catch(() => undefined))?.mtimeMs ?? Date.now()) > 3600e3) await unlink(path).catch(() => undefined);
    }
  }
  let total = entries.reduce((n, e) => n + e.bytes, 0);
  const removed: CachedCheckpoint[] = [];
  for (const e of [...entries].reverse()) {
    if (total <= maxBytes) break;
    if (keep !== undefined && join(e.dir) === join(keep)) continue;
    await rm(e.dir, { recursive: true, force: true });
    total -= e.bytes;
    removed.push(e);
  }
  return removed;
}

/** Removes every cached checkpoint under `root`; returns what was removed. */
export async function clearGraphCache(root: string): Promise<CachedCheckpoint[]> {
  const entries = await listGraphCache(root);
  for (const e of entries) await rm(e.dir, { recursive: true, force: true });
  return entries;
}
