/**
 * Long contexts against PyTorch, side by side in one run (issue 13, point 4): for each case, the
 * time of one forward pass that records every layer's attention and the peak resident memory of
 * the process, for attnscope and for a PyTorch eager reference (bench/pytorch/eager_attention.py:
 * transformers' eager ops with output_attentions=True, mirrored, not transformers itself), on
 * random-weight checkpoints of real shapes: bert-base 8–512 tokens, gpt2-small up to 1,024, a
 * Llama-3.2-1B shape at 128, 512, 2,048 and 8,192, a Qwen2.5-0.5B shape at 2,048, 8,192 and 32,768.
 *
 * attnscope runs as `attnscope trace` does by default (engine/layerwise.ts traceModel):
 * `--attention auto` (dense probabilities while they take at most 1 GiB, else attention on demand:
 * queries, keys and score terms; engine/attention-mode.ts) and `--execution auto` (the whole graph
 * up to that threshold, layer by layer above it, each layer's weights read as it runs). The trace
 * is kept whole until the run ends, as a caller holds it (`--write` also writes it). `--modes`:
 * `whole` / `layers` force the execution, `dense` / `on-demand` the attention (see MODES).
 *
 * Each side runs in a child process of its own, one at a time, niced; the child reports its peak
 * resident set (VmHWM: weights included, and for attnscope the pages of its memory-mapped graph
 * cache) and the parent polls its VmRSS, stopping it above --limit GB. PyTorch runs where
 * `python3 -c "import torch"` works (python3, else /usr/bin/python3) and where its predicted peak
 * (weights + every layer's probabilities + the softmax's intermediates) is under --limit; else the
 * issue's recorded figures are printed, marked as recorded. Timed: the forward pass after the model
 * is open and warmed up on 8 tokens (attnscope: with the session of the mode the case uses);
 * median of 3 runs for the short cases (n × hidden ≤ 512 × 768), one run above. Each side's
 * result is also printed as JSON on stderr, with `forward_cpu_s` (the process's CPU per timed run,
 * every thread: a figure less bent by a shared machine's load than the wall time).
 *
 *   npm run bench:long [-- --only bert,gpt2|llama1b:2048,...] [--max-length 2048] [--modes auto,layers]
 *                      [--limit 8] [--no-pytorch] [--dir /scratch/folder (kept: checkpoints and caches reused)]
 *                      [--layers k (each shape cut to its first k layers)] [--nice n (default 10)]
 *                      [--write (each attnscope trace also written as a .safetensors file, timed; deleted after)]
 *                      [--progress (the time and memory after each layer, on stderr)]
 *                      [--runs k (each side times k forward passes and reports their median; default 3 where
 *                       n × hidden ≤ 512 × 768, else 1)]
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Trace } from '../src/core/trace.js';
import { checkAttentionMode, onDemandBands, resolveAttentionMode } from '../src/engine/attention-mode.js';
import { autoExecution, checkExecutionMode, traceModel } from '../src/engine/layerwise.js';
import { loadModel } from '../src/engine/load.js';
import { writeSafetensorsStreamed, type SafetensorsTensorSpec } from '../src/io/safetensors.js';
import { randomTensor } from './random-weights.js';
import { caseIds, loadAverage as load, option as opt } from './cli-args.js';
import { timeTraceWrite } from './measure.js';

type Family = 'bert' | 'gpt2' | 'llama' | 'qwen2';

/**
 * --modes: auto = as `attnscope trace` runs by default (attention auto, execution auto); whole /
 * layers = attention auto, the whole graph / layer by layer; dense / on-demand = that attention,
 * execution auto.
 */
const MODES = ['auto', 'whole', 'layers', 'dense', 'on-demand'];

interface Shape {
  family: Family;
  label: string;
  /** config.json as the Hub has it (the fields the shape needs). */
  config: Record<string, unknown>;
  /** What `--attention auto` is run as (a cut-down shape runs as its whole model would: on demand at 2,048). */
  autoAs?: 'on-demand';
}

