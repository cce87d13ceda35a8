/**
 * The panels of the bias report (src/analysis/bias/report.ts), each computed once as plain data
 * (a Picture) and painted by the SVG writer (src/views/svg/bias-report.ts) and by the page
 * (web/views/bias-report.ts):
 *
 *   scores       CrowS-Pairs metric overall, per direction and per bias type: a bar from 0 to
 *                the metric with its bootstrap interval as a whisker, the line at 50 (no preference)
 *   occupations  WinoGender: one point per occupation, BLS share of women across, the model's
 *                P(she) / (P(he) + P(she)) up, the diagonal where they agree
 *   heads        the layers × heads map of log₂ bias attention ratio (diverging, 0 = in
 *                proportion), significant heads (q < 0.05) outlined, ablated heads marked ×
 *   ablation     the contrast T as trained, with the top-k heads removed and with each random
 *                control set, on one axis (and the CrowS-Pairs metric the same way, when run)
 *   propagation  per layer: the heads' mean and largest ratio and the attention rollout's ratio
 *
 * Values that are null in a report read back from JSON count as missing. Every item carries a
 * class and data-* attributes (value, layer, head, label) for the page's hover and the tests.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { BiasReport, ReportCrowsAblation, ReportCrowsPairs, ReportHeads, ReportWinogender } from '../../analysis/bias/report.js';
import { divergingScale, formatTick, legendTicks } from '../colors.js';
import { LAYOUT, type Theme } from '../theme.js';
import { type Item, type Picture, fitText, layerHeadGrid, legendItems, textWidth, wrapText } from './common.js';

export type BiasPanelName = 'scores' | 'occupations' | 'heads' | 'ablation' | 'propagation';
export const BIAS_PANELS: readonly BiasPanelName[] = ['scores', 'occupations', 'heads', 'ablation', 'propagation'];
export const BIAS_PANEL_TITLES: Readonly<Record<BiasPanelName, string>> = {
  scores: 'CrowS-Pairs: how often the more stereotyping sentence wins',
  occupations: 'WinoGender: pronoun preference by occupation',
  heads: 'Bias attention ratio per head',
  ablation: 'Ablation: the prediction without the bias-focused heads',
  propagation: 'Bias attention ratio through the layers',
};

/** A number of a report (null in JSON) or NaN. */
const num = (v: number | null | undefined): number => (typeof v === 'number' ? v : Number.NaN);
const fin = (v: number | null | undefined): v is number => typeof v === 'number' && Number.isFinite(v);
const f = (v: number | null | undefined, d = 1): string => (fin(v) ? v.toFixed(d) : '–');

/** Series colours that read on both themes (blue, orange, green, purple). */
const SERIES = ['#4c78a8', '#f58518', '#54a24b', '#b279a2'] as const;

function frameWidth(width: number | undefined): number {
  return Math.max(420, Math.min(960, width ?? 720));
}

function title(items: Item[], text: string, theme: Theme, y: number, width: number): number {
  for (const line of wrapText(text, LAYOUT.titleFontSize, width - 2 * LAYOUT.margin)) {
    y += LAYOUT.titleFontSize + 4;
    items.push({ kind: 'text', x: LAYOUT.margin, y, text: line, size: LAYOUT.titleFontSize, fill: theme.text, bold: true, className: 'panel-title' });
  }
  return y;
}

function note(items: Item[], text: string, theme: Theme, y: number, width: number): number {
  for (const line of wrapText(text, LAYOUT.smallFontSize, width - 2 * LAYOUT.margin)) {
    y += LAYOUT.smallFontSize + 4;
    items.push({ kind: 'text', x: LAYOUT.margin, y, text: line, size: LAYOUT.smallFontSize, fill: theme.muted, className: 'panel-note' });
  }
  return y;
}

export interface BiasPanelPlace {
  /** Width to fill (default 720, within 420–960). */
  width?: number;
}

// --- scores --------------------------------------------------------------------------------------

export interface ScoreBar {
  label: string;
  value: number;
  low: number;
  high: number;
  n: number;
  /** 'overall', 'direction' or 'type'. */
  group: string;
}

