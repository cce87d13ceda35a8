/**
 * Paints layout items (src/views/layout/common.ts) on a canvas, as the SVG writer
 * (src/views/svg/common.ts svgItems) writes them: the page and the export draw one layout.
 * Matrix items are left to the views (they draw images with their own caching).
 */
import type { Item } from '../src/views/layout/common.js';
import { MONO_FAMILY } from '../src/views/theme.js';
import { font } from './text.js';

function setFont(c: CanvasRenderingContext2D, size: number, bold = false, italic = false, mono = false): void {
  c.font = mono ? `${italic ? 'italic ' : ''}${bold ? 'bold ' : ''}${size}px ${MONO_FAMILY}` : font(size, bold ? 'bold' : '', italic);
}

/** Draws text, rect, line and gradient items in order (matrix items are skipped). */
export function paintItems(c: CanvasRenderingContext2D, items: readonly Item[]): void {
  for (const it of items) {
    c.save();
    switch (it.kind) {
      case 'text': {
        c.textBaseline = 'alphabetic';
        c.textAlign = it.anchor === 'middle' ? 'center' : it.anchor === 'end' ? 'right' : 'left';
        c.translate(it.x, it.y);
        if (it.rotate) c.rotate((it.rotate * Math.PI) / 180);
        if (it.spans) {
          // Mixed runs: measured one after the other from the anchor.
          let total = 0;
          for (const sp of it.spans) {
            setFont(c, it.size, sp.bold ?? it.bold, sp.italic ?? it.italic, it.mono);
            total += c.measureText(sp.text).width;
          }
          let x = it.anchor === 'middle' ? -total / 2 : it.anchor === 'end' ? -total : 0;
          c.textAlign = 'left';
          for (const sp of it.spans) {
            setFont(c, it.size, sp.bold ?? it.bold, sp.italic ?? it.italic, it.mono);
            c.fillStyle = sp.fill ?? it.fill;
            c.fillText(sp.text, x, 0);
            x += c.measureText(sp.text).width;
          }
        } else {
          setFont(c, it.size, it.bold, it.italic, it.mono);
          c.fillStyle = it.fill;
          c.fillText(it.text, 0, 0);
        }
        break;
      }
      case 'rect':
        if (it.fill !== null) {
          c.globalAlpha = it.fillOpacity ?? 1;
          c.fillStyle = it.fill;
          c.fillRect(it.x, it.y, it.width, it.height);
          c.globalAlpha = 1;
        }
        if (it.stroke) {
          c.strokeStyle = it.stroke;
          c.lineWidth = it.strokeWidth ?? 1;
          c.strokeRect(it.x, it.y, it.width, it.height);
        }
        break;
      case 'line':
        c.strokeStyle = it.stroke;
        c.lineWidth = it.width;
        c.globalAlpha = it.opacity ?? 1;
        c.lineCap = it.cap ?? 'butt';
        if (it.dash) c.setLineDash([...it.dash]);
        c.beginPath();
        c.moveTo(it.x1, it.y1);
        c.lineTo(it.x2, it.y2);
        c.stroke();
        break;
      case 'gradient': {
        const g = c.createLinearGradient(0, it.y, 0, it.y + it.height);
        it.stops.forEach((s, i) => g.addColorStop(i / Math.max(1, it.stops.length - 1), s));
        c.fillStyle = g;
        c.fillRect(it.x, it.y, it.width, it.height);
        if (it.stroke) {
          c.strokeStyle = it.stroke;
          c.lineWidth = 1;
          c.strokeRect(it.x, it.y, it.width, it.height);
        }
        break;
      }
      case 'matrix':
        break;
    }
    c.restore();
  }
}

const SVG_NS = 'http://www.w3.org/2000/svg';
let gradientIds = 0;

function svgEl<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number | undefined>): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG_NS, tag) as SVGElementTagNameMap[K];
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined) el.setAttribute(k, String(v));
  return el;
}

/** Class, data-* attributes (numbers exact) and tooltip of an item. */
function decorate(el: SVGElement, it: Item): void {
  if (it.className) el.setAttribute('class', it.className);
  for (const [k, v] of Object.entries(it.data ?? {})) el.setAttribute(`data-${k}`, String(v));
  if (it.tip) {
    const t = svgEl('title', {});
    t.textContent = it.tip;
    el.append(t);
  }
}

/**
 * Layout items as SVG DOM elements (text through textContent, never markup), as the SVG writer
 * writes them; sizes and colours are set as styles so that the page's stylesheet cannot change
 * them. Matrix items are skipped.
 */
export function svgNodes(items: readonly Item[]): SVGElement[] {
  const out: SVGElement[] = [];
  for (const it of items) {
    switch (it.kind) {
      case 'text': {
        const el = svgEl('text', {
          x: it.x,
          y: it.y,
          'text-anchor': it.anchor && it.anchor !== 'start' ? it.anchor : undefined,
          transform: it.rotate ? `rotate(${it.rotate} ${it.x} ${it.y})` : undefined,
        });
        el.style.fontSize = `${it.size}px`;
        el.style.fill = it.fill;
        if (it.bold) el.style.fontWeight = 'bold';
        if (it.italic) el.style.fontStyle = 'italic';
        if (it.mono) el.style.fontFamily = MONO_FAMILY;
        if (it.spans) {
          for (const sp of it.spans) {
            const ts = svgEl('tspan', {});
            ts.textContent = sp.text;
            if (sp.fill) ts.style.fill = sp.fill;
            if (sp.italic) ts.style.fontStyle = 'italic';
            if (sp.bold) ts.style.fontWeight = 'bold';
            el.append(ts);
          }
        } else el.textContent = it.text;
        decorate(el, it);
        out.push(el);
        break;
      }
      case 'rect': {
        const el = svgEl('rect', { x: it.x, y: it.y, width: it.width, height: it.height, rx: it.rx });
        el.style.fill = it.fill ?? 'none';
        if (it.fillOpacity !== undefined) el.style.fillOpacity = String(it.fillOpacity);
        if (it.stroke) {
          el.style.stroke = it.stroke;
          el.style.strokeWidth = String(it.strokeWidth ?? 1);
        }
        decorate(el, it);
        out.push(el);
        break;
      }
      case 'line': {
        const el = svgEl('line', { x1: it.x1, y1: it.y1, x2: it.x2, y2: it.y2 });
        el.style.stroke = it.stroke;
        el.style.strokeWidth = String(it.width);
        if (it.opacity !== undefined) el.style.strokeOpacity = String(it.opacity);
        el.style.strokeDasharray = it.dash ? it.dash.join(' ') : 'none';
        if (it.cap) el.style.strokeLinecap = it.cap;
        decorate(el, it);
        out.push(el);
        break;
      }
      case 'gradient': {
        const id = `attnscope-page-gradient-${gradientIds++}`;
        const defs = svgEl('defs', {});
        const g = svgEl('linearGradient', { id, x1: 0, y1: 0, x2: 0, y2: 1 });
        it.stops.forEach((c, i) => g.append(svgEl('stop', { offset: i / Math.max(1, it.stops.length - 1), 'stop-color': c })));
        defs.append(g);
        const el = svgEl('rect', { x: it.x, y: it.y, width: it.width, height: it.height, fill: `url(#${id})` });
        if (it.stroke) {
          el.style.stroke = it.stroke;
          el.style.strokeWidth = '1';
        }
        decorate(el, it);
        out.push(defs, el);
        break;
      }
      case 'matrix':
        break;
    }
  }
  return out;
}
