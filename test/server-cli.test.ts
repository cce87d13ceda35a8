/**
 * `attnscope serve` as a real process: prints its URL and how to stop it, answers on 127.0.0.1,
 * stops cleanly on SIGINT and SIGTERM; bad options are one line.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVE_OPTIONS, SERVE_USAGE } from '../src/cli/serve-command.js';
import type { ModelsResponse } from '../src/server/protocol.js';
import { CLI, ROOT, runCli } from './helpers/cli.js';
import { FIXTURES } from './helpers/reference.js';

let scratch: string;

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'attnscope-serve-cli-'));
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** Starts `attnscope serve` and waits for its URL line. */
function startServe(args: string[]): Promise<{ url: string; stop(signal: NodeJS.Signals): Promise<{ code: number | null; stdout: string; stderr: string }> }> {
  const child = spawn(process.execPath, [...CLI, 'serve', ...args], {
    cwd: ROOT,
    env: { ...process.env, HF_HUB_OFFLINE: '1', HF_HOME: join(scratch, 'hf-home') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    const check = setInterval(() => {
      const m = /attnscope serve: (http:\/\/\S+)/.exec(stdout);
      if (m) {
        clearInterval(check);
        resolve({
          url: m[1]!,
          async stop(signal) {
            child.kill(signal);
            const code = await exited;
            return { code, stdout, stderr };
          },
        });
      }
    }, 50);
    void exited.then((code) => {
      clearInterval(check);
      reject(new Error(`serve exited (${code}) before printing its URL: ${stderr}`));
    });
  });
}

describe('attnscope serve (process)', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    it(`prints the URL and how to stop, answers on 127.0.0.1, and stops cleanly on ${signal}`, async () => {
      const server = await startServe(['--port', '0', '--models', join(FIXTURES, 'bert'), '--models', join(FIXTURES, 'gpt2')]);
      expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
      const models = (await (await fetch(new URL('/api/models', server.url))).json()) as ModelsResponse;
      const ids = models.models.map((m) => m.id);
      // A --models folder that is itself a checkpoint is offered under its own id.
      expect(ids).toEqual(expect.arrayContaining(['default', 'folder:0/', 'folder:1/']));
      const page = await fetch(server.url);
      expect(page.status).toBe(200);
      const { code, stdout, stderr } = await server.stop(signal);
      expect(code).toBe(0);
      expect(stdout).toMatch(/Press Ctrl-C to stop\./);
      expect(stdout).toMatch(new RegExp(`stopping \\(${signal}\\)`));
      expect(stderr).toBe('');
    });
  }

  it('help: every option is in the usage line and explained', () => {
    const [synopsis, ...rest] = SERVE_USAGE.split('\n\n');
    const explanation = rest.join('\n\n');
    const inSynopsis = new Set([...synopsis!.matchAll(/--([a-z][a-z-]*)/g)].map((m) => m[1]!));
    expect([...inSynopsis].sort()).toEqual(Object.keys(SERVE_OPTIONS).sort());
    for (const option of inSynopsis) expect(explanation, `--${option}`).toMatch(new RegExp(`(^|\\n)\\s+--${option}\\b`));
    expect(explanation).toMatch(/Ctrl-C/);
  });

  it('refuses bad options in one line', () => {
    for (const [args, message] of [
      [['--port', 'abc'], /--port: expected a positive integer/],
      [['--models', join(scratch, 'missing')], /--models .*missing: not a directory/],
      [['--prot', '1'], /unknown option '--prot' \(did you mean --port\?\)/],
    ] as const) {
      const r = runCli(scratch, ['serve', ...args]);
      expect(r.status).toBe(2);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
  });
});
