/**
 * What every view's layout is made of, as plain data: text, rects, lines, gradient bars and
 * matrices with resolved colours and pixel coordinates. A layout is computed once (src/views/layout/*)
 * and painted by the SVG writer (src/views/svg/*) and by the browser (web/views/*), so that an
 * export looks like the page it came from. Also the one list of view names, the one wording of
 * stack captions, label truncation, text measurement and base64.
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../../core/errors.js';
import type { StackName } from '../../core/trace.js';
import { type ScaleSpec, type WeightScale } from '../colors.js';
import { LAYOUT, type Theme } from '../theme.js';

export type { ScaleSpec } from '../colors.js';

// --- views ---------------------------------------------------------------------------------------

export type ViewName = 'head' | 'model' | 'neuron' | 'heatmap' | 'words' | 'sentences' | 'flow' | 'influence' | 'clusters' | 'types';
/** Every view, in the order the page's tabs and the CLI list them. */
export const VIEW_NAMES: readonly ViewName[] = ['head', 'model', 'neuron', 'heatmap', 'words', 'sentences', 'flow', 'influence', 'clusters', 'types'];
export const VIEW_LABELS: Readonly<Record<ViewName, string>> = {
  head: 'Head view',
  model: 'Model view',
  neuron: 'Neuron view',
  heatmap: 'Heatmap',
  words: 'Words',
  sentences: 'Sentences',
  flow: 'Flow diagram',
  influence: 'Influence tree',
  clusters: 'Head clusters',
  types: 'Head types',
};

export function isViewName(value: string): value is ViewName {
  return (VIEW_NAMES as readonly string[]).includes(value);
}

/** A view name, or one clear error naming the allowed ones. */
export function parseViewName(value: string): ViewName {
  if (!isViewName(value)) throw new AttnscopeError(`unknown view '${value}' (expected ${VIEW_NAMES.join(', ')})`);
  return value;
}

// --- stacks --------------------------------------------------------------------------------------

/** How titles, captions and the page's stack selector name an attention stack. */
export const STACK_TITLES: Readonly<Record<StackName, string>> = {
  self: 'self-attention',
  encoder: 'encoder self-attention',
  decoder: 'decoder self-attention',
  cross: 'cross-attention (decoder → encoder)',
};

/** Axis / column names of a stack: what the rows (queries) and columns (keys) are. */
export function stackAxes(stack: StackName): { query: string; key: string } {
  return stack === 'cross' ? { query: 'decoder tokens (queries)', key: 'encoder tokens (keys)' } : { query: 'queries', key: 'keys' };
}

// --- text ----------------------------------------------------------------------------------------

/** Cuts a label to at most `max` characters (code points) with an ellipsis. */
export function truncate(label: string, max: number = LAYOUT.maxLabelChars): string {
  const chars = [...label];
  return chars.length <= max ? label : `${chars.slice(0, max - 1).join('')}…`;
}

function isWide(cp: number): boolean {
  return (
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0xa4cf) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x1f300 && cp <= 0x1faff) ||
    (cp >= 0x20000 && cp <= 0x3fffd)
  );
}

/**
 * Approximate rendered width of a text in DejaVu Sans at `fontSize` (a little generous, so that
 * layouts made from it do not clip): wide (CJK, emoji) characters count 1.05 em, capitals and
 * wide Latin letters 0.74 em, narrow ones 0.35 em, the rest 0.62 em. Layouts use it in Node and
 * in the browser alike, so both place text identically.
 */
