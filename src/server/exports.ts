/**
 * Exports of the app's current state (POST /api/export): the standalone HTML page (the code of
 * `attnscope view --out page.html`: renderStandaloneHtml on the model's trace, opening on the
 * view and theme the app shows) and the trace file (`.safetensors` or JSON, the writers of
 * `attnscope trace --out`). The trace is made as the CLI makes it (Model.trace with queries and
 * keys, and the top-5 predictions where the model predicts), so a page exported from the app is
 * the page the command line writes for the same input.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import { AttnscopeError } from '../core/errors.js';
import type { Trace } from '../core/trace.js';
import { writeTraceFile } from '../io/trace-file.js';
import { loadViewBundle } from '../views/html/bundle-node.js';
import { renderStandaloneHtml } from '../views/html/standalone.js';
import { VIEW_NAMES } from '../views/layout/common.js';
import type { ModelCatalog } from './catalog.js';
import type { ModelPool } from './pool.js';
import type { ServerLimits } from './protocol.js';
import { locateModel, RequestError, requestBody } from './request-checks.js';
import { validateTraceRequest } from './traces.js';

export type ExportFormat = 'html' | 'json' | 'safetensors';
const FORMATS: readonly ExportFormat[] = ['html', 'json', 'safetensors'];
const FIELDS = new Set(['model', 'text', 'textPair', 'decoderText', 'format', 'view', 'theme']);

export interface ExportRequest {
  trace: ReturnType<typeof validateTraceRequest>;
  format: ExportFormat;
  view?: (typeof VIEW_NAMES)[number];
  theme?: 'light' | 'dark';
}

/** Checks a parsed body: {model, text, textPair?, decoderText?, format, view?, theme?}. */
export function validateExportRequest(body: unknown, limits: ServerLimits): ExportRequest {
  const b = requestBody(body, FIELDS, '{model, text, textPair?, decoderText?, format, view?, theme?}');
  const { format, view, theme, ...rest } = b;
  if (typeof format !== 'string' || !(FORMATS as readonly string[]).includes(format)) throw new RequestError(400, `format: one of ${FORMATS.join(', ')}`, 'format');
  const out: ExportRequest = { trace: validateTraceRequest(rest, limits), format: format as ExportFormat };
  if (view !== undefined) {
    if (typeof view !== 'string' || !(VIEW_NAMES as readonly string[]).includes(view)) throw new RequestError(400, `view: one of ${VIEW_NAMES.join(', ')}`, 'view');
    out.view = view as ExportRequest['view'];
  }
  if (theme !== undefined) {
    if (theme !== 'light' && theme !== 'dark') throw new RequestError(400, 'theme: light or dark', 'theme');
    out.theme = theme;
  }
  return out;
}

export interface ExportFile {
  bytes: Uint8Array;
  contentType: string;
  filename: string;
}

function fileBase(trace: Trace): string {
  return `attnscope-${trace.model.name}`.replace(/[^A-Za-z0-9._-]+/g, '_').slice(0, 120);
}

/** The trace of a validated request, made as the CLI makes it (q/k, top-5 predictions where the model predicts). */
export async function traceForExport(catalog: ModelCatalog, pool: ModelPool, t: ExportRequest['trace'], limits: ServerLimits, signal?: AbortSignal): Promise<Trace> {
  const location = await locateModel(catalog, t.model);
  const lease = await pool.acquire(location, undefined, signal);
  try {
    const model = lease.model;
    const tokens = await model.tokenize(t.text, t.textPair).catch((e: unknown) => {
      throw new RequestError(400, `text: ${(e as Error).message}`, 'text');
    });
    const max = Math.min(limits.maxTokens, model.info.maxPositions);
    if (tokens.length > max) throw new RequestError(413, `text: ${tokens.length} tokens; at most ${max} allowed`, 'text');
    // Masked LMs predict at mask tokens only; causal LMs at every position.
    const mask = model.tokenizer?.mask;
    const predicts = model.info.kind !== 'encoder' || (mask !== undefined && mask.id !== null && tokens.some((x) => x.id === mask.id));
    try {
      return await model.trace(t.text, {
        ...(t.textPair !== undefined ? { pair: t.textPair } : {}),
        ...(t.decoderText !== undefined ? { decoderText: t.decoderText } : {}),
        ...(t.maxNewTokens !== undefined && t.decoderText === undefined ? { maxNewTokens: t.maxNewTokens } : {}),
        qk: true,
        ...(predicts ? { topK: 5 } : {}),
      });
    } catch (e) {
      if (e instanceof AttnscopeError) throw new RequestError(400, e.message, 'text');
      throw e;
    }
  } finally {
    lease.release();
  }
}

/** Traces the request as the CLI does and returns the file asked for. */
export async function exportFile(catalog: ModelCatalog, pool: ModelPool, req: ExportRequest, limits: ServerLimits, signal?: AbortSignal): Promise<ExportFile> {
  const { trace: t } = req;
  const trace = await traceForExport(catalog, pool, t, limits, signal);
  const base = fileBase(trace);
  if (req.format === 'html') {
    const text = t.textPair !== undefined ? `${t.text} | ${t.textPair}` : t.text;
    const page = await renderStandaloneHtml(trace, {
      bundle: await loadViewBundle(),
      text,
      ...(req.view ? { view: req.view } : {}),
      ...(req.theme ? { theme: req.theme } : {}),
      deflate: (data) => deflateRawSync(data, { level: 6 }),
    });
    return { bytes: new TextEncoder().encode(page.html), contentType: 'text/html; charset=utf-8', filename: `${base}.html` };
  }
  // The trace writers write files: through a private temporary folder, removed at once.
  const dir = await mkdtemp(join(tmpdir(), 'attnscope-export-'));
  try {
    const file = join(dir, `trace.${req.format}`);
    await writeTraceFile(file, trace);
    const bytes = new Uint8Array(await readFile(file));
    return { bytes, contentType: req.format === 'json' ? 'application/json' : 'application/octet-stream', filename: `${base}.${req.format}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
