/**
 * Streaming summaries over an AttentionSource (analysis/attention-summaries.ts): thumbnails of every
 * head of on-demand traces equal a float64 max/mean binning of PyTorch's attention (reference.json)
 * written here, whatever the band size; per-head metrics streamed one head at a time equal the
 * whole-trace head metrics of the dense trace; bad options give one line.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { headMetrics, HEAD_METRIC_NAMES } from '../src/analysis/head-metrics.js';
import { headThumbnail, headThumbnails, streamedHeadMetrics } from '../src/analysis/attention-summaries.js';
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

describe('summaries: bad requests', () => {
  it('sizes, reduce and heads out of range give one line', async () => {
    const { lazy } = await traces('gpt2');
    const source = attentionSource(lazy, 'self');
    expect(() => headThumbnail(source, 0, 0, { size: 0 })).toThrow('thumbnail size 0 is not a whole number ≥ 1');
    expect(() => headThumbnail(source, 0, 0, { reduce: 'median' as never })).toThrow("thumbnail reduce 'median' is not max or mean");
    expect(() => headThumbnail(source, 0, 9)).toThrow('self attention: head 9 is out of range (0–3)');
  });
});
