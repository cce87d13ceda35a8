/**
 * `attnscope attribute` with integrated gradients' --steps auto (the default), --tolerance,
 * --max-steps and --ig-batch: the JSON reports the stages, whether completeness was reached (checked
 * here from the scores and the two target values the JSON prints) and the batching; the table says
 * when it was not; bad values are one clear line.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { expectInputError, runCli } from './helpers/cli.js';
import { FIXTURES } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-attribute-auto-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface IgJson {
  integratedGradients: number[];
  igCompleteness: {
    sum_attributions: number; target_x: number; target_baseline: number; relative_error: number; steps: number; batch_size: number; runs: number;
    auto?: { tolerance: number; max_steps: number; converged: boolean; stopped: string; stages: { steps: number; relative_error: number }[] };
  };
}

const IDS = ['--ids', '10,20,30,40,50,60'];

describe('attnscope attribute: integrated gradients steps', () => {
  it('default --steps auto: converged within 1% (recomputed), stages and batching reported', () => {
    const r = runCli(tmp, ['attribute', join(FIXTURES, 'gpt2'), ...IDS, '--method', 'integratedGradients', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as IgJson;
    const c = out.igCompleteness;
    const sum = out.integratedGradients.reduce((a, b) => a + b, 0);
    const relative = Math.abs(sum - (c.target_x - c.target_baseline)) / Math.abs(c.target_x - c.target_baseline);
    expect(relative).toBeLessThanOrEqual(0.01);
    expect(c.auto).toMatchObject({ tolerance: 0.01, max_steps: 512, converged: true, stopped: 'tolerance' });
    expect(c.auto!.stages.at(-1)!.steps).toBe(c.steps);
    expect([16, 48, 144, 432]).toContain(c.steps);
    expect(c.runs).toBeGreaterThanOrEqual(1);
  });

  it('--max-steps below what the tolerance needs: the table says it did not get there; --ig-batch 4', () => {
    const r = runCli(tmp, ['attribute', join(FIXTURES, 'gpt2'), ...IDS, '--method', 'integratedGradients', '--tolerance', '0.000001', '--max-steps', '16', '--ig-batch', '4', '--json']);
    expect(r.status, r.stderr).toBe(0);
    const c = (JSON.parse(r.stdout) as IgJson).igCompleteness;
    expect(c.auto).toMatchObject({ converged: false, stopped: 'max-steps', max_steps: 16 });
    expect(c.auto!.stages.map((s) => s.steps)).toEqual([16]);
    expect(c.relative_error).toBeGreaterThan(0.000001);
    expect(c).toMatchObject({ steps: 16, batch_size: 4, runs: 4 });
    const t = runCli(tmp, ['attribute', join(FIXTURES, 'gpt2'), ...IDS, '--method', 'integratedGradients', '--tolerance', '0.000001', '--max-steps', '16']);
    expect(t.stdout).toMatch(/integrated gradients \(16 steps, midpoint, baseline zero\): .* — auto: NOT within 0\.0001% after 16 steps: --max-steps 16 reached/);
  });

  const bad: [string, string[], RegExp][] = [
    ['tolerance out of range', ['--tolerance', '2'], /^attnscope: --tolerance: expected a number above 0 and below 1 \(0\.01 = 1%\), got '2'/],
    ['max-steps with fixed steps', ['--steps', '20', '--max-steps', '40'], /^attnscope: --max-steps applies to --steps auto \(the default\), not --steps 20/],
    ['steps neither a number nor auto', ['--steps', 'many'], /--steps/],
    ['ig-batch without integrated gradients', ['--method', 'gradient', '--ig-batch', '4'], /^attnscope: --ig-batch applies to --method integratedGradients/],
  ];
  it.each(bad)('bad input: %s', (_what, args, message) => {
    expectInputError(runCli(tmp, ['attribute', join(FIXTURES, 'gpt2'), ...IDS, ...args]), message);
  });
});
