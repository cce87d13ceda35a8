/**
 * `attnscope cache list|prune|clear` and the graph cache's size cap, as real processes on a
 * scratch cache: sizes per checkpoint (checked against the files on disk), least-recently-used
 * eviction by `prune --max` and after each write under a tiny $ATTNSCOPE_CACHE_MAX, and a cache
 * hit counting as a use.
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli, type Run } from './helpers/cli.js';
import { FIXTURES } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-cache-cli-'));
const CACHE = join(tmp, 'graphs');
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Runs attnscope with the scratch cache (and a cap when given). */
function attnscope(args: string[], max?: string): Run {
  const saved = { cache: process.env.ATTNSCOPE_CACHE, max: process.env.ATTNSCOPE_CACHE_MAX };
  process.env.ATTNSCOPE_CACHE = CACHE;
  if (max === undefined) delete process.env.ATTNSCOPE_CACHE_MAX;
  else process.env.ATTNSCOPE_CACHE_MAX = max;
  try {
    return runCli(tmp, args, 120_000);
  } finally {
    for (const [key, value] of [['ATTNSCOPE_CACHE', saved.cache], ['ATTNSCOPE_CACHE_MAX', saved.max]] as const) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
}

function trace(fixture: string, max?: string): void {
  const r = attnscope(['trace', join(FIXTURES, fixture), '--text', 'The cat sat on the mat.', '--out', join(tmp, `${fixture}.safetensors`)], max);
  expect(r.status, r.stderr).toBe(0);
}

/** Bytes of the files in one cached checkpoint's directory, by the file system. */
function bytesOf(dir: string): number {
  return readdirSync(dir).reduce((n, f) => n + statSync(join(dir, f)).size, 0);
}

/** The checkpoints `cache list` shows: fixture name → cache directory. */
function listed(): Map<string, string> {
  const r = attnscope(['cache', 'list']);
  expect(r.status, r.stderr).toBe(0);
  const out = new Map<string, string>();
  for (const line of r.stdout.trim().split('\n').slice(0, -1)) {
    const m = /fixtures\/([\w-]+) \((\w+)\)\s+\[\d+ graphs?; (\S+)\]$/.exec(line);
    expect(m, line).not.toBeNull();
    out.set(m![1]!, m![3]!);
  }
  return out;
}

describe('attnscope cache', () => {
  it('lists each cached checkpoint with its size, and the total', () => {
    trace('bert');
    trace('gpt2');
    const r = attnscope(['cache', 'list']);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(3);
    // Most recently used first.
    expect(lines[0]).toMatch(/fixtures\/gpt2 \(gpt2\)/);
    expect(lines[1]).toMatch(/fixtures\/bert \(bert\)/);
    const dirs = listed();
    for (const line of lines.slice(0, 2)) {
      const dir = /; (\S+)\]$/.exec(line)![1]!;
      const kb = Math.round(bytesOf(dir) / 1e3);
      expect(line).toMatch(new RegExp(`^\\s*${kb} kB\\s`));
    }
    const total = [...dirs.values()].reduce((n, d) => n + bytesOf(d), 0);
    const size = total < 1e6 ? `${Math.round(total / 1e3)} kB` : `${(total / 1e6).toFixed(1)} MB`;
    expect(lines[2]).toMatch(new RegExp(`^${size.replace('.', '\\.')} in 2 checkpoints \\(cap 20\\.0 GB\\) in ${CACHE.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`));
  });

  it('prune --max removes the least recently used first; a cache hit counts as a use', () => {
    const before = listed();
    trace('bert'); // from the cache: bert is now the most recent
    const r = attnscope(['cache', 'prune', '--max', String(bytesOf(before.get('bert')!))]);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^removed 1 checkpoint \(\d+ kB\); \d+ kB left in /);
    expect([...listed().keys()]).toEqual(['bert']);
  });

  it('evicts least recently used checkpoints after each write, keeping the one in use', () => {
    trace('gpt2');
    expect([...listed().keys()].sort()).toEqual(['bert', 'gpt2']);
    trace('distilbert', '1kB'); // a cap smaller than any checkpoint
    expect([...listed().keys()]).toEqual(['distilbert']);
  });

  it('refuses a malformed cap and an unknown action', () => {
    const bad = attnscope(['cache', 'prune', '--max', 'lots']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^attnscope: --max: expected a size such as 20GB, 500MB or a number of bytes, got 'lots'; see 'attnscope cache --help'\n$/);
    const env = attnscope(['trace', join(FIXTURES, 'bert'), '--text', 'hi'], 'huge');
    expect(env.status).toBe(2);
    expect(env.stderr).toMatch(/ATTNSCOPE_CACHE_MAX: expected a size/);
    const action = attnscope(['cache', 'clean']);
    expect(action.status).toBe(2);
    expect(action.stderr).toMatch(/unknown action 'clean' \(did you mean clear\?\)/);
  });

  it('clear removes everything', () => {
    const r = attnscope(['cache', 'clear']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^removed 1 checkpoint /);
    expect(readdirSync(CACHE)).toEqual([]);
    expect(attnscope(['cache', 'list']).stdout).toMatch(/^0 B in 0 checkpoints/);
  });
});
