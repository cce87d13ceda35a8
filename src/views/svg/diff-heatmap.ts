/**
 * The comparison figure as SVG: A, B and A − B of one compared pair with the ranked list of the
 * pairs that changed most (src/views/layout/diff-heatmap.ts), and the wording both the SVG and the
 * comparison page use for a pair.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { Comparison, HeadPair } from '../../analysis/compare.js';
import { AttnscopeError } from '../../core/errors.js';
import { type DiffInput, type DiffLayout, diffHeatmapLayout } from '../layout/diff-heatmap.js';
import { type ThemeName, getTheme } from '../theme.js';
import { svgPicture } from './common.js';

export { diffHeatmapLayout, type DiffInput, type DiffLayout } from '../layout/diff-heatmap.js';

/** "layer 3 · head 6", "layer 2 · mean over heads", or both sides when they differ. */
export function pairLabel(p: HeadPair): string {
  const side = (l: number, h: number | null) => `layer ${l} · ${h === null ? 'mean over heads' : `head ${h}`}`;
  const a = side(p.layer, p.head);
  const b = side(p.layerB, p.headB);
  return a === b ? a : `${a} vs ${b}`;
}

export interface ComparisonFigureOptions {
  theme?: ThemeName;
  /** Names of the two sides (model names, file names). */
  nameA?: string;
  nameB?: string;
  /** Index into the ranking of the pair shown (default 0: the pair that changed most). */
  index?: number;
  /** Draw the ranked list below the panels (default true). */
  ranking?: boolean;
  /** Heading line (default: "A vs B"). */
  title?: string;
  listLength?: number;
}

/** The layout input of one ranked pair of a comparison. */
export function comparisonDiffInput(c: Comparison, o: ComparisonFigureOptions = {}): DiffInput {
  const index = o.index ?? 0;
  if (!Number.isInteger(index) || index < 0 || index >= c.ranking.length) throw new AttnscopeError(`comparison: pair ${index} is out of range (0–${c.ranking.length - 1})`);
  const pair = c.ranking[index]!;
  const { a, b } = c.matrices(pair);
  const nameA = o.nameA ?? 'A';
  const nameB = o.nameB ?? 'B';
  return {
    titleA: `A · ${nameA} · ${pairLabel({ layer: pair.layer, head: pair.head, layerB: pair.layer, headB: pair.head }).replace(/ vs .*/, '')}`,
    titleB: `B · ${nameB} · layer ${pair.layerB} · ${pair.headB === null ? 'mean over heads' : `head ${pair.headB}`}`,
    labelsA: { rows: c.rowsA.map((u) => u.label), cols: c.colsA.map((u) => u.label), rowSpecial: c.rowsA.map((u) => u.special), colSpecial: c.colsA.map((u) => u.special) },
    labelsB: { rows: c.rowsB.map((u) => u.label), cols: c.colsB.map((u) => u.label), rowSpecial: c.rowsB.map((u) => u.special), colSpecial: c.colsB.map((u) => u.special) },
    a,
    b,
    rows: c.rowsA.length,
    cols: c.colsA.length,
    theme: getTheme(o.theme),
    heading: o.title ?? `${nameA} vs ${nameB} · ${pairLabel(pair)} · JS ${pair.jsDivergence.toPrecision(3)} bits`,
    subheading: `${c.alignment === 'words' ? 'rows and columns: words of the text' : 'rows and columns: token positions'} · ${c.note}`,
    ranking: o.ranking === false ? undefined : c.ranking.map((r) => ({ label: pairLabel(r), jsDivergence: r.jsDivergence, maxAbsDiff: r.maxAbsDiff })),
    selected: index,
    listLength: o.listLength,
  };
}

/** The comparison figure's layout. */
export function comparisonLayout(c: Comparison, o: ComparisonFigureOptions = {}): DiffLayout {
  return diffHeatmapLayout(comparisonDiffInput(c, o));
}

/** The comparison figure as a standalone SVG document. */
export function renderComparisonSvg(c: Comparison, o: ComparisonFigureOptions = {}): string {
  const input = comparisonDiffInput(c, o);
  return svgPicture(diffHeatmapLayout(input), input.theme, { title: input.heading ?? 'comparison', className: 'attnscope-compare', idPrefix: 'attnscope-compare' });
}
