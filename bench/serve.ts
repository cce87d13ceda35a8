/**
 * `attnscope serve` latency and memory: from sending POST /api/trace to the first layer received
 * and to the whole trace received (a Node client on loopback, reading the binary stream), against
 * producing the standalone HTML of the same input in the same process (model.trace + the page);
 * for the embedded model and a bert-base-sized checkpoint (random weights, bert-base-uncased's
 * tokenizer) at 128 and 512 tokens, with queries and keys (the neuron view's) and the top-5
 * predictions, as the app asks. Then 50 concurrent clients with different texts, twice, and the
 * process's resident memory after each round.
 *
 * `--only keystroke`: the app in Chromium (playwright-core, /usr/bin/chromium, headless): from the
 * last keystroke in the text box to the first layer on screen and to the whole model on screen
 * (the app's edit pause included), against producing the standalone HTML of the same input
 * (model.trace + the page) and against that plus opening it in the same Chromium.
 * `--only append`: a causal model's trace when the text only grows (the key/value cache of the
 * kept prefix reused, src/server/append.ts) against a full trace of a new text of the same length.
 * `--only api`, `--only load`: the API table and the concurrent clients.
 * `--only encoding`: the bytes of a trace's frames with every float32 sent against causal attention
 * sent as its lower triangle (protocol.ts, lossless) and against that gzipped (level 1, as an HTTP
 * content-encoding would), with the CPU time to encode and decode each, and a cached answer's
 * transfer over loopback. Default: all but encoding.
 *
 *   npm run build && npx tsx bench/serve.ts [--only keystroke|append|api|load|encoding]… [--runs N]
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { deflateRawSync, gunzipSync, gzipSync } from 'node:zlib';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { writeSafetensors, type SafetensorsTensorInput } from '../src/io/safetensors.js';
import { FrameReader, layerFrame, type TraceRequest } from '../src/server/protocol.js';
import { traceResult } from '../src/server/traces.js';
import { startServer } from '../src/server/serve.js';
import type { AttnTokenizer } from '../src/tokenizer/load-tokenizer.js';
import { loadViewBundle } from '../src/views/html/bundle-node.js';
import { renderStandaloneHtml, type ViewBundle } from '../src/views/html/standalone.js';
import { chromium } from 'playwright-core';
import { concatBytes } from '../src/core/bytes.js';
import { BERT_BASE_CONFIG, bertBaseWeights } from './bert-base.js';
import { randomTensor } from './random-weights.js';

const ROOT = join(fileURLToPath(import.meta.url), '..', '..');
const TOKENIZER = join(ROOT, 'test', 'fixtures', 'tokenizers', 'bert-base-uncased');
const WORDS = 'the quick brown fox jumps over the lazy dog near the river bank while a small bird sings in the old oak tree and children play'.split(' ');
const argv = process.argv.slice(2);
const ONLY = argv.flatMap((a, i) => (a === '--only' ? [argv[i + 1]!] : []));
const runsAt = argv.indexOf('--runs');
const RUNS = runsAt >= 0 ? Number(argv[runsAt + 1]) : 5;
const wants = (section: string): boolean => (ONLY.length === 0 && section !== 'encoding') || ONLY.includes(section);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function writeBertBase(dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const tensors: SafetensorsTensorInput[] = [];
  for (const [name, t] of bertBaseWeights('bert.')) tensors.push({ name, dtype: 'F32', shape: t.shape, data: t.data });
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...BERT_BASE_CONFIG, architectures: ['BertModel'] }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(TOKENIZER, f), join(dir, f));
}

const GPT2_TOKENIZER = join(ROOT, 'test', 'fixtures', 'tokenizers', 'gpt2');

/** A gpt2-small-shaped causal LM (12 layers × 12 heads, 768 wide, 50257 tokens; random weights, GPT-2's tokenizer). */
async function writeGpt2Small(dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const E = 768;
  const tensors: SafetensorsTensorInput[] = [];
  let seed = 7;
  const add = (name: string, shape: number[], fill?: number): void => {
    const t = fill === undefined ? randomTensor(shape, seed++) : { shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill) };
    tensors.push({ name, dtype: 'F32', shape, data: t.data });
  };
  add('transformer.wte.weight', [50257, E]);
  add('transformer.wpe.weight', [1024, E]);
  for (let l = 0; l < 12; l++) {
    const p = `transformer.h.${l}`;
    add(`${p}.ln_1.weight`, [E], 1);
    add(`${p}.ln_1.bias`, [E], 0);
    add(`${p}.attn.c_attn.weight`, [E, 3 * E]);
    add(`${p}.attn.c_attn.bias`, [3 * E], 0);
    add(`${p}.attn.c_proj.weight`, [E, E]);
    add(`${p}.attn.c_proj.bias`, [E], 0);
    add(`${p}.ln_2.weight`, [E], 1);
    add(`${p}.ln_2.bias`, [E], 0);
    add(`${p}.mlp.c_fc.weight`, [E, 4 * E]);
    add(`${p}.mlp.c_fc.bias`, [4 * E], 0);
    add(`${p}.mlp.c_proj.weight`, [4 * E, E]);
    add(`${p}.mlp.c_proj.bias`, [E], 0);
  }
  add('transformer.ln_f.weight', [E], 1);
  add('transformer.ln_f.bias', [E], 0);
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({ model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], n_embd: E, n_head: 12, n_layer: 12, n_positions: 1024, n_inner: null, vocab_size: 50257, activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, bos_token_id: 50256, eos_token_id: 50256 }),
  );
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'vocab.json', 'merges.txt']) copyFileSync(join(GPT2_TOKENIZER, f), join(dir, f));
}

