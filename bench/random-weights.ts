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

/** The sizes of a Llama-style decoder built from random weights. */
export interface LlamaShape {
  layers: number;
  hidden: number;
  heads: number;
  /** Key/value heads. */
  kv: number;
  ffn: number;
  vocab: number;
}

/**
 * Random weights of a Llama checkpoint of `s` (names as transformers stores them), seeded from
 * `seed` on: norms 1, embeddings std 1, q/k projections std 0.05 (attention rows far from
 * uniform, as in trained models), the rest std 0.02.
 */
export function llamaWeights(s: LlamaShape, seed: number): Map<string, FloatTensor> {
  const w = new Map<string, FloatTensor>();
  const headDim = s.hidden / s.heads;
  const add = (name: string, shape: number[], fill?: number, std = 0.02): void => {
    w.set(name, fill === undefined ? randomTensor(shape, seed++, std) : { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill) });
  };
  add('model.embed_tokens.weight', [s.vocab, s.hidden], undefined, 1);
  add('model.norm.weight', [s.hidden], 1);
  add('lm_head.weight', [s.vocab, s.hidden]);
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [s.hidden], 1);
    add(`${p}.post_attention_layernorm.weight`, [s.hidden], 1);
    add(`${p}.self_attn.q_proj.weight`, [s.hidden, s.hidden], undefined, 0.05);
    add(`${p}.self_attn.k_proj.weight`, [s.kv * headDim, s.hidden], undefined, 0.05);
    add(`${p}.self_attn.v_proj.weight`, [s.kv * headDim, s.hidden]);
    add(`${p}.self_attn.o_proj.weight`, [s.hidden, s.hidden]);
    add(`${p}.mlp.gate_proj.weight`, [s.ffn, s.hidden]);
    add(`${p}.mlp.up_proj.weight`, [s.ffn, s.hidden]);
    add(`${p}.mlp.down_proj.weight`, [s.hidden, s.ffn]);
  }
  return w;
}