/** The bars of the scores panel: overall, stereo, antistereo, then the bias types in the metric's order. */
export function scoreBars(c: ReportCrowsPairs): ScoreBar[] {
  const m = c.metric;
  const i = c.intervals;
  const bar = (label: string, g: { metric: number | null; n: number }, ci: { low: number | null; high: number | null } | undefined, group: string): ScoreBar => ({ label, value: num(g.metric), low: num(ci?.low), high: num(ci?.high), n: g.n, group });
  return [
    bar('all pairs', m, i.overall, 'overall'),
    bar('stereo rows', m.byDirection.stereo, i.byDirection.stereo, 'direction'),
    bar('antistereo rows', m.byDirection.antistereo, i.byDirection.antistereo, 'direction'),
    ...Object.entries(m.byBiasType).map(([t, g]) => bar(t, g, i.byBiasType[t], 'type')),
  ];
}

export function scoresLayout(c: ReportCrowsPairs, theme: Theme, place: BiasPanelPlace = {}): Picture {
  const width = frameWidth(place.width);
  const m = LAYOUT.margin;
  const fs = LAYOUT.fontSize;
  const sfs = LAYOUT.smallFontSize;
  const items: Item[] = [];
  let y = title(items, BIAS_PANEL_TITLES.scores, theme, m - 4, width);
  y = note(items, `${c.pairs} pairs${c.biasType ? ` of type ${c.biasType}` : ''}, ${c.method === 'masked' ? 'masked LM scored as metric.py' : 'causal LM scored as bias-bench'}; whiskers: 95% bootstrap interval (${c.resamples} resamples over pairs); dashed: 50, no preference`, theme, y, width);
  const bars = scoreBars(c);
  const labelW = Math.max(...bars.map((b) => textWidth(`${b.label} (${b.n})`, fs))) + 12;
  const valueW = textWidth('100.0 [100.0–100.0]', sfs) + 8;
  const x0 = m + labelW;
  const plotW = Math.max(160, width - x0 - valueW - m);
  const xs = (v: number) => x0 + (Math.max(0, Math.min(100, v)) / 100) * plotW;
  const rowH = 22;
  const top = y + 14;
  for (const t of [0, 25, 50, 75, 100]) {
    items.push({ kind: 'line', x1: xs(t), y1: top - 4, x2: xs(t), y2: top + bars.length * rowH, stroke: theme.grid, width: 1, className: 'grid-line' });
    items.push({ kind: 'text', x: xs(t), y: top + bars.length * rowH + sfs + 4, text: String(t), size: sfs, fill: theme.muted, anchor: 'middle', className: 'axis-tick' });
  }
  bars.forEach((b, i) => {
    const cy = top + i * rowH;
    if (i > 0 && b.group !== bars[i - 1]!.group) items.push({ kind: 'line', x1: m, y1: cy - 1, x2: width - m, y2: cy - 1, stroke: theme.grid, width: 1, className: 'group-rule' });
    items.push({ kind: 'text', x: x0 - 8, y: cy + rowH / 2 + fs * 0.35, text: `${b.label} (${b.n})`, size: fs, fill: theme.text, anchor: 'end', bold: b.group === 'overall', className: 'bar-label', data: { label: b.label } });
    const tip = `${b.label}: ${f(b.value, 2)} (95% interval ${f(b.low, 1)}–${f(b.high, 1)}), ${b.n} pairs`;
    if (fin(b.value)) {
      const color = b.value > 50 ? SERIES[1] : SERIES[0];
      items.push({ kind: 'rect', x: x0, y: cy + 5, width: Math.max(1, xs(b.value) - x0), height: rowH - 10, fill: color, fillOpacity: 0.85, className: 'score-bar', data: { label: b.label, value: b.value, low: num(b.low), high: num(b.high), n: b.n }, tip });
    }
    if (fin(b.low) && fin(b.high)) {
      const wy = cy + rowH / 2;
      items.push({ kind: 'line', x1: xs(b.low), y1: wy, x2: xs(b.high), y2: wy, stroke: theme.text, width: 1.5, className: 'ci-whisker', data: { label: b.label } });
      for (const v of [b.low, b.high]) items.push({ kind: 'line', x1: xs(v), y1: wy - 5, x2: xs(v), y2: wy + 5, stroke: theme.text, width: 1.5, className: 'ci-cap' });
    }
    items.push({ kind: 'text', x: x0 + plotW + 8, y: cy + rowH / 2 + sfs * 0.35, text: fin(b.value) ? `${b.value.toFixed(1)} [${f(b.low)}–${f(b.high)}]` : '–', size: sfs, fill: theme.text, className: 'bar-value', data: { label: b.label } });
  });
  items.push({ kind: 'line', x1: xs(50), y1: top - 6, x2: xs(50), y2: top + bars.length * rowH + 2, stroke: theme.text, width: 1, dash: [4, 3], className: 'reference-50' });
  y = top + bars.length * rowH + sfs + 10;
  y = note(items, `Metric ${f(c.metric.metric, 2)}: stereotype score ${f(c.metric.stereotypeScore, 2)}, anti-stereotype score ${f(c.metric.antiStereotypeScore, 2)}, ${c.metric.neutral} neutral (tied) pairs.`, theme, y, width);
  return { width, height: y + m, background: theme.background, items };
}

