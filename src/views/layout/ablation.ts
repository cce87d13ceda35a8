/**
 * Ablation comparison, computed once as plain data: the model's next-token (or [MASK])
 * distribution before and after removing a set of heads, as paired horizontal bars for the top
 * tokens (the union of both distributions' top candidates, ordered by the larger of the two
 * probabilities), with the heads removed, the change of the target, the KL divergence of the two
 * distributions and the cosine of the two last hidden states stated above the bars. Before is the
 * first hue of the categorical palette, after the second; each bar ends in its probability.
 *
 * Bars share one axis from 0 to a "nice" maximum at or above the largest probability shown, so
 * a bar's length is probability / axisMax × the bar width.
 *
 * Isomorphic: imports nothing from Node.
 */
import { scaleLinear } from 'd3-scale';
import { AttnscopeError } from '../../core/errors.js';
import type { StackName } from '../../core/trace.js';
import { headColors } from '../colors.js';
import { LAYOUT, type Theme } from '../theme.js';
import { type Item, type Picture, fitText, textWidth, wrapText } from './common.js';
import { fmtScore } from './saliency.js';

/** A candidate token's probability before and after the ablation. */
export interface AblationCandidate {
  /** Token label as shown (prettified); escaped by the painters. */
  token: string;
  before: number;
  after: number;
}

/** What the ablation comparison shows: plain data. */
export interface AblationData {
  /** The heads removed. */
  heads: readonly { layer: number; head: number }[];
  /** How they were removed: zero (gate 0) or mean ablation. */
  mode: 'zero' | 'mean';
  stack?: StackName;
  /** Where the distribution is read, e.g. "next token after “Paris” (position 7)". */
  where: string;
  /** Candidates with both probabilities (any order; the layout sorts and keeps the top). */
  candidates: readonly AblationCandidate[];
  /** The target and its value before and after (e.g. a log-probability). */
  target?: { label: string; before: number; after: number };
  /** KL(before ‖ after) of the full distributions, in nats. */
  kl: number;
  /** Cosine similarity of the last hidden state before and after. */
  cosine: number;
}

export interface AblationPlace {
  top?: number;
  /** Bars shown (default 10). */
  topK?: number;
  /** Width of the longest bar (default 360 px). */
  barWidth?: number;
}

