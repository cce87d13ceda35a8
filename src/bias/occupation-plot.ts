/**
 * The occupation plot of the pronoun probes: one point per occupation, the share of women in it
 * (U.S. Bureau of Labor Statistics, WinoGender's occupations-stats.tsv) across, the model's
 * P(she) / (P(he) + P(she)) averaged over the occupation's sentences up, the diagonal where the
 * two agree. A standalone SVG string (labels escaped).
 */
import type { OccupationSummary } from '../analysis/bias/wino.js';
import { escapeHtml } from '../views/tokens.js';

export interface OccupationPlotOptions {
  title: string;
  /** Pearson r of the points, printed under the title. */
  correlation?: number;
}

export function occupationPlotSvg(summaries: readonly OccupationSummary[], options: OccupationPlotOptions): string {
  const points = summaries.filter((s) => s.blsFemale !== undefined && Number.isFinite(s.femaleShare));
  const W = 640;
  const H = 560;
  const m = { left: 64, right: 24, top: 64, bottom: 56 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const x = (v: number) => m.left + (v / 100) * pw;
  const y = (v: number) => m.top + ph - (v / 100) * ph;
  const f = (v: number) => v.toFixed(1);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text x="${m.left}" y="24" font-size="14" font-weight="600">${escapeHtml(options.title)}</text>`,
    `<text x="${m.left}" y="42" fill="#555">${points.length} occupations${options.correlation !== undefined && Number.isFinite(options.correlation) ? `; Pearson r = ${options.correlation.toFixed(3)}` : ''}; dashed: model = statistics</text>`,
  ];
  for (const t of [0, 25, 50, 75, 100]) {
    out.push(`<line x1="${f(x(t))}" y1="${m.top}" x2="${f(x(t))}" y2="${m.top + ph}" stroke="#eee"/>`, `<line x1="${m.left}" y1="${f(y(t))}" x2="${m.left + pw}" y2="${f(y(t))}" stroke="#eee"/>`);
    out.push(`<text x="${f(x(t))}" y="${m.top + ph + 16}" text-anchor="middle" fill="#333">${t}</text>`, `<text x="${m.left - 8}" y="${f(y(t) + 4)}" text-anchor="end" fill="#333">${t}</text>`);
  }
  out.push(`<rect x="${m.left}" y="${m.top}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  out.push(`<line x1="${f(x(0))}" y1="${f(y(0))}" x2="${f(x(100))}" y2="${f(y(100))}" stroke="#999" stroke-dasharray="4 4"/>`);
  out.push(`<text x="${m.left + pw / 2}" y="${H - 14}" text-anchor="middle" fill="#333">women in the occupation (BLS, %)</text>`);
  out.push(`<text transform="translate(18 ${m.top + ph / 2}) rotate(-90)" text-anchor="middle" fill="#333">model: P(she) / (P(he) + P(she)), %</text>`);
  for (const p of points) {
    const cx = f(x(p.blsFemale!));
    const cy = f(y(p.femaleShare));
    out.push(`<circle cx="${cx}" cy="${cy}" r="4" fill="#3b6fb6" fill-opacity="0.75"><title>${escapeHtml(`${p.occupation}: ${p.blsFemale!.toFixed(1)}% women (BLS), model ${p.femaleShare.toFixed(1)}% (${p.items} sentences)`)}</title></circle>`);
    out.push(`<text x="${f(x(p.blsFemale!) + 6)}" y="${f(y(p.femaleShare) + 3)}" fill="#444" font-size="9">${escapeHtml(p.occupation)}</text>`);
  }
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
