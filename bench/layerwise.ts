/**
 * Layer-by-layer execution (issue 13.2): peak memory, total time and time to the first layer of a
 * deep random-weight model traced layer by layer (engine/layerwise.ts: one session per layer, each
 * layer's attention handed to a callback and dropped) against the whole graph in one run (every
 * layer's attention returned at once), at 1k and 2k tokens.
 *
 * The model is Llama-shaped (rotary, grouped-query attention) with 24 layers, hidden 512, 8 heads
 * (2 kv heads), FFN 1408, vocabulary 8192: deep enough that holding every layer's maps dominates
 * (2,048 tokens: 128 MB of attention per layer, 3 GB for all), small enough in weights (0.3 GB) for
 * the shared machine. Each case runs twice in its own process (cold: sessions created; warm); the
 * parent polls its resident memory and stops it above --limit GB (default 6).
 *
 *   npx tsx bench/layerwise.ts [--limit 6] [--cases whole:1024,layers:1024,...]
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { traceLayers } from '../src/engine/layerwise.js';
import { Model } from '../src/engine/model.js';
import { memoryWeightStore } from '../src/io/memory-weights.js';
import { ModelConfig } from '../src/models/config.js';
import { architectureFor } from '../src/models/registry.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { llamaWeights } from './random-weights.js';

const SHAPE = { layers: 24, hidden: 512, heads: 8, kv: 2, ffn: 1408, vocab: 8192 };

const DEFAULT_CASES = ['layers:1024', 'whole:1024', 'layers:2048', 'whole:2048'];

function model(): Model {
  const s = SHAPE;
  const config = new ModelConfig({
    model_type: 'llama', hidden_size: s.hidden, num_attention_heads: s.heads, num_key_value_heads: s.kv,
    num_hidden_layers: s.layers, intermediate_size: s.ffn, vocab_size: s.vocab, max_position_embeddings: 131072,
    rms_norm_eps: 1e-5, rope_theta: 500000, tie_word_embeddings: false, eos_token_id: -1,
  }, 'bench layerwise config');
  return new Model({ name: 'random-llama-24l', config, architecture: architectureFor('llama'), tokenizer: null, weights: memoryWeightStore(llamaWeights(SHAPE, 5)), runtime: nodeRuntime });
}

/** One case in this process (cold run, then warm run): prints one JSON line. */
async function runCase(spec: string): Promise<void> {
  const [mode, tokensText] = spec.split(':') as ['whole' | 'layers', string];
  const n = Number(tokensText);
  const m = model();
  const ids = Array.from({ length: n }, (_, i) => 2 + ((i * 7919) % (SHAPE.vocab - 2)));
  const runs: { totalMs: number; firstLayerMs: number; attentionMb: number }[] = [];
  for (let r = 0; r < 2; r++) {
    const t0 = performance.now();
    let first = 0;
    let bytes = 0;
    if (mode === 'whole') {
      const trace = await m.trace(null, { ids });
      first = performance.now() - t0; // every layer arrives at once
      for (const l of trace.attention.self!.layers) bytes += l.byteLength;
    } else {
      await traceLayers(m, null, { ids }, (layer) => {
        if (layer.index === 0) first = performance.now() - t0;
        const a = layer.outputs[`attention.self.${layer.layers[0]?.layer ?? 0}`];
        if (a) bytes += a.data.byteLength; // handed out, then dropped
      });
    }
    runs.push({ totalMs: performance.now() - t0, firstLayerMs: first, attentionMb: bytes / 2 ** 20 });
  }
  await m.dispose();
  process.stdout.write(`${JSON.stringify({ spec, cold: runs[0], warm: runs[1], peakMb: process.resourceUsage().maxRSS / 1024 })}\n`);
}

/** Runs a case in a child process, polling its memory; stops it above `limitMb`. */
function spawnCase(spec: string, limitMb: number): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--case', spec], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let peak = 0;
    let killed = false;
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setInterval(() => {
      try {
        const mm = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        const mb = mm ? Number(mm[1]) / 1024 : 0;
        peak = Math.max(peak, mb);
        if (mb > limitMb && !killed) {
          killed = true;
          child.kill('SIGKILL');
        }
      } catch {
        // The process has ended.
      }
    }, 50);
    child.on('exit', () => {
      clearInterval(timer);
      const line = out.trim().split('\n').pop();
      resolve(killed || !line ? { spec, stopped: `above ${limitMb} MB (stopped at ${peak.toFixed(0)} MB)` } : { ...(JSON.parse(line) as Record<string, unknown>), polledPeakMb: peak });
    });
  });
}

type Run = { totalMs: number; firstLayerMs: number; attentionMb: number };
const s1 = (x: number): string => (x / 1000).toFixed(x < 10_000 ? 2 : 1);

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const at = (flag: string): string | undefined => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const one = at('--case');
  if (one) return runCase(one);
  const limitMb = Number(at('--limit') ?? 6) * 1024;
  const cases = (at('--cases') ?? DEFAULT_CASES.join(',')).split(',');
  const s = SHAPE;
  console.log(`attnscope layer by layer — random Llama-shaped model: ${s.layers} layers, hidden ${s.hidden}, ${s.heads}/${s.kv} heads, FFN ${s.ffn}, vocabulary ${s.vocab}`);
  console.log(`machine: ${os.cpus()[0]?.model ?? 'unknown CPU'}, ${os.availableParallelism()} cores, Node ${process.version}; each case in its own process (cold run, then warm run), stopped above ${limitMb / 1024} GB`);
  console.log('| case | peak RSS MB | attention MB (all layers) | first layer s (cold / warm) | whole trace s (cold / warm) |');
  console.log('| --- | --: | --: | --: | --: |');
  for (const spec of cases) {
    const r = await spawnCase(spec, limitMb);
    if (r.stopped) {
      console.log(`| ${spec} | ${r.stopped as string} | | | |`);
      continue;
    }
    const cold = r.cold as Run;
    const warm = r.warm as Run;
    console.log(`| ${spec} | ${(r.polledPeakMb as number).toFixed(0)} | ${warm.attentionMb.toFixed(0)} | ${s1(cold.firstLayerMs)} / ${s1(warm.firstLayerMs)} | ${s1(cold.totalMs)} / ${s1(warm.totalMs)} |`);
  }
}

await main();
