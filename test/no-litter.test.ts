/**
 * A trace leaves nothing behind and talks to no one: onnxruntime-node 1.30 starts Microsoft's
 * telemetry in every process (an empty `mat-debug-<pid>.log` and a `.ses` file in the temp folder
 * per run, and an uploader) unless ORT_DISABLE_TELEMETRY is set before its binding loads.
 *
 * A real `attnscope trace` process runs with TMPDIR pointing at a fresh empty folder, under
 * `strace` (installed by .ci/run), which records every socket the process or its native libraries
 * open: none may be an Internet socket (AF_INET/AF_INET6). Unix and netlink sockets are local
 * (tsx's IPC probe when the sources run, libc's interface listing).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, ROOT } from './helpers/cli.js';

// strace installed and allowed to trace here (a container may forbid ptrace).
const hasStrace = spawnSync('strace', ['-qq', '-o', '/dev/null', 'true'], { encoding: 'utf8' }).status === 0;
const scratch = mkdtempSync(join(tmpdir(), 'attnscope-litter-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('a trace leaves no litter and opens no network socket', () => {
  it.skipIf(!hasStrace)('runs under strace with an empty TMPDIR', () => {
    const temp = join(scratch, 'tmp');
    const out = join(scratch, 'out');
    for (const d of [temp, out]) mkdirSync(d);
    const log = join(out, 'strace.log');
    const r = spawnSync(
      'strace',
      ['-f', '-qq', '-e', 'trace=execve,socket,connect', '-o', log,
        process.execPath, ...CLI,
        'trace', join(ROOT, 'test', 'fixtures', 'bert'), '--text', 'The cat sat on the mat.', '--out', join(out, 'trace.json')],
      {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 120_000,
        env: {
          ...process.env,
          // Not inherited from a developer's shell: the tool must switch telemetry off itself.
          ORT_DISABLE_TELEMETRY: '',
          TMPDIR: temp,
          HF_HUB_OFFLINE: '1',
          HF_HOME: join(out, 'hf-home'),
          // tsx (when the sources run, the build being older) keeps a compile cache in TMPDIR;
          // the built command has no such cache, so it is off here.
          TSX_DISABLE_CACHE: '1',
        },
      },
    );
    expect(r.stderr).not.toMatch(/internal error/);
    expect(r.status).toBe(0);
    expect(existsSync(join(out, 'trace.json'))).toBe(true);

    // Nothing in the temp folder, not even an empty file.
    expect(readdirSync(temp)).toEqual([]);

    const calls = readFileSync(log, 'utf8').split('\n').filter((l) => l.trim() !== '');
    // Every process the command started: none left a mat-debug log in /tmp either.
    const pids = new Set(calls.filter((l) => /\bexecve\(/.test(l)).map((l) => l.split(/\s+/)[0]!));
    expect(pids.size).toBeGreaterThan(0);
    for (const pid of pids) expect(existsSync(join('/tmp', `mat-debug-${pid}.log`))).toBe(false);

    const sockets = calls.filter((l) => /\b(socket|connect)\(/.test(l));
    expect(sockets.filter((l) => /AF_INET6?\b/.test(l))).toEqual([]);
  });
});