// --- occupations ---------------------------------------------------------------------------------

export function occupationsLayout(w: ReportWinogender, theme: Theme, place: BiasPanelPlace = {}): Picture {
  const width = frameWidth(place.width);
  const m = LAYOUT.margin;
  const sfs = LAYOUT.smallFontSize;
  const items: Item[] = [];
  let y = title(items, BIAS_PANEL_TITLES.occupations, theme, m - 4, width);
  const points = w.occupations.filter((o) => fin(o.blsFemale) && fin(o.femaleShare));
  y = note(items, `${w.sentences} sentences, ${points.length} occupations with statistics; Pearson r = ${f(w.correlation, 3)}; mean P(she) / (P(he) + P(she)) ${f(w.femaleShare)}%; dashed: the model matches the statistics`, theme, y, width);
  const left = m + 44;
  const side = Math.min(width - left - m - 90, 440);
  const top = y + 14;
  const xs = (v: number) => left + (v / 100) * side;
  const ys = (v: number) => top + side - (v / 100) * side;
  for (const t of [0, 25, 50, 75, 100]) {
    items.push({ kind: 'line', x1: xs(t), y1: top, x2: xs(t), y2: top + side, stroke: theme.grid, width: 1, className: 'grid-line' });
    items.push({ kind: 'line', x1: left, y1: ys(t), x2: left + side, y2: ys(t), stroke: theme.grid, width: 1, className: 'grid-line' });
    items.push({ kind: 'text', x: xs(t), y: top + side + sfs + 4, text: String(t), size: sfs, fill: theme.muted, anchor: 'middle', className: 'axis-tick' });
    items.push({ kind: 'text', x: left - 6, y: ys(t) + sfs * 0.35, text: String(t), size: sfs, fill: theme.muted, anchor: 'end', className: 'axis-tick' });
  }
  items.push({ kind: 'rect', x: left, y: top, width: side, height: side, fill: null, stroke: theme.muted, strokeWidth: 1, className: 'plot-frame' });
  items.push({ kind: 'line', x1: xs(0), y1: ys(0), x2: xs(100), y2: ys(100), stroke: theme.muted, width: 1, dash: [4, 4], className: 'diagonal' });
  items.push({ kind: 'text', x: left + side / 2, y: top + side + 2 * sfs + 10, text: 'women in the occupation (BLS, %)', size: sfs, fill: theme.muted, anchor: 'middle', className: 'axis-name' });
  items.push({ kind: 'text', x: m + sfs, y: top + side / 2, text: 'model: P(she) / (P(he) + P(she)), %', size: sfs, fill: theme.muted, anchor: 'middle', rotate: -90, className: 'axis-name' });
  // Label the points farthest from the diagonal (at most 8), the others only in their tooltip.
  const labelled = new Set([...points].sort((a, b) => Math.abs(b.femaleShare - b.blsFemale!) - Math.abs(a.femaleShare - a.blsFemale!)).slice(0, 8).map((o) => o.occupation));
  for (const o of points) {
    const cx = xs(o.blsFemale!);
    const cy = ys(Math.max(0, Math.min(100, o.femaleShare)));
    const tip = `${o.occupation}: ${o.blsFemale!.toFixed(1)}% women (BLS), model ${o.femaleShare.toFixed(1)}% (${o.items} sentences)`;
    items.push({ kind: 'rect', x: cx - 4, y: cy - 4, width: 8, height: 8, rx: 4, fill: SERIES[0], fillOpacity: 0.8, stroke: theme.background, strokeWidth: 1, className: 'occupation-point', data: { label: o.occupation, value: o.femaleShare, bls: o.blsFemale! }, tip });
    if (labelled.has(o.occupation)) items.push({ kind: 'text', x: cx + 6, y: cy + 3, text: fitText(o.occupation, sfs - 1, 120).text, size: sfs - 1, fill: theme.text, className: 'occupation-label' });
  }
  y = top + side + 2 * sfs + 14;
  return { width, height: y + m, background: theme.background, items };
}

