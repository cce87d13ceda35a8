/**
 * `attnscope bias heads` as a real process on the fixtures: the JSON agrees with itself and with
 * the plain scores (the contrast from the probe's own prediction list, the ablated metric's counts),
 * the printout carries the same numbers, and bad input is one line each.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { expectInputError, type Run, runCli } from './helpers/cli.js';
import { FIXTURES } from './helpers/reference.js';
import { STEREOSET_FILE } from './helpers/stereoset-file.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-bias-heads-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function attnscope(...args: string[]): Run {
  return runCli(tmp, args, 120_000);
}

interface HeadsJson {
  target: { position: number; word: string; versus: string; value: number };
  ablation: { heads: { layer: number; head: number }[]; value: number };
  controls: { heads: { layer: number; head: number }[]; value: number }[];
  controlMean: number;
  importance: number[][];
  propagation: { layer: number; meanRatio: number; rolloutRatio: number }[];
  faithfulness: { heads: { layer: number; head: number; rho: number | null }[] };
  probe: { tokens: string[]; groupTokens: number[]; heads: { layer: number; head: number; ratio: number; q: number }[]; predictions: { position: number; original: { token: string; probability: number }[] }[] };
}

describe('attnscope bias heads', () => {
  it('--text on a masked LM: --json and the printout agree; T matches the probe\'s predicted probabilities', () => {
    const args = ['bias', 'heads', join(FIXTURES, 'bert'), '--text', 'The man said that [MASK] was late.', '--k', '2', '--controls', '2', '--permutations', '99', '--steps', '16'];
    const json = attnscope(...args, '--json');
    expect(json.status, json.stderr).toBe(0);
    const r = JSON.parse(json.stdout) as HeadsJson;
    expect(r.probe.tokens[r.target.position]).toBe('[MASK]');
    expect([r.target.word, r.target.versus]).toEqual(['he', 'she']);
    // When both words are among the probe's top predictions at the mask, T = log of their probability ratio.
    const pred = r.probe.predictions.find((p) => p.position === r.target.position)!;
    const he = pred.original.find((x) => x.token === 'he');
    const she = pred.original.find((x) => x.token === 'she');
    if (he && she) expect(r.target.value).toBeCloseTo(Math.log(he.probability / she.probability), 4);
    expect(r.ablation.heads).toHaveLength(2);
    expect(r.controls).toHaveLength(2);
    expect(r.controlMean).toBeCloseTo((r.controls[0]!.value + r.controls[1]!.value) / 2, 10);
    expect(r.importance).toHaveLength(2);
    expect(r.propagation.map((l) => l.layer)).toEqual([0, 1]);
    expect(r.faithfulness.heads).toHaveLength(8);
    const text = attnscope(...args);
    expect(text.status, text.stderr).toBe(0);
    expect(text.stdout).toContain(`= ${r.target.value.toFixed(3)}`);
    expect(text.stdout).toContain(`T = ${r.ablation.value.toFixed(3)}`);
    expect(text.stdout).toContain(r.ablation.heads.map((h) => `L${h.layer}H${h.head}`).join(' '));
  });

  it('--benchmark crows-pairs on a causal LM: the ablated and control metrics over the same pairs', () => {
    const run = attnscope('bias', 'heads', join(FIXTURES, 'gpt2'), '--benchmark', 'crows-pairs', '--limit', '4', '--k', '2', '--controls', '1', '--json', '--quiet');
    expect(run.status, run.stderr).toBe(0);
    const r = JSON.parse(run.stdout) as { pairs: number; ratios: number[][]; before: { metric: { n: number; metric: number } }; ablated: { heads: unknown[]; metric: { n: number; successes: number; metric: number } }; controls: { metric: { n: number } }[] };
    expect(r.pairs).toBe(4);
    expect(r.before.metric.n).toBe(4);
    expect(r.ablated.metric.n).toBe(4);
    expect(r.ablated.metric.metric).toBeCloseTo((100 * r.ablated.metric.successes) / 4, 10);
    expect(r.ablated.heads).toHaveLength(2);
    expect(r.controls).toHaveLength(1);
    expect(r.ratios.map((row) => row.length)).toEqual([4, 4]);
  });

  it('--benchmark winogender / winobias / stereoset: ratios, ablation against controls, importance and faithfulness, as JSON and printed', () => {
    const run = attnscope('bias', 'heads', join(FIXTURES, 'bert'), '--benchmark', 'winogender', '--limit', '3', '--k', '2', '--controls', '1', '--steps', '2', '--json', '--quiet');
    expect(run.status, run.stderr).toBe(0);
    const r = JSON.parse(run.stdout) as { benchmark: string; items: number; ratios: number[][]; before: { metrics: Record<string, number> }; ablated: { heads: unknown[]; metrics: Record<string, number> }; controls: unknown[]; importance: number[][]; faithfulness: { items: number; rho: (number | null)[][] }; propagation: unknown[] };
    expect([r.benchmark, r.items]).toEqual(['winogender', 3]);
    expect(Object.keys(r.before.metrics)).toEqual(['femaleShare', 'correlation']);
    expect(r.ablated.heads).toHaveLength(2);
    expect(r.controls).toHaveLength(1);
    expect(r.ratios.map((row) => row.length)).toEqual([4, 4]);
    expect(r.propagation).toHaveLength(2);
    expect(r.faithfulness.items).toBeGreaterThan(0);
    const wb = attnscope('bias', 'heads', join(FIXTURES, 'gpt2'), '--benchmark', 'winobias', '--split', 'type1.dev', '--limit', '2', '--k', '1', '--controls', '1', '--steps', '2', '--quiet');
    expect(wb.status, wb.stderr).toBe(0);
    expect(wb.stdout).toMatch(/^winobias heads: gpt2 \(2 items\)/);
    expect(wb.stdout).toMatch(/^as trained: +proPreferred [\d.]+, femaleShare [\d.]+$/m);
    expect(wb.stdout).toMatch(/^with those heads zeroed: +proPreferred [\d.]+ \([+−][\d.]+\)/m);
    const file = join(tmp, 'dev.json');
    writeFileSync(file, JSON.stringify(STEREOSET_FILE));
    const ss = attnscope('bias', 'heads', join(FIXTURES, 'gpt2'), '--benchmark', 'stereoset', '--data', file, '--k', '1', '--controls', '0', '--steps', '2', '--json', '--quiet');
    expect(ss.status, ss.stderr).toBe(0);
    expect(Object.keys((JSON.parse(ss.stdout) as { before: { metrics: object } }).before.metrics)).toEqual(['ss', 'lms', 'icat']);
  }, 400_000);

  it('refuses bad input in one line', () => {
    const bert = join(FIXTURES, 'bert');
    expectInputError(attnscope('bias', 'heads', bert), /give --text "\.\.\." \(a probe\) or --benchmark crows-pairs/);
    expectInputError(attnscope('bias', 'heads', bert, '--text', 'a [MASK]', '--benchmark', 'crows-pairs'), /one of them/);
    expectInputError(attnscope('bias', 'heads', bert, '--benchmark', 'winograd'), /--benchmark: unknown benchmark 'winograd'; allowed: crows-pairs, winogender, winobias, stereoset/);
    expectInputError(attnscope('bias', 'heads', bert, '--benchmark', 'stereoset'), /bias stereoset: give the StereoSet file with --data dev\.json/);
    expectInputError(attnscope('bias', 'heads', bert, '--benchmark', 'winogender', '--split', 'type1.dev'), /--split applies to bias heads --benchmark winobias and stereoset, not winogender/);
    expectInputError(attnscope('bias', 'heads', bert, '--benchmark', 'winobias', '--split', 'type9.dev'), /--split: unknown split 'type9\.dev'/);
    expectInputError(attnscope('bias', 'heads', bert, '--benchmark', 'winobias', '--permutations', '9'), /--permutations applies to bias heads --text, not --benchmark winobias/);
    expectInputError(attnscope('bias', 'heads', bert, '--benchmark', 'winogender', '--mode', 'mean'), /--mode: winogender heads are ablated with zero gates only/);
    expectInputError(attnscope('bias', 'heads', bert, '--text', 'The man [MASK].', '--contrast', 'he'), /--contrast: expected two words/);
    expectInputError(attnscope('bias', 'heads', bert, '--text', 'The man [MASK].', '--mode', 'half'), /--mode: unknown ablation mode 'half'; allowed: zero, mean/);
    expectInputError(attnscope('bias', 'heads', bert, '--text', 'The man [MASK].', '--controls', '-1'), /--controls: expected an integer from 0 to 100/);
    expectInputError(attnscope('bias', 'heads', bert, '--text', 'The man was late.'), /bert is a masked LM; put its mask token/);
    expectInputError(attnscope('bias', 'heads', bert, '--text', 'The man said [MASK].', '--contrast', 'he,xylophonist'), /--contrast: 'xylophonist' is \d+ tokens/);
    expectInputError(attnscope('bias', 'heads', bert, '--benchmark', 'crows-pairs', '--contrast', 'a,b'), /--contrast applies to bias heads --text/);
    expectInputError(attnscope('bias', 'probe', bert, '--text', 'x', '--k', '2'), /--k applies to bias heads/);
  }, 400_000);
});

describe('attnscope bias report', () => {
  it('writes the page and its JSON: the same report, the CrowS-Pairs metric of bias crows-pairs --json', () => {
    const out = join(tmp, 'report.html');
    const run = attnscope('bias', 'report', join(FIXTURES, 'gpt2'), '--limit', '6', '--k', '2', '--controls', '1', '--permutations', '19', '--steps', '4', '--bootstrap', '100', '--out', out, '--no-cache', '--quiet');
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toMatch(/wrote .*report\.html .*CrowS-Pairs 6 pairs/);
    const html = readFileSync(out, 'utf8');
    const json = JSON.parse(readFileSync(join(tmp, 'report.json'), 'utf8')) as { format: string; model: string; crowsPairs: { pairs: number; metric: { metric: number; n: number } }; winogender: { sentences: number }; heads: { ablated: { heads: unknown[] } }; probes: { text: string }[] };
    expect(json.format).toBe('attnscope-bias-report');
    expect(json.crowsPairs.pairs).toBe(6);
    expect(json.winogender.sentences).toBe(6);
    expect(json.heads.ablated.heads).toHaveLength(2);
    expect(json.probes.map((p) => p.text)).toEqual(['The nurse said that', 'The man worked as a']);
    // The page carries the same report.
    const header = JSON.parse(/<script type="application\/json" id="attnscope-bias-report">(.*?)<\/script>/s.exec(html)![1]!) as { report: unknown };
    expect(header.report).toEqual(json);
    expect(html).toMatch(/Content-Security-Policy" content="default-src 'none'; script-src 'sha256-/);
    // The metric is what bias crows-pairs prints for the same pairs.
    const crows = attnscope('bias', 'crows-pairs', join(FIXTURES, 'gpt2'), '--limit', '6', '--json', '--no-cache', '--quiet');
    expect(crows.status, crows.stderr).toBe(0);
    const m = JSON.parse(crows.stdout) as { metric: number; n: number };
    expect([json.crowsPairs.metric.metric, json.crowsPairs.metric.n]).toEqual([m.metric, m.n]);
  });

  it('refuses bad input in one line', () => {
    const gpt2 = join(FIXTURES, 'gpt2');
    expectInputError(attnscope('bias', 'report', gpt2, '--out', join(tmp, 'r.json')), /bias report --out writes \.html files, not \.json/);
    expectInputError(attnscope('bias', 'report', gpt2, '--bootstrap', '0'), /--bootstrap: expected an integer from 1 to 100000/);
    expectInputError(attnscope('bias', 'report', gpt2, '--theme', 'blue', '--out', join(tmp, 'x.html')), /--theme: unknown theme 'blue'; allowed: light, dark/);
    expectInputError(attnscope('bias', 'report', gpt2, '--limit', '2', '--ablation-pairs', '5', '--out', join(tmp, 'x.html')), /--ablation-pairs: 5 is more than the 2 CrowS-Pairs pairs/);
    expectInputError(attnscope('bias', 'report', gpt2, '--json'), /--json applies to bias/);
  }, 300_000);
});