/** The real shapes (bert-base-uncased, gpt2, Llama-3.2-1B, Qwen2.5-0.5B); weights are random. */
const SHAPES: Record<string, Shape> = {
  bert: {
    family: 'bert', label: 'bert-base',
    config: { model_type: 'bert', architectures: ['BertModel'], vocab_size: 30522, hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072, hidden_act: 'gelu', max_position_embeddings: 512, type_vocab_size: 2, layer_norm_eps: 1e-12, position_embedding_type: 'absolute', torch_dtype: 'float32' },
  },
  gpt2: {
    family: 'gpt2', label: 'gpt2-small',
    config: { model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], vocab_size: 50257, n_embd: 768, n_layer: 12, n_head: 12, n_positions: 1024, n_inner: null, activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, scale_attn_weights: true, bos_token_id: 50256, eos_token_id: 50256, torch_dtype: 'float32' },
  },
  llama1b: {
    family: 'llama', label: 'Llama-3.2-1B shape',
    config: { model_type: 'llama', architectures: ['LlamaForCausalLM'], vocab_size: 128256, hidden_size: 2048, intermediate_size: 8192, num_hidden_layers: 16, num_attention_heads: 32, num_key_value_heads: 8, hidden_act: 'silu', max_position_embeddings: 131072, rms_norm_eps: 1e-5, rope_theta: 500000.0, tie_word_embeddings: true, attention_bias: false, bos_token_id: 128000, eos_token_id: 128001, torch_dtype: 'float32' },
  },
  'qwen0.5b': {
    family: 'qwen2', label: 'Qwen2.5-0.5B shape',
    config: { model_type: 'qwen2', architectures: ['Qwen2ForCausalLM'], vocab_size: 151936, hidden_size: 896, intermediate_size: 4864, num_hidden_layers: 24, num_attention_heads: 14, num_key_value_heads: 2, hidden_act: 'silu', max_position_embeddings: 32768, rms_norm_eps: 1e-6, rope_theta: 1000000.0, tie_word_embeddings: true, use_sliding_window: false, sliding_window: 32768, bos_token_id: 151643, eos_token_id: 151643, torch_dtype: 'float32' },
  },
};

/**
 * The same shapes cut to their first 2 layers: at 2,048 tokens PyTorch fits them (its whole models
 * need 14–23 GB there), so the ratio of the time per layer is measured in this run, not taken from
 * a figure recorded under another load.
 */
for (const name of ['llama1b', 'qwen0.5b']) {
  const s = SHAPES[name]!;
  SHAPES[`${name}-2l`] = { ...s, label: `${s.label}, 2 of its ${String(s.config.num_hidden_layers)} layers`, config: { ...s.config, num_hidden_layers: 2 }, autoAs: 'on-demand' };
}

const CASES: [string, number][] = [
  ...[8, 32, 128, 512].map((n) => ['bert', n] as [string, number]),
  ...[8, 128, 512, 1024].map((n) => ['gpt2', n] as [string, number]),
  ...[128, 512].map((n) => ['llama1b', n] as [string, number]),
  ['llama1b-2l', 2048],
  ...[2048, 8192].map((n) => ['llama1b', n] as [string, number]),
  ['qwen0.5b-2l', 2048],
  ...[2048, 8192, 32768].map((n) => ['qwen0.5b', n] as [string, number]),
];

/**
 * PyTorch figures recorded in issue 13 on this machine (Debian's python3-torch 1.13, OpenBLAS,
 * eager, output_attentions=True) for cases whose PyTorch peak is far beyond a shared machine's budget.
 */
const RECORDED: Record<string, { seconds: number; peakGB: number; note: string }> = {
  'llama1b:2048': { seconds: 77, peakGB: 23, note: 'recorded in issue 13 (not measured in this run); the issue also gives 13.4 GB RSS for the attention alone' },
  'qwen0.5b:2048': { seconds: 36, peakGB: 13.7, note: 'recorded in issue 13 (not measured in this run)' },
};

// --- random-weight checkpoints ---------------------------------------------------------------

interface TensorSpec { name: string; shape: number[]; kind: 'matrix' | 'ones' | 'zeros' | 'embedding' }

