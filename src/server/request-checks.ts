/**
 * The checks every JSON request of the API opens with (traces, analysis, exports, comparisons,
 * bias reports): the body is an object holding only the allowed fields, `model` is a string, a
 * text is a string within the server's length limit, the model is one the catalog offers (else a
 * 404). Each refusal is a RequestError with its status and one line naming the field and what is
 * allowed.
 */
import { AttnscopeError } from '../core/errors.js';
import type { ModelCatalog, ModelLocation } from './catalog.js';
import type { ServerLimits } from './protocol.js';

/** A request refused with a status and one line naming the field. */
export class RequestError extends Error {
  constructor(
    readonly status: 400 | 403 | 404 | 413 | 415 | 503,
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

/** A JSON object (not null, not an array). */
export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** An integer number. */
export const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v);

/**
 * The parsed body as an object holding only `fields`; `shape` is what the refusal shows of the
 * expected body, e.g. '{model, text, textPair?}'. An unknown field is named (cut to 40 characters)
 * with the allowed ones.
 */
export function requestBody(body: unknown, fields: ReadonlySet<string>, shape: string): Record<string, unknown> {
  if (!isObject(body)) throw new RequestError(400, `body: a JSON object ${shape}`);
  for (const k of Object.keys(body)) if (!fields.has(k)) throw new RequestError(400, `${k.slice(0, 40)}: unknown field (allowed: ${[...fields].join(', ')})`, k.slice(0, 40));
  return body;
}

/** The `model` field: a string (non-empty where `nonEmpty`). */
export function modelField(value: unknown, nonEmpty = false): string {
  if (typeof value !== 'string' || (nonEmpty && value === '')) throw new RequestError(400, 'model: a string (an id from GET /api/models, or a Hub id)', 'model');
  return value;
}

/** A text no longer than the server's limit: its length over the limit is a 413. */
export function textWithinLimit(field: string, value: string, limits: Pick<ServerLimits, 'maxTextChars'>): string {
  if (value.length > limits.maxTextChars) throw new RequestError(413, `${field}: ${value.length} characters; at most ${limits.maxTextChars} allowed`, field);
  return value;
}

/** A text field: a string within the server's length limit. */
export function textField(field: string, value: unknown, limits: Pick<ServerLimits, 'maxTextChars'>): string {
  if (typeof value !== 'string') throw new RequestError(400, `${field}: a string of at most ${limits.maxTextChars} characters`, field);
  return textWithinLimit(field, value, limits);
}

/** An optional text field: undefined when absent, else as textField. */
export function optionalTextField(field: string, value: unknown, limits: Pick<ServerLimits, 'maxTextChars'>): string | undefined {
  return value === undefined ? undefined : textField(field, value, limits);
}

/** Where the catalog finds a request's model: one it does not offer is a 404 naming the field `model`. */
export async function locateModel(catalog: ModelCatalog, model: string): Promise<ModelLocation> {
  try {
    return await catalog.locate(model);
  } catch (e) {
    if (e instanceof AttnscopeError) throw new RequestError(404, e.message, 'model');
    throw e;
  }
}
