/**
 * The app's bias panel (POST /api/bias): the bias report of `attnscope bias report` for the model
 * and probe text on screen (src/bias/report.ts, the same code and defaults: the same inputs give
 * the same numbers), on a subset of CrowS-Pairs and WinoGender chosen by the request.
 *
 * - Limits: BIAS_LIMITS (protocol.ts) bound pairs, permutations, bootstrap resamples, steps,
 *   heads and controls; the probe text the server's text and token limits. A bad field gets a 400
 *   naming it.
 * - Progress: NDJSON lines ({type: 'progress', stage, message, fraction}) per pair, sentence and
 *   probe, then one `result` line (or `error`).
 * - Cancel: a client that goes away (request signal, or the stream cancelled) stops the run at its
 *   next step of progress; its lease on the model is returned.
 * - One run at a time (they take the machine's cores); others wait in line, told so by progress.
 * - Cached: finished reports per (model revision, request), bytes-bounded; CrowS-Pairs pair scores
 *   per model revision (a new probe text or bootstrap does not score the pairs again).
 */
import type { Context, Hono, MiddlewareHandler } from 'hono';
import { CROWS_BIAS_TYPES, type CrowsPair, type PairScores } from '../analysis/bias/crows-pairs.js';
import type { GroupLexicon } from '../analysis/bias/groups.js';
import { biasReportJson, type BiasReport } from '../analysis/bias/report.js';
import type { PronounItem } from '../analysis/bias/wino.js';
import { GROUP_NAMES, loadCrowsPairs, loadGroupLexicons, loadOccupationStats, loadWinogender } from '../bias/data-files.js';
import { buildBiasReport } from '../bias/report.js';
import type { PairScoreCache } from '../bias/crows-pairs.js';
import { abortable, throwIfAborted } from './abortable.js';
import type { ModelCatalog } from './catalog.js';
import { ByteLru } from './lru.js';
import { lineStream, messageOf } from './ndjson.js';
import type { ModelPool } from './pool.js';
import { BIAS_LIMITS, type ApiError, type BiasLine, type BiasRequest, type BiasResult, type ServerLimits } from './protocol.js';
import { checkInputTokens, isInt, locateModel, modelField, RequestError, requestBody, textWithinLimit } from './request-checks.js';

export const BIAS_MEDIA_TYPE = 'application/x-ndjson';

const FIELDS = new Set(['model', 'text', 'biasType', 'limit', 'groups', 'k', 'controls', 'steps', 'permutations', 'bootstrap', 'seed', 'ablationPairs']);

function int(b: Record<string, unknown>, name: keyof BiasRequest, min: number, max: number): number | undefined {
  const v = b[name];
  if (v === undefined) return undefined;
  if (!isInt(v) || v < min || v > max) throw new RequestError(400, `${name}: an integer from ${min} to ${max}`, name);
  return v;
}

