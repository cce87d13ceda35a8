/**
 * Layer-by-layer runs with shared sessions and q/k-first segments (engine/layerwise.ts over
 * graph/partition.ts), on fixture families made four layers deep: layers 2 and 3 repeat the
 * weights of layers 0 and 1 under their own names, so the middle segments are the same graph on
 * other weights and run on one session fed each segment's weights. Every trace gathered layer by
 * layer (shared sessions; q/k first; attention on demand with q/k first) must be the whole-graph
 * trace of the same model bit for bit, and a q/k-first run must hand out layer 0's queries and keys
 * in a segment that has not computed the rest of layer 0 (its attention, its MLP output).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FloatTensor } from '../src/core/tensor.js';
import { traceByLayers, traceLayers, type LayerOutputs } from '../src/engine/layerwise.js';
import { loadModel } from '../src/engine/load.js';
import { Model } from '../src/engine/model.js';
import { resolveModelSource } from '../src/io/model-source.js';
import { openWeights } from '../src/io/open-weights.js';
import type { WeightStore } from '../src/io/weights.js';
import { ModelConfig } from '../src/models/config.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { deepOr } from './helpers/deep.js';
import { allTapsOptions, differences, LAYERWISE_FIXTURES } from './helpers/layerwise-compare.js';
import { FIXTURES, readReference } from './helpers/reference.js';

/**
 * Families whose shared sessions give the whole graph's values bit for bit. Elsewhere onnxruntime
 * may fuse a layer's ops differently when its weights are inputs rather than initializers (BERT's
 * bias + residual + LayerNorm; T5's norm before its on-demand queries): the same arithmetic up to
 * float32 rounding, checked to 1e-4 relative (the tolerance of queries, keys and hidden states
 * against PyTorch; the residual streams of a random T5 grow past 1 and differ by ~1e-5 there).
 */
const BIT_EXACT = ['gpt2', 'llama', 'mixtral'];

/** Config keys that count layers, across the families. */
const LAYER_KEYS = ['num_hidden_layers', 'n_layer', 'n_layers', 'num_layers', 'encoder_layers', 'decoder_layers', 'num_decoder_layers'];
const DEPTH = 4;

/** The first `.<n>.` of a weight name (the layer index in every family's naming) taken modulo `base`. */
function baseName(name: string, base: number): string {
  return name.replace(/\.(\d+)\./, (_, n: string) => `.${Number(n) % base}.`);
}

/** `store` with the weights of layers ≥ `base` read from layer (index mod `base`). */
function repeatLayers(store: WeightStore, base: number): WeightStore {
  const find = (name: string) => (store.has(name) ? name : baseName(name, base));
  const extra: string[] = [];
  for (const name of store.names()) {
    const m = /\.(\d+)\./.exec(name);
    if (!m || Number(m[1]) >= base) continue;
    for (let l = Number(m[1]) + base; l < DEPTH; l += base) extra.push(name.replace(/\.(\d+)\./, `.${l}.`));
  }
  return {
    names: () => [...store.names(), ...extra.filter((n) => !store.has(n))],
    has: (name) => store.has(name) || store.has(baseName(name, base)),
    shape: (name) => store.shape(find(name)),
    dtype: (name) => store.dtype(find(name)),
    get: (name): Promise<FloatTensor> => store.get(find(name)),
    close: () => store.close(),
  };
}

/** The fixture with four layers (2 and 3 repeating 0 and 1), or null for fixtures not two layers deep. */
async function deepened(fixture: string): Promise<{ model: Model; close: () => Promise<void> } | null> {
  const dir = join(FIXTURES, fixture);
  const loaded = await loadModel(dir);
  const raw: Record<string, unknown> = { ...loaded.config.raw };
  const keys = LAYER_KEYS.filter((k) => typeof raw[k] === 'number');
  if (keys.length === 0 || keys.some((k) => raw[k] !== 2)) {
    await loaded.dispose();
    return null;
  }
  for (const k of keys) raw[k] = DEPTH;
  const store = await openWeights(await resolveModelSource(dir));
  const model = new Model({ name: `${fixture} (${DEPTH} layers)`, config: new ModelConfig(raw as never, `${fixture} deepened`), architecture: loaded.architecture, tokenizer: loaded.tokenizer, weights: repeatLayers(store, 2), runtime: nodeRuntime });
  return {
    model,
    close: async () => {
      await model.dispose();
      await loaded.dispose();
      await store.close();
    },
  };
}

const QUICK = ['bert', 'gpt2', 'llama', 't5', 'mixtral'];

