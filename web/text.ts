/** Text measurement and token labels shared by the views. */
import { FONT_FAMILY, LAYOUT } from '../src/views/theme.js';

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

/** Cuts a label to `max` code points with an ellipsis. */
export function truncate(label: string, max: number = LAYOUT.maxLabelChars): string {
  const chars = [...label];
  return chars.length <= max ? label : `${chars.slice(0, max - 1).join('')}…`;
}
