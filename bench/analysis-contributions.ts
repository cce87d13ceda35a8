/**
 * Norm-based attention and ALTI (src/analysis/contributions.ts) on a bert-base-sized model (12
 * layers × 12 heads, hidden 768, random weights built in memory, bench/bert-base.ts) at 32, 128
 * and 512 tokens: the trace with and without the contributions taps (and the taps' size), then
 * each analysis on that trace, median of the runs after one warm-up (ALTI at 512 tokens: one run,
 * warmed up by the shorter inputs), wall clock and this process's CPU time (the analyses run on
 * one thread).
 *
 *   npm run bench:analysis-contrib     (or: npx tsx bench/analysis-contributions.ts [--tokens 32,128,512] [--runs 3])
 */
import { parseArgs } from 'node:util';
import { alti, composeLayers, normAttention, normAttentionPerHead } from '../src/analysis/contributions.js';
import type { Trace } from '../src/core/trace.js';
import { Model } from '../src/engine/model.js';
import { memoryWeightStore } from '../src/io/memory-weights.js';
import { ModelConfig } from '../src/models/config.js';
import { architectureFor } from '../src/models/registry.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { bertBaseWeights, BERT_BASE_CONFIG } from './bert-base.js';
import { measure as measureRuns, type Timing } from './measure.js';

const { values } = parseArgs({ options: { tokens: { type: 'string', default: '32,128,512' }, runs: { type: 'string', default: '3' } } });
const lengths = values.tokens.split(',').map(Number);
const runs = Number(values.runs);
const measure = (f: () => unknown, times = runs, warmUp = true): Promise<Timing> => measureRuns(f, times, warmUp);

const fmt = (t: Timing) => `${t.wall.toFixed(0)} / ${t.cpu.toFixed(0)}`;

function tapBytes(trace: Trace): number {
  const c = trace.contributions?.self;
  if (!c) return 0;
  let bytes = 0;
  for (const l of c.transformedValues.layers) bytes += l.byteLength;
  for (const m of [...c.layerInput, ...c.residualSum]) bytes += m.data.byteLength;
  return bytes;
}

const config = new ModelConfig(BERT_BASE_CONFIG, 'bench bert-base config');
const model = new Model({ name: 'random-bert-base', config, architecture: architectureFor('bert'), tokenizer: null, weights: memoryWeightStore(bertBaseWeights()), runtime: nodeRuntime });

console.log(`norm-based attention and ALTI, bert-base size (12 layers × 12 heads, hidden 768), median of ${runs} runs after a warm-up (ms, wall / CPU)`);
console.log('| tokens | trace | trace + contributions taps | taps in memory | norm per head (all layers) | norm summed over heads (all layers) | ALTI per layer (all layers) | ALTI composition (12 products) |');
console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const n of lengths) {
  const ids = Array.from({ length: n }, (_, i) => (i === 0 ? 101 : i === n - 1 ? 102 : 1000 + ((i * 37) % 20000)));
  const plain = await measure(() => model.trace(null, { ids }));
  let trace: Trace | undefined;
  const tapped = await measure(async () => {
    trace = await model.trace(null, { ids, contributions: true });
  });
  const t = trace!;
  const perHead = await measure(() => normAttentionPerHead(t));
  const summed = await measure(() => normAttention(t));
  let layers = alti(t);
  const altiTime = await measure(() => {
    layers = alti(t);
  }, n >= 512 ? 1 : runs, n < 512); // at 512 one run, warmed up by the shorter inputs
  const compose = await measure(() => composeLayers(layers));
  console.log(`| ${n} | ${fmt(plain)} | ${fmt(tapped)} | ${(tapBytes(t) / 2 ** 20).toFixed(1)} MiB | ${fmt(perHead)} | ${fmt(summed)} | ${fmt(altiTime)} | ${fmt(compose)} |`);
}
await model.dispose();
