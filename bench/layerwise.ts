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
 * `--app`: request → first layer on screen in Chromium for a Llama-3.2-1B shape (16 layers,
 * hidden 2048, 32/8 heads, FFN 8192, vocabulary 128256; random float16 weights (tiled from 2^20
 * random normal values) written once into
 * --dir with bench/random-weights.ts, the stories260k fixture's tokenizer) at --tokens (2,048):
 * the real server (limits raised), the built app (npm run build); first with the model opened by
 * the request (cold), then warm (model and sessions open). "On screen": layer 0's heatmap fully
 * drawn. Prints where the time goes (server events, the page's marks; one clock). The trace
 * streams on demand, q/k first (the shown head's q/k before the rest of layer 0, where the server
 * sends a head preview). Warm runs on new pages, then on one page with a new text typed each time.
 * `--whole` also waits for every layer. `--cold-after-load` also measures a cold first trace on a new
 * server whose model was loaded first (POST /api/load and its background warm-up: the preview's session).
 *
 *   npx tsx bench/layerwise.ts [--limit 6] [--cases whole:1024,layers:1024,...]
 *   npm run build && npx tsx bench/layerwise.ts --app [--dir /scratch/llama1b] [--tokens 2048] [--runs 3] [--whole] [--pause MS] [--cold-after-load]
 *   npx tsx bench/layerwise.ts --prepare --dir /scratch/llama1b   (only writes the --app checkpoint)
 */
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, type Page } from 'playwright-core';
import { loadModel } from '../src/engine/load.js';
import { toStorage16 } from '../src/graph/builder.js';
import { writeSafetensorsStreamed } from '../src/io/safetensors.js';
import { startServer } from '../src/server/serve.js';
import type { LayerEvent } from '../src/server/traces.js';
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
  if (process.argv.includes('--prepare')) {
    // Only writes the 1B-shaped checkpoint of --app into --dir (a few GB, minutes), e.g. while other work goes on.
    const dir = option('--dir');
    if (!dir) throw new Error('--prepare: give --dir, the folder the checkpoint is written into');
    return ensureAppCheckpoint(join(dir, 'llama1b'));
  }
  if (process.argv.includes('--app')) {
    const pause = option('--pause');
    return appBench(option('--dir'), Number(option('--tokens') ?? 2048), Number(option('--runs') ?? 3), process.argv.includes('--whole'), pause === undefined ? undefined : Number(pause), process.argv.includes('--cold-after-load'));
  }
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

/** Milliseconds since the epoch, from this process's clock (comparable with the page's). */
const epoch = (): number => performance.timeOrigin + performance.now();

/** What the page records (installed before its script runs). */
interface PageMarks {
  /** Epoch ms at which a heatmap canvas first had its whole overview drawn. */
  drawn: number;
  /** Long tasks on the page's main thread (epoch ms start, ms). */
  longTasks: [number, number][];
  /** Heatmaps of an earlier trace on the same page (not counted). */
  earlier: WeakSet<Element>;
}

/** Installed in the page before its script: the heatmap canvas whose overview is drawn (data-overview="done"), and when. */
function recordDrawn(): void {
  const w = window as unknown as { marks: PageMarks };
  w.marks = { drawn: 0, longTasks: [], earlier: new WeakSet() };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) w.marks.longTasks.push([performance.timeOrigin + e.startTime, e.duration]);
  }).observe({ type: 'longtask', buffered: true });
  new MutationObserver((list) => {
    for (const m of list) {
      const el = m.target as HTMLElement;
      if (el.dataset.testid === 'heatmap-tiles' && el.dataset.overview === 'done' && w.marks.drawn === 0 && !w.marks.earlier.has(el)) w.marks.drawn = performance.timeOrigin + performance.now();
    }
  }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-overview'] });
}

