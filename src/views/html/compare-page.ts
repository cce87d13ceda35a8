/**
 * One self-contained HTML file comparing two traces: the browser client (dist/web, the same bundle
 * as the trace views; web/main.ts mounts the comparison when the page carries `attnscope-compare`),
 * a JSON header (names, texts, units, the ranking) and, for the ranked pairs in rank order, A's
 * and B's aligned matrices as exact float32 blobs (deflated, base64), as many as fit `maxBytes`
 * (default 16 MB; always at least the top pair). Pairs beyond that are listed with their numbers
 * but cannot be opened; the page says how many were stored. Same Content-Security-Policy as the
 * trace views: only the page's own script runs, nothing is fetched.
 *
 * Isomorphic: imports nothing from Node (deflate from fflate unless the caller passes a faster one).
 */
import { deflateSync } from 'fflate';
import type { Alignment, Comparison, HeadDifference, Matching } from '../../analysis/compare.js';
import type { Unit } from '../../analysis/words.js';
import type { StackName } from '../../core/trace.js';
import { encodeValues, scriptJson, toBase64 } from './payload.js';
import { type Deflate, type ViewBundle, inlineSafe, pageHead, pagePolicy, sha256Base64 } from './standalone.js';

export const COMPARE_FORMAT = 'attnscope-compare';
export const COMPARE_VERSION = 1;

/** The comparison page's header (the `attnscope-compare` script element). */
export interface ComparePayload {
  format: typeof COMPARE_FORMAT;
  version: typeof COMPARE_VERSION;
  title: string;
  nameA: string;
  nameB: string;
  textA?: string;
  textB?: string;
  theme?: 'light' | 'dark';
  stack: StackName;
  alignment: Alignment;
  matching: Matching;
  note: string;
  rowsA: Unit[];
  colsA: Unit[];
  rowsB: Unit[];
  colsB: Unit[];
  ranking: HeadDifference[];
  /** Pairs stored: ranking[0 … stored − 1]; pair i's A is blob 2i, B blob 2i + 1 (rows × cols float32 each). */
  stored: number;
  blobRawLengths: number[];
}

export interface ComparePageOptions {
  bundle: ViewBundle;
  nameA: string;
  nameB: string;
  textA?: string;
  textB?: string;
  title?: string;
  theme?: 'light' | 'dark';
  /** Size the stored matrices may take (default 16 000 000 bytes of base64). */
  maxBytes?: number;
  deflate?: Deflate;
}

export interface ComparePageResult {
  html: string;
  stored: number;
  total: number;
}

const defaultDeflate: Deflate = (data) => deflateSync(data, { level: 6 });

/** Renders the comparison page. */
export async function renderComparePage(c: Comparison, o: ComparePageOptions): Promise<ComparePageResult> {
  const deflate = o.deflate ?? defaultDeflate;
  const maxBytes = o.maxBytes ?? 16_000_000;
  const blobs: Uint8Array[] = [];
  const raw: number[] = [];
  let size = 0;
  let stored = 0;
  for (const pair of c.ranking) {
    const { a, b } = c.matrices(pair);
    const ea = encodeValues(Float32Array.from(a), { kind: 'f32' });
    const eb = encodeValues(Float32Array.from(b), { kind: 'f32' });
    const da = deflate(ea);
    const db = deflate(eb);
    const bytes = Math.ceil(da.length / 3) * 4 + Math.ceil(db.length / 3) * 4;
    if (stored > 0 && size + bytes > maxBytes) break;
    blobs.push(da, db);
    raw.push(ea.length, eb.length);
    size += bytes;
    stored++;
  }
  const title = o.title ?? `attnscope · ${o.nameA} vs ${o.nameB}`;
  const header: ComparePayload = {
    format: COMPARE_FORMAT,
    version: COMPARE_VERSION,
    title,
    nameA: o.nameA,
    nameB: o.nameB,
    stack: c.stack,
    alignment: c.alignment,
    matching: c.matching,
    note: c.note,
    rowsA: c.rowsA,
    colsA: c.colsA,
    rowsB: c.rowsB,
    colsB: c.colsB,
    ranking: c.ranking,
    stored,
    blobRawLengths: raw,
  };
  if (o.textA !== undefined) header.textA = o.textA;
  if (o.textB !== undefined) header.textB = o.textB;
  if (o.theme) header.theme = o.theme;
  const js = inlineSafe(o.bundle.js, 'script');
  const css = inlineSafe(o.bundle.css, 'style');
  const hash = await sha256Base64(js);
  const parts: string[] = [
    pageHead(pagePolicy(hash), title, css),
    '<div id="attnscope-app"><p class="loading">Loading the comparison…</p><noscript><p>This page needs JavaScript.</p></noscript></div>\n',
    `<script type="application/json" id="attnscope-compare">${scriptJson(header)}</script>\n`,
  ];
  blobs.forEach((b, id) => parts.push(`<script type="application/octet-stream" id="attnscope-blob-${id}">${toBase64(b)}</script>\n`));
  parts.push(`<script>${js}</script>\n</body>\n</html>\n`);
  return { html: parts.join(''), stored, total: c.ranking.length };
}