export function textWidth(text: string, fontSize: number): number {
  let w = 0;
  for (const ch of text) {
    const cp = ch.codePointAt(0)!;
    if (cp >= 0x300 && cp <= 0x36f) continue; // combining marks
    if (cp === 0xfe0f || cp === 0x200d) continue; // emoji variation selector, joiner
    if (isWide(cp)) w += 1.05;
    else if (/[ijlI.,:;'!|]/.test(ch)) w += 0.35;
    else if (/[A-Zmw@%MW]/.test(ch)) w += 0.74;
    else w += 0.62;
  }
  return w * fontSize;
}

/**
 * Font sizes inside matrices, as fractions of a cell's side, and their bounds in pixels: token
 * labels beside rows and columns, and the weights written inside cells.
 */
export const CELL_FONT = {
  /** Token label font = label × cell, clamped to [minLabel, LAYOUT.fontSize]. */
  label: 0.62,
  minLabel: 8,
  /** Smallest label font of small multiples (labels are thinned to every n-th below it, never shrunk further). */
  minSmallLabel: 8,
  /** Weight written in a cell = value × cell, at most LAYOUT.smallFontSize. */
  value: 0.42,
  /** Cells at least this large carry their weight as text. */
  minValueCell: 22,
} as const;

/** The label font size for a cell side (see CELL_FONT). */
export function cellLabelFont(cell: number, max: number = LAYOUT.fontSize): number {
  return Math.min(max, Math.max(CELL_FONT.minLabel, cell * CELL_FONT.label));
}

/** Every `step`-th label, so that labels of height `fontSize` never overlap in cells of side `cell`. */
export function labelStep(cell: number, fontSize: number): number {
  return Math.max(1, Math.ceil((fontSize * 1.1) / cell));
}

// --- base64 --------------------------------------------------------------------------------------

const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const B64_CODES = new Uint8Array(64).map((_, i) => B64.charCodeAt(i));
const B64_LOOKUP = (() => {
  const t = new Int16Array(256).fill(-1);
  for (let i = 0; i < 64; i++) t[B64.charCodeAt(i)] = i;
  return t;
})();

/** Standard base64 (fast on large inputs, no Buffer, no btoa). */
export function toBase64(bytes: Uint8Array): string {
  const n = bytes.length;
  const out = new Uint8Array(Math.ceil(n / 3) * 4);
  let o = 0;
  let i = 0;
  for (; i + 2 < n; i += 3) {
    const v = (bytes[i]! << 16) | (bytes[i + 1]! << 8) | bytes[i + 2]!;
    out[o++] = B64_CODES[v >> 18]!;
    out[o++] = B64_CODES[(v >> 12) & 63]!;
    out[o++] = B64_CODES[(v >> 6) & 63]!;
    out[o++] = B64_CODES[v & 63]!;
  }
  if (n - i === 1) {
    const v = bytes[i]! << 16;
    out[o++] = B64_CODES[v >> 18]!;
    out[o++] = B64_CODES[(v >> 12) & 63]!;
    out[o++] = 61;
    out[o++] = 61;
  } else if (n - i === 2) {
    const v = (bytes[i]! << 16) | (bytes[i + 1]! << 8);
    out[o++] = B64_CODES[v >> 18]!;
    out[o++] = B64_CODES[(v >> 12) & 63]!;
    out[o++] = B64_CODES[(v >> 6) & 63]!;
    out[o++] = 61;
  }
  // ASCII only, so any single-byte decoder reads it back unchanged.
  let s = '';
  const CHUNK = 1 << 20;
  const dec = new TextDecoder('latin1');
  for (let p = 0; p < out.length; p += CHUNK) s += dec.decode(out.subarray(p, Math.min(out.length, p + CHUNK)));
  return s;
}

/** Decodes base64, ignoring whitespace. */
export function fromBase64(text: string): Uint8Array {
  const out = new Uint8Array(Math.floor((text.length * 3) / 4) + 3);
  let o = 0;
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 61) break; // '='
    const v = c < 256 ? B64_LOOKUP[c]! : -1;
    if (v < 0) {
      if (c === 32 || c === 10 || c === 13 || c === 9) continue;
      throw new Error(`invalid base64 character at ${i}`);
    }
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 255;
    }
  }
  return out.subarray(0, o);
}

// --- primitives ----------------------------------------------------------------------------------

/** What every item may carry: a class for styling and tests, data attributes, a tooltip. */
export interface ItemBase {
  className?: string;
  /** Written as data-* attributes (SVG and page). */
  data?: Readonly<Record<string, string | number>>;
  /** Tooltip text (SVG `<title>`, the page's tooltip on hover). */
  tip?: string;
}

/** A run of a text with its own colour / style (one line of mixed colours). */
export interface TextSpan {
  text: string;
  fill?: string;
  italic?: boolean;
  bold?: boolean;
}

