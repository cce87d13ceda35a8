/**
 * What a look inside every layer costs (issue 10, point 4), on a random-weight bert-base-sized
 * masked LM (12 layers, 12 heads, hidden 768, FFN 3072, vocab 30522) built in memory, at 128 and
 * 512 tokens: the default trace (attention of every layer), with --deep-dive (queries, keys,
 * values, embeddings, the residual stream, MLP activations), with --logit-lens 5 (13 readouts
 * through the masked-LM head, softmax and TopK in the graph) and with both. Median wall and CPU
 * time of the trace call (session creation excluded by a warm-up run), and the size of what the
 * taps add to the Trace.
 *
 *   npx tsx bench/layer-taps.ts [--tokens 128]
 */
import type { FloatTensor } from '../src/core/tensor.js';
import type { Trace } from '../src/core/trace.js';
import { Model, type TraceOptions } from '../src/engine/model.js';
import { memoryWeightStore } from '../src/io/memory-weights.js';
import { ModelConfig } from '../src/models/config.js';
import { architectureFor } from '../src/models/registry.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { bertBaseWeights, BERT_BASE_CONFIG, HIDDEN, VOCAB } from './bert-base.js';
import { measure } from './measure.js';
import { randomTensor } from './random-weights.js';

/** bert-base with a masked-LM head (decoder tied to the word embeddings). */
function weights(): Map<string, FloatTensor> {
  const w = bertBaseWeights('bert.');
  const zeros = (n: number): FloatTensor => ({ shape: [n], data: new Float32Array(n) });
  w.set('cls.predictions.transform.dense.weight', randomTensor([HIDDEN, HIDDEN], 7001));
  w.set('cls.predictions.transform.dense.bias', zeros(HIDDEN));
  w.set('cls.predictions.transform.LayerNorm.weight', { shape: [HIDDEN], data: new Float32Array(HIDDEN).fill(1) });
  w.set('cls.predictions.transform.LayerNorm.bias', zeros(HIDDEN));
  w.set('cls.predictions.bias', zeros(VOCAB));
  return w;
}

/** Bytes of the float and int arrays the layer taps add to a trace. */
function addedBytes(t: Trace): number {
  let bytes = 0;
  for (const s of Object.values(t.values ?? {})) for (const l of s?.layers ?? []) bytes += l.byteLength;
  for (const s of Object.values(t.layerStates ?? {})) {
    for (const m of [s?.embeddings?.token, s?.embeddings?.position, s?.embeddings?.segment]) bytes += m?.data.byteLength ?? 0;
    for (const list of [s?.residuals?.input, s?.residuals?.attention, s?.residuals?.output, s?.mlpActivations]) for (const m of list ?? []) bytes += m?.data.byteLength ?? 0;
  }
  for (const r of t.logitLens?.layers ?? []) bytes += r.ids.byteLength + r.probabilities.byteLength;
  return bytes;
}

const CASES: [string, TraceOptions][] = [
  ['attention (default)', {}],
  ['+ --deep-dive', { deepDive: true }],
  ['+ --logit-lens 5', { logitLens: 5 }],
  ['+ both', { deepDive: true, logitLens: 5 }],
];

async function main(): Promise<void> {
  const ti = process.argv.indexOf('--tokens');
  const lengths = ti >= 0 ? [Number(process.argv[ti + 1])] : [128, 512];
  const config = new ModelConfig({ ...BERT_BASE_CONFIG, architectures: ['BertForMaskedLM'] }, 'bench bert-base config');
  const model = new Model({ name: 'random-bert-base', config, architecture: architectureFor('bert'), tokenizer: null, weights: memoryWeightStore(weights()), runtime: nodeRuntime });
  try {
    console.log('| tokens | trace | wall ms | CPU ms | CPU vs default | added to the Trace |');
    console.log('| --- | --- | --- | --- | --- | --- |');
    for (const n of lengths) {
      const ids = Array.from({ length: n }, (_, i) => 1000 + ((i * 7919) % 20000));
      let base = 0;
      for (const [label, options] of CASES) {
        let last: Trace | null = null;
        const t = await measure(async () => {
          last = await model.trace(null, { ids, ...options });
        }, n >= 512 ? 2 : 3);
        if (label.startsWith('attention')) base = t.cpu;
        const mib = (addedBytes(last!) / 2 ** 20).toFixed(1);
        console.log(`| ${n} | ${label} | ${t.wall.toFixed(0)} | ${t.cpu.toFixed(0)} | ${(t.cpu / base).toFixed(2)}× | ${mib} MiB |`);
      }
    }
  } finally {
    await model.dispose();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
