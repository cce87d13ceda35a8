/**
 * CrowS-Pairs cost: scoring the 1,508 pairs as metric.py does (one forward pass per shared token
 * of each sentence, that token masked) with a bert-base-sized masked LM (random weights, the real
 * bert-base-uncased tokenizer), on this machine. Every figure is printed with the load average
 * (`uptime`) around it; compare the ratios, measured in the same run.
 *
 *   sample   a stratified sample (--sample pairs spread over the bias types in proportion, evenly
 *            within each type), the ways alternated --rounds times: the authors' approach itself,
 *            metric.py's loop in PyTorch (bench/pytorch/crows_pairs_metric.py, a child process per
 *            round with --pytorch-threads threads, default --threads; comma-separated for several;
 *            --pytorch-grad leaves autograd on as metric.py does; skipped with a line saying so when
 *            /usr/bin/python3 has no torch, or with --skip-pytorch) on the same weights written as
 *            .safetensors, the same approach on our engine (one forward per masked copy, every
 *            position's logits: scoreCrowsPairs batched: false),
 *            the copies of many pairs pooled and run by length (scoreCrowsPairs, the default),
 *            with --baseline REV also the default path of the sources at git revision REV (`git
 *            archive REV src`, unpacked beside src/ for the run and removed after it: before/after
 *            in one process), and with --per-sentence each sentence's copies as one batch; the
 *            largest per-sentence difference against PyTorch's and our one-forward-per-copy scores,
 *            whether the rounded rows are the same, and whether PyTorch's tokenizer gave our ids
 *   full     all --pairs pairs with the default path (and one forward per copy too with
 *            --full-unbatched)
 *   --extras also: full traces per copy, two one-thread sessions, and the matmul cost of k·n tokens
 *
 * npm run bench:bias-crows-pairs -- [--pairs N] [--sample N] [--rounds N] [--threads N] [--reverse] [--baseline REV] [--per-sentence] [--pytorch-threads N[,N]] [--pytorch-grad] [--skip-pytorch] [--full-unbatched] [--extras]
 *   (default: all 1,508 pairs, 18-pair sample, 2 rounds, 2 threads; --pairs 0 skips the full set,
 *   --rounds 0 the sample)
 */
import { basename, join } from 'node:path';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { parseArgs } from 'node:util';
import { Model } from '../src/engine/model.js';
import { memoryWeightStore } from '../src/io/memory-weights.js';
import { architectureFor } from '../src/models/registry.js';
import { ModelConfig } from '../src/models/config.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { loadTokenizer, type AttnTokenizer } from '../src/tokenizer/load-tokenizer.js';
import { loadCrowsPairs } from '../src/bias/data-files.js';
import { maskedPositions, pseudoLogLikelihoodBatched, runLogits, scoreCrowsPairs } from '../src/bias/crows-pairs.js';
import { execFileSync } from 'node:child_process';
import { crowsPairRows, crowsPairsMetric, orientedSentences, type CrowsPair } from '../src/analysis/bias/crows-pairs.js';
import { bertBaseWeights, BERT_BASE_CONFIG, HIDDEN, VOCAB } from './bert-base.js';
import { randomTensor } from './random-weights.js';
import { measure, timeOnce, type Timing } from './measure.js';
import { writeSafetensors } from '../src/io/safetensors.js';

const { values } = parseArgs({ options: { pairs: { type: 'string' }, sample: { type: 'string' }, rounds: { type: 'string' }, threads: { type: 'string' }, 'full-unbatched': { type: 'boolean' }, extras: { type: 'boolean' }, reverse: { type: 'boolean' }, baseline: { type: 'string' }, 'per-sentence': { type: 'boolean' }, 'skip-pytorch': { type: 'boolean' }, 'pytorch-grad': { type: 'boolean' }, 'pytorch-threads': { type: 'string' } } });
// bench/ from the sources, dist/bench/ when built.
const ROOT = basename(join(import.meta.dirname, '..')) === 'dist' ? join(import.meta.dirname, '..', '..') : join(import.meta.dirname, '..');
const threads = Number(values.threads ?? 2);

/** bert-base's weights with a masked-LM head (random, seeded: the same at every call). */
function maskedLmWeights(): ReturnType<typeof bertBaseWeights> {
  const w = bertBaseWeights('bert.');
  w.set('cls.predictions.transform.dense.weight', randomTensor([HIDDEN, HIDDEN], 9001));
  w.set('cls.predictions.transform.dense.bias', { shape: [HIDDEN], data: new Float32Array(HIDDEN) });
  w.set('cls.predictions.transform.LayerNorm.weight', { shape: [HIDDEN], data: new Float32Array(HIDDEN).fill(1) });
  w.set('cls.predictions.transform.LayerNorm.bias', { shape: [HIDDEN], data: new Float32Array(HIDDEN) });
  w.set('cls.predictions.bias', { shape: [VOCAB], data: new Float32Array(VOCAB) });
  return w;
}