/** A text of exactly `n` tokens for `model` (words added one by one), its first word varied by `variant`. */
async function textOf(model: Model<AttnTokenizer>, n: number, variant: number): Promise<string> {
  const words: string[] = [`w${variant}`];
  let text = words.join(' ');
  for (let i = 0; (await model.tokenize(text)).length < n; i++) {
    words.push(WORDS[i % WORDS.length]!);
    text = words.join(' ');
  }
  while ((await model.tokenize(text)).length > n) text = text.slice(0, text.lastIndexOf(' '));
  return text;
}

/** Milliseconds to the first layer frame and to the end frame of one trace request. */
async function timeRequest(url: string, req: TraceRequest): Promise<{ first: number; all: number; bytes: number }> {
  const post = () => fetch(new URL('/api/trace', url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(req) });
  let t0 = performance.now();
  // A kept-alive connection the server closed while this process was busy computing is reset: once more on a new one.
  const res = await post().catch(() => {
    t0 = performance.now();
    return post();
  });
  if (!res.ok) throw new Error(`${res.status} ${await res.text()}`);
  const reader = new FrameReader();
  let first = 0;
  let bytes = 0;
  const body = res.body!.getReader();
  for (;;) {
    const { done, value: chunk } = await body.read();
    if (done) break;
    bytes += chunk.length;
    for (const f of reader.push(chunk)) {
      if (f.type === 'layer' && first === 0) first = performance.now() - t0;
      if (f.type === 'end') return { first, all: performance.now() - t0, bytes };
    }
  }
  throw new Error('stream ended early');
}

const MODELS = (dir: string) =>
  [
    ['stories260k (embedded)', 'default', undefined],
    ['bert-base shape (random weights)', 'folder:0/bert-base', join(dir, 'bert-base')],
  ] as const;

const ms = (x: number) => `${Math.round(x)} ms`;

/** The API: first layer and whole trace received by a Node client, against the standalone page produced. */
async function apiSection(url: string, dir: string, bundle: ViewBundle): Promise<void> {
  console.log(`### API — median of ${RUNS} runs (each run a text not traced before), qk + top-5 predictions as the app asks`);
  console.log('');
  console.log('| model | tokens | server: first layer received | server: whole trace received | bytes sent | standalone HTML produced (trace + page) |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const [label, id, local] of MODELS(dir)) {
    const model = await loadModel(local, { graphCache: false });
    try {
      for (const n of [128, 512]) {
        const texts = await Promise.all(Array.from({ length: RUNS + 1 }, (_, i) => textOf(model, n, i)));
        const taps = { qk: true, topK: 5 };
        await timeRequest(url, { model: id, text: texts[RUNS]!, taps }); // warm-up: load, graph
        const runs = [];
        for (let i = 0; i < RUNS; i++) runs.push(await timeRequest(url, { model: id, text: texts[i]!, taps }));
        const page: number[] = [];
        for (let i = 0; i < RUNS; i++) page.push((await standalone(model, texts[i]!, bundle)).ms);
        console.log(`| ${label} | ${n} | ${ms(median(runs.map((r) => r.first)))} | ${ms(median(runs.map((r) => r.all)))} | ${(median(runs.map((r) => r.bytes)) / 1e6).toFixed(1)} MB | ${ms(median(page))} |`);
      }
    } finally {
      await model.dispose();
    }
  }
  console.log('');
}

