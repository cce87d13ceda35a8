/**
 * `attnscope aggregate` as a real process on the BERT fixture: words (CSV) and sentences (JSON)
 * against loops over the trace's token matrix written here, from a model and from a trace file,
 * and bad input as one line.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import { ROOT, runCli } from './helpers/cli.js';

const scratch = mkdtempSync(join(tmpdir(), 'attnscope-cli-aggregate-'));
const BERT = join(ROOT, 'test', 'fixtures', 'bert');
const TEXT = 'The cat sat on the mat. It was tired!';
let trace: Trace;

beforeAll(async () => {
  const model = await loadModel(BERT);
  try {
    trace = await model.trace(TEXT);
  } finally {
    await model.dispose();
  }
});
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function head(layer: number, h: number): (i: number, j: number) => number {
  const n = trace.tokens.length;
  const W = trace.attention.self!.layers[layer]!;
  return (i, j) => W[(h * n + i) * n + j]!;
}

describe('attnscope aggregate', () => {
  it('words: CSV of one head against the word rule computed here', () => {
    const r = runCli(scratch, ['aggregate', BERT, '--text', TEXT, '--layer', '1', '--head', '2', '--csv']);
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toBe('unit_index,unit,0:[CLS],1:The,2:cat,3:sat,4:on,5:the,6:mat,7:.,8:It,9:was,10:tired,11:!,12:[SEP]');
    // Units by the tokenizer's word indices; the fixture's vocabulary splits some words into pieces.
    const groups: number[][] = [];
    const seen = new Map<number, number[]>();
    trace.tokens.forEach((t, i) => {
      if (t.word === null) groups.push([i]);
      else if (seen.has(t.word)) seen.get(t.word)!.push(i);
      else {
        const g = [i];
        seen.set(t.word, g);
        groups.push(g);
      }
    });
    const w = head(1, 2);
    groups.forEach((gu, u) => {
      const cells = lines[u + 1]!.split(',').slice(2).map(Number);
      let rowSum = 0;
      groups.forEach((gv, v) => {
        let s = 0;
        for (const i of gu) for (const j of gv) s += w(i, j);
        expect(cells[v]).toBeCloseTo(s / gu.length, 6);
        rowSum += cells[v]!;
      });
      expect(rowSum).toBeCloseTo(1, 5);
    });
  });

  it('sentences: JSON block means from a trace file', () => {
    const file = join(scratch, 'bert.json');
    expect(runCli(scratch, ['trace', BERT, '--text', TEXT, '--out', file]).status).toBe(0);
    const r = runCli(scratch, ['aggregate', file, '--text', TEXT, '--by', 'sentences', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { head: string; units: { label: string; tokens: number[] }[]; values: number[][] };
    expect(out.head).toBe('mean');
    expect(out.units.map((u) => u.label)).toEqual(['[CLS]', 'The cat sat on the mat.', 'It was tired!', '[SEP]']);
    const H = trace.model.numHeads;
    const mean = (i: number, j: number) => {
      let s = 0;
      for (let h = 0; h < H; h++) s += head(0, h)(i, j);
      return s / H;
    };
    out.units.forEach((a, x) =>
      out.units.forEach((b, y) => {
        let s = 0;
        for (const i of a.tokens) for (const j of b.tokens) s += mean(i, j);
        expect(out.values[x]![y]).toBeCloseTo(s / (a.tokens.length * b.tokens.length), 6);
      }),
    );
  });

  it('bad input: one line', () => {
    const r = runCli(scratch, ['aggregate', BERT, '--text', TEXT, '--by', 'letters']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^attnscope: --by: expected words, sentences, got 'letters'/);
    const rule = runCli(scratch, ['aggregate', BERT, '--text', TEXT, '--rule', 'max']);
    expect(rule.stderr).toMatch(/--rule applies to --by sentences/);
  });
});