/** A text; (x, y) is the alphabetic baseline point at `anchor`. */
export interface TextItem extends ItemBase {
  kind: 'text';
  x: number;
  y: number;
  text: string;
  /** Font size in pixels. */
  size: number;
  fill: string;
  anchor?: 'start' | 'middle' | 'end';
  bold?: boolean;
  italic?: boolean;
  mono?: boolean;
  /** Rotation in degrees around (x, y) (e.g. −90 for column labels). */
  rotate?: number;
  /** Mixed-colour runs; when given they replace `text` (whose value is their concatenation). */
  spans?: readonly TextSpan[];
}

export interface RectItem extends ItemBase {
  kind: 'rect';
  x: number;
  y: number;
  width: number;
  height: number;
  /** null: not filled. */
  fill: string | null;
  fillOpacity?: number;
  stroke?: string;
  strokeWidth?: number;
  rx?: number;
}

export interface LineItem extends ItemBase {
  kind: 'line';
  x1: number;
  y1: number;
  x2: number;
  y2: number;
  stroke: string;
  width: number;
  opacity?: number;
  dash?: readonly number[];
  cap?: 'butt' | 'round';
}

/** A rect filled with a vertical gradient, `stops` evenly spaced from top to bottom. */
export interface GradientItem extends ItemBase {
  kind: 'gradient';
  x: number;
  y: number;
  width: number;
  height: number;
  stops: readonly string[];
  stroke?: string;
}


/**
 * A `rows × cols` matrix of values drawn as cells filling (x, y, width, height): row r, column c
 * is `values[offset + r * cols + c]`. Cells flagged in `masked` are left blank (`maskedFill`).
 */
export interface MatrixItem extends ItemBase {
  kind: 'matrix';
  x: number;
  y: number;
  width: number;
  height: number;
  rows: number;
  cols: number;
  values: ArrayLike<number>;
  offset?: number;
  scale: ScaleSpec;
  /** 1 where the model masked the entry (no weight was possible), per cell; absent: none. */
  masked?: Uint8Array;
  /** Fill of masked cells (the background: blank). */
  maskedFill?: string;
  /** Write each value in its cell (large cells only), at this font size. */
  valueFont?: number;
}

export type Item = TextItem | RectItem | LineItem | GradientItem | MatrixItem;

/** A painted picture: its size, background and items in paint order. */
export interface Picture {
  width: number;
  height: number;
  background: string;
  items: Item[];
}

/** The items' bounding box right/bottom edges (texts estimated with textWidth), for sizing frames. */
export function extent(items: readonly Item[]): { right: number; bottom: number } {
  let right = 0;
  let bottom = 0;
  for (const it of items) {
    if (it.kind === 'line') {
      right = Math.max(right, it.x1, it.x2);
      bottom = Math.max(bottom, it.y1, it.y2);
    } else if (it.kind === 'text') {
      const w = textWidth(it.text, it.size);
      if (it.rotate) {
        right = Math.max(right, it.x + it.size * 0.3);
        bottom = Math.max(bottom, it.y);
      } else {
        right = Math.max(right, it.anchor === 'end' ? it.x : it.anchor === 'middle' ? it.x + w / 2 : it.x + w);
        bottom = Math.max(bottom, it.y + it.size * 0.25);
      }
    } else {
      right = Math.max(right, it.x + it.width);
      bottom = Math.max(bottom, it.y + it.height);
    }
  }
  return { right, bottom };
}

// --- legend --------------------------------------------------------------------------------------

/** The ScaleSpec of a WeightScale (what a MatrixItem carries). */
export function scaleSpec(scale: WeightScale, ramp: ScaleSpec['ramp'] = 'sequential'): ScaleSpec {
  return { ramp, min: scale.domain[0], max: scale.domain[1], log: scale.log };
}

/**
 * A vertical colour legend with its top-left at (x, y): the caption, a gradient bar (high values
 * on top) and tick labels. Returns its items and size.
 */