function tensorsOf(s: Shape): TensorSpec[] {
  const c = s.config;
  const t: TensorSpec[] = [];
  const m = (name: string, shape: number[]): void => void t.push({ name, shape, kind: 'matrix' });
  const ones = (name: string, n: number): void => void t.push({ name, shape: [n], kind: 'ones' });
  const zeros = (name: string, n: number): void => void t.push({ name, shape: [n], kind: 'zeros' });
  if (s.family === 'bert') {
    const d = c.hidden_size as number;
    const f = c.intermediate_size as number;
    m('bert.embeddings.word_embeddings.weight', [c.vocab_size as number, d]);
    m('bert.embeddings.position_embeddings.weight', [c.max_position_embeddings as number, d]);
    m('bert.embeddings.token_type_embeddings.weight', [c.type_vocab_size as number, d]);
    ones('bert.embeddings.LayerNorm.weight', d);
    zeros('bert.embeddings.LayerNorm.bias', d);
    for (let l = 0; l < (c.num_hidden_layers as number); l++) {
      const p = `bert.encoder.layer.${l}`;
      for (const x of ['query', 'key', 'value']) { m(`${p}.attention.self.${x}.weight`, [d, d]); zeros(`${p}.attention.self.${x}.bias`, d); }
      m(`${p}.attention.output.dense.weight`, [d, d]); zeros(`${p}.attention.output.dense.bias`, d);
      ones(`${p}.attention.output.LayerNorm.weight`, d); zeros(`${p}.attention.output.LayerNorm.bias`, d);
      m(`${p}.intermediate.dense.weight`, [f, d]); zeros(`${p}.intermediate.dense.bias`, f);
      m(`${p}.output.dense.weight`, [d, f]); zeros(`${p}.output.dense.bias`, d);
      ones(`${p}.output.LayerNorm.weight`, d); zeros(`${p}.output.LayerNorm.bias`, d);
    }
    m('bert.pooler.dense.weight', [d, d]); zeros('bert.pooler.dense.bias', d);
  } else if (s.family === 'gpt2') {
    const d = c.n_embd as number;
    m('transformer.wte.weight', [c.vocab_size as number, d]);
    m('transformer.wpe.weight', [c.n_positions as number, d]);
    for (let l = 0; l < (c.n_layer as number); l++) {
      const p = `transformer.h.${l}`;
      ones(`${p}.ln_1.weight`, d); zeros(`${p}.ln_1.bias`, d);
      m(`${p}.attn.c_attn.weight`, [d, 3 * d]); zeros(`${p}.attn.c_attn.bias`, 3 * d);
      m(`${p}.attn.c_proj.weight`, [d, d]); zeros(`${p}.attn.c_proj.bias`, d);
      ones(`${p}.ln_2.weight`, d); zeros(`${p}.ln_2.bias`, d);
      m(`${p}.mlp.c_fc.weight`, [d, 4 * d]); zeros(`${p}.mlp.c_fc.bias`, 4 * d);
      m(`${p}.mlp.c_proj.weight`, [4 * d, d]); zeros(`${p}.mlp.c_proj.bias`, d);
    }
    ones('transformer.ln_f.weight', d); zeros('transformer.ln_f.bias', d);
  } else {
    const d = c.hidden_size as number;
    const f = c.intermediate_size as number;
    const kv = ((c.num_key_value_heads as number) * d) / (c.num_attention_heads as number);
    m('model.embed_tokens.weight', [c.vocab_size as number, d]);
    for (let l = 0; l < (c.num_hidden_layers as number); l++) {
      const p = `model.layers.${l}`;
      ones(`${p}.input_layernorm.weight`, d);
      m(`${p}.self_attn.q_proj.weight`, [d, d]);
      m(`${p}.self_attn.k_proj.weight`, [kv, d]);
      m(`${p}.self_attn.v_proj.weight`, [kv, d]);
      if (s.family === 'qwen2') { zeros(`${p}.self_attn.q_proj.bias`, d); zeros(`${p}.self_attn.k_proj.bias`, kv); zeros(`${p}.self_attn.v_proj.bias`, kv); }
      m(`${p}.self_attn.o_proj.weight`, [d, d]);
      ones(`${p}.post_attention_layernorm.weight`, d);
      m(`${p}.mlp.gate_proj.weight`, [f, d]);
      m(`${p}.mlp.up_proj.weight`, [f, d]);
      m(`${p}.mlp.down_proj.weight`, [d, f]);
    }
    ones('model.norm.weight', d);
  }
  return t;
}