/** One trace as the bench saw it, in epoch ms (page and server share the machine's clock). */
interface Timeline {
  /** The page's request (after the edit pause; before the model is loaded, if it is not). */
  request: number;
  /** The trace request at the server. */
  arrived: number;
  /**
   * What the page draws first as the server reported it: the head preview (the shown head's q/k
   * of layer 0) when there was one, else the first segment (embeddings, layer 0's q/k).
   */
  first: LayerEvent & { at: number; cpuMs: number };
  /** With a preview: the first segment's own event (every head of layer 0), and when the page mounted it. */
  layer0?: LayerEvent & { at: number; cpuMs: number };
  layerMounted?: number;
  /** The page has the first layer frame (decoded). */
  received: number;
  /** The views were mounted on the first layer. */
  mounted: number;
  /** The heatmap of layer 0, head 0 fully drawn (its whole overview). */
  drawn: number;
  done: number;
}

/**
 * Where the page's time went, in ms from the views mounted: its `attnscope:` marks and measures
 * (count, first and last; summed durations) and the long tasks of its main thread (start+duration).
 */
async function pageDiagnostics(page: Page, mounted: number, drawn: number): Promise<string> {
  const got = await page.evaluate(() => {
    const o = performance.timeOrigin;
    const entries = performance.getEntries().filter((e) => e.name.startsWith('attnscope:'));
    const kernels = [...new Set(entries.map((e) => ((e as PerformanceMeasure).detail as { kernel?: string } | null)?.kernel).filter((k) => k !== undefined))];
    return { entries: entries.map((e) => [e.name.slice('attnscope:'.length), o + e.startTime, e.duration] as [string, number, number]), longTasks: (window as unknown as { marks: PageMarks }).marks.longTasks, kernels };
  });
  const rel = (x: number) => (x - mounted).toFixed(0);
  const byName = new Map<string, [number, number][]>();
  for (const [name, at, d] of got.entries) byName.set(name, [...(byName.get(name) ?? []), [at, d]]);
  // The worker's compute per job (ms), in order: the overview's strips grow with the row (causal).
  const compute = (byName.get('worker-compute') ?? []).map((x) => x[1].toFixed(0)).join(' ');
  const marks = [...byName].map(([name, l]) => `${name} ×${l.length} at ${rel(l[0]![0])}…${rel(l.at(-1)![0])}${l.some((x) => x[1] > 0) ? ` Σ${l.reduce((a, x) => a + x[1], 0).toFixed(0)} ms` : ''}`);
  return `  page (ms from mounted; drawn at ${rel(drawn)}; worker kernel ${got.kernels.join(', ') || '–'}): ${marks.join('; ')}; long tasks ${got.longTasks.map(([at, d]) => `${rel(at)}+${d.toFixed(0)}`).join(' ') || 'none'}\n  worker compute per job (ms): ${compute}`;
}

/** The page's marks of the trace just done, with the server's events, as a Timeline. */
async function timeline(page: Page, arrived: number, events: (LayerEvent & { at: number; cpuMs: number })[], newPage: boolean): Promise<Timeline> {
  const m = await page.evaluate(() => {
    const d = document.body.dataset;
    const w = window as unknown as { marks: PageMarks };
    const o = performance.timeOrigin;
    // The first data the page drew from: the head preview when one came, else the first layer.
    const first = performance.getEntriesByName('attnscope:preview').at(-1) ?? performance.getEntriesByName('attnscope:first-layer').at(-1);
    const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming | undefined;
    const script = performance.getEntriesByType('resource').find((e) => /\/app\.js/.test(e.name)) as PerformanceResourceTiming | undefined;
    return { drawn: w.marks.drawn, firstPaintAt: o + Number(d.firstPaintAt), firstPaintMs: Number(d.firstPaintMs), received: o + (first?.startTime ?? NaN), done: o + Number(d.doneAt), layerPaintAt: d.layerPaintAt ? o + Number(d.layerPaintAt) : undefined, origin: o, htmlEnd: nav ? o + nav.responseEnd : NaN, scriptEnd: script ? o + script.responseEnd : NaN, scriptRan: nav ? o + nav.domContentLoadedEventStart : NaN };
  });
  const request = m.firstPaintAt - m.firstPaintMs;
  // A new page: navigation → page → app script in → script run (deferred: before DOMContentLoaded) → the trace request.
  if (newPage) {
    const r = (x: number) => (x - m.origin).toFixed(0);
    console.log(`  new page (ms from navigation): html ${r(m.htmlEnd)}, app.js in ${r(m.scriptEnd)}, script run (DOMContentLoaded) ${r(m.scriptRan)}, trace request ${r(request)}, views mounted ${r(m.firstPaintAt)}, drawn ${r(m.drawn)}`);
  }
  console.log(await pageDiagnostics(page, m.firstPaintAt, m.drawn));
  const layer0 = events.find((e) => e.index === 0 && !e.preview);
  const first = events.find((e) => e.preview) ?? layer0;
  if (!first) throw new Error('the server reported no first segment');
  return { request, arrived, first, received: m.received, mounted: m.firstPaintAt, drawn: m.drawn, done: m.done, ...(first !== layer0 && layer0 ? { layer0, ...(m.layerPaintAt !== undefined && m.layerPaintAt > request ? { layerMounted: m.layerPaintAt } : {}) } : {}) };
}

