/**
 * One self-contained HTML file with the four interactive views of a Trace: the browser client
 * (dist/web, built from web/), its stylesheet, a JSON header and the tensors as compressed binary
 * blobs, all inline. No network: no CDN, no web fonts, and a Content-Security-Policy that lets
 * only the page's own script run (also as a blob: Worker, for attention flow) and forbids every fetch.
 *
 * Precision: the writer keeps values exact (float32) when the file fits `maxBytes` (default 8 MB),
 * and otherwise steps down a ladder — attention to 5 decimals, then queries/keys to 4, 3, 2
 * decimals — picking the most precise combination that fits (see payload.ts). Stored decimals
 * are what the page prints, so a printed number equals the trace's value at that precision.
 *
 * Isomorphic: imports nothing from Node (deflate from fflate unless the caller passes a faster one).
 */
import { deflateSync } from 'fflate';
import { scoresWithoutPositionBias } from '../../core/position-bias.js';
import type { LayerStack, ScoreTerms, StackName, Token, Trace } from '../../core/trace.js';
import { escapeHtml } from '../tokens.js';
import type { ViewName } from '../layout/common.js';
import type { AnalysisViewData, AnalysisViewName } from '../layout/analysis-views.js';
import { analysisViewData } from '../analysis-data.js';
import { scoreChecks } from '../../analysis/neuron.js';
import {
  type AttentionLevel,
  type Encoding,
  PAYLOAD_FORMAT,
  PAYLOAD_VERSION,
  type PayloadHeader,
  type PayloadScoreTerms,
  type PayloadTensor,
  type QkLevel,
  type TensorKind,
  attentionEncoding,
  encodeValues,
  qkEncoding,
  scriptJson,
  toBase64,
} from './payload.js';

/** The browser client, as built by scripts/build-web.mjs. */
export interface ViewBundle {
  js: string;
  css: string;
}

export type Deflate = (data: Uint8Array) => Uint8Array;

export interface StandaloneOptions {
  bundle: ViewBundle;
  /** Page title (default: model name and text). */
  title?: string;
  /** The text that was traced, or the prompt of a generation (shown in the page header). */
  text?: string;
  /** Largest file size in bytes the precision ladder aims for (default 8 000 000). */
  maxBytes?: number;
  /** 'exact' keeps every value as float32 whatever the size. */
  precision?: 'auto' | 'exact';
  /**
   * Data of the saliency, head-importance, ablation and logit-lens views, over what the trace holds
   * (its attributions and logit lens are read by default; an ablation run is only given here).
   */
  analysis?: AnalysisViewData;
  /** View and theme the page opens with. */
  view?: ViewName | AnalysisViewName;
  theme?: 'light' | 'dark';
  /** Raw deflate (default fflate level 6; Node callers may pass zlib's). */
  deflate?: Deflate;
}

export interface StandaloneResult {
  html: string;
  /** Size of the HTML in bytes (UTF-8). */
  bytes: number;
  precision: PayloadHeader['precision'];
  /** Bytes of each part inside the HTML. */
  parts: { code: number; header: number; attention: number; qk: number };
}

export const DEFAULT_MAX_BYTES = 8_000_000;

const ATTENTION_LADDER: readonly AttentionLevel[] = ['f32', 'fixed5', 'fixed4'];
const QK_LADDER: readonly QkLevel[] = ['f32', 'fixed4', 'fixed3', 'fixed2'];

/** (attention, q/k) precision pairs, most precise first. */
function ladder(hasQk: boolean): [AttentionLevel, QkLevel | null][] {
  if (!hasQk) return ATTENTION_LADDER.map((a) => [a, null]);
  return [
    ['f32', 'f32'],
    ['fixed5', 'f32'],
    ['fixed5', 'fixed4'],
    ['fixed5', 'fixed3'],
    ['fixed5', 'fixed2'],
    ['fixed4', 'fixed2'],
  ];
}

const defaultDeflate: Deflate = (data) => deflateSync(data, { level: 6 });

function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

