/**
 * Session files of the app: a JSON file holding the app's state (the URL state of url-state.ts:
 * model(s), texts, view, stack, layer, head, display options, compare state) and the model
 * revisions the traces came from. Reopening a session re-traces its texts on the server (the
 * file holds no attention: it stays a few kilobytes, and the views are the server's answer for the
 * model as it is now); when a model's revision differs from the saved one, the app says so.
 */
import { MAX_TEXT, readUrlState, writeUrlState, type UrlState } from './url-state.js';

export const SESSION_FORMAT = 'attnscope-session';
export const SESSION_VERSION = 1;

export interface SessionFile {
  format: typeof SESSION_FORMAT;
  version: typeof SESSION_VERSION;
  /** ISO time of saving. */
  saved: string;
  state: UrlState;
  /** Revisions (commit or file stamp) of A's and B's models when saved. */
  revisions?: { a?: string; b?: string };
}

export function sessionFile(state: UrlState, revisions: { a?: string; b?: string }): SessionFile {
  // Through the URL form: exactly what a link would hold.
  return { format: SESSION_FORMAT, version: SESSION_VERSION, saved: new Date().toISOString(), state: readUrlState(writeUrlState(state)), revisions };
}

/** A session file's state, checked field by field; an Error naming the field otherwise. */
export function parseSession(text: string): SessionFile {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new Error('the file is not JSON (an attnscope session is a .json file saved by the app)');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new Error('the file is not an attnscope session (expected a JSON object)');
  const r = raw as Record<string, unknown>;
  if (r.format !== SESSION_FORMAT) throw new Error(`format: expected '${SESSION_FORMAT}', got ${JSON.stringify(r.format)?.slice(0, 40) ?? 'nothing'}`);
  if (r.version !== SESSION_VERSION) throw new Error(`version: this app reads version ${SESSION_VERSION}, the file is ${JSON.stringify(r.version)?.slice(0, 20)}`);
  const s = r.state;
  if (typeof s !== 'object' || s === null || Array.isArray(s)) throw new Error('state: an object');
  const st = s as Record<string, unknown>;
  // Every field as the URL reader takes it (types, ranges, lengths): build a query string from the strings and numbers given.
  const q = new URLSearchParams();
  const strings: [keyof UrlState, string][] = [['model', 'model'], ['text', 'text'], ['pair', 'pair'], ['decoder', 'decoder'], ['view', 'view'], ['stack', 'stack'], ['theme', 'theme'], ['heatmapMode', 'hmode'], ['modelB', 'modelB'], ['textB', 'textB'], ['ablate', 'ablate'], ['ablateMode', 'amode'], ['deepMeasure', 'deep']];
  for (const [field, key] of strings) {
    const v = st[field];
    if (v === undefined) continue;
    if (typeof v !== 'string') throw new Error(`state.${field}: a string`);
    if (v.length > MAX_TEXT) throw new Error(`state.${field}: at most ${MAX_TEXT} characters`);
    q.set(key, v);
  }
  for (const [field, key] of [['layer', 'layer'], ['head', 'head'], ['igSteps', 'steps'], ['lensK', 'lensk'], ['target', 'target'], ['maxNewTokens', 'gen']] as const) {
    const v = st[field];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 99_999) throw new Error(`state.${field}: an integer from 0 to 99999`);
    q.set(key, String(v));
  }
  for (const [field, key] of [['hideSpecial', 'hide'], ['mergeSubwords', 'merge'], ['prettify', 'pretty'], ['compare', 'compare'], ['signed', 'signed']] as const) {
    const v = st[field];
    if (v === undefined) continue;
    if (typeof v !== 'boolean') throw new Error(`state.${field}: true or false`);
    q.set(key, v ? '1' : '0');
  }
  const state = readUrlState(`?${q.toString()}`);
  const out: SessionFile = { format: SESSION_FORMAT, version: SESSION_VERSION, saved: typeof r.saved === 'string' ? r.saved.slice(0, 40) : '', state };
  const rev = r.revisions;
  if (typeof rev === 'object' && rev !== null) {
    const rv = rev as Record<string, unknown>;
    out.revisions = {};
    if (typeof rv.a === 'string') out.revisions.a = rv.a.slice(0, 200);
    if (typeof rv.b === 'string') out.revisions.b = rv.b.slice(0, 200);
  }
  return out;
}
