/**
 * `attnscope export --view sentences|words` as a real process on the embedded model: the drilled
 * cell's SVG holds the trace's token weights (the trace written by `attnscope trace` and read
 * here), the sentence matrix has one cell per pair of sentences, and bad flags get one clear line.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openTraceFile } from '../src/io/trace-file.js';
import { runCli } from './helpers/cli.js';
import { findAll, parseXml } from './helpers/xml.js';

const TEXT = 'Once upon a time there was a little cat. The cat liked to play in the sun. One day it met a big dog.';
const tmp = mkdtempSync(join(tmpdir(), 'attnscope-export-grouped-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('attnscope export --view sentences / words', () => {
  it('writes the sentence matrix and a drilled cell with the trace weights; rejects bad flags', async () => {
    const tracePath = join(tmp, 't.json');
    const t = runCli(tmp, ['trace', '--text', TEXT, '--out', tracePath]);
    expect(t.status, t.stderr).toBe(0);
    const { trace } = await openTraceFile(tracePath);
    const out = join(tmp, 's.svg');
    const r = runCli(tmp, ['export', '--view', 'sentences', '--text', TEXT, '--layer', '1', '--head', '3', '--hide-special', '--out', out]);
    expect(r.status, r.stderr).toBe(0);
    const cells = findAll(parseXml(readFileSync(out, 'utf8')), 'rect', (a) => a['data-q'] !== undefined);
    expect(cells).toHaveLength(9);
    const d = join(tmp, 'd.svg');
    const r2 = runCli(tmp, ['export', '--view', 'sentences', '--text', TEXT, '--layer', '1', '--head', '3', '--cell', '2,1', '--out', d]);
    expect(r2.status, r2.stderr).toBe(0);
    // Sentence 2 ("The cat …") × sentence 1 ("Once upon …"): their tokens by hand.
    const s1 = TEXT.indexOf('The cat');
    const s2 = TEXT.indexOf('One day');
    const first = (tk: { start: number; end: number }) => (TEXT[tk.start] === ' ' ? tk.start + 1 : tk.start);
    const A = trace.tokens.flatMap((tk, i) => (!tk.special && first(tk) < s1 ? [i] : []));
    const B = trace.tokens.flatMap((tk, i) => (!tk.special && first(tk) >= s1 && first(tk) < s2 ? [i] : []));
    const drilled = findAll(parseXml(readFileSync(d, 'utf8')), 'rect', (a) => a['data-q'] !== undefined);
    expect(drilled).toHaveLength(B.length * A.length);
    expect(readFileSync(d, 'utf8')).toMatch(/tokens of “The cat liked to play in th…” → “Once upon a time there was …”/);
    // The values are the traced weights of layer 1, head 3.
    const n = trace.tokens.length;
    const w = trace.attention.self!.layers[1]!;
    for (const c of drilled) {
      const q = B[Number(c.attrs['data-q'])]!;
      const k = A[Number(c.attrs['data-k'])]!;
      expect(Number(c.attrs['data-value'])).toBeCloseTo(w[(3 * n + q) * n + k]!, 5);
    }
    const bad = runCli(tmp, ['export', '--view', 'sentences', '--text', TEXT, '--rule', 'median', '--out', join(tmp, 'x.svg')]);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/--rule: expected mean, max, sum, share, got 'median'/);
    const bad2 = runCli(tmp, ['export', '--view', 'heatmap', '--text', TEXT, '--cell', '1,1', '--out', join(tmp, 'x.svg')]);
    expect(bad2.stderr).toMatch(/--cell does not apply to the heatmap view/);
  }, 240_000);
});
