/** Starts and stops the `attnscope serve` HTTP server (Hono on Node's http server). */
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { serve } from '@hono/node-server';
import { AttnscopeError } from '../core/errors.js';
import { offlineFromEnv, type Env } from '../io/hf-cache.js';
import { createApp, DEFAULT_LIMITS, loadAppBundle, type AppBundle } from './app.js';
import { ModelCatalog } from './catalog.js';
import { ModelPool } from './pool.js';
import type { ServerLimits } from './protocol.js';
import { TraceService } from './traces.js';
import { AnalysisService } from './analysis.js';

export interface ServeOptions {
  /** Port (0: any free one). */
  port: number;
  /** Address to bind (default 127.0.0.1: nothing opened to the network). */
  host?: string;
  /** `--models` folders. */
  folders?: readonly string[];
  /** Bytes loaded models may take together. */
  memoryBudgetBytes?: number;
  /** Bytes of traces kept for repeated requests. */
  cacheBytes?: number;
  limits?: Partial<ServerLimits>;
  /** Offer the embedded model (default true) and the Hugging Face cache (default true). */
  embedded?: boolean;
  hfCache?: boolean;
  graphCache?: string | false;
  env?: Env;
  threads?: number;
  /** The built client (default: dist/web). */
  bundle?: AppBundle;
}

export interface RunningServer {
  url: string;
  port: number;
  host: string;
  catalog: ModelCatalog;
  pool: ModelPool;
  traces: TraceService;
  /** The analysis views' service (POST /api/analysis). */
  analysis: AnalysisService;
  close(): Promise<void>;
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1']);

export const DEFAULT_MEMORY_BUDGET_MB = 4096;
export const DEFAULT_CACHE_MB = 256;

export async function startServer(options: ServeOptions): Promise<RunningServer> {
  const host = options.host ?? '127.0.0.1';
  const env = options.env ?? process.env;
  const limits: ServerLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const bundle = options.bundle ?? (await loadAppBundle());
  const catalog = new ModelCatalog({ folders: options.folders ?? [], embedded: options.embedded, hfCache: options.hfCache, env });
  await catalog.init();
  const pool = new ModelPool({
    budgetBytes: options.memoryBudgetBytes ?? DEFAULT_MEMORY_BUDGET_MB * 2 ** 20,
    env,
    ...(options.graphCache !== undefined ? { graphCache: options.graphCache } : {}),
    ...(options.threads ? { threads: options.threads } : {}),
  });
  const traces = new TraceService(catalog, pool, { limits, cacheBytes: options.cacheBytes ?? DEFAULT_CACHE_MB * 2 ** 20 });
  const analysis = new AnalysisService(catalog, pool, { limits });
  const loopback = LOOPBACK.has(host);
  const app = createApp({
    catalog,
    pool,
    traces,
    analysis,
    limits,
    bundle,
    allowedHosts: loopback ? new Set(['127.0.0.1', 'localhost', '::1']) : null,
    hubDownloads: !offlineFromEnv(env),
  });

  const server = await new Promise<Server>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: options.port, hostname: host }) as Server;
    s.once('listening', () => resolve(s));
    s.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EADDRINUSE') reject(new AttnscopeError(`--port ${options.port}: already in use (pick another, or --port 0 for any free one)`));
      else if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND') reject(new AttnscopeError(`--host ${host}: not an address of this machine`));
      else if (e.code === 'EACCES') reject(new AttnscopeError(`--port ${options.port}: permission denied (ports below 1024 need privileges)`));
      else reject(e);
    });
  });
  // Slow or idle clients cannot hold connections forever.
  server.requestTimeout = 120_000;
  server.headersTimeout = 20_000;
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  let closing: Promise<void> | null = null;
  return {
    url: `http://${shown}:${address.port}/`,
    port: address.port,
    host,
    catalog,
    pool,
    traces,
    analysis,
    close() {
      closing ??= (async () => {
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        await pool.close();
      })();
      return closing;
    },
  };
}
