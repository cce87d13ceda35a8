/**
 * The head table by layer ranges (head-types.ts `layers`, head-table-parts.ts) and over worker
 * threads (src/runtime/head-table-threads.ts): a range's rows against a float64 re-computation
 * written here (entropy, js_from_first against the first layer, self, previous-token), on
 * bidirectional and causal random traces, with and without excludeFirstToken; the ranges of
 * headTableRanges cover the layers once each, in order; the ranges' tables concatenated, a part
 * sent as a structured-clone message, and the threaded table are the whole table value for value
 * (a layer's values do not depend on the range that holds it); per-layer callbacks come in order;
 * a part whose layers arrive one by one (as a worker thread gets them) reads each only once it is in.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { headTable, headTableRanges } from '../src/analysis/head-types.js';
import { headTablePart, headTableParts, runHeadTablePart } from '../src/analysis/head-table-parts.js';
import { mulberry32 } from '../src/core/random.js';
import type { Token, Trace } from '../src/core/trace.js';
import { headTableThreaded, headTableThreadFailure, headTableThreadsKept, stopHeadTableThreads, warmHeadTableThreads } from '../src/runtime/head-table-threads.js';

afterAll(() => stopHeadTableThreads());

/** L layers × H heads × n tokens of random softmax rows (causal: keys after the query masked, and recorded so). */
function randomTrace(L: number, H: number, n: number, causal: boolean, seed: number): Trace {
  const r = mulberry32(seed);
  const layers = Array.from({ length: L }, () => {
    const a = new Float32Array(H * n * n);
    for (let h = 0; h < H; h++) {
      const sharp = 0.5 + 3 * r();
      for (let i = 0; i < n; i++) {
        const end = causal ? i + 1 : n;
        let sum = 0;
        const row = Array.from({ length: end }, (_, j) => {
          const v = Math.exp(sharp * (r() * 2 - 1) + (j === i - 1 ? 2 * r() : 0));
          sum += v;
          return v;
        });
        row.forEach((v, j) => (a[(h * n + i) * n + j] = v / sum));
      }
    }
    return a;
  });
  const tokens: Token[] = Array.from({ length: n }, (_, i) => ({ id: 10 + (i % 7), text: i === 0 ? '[CLS]' : i % 5 === 0 ? '.' : `w${i}`, start: 0, end: 0, special: i === 0, segment: 0, word: i }));
  return {
    model: { name: 'random', modelType: 'test', numLayers: L, numHeads: H, numKeyValueHeads: H, headDim: 4 },
    tokens,
    attention: { self: { dims: [H, n, n], layers } },
    scores: causal ? { self: { scale: [], causal: true, window: Array.from({ length: L }, () => null) } } : undefined,
  };
}

/** The rows of head h in layer l that count, renormalised over their support (float64, straight from the definitions). */
function rows(t: Trace, l: number, h: number, exclude: boolean, causal: boolean): (number[] | null)[] {
  const s = t.attention.self!;
  const n = s.dims[1];
  const W = s.layers[l]!;
  return Array.from({ length: n }, (_, i) => {
    if (exclude && i === 0) return null;
    const keys = Array.from({ length: n }, (_, j) => j).filter((j) => (!causal || j <= i) && !(exclude && j === 0));
    if (keys.length < 2) return null;
    let total = 0;
    for (const j of keys) total += W[(h * n + i) * n + j]!;
    const out = new Array<number>(n).fill(0);
    for (const j of keys) out[j] = W[(h * n + i) * n + j]! / total;
    return out;
  });
}

const H_ = (p: readonly number[]) => p.reduce((a, x) => (x > 0 ? a - x * Math.log(x) : a), 0);

