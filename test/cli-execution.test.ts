/**
 * attnscope trace --execution as a real process: by default (auto) an input above the on-demand
 * threshold whose whole-graph run would not fit --memory-budget runs layer by layer, and its
 * .safetensors trace holds PyTorch's queries and keys
 * (reference.json) and the same bytes as the whole graph's trace; a dense trace run layer by layer
 * has PyTorch's attention; bad values give one line.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openSafetensors } from '../src/io/safetensors.js';
import { expectInputError, runCli } from './helpers/cli.js';
import { FIXTURES, flat, maxAbsDiff, readReference, type Nested } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-execution-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const GPT2 = join(FIXTURES, 'gpt2');

describe('trace --execution', () => {
  const input = readReference('gpt2').inputs[0]!;
  const ids = input.input_ids.join(',');

  it('auto runs a long input layer by layer beyond the memory budget: the whole graph\'s file, PyTorch\'s queries and keys', async () => {
    const auto = join(tmp, 'auto.safetensors');
    const a = runCli(tmp, ['trace', GPT2, '--ids', ids, '--on-demand-above', '2', '--memory-budget', '1', '--out', auto], 180_000);
    expect(a.status, a.stderr).toBe(0);
    expect(a.stderr).toMatch(/attention on demand \(queries, keys and score terms\), run layer by layer\)/);
    const whole = join(tmp, 'whole.safetensors');
    const w = runCli(tmp, ['trace', GPT2, '--ids', ids, '--attention', 'on-demand', '--execution', 'whole', '--out', whole], 180_000);
    expect(w.status, w.stderr).toBe(0);
    expect(w.stderr).not.toMatch(/layer by layer/);
    expect(readFileSync(auto).equals(readFileSync(whole))).toBe(true);
    // Within the default budget (8 GB or half the machine's memory) the same input runs whole.
    const fits = join(tmp, 'fits.safetensors');
    const f = runCli(tmp, ['trace', GPT2, '--ids', ids, '--on-demand-above', '2', '--out', fits], 180_000);
    expect(f.status, f.stderr).toBe(0);
    expect(f.stderr).toMatch(/attention on demand \(queries, keys and score terms\)\)/);
    expect(readFileSync(fits).equals(readFileSync(whole))).toBe(true);
    const file = await openSafetensors(auto);
    try {
      expect(maxAbsDiff((await file.get('queries.self')).data, flat(input.queries as Nested))).toBeLessThanOrEqual(1e-4);
      expect(maxAbsDiff((await file.get('keys.self')).data, flat(input.keys as Nested))).toBeLessThanOrEqual(1e-4);
    } finally {
      await file.close();
    }
  }, 400_000);

  it('layers with dense attention: PyTorch\'s probabilities', async () => {
    const out = join(tmp, 'dense.safetensors');
    const r = runCli(tmp, ['trace', GPT2, '--ids', ids, '--attention', 'dense', '--execution', 'layers', '--out', out], 180_000);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/run layer by layer/);
    const file = await openSafetensors(out);
    try {
      expect(maxAbsDiff((await file.get('attention.self')).data, flat(input.attentions as Nested))).toBeLessThanOrEqual(1e-5);
    } finally {
      await file.close();
    }
  }, 300_000);

  it('bad --execution values: one line', () => {
    expectInputError(runCli(tmp, ['trace', GPT2, '--text', 'hi', '--execution', 'sideways']), /--execution: 'sideways' is not a way to run the model; allowed: auto, whole, layers/);
    expectInputError(runCli(tmp, ['trace', GPT2, '--text', 'hi', '--memory-budget', 'lots']), /--memory-budget: expected a positive integer, got 'lots'/);
    expectInputError(runCli(tmp, ['trace', GPT2, '--text', 'hi', '--execution', 'layers', '--memory-budget', '500']), /--memory-budget applies to --execution auto \(not layers\)/);
  });
});
