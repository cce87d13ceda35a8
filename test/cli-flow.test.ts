/**
 * `attnscope flow` as a real process on the embedded model: the CSV rollout against a float64
 * rollout recomputed here from the same model's trace (run in-process), the JSON attention flow
 * (rows normalised, causal), and one clear line above the size limit.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import { runCli } from './helpers/cli.js';

const TEXT = 'Lily saw a big dog.';
const tmp = mkdtempSync(join(tmpdir(), 'attnscope-flow-cli-'));
let trace: Trace;

beforeAll(async () => {
  const model = await loadModel(undefined);
  try {
    trace = await model.trace(TEXT);
  } finally {
    await model.dispose();
  }
});
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** R = A'_(L−1) ⋯ A'_0 with A' = ½·mean_h A + ½·I, rows normalised, as plain float64 loops. */
function rollout(): number[][] {
  const s = trace.attention.self!;
  const [H, n] = s.dims;
  let R: number[][] | null = null;
  for (const layer of s.layers) {
    const A = Array.from({ length: n }, (_, i) => {
      const row = Array.from({ length: n }, (_, j) => {
        let f = 0;
        for (let h = 0; h < H; h++) f += layer[(h * n + i) * n + j]!;
        return 0.5 * (f / H) + (i === j ? 0.5 : 0);
      });
      const sum = row.reduce((a, b) => a + b, 0);
      return row.map((v) => v / sum);
    });
    const prev: number[][] | null = R;
    R = prev === null ? A : A.map((row) => Array.from({ length: n }, (_, j) => row.reduce((acc, a, k) => acc + a * prev[k]![j]!, 0)));
  }
  return R!;
}

describe('attnscope flow', () => {
  it('writes the rollout as CSV with the token labels', () => {
    const r = runCli(tmp, ['flow', '--text', TEXT, '--csv'], 180_000);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n');
    const n = trace.tokens.length;
    expect(lines).toHaveLength(n + 1);
    expect(lines[0]!.split(',').slice(2)).toEqual(trace.tokens.map((t, j) => `${j}:${t.text}`));
    const R = rollout();
    lines.slice(1).forEach((line, i) => {
      const cells = line.split(',');
      expect(cells[0]).toBe(String(i));
      expect(cells[1]).toBe(trace.tokens[i]!.text);
      cells.slice(2).map(Number).forEach((v, j) => expect(v).toBeCloseTo(R[i]![j]!, 5));
    });
  });

  it('writes attention flow as JSON; refuses a graph above --max-nodes in one line', () => {
    const out = join(tmp, 'flow.json');
    const r = runCli(tmp, ['flow', '--text', TEXT, '--method', 'flow', '--out', out], 180_000);
    expect(r.status).toBe(0);
    const doc = JSON.parse(readFileSync(out, 'utf8')) as { method: string; tokens: { text: string }[]; matrix: number[][]; layers: number[] };
    const n = trace.tokens.length;
    expect(doc.method).toBe('flow');
    expect(doc.tokens.map((t) => t.text)).toEqual(trace.tokens.map((t) => t.text));
    expect(doc.layers).toEqual([0, trace.model.numLayers - 1]);
    doc.matrix.forEach((row, i) => {
      expect(row).toHaveLength(n);
      expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
      for (let j = i + 1; j < n; j++) expect(row[j]).toBe(0);
    });
    const bad = runCli(tmp, ['flow', '--text', TEXT, '--method', 'flow', '--max-nodes', '10'], 180_000);
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toMatch(/attention flow: the graph has \d+ nodes .* above the limit of 10/);
  });
});
