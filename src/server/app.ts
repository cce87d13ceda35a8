/**
 * The HTTP side of `attnscope serve` (Hono): the app page and its built client, and the API
 * (protocol.ts). Every answer carries a strict Content-Security-Policy (scripts and styles only
 * from this server, no other origin, no framing); requests whose Host is not this server's
 * (DNS rebinding) or whose Origin is another site are refused.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Hono, type Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { AttnscopeError } from '../core/errors.js';
import type { ModelCatalog } from './catalog.js';
import { AbortError } from './abortable.js';
import type { ModelPool } from './pool.js';
import { FRAMES_MEDIA_TYPE, RUN_HEADER, jsonFrame, type ApiError, type ModelsResponse, type ProgressFrame, type ServerLimits } from './protocol.js';
import { RequestError, TraceService, validateTraceRequest } from './traces.js';
import { exportFile, validateExportRequest } from './exports.js';
import { comparePageFile, validateComparePageRequest } from './compare.js';
import { BiasService, registerBiasRoutes } from './bias.js';
import { AnalysisService, analysisResponse, validateAnalysisRequest } from './analysis.js';

export const CSP = [
  "default-src 'none'",
  // 'wasm-unsafe-eval': WebAssembly compilation only (no eval of script text), for the head-metrics kernel (src/analysis/wasm/).
  "script-src 'self' 'wasm-unsafe-eval'",
  // Style attributes: the SVG views set them (as the standalone page allows); no style sheet from elsewhere.
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data: blob:",
  "connect-src 'self'",
  "font-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': CSP,
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'X-Frame-Options': 'DENY',
};

export const DEFAULT_LIMITS: ServerLimits = { maxTextChars: 20_000, maxTokens: 512, maxBodyBytes: 256 * 1024, maxTopK: 20, maxNewTokens: 128 };

const APP_JS = 'attnscope-app.js';
const APP_CSS = 'attnscope-app.css';

/** Directory of the built app client (dist/web), from this module in src/ or dist/src/. */
export function appBundleDir(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const candidate = join(dir, 'dist', 'web');
    if (existsSync(join(candidate, APP_JS)) && existsSync(join(candidate, APP_CSS))) return candidate;
    dir = dirname(dir);
  }
  return null;
}

export interface AppBundle {
  js: string;
  css: string;
}

export async function loadAppBundle(): Promise<AppBundle> {
  const dir = appBundleDir();
  if (!dir) throw new AttnscopeError(`the app's browser client (dist/web/${APP_JS}) is missing: run 'npm run build'`);
  const [js, css] = await Promise.all([readFile(join(dir, APP_JS), 'utf8'), readFile(join(dir, APP_CSS), 'utf8')]);
  return { js, css };
}

/**
 * The page, its script and style named with a digest of their content (`/app.js?v=…`), which are
 * then served as immutable: the page's Web Workers (long views, flow, metrics: the page's own
 * script started again) and the next pages take the script from the browser's cache instead of
 * asking the server, which answers nothing while it runs a model segment.
 */