/** Checks a bias request; errors name the field and what is allowed. */
export function validateBiasRequest(body: unknown, limits: ServerLimits): BiasRequest {
  const b = requestBody(body, FIELDS, '{model, text?, biasType?, limit?, …}');
  const req: BiasRequest = { model: modelField(b.model, true) };
  if (b.text !== undefined) {
    if (typeof b.text !== 'string' || b.text.trim() === '') throw new RequestError(400, 'text: a non-empty string (or leave it out for the default probes)', 'text');
    req.text = textWithinLimit('text', b.text, limits);
  }
  if (b.biasType !== undefined) {
    if (typeof b.biasType !== 'string' || !(CROWS_BIAS_TYPES as readonly string[]).includes(b.biasType)) throw new RequestError(400, `biasType: one of ${CROWS_BIAS_TYPES.join(', ')}`, 'biasType');
    req.biasType = b.biasType;
  }
  if (b.groups !== undefined) {
    if (!Array.isArray(b.groups) || b.groups.length === 0 || b.groups.some((g) => typeof g !== 'string' || !(GROUP_NAMES as readonly string[]).includes(g))) {
      throw new RequestError(400, `groups: a non-empty list of ${GROUP_NAMES.join(', ')}`, 'groups');
    }
    req.groups = [...new Set(b.groups as string[])];
  }
  const set = <K extends keyof BiasRequest>(name: K, v: BiasRequest[K] | undefined) => {
    if (v !== undefined) req[name] = v;
  };
  set('limit', int(b, 'limit', 0, BIAS_LIMITS.maxPairs));
  set('k', int(b, 'k', 1, BIAS_LIMITS.maxK));
  set('controls', int(b, 'controls', 0, BIAS_LIMITS.maxControls));
  set('steps', int(b, 'steps', 1, BIAS_LIMITS.maxSteps));
  set('permutations', int(b, 'permutations', 0, BIAS_LIMITS.maxPermutations));
  set('bootstrap', int(b, 'bootstrap', 1, BIAS_LIMITS.maxBootstrap));
  set('seed', int(b, 'seed', 0, 2 ** 31 - 1));
  set('ablationPairs', int(b, 'ablationPairs', 0, BIAS_LIMITS.maxAblationPairs));
  const limit = req.limit ?? BIAS_LIMITS.defaultLimit;
  if ((req.ablationPairs ?? 0) > limit) throw new RequestError(400, `ablationPairs: at most the ${limit} pairs of the report (limit)`, 'ablationPairs');
  return req;
}

/** The request with its defaults (those of `attnscope bias report`), as the cache key reads it. */
function normalized(req: BiasRequest): Required<Omit<BiasRequest, 'text' | 'biasType'>> & Pick<BiasRequest, 'text' | 'biasType'> {
  return {
    model: req.model,
    text: req.text,
    biasType: req.biasType,
    limit: req.limit ?? BIAS_LIMITS.defaultLimit,
    groups: req.groups ?? ['gender', 'occupation'],
    k: req.k ?? 5,
    controls: req.controls ?? 3,
    steps: req.steps ?? 32,
    permutations: req.permutations ?? 1000,
    bootstrap: req.bootstrap ?? 1000,
    seed: req.seed ?? 1,
    ablationPairs: req.ablationPairs ?? 0,
  };
}

interface BiasData {
  pairs: CrowsPair[];
  winogender: PronounItem[];
  stats: Map<string, { bls: number; bergsma: number }>;
  lexicons: Map<string, GroupLexicon>;
}

/** Pair scores of one model revision, kept for later reports (bounded: 1,508 pairs at most). */
class MemoryPairCache implements PairScoreCache {
  readonly entries = new Map<string, PairScores>();
  get(key: string): PairScores | undefined {
    return this.entries.get(key);
  }
  set(key: string, scores: PairScores): void {
    this.entries.set(key, scores);
  }
}

export interface BiasServiceOptions {
  catalog: ModelCatalog;
  pool: ModelPool;
  limits: ServerLimits;
  /** Bytes of finished reports kept (default 16 MiB). */
  cacheBytes?: number;
}

export class BiasService {
  private readonly reports: ByteLru<string, BiasReport>;
  private readonly pairCaches = new ByteLru<string, MemoryPairCache>(64);
  private data: Promise<BiasData> | null = null;
  /** The run under way (runs go one at a time). */
  private line: Promise<unknown> = Promise.resolve();
  private busy = false;
  /** Runs started (not answered from the cache); a test reads it. */
  runs = 0;

  constructor(private readonly options: BiasServiceOptions) {
    this.reports = new ByteLru(options.cacheBytes ?? 16 * 1024 * 1024);
  }

  private loadData(): Promise<BiasData> {
    this.data ??= (async () => {
      const lexicons = new Map<string, GroupLexicon>();
      for (const l of await loadGroupLexicons()) lexicons.set(l.name, l);
      return { pairs: await loadCrowsPairs(), winogender: await loadWinogender(), stats: await loadOccupationStats(), lexicons };
    })();
    return this.data;
  }

