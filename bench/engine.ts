/**
 * Engine benchmark: a random-weight model of bert-base size (12 layers, 12 heads, hidden 768,
 * FFN 3072) built in memory. For 8, 128 and 512 tokens it reports load time (graph build +
 * session creation), forward time with every attention tap, forward time without taps (the
 * baseline, same run), the tap overhead, peak RSS and achieved GFLOP/s. Each length runs in its
 * own process so peak RSS is per length.
 *
 *   npm run bench            all lengths
 *   node dist/bench/engine.js --tokens 128
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import type { FloatTensor } from '../src/core/tensor.js';
import { bertBaseWeights, BERT_BASE_CONFIG, FFN, HIDDEN, LAYERS } from './bert-base.js';
import { Model } from '../src/engine/model.js';
import { memoryWeightStore } from '../src/io/memory-weights.js';
import type { TapRequest } from '../src/models/architecture.js';
import { ModelConfig } from '../src/models/config.js';
import { architectureFor } from '../src/models/registry.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';

const REPEATS = { 8: 20, 128: 10, 512: 5 } as Record<number, number>;

/** Multiply-add FLOPs of one bert-base forward pass over n tokens. */
function forwardFlops(n: number): number {
  const perLayer = 2 * (4 * n * HIDDEN * HIDDEN + 2 * n * HIDDEN * FFN) + 2 * 2 * n * n * HIDDEN;
  return LAYERS * perLayer;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface LengthResult {
  tokens: number;
  loadMs: number;
  tappedMs: number;
  tappedQkMs: number;
  plainMs: number;
  peakRssMiB: number;
  gflops: number;
}

async function timeForward(model: Model, taps: TapRequest, ids: number[], repeats: number): Promise<number> {
  const inputs = { inputIds: ids, typeIds: ids.map(() => 0) };
  await model.run(taps, inputs); // warm-up
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    await model.run(taps, inputs);
    times.push(performance.now() - t0);
  }
  return median(times);
}

async function runLength(tokens: number): Promise<LengthResult> {
  const config = new ModelConfig(BERT_BASE_CONFIG, 'bench bert-base config');
  const weights = memoryWeightStore(bertBaseWeights());
  const model = new Model({ name: 'random-bert-base', config, architecture: architectureFor('bert'), tokenizer: null, weights, runtime: nodeRuntime });
  const ids = Array.from({ length: tokens }, (_, i) => (i * 7919) % BERT_BASE_CONFIG.vocab_size);
  const tapped: TapRequest = { attention: true, qk: false, lastHiddenState: false, logits: false };
  const tappedQk: TapRequest = { ...tapped, qk: true };
  const plain: TapRequest = { attention: false, qk: false, lastHiddenState: true, logits: false };
  const t0 = performance.now();
  await model.session(tapped);
  const loadMs = performance.now() - t0;
  await model.session(plain);
  await model.session(tappedQk);
  const repeats = REPEATS[tokens] ?? 5;
  const plainMs = await timeForward(model, plain, ids, repeats);
  const tappedMs = await timeForward(model, tapped, ids, repeats);
  const tappedQkMs = await timeForward(model, tappedQk, ids, repeats);
  await model.dispose();
  return {
    tokens,
    loadMs,
    tappedMs,
    tappedQkMs,
    plainMs,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    gflops: forwardFlops(tokens) / (tappedMs / 1000) / 1e9,
  };
}

const fmt = (x: number, d = 1): string => x.toFixed(d);

async function main(): Promise<void> {
  const i = process.argv.indexOf('--tokens');
  if (i >= 0) {
    const result = await runLength(Number(process.argv[i + 1]));
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  const self = fileURLToPath(import.meta.url);
  console.log(`attnscope engine benchmark — random bert-base (12 × 12, 768, 3072), onnxruntime-node, ${os.availableParallelism()} threads`);
  console.log(`machine: ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores, ${fmt(os.totalmem() / 2 ** 30, 0)} GiB, Node ${process.version}`);
  console.log('');
  console.log('| tokens | load (build + session) | forward, all attention taps | forward, taps + queries/keys | forward, no taps (baseline) | tap overhead | peak RSS | GFLOP/s (tapped) |');
  console.log('| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const tokens of [8, 128, 512]) {
    const out = execFileSync(process.execPath, [self, '--tokens', String(tokens)], { encoding: 'utf8', maxBuffer: 1 << 20 });
    const r = JSON.parse(out.trim().split('\n').pop()!) as LengthResult;
    const overhead = (r.tappedMs / r.plainMs - 1) * 100;
    console.log(`| ${r.tokens} | ${fmt(r.loadMs, 0)} ms | ${fmt(r.tappedMs)} ms | ${fmt(r.tappedQkMs)} ms | ${fmt(r.plainMs)} ms | ${overhead >= 0 ? '+' : ''}${fmt(overhead, 0)}% | ${fmt(r.peakRssMiB, 0)} MiB | ${fmt(r.gflops, 0)} |`);
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
