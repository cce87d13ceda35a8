/**
 * Timing for the bench scripts: wall clock and this process's CPU time, median of several runs;
 * this process's resident memory now and at its peak; the bytes a trace holds and the time it
 * takes to write as a trace file.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import type { Trace } from '../src/core/trace.js';
import { writeTraceFile } from '../src/io/trace-file.js';

export interface Timing {
  /** Milliseconds of wall clock. */
  wall: number;
  /** Milliseconds of CPU (user + system) of this process. */
  cpu: number;
}

/** One run of `f`, timed. */
export async function timeOnce(f: () => unknown): Promise<Timing> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await f();
  const wall = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { wall, cpu: (c.user + c.system) / 1000 };
}

/** The median wall and CPU time of `runs` runs of `f`, after one warm-up run unless `warmUp` is false. */
export async function measure(f: () => unknown, runs: number, warmUp = true): Promise<Timing> {
  if (warmUp) await f();
  const walls: number[] = [];
  const cpus: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t = await timeOnce(f);
    walls.push(t.wall);
    cpus.push(t.cpu);
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  return { wall: median(walls), cpu: median(cpus) };
}

/** This process's resident memory now, in MiB. */
export const rssMb = (): number => process.memoryUsage().rss / 2 ** 20;

/** This process's peak resident memory so far, in MiB. */
export const peakMb = (): number => process.resourceUsage().maxRSS / 1024;

/** Bytes of a trace's attention maps (every stack and layer) and of its per-head queries and keys. */
export function traceBytes(trace: Trace): { attention: number; qk: number } {
  let attention = 0;
  let qk = 0;
  for (const s of Object.values(trace.attention)) for (const l of s.layers) attention += l.byteLength;
  for (const m of [trace.queries, trace.keys]) for (const s of Object.values(m ?? {})) for (const l of s.layers) qk += l.byteLength;
  return { attention, qk };
}

/**
 * Writes `trace` as a `.safetensors` trace file in a scratch folder made under `under` (default
 * the system's temporary folder), deleted after: the wall milliseconds of the write and the file's MiB.
 */
export async function timeTraceWrite(trace: Trace, under = os.tmpdir()): Promise<{ writeMs: number; fileMb: number }> {
  const dir = mkdtempSync(join(under, 'attnscope-bench-trace-'));
  try {
    const file = join(dir, 'trace.safetensors');
    const t0 = performance.now();
    await writeTraceFile(file, trace);
    const writeMs = performance.now() - t0;
    return { writeMs, fileMb: statSync(file).size / 2 ** 20 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
