/**
 * Cold-start benchmark: process start to result of `attnscope trace` on a bert-base-sized
 * checkpoint on disk (random weights, the real bert-base-uncased tokenizer), 128 tokens,
 * attention of every layer and head written as a .safetensors trace. The same checkpoint is
 * then traced with --qk and to JSON, for comparison in the same run.
 *
 *   npm run build && node dist/bench/cold-trace.js
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeSafetensors, type SafetensorsTensorInput } from '../src/io/safetensors.js';
import { bertBaseWeights, BERT_BASE_CONFIG } from './bert-base.js';

const ROOT = join(fileURLToPath(import.meta.url), '..', '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const TOKENIZER = join(ROOT, 'test', 'fixtures', 'tokenizers', 'bert-base-uncased');
const TEXT = 'The quick brown fox jumps over the lazy dog near the river bank, while a small bird sings in the old oak tree. '.repeat(6);

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function timeRun(args: string[], repeats = 3): number {
  const times: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const t0 = performance.now();
    execFileSync(process.execPath, [CLI, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    times.push(performance.now() - t0);
  }
  return median(times);
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(os.tmpdir(), 'attnscope-bert-base-'));
  try {
    const tensors: SafetensorsTensorInput[] = [];
    for (const [name, t] of bertBaseWeights('bert.')) tensors.push({ name, dtype: 'F32', shape: t.shape, data: t.data });
    await writeSafetensors(join(dir, 'model.safetensors'), tensors, { format: 'pt' });
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...BERT_BASE_CONFIG, architectures: ['BertModel'] }));
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) copyFileSync(join(TOKENIZER, f), join(dir, f));
    const out = join(dir, 'trace');
    console.log(`attnscope cold-start benchmark — random bert-base checkpoint on disk (440 MB safetensors), ${os.availableParallelism()} cores, Node ${process.version}`);
    console.log('');
    console.log('| command (process start to result, median of 3) | time |');
    console.log('| --- | ---: |');
    const rows: [string, string[]][] = [
      ['`attnscope trace <bert-base> --text <128 tokens> --out trace.safetensors`', ['trace', dir, '--text', TEXT, '--truncate', '--out', `${out}.safetensors`]],
      ['same, with `--qk`', ['trace', dir, '--text', TEXT, '--truncate', '--qk', '--out', `${out}-qk.safetensors`]],
      ['same, JSON output', ['trace', dir, '--text', TEXT, '--truncate', '--out', `${out}.json`]],
      ['`attnscope --help` (Node start-up and imports only)', ['--help']],
    ];
    for (const [label, args] of rows) console.log(`| ${label} | ${(timeRun(args) / 1000).toFixed(2)} s |`);
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
