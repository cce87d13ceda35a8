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

