/**
 * Generation at length (issue 13.6): a 4,096-token prompt and 256 new tokens on a random-weight
 * checkpoint of Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 heads / 2 key-value heads, FFN
 * 4864, vocabulary 151,936, tied embeddings: 494 M parameters), greedy, attention on demand: the
 * prompt pass in bands of query rows, then one position per token against the key/value cache,
 * each token's queries kept and its attention row computed when read. Reports the time of each
 * generated token's run (tokens 1–16 against 241–256: flat?), the resident memory after the prompt,
 * after token 16 and after token 256 (bounded?) and the peak, the time to compute every layer and
 * head of the last token's attention row from the trace, and the .safetensors trace's size; against
 * the dense path (every probability) in the same run where it fits: a 512-token prompt with 64 new
 * tokens both ways (same tokens; rows equal), and the 4,096-token case dense, stopped at the limit.
 *
 * Each case runs in its own process; the parent polls its resident memory (/proc/<pid>/status) and
 * stops it above --limit GB (default 6: the machine is shared). Weights are generated when the
 * graph session reads them (a lazy store), so the process holds one copy: onnxruntime's.
 *
 *   npx tsx bench/generate-long.ts [--limit 6] [--cases prompt:new:mode,...]
 */
import { attentionSource } from '../src/core/attention-on-demand.js';
import type { FloatTensor } from '../src/core/tensor.js';
import { Model } from '../src/engine/model.js';
import type { StoredDType, WeightStore } from '../src/io/weights.js';
import { ModelConfig } from '../src/models/config.js';
import { architectureFor } from '../src/models/registry.js';
import { nodeRuntime } from '../src/runtime/onnxruntime-node.js';
import { randomTensor } from './random-weights.js';
import { spawnCase } from './child-case.js';
import { attentionCase, caseIds, caseOptions, casesLine, fixed0 as f0, fixed1 as f1, loadAverage as load, stoppedRow } from './cli-args.js';
import { peakMb, rssMb, timeTraceWrite, traceBytes } from './measure.js';

/** Qwen2.5-0.5B's shape. */
const QWEN = { layers: 24, hidden: 896, heads: 14, kv: 2, ffn: 4864, vocab: 151936 };

const DEFAULT_CASES = ['512:64:dense', '512:64:on-demand', '4096:256:on-demand', '4096:256:dense'];

interface Spec {
  shape: number[];
  seed: number;
  std: number;
  fill?: number;
}

/**
 * A WeightStore of Qwen2 tensors (names as transformers stores them) generated when read, from a
 * seed per tensor: norms 1, embeddings std 1, q/k projections std 0.05 (attention rows far from
 * uniform), biases and the rest std 0.02.
 */
function lazyQwenWeights(): WeightStore {
  const s = QWEN;
  const headDim = s.hidden / s.heads;
  const specs = new Map<string, Spec>();
  let seed = 31;
  const add = (name: string, shape: number[], std = 0.02, fill?: number): void => void specs.set(name, { shape, seed: seed++, std, ...(fill === undefined ? {} : { fill }) });
  add('model.embed_tokens.weight', [s.vocab, s.hidden], 1);
  add('model.norm.weight', [s.hidden], 0, 1);
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    add(`${p}.input_layernorm.weight`, [s.hidden], 0, 1);
    add(`${p}.post_attention_layernorm.weight`, [s.hidden], 0, 1);
    add(`${p}.self_attn.q_proj.weight`, [s.hidden, s.hidden], 0.05);
    add(`${p}.self_attn.q_proj.bias`, [s.hidden]);
    add(`${p}.self_attn.k_proj.weight`, [s.kv * headDim, s.hidden], 0.05);
    add(`${p}.self_attn.k_proj.bias`, [s.kv * headDim]);
    add(`${p}.self_attn.v_proj.weight`, [s.kv * headDim, s.hidden]);
    add(`${p}.self_attn.v_proj.bias`, [s.kv * headDim]);
    add(`${p}.self_attn.o_proj.weight`, [s.hidden, s.hidden]);
    add(`${p}.mlp.gate_proj.weight`, [s.ffn, s.hidden]);
    add(`${p}.mlp.up_proj.weight`, [s.ffn, s.hidden]);
    add(`${p}.mlp.down_proj.weight`, [s.hidden, s.ffn]);
  }
  const spec = (name: string): Spec => {
    const t = specs.get(name);
    if (!t) throw new Error(`no tensor named '${name}'`);
    return t;
  };
  return {
    names: () => [...specs.keys()],
    has: (name) => specs.has(name),
    shape: (name) => [...spec(name).shape],
    dtype: (): StoredDType => 'F32',
    get: async (name): Promise<FloatTensor> => {
      const t = spec(name);
      if (t.fill === undefined) return randomTensor(t.shape, t.seed, t.std);
      return { shape: t.shape, data: new Float32Array(t.shape.reduce((a, b) => a * b, 1)).fill(t.fill) };
    },
    close: async () => undefined,
  };
}

function qwenModel(): Model {
  const s = QWEN;
  const config = new ModelConfig({
    model_type: 'qwen2', hidden_size: s.hidden, num_attention_heads: s.heads, num_key_value_heads: s.kv,
    num_hidden_layers: s.layers, intermediate_size: s.ffn, vocab_size: s.vocab, max_position_embeddings: 32768,
    rms_norm_eps: 1e-6, rope_theta: 1000000, tie_word_embeddings: true, use_sliding_window: false, eos_token_id: -1,
  }, 'bench qwen2.5-0.5b-shape config');
  return new Model({ name: 'random-qwen2.5-0.5b-shape', config, architecture: architectureFor('qwen2'), tokenizer: null, weights: lazyQwenWeights(), runtime: nodeRuntime });
}

