/**
 * Cold-start benchmark: process start to result of `attnscope trace` on a bert-base-sized
 * checkpoint on disk (random weights, the real bert-base-uncased tokenizer), 152 tokens,
 * attention of every layer and head written as a .safetensors trace: without the graph cache
 * (the baseline), the first run that fills the cache, and later runs that use it. Then --qk and
 * JSON output, for comparison in the same run.
 *
 *   npm run build && node dist/bench/cold-trace.js
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSafetensors, type SafetensorsTensorInput, type WritableDType } from '../src/io/safetensors.js';
import { bertBaseWeights, BERT_BASE_CONFIG } from './bert-base.js';

const ROOT = join(fileURLToPath(import.meta.url), '..', '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const TOKENIZER = join(ROOT, 'test', 'fixtures', 'tokenizers', 'bert-base-uncased');
const TEXT = 'The quick brown fox jumps over the lazy dog near the river bank, while a small bird sings in the old oak tree. '.repeat(6);

/** Bytes of every file below `dir`. */
function du(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) n += e.isDirectory() ? du(join(dir, e.name)) : statSync(join(dir, e.name)).size;
  return n;
}

/** A bert-base checkpoint on disk with its weights in `dtype`. */
async function writeCheckpoint(dir: string, dtype: WritableDType): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const tensors: SafetensorsTensorInput[] = [];
  for (const [name, t] of bertBaseWeights('bert.')) tensors.push({ name, dtype, shape: t.shape, data: t.data });
  await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...BERT_BASE_CONFIG, architectures: ['BertModel'], torch_dtype: dtype === 'F32' ? 'float32' : dtype === 'F16' ? 'float16' : 'bfloat16' }));
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(TOKENIZER, f), join(dir, f));
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function timeRun(args: string[], cache: string, repeats = 3): number {
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    execFileSync(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ATTNSCOPE_CACHE: cache } });
    times.push(performance.now() - t0);
  }
  return median(times);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(os.tmpdir(), 'attnscope-bert-base-'));
  try {
    await writeCheckpoint(dir, 'F32');
    const out = join(dir, 'trace');
    console.log(`attnscope cold-start benchmark — random bert-base checkpoint on disk (440 MB safetensors), ${os.availableParallelism()} cores, Node ${process.version}`);
    console.log('');
    console.log('| command (process start to result; median of 3 unless a first run) | time |');
    console.log('| --- | ---: |');
    const cache = join(dir, 'graph-cache');
    const trace = ['trace', dir, '--text', TEXT, '--truncate'];
    const rows: [string, string[], string, number][] = [
      ['`attnscope trace <bert-base> --text <152 tokens> --out trace.safetensors`, no graph cache (baseline)', [...trace, '--out', `${out}.safetensors`], 'off', 3],
      ['same, first run: fills the graph cache', [...trace, '--out', `${out}.safetensors`], cache, 1],
      ['same, later runs: from the graph cache', [...trace, '--out', `${out}.safetensors`], cache, 3],
      ['same, with `--qk` (first run of that graph; weights already cached)', [...trace, '--qk', '--out', `${out}-qk.safetensors`], cache, 1],
      ['same, JSON output (3.3 M numbers as text), from the cache', [...trace, '--out', `${out}.json`], cache, 3],
      ['`attnscope --help` (Node start-up and imports only)', ['--help'], 'off', 3],
    ];
    for (const [label, args, where, repeats] of rows) console.log(`| ${label} | ${(timeRun(args, where, repeats) / 1000).toFixed(2)} s |`);
    console.log('');
    console.log('Graph cache on disk per checkpoint dtype (16-bit weights stay 16-bit, with a Cast onnxruntime folds at session creation):');
    console.log('');
    console.log('| checkpoint weights | safetensors size | graph cache size | first run (fills the cache) | later runs (median of 3) |');
    console.log('| --- | ---: | ---: | ---: | ---: |');
    for (const dtype of ['F32', 'F16', 'BF16'] as const) {
      const ckpt = join(dir, `ckpt-${dtype}`);
      await writeCheckpoint(ckpt, dtype);
      const dtypeCache = join(dir, `cache-${dtype}`);
      const args = ['trace', ckpt, '--text', TEXT, '--truncate', '--out', `${out}-${dtype}.safetensors`];
      const first = timeRun(args, dtypeCache, 1);
      const later = timeRun(args, dtypeCache, 3);
      const mb = (n: number) => `${(n / 1e6).toFixed(0)} MB`;
      console.log(`| ${dtype} | ${mb(statSync(join(ckpt, 'model.safetensors')).size)} | ${mb(du(dtypeCache))} | ${(first / 1000).toFixed(2)} s | ${(later / 1000).toFixed(2)} s |`);
      rmSync(ckpt, { recursive: true, force: true });
    }
    console.log('');
    console.log('Python reference (DESIGN.md, same machine type): import + load + forward of bert-base ≈ 4 s.');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
