/**
 * Language codes of multilingual translation tokenizers, as transformers' tokenizers use them:
 *
 *   mBART (cc25):            `A </s> en_XX`   the source code last; generation starts the decoder
 *                                             with the target code (decoder_start_token_id)
 *   mBART-50, NLLB, M2M100:  `en_XX A </s>`, `eng_Latn A </s>`, `__en__ A </s>`   the source code
 *                                             first; generation forces the target code as the
 *                                             first generated token (forced_bos_token_id)
 *
 * The code the tokenizer adds is found in tokenizer.json's TemplateProcessing post-processor (a
 * special token shaped like one of the three conventions); the other codes are the added tokens
 * and additional_special_tokens of the same shape. Changing the source language replaces that
 * token at its place in the template, which is what transformers' `src_lang` does
 * (`set_src_lang_special_tokens` rebuilds the template with the new code). Nothing here needs Node.
 */
import { AttnscopeError } from '../core/errors.js';
import { editDistance } from '../core/names.js';

/** The code conventions: mBART / mBART-50 (en_XX), NLLB (eng_Latn), M2M100 (__en__). */
const CODE_SHAPES: readonly RegExp[] = [/^[a-z]{2,3}_[A-Z]{2}$/, /^[a-z]{3}_[A-Z][a-z]{3}$/, /^__[a-z]{2,3}(?:_[A-Za-z]+)?__$/];

/** Where the language code sits among the special tokens the template adds. */
export interface CodePlace {
  /** Index from the start of the encoding (the code is before the text), or from its end (after it; 0 = last). */
  from: 'start' | 'end';
  index: number;
}

export interface LanguageCodes {
  /**
   * Every language code of the tokenizer, in vocabulary order, as transformers' `src_lang` takes
   * them: the token text (en_XX, eng_Latn), or for M2M100 the name inside `__…__` (en for `__en__`).
   */
  readonly codes: readonly string[];
  /** Token id of each code. */
  readonly ids: ReadonlyMap<string, number>;
  /** Token text of each code (`__en__` for M2M100's en). */
  readonly tokens: ReadonlyMap<string, string>;
  /** The code the tokenizer adds by default (tokenizer_config.json's src_lang, else the template's). */
  readonly source: string;
  /** Where the code goes in a single text and in a pair. */
  readonly single: CodePlace;
  readonly pair: CodePlace | null;
  /**
   * How generation selects the target language: 'forced-bos' (the code is the first generated
   * token after decoder_start_token_id: mBART-50, M2M100, NLLB) or 'decoder-start' (the decoder
   * starts with the code: mBART cc25, whose source code comes last).
   */
  readonly targetStyle: 'forced-bos' | 'decoder-start';
}

type Json = Record<string, unknown>;

interface TemplateItem {
  special?: string;
  sequence?: boolean;
}

/** A TemplateProcessing post-processor (alone or inside a Sequence), or null. */
function templateOf(pp: unknown): Json | null {
  if (pp === null || typeof pp !== 'object') return null;
  const p = pp as Json;
  if (p['type'] === 'TemplateProcessing') return p;
  if (p['type'] === 'Sequence' && Array.isArray(p['processors'])) {
    for (const inner of p['processors'] as unknown[]) {
      const t = templateOf(inner);
      if (t) return t;
    }
  }
  return null;
}

function items(raw: unknown): TemplateItem[] {
  if (!Array.isArray(raw)) return [];
  return raw.map((entry) => {
    const e = (entry ?? {}) as Json;
    const special = e['SpecialToken'] as Json | undefined;
    if (special && typeof special['id'] === 'string') return { special: special['id'] };
    return { sequence: e['Sequence'] !== undefined };
  });
}

/** The place of the special token `code` in a template's items (counting the ids each special adds). */
function placeOf(list: TemplateItem[], code: string, idsPerSpecial: (s: string) => number): CodePlace | null {
  const at = list.findIndex((i) => i.special === code);
  if (at < 0) return null;
  const firstSeq = list.findIndex((i) => i.sequence);
  if (firstSeq < 0 || at < firstSeq) {
    let index = 0;
    for (let i = 0; i < at; i++) index += list[i]!.special !== undefined ? idsPerSpecial(list[i]!.special!) : 0;
    return { from: 'start', index };
  }
  const lastSeq = list.map((i) => i.sequence === true).lastIndexOf(true);
  if (at < lastSeq) return null; // between two sequences: not a convention transformers uses
  let index = 0;
  for (let i = list.length - 1; i > at; i--) index += list[i]!.special !== undefined ? idsPerSpecial(list[i]!.special!) : 0;
  return { from: 'end', index };
}

