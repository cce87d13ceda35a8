/**
 * POST /api/analysis of `attnscope serve` against a real HTTP server on 127.0.0.1: each analysis
 * view's data for the gpt2 fixture checked against PyTorch (the fixture's gradients.json and
 * reference.json: embedding gradients, gradient × input, 256-step integrated gradients and their
 * completeness, signed head importance, the ablation of head 0:0, the final logits the logit lens'
 * last row must reproduce, the hidden states the deep dive's residual norms read), progress lines,
 * the result cache, cancellation, and the refusals (one JSON line naming the field).
 */
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AnalysisLine, AnalysisResult, ApiError } from '../src/server/protocol.js';
import { runningWorkers } from '../src/server/analysis-worker.js';
import { viewTokenLabel } from '../src/views/analysis-data.js';
import { startServer, type RunningServer } from '../src/server/serve.js';
import { FIXTURES, maxAbsDiff, readReference } from './helpers/reference.js';

const BUNDLE = { js: '/* app */', css: '/* app */' };
const MODEL = 'folder:0/gpt2';

interface GradInput {
  input_ids: number[];
  target: { position: number; token_id: number; value: number };
  embedding_grad: number[][];
  grad_x_input: number[];
  integrated_gradients: number[];
  ig_completeness: { sum_attributions: number; target_x: number; target_baseline: number };
  head_importance: number[][];
  ablation: { layer: number; head: number; target_ablated: number; kl: number };
}

const grads = (JSON.parse(readFileSync(join(FIXTURES, 'gpt2', 'gradients.json'), 'utf8')) as { inputs: GradInput[] }).inputs[0]!;
const ref = readReference('gpt2');
const refInput = ref.inputs[0]!;
const TEXT = refInput.text!;

let tmp: string;
let server: RunningServer;

beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'attnscope-analysis-'));
  const models = join(tmp, 'models');
  mkdirSync(models);
  for (const m of ['gpt2', 'bert', 'bart']) cpSync(join(FIXTURES, m), join(models, m), { recursive: true });
  server = await startServer({ port: 0, folders: [models], hfCache: false, embedded: false, env: { HF_HUB_OFFLINE: '1' }, graphCache: false, bundle: BUNDLE, limits: { maxTokens: 40, maxTextChars: 2000, maxBodyBytes: 8192 } });
});

