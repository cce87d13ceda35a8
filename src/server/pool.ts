/**
 * The models the server holds in memory: one load at a time per model (requests for a model that
 * is being loaded wait for that load), the total bounded by a memory budget, the least recently
 * used idle model unloaded when a load needs the room.
 */
import path from 'node:path';
import { AttnscopeError } from '../core/errors.js';
import type { Model } from '../engine/model.js';
import { loadModel } from '../engine/load.js';
import { offlineFromEnv, type Env } from '../io/hf-cache.js';
import { resolveHubModel } from '../io/model-source.js';
import type { ModelFiles } from '../io/model-files.js';
import type { AttnTokenizer } from '../tokenizer/load-tokenizer.js';
import { abortable } from './abortable.js';
import { dirRevision, weightBytes, type ModelLocation } from './catalog.js';
import type { ProgressFrame } from './protocol.js';

/** A loaded model counts as this many times its weight files (graph session and runtime copies). */
const MEMORY_FACTOR = 2;

export interface PoolOptions {
  /** Bytes all loaded models may take together (estimated from their weight files). */
  budgetBytes: number;
  /** Graph cache directory, or false (see LoadOptions.graphCache). */
  graphCache?: string | false;
  env?: Env;
  threads?: number;
}

interface Entry {
  id: string;
  model: Model<AttnTokenizer>;
  revision: string;
  bytes: number;
  users: number;
  lastUsed: number;
}

interface Loading {
  promise: Promise<Entry>;
  listeners: Set<(p: ProgressFrame) => void>;
}

/** A model lent to one request; `release` gives it back. */
export interface Lease {
  model: Model<AttnTokenizer>;
  revision: string;
  /** Milliseconds this request waited for a load (0 when the model was in memory). */
  loadMs: number;
  release(): void;
}

export class ModelPool {
  private readonly loaded = new Map<string, Entry>();
  private readonly loading = new Map<string, Loading>();
  /** Loads started since the server started (a test reads it to see that concurrent requests share one). */
  loads = 0;
  unloads = 0;

  constructor(private readonly options: PoolOptions) {}

  isLoaded(id: string): boolean {
    return this.loaded.has(id);
  }

  get usedBytes(): number {
    let n = 0;
    for (const e of this.loaded.values()) n += e.bytes;
    return n;
  }

  /** The model at `location`, loading it (or joining the load under way). */
  async acquire(location: ModelLocation, onProgress?: (p: ProgressFrame) => void, signal?: AbortSignal): Promise<Lease> {
    const t0 = performance.now();
    let entry = this.loaded.get(location.id);
    if (!entry) {
      let loading = this.loading.get(location.id);
      if (!loading) {
        const listeners = new Set<(p: ProgressFrame) => void>();
        // The first request's listener hears the load's first message too.
        if (onProgress) listeners.add(onProgress);
        const promise = this.load(location, (p) => listeners.forEach((l) => l(p))).finally(() => this.loading.delete(location.id));
        loading = { promise, listeners };
        this.loading.set(location.id, loading);
      }
      if (onProgress) loading.listeners.add(onProgress);
      try {
        entry = await abortable(loading.promise, signal);
      } finally {
        if (onProgress) loading.listeners.delete(onProgress);
      }
    }
    entry.users++;
    entry.lastUsed = performance.now();
    let released = false;
    const e = entry;
    return {
      model: e.model,
      revision: e.revision,
      loadMs: performance.now() - t0,
      release: () => {
        if (released) return;
        released = true;
        e.users--;
        e.lastUsed = performance.now();
        void this.fit(0);
      },
    };
  }

  private async load(location: ModelLocation, progress: (p: ProgressFrame) => void): Promise<Entry> {
    this.loads++;
    progress({ stage: 'load', message: `opening ${location.label}` });
    let source: string | ModelFiles;
    let dir: string;
    let revision: string;
    if (location.kind === 'dir') {
      source = location.dir;
      dir = location.dir;
      revision = await dirRevision(dir);
    } else {
      const env = this.options.env ?? process.env;
      const label = location.hub.revision ? `${location.hub.repoId}@${location.hub.revision}` : location.hub.repoId;
      try {
        source = await resolveHubModel(location.hub.repoId, location.hub.revision ?? 'main', {
          env,
          progress: true,
          progressStream: downloadProgress(progress),
        });
      } catch (e) {
        if (e instanceof AttnscopeError && offlineFromEnv(env)) {
          throw new AttnscopeError(`model: ${label} is not in the Hugging Face cache and the server is offline (HF_HUB_OFFLINE=1); download it once with network access`);
        }
        throw e;
      }
      dir = source.dir;
      revision = path.basename(dir);
    }
    const tooLarge = (bytes: number) =>
      new AttnscopeError(`model: ${location.label} needs about ${Math.ceil(bytes / 2 ** 20)} MB, more than the server's memory budget (--memory-budget ${Math.floor(this.options.budgetBytes / 2 ** 20)})`);
    let bytes = (await weightBytes(dir)) * MEMORY_FACTOR;
    if (bytes > this.options.budgetBytes) throw tooLarge(bytes);
    await this.fit(bytes);
    progress({ stage: 'load', message: `loading ${location.label}` });
    const model = await loadModel(source, {
      graphCache: this.options.graphCache,
      ...(this.options.threads ? { threads: this.options.threads } : {}),
    });
    // A Hub snapshot gets its weight files while loading: count them now that they are there.
    bytes = Math.max(bytes, (await weightBytes(dir)) * MEMORY_FACTOR);
    if (bytes > this.options.budgetBytes) {
      await model.dispose().catch(() => undefined);
      throw tooLarge(bytes);
    }
    const entry: Entry = { id: location.id, model, revision, bytes, users: 0, lastUsed: performance.now() };
    this.loaded.set(location.id, entry);
    await this.fit(0);
    return entry;
  }

  /** Unloads idle models, least recently used first, until `extra` more bytes fit the budget. */
  private async fit(extra: number): Promise<void> {
    const idle = [...this.loaded.values()].filter((e) => e.users === 0).sort((a, b) => a.lastUsed - b.lastUsed);
    let used = this.usedBytes + extra;
    for (const e of idle) {
      if (used <= this.options.budgetBytes) break;
      this.loaded.delete(e.id);
      used -= e.bytes;
      this.unloads++;
      await e.model.dispose().catch(() => undefined);
    }
  }

  /** Unloads everything (the server is stopping). */
  async close(): Promise<void> {
    await Promise.allSettled([...this.loading.values()].map((l) => l.promise));
    const all = [...this.loaded.values()];
    this.loaded.clear();
    await Promise.allSettled(all.map((e) => e.model.dispose()));
  }
}

/**
 * The download bar's lines (`file  ████░░  45%  12.3 MB / 27.1 MB  8.2 MB/s`) as progress frames.
 * It draws as on a terminal (redrawn up to 10 times a second, not only at each tenth): the
 * carriage returns and erase-line codes are taken out.
 */
function downloadProgress(progress: (p: ProgressFrame) => void): { write(text: string): void; isTTY: true } {
  return {
    isTTY: true,
    write(text: string) {
      // eslint-disable-next-line no-control-regex
      for (const line of text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').split(/[\r\n]+/)) {
        const clean = line.replace(/\s+/g, ' ').trim();
        if (!clean) continue;
        const percent = /(\d+)%/.exec(clean);
        progress({ stage: 'download', message: `downloading ${clean.replace(/[█░]+/g, '').replace(/\s+/g, ' ')}`, ...(percent ? { fraction: Number(percent[1]) / 100 } : {}) });
      }
    },
  };
}
