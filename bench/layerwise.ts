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
 * Cases: `whole:N` (the whole graph), `layers:N` (layer by layer, a stack's middle layers on one
 * shared session) and `unshared:N` (layer by layer with a session per segment, as before the
 * shared sessions).
 *
 * `--app`: keystroke → first layer on screen in Chromium for a Llama-3.2-1B shape (16 layers,
 * hidden 2048, 32/8 heads, FFN 8192, vocabulary 128256; random float16 weights (tiled from 2^20
 * random normal values) written once into
 * --dir with bench/random-weights.ts, the stories260k fixture's tokenizer) at --tokens (2,048):
 * the real server (limits raised), the built app (npm run build), a warm model (a first text
 * traced before), then the last character of a new text typed; the app's marks give the first
 * layer drawn and the whole model in. The trace streams on demand, q/k first.
 *
 *   npx tsx bench/layerwise.ts [--limit 6] [--cases whole:1024,layers:1024,...]
 *   npm run build && npx tsx bench/layerwise.ts --app [--dir /scratch/llama1b] [--tokens 2048] [--runs 3]
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { loadModel } from '../src/engine/load.js';
import { toStorage16 } from '../src/graph/builder.js';
import { writeSafetensorsStreamed } from '../src/io/safetensors.js';
import { startServer } from '../src/server/serve.js';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { traceLayers } from '../src/engine/layerwise.js';
import { Model } from '../src/engine/model.js';
import { memoryWeightStore } from '../src/io/memory-weights.js';
import { ModelConfig } from '../src/models/config.js';
import { architectureFor } from '../src/models/registry.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { llamaWeights, randomTensor } from './random-weights.js';
import { spawnCase } from './child-case.js';
import { caseOptions, loadAverage, machineLine, option } from './cli-args.js';
import { peakMb } from './measure.js';

const SHAPE = { layers: 24, hidden: 512, heads: 8, kv: 2, ffn: 1408, vocab: 8192 };

const DEFAULT_CASES = ['unshared:1024', 'layers:1024', 'whole:1024', 'layers:2048', 'whole:2048'];

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
  const [mode, tokensText] = spec.split(':') as ['whole' | 'layers' | 'unshared', string];
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
      await traceLayers(m, null, { ids, shareSessions: mode === 'layers' }, (layer) => {
        if (layer.index === 0) first = performance.now() - t0;
        const a = layer.outputs[`attention.self.${layer.layers[0]?.layer ?? 0}`];
        if (a) bytes += a.data.byteLength; // handed out, then dropped
      });
    }
    runs.push({ totalMs: performance.now() - t0, firstLayerMs: first, attentionMb: bytes / 2 ** 20 });
  }
  await m.dispose();
  process.stdout.write(`${JSON.stringify({ spec, cold: runs[0], warm: runs[1], peakMb: peakMb() })}\n`);
}


type Run = { totalMs: number; firstLayerMs: number; attentionMb: number };
const s1 = (x: number): string => (x / 1000).toFixed(x < 10_000 ? 2 : 1);

async function main(): Promise<void> {
  const { one, limitMb, cases } = caseOptions(DEFAULT_CASES);
  if (one) return runCase(one);
  if (process.argv.includes('--app')) return appBench(option('--dir'), Number(option('--tokens') ?? 2048), Number(option('--runs') ?? 3));
  const s = SHAPE;
  console.log(`attnscope layer by layer — random Llama-shaped model: ${s.layers} layers, hidden ${s.hidden}, ${s.heads}/${s.kv} heads, FFN ${s.ffn}, vocabulary ${s.vocab}`);
  console.log(`${machineLine()}; each case in its own process (cold run, then warm run), stopped above ${limitMb / 1024} GB`);
  console.log('| case | peak RSS MB | attention MB (all layers) | first layer s (cold / warm) | whole trace s (cold / warm) |');
  console.log('| --- | --: | --: | --: | --: |');
  for (const spec of cases) {
    const r = await spawnCase(import.meta.url, spec, limitMb);
    if (r.stopped) {
      console.log(`| ${spec} | ${r.stopped as string} | | | |`);
      continue;
    }
    const cold = r.cold as Run;
    const warm = r.warm as Run;
    console.log(`| ${spec} | ${(r.polledPeakMb as number).toFixed(0)} | ${warm.attentionMb.toFixed(0)} | ${s1(cold.firstLayerMs)} / ${s1(warm.firstLayerMs)} | ${s1(cold.totalMs)} / ${s1(warm.totalMs)} |`);
  }
}

