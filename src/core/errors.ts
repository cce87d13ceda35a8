/**
 * An error caused by the user's input (a missing file, a corrupt checkpoint, an unsupported
 * model, a text too long...). The CLI prints its message on one line and exits non-zero,
 * without a stack trace.
 */
export class AttnscopeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AttnscopeError';
  }
}

/**
 * Characters never echoed raw from untrusted text: C0/C1 controls (terminal escape sequences, form
 * feeds, carriage returns), DEL, invisible format characters and bidirectional overrides (text that
 * reads differently than it is), line/paragraph separators, BOM and lone surrogates.
 */
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

const escapeChar = (c: string): string => {
  const code = c.charCodeAt(0);
  if (c === '\n') return '\\n';
  if (c === '\r') return '\\r';
  if (c === '\t') return '\\t';
  return code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
};

/** `text` with unsafe characters escaped and cut to `max` characters (code points) with "…". */
export function sanitize(text: string, max = 400): string {
  const chars = Array.from(text);
  const cut = chars.length > max ? `${chars.slice(0, max).join('')}…` : text;
  return cut.replace(UNSAFE, escapeChar);
}

/**
 * Untrusted text (read from a file, a config value, a user's argument) made safe to put in a
 * message: in single quotes, backslashes and quotes escaped, unsafe characters escaped, cut to
 * `max` characters. Values that are not strings are shown as (cut) JSON.
 */
export function quote(value: unknown, max = 80): string {
  if (typeof value !== 'string') return sanitize(preview(value, max + 1), max);
  const chars = Array.from(value);
  const body = chars.length > max ? `${chars.slice(0, max).join('')}…` : value;
  return `'${body.replace(/[\\']/g, (c) => `\\${c}`).replace(UNSAFE, escapeChar)}'`;
}

/** JSON-like text of `value`, stopping once `budget` characters are written (safe on deep or huge values). */
function preview(value: unknown, budget: number): string {
  let out = '';
  const write = (v: unknown, depth: number): void => {
    if (out.length >= budget) return;
    if (Array.isArray(v) || (typeof v === 'object' && v !== null)) {
      if (depth >= 6) {
        out += Array.isArray(v) ? '[…]' : '{…}';
        return;
      }
      const array = Array.isArray(v);
      out += array ? '[' : '{';
      let first = true;
      for (const [k, item] of array ? (v as unknown[]).entries() : Object.entries(v as object)) {
        if (out.length >= budget) return;
        if (!first) out += ',';
        first = false;
        if (!array) out += `${JSON.stringify(k)}:`;
        write(item, depth + 1);
      }
      out += array ? ']' : '}';
      return;
    }
    if (typeof v === 'string') out += JSON.stringify(v.length > budget ? v.slice(0, budget) : v);
    else if (typeof v === 'bigint') out += `${v}`;
    else out += String(v);
  };
  write(value, 0);
  return out;
}
