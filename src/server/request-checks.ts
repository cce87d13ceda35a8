/**
 * The checks every JSON request of the API opens with (traces, analysis, exports, comparisons,
 * bias reports): the body is an object holding only the allowed fields, `model` is a string, a
 * text is a string within the server's length limit, the model is one the catalog offers (else a
 * 404). Each refusal is a RequestError with its status and one line naming the field and what is
 * allowed.
 */
import { AttnscopeError } from '../core/errors.js';
import type { Token } from '../core/trace.js';
import type { Model } from '../engine/model.js';
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

/**
 * Refuses inputs the model cannot take (traces and analyses): a text (with its pair) past the token
 * limit (413), a decoder text for a model that is not an encoder-decoder (400) or past the limit
 * (413: the decoder's start token takes one position), a text pair for an encoder-decoder (400).
 * The limit is the server's `maxTokens` or the model's positions, whichever is smaller (`why`
 * names which). Returns the text's tokens and the decoder's positions (with its start token).
 */
export async function checkInputTokens(model: Model, req: { text: string; textPair?: string; decoderText?: string }, maxTokens: number): Promise<{ tokens: Token[]; decoderPositions?: number; max: number; why: string }> {
  const max = Math.min(maxTokens, model.info.maxPositions);
  const why = max < maxTokens ? `the model's ${model.info.maxPositions} positions` : `the server's --max-tokens`;
  const tokens = await model.tokenize(req.text, req.textPair).catch((e: unknown) => {
    throw new RequestError(400, `text: ${(e as Error).message}`, 'text');
  });
  if (tokens.length > max) throw new RequestError(413, `${req.textPair !== undefined ? 'text, textPair' : 'text'}: ${tokens.length} tokens; at most ${max} allowed (${why})`, req.textPair !== undefined ? 'textPair' : 'text');
  let decoderPositions: number | undefined;
  if (req.decoderText !== undefined) {
    if (model.info.kind !== 'encoder-decoder') throw new RequestError(400, `decoderText: ${model.name} is not an encoder-decoder model (leave decoderText out)`, 'decoderText');
    const tok = model.tokenizer;
    const decoder = tok?.encodeTarget ? await tok.encodeTarget(req.decoderText) : await model.tokenize(req.decoderText);
    if (decoder.length + 1 > max) throw new RequestError(413, `decoderText: ${decoder.length} tokens; at most ${max - 1} allowed (${why})`, 'decoderText');
    decoderPositions = decoder.length + 1;
  }
  if (req.textPair !== undefined && model.info.kind === 'encoder-decoder') throw new RequestError(400, `textPair: does not apply to an encoder-decoder model (${model.name})`, 'textPair');
  return { tokens, ...(decoderPositions !== undefined ? { decoderPositions } : {}), max, why };
}
