/**
 * Clustering of heads (src/analysis/cluster.ts) at 12 layers × 12 heads: the head table of a
 * BERT-base-shaped synthetic trace (bench/synthetic-trace.ts, 128 tokens) clustered by its
 * metric profiles. Each step alone — z-scores, k-means for k = 2 … 8 (10 restarts each) with the
 * silhouette of each, the UMAP and the PCA projection — and clusterHeads end to end with each
 * projection; median of 5 runs after one warm-up, wall clock and this process's CPU time.
 *
 *   npm run bench:analysis-cluster        (or: npx tsx bench/analysis-cluster.ts [--tokens 128] [--runs 5])
 */
import { parseArgs } from 'node:util';
import { clusterHeads, headFeatureRows, kMeansBest, projectHeads, silhouette, standardise } from '../src/analysis/cluster.js';
import { headTable } from '../src/analysis/head-types.js';
import { syntheticTrace } from './synthetic-trace.js';
import { measure as measureRuns, type Timing } from './measure.js';

const { values } = parseArgs({ options: { tokens: { type: 'string', default: '128' }, runs: { type: 'string', default: '5' } } });
const tokens = Number(values.tokens);
const runs = Number(values.runs);
const measure = (f: () => unknown): Promise<Timing> => measureRuns(f, runs);

const trace = syntheticTrace({ tokens, qk: false });
const table = headTable(trace);
const rows = headFeatureRows(table);
const z = standardise(rows).z;
const f = (r: Timing) => `${r.wall.toFixed(1)} / ${r.cpu.toFixed(1)}`;
console.log(`clustering ${rows.length} heads (12 × 12) of ${z[0]!.length} standardised features (trace of ${tokens} tokens), median of ${runs} runs (ms, wall / CPU)`);
console.log('| step | ms (wall / CPU) |');
console.log('|---|---:|');
console.log(`| head table (metrics + type scores, for scale) | ${f(await measure(() => headTable(trace)))} |`);
console.log(`| z-scores | ${f(await measure(() => standardise(rows)))} |`);
console.log(`| k-means, k = 4, 10 restarts | ${f(await measure(() => kMeansBest(z, 4, 0, 10)))} |`);
const labels = kMeansBest(z, 4, 0, 10).labels;
console.log(`| silhouette of one labelling | ${f(await measure(() => silhouette(z, labels)))} |`);
console.log(`| k by silhouette (k = 2 … 8, 10 restarts each) | ${f(await measure(() => { for (let k = 2; k <= 8; k++) silhouette(z, kMeansBest(z, k, 0, 10).labels); }))} |`);
console.log(`| UMAP projection (umap-js, seeded) | ${f(await measure(() => projectHeads(z, 'umap', 0)))} |`);
console.log(`| PCA projection (ml-pca) | ${f(await measure(() => projectHeads(z, 'pca', 0)))} |`);
console.log(`| clusterHeads, UMAP (end to end) | ${f(await measure(() => clusterHeads(rows, { projection: 'umap' })))} |`);
console.log(`| clusterHeads, PCA (end to end) | ${f(await measure(() => clusterHeads(rows, { projection: 'pca' })))} |`);