/**
 * Query bands of the on-demand case outside QUICK (test:deep): its whole-graph reference with the
 * default 16 bands per layer is a graph of thousands of nodes whose onnxruntime session takes
 * minutes to create on the encoder-decoders (marian made 4 layers deep: 8,129 nodes, ~430 s under
 * load; 2 bands: ~30 s). Two bands still cut every layer's attention in bands; QUICK keeps the default.
 */
const DEEP_BANDS = 2;
/** Per case under test:deep (a loaded 2-core machine; the whole-graph sessions dominate). */
const DEEP_CASE_MS = 600_000;

for (const fixture of deepOr(LAYERWISE_FIXTURES, QUICK)) {
  describe(`layer by layer, shared sessions: ${fixture} made ${DEPTH} layers deep`, () => {
    let made: Awaited<ReturnType<typeof deepened>> = null;
    beforeAll(async () => {
      made = await deepened(fixture);
    });
    afterAll(async () => {
      await made?.close();
    });
    const input = readReference(fixture).inputs[0]!;
    const options = allTapsOptions(input);

    const quick = QUICK.includes(fixture);
    for (const [label, extra] of [
      ['shared sessions', {}],
      ['q/k first', { qkFirst: true }],
      ['attention on demand, q/k first', { qkFirst: true, attention: 'on-demand' as const, ...(quick ? {} : { queryBandCount: DEEP_BANDS }) }],
    ] as const) {
      it(`${label}: the whole-graph trace bit for bit, middle layers on a shared session`, { timeout: quick ? undefined : DEEP_CASE_MS }, async (ctx) => {
        if (!made) return ctx.skip();
        const { model } = made;
        const seen: LayerOutputs[] = [];
        const layered = await traceByLayers(model, null, { ...options, ...extra }, (l) => {
          seen.push(l);
        });
        expect(differences(layered, await model.trace(null, { ...options, ...extra }), BIT_EXACT.includes(fixture) ? 0 : 1e-4)).toEqual([]);
        // Four layers: at least the two middle ones (of each stack) share their session.
        expect(seen.filter((s) => s.shared).length).toBeGreaterThanOrEqual(2);
        const stacks = new Set(seen.flatMap((s) => s.layers.map((l) => l.stack)));
        if (!('qkFirst' in extra) && stacks.size === 1) {
          // One stack, the logits asked for: the last layer runs on the middle layers' session too,
          // the final norm and the head in a segment of their own after it.
          const last = seen.find((s) => s.layers.some((l) => l.layer === DEPTH - 1))!;
          expect(last.layers).toHaveLength(1);
          expect(last.shared).toBe(true);
          expect(seen[seen.length - 1]!.layers).toEqual([]);
          expect(Object.keys(seen[seen.length - 1]!.outputs)).toContain('logits');
        }
        if ('qkFirst' in extra) {
          // One segment more than the layers of the first stack: q/k of layer k come in segment k.
          const first = seen[0]!;
          const stack = first.layers[0]!.stack;
          expect(Object.keys(first.outputs)).toContain(`queries.${stack}.0`);
          expect(Object.keys(first.outputs)).toContain(`keys.${stack}.0`);
          expect(Object.keys(first.outputs).filter((k) => /^(attention|resid_attention|resid_output|residual_sum)\./.test(k))).toEqual([]);
        }
      });
    }
  });
}

describe('layer by layer, q/k first: order of the outputs', () => {
  let made: Awaited<ReturnType<typeof deepened>> = null;
  beforeAll(async () => {
    made = await deepened('llama');
  });
  afterAll(async () => {
    await made?.close();
  });

  it("hands out layer k's queries and keys before layer k's attention and MLP output are computed", async () => {
    const { model } = made!;
    const order: string[] = [];
    await traceLayers(model, null, { ids: readReference('llama').inputs[0]!.input_ids, qk: true, qkFirst: true, residuals: true }, (l) => {
      order.push(...Object.keys(l.outputs).filter((k) => /^(queries|keys|attention|resid_output)\.self\.\d+$/.test(k)).sort().map((k) => `${l.index}:${k}`));
    });
    const at = (name: string) => Number(order.find((o) => o.endsWith(`:${name}`))!.split(':')[0]);
    for (let l = 0; l < DEPTH; l++) {
      expect(at(`queries.self.${l}`)).toBe(l);
      expect(at(`keys.self.${l}`)).toBe(l);
      expect(at(`attention.self.${l}`)).toBe(l + 1);
      expect(at(`resid_output.self.${l}`)).toBe(l + 1);
    }
  });
});
