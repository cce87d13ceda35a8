/**
 * ALiBi families of issue 8 (BLOOM, Falcon with alibi=True) and Falcon's new decoder
 * architecture reproduce what PyTorch transformers 4.40.2 computed for their fixtures
 * (reference.json): input ids from text, attention of every layer and head (≤ 1e-5), per-head
 * queries and keys, the last hidden state and the logits (≤ 1e-4), and the recorded additive ALiBi
 * score term equals reference.json's position_bias. The ALiBi slopes are checked against values
 * worked out by hand from the ALiBi paper (Press et al., 2022) for 5, 6 and 12 heads.
 */
import { describe, expect, it } from 'vitest';
import { GraphBuilder } from '../src/graph/builder.js';
import { alibiRow, alibiSlopes } from '../src/models/layers.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { denseScoreBias } from '../src/core/position-bias.js';
import { describeFixture, expectCachedDecodingMatchesFullRuns, expectScaleMatches, expectTextTraceMatches } from './helpers/fixture-suite.js';
import { maxAbsDiff } from './helpers/reference.js';

const FIXTURE_NAMES = ['bloom', 'falcon', 'falcon-alibi'];

describe('ALiBi slopes (build_alibi_tensor) against the paper, worked by hand in float64', () => {
  // Paper: n heads (a power of two) get the geometric sequence 2^(−8/n), 2^(−16/n), ...; otherwise the
  // closest power of two n0 below gets its sequence and the remaining heads take 2^(−8/(2·n0)) raised to
  // the odd powers 1, 3, 5, ... (every other slope of 2·n0 heads).
  const byHand: Record<number, number[]> = {
    // n0 = 4: 2^-2, 2^-4, 2^-6, 2^-8; then from 8 heads: 2^-1.
    5: [0.25, 0.0625, 0.015625, 0.00390625, 0.5],
    // n0 = 4; then 2^-1, 2^-3.
    6: [0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125],
    // n0 = 8: 2^-1 ... 2^-8; then from 16 heads (base 2^-0.5): 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5.
    12: [
      0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625,
      Math.SQRT1_2, Math.SQRT1_2 / 2, Math.SQRT1_2 / 4, Math.SQRT1_2 / 8,
    ],
  };
  for (const [heads, want] of Object.entries(byHand)) {
    it(`${heads} heads`, () => {
      const got = Array.from(alibiSlopes(Number(heads)));
      expect(got).toHaveLength(want.length);
      // float32 slopes: within half a float32 spacing (2^-24 relative) of the exact values.
      got.forEach((s, h) => expect(Math.abs(s - want[h]!), `head ${h}: ${s} vs ${want[h]}`).toBeLessThanOrEqual(want[h]! * 2 ** -23));
    });
  }
});

/** The ALiBi row [heads, keys] the graph builds (layers.ts alibiRow) for `keys` keys. */
async function alibiRowOf(heads: number, keys: number, bfloat16: boolean): Promise<Float32Array> {
  const g = new GraphBuilder('alibi');
  const n = g.input('keys', 'int64', [1]);
  g.output(alibiRow(g, heads, n, { bfloat16 }), 'row', 'float32');
  const built = await g.build();
  const session = await nodeRuntime.createSession({ model: built.model, externalData: [] });
  try {
    const out = await session.run({ keys: { type: 'int64', dims: [1], data: BigInt64Array.of(BigInt(keys)) } });
    expect(out.row!.dims).toEqual([1, heads, 1, keys]);
    return out.row!.data as Float32Array;
  } finally {
    await session.release();
  }
}

