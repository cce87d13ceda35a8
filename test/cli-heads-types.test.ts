/**
 * `attnscope heads --out grid.svg|grid.png` and `attnscope export --view types` as real processes,
 * on a trace file of planted heads (previous-token, sink, self, uniform): the grid's cells carry the
 * planted types and agree with the CSV's top_type column; PNG; one-line refusals of bad options.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeTraceFile } from '../src/io/trace-file.js';
import { runCli } from './helpers/cli.js';
import { handTrace } from './helpers/hand-trace.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-types-cli-'));
const planted = join(tmp, 'planted.json');

beforeAll(async () => {
  // Head h of every layer: 0 previous token, 1 first token, 2 itself, 3 uniform (causal).
  const trace = handTrace(Array.from({ length: 16 }, (_, i) => `w${i}`), {
    layers: 3,
    heads: 4,
    weight: (l, h, q, k) => {
      if (k > q) return 0;
      if (h === 3) return 1;
      const target = h === 0 ? Math.max(0, q - 1) : h === 1 ? 0 : q;
      return k === target ? 1 : 0.02 + 0.01 * l;
    },
  });
  await writeTraceFile(planted, trace);
});

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const cells = (svg: string) => findAll(parseXml(svg), 'rect', (a) => (a.class ?? '').startsWith('type-cell'));

describe('attnscope heads --out grid', () => {
  it('draws the planted types of a trace file, as the CSV names them (SVG, then PNG)', () => {
    const csv = runCli(tmp, ['heads', planted, '--csv']);
    expect(csv.status).toBe(0);
    const lines = csv.stdout.trimEnd().split('\n');
    const col = lines[0]!.split(',').indexOf('top_type');
    const types = lines.slice(1).map((l) => l.split(',')[col]);

    const svgPath = join(tmp, 'grid.svg');
    const r = runCli(tmp, ['heads', planted, '--out', svgPath, '--theme', 'dark']);
    expect(r.stderr).toMatch(/wrote .*grid\.svg .*12 heads, \d+ with a type/);
    expect(r.status).toBe(0);
    const svg = readFileSync(svgPath, 'utf8');
    const rects = cells(svg);
    expect(rects.map((c) => `${c.attrs['data-layer']}.${c.attrs['data-head']}`)).toEqual(Array.from({ length: 12 }, (_, i) => `${Math.floor(i / 4)}.${i % 4}`));
    expect(rects.map((c) => c.attrs['data-type'])).toEqual(types);
    for (let l = 0; l < 3; l++) expect(rects.slice(l * 4, l * 4 + 3).map((c) => c.attrs['data-type'])).toEqual(['previous_token', 'sink', 'self']);
    const title = findAll(parseXml(svg), 'text').map(textOf)[0];
    expect(title).toBe(`hand-made · self-attention · head types on the trace file ${planted}`);

    const pngPath = join(tmp, 'grid.png');
    expect(runCli(tmp, ['heads', planted, '--exclude-first', '--out', pngPath, '--scale', '1']).status).toBe(0);
    expect([...readFileSync(pngPath).subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  });

  it('export --view types draws the grid of a trace file', () => {
    const out = join(tmp, 'export.svg');
    const r = runCli(tmp, ['export', planted, '--view', 'types', '--out', out]);
    expect(r.stderr).toMatch(/types view, svg/);
    expect(cells(readFileSync(out, 'utf8')).slice(0, 3).map((c) => c.attrs['data-type'])).toEqual(['previous_token', 'sink', 'self']);
  });

  it('refuses bad options in one line', () => {
    const cases: [string[], RegExp][] = [
      [['heads', planted, '--out', join(tmp, 'g.svg'), '--scale', '2'], /--scale applies to a PNG/],
      [['heads', planted, '--theme', 'dark'], /--theme applies to --clusters or to the head-type grid/],
      [['heads', planted, '--out', join(tmp, 'g.png'), '--theme', 'sepia'], /--theme: expected light or dark, got 'sepia'/],
      [['heads', planted, '--json', '--out', join(tmp, 'g.svg')], /\.json/],
      [['export', planted, '--view', 'heatmap', '--exclude-first', '--out', join(tmp, 'h.svg')], /--exclude-first does not apply to the heatmap view/],
    ];
    for (const [args, message] of cases) {
      const r = runCli(tmp, args);
      expect(r.status).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
  });
});