/**
 * The tokenizer's language codes, or undefined when its post-processor adds none.
 * `candidates`: added tokens and additional_special_tokens with their ids (id null: not in the vocabulary).
 */
export function findLanguageCodes(
  postProcessor: unknown,
  candidates: readonly { text: string; id: number | null }[],
  configSrcLang: string | undefined,
): LanguageCodes | undefined {
  const template = templateOf(postProcessor);
  if (!template) return undefined;
  const single = items(template['single']);
  const shape = (text: string): RegExp | undefined => CODE_SHAPES.find((re) => re.test(text));
  const templateCode = single.find((i) => i.special !== undefined && shape(i.special) !== undefined)?.special;
  if (templateCode === undefined) return undefined;
  const re = shape(templateCode)!;
  const name = (text: string): string => /^__.*__$/.test(text) ? text.slice(2, -2) : text;
  const ids = new Map<string, number>();
  const tokens = new Map<string, string>();
  const add = (text: string, id: number): void => {
    if (ids.has(name(text))) return;
    ids.set(name(text), id);
    tokens.set(name(text), text);
  };
  for (const c of candidates) if (c.id !== null && re.test(c.text)) add(c.text, c.id);
  const specials = (template['special_tokens'] ?? {}) as Json;
  const idsPerSpecial = (s: string): number => {
    const entry = specials[s] as Json | undefined;
    return Array.isArray(entry?.['ids']) ? (entry['ids'] as unknown[]).length : 1;
  };
  const templateIds = (specials[templateCode] as Json | undefined)?.['ids'];
  if (Array.isArray(templateIds) && typeof templateIds[0] === 'number') add(templateCode, templateIds[0]);
  const singlePlace = placeOf(single, templateCode, idsPerSpecial);
  if (!singlePlace || ids.size === 0) return undefined;
  const codes = [...ids.keys()].sort((a, b) => ids.get(a)! - ids.get(b)!);
  return {
    codes,
    ids,
    tokens,
    source: configSrcLang !== undefined && ids.has(name(configSrcLang)) ? name(configSrcLang) : name(templateCode),
    single: singlePlace,
    pair: placeOf(items(template['pair']), templateCode, idsPerSpecial),
    targetStyle: singlePlace.from === 'end' ? 'decoder-start' : 'forced-bos',
  };
}

/**
 * The id of language code `code`, or one line naming `option` and the valid codes (all of them
 * when there are at most 30, else their count and the closest ones).
 */
export function languageCodeId(languages: LanguageCodes | undefined, code: string, option: string, owner: string): number {
  if (!languages) {
    throw new AttnscopeError(`${option} ${code}: ${owner} has no language codes (they are for mBART, M2M100 and NLLB tokenizers)`);
  }
  // M2M100's codes are also accepted as their tokens (__en__ for en).
  const id = languages.ids.get(code) ?? (/^__.*__$/.test(code) ? languages.ids.get(code.slice(2, -2)) : undefined);
  if (id !== undefined) return id;
  const { codes } = languages;
  let valid: string;
  if (codes.length <= 30) {
    valid = `valid codes: ${codes.join(', ')}`;
  } else {
    const near = [...codes]
      .map((c) => ({ c, d: editDistance(code.toLowerCase(), c.toLowerCase()) - (c.toLowerCase().includes(code.toLowerCase()) ? codes.length : 0) }))
      .sort((a, b) => a.d - b.d || codes.indexOf(a.c) - codes.indexOf(b.c))
      .slice(0, 6)
      .map((x) => x.c);
    valid = `${codes.length} valid codes, closest: ${near.join(', ')}`;
  }
  throw new AttnscopeError(`${option} '${code}' is not a language code of ${owner} (${valid})`);
}

/** Index in an encoding of `length` tokens of the code at `place`. */
export function codeIndex(place: CodePlace, length: number): number {
  return place.from === 'start' ? place.index : length - 1 - place.index;
}
