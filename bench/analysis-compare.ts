/**
 * Comparison and word/sentence aggregation on BERT-base-shaped synthetic traces (12 layers × 12
 * heads, bench/synthetic-trace.ts) at 32, 128 and 512 tokens, median of 5 runs after one warm-up,
 * wall clock and this process's CPU time (ms):
 * - compare, positions: `compareTraces` of two traces (seeds 1 and 2) ranking all 144 heads
 *   (JS divergence of every row, max/mean |A − B|);
 * - compare, words: the same through words of the text (`align: 'words'`: both sides summarised to
 *   word × word per head first; the tokens are WordPiece-like, ~15% continuation pieces);
 * - word rule, 144 heads: `groupMatrix` (keys summed, queries averaged) of every head;
 * - sentences, 144 heads: `sentenceUnits` (Intl.Segmenter) once, then `blockMatrix` (mean) of every head;
 * - figure: `renderComparisonSvg` of the top pair with the ranked list.
 *
 *   npm run bench:analysis-compare        (or: npx tsx bench/analysis-compare.ts [--tokens 32,128,512])
 */
import { parseArgs } from 'node:util';
import { compareTraces } from '../src/analysis/compare.js';
import { blockMatrix, groupMatrix, sentenceUnits, wordUnits } from '../src/analysis/words.js';
import type { Trace } from '../src/core/trace.js';
import { renderComparisonSvg } from '../src/views/svg/diff-heatmap.js';
import { syntheticTrace } from './synthetic-trace.js';
import { measure as measureRuns, type Timing } from './measure.js';

const { values } = parseArgs({ options: { tokens: { type: 'string', default: '32,128,512' }, runs: { type: 'string', default: '5' } } });
const lengths = values.tokens.split(',').map(Number);
const runs = Number(values.runs);
const measure = (f: () => unknown): Promise<Timing> => measureRuns(f, runs);

/** Gives the synthetic tokens a text: words separated by spaces, "##" pieces glued on, a full stop every 12 words. Returns the text. */
function giveText(trace: Trace): string {
  let text = '';
  let words = 0;
  for (const t of trace.tokens) {
    if (t.special) continue;
    if (t.text.startsWith('##')) {
      t.start = text.length;
      text += t.text.slice(2);
      t.end = text.length;
      continue;
    }
    const sentenceStart = words % 12 === 0;
    if (text.length) text += sentenceStart ? '. ' : ' ';
    words++;
    t.start = text.length;
    // A capital after the full stop, so that the segmenter ends the sentence there.
    text += sentenceStart ? t.text[0]!.toUpperCase() + t.text.slice(1) : t.text;
    t.end = text.length;
  }
  return `${text}.`;
}

console.log(`comparison and aggregation, 12 layers × 12 heads, median of ${runs} runs (ms, wall / CPU)`);
console.log('| tokens | words | sentences | compare, positions | compare, words | word rule, 144 heads | sentences, 144 heads | figure (SVG) |');
console.log('|---:|---:|---:|---:|---:|---:|---:|---:|');
for (const n of lengths) {
  const a = syntheticTrace({ tokens: n, qk: false, pair: false, seed: 1 });
  const b = syntheticTrace({ tokens: n, qk: false, pair: false, seed: 2 });
  const text = giveText(a);
  giveText(b);
  const s = a.attention.self!;
  const [H] = s.dims;
  const units = wordUnits(a.tokens);
  const sentences = sentenceUnits(a.tokens, [text]);
  const f = (r: Timing) => `${r.wall.toFixed(r.wall < 10 ? 1 : 0)} / ${r.cpu.toFixed(r.cpu < 10 ? 1 : 0)}`;
  const pos = await measure(() => compareTraces(a, b));
  const words = await measure(() => compareTraces(a, b, { align: 'words', text }));
  const rule = await measure(() => {
    for (const layer of s.layers) for (let h = 0; h < H; h++) groupMatrix(layer, n, n, units, units, {}, h * n * n);
  });
  const sent = await measure(() => {
    const u = sentenceUnits(a.tokens, [text]);
    for (const layer of s.layers) for (let h = 0; h < H; h++) blockMatrix(layer, n, n, u, u, 'mean', h * n * n);
  });
  const cmp = compareTraces(a, b);
  const fig = await measure(() => renderComparisonSvg(cmp));
  console.log(`| ${n} | ${units.length} | ${sentences.length} | ${f(pos)} | ${f(words)} | ${f(rule)} | ${f(sent)} | ${f(fig)} |`);
}
