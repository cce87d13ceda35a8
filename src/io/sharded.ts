/**
 * Sharded checkpoints: `model.safetensors.index.json` or `pytorch_model.bin.index.json`, whose
 * `weight_map` names the shard file holding each tensor. One WeightStore over all the shards.
 */
import { readFile, stat } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { AttnscopeError, quote, sanitize } from '../core/errors.js';
import type { FloatTensor } from '../core/tensor.js';
import type { StoredDType, WeightStore } from './weights.js';

/** Reads `<index>.json` and returns its weight_map (tensor name → shard file, relative to the index). */
export async function readWeightMap(indexPath: string): Promise<Map<string, string>> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(indexPath, 'utf8'));
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message;
    throw new AttnscopeError(`${indexPath}: cannot read shard index (${sanitize(why, 200)})`, { cause: err });
  }
  const weightMap = (parsed as { weight_map?: unknown } | null)?.weight_map;
  if (typeof weightMap !== 'object' || weightMap === null || Array.isArray(weightMap)) {
    throw new AttnscopeError(`${indexPath}: shard index has no weight_map object`);
  }
  const out = new Map<string, string>();
  for (const [name, file] of Object.entries(weightMap)) {
    if (typeof file !== 'string' || !isPlainRelative(file)) {
      throw new AttnscopeError(`${indexPath}: weight_map entry ${quote(name)} names an invalid shard file ${quote(file)}`);
    }
    out.set(name, file);
  }
  if (out.size === 0) throw new AttnscopeError(`${indexPath}: weight_map is empty`);
  return out;
}

/** A shard name must stay inside the model directory. */
function isPlainRelative(file: string): boolean {
  return file.length > 0 && !isAbsolute(file) && !file.includes('\\') && file.split('/').every((s) => s !== '' && s !== '..' && s !== '.');
}

async function resolveNextToIndex(indexPath: string, file: string): Promise<string | undefined> {
  const path = join(dirname(indexPath), file);
  try {
    return (await stat(path)).isFile() ? path : undefined;
  } catch {
    return undefined;
  }
}

export interface ShardedOptions {
  /** Opens one shard file (e.g. openSafetensors or openPytorchBin). */
  openShard: (path: string) => Promise<WeightStore>;
  /**
   * Absolute path of a shard named in the index (downloading it if needed); undefined when
   * missing. Defaults to the file next to the index.
   */
  resolve?: (file: string) => Promise<string | undefined>;
}

class ShardedWeightStore implements WeightStore {
  constructor(
    private readonly label: string,
    private readonly owner: ReadonlyMap<string, WeightStore>,
    private readonly shards: readonly WeightStore[],
  ) {}

  private store(name: string): WeightStore {
    const store = this.owner.get(name);
    if (!store) throw new AttnscopeError(`${this.label}: no tensor named ${quote(name)}`);
    return store;
  }

  names(): string[] {
    return [...this.owner.keys()];
  }
  has(name: string): boolean {
    return this.owner.has(name);
  }
  shape(name: string): number[] {
    return this.store(name).shape(name);
  }
  dtype(name: string): StoredDType {
    return this.store(name).dtype(name);
  }
  get(name: string): Promise<FloatTensor> {
    return this.store(name).get(name);
  }
  async close(): Promise<void> {
    await Promise.all(this.shards.map((s) => s.close()));
  }
}

/** Opens every shard named by a shard index and checks that each holds the tensors mapped to it. */
export async function openSharded(indexPath: string, options: ShardedOptions): Promise<WeightStore> {
  const weightMap = await readWeightMap(indexPath);
  const resolve = options.resolve ?? ((file: string) => resolveNextToIndex(indexPath, file));
  const byFile = new Map<string, WeightStore>();
  try {
    for (const file of new Set(weightMap.values())) {
      const path = await resolve(file);
      if (!path) throw new AttnscopeError(`${indexPath}: shard ${quote(file)} is missing`);
      byFile.set(file, await options.openShard(path));
    }
    const owner = new Map<string, WeightStore>();
    for (const [name, file] of weightMap) {
      const store = byFile.get(file)!;
      if (!store.has(name)) {
        throw new AttnscopeError(`${indexPath}: tensor ${quote(name)} is mapped to ${quote(file)}, which does not contain it`);
      }
      owner.set(name, store);
    }
    return new ShardedWeightStore(indexPath, owner, [...byFile.values()]);
  } catch (err) {
    await Promise.all([...byFile.values()].map((s) => s.close()));
    throw err;
  }
}