/** Writes `s`'s random-weight checkpoint into `dir` (one tensor in memory at a time) unless it is there. */
async function ensureCheckpoint(dir: string, s: Shape): Promise<void> {
  if (existsSync(join(dir, 'config.json'))) return;
  mkdirSync(dir, { recursive: true });
  const list = tensorsOf(s);
  const specs: SafetensorsTensorSpec[] = list.map((t) => ({ name: t.name, dtype: 'F32', shape: t.shape }));
  await writeSafetensorsStreamed(join(dir, 'model.safetensors'), specs, (_, i) => {
    const t = list[i]!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.kind === 'ones') return new Float32Array(n).fill(1);
    if (t.kind === 'zeros') return new Float32Array(n);
    return randomTensor(t.shape, 1000 + i, 0.02).data;
  }, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), JSON.stringify(s.config, null, 2)); // last: marks the checkpoint complete
}

// --- the children ----------------------------------------------------------------------------

const status = (field: string): number => {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
};

/**
 * attnscope child: opens the checkpoint, warms up on 8 tokens as the case runs, times `runs` traces
 * of `n` tokens with `traceModel` (what `attnscope trace` runs) recording attention as `attention`
 * says and running as `execution` says (the mode 'auto' resolves for n tokens; the warm-up runs the
 * same, so the timed run opens no session of its own). The trace is kept whole (every layer's
 * queries and keys, as a trace's caller holds them); with `write`, it is then written as a
 * `.safetensors` trace file next to the cache (timed apart, deleted after).
 */
async function attnscopeChild(modelDir: string, cacheDir: string, n: number, attentionOption: string, executionOption: string, runs: number, write: boolean): Promise<void> {
  const t0 = performance.now();
  const model = await loadModel(modelDir, { graphCache: cacheDir });
  const vocab = model.config.int('vocab_size');
  const ids = caseIds(n, vocab);
  const attention = checkAttentionMode(attentionOption) as 'auto' | 'dense' | 'on-demand';
  const resolved = resolveAttentionMode(attention, model.architectureInfo, n);
  const execution = checkExecutionMode(executionOption) === 'auto' ? autoExecution(model, n, { dense: resolved === 'dense' }) : (executionOption as 'whole' | 'layers');
  // On demand the graph's bands of query rows grow with the length: the warm-up on 8 tokens runs the
  // session of n tokens (same band count), so the timed run neither builds nor holds a second one.
  const bands = resolved === 'on-demand' ? onDemandBands(model.architectureInfo, n) : undefined;
  let trace: Trace | undefined;
  const once = async (tokens: number[]): Promise<{ firstLayer: number }> => {
    const t = performance.now();
    let firstLayer = 0;
    trace = undefined; // the previous run's trace is let go before this one runs
    const options = { ids: tokens, attention: resolved === 'none' ? false : resolved, execution, ...(bands ? { queryBandCount: bands } : {}) };
    trace = (await traceModel(model, null, {
      ...options,
      onLayer: (layer) => {
        if (layer.index === 0) firstLayer = performance.now() - t;
        // --progress: the parent passes these lines on (where the memory goes, layer by layer).
        process.stderr.write(`progress: ${tokens.length} tokens, segment ${layer.index + 1}/${layer.count} at ${((performance.now() - t) / 1000).toFixed(1)} s (run ${(layer.ms.run / 1000).toFixed(1)} s), RSS ${(status('VmRSS') / 1024).toFixed(2)} GiB, anon ${(status('RssAnon') / 1024).toFixed(2)} GiB\n`);
      },
    })).trace;
    return { firstLayer };
  };
  await once(ids.slice(0, 8)); // opens (and the first time prepares) the sessions of this mode
  const openS = (performance.now() - t0) / 1000;
  const rssOpenMb = status('VmRSS');
  const peakOpenMb = status('VmHWM');
  const times: number[] = [];
  const firsts: number[] = [];
  const cpu0 = process.cpuUsage();
  for (let r = 0; r < runs; r++) {
    const t = performance.now();
    const { firstLayer } = await once(ids);
    times.push((performance.now() - t) / 1000);
    firsts.push(firstLayer / 1000);
  }
  const cpuRuns = process.cpuUsage(cpu0);
  const peakRunMb = status('VmHWM');
  let written: { write_s: number; file_mb: number } | undefined;
  if (write && trace) {
    const w = await timeTraceWrite(trace, dirname(cacheDir));
    written = { write_s: w.writeMs / 1000, file_mb: w.fileMb };
  }
  const queries = trace?.queries ? Object.values(trace.queries).reduce((a, st) => a + st.layers.reduce((b, l) => b + l.byteLength, 0), 0) : 0;
  const keys = trace?.keys ? Object.values(trace.keys).reduce((a, st) => a + st.layers.reduce((b, l) => b + l.byteLength, 0), 0) : 0;
  trace = undefined;
  await model.dispose();
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  process.stdout.write(`${JSON.stringify({ forward_s: median(times), forward_all_s: times, forward_cpu_s: (cpuRuns.user + cpuRuns.system) / 1e6 / runs, first_layer_s: execution === 'layers' ? median(firsts) : undefined, open_s: openS, mode: resolved, execution, bands, peak_rss_mb: status('VmHWM'), peak_run_mb: peakRunMb, rss_open_mb: rssOpenMb, peak_open_mb: peakOpenMb, qk_mb: (queries + keys) / 2 ** 20, cpu_s: process.cpuUsage().user / 1e6 + process.cpuUsage().system / 1e6, ...written })}\n`);
}

