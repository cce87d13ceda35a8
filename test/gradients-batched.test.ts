/**
 * Integrated gradients with the path points as batch items (src/engine/gradients.ts): on every
 * fixture with a gradients.json, chunks of 5 points per run and the memory-bound default give the
 * scores one run per point gives, to float32 rounding. (Against PyTorch's 256-step integrated
 * gradients, batched as they run by default: test/gradients-fixtures.test.ts.)
 *
 * Steps 'auto': the nested stages reuse their points (auto stopped at 48 midpoint or 32 trapezoid
 * steps equals those fixed steps); on every family (npm test: a few, test:deep: all) it either
 * reaches completeness within the tolerance — checked here from the scores, T(x) and T(baseline),
 * not from the engine's bookkeeping — or says it did not (mixture-of-experts routing: 'stalled'),
 * with an error that is indeed above the tolerance.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { attribute, type AttributeOptions, type AttributionResult, type TargetSpec } from '../src/engine/gradients.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import type { ModelInputs } from '../src/models/architecture.js';
import { deepOr } from './helpers/deep.js';
import { GRADIENT_FIXTURES } from './helpers/gradients.js';
import { FIXTURES, readReference } from './helpers/reference.js';

function inputsOf(fixture: string): ModelInputs {
  const ref = readReference(fixture).inputs[0]!;
  return {
    inputIds: ref.input_ids,
    ...(ref.token_type_ids ? { typeIds: ref.token_type_ids } : {}),
    ...(Array.isArray(ref.decoder_input_ids) ? { decoderInputIds: ref.decoder_input_ids as number[] } : {}),
  };
}

/** IG on the fixture's first input; encoders: the token at position min(2, n − 2) (the logit for discriminator heads). */
async function ig(model: Model, inputs: ModelInputs, options: AttributeOptions): Promise<AttributionResult['integratedGradients'] & object> {
  const position = Math.min(2, inputs.inputIds.length - 2);
  const target: TargetSpec | undefined = model.architectureInfo.kind === 'encoder' ? { kind: 'token', position } : undefined;
  try {
    return (await attribute(model, inputs, { target, methods: ['integratedGradients'], ...options })).integratedGradients!;
  } catch (e) {
    if (!/one logit/.test((e as Error).message)) throw e;
    return (await attribute(model, inputs, { target: { kind: 'logit', position }, methods: ['integratedGradients'], ...options })).integratedGradients!;
  }
}

function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let scale = 0;
  let worst = 0;
  for (let i = 0; i < a.length; i++) {
    scale = Math.max(scale, Math.abs(b[i]!));
    worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  }
  return worst / scale;
}

async function withModel<T>(fixture: string, f: (m: Model) => Promise<T>): Promise<T> {
  const model = await loadModel(join(FIXTURES, fixture), { graphCache: false });
  try {
    return await f(model);
  } finally {
    await model.dispose();
  }
}

describe('integrated gradients batched = one run per step (float32 rounding)', () => {
  it.each(GRADIENT_FIXTURES)('%s', (fixture) => withModel(fixture, async (model) => {
    const inputs = inputsOf(fixture);
    const one = await ig(model, inputs, { steps: 20, batchSize: 1 });
    const five = await ig(model, inputs, { steps: 20, batchSize: 5 });
    const auto = await ig(model, inputs, { steps: 20 });
    expect(one.batch).toEqual({ size: 1, runs: 20 });
    expect(five.batch).toEqual({ size: 5, runs: 4 });
    expect(auto.batch.size).toBeGreaterThanOrEqual(20); // the fixtures are small: every point in one run
    expect(auto.batch.runs).toBe(1);
    expect(relDiff(five.scores, one.scores)).toBeLessThan(1e-5);
    expect(relDiff(auto.scores, one.scores)).toBeLessThan(1e-5);
    expect(Math.abs(five.completeness.sumAttributions - one.completeness.sumAttributions)).toBeLessThan(1e-5 * Math.max(1, Math.abs(one.completeness.sumAttributions)));
  }));
});

