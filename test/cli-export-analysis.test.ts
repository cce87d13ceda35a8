/**
 * `attnscope export --view saliency|importance|ablation|lens` as real processes: saliency and head
 * importance from a trace file holding attributions (hand-made; importance normalised here in
 * float64 as Michel et al.), the logit lens of the default model run on --text (its last row =
 * the model's own softmax top-1, recomputed here in float64 from the logits), the ablation
 * comparison of a model run (the numbers ablateHeads reports), PNG, and one-line refusals.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../src/core/trace.js';
import { ablateHeads } from '../src/engine/ablation.js';
import { loadModel } from '../src/engine/load.js';
import { writeTraceFile } from '../src/io/trace-file.js';
import { prettifyToken, tokenLabel } from '../src/views/tokens.js';
import { runCli } from './helpers/cli.js';
import { handTrace } from './helpers/hand-trace.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-export-analysis-'));
const traced = join(tmp, 'attributed.json');
const TEXT = 'Once upon a time, there was a little girl named Lily. She';
const HOSTILE = `<script>&"'`;
const gate = (l: number, h: number) => (l + 1) * (h - 1.5) * 0.01;
let trace: Trace;

beforeAll(async () => {
  trace = handTrace(['a', HOSTILE, 'c', 'd', 'e'], { layers: 2, heads: 4 });
  trace.attributions = {
    target: { kind: 'causal_lm_argmax_logprob', position: 4, tokenId: 4, value: -0.5 },
    scores: {
      gradXInput: { method: 'gradXInput', reduction: 'sum', scores: Float32Array.from([0.5, -0.25, 1, 0, -1]) },
    },
    headImportance: { self: { dims: [2, 4], data: Float32Array.from({ length: 8 }, (_, i) => gate(Math.floor(i / 4), i % 4)) } },
  };
  await writeTraceFile(traced, trace);
});

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('attnscope export, analysis views', () => {
  it('saliency of a trace file: one cell per token with its score, the target named, tokens escaped', () => {
    const out = join(tmp, 's.svg');
    const r = runCli(tmp, ['export', traced, '--view', 'saliency', '--out', out]);
    expect(r.stderr).toMatch(/^wrote /);
    expect(r.status).toBe(0);
    const doc = parseXml(readFileSync(out, 'utf8'));
    expect(findAll(doc, 'rect', (a) => a.class === 'saliency-cell').map((c) => Number(c.attrs['data-value']))).toEqual([0.5, -0.25, 1, 0, -1]);
    expect(findAll(doc, 'text', (a) => a.class === 'saliency-token').map(textOf)).toEqual(['a', HOSTILE, 'c', 'd', 'e']);
    // Token id 4 is the input's 'b' position text (HOSTILE): the trace names it.
    expect(findAll(doc, 'text', (a) => a.class === 'saliency-target').map(textOf)).toEqual([`target: log p(“${HOSTILE}” | position 4)`]);
  });

  it('importance of a trace file: |g| / ‖g_layer‖₂, or the signed gradient with --signed; PNG', () => {
    const out = join(tmp, 'i.svg');
    expect(runCli(tmp, ['export', traced, '--view', 'importance', '--out', out]).status).toBe(0);
    const values = findAll(parseXml(readFileSync(out, 'utf8')), 'rect', (a) => (a.class ?? '').startsWith('importance-cell')).map((c) => Number(c.attrs['data-value']));
    const expected: number[] = [];
    for (let l = 0; l < 2; l++) {
      const g = [0, 1, 2, 3].map((h) => Math.fround(gate(l, h)));
      const norm = Math.sqrt(g.reduce((s, v) => s + v * v, 0));
      expected.push(...g.map((v) => Math.abs(v) / norm));
    }
    values.forEach((v, i) => expect(v).toBeCloseTo(expected[i]!, 5));
    expect(runCli(tmp, ['export', traced, '--view', 'importance', '--signed', '--out', out]).status).toBe(0);
    const signed = findAll(parseXml(readFileSync(out, 'utf8')), 'rect', (a) => (a.class ?? '').startsWith('importance-cell')).map((c) => Number(c.attrs['data-value']));
    signed.forEach((v, i) => expect(v).toBeCloseTo(gate(Math.floor(i / 4), i % 4), 6));
    const png = join(tmp, 'i.png');
    expect(runCli(tmp, ['export', traced, '--view', 'importance', '--out', png]).status).toBe(0);
    expect([...readFileSync(png).subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47]);
  });

  it('lens of a model run: every layer × position, the last row the model’s own top-1', async () => {
    const out = join(tmp, 'l.svg');
    const r = runCli(tmp, ['export', '--text', TEXT, '--view', 'lens', '--top-k', '3', '--out', out]);
    expect(r.status).toBe(0);
    const model = await loadModel(undefined);
    const t = await model.trace(TEXT, { logits: true }).finally(() => model.dispose());
    const n = t.tokens.length;
    const layers = t.model.numLayers;
    const doc = parseXml(readFileSync(out, 'utf8'));
    const cells = findAll(doc, 'rect', (a) => (a.class ?? '').startsWith('lens-cell'));
    expect(cells).toHaveLength((layers + 1) * n);
    const [rows, vocab] = t.logits!.dims;
    expect(rows).toBe(n);
    const last = cells.filter((c) => c.attrs['data-row'] === String(layers));
    for (let p = 0; p < n; p++) {
      const row = t.logits!.data.subarray(p * vocab, (p + 1) * vocab);
      let best = 0;
      for (let v = 1; v < vocab; v++) if (row[v]! > row[best]!) best = v;
      let z = 0;
      for (let v = 0; v < vocab; v++) z += Math.exp(row[v]! - row[best]!);
      expect(Number(last[p]!.attrs['data-value'])).toBeCloseTo(1 / z, 4);
    }
  });

  it('lens of a trace file: the trace’s own lens, cell by cell', async () => {
    const model = await loadModel(undefined);
    const t = await model.trace(TEXT, { logitLens: 2 }).finally(() => model.dispose());
    const file = join(tmp, 'lens.json');
    await writeTraceFile(file, t);
    const out = join(tmp, 'lf.svg');
    expect(runCli(tmp, ['export', file, '--view', 'lens', '--out', out]).status).toBe(0);
    const cells = findAll(parseXml(readFileSync(out, 'utf8')), 'rect', (a) => (a.class ?? '').startsWith('lens-cell'));
    const n = t.tokens.length;
    expect(cells).toHaveLength(t.logitLens!.layers.length * n);
    cells.forEach((c, i) => expect(Number(c.attrs['data-value'])).toBeCloseTo(t.logitLens!.layers[Math.floor(i / n)]!.probabilities[(i % n) * 2]!, 5));
  });

  it('ablation of a model run: the heads, KL, cosine and both probabilities as ablateHeads reports them', async () => {
    const out = join(tmp, 'a.svg');
    const r = runCli(tmp, ['export', '--text', TEXT, '--view', 'ablation', '--heads', '4:*,3:1', '--top-k', '4', '--out', out]);
    expect(r.stderr).toMatch(/^wrote /);
    expect(r.status).toBe(0);
    const model = await loadModel(undefined);
    const tokens = await model.tokenize(TEXT);
    const res = await ablateHeads(model, { inputIds: tokens.map((x) => x.id), typeIds: tokens.map((x) => x.segment) }, { heads: [{ stack: 'self', layer: 4, head: 0 }, { stack: 'self', layer: 3, head: 1 }, ...[1, 2, 3, 4, 5, 6, 7].map((head) => ({ stack: 'self' as const, layer: 4, head }))], topK: 4 }).finally(() => model.dispose());
    const doc = parseXml(readFileSync(out, 'utf8'));
    const text = findAll(doc, 'text').map(textOf).join('\n');
    expect(text).toContain('removed (zero ablation): L3 H1, L4 H0–7');
    expect(text).toContain(`KL(before ‖ after) = ${Number(res.kl!.toPrecision(3))} nats`);
    expect(text).toContain(`cosine of the last hidden states = ${res.cosine.toFixed(4)}`);
    const shown = [...res.candidates].sort((a, b) => Math.max(b.before, b.after) - Math.max(a.before, a.after) || b.before - a.before).slice(0, 4);
    const bars = findAll(doc, 'rect', (a) => (a.class ?? '').startsWith('ablation-bar'));
    expect(bars.map((b) => Number(b.attrs['data-value']))).toEqual(shown.flatMap((c) => [Number(c.before.toPrecision(6)), Number(c.after.toPrecision(6))]));
    expect(findAll(doc, 'text', (a) => a.class === 'ablation-token').map(textOf)).toEqual(shown.map((c) => tokenLabel(prettifyToken(c.token, 'llama'))));
  });

  it('saliency of a model run: one row per method, the target = the model’s top next token at the last position', async () => {
    const out = join(tmp, 'm.svg');
    const r = runCli(tmp, ['export', '--text', 'Once upon a time', '--view', 'saliency', '--out', out], 180_000);
    expect(r.status).toBe(0);
    const model = await loadModel(undefined);
    const t = await model.trace('Once upon a time', { topK: 1 }).finally(() => model.dispose());
    const n = t.tokens.length;
    const top = t.predictions!.find((p) => p.position === n - 1)!.candidates[0]!;
    const doc = parseXml(readFileSync(out, 'utf8'));
    const methods = [...new Set(findAll(doc, 'text', (a) => a.class === 'method-label').map(textOf))];
    expect(methods).toEqual(['gradient (L2)', 'gradient × input', 'integrated gradients', 'attention × gradient', 'gradient-weighted rollout']);
    expect(findAll(doc, 'rect', (a) => a.class === 'saliency-cell')).toHaveLength(5 * n);
    expect(findAll(doc, 'text', (a) => a.class === 'saliency-target').map(textOf)).toEqual([`target: log p(“${tokenLabel(prettifyToken(top.token, 'llama'))}” | position ${n - 1})`]);
    expect(findAll(doc, 'text', (a) => a.class === 'saliency-note').map(textOf).join(' ')).toMatch(/completeness: Σ = /);
  });

  it('refuses what does not apply, in one line', () => {
    const cases: [string[], RegExp][] = [
      [['export', traced, '--view', 'ablation', '--heads', '0:1', '--out', join(tmp, 'x.svg')], /the ablation view runs the model twice/],
      [['export', '--text', 'hi', '--view', 'saliency', '--stack', 'self', '--out', join(tmp, 'x.svg')], /--stack does not apply to the saliency view/],
      [['export', traced, '--view', 'saliency', '--layer', '1', '--out', join(tmp, 'x.svg')], /--layer does not apply to the saliency view/],
      [['export', traced, '--view', 'lens', '--signed', '--out', join(tmp, 'x.svg')], /--signed does not apply to the lens view/],
      [['export', '--text', 'hi', '--view', 'ablation', '--out', join(tmp, 'x.svg')], /give the heads to remove with --heads/],
      [['export', traced, '--view', 'saliency', '--scale-rows', 'both', '--out', join(tmp, 'x.svg')], /--scale-rows: expected per-row or shared/],
      [['export', traced, '--view', 'head', '--signed', '--out', join(tmp, 'x.svg')], /--signed does not apply to the head view/],
    ];
    for (const [args, msg] of cases) {
      const r = runCli(tmp, args);
      expect(r.status).not.toBe(0);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(msg);
    }
  });
});