describe('head table by layer ranges', () => {
  it('headTableRanges: contiguous ranges covering every layer once, in order, nearly equal in cost', () => {
    for (const [L, k] of [[12, 2], [12, 3], [12, 4], [5, 2], [1, 3], [24, 2], [2, 8]] as const) {
      for (const first of [true, false]) {
        const ranges = headTableRanges(L, k, first);
        expect(ranges[0]!.from).toBe(0);
        expect(ranges.at(-1)!.to).toBe(L);
        ranges.forEach((r, i) => {
          expect(r.to).toBeGreaterThan(r.from);
          if (i > 0) expect(r.from).toBe(ranges[i - 1]!.to);
        });
        expect(ranges.length).toBe(Math.min(k, L));
        // Cost: a range's layers, plus the first layer re-read by every later range.
        const cost = ranges.map((r, i) => r.to - r.from + (first && i > 0 ? 1 : 0));
        expect(Math.max(...cost) - Math.min(...cost)).toBeLessThanOrEqual(first ? 2 : 1);
      }
    }
  });

  for (const causal of [false, true]) {
    for (const exclude of [false, true]) {
      const name = `${causal ? 'causal' : 'bidirectional'}${exclude ? ', exclude first token' : ''}`;
      it(`a range's rows are the float64 re-computation's (${name})`, () => {
        const L = 4;
        const H = 3;
        const n = 23;
        const t = randomTrace(L, H, n, causal, causal ? 11 : 12);
        const part = headTable(t, 'self', { excludeFirstToken: exclude, layers: { from: 2, to: 4 } });
        expect(part.map((r) => r.layer)).toEqual([2, 2, 2, 3, 3, 3]);
        for (const row of part) {
          const own = rows(t, row.layer, row.head, exclude, causal);
          const first = rows(t, 0, row.head, exclude, causal);
          const counted = own.map((r, i) => (r ? i : -1)).filter((i) => i >= 0);
          const ent = counted.map((i) => {
            const support = own[i]!.filter((_, j) => (!causal || j <= i) && !(exclude && j === 0)).length;
            return H_(own[i]!) / Math.log(support);
          });
          const js = counted.map((i) => {
            const p = own[i]!;
            const q = first[i]!;
            return (H_(p.map((x, j) => (x + q[j]!) / 2)) - (H_(p) + H_(q)) / 2) / Math.LN2;
          });
          const self = counted.map((i) => own[i]![i]!);
          const prev = counted.map((i) => (i > 0 ? own[i]![i - 1]! : 0));
          const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
          // Entropy and Jensen–Shannon: the kernel's float32 logarithms of float32 weights (≈ 6e-8
          // relative each, the traced weights' own precision): within 1e-6 relative / 1e-6 bits.
          expect(Math.abs(row.entropy - mean(ent))).toBeLessThanOrEqual(1e-6 * mean(ent));
          expect(Math.abs(row.js_from_first - mean(js))).toBeLessThan(1e-6);
          expect(row.self).toBeCloseTo(mean(self), 12);
          expect(row.previous_token).toBeCloseTo(mean(prev), 12);
        }
      });

      it(`the ranges' tables concatenated, and the parts as messages, are the whole table (${name})`, () => {
        const t = randomTrace(5, 2, 19, causal, causal ? 21 : 22);
        const options = { excludeFirstToken: exclude };
        const whole = headTable(t, 'self', options);
        for (const k of [2, 3]) {
          const ranges = headTableRanges(5, k);
          expect(ranges.flatMap((range) => headTable(t, 'self', { ...options, layers: range }))).toEqual(whole);
          // A later range reads only what js_from_first needs of the first layer, on the kernel and on the JavaScript loops alike.
          const wholeJs = headTable(t, 'self', { ...options, kernel: 'js' });
          expect(ranges.flatMap((range) => headTable(t, 'self', { ...options, kernel: 'js', layers: range }))).toEqual(wholeJs);
          const viaMessages = headTableParts(t, 'self', options, k).map((p) => runHeadTablePart(structuredClone(p)));
          expect(viaMessages.flat()).toEqual(whole);
        }
        // Without js_from_first a later range does not read the first layer.
        const noJs = headTablePart(t, 'self', { ...options, omit: ['js_from_first'] }, { from: 3, to: 5 });
        expect(noJs.layerIndex).toEqual([3, 4]);
        expect(runHeadTablePart(noJs)).toEqual(headTable(t, 'self', { ...options, omit: ['js_from_first'] }).filter((r) => r.layer >= 3));
        expect(headTablePart(t, 'self', options, { from: 3, to: 5 }).layerIndex).toEqual([0, 3, 4]);
      });
    }
  }

  it('onLayer gets each layer’s rows in order, as they are done, and they are the table', () => {
    const t = randomTrace(4, 3, 17, true, 5);
    const seen: number[][] = [];
    const table = headTable(t, 'self', { onLayer: (r) => seen.push(r.map((x) => x.layer)) });
    expect(seen).toEqual([0, 1, 2, 3].map((l) => [l, l, l]));
    const parts = headTable(t, 'self', { layers: { from: 1, to: 3 }, onLayer: (r) => seen.push(r.map((x) => x.layer)) });
    expect(seen.slice(4)).toEqual([[1, 1, 1], [2, 2, 2]]);
    expect(parts).toEqual(table.filter((r) => r.layer >= 1 && r.layer < 3));
  });

  it('a part whose layers arrive late (ready): each is read only after ready(i), in layerIndex order, and the table is the whole one', () => {
    // As a worker thread gets its layers (head-table-threads.ts): empty buffers filled one by one,
    // here by ready(i) itself; a read before ready(i) would see zeros (and a wrong table).
    for (const causal of [false, true]) {
      const t = randomTrace(5, 3, 23, causal, causal ? 41 : 42);
      const whole = headTable(t, 'self');
      const part = headTablePart(t, 'self', {}, { from: 2, to: 5 });
      const source = part.layers.map((l) => l.slice());
      part.layers.forEach((l) => l.fill(0));
      const asked: number[] = [];
      const rows = runHeadTablePart(part, undefined, (i) => {
        if (!asked.includes(i)) {
          expect(i, 'layers asked for in the order they are sent').toBe(asked.length);
          asked.push(i);
          part.layers[i]!.set(source[i]!);
        }
      });
      expect(asked).toEqual([0, 1, 2, 3]); // layer 0 (js_from_first), then 2, 3, 4
      expect(rows).toEqual(whole.filter((r) => r.layer >= 2));
      // Without js_from_first, layer 0 is not part of the part and not asked for.
      const noJs = headTablePart(t, 'self', { omit: ['js_from_first'] }, { from: 2, to: 5 });
      const seen: number[] = [];
      runHeadTablePart(noJs, undefined, (i) => seen.includes(i) || seen.push(i));
      expect(noJs.layerIndex).toEqual([2, 3, 4]);
      expect(seen).toEqual([0, 1, 2]);
    }
  });

  it('a range outside the layers is refused with one line naming the option', () => {
    const t = randomTrace(3, 1, 5, false, 3);
    for (const layers of [{ from: 2, to: 2 }, { from: -1, to: 2 }, { from: 0, to: 4 }, { from: 1.5, to: 3 }]) {
      expect(() => headTable(t, 'self', { layers })).toThrow(/^layers: expected a range/);
    }
  });

  it('over worker threads: the whole table, value for value (real threads, not the fallback)', async () => {
    for (const causal of [false, true]) {
      const t = randomTrace(6, 3, 29, causal, causal ? 31 : 32);
      for (const exclude of [false, true]) {
        const whole = headTable(t, 'self', { excludeFirstToken: exclude });
        expect(await headTableThreaded(t, 'self', { excludeFirstToken: exclude }, { threads: 2 })).toEqual(whole);
        expect(await headTableThreaded(t, 'self', { excludeFirstToken: exclude }, { threads: 3 })).toEqual(whole);
      }
    }
    expect(headTableThreadFailure).toBe('');
    // The trace's own arrays are untouched (the threads got copies).
    const t = randomTrace(3, 2, 11, false, 9);
    const before = t.attention.self!.layers.map((l) => l.slice());
    await headTableThreaded(t, 'self', {}, { threads: 2 });
    expect(t.attention.self!.layers).toEqual(before);
  }, 60_000);

  it('workers started ahead (warmHeadTableThreads) are the ones the table then takes, and the table is the same', async () => {
    await stopHeadTableThreads();
    expect(headTableThreadsKept()).toBe(0);
    warmHeadTableThreads({ threads: 3 });
    expect(headTableThreadsKept(), 'two workers beside the calling thread').toBe(2);
    warmHeadTableThreads({ threads: 3 });
    expect(headTableThreadsKept(), 'idle workers are not started again').toBe(2);
    const t = randomTrace(6, 3, 29, true, 33);
    expect(await headTableThreaded(t, 'self', {}, { threads: 3 })).toEqual(headTable(t, 'self'));
    expect(headTableThreadsKept(), 'the table took the warm workers').toBe(2);
    expect(headTableThreadFailure).toBe('');
    warmHeadTableThreads({ threads: 1 });
    expect(headTableThreadsKept()).toBe(2);
  }, 60_000);
});
