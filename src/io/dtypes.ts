/** Byte sizes of stored dtypes and their conversion to float32. */
import { halfToFloat } from '../core/tensor.js';
import type { StoredDType } from './weights.js';

export const DTYPE_BYTES: Readonly<Record<StoredDType, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export function isStoredDType(value: string): value is StoredDType {
  return Object.prototype.hasOwnProperty.call(DTYPE_BYTES, value);
}

const hostIsLittleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

let halfTable: Float32Array | undefined;

/** float16 bits → float32, via a 65536-entry table (same values as core's halfToFloat, much faster). */
function halfLookup(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloat(h);
  }
  return halfTable;
}

/** A typed-array view over `bytes`, copying first when the bytes are not aligned for `Ctor`. */
function view<T>(
  bytes: Uint8Array,
  Ctor: { new (buffer: ArrayBufferLike, byteOffset: number, length: number): T; BYTES_PER_ELEMENT: number },
): T {
  const size = Ctor.BYTES_PER_ELEMENT;
  const src = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  return new Ctor(src.buffer, src.byteOffset, src.length / size);
}

/**
 * Converts little-endian stored values to float32 (exact for F16, BF16 and small integers;
 * F64 and large I64 values are rounded). For F32 the result may share `bytes`' buffer.
 */
export function decodeToFloat32(dtype: StoredDType, bytes: Uint8Array): Float32Array {
  if (!hostIsLittleEndian) throw new Error('attnscope needs a little-endian host to read weights');
  if (bytes.length % DTYPE_BYTES[dtype] !== 0) {
    throw new Error(`${bytes.length} bytes is not a whole number of ${dtype} values`);
  }
  switch (dtype) {
    case 'F32':
      return view(bytes, Float32Array);
    case 'F16': {
      const bits = view(bytes, Uint16Array);
      const table = halfLookup();
      const out = new Float32Array(bits.length);
      for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]!]!;
      return out;
    }
    case 'BF16': {
      const bits = view(bytes, Uint16Array);
      const out = new Float32Array(bits.length);
      const outBits = new Uint32Array(out.buffer);
      for (let i = 0; i < bits.length; i++) outBits[i] = bits[i]! << 16;
      return out;
    }
    case 'F64':
      return Float32Array.from(view(bytes, Float64Array));
    case 'I64': {
      const src = view(bytes, BigInt64Array);
      const out = new Float32Array(src.length);
      for (let i = 0; i < src.length; i++) out[i] = Number(src[i]!);
      return out;
    }
    case 'I32':
      return Float32Array.from(view(bytes, Int32Array));
    case 'I16':
      return Float32Array.from(view(bytes, Int16Array));
    case 'I8':
      return Float32Array.from(new Int8Array(bytes.buffer, bytes.byteOffset, bytes.length));
    case 'U8':
      return Float32Array.from(bytes);
    case 'BOOL': {
      const out = new Float32Array(bytes.length);
      for (let i = 0; i < bytes.length; i++) out[i] = bytes[i] ? 1 : 0;
      return out;
    }
  }
}
