/**
 * Integrated gradients with each family's documented default baseline (src/engine/gradients.ts,
 * defaultBaseline) at 50 midpoint steps: completeness Σ attributions = T(input) − T(baseline)
 * within 1% on every fixture family (one checkpoint per model_type, its first reference input;
 * encoders: the target at position min(2, n − 2)), except where T(input) − T(baseline) is
 * degenerate (< 1e-3) and the families in HARD_PATHS, whose errors are reported there.
 * Σ attributions and the error are recomputed here from the scores.
 *
 * AUTODIFF_REPORT=1 prints baseline, error and T(input) − T(baseline) per fixture.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { attribute, defaultBaseline, HARD_PATHS, type TargetSpec } from '../src/engine/gradients.js';
import { loadModel } from '../src/engine/load.js';
import { deepOr } from './helpers/deep.js';
import { FIXTURES, readReference } from './helpers/reference.js';

/** One fixture per model_type (bert-fp16, gpt2-bin, ... are the same family again). */
const seen = new Set<string>();
const ALL_FIXTURES = readdirSync(FIXTURES).filter((d) => {
  if (!existsSync(join(FIXTURES, d, 'reference.json'))) return false;
  const type = (JSON.parse(readFileSync(join(FIXTURES, d, 'config.json'), 'utf8')) as { model_type: string }).model_type;
  if (seen.has(type)) return false;
  seen.add(type);
  return true;
});
const completeness: Record<string, string> = {};

describe('integrated gradients: completeness within 1% at 50 steps with the family default baseline', () => {
  // npm test: one additive-embedding family, one RMSNorm family with a token baseline, one encoder-decoder.
  it.each(deepOr(ALL_FIXTURES, ['bert', 'llama', 'bart']))('%s', async (fixture) => {
    const reference = readReference(fixture);
    const model = await loadModel(join(FIXTURES, fixture), { graphCache: false });
    try {
      const ref = reference.inputs[0]!;
      const inputs = {
        inputIds: ref.input_ids,
        ...(ref.token_type_ids ? { typeIds: ref.token_type_ids } : {}),
        ...(Array.isArray(ref.decoder_input_ids) ? { decoderInputIds: ref.decoder_input_ids as number[] } : {}),
      };
      const position = Math.min(2, ref.input_ids.length - 2);
      const target: TargetSpec | undefined = model.architectureInfo.kind === 'encoder' ? { kind: 'token', position } : undefined;
      let r;
      try {
        r = await attribute(model, inputs, { target, methods: ['integratedGradients'], steps: 50 });
      } catch (e) {
        if (/no prediction head|one logit/.test((e as Error).message)) r = await attribute(model, inputs, { target: { kind: 'logit', position }, methods: ['integratedGradients'], steps: 50 });
        else throw e;
      }
      const ig = r.integratedGradients!;
      if (defaultBaseline(model) === 'zero') expect(ig.baseline).toBe('zero');
      else expect(ig.baselineTokenId).not.toBeNull();
      const c = ig.completeness;
      // Independent of the engine's bookkeeping: Σ scores and the error recomputed from the parts.
      expect(c.sumAttributions).toBeCloseTo(Array.from(ig.scores).reduce((a, b) => a + b, 0), 4);
      expect(c.error).toBeCloseTo(c.sumAttributions - (c.targetInput - c.targetBaseline), 6);
      completeness[fixture] = `${ig.baseline}${ig.baselineTokenId === null ? '' : `(${ig.baselineTokenId})`}: ${(100 * c.relativeError).toFixed(3)}% of ${(c.targetInput - c.targetBaseline).toFixed(4)}`;
      // Degenerate: the baseline scores (almost) as the input does, so a relative error means nothing.
      if (Math.abs(c.targetInput - c.targetBaseline) < 1e-3) return;
      if (HARD_PATHS[model.config.modelType]) return; // reported, see HARD_PATHS
      expect(c.relativeError, completeness[fixture]).toBeLessThan(0.01);
    } finally {
      await model.dispose();
    }
  });

  it('report', () => {
    if (process.env.AUTODIFF_REPORT) console.log(JSON.stringify(completeness, null, 1));
  });
});