// --- heads ---------------------------------------------------------------------------------------

export interface BiasHeadCell {
  layer: number;
  head: number;
  ratio: number;
  q: number;
  x: number;
  y: number;
  size: number;
}

export interface BiasHeadsLayout extends Picture {
  cells: BiasHeadCell[];
  cell: number;
}

export function headsLayout(hd: ReportHeads, theme: Theme, place: BiasPanelPlace = {}): BiasHeadsLayout {
  const width = frameWidth(place.width);
  const m = LAYOUT.margin;
  const sfs = LAYOUT.smallFontSize;
  const items: Item[] = [];
  let y = title(items, BIAS_PANEL_TITLES.heads, theme, m - 4, width);
  const significant = hd.q.flat().filter((q) => fin(q) && q < 0.05).length;
  y = note(items, `“${hd.text}”: colour is log₂ of the ratio (0: attention in proportion to the group words' share; +1: twice it); outlined: significant at q < 0.05 (${significant} heads); ×: the ${hd.ablated.heads.length} heads ablated`, theme, y, width);
  const layers = hd.ratios.length;
  const heads = hd.ratios[0]?.length ?? 0;
  const logs = hd.ratios.map((row) => row.map((v) => (fin(v) && v > 0 ? Math.log2(v) : Number.NaN)));
  const maxAbs = Math.max(0.5, ...logs.flat().filter(Number.isFinite).map(Math.abs));
  const scale = divergingScale(theme, maxAbs);
  const { cell, grid, axes } = layerHeadGrid(layers, heads, y + 4, { side: 420, minCell: 8, maxCell: 40 }, 90, theme, { width });
  items.push(...axes);
  const ablated = new Set(hd.ablated.heads.map((h) => `${h.layer}:${h.head}`));
  const cells: BiasHeadCell[] = [];
  for (let l = 0; l < layers; l++) {
    for (let h = 0; h < heads; h++) {
      const v = logs[l]![h]!;
      const q = num(hd.q[l]?.[h]);
      const ratio = num(hd.ratios[l]![h]);
      const x = grid.x + h * cell;
      const cy = grid.y + l * cell;
      const sig = fin(q) && q < 0.05;
      cells.push({ layer: l, head: h, ratio, q, x, y: cy, size: cell });
      items.push({
        kind: 'rect', x: x + 0.5, y: cy + 0.5, width: cell - 1, height: cell - 1, fill: Number.isFinite(v) ? scale.color(v) : theme.panel,
        stroke: sig ? theme.text : theme.background, strokeWidth: sig ? 2 : 1, className: `bias-head-cell${sig ? ' significant' : ''}`,
        data: { layer: l, head: h, value: fin(ratio) ? ratio : 'NaN', q: fin(q) ? q : 'NaN' },
        tip: `L${l} H${h} · ratio ${f(ratio, 3)} · q ${f(q, 4)} · importance ${f(hd.importance[l]?.[h], 3)} · ρ(attention, |IG|) ${f(hd.rho[l]?.[h], 2)}`,
      });
      if (ablated.has(`${l}:${h}`)) {
        const p = Math.max(2, cell * 0.3);
        items.push({ kind: 'line', x1: x + p, y1: cy + p, x2: x + cell - p, y2: cy + cell - p, stroke: theme.text, width: 1.5, className: 'ablated-mark', data: { layer: l, head: h } });
        items.push({ kind: 'line', x1: x + cell - p, y1: cy + p, x2: x + p, y2: cy + cell - p, stroke: theme.text, width: 1.5, className: 'ablated-mark', data: { layer: l, head: h } });
      }
    }
  }
  const legend = legendItems(scale, grid.x + grid.width + 28, grid.y - sfs - 12, 'log₂ ratio', theme, Math.max(100, Math.min(220, grid.height)));
  items.push(...legend.items);
  y = Math.max(grid.y + grid.height, grid.y - sfs - 12 + legend.height) + 6;
  return { width: Math.max(width, grid.x + grid.width + 28 + legend.width + m), height: y + m, background: theme.background, items, cells, cell };
}