/** The Llama-3.2-1B shape of the app bench. */
const APP_SHAPE = { layers: 16, hidden: 2048, heads: 32, kv: 8, ffn: 8192, vocab: 128256 };

/** Writes the 1B-shaped random checkpoint (float16, tensor by tensor) with the stories260k tokenizer, unless `dir` has it. */
async function ensureAppCheckpoint(dir: string): Promise<void> {
  if (existsSync(join(dir, 'config.json'))) return;
  mkdirSync(dir, { recursive: true });
  const s = APP_SHAPE;
  const headDim = s.hidden / s.heads;
  const list: { name: string; shape: number[]; fill?: number; std?: number }[] = [{ name: 'model.embed_tokens.weight', shape: [s.vocab, s.hidden], std: 1 }, { name: 'model.norm.weight', shape: [s.hidden], fill: 1 }];
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    list.push(
      { name: `${p}.input_layernorm.weight`, shape: [s.hidden], fill: 1 },
      { name: `${p}.post_attention_layernorm.weight`, shape: [s.hidden], fill: 1 },
      { name: `${p}.self_attn.q_proj.weight`, shape: [s.heads * headDim, s.hidden], std: 0.05 },
      { name: `${p}.self_attn.k_proj.weight`, shape: [s.kv * headDim, s.hidden], std: 0.05 },
      { name: `${p}.self_attn.v_proj.weight`, shape: [s.kv * headDim, s.hidden] },
      { name: `${p}.self_attn.o_proj.weight`, shape: [s.hidden, s.heads * headDim] },
      { name: `${p}.mlp.gate_proj.weight`, shape: [s.ffn, s.hidden] },
      { name: `${p}.mlp.up_proj.weight`, shape: [s.ffn, s.hidden] },
      { name: `${p}.mlp.down_proj.weight`, shape: [s.hidden, s.ffn] },
    );
  }
  // Random normal values drawn once per std (2^20 of them), each tensor tiled from them at its own
  // offset: drawing 1.2 billion values takes minutes on a loaded machine, and the times measured
  // here do not depend on the values.
  const bases = new Map<number, Uint16Array>();
  const base = (std: number): Uint16Array => bases.get(std) ?? bases.set(std, toStorage16(randomTensor([1 << 20], 7000 + bases.size, std).data, 'float16')).get(std)!;
  await writeSafetensorsStreamed(join(dir, 'model.safetensors'), list.map((t) => ({ name: t.name, dtype: 'F16', shape: t.shape })), (_, i) => {
    const t = list[i]!;
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.fill !== undefined) return toStorage16(new Float32Array(n).fill(t.fill), 'float16');
    const b = base(t.std ?? 0.02);
    const out = new Uint16Array(n);
    for (let at = 0, from = (i * 7919) % b.length; at < n; at += b.length - from, from = 0) out.set(b.subarray(from, Math.min(b.length, from + n - at)), at);
    return out;
  }, { format: 'pt' });
  const fixture = join(fileURLToPath(import.meta.url), '..', '..', 'test', 'fixtures', 'stories260k');
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) copyFileSync(join(fixture, f), join(dir, f));
  const config = {
    model_type: 'llama', architectures: ['LlamaForCausalLM'], vocab_size: s.vocab, hidden_size: s.hidden, intermediate_size: s.ffn, num_hidden_layers: s.layers,
    num_attention_heads: s.heads, num_key_value_heads: s.kv, hidden_act: 'silu', max_position_embeddings: 131072, rms_norm_eps: 1e-5, rope_theta: 500000,
    tie_word_embeddings: true, bos_token_id: 1, eos_token_id: 2, torch_dtype: 'float16',
  };
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2)); // last: marks the checkpoint complete
}

