/**
 * Big checkpoints on small machines (issue 13.5): peak memory (RSS) of preparing a checkpoint the
 * first time (graph cache empty: read, transpose, write the cache, open), of opening it again (the
 * cache is there), and of one trace at 128 tokens, for random-weight checkpoints of real shapes
 * (Qwen2.5-0.5B, Llama-3.2-1B, optionally Llama-3.2-3B), float32 or bfloat16.
 *
 * Before/after in the same run: `--base <dir>` is a checkout of the code to compare with (e.g. a
 * git worktree of the commit before the change, with node_modules linked); each measurement is a
 * fresh Node process (its peak RSS from process.resourceUsage), one at a time.
 *
 *   npx tsx bench/big-checkpoints.ts [--models qwen0.5b,llama1b,llama3b] [--dtype f32|bf16]
 *       [--base /path/to/old/checkout] [--only before|after] [--unpacked] [--tokens 128] [--dir /scratch/folder]
 *
 * The checkpoints are written to --dir (default: a folder in the system temporary directory)
 * tensor by tensor and removed when their case is done.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { writeSafetensorsStreamed, type SafetensorsTensorSpec } from '../src/io/safetensors.js';
import { randomTensor } from './random-weights.js';
import { option as opt } from './cli-args.js';

interface Shape {
  modelType: 'llama' | 'qwen2';
  layers: number;
  hidden: number;
  intermediate: number;
  heads: number;
  kvHeads: number;
  vocab: number;
  tied: boolean;
  qkvBias: boolean;
  ropeTheta: number;
}

const SHAPES: Record<string, Shape> = {
  'qwen0.5b': { modelType: 'qwen2', layers: 24, hidden: 896, intermediate: 4864, heads: 14, kvHeads: 2, vocab: 151936, tied: true, qkvBias: true, ropeTheta: 1e6 },
  llama1b: { modelType: 'llama', layers: 16, hidden: 2048, intermediate: 8192, heads: 32, kvHeads: 8, vocab: 128256, tied: true, qkvBias: false, ropeTheta: 5e5 },
  llama3b: { modelType: 'llama', layers: 28, hidden: 3072, intermediate: 8192, heads: 24, kvHeads: 8, vocab: 128256, tied: true, qkvBias: false, ropeTheta: 5e5 },
};

function tensorsOf(s: Shape): { name: string; shape: number[]; kind: 'matrix' | 'ones' | 'bias' }[] {
  const headDim = s.hidden / s.heads;
  const kv = s.kvHeads * headDim;
  const out: { name: string; shape: number[]; kind: 'matrix' | 'ones' | 'bias' }[] = [{ name: 'model.embed_tokens.weight', shape: [s.vocab, s.hidden], kind: 'matrix' }];
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    out.push(
      { name: `${p}.input_layernorm.weight`, shape: [s.hidden], kind: 'ones' },
      { name: `${p}.self_attn.q_proj.weight`, shape: [s.hidden, s.hidden], kind: 'matrix' },
      { name: `${p}.self_attn.k_proj.weight`, shape: [kv, s.hidden], kind: 'matrix' },
      { name: `${p}.self_attn.v_proj.weight`, shape: [kv, s.hidden], kind: 'matrix' },
    );
    if (s.qkvBias) {
      out.push(
        { name: `${p}.self_attn.q_proj.bias`, shape: [s.hidden], kind: 'bias' },
        { name: `${p}.self_attn.k_proj.bias`, shape: [kv], kind: 'bias' },
        { name: `${p}.self_attn.v_proj.bias`, shape: [kv], kind: 'bias' },
      );
    }
    out.push(
      { name: `${p}.self_attn.o_proj.weight`, shape: [s.hidden, s.hidden], kind: 'matrix' },
      { name: `${p}.post_attention_layernorm.weight`, shape: [s.hidden], kind: 'ones' },
      { name: `${p}.mlp.gate_proj.weight`, shape: [s.intermediate, s.hidden], kind: 'matrix' },
      { name: `${p}.mlp.up_proj.weight`, shape: [s.intermediate, s.hidden], kind: 'matrix' },
      { name: `${p}.mlp.down_proj.weight`, shape: [s.hidden, s.intermediate], kind: 'matrix' },
    );
  }
  out.push({ name: 'model.norm.weight', shape: [s.hidden], kind: 'ones' });
  if (!s.tied) out.push({ name: 'lm_head.weight', shape: [s.vocab, s.hidden], kind: 'matrix' });
  return out;
}

/** Writes a random-weight checkpoint of shape `s` into `dir`, one tensor in memory at a time. */
async function writeCheckpoint(dir: string, s: Shape, dtype: 'F32' | 'BF16'): Promise<number> {
  mkdirSync(dir, { recursive: true });
  const list = tensorsOf(s);
  const specs: SafetensorsTensorSpec[] = list.map((t) => ({ name: t.name, dtype, shape: t.shape }));
  await writeSafetensorsStreamed(join(dir, 'model.safetensors'), specs, (_, i) => {
    const t = list[i]!;
    if (t.kind === 'ones') return new Float32Array(t.shape[0]!).fill(1);
    return randomTensor(t.shape, 1000 + i, t.kind === 'bias' ? 0.1 : 0.02).data;
  }, { format: 'pt' });
  const config: Record<string, unknown> = {
    architectures: [s.modelType === 'llama' ? 'LlamaForCausalLM' : 'Qwen2ForCausalLM'],
    model_type: s.modelType,
    hidden_size: s.hidden,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    vocab_size: s.vocab,
    hidden_act: 'silu',
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-6,
    rope_theta: s.ropeTheta,
    tie_word_embeddings: s.tied,
    torch_dtype: dtype === 'F32' ? 'float32' : 'bfloat16',
    bos_token_id: 1,
    eos_token_id: 2,
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  return list.reduce((n, t) => n + t.shape.reduce((a, b) => a * b, 1), 0);
}

interface Measured {
  seconds: number;
  /** Peak resident set (anonymous memory and mapped file pages), from the kernel. */
  peakGB: number;
  /**
   * Peak anonymous memory (RssAnon sampled every 20 ms from a worker thread): what cannot be given
   * back under pressure, unlike the pages of memory-mapped weight files, which the kernel drops
   * and reads again.
   */
  anonGB: number;
}

/** Samples RssAnon of this process every 20 ms on a worker thread (the main thread may be busy); returns a stop function giving the peak in bytes. */
function sampleAnon(): () => Promise<number> {
  const code = `
    const { readFileSync } = require('node:fs');
    const { parentPort } = require('node:worker_threads');
    let peak = 0;
    const read = () => { const m = /RssAnon:\\s+(\\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8')); if (m) peak = Math.max(peak, Number(m[1]) * 1024); };
    const timer = setInterval(read, 20);
    parentPort.on('message', () => { read(); clearInterval(timer); parentPort.postMessage(peak); });
  `;
  const worker = new Worker(code, { eval: true });
  return () => new Promise<number>((done) => {
    worker.once('message', (peak: number) => {
      void worker.terminate();
      done(peak);
    });
    worker.postMessage('stop');
  });
}

/** The child: opens the checkpoint with the code under `root` and traces `tokens` token ids once. */
async function child(root: string, modelDir: string, cacheDir: string, tokens: number): Promise<void> {
  const { loadModel } = (await import(pathToFileURL(join(root, 'src/engine/load.ts')).href)) as typeof import('../src/engine/load.js');
  const stop = sampleAnon();
  const start = performance.now();
  const model = await loadModel(modelDir, { graphCache: cacheDir });
  const vocab = model.config.int('vocab_size');
  const ids = Array.from({ length: tokens }, (_, i) => (i * 7919 + 13) % vocab);
  await model.trace(null, { ids });
  await model.dispose();
  const seconds = (performance.now() - start) / 1000;
  const peakGB = (process.resourceUsage().maxRSS * 1024) / 1e9;
  const anonGB = (await stop()) / 1e9;
  process.stdout.write(`${JSON.stringify({ seconds, peakGB, anonGB } satisfies Measured)}\n`);
}

function run(root: string, modelDir: string, cacheDir: string, tokens: number, env: Record<string, string>): Measured {
  const out = execFileSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'big-checkpoints.ts'), '--child', root, modelDir, cacheDir, String(tokens)], {
    cwd: root,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, ATTNSCOPE_CACHE_MAX: '100GB', ...env },
  });
  return JSON.parse(out.trim().split('\n').pop()!) as Measured;
}

