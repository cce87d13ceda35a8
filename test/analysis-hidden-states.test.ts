/**
 * Update norms, hidden-state PCA and the logit-lens grid on hand-made traces whose answers are
 * worked out by hand.
 */
import { describe, expect, it } from 'vitest';
import { hiddenStatePca, updateNorms } from '../src/analysis/hidden-states.js';
import { logitLensGrid, logitLensTable } from '../src/analysis/logit-lens.js';
import { AttnscopeError } from '../src/core/errors.js';
import type { Matrix, Token, Trace } from '../src/core/trace.js';

const m = (rows: number[][]): Matrix => ({ dims: [rows.length, rows[0]!.length], data: Float32Array.from(rows.flat()) });
const token = (text: string, id: number): Token => ({ id, text, start: 0, end: 0, special: false, segment: 0, word: null });

function handTrace(): Trace {
  return {
    model: { name: 'hand', modelType: 'hand', numLayers: 1, numHeads: 1, numKeyValueHeads: 1, headDim: 2 },
    tokens: [token('a', 1), token('b', 2), token('c', 3)],
    attention: {},
    layerStates: {
      self: {
        residuals: {
          // Token 0: (3, 4) → attention adds (0, 0) → MLP adds (6, 8). Token 1: (0, 0) → (1, 0) → (1, 0).
          input: [m([[3, 4], [0, 0], [1, 1]])],
          attention: [m([[3, 4], [1, 0], [1, 1]])],
          output: [m([[9, 12], [1, 0], [2, 2]])],
        },
      },
    },
  };
}

describe('updateNorms', () => {
  it('gives ‖Δ‖ per token and per sub-layer, relative to the stream it is added to (0 where that is zero)', () => {
    const u = updateNorms(handTrace());
    expect(u.stack).toBe('self');
    const l = u.layers[0]!;
    expect(Array.from(l.residual)).toEqual([5, 0, Math.SQRT2]);
    expect(Array.from(l.attention.norm)).toEqual([0, 1, 0]);
    expect(Array.from(l.attention.relative)).toEqual([0, 0, 0]);
    expect(Array.from(l.mlp.norm)).toEqual([10, 0, Math.SQRT2]);
    expect(Array.from(l.mlp.relative)).toEqual([2, 0, 1]);
    expect(l.cross).toBeUndefined();
  });

  it('names what to re-trace with when the trace has no residual stream', () => {
    const t = handTrace();
    delete t.layerStates;
    expect(() => updateNorms(t)).toThrow(AttnscopeError);
    expect(() => updateNorms(t)).toThrow('--deep-dive');
  });
});

describe('hiddenStatePca', () => {
  it('projects points on a line onto it (all variance on the first component, sign fixed), 0 for one token', () => {
    const t = handTrace();
    // Output states on the line y = 2x: (0,0), (1,2), (3,6); centred at (4/3, 8/3).
    t.layerStates!.self!.residuals!.output = [m([[0, 0], [1, 2], [3, 6]])];
    const pca = hiddenStatePca(t);
    expect(pca.rows.length).toBe(2);
    const row = pca.rows[1]!;
    const s5 = Math.sqrt(5);
    const expected = [0, 1, 3].map((x) => (x - 4 / 3) * s5);
    // The largest coordinate (3 − 4/3)·√5 is positive.
    for (let i = 0; i < 3; i++) {
      expect(row.points[i * 2]!).toBeCloseTo(expected[i]!, 5);
      expect(Math.abs(row.points[i * 2 + 1]!)).toBeLessThan(1e-6);
    }
    expect(row.explained[0]).toBeCloseTo(1, 10);
    expect(row.explained[1]).toBeCloseTo(0, 10);
    const one: Trace = { ...t, tokens: [token('a', 1)], layerStates: { self: { residuals: { input: [m([[1, 2]])], attention: [m([[1, 2]])], output: [m([[3, 4]])] } } } };
    expect(Array.from(hiddenStatePca(one).rows[1]!.points)).toEqual([0, 0]);
  });
});

describe('logitLensGrid', () => {
  it('lays the lens out as rows × positions × ranks and as table rows', () => {
    const t = handTrace();
    t.logitLens = {
      stack: 'self',
      topK: 2,
      layers: [
        { ids: Int32Array.from([1, 2, 2, 3, 3, 1]), probabilities: Float32Array.from([0.6, 0.4, 0.9, 0.1, 0.5, 0.5]), tokens: ['a', 'b', 'b', 'c', 'c', 'a'] },
        { ids: Int32Array.from([2, 1, 3, 2, 1, 3]), probabilities: Float32Array.from([0.7, 0.3, 0.8, 0.2, 0.6, 0.4]), tokens: ['b', 'a', 'c', 'b', 'a', 'c'] },
      ],
    };
    const grid = logitLensGrid(t);
    expect(grid.rows).toEqual(['embeddings', 'layer 0']);
    expect(grid.cells[1]![2]).toEqual([{ id: 1, token: 'a', probability: Math.fround(0.6) }, { id: 3, token: 'c', probability: Math.fround(0.4) }]);
    const table = logitLensTable(grid);
    expect(table.length).toBe(2 * 3 * 2);
    expect(table[7]).toEqual({ row: 1, layer: 'layer 0', position: 0, input: 'a', rank: 2, id: 1, token: 'a', probability: Math.fround(0.3) });
    delete t.logitLens;
    expect(() => logitLensGrid(t)).toThrow('--logit-lens');
  });
});