  /** Runs (or reads from the cache) the report of `req`, telling `emit` how it goes. */
  async run(req: BiasRequest, signal: AbortSignal, emit: (line: BiasLine) => void): Promise<BiasResult> {
    const n = normalized(req);
    const location = await locateModel(this.options.catalog, n.model);
    const progress = (stage: 'download' | 'load' | 'queue' | 'run', message: string, fraction?: number) => emit(fraction === undefined ? { type: 'progress', stage, message } : { type: 'progress', stage, message, fraction });
    const lease = await this.options.pool.acquire(location, (p) => emit({ type: 'progress', ...p }), signal);
    try {
      const model = lease.model;
      const key = JSON.stringify({ ...n, revision: lease.revision });
      const hit = this.reports.get(key);
      if (hit) return { report: hit, revision: lease.revision, cached: true, ms: 0 };
      const data = await this.loadData();
      if (n.text !== undefined) await checkInputTokens(model, { text: n.text }, this.options.limits.maxTokens);
      const previous = this.line;
      let done!: () => void;
      this.line = new Promise<void>((r) => (done = r));
      try {
        if (this.busy) progress('queue', 'waiting for the bias run before this one');
        await abortable(previous, signal);
        this.busy = true;
        const again = this.reports.get(key);
        if (again) return { report: again, revision: lease.revision, cached: true, ms: 0 };
        this.runs++;
        const t0 = performance.now();
        const pairs = (n.biasType ? data.pairs.filter((p) => p.biasType === n.biasType) : data.pairs).slice(0, n.limit);
        const cacheKey = `${n.model}@${lease.revision}`;
        let pairCache = this.pairCaches.get(cacheKey);
        if (!pairCache) {
          pairCache = new MemoryPairCache();
          this.pairCaches.set(cacheKey, pairCache, 1);
        }
        const report = await buildBiasReport(model, {
          pairs,
          biasType: n.biasType ?? null,
          winogender: data.winogender.slice(0, n.limit),
          occupationStats: data.stats,
          texts: n.text === undefined ? undefined : [n.text],
          lexicons: n.groups.map((g) => data.lexicons.get(g)).filter((l): l is GroupLexicon => l !== undefined),
          k: n.k,
          controls: n.controls,
          steps: n.steps,
          permutations: n.permutations,
          seed: n.seed,
          resamples: n.bootstrap,
          ablationPairs: n.ablationPairs,
          cache: pairCache,
          onProgress: (phase, d, t) => {
            throwIfAborted(signal);
            progress('run', `${phase} ${d}/${t}`, t > 0 ? d / t : undefined);
          },
        });
        throwIfAborted(signal);
        this.reports.set(key, report, biasReportJson(report).length);
        return { report, revision: lease.revision, cached: false, ms: Math.round(performance.now() - t0) };
      } finally {
        this.busy = false;
        done();
      }
    } finally {
      lease.release();
    }
  }

  /** Waits until no run is under way (tests: after a cancel, the run has stopped). */
  async settled(): Promise<void> {
    for (;;) {
      const line = this.line;
      await line;
      if (line === this.line) return;
    }
  }
}

/**
 * POST /api/bias: validates, then streams the run's lines. `limit` is the app's body limit,
 * `readJson` its JSON reader (content type and parse errors as 415/400).
 */
export function registerBiasRoutes(app: Hono, service: BiasService, limits: ServerLimits, limit: MiddlewareHandler, readJson: (c: Context) => Promise<unknown>): void {
  app.post('/api/bias', limit, async (c) => {
    let req: BiasRequest;
    try {
      req = validateBiasRequest(await readJson(c), limits);
    } catch (e) {
      const body: ApiError = e instanceof RequestError && e.field ? { error: messageOf(e), field: e.field } : { error: messageOf(e) };
      return c.json(body, (e instanceof RequestError ? e.status : 400) as 400);
    }
    const answer = lineStream(c.req.raw.signal);
    return answer.respond<BiasResult>({ 'Content-Type': BIAS_MEDIA_TYPE, 'Cache-Control': 'no-store' }, 'bias run', (send) => service.run(req, answer.signal, send));
  });
}