/** Keeps inline code from ending its element early (`</script`, `</style`, `<!--`). */
export function inlineSafe(code: string, tag: 'script' | 'style'): string {
  const re = tag === 'script' ? /<(\/script|!--)/gi : /<\/style/gi;
  return code.replace(re, (m) => (tag === 'script' ? `<\\${m.slice(1)}` : '<\\/style'));
}

interface TensorSource {
  kind: TensorKind;
  stack: StackName;
  dims: [number, number, number];
  layers: readonly Float32Array[];
}

function tensorSources(trace: Trace): TensorSource[] {
  const out: TensorSource[] = [];
  // Score biases before queries and keys: the page has a stack's score terms once it has its queries.
  for (const kind of ['attention', 'scoreBias', 'queries', 'keys'] as const) {
    const map = kind === 'scoreBias' ? scoreBiases(trace) : trace[kind];
    if (!map) continue;
    for (const stack of ['self', 'encoder', 'decoder', 'cross'] as const) {
      const s = map[stack];
      if (s) out.push({ kind, stack, dims: [s.dims[0], s.dims[1], s.dims[2]], layers: s.layers });
    }
  }
  return out;
}

function scoreBiases(trace: Trace): Partial<Record<StackName, LayerStack>> {
  const out: Partial<Record<StackName, LayerStack>> = {};
  // The page reads dense or broadcast biases: a relative one (T5) travels expanded.
  for (const [stack, terms] of Object.entries(scoresWithoutPositionBias(trace.scores ?? {})) as [StackName, ScoreTerms][]) if (terms.bias) out[stack] = terms.bias;
  return out;
}

/** The trace's score terms for the page header (the biases travel as `scoreBias` tensors). */
function headerScores(trace: Trace): Partial<Record<StackName, PayloadScoreTerms>> | undefined {
  if (!trace.scores) return undefined;
  const out: Partial<Record<StackName, PayloadScoreTerms>> = {};
  for (const [stack, terms] of Object.entries(trace.scores) as [StackName, ScoreTerms][]) {
    const { bias, positionBias, ...rest } = terms;
    out[stack] = { ...rest, hasBias: bias !== undefined || positionBias !== undefined };
  }
  return out;
}

function maxAbs(layers: readonly Float32Array[]): number {
  let m = 0;
  for (const l of layers) for (let i = 0; i < l.length; i++) m = Math.max(m, Math.abs(l[i]!));
  return m;
}

/** Encoding of one tensor at a precision pair. */
function encodingFor(t: TensorSource, attention: AttentionLevel, qk: QkLevel | null, maxAbsCache: Map<TensorSource, number>): Encoding {
  if (t.kind === 'attention') return attentionEncoding(attention);
  // The score bias stays exact: the neuron view adds it to the scores as the model did.
  if (t.kind === 'scoreBias') return { kind: 'f32' };
  let m = maxAbsCache.get(t);
  if (m === undefined) {
    m = maxAbs(t.layers);
    maxAbsCache.set(t, m);
  }
  return qkEncoding(qk ?? 'f32', m);
}

/** Token objects as the page gets them (all own fields, so later flags such as `generated` pass through). */
function pageTokens(tokens: readonly Token[]): Token[] {
  return tokens.map((t) => ({ ...t }));
}

function defaultTitle(trace: Trace, text: string | undefined): string {
  const t = text && text.length > 60 ? `${text.slice(0, 57)}…` : text;
  return `attnscope · ${trace.model.name}${t ? ` · “${t}”` : ''}`;
}

/**
 * The opening of every page attnscope writes, up to `<body>`: the Content-Security-Policy (only
 * ASCII keywords and a base64 hash: no escaping needed inside the double quotes), the title
 * (escaped) and the inline style sheet.
 */
export function pageHead(csp: readonly string[], title: string, css: string): string {
  return [
    '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
    `<meta http-equiv="Content-Security-Policy" content="${csp.join('; ')}">\n`,
    '<meta name="viewport" content="width=device-width, initial-scale=1">\n',
    '<meta name="generator" content="attnscope">\n',
    `<title>${escapeHtml(title)}</title>\n`,
    `<style>${css}</style>\n</head>\n<body>\n`,
  ].join('');
}

