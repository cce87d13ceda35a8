/**
 * Position biases in on-demand traces at 4,096 tokens (issue 13.6): trace file size, the bias the trace
 * holds and peak RSS, for a BLOOM-560m-shaped model (hidden 1024, 16 heads, ALiBi; 2 of its 24 layers)
 * and a t5-small-shaped one (d_model 512, 8 heads, relative buckets; 2 + 2 layers), random weights.
 * Each case runs in a child process (bench/child-case.ts: VmRSS polled, stopped above --limit MB),
 * once with this tree's sources and once with an earlier revision's (--before REV, default the commit
 * before the compact forms; `HEAD-E3`: HEAD with the files the compact forms changed as they were
 * before them, so later changes by others count on both sides), unpacked with `git archive` into a
 * temporary folder and imported from there:
 * the same script, the same inputs, in the same run.
 *
 * 'bloom-gen' / 't5-gen': generation on demand of 16 new tokens after the prompt (t5: after the
 * prompt as the encoder's input).
 *
 * `--after REV`: the after side from that revision too (default: this tree), e.g. to leave out others'
 * uncommitted edits. 'bloom' takes `--bloom-layers` of BLOOM-560m's 24 layers (default 2).
 *
 *   npx tsx bench/position-bias.ts [--tokens 4096] [--before 6a4a97e] [--after REV] [--limit 5800] [--cases bloom,t5,bloom-gen] [--bloom-layers 2]
 */
import { execSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { FloatTensor } from '../src/core/tensor.js';
import type { ScoreTerms, Trace } from '../src/core/trace.js';
import { spawnCase } from './child-case.js';
import { fixed0, fixedSmall, loadAverage, machineLine, option } from './cli-args.js';
import { peakMb } from './measure.js';
import { randomTensor } from './random-weights.js';

const HERE = dirname(fileURLToPath(import.meta.url));
const MAIN = join(HERE, '..');

/** Fixture tensor shapes scaled to a real model's: each fixture size maps to the real one. */
const SHAPES = {
  bloom: {
    fixture: 'bloom',
    config: { n_head: 16, hidden_size: 1024, n_layer: 2 },
    // hidden 32 → 1024, 3·hidden, 4·hidden; the vocabulary (710) stays.
    dims: { 32: 1024, 96: 3072, 128: 4096 } as Record<number, number>,
  },
  t5: {
    fixture: 't5',
    config: { num_heads: 8, d_model: 512, d_kv: 64, d_ff: 2048, num_layers: 2, num_decoder_layers: 2 },
    dims: { 32: 512, 64: 2048 } as Record<number, number>,
  },
} as const;

type ShapeName = keyof typeof SHAPES;

/** `--before HEAD-E3`: HEAD with these files as they were at E3_BASE (the commit before the compact forms). */
const E3_BASE = '6a4a97e';
const E3_FILES = [
  'src/core/trace.ts', 'src/core/trace-format.ts', 'src/io/trace-file.ts', 'src/core/attention-on-demand.ts', 'src/core/wasm/attention-kernel.ts',
  'src/engine/scores.ts', 'src/generation/decode.ts', 'src/analysis/neuron.ts', 'src/analysis/attention-summaries.ts',
  'src/views/html/standalone.ts', 'src/models/bloom.ts', 'src/models/falcon.ts',
];
/** A case: a shape traced on demand, or ('-gen') generating NEW_TOKENS after the prompt on demand. */
type CaseName = ShapeName | `${ShapeName}-gen`;
const NEW_TOKENS = 16;

/** One case in this process (sources from `root`): prints one JSON line. */
async function runCase(spec: string): Promise<void> {
  const [caseName, tokensText, root, layersText] = spec.split('|') as [CaseName, string, string, string | undefined];
  const generate = caseName.endsWith('-gen');
  const name = caseName.replace(/-gen$/, '') as ShapeName;
  const n = Number(tokensText);
  const s = SHAPES[name];
  const src = (p: string): string => pathToFileURL(join(root, 'src', p)).href;
  const { Model } = (await import(src('engine/model.js'))) as typeof import('../src/engine/model.js');
  const { memoryWeightStore } = (await import(src('io/memory-weights.js'))) as typeof import('../src/io/memory-weights.js');
  const { openSafetensors } = (await import(src('io/safetensors.js'))) as typeof import('../src/io/safetensors.js');
  const { writeTraceFile } = (await import(src('io/trace-file.js'))) as typeof import('../src/io/trace-file.js');
  const { ModelConfig } = (await import(src('models/config.js'))) as typeof import('../src/models/config.js');
  const { architectureFor } = (await import(src('models/registry.js'))) as typeof import('../src/models/registry.js');
  const { nodeRuntime } = (await import(src('runtime/onnxruntime-node.js'))) as typeof import('../src/runtime/onnxruntime-node.js');
  const fixture = join(MAIN, 'test', 'fixtures', s.fixture);
  const raw = JSON.parse((await import('node:fs')).readFileSync(join(fixture, 'config.json'), 'utf8')) as Record<string, unknown>;
  const config = new ModelConfig({ ...raw, ...s.config, ...(name === 'bloom' && layersText ? { n_layer: Number(layersText) } : {}) }, `bench ${name} config`);
  // Every fixture tensor at the real shape (relative_attention_bias: [buckets, heads]).
  const file = await openSafetensors(join(fixture, 'model.safetensors'));
  const weights = new Map<string, FloatTensor>();
  let seed = 1;
  for (const tensor of file.names()) {
    const shape = [...(await file.get(tensor)).shape];
    const scaled = tensor.endsWith('relative_attention_bias.weight') ? [shape[0]!, (s.config as { num_heads?: number }).num_heads ?? shape[1]!] : shape.map((d) => s.dims[d] ?? d);
    weights.set(tensor, tensor.includes('layernorm.weight') || tensor.includes('layer_norm.weight') ? { shape: scaled, data: new Float32Array(scaled.reduce((a, b) => a * b, 1)).fill(1) } : randomTensor(scaled, seed++, 0.05));
  }
  await file.close();
  // More layers than the fixture's 2: layer l's tensors shaped as layer l mod 2's, their own random values.
  const wanted = name === 'bloom' && layersText ? Number(layersText) : 0;
  for (const [tensor, t] of [...weights]) {
    const m = /^(.*\bh\.)(\d+)(\..*)$/.exec(tensor);
    if (!m) continue;
    for (let l = Number(m[2]) + 2; l < wanted; l += 2) {
      const copy = `${m[1]}${l}${m[3]}`;
      weights.set(copy, tensor.includes('layernorm.weight') ? t : randomTensor([...t.shape], seed++, 0.05));
    }
  }
  const model = new Model({ name: `random-${name}`, config, architecture: architectureFor(raw.model_type as string), tokenizer: null, weights: memoryWeightStore(weights), runtime: nodeRuntime });
  // Trees before the per-band biases cap models without a position limit (ALiBi, relative buckets) at
  // the tokens whose dense attention fits 1 GiB (engine/model.ts tracedTokenLimit), on demand too:
  // lifted there. Later trees (with Model.denseTokenLimit) apply that cap to dense runs only.
  const older = !('denseTokenLimit' in (model as object));
  if (older) for (const d of [model.info, model.architectureInfo]) (d as { maxPositions: number }).maxPositions = Number.POSITIVE_INFINITY;
  const ids = Array.from({ length: n }, (_, i) => 5 + ((i * 7919) % 600));
  const t0 = performance.now();
  const trace: Trace = generate
    ? await model.generate(null, { ids, maxNewTokens: NEW_TOKENS, attention: 'on-demand' })
    : await model.trace(null, name === 't5' ? { ids, decoderIds: ids.slice(0, 8), attention: 'on-demand' } : { ids, attention: 'on-demand' });
  const traceMs = performance.now() - t0;
  const peakTraceMb = peakMb();
  // Distinct bias arrays the trace holds (shared layers once).
  const arrays = new Set<Float32Array>();
  for (const terms of Object.values(trace.scores ?? {}) as (ScoreTerms & { positionBias?: { layers: readonly Float32Array[] } })[]) {
    for (const a of [...(terms.bias?.layers ?? []), ...(terms.positionBias?.layers ?? [])]) arrays.add(a);
  }
  const biasMb = [...arrays].reduce((b, a) => b + a.byteLength, 0) / 2 ** 20;
  const qkMb = [...Object.values(trace.queries ?? {}), ...Object.values(trace.keys ?? {})].reduce((b, st) => b + st.layers.reduce((c, l) => c + l.byteLength, 0), 0) / 2 ** 20;
  const dir = mkdtempSync(join(os.tmpdir(), 'attnscope-bench-position-bias-'));
  let fileMb = 0;
  try {
    const path = join(dir, 't.safetensors');
    await writeTraceFile(path, trace);
    fileMb = statSync(path).size / 2 ** 20;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  await model.dispose();
  console.log(JSON.stringify({ spec, traceMs, peakTraceMb, peakMb: peakMb(), biasMb, qkMb, fileMb }));
}

async function main(): Promise<void> {
  const caseArg = option('--case');
  if (caseArg) return runCase(caseArg);
  const tokens = Number(option('--tokens') ?? 4096);
  const before = option('--before') ?? '6a4a97e';
  const limit = Number(option('--limit') ?? 5800);
  const cases = (option('--cases') ?? 'bloom,t5,bloom-gen').split(',') as CaseName[];
  const bloomLayers = Number(option('--bloom-layers') ?? 2);
  const beforeDir = mkdtempSync(join(os.tmpdir(), 'attnscope-bench-before-'));
  // With HEAD-E3, the after side is HEAD as committed too (not this tree's uncommitted edits).
  const after = option('--after') ?? (before === 'HEAD-E3' ? 'HEAD' : undefined);
  const afterDir = after ? mkdtempSync(join(os.tmpdir(), 'attnscope-bench-after-')) : MAIN;
  try {
    if (afterDir !== MAIN) {
      execSync(`git -C ${JSON.stringify(MAIN)} archive ${after} src package.json | tar -x -C ${JSON.stringify(afterDir)}`);
      symlinkSync(join(MAIN, 'node_modules'), join(afterDir, 'node_modules'));
    }
    if (before === 'HEAD-E3') {
      // HEAD without the compact forms: every file they changed as it was before them (others' later commits kept).
      execSync(`git -C ${JSON.stringify(MAIN)} archive HEAD src package.json | tar -x -C ${JSON.stringify(beforeDir)}`);
      for (const f of E3_FILES) execSync(`git -C ${JSON.stringify(MAIN)} show ${E3_BASE}:${f} > ${JSON.stringify(join(beforeDir, f))}`);
      for (const f of ['src/core/position-bias.ts', 'src/generation/bias-rows.ts']) rmSync(join(beforeDir, f));
    } else execSync(`git -C ${JSON.stringify(MAIN)} archive ${before} src package.json | tar -x -C ${JSON.stringify(beforeDir)}`);
    symlinkSync(join(MAIN, 'node_modules'), join(beforeDir, 'node_modules'));
    const rev = execSync(`git -C ${JSON.stringify(MAIN)} rev-parse --short HEAD`).toString().trim();
    console.log(`${machineLine()}; load ${loadAverage()}; ${tokens} tokens; before = ${before}, after = ${after ?? 'this tree'} (HEAD ${rev}); BLOOM layers ${bloomLayers}`);
    console.log('| model | sources | bias held (MiB) | q/k (MiB) | trace file (MiB) | peak RSS (MB) | trace (s) | load |');
    console.log('| --- | --- | --- | --- | --- | --- | --- | --- |');
    for (const name of cases) {
      for (const [label, root] of [['before', beforeDir], ['after', afterDir]] as const) {
        const r = await spawnCase(import.meta.url, `${name}|${tokens}|${root}|${bloomLayers}`, limit);
        const load = os.loadavg()[0]!.toFixed(1);
        if (r.stopped) console.log(`| ${name} | ${label} | – | – | – | ${String(r.stopped)} | – | ${load} |`);
        else console.log(`| ${name} | ${label} | ${fixedSmall(r.biasMb)} | ${fixedSmall(r.qkMb)} | ${fixedSmall(r.fileMb)} | ${fixed0(Math.max(Number(r.polledPeakMb), Number(r.peakMb)))} | ${fixedSmall(Number(r.traceMs) / 1000)} | ${load} |`);
      }
    }
  } finally {
    rmSync(beforeDir, { recursive: true, force: true });
    if (afterDir !== MAIN) rmSync(afterDir, { recursive: true, force: true });
  }
}

await main();
