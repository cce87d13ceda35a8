/**
 * `attnscope attribute` and `attnscope ablate` as real processes on fixtures, against PyTorch's
 * gradients.json (same input ids, target, zero baseline, 256-step midpoint rule): every field of the
 * printed JSON within 2e-4 of the field's largest value; --out writes a trace whose attributions
 * read back as printed; bad input gives one clear line.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readTraceFile } from '../src/io/trace-file.js';
import { runCli } from './helpers/cli.js';
import { readGradients, type GradientsInput } from './helpers/gradients.js';
import { FIXTURES, readReference } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-attribute-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

type Nested = number | Nested[];

const flatten = (v: Nested): number[] => (typeof v === 'number' ? [v] : v.flatMap(flatten));

/** max |got − want| / max |want| over a field (the fixtures' README: float32 noise ≈ 2e-4 of the largest value). */
function relError(got: Nested, want: Nested): number {
  const g = flatten(got);
  const w = flatten(want);
  expect(g.length).toBe(w.length);
  const scale = Math.max(...w.map(Math.abs));
  return Math.max(...w.map((x, i) => Math.abs(g[i]! - x))) / scale;
}

function firstInput(fixture: string): { ref: GradientsInput; typeIds?: number[] } {
  const ref = readGradients(fixture).inputs[0]!;
  return { ref, typeIds: readReference(fixture).inputs[0]!.token_type_ids };
}

function idArgs(ref: GradientsInput, typeIds?: number[]): string[] {
  return [
    '--ids', ref.input_ids.join(','),
    ...(typeIds ? ['--type-ids', typeIds.join(',')] : []),
    ...(ref.decoder_input_ids ? ['--decoder-ids', ref.decoder_input_ids.join(',')] : []),
  ];
}

describe('attnscope attribute --json against gradients.json', () => {
  // gpt2: causal LM (default target: the top token at the last position); bert: masked LM with a
  // sentence pair (position p = min(2, n − 2), the input token); bart: encoder-decoder (three stacks).
  for (const fixture of ['gpt2', 'bert', 'bart']) {
    it(fixture, () => {
      const { ref, typeIds } = firstInput(fixture);
      const target = fixture === 'bert' ? ['--target-position', String(ref.target.position)] : [];
      const r = runCli(tmp, ['attribute', join(FIXTURES, fixture), ...idArgs(ref, typeIds), ...target, '--baseline', 'zero', '--steps', '256', '--json'], 300_000);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      const out = JSON.parse(r.stdout) as Record<string, Nested & Record<string, Nested>> & { target: GradientsInput['target'] };
      expect(out.target).toMatchObject({ kind: ref.target.kind, position: ref.target.position, token_id: ref.target.token_id });
      expect(Math.abs(out.target.value - ref.target.value)).toBeLessThan(2e-4 * Math.max(1, Math.abs(ref.target.value)));
      if (ref.target.stack) expect(out.target.stack).toBe('decoder');
      expect(relError(out.embeddingGrad!, ref.embedding_grad)).toBeLessThan(2e-4);
      expect(relError(out.gradXInput!, ref.grad_x_input)).toBeLessThan(2e-4);
      expect(relError(out.integratedGradients!, ref.integrated_gradients)).toBeLessThan(2e-4);
      const c = out.igCompleteness as unknown as Record<string, number>;
      for (const key of ['sum_attributions', 'target_x', 'target_baseline'] as const) {
        expect(Math.abs(c[key]! - ref.ig_completeness[key]), key).toBeLessThan(2e-4 * Math.max(1, Math.abs(ref.ig_completeness[key])));
      }
      const byStack = <T>(v: T | Record<string, T>): Record<string, T> => (ref.decoder_input_ids ? (v as Record<string, T>) : { self: v as T });
      const heads = byStack<Nested>(ref.head_importance);
      expect(Object.keys(out.headImportance!).sort()).toEqual(Object.keys(heads).sort());
      for (const [stack, want] of Object.entries(heads)) expect(relError(out.headImportance![stack]!, want), `head importance ${stack}`).toBeLessThan(2e-4);
      if (ref.attention_grad) {
        for (const [stack, want] of Object.entries(byStack<Nested>(ref.attention_grad))) expect(relError(out.attentionGrad![stack]!, want), `attention grad ${stack}`).toBeLessThan(2e-4);
      }
      // The per-token analyses of ∂T/∂α are there, one value per token.
      expect(flatten(out.gradientRollout!).length).toBe(ref.input_ids.length);
      expect(flatten(out.attentionXGradient!).length).toBe(ref.input_ids.length);
    });
  }
});

