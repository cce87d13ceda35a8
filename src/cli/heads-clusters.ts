/**
 * `attnscope heads --clusters [--projection umap|pca] [--k K]`: the heads of the head table
 * (whatever `attnscope heads` measured: the probe, a text or a trace file) clustered by their
 * metric profiles (analysis/cluster.ts), written as the cluster table (layer, head, cluster,
 * cluster_name, x, y: readable, --csv or --json) or as the scatter (--out FILE.svg or .png).
 * heads-command.ts parses its own options and hands the table here.
 */
import { extname } from 'node:path';
import { CLUSTER_PROJECTIONS, type ClusterProjection, clusterHeads, clusterTableCsv, clusteringJson, headFeatureRows, type HeadClustering } from '../analysis/cluster.js';
import type { HeadTableRow } from '../analysis/head-types.js';
import type { StackName } from '../core/trace.js';
import { writeFileAtomically } from '../io/trace-file.js';
import { STACK_TITLES } from '../views/layout/common.js';
import { svgToPng } from '../views/png.js';
import { renderClusterScatter } from '../views/svg/head-clusters.js';
import { THEME_NAMES, type ThemeName } from '../views/theme.js';
import { parseNumber, parsePositiveInt } from './args.js';
import { checkOut, reportWrote, UsageError } from './parse.js';

export const CLUSTER_SYNOPSIS = '[--clusters [--projection umap|pca] [--k K] [--theme light|dark] [--scale S]]';

export const CLUSTER_HELP = `  --clusters   instead of the metrics, the heads clustered by them: every column standardised to z-scores
               (columns constant over the heads or undefined for all are left out), k-means on those (never on
               the 2-D projection), k by the best mean silhouette over k = 2 … min(8, heads − 1), each
               cluster named by its largest mean z-score ("previous_token ↑"); --seed also seeds k-means and UMAP.
               Writes layer, head, cluster, cluster_name, x, y (--csv, --json: also the clusters' centroids and
               silhouettes), or the scatter with --out FILE.svg | FILE.png (--theme, --scale as for the grid)
  --k K        --clusters: exactly K clusters instead of the best silhouette
  --projection the scatter's 2-D projection: umap (default; seeded) or pca (deterministic)`;

export const CLUSTER_OPTIONS = {
  clusters: { type: 'boolean' },
  projection: { type: 'string' },
  k: { type: 'string' },
  theme: { type: 'string' },
  scale: { type: 'string' },
} as const;

export interface ClusterRun {
  format: 'json' | 'csv' | 'table' | 'svg' | 'png';
  projection?: ClusterProjection;
  k?: number;
  theme?: ThemeName;
  scale?: number;
  out?: string;
}

/** The --clusters flags, checked; null without --clusters (its flags are then refused). */
export function parseClusterFlags(values: { clusters?: boolean; projection?: string; k?: string; theme?: string; scale?: string; json?: boolean; csv?: boolean; out?: string }): ClusterRun | null {
  if (!values.clusters) {
    // --theme and --scale also apply to the head-type grid (heads-command.ts checks them there).
    const picture = values.out !== undefined && ['.svg', '.png'].includes(extname(values.out).toLowerCase());
    for (const flag of ['projection', 'k', 'theme', 'scale'] as const) {
      if (values[flag] !== undefined && !(picture && (flag === 'theme' || flag === 'scale'))) throw new UsageError(`--${flag} applies to --clusters${flag === 'theme' || flag === 'scale' ? ' or to the head-type grid (--out FILE.svg or .png)' : ''}`);
    }
    return null;
  }
  let format: ClusterRun['format'] = values.json ? 'json' : values.csv ? 'csv' : 'table';
  if (values.out !== undefined) {
    const ext = extname(values.out).toLowerCase();
    if (format === 'table' && ['.json', '.csv', '.svg', '.png'].includes(ext)) format = ext.slice(1) as ClusterRun['format'];
    checkOut(values.out, [format === 'table' ? '.txt' : `.${format}`], format === 'table' ? 'heads --clusters (the table)' : `heads --clusters ${format === 'svg' || format === 'png' ? '(the scatter)' : `--${format}`}`);
  }
  if (values.projection !== undefined && !CLUSTER_PROJECTIONS.includes(values.projection as ClusterProjection)) {
    throw new UsageError(`--projection: expected ${CLUSTER_PROJECTIONS.join(' or ')}, got '${values.projection}'`);
  }
  const picture = format === 'svg' || format === 'png';
  if (values.theme !== undefined && !picture) throw new UsageError('--theme applies to the scatter (--out FILE.svg or .png)');
  if (values.theme !== undefined && !THEME_NAMES.includes(values.theme as ThemeName)) throw new UsageError(`--theme: expected ${THEME_NAMES.join(' or ')}, got '${values.theme}'`);
  const scale = parseNumber(values.scale, '--scale');
  if (scale !== undefined && format !== 'png') throw new UsageError('--scale applies to a PNG (--out FILE.png)');
  if (scale !== undefined && !(scale > 0 && scale <= 8)) throw new UsageError(`--scale: expected a number in (0, 8], got '${values.scale}'`);
  return {
    format,
    projection: values.projection as ClusterProjection | undefined,
    k: parsePositiveInt(values.k, '--k'),
    theme: values.theme as ThemeName | undefined,
    scale,
    out: values.out,
  };
}

