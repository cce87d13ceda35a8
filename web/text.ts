/** The views' font as a canvas font string, and the shared label truncation. Layouts measure text with textWidth (src/views/layout/common.ts). */
import { FONT_FAMILY, LAYOUT } from '../src/views/theme.js';

export { truncate } from '../src/views/layout/common.js';

export function font(size: number = LAYOUT.fontSize, weight = '', italic = false): string {
  return `${italic ? 'italic ' : ''}${weight ? `${weight} ` : ''}${size}px ${FONT_FAMILY}`;
}
