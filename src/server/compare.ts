/**
 * The comparison page of the app's compare mode (POST /api/compare-page): both sides traced as
 * the CLI traces them (exports.ts), compared by compareTraces and written by renderComparePage —
 * the page `attnscope compare A B --html page.html` writes (the same text on both sides is the
 * text words are aligned through, for models with different tokenisers).
 */
import { deflateRawSync } from 'node:zlib';
import { compareTraces } from '../analysis/compare.js';
import { AttnscopeError } from '../core/errors.js';
import { loadViewBundle } from '../views/html/bundle-node.js';
import { renderComparePage } from '../views/html/compare-page.js';
import type { ModelCatalog } from './catalog.js';
import { type ExportFile, traceForExport } from './exports.js';
import type { ModelPool } from './pool.js';
import type { ServerLimits } from './protocol.js';
import { RequestError, requestBody } from './request-checks.js';
import { validateTraceRequest } from './traces.js';

export interface ComparePageRequest {
  a: ReturnType<typeof validateTraceRequest>;
  b: ReturnType<typeof validateTraceRequest>;
  theme?: 'light' | 'dark';
}

const FIELDS = new Set(['a', 'b', 'theme']);

/** Checks {a: {model, text, textPair?, decoderText?}, b: {…}, theme?}; errors name the field (a.text, b.model, …). */
export function validateComparePageRequest(body: unknown, limits: ServerLimits): ComparePageRequest {
  const b = requestBody(body, FIELDS, '{a: {model, text, …}, b: {model, text, …}, theme?}');
  const side = (name: 'a' | 'b') => {
    try {
      return validateTraceRequest(b[name], limits);
    } catch (e) {
      if (e instanceof RequestError) throw new RequestError(e.status, `${name}.${e.message}`, e.field ? `${name}.${e.field}` : name);
      throw e;
    }
  };
  const out: ComparePageRequest = { a: side('a'), b: side('b') };
  if (b.theme !== undefined) {
    if (b.theme !== 'light' && b.theme !== 'dark') throw new RequestError(400, 'theme: light or dark', 'theme');
    out.theme = b.theme;
  }
  return out;
}

export async function comparePageFile(catalog: ModelCatalog, pool: ModelPool, req: ComparePageRequest, limits: ServerLimits, signal?: AbortSignal): Promise<ExportFile> {
  const a = await traceForExport(catalog, pool, req.a, limits, signal);
  const b = await traceForExport(catalog, pool, req.b, limits, signal);
  const sameText = req.a.text === req.b.text;
  let c;
  try {
    c = compareTraces(a, b, sameText ? { text: req.a.text } : {});
  } catch (e) {
    if (e instanceof AttnscopeError) throw new RequestError(400, `compare: ${e.message}`, 'b.text');
    throw e;
  }
  let nameA = a.model.name;
  let nameB = b.model.name;
  if (nameA === nameB) {
    nameA = `${nameA} (A)`;
    nameB = `${nameB} (B)`;
  }
  const page = await renderComparePage(c, {
    bundle: await loadViewBundle(),
    nameA,
    nameB,
    textA: req.a.text,
    ...(sameText ? {} : { textB: req.b.text }),
    ...(req.theme ? { theme: req.theme } : {}),
    deflate: (d) => deflateRawSync(d, { level: 6 }),
  });
  const base = `attnscope-compare-${nameA}-vs-${nameB}`.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 120);
  return { bytes: new TextEncoder().encode(page.html), contentType: 'text/html; charset=utf-8', filename: `${base}.html` };
}
