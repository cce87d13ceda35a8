/**
 * A tiny PNG encoder (RGB, 8 bits, zlib from fflate) and helpers to embed a matrix as an
 * `<image href="data:image/png;base64,...">`, so that large matrices cost one element, not one
 * element per value.
 *
 * Isomorphic: imports nothing from Node (base64 without Buffer).
 */
import { zlibSync } from 'fflate';
import { concatBytes } from '../../core/bytes.js';
import { downsample, toBase64 } from '../layout/common.js';

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(bytes: Uint8Array, start: number, end: number): number {
  let c = 0xffffffff;
  for (let i = start; i < end; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  view.setUint32(8 + data.length, crc32(out, 4, 8 + data.length));
  return out;
}

/**
 * Encodes 8-bit pixels, row-major, as a PNG file: RGB (`channels` 3), RGBA (4), or palette
 * indices (1, with `palette` = up to 256 RGB triples).
 */
export function encodePng(width: number, height: number, pixels: Uint8Array, channels: 1 | 3 | 4 = 3, palette?: Uint8Array): Uint8Array {
  if (pixels.length !== width * height * channels) throw new Error(`encodePng: expected ${width * height * channels} bytes, got ${pixels.length}`);
  if (channels === 1 && (!palette || palette.length % 3 !== 0 || palette.length > 768)) throw new Error('encodePng: indexed pixels need a palette of up to 256 RGB entries');
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width);
  v.setUint32(4, height);
  ihdr[8] = 8; // bit depth
  ihdr[9] = channels === 1 ? 3 : channels === 3 ? 2 : 6; // colour type: indexed, truecolour, truecolour + alpha
  // compression, filter, interlace = 0
  const stride = width * channels;
  const raw = new Uint8Array((stride + 1) * height);
  for (let y = 0; y < height; y++) {
    raw[y * (stride + 1)] = 0; // filter: none
    raw.set(pixels.subarray(y * stride, (y + 1) * stride), y * (stride + 1) + 1);
  }
  return concatBytes([
    new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    ...(channels === 1 ? [chunk('PLTE', palette!)] : []),
    chunk('IDAT', zlibSync(raw, { level: 6 })),
    chunk('IEND', new Uint8Array(0)),
  ]);
}

/** Standard base64 (the one implementation, in layout/common). */
export const base64 = toBase64;

export function pngDataUri(png: Uint8Array): string {
  return `data:image/png;base64,${base64(png)}`;
}

/** A colour scale as images need it: value → palette index, and the palette (256 RGB triples). */
export interface IndexedScale {
  index(value: number): number;
  readonly lut: Uint8Array;
}

/**
 * Renders a row-major `rows × cols` matrix (a view into `data` starting at `offset`) to palette
 * indices. Matrices larger than `maxSide` on a side are averaged down (area averaging), so every
 * value still contributes. Returns the indices and the image size.
 */
export function matrixPixels(
  data: ArrayLike<number>,
  offset: number,
  rows: number,
  cols: number,
  scale: IndexedScale,
  maxSide = Infinity,
): { width: number; height: number; pixels: Uint8Array } {
  const height = Math.max(1, Math.min(rows, Math.floor(maxSide)));
  const width = Math.max(1, Math.min(cols, Math.floor(maxSide)));
  const pixels = new Uint8Array(width * height);
  if (height === rows && width === cols) {
    for (let i = 0; i < rows * cols; i++) pixels[i] = scale.index(data[offset + i]!);
    return { width, height, pixels };
  }
  const small = downsample(data, offset, rows, cols, width, height);
  for (let i = 0; i < width * height; i++) pixels[i] = scale.index(small.mean[i]!);
  return { width, height, pixels };
}

/** A matrix as an indexed-colour PNG data URI (the arguments of matrixPixels). */
export function matrixDataUri(...matrix: Parameters<typeof matrixPixels>): { uri: string; width: number; height: number } {
  const scale = matrix[4];
  const { width, height, pixels } = matrixPixels(...matrix);
  return { uri: pngDataUri(encodePng(width, height, pixels, 1, scale.lut)), width, height };
}