export function legendItems(
  scale: WeightScale,
  x: number,
  y: number,
  caption: string,
  theme: Theme,
  barHeight: number = LAYOUT.heatmap.legendHeight,
): { items: Item[]; width: number; height: number } {
  const barW = LAYOUT.heatmap.legendWidth;
  const fs = LAYOUT.smallFontSize;
  const top = y + fs + 12;
  const items: Item[] = [
    { kind: 'text', x, y: y + fs, text: caption, size: fs, fill: theme.muted, className: 'legend-caption' },
    {
      kind: 'gradient',
      x,
      y: top,
      width: barW,
      height: barHeight,
      stops: Array.from({ length: 17 }, (_, i) => scale.interpolate(1 - i / 16)),
      stroke: theme.grid,
      className: 'legend-bar',
    },
  ];
  let width = textWidth(caption, fs);
  for (const t of scale.ticks(Math.max(2, Math.min(6, Math.floor(barHeight / 28))))) {
    const ty = top + barHeight * (1 - scale.t(t));
    const label = scale.format(t);
    items.push({ kind: 'line', x1: x + barW, y1: ty, x2: x + barW + 4, y2: ty, stroke: theme.muted, width: 1 });
    items.push({ kind: 'text', x: x + barW + 6, y: ty + fs * 0.35, text: label, size: fs, fill: theme.muted, className: 'legend-tick' });
    width = Math.max(width, barW + 6 + textWidth(label, fs));
  }
  return { items, width, height: top - y + barHeight + fs / 2 };
}

// --- fitting text (appended by the model-view helper) --------------------------------------------

/**
 * A text cut with an ellipsis so that it is at most `maxWidth` wide at `fontSize` (textWidth's
 * estimate); `cut` says whether it was, so callers can carry the full text in a tooltip.
 */
export function fitText(text: string, fontSize: number, maxWidth: number): { text: string; cut: boolean } {
  if (textWidth(text, fontSize) <= maxWidth) return { text, cut: false };
  const chars = [...text];
  let lo = 0;
  let hi = chars.length;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (textWidth(`${chars.slice(0, mid).join('')}…`, fontSize) <= maxWidth) lo = mid;
    else hi = mid - 1;
  }
  return { text: `${chars.slice(0, lo).join('').trimEnd()}…`, cut: true };
}

/**
 * A text broken into lines at most `maxWidth` wide at `fontSize` (textWidth's estimate): between
 * its " · "-separated parts where possible, else at spaces, and inside a word only when the word
 * alone is wider than a line. Figures wrap where the page would cut (an image has no tooltip to
 * carry the rest).
 */
export function wrapText(text: string, fontSize: number, maxWidth: number): string[] {
  const fits = (t: string) => textWidth(t, fontSize) <= maxWidth;
  const lines: string[] = [];
  let cur = '';
  const words = (part: string, sep: string) => {
    for (const word of part.split(' ')) {
      const next = cur ? `${cur}${sep}${word}` : word;
      sep = ' ';
      if (fits(next)) {
        cur = next;
        continue;
      }
      if (cur) lines.push(cur);
      cur = '';
      // A word wider than a line: cut it into pieces that fit.
      let rest = [...word];
      while (!fits(rest.join('')) && rest.length > 1) {
        let n = 1;
        while (n < rest.length && fits(rest.slice(0, n + 1).join(''))) n++;
        lines.push(rest.slice(0, n).join(''));
        rest = rest.slice(n);
      }
      cur = rest.join('');
    }
  };
  for (const part of text.split(' · ')) {
    const next = cur ? `${cur} · ${part}` : part;
    if (fits(next)) cur = next;
    else if (fits(part)) {
      if (cur) lines.push(cur);
      cur = part;
    } else words(part, ' · ');
  }
  if (cur || lines.length === 0) lines.push(cur);
  return lines;
}

/**
 * A `rows × cols` matrix (row-major from `offset`) averaged down to at most `maxW × maxH` pixels:
 * each pixel the mean of the unmasked entries it covers (area averaging, so every value still
 * counts), and `blank` 1 where all of them are masked. Unchanged size when the matrix fits.
 */