function availableGB(): number {
  const line = execFileSync('free', ['-b'], { encoding: 'utf8' }).split('\n').find((l) => l.startsWith('Mem:'))!;
  return Number(line.trim().split(/\s+/)[6]) / 1e9;
}

const du = (dir: string): number => Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split(/\s/)[0]) / 1e9;

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--child') {
    await child(args[1]!, args[2]!, args[3]!, Number(args[4]));
    return;
  }
  const models = (opt('--models') ?? 'qwen0.5b,llama1b').split(',');
  const dtype = (opt('--dtype') ?? 'f32') === 'bf16' ? 'BF16' : 'F32';
  const base = opt('--base');
  const scratch = opt('--dir') ?? mkdtempSync(join(tmpdir(), 'attnscope-big-'));
  const traceTokens = Number(opt('--tokens') ?? 128);
  const only = opt('--only'); // 'before' or 'after': one side (e.g. to re-measure it)
  const here = resolve(import.meta.dirname, '..');
  // The old code last: it needs the most memory, so it waits for enough to be free (the machine may be shared).
  const roots = ([
    ['after', here, {}] as const,
    // --unpacked: also with onnxruntime's pre-packing off (weights stay memory-mapped).
    ...(args.includes('--unpacked') ? [['after, ATTNSCOPE_PACK_WEIGHTS=off', here, { ATTNSCOPE_PACK_WEIGHTS: 'off' }] as const] : []),
    ...(base ? [['before', resolve(base), {}] as const] : []),
  ] as [string, string, Record<string, string>][]).filter(([label]) => only === undefined || label.startsWith(only));
  console.log(`attnscope big checkpoints — ${dtype}, peak RSS per fresh process (GB = 1e9 bytes); ${new Date().toISOString()}`);
  console.log(`| shape | weights | code | prepare (first open + 1-token trace) | open again (cached) + 1 token | trace ${traceTokens} tokens (cached) | cache on disk |`);
  console.log('|---|---|---|---|---|---|---|');
  for (const name of models) {
    const shape = SHAPES[name];
    if (!shape) throw new Error(`unknown model ${name} (known: ${Object.keys(SHAPES).join(', ')})`);
    const dir = join(scratch, `ckpt-${name}-${dtype}`);
    try {
      const params = await writeCheckpoint(dir, shape, dtype);
      const weightsGB = (params * (dtype === 'F32' ? 4 : 2)) / 1e9;
      for (const [label, root, env] of roots) {
        const cache = join(scratch, `cache-${label.replace(/\W+/g, '-')}-${name}`);
        rmSync(cache, { recursive: true, force: true });
        try {
          const cells: string[] = [];
          for (const [tokens, what] of [[1, 'prepare'], [1, 'open'], [traceTokens, 'trace']] as const) {
            // Wait (up to 15 minutes) until what the old code needed at most (3× the float32 weights) is free.
            const need = label === 'before' ? 3 * params * 4 / 1e9 + 1 : 0;
            for (let waited = 0; availableGB() < need && waited < 900; waited += 10) execFileSync('sleep', ['10']);
            const free = availableGB();
            let m: Measured;
            try {
              m = run(root, dir, cache, tokens, env);
            } catch (e) {
              cells.push(`failed (${what}; ${free.toFixed(1)} GB were available): ${String((e as Error).message).split('\n')[0]!.slice(0, 80)}`);
              continue;
            }
            cells.push(`${m.peakGB.toFixed(2)} GB (anon ${m.anonGB.toFixed(2)}), ${m.seconds.toFixed(1)} s`);
          }
          console.log(`| ${name} (${(params / 1e9).toFixed(2)}B) | ${weightsGB.toFixed(2)} GB ${dtype} | ${label} | ${cells.join(' | ')} | ${du(cache).toFixed(2)} GB |`);
        } finally {
          rmSync(cache, { recursive: true, force: true });
        }
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  if (!opt('--dir')) rmSync(scratch, { recursive: true, force: true });
}

await main();