describe("steps 'auto'", () => {
  it('nested stages reuse their points: auto stopped at 48 midpoint / 32 trapezoid steps equals those steps', () => withModel('bert', async (model) => {
    const inputs = inputsOf('bert');
    const mid = await ig(model, inputs, { steps: 'auto', tolerance: 1e-9, maxSteps: 48 });
    expect(mid.auto).toMatchObject({ converged: false, stopped: 'max-steps', maxSteps: 48 });
    expect(mid.auto!.stages.map((s) => s.steps)).toEqual([16, 48]);
    expect(mid.steps).toBe(48);
    // 16 + 32 new points, not 16 + 48.
    expect(mid.batch.runs).toBe(2);
    expect(relDiff(mid.scores, (await ig(model, inputs, { steps: 48 })).scores)).toBeLessThan(1e-5);
    const trap = await ig(model, inputs, { steps: 'auto', rule: 'trapezoid', tolerance: 1e-9, maxSteps: 32 });
    expect(trap.auto!.stages.map((s) => s.steps)).toEqual([16, 32]);
    expect(relDiff(trap.scores, (await ig(model, inputs, { steps: 32, rule: 'trapezoid' })).scores)).toBeLessThan(1e-5);
  }));

  const seen = new Set<string>();
  const families = readdirSync(FIXTURES).filter((d) => {
    if (!existsSync(join(FIXTURES, d, 'reference.json'))) return false;
    const type = (JSON.parse(readFileSync(join(FIXTURES, d, 'config.json'), 'utf8')) as { model_type: string }).model_type;
    if (seen.has(type)) return false;
    seen.add(type);
    return true;
  });
  /** Top-k expert routing: T jumps along the path where the chosen experts change. */
  const JUMPY = new Set(['mixtral', 'qwen2_moe']);

  it.each(deepOr(families, ['bert', 't5', 'mt5', 'mixtral']))('%s: within 1%, or says it is not', (fixture) => withModel(fixture, async (model) => {
    const r = await ig(model, inputsOf(fixture), { steps: 'auto' });
    const a = r.auto!;
    const c = r.completeness;
    const sum = Array.from(r.scores).reduce((x, y) => x + y, 0);
    const relative = Math.abs(sum - (c.targetInput - c.targetBaseline)) / Math.abs(c.targetInput - c.targetBaseline);
    expect(a.stages.at(-1)!.steps).toBe(r.steps);
    expect(a.stages.at(-1)!.relativeError).toBeCloseTo(relative, 5);
    if (JUMPY.has(model.config.modelType)) {
      expect(a.converged).toBe(false);
      expect(['stalled', 'max-steps']).toContain(a.stopped);
      expect(relative).toBeGreaterThan(a.tolerance);
    } else {
      expect(a).toMatchObject({ converged: true, stopped: 'tolerance', tolerance: 0.01 });
      expect(relative).toBeLessThanOrEqual(0.01);
    }
  }));
});

describe('integrated gradients: bad options', () => {
  it('steps, tolerance, maxSteps, batchSize out of range', () => withModel('gpt2', async (model) => {
    const inputs = inputsOf('gpt2');
    await expect(ig(model, inputs, { steps: 0 })).rejects.toThrow("integrated gradients: steps 0 is out of range; allowed: an integer from 1 to 100000, or 'auto'");
    await expect(ig(model, inputs, { tolerance: 1 })).rejects.toThrow('integrated gradients: tolerance 1 is out of range; allowed: above 0 and below 1');
    await expect(ig(model, inputs, { maxSteps: 0.5 })).rejects.toThrow('integrated gradients: maxSteps 0.5 is out of range');
    await expect(ig(model, inputs, { batchSize: 0 })).rejects.toThrow('integrated gradients: batchSize 0 is out of range; allowed: an integer from 1 to 4096');
  }));
});