afterAll(async () => {
  await server?.close();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

function post(body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(new URL('/api/analysis', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: typeof body === 'string' ? body : JSON.stringify(body), ...init });
}

async function lines(res: Response): Promise<AnalysisLine[]> {
  expect(res.headers.get('content-type')).toBe('application/x-ndjson');
  const text = await res.text();
  return text
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as AnalysisLine);
}

async function analysis(body: Record<string, unknown>): Promise<{ result: AnalysisResult; progress: AnalysisLine[]; res: Response }> {
  const res = await post({ model: MODEL, text: TEXT, ...body });
  expect(res.status, await res.clone().text()).toBe(200);
  const all = await lines(res);
  const last = all[all.length - 1]!;
  if (last.type !== 'result') throw new Error(`no result: ${JSON.stringify(last)}`);
  return { result: last.result, progress: all.filter((l) => l.type === 'progress'), res };
}

/** Log-softmax of a row, float64. */
function logSoftmax(row: readonly number[]): number[] {
  const m = Math.max(...row);
  const lse = m + Math.log(row.reduce((s, v) => s + Math.exp(v - m), 0));
  return row.map((v) => v - lse);
}

describe('POST /api/analysis on gpt2 against PyTorch', () => {
  it('saliency: gradient, gradient × input and 256-step integrated gradients equal autograd, with their completeness; progress reports the path points', async () => {
    const { result, progress } = await analysis({ view: 'saliency', options: { steps: 256 } });
    expect(result.view).toBe('saliency');
    if (result.view !== 'saliency') return;
    const d = result.data;
    expect(d.tokens).toHaveLength(grads.input_ids.length);
    expect(d.targetPosition).toBe(grads.target.position);
    const row = (prefix: string) => {
      const r = d.rows.find((x) => x.method.startsWith(prefix));
      if (!r) throw new Error(`no ${prefix} row in ${d.rows.map((x) => x.method).join(', ')}`);
      return r;
    };
    // L2 norm of each token's embedding gradient, float64 here.
    const norms = grads.embedding_grad.map((g) => Math.sqrt(g.reduce((s, v) => s + v * v, 0)));
    const scale = (a: readonly number[]) => Math.max(...a.map(Math.abs));
    expect(maxAbsDiff(row('gradient (L2)').scores, norms)).toBeLessThan(1e-4 * scale(norms) + 1e-6);
    expect(maxAbsDiff(row('gradient × input').scores, grads.grad_x_input)).toBeLessThan(1e-4 * scale(grads.grad_x_input) + 1e-6);
    const ig = row('integrated gradients');
    expect(maxAbsDiff(ig.scores, grads.integrated_gradients)).toBeLessThan(1e-3 * scale(grads.integrated_gradients) + 1e-5);
    // Completeness: Σ IG = T(x) − T(0) as PyTorch computed both ends.
    const sum = ig.scores.reduce((s, v) => s + v, 0);
    const c = grads.ig_completeness;
    expect(Math.abs(sum - (c.target_x - c.target_baseline))).toBeLessThan(0.02 * Math.abs(c.target_x - c.target_baseline));
    expect(ig.detail).toMatch(/256 steps/);
    expect(d.rows.map((r) => r.method)).toEqual(expect.arrayContaining(['attention × gradient', 'gradient-weighted rollout']));
    // The target is the top next token at the last position: PyTorch's argmax.
    expect(d.target).toMatch(/position 12/);
    expect(progress.some((p) => p.type === 'progress' && /integrated gradients: \d+ of \d+ new path points \(256 steps\)/.test(p.message))).toBe(true);
  });

  it('head importance: signed ∂T/∂g equals autograd; the default is Michel’s per-layer normalization of |∂T/∂g|', async () => {
    const signed = (await analysis({ view: 'importance', options: { signed: true } })).result;
    if (signed.view !== 'importance') throw new Error(signed.view);
    expect(signed.data.signed).toBe(true);
    expect(maxAbsDiff(signed.data.values.flat(), grads.head_importance.flat())).toBeLessThan(1e-4 * Math.max(...grads.head_importance.flat().map(Math.abs)));
    const michel = (await analysis({ view: 'importance' })).result;
    if (michel.view !== 'importance') throw new Error(michel.view);
    const expected = grads.head_importance.map((layer) => {
      const n = Math.sqrt(layer.reduce((s, v) => s + v * v, 0));
      return layer.map((v) => Math.abs(v) / n);
    });
    expect(maxAbsDiff(michel.data.values.flat(), expected.flat())).toBeLessThan(1e-4);
  });

  it('ablation of head 0:0: the target before and after, and KL, equal PyTorch', async () => {
    const { result } = await analysis({ view: 'ablation', options: { heads: [{ layer: 0, head: 0 }] } });
    if (result.view !== 'ablation') throw new Error(result.view);
    expect(result.data.heads).toEqual([{ layer: 0, head: 0 }]);
    expect(result.data.target!.before).toBeCloseTo(grads.target.value, 4);
    expect(result.data.target!.after).toBeCloseTo(grads.ablation.target_ablated, 4);
    expect(result.data.kl).toBeCloseTo(grads.ablation.kl, 4);
    expect(result.data.candidates.length).toBeGreaterThanOrEqual(10);
  });

  it("logit lens: the last row's top token and probability at every position are the final logits' argmax and softmax", async () => {
    const { result } = await analysis({ view: 'lens', options: { topK: 3 } });
    if (result.view !== 'lens') throw new Error(result.view);
    const d = result.data;
    expect(d.layers).toEqual(['embeddings', 'L0', 'L1']);
    const logits = refInput.logits as number[][];
    const vocab = (JSON.parse(readFileSync(join(FIXTURES, 'gpt2', 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } }).model.vocab;
    const byId = new Map(Object.entries(vocab).map(([t, i]) => [i, t]));
    const last = d.cells[d.cells.length - 1]!;
    expect(last).toHaveLength(logits.length);
    for (let p = 0; p < logits.length; p++) {
      const lp = logSoftmax(logits[p]!);
      let best = 0;
      for (let v = 1; v < lp.length; v++) if (lp[v]! > lp[best]!) best = v;
      expect(last[p]![0]!.probability).toBeCloseTo(Math.exp(lp[best]!), 4);
      // The label as the views write vocabulary entries (gpt2's byte-level 'Ġ' a space, 'č' a visible ␍).
      expect(last[p]![0]!.token).toBe(viewTokenLabel(byId.get(best)!, 'gpt2'));
      expect(last[p]).toHaveLength(3);
    }
  });

  it('deep dive: the residual stream entering each layer has the norms of PyTorch’s hidden states', async () => {
    const { result } = await analysis({ view: 'deep' });
    if (result.view !== 'deep') throw new Error(result.view);
    const d = result.data;
    expect(d.stack).toBe('self');
    expect(d.layers).toHaveLength(2);
    const hs = refInput.hidden_states as number[][][];
    for (const l of [0, 1]) {
      const expected = hs[l]!.map((row) => Math.sqrt(row.reduce((s, v) => s + v * v, 0)));
      expect(maxAbsDiff(d.layers[l]!.residual, expected)).toBeLessThan(1e-4 * Math.max(...expected));
    }
    // Relative updates are the norms over the stream they are added to.
    for (const l of d.layers) for (const [i, v] of l.attention.relative.entries()) expect(v).toBeCloseTo(l.attention.norm[i]! / l.residual[i]!, 6);
    expect(d.tokens).toHaveLength(grads.input_ids.length);
  });
});

describe('POST /api/analysis on a masked LM (bert) against PyTorch', () => {
  const bert = (JSON.parse(readFileSync(join(FIXTURES, 'bert', 'gradients.json'), 'utf8')) as { inputs: (GradInput & { id: string })[] }).inputs.find((i) => i.id === 'short')!;
  const bertText = readReference('bert').inputs.find((i) => i.id === 'short')!.text!;

  it('saliency with a target position: log p(input token) there, gradient × input and 256-step integrated gradients equal autograd', async () => {
    const res = await post({ model: 'folder:0/bert', text: bertText, view: 'saliency', options: { position: bert.target.position, steps: 256 } });
    const all = await lines(res);
    const last = all[all.length - 1]!;
    if (last.type !== 'result' || last.result.view !== 'saliency') throw new Error(JSON.stringify(last).slice(0, 300));
    const d = last.result.data;
    expect(d.targetPosition).toBe(bert.target.position);
    const row = (prefix: string) => d.rows.find((x) => x.method.startsWith(prefix))!;
    const scale = (a: readonly number[]) => Math.max(...a.map(Math.abs));
    expect(maxAbsDiff(row('gradient × input').scores, bert.grad_x_input)).toBeLessThan(1e-4 * scale(bert.grad_x_input) + 1e-6);
    expect(maxAbsDiff(row('integrated gradients').scores, bert.integrated_gradients)).toBeLessThan(1e-3 * scale(bert.integrated_gradients) + 1e-5);
  });

  it('without a mask token or a position, the analysis ends with one line saying what to give', async () => {
    const res = await post({ model: 'folder:0/bert', text: bertText, view: 'importance' });
    expect(res.status).toBe(200);
    const all = await lines(res);
    const last = all[all.length - 1]!;
    expect(last.type).toBe('error');
    if (last.type === 'error') expect(last.error).toMatch(/no mask token; give the target position/);
  });
});

describe('POST /api/analysis: cache, cancel, refusals', () => {
  it('a repeated request is answered from the cache', async () => {
    const before = server.analysis.runs;
    const a = await analysis({ view: 'lens', options: { topK: 4 } });
    expect(a.res.headers.get('x-attnscope-cache')).toBe('miss');
    const b = await analysis({ view: 'lens', options: { topK: 4 } });
    expect(b.res.headers.get('x-attnscope-cache')).toBe('hit');
    expect(b.result.cached).toBe(true);
    expect(b.result.data).toEqual(a.result.data);
    expect(server.analysis.runs).toBe(before + 1);
  });

  it('a client that goes away stops the run (no result cached, no worker left)', async () => {
    const kept = server.analysis.cache.size;
    const controller = new AbortController();
    const res = await post({ model: MODEL, text: `${TEXT} ${TEXT}`, view: 'saliency', options: { steps: 256 } }, { signal: controller.signal });
    const reader = res.body!.getReader();
    // Wait for the first progress line, then leave.
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toMatch(/"type":"progress"/);
    controller.abort();
    await server.analysis.settled();
    expect(server.analysis.cache.size).toBe(kept);
    expect(runningWorkers()).toBe(0);
    // Asked again, it runs again (the cancelled run kept nothing).
    const again = await post({ model: MODEL, text: `${TEXT} ${TEXT}`, view: 'lens' });
    expect(again.headers.get('x-attnscope-cache')).toBe('miss');
    await again.text();
  });

  const refusals: [string, Record<string, unknown>, number, string, RegExp][] = [
    ['an unknown view', { view: 'nope' }, 400, 'view', /one of saliency, importance, ablation, lens, deep/],
    ['an option of another view', { view: 'lens', options: { steps: 4 } }, 400, 'options.steps', /not an option of the lens view/],
    ['too many steps', { view: 'saliency', options: { steps: 100000 } }, 400, 'options.steps', /1 to 256/],
    ['topK above the limit', { view: 'lens', options: { topK: 999 } }, 400, 'options.topK', /1 to 20/],
    ['an ablation without heads', { view: 'ablation' }, 400, 'options.heads', /needs the heads/],
    ['a malformed head', { view: 'ablation', options: { heads: [{ layer: -1, head: 0 }] } }, 400, 'options.heads', /non-negative/],
    ['a head the model does not have', { view: 'ablation', options: { heads: [{ layer: 0, head: 99 }] } }, 400, 'options.heads', /out of range \(self: layers 0 to 1, heads 0 to 3\)/],
    ['a position past the text', { view: 'importance', options: { position: 30 } }, 400, 'options.position', /past the last token \(positions 0 to 12\)/],
    ['an unknown field', { view: 'lens', extra: 1 }, 400, 'extra', /unknown field/],
    ["an encoder-decoder's logit lens without a decoder text", { view: 'lens', model: 'folder:0/bart' }, 400, 'decoderText', /give a decoder text/],
    ['an unknown model', { view: 'lens', model: 'folder:0/none' }, 404, 'model', /not offered/],
    ['too many tokens', { view: 'lens', text: 'word '.repeat(60) }, 413, 'text', /at most 40 allowed/],
    ['too many characters', { view: 'lens', text: 'x'.repeat(2001) }, 413, 'text', /at most 2000/],
  ];
  for (const [what, body, status, field, message] of refusals) {
    it(`refuses ${what} (${status}, field ${field})`, async () => {
      const res = await post({ model: MODEL, text: TEXT, ...body });
      expect(res.status).toBe(status);
      const e = (await res.json()) as ApiError;
      expect(e.field).toBe(field);
      expect(e.error).toMatch(message);
      expect(e.error).not.toMatch(/\n/);
    });
  }

  it('refuses a body that is not JSON, and one over the byte limit', async () => {
    const bad = await post('{not json');
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as ApiError).field).toBe('body');
    const big = await post({ model: MODEL, text: 'a'.repeat(9000), view: 'lens' });
    expect(big.status).toBe(413);
  });
});
