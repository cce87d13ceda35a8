/**
 * `attnscope heads --clusters` and `attnscope export --view clusters` as real processes: the
 * cluster table (CSV, JSON, readable) on the embedded model's probe and on a trace file of planted
 * heads (previous-token, sink, self, uniform: recovered as four clusters named by the planted
 * feature), the scatter as SVG and PNG, and one-line refusals of bad options.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeTraceFile } from '../src/io/trace-file.js';
import { runCli } from './helpers/cli.js';
import { handTrace } from './helpers/hand-trace.js';
import { findAll, parseXml } from './helpers/xml.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-clusters-cli-'));
const planted = join(tmp, 'planted.json');

beforeAll(async () => {
  // Head h of every layer: 0 previous token, 1 first token, 2 itself, 3 uniform (causal).
  const trace = handTrace(Array.from({ length: 16 }, (_, i) => `w${i}`), {
    layers: 4,
    heads: 4,
    weight: (l, h, q, k) => {
      if (k > q) return 0;
      if (h === 3) return 1 + 0.05 * ((l + k) % 2);
      const target = h === 0 ? Math.max(0, q - 1) : h === 1 ? 0 : q;
      return k === target ? 1 : 0.02 + 0.01 * l;
    },
  });
  await writeTraceFile(planted, trace);
});

afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('attnscope heads --clusters', () => {
  it('finds the planted heads of a trace file: four clusters named by the planted feature (CSV and JSON)', () => {
    const r = runCli(tmp, ['heads', planted, '--clusters', '--csv', '--projection', 'pca']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines[0]).toBe('layer,head,cluster,cluster_name,x,y');
    const rows = lines.slice(1).map((l) => l.split(','));
    expect(rows).toHaveLength(16);
    for (const c of rows) {
      expect(c[2]).toBe(c[1]); // head h of every layer in cluster h
      expect(Number.isFinite(Number(c[4])) && Number.isFinite(Number(c[5]))).toBe(true);
    }
    expect(rows.slice(0, 3).map((c) => c[3])).toEqual(['previous_token ↑', 'sink ↑', 'self ↑']);

    const j = runCli(tmp, ['heads', planted, '--clusters', '--json', '--seed', '5']);
    expect(j.status).toBe(0);
    const doc = JSON.parse(j.stdout) as { input: string; seed: number; k: number; kChosenBySilhouette: boolean; silhouettes: { k: number }[]; rows: { head: number; cluster: number }[]; dropped: { feature: string }[] };
    expect(doc.input).toBe('trace');
    expect(doc.seed).toBe(5);
    expect(doc.k).toBe(4);
    expect(doc.kChosenBySilhouette).toBe(true);
    expect(doc.silhouettes.map((s) => s.k)).toEqual([2, 3, 4, 5, 6, 7, 8]);
    expect(doc.rows.every((row) => row.cluster === row.head)).toBe(true);
    // No token repeats in the trace: duplicate-token and induction are undefined and left out.
    expect(doc.dropped.map((d) => d.feature)).toEqual(expect.arrayContaining(['duplicate_token', 'induction']));
  });

  it('on the embedded model’s probe: the readable table, and the scatter as SVG and PNG', () => {
    const args = ['heads', '--clusters', '--samples', '1', '--seq-len', '12', '--k', '3'];
    const t = runCli(tmp, args);
    expect(t.status).toBe(0);
    expect(t.stdout).toMatch(/^stories260k: self attention on the repeated-token probe/);
    expect(t.stdout).toMatch(/\n3 clusters \(k-means on \d+ standardised metrics\)\n/);
    expect(t.stdout.match(/^cluster \d/gm)).toHaveLength(3);
    const svgPath = join(tmp, 'scatter.svg');
    const s = runCli(tmp, [...args, '--out', svgPath, '--theme', 'dark']);
    expect(s.status).toBe(0);
    expect(s.stderr).toMatch(/wrote .*scatter\.svg .*40 heads in 3 clusters/);
    const root = parseXml(readFileSync(svgPath, 'utf8'));
    const points = findAll(root, 'rect', (a) => (a.class ?? '').startsWith('head-point'));
    expect(points).toHaveLength(40);
    expect(new Set(points.map((p) => p.attrs['data-cluster']))).toEqual(new Set(['0', '1', '2']));
    const pngPath = join(tmp, 'scatter.png');
    expect(runCli(tmp, [...args, '--out', pngPath, '--scale', '1']).status).toBe(0);
    expect([...readFileSync(pngPath).subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  });

  it('export --view clusters draws the scatter of a trace file', () => {
    const out = join(tmp, 'export.svg');
    const r = runCli(tmp, ['export', planted, '--view', 'clusters', '--projection', 'pca', '--clusters', '4', '--out', out]);
    expect(r.stderr).toMatch(/clusters view, svg/);
    const points = findAll(parseXml(readFileSync(out, 'utf8')), 'rect', (a) => (a.class ?? '').startsWith('head-point'));
    expect(points.map((p) => p.attrs['data-cluster'])).toEqual(points.map((p) => p.attrs['data-head']));
  });

  it('refuses bad options in one line', () => {
    const cases: [string[], RegExp][] = [
      [['heads', planted, '--clusters', '--projection', 'tsne'], /--projection: expected umap or pca, got 'tsne'/],
      [['heads', planted, '--projection', 'pca'], /--projection applies to --clusters/],
      [['heads', planted, '--clusters', '--k', '0'], /--k/],
      [['heads', planted, '--clusters', '--k', '17'], /--k 17: there are 16 heads; allowed 1 to 16/],
      [['heads', planted, '--clusters', '--theme', 'dark'], /--theme applies to the scatter/],
      [['heads', planted, '--clusters', '--out', join(tmp, 'x.pdf')], /\.pdf|\.txt/],
      [['export', planted, '--view', 'heatmap', '--projection', 'pca', '--out', join(tmp, 'h.svg')], /--projection does not apply to the heatmap view/],
    ];
    for (const [args, message] of cases) {
      const r = runCli(tmp, args);
      expect(r.status).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
  });
});
