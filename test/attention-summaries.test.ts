/**
 * Streaming summaries over an AttentionSource (analysis/attention-summaries.ts): thumbnails of every
 * head of on-demand traces equal a float64 max/mean binning of PyTorch's attention (reference.json)
 * written here, whatever the band size; per-head metrics streamed one head at a time equal the
 * whole-trace head metrics of the dense trace; rollout streamed at reduced resolution equals a plain
 * float64 rollout of PyTorch's attention coarsened to the same groups (and attentionRollout at full
 * resolution); bad options give one line.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { headMetrics, HEAD_METRIC_NAMES } from '../src/analysis/head-metrics.js';
import { headThumbnail, headThumbnails, streamedHeadMetrics, streamedRollout } from '../src/analysis/attention-summaries.js';
import { attentionRollout } from '../src/analysis/rollout.js';
import { attentionSource, attentionStacks } from '../src/core/attention-on-demand.js';
import type { StackName, Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import { FIXTURES, flat, readReference, type Nested } from './helpers/reference.js';

const REFERENCE_KEY: Record<StackName, string> = { self: 'attentions', encoder: 'encoder_attentions', decoder: 'decoder_attentions', cross: 'cross_attentions' };

/** Bin b of n positions over `bins` bins holds [⌈b·n/bins⌉ …]: position i goes to ⌊i·bins/n⌋. */
function binning(ref: Float64Array, at: number, nq: number, nk: number, rows: number, cols: number, reduce: 'max' | 'mean'): Float64Array {
  const out = new Float64Array(rows * cols);
  const count = new Float64Array(rows * cols);
  for (let i = 0; i < nq; i++) {
    for (let j = 0; j < nk; j++) {
      const b = Math.floor((i * rows) / nq) * cols + Math.floor((j * cols) / nk);
      const v = ref[at + i * nk + j]!;
      out[b] = reduce === 'max' ? Math.max(out[b]!, v) : out[b]! + v;
      count[b]!++;
    }
  }
  return reduce === 'max' ? out : out.map((s, b) => s / count[b]!);
}

async function traces(fixture: string): Promise<{ lazy: Trace; dense: Trace; input: Record<string, unknown> }> {
  const ref = readReference(fixture);
  const input = ref.inputs[ref.inputs.length - 1]!;
  const decoderIds = input.decoder_input_ids as number[] | undefined;
  const base = decoderIds ? { ids: input.input_ids, decoderIds } : { ids: input.input_ids, typeIds: input.token_type_ids };
  const model = await loadModel(join(FIXTURES, fixture));
  try {
    return { lazy: await model.trace(null, { ...base, attention: 'on-demand' }), dense: await model.trace(null, base), input };
  } finally {
    await model.dispose();
  }
}

describe.each(['gpt2', 't5', 'mistral-window'])('fixture %s: summaries streamed from attention on demand', (fixture) => {
  it('thumbnails (max and mean, uneven bins, any band size) = binning of PyTorch attention', async () => {
    const { lazy, input } = await traces(fixture);
    for (const stack of attentionStacks(lazy)) {
      const source = attentionSource(lazy, stack);
      const { numQueries: nq, numKeys: nk, numHeads: H } = source;
      const reference = flat(input[REFERENCE_KEY[stack]] as Nested);
      for (const reduce of ['max', 'mean'] as const) {
        const all = headThumbnails(source, { size: 3, reduce });
        expect(all).toHaveLength(source.numLayers);
        for (let l = 0; l < source.numLayers; l++) {
          for (let h = 0; h < H; h++) {
            const t = all[l]![h]!;
            expect([t.layer, t.head, t.rows, t.cols]).toEqual([l, h, Math.min(3, nq), Math.min(3, nk)]);
            const want = binning(reference, (l * H + h) * nq * nk, nq, nk, t.rows, t.cols, reduce);
            for (let b = 0; b < want.length; b++) expect(Math.abs(t.data[b]! - want[b]!), `${stack} ${reduce} L${l} H${h} bin ${b}`).toBeLessThanOrEqual(1e-5);
            // Read two rows at a time: the same bins, value for value.
            expect(headThumbnail(source, l, h, { size: 3, reduce, blockCells: 2 * nk }).data).toEqual(t.data);
          }
        }
      }
    }
  });

  it('per-head metrics streamed one head at a time = the dense trace’s head metrics', async () => {
    const { lazy, dense } = await traces(fixture);
    for (const stack of attentionStacks(lazy)) {
      const whole = headMetrics(dense, stack);
      const seen: string[] = [];
      const streamed = streamedHeadMetrics(lazy, stack, {}, (r) => seen.push(`${r.layer}:${r.head}`));
      expect(streamed).toHaveLength(whole.rows.length);
      expect(seen).toEqual(whole.rows.map((r) => `${r.layer}:${r.head}`));
      for (let i = 0; i < streamed.length; i++) {
        for (const name of HEAD_METRIC_NAMES) {
          const [a, b] = [streamed[i]![name], whole.rows[i]![name]];
          if (name === 'js_from_first') expect(a).toBeNaN();
          else if (Number.isNaN(b)) expect(a, `${stack} ${name}`).toBeNaN();
          else expect(Math.abs(a - b), `${stack} row ${i} ${name}`).toBeLessThanOrEqual(1e-5);
        }
      }
    }
  });
});