let sharedWeights: ReturnType<typeof bertBaseWeights> | undefined;
function maskedLm(tokenizer: AttnTokenizer, n: number, name: string): Model<AttnTokenizer> {
  const w = (sharedWeights ??= maskedLmWeights());
  const config = new ModelConfig({ ...BERT_BASE_CONFIG, architectures: ['BertForMaskedLM'] }, 'bench bert-base config');
  return new Model({ name, config, architecture: architectureFor('bert'), tokenizer, weights: memoryWeightStore(w), runtime: nodeRuntime, threads: n });
}

const tokDir = join(ROOT, 'test', 'fixtures', 'tokenizers', 'bert-base-uncased');
const tokenizer = await loadTokenizer({ tokenizerJson: join(tokDir, 'tokenizer.json'), tokenizerConfig: join(tokDir, 'tokenizer_config.json') });
const all = await loadCrowsPairs();
const pairs = all.slice(0, Number(values.pairs ?? all.length));
/** `n` pairs spread over the bias types in proportion to their counts, evenly spaced within each type. */
function stratified(ps: readonly CrowsPair[], n: number): CrowsPair[] {
  const types = [...new Set(ps.map((p) => p.biasType))];
  const out: CrowsPair[] = [];
  for (const t of types) {
    const of = ps.filter((p) => p.biasType === t);
    const k = Math.max(1, Math.round((n * of.length) / ps.length));
    for (let i = 0; i < k; i++) out.push(of[Math.floor(((i + 0.5) * of.length) / k)]!);
  }
  return out.sort((a, b) => a.index - b.index);
}
const sample = stratified(all, Number(values.sample ?? 18));
const load = (): string => execFileSync('uptime', { encoding: 'utf8' }).trim().replace(/.*load average:/, 'load');
const model = maskedLm(tokenizer, threads, 'random-bert-base-mlm');

/**
 * The default path of the sources at git revision `rev`, on the same weights: `git archive rev
 * src` unpacked in a folder beside src/ (so that its imports of node_modules resolve), imported,
 * and the folder removed when the process exits.
 */
async function baselineAt(rev: string): Promise<{ score: () => Promise<{ sent1: number; sent2: number }[]>; dispose: () => Promise<void> }> {
  const dir = join(ROOT, `.bench-baseline-${process.pid}`);
  mkdirSync(dir);
  const remove = () => rmSync(dir, { recursive: true, force: true });
  process.on('exit', remove);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(1));
  execFileSync('sh', ['-c', `git -C "${ROOT}" archive "${rev}" src | tar -x -C "${dir}"`]);
  const from = async <T>(path: string): Promise<T> => (await import(join(dir, 'src', path))) as T;
  const { Model: OldModel } = await from<typeof import('../src/engine/model.js')>('engine/model.ts');
  const { memoryWeightStore: oldStore } = await from<typeof import('../src/io/memory-weights.js')>('io/memory-weights.ts');
  const { architectureFor: oldArchitecture } = await from<typeof import('../src/models/registry.js')>('models/registry.ts');
  const { ModelConfig: OldConfig } = await from<typeof import('../src/models/config.js')>('models/config.ts');
  const { nodeRuntime: oldRuntime } = await from<typeof import('../src/runtime/onnxruntime-node.js')>('runtime/onnxruntime-node.ts');
  const { loadTokenizer: oldTokenizer } = await from<typeof import('../src/tokenizer/load-tokenizer.js')>('tokenizer/load-tokenizer.ts');
  const { scoreCrowsPairs: oldScore } = await from<typeof import('../src/bias/crows-pairs.js')>('bias/crows-pairs.ts');
  const w = (sharedWeights ??= maskedLmWeights());
  const config = new OldConfig({ ...BERT_BASE_CONFIG, architectures: ['BertForMaskedLM'] }, 'bench bert-base config');
  const tok = await oldTokenizer({ tokenizerJson: join(tokDir, 'tokenizer.json'), tokenizerConfig: join(tokDir, 'tokenizer_config.json') });
  const old = new OldModel({ name: `random-bert-base-mlm at ${rev}`, config, architecture: oldArchitecture('bert'), tokenizer: tok, weights: oldStore(w), runtime: oldRuntime, threads });
  await oldScore(old, sample.slice(0, 1)); // build the session
  return { score: async () => (await oldScore(old, sample)).scores, dispose: () => old.dispose() };
}
const baseline = values.baseline ? await baselineAt(values.baseline) : undefined;

