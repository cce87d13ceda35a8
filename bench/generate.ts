/**
 * Generation benchmark: incremental decoding with the key/value cache against re-running the
 * whole sequence for every new token (the baseline, same run), on a random-weight Llama-shaped
 * model built in memory (12 layers, hidden 768, 12 heads / 4 kv heads, FFN 2048, vocab 32000).
 * 64 new tokens after a 64-token prompt; prints per-token times at the start and end of
 * generation, so a flat per-token cost is visible.
 *
 *   npm run build && node dist/bench/generate.js
 */
import os from 'node:os';
import type { FloatTensor } from '../src/core/tensor.js';
import { Model } from '../src/engine/model.js';
import { memoryWeightStore } from '../src/io/memory-weights.js';
import type { TapRequest } from '../src/models/architecture.js';
import { ModelConfig } from '../src/models/config.js';
import { architectureFor } from '../src/models/registry.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { randomTensor } from './random-weights.js';

const LAYERS = 12;
const HIDDEN = 768;
const HEADS = 12;
const KV = 4;
const FFN = 2048;
const VOCAB = 32000;
const PROMPT = 64;
const NEW = 64;

function llamaWeights(): Map<string, FloatTensor> {
  const w = new Map<string, FloatTensor>();
  let seed = 11;
  const headDim = HIDDEN / HEADS;
  const add = (name: string, shape: number[], fill?: number): void => {
    w.set(name, fill === undefined ? randomTensor(shape, seed++) : { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill) });
  };
  add('model.embed_tokens.weight', [VOCAB, HIDDEN]);
  add('model.norm.weight', [HIDDEN], 1);
  add('lm_head.weight', [VOCAB, HIDDEN]);
  for (let l = 0; l < LAYERS; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [HIDDEN], 1);
    add(`${p}.post_attention_layernorm.weight`, [HIDDEN], 1);
    add(`${p}.self_attn.q_proj.weight`, [HIDDEN, HIDDEN]);
    add(`${p}.self_attn.k_proj.weight`, [KV * headDim, HIDDEN]);
    add(`${p}.self_attn.v_proj.weight`, [KV * headDim, HIDDEN]);
    add(`${p}.self_attn.o_proj.weight`, [HIDDEN, HIDDEN]);
    add(`${p}.mlp.gate_proj.weight`, [FFN, HIDDEN]);
    add(`${p}.mlp.up_proj.weight`, [FFN, HIDDEN]);
    add(`${p}.mlp.down_proj.weight`, [HIDDEN, FFN]);
  }
  return w;
}

const fmt = (x: number, d = 1): string => x.toFixed(d);
const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

async function main(): Promise<void> {
  const config = new ModelConfig({
    model_type: 'llama', hidden_size: HIDDEN, num_attention_heads: HEADS, num_key_value_heads: KV,
    num_hidden_layers: LAYERS, intermediate_size: FFN, vocab_size: VOCAB, max_position_embeddings: 2048,
    rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false, eos_token_id: -1,
  }, 'bench llama config');
  const model = new Model({ name: 'random-llama', config, architecture: architectureFor('llama'), tokenizer: null, weights: memoryWeightStore(llamaWeights()), runtime: nodeRuntime });
  const prompt = Array.from({ length: PROMPT }, (_, i) => (i * 7919) % VOCAB);
  console.log(`attnscope generation benchmark — random Llama shape (${LAYERS} layers, hidden ${HIDDEN}, ${HEADS}/${KV} heads, vocab ${VOCAB}), ${PROMPT}-token prompt, ${NEW} new tokens, all attention taps`);
  console.log(`machine: ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores, Node ${process.version}`);

  // Warm both sessions.
  const fullTaps: TapRequest = { attention: true, qk: false, lastHiddenState: false, logits: true };
  await model.generate(null, { ids: prompt, maxNewTokens: 2 });
  await model.run(fullTaps, { inputIds: prompt });

  // Cached: time every step by wrapping run().
  const stepTimes: number[] = [];
  const run = model.run.bind(model);
  model.run = async (...args) => {
    const t0 = performance.now();
    const out = await run(...args);
    stepTimes.push(performance.now() - t0);
    return out;
  };
  const t0 = performance.now();
  const trace = await model.generate(null, { ids: prompt, maxNewTokens: NEW });
  const cachedTotal = performance.now() - t0;
  model.run = run;
  const generated = trace.tokens.slice(PROMPT).map((t) => t.id);
  const perToken = stepTimes.slice(1); // step 0 is the prompt

  // Baseline: re-run the whole sequence for every new token (same tokens).
  const fullTimes: number[] = [];
  const b0 = performance.now();
  for (let i = 0; i < NEW; i++) {
    const s = performance.now();
    await model.run(fullTaps, { inputIds: [...prompt, ...generated.slice(0, i)] });
    fullTimes.push(performance.now() - s);
  }
  const fullTotal = performance.now() - b0;

  console.log('');
  console.log('| | total for 64 tokens | per token, first 8 | per token, last 8 |');
  console.log('| --- | ---: | ---: | ---: |');
  console.log(`| key/value cache (prompt ${fmt(stepTimes[0]!)} ms, then one position per token) | ${fmt(cachedTotal, 0)} ms | ${fmt(mean(perToken.slice(0, 8)))} ms | ${fmt(mean(perToken.slice(-8)))} ms |`);
  console.log(`| re-run the whole sequence per token (baseline) | ${fmt(fullTotal, 0)} ms | ${fmt(mean(fullTimes.slice(0, 8)))} ms | ${fmt(mean(fullTimes.slice(-8)))} ms |`);
  console.log('');
  console.log(`speed-up: ${fmt(fullTotal / cachedTotal)}×`);
  await model.dispose();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