const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/** FNV-1a of the generated ids (the same tokens both ways?). */
function idsHash(ids: readonly number[]): string {
  let h = 0x811c9dc5;
  for (const id of ids) {
    h ^= id;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16);
}

/** One case in this process: prints one JSON line. */
async function runCase(spec: string): Promise<void> {
  const [promptText, newText, mode] = attentionCase(spec);
  const n = Number(promptText);
  const maxNew = Number(newText);
  const model = qwenModel();
  const ids = caseIds(n, QWEN.vocab);
  // Build the session (a 2-token generation) so the timed run measures decoding alone.
  const b0 = performance.now();
  await model.generate(null, { ids: ids.slice(0, 2), maxNewTokens: 1, attention: mode });
  const buildMs = performance.now() - b0;
  // The weights the session was built from are garbage now (the child runs with --expose-gc).
  (globalThis as { gc?: () => void }).gc?.();
  const rssLoaded = rssMb();
  // Time every run: run 0 is the prompt, run i (1…maxNew) the generated token i.
  const runs: number[] = [];
  const rssAt: number[] = [];
  const wrap = <F extends (...a: never[]) => Promise<unknown>>(f: F): F =>
    (async (...a: Parameters<F>) => {
      const t0 = performance.now();
      const out = await f(...a);
      runs.push(performance.now() - t0);
      rssAt.push(rssMb());
      return out;
    }) as F;
  model.run = wrap(model.run.bind(model));
  model.runExtended = wrap(model.runExtended.bind(model));
  const t0 = performance.now();
  const trace = await model.generate(null, { ids, maxNewTokens: maxNew, attention: mode });
  const totalMs = performance.now() - t0;
  const peakGenerate = peakMb();
  const generated = trace.tokens.slice(n).map((t) => t.id);
  const bytes = traceBytes(trace);
  const tokens = runs.slice(1);
  const result: Record<string, unknown> = {
    spec, buildMs, totalMs, promptMs: runs[0], generated: generated.length, idsHash: idsHash(generated),
    first16Ms: mean(tokens.slice(0, 16)), last16Ms: mean(tokens.slice(-16)),
    rssLoadedMb: rssLoaded, rssPromptMb: rssAt[0], rssToken16Mb: rssAt[16], rssLastMb: rssAt[rssAt.length - 1], peakGenerateMb: peakGenerate,
    attentionMb: bytes.attention / 2 ** 20, qkMb: bytes.qk / 2 ** 20,
  };
  // The last token's attention row in every layer and head, as a view reads it.
  const source = attentionSource(trace, 'self');
  const last = source.numQueries - 1;
  const r0 = performance.now();
  let rowSum = 0;
  for (let l = 0; l < source.numLayers; l++) for (let h = 0; h < source.numHeads; h++) rowSum += source.block(l, h, last, last + 1, 0, source.numKeys).reduce((a, b) => a + b, 0);
  result.lastRowAllHeadsMs = performance.now() - r0;
  result.lastRowMeanSum = rowSum / (source.numLayers * source.numHeads);
  Object.assign(result, await timeTraceWrite(trace));
  result.peakAllMb = peakMb();
  await model.dispose();
  process.stdout.write(`${JSON.stringify(result)}\n`);
}


async function main(): Promise<void> {
  const { one, limitMb, cases } = caseOptions(DEFAULT_CASES);
  if (one) return runCase(one);
  const s = QWEN;
  console.log(`attnscope generation at length — random Qwen2.5-0.5B shape (${s.layers} layers, hidden ${s.hidden}, ${s.heads}/${s.kv} heads, FFN ${s.ffn}, vocab ${s.vocab}, tied), greedy`);
  console.log(casesLine(limitMb));
  console.log(`load average at start: ${load()}`);
  console.log('| prompt:new:attention | prompt pass s | per token ms, tokens 1–16 | per token ms, last 16 | RSS MB: loaded / after prompt / after token 16 / after last | peak RSS MB | attention MB | q/k MB | last row, all heads ms | file MB | generated ids | load after |');
  console.log('| --- | --: | --: | --: | --- | --: | --: | --: | --: | --: | --- | --- |');
  for (const spec of cases) {
    const r = await spawnCase(import.meta.url, spec, limitMb, ['--expose-gc']);
    if (r.stopped) {
      console.log(stoppedRow(spec, r.stopped, 9, load()));
      continue;
    }
    const rss = [r.rssLoadedMb, r.rssPromptMb, r.rssToken16Mb, r.rssLastMb].map(f0).join(' / ');
    console.log(`| ${spec} | ${f1((r.promptMs as number) / 1000)} | ${f0(r.first16Ms)} | ${f0(r.last16Ms)} | ${rss} | ${f0(r.polledPeakMb)} | ${f0(r.attentionMb)} | ${f0(r.qkMb)} | ${f0(r.lastRowAllHeadsMs)} | ${f0(r.fileMb)} | ${r.generated as number} (${r.idsHash as string}) | ${load()} |`);
  }
}

await main();
