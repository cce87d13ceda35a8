/**
 * The gradient engine (src/engine/gradients.ts) against PyTorch autograd: every fixture with a
 * gradients.json (test/fixtures/README.md), every input, every field — embedding_grad,
 * grad_x_input, integrated_gradients (zero baseline, 256 steps, midpoint rule) with
 * ig_completeness, attention_grad (where stored; encoder, decoder and cross stacks of t5/bart),
 * head_importance — each within 2e-4 of the field's largest |value| (float32 noise; the README's
 * tolerance). The target is built from each input's `target` (kind, position, token).
 * (Completeness with the per-family default baselines: test/gradients-completeness.test.ts.)
 *
 * Runtime: the 256 integrated-gradients points run as batch items (up to 64 per run, by the
 * memory bound), so they are checked batched; npm test checks integrated gradients on the first
 * input of bert, gpt2 and t5 and every other field on every input of every fixture; `npm run
 * test:deep` checks integrated gradients on every input too. (Batched = one run per step:
 * test/gradients-batched.test.ts.)
 *
 * AUTODIFF_REPORT=1 prints the measured errors (max |ours − PyTorch| / max |PyTorch| per field).
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ATTRIBUTION_METHODS, attribute, type TargetSpec } from '../src/engine/gradients.js';
import { loadModel } from '../src/engine/load.js';
import { DEEP } from './helpers/deep.js';
import { GRADIENT_FIXTURES, readGradients, type GradientsInput } from './helpers/gradients.js';
import { FIXTURES, readReference } from './helpers/reference.js';

type Grid = number[][];

const TOLERANCE = 2e-4;
/** Integrated gradients (256 passes each) in npm test: the first input of these fixtures; every input under test:deep. */
const QUICK_IG = ['bert', 'gpt2', 't5'];
const measured: Record<string, number> = {};

/** max |got − expected| / max |expected|, recorded under `key` as the field's worst. */
function check(key: string, got: ArrayLike<number>, expected: readonly number[]): void {
  expect(got.length, key).toBe(expected.length);
  let scale = 0;
  for (const e of expected) scale = Math.max(scale, Math.abs(e));
  let worst = 0;
  for (let j = 0; j < expected.length; j++) worst = Math.max(worst, Math.abs(got[j]! - expected[j]!));
  const err = scale > 0 ? worst / scale : worst;
  const field = key.split(' ').slice(2).join(' ');
  measured[field] = Math.max(measured[field] ?? 0, err);
  expect(err, key).toBeLessThan(TOLERANCE);
}

function targetOf(t: GradientsInput['target']): TargetSpec {
  switch (t.kind) {
    case 'discriminator_logit': return { kind: 'logit', position: t.position };
    case 'masked_lm_input_token_logprob': return { kind: 'token', position: t.position };
    default: return { kind: 'token' }; // causal LMs and seq2seq: the default, argmax at the last position
  }
}

describe('attribute() against PyTorch autograd (gradients.json; 2e-4 of each field\'s largest value)', () => {
  it.each(GRADIENT_FIXTURES)('%s: every input, every field', async (fixture) => {
    const refs = readGradients(fixture);
    const reference = readReference(fixture);
    const model = await loadModel(join(FIXTURES, fixture), { graphCache: false });
    try {
      for (const [i, ref] of refs.inputs.entries()) {
        const typeIds = reference.inputs[i]!.token_type_ids;
        const inputs = { inputIds: ref.input_ids, ...(typeIds ? { typeIds } : {}), ...(ref.decoder_input_ids ? { decoderInputIds: ref.decoder_input_ids } : {}) };
        const withIg = DEEP || (i === 0 && QUICK_IG.includes(fixture));
        const methods = withIg ? ATTRIBUTION_METHODS : ATTRIBUTION_METHODS.filter((m) => m !== 'integratedGradients');
        const r = await attribute(model, inputs, { target: targetOf(ref.target), methods, baseline: 'zero', steps: 256, rule: 'midpoint' });
        const key = `${fixture} ${ref.id}`;
        expect(r.target.position, key).toBe(ref.target.position);
        expect(r.target.tokenId, key).toBe(ref.target.token_id);
        expect(Math.abs(r.target.value - ref.target.value), `${key} target`).toBeLessThan(TOLERANCE * Math.max(1, Math.abs(ref.target.value)));
        check(`${key} embedding_grad`, r.embeddingGrad!.data, ref.embedding_grad.flat());
        check(`${key} grad_x_input`, r.gradXInput!, ref.grad_x_input);
        if (withIg) {
          check(`${key} integrated_gradients`, r.integratedGradients!.scores, ref.integrated_gradients);
          const c = r.integratedGradients!.completeness;
          const rc = ref.ig_completeness;
          // The three completeness terms, each against the largest of them.
          check(`${key} ig_completeness`, [c.sumAttributions, c.targetInput, c.targetBaseline], [rc.sum_attributions, rc.target_x, rc.target_baseline]);
        }
        const heads = Array.isArray(ref.head_importance) ? { self: ref.head_importance } : ref.head_importance;
        for (const [stack, grid] of Object.entries(heads)) {
          check(`${key} head_importance ${stack}`, r.headImportance![stack as 'self']!.raw.data, grid.flat());
        }
        if (!ref.attention_grad) continue;
        const byStack = Array.isArray(ref.attention_grad) ? { self: ref.attention_grad } : ref.attention_grad;
        for (const [stack, layers] of Object.entries(byStack)) {
          const got = r.attentionGrad![stack as 'self']!.layers.flatMap((l) => Array.from(l));
          check(`${key} attention_grad ${stack}`, got, layers.flat(3));
        }
      }
    } finally {
      await model.dispose();
    }
  });

  it('report', () => {
    if (process.env.AUTODIFF_REPORT) console.log(JSON.stringify(measured, null, 1));
  });
});
