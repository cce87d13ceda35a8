/**
 * attnscope trace --attention on-demand as a real process: the .safetensors trace holds queries,
 * keys and score terms and no attention tensors; its heatmap export (SVG, PNG) shows the values of
 * PyTorch's attention (reference.json, ≤ 1e-5); bad option values give one line.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openSafetensors } from '../src/io/safetensors.js';
import { expectInputError, runCli } from './helpers/cli.js';
import { FIXTURES, flat, readReference, type Nested } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-on-demand-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const GPT2 = join(FIXTURES, 'gpt2');

describe('trace --attention on-demand', () => {
  it('writes queries, keys and score terms; export --view heatmap of the file shows the model attention', async () => {
    const input = readReference('gpt2').inputs[0]!;
    const out = join(tmp, 'lazy.safetensors');
    const r = runCli(tmp, ['trace', GPT2, '--ids', input.input_ids.join(','), '--attention', 'on-demand', '--out', out], 180_000);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/attention on demand \(queries, keys and score terms\)/);
    const file = await openSafetensors(out);
    try {
      expect(file.names().sort()).toEqual(['keys.self', 'queries.self']);
      expect(JSON.parse(file.metadata.scores!)).toMatchObject({ self: { causal: true } });
    } finally {
      await file.close();
    }
    const svgPath = join(tmp, 'h.svg');
    const e = runCli(tmp, ['export', out, '--view', 'heatmap', '--layer', '1', '--head', '2', '--out', svgPath], 180_000);
    expect(e.status, e.stderr).toBe(0);
    const svg = readFileSync(svgPath, 'utf8');
    const n = input.input_ids.length;
    const reference = flat(input.attentions as Nested);
    const cells = [...svg.matchAll(/data-q="(\d+)" data-k="(\d+)" data-value="([^"]+)"/g)];
    expect(cells.length).toBeGreaterThanOrEqual((n * (n + 1)) / 2);
    for (const [, q, k, v] of cells) {
      const want = reference[((1 * 4 + 2) * n + Number(q)) * n + Number(k)]!;
      expect(Math.abs(Number(v) - want)).toBeLessThanOrEqual(1e-5);
    }
    // The commands that read whole layers (heads, flow, aggregate, compare) compute them from the file.
    const heads = runCli(tmp, ['heads', out], 180_000);
    expect(heads.status, heads.stderr).toBe(0);
    expect(heads.stdout).toMatch(/self attention of .*lazy\.safetensors/);
    expect(heads.stdout.split('\n').filter((l) => /^\s+1\s+3\s/.test(l))).toHaveLength(1);
    const png = runCli(tmp, ['export', out, '--view', 'model', '--out', join(tmp, 'm.png')], 180_000);
    expect(png.status, png.stderr).toBe(0);
    expect(readFileSync(join(tmp, 'm.png')).subarray(1, 4).toString()).toBe('PNG');
  });

  it('bad --attention and --on-demand-above values: one line', () => {
    expectInputError(runCli(tmp, ['trace', GPT2, '--text', 'hi', '--attention', 'sparse']), /--attention: 'sparse' is not a way to record attention; allowed: dense, on-demand, auto/);
    expectInputError(runCli(tmp, ['trace', GPT2, '--text', 'hi', '--on-demand-above', '-3']), /--on-demand-above: expected a whole number of tokens \(0 or more\), got '-3'/);
  });
});
