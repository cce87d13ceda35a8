/**
 * The graph cache: a model's ONNX graph and its prepared weights (transposed for MatMul) kept on
 * disk, so the next run of the same checkpoint reads nothing through JavaScript: onnxruntime
 * memory-maps the weight files and the session is ready in a fraction of the time.
 *
 *   <root>/<checkpoint key>/<graph hash>.onnx      one per set of taps
 *   <root>/<checkpoint key>/<weight file>.bin      shared by every graph of that checkpoint
 *
 * The checkpoint key hashes the checkpoint's files (names, sizes, modification times) and the
 * cache format; the graph hash is the hash of the encoded graph itself, so a change in attnscope
 * that changes a graph never reuses a stale one. Every file is written to a temporary name and
 * renamed, so a file in the cache is always complete.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { BuiltModel } from '../graph/builder.js';

/** Bumped when the layout or the meaning of cached files changes. */
const CACHE_FORMAT = 1;

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
  return join(root, sha256(JSON.stringify({ format: CACHE_FORMAT, modelType, files: parts })).slice(0, 32));
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
  return modelPath;
}

/**
 * Writes the model file of `built` and whichever of its weight files are missing into `dir`
 * (the weights' data comes from `load`, read once however often it is asked for). The model
 * file is written last, so its presence means the whole graph is there.
 */
export async function writeCachedModel(dir: string, built: BuiltModel): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const weight of built.external) {
    const path = join(dir, weight.path);
    if ((await sizeOf(path)) !== weight.byteLength) await writeAtomically(path, await weight.load());
  }
  const modelPath = modelPathOf(dir, built);
  if ((await sizeOf(modelPath)) !== built.model.length) await writeAtomically(modelPath, built.model);
  return modelPath;
}