/** model.trace + the standalone page, as `attnscope view --out` makes it; the time and the HTML. */
async function standalone(model: Model, text: string, bundle: ViewBundle, view?: 'heatmap'): Promise<{ ms: number; html: string }> {
  // A masked LM predicts only at [MASK] (the server leaves predictions out for a text without one).
  const options = model.info.kind === 'encoder' ? { qk: true } : { qk: true, topK: 5 };
  const t0 = performance.now();
  const trace = await model.trace(text, options);
  const page = await renderStandaloneHtml(trace, { bundle, text, ...(view ? { view } : {}), deflate: (d) => deflateRawSync(d, { level: 6 }) });
  return { ms: performance.now() - t0, html: page.html };
}

/**
 * The app in Chromium: the text box filled with all but the last character of a text not traced
 * before, then the last character typed; from that keystroke (its input event) to the first layer
 * drawn and to the whole model drawn (the app's marks on <body>). Against the standalone page of
 * the same input: produced (trace + page), and produced then opened in the same browser.
 */
async function keystrokeSection(dir: string, bundle: ViewBundle): Promise<void> {
  const browser = await chromium.launch({ executablePath: process.env.ATTNSCOPE_CHROMIUM ?? '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu'] });
  const pages = mkdtempSync(join(os.tmpdir(), 'attnscope-bench-pages-'));
  try {
    console.log(`### The app in Chromium: last keystroke → on screen (heatmap view) — median of ${RUNS} runs (each a text not traced before; the app's 350 ms edit pause included)`);
    console.log('');
    console.log('| model | tokens | streaming | keystroke → first layer on screen | keystroke → whole model on screen | standalone HTML produced | standalone produced + opened in Chromium |');
    console.log('| --- | ---: | --- | ---: | ---: | ---: | ---: |');
    for (const [label, id, local] of MODELS(dir)) {
      const model = await loadModel(local, { graphCache: false });
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      try {
        for (const n of [128, 512]) {
          const texts = await Promise.all(Array.from({ length: RUNS + 1 }, (_, i) => textOf(model, n, 100 + i)));
          // A server per row: the per-layer engine opens its sessions for one sequence length (a second length in one server failed at the time of writing).
          const server = await startServer({ port: 0, folders: [dir], hfCache: false, graphCache: false, limits: { maxTokens: 512 } });
          const url = server.url;
          const page = await context.newPage();
          const start = new URL(url);
          start.searchParams.set('model', id);
          start.searchParams.set('text', texts[RUNS]!);
          // The heatmap (a canvas): the head view's SVG lines at 512 tokens are a views-at-scale matter of their own.
          start.searchParams.set('view', 'heatmap');
          await page.goto(start.href);
          await page.waitForFunction(() => document.body.dataset.trace === 'done' || document.body.dataset.trace === 'error', null, { timeout: 600_000 });
          if ((await page.evaluate(() => document.body.dataset.trace)) === 'error') throw new Error(`the app failed: ${await page.textContent('[data-testid=trace-error]')}`);
          await page.evaluate(() => {
            const box = document.querySelector<HTMLTextAreaElement>('[data-testid=text-input]')!;
            box.addEventListener('input', () => ((window as unknown as { lastKey: number }).lastKey = performance.now()));
          });
          const first: number[] = [];
          const all: number[] = [];
          let streaming = '';
          for (let i = 0; i < RUNS; i++) {
            const text = texts[i]!;
            await page.fill('[data-testid=text-input]', text.slice(0, -1));
            await page.type('[data-testid=text-input]', text.slice(-1));
            await page.waitForFunction(
              (t) => document.body.dataset.trace === 'done' && (JSON.parse(document.body.dataset.traced ?? '{}') as { text?: string }).text === t,
              text,
              { timeout: 600_000 },
            );
            const marks = await page.evaluate(() => ({ key: (window as unknown as { lastKey: number }).lastKey, first: Number(document.body.dataset.firstPaintAt), done: Number(document.body.dataset.doneAt), status: document.body.querySelector('[data-testid=status]')?.textContent ?? '' }));
            first.push(marks.first - marks.key);
            all.push(marks.done - marks.key);
            streaming = marks.status.includes('cached') ? 'cached?!' : '';
          }
          const mode = await page.evaluate(async (req) => {
            const res = await fetch('/api/trace', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(req) });
            const buf = new Uint8Array(await res.arrayBuffer());
            const len = new DataView(buf.buffer).getUint32(0, true);
            return (JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + len))) as { streaming: string }).streaming;
          }, { model: id, text: texts[0]!, taps: { qk: true, topK: 5 } });
          await page.close();
          await server.close();
          const produced: number[] = [];
          const opened: number[] = [];
          for (let i = 0; i < RUNS; i++) {
            const t0 = performance.now();
            const { html } = await standalone(model, texts[i]!, bundle, 'heatmap');
            produced.push(performance.now() - t0);
            const file = join(pages, `page-${i}.html`);
            writeFileSync(file, html);
            const p = await context.newPage();
            await p.goto(pathToFileURL(file).href);
            await p.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: 600_000 });
            opened.push(performance.now() - t0);
            await p.close();
          }
          console.log(`| ${label} | ${n} | ${mode}${streaming} | ${ms(median(first))} | ${ms(median(all))} | ${ms(median(produced))} | ${ms(median(opened))} |`);
        }
      } finally {
        await context.close();
        await model.dispose();
      }
    }
    console.log('');
  } finally {
    await browser.close();
    rmSync(pages, { recursive: true, force: true });
  }
}

