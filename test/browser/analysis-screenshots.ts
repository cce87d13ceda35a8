/**
 * Regenerates the README's figures of the gradient and logit-lens views from the default model
 * (stories260k) on one sentence: docs/images/export-{saliency,importance,ablation,lens}.png (the
 * SVG exports as PNG, what `attnscope export --view …` writes) and docs/images/view-analysis.png
 * (the page's Logit lens tab with a cell hovered), in real Chromium with the network blocked.
 *
 *   node scripts/build-web.mjs && npx tsx test/browser/analysis-screenshots.ts [outDir]
 *
 * Review the images before committing them.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { attentionAttributions } from '../../src/analysis/attribution.js';
import type { Trace } from '../../src/core/trace.js';
import { ablateHeads } from '../../src/engine/ablation.js';
import { attribute } from '../../src/engine/gradients.js';
import { loadModel } from '../../src/engine/load.js';
import { ablationViewData, analysisViewData, traceAttributions } from '../../src/views/analysis-data.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderStandaloneHtml } from '../../src/views/html/standalone.js';
import { svgToPng } from '../../src/views/png.js';
import { analysisTitle, renderAblation, renderHeadImportance, renderLogitLens, renderSaliency } from '../../src/views/svg/analysis-views.js';
import { ROOT, launchChromium, openPage } from './harness.js';

export const ANALYSIS_SAMPLE = 'Lily and Ben went to the park. Lily saw a big tree. Ben said to';

async function main(): Promise<void> {
  const out = process.argv[2] ?? join(ROOT, 'docs', 'images');
  mkdirSync(out, { recursive: true });
  const model = await loadModel();
  let trace: Trace;
  let ablation;
  try {
    trace = await model.trace(ANALYSIS_SAMPLE, { logitLens: 5 });
    const inputs = { inputIds: trace.tokens.map((t) => t.id), typeIds: trace.tokens.map((t) => t.segment) };
    const run = await attribute(model, inputs);
    trace.attributions = traceAttributions(run);
    Object.assign(trace.attributions.scores, attentionAttributions({ ...trace, attention: run.attention ?? trace.attention }));
    // Remove the three heads the importance grid ranks highest.
    const imp = run.headImportance!.self!.normalized;
    const heads = Array.from(imp.data, (v, i) => ({ v, layer: Math.floor(i / imp.dims[1]), head: i % imp.dims[1] }))
      .sort((a, b) => b.v - a.v)
      .slice(0, 3)
      .map(({ layer, head }) => ({ stack: 'self' as const, layer, head }));
    ablation = ablationViewData(trace, await ablateHeads(model, inputs, { heads, topK: 8 }), { tokenText: (id) => model.tokenizer?.idToToken(id) ?? null });
  } finally {
    await model.dispose();
  }
  const data = { ...analysisViewData(trace), ablation };
  const name = trace.model.name;
  const png = (file: string, svg: string) => {
    writeFileSync(join(out, file), svgToPng(svg, { scale: 2 }));
    console.log(`wrote ${join(out, file)}`);
  };
  png('export-saliency.png', renderSaliency(data.saliency!, { title: analysisTitle('saliency', name) }));
  png('export-importance.png', renderHeadImportance(data.importance!, { title: analysisTitle('importance', name, data.importance) }));
  png('export-ablation.png', renderAblation(data.ablation, { title: analysisTitle('ablation', name) }));
  png('export-lens.png', renderLogitLens(data.lens!, { title: analysisTitle('lens', name) }));

  const tmp = mkdtempSync(join(tmpdir(), 'attnscope-shots-'));
  const file = join(tmp, 'analysis.html');
  const r = await renderStandaloneHtml(trace, { bundle: await loadViewBundle(), text: ANALYSIS_SAMPLE, theme: 'light', analysis: { ablation }, deflate: (d) => deflateRawSync(d) });
  writeFileSync(file, r.html);
  const browser = await launchChromium();
  try {
    const p = await openPage(browser, file, { width: 1280, height: 760 });
    const { page } = p;
    await page.click('[data-testid=tab-lens]');
    await page.waitForSelector('[data-testid=lens-svg] rect.lens-cell');
    // The last position at the last layer: what the model says next (its own prediction), with its top 5.
    const n = trace.tokens.length;
    await page.hover(`[data-testid=lens-svg] rect.lens-cell[data-row="5"][data-position="${n - 1}"]`, { force: true });
    await page.waitForTimeout(150);
    const bottom = await page.$eval('[data-testid=lens-view]', (el) => {
      let b = 0;
      for (const c of el.querySelectorAll('svg, .readout, .toolbar')) b = Math.max(b, c.getBoundingClientRect().bottom);
      return b;
    });
    const path = join(out, 'view-analysis.png');
    await page.screenshot({ path, clip: { x: 0, y: 0, width: 1280, height: Math.min(1400, Math.ceil(bottom) + 12) }, fullPage: true });
    console.log(`wrote ${path}`);
    await p.close();
  } finally {
    await browser.close();
    rmSync(tmp, { recursive: true, force: true });
  }
}

await main();
