/** Text measurement in the browser (the views' font), and the shared label truncation. */
import { FONT_FAMILY, LAYOUT } from '../src/views/theme.js';

export { truncate } from '../src/views/layout/common.js';

let measureCtx: CanvasRenderingContext2D | null = null;

export function font(size: number = LAYOUT.fontSize, weight = '', italic = false): string {
  return `${italic ? 'italic ' : ''}${weight ? `${weight} ` : ''}${size}px ${FONT_FAMILY}`;
}

/** Rendered width of a text in the views' font. */
export function measure(text: string, size: number = LAYOUT.fontSize, weight = ''): number {
  measureCtx ??= document.createElement('canvas').getContext('2d')!;
  measureCtx.font = font(size, weight);
  return measureCtx.measureText(text).width;
}
