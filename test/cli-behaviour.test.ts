/**
 * The attnscope command behaves the same in every subcommand, run as real processes: unknown
 * options and malformed values give one line with a "did you mean" and a pointer to --help (exit
 * code 2, as every input error); --out must fit what the command writes; a checkpoint's file
 * says to pass its directory; a closed pipe ends the command quietly; every option of every
 * usage line is explained in its help; every written file is reported the same way.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ABLATE_OPTIONS, ABLATE_USAGE } from '../src/cli/ablate-command.js';
import { AGGREGATE_OPTIONS, AGGREGATE_USAGE } from '../src/cli/aggregate-command.js';
import { ATTRIBUTE_OPTIONS, ATTRIBUTE_USAGE } from '../src/cli/attribute-command.js';
import { CACHE_OPTIONS, CACHE_USAGE } from '../src/cli/cache-command.js';
import { COMPARE_OPTIONS, COMPARE_USAGE } from '../src/cli/compare-command.js';
import { EXPORT_OPTIONS, EXPORT_USAGE } from '../src/cli/export-command.js';
import { FLOW_OPTIONS, FLOW_USAGE } from '../src/cli/flow-command.js';
import { GENERATE_OPTIONS, GENERATE_USAGE } from '../src/cli/generate-command.js';
import { HEADS_OPTIONS, HEADS_USAGE } from '../src/cli/heads-command.js';
import { LENS_OPTIONS, LENS_USAGE } from '../src/cli/lens-command.js';
import { TRACE_OPTIONS, TRACE_USAGE } from '../src/cli/trace-command.js';
import { VIEW_OPTIONS, VIEW_USAGE } from '../src/cli/view-command.js';
import { CLI, expectInputError, ROOT, type Run, runCli } from './helpers/cli.js';
import { FIXTURES } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-cli-behaviour-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const BERT = join(FIXTURES, 'bert');

function attnscope(...args: string[]): Run {
  return runCli(tmp, args, 120_000);
}

describe('unknown options and malformed values', () => {
  it('suggest the closest option and point to the command help', () => {
    expectInputError(attnscope('trace', BERT, '--txet', 'hi'), /unknown option '--txet' \(did you mean --text\?\); see 'attnscope trace --help'$/);
    expectInputError(attnscope('view', BERT, '--text', 'hi', '--thme', 'dark'), /unknown option '--thme' \(did you mean --theme\?\); see 'attnscope view --help'/);
    // The sampling --top-k of generate is --sample-top-k now: the old name points to the new one.
    expectInputError(attnscope('generate', BERT, '--text', 'hi', '--top-k', '3'), /unknown option '--top-k' \(did you mean --sample-top-k\?\)/);
    expectInputError(attnscope('trace', BERT, '--text', 'hi', '--frobnicate'), /unknown option '--frobnicate'; see 'attnscope trace --help'/);
    expectInputError(attnscope('tarce', BERT), /unknown command 'tarce' \(did you mean trace\?\)/);
  });

  it('name the option and the value', () => {
    expectInputError(attnscope('trace', BERT, '--text', 'hi', '--threads', 'two'), /--threads: expected a positive integer, got 'two'; see 'attnscope trace --help'/);
    expectInputError(attnscope('trace', BERT, '--text', 'hi', '--threads', '999999999'), /--threads: expected 1 to 256/);
    expectInputError(attnscope('trace', BERT, '--text', 'hi', '--top-k', '1.5'), /--top-k: expected a positive integer, got '1\.5'/);
    expectInputError(attnscope('generate', BERT, '--text', 'hi', '--sample', '--temperature', 'hot'), /--temperature: expected a number, got 'hot'/);
    expectInputError(attnscope('trace', BERT, '--text'), /--text needs a value/);
    expectInputError(attnscope('trace', BERT, '--text', '--qk'), /--text needs a value/);
    expectInputError(attnscope('trace', BERT, '--text', 'hi', '--qk=yes'), /--qk takes no value/);
  });
});

describe('--out', () => {
  it('must have an extension the command writes, and not be a directory', () => {
    expectInputError(attnscope('trace', BERT, '--text', 'hi', '--out', join(tmp, 't.svg')), /trace writes \.json or \.safetensors files, not \.svg/);
    expectInputError(attnscope('generate', '--text', 'hi', '--out', join(tmp, 't.html')), /generate writes \.json or \.safetensors files, not \.html/);
    expectInputError(attnscope('view', BERT, '--text', 'hi', '--out', join(tmp, 'v.json')), /view writes \.html or \.htm files, not \.json/);
    expectInputError(attnscope('export', BERT, '--text', 'hi', '--view', 'head', '--format', 'svg', '--out', join(tmp, 'e.png')), /export --format svg writes \.svg files, not \.png/);
    expectInputError(attnscope('trace', BERT, '--text', 'hi', '--out', '.'), /--out \.: is a directory/);
    expectInputError(attnscope('view', BERT, '--text', 'hi', '--out', tmp), /is a directory/);
    expect(readdirSync(tmp).filter((f) => !f.startsWith('hf-home'))).toEqual([]);
  });

  it('every command reports the file it wrote the same way', () => {
    const runs: [Run, string][] = [
      [attnscope('trace', BERT, '--text', 'hello world', '--out', join(tmp, 'r.json')), 'r.json'],
      [attnscope('trace', BERT, '--text', 'hello world', '--out', join(tmp, 'r.safetensors')), 'r.safetensors'],
      [attnscope('export', join(tmp, 'r.json'), '--view', 'heatmap', '--out', join(tmp, 'r.svg')), 'r.svg'],
    ];
    for (const [run, name] of runs) {
      expect(run.status, run.stderr).toBe(0);
      expect(run.stderr).toMatch(new RegExp(`^wrote \\S*${name.replace('.', '\\.')} \\(\\d+(\\.\\d)? (B|kB|MB)(; [^)]*)?\\)$`, 'm'));
    }
  });
});

describe('a file of a checkpoint where its directory is meant', () => {
  it('says to pass the checkpoint directory', () => {
    expectInputError(attnscope('trace', join(BERT, 'config.json'), '--text', 'hi'), /config\.json is one file of a checkpoint: pass the checkpoint directory \(\S*bert\)/);
    expectInputError(attnscope('trace', join(BERT, 'model.safetensors'), '--text', 'hi'), /pass the checkpoint directory/);
    expectInputError(attnscope('view', join(BERT, 'config.json'), '--out', join(tmp, 'v.html')), /pass the checkpoint directory/);
    expectInputError(attnscope('export', join(BERT, 'config.json'), '--view', 'head', '--out', join(tmp, 'e.svg')), /pass the checkpoint directory/);
  });
});

describe('a closed pipe', () => {
  it('ends `attnscope trace … | head -c 10` quietly with exit code 0', () => {
    // A long input: the JSON (~1 MB) is far larger than the pipe's buffer, so writes hit the closed pipe.
    const text = Array.from({ length: 60 }, (_, i) => `word${i}`).join(' ');
    const cmd = `"${process.execPath}" ${CLI.map((a) => `"${a}"`).join(' ')} trace "${BERT}" --truncate --text "${text}" 2>"${join(tmp, 'pipe-err.txt')}" | head -c 10; echo "\${PIPESTATUS[0]}" > "${join(tmp, 'pipe-status.txt')}"`;
    const r = spawnSync('bash', ['-c', cmd], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, env: { ...process.env, HF_HUB_OFFLINE: '1', HF_HOME: join(tmp, 'hf-home') } });
    expect(r.stdout).toBe('{"format":');
    expect(readFileSync(join(tmp, 'pipe-err.txt'), 'utf8')).toBe('');
    expect(readFileSync(join(tmp, 'pipe-status.txt'), 'utf8').trim()).toBe('0');
  });
});

describe('help', () => {
  const commands: [string, string, Record<string, unknown>][] = [
    ['trace', TRACE_USAGE, TRACE_OPTIONS],
    ['generate', GENERATE_USAGE, GENERATE_OPTIONS],
    ['export', EXPORT_USAGE, EXPORT_OPTIONS],
    ['view', VIEW_USAGE, VIEW_OPTIONS],
    ['cache', CACHE_USAGE, CACHE_OPTIONS],
    ['heads', HEADS_USAGE, HEADS_OPTIONS],
    ['flow', FLOW_USAGE, FLOW_OPTIONS],
    ['lens', LENS_USAGE, LENS_OPTIONS],
    ['attribute', ATTRIBUTE_USAGE, ATTRIBUTE_OPTIONS],
    ['ablate', ABLATE_USAGE, ABLATE_OPTIONS],
    ['compare', COMPARE_USAGE, COMPARE_OPTIONS],
    ['aggregate', AGGREGATE_USAGE, AGGREGATE_OPTIONS],
  ];
  for (const [name, usage, options] of commands) {
    it(`${name}: every option is in a usage line and explained`, () => {
      const [synopsis, explanation] = [usage.split('\n\n')[0]!, usage.split('\n\n').slice(1).join('\n\n')];
      const inSynopsis = new Set([...synopsis.matchAll(/--([a-z][a-z-]*)/g)].map((m) => m[1]!));
      expect([...inSynopsis].sort()).toEqual(Object.keys(options).sort());
      for (const option of inSynopsis) {
        // Explained: a help line starting with the option, or naming it after a ';' or '/'.
        expect(explanation, `--${option}`).toMatch(new RegExp(`(^|\\n)\\s+--${option}\\b|[;/]\\s+--${option}\\b`));
      }
    });
  }

  it('is printed by --help and `attnscope help <command>`', () => {
    const a = attnscope('trace', '--help');
    const b = attnscope('help', 'trace');
    expect(a.status).toBe(0);
    expect(a.stdout).toContain('--top-k N');
    expect(b.stdout).toBe(a.stdout);
    const all = attnscope('--help');
    for (const command of ['trace', 'generate', 'export', 'view', 'cache', 'models', 'heads', 'flow', 'compare', 'aggregate']) expect(all.stdout).toContain(`attnscope ${command}`);
  });
});

it('leaves no temporary file behind', () => {
  expect(existsSync(tmp) ? readdirSync(tmp).filter((f) => f.endsWith('.tmp')) : []).toEqual([]);
});
