/**
 * Shared helpers of the SVG renderers: options common to every view, argument checks (as
 * AttnscopeError one-liners), number formatting, the document frame, the heading (title and
 * generation lines), and the writer that paints layout items (src/views/layout) as SVG.
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../../core/errors.js';
import type { StackName, Trace } from '../../core/trace.js';
import type { WeightScale } from '../colors.js';
import { FONT_FAMILY, LAYOUT, MONO_FAMILY, type Theme, type ThemeName, getTheme } from '../theme.js';
import { describeGeneration, formatProbability, probabilityAt, stackFollowsSteps, traceGeneration } from '../generation.js';
import { type DisplayStack, type DisplayToken, defaultStack, escapeHtml, prettifyToken, tokenLabel, traceStacks } from '../tokens.js';
import { type Item, type Picture, STACK_TITLES, textWidth, truncate } from '../layout/common.js';
import { type Rgb, parseColor, scaleOf, textOn } from '../colors.js';
import { encodePng, matrixDataUri, pngDataUri } from './image.js';
import { lineAttrs, rectAttrs, spanAttrs, textAttrs } from './elements.js';

export { STACK_TITLES, textWidth, truncate };

export interface CommonViewOptions {
  /** Attention stack: `self`, or `encoder` / `decoder` / `cross` for encoder-decoder traces. */
  stack?: StackName;
  theme?: ThemeName;
  /** Drop special tokens' rows and columns. */
  hideSpecial?: boolean;
  /** Merge sub-word tokens into words (sum over key pieces, mean over query pieces). */
  mergeSubwords?: boolean;
  /** Title line; a default title when omitted, none when false. */
  title?: string | false;
  /** Prefix of element ids (gradients), to keep several SVGs on one page apart. */
  idPrefix?: string;
  /**
   * Generation traces: show the sequence as it was when generated token `step` was produced (0 =
   * the prompt alone), the newest token's row highlighted. Default: the whole sequence.
   */
  step?: number;
}

export interface ResolvedCommon {
  stack: StackName;
  theme: Theme;
  idPrefix: string;
}

export function resolveCommon(trace: Trace, options: CommonViewOptions): ResolvedCommon {
  const stacks = traceStacks(trace);
  const stack = options.stack ?? defaultStack(trace);
  if (!stacks.includes(stack)) {
    throw new AttnscopeError(`the trace has no '${stack}' attention (it has: ${stacks.join(', ')})`);
  }
  const idPrefix = (options.idPrefix ?? 'attnscope').replace(/[^A-Za-z0-9_-]/g, '_');
  return { stack, theme: getTheme(options.theme), idPrefix };
}

/** Checks an index is an integer in [0, count). */
export function checkIndex(value: number, count: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value >= count) {
    throw new AttnscopeError(`${what} ${value} is out of range (the trace has ${count}: 0–${count - 1})`);
  }
  return value;
}

/** A sorted, de-duplicated, range-checked list of indices, or all of them when `list` is undefined. */
export function resolveIndices(list: readonly number[] | undefined, count: number, what: string): number[] {
  if (list === undefined) return Array.from({ length: count }, (_, i) => i);
  if (list.length === 0) throw new AttnscopeError(`no ${what}s selected`);
  for (const v of list) checkIndex(v, count, what);
  return [...new Set(list)].sort((a, b) => a - b);
}

/** "0–3, 5, 7–8" */
export function describeIndices(list: readonly number[], count: number): string {
  if (list.length === count && count > 1) return `0–${count - 1}`;
  const parts: string[] = [];
  for (let i = 0; i < list.length; ) {
    let j = i;
    while (j + 1 < list.length && list[j + 1] === list[j]! + 1) j++;
    parts.push(j > i + 1 ? `${list[i]}–${list[j]}` : j === i + 1 ? `${list[i]}, ${list[j]}` : `${list[i]}`);
    i = j + 1;
  }
  return parts.join(', ');
}

/** A coordinate or size with at most two decimals. */
export function n(x: number): string {
  return String(Math.round(x * 100) / 100);
}

/** A value for display: 4 significant digits, no exponent for ordinary magnitudes. */
export function fmtValue(v: number, digits = 4): string {
  if (v === 0) return '0';
  if (!Number.isFinite(v)) return v > 0 ? '∞' : '−∞';
  const a = Math.abs(v);
  let s: string;
  if (a >= 1e-3 && a < 1e5) s = String(Number(v.toPrecision(digits)));
  else s = v.toExponential(digits - 1).replace(/\.?0+e/, 'e');
  return s.replace(/^-/, '−');
}

