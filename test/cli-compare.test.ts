/**
 * `attnscope compare` as a real process: two models with different tokenisers (BERT and GPT-2
 * fixtures) through words (CSV), the embedded model on two texts (JSON, HTML page), trace files
 * (a file against itself: all zero; two heads of one file against a float64 JS divergence
 * computed here from the file), and bad input as one line.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readTraceFile } from '../src/io/trace-file.js';
import { ROOT, runCli } from './helpers/cli.js';

const scratch = mkdtempSync(join(tmpdir(), 'attnscope-cli-compare-'));
const BERT = join(ROOT, 'test', 'fixtures', 'bert');
const GPT2 = join(ROOT, 'test', 'fixtures', 'gpt2');
const TEXT = 'Hello world, the cat sat on the mat. It was tired!';
const STORY_A = 'Once upon a time, there was a little girl named Lily.';
const STORY_B = 'Once upon a time, there was a little boy named Tim.';
const HEADER = 'layer,head,layer_b,head_b,rank,js_divergence,max_abs_diff,mean_abs_diff';

interface JsonOut {
  alignment: string;
  matching: string;
  units: number;
  rows: { rank: number; layer: number; head: number | null; layer_b: number; head_b: number | null; js_divergence: number; max_abs_diff: number; mean_abs_diff: number }[];
}

function jsBits(p: number[], q: number[]): number {
  const sp = p.reduce((a, b) => a + b, 0);
  const sq = q.reduce((a, b) => a + b, 0);
  let d = 0;
  p.forEach((x, i) => {
    const a = x / sp;
    const b = q[i]! / sq;
    const m = (a + b) / 2;
    if (a > 0) d += 0.5 * a * Math.log2(a / m);
    if (b > 0) d += 0.5 * b * Math.log2(b / m);
  });
  return d;
}

const traceFile = join(scratch, 'bert.safetensors');
beforeAll(() => {
  const r = runCli(scratch, ['trace', BERT, '--text', TEXT, '--out', traceFile]);
  expect(r.status, r.stderr).toBe(0);
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('attnscope compare', () => {
  it('two models with different tokenisers: aligned through words, CSV with one row per head', () => {
    const r = runCli(scratch, ['compare', BERT, GPT2, '--text', TEXT, '--csv']);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe(HEADER);
    expect(lines.length).toBe(1 + 2 * 4);
    const ranks = lines.slice(1).map((l) => Number(l.split(',')[4]));
    expect(ranks).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const js = lines.slice(1).map((l) => Number(l.split(',')[5]));
    for (let i = 1; i < js.length; i++) expect(js[i]!).toBeLessThanOrEqual(js[i - 1]!);
    for (const v of js) expect(v > 0 && v <= 1).toBe(true);
    const json = JSON.parse(runCli(scratch, ['compare', BERT, GPT2, '--text', TEXT, '--json']).stdout) as JsonOut;
    expect(json.alignment).toBe('words');
    expect(json.units).toBe(14);
  });

  it('the embedded model on two texts: JSON rows, a table, and the HTML page', () => {
    const page = join(scratch, 'compare.html');
    const r = runCli(scratch, ['compare', '--text', STORY_A, '--text-b', STORY_B, '--json', '--html', page]);
    expect(r.status, r.stderr).toBe(0);
    const json = JSON.parse(r.stdout) as JsonOut;
    expect(json.alignment).toBe('positions');
    expect(json.matching).toBe('layer-head');
    expect(json.rows.length).toBe(5 * 8);
    expect(json.rows[0]).toMatchObject({ rank: 1 });
    expect(Object.keys(json.rows[0]!)).toEqual(['rank', 'layer', 'head', 'layer_b', 'head_b', 'js_divergence', 'max_abs_diff', 'mean_abs_diff']);
    expect(r.stderr).toMatch(/wrote .*compare\.html \(\d+ kB; 40 pairs\)/);
    const html = readFileSync(page, 'utf8');
    expect(html).toContain('id="attnscope-compare"');
    expect(html).toContain('Content-Security-Policy');
    const table = runCli(scratch, ['compare', '--text', STORY_A, '--text-b', STORY_B]);
    expect(table.stdout.split('\n')[2]).toMatch(/rank\s+layer\s+head\s+layer B\s+head B\s+JS \(bits\)/);
  });

  it('trace files: a file against itself is zero; two heads of one file against a float64 JS', async () => {
    const same = JSON.parse(runCli(scratch, ['compare', traceFile, traceFile, '--json']).stdout) as JsonOut;
    expect(same.rows.length).toBe(8);
    for (const row of same.rows) {
      expect(row.js_divergence).toBe(0);
      expect(row.max_abs_diff).toBe(0);
    }
    const out = join(scratch, 'heads.csv');
    const r = runCli(scratch, ['compare', traceFile, traceFile, '--layer', '0,1', '--head', '1,3', '--out', out]);
    expect(r.status, r.stderr).toBe(0);
    const lines = readFileSync(out, 'utf8').trim().split('\n');
    expect(lines[0]).toBe(HEADER);
    expect(lines.length).toBe(2);
    const cells = lines[1]!.split(',');
    expect(cells.slice(0, 5)).toEqual(['0', '1', '1', '3', '1']);
    const trace = await readTraceFile(traceFile);
    const n = trace.tokens.length;
    const s = trace.attention.self!;
    let sum = 0;
    for (let i = 0; i < n; i++) {
      const p = Array.from(s.layers[0]!.subarray((1 * n + i) * n, (1 * n + i + 1) * n));
      const q = Array.from(s.layers[1]!.subarray((3 * n + i) * n, (3 * n + i + 1) * n));
      sum += jsBits(p, q);
    }
    expect(Number(cells[5])).toBeCloseTo(sum / n, 9);
  });

  it('bad input: one line each', () => {
    const one = runCli(scratch, ['compare', BERT, '--text', TEXT]);
    expect(one.status).toBe(2);
    expect(one.stderr).toMatch(/^attnscope: compare: expected two models or trace files \(A B\), or none for the embedded model, got 1/);
    const layer = runCli(scratch, ['compare', traceFile, traceFile, '--layer', '7']);
    expect(layer.status).toBe(2);
    expect(layer.stderr.trim()).toBe('attnscope: layer (A) 7 is out of range (0–1)');
    const words = runCli(scratch, ['compare', BERT, GPT2, '--text', TEXT, '--text-b', 'Another text.']);
    expect(words.status).toBe(2);
    expect(words.stderr).toMatch(/tokenise differently: give the text both were made from/);
    const both = runCli(scratch, ['compare', '--text', STORY_A, '--json', '--csv']);
    expect(both.stderr).toMatch(/give --json or --csv, not both/);
    expect(existsSync(join(scratch, 'attnscope-view.html'))).toBe(false);
  });
});
