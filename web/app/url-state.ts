/** The app's state in the URL's query string, so that a link reopens what was on screen. */
import type { StackName } from '../../src/core/trace.js';

export interface UrlState {
  model?: string;
  text?: string;
  pair?: string;
  decoder?: string;
  view?: string;
  stack?: StackName;
  layer?: number;
  head?: number;
}

const STACKS: readonly StackName[] = ['self', 'encoder', 'decoder', 'cross'];
/** Longest text kept from a URL (the server refuses longer ones anyway). */
const MAX_TEXT = 20_000;

function int(v: string | null): number | undefined {
  if (v === null || !/^\d{1,5}$/.test(v)) return undefined;
  return Number(v);
}

export function readUrlState(search: string): UrlState {
  const q = new URLSearchParams(search);
  const out: UrlState = {};
  const str = (k: string) => {
    const v = q.get(k);
    return v === null ? undefined : v.slice(0, MAX_TEXT);
  };
  const model = str('model');
  if (model) out.model = model.slice(0, 300);
  const text = str('text');
  if (text !== undefined) out.text = text;
  const pair = str('pair');
  if (pair !== undefined) out.pair = pair;
  const decoder = str('decoder');
  if (decoder !== undefined) out.decoder = decoder;
  const view = str('view');
  if (view && /^[a-z]{1,20}$/.test(view)) out.view = view;
  const stack = q.get('stack');
  if (stack && (STACKS as readonly string[]).includes(stack)) out.stack = stack as StackName;
  const layer = int(q.get('layer'));
  if (layer !== undefined) out.layer = layer;
  const head = int(q.get('head'));
  if (head !== undefined) out.head = head;
  return out;
}

export function writeUrlState(s: UrlState): string {
  const q = new URLSearchParams();
  if (s.model) q.set('model', s.model);
  if (s.text !== undefined) q.set('text', s.text);
  if (s.pair !== undefined) q.set('pair', s.pair);
  if (s.decoder !== undefined && s.decoder !== '') q.set('decoder', s.decoder);
  if (s.view) q.set('view', s.view);
  if (s.stack && s.stack !== 'self') q.set('stack', s.stack);
  if (s.layer !== undefined) q.set('layer', String(s.layer));
  if (s.head !== undefined) q.set('head', String(s.head));
  const out = q.toString();
  return out ? `?${out}` : '';
}
