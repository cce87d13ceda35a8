/** Random weights for benchmark models built in memory. */
import type { FloatTensor } from '../src/core/tensor.js';

/** Deterministic pseudo-random normal values (std 0.02, like BERT's initializer). */
export function randomTensor(shape: number[], seed: number, std = 0.02): FloatTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  let s = seed >>> 0 || 1;
  const next = (): number => {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    return (s + 0.5) / 4294967296;
  };
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(next()));
    const t = 2 * Math.PI * next();
    data[i] = r * Math.cos(t) * std;
    if (i + 1 < n) data[i + 1] = r * Math.sin(t) * std;
  }
  return { shape, data };
}
