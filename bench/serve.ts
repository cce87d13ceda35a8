/**
 * `attnscope serve` latency and memory: from sending POST /api/trace to the first layer received
 * and to the whole trace received (a Node client on loopback, reading the binary stream), against
 * producing the standalone HTML of the same input in the same process (model.trace + the page);
 * for the embedded model and a bert-base-sized checkpoint (random weights, bert-base-uncased's
 * tokenizer) at 128 and 512 tokens, with queries and keys (the neuron view's) and the top-5
 * predictions, as the app asks. Then 50 concurrent clients with different texts, twice, and the
 * process's resident memory after each round.
 *
 *   npx tsx bench/serve.ts
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { deflateRawSync } from 'node:zlib';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { writeSafetensors, type SafetensorsTensorInput } from '../src/io/safetensors.js';
import { FrameReader, type TraceRequest } from '../src/server/protocol.js';
import { startServer } from '../src/server/serve.js';
import type { AttnTokenizer } from '../src/tokenizer/load-tokenizer.js';
import { loadViewBundle } from '../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../src/views/html/standalone.js';
import { BERT_BASE_CONFIG, bertBaseWeights } from './bert-base.js';

const ROOT = join(fileURLToPath(import.meta.url), '..', '..');
const TOKENIZER = join(ROOT, 'test', 'fixtures', 'tokenizers', 'bert-base-uncased');
const WORDS = 'the quick brown fox jumps over the lazy dog near the river bank while a small bird sings in the old oak tree and children play'.split(' ');
const RUNS = 5;

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function writeBertBase(dir: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const tensors: SafetensorsTensorInput[] = [];
  for (const [name, t] of bertBaseWeights('bert.')) tensors.push({ name, dtype: 'F32', shape: t.shape, data: t.data });
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...BERT_BASE_CONFIG, architectures: ['BertModel'] }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(TOKENIZER, f), join(dir, f));
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
  const t0 = performance.now();
  const res = await fetch(new URL('/api/trace', url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(req) });
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

async function main(): Promise<void> {
  const dir = mkdtempSync(join(os.tmpdir(), 'attnscope-bench-serve-'));
  try {
    await writeBertBase(join(dir, 'bert-base'));
    const server = await startServer({ port: 0, folders: [dir], hfCache: false, graphCache: false, bundle: { js: '', css: '' }, limits: { maxTokens: 512 } });
    const bundle = await loadViewBundle();
    console.log(`attnscope serve — ${os.availableParallelism()} cores, Node ${process.version}; median of ${RUNS} runs (each run a text not traced before), qk + top-5 predictions as the app asks`);
    console.log('');
    console.log('| model | tokens | server: first layer received | server: whole trace received | bytes sent | standalone HTML produced (trace + page) |');
    console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
    for (const [label, id, local] of [
      ['stories260k (embedded)', 'default', undefined],
      ['bert-base shape (random weights)', 'folder:0/bert-base', join(dir, 'bert-base')],
    ] as const) {
      const model = await loadModel(local, { graphCache: false });
      try {
        for (const n of [128, 512]) {
          const texts = await Promise.all(Array.from({ length: RUNS + 1 }, (_, i) => textOf(model, n, i)));
          const taps = { qk: true, topK: 5 };
          await timeRequest(server.url, { model: id, text: texts[RUNS]!, taps }); // warm-up: load, graph
          const runs = [];
          for (let i = 0; i < RUNS; i++) runs.push(await timeRequest(server.url, { model: id, text: texts[i]!, taps }));
          // A masked LM predicts only at [MASK] (the server leaves predictions out for a text without one).
          const options = model.info.kind === 'encoder' ? { qk: true } : { qk: true, topK: 5 };
          await model.trace(texts[RUNS]!, options);
          const page: number[] = [];
          for (let i = 0; i < RUNS; i++) {
            const t0 = performance.now();
            const trace = await model.trace(texts[i]!, options);
            await renderStandaloneHtml(trace, { bundle, text: texts[i]!, deflate: (d) => deflateRawSync(d, { level: 6 }) });
            page.push(performance.now() - t0);
          }
          const ms = (x: number) => `${Math.round(x)} ms`;
          console.log(`| ${label} | ${n} | ${ms(median(runs.map((r) => r.first)))} | ${ms(median(runs.map((r) => r.all)))} | ${(median(runs.map((r) => r.bytes)) / 1e6).toFixed(1)} MB | ${ms(median(page))} |`);
        }
      } finally {
        await model.dispose();
      }
    }
    console.log('');
    const rss = () => `${Math.round(process.memoryUsage().rss / 2 ** 20)} MB`;
    console.log(`50 concurrent clients (embedded model, 50 different 64-token texts each round, qk + predictions); resident memory of the process (server + client) before: ${rss()}`);
    const model = await loadModel(undefined, { graphCache: false });
    for (let round = 0; round < 3; round++) {
      const texts = await Promise.all(Array.from({ length: 50 }, (_, i) => textOf(model, 64, 1000 * (round + 1) + i)));
      const t0 = performance.now();
      const results = await Promise.allSettled(texts.map((text) => timeRequest(server.url, { model: 'default', text, taps: { qk: true, topK: 5 } })));
      const failed = results.filter((r) => r.status === 'rejected').length;
      console.log(`- round ${round + 1}: ${50 - failed} of 50 complete, ${failed} failed, ${Math.round(performance.now() - t0)} ms for all; resident memory after: ${rss()} (result cache ${(server.traces.cache.bytes / 2 ** 20).toFixed(1)} MB in ${server.traces.cache.size} entries)`);
    }
    await model.dispose();
    await server.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
