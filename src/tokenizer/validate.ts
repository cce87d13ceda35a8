/**
 * Checks the parts of a tokenizer.json the Rust `tokenizers` binding trusts without checking:
 * where its loader accepts a value that later makes it panic, and a panic in the binding aborts
 * the whole process (exit 134, no message). Each such case found so far is refused here first,
 * with a message naming the field.
 */
import { AttnscopeError, quote } from '../core/errors.js';
import { parseValue } from './json-scan.js';
import { precompiledCharsmapProblem, precompiledCharsmaps } from './precompiled.js';
import type { TokenizerJsonInfo } from './tokenizer-json.js';

const WHAT = 'tokenizer.json';

type Json = Record<string, unknown>;
const isObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * A TemplateProcessing post-processor: every special token its templates name must be defined in
 * its `special_tokens` (the binding looks it up with a panicking index), the single template may
 * only use sequence A (there is no B to index), and each special token needs as many ids as tokens.
 */
function checkTemplate(pp: Json, where: string): void {
  const special = isObject(pp['special_tokens']) ? pp['special_tokens'] : {};
  for (const [name, tok] of Object.entries(special)) {
    if (!isObject(tok)) continue;
    const { ids, tokens } = tok;
    if (Array.isArray(ids) && Array.isArray(tokens) && ids.length !== tokens.length) {
      throw new AttnscopeError(
        `${WHAT}: ${where}.special_tokens[${quote(name)}] has ${ids.length} ids but ${tokens.length} tokens (they must pair up)`,
      );
    }
  }
  for (const key of ['single', 'pair'] as const) {
    const template = pp[key];
    if (!Array.isArray(template)) continue;
    for (const piece of template as unknown[]) {
      if (!isObject(piece)) continue;
      const tok = piece['SpecialToken'];
      if (isObject(tok) && typeof tok['id'] === 'string' && !Object.hasOwn(special, tok['id'])) {
        throw new AttnscopeError(
          `${WHAT}: ${where}.${key} names the special token ${quote(tok['id'])}, which its special_tokens do not define`,
        );
      }
      const seq = piece['Sequence'];
      if (key === 'single' && isObject(seq) && seq['id'] === 'B') {
        throw new AttnscopeError(`${WHAT}: ${where}.single uses sequence B, but a single text has only sequence A`);
      }
    }
  }
}

function checkPostProcessor(pp: unknown, where: string, depth: number): void {
  if (!isObject(pp) || depth > 32) return;
  if (pp['type'] === 'TemplateProcessing') checkTemplate(pp, where);
  if (pp['type'] === 'Sequence' && Array.isArray(pp['processors'])) {
    (pp['processors'] as unknown[]).forEach((inner, i) => checkPostProcessor(inner, `${where}.processors[${i}]`, depth + 1));
  }
}

/**
 * Throws an AttnscopeError naming the field when tokenizer.json holds a value the binding would
 * crash on. `postProcessor: false` skips the post-processor (when attnscope replaces it).
 */
export function validateTokenizerJson(info: TokenizerJsonInfo, options: { postProcessor?: boolean } = {}): void {
  for (const charsmap of precompiledCharsmaps(parseValue(info.scan, 'normalizer', WHAT))) {
    // The binding panics on any Precompiled it cannot read, a missing or non-string charsmap too.
    const problem = typeof charsmap === 'string' ? precompiledCharsmapProblem(charsmap) : `is ${quote(charsmap, 40)}, not a base64 string`;
    if (problem !== null) {
      throw new AttnscopeError(`${WHAT}: the Precompiled normalizer's precompiled_charsmap ${problem} (the file is damaged)`);
    }
  }
  if (options.postProcessor !== false) checkPostProcessor(info.postProcessor, 'post_processor', 0);
}