export function downsample(
  values: ArrayLike<number>,
  offset: number,
  rows: number,
  cols: number,
  maxW: number,
  maxH: number,
  masked?: Uint8Array | null,
): { width: number; height: number; mean: Float64Array; blank: Uint8Array } {
  const width = Math.max(1, Math.min(cols, Math.floor(maxW)));
  const height = Math.max(1, Math.min(rows, Math.floor(maxH)));
  const mean = new Float64Array(width * height);
  const blank = new Uint8Array(width * height);
  for (let y = 0; y < height; y++) {
    const r0 = Math.floor((y * rows) / height);
    const r1 = Math.max(r0 + 1, Math.floor(((y + 1) * rows) / height));
    for (let x = 0; x < width; x++) {
      const c0 = Math.floor((x * cols) / width);
      const c1 = Math.max(c0 + 1, Math.floor(((x + 1) * cols) / width));
      let sum = 0;
      let n = 0;
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) {
          if (masked?.[r * cols + c] === 1) continue;
          sum += values[offset + r * cols + c]!;
          n++;
        }
      }
      mean[y * width + x] = n ? sum / n : 0;
      blank[y * width + x] = n ? 0 : 1;
    }
  }
  return { width, height, mean, blank };
}

/** "target: <target>" with the target in bold, as the attribution views name what they explain. */
export function targetItem(x: number, y: number, target: string, theme: Theme, className: string): TextItem {
  return {
    kind: 'text',
    x,
    y,
    text: `target: ${target}`,
    size: LAYOUT.fontSize,
    fill: theme.text,
    spans: [{ text: 'target: ', fill: theme.muted }, { text: target, fill: theme.text, bold: true }],
    className,
  };
}

/** Size limits of a layers × heads grid of square cells. */
export interface LayerHeadGridSize {
  /** Side of the grid when no frame is given. */
  side: number;
  minCell: number;
  maxCell: number;
}

/**
 * A layers × heads grid of square cells (rows L0…, columns H0…) whose axis band starts at `top`:
 * the cell size fits the frame (less `legendWidth` at the right), the grid's box, and its axis
 * items — 'head' above, 'layer' rotated at the left, and labels every few cells so they never overlap.
 */
export function layerHeadGrid(
  layers: number,
  heads: number,
  top: number,
  size: LayerHeadGridSize,
  legendWidth: number,
  theme: Theme,
  frame?: { width?: number; height?: number },
): { cell: number; grid: { x: number; y: number; width: number; height: number }; axes: Item[] } {
  const m = LAYOUT.margin;
  const sfs = LAYOUT.smallFontSize;
  const rowLabelW = textWidth(`L${layers - 1}`, sfs) + 8;
  const axisBand = sfs + 8;
  const left = m + axisBand + rowLabelW;
  const gridTop = top + axisBand + sfs + 6;
  const availW = frame?.width !== undefined ? frame.width - left - 28 - legendWidth - m : size.side;
  const availH = frame?.height !== undefined ? frame.height - gridTop - 60 - m : size.side;
  const cell = Math.max(size.minCell, Math.min(size.maxCell, Math.floor(Math.min(availW / heads, availH / layers))));
  const grid = { x: left, y: gridTop, width: cell * heads, height: cell * layers };
  const axes: Item[] = [
    { kind: 'text', x: grid.x + grid.width / 2, y: top + sfs, text: 'head', size: sfs, fill: theme.muted, anchor: 'middle', className: 'axis-name' },
    { kind: 'text', x: m + sfs, y: grid.y + grid.height / 2, text: 'layer', size: sfs, fill: theme.muted, anchor: 'middle', rotate: -90, className: 'axis-name' },
  ];
  const colStep = Math.max(1, Math.ceil((textWidth(`H${heads - 1}`, sfs) + 4) / cell));
  for (let h = 0; h < heads; h += colStep) {
    axes.push({ kind: 'text', x: grid.x + (h + 0.5) * cell, y: grid.y - 6, text: `H${h}`, size: sfs, fill: theme.muted, anchor: 'middle', className: 'col-label', data: { head: h } });
  }
  const rowStep = Math.max(1, Math.ceil((sfs + 2) / cell));
  for (let l = 0; l < layers; l += rowStep) {
    axes.push({ kind: 'text', x: grid.x - 6, y: grid.y + (l + 0.5) * cell + sfs * 0.35, text: `L${l}`, size: sfs, fill: theme.muted, anchor: 'end', className: 'row-label', data: { layer: l } });
  }
  return { cell, grid, axes };
}
