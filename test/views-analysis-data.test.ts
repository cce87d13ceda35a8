/**
 * The analysis views' data read from a Trace (src/views/analysis-data.ts), on hand traces: the target
 * named from the trace's own tokens (or a tokenizer), method rows in a fixed order with their
 * remarks (integrated gradients' completeness error computed here by hand), head importance as
 * Michel et al. (|g| / ‖g_layer‖₂ in float64) or signed, the logit lens's rows and its bold "actual"
 * tokens for a causal trace (the next token) and a bidirectional one (the token itself), an
 * ablation run's wording, and one-line refusals of traces without the data.
 */
import { describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import type { LogitLens, Trace } from '../src/core/trace.js';
import { ablationViewData, analysisViewData, headImportanceViewData, logitLensViewData, saliencyViewData, targetLabel } from '../src/views/analysis-data.js';
import { handTrace } from './helpers/hand-trace.js';

const WORDS = ['ĠThe', 'Ġcat', 'Ġsat', 'Ġon', 'Ġthe'];

function attributed(): Trace {
  const t = handTrace(WORDS, { layers: 2, heads: 3, modelType: 'gpt2' });
  t.attributions = {
    target: { kind: 'causal_lm_argmax_logprob', position: 4, tokenId: 4, value: -1 },
    scores: {
      integratedGradients: { method: 'integratedGradients', reduction: 'sum', baseline: 'zero', steps: 50, rule: 'midpoint', scores: Float32Array.from([0.25, 0.5, 0, -0.25, 0.5]), completeness: { sumAttributions: 1, targetInput: -1, targetBaseline: -2.25 } },
      gradient: { method: 'gradient', reduction: 'l2', scores: Float32Array.from([1, 2, 3, 4, 5]) },
      gradXInput: { method: 'gradXInput', reduction: 'sum', scores: Float32Array.from([1, -1, 0, 0, 0]) },
    },
    headImportance: { self: { dims: [2, 3], data: Float32Array.from([3, -4, 0, 0, 0, -2]) } },
  };
  return t;
}

function lens(t: Trace, k: number, top: (r: number, p: number) => number): LogitLens {
  const n = t.tokens.length;
  return {
    stack: 'self',
    topK: k,
    layers: Array.from({ length: 3 }, (_, r) => {
      const ids = Int32Array.from({ length: n * k }, (_, i) => (i % k === 0 ? top(r, Math.floor(i / k)) : 100 + i));
      return { ids, probabilities: Float32Array.from({ length: n * k }, (_, i) => (i % k === 0 ? 0.5 : 0.1)), tokens: Array.from(ids, (id) => (id < 100 ? WORDS[id - 3]! : `Ġx${id}`)) };
    }),
  };
}

describe('analysis view data from a trace', () => {
  it('names the target from the trace’s tokens or a tokenizer', () => {
    const t = attributed();
    // Token id 4 is "Ġcat" (hand traces number tokens from 3).
    expect(targetLabel(t, t.attributions!.target)).toBe('log p(“cat” | position 4)');
    expect(targetLabel(t, { ...t.attributions!.target, tokenId: 999 })).toBe('log p(token 999 | position 4)');
    expect(targetLabel(t, { ...t.attributions!.target, tokenId: 999 }, { tokenText: () => 'ĠParis' })).toBe('log p(“Paris” | position 4)');
    expect(targetLabel(t, { kind: 'contrast_logprob', position: 2, tokenId: 3, contrastTokenId: 5, value: 0 })).toBe('log p(“The”) − log p(“sat”) | position 2');
    expect(targetLabel(t, { kind: 'discriminator_logit', position: 1, tokenId: null, value: 0 })).toBe('logit at position 1');
  });

  it('orders the method rows and states the completeness error', () => {
    const d = saliencyViewData(attributed());
    expect(d.tokens).toEqual(['The', 'cat', 'sat', 'on', 'the']);
    expect(d.targetPosition).toBe(4);
    expect(d.rows.map((r) => r.method)).toEqual(['gradient (L2)', 'gradient × input', 'integrated gradients']);
    expect(d.rows[2]!.scores).toEqual([0.25, 0.5, 0, -0.25, 0.5]);
    // Σ = 1 against T(x) − T(baseline) = −1 − (−2.25) = 1.25: error −0.25, 20 % of 1.25.
    expect(d.rows[2]!.detail).toBe('zero baseline, 50 steps (midpoint rule), summed over the embedding, completeness: Σ = 1.000 vs T(x) − T(baseline) = 1.250, error −0.25 (20% of T(x) − T(baseline))');
    expect(saliencyViewData(attributed(), { methods: ['gradXInput'] }).rows.map((r) => r.method)).toEqual(['gradient × input']);
    expect(() => saliencyViewData(attributed(), { methods: ['nope'] })).toThrow(new AttnscopeError("the trace has no attribution 'nope' (it has: integratedGradients, gradient, gradXInput)"));
  });

  it('normalises head importance per layer as Michel et al., or keeps it signed', () => {
    const d = headImportanceViewData(attributed());
    expect(d.signed).toBe(false);
    expect(d.values[0]!.map((v) => Number(v.toFixed(6)))).toEqual([0.6, 0.8, 0]);
    expect(d.values[1]).toEqual([0, 0, 1]);
    const s = headImportanceViewData(attributed(), { normalization: 'signed' });
    expect(s.values).toEqual([[3, -4, 0], [0, 0, -2]]);
    expect(() => headImportanceViewData(attributed(), { stack: 'decoder' })).toThrow(/no head importance for the 'decoder' stack \(it has: self\)/);
  });

  it('reads the logit lens: bold where the top token is the next token (causal) or the token itself (bidirectional)', () => {
    const causal = handTrace(WORDS, { layers: 2, heads: 1, modelType: 'gpt2' });
    // Top id at row r, position p: the next token's id (p + 4) in row 2 only (id 8 is past the input: no text, shown as its id).
    causal.logitLens = lens(causal, 2, (r, p) => (r === 2 ? p + 4 : 3));
    const d = logitLensViewData(causal);
    expect(d.layers).toEqual(['embeddings', 'L0', 'L1']);
    expect(d.predicts).toBe('next token');
    expect(d.cells[2]!.map((c) => c[0]!.token)).toEqual(['cat', 'sat', 'on', 'the', '8']);
    expect(d.actual).toEqual(['cat', 'sat', 'on', 'the', null]);
    const bidirectional = handTrace(WORDS, { layers: 2, heads: 1, modelType: 'gpt2', weight: () => 1 });
    bidirectional.logitLens = lens(bidirectional, 2, (_r, p) => p + 3);
    const b = logitLensViewData(bidirectional);
    expect(b.predicts).toBe('token at the position');
    expect(b.actual).toEqual(['The', 'cat', 'sat', 'on', 'the']);
  });

  it('words an ablation run', () => {
    const t = handTrace(WORDS, { layers: 2, heads: 2, modelType: 'gpt2' });
    const d = ablationViewData(t, {
      heads: [{ stack: 'self', layer: 1, head: 0 }],
      mode: 'zero',
      target: { kind: 'logprob', stack: 'self', position: 4, tokenId: 5, before: -0.5, after: -1 },
      kl: 0.2,
      cosine: 0.9,
      candidates: [{ id: 5, token: 'Ġsat', before: 0.6, after: 0.37 }],
    });
    expect(d.where).toBe('next token after “the” (position 4)');
    expect(d.target).toEqual({ label: 'log p(“sat”)', before: -0.5, after: -1 });
    expect(d.candidates).toEqual([{ token: 'sat', before: 0.6, after: 0.37 }]);
  });

  it('has nothing to show for a plain trace, and says so in one line when asked', () => {
    const t = handTrace(WORDS, { layers: 1, heads: 1 });
    expect(analysisViewData(t)).toEqual({});
    expect(() => saliencyViewData(t)).toThrow(/the trace has no attributions/);
    expect(() => logitLensViewData(t)).toThrow(/the trace has no logit lens/);
  });
});
