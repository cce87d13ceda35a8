/**
 * SVG → PNG with @resvg/resvg-js (Node only). Loads the system fonts plus the usual Linux font
 * directories (DejaVu, Noto CJK, Noto Color Emoji) so that any token renders, and scales the
 * image by a factor (3 for print).
 */
import { existsSync } from 'node:fs';
import { Resvg, type ResvgRenderOptions } from '@resvg/resvg-js';
import { AttnscopeError } from '../core/errors.js';

export interface PngOptions {
  /** Pixels per SVG unit (default 2). */
  scale?: number;
  /** Background colour (default: the SVG's own background rect). */
  background?: string;
  /** Extra font files to load (e.g. a font for a script the system lacks). */
  fontFiles?: string[];
}

/** Font directories searched in addition to the system fonts (those that exist). */
const FONT_DIRS = [
  '/usr/share/fonts',
  '/usr/local/share/fonts',
  '/usr/share/fonts/truetype/dejavu',
  '/usr/share/fonts/opentype/noto',
  '/usr/share/fonts/truetype/noto',
  '/System/Library/Fonts',
  '/Library/Fonts',
  'C:\\Windows\\Fonts',
];

/** Renders an SVG document to PNG bytes. */
export function svgToPng(svg: string, options: PngOptions = {}): Uint8Array {
  const scale = options.scale ?? 2;
  if (!(scale > 0) || scale > 16) throw new AttnscopeError(`--scale must be a number in (0, 16], got ${scale}`);
  const opts: ResvgRenderOptions = {
    fitTo: { mode: 'zoom', value: scale },
    font: {
      loadSystemFonts: true,
      fontDirs: FONT_DIRS.filter((d) => existsSync(d)),
      fontFiles: options.fontFiles,
      defaultFontFamily: 'DejaVu Sans',
      sansSerifFamily: 'DejaVu Sans',
      monospaceFamily: 'DejaVu Sans Mono',
    },
    shapeRendering: 2,
    textRendering: 1,
    imageRendering: 0,
    logLevel: 'off',
  };
  if (options.background) opts.background = options.background;
  const rendered = new Resvg(svg, opts).render();
  return new Uint8Array(rendered.asPng());
}

/** Width and height of a PNG file (from its IHDR chunk), or null if it is not a PNG. */
export function pngSize(png: Uint8Array): { width: number; height: number } | null {
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (png.length < 24 || sig.some((b, i) => png[i] !== b)) return null;
  const v = new DataView(png.buffer, png.byteOffset, png.byteLength);
  return { width: v.getUint32(16), height: v.getUint32(20) };
}