describe("Falcon's ALiBi term: slopes, positions and products in bfloat16 (slopes.bfloat16() * positions)", () => {
  it('12 heads, keys 0..2, 257 and 1,000, as built in the graph: worked by hand', async () => {
    const row = await alibiRowOf(12, 1001, true);
    const at = (head: number, key: number): number => row[head * 1001 + key]!;
    // Head 8: 2^-0.5 = 0.70710678… → bfloat16 (8 significant bits) 181/256 = 0.70703125.
    expect([at(8, 0), at(8, 1), at(8, 2)]).toEqual([0, 0.70703125, 1.4140625]);
    // The int64 positions are cast to bfloat16 before the product (torch promotes both operands to
    // the common type bfloat16): 257 → 256 (ties to even), 1,000 → 1,000 (8 bits: 1111101000).
    // Head 0: 0.5·256 = 128; head 3: 0.0625·256 = 16; head 8: 0.70703125·256 = 181 (not 181.71 → 182).
    expect([at(0, 257), at(3, 257), at(8, 257)]).toEqual([128, 16, 181]);
    // Head 8 at 1,000: 707.03125 → bfloat16 (spacing 4 in [512, 1024)): 708.
    expect(at(8, 1000)).toBe(708);
    // BLOOM keeps float32: 0.5·257 = 128.5; head 8: float32(2^-0.5)·257.
    const bloom = await alibiRowOf(12, 258, false);
    expect(bloom[257]).toBe(128.5);
    expect(bloom[8 * 258 + 257]).toBe(Math.fround(Math.fround(Math.SQRT1_2) * 257));
  });
});

for (const fixture of FIXTURE_NAMES) {
  describeFixture(fixture, 'decoder', ({ ref, model: loaded }) => {
    const alibi = (ref.attention as unknown as { alibi?: { slopes: number[] } }).alibi;

    if (alibi) {
      it("the slopes are reference.json's", () => {
        expect(maxAbsDiff(alibiSlopes(ref.attention.num_heads), alibi.slopes)).toBeLessThanOrEqual(1e-9);
      });
    }

    for (const input of ref.inputs) {
      it(`input '${input.id}': text → the same ids, and attention, queries, keys, last hidden state and logits match`, async () => {
        const model = loaded();
        const trace = await expectTextTraceMatches(model, input);
        if (input.position_bias) {
          // The recorded additive term, every layer, head and query: reference position_bias[head][1][key].
          const terms = trace.scores!.self!;
          expect(terms.biasKind).toBe('ALiBi');
          const pb = input.position_bias as number[][][];
          const n = input.input_ids.length;
          // Kept as one row over the keys per head (broadcast over the queries), shared by every layer.
          expect(terms.bias!.dims).toEqual([ref.attention.num_heads, 1, n]);
          expect(new Set(terms.bias!.layers).size).toBe(1);
          const bias = denseScoreBias(terms, n, n)!;
          expect(bias.layers).toHaveLength(model.info.numLayers);
          let max = 0;
          for (const layer of bias.layers) {
            for (let hd = 0; hd < ref.attention.num_heads; hd++) {
              for (let i = 0; i < n; i++) {
                for (let j = 0; j < n; j++) max = Math.max(max, Math.abs(layer[(hd * n + i) * n + j]! - pb[hd]![0]![j]!));
              }
            }
          }
          expect(max, `position bias differs by ${max}`).toBeLessThanOrEqual(1e-5);
        }
        expectScaleMatches(trace, ref);
      });
    }

    it('cached decoding chooses the argmax of full re-runs and gives their attention, queries, keys and score terms', async () => {
      const { cached: trace, full } = await expectCachedDecodingMatchesFullRuns(loaded(), ref.inputs[0]!.input_ids, 6);
      const [cached, whole] = [trace.scores!.self!, full.scores!.self!];
      expect(cached.scale).toEqual(whole.scale);
      expect(cached.causal).toBe(whole.causal);
      expect(cached.biasKind).toBe(whole.biasKind);
      if (whole.bias) {
        expect(cached.bias!.dims).toEqual(whole.bias.dims);
        // Only the unmasked cells (key ≤ query): incremental steps never see later keys.
        const n = full.tokens.length;
        const [heads] = whole.bias.dims;
        const [w, c] = [denseScoreBias(whole, n, n)!, denseScoreBias(cached, n, n)!];
        let max = 0;
        w.layers.forEach((layer, l) => {
          for (let h = 0; h < heads; h++) for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) {
            const at = (h * n + i) * n + j;
            max = Math.max(max, Math.abs(layer[at]! - c.layers[l]![at]!));
          }
        });
        expect(max).toBeLessThanOrEqual(1e-6);
      } else {
        expect(cached.bias).toBeUndefined();
      }
    });
  });
}