/** The readable cluster table: each cluster with its heads, then one line per head. */
export function formatClusters(c: HeadClustering, title: string): string {
  const tried = c.silhouettes.map((s) => `${s.k}: ${Number.isFinite(s.score) ? s.score.toFixed(3) : '–'}`).join(', ');
  const out = [title, `${c.k} cluster${c.k === 1 ? '' : 's'} (k-means on ${c.features.length} standardised metrics${c.chosen ? `; mean silhouette by k: ${tried}` : ''})`, ''];
  for (const cl of c.clusters) {
    const heads = c.rows.filter((r) => r.cluster === cl.id).map((r) => `L${r.layer}H${r.head}`);
    out.push(`cluster ${cl.id}  ${cl.name}  (${cl.size}): ${heads.join(' ')}`);
  }
  if (c.dropped.length) out.push('', `left out: ${c.dropped.map((d) => `${d.feature} (${d.reason})`).join(', ')}`);
  out.push('', ['layer', 'head', 'cluster', 'x', 'y', 'cluster_name'].join('\t'));
  for (const r of c.rows) out.push([r.layer, r.head, r.cluster, r.x.toFixed(3), r.y.toFixed(3), r.clusterName].join('\t'));
  return `${out.join('\n')}\n`;
}

/** Clusters the table's heads and writes the result (stdout or run.out). */
export async function writeClusters(
  run: ClusterRun,
  table: readonly HeadTableRow[],
  about: { title: string; model: string; stack: StackName; input: string; seed: number; meta: Record<string, unknown> },
): Promise<void> {
  if (run.k !== undefined && run.k > table.length) throw new UsageError(`--k ${run.k}: there are ${table.length} heads; allowed 1 to ${table.length}`);
  const c = clusterHeads(headFeatureRows(table), { projection: run.projection, k: run.k, seed: about.seed });
  let body: string | Uint8Array;
  if (run.format === 'csv') body = clusterTableCsv(c);
  else if (run.format === 'json') body = `${JSON.stringify({ ...about.meta, ...clusteringJson(c) }, null, 1)}\n`;
  else if (run.format === 'table') body = formatClusters(c, about.title);
  else {
    const svg = renderClusterScatter(c, {
      title: `${about.model} · ${STACK_TITLES[about.stack]} · heads clustered by their metrics (${about.input}, ${c.projection === 'umap' ? 'UMAP' : 'PCA'})`,
      theme: run.theme,
    });
    body = run.format === 'svg' ? svg : svgToPng(svg, { scale: run.scale ?? 2 });
  }
  if (run.out !== undefined) {
    await writeFileAtomically(run.out, async (stream) => {
      stream.write(body);
    });
    reportWrote(run.out, `${c.rows.length} heads in ${c.k} cluster${c.k === 1 ? '' : 's'}`);
  } else {
    process.stdout.write(body);
  }
}