const WORDS = 'the quick brown fox jumps over the lazy dog near the river bank while a small bird sings in the old oak tree and children play'.split(' ');

/** A text of exactly `n` tokens (cut at a token's end), starting with a word of its own. */
async function textOf(model: Awaited<ReturnType<typeof loadModel>>, n: number, variant: number): Promise<string> {
  let text = `v${variant}`;
  for (let i = 0; text.length < n * 8; i++) text += ` ${WORDS[(i * 7 + variant) % WORDS.length]}`;
  const tokens = await model.tokenize(text);
  let cut = tokens[n - 1]!.end;
  let out = text.slice(0, cut);
  while ((await model.tokenize(out)).length > n) out = out.slice(0, (cut = out.lastIndexOf(' ')));
  return out;
}

/** Keystroke → first layer on screen (and → whole model) in Chromium, the 1B shape at `n` tokens. */
async function appBench(dirOption: string | undefined, n: number, runs: number): Promise<void> {
  const root = dirOption ?? mkdtempSync(join(os.tmpdir(), 'attnscope-layerwise-app-'));
  const dir = join(root, 'llama1b');
  const load = () => loadAverage(' ');
  try {
    const t0 = performance.now();
    await ensureAppCheckpoint(dir);
    console.log(`checkpoint ready in ${((performance.now() - t0) / 1000).toFixed(0)} s; load ${load()}`);
    const local = await loadModel(dir, { graphCache: false });
    const texts = await Promise.all(Array.from({ length: runs + 1 }, (_, i) => textOf(local, n, i)));
    await local.dispose();
    const server = await startServer({ port: 0, folders: [root], hfCache: false, graphCache: false, memoryBudgetBytes: 7 * 2 ** 30, limits: { maxTokens: Math.max(n, 512), maxTextChars: 200_000 } });
    const browser = await chromium.launch({ executablePath: process.env.ATTNSCOPE_CHROMIUM ?? '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      const start = new URL(server.url);
      start.searchParams.set('model', 'folder:0/llama1b');
      start.searchParams.set('text', texts[runs]!);
      start.searchParams.set('view', 'heatmap');
      const w0 = performance.now();
      await page.goto(start.href);
      await page.waitForFunction(() => document.body.dataset.trace === 'done' || document.body.dataset.trace === 'error', null, { timeout: 1_800_000 });
      if ((await page.evaluate(() => document.body.dataset.trace)) === 'error') throw new Error(`the app failed: ${await page.textContent('[data-testid=trace-error]')}`);
      console.log(`warm-up (load + first trace of ${n} tokens): ${((performance.now() - w0) / 1000).toFixed(1)} s; load ${load()}`);
      await page.evaluate(() => {
        const box = document.querySelector<HTMLTextAreaElement>('[data-testid=text-input]')!;
        box.addEventListener('input', () => ((window as unknown as { lastKey: number }).lastKey = performance.now()));
      });
      console.log(`| run | tokens | keystroke → first layer on screen | keystroke → whole model | load (1 min) |`);
      console.log('| --: | --: | --: | --: | --: |');
      for (let i = 0; i < runs; i++) {
        const text = texts[i]!;
        await page.fill('[data-testid=text-input]', text.slice(0, -1));
        await page.type('[data-testid=text-input]', text.slice(-1));
        await page.waitForFunction((t) => document.body.dataset.trace === 'done' && (JSON.parse(document.body.dataset.traced ?? '{}') as { text?: string }).text === t, text, { timeout: 1_800_000 });
        const marks = await page.evaluate(() => ({ key: (window as unknown as { lastKey: number }).lastKey, first: Number(document.body.dataset.firstPaintAt), done: Number(document.body.dataset.doneAt) }));
        console.log(`| ${i + 1} | ${n} | ${((marks.first - marks.key) / 1000).toFixed(2)} s | ${((marks.done - marks.key) / 1000).toFixed(1)} s | ${os.loadavg()[0]!.toFixed(1)} |`);
      }
      if (errors.length) console.log(`page errors: ${errors.join(' | ')}`);
    } finally {
      await browser.close();
      await server.close();
    }
  } finally {
    if (!dirOption) rmSync(root, { recursive: true, force: true });
  }
}

await main();
