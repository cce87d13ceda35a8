/**
 * Just enough of the zip format to read torch.save archives: the central directory (with zip64),
 * and STORED (uncompressed) entries read by offset, never the whole archive at once.
 */
import { AttnscopeError, quote } from '../core/errors.js';
import type { ByteSource } from './byte-source.js';

export interface ZipEntry {
  readonly name: string;
  /** 0 = stored; anything else is compressed and cannot be read here. */
  readonly method: number;
  readonly size: number;
  readonly localHeaderOffset: number;
}

const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_LOCAL = 0x04034b50;
const MAX_EOCD_SEARCH = 22 + 0xffff;

function dataView(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function u64(view: DataView, at: number): number {
  return Number(view.getBigUint64(at, true));
}

/** Finds the end-of-central-directory record and returns where the central directory is. */
async function locateCentralDirectory(source: ByteSource): Promise<{ offset: number; size: number; count: number }> {
  const { label } = source;
  const tailLength = Math.min(source.size, MAX_EOCD_SEARCH);
  const tailStart = source.size - tailLength;
  const tail = dataView(await source.read(tailStart, tailLength));
  let at = tailLength - 22;
  while (at >= 0 && tail.getUint32(at, true) !== SIG_EOCD) at--;
  if (at < 0) throw new AttnscopeError(`${label}: not a zip archive (no end of central directory)`);
  let count = tail.getUint16(at + 10, true);
  let size = tail.getUint32(at + 12, true);
  let offset = tail.getUint32(at + 16, true);
  const locator = at - 20;
  if (locator >= 0 && tail.getUint32(locator, true) === SIG_ZIP64_LOCATOR) {
    const zip64At = u64(tail, locator + 8);
    const record = dataView(await source.read(zip64At, 56));
    if (record.getUint32(0, true) !== SIG_ZIP64_EOCD) {
      throw new AttnscopeError(`${label}: corrupt zip64 end of central directory`);
    }
    count = u64(record, 32);
    size = u64(record, 40);
    offset = u64(record, 48);
  }
  return { offset, size, count };
}

/** Reads the central directory. Entry names map to their location and size. */
export async function readZipDirectory(source: ByteSource): Promise<Map<string, ZipEntry>> {
  const { label } = source;
  const cd = await locateCentralDirectory(source);
  if (cd.offset + cd.size > source.size) throw new AttnscopeError(`${label}: zip central directory past end of file`);
  const bytes = await source.read(cd.offset, cd.size);
  const view = dataView(bytes);
  const decoder = new TextDecoder('utf-8');
  const entries = new Map<string, ZipEntry>();
  let at = 0;
  for (let i = 0; i < cd.count; i++) {
    if (at + 46 > bytes.length || view.getUint32(at, true) !== SIG_CENTRAL) {
      throw new AttnscopeError(`${label}: corrupt zip central directory (entry ${i})`);
    }
    const flags = view.getUint16(at + 8, true);
    const method = view.getUint16(at + 10, true);
    let size = view.getUint32(at + 24, true);
    let compressed = view.getUint32(at + 20, true);
    let localHeaderOffset = view.getUint32(at + 42, true);
    const nameLength = view.getUint16(at + 28, true);
    const extraLength = view.getUint16(at + 30, true);
    const commentLength = view.getUint16(at + 32, true);
    const end = at + 46 + nameLength + extraLength + commentLength;
    if (end > bytes.length) throw new AttnscopeError(`${label}: corrupt zip central directory (entry ${i})`);
    const name = decoder.decode(bytes.subarray(at + 46, at + 46 + nameLength));
    // zip64 extended information: 64-bit values for the fields saturated at 0xffffffff, in order.
    for (let e = at + 46 + nameLength; e + 4 <= at + 46 + nameLength + extraLength; ) {
      const id = view.getUint16(e, true);
      const length = view.getUint16(e + 2, true);
      if (id === 0x0001) {
        let p = e + 4;
        const next = (): number => {
          if (p + 8 > e + 4 + length || p + 8 > bytes.length) {
            throw new AttnscopeError(`${label}: corrupt zip64 field for ${quote(name)}`);
          }
          p += 8;
          return u64(view, p - 8);
        };
        if (size === 0xffffffff) size = next();
        if (compressed === 0xffffffff) compressed = next();
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
      }
      e += 4 + length;
    }
    if (flags & 1) throw new AttnscopeError(`${label}: zip entry ${quote(name)} is encrypted`);
    if (method === 0 && compressed !== size) {
      throw new AttnscopeError(`${label}: corrupt zip entry ${quote(name)} (stored sizes differ)`);
    }
    entries.set(name, { name, method, size, localHeaderOffset });
    at = end;
  }
  return entries;
}

/** Absolute offset of a stored entry's bytes (after its local header), checked against the file. */
export async function entryDataOffset(source: ByteSource, entry: ZipEntry): Promise<number> {
  const { label } = source;
  if (entry.method !== 0) {
    throw new AttnscopeError(`${label}: zip entry ${quote(entry.name)} is compressed (method ${entry.method}); only stored entries are supported`);
  }
  const header = dataView(await source.read(entry.localHeaderOffset, 30));
  if (header.getUint32(0, true) !== SIG_LOCAL) {
    throw new AttnscopeError(`${label}: corrupt zip local header for ${quote(entry.name)}`);
  }
  const start = entry.localHeaderOffset + 30 + header.getUint16(26, true) + header.getUint16(28, true);
  if (start + entry.size > source.size) {
    throw new AttnscopeError(`${label}: zip entry ${quote(entry.name)} runs past the end of the file (truncated?)`);
  }
  return start;
}