/** The policy of a page whose one script has SHA-256 `hash` and that loads nothing from anywhere. */
export function pagePolicy(hash: string, extra: { script?: string; worker?: boolean } = {}): string[] {
  return [
    "default-src 'none'",
    `script-src 'sha256-${hash}'${extra.script ? ` ${extra.script}` : ''}`,
    ...(extra.worker ? ['worker-src blob:'] : []),
    "style-src 'unsafe-inline'",
    'img-src data: blob:',
    'connect-src data: blob:',
    "base-uri 'none'",
    "form-action 'none'",
  ];
}

/** SHA-256 of a text, base64 (for the CSP's script hash). */
export async function sha256Base64(text: string): Promise<string> {
  const digest = await globalThis.crypto.subtle.digest('SHA-256', new TextEncoder().encode(text));
  return toBase64(new Uint8Array(digest));
}

/** Compressed blobs of a tensor at an encoding (one per layer). */
function compressTensor(t: TensorSource, enc: Encoding, deflate: Deflate, layers: readonly number[] = t.layers.map((_, i) => i)): { blobs: Uint8Array[]; raw: number[] } {
  const blobs: Uint8Array[] = [];
  const raw: number[] = [];
  // Layers that share one array (a shared score bias) share one blob.
  const done = new Map<Float32Array, number>();
  for (const l of layers) {
    const seen = done.get(t.layers[l]!);
    if (seen !== undefined) {
      raw.push(raw[seen]!);
      blobs.push(blobs[seen]!);
      continue;
    }
    done.set(t.layers[l]!, blobs.length);
    const bytes = encodeValues(t.layers[l]!, enc);
    raw.push(bytes.length);
    blobs.push(deflate(bytes));
  }
  return { blobs, raw };
}

const base64Length = (n: number) => Math.ceil(n / 3) * 4;