/**
 * A causal model (the embedded one) whose text grows by a few words: the trace reusing the kept
 * prefix's key/value cache against a full trace of a new text of the same length (whole trace
 * received by a Node client, qk + predictions).
 */
async function appendSection(url: string, server: Awaited<ReturnType<typeof startServer>>, dir: string): Promise<void> {
  console.log(`### Append on causal models: median of ${RUNS} runs, whole trace received (qk + top-5 predictions)`);
  console.log('');
  console.log('| model | tokens | prefix kept | full trace of a new text | the text grown by a few words (prefix reused) | saving |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const [label, id, local] of [
    ['stories260k (embedded)', 'default', undefined],
    ['gpt2-small shape (random weights)', 'folder:0/gpt2-small', join(dir, 'gpt2-small')],
  ] as const) {
    const model = await loadModel(local, { graphCache: false });
    try {
      const taps = { qk: true, topK: 5 };
      for (const n of [128, 512]) {
        const full: number[] = [];
        const grown: number[] = [];
        let kept = 0;
        await timeRequest(url, { model: id, text: await textOf(model, n, 500), taps }); // warm-up
        for (let i = 0; i < RUNS; i++) {
          // The base text has n − 8 tokens; the grown one n tokens (words appended at the end).
          const base = await textOf(model, n - 8, 600 + i);
          let more = base;
          for (let w = 0; (await model.tokenize(more)).length < n; w++) more += ` ${WORDS[(w * 7) % WORDS.length]}`;
          while ((await model.tokenize(more)).length > n) more = more.slice(0, more.lastIndexOf(' '));
          full.push((await timeRequest(url, { model: id, text: await textOf(model, n, 700 + i), taps })).all);
          await timeRequest(url, { model: id, text: base, taps });
          const before = server.traces.append.reusedTokens;
          grown.push((await timeRequest(url, { model: id, text: more, taps })).all);
          kept = server.traces.append.reusedTokens - before;
        }
        const f = median(full);
        const g = median(grown);
        console.log(`| ${label} | ${n} | ${kept} | ${ms(f)} | ${ms(g)} | ${Math.round((100 * (f - g)) / f)} % |`);
      }
    } finally {
      await model.dispose();
    }
  }
  console.log('');
}

/** CPU milliseconds (median of RUNS) of `f`, and its last result. */
function timed<T>(f: () => T): { ms: number; value: T } {
  const times: number[] = [];
  let value!: T;
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    value = f();
    times.push(performance.now() - t0);
  }
  return { ms: median(times), value };
}

/**
 * What a trace's frames weigh and cost: every float32 as it is (the stream before the lower
 * triangle), causal attention as its lower triangle (what the server sends), and that gzipped at
 * level 1 (an HTTP content-encoding); encode = frames made (+ gzip), decode = FrameReader (+ gunzip,
 * which a browser does natively). Then a cached answer over loopback (bytes / time).
 */
