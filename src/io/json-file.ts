/**
 * A JSON file of any size read in chunks, to the value `JSON.parse` gives for its text.
 *
 * `JSON.parse(await readFile(path, 'utf8'))` needs the whole file as one string, and V8's strings end
 * at 2²⁹ − 24 characters (≈ 512 MB): a BERT-base trace of 512 tokens written as JSON is ≈ 600 MB
 * and could be written but not read back. Here the file is read a chunk at a time into one buffer;
 * the value is assembled with an explicit stack (no recursion, so any depth), and each token is
 * handed to `JSON.parse` on its own bytes — strings (escapes and UTF-8 as JSON.parse reads them),
 * numbers and literals — and so is each innermost array of numbers as a whole (a trace's rows:
 * `[0.1,0.2,…]`), which keeps the per-value work in V8's own parser.
 */
import { open } from 'node:fs/promises';
import { AttnscopeError } from '../core/errors.js';
import { fileError } from './file-error.js';

/** Default bytes read at a time. */
export const JSON_CHUNK_BYTES = 1 << 24;
/** The longest single token (a string, or an innermost array of numbers) read whole. */
const MAX_TOKEN_BYTES = 1 << 28;

type Frame =
  | { kind: 'array'; value: unknown[]; needValue: boolean }
  | { kind: 'object'; value: Record<string, unknown>; key: string | null; state: 'key' | 'colon' | 'value' | 'next'; first: boolean };

const enum C {
  Space = 0x20,
  Tab = 0x09,
  Nl = 0x0a,
  Cr = 0x0d,
  Quote = 0x22,
  Backslash = 0x5c,
  Comma = 0x2c,
  Colon = 0x3a,
  OpenArray = 0x5b,
  CloseArray = 0x5d,
  OpenObject = 0x7b,
  CloseObject = 0x7d,
}

function isSpace(b: number): boolean {
  return b === C.Space || b === C.Nl || b === C.Cr || b === C.Tab;
}

/** Sets `key` on a parsed object as JSON.parse does: an own property, `__proto__` included. */
function setKey(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__') Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true });
  else obj[key] = value;
}

/**
 * Reads and parses the JSON file at `path` in chunks of `chunkBytes` (any size of file; a single
 * string or innermost array of numbers up to 256 MB). Errors name the file and the byte offset.
 */
