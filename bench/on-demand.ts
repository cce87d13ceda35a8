/**
 * Long contexts, attention on demand (issue 13.1): time and peak memory of a trace at 2k and 8k
 * tokens on random-weight Llama-shaped models built in memory, with attention on demand (queries,
 * keys and score terms; no probabilities leave the graph) against dense attention (every
 * probability) where it fits; then what reading attention on demand costs (one 512 × 512 head, a
 * 256-row band of an 8k-token head, a whole head, a streamed 64 × 64 thumbnail of a head), with the
 * WebAssembly kernel and with the JavaScript loops, and the size of the .safetensors trace.
 *
 * Each case runs in its own process; the parent polls its resident memory (/proc/<pid>/status) and
 * stops it above --limit GB (default 6: the machine is shared), reporting the case as not fitting.
 *
 *   npm run bench:on-demand [-- --limit 6] [-- --cases name:tokens:mode,...]
 */
import { headThumbnail } from '../src/analysis/attention-summaries.js';
import { attentionSource } from '../src/core/attention-on-demand.js';
import { Model } from '../src/engine/model.js';
import { memoryWeightStore } from '../src/io/memory-weights.js';
import { ModelConfig } from '../src/models/config.js';
import { architectureFor } from '../src/models/registry.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { llamaWeights, type LlamaShape } from './random-weights.js';
import { spawnCase } from './child-case.js';
import { attentionCase, caseIds, caseOptions, casesLine, fixed0 as f0, fixedSmall as f1, loadAverage, stoppedRow } from './cli-args.js';
import { peakMb, rssMb, timeTraceWrite, traceBytes } from './measure.js';

/**
 * 'llama1b-4l': Llama-3.2-1B's attention (hidden 2048, 32 heads, 8 kv heads, head size 64) with 4 of
 * its 16 layers, FFN 4096 and a vocabulary of 8192 (0.6 GB of float32 weights: the shared machine's
 * budget); 'small': 4 layers, hidden 256, 4 heads / 2 kv heads (8k tokens fit dense attention's
 * graph buffers within the budget).
 */
const SHAPES: Record<string, LlamaShape> = {
  'llama1b-4l': { layers: 4, hidden: 2048, heads: 32, kv: 8, ffn: 4096, vocab: 8192 },
  small: { layers: 4, hidden: 256, heads: 4, kv: 2, ffn: 512, vocab: 8192 },
};

const DEFAULT_CASES = [
  'small:2048:dense', 'small:2048:on-demand', 'small:8192:dense', 'small:8192:on-demand',
  'llama1b-4l:2048:dense', 'llama1b-4l:2048:on-demand', 'llama1b-4l:8192:on-demand',
];

function modelOf(name: string): Model {
  const s = SHAPES[name];
  if (!s) throw new Error(`unknown shape ${name} (${Object.keys(SHAPES).join(', ')})`);
  const config = new ModelConfig({
    model_type: 'llama', hidden_size: s.hidden, num_attention_heads: s.heads, num_key_value_heads: s.kv,
    num_hidden_layers: s.layers, intermediate_size: s.ffn, vocab_size: s.vocab, max_position_embeddings: 131072,
    rms_norm_eps: 1e-5, rope_theta: 500000, tie_word_embeddings: false, eos_token_id: -1,
  }, `bench ${name} config`);
  return new Model({ name: `random-${name}`, config, architecture: architectureFor('llama'), tokenizer: null, weights: memoryWeightStore(llamaWeights(s, 11)), runtime: nodeRuntime });
}

const ms = (t0: number): number => performance.now() - t0;
/** CPU milliseconds (user + system, every thread of the process) since `c0`. */
const cpuMs = (c0: NodeJS.CpuUsage): number => {
  const c = process.cpuUsage(c0);
  return (c.user + c.system) / 1000;
};