/** An attribute value that reads back as (nearly) the same number: 6 significant digits. */
export function fmtAttr(v: number): string {
  return String(Number(v.toPrecision(6)));
}

/** `name="value"` pairs, values escaped; undefined/false attributes are left out. */
export function attrs(a: Record<string, string | number | boolean | undefined>): string {
  let s = '';
  for (const [k, v] of Object.entries(a)) {
    if (v === undefined || v === false) continue;
    s += ` ${k}="${escapeHtml(v === true ? k : typeof v === 'number' ? n(v) : v)}"`;
  }
  return s;
}

/** A `<text>` element; the content is escaped. */
export function text(x: number, y: number, content: string, a: Record<string, string | number | boolean | undefined> = {}): string {
  return `<text${attrs({ x, y, ...a })}>${escapeHtml(content)}</text>`;
}

/**
 * Class of images drawn with nearest-neighbour scaling (small matrices shown large). The
 * attribute image-rendering="optimizeSpeed" does it in resvg; browsers get `pixelated` through a
 * rule inside @supports, which resvg skips (it would otherwise override the attribute).
 */
export const PIXELATED_CLASS = 'attnscope-px';
const PIXELATED_STYLE = `<style>@supports (image-rendering: pixelated) { .${PIXELATED_CLASS} { image-rendering: pixelated; } }</style>`;

/** Wraps a body in the SVG document: size, background, fonts. */
export function svgDocument(width: number, height: number, theme: Theme, body: string, meta: { title?: string; className?: string } = {}): string {
  const w = Math.ceil(width);
  const h = Math.ceil(height);
  return (
    `<svg xmlns="http://www.w3.org/2000/svg"${attrs({ width: w, height: h, viewBox: `0 0 ${w} ${h}`, class: meta.className, 'data-theme': theme.name })}` +
    ` font-family="${escapeHtml(FONT_FAMILY)}" font-size="${LAYOUT.fontSize}" fill="${theme.text}">` +
    (meta.title ? `<title>${escapeHtml(meta.title)}</title>` : '') +
    (body.includes(PIXELATED_CLASS) ? PIXELATED_STYLE : '') +
    `<rect width="${w}" height="${h}" fill="${theme.background}"/>` +
    body +
    '</svg>\n'
  );
}

/** Row (or column) index where the generated tokens start, or null when none are shown or all are. */
export function firstGeneratedBoundary(tokens: readonly DisplayToken[]): number | null {
  const i = tokens.findIndex((t) => t.generated);
  return i > 0 ? i : null;
}

export interface GenerationHeader {
  svg: string;
  width: number;
  height: number;
}

/**
 * The lines under a generation trace's title: the "prompt | generated" legend with how the
 * tokens were generated, and at a step which token is the newest and how the view shows its row
 * (`mark`, e.g. 'highlighted'; null when the view shows another row).
 */
/**
 * A view's heading from `y` down: its bold title (none when empty), a `gap`, then the
 * generation line of generation traces (`generation` is handed the y it starts at). Returns the
 * SVG, the y below it and the generation line's width (0 without one).
 */
export function viewHeading(
  title: string,
  gap: number,
  x: number,
  y: number,
  generation: (y: number) => GenerationHeader | null,
): { svg: string; y: number; width: number } {
  let svg = '';
  if (title) {
    svg += text(x, y + LAYOUT.titleFontSize, title, { 'font-size': LAYOUT.titleFontSize, 'font-weight': 'bold' });
    y += LAYOUT.titleFontSize + gap;
  }
  const gen = generation(y);
  if (gen) {
    svg += gen.svg;
    y += gen.height;
  }
  return { svg, y, width: gen?.width ?? 0 };
}

export function generationHeader(trace: Trace, stack: StackName, ds: DisplayStack, x: number, y: number, theme: Theme, mark: string | null = 'highlighted'): GenerationHeader | null {
  const gen = traceGeneration(trace);
  if (!gen) return null;
  const fs = LAYOUT.smallFontSize;
  const detail = ` · ${describeGeneration(gen)}`;
  let svg =
    `<text${attrs({ x, y: y + fs, 'font-size': fs, class: 'generation-legend' })}>` +
    `<tspan fill="${theme.text}">prompt</tspan><tspan fill="${theme.muted}"> | </tspan>` +
    `<tspan fill="${theme.generated}" font-style="italic">generated</tspan><tspan fill="${theme.muted}">${escapeHtml(detail)}</tspan></text>`;
  let width = textWidth(`prompt | generated${detail}`, fs);
  let height = fs + 6;
  if (ds.step !== null) {
    const line = stepDescription(trace, stack, ds, mark);
    svg += text(x, y + height + fs, line, { 'font-size': fs, fill: theme.text, class: 'generation-step', 'data-step': ds.step });
    width = Math.max(width, textWidth(line, fs));
    height += fs + 6;
  }
  return { svg, width, height: height + 4 };
}

