/** A bert-base-sized model (12 layers, 12 heads, hidden 768, FFN 3072) with random weights. */
import type { FloatTensor } from '../src/core/tensor.js';
import { randomTensor } from './random-weights.js';

export const LAYERS = 12;
export const HIDDEN = 768;
export const HEADS = 12;
export const FFN = 3072;
export const VOCAB = 30522;
export const MAX_POS = 512;

export const BERT_BASE_CONFIG = {
  model_type: 'bert', hidden_size: HIDDEN, num_attention_heads: HEADS, num_hidden_layers: LAYERS,
  intermediate_size: FFN, vocab_size: VOCAB, max_position_embeddings: MAX_POS, type_vocab_size: 2,
  hidden_act: 'gelu', layer_norm_eps: 1e-12,
};

/** Random bert-base weights (BertModel names, optionally prefixed like BertForMaskedLM's 'bert.'). */
export function bertBaseWeights(prefix = ''): Map<string, FloatTensor> {
  const w = new Map<string, FloatTensor>();
  let seed = 1;
  const add = (name: string, shape: number[], fill?: number): void => {
    if (fill === undefined) w.set(prefix + name, randomTensor(shape, seed++));
    else w.set(prefix + name, { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill) });
  };
  add('embeddings.word_embeddings.weight', [VOCAB, HIDDEN]);
  add('embeddings.position_embeddings.weight', [MAX_POS, HIDDEN]);
  add('embeddings.token_type_embeddings.weight', [2, HIDDEN]);
  add('embeddings.LayerNorm.weight', [HIDDEN], 1);
  add('embeddings.LayerNorm.bias', [HIDDEN], 0);
  for (let l = 0; l < LAYERS; l++) {
    const p = `encoder.layer.${l}`;
    for (const m of ['query', 'key', 'value']) {
      add(`${p}.attention.self.${m}.weight`, [HIDDEN, HIDDEN]);
      add(`${p}.attention.self.${m}.bias`, [HIDDEN]);
    }
    add(`${p}.attention.output.dense.weight`, [HIDDEN, HIDDEN]);
    add(`${p}.attention.output.dense.bias`, [HIDDEN]);
    add(`${p}.attention.output.LayerNorm.weight`, [HIDDEN], 1);
    add(`${p}.attention.output.LayerNorm.bias`, [HIDDEN], 0);
    add(`${p}.intermediate.dense.weight`, [FFN, HIDDEN]);
    add(`${p}.intermediate.dense.bias`, [FFN]);
    add(`${p}.output.dense.weight`, [HIDDEN, FFN]);
    add(`${p}.output.dense.bias`, [HIDDEN]);
    add(`${p}.output.LayerNorm.weight`, [HIDDEN], 1);
    add(`${p}.output.LayerNorm.bias`, [HIDDEN], 0);
  }
  return w;
}

