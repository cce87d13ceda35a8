/**
 * Gradient benchmark (issue 10, point 6): what the backward pass in the graph costs against the
 * forward pass alone, on random-weight models of bert-base size (12 layers, 12 heads, hidden 768,
 * FFN 3072, vocab 30522) and gpt2-small size (the same, vocab 50257, 1024 positions), built in memory.
 *
 * Per model and length (128, 512 tokens), each in its own process so peak RSS is per case:
 * - forward: the model's graph with logits only (no taps), median of runs;
 * - forward + backward (∂T/∂E): attribute(…, methods ['gradient']), T = log p of the top token at the
 *   last position (gpt2) or of the input token at position 2 (bert), the gradient graph of the
 *   embeddings only;
 * - forward + backward (full): methods ['gradient', 'attentionGrad', 'headImportance']: also ∂T/∂α
 *   of every attention probability and ∂T/∂gate, all fetched;
 * - integrated gradients, 50 steps (128 tokens only), zero baseline;
 * - peak RSS of the process (the 512-token runs give the memory at 512).
 * Session creation (graph build + optimisation) is excluded from the times (warm-up run first).
 *
 *   npm run bench:gradients                     every case
 *   node dist/bench/gradients.js --model gpt2 --tokens 128
 *   node dist/bench/gradients.js --memory       peak RSS of one full attribution at 512 tokens, alone
 *   node dist/bench/gradients.js --ig           integrated gradients, 50 midpoint steps, batched (the
 *                                               path points as batch items, chunks from the memory
 *                                               bound) against one run per step, at 32 and 128 tokens;
 *                                               each case in a fresh process (wall, CPU, peak RSS)
 *   node dist/bench/gradients.js --ig --model bert --tokens 128 --mode batched --memory-mb 4096
 *                                               one case (JSON), with another memory bound
 *   node dist/bench/gradients.js --logits       engine/batch.ts: 32 masked copies of a 24-token input
 *                                               (bert-base; one position each, log-probabilities) one run
 *                                               each against logitsBatch, and the largest difference
 */
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import type { FloatTensor } from '../src/core/tensor.js';
import { backwardItemBytes, memoryShape } from '../src/engine/batch-memory.js';
import { logitsBatch } from '../src/engine/batch.js';
import { attribute, type AttributionMethod } from '../src/engine/gradients.js';
import { Model } from '../src/engine/model.js';
import { memoryWeightStore } from '../src/io/memory-weights.js';
import { ModelConfig } from '../src/models/config.js';
import { architectureFor } from '../src/models/registry.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { bertBaseWeights, BERT_BASE_CONFIG, FFN, HEADS, HIDDEN, LAYERS } from './bert-base.js';
import { measure, type Timing } from './measure.js';
import { randomTensor } from './random-weights.js';

const GPT2_VOCAB = 50257;
const GPT2_POSITIONS = 1024;

const GPT2_CONFIG = {
  model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], n_embd: HIDDEN, n_head: HEADS, n_layer: LAYERS, n_inner: FFN,
  vocab_size: GPT2_VOCAB, n_positions: GPT2_POSITIONS, layer_norm_epsilon: 1e-5, activation_function: 'gelu_new',
};

/** Random gpt2-small weights (GPT2Model names; the LM head is tied to wte). */
function gpt2Weights(): Map<string, FloatTensor> {
  const w = new Map<string, FloatTensor>();
  let seed = 101;
  const add = (name: string, shape: number[], fill?: number): void => {
    if (fill === undefined) w.set(name, randomTensor(shape, seed++));
    else w.set(name, { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill) });
  };
  add('wte.weight', [GPT2_VOCAB, HIDDEN]);
  add('wpe.weight', [GPT2_POSITIONS, HIDDEN]);
  for (let l = 0; l < LAYERS; l++) {
    const p = `h.${l}`;
    add(`${p}.ln_1.weight`, [HIDDEN], 1);
    add(`${p}.ln_1.bias`, [HIDDEN], 0);
    add(`${p}.attn.c_attn.weight`, [HIDDEN, 3 * HIDDEN]);
    add(`${p}.attn.c_attn.bias`, [3 * HIDDEN], 0);
    add(`${p}.attn.c_proj.weight`, [HIDDEN, HIDDEN]);
    add(`${p}.attn.c_proj.bias`, [HIDDEN], 0);
    add(`${p}.ln_2.weight`, [HIDDEN], 1);
    add(`${p}.ln_2.bias`, [HIDDEN], 0);
    add(`${p}.mlp.c_fc.weight`, [HIDDEN, FFN]);
    add(`${p}.mlp.c_fc.bias`, [FFN], 0);
    add(`${p}.mlp.c_proj.weight`, [FFN, HIDDEN]);
    add(`${p}.mlp.c_proj.bias`, [HIDDEN], 0);
  }
  add('ln_f.weight', [HIDDEN], 1);
  add('ln_f.bias', [HIDDEN], 0);
  return w;
}