const BREAKDOWN = ['request → server (+ model open when cold)', 'server: lease, cache, tokens checked, turn', 'tokenize (prepareRun)', 'first q/k (preview: one head): session', 'first q/k (preview: one head): run', 'frames encoded', 'transfer + page decode', 'first frame → views mounted', 'mounted → heatmap drawn'];

/** Milliseconds of each part of BREAKDOWN, and request → drawn. */
function parts(t: Timeline): { parts: number[]; requestToDrawn: number } {
  const f = t.first;
  const sent = f.at - f.timing.handOut;
  const runStart = sent - f.timing.sentAt;
  const p = [t.arrived - t.request, runStart - t.arrived, f.timing.preparedAt, f.timing.session, f.timing.run, f.timing.encode, t.received - sent, t.mounted - t.received, t.drawn - t.mounted];
  return { parts: p, requestToDrawn: t.drawn - t.request };
}

/**
 * Request → first layer on screen in Chromium, the 1B shape at `n` tokens, and where the time
 * goes. "On screen": the heatmap of layer 0's head 0 with its whole overview drawn (computed on
 * demand in the page's worker from the layer's queries and keys), not only the views mounted. The
 * first trace opens the model (cold: /api/load, then the sessions of the segments it reaches); the
 * next ones (warm: model and sessions open, as in an app that keeps its models) open the page on
 * another text of the same length. Each run is stopped once drawn (the page leaves; the run stops
 * after its segment), or with `whole` once every layer is in. A keystroke adds the app's edit pause
 * (350 ms, web/app/main.ts) before the request.
 */
