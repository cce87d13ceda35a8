/**
 * Colours: one categorical colour per head, a sequential scale for attention weights (light and
 * dark variants, linear or log), a diverging scale for vector components, and legend ticks.
 *
 * Isomorphic: imports nothing from Node.
 */
import { type RGBColor, color as d3color, hcl, rgb } from 'd3-color';
import { interpolateRgb, piecewise } from 'd3-interpolate';
import { scaleLinear, scaleLog } from 'd3-scale';
import { interpolateBlues, interpolateInferno, interpolateRdBu, schemeTableau10 } from 'd3-scale-chromatic';
import type { Theme } from './theme.js';

export type Rgb = [number, number, number];

/** The colour scale of a matrix, as data (layouts carry it; `scaleOf` makes the scale in a theme). */
export interface ScaleSpec {
  ramp: 'sequential' | 'diverging';
  min: number;
  max: number;
  log: boolean;
}

/** Any CSS colour (`#rgb`, `#rrggbb`, `rgb(r, g, b)`, names) as clamped 0–255 RGB. */
export function parseColor(color: string): Rgb {
  const c = d3color(color);
  if (!c) throw new Error(`cannot parse colour ${color}`);
  const { r, g, b } = (c.rgb() as RGBColor).clamp();
  return [Math.round(r), Math.round(g), Math.round(b)];
}

export function rgbHex([r, g, b]: Rgb): string {
  return rgb(r, g, b).formatHex();
}

/** CIE HCL (d3-color's hcl) → clamped sRGB hex. */
export function hclHex(h: number, c: number, l: number): string {
  return hcl(h, c, l).formatHex();
}

// --- head colours --------------------------------------------------------------------------------

/**
 * One colour per head. Up to 10 heads: Tableau10. More: hues a golden angle apart in HCL with
 * three alternating lightness levels, so that neighbouring heads always differ and any number of
 * heads (32, 64, ...) gets distinct colours that read on both light and dark backgrounds.
 */
export function headColors(numHeads: number): string[] {
  if (numHeads <= schemeTableau10.length) return schemeTableau10.slice(0, numHeads);
  const levels = [60, 74, 47];
  return Array.from({ length: numHeads }, (_, i) => hclHex((25 + i * 137.50776) % 360, 58, levels[i % levels.length]!));
}

export function headColor(head: number, numHeads: number): string {
  return headColors(numHeads)[head] ?? '#888888';
}

// --- sequential (weights) ------------------------------------------------------------------------

export function sequentialInterpolator(theme: Theme): (t: number) => string {
  // Blues starts almost white; keep a little colour at 0 so that cells are distinguishable from the page.
  if (theme.sequential === 'blues') return (t) => interpolateBlues(0.02 + 0.98 * t);
  // Inferno starts at black; start a touch above so that zero reads on the dark page.
  return (t) => interpolateInferno(0.04 + 0.94 * t);
}

/** RGB interpolation through three stops (t = 0, 0.5, 1), clamped, as hex. */
function threeStops(low: string, mid: string, high: string): (t: number) => string {
  const f = piecewise(interpolateRgb, [low, mid, high]);
  return (t) => rgb(f(Math.max(0, Math.min(1, t)))).formatHex();
}

export function divergingInterpolator(theme: Theme): (t: number) => string {
  // Light: RdBu flipped so that positive = red (warm) and negative = blue, white at 0.
  // Dark: blue → the panel colour → orange, so that 0 recedes into the dark page.
  return theme.diverging === 'rdbu' ? (t) => interpolateRdBu(1 - t) : threeStops('#3b8eea', '#1c2128', '#f0883e');
}

/** 256-entry RGB lookup table of an interpolator (for images). */
export function colorLut(interpolate: (t: number) => string, size = 256): Uint8Array {
  const lut = new Uint8Array(size * 3);
  for (let i = 0; i < size; i++) lut.set(parseColor(interpolate(i / (size - 1))), i * 3);
  return lut;
}

export interface ScaleOptions {
  /** Largest value of the domain (default 1). */
  max?: number;
  /** Smallest value (default 0; for log scales the smallest positive value shown, default max/1e4). */
  min?: number;
  /** Logarithmic colour scale. */
  log?: boolean;
}