/** "step 3 of 12 · newest token “was” (generated token 3, p = 0.9842) · highlighted: its attention over the tokens so far" */
export function stepDescription(trace: Trace, stack: StackName, ds: DisplayStack, mark: string | null): string {
  const gen = traceGeneration(trace);
  const step = ds.step;
  if (!gen || step === null) return '';
  if (!stackFollowsSteps(stack)) return `step ${step} of ${gen.steps} · the encoder ran once, before generation: its attention is the same at every step`;
  const pos = gen.promptLength + step - 1;
  const seq = trace[gen.sequence] ?? [];
  const newest = ds.newest !== null ? ds.queryTokens[ds.newest]!.label : seq[pos] ? tokenLabel(prettifyToken(seq[pos]!.text, trace.model.modelType)) : '?';
  const over = stack === 'cross' ? 'the encoder tokens' : step === 0 ? 'the prompt' : 'the tokens so far';
  const shown = ds.newest === null ? ' · not shown (a hidden special token)' : mark ? ` · ${mark}: its attention over ${over}` : '';
  if (step === 0) {
    const p = probabilityAt(trace, gen.promptLength);
    return `step 0 of ${gen.steps}: the prompt · its last token “${truncate(newest)}”${p !== undefined ? ` predicted generated token 1 (p = ${formatProbability(p)})` : ''}${shown}`;
  }
  const p = probabilityAt(trace, pos);
  return `step ${step} of ${gen.steps} · newest token “${truncate(newest)}” (generated token ${step}${p !== undefined ? `, p = ${formatProbability(p)}` : ''})${shown}`;
}

// --- painting layouts ----------------------------------------------------------------------------

function dataAttrs(data: Item['data']): string {
  if (!data) return '';
  let s = '';
  for (const [k, v] of Object.entries(data)) s += ` data-${k}="${escapeHtml(typeof v === 'number' ? fmtAttr(v) : v)}"`;
  return s;
}

function common(it: Item): string {
  return (it.className ? ` class="${escapeHtml(it.className)}"` : '') + dataAttrs(it.data);
}

function withTip(it: Item, el: string): string {
  if (!it.tip) return el;
  const cls = it.kind === 'text' && (it.className ?? '').split(' ').includes('token') ? 'token-tip' : 'tip';
  return `<g class="${cls}"><title>${escapeHtml(it.tip)}</title>${el}</g>`;
}

/** Above this many cells a matrix is one embedded image instead of one rect per cell. */
const MAX_RECT_CELLS = LAYOUT.heatmap.maxRects;

