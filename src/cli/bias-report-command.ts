/**
 * `attnscope bias report [model]`: runs what the bias report shows (src/bias/report.ts) and writes
 * the standalone HTML page (src/views/html/bias-report.ts) and the same numbers as JSON beside it.
 * Options are declared with the other bias options (bias-command.ts).
 */
import { writeFile } from 'node:fs/promises';
import { AttnscopeError } from '../core/errors.js';
import type { CrowsPair } from '../analysis/bias/crows-pairs.js';
import type { GroupLexicon } from '../analysis/bias/groups.js';
import { biasReportJson } from '../analysis/bias/report.js';
import type { PronounItem } from '../analysis/bias/wino.js';
import { buildBiasReport } from '../bias/report.js';
import type { PairScoreCache } from '../bias/crows-pairs.js';
import type { Model } from '../engine/model.js';
import { countProgress } from '../io/progress.js';
import { loadViewBundle } from '../views/html/bundle-node.js';
import { renderBiasReportPage } from '../views/html/bias-report.js';
import { parseHeadsSettings, type HeadsValues } from './bias-heads-command.js';
import { parsePositiveInt } from './args.js';
import { reportWrote, UsageError } from './parse.js';

export interface ReportValues extends HeadsValues {
  out?: string;
  text?: string;
  bootstrap?: string;
  'ablation-pairs'?: string;
  theme?: string;
  quiet?: boolean;
}

/** The JSON file written beside the page: the same name with .json. */
export const reportJsonPath = (html: string): string => html.replace(/\.html?$/i, '') + '.json';

export async function runReportCommand(
  model: Model,
  values: ReportValues,
  data: { pairs: readonly CrowsPair[]; biasType: string | null; winogender: readonly PronounItem[]; stats: ReadonlyMap<string, { bls: number }>; lexicons: readonly GroupLexicon[]; permutations: number; seed: number; cache?: PairScoreCache },
): Promise<void> {
  const s = parseHeadsSettings(values);
  const resamples = values.bootstrap === undefined ? 1000 : Number(values.bootstrap);
  if (!Number.isInteger(resamples) || resamples < 1 || resamples > 100000) throw new UsageError(`--bootstrap: expected an integer from 1 to 100000, got '${values.bootstrap}'`);
  const ablationPairs = values['ablation-pairs'] === undefined ? 0 : Number(values['ablation-pairs']);
  if (!Number.isInteger(ablationPairs) || ablationPairs < 0) throw new UsageError(`--ablation-pairs: expected a non-negative integer, got '${values['ablation-pairs']}'`);
  if (values.theme !== undefined && values.theme !== 'light' && values.theme !== 'dark') throw new UsageError(`--theme: unknown theme '${values.theme}'; allowed: light, dark`);
  if (ablationPairs > data.pairs.length) throw new AttnscopeError(`--ablation-pairs: ${ablationPairs} is more than the ${data.pairs.length} CrowS-Pairs pairs of the report`);
  const out = values.out ?? 'bias-report.html';
  const bundle = await loadViewBundle();
  let phase = '';
  let progress: ReturnType<typeof countProgress> | null = null;
  const report = await buildBiasReport(model, {
    pairs: data.pairs,
    biasType: data.biasType,
    winogender: data.winogender,
    occupationStats: data.stats,
    texts: values.text === undefined ? undefined : [values.text],
    lexicons: data.lexicons,
    contrast: s.contrast,
    k: s.k,
    controls: s.controls,
    mode: s.mode,
    steps: s.steps,
    permutations: data.permutations,
    seed: data.seed,
    resamples,
    ablationPairs,
    cache: data.cache,
    onProgress: (ph, d, t) => {
      if (ph !== phase || !progress) {
        progress?.done();
        progress = countProgress(ph, values.quiet ?? false);
        phase = ph;
      }
      progress.update(d, t);
    },
  });
  (progress as ReturnType<typeof countProgress> | null)?.done();
  const html = await renderBiasReportPage(report, { bundle, theme: values.theme as 'light' | 'dark' | undefined });
  await writeFile(out, html);
  const json = reportJsonPath(out);
  await writeFile(json, biasReportJson(report));
  const parts = [report.crowsPairs ? `CrowS-Pairs ${report.crowsPairs.pairs} pairs, metric ${report.crowsPairs.metric.metric.toFixed(2)}` : null, report.winogender ? `WinoGender ${report.winogender.sentences} sentences` : null, `${report.probes.length} probes`].filter(Boolean).join(', ');
  reportWrote(out, parts, 'open it in a browser; it needs no network');
  reportWrote(json, 'the same numbers as JSON');
}
