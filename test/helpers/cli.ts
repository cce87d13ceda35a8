/**
 * Running the attnscope command as a real process: the built command (dist/, what users run) when
 * it is at least as new as every source file, else the sources through tsx (2–3 s slower a process).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';

export const ROOT = join(import.meta.dirname, '..', '..');
const BUILT = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const SOURCE = join(ROOT, 'src', 'cli', 'main.ts');

function newestMtime(dir: string): number {
  let newest = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

function builtIsCurrent(): boolean {
  try {
    return statSync(BUILT).mtimeMs >= newestMtime(join(ROOT, 'src'));
  } catch {
    return false;
  }
}

/** Node arguments that start the attnscope command (before its own arguments). */
export const CLI: readonly string[] = builtIsCurrent() ? [BUILT] : ['--import', import.meta.resolve('tsx'), SOURCE];

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `attnscope ...args` offline, with a private HF_HOME under `scratch`, in `cwd` (default the
 * repository); a timeout (a hang) shows as a null status.
 */
export function runCli(scratch: string, args: readonly string[], timeout = 90_000, cwd = ROOT): Run {
  const r = spawnSync(process.execPath, [...CLI, ...args], {
    cwd,
    encoding: 'utf8',
    timeout,
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, HF_HUB_OFFLINE: '1', HF_HOME: join(scratch, 'hf-home') },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** An input error: exit code 2, exactly one line on stderr ('attnscope: …' matching `pattern`), no stack trace. */
export function expectInputError(run: Run, pattern: RegExp): void {
  expect(run.status, run.stderr).toBe(2);
  const lines = run.stderr.trim().split('\n');
  expect(lines, run.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^attnscope: /);
  expect(lines[0]).toMatch(pattern);
  expect(run.stderr).not.toMatch(/internal error|\n\s+at /);
}
