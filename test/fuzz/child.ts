/**
 * A long-lived child process running fuzz cases through worker.ts (line-delimited JSON), so that
 * a native abort, a segmentation fault or a hang fails one case instead of killing the test run.
 * After a crash or a timeout the child is replaced for the next case.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export type Outcome = (
  | { ok: true; summary: string }
  | { ok: false; name: string; message: string; stack?: string }
  | { crashed: string }
  | { hung: number }
) & {
  /** What the process printed on stderr during this case. */
  stderr: string;
};

const WORKER = join(import.meta.dirname, 'worker.ts');

export class FuzzChild {
  private child: ChildProcess | undefined;
  private pending: ((line: string | undefined) => void) | undefined;
  private exit: string | undefined;
  private stderr = '';

  private start(): ChildProcess {
    this.exit = undefined;
    this.stderr = '';
    const child = spawn(process.execPath, ['--import', import.meta.resolve('tsx'), WORKER], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, HF_HUB_OFFLINE: '1', ATTNSCOPE_CACHE: 'off' },
    });
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const resolve = this.pending;
      this.pending = undefined;
      resolve?.(line);
    });
    child.stdin!.on('error', () => undefined); // EPIPE after a crash: the 'close' below reports it
    child.stderr!.on('data', (chunk: Buffer) => {
      this.stderr += chunk.toString('utf8');
    });
    // 'close' (not 'exit'): after the last of stderr has been read.
    child.on('close', (code, signal) => {
      this.exit = signal ? `killed by ${signal}` : `exited with status ${code}`;
      if (this.child === child) this.child = undefined;
      const resolve = this.pending;
      this.pending = undefined;
      resolve?.(undefined);
    });
    this.child = child;
    return child;
  }

  /** Runs one case; `timeoutMs` is generous (the first case also starts the process). */
  async run(request: object, timeoutMs: number): Promise<Outcome> {
    const child = this.child ?? this.start();
    this.stderr = '';
    const line = await new Promise<string | undefined | 'timeout'>((resolve) => {
      const timer = setTimeout(() => resolve('timeout'), timeoutMs);
      this.pending = (l) => {
        clearTimeout(timer);
        resolve(l);
      };
      child.stdin!.write(`${JSON.stringify(request)}\n`);
    });
    const stderr = this.stderr;
    if (line === 'timeout') {
      this.pending = undefined;
      await this.stop();
      return { hung: timeoutMs, stderr };
    }
    if (line === undefined) return { crashed: this.exit ?? 'exited', stderr };
    return { ...(JSON.parse(line) as Outcome), stderr };
  }

  async stop(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.child = undefined;
    const exited = new Promise((resolve) => child.once('close', resolve));
    child.kill('SIGKILL');
    await exited;
  }
}
