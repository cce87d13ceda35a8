/**
 * Layout items as SVG elements, described once: the tag and attributes of each text, rect and line
 * item. The SVG writer (svg/common.ts) serialises them; the page (web/dom.ts) creates DOM elements
 * from them. Numbers stay numbers; each painter formats them.
 *
 * Isomorphic: imports nothing from Node.
 */
import type { LineItem, RectItem, TextItem, TextSpan } from '../layout/common.js';
import { MONO_FAMILY } from '../theme.js';

export type SvgAttrs = Record<string, string | number | undefined>;

export function textAttrs(it: TextItem): SvgAttrs {
  return {
    x: it.x,
    y: it.y,
    'font-size': it.size,
    'text-anchor': it.anchor && it.anchor !== 'start' ? it.anchor : undefined,
    fill: it.fill,
    'font-weight': it.bold ? 'bold' : undefined,
    'font-style': it.italic ? 'italic' : undefined,
    'font-family': it.mono ? MONO_FAMILY : undefined,
    transform: it.rotate ? `rotate(${round2(it.rotate)} ${round2(it.x)} ${round2(it.y)})` : undefined,
  };
}

export function spanAttrs(sp: TextSpan): SvgAttrs {
  return { fill: sp.fill, 'font-style': sp.italic ? 'italic' : undefined, 'font-weight': sp.bold ? 'bold' : undefined };
}

export function rectAttrs(it: RectItem): SvgAttrs {
  return {
    x: it.x,
    y: it.y,
    width: Math.max(0, it.width),
    height: Math.max(0, it.height),
    rx: it.rx,
    fill: it.fill ?? 'none',
    'fill-opacity': it.fillOpacity,
    stroke: it.stroke,
    'stroke-width': it.stroke ? (it.strokeWidth ?? 1) : undefined,
  };
}

export function lineAttrs(it: LineItem): SvgAttrs {
  return {
    x1: it.x1,
    y1: it.y1,
    x2: it.x2,
    y2: it.y2,
    stroke: it.stroke,
    'stroke-width': it.width,
    'stroke-opacity': it.opacity,
    'stroke-dasharray': it.dash ? it.dash.map(round2).join(' ') : undefined,
    'stroke-linecap': it.cap === 'round' ? 'round' : undefined,
  };
}

/** A coordinate with at most two decimals. */
function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
