/**
 * `attnscope ablate … --trace FILE`: the trace of the ablated run, read back with readTraceFile.
 * Against PyTorch (gradients.json's `ablation`: layer 0 head 0 gated to 0, the target's
 * log-probability after): the ablated JSON trace's logits at the target position give
 * target_ablated (.safetensors traces keep no logits);
 * its layer-0 attention is PyTorch's unablated one (a gate removes a head's output, not its
 * weights), and the later layers' attention differs from it.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readTraceFile } from '../src/io/trace-file.js';
import { expectInputError, runCli } from './helpers/cli.js';
import { readGradients, type GradientAblation } from './helpers/gradients.js';
import { FIXTURES, flat, maxAbsDiff, readReference } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-ablate-trace-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('attnscope ablate --trace', () => {
  it.each(['x.safetensors', 'x.json'])('gpt2, head 0:0 removed, %s: logits as PyTorch ablated them, attention of the ablated model', (file) => {
    const ref = readGradients('gpt2').inputs[0]!;
    const ab = ref.ablation as GradientAblation;
    const path = join(tmp, file);
    const r = runCli(tmp, ['ablate', join(FIXTURES, 'gpt2'), '--ids', ref.input_ids.join(','), '--heads', `${ab.layer}:${ab.head}`,
      '--target-position', String(ref.target.position), '--target-token', String(ref.target.token_id), '--json', '--trace', path]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/wrote .*trace of the zero ablation of 1 head/);
    const report = JSON.parse(r.stdout) as { target: { after: number } };
    return readTraceFile(path).then((trace) => {
      expect(trace.model.name).toMatch(/· zero ablation of 0:0$/);
      expect(trace.tokens.map((t) => t.id)).toEqual(ref.input_ids);
      if (file.endsWith('.json')) {
        // JSON traces keep the logits: log p(token) at the position (float64 log-softmax here).
        const vocab = trace.logits!.dims[1];
        const row = Array.from(trace.logits!.data.subarray(ref.target.position * vocab, (ref.target.position + 1) * vocab));
        const max = Math.max(...row);
        const logp = row[ref.target.token_id!]! - max - Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
        expect(Math.abs(logp - ab.target_ablated)).toBeLessThan(2e-4 * Math.max(1, Math.abs(ab.target_ablated)));
        expect(Math.abs(logp - report.target.after)).toBeLessThan(1e-5 * Math.max(1, Math.abs(logp)));
        expect(trace.predictions?.length).toBeGreaterThan(0);
      }
      // Attention: layer 0 as trained (PyTorch's), layer 1 changed by the removed head.
      const pytorch = readReference('gpt2').inputs[0]!.attentions as number[][][][];
      const self = trace.attention.self!;
      expect(maxAbsDiff(self.layers[0]!, flat(pytorch[0]!))).toBeLessThan(1e-4);
      expect(maxAbsDiff(self.layers[1]!, flat(pytorch[1]!))).toBeGreaterThan(1e-3);
    });
  });

  it('bad --trace: another extension, the same file as --out', () => {
    const base = ['ablate', join(FIXTURES, 'gpt2'), '--ids', '10,20,30', '--heads', '0:0'];
    expectInputError(runCli(tmp, [...base, '--trace', join(tmp, 'x.txt')]), /--trace .*x\.txt: the ablated trace is written as \.json or \.safetensors, not \.txt/);
    expectInputError(runCli(tmp, [...base, '--out', join(tmp, 'y.json'), '--trace', join(tmp, 'y.json')]), /--trace .*y\.json: the same file as --out/);
  });
});