// --- ablation ------------------------------------------------------------------------------------

interface DotRow {
  label: string;
  value: number;
  kind: 'trained' | 'ablated' | 'control' | 'control-mean';
  tip: string;
}

function dotRows(items: Item[], rows: readonly DotRow[], axisName: string, reference: number | null, theme: Theme, top: number, width: number, className: string, domain?: [number, number]): number {
  const m = LAYOUT.margin;
  const fs = LAYOUT.fontSize;
  const sfs = LAYOUT.smallFontSize;
  const values = rows.map((r) => r.value).filter(Number.isFinite);
  if (reference !== null) values.push(reference);
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (!(hi > lo)) {
    lo -= 1;
    hi += 1;
  }
  const pad = (hi - lo) * 0.08;
  lo -= pad;
  hi += pad;
  if (domain) [lo, hi] = domain;
  const labelW = Math.max(...rows.map((r) => textWidth(r.label, fs))) + 12;
  const x0 = m + labelW;
  const plotW = Math.max(160, width - x0 - 70 - m);
  const xs = (v: number) => x0 + ((v - lo) / (hi - lo)) * plotW;
  const rowH = 22;
  for (const v of legendTicks(lo, hi, false, 6)) {
    items.push({ kind: 'line', x1: xs(v), y1: top - 4, x2: xs(v), y2: top + rows.length * rowH, stroke: theme.grid, width: 1, className: 'grid-line' });
    items.push({ kind: 'text', x: xs(v), y: top + rows.length * rowH + sfs + 4, text: formatTick(v), size: sfs, fill: theme.muted, anchor: 'middle', className: 'axis-tick' });
  }
  if (reference !== null) items.push({ kind: 'line', x1: xs(reference), y1: top - 6, x2: xs(reference), y2: top + rows.length * rowH + 2, stroke: theme.text, width: 1, dash: [4, 3], className: 'reference' });
  const trained = rows.find((r) => r.kind === 'trained')?.value ?? Number.NaN;
  rows.forEach((r, i) => {
    const cy = top + i * rowH + rowH / 2;
    items.push({ kind: 'text', x: x0 - 8, y: cy + fs * 0.35, text: r.label, size: fs, fill: theme.text, anchor: 'end', className: 'dot-label', bold: r.kind !== 'control' });
    if (!Number.isFinite(r.value)) return;
    if (r.kind !== 'trained' && Number.isFinite(trained)) items.push({ kind: 'line', x1: xs(trained), y1: cy, x2: xs(r.value), y2: cy, stroke: theme.muted, width: 1.5, className: 'dot-change' });
    const color = r.kind === 'trained' ? theme.text : r.kind === 'ablated' ? SERIES[1] : SERIES[0];
    const s = r.kind === 'control' ? 8 : 11;
    items.push({ kind: 'rect', x: xs(r.value) - s / 2, y: cy - s / 2, width: s, height: s, rx: s / 2, fill: color, className: `dot ${className} ${r.kind}`, data: { label: r.label, value: r.value, kind: r.kind }, tip: r.tip });
    items.push({ kind: 'text', x: x0 + plotW + 8, y: cy + sfs * 0.35, text: r.value.toFixed(3), size: sfs, fill: theme.text, className: 'dot-value' });
  });
  items.push({ kind: 'text', x: x0 + plotW / 2, y: top + rows.length * rowH + 2 * sfs + 10, text: axisName, size: sfs, fill: theme.muted, anchor: 'middle', className: 'axis-name' });
  return top + rows.length * rowH + 2 * sfs + 14;
}

