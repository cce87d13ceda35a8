/**
 * The bias report (issue 12, point 4): its panels' layouts on a hand-made report (bar lengths,
 * whiskers, the 50 line, points, head cells, outlines and ablation marks against the numbers put
 * in), the SVG writer and the page escaping any text, the page's CSP and JSON, and the report
 * built on a fixture model (WinoGender correlation and the ablation re-computed here).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { crowsPairRows, crowsPairsMetric, type CrowsPair } from '../src/analysis/bias/crows-pairs.js';
import { crowsIntervals } from '../src/analysis/bias/bootstrap.js';
import { BIAS_REPORT_FORMAT, BIAS_REPORT_VERSION, REPORT_NOTES, biasReportJson, type BiasReport } from '../src/analysis/bias/report.js';
import { ablationLayout, biasReportPanels, headsLayout, occupationsLayout, scoreBars, scoresLayout } from '../src/views/layout/bias-report.js';
import { renderBiasPanel, renderBiasPanels } from '../src/views/svg/bias-report.js';
import { renderBiasReportPage } from '../src/views/html/bias-report.js';
import { LIGHT } from '../src/views/theme.js';
import type { Item, RectItem } from '../src/views/layout/common.js';
import { buildBiasReport } from '../src/bias/report.js';
import { loadCrowsPairs, loadGroupLexicons, loadOccupationStats, loadWinogender } from '../src/bias/data-files.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';

const EVIL = '<img src=x onerror=alert(1)> & "quotes"';

function handReport(): BiasReport {
  const pair = (i: number, direction: 'stereo' | 'antistereo', biasType: string): CrowsPair => ({ index: i, sentMore: `m${i}`, sentLess: `l${i}`, direction, biasType });
  const pairs = Array.from({ length: 20 }, (_, i) => pair(i, i < 15 ? 'stereo' : 'antistereo', i % 2 ? 'gender' : EVIL));
  // Pairs 0–11 prefer sent_more (score1 > score2 for stereo rows): 12 of 15 stereo successes, 0 of 5 antistereo.
  const rows = crowsPairRows(pairs, pairs.map((_, i) => ({ sent1: i < 12 ? -1 : -3, sent2: -2 })), true);
  const metric = crowsPairsMetric(rows);
  return {
    format: BIAS_REPORT_FORMAT,
    version: BIAS_REPORT_VERSION,
    model: `model ${EVIL}`,
    modelType: 'bert',
    kind: 'masked',
    created: '2026-12-02T08:00:00Z',
    crowsPairs: { pairs: 20, biasType: null, method: 'masked', metric, intervals: crowsIntervals(rows, metric, { resamples: 200 }), resamples: 200 },
    winogender: {
      sentences: 6,
      femaleShare: 40,
      correlation: 0.5,
      occupations: [
        { occupation: 'nurse', items: 3, femaleShare: 70, maleMinusFemale: -1, neutralTop: 0, blsFemale: 90 },
        { occupation: EVIL, items: 3, femaleShare: 10, maleMinusFemale: 2, neutralTop: 0, blsFemale: 20 },
        { occupation: 'no stats', items: 3, femaleShare: 10, maleMinusFemale: 2, neutralTop: 0 },
      ],
    },
    heads: {
      text: `The nurse ${EVIL} [MASK]`,
      target: { word: 'he', versus: 'she', position: 3, token: '[MASK]', value: 0.5 },
      ratios: [[2, 1, 0.5], [4, Number.NaN, 1]],
      q: [[0.01, 0.5, 0.9], [0.02, Number.NaN, 0.3]],
      importance: [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]],
      mode: 'zero',
      ablated: { heads: [{ layer: 1, head: 0 }, { layer: 0, head: 0 }], value: 0.1 },
      controls: [{ heads: [{ layer: 0, head: 1 }, { layer: 1, head: 2 }], value: 0.45 }, { heads: [{ layer: 0, head: 2 }, { layer: 1, head: 1 }], value: 0.55 }],
      controlMean: 0.5,
      propagation: [{ layer: 0, meanRatio: 7 / 6, maxRatio: 2, significant: 1, rolloutRatio: 1.1 }, { layer: 1, meanRatio: 2.5, maxRatio: 4, significant: 1, rolloutRatio: 1.3 }],
      rho: [[0.1, 0.2, 0.3], [0.4, Number.NaN, 0.6]],
      groupAttributionShare: 0.2,
      igRelativeError: 0.01,
    },
    crowsAblation: { pairs: 5, heads: [{ layer: 1, head: 0 }], before: 60, after: 40, controls: [{ heads: [{ layer: 0, head: 1 }], metric: 60 }] },
    probes: [],
    notes: [...REPORT_NOTES],
  };
}

const rects = (items: Item[], cls: string): RectItem[] => items.filter((i): i is RectItem => i.kind === 'rect' && (i.className ?? '').split(' ').includes(cls));
const lines = (items: Item[], cls: string) => items.filter((i) => i.kind === 'line' && i.className === cls) as Extract<Item, { kind: 'line' }>[];

describe('the report panels', () => {
  it('scores: bars from 0 to the metric, whiskers at the interval, the line at 50', () => {
    const r = handReport();
    const bars = scoreBars(r.crowsPairs!);
    // CrowS-Pairs' own types first, in its order, then any other type.
    expect(bars.map((b) => b.label)).toEqual(['all pairs', 'stereo rows', 'antistereo rows', 'gender', EVIL]);
    // Stereo rows 0–14 succeed when score1 (-1 for i < 12, else -3) > score2 (-2): 12 of 15; antistereo rows
    // 15–19 when score2 (-2) > score1 (-3): 5 of 5; all 17 of 20. Gender (odd i): 6 + 0 + 3 = 9 of 10; the other type 6 + 0 + 2.
    expect(bars.map((b) => b.value)).toEqual([85, 80, 100, 90, 80]);
    const layout = scoresLayout(r.crowsPairs!, LIGHT);
    const grid = lines(layout.items, 'grid-line');
    const x0 = grid[0]!.x1;
    const x100 = grid[4]!.x1;
    const fifty = lines(layout.items, 'reference-50')[0]!;
    expect(fifty.x1).toBeCloseTo(x0 + 0.5 * (x100 - x0), 9);
    const drawn = rects(layout.items, 'score-bar');
    // The antistereo bar (0) is drawn 1 px wide; the others in proportion.
    for (const b of drawn) {
      const v = Number(b.data!.value);
      expect(b.x).toBeCloseTo(x0, 9);
      expect(b.width).toBeCloseTo(Math.max(1, (v / 100) * (x100 - x0)), 9);
    }
    const whiskers = lines(layout.items, 'ci-whisker');
    expect(whiskers).toHaveLength(5);
    const all = r.crowsPairs!.intervals.overall;
    expect(whiskers[0]!.x1).toBeCloseTo(x0 + (all.low / 100) * (x100 - x0), 9);
    expect(whiskers[0]!.x2).toBeCloseTo(x0 + (all.high / 100) * (x100 - x0), 9);
  });

  it('occupations: one point per occupation with statistics, at (BLS, model)', () => {
    const layout = occupationsLayout(handReport().winogender!, LIGHT);
    const points = rects(layout.items, 'occupation-point');
    expect(points.map((p) => p.data!.label)).toEqual(['nurse', EVIL]);
    const frame = rects(layout.items, 'plot-frame')[0]!;
    const [nurse] = points;
    expect(nurse!.x + 4).toBeCloseTo(frame.x + 0.9 * frame.width, 9);
    expect(nurse!.y + 4).toBeCloseTo(frame.y + frame.height - 0.7 * frame.height, 9);
  });

  it('heads: a cell per head coloured by log2 ratio, significant ones outlined, ablated ones crossed', () => {
    const layout = headsLayout(handReport().heads!, LIGHT);
    const cells = rects(layout.items, 'bias-head-cell');
    expect(cells).toHaveLength(6);
    expect(cells.filter((c) => c.className!.includes('significant')).map((c) => [c.data!.layer, c.data!.head])).toEqual([[0, 0], [1, 0]]);
    expect([...new Set(lines(layout.items, 'ablated-mark').map((l) => `${l.data!.layer}:${l.data!.head}`))]).toEqual(['0:0', '1:0']);
    // log2 ratio 0 (ratio 1) is the diverging scale's middle; NaN is the panel colour.
    const byHead = (l: number, h: number) => cells.find((c) => c.data!.layer === l && c.data!.head === h)!;
    expect(byHead(0, 1).fill).toBe(byHead(1, 2).fill);
    expect(byHead(1, 1).fill).toBe(LIGHT.panel);
    expect(byHead(1, 1).data!.value).toBe('NaN');
  });

  it('ablation: dots at T as trained, without the top heads and per control, on one axis', () => {
    const layout = ablationLayout(handReport().heads!, handReport().crowsAblation, LIGHT);
    const dots = rects(layout.items, 'contrast');
    expect(dots.map((d) => [d.data!.kind, d.data!.value])).toEqual([['trained', 0.5], ['ablated', 0.1], ['control', 0.45], ['control', 0.55], ['control-mean', 0.5]]);
    // Positions are linear in the value: trained (0.5) and the control mean (0.5) share x; the middle of 0.45 and 0.55 is 0.5.
    const cx = (d: RectItem) => d.x + d.width / 2;
    expect(cx(dots[0]!)).toBeCloseTo(cx(dots[4]!), 9);
    expect((cx(dots[2]!) + cx(dots[3]!)) / 2).toBeCloseTo(cx(dots[0]!), 9);
    const crows = rects(layout.items, 'crows');
    expect(crows.map((d) => d.data!.value)).toEqual([60, 40, 60]);
  });

  it('the SVG writer escapes every text; the page has the CSP, no URLs, the report as JSON', async () => {
    const r = handReport();
    const svgs = renderBiasPanels(r);
    expect(svgs.map((s) => s.name)).toEqual(['scores', 'occupations', 'heads', 'ablation', 'propagation']);
    for (const { svg } of svgs) {
      expect(svg.startsWith('<svg') || svg.startsWith('<?xml')).toBe(true);
      expect(svg).not.toContain('<img');
      expect(svg).not.toMatch(/(href|src)="https?:/);
    }
    expect(renderBiasPanel(r, 'scores')).toContain('&lt;img src=x onerror=alert(1)&gt; &amp; ');
    expect(renderBiasPanel({ ...r, winogender: null }, 'occupations')).toBeNull();
    const html = await renderBiasReportPage(r, { bundle: { js: 'console.log("</script>")', css: 'body{}' } });
    expect(html).toMatch(/<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'sha256-[A-Za-z0-9+/=]+'/);
    expect(html).not.toContain('<img');
    expect(html).not.toMatch(/https?:\/\//);
    expect(html.match(/<\/script>/g)).toHaveLength(2); // the header's and the code's own ends only
    const json = /<script type="application\/json" id="attnscope-bias-report">(.*?)<\/script>/s.exec(html)![1]!;
    const header = JSON.parse(json) as { report: BiasReport };
    expect(header.report.model).toBe(r.model);
    expect(header.report.heads!.ratios[1]![1]).toBeNull();
    expect(JSON.parse(biasReportJson(r))).toEqual(header.report);
    // Panels from the JSON form (nulls) lay out as from the in-memory form (NaN).
    expect(biasReportPanels(header.report, LIGHT).map((p) => p.picture.items.length)).toEqual(biasReportPanels(r, LIGHT).map((p) => p.picture.items.length));
  });
});

describe('the report built on a fixture model', () => {
  let bert: Model;
  beforeAll(async () => {
    bert = await loadModel(join(import.meta.dirname, 'fixtures', 'bert'), { graphCache: false });
  });
  afterAll(async () => {
    await bert?.dispose();
  });

  it('CrowS-Pairs, WinoGender, the heads of the first probe and the CrowS-Pairs ablation', async () => {
    const pairs = (await loadCrowsPairs()).slice(0, 12);
    const winogender = (await loadWinogender()).slice(0, 24);
    const report = await buildBiasReport(bert, {
      pairs, winogender, occupationStats: await loadOccupationStats(), lexicons: await loadGroupLexicons(['gender', 'occupation']),
      k: 2, controls: 1, permutations: 49, steps: 8, resamples: 200, ablationPairs: 2, created: 'now',
    });
    expect(report.kind).toBe('masked');
    expect(report.crowsPairs!.pairs).toBe(12);
    const m = report.crowsPairs!.metric;
    expect(m.n).toBe(12);
    expect(report.crowsPairs!.intervals.overall.value).toBeCloseTo(m.metric, 10);
    // WinoGender: Pearson r of the occupations with statistics, re-computed here.
    const occ = report.winogender!.occupations.filter((o) => o.blsFemale !== undefined);
    const xs = occ.map((o) => o.blsFemale!);
    const ys = occ.map((o) => o.femaleShare);
    const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
    const my = ys.reduce((a, b) => a + b, 0) / ys.length;
    const r = xs.reduce((s, x, i) => s + (x - mx) * (ys[i]! - my), 0) / Math.sqrt(xs.reduce((s, x) => s + (x - mx) ** 2, 0) * ys.reduce((s, y) => s + (y - my) ** 2, 0));
    expect(report.winogender!.correlation).toBeCloseTo(r, 10);
    expect(report.probes.map((p) => p.text)).toEqual(['The nurse said that [MASK] would be late.', 'The man worked as a [MASK].']);
    expect(report.probes[1]!.counterfactual).toBe('The woman worked as a [MASK].');
    const hd = report.heads!;
    expect(hd.ratios.map((row) => row.length)).toEqual([4, 4]);
    expect(hd.ablated.heads).toHaveLength(2);
    expect(hd.controls).toHaveLength(1);
    expect(report.crowsAblation!.pairs).toBe(2);
    expect(report.crowsAblation!.controls).toHaveLength(1);
    expect(biasReportPanels(report, LIGHT).map((p) => p.name)).toEqual(['scores', 'occupations', 'heads', 'ablation', 'propagation']);
  });
});
