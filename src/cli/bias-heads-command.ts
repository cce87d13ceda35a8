/**
 * `attnscope bias heads [model]`: the heads behind a probe's contrast (--text) or behind the
 * CrowS-Pairs metric (--benchmark crows-pairs), src/bias/heads.ts. Options are declared with the
 * other bias options (bias-command.ts).
 */
import { AttnscopeError } from '../core/errors.js';
import { ABLATION_MODES, type AblationMode } from '../analysis/ablation.js';
import type { CrowsPair } from '../analysis/bias/crows-pairs.js';
import type { BiasHead } from '../analysis/bias/heads.js';
import { biasHeads, crowsHeads, type BiasHeadsResult, type CrowsHeadsResult } from '../bias/heads.js';
import { benchmarkHeads, benchmarkScorer, pronounHeadItems, stereoHeadItems, type BenchmarkHeadsResult, type HeadsBenchmark } from '../bias/benchmark-heads.js';
import type { PronounItem } from '../analysis/bias/wino.js';
import type { StereoExample } from '../analysis/bias/stereoset.js';
import type { Model } from '../engine/model.js';
import { countProgress } from '../io/progress.js';
import { UsageError } from './parse.js';
import { parsePositiveInt } from './args.js';

export interface HeadsValues {
  contrast?: string;
  k?: string;
  controls?: string;
  mode?: string;
  steps?: string;
}

export interface HeadsSettings {
  contrast: [string, string];
  k: number;
  controls: number;
  mode: AblationMode;
  steps: number;
}

/** --contrast, --k, --controls, --mode, --steps, checked. */
export function parseHeadsSettings(values: HeadsValues): HeadsSettings {
  let contrast: [string, string] = ['he', 'she'];
  if (values.contrast !== undefined) {
    const words = values.contrast.split(',').map((w) => w.trim());
    if (words.length !== 2 || words.some((w) => w === '' || /\s/.test(w))) throw new UsageError(`--contrast: expected two words separated by a comma (e.g. he,she), got '${values.contrast}'`);
    contrast = [words[0]!, words[1]!];
  }
  const controls = values.controls === undefined ? 3 : Number(values.controls);
  if (!Number.isInteger(controls) || controls < 0 || controls > 100) throw new UsageError(`--controls: expected an integer from 0 to 100, got '${values.controls}'`);
  const mode = (values.mode ?? 'zero') as AblationMode;
  if (!ABLATION_MODES.includes(mode)) throw new UsageError(`--mode: unknown ablation mode '${values.mode}'; allowed: ${ABLATION_MODES.join(', ')}`);
  const steps = parsePositiveInt(values.steps, '--steps') ?? 32;
  if (steps > 10000) throw new UsageError(`--steps: expected an integer from 1 to 10000, got '${values.steps}'`);
  return { contrast, k: parsePositiveInt(values.k, '--k') ?? 5, controls, mode, steps };
}

const f = (v: number, d = 3): string => (Number.isFinite(v) ? v.toFixed(d) : '–');
const signed = (v: number, d = 3): string => (Number.isFinite(v) ? `${v >= 0 ? '+' : '−'}${Math.abs(v).toFixed(d)}` : '–');
export const headList = (hs: readonly BiasHead[]): string => hs.map((h) => `L${h.layer}H${h.head}`).join(' ');

function table(head: string[], rows: string[][], indent = '  '): string[] {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `${indent}${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ')}`;
  return [line(head), ...rows.map(line)];
}