/** A colour scale for attention weights: value → colour, value → t ∈ [0, 1], and legend ticks. */
export interface WeightScale {
  readonly domain: readonly [number, number];
  readonly log: boolean;
  /** Position in [0, 1] along the colour ramp (clamped; log scales map ≤ min to 0). */
  t(value: number): number;
  color(value: number): string;
  /** RGB of a value, from the 256-entry table (fast, for images). */
  rgb(value: number): Rgb;
  /** Index of a value in `lut` (0–255). */
  index(value: number): number;
  /** 256 RGB triples along the ramp. */
  readonly lut: Uint8Array;
  /** Tick values for a legend, inside the domain. */
  ticks(count?: number): number[];
  format(value: number): string;
  interpolate: (t: number) => string;
}

function makeScale(interpolate: (t: number) => string, options: ScaleOptions): WeightScale {
  const log = options.log ?? false;
  const max = options.max !== undefined && options.max > 0 ? options.max : 1;
  const min = log ? Math.min(max / 10, options.min !== undefined && options.min > 0 ? options.min : max / 1e4) : (options.min ?? 0);
  const lut = colorLut(interpolate);
  const pos = log ? scaleLog().domain([min, max]).range([0, 1]).clamp(true) : scaleLinear().domain([min, max === min ? min + 1 : max]).range([0, 1]).clamp(true);
  const t = (v: number) => (log && !(v > min) ? 0 : Number.isFinite(v) ? pos(v) : 0);
  return {
    domain: [min, max],
    log,
    t,
    color: (v) => interpolate(t(v)),
    rgb: (v) => {
      const i = Math.round(t(v) * 255) * 3;
      return [lut[i]!, lut[i + 1]!, lut[i + 2]!];
    },
    index: (v) => Math.round(t(v) * 255),
    lut,
    ticks: (count = 5) => legendTicks(min, max, log, count),
    format: formatTick,
    interpolate,
  };
}

/** The scale a layout's ScaleSpec names, in a theme. */
export function scaleOf(spec: ScaleSpec, theme: Theme): WeightScale {
  return makeScale(spec.ramp === 'sequential' ? sequentialInterpolator(theme) : divergingInterpolator(theme), {
    min: spec.min,
    max: spec.max,
    log: spec.log,
  });
}

/** The sequential scale for attention weights in a theme. */
export function weightScale(theme: Theme, options: ScaleOptions = {}): WeightScale {
  return makeScale(sequentialInterpolator(theme), options);
}

/** A symmetric diverging scale [-maxAbs, maxAbs] for vector components. */
export function divergingScale(theme: Theme, maxAbs: number): WeightScale {
  const m = maxAbs > 0 ? maxAbs : 1;
  return makeScale(divergingInterpolator(theme), { min: -m, max: m });
}

/** Legend ticks: "nice" linear ticks, or on a log scale 1-2-5 multiples of powers of ten (only powers over many decades). */
export function legendTicks(min: number, max: number, log: boolean, count = 5): number[] {
  if (!log) return scaleLinear().domain([min, max]).ticks(count);
  const all = scaleLog().domain([min, max]).ticks();
  const keep = (mantissas: number[]) =>
    all.filter((v) => mantissas.some((m) => Math.abs(v / 10 ** Math.floor(Math.log10(v) + 1e-9) - m) < 1e-6));
  // The densest of 1-2-5, 1-3, 1 (powers of ten) that fits in `count` ticks; thin powers over many decades.
  for (const mantissas of [[1, 2, 5], [1, 3], [1]]) {
    const out = keep(mantissas);
    if (out.length <= count && out.length >= 2) return out;
  }
  let out = keep([1]);
  if (out.length > count) {
    const step = Math.ceil(out.length / count);
    out = out.filter((_, i) => (out.length - 1 - i) % step === 0);
  }
  return out.length >= 2 ? out : [min, max];
}

/** Compact tick text: 0, 0.25, 1, 1e-3. */
export function formatTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e-2 && a < 1e4) return String(Number(v.toPrecision(3)));
  const e = Math.floor(Math.log10(a));
  const m = v / 10 ** e;
  return Math.abs(m - Math.round(m)) < 1e-9 && Math.round(m) === 1 ? `1e${e}` : `${Number(m.toPrecision(2))}e${e}`;
}

/** Black or white text, whichever reads better on a background colour. */
export function textOn(background: string): string {
  const [r, g, b] = parseColor(background);
  const lum = (c: number) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  };
  const L = 0.2126 * lum(r) + 0.7152 * lum(g) + 0.0722 * lum(b);
  return L > 0.35 ? '#111111' : '#ffffff';
}
