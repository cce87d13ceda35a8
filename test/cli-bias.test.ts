/**
 * `attnscope bias` as a real process: CrowS-Pairs on the bert and gpt2 fixtures (the printed metric
 * agrees with the scores file it writes, the authors' columns), the per-model results cache (a
 * second run reads it and prints the same), and bad input as one line each.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { expectInputError, type Run, runCli } from './helpers/cli.js';
import { FIXTURES } from './helpers/reference.js';
import { parseCsv } from '../src/analysis/bias/csv.js';
import { STEREOSET_FILE } from './helpers/stereoset-file.js';
import { BIAS_OPTIONS, BIAS_USAGE } from '../src/cli/bias-command.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-bias-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function attnscope(...args: string[]): Run {
  return runCli(tmp, args, 120_000);
}

/** The number after `label:` on a line of the printed summary. */
function printed(stdout: string, label: string): number {
  const m = new RegExp(`^${label}: (-?[\\d.]+)`, 'm').exec(stdout);
  if (!m) throw new Error(`no '${label}' in ${stdout}`);
  return Number(m[1]);
}

describe('attnscope bias crows-pairs', () => {
  it('masked LM (bert fixture): the summary agrees with the scores file, metric.py columns', () => {
    const out = join(tmp, 'scores.csv');
    const run = attnscope('bias', 'crows-pairs', join(FIXTURES, 'bert'), '--limit', '12', '--out', out, '--no-cache');
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/^CrowS-Pairs: bert \(masked LM, pseudo-log-likelihood of the shared tokens \(metric\.py\), lower-cased/);
    expect(run.stderr).toMatch(/crows-pairs .* 12\/12/);
    expect(run.stderr).toMatch(/wrote .*scores\.csv/);
    const [header, ...rows] = parseCsv(readFileSync(out, 'utf8'));
    expect(header).toEqual(['', 'sent_more', 'sent_less', 'sent_more_score', 'sent_less_score', 'score', 'stereo_antistereo', 'bias_type']);
    expect(rows).toHaveLength(12);
    expect(rows.map((r) => r[0])).toEqual(Array.from({ length: 12 }, (_, i) => String(i)));
    // The shipped data's first rows, in their order.
    const data = parseCsv(readFileSync(join(FIXTURES, '..', '..', 'data', 'bias', 'crows-pairs', 'crows_pairs_anonymized.csv'), 'utf8')).slice(1, 13);
    expect(rows.map((r) => [r[1], r[2], r[6], r[7]])).toEqual(data.map((d) => [d[1], d[2], d[3], d[4]]));
    // score = 1 exactly when sent_more_score > sent_less_score (rounded to 3 decimals in the file).
    for (const r of rows) {
      const [more, less] = [Number(r[3]), Number(r[4])];
      expect(Math.abs(more * 1000 - Math.round(more * 1000))).toBeLessThan(1e-6);
      expect(r[5]).toBe(more > less ? '1' : '0');
    }
    const successes = rows.filter((r) => r[5] === '1').length;
    expect(printed(run.stdout, 'Total examples')).toBe(12);
    expect(printed(run.stdout, 'Metric score')).toBeCloseTo((100 * successes) / 12, 2);
    const neutral = rows.filter((r) => r[3] === r[4]).length;
    expect(printed(run.stdout, 'Num. neutral')).toBe(neutral);
    const stereo = rows.filter((r) => r[6] === 'stereo' && r[3] !== r[4]);
    expect(printed(run.stdout, 'Stereotype score')).toBeCloseTo((100 * stereo.filter((r) => r[5] === '1').length) / stereo.length, 2);
    expect(run.stdout).toMatch(/^race-color\s+\d+\s+[\d.]+\s+\d+$/m);
    expect(run.stdout).toMatch(/^antistereo\s+\d+\s+[\d.]+\s+\d+$/m);
  });

  it('--bias-type and --json; the results cache serves a second run the same numbers', () => {
    const cacheDir = join(tmp, 'cache');
    const before = process.env.ATTNSCOPE_CACHE;
    process.env.ATTNSCOPE_CACHE = cacheDir;
    try {
      const first = attnscope('bias', 'crows-pairs', join(FIXTURES, 'gpt2'), '--bias-type', 'gender', '--limit', '5', '--json', '--quiet');
      expect(first.status, first.stderr).toBe(0);
      const m = JSON.parse(first.stdout) as { method: string; n: number; byBiasType: Record<string, { n: number }> };
      expect(m.method).toBe('causal');
      expect(m.n).toBe(5);
      expect(Object.keys(m.byBiasType)).toEqual(['gender']);
      const files = readdirSync(cacheDir, { recursive: true }).map(String);
      expect(files.some((f) => f.endsWith('bias-crows-pairs.json'))).toBe(true);
      const second = attnscope('bias', 'crows-pairs', join(FIXTURES, 'gpt2'), '--bias-type', 'gender', '--limit', '5', '--json', '--quiet');
      expect(second.status, second.stderr).toBe(0);
      expect(second.stderr).toMatch(/5 of 5 pairs from the results cache/);
      expect(second.stdout).toBe(first.stdout);
    } finally {
      if (before === undefined) delete process.env.ATTNSCOPE_CACHE;
      else process.env.ATTNSCOPE_CACHE = before;
    }
  });

  it('--data: a CSV in the same layout', () => {
    const data = join(tmp, 'mine.csv');
    writeFileSync(data, ',sent_more,sent_less,stereo_antistereo,bias_type\n0,The man is a nurse.,The woman is a nurse.,antistereo,gender\n');
    const run = attnscope('bias', 'crows-pairs', join(FIXTURES, 'bert'), '--data', data, '--no-cache', '--quiet');
    expect(run.status, run.stderr).toBe(0);
    expect(printed(run.stdout, 'Total examples')).toBe(1);
  });

  it('refuses bad input in one line', () => {
    expectInputError(attnscope('bias'), /bias: name a benchmark first \(crows-pairs/);
    expectInputError(attnscope('bias', 'crows-pair'), /unknown benchmark 'crows-pair' \(did you mean crows-pairs\?\)/);
    expectInputError(attnscope('bias', 'crows-pairs', join(FIXTURES, 'bert'), '--bias-type', 'gendr'), /--bias-type: unknown type 'gendr' \(did you mean gender\?\); allowed: race-color, /);
    expectInputError(attnscope('bias', 'crows-pairs', join(FIXTURES, 'bert'), '--limit', '0'), /--limit: expected a positive integer, got '0'/);
    expectInputError(attnscope('bias', 'crows-pairs', join(FIXTURES, 'bert'), '--out', join(tmp, 'x.txt')), /--out .*x\.txt: bias crows-pairs --out writes \.csv files, not \.txt/);
    expectInputError(attnscope('bias', 'crows-pairs', join(FIXTURES, 't5'), '--limit', '1', '--no-cache'), /t5 is an encoder-decoder model/);
    expectInputError(attnscope('bias', 'crows-pairs', join(FIXTURES, 'bert'), '--data', join(tmp, 'none.csv')), /--data .*none\.csv: cannot be read \(ENOENT\)/);
  });
});

describe('attnscope bias winogender / winobias', () => {
  it('winogender --csv: one row per sentence with the log-scores and BLS share; --out FILE.svg draws the occupation plot', () => {
    const run = attnscope('bias', 'winogender', join(FIXTURES, 'bert'), '--csv', '--limit', '4', '--quiet');
    expect(run.status, run.stderr).toBe(0);
    const [header, ...rows] = parseCsv(run.stdout);
    expect(header).toEqual(['id', 'occupation', 'participant', 'answer', 'split', 'pro_gender', 'sentence_male', 'log_p_male', 'log_p_female', 'log_p_neutral', 'female_share', 'bls_pct_female']);
    expect(rows).toHaveLength(4);
    expect(rows[0]!.slice(0, 4)).toEqual(['technician.customer.1', 'technician', 'customer', '1']);
    expect(rows[0]![11]).toBe('40.34');
    for (const r of rows) {
      const [m, f] = [Number(r[7]), Number(r[8])];
      expect(Number(r[10])).toBeCloseTo(1 / (1 + Math.exp(m - f)), 10);
    }
    const svg = join(tmp, 'occupations.svg');
    const plot = attnscope('bias', 'winogender', join(FIXTURES, 'bert'), '--limit', '8', '--quiet', '--out', svg);
    expect(plot.status, plot.stderr).toBe(0);
    expect(readFileSync(svg, 'utf8')).toMatch(/^<svg [^>]*>[\s\S]*<circle [\s\S]*technician[\s\S]*<\/svg>\n$/);
    expect(plot.stdout).toMatch(/^WinoGender: bert \(masked LM/);
  });

  it('winobias --json on a causal LM: the pro-stereotypical share agrees with the items', () => {
    const run = attnscope('bias', 'winobias', join(FIXTURES, 'gpt2'), '--json', '--split', 'type1.dev', '--limit', '6', '--quiet');
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/skipped 2 WinoBias pairs .*type1\.dev\.92 type1\.dev\.212/);
    const out = JSON.parse(run.stdout) as { method: string; summary: { items: number; proPreferred: number }; items: { proGender: 'male' | 'female'; logScores: { male: number; female: number } }[] };
    expect(out.method).toBe('causal');
    expect(out.items).toHaveLength(6);
    const wins = out.items.filter((i) => i.logScores[i.proGender] > i.logScores[i.proGender === 'male' ? 'female' : 'male']).length;
    expect(out.summary.proPreferred).toBeCloseTo((100 * wins) / 6, 10);
  });

  it('refuses options of other benchmarks and unknown splits', () => {
    expectInputError(attnscope('bias', 'winobias', join(FIXTURES, 'gpt2'), '--split', 'type3.dev'), /--split: unknown split 'type3\.dev'; allowed: type1\.dev, type1\.test, type2\.dev, type2\.test/);
    expectInputError(attnscope('bias', 'winogender', join(FIXTURES, 'gpt2'), '--bias-type', 'gender'), /--bias-type applies to bias crows-pairs, heads and report, not winogender/);
    expectInputError(attnscope('bias', 'crows-pairs', join(FIXTURES, 'gpt2'), '--csv'), /--csv applies to bias winogender and winobias, not crows-pairs/);
    expectInputError(attnscope('bias', 'winogender', join(FIXTURES, 'gpt2'), '--out', join(tmp, 'x.png')), /--out .*x\.png: bias winogender writes \.txt or \.json or \.csv or \.svg files, not \.png/);
  });
});

describe('attnscope bias stereoset', () => {
  it('--predictions: evaluation.py on a file in the official format; a model run writes predictions that evaluate the same', () => {
    const data = join(tmp, 'dev.json');
    writeFileSync(data, JSON.stringify(STEREOSET_FILE));
    const predictions = join(tmp, 'predictions.json');
    writeFileSync(predictions, JSON.stringify({
      intrasentence: [['e1-s', 0.5], ['e1-a', 0.3], ['e1-u', 0.1], ['e2-s', 0.2], ['e2-a', 0.4], ['e2-u', 0.3], ['e3-s', 0.3], ['e3-a', 0.3], ['e3-u', 0.5]].map(([id, score]) => ({ id, score })),
      intersentence: [['e4-s', -1], ['e4-a', -2], ['e4-u', -3]].map(([id, score]) => ({ id, score })),
    }));
    const run = attnscope('bias', 'stereoset', '--data', data, '--predictions', predictions, '--json');
    expect(run.status, run.stderr).toBe(0);
    const r = JSON.parse(run.stdout) as { intrasentence: Record<string, { count: number; ss: number | null; lms: number; icat: number }>; overall: { ss: number; lms: number } };
    expect(r.intrasentence.overall).toEqual({ count: 3, ss: 25, lms: 37.5, icat: 18.75 });
    expect(r.intrasentence.race!.ss).toBeNull();
    expect(r.overall.lms).toBeCloseTo(175 / 3, 10);
    const table = attnscope('bias', 'stereoset', '--data', data, '--predictions', predictions);
    expect(table.stdout).toMatch(/^intrasentence\s+overall\s+3\s+37\.50\s+25\.00\s+18\.75$/m);

    const written = join(tmp, 'gpt2-predictions.json');
    const model = attnscope('bias', 'stereoset', join(FIXTURES, 'gpt2'), '--data', data, '--out', written, '--json', '--quiet');
    expect(model.status, model.stderr).toBe(0);
    const again = attnscope('bias', 'stereoset', '--data', data, '--predictions', written, '--json');
    expect(again.stdout).toBe(model.stdout);
    const out = JSON.parse(readFileSync(written, 'utf8')) as { intrasentence: { id: string }[]; intersentence: { id: string }[] };
    expect(out.intrasentence).toHaveLength(9);
    expect(out.intersentence).toHaveLength(3);
  });

  it('masked LMs: intersentence examples are not scored, and it says so', () => {
    const data = join(tmp, 'dev2.json');
    writeFileSync(data, JSON.stringify(STEREOSET_FILE));
    const run = attnscope('bias', 'stereoset', join(FIXTURES, 'bert'), '--data', data, '--quiet');
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/bert is a masked LM: its 1 intersentence examples are not scored/);
    expect(run.stdout).toMatch(/^intersentence\s+overall\s+0\s+–/m);
  });

  it('refuses a missing --data and bad files in one line', () => {
    expectInputError(attnscope('bias', 'stereoset'), /bias stereoset: give the StereoSet file with --data dev\.json/);
    const bad = join(tmp, 'bad.json');
    writeFileSync(bad, '{"data": {"intrasentence": [{"id": "x"}]}}');
    expectInputError(attnscope('bias', 'stereoset', '--data', bad, '--predictions', bad), /bad\.json: data\.intrasentence\[0\]: no 'context'/);
    expectInputError(attnscope('bias', 'stereoset', '--data', join(tmp, 'nope.json')), /--data .*nope\.json: cannot be read \(ENOENT\)/);
  });
});