type ModelName = 'bert' | 'gpt2';

function benchModel(name: ModelName): Model {
  if (name === 'bert') {
    const config = new ModelConfig({ ...BERT_BASE_CONFIG, architectures: ['BertForMaskedLM'] }, 'bench bert-base config');
    const weights = memoryWeightStore(bertMlmWeights());
    return new Model({ name: 'random-bert-base', config, architecture: architectureFor('bert'), tokenizer: null, weights, runtime: nodeRuntime });
  }
  const config = new ModelConfig(GPT2_CONFIG, 'bench gpt2 config');
  return new Model({ name: 'random-gpt2', config, architecture: architectureFor('gpt2'), tokenizer: null, weights: memoryWeightStore(gpt2Weights()), runtime: nodeRuntime });
}

/** bert-base weights with BertForMaskedLM's prediction head (decoder tied to the word embeddings). */
function bertMlmWeights(): Map<string, FloatTensor> {
  const w = bertBaseWeights('bert.');
  w.set('cls.predictions.transform.dense.weight', randomTensor([HIDDEN, HIDDEN], 9001));
  w.set('cls.predictions.transform.dense.bias', { shape: [HIDDEN], data: new Float32Array(HIDDEN) });
  w.set('cls.predictions.transform.LayerNorm.weight', { shape: [HIDDEN], data: new Float32Array(HIDDEN).fill(1) });
  w.set('cls.predictions.transform.LayerNorm.bias', { shape: [HIDDEN], data: new Float32Array(HIDDEN) });
  w.set('cls.predictions.bias', { shape: [BERT_BASE_CONFIG.vocab_size], data: new Float32Array(BERT_BASE_CONFIG.vocab_size) });
  return w;
}

interface CaseResult {
  model: ModelName;
  tokens: number;
  forward: Timing;
  embeddingGrad: Timing;
  fullGrad: Timing;
  ig: Timing | null;
  igSteps: number;
  peakRssMiB: number;
  load: number;
}

const REPEATS: Record<number, number> = { 128: 3, 512: 2 };
const IG_STEPS = 50;

async function runCase(name: ModelName, tokens: number): Promise<CaseResult> {
  const model = benchModel(name);
  const vocab = name === 'bert' ? BERT_BASE_CONFIG.vocab_size : GPT2_VOCAB;
  const ids = Array.from({ length: tokens }, (_, i) => 1000 + ((i * 7919) % (vocab - 1000)));
  const inputs = name === 'bert' ? { inputIds: ids, typeIds: ids.map(() => 0) } : { inputIds: ids };
  // bert: log p(input token) at position 2 (the fixtures' masked-LM target); gpt2: the default (top token at the last position).
  const target = name === 'bert' ? { kind: 'token' as const, position: 2, tokenId: ids[2]! } : undefined;
  const repeats = REPEATS[tokens] ?? 3;
  const forward = await measure(() => model.run({ attention: false, qk: false, lastHiddenState: false, logits: true }, inputs), repeats);
  const grad = (methods: AttributionMethod[], steps?: number) => () => attribute(model, inputs, { target, methods, ...(steps ? { steps, baseline: 'zero' as const } : {}) });
  const embeddingGrad = await measure(grad(['gradient']), repeats);
  const fullGrad = await measure(grad(['gradient', 'attentionGrad', 'headImportance']), repeats);
  // The IG session (the embeddings-only gradient graph) is warm from the runs above: one run.
  const ig = tokens <= 128 ? await measure(grad(['integratedGradients'], IG_STEPS), 1, false) : null;
  await model.dispose();
  return {
    model: name,
    tokens,
    forward,
    embeddingGrad,
    fullGrad,
    ig,
    igSteps: IG_STEPS,
    peakRssMiB: process.resourceUsage().maxRSS / 1024,
    load: os.loadavg()[0]!,
  };
}

