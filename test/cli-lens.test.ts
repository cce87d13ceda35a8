/**
 * `attnscope lens` and `attnscope trace --deep-dive --logit-lens K` as real processes on the
 * embedded model (stories260k, a real pretrained Llama): the lens's last row against a float64
 * softmax of the model's own logits (run in-process), the CSV's shape, a trace file written with
 * the lens and read back by `lens`, and one-line refusals.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import { readTraceFile } from '../src/io/trace-file.js';
import { runCli } from './helpers/cli.js';

const TEXT = 'Lily saw a big dog. She';
const tmp = mkdtempSync(join(tmpdir(), 'attnscope-lens-cli-'));
let trace: Trace;

beforeAll(async () => {
  const model = await loadModel(undefined);
  try {
    trace = await model.trace(TEXT, { logits: true, attention: false });
  } finally {
    await model.dispose();
  }
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface LensJson {
  model: string;
  stack: string;
  topK: number;
  rows: string[];
  tokens: { index: number; id: number; text: string }[];
  cells: { id: number; token: string; probability: number }[][][];
}

/** The K most probable tokens of a logits row, by a float64 softmax. */
function topOf(row: Float32Array, k: number): { id: number; p: number }[] {
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  return Array.from(row, (v, id) => ({ id, p: Math.exp(v - max) / sum })).sort((a, b) => b.p - a.p).slice(0, k);
}

describe('attnscope lens', () => {
  it('prints JSON whose last row is the top-k of the model\'s own next-token distribution', () => {
    const r = runCli(tmp, ['lens', '--text', TEXT, '--top-k', '4', '--json'], 180_000);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as LensJson;
    const n = trace.tokens.length;
    expect(out.stack).toBe('self');
    expect(out.topK).toBe(4);
    expect(out.tokens.map((t) => t.id)).toEqual(trace.tokens.map((t) => t.id));
    expect(out.rows).toEqual(['embeddings', ...Array.from({ length: trace.model.numLayers }, (_, l) => `layer ${l}`)]);
    expect(out.cells.length).toBe(trace.model.numLayers + 1);
    const vocab = trace.logits!.dims[1];
    const last = out.cells[out.cells.length - 1]!;
    for (let p = 0; p < n; p++) {
      const expected = topOf(trace.logits!.data.subarray(p * vocab, (p + 1) * vocab), 4);
      expect(last[p]!.map((c) => c.id)).toEqual(expected.map((e) => e.id));
      last[p]!.forEach((c, i) => expect(Math.abs(c.probability - expected[i]!.p)).toBeLessThanOrEqual(1e-6));
    }
    // Every cell: k candidates, most probable first.
    for (const row of out.cells) {
      for (const cell of row) {
        expect(cell.length).toBe(4);
        for (let i = 1; i < 4; i++) expect(cell[i]!.probability).toBeLessThanOrEqual(cell[i - 1]!.probability);
      }
    }
  });

  it('writes CSV, one line per candidate; a trace written with --deep-dive --logit-lens opens in lens as a table', () => {
    const csv = runCli(tmp, ['lens', '--text', TEXT, '--top-k', '2', '--csv'], 180_000);
    expect(csv.status).toBe(0);
    const lines = csv.stdout.trim().split('\n');
    expect(lines[0]).toBe('row,layer,position,input,rank,id,token,probability');
    expect(lines.length - 1).toBe((trace.model.numLayers + 1) * trace.tokens.length * 2);
    expect(lines[1]!.startsWith('0,embeddings,0,')).toBe(true);

    const file = join(tmp, 'deep.safetensors');
    const t = runCli(tmp, ['trace', '--text', TEXT, '--deep-dive', '--logit-lens', '3', '--out', file], 180_000);
    expect(t.status, t.stderr).toBe(0);
    const table = runCli(tmp, ['lens', file], 60_000);
    expect(table.status, table.stderr).toBe(0);
    const rows = table.stdout.trim().split('\n');
    expect(rows[0]).toContain('logit lens');
    expect(rows.slice(2).map((l) => l.split(/\s{2,}/)[0])).toEqual(['embeddings', ...Array.from({ length: trace.model.numLayers }, (_, l) => `layer ${l}`)]);
    expect(rows[1]).toContain('0:');
    const refused = runCli(tmp, ['lens', file, '--top-k', '2'], 60_000);
    expect(refused.status).not.toBe(0);
    expect(refused.stderr.trim().split('\n').length).toBe(1);
    expect(refused.stderr).toContain('--top-k does not apply to a trace file');
  });

  it('trace --deep-dive writes the residual stream, values and MLP activations', async () => {
    const file = join(tmp, 'deep.json');
    const r = runCli(tmp, ['trace', '--text', TEXT, '--deep-dive', '--out', file], 180_000);
    expect(r.status, r.stderr).toBe(0);
    const back = await readTraceFile(file);
    const states = back.layerStates!.self!;
    expect(states.residuals!.input.length).toBe(trace.model.numLayers);
    expect(states.mlpActivations!.every((m) => m !== null)).toBe(true);
    expect(states.embeddings!.token.dims[0]).toBe(trace.tokens.length);
    expect(back.values!.self!.layers.length).toBe(trace.model.numLayers);
    expect(back.queries).toBeDefined();
    expect(back.logitLens).toBeUndefined();
    expect(JSON.parse(readFileSync(file, 'utf8')).layerStates.self.residuals.output.length).toBe(trace.model.numLayers);
  });

  it('refuses bad options in one line', () => {
    for (const [args, message] of [
      [['lens', '--text', TEXT, '--top-k', '0'], '--top-k: expected a positive integer'],
      [['lens', '--text', TEXT, '--json', '--csv'], 'give --json or --csv'],
      [['trace', '--text', TEXT, '--logit-lens', 'x'], '--logit-lens: expected a positive integer'],
      [['lens', '--text', TEXT, '--top-k', '100000'], 'allowed: 1 to'],
    ] as const) {
      const r = runCli(tmp, args, 120_000);
      expect(r.status, args.join(' ')).not.toBe(0);
      expect(r.stderr).toContain(message);
      expect(r.stderr.trim().split('\n').length).toBe(1);
    }
  });
});