async function appBench(dirOption: string | undefined, n: number, runs: number, whole: boolean, pauseMs?: number, coldAfterLoad = false): Promise<void> {
  const root = dirOption ?? mkdtempSync(join(os.tmpdir(), 'attnscope-layerwise-app-'));
  const dir = join(root, 'llama1b');
  const load = () => loadAverage(' ');
  try {
    const t0 = performance.now();
    await ensureAppCheckpoint(dir);
    console.log(`checkpoint ready in ${((performance.now() - t0) / 1000).toFixed(0)} s; load ${load()}`);
    const local = await loadModel(dir, { graphCache: false });
    // Cold, `runs` on new pages, 1 + `runs` on one page, cold after a load (a cached text would not run the model).
    const texts = await Promise.all(Array.from({ length: 2 * runs + 3 }, (_, i) => textOf(local, n, i)));
    await local.dispose();
    const serverCpu0 = process.cpuUsage();
    // The server's side of the timeline: when a trace request comes, and each segment handed out.
    // CPU time of this process (every thread) from the request's arrival to each segment sent.
    let arrived = 0;
    let cpu0 = process.cpuUsage();
    let events: (LayerEvent & { at: number; cpuMs: number })[] = [];
    /** Ends the trace request under way (the run stops after its segment), as closing its page does. */
    let stopRequest = (): void => undefined;
    const start = async () => {
      const server = await startServer({ port: 0, folders: [root], hfCache: false, graphCache: false, memoryBudgetBytes: 7 * 2 ** 30, limits: { maxTokens: Math.max(n, 512), maxTextChars: 200_000 } });
      // --pause: the server's wait after the first layer's view is sent (TraceService.firstLayerPauseMs).
      if (pauseMs !== undefined) server.traces.firstLayerPauseMs = pauseMs;
      const openTrace = server.traces.open.bind(server.traces);
      server.traces.open = (req, signal) => {
        arrived = epoch();
        cpu0 = process.cpuUsage();
        events = [];
        const own = new AbortController();
        signal?.addEventListener('abort', () => own.abort(), { once: true });
        stopRequest = () => own.abort();
        return openTrace(req, own.signal);
      };
      server.traces.onLayerSent = (e) => {
        const cpu = process.cpuUsage(cpu0);
        events.push({ ...e, at: epoch(), cpuMs: (cpu.user + cpu.system) / 1000 });
      };
      return server;
    };
    let server = await start();
    /** After a trace's run stopped: what the server ran for it (segments after the first view: the bench's CPU besides the first view). */
    const ran = (label: string) => {
      const cpu = process.cpuUsage(cpu0);
      const segments = events.filter((e) => !e.preview).length;
      console.log(`  ${label}: the run stopped after ${segments} segment${segments === 1 ? '' : 's'} of ${events[0]?.count ?? '?'}${events.some((e) => e.preview) ? ' (and the preview)' : ''}; this process's CPU from the request to the run stopped ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms`);
    };
    const browser = await chromium.launch({ executablePath: process.env.ATTNSCOPE_CHROMIUM ?? '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu'] });
    const rows: { label: string; t: Timeline; load: number }[] = [];
    const ms = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : '–');
    try {
      /**
       * Opens a new page on `text`, waits for its trace to be drawn (and, with --whole, every layer
       * in), then closes the page, which stops the run after its current segment.
       */
      const errors: string[] = [];
      /** Waits until the page has drawn its trace of `text` (with --whole: every layer in) and records it as `label`. */
      const drawn = async (page: Page, label: string, text: string, stop = false) => {
        await page.waitForFunction(() => (window as unknown as { marks: PageMarks }).marks.drawn > 0 || document.body.dataset.trace === 'error', null, { timeout: 1_800_000, polling: 50 });
        if ((await page.evaluate(() => document.body.dataset.trace)) === 'error') throw new Error(`the app failed: ${await page.textContent('[data-testid=trace-error]')}`);
        // A new page's trace is ended once drawn (the run stops after the segment under way): the
        // segments after it would run while the bench reads the page (before: 4–6 whole layers per
        // trace, most of the bench's CPU time, and more or fewer of them as the bench's reads took).
        if (stop && !whole) stopRequest();
        if (whole) await page.waitForFunction((t) => document.body.dataset.trace === 'done' && (JSON.parse(document.body.dataset.traced ?? '{}') as { text?: string }).text === t, text, { timeout: 1_800_000 });
        const t = await timeline(page, arrived, events, stop);
        rows.push({ label, t, load: os.loadavg()[0]! });
        if (errors.length) console.log(`page errors: ${errors.splice(0).join(' | ')}`);
        const p = parts(t).parts;
        const layer0 = t.layer0 && t.layerMounted ? `; with every head: layer 0 run ${ms(t.layer0.timing.run)}, request → mounted ${ms(t.layerMounted - t.request)}` : '';
        console.log(`${label}: request → layer 0 drawn ${(parts(t).requestToDrawn / 1000).toFixed(2)} s (${BREAKDOWN.map((name, i) => `${name} ${ms(p[i]!)}`).join('; ')}; server CPU ${ms(t.first.cpuMs)} ms${layer0}); load ${load()}`);
      };
      /** A new page on `text`. */
      const open = async (text: string) => {
        const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
        await page.addInitScript(recordDrawn);
        page.on('pageerror', (e) => errors.push(e.message));
        const url = new URL(server.url);
        url.searchParams.set('model', 'folder:0/llama1b');
        url.searchParams.set('text', text);
        url.searchParams.set('view', 'heatmap');
        await page.goto(url.href);
        return page;
      };
      /** A new page on `text`, measured, then closed (which stops the run after its segment). */
      const measure = async (label: string, text: string) => {
        const page = await open(text);
        await drawn(page, label, text, true);
        await page.close({ runBeforeUnload: false });
        await server.traces.settled();
        ran(label);
      };
      // Cold: the model opened by the page's request.
      await measure('cold: model opened', texts[2 * runs + 1]!);
      // Cold after the model was loaded (as when a model is picked, then a text typed): a new
      // server, POST /api/load, its background warm-up (the preview's session) awaited, then the page.
      if (coldAfterLoad) {
        await server.close();
        server = await start();
        const l0 = epoch();
        const res = await fetch(new URL('/api/load', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'folder:0/llama1b' }) });
        await res.arrayBuffer();
        const loaded = epoch() - l0;
        await server.traces.settled();
        console.log(`POST /api/load answered in ${loaded.toFixed(0)} ms, its warm-up done ${(epoch() - l0 - loaded).toFixed(0)} ms later; load ${load()}`);
        await measure('cold after /api/load', texts[2 * runs + 2]!);
      }
      // Warm: the model open, its sessions made by an earlier trace; a new page on another text.
      for (let i = 0; i < runs; i++) await measure(`warm ${i + 1}`, texts[i]!);
      // Warm on one page (how the app is used): the page open on a text, then a new text typed
      // (the request follows the app's edit pause). The trace before is stopped first (the run
      // ends after its segment), as for a new page.
      const page = await open(texts[runs]!);
      await page.waitForFunction(() => (window as unknown as { marks: PageMarks }).marks.drawn > 0, null, { timeout: 1_800_000, polling: 50 });
      for (let i = 0; i < runs; i++) {
        // The user reads a moment (the rest of layer 0 comes and is drawn), then types.
        await page.waitForTimeout(1500);
        stopRequest();
        await server.traces.settled();
        ran(i === 0 ? 'same page, first text' : `same page ${i}`);
        const text = texts[runs + 1 + i]!;
        await page.evaluate(() => {
          const w = window as unknown as { marks: PageMarks };
          w.marks.drawn = 0;
          w.marks.longTasks = [];
          // This trace's marks only (the preview's and first layer's marks are read from the last).
          for (const e of performance.getEntries()) if (e.name.startsWith('attnscope:') && e.name !== 'attnscope:preview' && e.name !== 'attnscope:first-layer') performance.clearMeasures(e.name);
          performance.clearMarks('attnscope:overview-strip');
          performance.clearMarks('attnscope:overview-painted');
          performance.clearMarks('attnscope:worker-layer-sent');
          document.querySelectorAll('[data-testid=heatmap-tiles]').forEach((el) => w.marks.earlier.add(el));
        });
        await page.fill('[data-testid=text-input]', text);
        // The trace before ended in an error (stopped); the new one starts after the edit pause.
        await page.waitForFunction(() => document.body.dataset.trace !== 'error', null, { timeout: 60_000, polling: 20 });
        await drawn(page, `same page ${i + 1}`, text);
      }
      await page.close({ runBeforeUnload: false });
      await server.traces.settled();
      ran(`same page ${runs}`);
    } finally {
      await browser.close();
      await server.close();
      const cpu = process.cpuUsage(serverCpu0);
      console.log(`this process's CPU (server, bench, Playwright's client) from the server's start: ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s (Chromium: the rest of the whole bench's)`);
    }
    console.log(`\n| trace (${n} tokens) | request → layer 0 drawn |${whole ? ' request → whole model |' : ''} load (1 min) |`);
    console.log(`| --- | --: |${whole ? ' --: |' : ''} --: |`);
    for (const { label, t, load } of rows) {
      const p = parts(t);
      console.log(`| ${label} | ${(p.requestToDrawn / 1000).toFixed(2)} s |${whole ? ` ${((t.done - t.request) / 1000).toFixed(1)} s |` : ''} ${load.toFixed(1)} |`);
    }
    console.log(`\n| part (ms) | ${rows.map((r) => r.label).join(' | ')} |`);
    console.log(`| --- |${rows.map(() => ' --: |').join('')}`);
    const all = rows.map((r) => parts(r.t).parts);
    BREAKDOWN.forEach((name, i) => console.log(`| ${name} | ${all.map((p) => ms(p[i]!)).join(' | ')} |`));
    console.log(`| server CPU time, request at server → layer 0 sent (all threads) | ${rows.map((r) => ms(r.t.first.cpuMs)).join(' | ')} |`);
    console.log(`| first frames (MB) | ${rows.map((r) => (r.t.first.timing.bytes / 2 ** 20).toFixed(1)).join(' | ')} |`);
  } finally {
    if (!dirOption) rmSync(root, { recursive: true, force: true });
  }
}

await main();