interface MemoryResult {
  model: ModelName;
  tokens: number;
  /** RSS with the model object and its random weights in JavaScript, before any session. */
  beforeMiB: number;
  /** Peak RSS after one full attribution (one session: forward + backward, ∂T/∂α and gates fetched). */
  peakMiB: number;
}

/** One full attribution in a fresh process: what a single `attnscope attribute` run holds. */
async function runMemory(name: ModelName, tokens: number): Promise<MemoryResult> {
  const model = benchModel(name);
  const vocab = name === 'bert' ? BERT_BASE_CONFIG.vocab_size : GPT2_VOCAB;
  const ids = Array.from({ length: tokens }, (_, i) => 1000 + ((i * 7919) % (vocab - 1000)));
  const inputs = name === 'bert' ? { inputIds: ids, typeIds: ids.map(() => 0) } : { inputIds: ids };
  const target = name === 'bert' ? { kind: 'token' as const, position: 2, tokenId: ids[2]! } : undefined;
  const beforeMiB = process.memoryUsage().rss / 2 ** 20;
  await attribute(model, inputs, { target, methods: ['gradient', 'attentionGrad', 'headImportance'] });
  const peakMiB = process.resourceUsage().maxRSS / 1024;
  await model.dispose();
  return { model: name, tokens, beforeMiB, peakMiB };
}

interface IgResult {
  model: ModelName;
  tokens: number;
  mode: 'batched' | 'unbatched';
  /** One IG of IG_STEPS midpoint steps (session warm: built by a one-step IG first). */
  timing: Timing;
  batchSize: number;
  runs: number;
  /** engine/batch-memory.ts's estimate of one path point's working memory. */
  itemEstimateMiB: number;
  /** RSS after the warm-up (model, weights in JS, the session) and the process's peak. */
  warmMiB: number;
  peakMiB: number;
  sumAttributions: number;
  load: number;
}

/** Integrated gradients in a fresh process, batched (the default memory bound) or one run per step. */
async function runIg(name: ModelName, tokens: number, mode: IgResult['mode'], memoryMB?: number): Promise<IgResult> {
  const model = benchModel(name);
  const vocab = name === 'bert' ? BERT_BASE_CONFIG.vocab_size : GPT2_VOCAB;
  const ids = Array.from({ length: tokens }, (_, i) => 1000 + ((i * 7919) % (vocab - 1000)));
  const inputs = name === 'bert' ? { inputIds: ids, typeIds: ids.map(() => 0) } : { inputIds: ids };
  const target = name === 'bert' ? { kind: 'token' as const, position: 2, tokenId: ids[2]! } : undefined;
  const options = { target, methods: ['integratedGradients'] as AttributionMethod[], baseline: 'zero' as const, rule: 'midpoint' as const };
  await attribute(model, inputs, { ...options, steps: 1, batchSize: 1 });
  const warmMiB = process.memoryUsage().rss / 2 ** 20;
  let last: Awaited<ReturnType<typeof attribute>> | undefined;
  const timing = await measure(async () => {
    last = await attribute(model, inputs, { ...options, steps: IG_STEPS, ...(mode === 'unbatched' ? { batchSize: 1 } : {}), ...(memoryMB ? { memoryMB } : {}) });
  }, 1, false);
  const ig = last!.integratedGradients!;
  const result: IgResult = {
    model: name, tokens, mode, timing, batchSize: ig.batch.size, runs: ig.batch.runs,
    itemEstimateMiB: backwardItemBytes(memoryShape(model), tokens) / 2 ** 20,
    warmMiB, peakMiB: process.resourceUsage().maxRSS / 1024, sumAttributions: ig.completeness.sumAttributions, load: os.loadavg()[0]!,
  };
  await model.dispose();
  return result;
}