// --- the parent ------------------------------------------------------------------------------

interface ChildResult { ok: true; result: Record<string, unknown> }
interface ChildFailed { ok: false; why: string }

/** --progress: pass the attnscope child's per-layer progress lines on to stderr. */
const progress = process.argv.includes('--progress');

/** The children's niceness (--nice; default 10: the bench yields to interactive work). */
const niceness = Number(opt('--nice') ?? 10);

/** Runs `cmd args` niced, polling its VmRSS every 100 ms; stops it above `limitMb`. */
function runChild(cmd: string, args: string[], limitMb: number, env: NodeJS.ProcessEnv = process.env): Promise<ChildResult | ChildFailed> {
  return new Promise((resolve) => {
    const child = spawn('nice', ['-n', String(niceness), cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    let err = '';
    let polled = 0;
    let stopped = false;
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => {
      err = (err + d.toString()).slice(-4000);
      if (progress) for (const line of d.toString().split('\n')) if (line.startsWith('progress: ')) console.error(`${new Date().toISOString().slice(11, 19)} ${line}`);
    });
    const timer = setInterval(() => {
      try {
        const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        const mb = m ? Number(m[1]) / 1024 : 0;
        polled = Math.max(polled, mb);
        if (mb > limitMb && !stopped) {
          stopped = true;
          child.kill('SIGKILL');
        }
      } catch {
        // ended
      }
    }, 100);
    child.on('exit', (code) => {
      clearInterval(timer);
      const line = out.trim().split('\n').pop();
      if (stopped) resolve({ ok: false, why: `stopped above ${(limitMb / 1024).toFixed(1)} GB` });
      else if (code !== 0 || !line) resolve({ ok: false, why: `failed (exit ${code}): ${err.trim().split('\n').pop()?.slice(0, 120) ?? ''}` });
      else resolve({ ok: true, result: { ...(JSON.parse(line) as Record<string, unknown>), polled_rss_mb: polled } });
    });
  });
}

/** A python3 that imports torch, or undefined. */
function findPython(): string | undefined {
  for (const py of ['python3', '/usr/bin/python3']) {
    try {
      execFileSync(py, ['-c', 'import torch'], { stdio: 'ignore' });
      return py;
    } catch {
      // next
    }
  }
  return undefined;
}

const layersOf = (c: Record<string, unknown>): number => (c.num_hidden_layers ?? c.n_layer) as number;
const headsOf = (c: Record<string, unknown>): number => (c.num_attention_heads ?? c.n_head) as number;

/** What PyTorch eager is expected to hold at its peak (MB): weights, every layer's probabilities, three [heads, n, n] intermediates and the mask. */
function pytorchPeakMb(s: Shape, n: number): number {
  const weights = tensorsOf(s).reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0) * 4;
  const map = headsOf(s.config) * n * n * 4;
  return (weights + (layersOf(s.config) + 3) * map + n * n * 4) / 2 ** 20 + 400;
}