async function encodingSection(url: string, dir: string): Promise<void> {
  console.log(`### Frame encodings — qk + top-5 predictions as the app asks; CPU ms median of ${RUNS}; load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  console.log('');
  console.log('| model | tokens | every float32: MB · encode · decode | lower triangle: MB · encode · decode | lower + gzip 1: MB · encode · decode | cached answer over loopback (lower) |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const [label, id, local] of [...MODELS(dir), ['gpt2-small shape (random weights)', 'folder:0/gpt2-small', join(dir, 'gpt2-small')] as const]) {
    const model = await loadModel(local, { graphCache: false });
    try {
      for (const n of [128, 512]) {
        const text = await textOf(model, n, 900);
        const trace = await model.trace(text, model.info.kind === 'encoder' ? { qk: true } : { qk: true, topK: 5 });
        // The same layers with every value (no dims: no lower triangle).
        const sources = (['attention', 'queries', 'keys'] as const).flatMap((k) => Object.values(trace[k] ?? {}).flatMap((s) => s!.layers as Float32Array[]));
        const all = timed(() => sources.map((v, i) => layerFrame(i % 256, 0, v)));
        const lower = timed(() => traceResult(trace, id, 'bench', 0, 0, model.info.kind).layers);
        const allBytes = concatBytes(all.value);
        const lowerBytes = concatBytes(lower.value);
        const gz = timed(() => gzipSync(lowerBytes, { level: 1 }));
        const read = (b: Uint8Array) => new FrameReader().push(b).length;
        const dAll = timed(() => read(allBytes));
        const dLower = timed(() => read(lowerBytes));
        const dGz = timed(() => read(gunzipSync(gz.value)));
        // Over loopback: the answer from the server's cache (the model is not run), whole stream read.
        const req = { model: id, text, taps: model.info.kind === 'encoder' ? { qk: true } : { qk: true, topK: 5 } };
        await timeRequest(url, req);
        const loop: number[] = [];
        let bytes = 0;
        for (let i = 0; i < RUNS; i++) {
          const r = await timeRequest(url, req);
          loop.push(r.all);
          bytes = r.bytes;
        }
        const mb = (b: number) => (b / 1e6).toFixed(1);
        const cell = (b: number, e: number, d: number) => `${mb(b)} · ${ms(e)} · ${ms(d)}`;
        console.log(
          `| ${label} | ${n} | ${cell(allBytes.length, all.ms, dAll.ms)} | ${cell(lowerBytes.length, lower.ms, dLower.ms)} | ${cell(gz.value.length, lower.ms + gz.ms, dGz.ms)} | ${mb(bytes)} MB in ${ms(median(loop))} (${Math.round(bytes / 1e3 / median(loop))} MB/s) |`,
        );
      }
    } finally {
      await model.dispose();
    }
  }
  console.log('');
}

async function loadSection(url: string, server: Awaited<ReturnType<typeof startServer>>): Promise<void> {
  const rss = () => `${Math.round(process.memoryUsage().rss / 2 ** 20)} MB`;
  console.log(`### 50 concurrent clients (embedded model, 50 different 64-token texts each round, qk + predictions); resident memory of the process (server + client) before: ${rss()}`);
  const model = await loadModel(undefined, { graphCache: false });
  for (let round = 0; round < 3; round++) {
    const texts = await Promise.all(Array.from({ length: 50 }, (_, i) => textOf(model, 64, 1000 * (round + 1) + i)));
    const t0 = performance.now();
    const results = await Promise.allSettled(texts.map((text) => timeRequest(url, { model: 'default', text, taps: { qk: true, topK: 5 } })));
    const failed = results.filter((r) => r.status === 'rejected').length;
    console.log(`- round ${round + 1}: ${50 - failed} of 50 complete, ${failed} failed, ${Math.round(performance.now() - t0)} ms for all; resident memory after: ${rss()} (result cache ${(server.traces.cache.bytes / 2 ** 20).toFixed(1)} MB in ${server.traces.cache.size} entries)`);
  }
  await model.dispose();
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(os.tmpdir(), 'attnscope-bench-serve-'));
  try {
    await writeBertBase(join(dir, 'bert-base'));
    if (wants('append') || wants('encoding')) await writeGpt2Small(join(dir, 'gpt2-small'));
    // The keystroke section starts its own servers with the built app (npm run build).
    const server = await startServer({ port: 0, folders: [dir], hfCache: false, graphCache: false, bundle: { js: '', css: '' }, limits: { maxTokens: 512 } });
    const bundle = await loadViewBundle();
    console.log(`attnscope serve — ${os.availableParallelism()} cores, Node ${process.version}, load average ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
    console.log('');
    try {
      if (wants('keystroke')) await keystrokeSection(dir, bundle);
      if (wants('append')) await appendSection(server.url, server, dir);
      if (wants('api')) await apiSection(server.url, dir, bundle);
      if (wants('load')) await loadSection(server.url, server);
      if (wants('encoding')) await encodingSection(server.url, dir);
    } finally {
      await server.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