export interface AblationBar {
  token: string;
  index: number;
  side: 'before' | 'after';
  probability: number;
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface AblationLayout extends Picture {
  bars: AblationBar[];
  /** Tokens in the order drawn. */
  tokens: string[];
  axisMax: number;
  /** Left end of every bar and the width of a bar at axisMax. */
  barX: number;
  barWidth: number;
}

export const ABLATION = { barHeight: 11, pairGap: 2, rowGap: 9, defaultTopK: 10, barWidth: 360 } as const;

/** "L0 H1, L2 H3–5": heads grouped per layer. */
export function describeHeads(heads: readonly { layer: number; head: number }[]): string {
  const byLayer = new Map<number, number[]>();
  for (const { layer, head } of heads) byLayer.set(layer, [...(byLayer.get(layer) ?? []), head]);
  return [...byLayer.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([l, hs]) => {
      const s = [...new Set(hs)].sort((a, b) => a - b);
      const parts: string[] = [];
      for (let i = 0; i < s.length; ) {
        let j = i;
        while (j + 1 < s.length && s[j + 1] === s[j]! + 1) j++;
        parts.push(j > i ? `H${s[i]}–${s[j]}` : `H${s[i]}`);
        i = j + 1;
      }
      return `L${l} ${parts.join(', ')}`;
    })
    .join(', ');
}

export function checkAblationData(data: AblationData): void {
  if (data.heads.length === 0) throw new AttnscopeError('ablation view: no heads were ablated');
  if (data.candidates.length === 0) throw new AttnscopeError('ablation view: no candidate tokens');
  for (const c of data.candidates) {
    for (const v of [c.before, c.after]) {
      if (!(v >= 0 && v <= 1)) throw new AttnscopeError(`ablation view: probability ${v} of '${c.token}' is not in [0, 1]`);
    }
  }
}

/** The probability as the bars print it. */
export function fmtProb(p: number): string {
  if (p === 0) return '0';
  if (p < 1e-4) return p.toExponential(1);
  return p >= 0.9995 ? '1' : p.toFixed(p < 0.01 ? 4 : 3);
}

/** Lays out the comparison (see the file comment). */
export function ablationLayout(data: AblationData, theme: Theme, place: AblationPlace = {}): AblationLayout {
  checkAblationData(data);
  const m = LAYOUT.margin;
  const fs = LAYOUT.fontSize;
  const sfs = LAYOUT.smallFontSize;
  const top = place.top ?? m;
  const k = Math.max(1, place.topK ?? ABLATION.defaultTopK);
  const barWidth = place.barWidth ?? ABLATION.barWidth;
  const [cBefore, cAfter] = headColors(2) as [string, string];

  const shown = [...data.candidates].sort((a, b) => Math.max(b.before, b.after) - Math.max(a.before, a.after) || b.before - a.before).slice(0, k);
  const largest = Math.max(...shown.map((c) => Math.max(c.before, c.after)));
  const axisMax = largest > 0 ? Math.min(1, scaleLinear().domain([0, largest]).nice(4).domain()[1]!) : 1;

  const items: Item[] = [];
  const headsText = describeHeads(data.heads);
  const lines: { text: string; spans?: { text: string; fill?: string; bold?: boolean }[]; cls: string }[] = [];
  lines.push({
    text: `removed (${data.mode} ablation): ${headsText}`,
    spans: [{ text: `removed (${data.mode} ablation): `, fill: theme.muted }, { text: headsText, fill: theme.text, bold: true }],
    cls: 'ablation-heads',
  });
  if (data.target) {
    const t = data.target;
    const d = t.after - t.before;
    const body = `${fmtScore(t.before)} → ${fmtScore(t.after)} (Δ ${d >= 0 ? '+' : ''}${fmtScore(d)})`;
    lines.push({ text: `${t.label}: ${body}`, spans: [{ text: `${t.label}: `, fill: theme.muted }, { text: body, fill: theme.text, bold: true }], cls: 'ablation-target' });
  }
  const stats = `KL(before ‖ after) = ${fmtScore(data.kl)} nats · cosine of the last hidden states = ${Number.isFinite(data.cosine) ? data.cosine.toFixed(4) : '–'}`;
  lines.push({ text: stats, cls: 'ablation-stats' });

  const labels = shown.map((c) => fitText(c.token, fs, 180));
  const labelW = Math.max(60, ...labels.map((l) => Math.ceil(textWidth(l.text, fs)))) + 12;
  const barX = m + labelW;
  const valueW = textWidth('0.0000', sfs) + 8;
  const right0 = barX + barWidth + valueW;

  let y = top;
  for (const l of lines) {
    for (const [i, piece] of (l.spans ? [l.text] : wrapText(l.text, fs, Math.max(right0, 520) - m)).entries()) {
      y += fs + 6;
      items.push({ kind: 'text', x: m, y, text: piece, size: fs, fill: l.spans ? theme.text : theme.muted, spans: l.spans && i === 0 ? l.spans : undefined, className: l.cls });
    }
  }
  y += 8;
  const whereText = `probability of the ${data.where}`;
  items.push({ kind: 'text', x: m, y: y + sfs, text: whereText, size: sfs, fill: theme.muted, className: 'ablation-where' });
  // Legend swatches on the same line, right-aligned to the bars (on the next line when the text reaches them).
  const legendW = textWidth('before', sfs) + textWidth('after', sfs) + 2 * 16 + 14;
  if (m + textWidth(whereText, sfs) + 16 > barX + barWidth + valueW - legendW) y += sfs + 6;
  const legendY = y + sfs;
  let lx = barX + barWidth + valueW;
  for (const [label, color] of [['after', cAfter], ['before', cBefore]] as const) {
    lx -= textWidth(label, sfs);
    items.push({ kind: 'text', x: lx, y: legendY, text: label, size: sfs, fill: theme.text, className: 'legend-label' });
    lx -= 16;
    items.push({ kind: 'rect', x: lx, y: legendY - 9, width: 11, height: 11, fill: color, className: `legend-swatch ${label}` });
    lx -= 14;
  }
  y += sfs + 14;

  // Axis gridlines and ticks.
  const axisTop = y;
  const rowH = 2 * ABLATION.barHeight + ABLATION.pairGap + ABLATION.rowGap;
  const plotH = shown.length * rowH - ABLATION.rowGap;
  const ticks = scaleLinear().domain([0, axisMax]).ticks(4);
  for (const t of ticks) {
    const x = barX + (t / axisMax) * barWidth;
    items.push({ kind: 'line', x1: x, y1: axisTop - 4, x2: x, y2: axisTop + plotH + 4, stroke: theme.grid, width: 1, className: 'axis-grid' });
    items.push({ kind: 'text', x, y: axisTop + plotH + 6 + sfs, text: String(Number(t.toPrecision(3))), size: sfs, fill: theme.muted, anchor: 'middle', className: 'axis-tick' });
  }

  const bars: AblationBar[] = [];
  shown.forEach((c, i) => {
    const ry = axisTop + i * rowH;
    items.push({ kind: 'text', x: barX - 10, y: ry + ABLATION.barHeight + ABLATION.pairGap / 2 + fs * 0.35, text: labels[i]!.text, size: fs, fill: theme.text, anchor: 'end', mono: true, className: 'ablation-token', data: { index: i }, tip: labels[i]!.cut ? c.token : undefined });
    for (const [j, side] of (['before', 'after'] as const).entries()) {
      const p = c[side];
      const by = ry + j * (ABLATION.barHeight + ABLATION.pairGap);
      const w = (p / axisMax) * barWidth;
      bars.push({ token: c.token, index: i, side, probability: p, x: barX, y: by, width: w, height: ABLATION.barHeight });
      items.push({
        kind: 'rect',
        x: barX,
        y: by,
        width: w,
        height: ABLATION.barHeight,
        fill: side === 'before' ? cBefore : cAfter,
        className: `ablation-bar ${side}`,
        data: { index: i, side, value: p },
        tip: `${c.token} · ${side}: ${fmtProb(p)} (before ${fmtProb(c.before)}, after ${fmtProb(c.after)})`,
      });
      items.push({ kind: 'text', x: barX + w + 4, y: by + ABLATION.barHeight - 1.5, text: fmtProb(p), size: sfs - 1, fill: theme.muted, className: `bar-value ${side}`, data: { index: i, side } });
    }
  });
  items.push({ kind: 'line', x1: barX, y1: axisTop - 4, x2: barX, y2: axisTop + plotH + 4, stroke: theme.muted, width: 1, className: 'axis-zero' });
  y = axisTop + plotH + 6 + sfs;
  y += sfs + 8;
  const width = Math.max(right0 + m, ...items.filter((it) => it.kind === 'text' && !it.anchor).map((it) => (it.kind === 'text' ? it.x + textWidth(it.text, it.size) + m : 0)));
  items.push({ kind: 'text', x: barX + barWidth / 2, y, text: 'probability', size: sfs, fill: theme.muted, anchor: 'middle', className: 'axis-name' });
  const which = shown.length === data.candidates.length ? `the ${shown.length} candidates` : `the top ${shown.length} of ${data.candidates.length} candidates`;
  const note = `${which}: both distributions' most likely tokens, ordered by the larger of their two probabilities`;
  for (const line of wrapText(note, sfs, width - 2 * m)) {
    y += sfs + 4;
    items.push({ kind: 'text', x: m, y, text: line, size: sfs, fill: theme.muted, className: 'ablation-note' });
  }
  return { width, height: y + m, background: theme.background, items, bars, tokens: shown.map((c) => c.token), axisMax, barX, barWidth };
}
