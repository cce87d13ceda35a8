/**
 * Runs one bench case in a child process (this same script with `--case <spec>`), polling its
 * resident memory every 50 ms and stopping it above `limitMb`. The child prints its result as one
 * JSON line last; the parent gets that object with `polledPeakMb`, or `{ spec, stopped }`.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export function spawnCase(scriptUrl: string, spec: string, limitMb: number, nodeFlags: readonly string[] = []): Promise<Record<string, unknown>> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...process.execArgv, ...nodeFlags, fileURLToPath(scriptUrl), '--case', spec], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let peak = 0;
    let killed = false;
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setInterval(() => {
      try {
        const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        const mb = m ? Number(m[1]) / 1024 : 0;
        peak = Math.max(peak, mb);
        if (mb > limitMb && !killed) {
          killed = true;
          child.kill('SIGKILL');
        }
      } catch {
        // The process has ended.
      }
    }, 50);
    child.on('exit', () => {
      clearInterval(timer);
      const line = out.trim().split('\n').pop();
      resolve(killed || !line ? { spec, stopped: `above ${limitMb} MB (stopped at ${peak.toFixed(0)} MB)` } : { ...(JSON.parse(line) as Record<string, unknown>), polledPeakMb: peak });
    });
  });
}
