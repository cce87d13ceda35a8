/**
 * `attnscope heads` on a trace file large enough for the worker threads (bert-base-shaped, 12 × 12
 * heads at 240 tokens: 8.3 M weights, above the command's threshold), as a real process: its CSV is
 * the one-thread table's (`--threads 1`) digit for digit, and both equal the table computed here
 * from the same file, so the threads change nothing but the time.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { headTable, headTableCsv } from '../src/analysis/head-types.js';
import { openTraceFile, writeTraceFile } from '../src/io/trace-file.js';
import { syntheticTrace } from '../bench/synthetic-trace.js';
import { runCli } from './helpers/cli.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-heads-threads-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('attnscope heads over worker threads', () => {
  it('a large trace file: the threaded CSV is the one-thread CSV, and the table of the file', async () => {
    const file = join(tmp, 'bert-base-240.safetensors');
    await writeTraceFile(file, syntheticTrace({ tokens: 240, qk: false }));
    const threaded = runCli(tmp, ['heads', file, '--csv'], 300_000);
    expect(threaded.status, threaded.stderr).toBe(0);
    const one = runCli(tmp, ['heads', file, '--csv', '--threads', '1'], 300_000);
    expect(one.status, one.stderr).toBe(0);
    expect(threaded.stdout).toBe(one.stdout);
    const { trace } = await openTraceFile(file);
    expect(threaded.stdout).toBe(headTableCsv(headTable(trace)));
    expect(threaded.stdout.trim().split('\n')).toHaveLength(1 + 12 * 12);
  }, 600_000);
});
