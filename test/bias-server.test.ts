/**
 * POST /api/bias of `attnscope serve` (src/server/bias.ts) against a real HTTP server on 127.0.0.1
 * over the fixtures: the report it answers is the one `attnscope bias report` writes for the same
 * inputs (a real CLI process: every number equal, only the time stamp differs); progress lines
 * before it; the same request again comes from the cache; a cancelled run frees the line for the
 * next; bad fields are refused with one line naming them.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIAS_LIMITS, type ApiError, type BiasLine, type BiasRequest } from '../src/server/protocol.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { runCli } from './helpers/cli.js';
import { FIXTURES } from './helpers/reference.js';

const BUNDLE = { js: '/* app */', css: '/* app */' };
const TEXT = 'The nurse said that [MASK] would be late.';
const SETTINGS = { limit: 6, k: 2, controls: 1, permutations: 19, steps: 4, bootstrap: 100 } as const;

let tmp: string;
let server: RunningServer;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'attnscope-bias-server-'));
  server = await startServer({ port: 0, folders: [FIXTURES], hfCache: false, embedded: false, env: { HF_HUB_OFFLINE: '1' }, graphCache: false, bundle: BUNDLE });
}, 120_000);

afterAll(async () => {
  await server?.close();
  rmSync(tmp, { recursive: true, force: true });
});

async function post(body: unknown, signal?: AbortSignal): Promise<Response> {
  return fetch(new URL('/api/bias', server.url), { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body), signal });
}

async function lines(res: Response): Promise<BiasLine[]> {
  expect(res.headers.get('content-type')).toBe('application/x-ndjson');
  return (await res.text()).split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as BiasLine);
}

describe('POST /api/bias', () => {
  it('answers the report `attnscope bias report` writes for the same inputs, with progress first, then from the cache', async () => {
    const out = join(tmp, 'report.html');
    const cli = runCli(tmp, ['bias', 'report', join(FIXTURES, 'bert'), '--limit', '6', '--k', '2', '--controls', '1', '--permutations', '19', '--steps', '4', '--bootstrap', '100', '--text', TEXT, '--out', out, '--no-cache', '--quiet'], 300_000);
    expect(cli.status, cli.stderr).toBe(0);
    const expected = JSON.parse(readFileSync(join(tmp, 'report.json'), 'utf8')) as Record<string, unknown>;

    const req: BiasRequest = { model: 'folder:0/bert', text: TEXT, ...SETTINGS };
    const got = await lines(await post(req));
    const last = got[got.length - 1]!;
    expect(last.type, JSON.stringify(last)).toBe('result');
    const progress = got.filter((l) => l.type === 'progress');
    expect(progress.some((l) => l.type === 'progress' && l.stage === 'run' && /crows-pairs 6\/6/.test(l.message))).toBe(true);
    for (const l of progress) if (l.type === 'progress' && l.fraction !== undefined) expect(l.fraction >= 0 && l.fraction <= 1).toBe(true);
    if (last.type !== 'result') throw new Error('no result');
    expect(last.result.cached).toBe(false);
    const report = last.result.report as unknown as Record<string, unknown>;
    expect(report.created).toEqual(expect.any(String));
    expect({ ...report, created: null }).toEqual({ ...expected, created: null });
    expect((report.crowsPairs as { pairs: number }).pairs).toBe(6);

    const again = await lines(await post(req));
    const hit = again[again.length - 1]!;
    expect(hit.type).toBe('result');
    if (hit.type === 'result') {
      expect(hit.result.cached).toBe(true);
      expect(hit.result.report).toEqual(last.result.report);
    }
  }, 600_000);

  it('a cancelled run stops and the next request runs', async () => {
    const abort = new AbortController();
    const res = await post({ model: 'folder:0/bert', text: TEXT, limit: 60, permutations: 200, k: 2, controls: 1, steps: 4, bootstrap: 50 }, abort.signal);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let seen = '';
    while (!/"stage":"run"/.test(seen)) {
      const { value, done } = await reader.read();
      if (done) break;
      seen += value;
    }
    expect(seen).toMatch(/"stage":"run"/);
    abort.abort();
    await reader.cancel().catch(() => {});
    const next = await lines(await post({ model: 'folder:0/bert', text: TEXT, limit: 2, permutations: 9, k: 1, controls: 0, steps: 2, bootstrap: 20 }));
    const last = next[next.length - 1]!;
    expect(last.type, JSON.stringify(last)).toBe('result');
    if (last.type === 'result') expect(last.result.report.crowsPairs!.pairs).toBe(2);
  }, 600_000);

  it('refuses bad fields in one line naming them', async () => {
    const refused = async (body: unknown, field: string, message: RegExp) => {
      const res = await post(body);
      expect(res.status).toBeGreaterThanOrEqual(400);
      const e = (await res.json()) as ApiError;
      expect(e.field).toBe(field);
      expect(e.error).toMatch(message);
    };
    await refused({ model: 'folder:0/bert', limit: BIAS_LIMITS.maxPairs + 1 }, 'limit', new RegExp(`limit: an integer from 0 to ${BIAS_LIMITS.maxPairs}`));
    await refused({ model: 'folder:0/bert', biasType: 'colour' }, 'biasType', /biasType: one of race-color, /);
    await refused({ model: 'folder:0/bert', groups: ['gender', 'hats'] }, 'groups', /groups: a non-empty list of gender, occupation/);
    await refused({ model: 'folder:0/bert', frobnicate: 1 }, 'frobnicate', /frobnicate: unknown field/);
    await refused({ model: 'folder:0/bert', limit: 2, ablationPairs: 3 }, 'ablationPairs', /ablationPairs: at most the 2 pairs/);
    await refused({ text: 'x' }, 'model', /model: a string/);
    // A model that is not there: an error line (the stream has started) naming the field.
    const res = await post({ model: 'folder:0/no-such-model', limit: 1 });
    const l = await lines(res);
    expect(l[l.length - 1]).toMatchObject({ type: 'error', field: 'model' });
    // A probe text longer than the model's positions (config.json: 128): an error line naming the field and the bound.
    const long = await lines(await post({ model: 'folder:0/bert', text: 'word '.repeat(200), limit: 1 }));
    const last = long[long.length - 1]!;
    expect(last).toMatchObject({ type: 'error', field: 'text' });
    if (last.type === 'error') expect(last.error).toMatch(/^text: \d+ tokens; at most 128 allowed \(the model's 128 positions\)$/);
  }, 120_000);
});
