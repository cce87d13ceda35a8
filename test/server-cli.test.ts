/**
 * `attnscope serve` as a real process: prints its URL and how to stop it, answers on 127.0.0.1,
 * stops cleanly on SIGINT and SIGTERM; bad options are one line; many concurrent clients on
 * loopback (bounded in count) get complete answers, no 5xx, with the process's resident memory flat.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SERVE_OPTIONS, SERVE_USAGE } from '../src/cli/serve-command.js';
import { FrameReader, type ModelsResponse } from '../src/server/protocol.js';
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
function startServe(args: string[]): Promise<{ url: string; pid: number; stop(signal: NodeJS.Signals): Promise<{ code: number | null; stdout: string; stderr: string }> }> {
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
          pid: child.pid!,
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

  it('many concurrent clients: every answer complete, no 5xx, resident memory flat while far more than the cache bound streams through', async () => {
    const server = await startServe(['--port', '0', '--cache', '4', '--models', join(FIXTURES, 'bert')]);
    const rssMb = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${server.pid}/status`, 'utf8'))![1]) / 1024;
    const words = 'the cat sat on the mat because it was tired and the dog ran to the park'.split(' ');
    const rss: number[] = [];
    let received = 0;
    try {
      for (let round = 0; round < 10; round++) {
        // 40 clients at once, each a text not sent before (no cache hit, no shared run) of about 120 tokens (the model takes 128).
        const answers = await Promise.all(
          Array.from({ length: 40 }, async (_, i) => {
            const text = `client ${round * 40 + i}: ${Array.from({ length: 96 }, (_, w) => words[(w * (i + 3) + round) % words.length]).join(' ')}`;
            const res = await fetch(new URL('/api/trace', server.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'folder:0/', text, taps: { qk: true } }) });
            const body = new Uint8Array(await res.arrayBuffer());
            received += body.length;
            return { status: res.status, last: res.status === 200 ? new FrameReader().push(body).at(-1)?.type : undefined };
          }),
        );
        expect(answers.filter((a) => a.status >= 500)).toEqual([]);
        expect(answers.every((a) => a.status === 200 && a.last === 'end')).toBe(true);
        rss.push(rssMb());
      }
      // Still answering.
      expect((await fetch(new URL('/api/models', server.url))).status).toBe(200);
    } finally {
      const { code } = await server.stop('SIGTERM');
      expect(code).toBe(0);
    }
    // 400 answers streamed (far more than the 4 MB cache holds). The first rounds open the model's
    // sessions and grow the heap to its working size; from the third on, what the process holds
    // grows by less than 64 MB (it would grow by the answers' size if it kept them).
    const what = `resident MB per round: ${rss.map((r) => r.toFixed(0)).join(', ')}; received ${(received / 2 ** 20).toFixed(0)} MB`;
    expect(received / 2 ** 20, what).toBeGreaterThan(150);
    expect(Math.max(...rss.slice(2)) - rss[1]!, what).toBeLessThan(64);
  });

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
