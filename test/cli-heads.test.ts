/**
 * `attnscope heads` as a real process on the embedded stories260k: the probe's CSV (exact header,
 * one row per layer and head) and JSON parsed back, the readable table's per-type summary, a text
 * run with word-class focus, a trace file, and bad options as one line each.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { expectInputError, ROOT, type Run, runCli } from './helpers/cli.js';
import { FIXTURES } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-heads-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function attnscope(...args: string[]): Run {
  return runCli(tmp, args, 120_000);
}

const HEADER =
  'layer,head,max_weight,confidence,entropy,sparsity,sparsity_uniform,p25,p50,p75,p90,std,distance,self,sink,separator,punctuation,long_range,js_from_first,' +
  'previous_token,next_token,local,duplicate_token,induction,syntax_focus,semantic_focus,entity_focus,top_type,top_score';

/** RFC 4180 without quoting (the table has no commas in its cells). */
function parseCsv(text: string): Record<string, string>[] {
  const [head, ...lines] = text.trim().split('\n');
  const cols = head!.split(',');
  return lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i]!, v])));
}

describe('attnscope heads', () => {
  it('--csv: the probe on stories260k, one row per layer × head, exact header', () => {
    const run = attnscope('heads', '--csv', '--samples', '1', '--seq-len', '20');
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout.split('\n')[0]).toBe(HEADER);
    const rows = parseCsv(run.stdout);
    expect(rows).toHaveLength(5 * 8);
    expect(rows.map((r) => `${r.layer}:${r.head}`)).toEqual(Array.from({ length: 40 }, (_, i) => `${Math.floor(i / 8)}:${i % 8}`));
    for (const r of rows) {
      for (const c of ['entropy', 'previous_token', 'duplicate_token', 'induction', 'sink']) {
        const v = Number(r[c]);
        expect(v, `${c} ${r[c]}`).toBeGreaterThanOrEqual(0);
        expect(v).toBeLessThanOrEqual(1);
      }
      expect(r.syntax_focus).toBe(''); // not measured on the probe
    }
    expect(rows.some((r) => r.top_type === 'previous_token')).toBe(true);
  }, 120_000);

  it('--json --out: rows = layers × heads, probe settings recorded; the table names types found and not found', () => {
    const out = join(tmp, 'heads.json');
    const run = attnscope('heads', '--json', '--out', out, '--samples', '2', '--seq-len', '12', '--seed', '5', '--exclude-first');
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/^wrote .*heads\.json \(.*; 40 heads\)/);
    const doc = JSON.parse(readFileSync(out, 'utf8')) as { rows: Record<string, unknown>[]; samples: number; seqLen: number; seed: number; excludeFirstToken: boolean; input: string };
    expect(doc.rows).toHaveLength(40);
    expect(doc).toMatchObject({ input: 'probe', samples: 2, seqLen: 12, seed: 5, excludeFirstToken: true });
    expect(Object.keys(doc.rows[0]!)).toEqual(HEADER.split(','));
    const table = attnscope('heads', '--samples', '1', '--seq-len', '20');
    expect(table.status, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^stories260k: self attention on the repeated-token probe/);
    expect(table.stdout).toMatch(/^previous_token \(≥ 0\.4\): L\d+H\d+ 0\.\d\d/m);
    expect(table.stdout).toMatch(/^induction \(≥ 0\.4\): none \(highest L\d+H\d+ 0\.\d\d\)/m);
  }, 120_000);

  it('--text: word-class focus measured; --pair too', () => {
    const run = attnscope('heads', '--text', 'Once upon a time, Lily saw a big dog.', '--pair', 'She was happy.', '--csv');
    expect(run.status, run.stderr).toBe(0);
    const rows = parseCsv(run.stdout);
    expect(rows).toHaveLength(40);
    for (const r of rows) {
      expect(Number(r.syntax_focus) + Number(r.semantic_focus)).toBeLessThanOrEqual(1.00001);
      expect(r.semantic_focus).not.toBe('');
    }
  }, 120_000);

  it('a trace file', () => {
    const trace = join(tmp, 'bert.json');
    expect(attnscope('trace', join(FIXTURES, 'bert'), '--text', 'the cat sat on the mat.', '--out', trace).status).toBe(0);
    const run = attnscope('heads', trace, '--csv');
    expect(run.status, run.stderr).toBe(0);
    const rows = parseCsv(run.stdout);
    expect(rows.length).toBeGreaterThan(0);
    expect(Number(rows[0]!.separator)).toBeGreaterThan(0); // [SEP] is a separator in a BERT trace
  }, 120_000);

  it('bad options: one line each', () => {
    expectInputError(attnscope('heads', '--samples', '0'), /--samples: expected a positive integer, got '0'/);
    expectInputError(attnscope('heads', '--json', '--csv'), /give --json or --csv, not both/);
    expectInputError(attnscope('heads', '--seq-len', '300'), /--seq-len 300: the probe's 601 tokens exceed stories260k's 512 positions; allowed 1 to 255/);
    expectInputError(attnscope('heads', '--text', 'hi', '--samples', '2'), /--samples applies to the probe/);
    expectInputError(attnscope('heads', '--seed', '-1'), /--seed: expected an integer from 0 to 4294967295/);
    expectInputError(attnscope('heads', '--csv', '--out', join(tmp, 'x.json')), /heads --csv writes \.csv files, not \.json/);
    expectInputError(attnscope('heads', '--stack', 'cros'), /--stack: unknown stack 'cros'/);
    expectInputError(attnscope('heads', '--pair', 'x'), /--pair needs --text/);
    expect(existsSync(join(ROOT, 'x.json'))).toBe(false);
    const help = attnscope('heads', '--help');
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--exclude-first/);
    expect(help.stdout).toMatch(/induction ≥ 0\.4/);
  }, 300_000); // nine processes: slow on a busy machine
});
