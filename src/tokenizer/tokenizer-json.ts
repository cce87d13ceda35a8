/**
 * What attnscope reads from tokenizer.json itself: the added tokens, the post-processor, the
 * model type. Only these small parts are parsed; the vocabulary is left to the Rust loader
 * (and parsed here only to look up a special token that is not an added token).
 */
import { AttnscopeError } from '../core/errors.js';
import { parseValue, scanTopLevel, type TopLevelJson } from './json-scan.js';

const WHAT = 'tokenizer.json';

export interface AddedTokenEntry {
  id: number;
  content: string;
  special: boolean;
}

export interface TokenizerJsonInfo {
  readonly scan: TopLevelJson;
  readonly addedTokens: readonly AddedTokenEntry[];
  readonly postProcessor: unknown;
  /** `model.type` (BPE, WordPiece, Unigram, WordLevel), when the file states it. */
  readonly modelType: string | undefined;
  /** Id of `text`: an added token's, else the model vocabulary's; null if neither has it. */
  idOf(text: string): number | null;
}

export function readTokenizerJson(text: string): TokenizerJsonInfo {
  const scan = scanTopLevel(text, WHAT);
  const modelSpan = scan.spans.get('model');
  if (!modelSpan) throw new AttnscopeError(`${WHAT} has no "model"`);
  const rawAdded = parseValue(scan, 'added_tokens', WHAT) ?? [];
  if (!Array.isArray(rawAdded)) throw new AttnscopeError(`${WHAT}: "added_tokens" is not a list`);
  const addedTokens: AddedTokenEntry[] = [];
  for (const t of rawAdded as unknown[]) {
    if (t === null || typeof t !== 'object') continue;
    const { id, content, special } = t as Record<string, unknown>;
    if (typeof id === 'number' && typeof content === 'string') addedTokens.push({ id, content, special: special === true });
  }
  // Serialized models start with their type: {"type":"BPE", ...}.
  const head = text.slice(modelSpan[0], Math.min(modelSpan[1], modelSpan[0] + 200));
  const modelType = /^\{\s*"type"\s*:\s*"(\w+)"/.exec(head)?.[1];

  let vocab: unknown;
  const idOf = (token: string): number | null => {
    const added = addedTokens.find((t) => t.content === token);
    if (added) return added.id;
    if (vocab === undefined) {
      const model = parseValue(scan, 'model', WHAT);
      vocab = model !== null && typeof model === 'object' ? ((model as Record<string, unknown>)['vocab'] ?? null) : null;
    }
    if (Array.isArray(vocab)) {
      // Unigram: [[piece, score], ...]; the id is the index.
      const i = vocab.findIndex((entry) => Array.isArray(entry) && entry[0] === token);
      return i >= 0 ? i : null;
    }
    if (vocab !== null && typeof vocab === 'object' && Object.hasOwn(vocab, token)) {
      const id = (vocab as Record<string, unknown>)[token];
      if (typeof id === 'number') return id;
    }
    return null;
  };
  return { scan, addedTokens, postProcessor: parseValue(scan, 'post_processor', WHAT), modelType, idOf };
}
