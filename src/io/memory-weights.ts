/** A WeightStore over tensors already in memory (random-weight models for benchmarks, tests). */
import { AttnscopeError } from '../core/errors.js';
import type { FloatTensor } from '../core/tensor.js';
import type { StoredDType, WeightStore } from './weights.js';

export function memoryWeightStore(tensors: ReadonlyMap<string, FloatTensor>): WeightStore {
  const get = (name: string): FloatTensor => {
    const t = tensors.get(name);
    if (!t) throw new AttnscopeError(`no tensor named '${name}'`);
    return t;
  };
  return {
    names: () => [...tensors.keys()],
    has: (name) => tensors.has(name),
    shape: (name) => [...get(name).shape],
    dtype: (): StoredDType => 'F32',
    get: async (name) => get(name),
    close: async () => undefined,
  };
}
