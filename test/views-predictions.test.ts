/**
 * Predictions (`--top-k`) in the exports: the tooltips of predicted tokens name the candidates
 * and their probabilities, in the head view and heatmap, and the neuron view says them for its
 * query; other tokens get no prediction note. Hand-made trace and predictions.
 */
import { describe, expect, it } from 'vitest';
import type { Trace } from '../src/core/trace.js';
import { predictionNote, tokenNote } from '../src/views/generation.js';
import { renderHeadView } from '../src/views/svg/head-view.js';
import { renderHeatmap } from '../src/views/svg/heatmap.js';
import { handTrace } from './helpers/hand-trace.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

const predictions: Trace['predictions'] = [{ position: 2, kind: 'next', candidates: [{ id: 6, token: 'ir', probability: 0.7 }, { id: 9, token: '▁is', probability: 0.2 }] }];
const trace = handTrace(['<s>', '▁a', '▁g', 'ir', 'l'], { special: [0], layers: 1, heads: 2, predictions });
const EXPECTED = 'predicts next: “ir” 0.700 · “is” 0.200';

/** Text of every <title> in an SVG. */
function titles(svg: string): string[] {
  return findAll(parseXml(svg), 'title').map(textOf);
}

describe('predictions in the exports', () => {
  it('notes: the candidates of a predicted position, nothing elsewhere', () => {
    const show = (c: string) => c.replace('▁', '');
    expect(predictionNote(trace, 'self', 'query', [2], show)).toBe(EXPECTED);
    expect(predictionNote(trace, 'self', 'key', [2], show)).toBe(EXPECTED);
    expect(predictionNote(trace, 'self', 'query', [1], show)).toBe('');
    expect(tokenNote(trace, 'self', 'query', [3])).toBe('');
    // Masked-LM predictions say what fills the mask.
    const masked = { ...trace, predictions: [{ position: 1, kind: 'masked' as const, candidates: [{ id: 4, token: 'cat', probability: 0.25 }] }] };
    expect(predictionNote(masked, 'self', 'query', [1])).toBe('fills the mask with: “cat” 0.250');
    // Encoder-decoders: predictions index the decoder tokens, never the encoder's.
    const encdec = { ...trace, decoderTokens: trace.tokens, attention: { encoder: trace.attention.self!, decoder: trace.attention.self!, cross: trace.attention.self! } };
    expect(predictionNote(encdec, 'encoder', 'query', [2])).toBe('');
    expect(predictionNote(encdec, 'decoder', 'query', [2])).toContain('predicts next');
    expect(predictionNote(encdec, 'cross', 'key', [2])).toBe('');
  });

  it('head view and heatmap: the predicted token’s tooltip names the candidates', () => {
    for (const svg of [renderHeadView(trace), renderHeatmap(trace, { head: 0 })]) {
      const tips = titles(svg).filter((t) => t.includes('predicts next'));
      expect(tips.length).toBeGreaterThan(0);
      for (const t of tips) expect(t).toBe(`▁g: ${EXPECTED}`);
    }
  });
});