/** Rollout of PyTorch's attention coarsened to `m` groups, written plainly in float64. */
function coarseRollout(ref: Float64Array, layers: number, heads: number, n: number, m: number, w: number): Float64Array[] {
  const group = (i: number): number => Math.floor((i * m) / n);
  const size = new Array<number>(m).fill(0);
  for (let i = 0; i < n; i++) size[group(i)]!++;
  const out: Float64Array[] = [];
  let r: Float64Array | null = null;
  for (let l = 0; l < layers; l++) {
    const a = new Float64Array(m * m);
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[group(i) * m + group(j)]! += ref[((l * heads + h) * n + i) * n + j]! / (heads * size[group(i)]!);
    }
    for (let I = 0; I < m; I++) {
      for (let J = 0; J < m; J++) a[I * m + J] = (1 - w) * a[I * m + J]! + (I === J ? w : 0);
      const sum = a.subarray(I * m, (I + 1) * m).reduce((x, y) => x + y, 0);
      for (let J = 0; J < m; J++) a[I * m + J]! /= sum;
    }
    if (r === null) r = a;
    else {
      const next = new Float64Array(m * m);
      for (let i = 0; i < m; i++) for (let k = 0; k < m; k++) for (let j = 0; j < m; j++) next[i * m + j]! += a[i * m + k]! * r[k * m + j]!;
      r = next;
    }
    out.push(r);
  }
  return out;
}

describe.each(['gpt2', 't5'])('fixture %s: rollout streamed at reduced resolution', (fixture) => {
  it('equals rollout of PyTorch attention coarsened to the same groups; at full resolution, attentionRollout', async () => {
    const { lazy, dense, input } = await traces(fixture);
    for (const stack of attentionStacks(lazy).filter((s) => s !== 'cross')) {
      const source = attentionSource(lazy, stack);
      const n = source.numQueries;
      const reference = flat(input[REFERENCE_KEY[stack]] as Nested);
      for (const bins of [3, n]) {
        const got = streamedRollout(lazy, stack, { bins, residual: 0.4, blockCells: 3 * n });
        expect(got.bins).toBe(Math.min(bins, n));
        const want = coarseRollout(reference, source.numLayers, source.numHeads, n, got.bins, 0.4);
        for (let l = 0; l < want.length; l++) {
          for (let c = 0; c < want[l]!.length; c++) expect(Math.abs(got.layers[l]![c]! - want[l]![c]!), `${stack} bins ${bins} layer ${l}`).toBeLessThanOrEqual(1e-5);
        }
      }
      const exact = attentionRollout(dense, { stack, residual: 0.4 });
      const full = streamedRollout(lazy, stack, { bins: n, residual: 0.4 });
      for (let l = 0; l < exact.layers.length; l++) {
        for (let c = 0; c < n * n; c++) expect(Math.abs(full.layers[l]![c]! - exact.layers[l]![c]!)).toBeLessThanOrEqual(1e-6);
      }
    }
    expect(() => streamedRollout(lazy, attentionStacks(lazy).includes('cross') ? 'cross' : 'self', { bins: 0 })).toThrow(/rollout (needs a self-attention stack|bins 0 is not a whole number ≥ 1)/);
  });
});

describe('summaries: bad requests', () => {
  it('sizes, reduce and heads out of range give one line', async () => {
    const { lazy } = await traces('gpt2');
    const source = attentionSource(lazy, 'self');
    expect(() => headThumbnail(source, 0, 0, { size: 0 })).toThrow('thumbnail size 0 is not a whole number ≥ 1');
    expect(() => headThumbnail(source, 0, 0, { reduce: 'median' as never })).toThrow("thumbnail reduce 'median' is not max or mean");
    expect(() => headThumbnail(source, 0, 9)).toThrow('self attention: head 9 is out of range (0–3)');
  });
});