function pageHtml(version: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="attnscope">
<title>attnscope</title>
<link rel="stylesheet" href="/app.css?v=${version}">
<script async src="/early.js?v=${version}" data-app="/app.js?v=${version}"></script>
<script defer src="/app.js?v=${version}"></script>
</head>
<body>
<div id="attnscope-serve"><p class="loading">Loading attnscope…</p><noscript><p>attnscope needs JavaScript.</p></noscript></div>
</body>
</html>
`;
}

/**
 * The page's first script (`/early.js`, async: it runs while the app's script still loads and
 * compiles): starts the long views' worker threads (web/long-worker.ts: two where the machine has a
 * second core, else one; each told to warm its code) with the app's script named by its
 * `data-app`, and leaves them in `attnscopeEarlyWorkers`, which the app's thread pool takes first
 * (long-worker.ts earlyWorker). A new page's first view then does not wait for their start (the
 * app's 0.5 MB script compiled in each, 0.4–0.6 s at load 5 on 2 cores), begun before its own
 * script ran rather than when it requested its trace.
 */
export const EARLY_SCRIPT = `(function () {
  try {
    var app = document.currentScript && document.currentScript.getAttribute('data-app');
    if (!app || typeof Worker !== 'function') return;
    var n = (navigator.hardwareConcurrency || 1) > 1 ? 2 : 1;
    var started = [];
    for (var i = 0; i < n; i++) {
      var w = new Worker(app);
      w.postMessage({ kind: 'long-views', op: 'warm' });
      started.push(w);
    }
    window.attnscopeEarlyWorkers = started;
    if (performance.mark) performance.mark('attnscope:worker-start');
  } catch (e) {}
})();
`;

/** A digest of the bundle's script and style (the page's `v`). */
function bundleVersion(bundle: AppBundle): string {
  return createHash('sha256').update(bundle.js).update('\0').update(bundle.css).digest('hex').slice(0, 16);
}

export interface AppDeps {
  catalog: ModelCatalog;
  pool: ModelPool;
  traces: TraceService;
  limits: ServerLimits;
  bundle: AppBundle;
  /** The bias panel's service (bias.ts); default one over the same catalog, pool and limits. */
  bias?: BiasService;
  /** Host names requests may carry (loopback names when bound to loopback); null accepts any. */
  allowedHosts: ReadonlySet<string> | null;
  hubDownloads: boolean;
  /** The analysis views' service (analysis.ts); default one over the same catalog, pool and limits. */
  analysis?: AnalysisService;
}

function apiError(c: Context, status: number, error: string, field?: string): Response {
  const body: ApiError = field ? { error, field } : { error };
  return c.json(body, status as 400);
}

/** The host name of a Host header (`127.0.0.1:8080` → `127.0.0.1`, `[::1]:80` → `::1`). */
function hostName(host: string): string {
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(host) ?? /^([^:]+)(?::\d+)?$/.exec(host);
  return (m?.[1] ?? host).toLowerCase();
}

export function createApp(deps: AppDeps): Hono {
  const app = new Hono();

  app.use('*', async (c, next) => {
    if (deps.allowedHosts) {
      const host = c.req.header('host');
      if (!host || !deps.allowedHosts.has(hostName(host))) {
        for (const [k, v] of Object.entries(SECURITY_HEADERS)) c.header(k, v);
        return apiError(c, 403, `host: this server answers only ${[...deps.allowedHosts].join(', ')} (start it with --host to open it to others)`, 'host');
      }
    }
    if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
      const origin = c.req.header('origin');
      const host = c.req.header('host');
      // A page of another site, a file:// page or a sandboxed frame (Origin: null) may not post here.
      if (origin !== undefined && (!host || origin !== `http://${host}`)) {
        for (const [k, v] of Object.entries(SECURITY_HEADERS)) c.header(k, v);
        return apiError(c, 403, `origin: requests from ${origin.slice(0, 80)} are refused (only this server's own page may post)`, 'origin');
      }
    }
    await next();
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) c.res.headers.set(k, v);
  });

  const version = bundleVersion(deps.bundle);
  const page = pageHtml(version);
  /** The bundle named by this digest does not change: cached for good; without it (or another), revalidated. */
  const caching = (c: Context) => (c.req.query('v') === version ? 'public, max-age=31536000, immutable' : 'no-cache');
  app.get('/', (c) => {
    c.header('Cache-Control', 'no-store');
    return c.html(page);
  });
  app.get('/app.js', (c) => {
    c.header('Content-Type', 'text/javascript; charset=utf-8');
    c.header('Cache-Control', caching(c));
    return c.body(deps.bundle.js);
  });
  app.get('/early.js', (c) => {
    c.header('Content-Type', 'text/javascript; charset=utf-8');
    c.header('Cache-Control', caching(c));
    return c.body(EARLY_SCRIPT);
  });
  app.get('/app.css', (c) => {
    c.header('Content-Type', 'text/css; charset=utf-8');
    c.header('Cache-Control', caching(c));
    return c.body(deps.bundle.css);
  });
  app.get('/favicon.ico', (c) => c.body(null, 204));

  app.get('/api/models', async (c) => {
    await deps.catalog.refresh();
    const models = deps.catalog.list().map((m) => ({ ...m, loaded: deps.pool.isLoaded(m.id) }));
    const body: ModelsResponse = { models, hubDownloads: deps.hubDownloads, limits: deps.limits };
    c.header('Cache-Control', 'no-store');
    return c.json(body);
  });

  const limit = bodyLimit({
    maxSize: deps.limits.maxBodyBytes,
    onError: (c) => apiError(c, 413, `body: larger than ${deps.limits.maxBodyBytes} bytes`, 'body'),
  });

  const readJson = async (c: Context): Promise<unknown> => {
    const type = c.req.header('content-type') ?? '';
    if (!/^application\/json\b/i.test(type)) throw new RequestError(415, 'content-type: application/json', 'content-type');
    const raw = await c.req.text();
    try {
      return JSON.parse(raw);
    } catch {
      throw new RequestError(400, 'body: not valid JSON', 'body');
    }
  };

  /** POST /api/load {model}: loads a model, streaming progress frames (downloads included), then an end frame. */
  app.post('/api/load', limit, async (c) => {
    let location;
    try {
      const body = await readJson(c);
      const model = (body as { model?: unknown } | null)?.model;
      if (typeof model !== 'string') throw new RequestError(400, 'model: a string (an id from GET /api/models, or a Hub id)', 'model');
      location = await deps.catalog.locate(model).catch((e: unknown) => {
        throw e instanceof AttnscopeError ? new RequestError(404, e.message, 'model') : e;
      });
    } catch (e) {
      return errorResponse(c, e);
    }
    const signal = c.req.raw.signal;
    const loc = location;
    const stream = new ReadableStream<Uint8Array>({
      async start(controller) {
        const send = (f: Uint8Array) => {
          try {
            controller.enqueue(f);
          } catch {
            // the client went away
          }
        };
        const onProgress = (p: ProgressFrame) => send(jsonFrame('progress', p));
        try {
          const t0 = performance.now();
          const lease = await deps.pool.acquire(loc, onProgress, signal);
          send(jsonFrame('end', { loadMs: Math.round(performance.now() - t0), runMs: 0, bytes: 0 }));
          // Then, in the background, the session its first on-demand view needs (releases the lease).
          setImmediate(() => void deps.traces.warmUp(lease));
        } catch (e) {
          if (!(e instanceof AbortError)) send(jsonFrame('error', { error: messageOf(e), field: 'model' }));
        }
        try {
          controller.close();
        } catch {
          // already closed
        }
      },
    });
    return new Response(stream, { headers: { 'Content-Type': FRAMES_MEDIA_TYPE, 'Cache-Control': 'no-store' } });
  });

  /** POST /api/trace {model, text, textPair?, decoderText?, taps?}: the trace as frames. */
  app.post('/api/trace', limit, async (c) => {
    const signal = c.req.raw.signal;
    let answer;
    try {
      const req = validateTraceRequest(await readJson(c), deps.limits);
      answer = await deps.traces.open(req, signal);
    } catch (e) {
      if (e instanceof AbortError) return new Response(null, { status: 499 });
      return errorResponse(c, e);
    }
    const frames = answer.frames;
    // Pull-based: a frame is sent when the connection takes it (backpressure), each layer as soon
    // as it is computed; a client that goes away cancels the stream, and with it the run. No frame
    // is read ahead (high-water mark 0): the next is asked for once the previous one is written
    // out, which tells the run that its frames have gone (traces.ts handedOut).
    const stream = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          let next: IteratorResult<Uint8Array>;
          try {
            next = await frames.next();
          } catch (e) {
            // The request's signal fired (its client went away, or whoever opened it ended it): the
            // answer ends there, an ordinary event, not an error of the server's to report.
            if (e instanceof AbortError) return controller.close();
            throw e;
          }
          if (next.done) controller.close();
          else controller.enqueue(next.value);
        },
        async cancel() {
          await frames.return(undefined);
        },
      },
      { highWaterMark: 0 },
    );
    return new Response(stream, { headers: { 'Content-Type': FRAMES_MEDIA_TYPE, 'Cache-Control': 'no-store', 'X-Attnscope-Cache': answer.cached ? 'hit' : 'miss', ...(answer.run ? { [RUN_HEADER]: answer.run } : {}) } });
  });

  /**
   * POST /api/trace/drawn {run}: the page has drawn the first view of the trace run `run` (the
   * trace answer's X-Attnscope-Run header), so the run stops waiting for it (TraceService.drawn).
   * 204 whether or not the run is still under way.
   */
  app.post('/api/trace/drawn', limit, async (c) => {
    try {
      const run = ((await readJson(c)) as { run?: unknown } | null)?.run;
      if (typeof run !== 'string' || run.length === 0 || run.length > 64) throw new RequestError(400, 'run: the X-Attnscope-Run header of a trace answer (a string of 1 to 64 characters)', 'run');
      deps.traces.drawn(run);
      return c.body(null, 204);
    } catch (e) {
      return errorResponse(c, e);
    }
  });

  /** POST /api/export {model, text, textPair?, decoderText?, format: html|json|safetensors, view?, theme?}: the standalone page or the trace file, as a download. */
  app.post('/api/export', limit, async (c) => {
    try {
      const req = validateExportRequest(await readJson(c), deps.limits);
      const file = await exportFile(deps.catalog, deps.pool, req, deps.limits, c.req.raw.signal);
      return new Response(file.bytes as Uint8Array<ArrayBuffer>, {
        headers: { 'Content-Type': file.contentType, 'Content-Disposition': `attachment; filename="${file.filename}"`, 'Cache-Control': 'no-store' },
      });
    } catch (e) {
      if (e instanceof AbortError) return new Response(null, { status: 499 });
      return errorResponse(c, e);
    }
  });

  /** POST /api/compare-page {a: {model, text, …}, b: {model, text, …}, theme?}: the comparison page of `attnscope compare --html`, as a download. */
  app.post('/api/compare-page', limit, async (c) => {
    try {
      const req = validateComparePageRequest(await readJson(c), deps.limits);
      const file = await comparePageFile(deps.catalog, deps.pool, req, deps.limits, c.req.raw.signal);
      return new Response(file.bytes as Uint8Array<ArrayBuffer>, {
        headers: { 'Content-Type': file.contentType, 'Content-Disposition': `attachment; filename="${file.filename}"`, 'Cache-Control': 'no-store' },
      });
    } catch (e) {
      if (e instanceof AbortError) return new Response(null, { status: 499 });
      return errorResponse(c, e);
    }
  });

  /** POST /api/analysis {model, text, textPair?, decoderText?, view, options?}: an analysis view's data (analysis.ts), as NDJSON progress and result lines. */
  const analysis = deps.analysis ?? new AnalysisService(deps.catalog, deps.pool, { limits: deps.limits });
  app.post('/api/analysis', limit, async (c) => {
    try {
      return await analysisResponse(analysis, validateAnalysisRequest(await readJson(c), deps.limits), c.req.raw.signal);
    } catch (e) {
      if (e instanceof AbortError) return new Response(null, { status: 499 });
      return errorResponse(c, e);
    }
  });

  /** POST /api/bias {model, text?, biasType?, limit?, …}: the bias report of the app's bias panel (bias.ts), as NDJSON progress and result lines. */
  registerBiasRoutes(app, deps.bias ?? new BiasService({ catalog: deps.catalog, pool: deps.pool, limits: deps.limits }), deps.limits, limit, readJson);

  app.all('/api/*', (c) => apiError(c, 404, 'no such API endpoint (GET /api/models, POST /api/load, POST /api/trace, POST /api/trace/drawn, POST /api/export, POST /api/compare-page, POST /api/analysis)'));
  app.notFound((c) => apiError(c, 404, 'not found'));
  app.onError((e, c) => errorResponse(c, e));
  return app;
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message.replace(/[\r\n]+/g, ' ').slice(0, 600) : String(e);
}

function errorResponse(c: Context, e: unknown): Response {
  if (e instanceof RequestError) return apiError(c, e.status, messageOf(e), e.field);
  if (e instanceof AttnscopeError) return apiError(c, 400, messageOf(e));
  console.error('attnscope serve: internal error', e);
  return apiError(c, 500, `internal error: ${messageOf(e)}`);
}