function matrixSvg(it: Extract<Item, { kind: 'matrix' }>, theme: Theme): string {
  const scale = scaleOf(it.scale, theme);
  const { rows, cols } = it;
  const off = it.offset ?? 0;
  const cw = it.width / cols;
  const ch = it.height / rows;
  const blank = it.maskedFill ?? theme.background;
  let s = `<g${common(it)}>`;
  if (rows * cols <= MAX_RECT_CELLS && Math.min(cw, ch) >= LAYOUT.heatmap.minRectCell) {
    // Tiny overlap below 6 px so that anti-aliasing leaves no seams between cells.
    const pad = Math.min(cw, ch) > 6 ? 0 : 0.05;
    const w = n(cw + pad);
    const h = n(ch + pad);
    for (let q = 0; q < rows; q++) {
      for (let k = 0; k < cols; k++) {
        const i = q * cols + k;
        const v = it.values[off + i]!;
        const masked = it.masked?.[i] === 1;
        const cell = `<rect x="${n(it.x + k * cw)}" y="${n(it.y + q * ch)}" width="${w}" height="${h}" fill="${masked ? blank : scale.color(v)}" data-q="${q}" data-k="${k}" data-value="${fmtAttr(v)}"${masked ? ' data-masked="true"' : ''}>`;
        s += `${cell}<title>${masked ? 'masked' : fmtValue(v)}</title></rect>`;
      }
    }
    if (it.valueFont) {
      const fs = it.valueFont;
      for (let q = 0; q < rows; q++) {
        for (let k = 0; k < cols; k++) {
          const i = q * cols + k;
          const v = it.values[off + i]!;
          if (it.masked?.[i] === 1 || !(v >= 0.005)) continue; // blank below what two decimals show
          const label = v >= 0.995 ? '1' : v.toFixed(2).replace(/^0/, '');
          s += `<text x="${n(it.x + (k + 0.5) * cw)}" y="${n(it.y + (q + 0.5) * ch + fs * 0.36)}" font-size="${n(fs)}" text-anchor="middle" fill="${textOn(scale.color(v))}" pointer-events="none">${label}</text>`;
        }
      }
    }
  } else {
    // Matrices larger than twice their drawn size are averaged down to it (PNG exports render at scale 2).
    const img = it.masked ? maskedMatrixUri(it, scale, parseColor(blank)) : matrixDataUri(it.values, off, rows, cols, scale, Math.ceil(2 * Math.max(it.width, it.height)));
    s += `<image${attrs({ x: it.x, y: it.y, width: it.width, height: it.height, preserveAspectRatio: 'none', 'image-rendering': 'optimizeSpeed', class: PIXELATED_CLASS, href: img.uri })}/>`;
  }
  return `${s}</g>`;
}

/** A matrix with masked cells as an RGB PNG data URI (masked cells in `blank`). */
function maskedMatrixUri(it: Extract<Item, { kind: 'matrix' }>, scale: WeightScale, blank: Rgb): { uri: string } {
  const size = it.rows * it.cols;
  const off = it.offset ?? 0;
  const px = new Uint8Array(size * 3);
  for (let i = 0; i < size; i++) {
    if (it.masked![i] === 1) px.set(blank, i * 3);
    else {
      const c = scale.index(it.values[off + i]!) * 3;
      px[i * 3] = scale.lut[c]!;
      px[i * 3 + 1] = scale.lut[c + 1]!;
      px[i * 3 + 2] = scale.lut[c + 2]!;
    }
  }
  return { uri: pngDataUri(encodePng(it.cols, it.rows, px, 3)) };
}

/** SVG markup of layout items (ids of gradients start with `idPrefix`). */
export function svgItems(items: readonly Item[], theme: Theme, idPrefix: string): string {
  let s = '';
  let gradients = 0;
  for (const it of items) {
    switch (it.kind) {
      case 'text': {
        const a = attrs(textAttrs(it));
        const content = it.spans
          ? it.spans.map((sp) => `<tspan${attrs(spanAttrs(sp))}>${escapeHtml(sp.text)}</tspan>`).join('')
          : escapeHtml(it.text);
        s += withTip(it, `<text${a}${common(it)}>${content}</text>`);
        break;
      }
      case 'rect':
        s += withTip(
          it,
          `<rect${attrs({ ...rectAttrs(it), 'fill-opacity': it.fillOpacity === undefined ? undefined : fmtAttr(it.fillOpacity) })}${common(it)}/>`,
        );
        break;
      case 'line':
        s += withTip(
          it,
          `<line${attrs({ ...lineAttrs(it), 'stroke-opacity': it.opacity === undefined ? undefined : fmtAttr(it.opacity) })}${common(it)}/>`,
        );
        break;
      case 'gradient': {
        const id = `${idPrefix}-gradient-${gradients++}`;
        const stops = it.stops.map((c, i) => `<stop offset="${n(i / Math.max(1, it.stops.length - 1))}" stop-color="${c}"/>`).join('');
        s += `<defs><linearGradient id="${id}" x1="0" y1="0" x2="0" y2="1">${stops}</linearGradient></defs>`;
        s += `<rect${attrs({ x: it.x, y: it.y, width: it.width, height: it.height, fill: `url(#${id})`, stroke: it.stroke, 'stroke-width': it.stroke ? 1 : undefined })}${common(it)}/>`;
        break;
      }
      case 'matrix':
        s += matrixSvg(it, theme);
        break;
    }
  }
  return s;
}

/** A layout's picture as a standalone SVG document. */
export function svgPicture(picture: Picture, theme: Theme, meta: { title?: string; className?: string; idPrefix?: string } = {}): string {
  return svgDocument(picture.width, picture.height, theme, svgItems(picture.items, theme, meta.idPrefix ?? 'attnscope'), meta);
}