/** One case in this process: prints one JSON line. */
async function runCase(spec: string): Promise<void> {
  const [shape, tokensText, mode] = attentionCase(spec);
  const n = Number(tokensText);
  const model = modelOf(shape);
  const ids = caseIds(n, SHAPES[shape]!.vocab);
  const afterWeights = rssMb();
  const t0 = performance.now();
  let c0 = process.cpuUsage();
  const trace = await model.trace(null, { ids, attention: mode });
  const traceMs = ms(t0);
  const traceCpuMs = cpuMs(c0);
  const peakTrace = peakMb();
  const bytes = traceBytes(trace);
  const result: Record<string, unknown> = { spec, traceMs, traceCpuMs, peakTraceMb: peakTrace, rssWeightsMb: afterWeights, attentionMb: bytes.attention / 2 ** 20, qkMb: bytes.qk / 2 ** 20 };
  Object.assign(result, await timeTraceWrite(trace));
  if (mode === 'on-demand') {
    // CPU time of this single-threaded computation (the machine is shared: wall time varies with its load).
    const time = (f: () => unknown, runs = 3): number => {
      const t: number[] = [];
      for (let i = 0; i < runs; i++) {
        const s = process.cpuUsage();
        f();
        t.push(cpuMs(s));
      }
      return t.sort((a, b) => a - b)[Math.floor(runs / 2)]!;
    };
    // The same reads with the JavaScript loops and with the WebAssembly kernel, interleaved (same load).
    for (const kernel of ['js', 'wasm'] as const) {
      const source = attentionSource(trace, 'self', { kernel });
      const last = source.numLayers - 1;
      source.block(last, 0, n - 64, n, 0, n); // warm-up
      const at = (name: string, v: number) => (result[`${name}${kernel === 'js' ? 'Js' : ''}`] = v);
      at('band256Ms', time(() => source.block(last, 1, n - 256, n, 0, n)));
      at('headMs', time(() => source.block(last, 2, 0, n, 0, n), 1));
      if (n >= 512) at('head512Ms', time(() => source.block(last, 3, n - 512, n, n - 512, n)));
      const thumbHeads = Math.min(4, source.numHeads);
      c0 = process.cpuUsage();
      for (let h = 0; h < thumbHeads; h++) headThumbnail(source, last, h, { size: 64 });
      at('thumbnailMs', cpuMs(c0) / thumbHeads);
    }
    result.peakAllMb = peakMb();
  }
  await model.dispose();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

/** "wasm / js (×speed-up)". */
const pair = (wasm: unknown, js: unknown): string => (typeof wasm === 'number' && typeof js === 'number' ? `${f0(wasm)} / ${f0(js)} (×${(js / wasm).toFixed(1)})` : '–');

async function main(): Promise<void> {
  const { one, limitMb, cases } = caseOptions(DEFAULT_CASES);
  if (one) return runCase(one);
  console.log(`attnscope attention on demand — random Llama-shaped models (${Object.entries(SHAPES).map(([k, s]) => `${k}: ${s.layers} layers, hidden ${s.hidden}, ${s.heads}/${s.kv} heads`).join('; ')})`);
  console.log(casesLine(limitMb));
  console.log(`load average at start: ${loadAverage()}; reading times are CPU ms of one thread`);
  console.log('Reading times: the WebAssembly kernel (the default) / the JavaScript loops (its fallback), measured in the same process one after the other (JavaScript first).');
  console.log('| case | trace s wall (CPU) | peak RSS MB | attention MB | q/k MB | file MB | 256-row band ms wasm / js | whole head ms wasm / js | last 512×512 block ms wasm / js | 64×64 thumbnail ms per head wasm / js |');
  console.log('| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: |');
  for (const spec of cases) {
    const r = await spawnCase(import.meta.url, spec, limitMb);
    if (r.stopped) {
      console.log(stoppedRow(spec, r.stopped, 8));
      continue;
    }
    console.log(`| ${spec} | ${f1((r.traceMs as number) / 1000)} (${f1((r.traceCpuMs as number) / 1000)}) | ${f0(r.polledPeakMb)} | ${f0(r.attentionMb)} | ${f0(r.qkMb)} | ${f1(r.fileMb)} | ${pair(r.band256Ms, r.band256MsJs)} | ${pair(r.headMs, r.headMsJs)} | ${pair(r.head512Ms, r.head512MsJs)} | ${pair(r.thumbnailMs, r.thumbnailMsJs)} |`);
  }
}

await main();
