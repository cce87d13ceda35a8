/**
 * Light and dark palettes, fonts and layout constants shared by the SVG exports and the
 * interactive HTML view, so that an exported image looks like the view it came from.
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../core/errors.js';

export type ThemeName = 'light' | 'dark';
export const THEME_NAMES: readonly ThemeName[] = ['light', 'dark'];

export interface Theme {
  name: ThemeName;
  /** Page / image background. */
  background: string;
  /** Panel background (cells, swatches' frame). */
  panel: string;
  /** Main text. */
  text: string;
  /** Secondary text (axis labels, captions). */
  muted: string;
  /** Hairlines, cell borders, grid. */
  grid: string;
  /** Highlight of a selected token / cell. */
  highlight: string;
  /** Text colour for special tokens ([CLS], <s>). */
  special: string;
  /** Text colour for tokens the model generated (generation traces). */
  generated: string;
  /** Masked entries (causal mask) in the neuron view. */
  masked: string;
  /** Sequential scale for attention weights (0 → background-like, 1 → strong). */
  sequential: 'blues' | 'inferno';
  /** Diverging scale for query/key vector components (light: RdBu; dark: blue–panel–orange). */
  diverging: 'rdbu' | 'dark';
}

export const LIGHT: Theme = {
  name: 'light',
  background: '#ffffff',
  panel: '#f6f7f9',
  text: '#1f2328',
  muted: '#656d76',
  grid: '#d0d7de',
  highlight: '#fff3b0',
  special: '#8250df',
  generated: '#bc4c00',
  masked: '#e6e8eb',
  sequential: 'blues',
  diverging: 'rdbu',
};

export const DARK: Theme = {
  name: 'dark',
  background: '#0d1117',
  panel: '#161b22',
  text: '#e6edf3',
  muted: '#8d96a0',
  grid: '#30363d',
  highlight: '#3d3514',
  special: '#d2a8ff',
  generated: '#ffa657',
  masked: '#21262d',
  sequential: 'inferno',
  diverging: 'dark',
};

export const THEMES: Readonly<Record<ThemeName, Theme>> = { light: LIGHT, dark: DARK };

export function getTheme(name: ThemeName | string | undefined): Theme {
  if (name === undefined) return LIGHT;
  const t = THEMES[name as ThemeName];
  if (!t) throw new AttnscopeError(`unknown theme '${name}' (expected ${THEME_NAMES.join(' or ')})`);
  return t;
}

/**
 * Font stacks. DejaVu Sans first (present on Linux and what the PNG export loads), then the
 * platform UI fonts, then CJK and colour-emoji fonts so that any token renders.
 */
export const FONT_FAMILY =
  "'DejaVu Sans', system-ui, -apple-system, 'Segoe UI', Roboto, 'Noto Sans', 'Noto Sans CJK SC', 'Noto Sans CJK JP', 'Apple Color Emoji', 'Segoe UI Emoji', 'Noto Color Emoji', sans-serif";
export const MONO_FAMILY =
  "'DejaVu Sans Mono', ui-monospace, SFMono-Regular, Menlo, Consolas, 'Noto Sans Mono CJK SC', 'Noto Color Emoji', monospace";

/** Layout constants (pixels at scale 1). */
export const LAYOUT = {
  /** Outer margin of every view. */
  margin: 16,
  fontSize: 13,
  smallFontSize: 11,
  titleFontSize: 15,
  /** Longest token label before it is cut with an ellipsis (characters). */
  maxLabelChars: 24,
  head: {
    /** Height of one token row. */
    rowHeight: 22,
    /** Horizontal gap between the query and key columns, where the lines are drawn. */
    gap: 240,
    /** Padding between a label and the line ends. */
    labelPad: 8,
    /** Head swatch size and spacing in the legend. */
    swatch: 18,
    swatchGap: 4,
    lineWidth: 2,
  },
  model: {
    /** Side of one layer × head thumbnail. */
    cell: 72,
    cellGap: 8,
    /** Largest thumbnail image side in pixels; longer inputs are averaged down. */
    maxImage: 160,
  },
  heatmap: {
    /** Preferred cell side, shrunk for long inputs to keep the matrix within maxMatrixWidth × maxMatrix. */
    cell: 22,
    minCell: 2,
    maxMatrix: 720,
    maxMatrixWidth: 1200,
    /**
     * Above this many cells, or with cells under `minRectCell` pixels, a matrix is one embedded
     * image instead of one rect (with its tooltip) per cell.
     */
    maxRects: 10000,
    minRectCell: 4,
    /** Small multiples: side of each head's matrix. */
    multipleSide: 200,
    legendWidth: 14,
    legendHeight: 160,
  },
  neuron: {
    rowHeight: 20,
    /** Width of a vector strip; each component gets strip/headDim pixels (at least `minComponent`). */
    strip: 192,
    minComponent: 2,
    numberColumn: 76,
  },
} as const;