/** The printout of a probe's heads. */
export function formatBiasHeads(model: string, r: BiasHeadsResult, top: number): string {
  const p = r.probe;
  const tok = (i: number) => JSON.stringify(p.original.tokens[i]!.text);
  const t = r.target;
  const lines = [
    `Bias heads: ${model}`,
    `text:            ${p.text}`,
    `counterfactual:  ${p.counterfactual.text}`,
    `group tokens:    ${p.groupTokens.map((i) => `${i} ${tok(i)}`).join(', ')}`,
    `target:          T = log P(${JSON.stringify(t.word)}) − log P(${JSON.stringify(t.versus)}) at token ${t.position} ${tok(t.position)} = ${f(t.value)}`,
    '',
    `ablation (${r.mode}) of the top ${r.ablation.heads.length} bias-focused heads (${headList(r.ablation.heads)}): T = ${f(r.ablation.value)} (${signed(r.ablation.value - t.value)})`,
  ];
  if (r.controls.length > 0) {
    lines.push(`random control sets of ${r.ablation.heads.length} other heads: T = ${r.controls.map((c) => f(c.value)).join(', ')}; mean ${f(r.controlMean)} (${signed(r.controlMean - t.value)})`);
  }
  lines.push(
    `head importance |∂T/∂gate| (Michel et al. 2019), top ${r.importanceTop.length}: ${headList(r.importanceTop)}; ${r.overlap} of them among the ablated heads`,
    '',
    'bias attention ratio per layer (heads: mean, max, significant at q < 0.05; rollout: attention rolled out up to the layer):',
    ...table(['layer', 'mean', 'max', 'significant', 'rollout'], r.propagation.map((l) => [String(l.layer), f(l.meanRatio), f(l.maxRatio), String(l.significant), f(l.rolloutRatio)])),
    '',
    `faithfulness: Spearman ρ between each head's attention from token ${r.faithfulness.position} and |integrated gradients| over ${r.faithfulness.tokens.length} tokens (IG: ${r.integratedGradients.steps} steps, completeness error ${f(100 * r.integratedGradients.relativeError, 2)}%);`,
    `the group tokens hold ${f(100 * r.faithfulness.groupAttributionShare, 1)}% of |IG|`,
  );
  const byRatio = new Map(p.heads.map((h) => [`${h.layer}:${h.head}`, h]));
  const rows = [...r.faithfulness.heads]
    .sort((a, b) => (byRatio.get(`${b.layer}:${b.head}`)?.ratio ?? 0) - (byRatio.get(`${a.layer}:${a.head}`)?.ratio ?? 0) || a.layer - b.layer || a.head - b.head)
    .slice(0, top)
    .map((h) => {
      const s = byRatio.get(`${h.layer}:${h.head}`)!;
      return [`L${h.layer}H${h.head}`, f(s.ratio), f(s.q, 4), f(r.importance[h.layer]![h.head]!), f(h.rho), `${f(100 * h.groupAttentionShare, 1)}%`];
    });
  lines.push(...table(['head', 'ratio', 'q', 'importance', 'ρ', 'group attention'], rows));
  const rhos = r.faithfulness.heads.map((h) => h.rho).filter(Number.isFinite);
  lines.push(`mean ρ over ${rhos.length} heads: ${f(rhos.reduce((a, b) => a + b, 0) / Math.max(1, rhos.length))} (attention is not explanation: a head can look at the group without carrying the prediction)`);
  return `${lines.join('\n')}\n`;
}

/** The printout of CrowS-Pairs' heads. */
export function formatCrowsHeads(model: string, r: CrowsHeadsResult, pairs: number): string {
  const m = (x: { metric: { metric: number } }) => f(x.metric.metric, 2);
  const lines = [
    `CrowS-Pairs heads: ${model} (${pairs} pairs)`,
    `bias attention ratio on the tokens sent_more has of its own, mean over ${r.ratioPairs} pairs; top ${r.ablated.heads.length}: ${headList(r.ablated.heads)}`,
    '',
    `metric as trained:                      ${m(r.before)}`,
    `metric with those heads zeroed:         ${m(r.ablated)} (${signed(r.ablated.metric.metric - r.before.metric.metric, 2)})`,
  ];
  for (const c of r.controls) lines.push(`${`metric with random heads (${headList(c.heads)}):`.padEnd(40)}${m(c)} (${signed(c.metric.metric - r.before.metric.metric, 2)})`);
  lines.push('', 'mean ratio per head ([layer] head 0 …):');
  for (const [l, row] of r.ratios.entries()) lines.push(`  L${l}  ${row.map((v) => f(v, 2)).join('  ')}`);
  return `${lines.join('\n')}\n`;
}

const jsonNumbers = (_: string, v: unknown): unknown => (typeof v === 'number' && !Number.isFinite(v) ? null : v);

/** The JSON of a probe's heads (traces left out: tokens instead). */
export function biasHeadsJson(model: string, r: BiasHeadsResult): unknown {
  const { original, swapped, attention, ...probe } = r.probe;
  return {
    model,
    ...r,
    probe: { ...probe, tokens: original.tokens.map((t) => t.text), counterfactualTokens: swapped.tokens.map((t) => t.text), attention: attention?.ranking ?? null },
  };
}

export async function runHeadsCommand(
  model: Model,
  values: HeadsValues & { json?: boolean; quiet?: boolean; text?: string; benchmark?: string; top?: string },
  probe: { lexicons: Parameters<typeof biasHeads>[2]; permutations: number; seed: number } | null,
  pairs: readonly CrowsPair[] | null,
): Promise<string> {
  const s = parseHeadsSettings(values);
  const top = parsePositiveInt(values.top, '--top') ?? 10;
  if (probe && values.text !== undefined) {
    const r = await biasHeads(model, values.text, probe.lexicons, { contrast: s.contrast, k: s.k, controls: s.controls, mode: s.mode, steps: s.steps, permutations: probe.permutations, seed: probe.seed });
    return values.json ? `${JSON.stringify(biasHeadsJson(model.name, r), jsonNumbers, 2)}\n` : formatBiasHeads(model.name, r, top);
  }
  if (!pairs) throw new AttnscopeError('bias heads: nothing to analyse');
  if (s.mode !== 'zero') throw new UsageError('--mode: CrowS-Pairs heads are ablated with zero gates only (mean ablation needs the contexts of each masked copy); leave --mode out');
  let progress: ReturnType<typeof countProgress> | null = null;
  let phase = '';
  const r = await crowsHeads(model, pairs, {
    k: s.k,
    controls: s.controls,
    seed: probe?.seed,
    onProgress: (ph, d, t) => {
      if (ph !== phase || !progress) {
        progress?.done();
        progress = countProgress(`crows-pairs ${ph}`, values.quiet ?? false);
        phase = ph;
      }
      progress.update(d, t);
    },
  });
  (progress as ReturnType<typeof countProgress> | null)?.done();
  if (values.json) {
    const run = (x: CrowsHeadsResult['before']) => ({ heads: x.heads, metric: x.metric });
    return `${JSON.stringify({ model: model.name, benchmark: 'crows-pairs', pairs: pairs.length, ratioPairs: r.ratioPairs, ratios: r.ratios, before: run(r.before), ablated: run(r.ablated), controls: r.controls.map(run) }, jsonNumbers, 2)}\n`;
  }
  return formatCrowsHeads(model.name, r, pairs.length);
}

