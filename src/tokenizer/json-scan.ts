/**
 * A fast look at the top level of a large JSON object (tokenizer.json: a few small settings next
 * to a vocabulary of megabytes). Finds where each top-level value lies without building the big
 * ones, so that the small ones can be parsed and replaced in the text. Full validation is left
 * to the real parser (the Rust `tokenizers` loader).
 */
import { AttnscopeError, quote, sanitize } from '../core/errors.js';

export interface TopLevelJson {
  readonly text: string;
  /** [start, end) of each top-level key's value in `text`. */
  readonly spans: ReadonlyMap<string, readonly [number, number]>;
  /** Index of the object's closing brace. */
  readonly close: number;
}

const WS = /[^ \t\n\r]/g;
const STRUCTURE = /["{}[\]]/g;
const PRIMITIVE_END = /[,}\] \t\n\r]/g;

function invalid(what: string, at: number): never {
  throw new AttnscopeError(`${what} is not valid JSON (near character ${at})`);
}

function skipWs(text: string, i: number): number {
  WS.lastIndex = i;
  return WS.exec(text) ? WS.lastIndex - 1 : text.length;
}

/** Index of the quote closing the string whose opening quote is at `i`. */
function stringEnd(text: string, i: number, what: string): number {
  let j = i + 1;
  for (;;) {
    const k = text.indexOf('"', j);
    if (k < 0) invalid(what, i);
    let backslashes = 0;
    while (text.charCodeAt(k - 1 - backslashes) === 92) backslashes++;
    if (backslashes % 2 === 0) return k;
    j = k + 1;
  }
}

/** Index just past the JSON value starting at `i`. */
function valueEnd(text: string, i: number, what: string): number {
  const c = text[i];
  if (c === '"') return stringEnd(text, i, what) + 1;
  if (c === '{' || c === '[') {
    let depth = 1;
    let j = i + 1;
    while (depth > 0) {
      STRUCTURE.lastIndex = j;
      const m = STRUCTURE.exec(text);
      if (!m) invalid(what, i);
      const k = m.index;
      const ch = text[k];
      if (ch === '"') j = stringEnd(text, k, what) + 1;
      else {
        depth += ch === '{' || ch === '[' ? 1 : -1;
        j = k + 1;
      }
    }
    return j;
  }
  PRIMITIVE_END.lastIndex = i;
  const m = PRIMITIVE_END.exec(text);
  const end = m ? m.index : text.length;
  if (end === i) invalid(what, i);
  return end;
}

/** Locates the values of a JSON object's top-level keys. `what` names the file in errors. */
export function scanTopLevel(text: string, what: string): TopLevelJson {
  const spans = new Map<string, readonly [number, number]>();
  let i = skipWs(text, 0);
  if (text[i] !== '{') invalid(what, i);
  i = skipWs(text, i + 1);
  if (text[i] === '}') return { text, spans, close: i };
  for (;;) {
    if (text[i] !== '"') invalid(what, i);
    const keyEnd = stringEnd(text, i, what);
    const key = JSON.parse(text.slice(i, keyEnd + 1)) as string;
    i = skipWs(text, keyEnd + 1);
    if (text[i] !== ':') invalid(what, i);
    const start = skipWs(text, i + 1);
    const end = valueEnd(text, start, what);
    spans.set(key, [start, end]);
    i = skipWs(text, end);
    if (text[i] === ',') i = skipWs(text, i + 1);
    else if (text[i] === '}') return { text, spans, close: i };
    else invalid(what, i);
  }
}

/** Parses the value of top-level `key` (undefined when absent). */
export function parseValue(json: TopLevelJson, key: string, what: string): unknown {
  const span = json.spans.get(key);
  if (!span) return undefined;
  try {
    return JSON.parse(json.text.slice(span[0], span[1])) as unknown;
  } catch (err) {
    throw new AttnscopeError(`${what} is not valid JSON (in ${quote(key)}): ${sanitize((err as Error).message, 160)}`, { cause: err });
  }
}

/** The text with the given top-level values replaced (or added when absent). */
export function replaceValues(json: TopLevelJson, values: ReadonlyMap<string, unknown>): string {
  const edits: { start: number; end: number; text: string }[] = [];
  const added: string[] = [];
  for (const [key, value] of values) {
    const span = json.spans.get(key);
    const text = JSON.stringify(value ?? null);
    if (span) edits.push({ start: span[0], end: span[1], text });
    else added.push(`${JSON.stringify(key)}:${text}`);
  }
  if (added.length > 0) {
    edits.push({ start: json.close, end: json.close, text: (json.spans.size > 0 ? ',' : '') + added.join(',') });
  }
  edits.sort((a, b) => a.start - b.start);
  let out = '';
  let at = 0;
  for (const e of edits) {
    out += json.text.slice(at, e.start) + e.text;
    at = e.end;
  }
  return out + json.text.slice(at);
}