describe('attnscope attribute: table, trace file, bad input', () => {
  it('--out t.safetensors: the trace holds the printed attributions', async () => {
    const { ref } = firstInput('gpt2');
    const path = join(tmp, 't.safetensors');
    const r = runCli(tmp, ['attribute', join(FIXTURES, 'gpt2'), ...idArgs(ref), '--method', 'gradXInput,attentionGrad,headImportance', '--json', '--out', path], 300_000);
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout) as { gradXInput: number[]; gradientRollout: number[]; target: { position: number; token_id: number; value: number } };
    const trace = await readTraceFile(path);
    const a = trace.attributions!;
    expect(a.target).toMatchObject({ kind: 'causal_lm_argmax_logprob', position: out.target.position, tokenId: out.target.token_id });
    expect(Array.from(a.scores.gradXInput!.scores)).toEqual(out.gradXInput.map(Math.fround));
    expect(Array.from(a.scores.gradientRollout!.scores)).toEqual(out.gradientRollout.map(Math.fround));
    expect(a.attentionGrad!.self!.layers.length).toBe(2);
    expect(a.headImportance!.self!.dims).toEqual([2, 4]);
    expect(a.scores.integratedGradients).toBeUndefined();
  });

  it('a readable table without --json', () => {
    const r = runCli(tmp, ['attribute', join(FIXTURES, 'gpt2'), '--ids', '10,20,30,40', '--method', 'gradient,gradXInput,integratedGradients', '--steps', '20']);
    expect(r.status).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toMatch(/^# gpt2 · target causal_lm_argmax_logprob: position 3 .* T = -?\d+\.\d{4}$/);
    expect(lines[1]).toMatch(/^pos\s+token\s+gradient\s+gradXInput\s+integratedGradients$/);
    expect(lines.slice(2, 6).every((l) => /^\s*\d\s/.test(l))).toBe(true);
    expect(r.stdout).toMatch(/integrated gradients \(20 steps, midpoint, baseline zero\): Σ = .*completeness error/);
  });

  const bad: [string, string[], RegExp][] = [
    ['unknown method', ['--method', 'saliency'], /^attnscope: --method: unknown method 'saliency'; allowed: gradient, gradXInput, integratedGradients, attentionGrad, headImportance/],
    ['position out of range', ['--target-position', '9'], /^attnscope: target: position 9 is out of range; allowed: 0 to 3$/],
    ['token id out of the vocabulary', ['--target-token', '999999'], /^attnscope: target: token id 999999 is out of range; allowed: 0 to \d+ \(.*vocab_size\)$/],
    ['steps without integrated gradients', ['--method', 'gradient', '--steps', '5'], /^attnscope: --steps applies to --method integratedGradients/],
    ['bad baseline', ['--baseline', 'noise'], /^attnscope: --baseline: expected zero, pad, mask, bos.*, got 'noise'/],
  ];
  for (const [what, args, message] of bad) {
    it(`bad input: ${what}`, () => {
      const r = runCli(tmp, ['attribute', join(FIXTURES, 'gpt2'), '--ids', '10,20,30,40', ...args]);
      expect(r.status).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr.trim()).toMatch(message);
    });
  }

  it('an encoder-decoder without a decoder input', () => {
    const r = runCli(tmp, ['attribute', join(FIXTURES, 'bart'), '--ids', '0,10,2']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^attnscope: attribute: .*bart is an encoder-decoder; give --decoder-text "..." or --decoder-ids/);
  });
});

describe('attnscope ablate', () => {
  it('--json: layer 0 head 0 of gpt2 and of each bart stack give gradients.json target_ablated and kl', () => {
    for (const fixture of ['gpt2', 'bart']) {
      const { ref } = firstInput(fixture);
      const byStack = ref.decoder_input_ids ? ref.ablation as Record<string, { layer: number; head: number; target_ablated: number; kl: number }> : { self: ref.ablation as { layer: number; head: number; target_ablated: number; kl: number } };
      for (const [stack, ab] of Object.entries(byStack)) {
        const heads = `${stack === 'self' ? '' : `${stack}/`}${ab.layer}:${ab.head}`;
        const r = runCli(tmp, ['ablate', join(FIXTURES, fixture), ...idArgs(ref), '--heads', heads, '--target-position', String(ref.target.position), '--target-token', String(ref.target.token_id), '--json']);
        expect(r.stderr).toBe('');
        const out = JSON.parse(r.stdout) as { target: { before: number; after: number }; kl: number; cosine: number; candidates: unknown[] };
        expect(Math.abs(out.target.before - ref.target.value)).toBeLessThan(2e-4 * Math.max(1, Math.abs(ref.target.value)));
        expect(Math.abs(out.target.after - ab.target_ablated), `${fixture} ${stack}`).toBeLessThan(2e-4 * Math.max(1, Math.abs(ab.target_ablated)));
        expect(Math.abs(out.kl - ab.kl), `${fixture} ${stack} kl`).toBeLessThan(2e-4 * Math.max(1e-2, ab.kl) + 1e-6);
        expect(out.candidates.length).toBeGreaterThan(0);
      }
    }
  });

  it('--csv, bad --heads and --mode, mean ablation of one token', () => {
    const r = runCli(tmp, ['ablate', join(FIXTURES, 'gpt2'), '--ids', '10,20,30', '--heads', '1:*', '--csv']);
    expect(r.status).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe('token_id,token,before,after,target_before,target_after,kl,cosine,cosine_mean');
    const bad = runCli(tmp, ['ablate', join(FIXTURES, 'gpt2'), '--ids', '10,20,30', '--heads', '0:7']);
    expect(bad.status).toBe(2);
    expect(bad.stderr.trim()).toBe("attnscope: --heads: '0:7': head 7 is out of range (4 heads: 0–3)");
    const mode = runCli(tmp, ['ablate', join(FIXTURES, 'gpt2'), '--ids', '10,20,30', '--heads', '0:1', '--mode', 'average']);
    expect(mode.status).toBe(2);
    expect(mode.stderr.trim()).toBe("attnscope: --mode: expected zero or mean, got 'average'; see 'attnscope ablate --help'");
    // One token: its mean over positions is its own context, so mean ablation changes nothing.
    const mean = runCli(tmp, ['ablate', join(FIXTURES, 'gpt2'), '--ids', '10', '--heads', '0:1,1:*', '--mode', 'mean', '--json']);
    expect(mean.status).toBe(0);
    const out = JSON.parse(mean.stdout) as { mode: string; kl: number; target: { before: number; after: number } };
    expect(out.mode).toBe('mean');
    expect(out.kl).toBeLessThan(1e-10);
    expect(Math.abs(out.target.after - out.target.before)).toBeLessThan(1e-6);
  });
});