/** Renders the standalone HTML page of a trace. */
export async function renderStandaloneHtml(trace: Trace, options: StandaloneOptions): Promise<StandaloneResult> {
  const deflate = options.deflate ?? defaultDeflate;
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_BYTES;
  const sources = tensorSources(trace);
  const hasQk = sources.some((s) => s.kind !== 'attention');
  const maxAbsCache = new Map<TensorSource, number>();
  const js = inlineSafe(options.bundle.js, 'script');
  const css = inlineSafe(options.bundle.css, 'style');
  const title = options.title ?? defaultTitle(trace, options.text);
  const facts = scoreChecks(trace);
  const scores = headerScores(trace);
  const analysis: AnalysisViewData = { ...analysisViewData(trace), ...options.analysis };

  const headerFor = (attention: AttentionLevel, qk: QkLevel | null, tensors: PayloadTensor[], raw: number[]): PayloadHeader => {
    const header: PayloadHeader = {
      format: PAYLOAD_FORMAT,
      version: PAYLOAD_VERSION,
      model: trace.model,
      tokens: pageTokens(trace.tokens),
      tensors,
      blobRawLengths: raw,
      precision: { attention, qk },
      stacks: facts,
      title,
    };
    if (scores) header.scores = scores;
    if (trace.decoderTokens) header.decoderTokens = pageTokens(trace.decoderTokens);
    if (trace.generation) header.generation = trace.generation;
    if (trace.predictions?.length) header.predictions = trace.predictions;
    if (Object.keys(analysis).length > 0) header.analysis = analysis;
    if (options.text !== undefined) header.text = options.text;
    if (options.view) header.view = options.view;
    if (options.theme) header.theme = options.theme;
    return header;
  };

  // Pick the precision: estimate each candidate from a sample of layers, then check the real size.
  // A trace without attention (computed on demand from q/k in the page) keeps q/k exact: rounded q/k would change every weight.
  const onDemand = !sources.some((s) => s.kind === 'attention');
  const candidates: [AttentionLevel, QkLevel | null][] = options.precision === 'exact' || onDemand ? [['f32', hasQk ? 'f32' : null]] : ladder(hasQk);
  const fixedBytes = utf8Length(js) + utf8Length(css) + utf8Length(scriptJson(headerFor('f32', null, [], []))) + 2048;
  const sampleCache = new Map<string, number>();
  const estimate = (t: TensorSource, enc: Encoding): number => {
    const key = `${sources.indexOf(t)}:${JSON.stringify(enc)}`;
    let v = sampleCache.get(key);
    if (v === undefined) {
      const n = t.layers.length;
      const sample = n <= 2 ? t.layers.map((_, i) => i) : [Math.floor(n / 3), Math.floor((2 * n) / 3)];
      const { blobs } = compressTensor(t, enc, deflate, sample);
      const bytes = blobs.reduce((s, b) => s + b.length, 0);
      v = (bytes / sample.length) * n;
      sampleCache.set(key, v);
    }
    return v;
  };
  const hash = await sha256Base64(js);
  let start = 0;
  // Lossless values take at most ~4 bytes each (plus deflate's few bytes per block): no estimate needed when that fits.
  const rawUpper = sources.reduce((s, t) => s + t.layers.length * (t.layers[0]!.length * 4 * 1.001 + 64), 0);
  if (candidates.length > 1 && base64Length(rawUpper) + fixedBytes > maxBytes) {
    start = candidates.length - 1;
    const fits = (i: number) => {
      const [a, q] = candidates[i]!;
      let total = fixedBytes;
      for (const t of sources) total += base64Length(estimate(t, encodingFor(t, a, q, maxAbsCache))) + 80 * t.layers.length;
      return total <= maxBytes * 0.98;
    };
    // When even the smallest encoding does not fit, take it without trying the others.
    for (let i = 0; i < candidates.length && fits(candidates.length - 1); i++) {
      if (fits(i)) {
        start = i;
        break;
      }
    }
  }

  for (let i = start; ; i++) {
    const [attention, qk] = candidates[i]!;
    const tensors: PayloadTensor[] = [];
    const blobs: Uint8Array[] = [];
    const raw: number[] = [];
    let attentionBytes = 0;
    let qkBytes = 0;
    for (const t of sources) {
      const enc = encodingFor(t, attention, qk, maxAbsCache);
      const c = compressTensor(t, enc, deflate);
      const ids: number[] = [];
      let size = 0;
      c.blobs.forEach((b, j) => {
        // A blob shared by several layers (compressTensor) is written once.
        const shared = c.blobs.indexOf(b);
        if (shared < j) {
          ids.push(ids[shared]!);
          return;
        }
        blobs.push(b);
        raw.push(c.raw[j]!);
        ids.push(blobs.length - 1);
        size += base64Length(b.length);
      });
      if (t.kind === 'attention') attentionBytes += size;
      else qkBytes += size;
      tensors.push({ kind: t.kind, stack: t.stack, dims: t.dims, encoding: enc, blobs: ids });
    }
    const header = headerFor(attention, qk, tensors, raw);
    const headerJson = scriptJson(header);
    // 'wasm-unsafe-eval': WebAssembly compilation only (no eval of script text), for the head-metrics
    // kernel (src/analysis/wasm/); worker-src blob:: attention flow runs in a Worker started from a
    // blob: URL holding this same script (web/flow-worker.ts).
    const csp = pagePolicy(hash, { script: "'wasm-unsafe-eval'", worker: true });
    const parts: string[] = [
      pageHead(csp, title, css),
      '<div id="attnscope-app"><p class="loading">Loading the views…</p><noscript><p>These views need JavaScript.</p></noscript></div>\n',
      `<script type="application/json" id="attnscope-header">${headerJson}</script>\n`,
    ];
    blobs.forEach((b, id) => parts.push(`<script type="application/octet-stream" id="attnscope-blob-${id}">${toBase64(b)}</script>\n`));
    parts.push(`<script>${js}</script>\n</body>\n</html>\n`);
    const html = parts.join('');
    const bytes = utf8Length(html);
    if (bytes <= maxBytes || i === candidates.length - 1) {
      return {
        html,
        bytes,
        precision: header.precision,
        parts: { code: utf8Length(js) + utf8Length(css), header: utf8Length(headerJson), attention: attentionBytes, qk: qkBytes },
      };
    }
  }
}
