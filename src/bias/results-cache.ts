/**
 * Benchmark results kept between runs, per checkpoint: a JSON file beside the checkpoint's graphs
 * in the graph cache (<root>/<checkpoint key>/bias-<name>.json, see io/graph-cache.ts), so it is
 * listed, pruned and cleared with them (`attnscope cache`), and a changed checkpoint (other
 * files, sizes or times) gets a new key and nothing stale. ATTNSCOPE_CACHE=off disables it.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkpointCacheDir, graphCacheRoot } from '../io/graph-cache.js';
import type { PairScores } from '../analysis/bias/crows-pairs.js';
import type { PairScoreCache } from './crows-pairs.js';

const FORMAT = 'attnscope-bias-results';
const VERSION = 1;

export class ResultsCache implements PairScoreCache {
  private readonly entries = new Map<string, PairScores>();
  private dirty = 0;

  private constructor(readonly path: string) {}

  /** The cache of `name` for the checkpoint in `modelDir`, or null when caching is off. */
  static async open(modelDir: string, modelType: string, name: string, env: NodeJS.ProcessEnv = process.env): Promise<ResultsCache | null> {
    const root = graphCacheRoot(env);
    if (!root) return null;
    const dir = await checkpointCacheDir(root, modelDir, modelType);
    const cache = new ResultsCache(join(dir, `bias-${name}.json`));
    try {
      const raw = JSON.parse(await readFile(cache.path, 'utf8')) as { format?: unknown; version?: unknown; entries?: unknown };
      if (raw.format === FORMAT && raw.version === VERSION && raw.entries && typeof raw.entries === 'object') {
        for (const [k, v] of Object.entries(raw.entries as Record<string, unknown>)) {
          if (Array.isArray(v) && v.length === 2 && typeof v[0] === 'number' && typeof v[1] === 'number') cache.entries.set(k, { sent1: v[0], sent2: v[1] });
        }
      }
    } catch {
      // no cache yet, or a damaged one: start empty
    }
    return cache;
  }

  get(key: string): PairScores | undefined {
    return this.entries.get(key);
  }

  set(key: string, scores: PairScores): void {
    this.entries.set(key, scores);
    this.dirty++;
  }

  /** Entries added since the last save. */
  get unsaved(): number {
    return this.dirty;
  }

  /** Writes the cache (through a temporary file); a cache that cannot be written only costs the next run time. */
  async save(): Promise<void> {
    if (this.dirty === 0) return;
    const body = JSON.stringify({ format: FORMAT, version: VERSION, entries: Object.fromEntries([...this.entries].map(([k, v]) => [k, [v.sent1, v.sent2]])) });
    const tmp = `${this.path}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
    try {
      await mkdir(join(this.path, '..'), { recursive: true });
      await writeFile(tmp, body);
      await rename(tmp, this.path);
      this.dirty = 0;
    } catch {
      await unlink(tmp).catch(() => undefined);
    }
  }
}