/** CrowS-Pairs-like scoring: n copies of one input, copy i with token i masked, log p of the original token there. */
async function runLogits(): Promise<void> {
  const model = benchModel('bert');
  const n = 24;
  const ids = Array.from({ length: n }, (_, i) => 1000 + ((i * 7919) % 29000));
  const MASK = 103;
  const rows = Array.from({ length: 32 }, (_, c) => ids.map((x, i) => (i === c % n ? MASK : x)));
  const at = rows.map((_, c) => c % n);
  const taps = { attention: false, qk: false, lastHiddenState: false, logits: true } as const;
  const one = async (): Promise<number[]> => {
    const out: number[] = [];
    for (const [c, row] of rows.entries()) {
      const l = (await model.run(taps, { inputIds: row, typeIds: row.map(() => 0) })).logits!.data as Float32Array;
      const v = BERT_BASE_CONFIG.vocab_size;
      const r = l.subarray(at[c]! * v, (at[c]! + 1) * v);
      let max = -Infinity;
      for (const x of r) max = Math.max(max, x);
      let sum = 0;
      for (const x of r) sum += Math.exp(x - max);
      out.push(r[ids[at[c]!]!]! - max - Math.log(sum));
    }
    return out;
  };
  const batched = async (): Promise<number[]> => {
    const b = await logitsBatch(model, rows.map((row) => ({ inputIds: row, typeIds: row.map(() => 0) })), { positions: at.map((p) => [p]), logProbabilities: true });
    return b.rows.map((r, c) => r.data[ids[at[c]!]!]!);
  };
  let a: number[] = [];
  let b: number[] = [];
  const tOne = await measure(async () => { a = await one(); }, 1);
  const tBatch = await measure(async () => { b = await batched(); }, 1);
  const diff = Math.max(...a.map((x, i) => Math.abs(x - b[i]!)));
  console.log(`32 copies × ${n} tokens, bert-base (random weights), one masked position each; load ${os.loadavg()[0]!.toFixed(1)}`);
  console.log('| scoring | runs | wall / CPU |');
  console.log('| --- | ---: | ---: |');
  console.log(`| one model.run per copy | 32 | ${fmt(tOne.wall)} / ${fmt(tOne.cpu)} ms |`);
  console.log(`| logitsBatch | 1 | ${fmt(tBatch.wall)} / ${fmt(tBatch.cpu)} ms |`);
  console.log(`largest |log p| difference: ${diff.toExponential(2)}; peak RSS ${fmt(process.resourceUsage().maxRSS / 1024)} MiB`);
  await model.dispose();
}

const fmt = (x: number, d = 0): string => x.toFixed(d);

