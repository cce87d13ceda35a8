/** Running the attnscope command as a real process from the sources (through tsx). */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..', '..');
const MAIN = join(ROOT, 'src', 'cli', 'main.ts');

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
  const r = spawnSync(process.execPath, ['--import', import.meta.resolve('tsx'), MAIN, ...args], {
    cwd,
    encoding: 'utf8',
    timeout,
    maxBuffer: 256 * 1024 * 1024,
    env: { ...process.env, HF_HUB_OFFLINE: '1', HF_HOME: join(scratch, 'hf-home') },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
