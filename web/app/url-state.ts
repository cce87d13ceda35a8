/**
 * The app's state in the URL's query string, so that a link reopens what was on screen: the
 * model and texts, the view, stack, layer and head, the display options, and the compare state
 * (a second model and/or text). A session file (session.ts) holds the same state.
 */
import type { StackName } from '../../src/core/trace.js';

export type HeatmapModeName = 'head' | 'mean' | 'max' | 'all';

export interface UrlState {
  model?: string;
  text?: string;
  pair?: string;
  decoder?: string;
  /** Encoder-decoder models without a decoder text: tokens to generate (absent: the server's default). */
  maxNewTokens?: number;
  view?: string;
  stack?: StackName;
  layer?: number;
  head?: number;
  /** Display options (absent: the defaults). */
  theme?: 'light' | 'dark';
  hideSpecial?: boolean;
  mergeSubwords?: boolean;
  /** False: tokens as the tokenizer writes them. */
  prettify?: boolean;
  heatmapMode?: HeatmapModeName;
  /** Compare mode: B's model (absent: A's) and B's text (absent: A's). */
  compare?: boolean;
  modelB?: string;
  textB?: string;
  /** Analysis views' options (analysis-host.ts; absent: the defaults). Saliency: integrated gradients' steps. */
  igSteps?: number;
  /** Saliency, head importance, ablation: the position whose prediction is the target (absent: the last; masked LMs the first mask). */
  target?: number;
  /** Head importance: signed ∂T/∂g. */
  signed?: boolean;
  /** Ablation: the heads removed ("0:1,2:3", "4:*"); absent: the selected head. */
  ablate?: string;
  ablateMode?: 'mean';
  /** Logit lens: top tokens per cell. */
  lensK?: number;
  /** Deep dive: absolute norms instead of relative ones. */
  deepMeasure?: 'norm';
}

const STACKS: readonly StackName[] = ['self', 'encoder', 'decoder', 'cross'];
const MODES: readonly HeatmapModeName[] = ['head', 'mean', 'max', 'all'];
/** Longest text kept from a URL (the server refuses longer ones anyway). */
export const MAX_TEXT = 20_000;
const MAX_MODEL = 300;

function int(v: string | null): number | undefined {
  if (v === null || !/^\d{1,5}$/.test(v)) return undefined;
  return Number(v);
}

function flag(v: string | null): boolean | undefined {
  return v === '1' ? true : v === '0' ? false : undefined;
}

export function readUrlState(search: string): UrlState {
  const q = new URLSearchParams(search);
  const out: UrlState = {};
  const str = (k: string) => {
    const v = q.get(k);
    return v === null ? undefined : v.slice(0, MAX_TEXT);
  };
  const model = str('model');
  if (model) out.model = model.slice(0, MAX_MODEL);
  const text = str('text');
  if (text !== undefined) out.text = text;
  const pair = str('pair');
  if (pair !== undefined) out.pair = pair;
  const decoder = str('decoder');
  if (decoder !== undefined) out.decoder = decoder;
  const gen = int(q.get('gen'));
  if (gen !== undefined && gen >= 1) out.maxNewTokens = gen;
  const view = str('view');
  if (view && /^[a-z]{1,20}$/.test(view)) out.view = view;
  const stack = q.get('stack');
  if (stack && (STACKS as readonly string[]).includes(stack)) out.stack = stack as StackName;
  const layer = int(q.get('layer'));
  if (layer !== undefined) out.layer = layer;
  const head = int(q.get('head'));
  if (head !== undefined) out.head = head;
  const theme = q.get('theme');
  if (theme === 'light' || theme === 'dark') out.theme = theme;
  const hide = flag(q.get('hide'));
  if (hide !== undefined) out.hideSpecial = hide;
  const merge = flag(q.get('merge'));
  if (merge !== undefined) out.mergeSubwords = merge;
  const pretty = flag(q.get('pretty'));
  if (pretty !== undefined) out.prettify = pretty;
  const mode = q.get('hmode');
  if (mode && (MODES as readonly string[]).includes(mode)) out.heatmapMode = mode as HeatmapModeName;
  const steps = int(q.get('steps'));
  if (steps !== undefined && steps >= 1 && steps <= 256) out.igSteps = steps;
  const target = int(q.get('target'));
  if (target !== undefined) out.target = target;
  if (q.get('signed') === '1') out.signed = true;
  const ablate = q.get('ablate');
  if (ablate && /^[\d:*, ]{1,400}$/.test(ablate)) out.ablate = ablate;
  if (q.get('amode') === 'mean') out.ablateMode = 'mean';
  const lensK = int(q.get('lensk'));
  if (lensK !== undefined && lensK >= 1 && lensK <= 20) out.lensK = lensK;
  if (q.get('deep') === 'norm') out.deepMeasure = 'norm';
  if (q.get('compare') === '1') {
    out.compare = true;
    const modelB = str('modelB');
    if (modelB) out.modelB = modelB.slice(0, MAX_MODEL);
    const textB = str('textB');
    if (textB !== undefined) out.textB = textB;
  }
  return out;
}

export function writeUrlState(s: UrlState): string {
  const q = new URLSearchParams();
  if (s.model) q.set('model', s.model);
  if (s.text !== undefined) q.set('text', s.text);
  if (s.pair !== undefined) q.set('pair', s.pair);
  if (s.decoder !== undefined && s.decoder !== '') q.set('decoder', s.decoder);
  if (s.maxNewTokens !== undefined) q.set('gen', String(s.maxNewTokens));
  if (s.view) q.set('view', s.view);
  if (s.stack && s.stack !== 'self') q.set('stack', s.stack);
  if (s.layer !== undefined) q.set('layer', String(s.layer));
  if (s.head !== undefined) q.set('head', String(s.head));
  if (s.theme) q.set('theme', s.theme);
  if (s.hideSpecial) q.set('hide', '1');
  if (s.mergeSubwords) q.set('merge', '1');
  if (s.prettify === false) q.set('pretty', '0');
  if (s.heatmapMode && s.heatmapMode !== 'head') q.set('hmode', s.heatmapMode);
  if (s.igSteps !== undefined) q.set('steps', String(s.igSteps));
  if (s.target !== undefined) q.set('target', String(s.target));
  if (s.signed) q.set('signed', '1');
  if (s.ablate) q.set('ablate', s.ablate);
  if (s.ablateMode) q.set('amode', s.ablateMode);
  if (s.lensK !== undefined) q.set('lensk', String(s.lensK));
  if (s.deepMeasure) q.set('deep', s.deepMeasure);
  if (s.compare) {
    q.set('compare', '1');
    if (s.modelB) q.set('modelB', s.modelB);
    if (s.textB !== undefined) q.set('textB', s.textB);
  }
  const out = q.toString();
  return out ? `?${out}` : '';
}
