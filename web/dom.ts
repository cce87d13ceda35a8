/**
 * Tiny DOM helpers, and layout items (src/views/layout/common.ts) as SVG elements. Text always goes in through `textContent` (never innerHTML), so a token
 * such as `<img src=x onerror=alert(1)>` is shown as text and cannot run.
 */

import type { Item, MatrixItem } from '../src/views/layout/common.js';
import { lineAttrs, rectAttrs, spanAttrs, textAttrs } from '../src/views/svg/elements.js';

type Attrs = Record<string, string | number | boolean | undefined | null>;

function setAttrs(el: Element, attrs: Attrs): void {
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    el.setAttribute(k === 'testid' ? 'data-testid' : k, v === true ? '' : String(v));
  }
}

export type Child = Node | string | null | undefined | false;

function append(el: Element, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  }
}

/** An HTML element; `testid` becomes `data-testid`. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG element. */
export function s<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag) as SVGElementTagNameMap[K];
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export interface Option<T extends string | number> {
  value: T;
  label: string;
}

/** A labelled `<select>`; calls `onChange` with the chosen value. */
export function select<T extends string | number>(
  testid: string,
  label: string,
  options: readonly Option<T>[],
  value: T,
  onChange: (v: T) => void,
): HTMLLabelElement {
  const sel = h('select', { testid });
  options.forEach((o, i) => {
    const opt = h('option', { value: String(i) }, o.label);
    if (o.value === value) opt.selected = true;
    sel.append(opt);
  });
  sel.addEventListener('change', () => onChange(options[Number(sel.value)]!.value));
  return h('label', { class: 'control' }, label ? h('span', {}, label) : null, sel);
}

/** A labelled checkbox. */
export function checkbox(testid: string, label: string, checked: boolean, onChange: (v: boolean) => void, disabled = false): HTMLLabelElement {
  const box = h('input', { type: 'checkbox', testid });
  box.checked = checked;
  box.disabled = disabled;
  box.addEventListener('change', () => onChange(box.checked));
  return h('label', { class: `control check${disabled ? ' disabled' : ''}` }, box, h('span', {}, label));
}

export function button(testid: string, label: string, onClick: () => void, title?: string): HTMLButtonElement {
  const b = h('button', { type: 'button', testid, title }, label);
  b.addEventListener('click', onClick);
  return b;
}

/** Replaces an element's children. */
export function replaceChildren(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

/**
 * The width a view may fill: its App's box less the page margins. The standalone page's App spans
 * the window (at least 640 px: a narrower window scrolls); a side of the served app's compare mode
 * is half of it, and its views lay out to that half (at least 320 px) instead of scrolling sideways.
 */
export function frameWidth(el: Element): number {
  const page = document.documentElement.clientWidth;
  const box = el.closest('.app')?.clientWidth || page;
  return Math.max(box < page - 8 ? 320 : 640, box - 48);
}

/** A canvas sized for the device pixel ratio; returns its 2D context scaled to CSS pixels. */
export function sizeCanvas(canvas: HTMLCanvasElement, width: number, height: number): CanvasRenderingContext2D {
  const dpr = Math.min(2, window.devicePixelRatio || 1);
  const w = Math.max(1, Math.ceil(width));
  const hh = Math.max(1, Math.ceil(height));
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(hh * dpr);
  canvas.style.width = `${w}px`;
  canvas.style.height = `${hh}px`;
  const ctx = canvas.getContext('2d')!;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return ctx;
}

/** A floating tooltip that follows the pointer. */
export class Tooltip {
  readonly el = h('div', { class: 'tooltip', testid: 'tooltip', role: 'tooltip' });
  show(x: number, y: number, ...lines: string[]): void {
    replaceChildren(this.el, ...lines.flatMap((l, i) => (i ? [h('br'), l] : [l])));
    this.el.style.display = 'block';
    const r = this.el.getBoundingClientRect();
    const left = Math.min(window.innerWidth - r.width - 8, x + 14);
    const top = y + 16 + r.height > window.innerHeight ? y - r.height - 10 : y + 16;
    this.el.style.left = `${Math.max(4, left)}px`;
    this.el.style.top = `${Math.max(4, top)}px`;
  }
  hide(): void {
    this.el.style.display = 'none';
  }
}

// --- layout items as SVG elements ------------------------------------------------------------------

function dataAttrs(it: Item): Attrs {
  const a: Attrs = { class: it.className };
  if (it.data) for (const [k, v] of Object.entries(it.data)) a[`data-${k}`] = typeof v === 'number' ? String(v) : v;
  return a;
}

/** One item as an SVG element (`extra` attributes added, e.g. a test id); matrices are not supported here. */
export function svgElement(it: Exclude<Item, MatrixItem>, extra: Attrs = {}): SVGElement {
  let el: SVGElement;
  switch (it.kind) {
    case 'text': {
      el = s('text', { ...textAttrs(it), ...dataAttrs(it), ...extra });
      if (it.spans) for (const sp of it.spans) el.append(s('tspan', spanAttrs(sp), sp.text));
      else el.append(document.createTextNode(it.text));
      break;
    }
    case 'rect':
      el = s('rect', { ...rectAttrs(it), ...dataAttrs(it), ...extra });
      break;
    case 'line':
      el = s('line', { ...lineAttrs(it), ...dataAttrs(it), ...extra });
      break;
    case 'gradient': {
      const id = `attnscope-g-${Math.random().toString(36).slice(2)}`;
      const grad = s('linearGradient', { id, x1: 0, y1: 0, x2: 0, y2: 1 });
      it.stops.forEach((c, i) => grad.append(s('stop', { offset: i / Math.max(1, it.stops.length - 1), 'stop-color': c })));
      el = s('g', dataAttrs(it), s('defs', {}, grad), s('rect', { x: it.x, y: it.y, width: it.width, height: it.height, fill: `url(#${id})`, stroke: it.stroke }));
      break;
    }
  }
  if (it.tip) {
    const title = s('title');
    title.textContent = it.tip;
    el.append(title);
  }
  return el;
}

/** Appends items to an SVG parent (matrices skipped). */
export function appendSvgItems(parent: SVGElement, items: readonly Item[], extra: (it: Item) => Attrs = () => ({})): void {
  const frag = document.createDocumentFragment();
  for (const it of items) if (it.kind !== 'matrix') frag.append(svgElement(it, extra(it)));
  parent.append(frag);
}