/** The printout of a benchmark's heads (WinoGender, WinoBias, StereoSet). */
export function formatBenchmarkHeads(model: string, r: BenchmarkHeadsResult): string {
  const names = Object.keys(r.before.metrics);
  const ms = (m: Record<string, number>, base?: Record<string, number>) => names.map((n) => `${n} ${f(m[n]!, 2)}${base ? ` (${signed(m[n]! - base[n]!, 2)})` : ''}`).join(', ');
  const lines = [
    `${r.benchmark} heads: ${model} (${r.items} items)`,
    `bias attention ratio on each item's ${r.benchmark === 'stereoset' ? 'target term' : 'occupation'}, mean over ${r.ratioItems} items; top ${r.ablated.heads.length}: ${headList(r.ablated.heads)}`,
    '',
    `as trained:                             ${ms(r.before.metrics)}`,
    `with those heads zeroed:                ${ms(r.ablated.metrics, r.before.metrics)}`,
  ];
  for (const c of r.controls) lines.push(`${`with random heads (${headList(c.heads)}):`.padEnd(40)}${ms(c.metrics, r.before.metrics)}`);
  lines.push('');
  if (r.faithfulness.items > 0) {
    const rhos = r.faithfulness.rho.flat().filter(Number.isFinite);
    lines.push(
      `head importance |∂T/∂gate| over ${r.faithfulness.items} items, top ${r.importanceTop.length}: ${headList(r.importanceTop)}; ${r.overlap} of them among the ablated heads`,
      `faithfulness: mean Spearman ρ (attention from the slot vs |integrated gradients of T|) over the heads ${f(rhos.reduce((a, b) => a + b, 0) / Math.max(1, rhos.length))}; the group tokens hold ${f(100 * r.faithfulness.groupAttributionShare, 1)}% of |IG| (completeness error ≤ ${f(100 * r.faithfulness.igRelativeError, 2)}%)`,
    );
  } else lines.push('no item has a one-token contrast at its slot: no importance or faithfulness');
  lines.push('', 'bias attention ratio per layer (mean, max over the heads):', ...table(['layer', 'mean', 'max'], r.propagation.map((l) => [String(l.layer), f(l.meanRatio), f(l.maxRatio)])));
  const byRatio = r.ratios.flatMap((row, l) => row.map((v, h) => ({ l, h, v }))).filter((x) => Number.isFinite(x.v)).sort((a, b) => b.v - a.v).slice(0, 10);
  lines.push('', 'heads of largest ratio:', ...table(['head', 'ratio', 'importance', 'ρ'], byRatio.map((x) => [`L${x.l}H${x.h}`, f(x.v), f(r.importance[x.l]![x.h]!), f(r.faithfulness.rho[x.l]![x.h]!)])));
  return `${lines.join('\n')}\n`;
}

/** `bias heads --benchmark winogender|winobias|stereoset`. */
export async function runBenchmarkHeadsCommand(
  model: Model,
  values: HeadsValues & { json?: boolean; quiet?: boolean },
  benchmark: HeadsBenchmark,
  data: { pronouns?: readonly PronounItem[]; stats?: ReadonlyMap<string, { bls: number }>; examples?: readonly StereoExample[] },
  seed: number,
): Promise<string> {
  const s = parseHeadsSettings(values);
  let progress: ReturnType<typeof countProgress> | null = null;
  let phase = '';
  const onProgress = (ph: string, d: number, t: number) => {
    if (ph !== phase || !progress) {
      progress?.done();
      progress = countProgress(`${benchmark} ${ph}`, values.quiet ?? false);
      phase = ph;
    }
    progress.update(d, t);
  };
  const items = benchmark === 'stereoset' ? await stereoHeadItems(model, data.examples ?? []) : await pronounHeadItems(model, data.pronouns ?? []);
  const r = await benchmarkHeads(model, benchmark, items, benchmarkScorer(model, benchmark, data), { k: s.k, controls: s.controls, steps: s.steps, seed, onProgress });
  (progress as ReturnType<typeof countProgress> | null)?.done();
  if (values.json) return `${JSON.stringify({ model: model.name, ...r }, jsonNumbers, 2)}\n`;
  return formatBenchmarkHeads(model.name, r);
}
