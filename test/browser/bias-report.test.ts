/**
 * The bias report page in real Chromium, opened from disk with every network request blocked: a
 * report built on the bert fixture (12 CrowS-Pairs pairs, 24 WinoGender sentences, a probe whose
 * text carries markup). It opens with no page errors, console errors, dialogs or requests; every
 * panel is there; the marks carry the report's numbers (score bars, head cells); hovering reads a
 * bar out; the probe text is shown as text; a panel downloads as SVG; the theme switch repaints.
 * Saves a screenshot of the page for review (docs/images/bias-report.png is made the same way).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BiasReport } from '../../src/analysis/bias/report.js';
import { buildBiasReport } from '../../src/bias/report.js';
import { loadCrowsPairs, loadGroupLexicons, loadOccupationStats, loadWinogender } from '../../src/bias/data-files.js';
import { loadModel } from '../../src/engine/load.js';
import { loadViewBundle } from '../../src/views/html/bundle-node.js';
import { renderBiasReportPage } from '../../src/views/html/bias-report.js';
import { DARK } from '../../src/views/theme.js';
import { ROOT, buildWebClient, launchChromium, openPage, type OpenedPage } from './harness.js';

const TEXT = 'The nurse <img src=x onerror=alert(1)> said that [MASK] would be late.';
const tmp = mkdtempSync(join(tmpdir(), 'attnscope-bias-report-'));
const file = join(tmp, 'report.html');
let browser: Browser;
let report: BiasReport;
let opened: OpenedPage;

beforeAll(async () => {
  buildWebClient();
  browser = await launchChromium();
  const model = await loadModel(join(ROOT, 'test', 'fixtures', 'bert'), { graphCache: false });
  try {
    report = await buildBiasReport(model, {
      pairs: (await loadCrowsPairs()).slice(0, 12),
      winogender: (await loadWinogender()).slice(0, 24),
      occupationStats: await loadOccupationStats(),
      lexicons: await loadGroupLexicons(['gender', 'occupation']),
      texts: [TEXT, 'The man worked as a [MASK].'],
      k: 2,
      controls: 2,
      permutations: 49,
      steps: 8,
      resamples: 200,
      ablationPairs: 2,
    });
  } finally {
    await model.dispose();
  }
  writeFileSync(file, await renderBiasReportPage(report, { bundle: await loadViewBundle(), theme: 'light' }));
  opened = await openPage(browser, file, { width: 1100, height: 900 });
}, 600_000); // the report's runs (CrowS-Pairs, WinoGender, the heads, the ablation) on a loaded machine

afterAll(async () => {
  await opened?.close();
  await browser?.close();
  rmSync(tmp, { recursive: true, force: true });
});

describe('the bias report page', () => {
  it('opens with no network, errors or dialogs, with every panel and the notes', async () => {
    const { page } = opened;
    expect(opened.network()).toEqual([]);
    expect(opened.errors).toEqual([]);
    expect(opened.consoleErrors).toEqual([]);
    expect(opened.dialogs).toEqual([]);
    expect(await page.locator('[data-testid=bias-title]').textContent()).toBe('bias report · bert');
    const panels = await page.locator('[data-panel]').evaluateAll((els) => els.map((e) => e.getAttribute('data-panel')));
    expect(panels).toEqual(['scores', 'occupations', 'heads', 'ablation', 'propagation']);
    expect(await page.locator('[data-testid=bias-notes] li').count()).toBe(report.notes.length);
    await page.screenshot({ path: join(tmp, 'bias-report.png'), fullPage: true });
  });

  it('the marks carry the report numbers; hovering a bar reads it out', async () => {
    const { page } = opened;
    const bars = await page.locator('[data-testid=bias-svg-scores] rect.score-bar').evaluateAll((els) => els.map((e) => [e.getAttribute('data-label'), Number(e.getAttribute('data-value'))]));
    const m = report.crowsPairs!.metric;
    expect(bars[0]).toEqual(['all pairs', m.metric]);
    for (const [label, value] of bars.slice(3)) expect(value).toBe(m.byBiasType[label as string]!.metric);
    const cells = await page.locator('[data-testid=bias-svg-heads] rect.bias-head-cell').evaluateAll((els) => els.map((e) => [Number(e.getAttribute('data-layer')), Number(e.getAttribute('data-head')), e.getAttribute('data-value')]));
    expect(cells).toHaveLength(2 * 4);
    for (const [l, h, v] of cells) {
      const r = report.heads!.ratios[l as number]![h as number]!;
      expect(v).toBe(Number.isFinite(r) ? String(r) : 'NaN');
    }
    await page.locator('[data-testid=bias-svg-scores] rect.score-bar').first().hover({ force: true });
    const readout = await page.locator('[data-testid=bias-readout-scores]').textContent();
    expect(readout).toContain(`all pairs: ${m.metric.toFixed(2)}`);
    expect(readout).toContain(`${m.n} pairs`);
  });

  it('shows the probe text as text, never as markup', async () => {
    const { page } = opened;
    expect(await page.locator('[data-testid=bias-probe-text-0]').textContent()).toBe(TEXT);
    expect(await page.locator('img').count()).toBe(0);
    expect(opened.dialogs).toEqual([]);
    const group = await page.locator('[data-testid=bias-probe-tokens-0] .group-token').allTextContents();
    expect(group).toEqual(report.probes[0]!.groupTokens.map((i) => report.probes[0]!.tokens[i]!));
  });

  it('downloads a panel as SVG and switches theme', async () => {
    const { page } = opened;
    const [download] = await Promise.all([page.waitForEvent('download'), page.locator('[data-testid=bias-svg-download-heads]').click()]);
    const path = join(tmp, 'heads.svg');
    await download.saveAs(path);
    const svg = readFileSync(path, 'utf8');
    expect(svg).toMatch(/^<svg|^<\?xml/);
    expect((svg.match(/class="bias-head-cell/g) ?? []).length).toBe(8);
    expect(download.suggestedFilename()).toBe('attnscope-bias-heads-bert.svg');
    await page.locator('[data-testid=bias-theme]').click();
    expect(await page.evaluate(() => document.body.style.background)).toBe(hexToRgb(DARK.background));
    expect(await page.locator('[data-testid=bias-svg-heads]').getAttribute('style')).toBe(`background: ${DARK.background}`);
    expect(opened.errors).toEqual([]);
    expect(opened.network()).toEqual([]);
  });
});

function hexToRgb(hex: string): string {
  const n = Number.parseInt(hex.slice(1), 16);
  return `rgb(${(n >> 16) & 255}, ${(n >> 8) & 255}, ${n & 255})`;
}
