/**
 * Ablation comparison on hand-made distributions: candidates ordered by the larger of their two
 * probabilities and cut at top-k, one axis from 0 to the "nice" maximum above the largest shown
 * (0.62 → 0.8), each bar probability / axisMax × barWidth long, the heads, target change, KL and
 * cosine stated, probabilities outside [0, 1] refused, and hostile tokens escaped in the SVG.
 */
import { describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import type { TextItem } from '../src/views/layout/common.js';
import { type AblationData, ablationLayout, describeHeads } from '../src/views/layout/ablation.js';
import { renderAblation } from '../src/views/svg/ablation.js';
import { LIGHT } from '../src/views/theme.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

const HOSTILE = `<script>&"'`;
const DATA: AblationData = {
  heads: [{ layer: 2, head: 3 }, { layer: 0, head: 1 }, { layer: 2, head: 4 }, { layer: 2, head: 5 }],
  mode: 'zero',
  where: 'next token after “is” (position 4)',
  candidates: [
    { token: ' a', before: 0.05, after: 0.3 },
    { token: ' Paris', before: 0.62, after: 0.1 },
    { token: HOSTILE, before: 0.01, after: 0.02 },
    { token: ' the', before: 0.2, after: 0.2 },
  ],
  target: { label: 'log p(“ Paris”)', before: -0.5, after: -2.25 },
  kl: 0.75,
  cosine: 0.98765,
};

describe('ablation layout', () => {
  it('orders by the larger probability, keeps top-k, and scales bars to a nice axis', () => {
    const lay = ablationLayout(DATA, LIGHT, { topK: 3, barWidth: 400 });
    expect(lay.tokens).toEqual([' Paris', ' a', ' the']);
    expect(lay.axisMax).toBe(0.8);
    const bar = (token: string, side: 'before' | 'after') => lay.bars.find((b) => b.token === token && b.side === side)!;
    expect(bar(' Paris', 'before').width).toBeCloseTo((0.62 / 0.8) * 400, 10);
    expect(bar(' Paris', 'after').width).toBeCloseTo(50, 10);
    expect(bar(' a', 'after').width).toBeCloseTo(150, 10);
    for (const b of lay.bars) expect(b.x).toBe(lay.barX);
    // Each pair: before above after, pairs top to bottom in order.
    expect(bar(' Paris', 'before').y).toBeLessThan(bar(' Paris', 'after').y);
    expect(bar(' Paris', 'after').y).toBeLessThan(bar(' a', 'before').y);
  });

  it('states the heads, the target change, KL and cosine', () => {
    const lay = ablationLayout(DATA, LIGHT);
    const text = lay.items.filter((i) => i.kind === 'text').map((i) => (i as TextItem).text);
    expect(text).toContain('removed (zero ablation): L0 H1, L2 H3–5');
    expect(text).toContain('log p(“ Paris”): −0.5 → −2.25 (Δ −1.75)');
    expect(text.join(' ')).toContain('KL(before ‖ after) = 0.75 nats');
    expect(text.join(' ')).toContain('cosine of the last hidden states = 0.9877');
    expect(describeHeads([{ layer: 1, head: 0 }, { layer: 1, head: 2 }, { layer: 1, head: 1 }, { layer: 0, head: 7 }])).toBe('L0 H7, L1 H0–2');
  });

  it('refuses probabilities outside [0, 1] and an empty ablation in one line', () => {
    expect(() => ablationLayout({ ...DATA, candidates: [{ token: 'x', before: 1.5, after: 0 }] }, LIGHT)).toThrow(new AttnscopeError("ablation view: probability 1.5 of 'x' is not in [0, 1]"));
    expect(() => ablationLayout({ ...DATA, heads: [] }, LIGHT)).toThrow(AttnscopeError);
  });

  it('writes well-formed SVG with the tokens escaped', () => {
    const svg = renderAblation(DATA, { title: 'gpt2 · ablation' });
    expect(svg).not.toContain('<script>');
    const doc = parseXml(svg);
    const tokens = findAll(doc, 'text', (a) => a.class === 'ablation-token').map(textOf);
    expect(tokens).toEqual([' Paris', ' a', ' the', HOSTILE]);
    expect(findAll(doc, 'rect', (a) => (a.class ?? '').startsWith('ablation-bar'))).toHaveLength(8);
  });
});
