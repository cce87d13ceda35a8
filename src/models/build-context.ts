/** The BuildContext an architecture builds its graph with, backed by a checkpoint's WeightStore. */
import { AttnscopeError } from '../core/errors.js';
import { GraphBuilder, type Value } from '../graph/builder.js';
import type { WeightStore } from '../io/weights.js';
import type { BuildContext, TapRequest } from './architecture.js';
import { checkAttentionWeightShape, checkBlockWeightShape, layerCountFields, type AttentionShape, type ModelConfig } from './config.js';

/** Older checkpoints name LayerNorm parameters gamma/beta; transformers renames them on load. */
function aliases(name: string): string[] {
  const out = [name];
  if (name.endsWith('.weight')) out.push(`${name.slice(0, -'.weight'.length)}.gamma`);
  if (name.endsWith('.bias')) out.push(`${name.slice(0, -'.bias'.length)}.beta`);
  return out;
}

/**
 * `attention`: the head layout the architecture described (ArchitectureInfo), to check separate
 * query/key/value projections against it when they are declared.
 */
export function createBuildContext(config: ModelConfig, weights: WeightStore, taps: TapRequest, attention?: AttentionShape): BuildContext {
  const g = new GraphBuilder(config.modelType);
  const loaded = new Map<string, Promise<Value>>();
  const stored = (name: string): string | undefined => aliases(name).find((n) => weights.has(n));

  /** Declares the weight now (shape from the header); its data is read only when the graph is encoded. */
  const load = (name: string, storedName: string): Promise<Value> => {
    let value = loaded.get(name);
    if (!value) {
      // 16-bit checkpoints keep their weights 16-bit in the graph (half the disk in the graph cache).
      checkBlockWeightShape(config, name, weights.shape(storedName));
      if (attention) checkAttentionWeightShape(config, attention, name, weights.shape(storedName));
      const dtype = weights.dtype(storedName);
      const storage = dtype === 'F16' ? 'float16' : dtype === 'BF16' ? 'bfloat16' : 'float32';
      value = Promise.resolve(g.initializer(name, async () => (await weights.get(storedName)).data, weights.shape(storedName), storage));
      loaded.set(name, value);
    }
    return value;
  };

  return {
    g,
    config,
    taps,
    hasWeight: (name) => stored(name) !== undefined,
    async weight(name) {
      const s = stored(name);
      if (s === undefined) {
        // A layer's tensor missing: most often the config claims more layers than the checkpoint has.
        const layers = /\.\d+\./.test(name) ? layerCountFields(config) : '';
        const why = layers ? `${config.source} says ${layers}: does the checkpoint have that many layers?` : `is it a ${config.modelType} checkpoint?`;
        throw new AttnscopeError(`checkpoint has no tensor '${name}' (${why})`);
      }
      return load(name, s);
    },
    async optionalWeight(name) {
      const s = stored(name);
      return s === undefined ? null : load(name, s);
    },
    findPrefix(prefixes, probe) {
      const p = prefixes.find((prefix) => stored(prefix + probe) !== undefined);
      if (p === undefined) throw new AttnscopeError(`checkpoint has no tensor '${probe}' under any of ${prefixes.map((x) => `'${x}'`).join(', ')}`);
      return p;
    },
  };
}