const gb = (mb: unknown): string => (typeof mb === 'number' ? (mb / 1000 * 2 ** 20 / 1e6).toFixed(2) : '–');
const sec = (s: unknown): string => (typeof s === 'number' ? (s < 10 ? s.toFixed(2) : s.toFixed(1)) : '–');

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  if (args[0] === '--child') {
    await attnscopeChild(args[1]!, args[2]!, Number(args[3]), args[4]!, args[5]!, Number(args[6]), args[7] === 'write');
    return;
  }
  const only = opt('--only')?.split(',');
  const maxLength = Number(opt('--max-length') ?? Infinity);
  const limitMb = Number(opt('--limit') ?? 8) * 1e9 / 2 ** 20;
  const modes = (opt('--modes') ?? 'auto').split(',');
  for (const m of modes) if (!MODES.includes(m)) throw new Error(`--modes: '${m}' (allowed: ${MODES.join(', ')})`);
  const write = args.includes('--write');
  const python = args.includes('--no-pytorch') ? undefined : findPython();
  const kept = opt('--dir');
  const runsOption = opt('--runs');
  const runsForced = runsOption === undefined ? undefined : Number(runsOption);
  if (runsForced !== undefined && !(Number.isInteger(runsForced) && runsForced >= 1)) throw new Error(`--runs: '${runsOption}' (allowed: a whole number of runs, 1 or more)`);
  const layersOption = opt('--layers');
  const layersCut = layersOption === undefined ? undefined : Number(layersOption);
  if (layersCut !== undefined && !(Number.isInteger(layersCut) && layersCut >= 1)) throw new Error(`--layers: '${layersOption}' (allowed: a whole number of layers, 1 or more)`);
  const scratch = kept ?? mkdtempSync(join(os.tmpdir(), 'attnscope-bench-long-'));
  const cases = CASES.filter(([name, n]) => n <= maxLength && (!only || only.some((o) => o === name || o === `${name}:${n}`)));
  if (cases.length === 0) throw new Error(`no case left (--only ${only?.join(',')}, --max-length ${maxLength}); cases: ${CASES.map(([a, n]) => `${a}:${n}`).join(', ')}`);
  console.log(`attnscope vs PyTorch eager (output_attentions=True), random weights of real shapes — ${new Date().toISOString()}`);
  console.log(`machine: ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; Node ${process.version}; PyTorch: ${python ? execFileSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' }).trim() + ` (${python})` : 'not available (recorded figures only)'}`);
  console.log(`each side a niced child process, one at a time, stopped above ${(limitMb * 2 ** 20 / 1e9).toFixed(1)} GB; time = one forward pass after warm-up (${runsForced !== undefined ? `median of ${runsForced}` : 'median of 3 where n × hidden ≤ 512 × 768'}); peak = the child's VmHWM (GB = 1e9 bytes)`);
  console.log('');
  console.log('| model | tokens | attnscope mode | attnscope s | attnscope peak GB | PyTorch s | PyTorch peak GB | time ratio (attnscope / PyTorch) | load |');
  console.log('| --- | --: | --- | --: | --: | --: | --: | --: | --- |');
  try {
    for (const [name, n] of cases) {
      const full = SHAPES[name]!;
      // --layers k: the shape cut to its first k layers (a long case that cannot finish in the time at hand).
      const cut = layersCut !== undefined && layersCut < layersOf(full.config) ? layersCut : undefined;
      const shape: Shape = cut === undefined ? full : { ...full, label: `${full.label}, **${cut} of its ${layersOf(full.config)} layers**`, config: { ...full.config, num_hidden_layers: cut }, autoAs: 'on-demand' };
      const id = cut === undefined ? name : `${name}-${cut}l`;
      const dir = join(scratch, `ckpt-${id}`);
      await ensureCheckpoint(dir, shape);
      // Median of 3 for the short cases (up to bert/gpt2 at 512 tokens: n × hidden ≤ 512 × 768), one run above.
      const runs = runsForced ?? (n * ((shape.config.hidden_size ?? shape.config.n_embd) as number) <= 512 * 768 ? 3 : 1);
      const loadBefore = load();
      // PyTorch first: its figure does not depend on attnscope's graph cache being warm.
      let torchCell = ['–', '–'];
      let torchSeconds: number | undefined;
      let torchNote = '';
      const predicted = pytorchPeakMb(shape, n);
      const recorded = RECORDED[`${name}:${n}`];
      if (python && predicted < limitMb) {
        const r = await runChild(python, [join(import.meta.dirname, 'pytorch', 'eager_attention.py'), '--config', JSON.stringify(shape.config), '--tokens', String(n), '--runs', String(runs)], limitMb);
        if (r.ok) {
          console.error(`${id}:${n} PyTorch: ${JSON.stringify(r.result)}`);
          torchSeconds = r.result.forward_s as number;
          torchCell = [sec(torchSeconds), gb(r.result.peak_rss_mb)];
        } else torchCell = [r.why, '–'];
      } else if (recorded) {
        torchSeconds = recorded.seconds;
        torchCell = [`${recorded.seconds} (recorded)`, `${recorded.peakGB} (recorded)`];
        torchNote = recorded.note;
      } else {
        torchCell = ['not run', `needs ≈ ${(predicted * 2 ** 20 / 1e9).toFixed(0)} (predicted)`];
      }
      for (const mode of modes) {
        if (mode === 'layers' && n < 512) continue; // layer by layer serves long inputs
        // A cut shape runs as its whole model would at this length: on demand, layer by layer.
        const attention = mode === 'dense' || mode === 'on-demand' ? mode : shape.autoAs ?? 'auto';
        const execution = mode === 'whole' || mode === 'layers' ? mode : mode === 'auto' && shape.autoAs ? 'layers' : 'auto';
        const r = await runChild(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', dir, join(scratch, `cache-${id}`), String(n), attention, execution, String(runs), write ? 'write' : 'no-write'], limitMb, { ...process.env, ATTNSCOPE_CACHE_MAX: '200GB' });
        const how = r.ok ? `${String(r.result.mode)}${r.result.bands ? `, ${String(r.result.bands)} bands` : ''}, ${r.result.execution === 'layers' ? `layer by layer (first layer ${sec(r.result.first_layer_s)} s)` : 'whole graph'}` : '?';
        const label = `${how} (${mode}${mode === 'auto' && shape.autoAs ? ', as auto runs the whole model' : ''})${r.ok && r.result.write_s !== undefined ? `; trace file ${(Number(r.result.file_mb) / 1024).toFixed(2)} GiB written in ${sec(r.result.write_s)} s` : ''}`;
        const ours = r.ok ? r.result.forward_s as number : undefined;
        if (r.ok) console.error(`${id}:${n} ${mode}: ${JSON.stringify(r.result)}`);
        // Only against a figure measured in this run (a recorded one was taken under another load).
        const ratio = ours !== undefined && torchSeconds !== undefined && !torchNote ? `${(ours / torchSeconds).toFixed(2)}×` : '–';
        console.log(`| ${shape.label} | ${n} | ${label} | ${r.ok ? sec(ours) : r.why} | ${r.ok ? gb(r.result.peak_rss_mb) : '–'} | ${torchCell[0]} | ${torchCell[1]} | ${ratio} | ${loadBefore} → ${load()} |`);
      }
      if (torchNote) console.log(`|  | | PyTorch: ${torchNote} | | | | | | |`);
    }
  } finally {
    if (!kept) rmSync(scratch, { recursive: true, force: true });
  }
}

await main();