const headNames = (hs: readonly { layer: number; head: number }[]): string => hs.map((h) => `L${h.layer}H${h.head}`).join(' ');

export function ablationLayout(hd: ReportHeads, crows: ReportCrowsAblation | null, theme: Theme, place: BiasPanelPlace = {}): Picture {
  const width = frameWidth(place.width);
  const m = LAYOUT.margin;
  const items: Item[] = [];
  let y = title(items, BIAS_PANEL_TITLES.ablation, theme, m - 4, width);
  const t = hd.target;
  const k = hd.ablated.heads.length;
  y = note(items, `T = log P(“${t.word}”) − log P(“${t.versus}”) at “${t.token}” in “${hd.text}” (0: no preference). ${hd.mode === 'zero' ? 'Zero' : 'Mean'} ablation of the ${k} most bias-focused heads (${headNames(hd.ablated.heads)}) against ${hd.controls.length} random sets of ${k} other heads.`, theme, y, width);
  const rows: DotRow[] = [
    { label: 'as trained', value: num(t.value), kind: 'trained', tip: `T as trained: ${f(t.value, 3)}` },
    { label: `without the top ${k}`, value: num(hd.ablated.value), kind: 'ablated', tip: `T without ${headNames(hd.ablated.heads)}: ${f(hd.ablated.value, 3)}` },
    ...hd.controls.map((c, i): DotRow => ({ label: `random set ${i + 1}`, value: num(c.value), kind: 'control', tip: `T without ${headNames(c.heads)}: ${f(c.value, 3)}` })),
  ];
  if (hd.controls.length > 1) rows.push({ label: 'random sets, mean', value: num(hd.controlMean), kind: 'control-mean', tip: `mean over the random sets: ${f(hd.controlMean, 3)}` });
  y = dotRows(items, rows, `T (log-probability difference, nats)`, 0, theme, y + 16, width, 'contrast');
  if (crows) {
    y = note(items, `CrowS-Pairs metric on the first ${crows.pairs} pairs with the ${crows.heads.length} heads of largest mean ratio on the words the pairs differ in (${headNames(crows.heads)}) zeroed, against random sets.`, theme, y + 8, width);
    const cr: DotRow[] = [
      { label: 'as trained', value: num(crows.before), kind: 'trained', tip: `metric as trained: ${f(crows.before, 2)}` },
      { label: `without the top ${crows.heads.length}`, value: num(crows.after), kind: 'ablated', tip: `metric without ${headNames(crows.heads)}: ${f(crows.after, 2)}` },
      ...crows.controls.map((c, i): DotRow => ({ label: `random set ${i + 1}`, value: num(c.metric), kind: 'control', tip: `metric without ${headNames(c.heads)}: ${f(c.metric, 2)}` })),
    ];
    y = dotRows(items, cr, 'CrowS-Pairs metric (50 = no preference)', 50, theme, y + 16, width, 'crows', [0, 100]);
  }
  y = note(items, `Integrated gradients put ${f(100 * hd.groupAttributionShare)}% of |attribution| on the group words (completeness error ${f(100 * hd.igRelativeError, 2)}%).`, theme, y, width);
  return { width, height: y + m, background: theme.background, items };
}

// --- propagation ---------------------------------------------------------------------------------