export async function readJsonFile(path: string, chunkBytes: number = JSON_CHUNK_BYTES): Promise<unknown> {
  if (!(Number.isInteger(chunkBytes) && chunkBytes >= 1)) throw new RangeError(`chunkBytes: expected a whole number ≥ 1, got ${chunkBytes}`);
  let handle;
  try {
    handle = await open(path, 'r');
  } catch (e) {
    throw fileError(path, e);
  }
  try {
    let buf = Buffer.allocUnsafe(Math.max(chunkBytes, 64));
    /** Valid bytes in buf, the next unread byte in buf, and the file offset of buf[0]. */
    let end = 0;
    let pos = 0;
    let base = 0;
    let eof = false;
    const bad = (what: string, at = pos): never => {
      throw new AttnscopeError(`${path}: not valid JSON (${what} at byte ${base + at})`);
    };
    /** Keeps buf[from…end) at the start of buf and reads more after it (grows buf when it is full); false at the end of the file. */
    const more = async (from: number): Promise<boolean> => {
      if (eof) return false;
      if (from > 0) {
        buf.copy(buf, 0, from, end);
        base += from;
        end -= from;
        pos -= from;
      }
      if (end === buf.length) {
        if (buf.length >= MAX_TOKEN_BYTES) bad(`a value longer than ${MAX_TOKEN_BYTES} bytes`, 0);
        const grown = Buffer.allocUnsafe(Math.min(buf.length * 2, MAX_TOKEN_BYTES));
        buf.copy(grown, 0, 0, end);
        buf = grown;
      }
      const { bytesRead } = await handle.read(buf, end, Math.min(buf.length - end, Math.max(chunkBytes, 64)), base + end);
      if (bytesRead === 0) eof = true;
      end += bytesRead;
      return bytesRead > 0;
    };
    /** Moves `pos` to the next byte that is not white space, reading on as needed; false at the end of the file. */
    const skipSpace = async (): Promise<boolean> => {
      for (;;) {
        while (pos < end && isSpace(buf[pos]!)) pos++;
        if (pos < end) return true;
        if (!(await more(pos))) return false;
      }
    };
    /** Index of the quote closing the string opened at `pos`, reading on as needed. */
    const stringEnd = async (): Promise<number> => {
      let i = pos + 1;
      for (;;) {
        while (i < end) {
          const b = buf[i]!;
          if (b === C.Quote) return i;
          i += b === C.Backslash ? 2 : 1;
        }
        const off = i - pos;
        if (!(await more(pos))) bad('an unterminated string');
        i = pos + off;
      }
    };
    /**
     * At `[`: the index of its `]` when the array holds no string, array or object (an innermost
     * array of numbers and literals), else -1.
     */
    const flatArrayEnd = async (): Promise<number> => {
      let i = pos + 1;
      for (;;) {
        while (i < end) {
          const b = buf[i]!;
          if (b === C.CloseArray) return i;
          if (b === C.OpenArray || b === C.OpenObject || b === C.Quote) return -1;
          i++;
        }
        const off = i - pos;
        if (!(await more(pos))) bad('an unterminated array');
        i = pos + off;
      }
    };
    /** End (exclusive) of the number or literal at `pos`. */
    const scalarEnd = async (): Promise<number> => {
      let i = pos;
      for (;;) {
        while (i < end) {
          const b = buf[i]!;
          if (isSpace(b) || b === C.Comma || b === C.CloseArray || b === C.CloseObject || b === C.Colon) return i;
          i++;
        }
        const off = i - pos;
        if (!(await more(pos))) return end;
        i = pos + off;
      }
    };
    const parseSlice = (from: number, to: number, utf8: boolean, what: string): unknown => {
      try {
        return JSON.parse(buf.toString(utf8 ? 'utf8' : 'latin1', from, to));
      } catch {
        return bad(what, from);
      }
    };

    const stack: Frame[] = [];
    let root: unknown;
    let haveRoot = false;
    /** Places a finished value into the container on top of the stack, or as the root. */
    const place = (value: unknown): void => {
      const top = stack[stack.length - 1];
      if (!top) {
        root = value;
        haveRoot = true;
      } else if (top.kind === 'array') {
        top.value.push(value);
        top.needValue = false;
      } else {
        setKey(top.value, top.key!, value);
        top.state = 'next';
      }
    };

    /** Steps over the `]` or `}` that ends the container on top of the stack, and places it. */
    const close = (top: Frame): void => {
      pos++;
      stack.pop();
      place(top.value);
    };

    for (;;) {
      if (!(await skipSpace())) break;
      const b = buf[pos]!;
      const top = stack[stack.length - 1];
      if (haveRoot && !top) bad('text after the value');
      // Structure inside containers.
      if (top?.kind === 'object') {
        if (top.state === 'key') {
          if (b === C.CloseObject && top.first) {
            close(top);
            continue;
          }
          if (b !== C.Quote) bad('a key expected');
          const q = await stringEnd();
          top.key = parseSlice(pos, q + 1, true, 'a bad key') as string;
          pos = q + 1;
          top.state = 'colon';
          continue;
        }
        if (top.state === 'colon') {
          if (b !== C.Colon) bad("':' expected");
          pos++;
          top.state = 'value';
          continue;
        }
        if (top.state === 'next') {
          if (b === C.Comma) {
            pos++;
            top.state = 'key';
            top.first = false;
            continue;
          }
          if (b !== C.CloseObject) bad("',' or '}' expected");
          close(top);
          continue;
        }
      } else if (top?.kind === 'array' && !top.needValue) {
        if (b === C.Comma) {
          pos++;
          top.needValue = true;
          continue;
        }
        if (b !== C.CloseArray) bad("',' or ']' expected");
        close(top);
        continue;
      }
      // A value.
      if (b === C.OpenObject) {
        pos++;
        stack.push({ kind: 'object', value: {}, key: null, state: 'key', first: true });
      } else if (b === C.OpenArray) {
        const close = await flatArrayEnd();
        if (close >= 0) {
          place(parseSlice(pos, close + 1, false, 'a bad array'));
          pos = close + 1;
        } else {
          // Not empty: a string, array or object comes before its ']' (flatArrayEnd).
          pos++;
          stack.push({ kind: 'array', value: [], needValue: true });
        }
      } else if (b === C.Quote) {
        const q = await stringEnd();
        place(parseSlice(pos, q + 1, true, 'a bad string'));
        pos = q + 1;
      } else if (b === C.CloseArray || b === C.CloseObject || b === C.Comma || b === C.Colon) {
        bad(`unexpected '${String.fromCharCode(b)}'`);
      } else {
        const e = await scalarEnd();
        place(parseSlice(pos, e, false, 'a bad value'));
        pos = e;
      }
    }
    if (stack.length > 0) bad('unexpected end of file', end);
    if (!haveRoot) bad('no value', end);
    return root;
  } finally {
    await handle.close();
  }
}
