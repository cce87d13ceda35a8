/**
 * POST /api/export of `attnscope serve`: the standalone page and the trace files of the app's
 * current input, made by the CLI's code (renderStandaloneHtml, the trace writers). The files read
 * back hold PyTorch's attention (the fixtures' reference.json); bad requests get one line naming
 * the field; no temporary file is left behind.
 */
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTraceFile } from '../src/io/trace-file.js';
import type { ApiError } from '../src/server/protocol.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { FIXTURES, flat, maxAbsDiff, readReference } from './helpers/reference.js';

let server: RunningServer;
let tmp: string;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'attnscope-export-test-'));
  server = await startServer({ port: 0, folders: [FIXTURES], hfCache: false, graphCache: false, env: { HF_HUB_OFFLINE: '1', HF_HOME: join(tmp, 'hf') }, bundle: { js: '', css: '' } });
});

afterAll(async () => {
  await server?.close();
  rmSync(tmp, { recursive: true, force: true });
});

function post(body: unknown): Promise<Response> {
  return fetch(new URL('/api/export', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

const exportDirs = () => readdirSync(tmpdir()).filter((n) => n.startsWith('attnscope-export-') && !n.startsWith('attnscope-export-test-'));

describe('POST /api/export', () => {
  const ref = readReference('bert').inputs.find((i) => i.id === 'short')!;

  for (const format of ['json', 'safetensors'] as const) {
    it(`the trace as ${format}: PyTorch's attention, the tokenizer's tokens`, async () => {
      const before = exportDirs();
      const res = await post({ model: 'folder:0/bert', text: ref.text, format });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-disposition')).toBe(`attachment; filename="attnscope-bert.${format}"`);
      const file = join(tmp, `t.${format}`);
      writeFileSync(file, new Uint8Array(await res.arrayBuffer()));
      const trace = await readTraceFile(file);
      expect(trace.tokens.map((t) => t.id)).toEqual(ref.input_ids);
      const s = trace.attention.self!;
      const all = new Float32Array(s.layers.length * s.layers[0]!.length);
      s.layers.forEach((l, i) => all.set(l, i * l.length));
      expect(maxAbsDiff(all, flat(ref.attentions!))).toBeLessThan(1e-5);
      expect(trace.queries?.self).toBeDefined();
      expect(exportDirs()).toEqual(before);
    });
  }

  it('the standalone page: the client, the header with the view and theme asked for, token text escaped', async () => {
    const text = `${ref.text} <b>&</b>`;
    const res = await post({ model: 'folder:0/bert', text, format: 'html', view: 'heatmap', theme: 'dark' });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    const html = await res.text();
    const header = /<script type="application\/json" id="attnscope-header">([\s\S]*?)<\/script>/.exec(html);
    expect(header).not.toBeNull();
    expect(html).not.toContain('<b>&</b>');
    const parsed = JSON.parse(header![1]!.replace(/\\u003c/g, '<')) as { view: string; theme: string; model: { name: string } };
    expect(parsed.view).toBe('heatmap');
    expect(parsed.theme).toBe('dark');
    expect(parsed.model.name).toBe('bert');
  });

  it('refuses a bad format, view, unknown field or model with one line naming the field', async () => {
    const cases: [unknown, number, string][] = [
      [{ model: 'folder:0/bert', text: 'a', format: 'pdf' }, 400, 'format'],
      [{ model: 'folder:0/bert', text: 'a', format: 'html', view: 'nope' }, 400, 'view'],
      [{ model: 'folder:0/bert', text: 'a', format: 'html', extra: 1 }, 400, 'extra'],
      [{ model: 'folder:9/none', text: 'a', format: 'json' }, 404, 'model'],
      [{ model: 'folder:0/bert', text: 'a', format: 'html', theme: 'blue' }, 400, 'theme'],
    ];
    for (const [body, status, field] of cases) {
      const res = await post(body);
      expect(res.status).toBe(status);
      const err = (await res.json()) as ApiError;
      expect(err.field).toBe(field);
      expect(err.error).not.toMatch(/\n/);
    }
  });

  it('POST /api/compare-page: the comparison page of two models on one text; errors name the side', async () => {
    const res = await fetch(new URL('/api/compare-page', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ a: { model: 'folder:0/bert', text: ref.text }, b: { model: 'folder:0/electra', text: ref.text } }) });
    expect(res.status).toBe(200);
    expect(res.headers.get('content-disposition')).toBe('attachment; filename="attnscope-compare-bert-vs-electra.html"');
    const html = await res.text();
    const header = JSON.parse(/<script type="application\/json" id="attnscope-compare">([\s\S]*?)<\/script>/.exec(html)![1]!) as { ranking: { layer: number; head: number | null; jsDivergence: number }[]; matching: string };
    expect(header.matching).toBe('layer-head');
    expect(header.ranking).toHaveLength(2 * 4);
    for (const r of header.ranking) expect(r.jsDivergence).toBeGreaterThan(0);
    const bad = await fetch(new URL('/api/compare-page', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ a: { model: 'folder:0/bert', text: 'a' }, b: { model: 1, text: 'a' } }) });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as ApiError).field).toBe('b.model');
  });
});
