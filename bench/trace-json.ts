/**
 * JSON trace writing speed: the same BERT-base-shaped trace (12 layers × 12 heads, 142 tokens:
 * 2.9 M attention values, and 4.1 M numbers with queries and keys) written to a file the way
 * attnscope wrote it before (a string per number from toPrecision, joined per row, streamed as
 * strings) and the way it does now (io/json-writer.ts: digits written straight into byte chunks).
 * Each write runs in a fresh process, as `attnscope trace --out trace.json` does (the JIT starts
 * cold); median of 3, as wall time and as CPU time of the process (user + system, all threads: on
 * a machine shared with other work the CPU time is the steadier figure). Both files are read back
 * and checked value for value.
 *
 *   npm run build && node dist/bench/trace-json.js
 */
import { execFileSync } from 'node:child_process';
import { createWriteStream, mkdtempSync, rmSync, statSync } from 'node:fs';
import { once } from 'node:events';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LayerStack, StackMap, Trace } from '../src/core/trace.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';
import { syntheticTrace } from './synthetic-trace.js';

const SELF = fileURLToPath(import.meta.url);
const TOKENS = 142;

// --- the previous writer (commit 17e1c94), kept here as the baseline --------------------------

function oldFormatFloat32(x: number): string {
  if (x === 0) return '0';
  let v = Number(x.toPrecision(7));
  if (Math.fround(v) !== x) {
    v = Number(x.toPrecision(8));
    if (Math.fround(v) !== x) v = Number(x.toPrecision(9));
  }
  return String(v);
}

function* oldStackJson(stack: LayerStack): Generator<string> {
  const [d0, rows, cols] = stack.dims;
  yield '[';
  for (let l = 0; l < stack.layers.length; l++) {
    const layer = stack.layers[l]!;
    if (l > 0) yield ',';
    yield '[';
    for (let h = 0; h < d0; h++) {
      if (h > 0) yield ',';
      yield '[';
      for (let r = 0; r < rows; r++) {
        const base = (h * rows + r) * cols;
        const row: string[] = new Array<string>(cols);
        for (let c = 0; c < cols; c++) row[c] = oldFormatFloat32(layer[base + c]!);
        yield (r > 0 ? ',[' : '[') + row.join(',') + ']';
      }
      yield ']';
    }
    yield ']';
  }
  yield ']';
}

function* oldStackMapJson(map: StackMap): Generator<string> {
  yield '{';
  let first = true;
  for (const name of ['self', 'encoder', 'decoder', 'cross'] as const) {
    const stack = map[name];
    if (!stack) continue;
    yield `${first ? '' : ','}${JSON.stringify(name)}:`;
    first = false;
    yield* oldStackJson(stack);
  }
  yield '}';
}

function* oldTraceJsonChunks(trace: Trace): Generator<string> {
  yield `{"format":"attnscope-trace","version":1,"model":${JSON.stringify(trace.model)},"tokens":${JSON.stringify(trace.tokens)}`;
  yield ',"attention":';
  yield* oldStackMapJson(trace.attention);
  if (trace.queries) {
    yield ',"queries":';
    yield* oldStackMapJson(trace.queries);
  }
  if (trace.keys) {
    yield ',"keys":';
    yield* oldStackMapJson(trace.keys);
  }
  yield '}\n';
}

async function oldWrite(path: string, trace: Trace): Promise<void> {
  const stream = createWriteStream(path);
  for (const chunk of oldTraceJsonChunks(trace)) if (!stream.write(chunk)) await once(stream, 'drain');
  stream.end();
  await once(stream, 'finish');
}

// --- measurement -------------------------------------------------------------------------------

const countNumbers = (trace: Trace): number =>
  [trace.attention, trace.queries ?? {}, trace.keys ?? {}].reduce((n, map) => n + Object.values(map).reduce((m, s) => m + s.layers.reduce((a, l) => a + l.length, 0), 0), 0);

/** Child process: builds the trace, writes it one way, prints the write time in ms. */
async function child(method: string, qk: boolean, path: string): Promise<void> {
  const trace = syntheticTrace({ tokens: TOKENS, qk });
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  if (method === 'old') await oldWrite(path, trace);
  else await writeTraceFile(path, trace);
  const cpu = process.cpuUsage(c0);
  process.stdout.write(JSON.stringify({ wall: performance.now() - t0, cpu: (cpu.user + cpu.system) / 1000 }));
}

function timeChild(method: string, qk: boolean, path: string): { wall: number; cpu: number } {
  const runs: { wall: number; cpu: number }[] = [];
  for (let i = 0; i < 3; i++) {
    runs.push(JSON.parse(execFileSync(process.execPath, [...process.execArgv, SELF, '--child', method, String(qk), path], { encoding: 'utf8' })) as { wall: number; cpu: number });
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[1]!;
  return { wall: median(runs.map((r) => r.wall)), cpu: median(runs.map((r) => r.cpu)) };
}

function sameValues(a: StackMap | undefined, b: StackMap | undefined): boolean {
  for (const name of ['self'] as const) {
    const x = a?.[name];
    const y = b?.[name];
    if (!x || !y) return x === y;
    for (let l = 0; l < x.layers.length; l++) {
      const p = x.layers[l]!;
      const q = y.layers[l]!;
      for (let i = 0; i < p.length; i++) if (!Object.is(p[i], q[i])) return false;
    }
  }
  return true;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(os.tmpdir(), 'attnscope-json-bench-'));
  try {
    console.log(`attnscope JSON trace writing — BERT-base shape, ${TOKENS} tokens, ${os.availableParallelism()} cores, Node ${process.version}`);
    console.log('');
    console.log('| trace | numbers | file size | before (toPrecision strings): wall / CPU | now (json-writer): wall / CPU | speed-up wall / CPU |');
    console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
    for (const qk of [false, true]) {
      const trace = syntheticTrace({ tokens: TOKENS, qk });
      const n = countNumbers(trace);
      const oldPath = join(dir, `old-${qk}.json`);
      const newPath = join(dir, `new-${qk}.json`);
      const tOld = timeChild('old', qk, oldPath);
      const tNew = timeChild('new', qk, newPath);
      const back = await readTraceFile(newPath);
      const backOld = await readTraceFile(oldPath);
      for (const [label, t] of [['new', back], ['old', backOld]] as const) {
        if (!sameValues(t.attention, trace.attention) || !sameValues(t.queries, trace.queries) || !sameValues(t.keys, trace.keys)) {
          throw new Error(`${label} JSON does not read back exactly`);
        }
      }
      const mps = (t: { wall: number; cpu: number }) => `${(n / t.wall / 1e3).toFixed(2)} / ${(n / t.cpu / 1e3).toFixed(2)} M/s (${(t.wall / 1000).toFixed(2)} s)`;
      const sizes = `${(statSync(oldPath).size / 1e6).toFixed(1)} → ${(statSync(newPath).size / 1e6).toFixed(1)} MB`;
      console.log(`| attention${qk ? ' + queries/keys' : ''} | ${(n / 1e6).toFixed(2)} M | ${sizes} | ${mps(tOld)} | ${mps(tNew)} | ${(tOld.wall / tNew.wall).toFixed(1)}× / ${(tOld.cpu / tNew.cpu).toFixed(1)}× |`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--child') {
  child(process.argv[3]!, process.argv[4] === 'true', process.argv[5]!).catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
} else {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