/** What bench/pytorch/crows_pairs_metric.py prints. */
interface PytorchOutput {
  wall_s: number;
  cpu_s: number;
  copies: number;
  threads: number;
  torch: string;
  pairs: { ids1: number[]; ids2: number[]; sent1: number; sent2: number }[];
}

/**
 * The authors' approach itself: metric.py's loop in PyTorch eager (bench/pytorch/crows_pairs_metric.py:
 * BertForMaskedLM mirrored op for op, its own BertTokenizer over the same vocab.txt, one forward per
 * masked copy) on the same weights, written once as a .safetensors file in a temporary folder
 * (removed at exit), and the same pairs; a child process per call, timed by itself (the loop only,
 * after loading), with `threads` OpenMP and OpenBLAS threads. Undefined, with a line saying so,
 * when `/usr/bin/python3 -c 'import torch'` fails.
 */
async function pytorchReference(ps: readonly CrowsPair[]): Promise<((threads: number) => PytorchOutput) | undefined> {
  const python = '/usr/bin/python3';
  try {
    execFileSync(python, ['-c', 'import torch'], { stdio: 'ignore' });
  } catch {
    console.log(`PyTorch: absent (${python} -c 'import torch' fails), so the authors' approach is run on our engine only`);
    return undefined;
  }
  const dir = mkdtempSync(join(tmpdir(), 'attnscope-crows-pytorch-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(1));
  const w = (sharedWeights ??= maskedLmWeights());
  await writeSafetensors(join(dir, 'model.safetensors'), [...w].map(([name, t]) => ({ name, dtype: 'F32' as const, shape: t.shape, data: t.data })), { format: 'pt' });
  writeFileSync(join(dir, 'pairs.json'), JSON.stringify({
    config: BERT_BASE_CONFIG,
    pairs: ps.map((p) => ({ sent_more: p.sentMore, sent_less: p.sentLess, stereo_antistereo: p.direction })),
  }));
  const args = [join(ROOT, 'bench', 'pytorch', 'crows_pairs_metric.py'), '--weights', join(dir, 'model.safetensors'), '--vocab', join(tokDir, 'vocab.txt'), '--pairs', join(dir, 'pairs.json')];
  if (values['pytorch-grad']) args.push('--grad');
  return (n) => {
    const env = { ...process.env, OMP_NUM_THREADS: String(n), OPENBLAS_NUM_THREADS: String(n) };
    return JSON.parse(execFileSync(python, [...args, '--threads', String(n)], { env, encoding: 'utf8', maxBuffer: 1 << 28, stdio: ['ignore', 'pipe', 'inherit'] })) as PytorchOutput;
  };
}

/** Every masked copy of `ps` as metric.py builds them: [ids, type ids, position]. */
async function copies(ps: readonly CrowsPair[]): Promise<[number[], number[], number][]> {
  const out: [number[], number[], number][] = [];
  const mask = tokenizer.mask!.id!;
  for (const p of ps) {
    const [t1, t2] = await Promise.all(orientedSentences(p).map((s) => model.tokenize(s.toLowerCase())));
    const { first, second } = maskedPositions(t1!.map((t) => t.id), t2!.map((t) => t.id));
    for (const [toks, positions] of [[t1!, first], [t2!, second]] as const) {
      for (const pos of positions) out.push([toks.map((t, i) => (i === pos ? mask : t.id)), toks.map((t) => t.segment), pos]);
    }
  }
  return out;
}

console.log(`bert-base-sized masked LM (random weights, bert-base-uncased tokenizer), ${threads} threads`);
await runLogits(model, [101, 102]); // build the sessions
await scoreCrowsPairs(model, sample.slice(0, 1));
const sampleCopies = await copies(sample);
const lengths = sampleCopies.map((c) => c[0].length);
console.log(`stratified sample: ${sample.length} pairs (${[...new Set(sample.map((p) => p.biasType))].length} bias types), ${sampleCopies.length} masked copies, mean length ${(lengths.reduce((a, b) => a + b, 0) / lengths.length).toFixed(1)} tokens`);

// 0. the ways on the sample, alternated.
{
  const rounds = Number(values.rounds ?? 2);
  type Run = { sent1: number; sent2: number }[];
  /** The previous path: each sentence's copies as one batch. */
  const perSentence = async (ps: readonly CrowsPair[]): Promise<Run> => {
    const mask = tokenizer.mask!.id!;
    const out: Run = [];
    for (const p of ps) {
      const [t1, t2] = await Promise.all(orientedSentences(p).map((s) => model.tokenize(s.toLowerCase())));
      const { first, second } = maskedPositions(t1!.map((t) => t.id), t2!.map((t) => t.id));
      out.push({
        sent1: await pseudoLogLikelihoodBatched(model, t1!.map((t) => t.id), t1!.map((t) => t.segment), first, mask),
        sent2: await pseudoLogLikelihoodBatched(model, t2!.map((t) => t.id), t2!.map((t) => t.segment), second, mask),
      });
    }
    return out;
  };
  const pytorch = values['skip-pytorch'] ? undefined : await pytorchReference(sample);
  let pytorchOut: PytorchOutput | undefined;
  /** Each way's scores, and its own timing when it is not this process's (PyTorch's child times its loop). */
  const ways: Record<string, () => Promise<{ run: Run; timing?: Timing }>> = {};
  for (const n of pytorch ? String(values['pytorch-threads'] ?? threads).split(',').map(Number) : []) {
    ways[`PyTorch metric.py, ${n} thread${n === 1 ? '' : 's'}`] = async () => {
      pytorchOut = pytorch!(n);
      return { run: pytorchOut.pairs, timing: { wall: pytorchOut.wall_s * 1000, cpu: pytorchOut.cpu_s * 1000 } };
    };
  }
  ways['ours, one forward per copy'] = async () => ({ run: (await scoreCrowsPairs(model, sample, { batched: false })).scores });
  if (values['per-sentence']) ways['ours, per sentence'] = async () => ({ run: await perSentence(sample) });
  if (baseline) ways[`ours, pooled at ${values.baseline}`] = async () => ({ run: await baseline.score() });
  ways['ours, pooled'] = async () => ({ run: (await scoreCrowsPairs(model, sample)).scores });
  const times: Record<string, Timing[]> = {};
  const scores: Record<string, Run> = {};
  for (let r = 0; r < rounds; r++) {
    // Every other round (and the first, with --reverse) in the opposite order, so that a load drift does not favour one way.
    const order = Object.entries(ways);
    if ((r % 2 === 1) !== Boolean(values.reverse)) order.reverse();
    for (const [name, f] of order) {
      const l0 = load();
      let own: Timing | undefined;
      const measured = await timeOnce(async () => {
        const out = await f();
        scores[name] = out.run;
        own = out.timing;
      });
      const t = own ?? measured;
      (times[name] ??= []).push(t);
      console.log(`round ${r + 1}, ${name}: ${(t.wall / 1000).toFixed(1)} s wall, ${(t.cpu / 1000).toFixed(1)} s CPU (${(t.wall / sampleCopies.length).toFixed(1)} ms wall, ${(t.cpu / sampleCopies.length).toFixed(1)} ms CPU a copy)${own ? `, timed by the child (${(measured.wall / 1000).toFixed(1)} s with its start and loading)` : ''}; before: ${l0}; after: ${load()}`);
    }
  }
  const sum = (xs: Timing[]) => xs.reduce((a, b) => a + b.wall, 0);
  const cpu = (xs: Timing[]) => xs.reduce((a, b) => a + b.cpu, 0);
  const rowsOf = (name: string) => crowsPairRows(sample, scores[name]!, true).map((x) => [x.sentMoreScore, x.sentLessScore, x.score]);
  const largestDifference = (name: string, from: string): number => {
    let largest = 0;
    scores[name]!.forEach((x, k) => {
      for (const side of ['sent1', 'sent2'] as const) largest = Math.max(largest, Math.abs(x[side] - scores[from]![k]![side]));
    });
    return largest;
  };
  if (pytorchOut && rounds > 0) {
    // The child tokenized with its own BertTokenizer: the ids must be ours.
    let differ = 0;
    for (const [k, p] of sample.entries()) {
      const ours = await Promise.all(orientedSentences(p).map(async (s) => (await model.tokenize(s.toLowerCase())).map((t) => t.id)));
      if (JSON.stringify(ours) !== JSON.stringify([pytorchOut.pairs[k]!.ids1, pytorchOut.pairs[k]!.ids2])) differ++;
    }
    console.log(`PyTorch ${pytorchOut.torch}, ${pytorchOut.threads} threads: ${pytorchOut.copies} forward passes (ours: ${sampleCopies.length}); token ids of ${sample.length - differ} of ${sample.length} pairs the same as ours`);
  }
  const names = rounds > 0 ? Object.keys(ways) : []; // --rounds 0: only the full set below
  for (const name of names) {
    const against = names.filter((n) => n !== name && (n.startsWith('PyTorch') || n === 'ours, one forward per copy'));
    const ratios = against.map((n) => `${(sum(times[n]!) / sum(times[name]!)).toFixed(2)}× ${n} in wall time, ${(cpu(times[n]!) / cpu(times[name]!)).toFixed(2)}× in CPU`);
    const diffs = against.map((n) => `from ${n} ${largestDifference(name, n).toExponential(2)}, rows ${JSON.stringify(rowsOf(name)) === JSON.stringify(rowsOf(n)) ? 'identical' : 'DIFFER'}`);
    console.log(`${name}: ${(sum(times[name]!) / 1000).toFixed(1)} s wall, ${(cpu(times[name]!) / 1000).toFixed(1)} s CPU over ${rounds} rounds (${(sum(times[name]!) / rounds / sampleCopies.length).toFixed(1)} ms wall a copy)${ratios.length ? ` → ${ratios.join('; ')}` : ''}; largest per-sentence difference ${diffs.join('; ')}; metric ${crowsPairsMetric(crowsPairRows(sample, scores[name]!, true)).metric.toFixed(2)}`);
  }
}

if (values.extras) {
// 1. ours vs full traces, on the sample.
const oursSample = await timeOnce(async () => {
  for (const [ids, types] of sampleCopies) await runLogits(model, ids, types);
});
const traceSample = await timeOnce(async () => {
  for (const [ids, types] of sampleCopies) await model.trace(null, { ids, typeIds: types, logits: true });
});
console.log(`sample, logits only: ${oursSample.wall.toFixed(0)} ms (${(oursSample.wall / sampleCopies.length).toFixed(1)} ms a copy)`);
console.log(`sample, full traces: ${traceSample.wall.toFixed(0)} ms (${(traceSample.wall / sampleCopies.length).toFixed(1)} ms a copy)`);

// 2. two copies at a time on two one-thread sessions.
const single = [maskedLm(tokenizer, 1, 'a'), maskedLm(tokenizer, 1, 'b')];
await Promise.all(single.map((m) => runLogits(m, [101, 102])));
const concurrent = await timeOnce(async () => {
  for (let i = 0; i < sampleCopies.length; i += 2) {
    await Promise.all(sampleCopies.slice(i, i + 2).map(([ids, types], k) => runLogits(single[k]!, ids, types)));
  }
});
console.log(`sample, two one-thread sessions at a time: ${concurrent.wall.toFixed(0)} ms (${(concurrent.wall / sampleCopies.length).toFixed(1)} ms a copy)`);
for (const m of single) await m.dispose();

// 3. what a batch could save: one forward of n tokens vs one of k·n.
const n = Math.round(lengths.reduce((a, b) => a + b, 0) / lengths.length);
const k = 16;
const ids = (len: number) => Array.from({ length: len }, (_, i) => 1000 + (i % 5000));
const one = await measure(() => runLogits(model, ids(n)), 10);
const many = await measure(() => runLogits(model, ids(n * k)), 5);
console.log(`one forward of ${n} tokens: ${one.wall.toFixed(1)} ms; one of ${n * k} tokens (${k} copies' matmul work): ${many.wall.toFixed(1)} ms → at most ${((k * one.wall) / many.wall).toFixed(1)}× from batching ${k} copies`);

}

// 4. the whole benchmark: batched, and unbatched when asked.
for (const batched of pairs.length === 0 ? [] : values['full-unbatched'] ? [true, false] : [true]) {
  let metric = Number.NaN;
  const l0 = load();
  const full = await timeOnce(async () => {
    const run = await scoreCrowsPairs(model, pairs, {
      batched,
      onProgress: (done, total) => {
        if (done % 100 === 0 || done === total) process.stderr.write(`${done}/${total}\n`);
      },
    });
    metric = crowsPairsMetric(crowsPairRows(pairs, run.scores, true)).metric;
    console.log(`all ${pairs.length} pairs: ${run.forwardPasses} masked copies`);
  });
  console.log(`all ${pairs.length} pairs, ${batched ? 'pooled by length' : 'one forward per masked copy'}: ${(full.wall / 1000).toFixed(1)} s wall, ${(full.cpu / 1000).toFixed(1)} s CPU; metric ${metric.toFixed(2)}; before: ${l0}; after: ${load()}`);
}
await baseline?.dispose();
await model.dispose();
