/**
 * Random-access byte sources. Checkpoint readers pull each tensor by offset, so a file is never
 * loaded whole (weights of large models are many gigabytes; offsets past 2 GiB and 4 GiB work).
 */
import { open, type FileHandle } from 'node:fs/promises';
import { AttnscopeError } from '../core/errors.js';

export interface ByteSource {
  /** Name used in error messages (usually the file path). */
  readonly label: string;
  /** Total size in bytes. */
  readonly size: number;
  /**
   * Reads `length` bytes at `offset` into a fresh buffer (its own ArrayBuffer, offset 0, so typed
   * array views over it are aligned). Throws an AttnscopeError if the range is past the end.
   */
  read(offset: number, length: number): Promise<Uint8Array>;
  close(): Promise<void>;
}

/** Largest length handed to one FileHandle.read call (the OS and Node cap single reads near 2 GiB). */
const MAX_CHUNK = 1 << 30;

function checkRange(label: string, size: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new AttnscopeError(`${label}: invalid read of ${length} bytes at offset ${offset}`);
  }
  if (offset + length > size) {
    throw new AttnscopeError(
      `${label}: file is truncated (needs bytes ${offset}..${offset + length}, file has ${size})`,
    );
  }
}

class FileByteSource implements ByteSource {
  private handle: FileHandle | undefined;

  constructor(
    readonly label: string,
    handle: FileHandle,
    readonly size: number,
  ) {
    this.handle = handle;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(this.label, this.size, offset, length);
    const handle = this.handle;
    if (!handle) throw new AttnscopeError(`${this.label}: file already closed`);
    const out = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const want = Math.min(MAX_CHUNK, length - done);
      const { bytesRead } = await handle.read(out, done, want, offset + done);
      if (bytesRead === 0) {
        throw new AttnscopeError(`${this.label}: unexpected end of file at byte ${offset + done}`);
      }
      done += bytesRead;
    }
    return out;
  }

  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close();
  }
}

/** Opens a file for random-access reads. */
export async function openFileSource(path: string, label: string = path): Promise<ByteSource> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'is a directory' : String(err);
    throw new AttnscopeError(`${label}: cannot open (${why})`, { cause: err });
  }
  try {
    const { size } = await handle.stat();
    return new FileByteSource(label, handle, size);
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/** A byte source over bytes already in memory (e.g. a file dropped into the browser). */
export function memorySource(bytes: Uint8Array, label: string): ByteSource {
  return {
    label,
    size: bytes.length,
    async read(offset: number, length: number): Promise<Uint8Array> {
      checkRange(label, bytes.length, offset, length);
      return bytes.slice(offset, offset + length);
    },
    async close(): Promise<void> {},
  };
}

/**
 * A window [start, start + size) of another source, addressed from 0 (a stored zip entry).
 * Closing it does not close the parent.
 */
export function sliceSource(parent: ByteSource, start: number, size: number, label: string): ByteSource {
  checkRange(parent.label, parent.size, start, size);
  return {
    label,
    size,
    read(offset: number, length: number): Promise<Uint8Array> {
      checkRange(label, size, offset, length);
      return parent.read(start + offset, length);
    },
    async close(): Promise<void> {},
  };
}