async function main(): Promise<void> {
  const mi = process.argv.indexOf('--model');
  const ti = process.argv.indexOf('--tokens');
  if (process.argv.includes('--logits')) {
    await runLogits();
    return;
  }
  if (process.argv.includes('--ig')) {
    const oi = process.argv.indexOf('--mode');
    const bi = process.argv.indexOf('--memory-mb');
    if (mi >= 0 && ti >= 0 && oi >= 0) {
      const memoryMB = bi >= 0 ? Number(process.argv[bi + 1]) : undefined;
      process.stdout.write(`${JSON.stringify(await runIg(process.argv[mi + 1] as ModelName, Number(process.argv[ti + 1]), process.argv[oi + 1] as IgResult['mode'], memoryMB))}\n`);
      return;
    }
    const self = fileURLToPath(import.meta.url);
    console.log(`integrated gradients, ${IG_STEPS} midpoint steps, zero baseline; each case a fresh process; ${os.availableParallelism()} cores; wall / CPU ms of one IG (session warm)`);
    console.log('| model | tokens | mode | points per run × runs | wall / CPU | CPU a step | estimate per point | RSS warm | peak RSS | load avg |');
    console.log('| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
    const models = (mi >= 0 ? [process.argv[mi + 1]] : ['bert', 'gpt2']) as ModelName[];
    const lengths = ti >= 0 ? [Number(process.argv[ti + 1])] : [32, 128];
    for (const m of models) {
      for (const tokens of lengths) {
        const sums: number[] = [];
        for (const mode of ['unbatched', 'batched'] as const) {
          const out = execFileSync(process.execPath, [...process.execArgv, self, '--ig', '--model', m, '--tokens', String(tokens), '--mode', mode], { encoding: 'utf8', maxBuffer: 1 << 20 });
          const r = JSON.parse(out.trim().split('\n').pop()!) as IgResult;
          sums.push(r.sumAttributions);
          console.log(`| ${r.model} | ${r.tokens} | ${r.mode} | ${r.batchSize} × ${r.runs} | ${fmt(r.timing.wall)} / ${fmt(r.timing.cpu)} ms | ${fmt(r.timing.cpu / IG_STEPS)} ms | ${fmt(r.itemEstimateMiB)} MiB | ${fmt(r.warmMiB)} MiB | ${fmt(r.peakMiB)} MiB | ${fmt(r.load, 1)} |`);
        }
        console.log(`|  |  | Σ attributions batched − unbatched | ${(sums[1]! - sums[0]!).toExponential(2)} (of ${sums[0]!.toFixed(4)}) |  |  |  |  |  |  |`);
      }
    }
    return;
  }
  if (process.argv.includes('--memory')) {
    if (mi >= 0 && ti >= 0) {
      process.stdout.write(`${JSON.stringify(await runMemory(process.argv[mi + 1] as ModelName, Number(process.argv[ti + 1])))}\n`);
      return;
    }
    const self = fileURLToPath(import.meta.url);
    console.log('| model | tokens | RSS before (model + random weights in JS) | peak RSS, one full attribution | added |');
    console.log('| --- | ---: | ---: | ---: | ---: |');
    for (const m of ['bert', 'gpt2'] as ModelName[]) {
      const out = execFileSync(process.execPath, [...process.execArgv, self, '--memory', '--model', m, '--tokens', '512'], { encoding: 'utf8', maxBuffer: 1 << 20 });
      const r = JSON.parse(out.trim().split('\n').pop()!) as MemoryResult;
      console.log(`| ${r.model} | ${r.tokens} | ${fmt(r.beforeMiB)} MiB | ${fmt(r.peakMiB)} MiB | ${fmt(r.peakMiB - r.beforeMiB)} MiB |`);
    }
    return;
  }
  if (mi >= 0 && ti >= 0) {
    const result = await runCase(process.argv[mi + 1] as ModelName, Number(process.argv[ti + 1]));
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  const self = fileURLToPath(import.meta.url);
  console.log(`attnscope gradient benchmark — random bert-base and gpt2-small (12 × 12, 768, 3072), onnxruntime-node, ${os.availableParallelism()} threads`);
  console.log(`machine: ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores, ${fmt(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`);
  console.log('');
  console.log('Wall / CPU (user + system of the process, all threads) milliseconds, medians; ratios of CPU time (wall is inflated when other processes share the cores).');
  console.log('');
  console.log('| model | tokens | forward | fwd + bwd ∂T/∂E | ratio (CPU) | fwd + bwd full (∂T/∂E, ∂T/∂α, ∂T/∂gate) | ratio (CPU) | IG 50 steps | peak RSS | load avg |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  const models = (mi >= 0 ? [process.argv[mi + 1]] : ['bert', 'gpt2']) as ModelName[];
  const lengths = ti >= 0 ? [Number(process.argv[ti + 1])] : [128, 512];
  for (const m of models) {
    for (const tokens of lengths) {
      const out = execFileSync(process.execPath, [...process.execArgv, self, '--model', m, '--tokens', String(tokens)], { encoding: 'utf8', maxBuffer: 1 << 20 });
      const r = JSON.parse(out.trim().split('\n').pop()!) as CaseResult;
      const t = (x: Timing) => `${fmt(x.wall)} / ${fmt(x.cpu)} ms`;
      const ig = r.ig === null ? '–' : `${t(r.ig)} (${fmt(r.ig.cpu / r.igSteps)} ms CPU a step)`;
      console.log(`| ${r.model} | ${r.tokens} | ${t(r.forward)} | ${t(r.embeddingGrad)} | ${fmt(r.embeddingGrad.cpu / r.forward.cpu, 2)}× | ${t(r.fullGrad)} | ${fmt(r.fullGrad.cpu / r.forward.cpu, 2)}× | ${ig} | ${fmt(r.peakRssMiB)} MiB | ${fmt(r.load, 1)} |`);
    }
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