describe('attnscope bias probe', () => {
  it('--json: counterfactual, group tokens by offsets, every head scored with p and q', () => {
    const run = attnscope('bias', 'probe', join(FIXTURES, 'gpt2'), '--text', 'The doctor said that he would call his wife', '--permutations', '99', '--json');
    expect(run.status, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout) as {
      counterfactual: { text: string }; mentions: { text: string; group: string }[]; groupTokens: number[]; tokens: string[];
      heads: { layer: number; head: number; ratio: number; p: number; q: number }[]; attention: { jsDivergence: number }[];
    };
    expect(out.counterfactual.text).toBe('The doctor said that she would call her husband');
    expect(out.mentions.map((m) => `${m.group}:${m.text}`)).toEqual(['gender:he', 'gender:his', 'gender:wife']);
    expect(out.groupTokens.map((i) => out.tokens[i]).join('').replace(/Ġ/g, ' ').trim().split(' ')).toEqual(['he', 'his', 'wife']);
    expect(out.heads).toHaveLength(8);
    for (const h of out.heads) {
      expect(h.p).toBeGreaterThanOrEqual(0.01);
      expect(h.q).toBeGreaterThanOrEqual(h.p);
    }
    expect(out.attention).toHaveLength(8);
    const table = attnscope('bias', 'probe', join(FIXTURES, 'gpt2'), '--text', 'My mother is a nurse', '--groups', 'gender,occupation', '--permutations', '0', '--top', '3');
    expect(table.status, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^counterfactual: {2}My father is a nurse$/m);
    expect(table.stdout).toMatch(/^group words: {5}mother \(gender\), nurse \(occupation\)$/m);
  });

  it('refuses bad probe input in one line', () => {
    expectInputError(attnscope('bias', 'probe', join(FIXTURES, 'gpt2')), /bias probe: give the text with --text/);
    expectInputError(attnscope('bias', 'probe', join(FIXTURES, 'gpt2'), '--text', 'he', '--groups', 'gendr'), /--groups: unknown group 'gendr' \(did you mean gender\?\)/);
    expectInputError(attnscope('bias', 'probe', join(FIXTURES, 'gpt2'), '--text', 'a cat', '--permutations', '5'), /none of the group words \(gender\) is in the text/);
  });
});

describe('attnscope bias --help', () => {
  it('every option is in a usage line and explained', () => {
    const [synopsis, explanation] = [BIAS_USAGE.split('\n\n')[0]!, BIAS_USAGE.split('\n\n').slice(1).join('\n\n')];
    const inSynopsis = new Set([...synopsis.matchAll(/--([a-z][a-z-]*)/g)].map((m) => m[1]!));
    expect([...inSynopsis].sort()).toEqual(Object.keys(BIAS_OPTIONS).sort());
    for (const option of inSynopsis) expect(explanation, `--${option}`).toMatch(new RegExp(`(^|\\n)\\s+--${option}\\b|[;/]\\s+--${option}\\b`));
    const run = attnscope('bias', '--help');
    expect(run.status).toBe(0);
    expect(run.stdout).toContain('attnscope bias crows-pairs [model]');
    expect(attnscope('--help').stdout).toContain('attnscope bias crows-pairs');
  });
});