export function propagationLayout(hd: ReportHeads, theme: Theme, place: BiasPanelPlace = {}): Picture {
  const width = frameWidth(place.width);
  const m = LAYOUT.margin;
  const sfs = LAYOUT.smallFontSize;
  const items: Item[] = [];
  let y = title(items, BIAS_PANEL_TITLES.propagation, theme, m - 4, width);
  y = note(items, 'Per layer: the heads’ mean and largest bias attention ratio, and the ratio of the attention rollout up to that layer (how much of what each position carries came from the group words, against their share); dashed: 1, in proportion.', theme, y, width);
  const p = hd.propagation;
  const series: { name: string; values: number[]; color: string }[] = [
    { name: 'heads, mean', values: p.map((l) => num(l.meanRatio)), color: SERIES[0] },
    { name: 'heads, largest', values: p.map((l) => num(l.maxRatio)), color: SERIES[1] },
    { name: 'rollout', values: p.map((l) => num(l.rolloutRatio)), color: SERIES[2] },
  ];
  const all = [1, ...series.flatMap((s) => s.values.filter(Number.isFinite))];
  const hi = Math.max(...all) * 1.08;
  const left = m + 40;
  const plotW = width - left - m - 120;
  const plotH = 200;
  const top = y + 14;
  const xs = (l: number) => left + (p.length <= 1 ? plotW / 2 : (l / (p.length - 1)) * plotW);
  const ys = (v: number) => top + plotH - (v / hi) * plotH;
  for (const v of legendTicks(0, hi, false, 5)) {
    items.push({ kind: 'line', x1: left, y1: ys(v), x2: left + plotW, y2: ys(v), stroke: theme.grid, width: 1, className: 'grid-line' });
    items.push({ kind: 'text', x: left - 6, y: ys(v) + sfs * 0.35, text: formatTick(v), size: sfs, fill: theme.muted, anchor: 'end', className: 'axis-tick' });
  }
  const step = Math.max(1, Math.ceil(p.length / 16));
  for (let l = 0; l < p.length; l += step) items.push({ kind: 'text', x: xs(l), y: top + plotH + sfs + 4, text: `L${l}`, size: sfs, fill: theme.muted, anchor: 'middle', className: 'axis-tick' });
  items.push({ kind: 'line', x1: left, y1: ys(1), x2: left + plotW, y2: ys(1), stroke: theme.text, width: 1, dash: [4, 3], className: 'reference' });
  series.forEach((s, si) => {
    for (let l = 1; l < s.values.length; l++) {
      const a = s.values[l - 1]!;
      const b = s.values[l]!;
      if (Number.isFinite(a) && Number.isFinite(b)) items.push({ kind: 'line', x1: xs(l - 1), y1: ys(a), x2: xs(l), y2: ys(b), stroke: s.color, width: 2, className: 'series-line' });
    }
    s.values.forEach((v, l) => {
      if (Number.isFinite(v)) items.push({ kind: 'rect', x: xs(l) - 3.5, y: ys(v) - 3.5, width: 7, height: 7, rx: 3.5, fill: s.color, className: 'series-point', data: { series: s.name, layer: l, value: v }, tip: `layer ${l} · ${s.name}: ${v.toFixed(3)}` });
    });
    const ly = top + 8 + si * (sfs + 8);
    items.push({ kind: 'line', x1: left + plotW + 14, y1: ly - sfs * 0.35, x2: left + plotW + 32, y2: ly - sfs * 0.35, stroke: s.color, width: 2.5, className: 'legend-swatch' });
    items.push({ kind: 'text', x: left + plotW + 36, y: ly, text: s.name, size: sfs, fill: theme.text, className: 'legend-label' });
  });
  y = top + plotH + sfs + 12;
  return { width, height: y + m, background: theme.background, items };
}

/** Every panel the report has data for, in order. */
export function biasReportPanels(report: BiasReport, theme: Theme, place: BiasPanelPlace = {}): { name: BiasPanelName; picture: Picture }[] {
  const out: { name: BiasPanelName; picture: Picture }[] = [];
  if (report.crowsPairs) out.push({ name: 'scores', picture: scoresLayout(report.crowsPairs, theme, place) });
  if (report.winogender) out.push({ name: 'occupations', picture: occupationsLayout(report.winogender, theme, place) });
  if (report.heads) {
    out.push({ name: 'heads', picture: headsLayout(report.heads, theme, place) });
    out.push({ name: 'ablation', picture: ablationLayout(report.heads, report.crowsAblation, theme, place) });
    out.push({ name: 'propagation', picture: propagationLayout(report.heads, theme, place) });
  }
  return out;
}
