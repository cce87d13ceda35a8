/**
 * The tokenizer layer: a Hugging Face tokenizer.json run by the official `tokenizers` binding
 * (Rust), wrapped to produce attnscope Tokens exactly as transformers' fast tokenizers encode.
 */
import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import { Tokenizer, type Decoder, type Encoding, type TruncationStrategy } from 'tokenizers';
import { AttnscopeError, sanitize } from '../core/errors.js';
import type { Token } from '../core/trace.js';
import { tokensOfEncoding } from './encoding-tokens.js';
import { codeIndex, findLanguageCodes, languageCodeId, type LanguageCodes } from './language-codes.js';
import { prepareTokenizerJson, type TemplateFlags } from './post-processor.js';
import { convertSentencePiece } from './sentencepiece-convert.js';
import { targetEncoder, type TargetEncoder, type TargetSideSources } from './target-tokenizer.js';
import { readTokenizerJson } from './tokenizer-json.js';
import { validateTokenizerJson } from './validate.js';
import {
  SPECIAL_TOKEN_ROLES,
  cleanUpTokenization,
  parseJsonObject,
  readTokenizerSettings,
  type SpecialToken,
  type SpecialTokenRole,
} from './special-tokens.js';

/** Paths of a checkpoint's tokenizer files. */
export interface TokenizerFiles {
  /** tokenizer.json; without it, `sentencePiece` is converted as transformers converts it. */
  tokenizerJson?: string;
  /** A SentencePiece model (spm.model, spiece.model, sentencepiece.bpe.model, tokenizer.model). */
  sentencePiece?: string;
  /** config.json's model_type: picks the converter when tokenizer_config.json names no tokenizer_class. */
  modelType?: string;
  /** Legacy added_tokens.json, read with `sentencePiece` when tokenizer_config.json has no added_tokens_decoder. */
  addedTokensJson?: string;
  tokenizerConfig?: string;
  specialTokensMap?: string;
  /** Marian: the target side's SentencePiece model and vocabularies (see TargetSideSources). */
  targetSpm?: string;
  vocabJson?: string;
  targetVocabJson?: string;
}

/**
 * A separate target (decoder) side, as MarianTokenizer has: `target.spm`, and the pieces' ids
 * in `vocab.json` (or `target_vocab.json` when tokenizer_config.json sets `separate_vocabs`).
 */
export type { TargetSideSources } from './target-tokenizer.js';

/** The same files' contents (for sources that are not on the local disk). */
export interface TokenizerSources {
  tokenizerJson: string;
  tokenizerConfig?: string;
  specialTokensMap?: string;
  target?: TargetSideSources;
}

export interface EncodeOptions {
  /**
   * Truncate to this many tokens (special tokens included) as transformers does with
   * `truncation=True, max_length=…`: the longer sequence of a pair loses tokens first.
   */
  maxLength?: number;
  /**
   * Translation tokenizers (mBART, M2M100, NLLB): the source language code to add instead of the
   * default one (tokenizer_config.json's src_lang), as transformers' `src_lang` does.
   */
  srcLang?: string;
}

/** The named special tokens a tokenizer has, by role (bos, eos, unk, sep, pad, cls, mask: SPECIAL_TOKEN_ROLES). */
export type SpecialTokensByRole = { readonly [R in SpecialTokenRole]?: SpecialToken };

export interface AttnTokenizer extends SpecialTokensByRole {
  /** model_max_length from tokenizer_config.json, when it sets a real limit. */
  readonly modelMaxLength?: number;
  /** Vocabulary size including added tokens. */
  readonly vocabSize: number;
  /** Ids HF counts as special (named special tokens, additional ones, added tokens flagged special). */
  readonly specialIds: ReadonlySet<number>;
  /** add_bos/add_eos applied over tokenizer.json's post-processor, if tokenizer_config.json asked for it. */
  readonly template?: Readonly<TemplateFlags>;
  /** Translation tokenizers: the language codes and where the tokenizer puts them. */
  readonly languages?: LanguageCodes;
  /**
   * Encodes `text` (and `pair`, unless it is empty or missing) with the special tokens the
   * tokenizer adds. Offsets are UTF-16 indices into `text`, or into `pair` for segment-1 tokens.
   */
  encode(text: string, pair?: string, options?: EncodeOptions): Promise<Token[]>;
  /**
   * Tokenizers with a separate target side (Marian): the tokens of a decoder text as the
   * tokenizer encodes `text_target` (`</s>` appended). Absent when targets use `encode`.
   */
  readonly encodeTarget?: (text: string) => Promise<Token[]>;
  /** Tokens for ids given directly: offsets 0,0 and word null. */
  tokensFromIds(ids: readonly number[], typeIds?: readonly number[]): Token[];
  /** Text of `ids`, as transformers' `decode` gives it. */
  decode(ids: readonly number[], skipSpecial?: boolean): string;
  idToToken(id: number): string | null;
  tokenToId(text: string): number | null;
}

/** Loads a tokenizer from its files (tokenizer.json, and optionally tokenizer_config.json and special_tokens_map.json). */
export async function loadTokenizer(files: TokenizerFiles): Promise<AttnTokenizer> {
  const read = async (path: string, what: string): Promise<string> => {
    try {
      return await readFile(path, 'utf8');
    } catch (err) {
      throw new AttnscopeError(`cannot read ${what} at ${path}: ${sanitize((err as Error).message, 200)}`, { cause: err });
    }
  };
  const tokenizerConfig = files.tokenizerConfig !== undefined ? await read(files.tokenizerConfig, 'tokenizer_config.json') : undefined;
  const specialTokensMap = files.specialTokensMap !== undefined ? await read(files.specialTokensMap, 'special_tokens_map.json') : undefined;
  let sources: TokenizerSources;
  if (files.tokenizerJson !== undefined) {
    sources = { tokenizerJson: await read(files.tokenizerJson, 'tokenizer.json') };
    if (tokenizerConfig !== undefined) sources.tokenizerConfig = tokenizerConfig;
  } else if (files.sentencePiece !== undefined) {
    const what = basename(files.sentencePiece);
    let model: Uint8Array;
    try {
      model = await readFile(files.sentencePiece);
    } catch (err) {
      throw new AttnscopeError(`cannot read ${what} at ${files.sentencePiece}: ${sanitize((err as Error).message, 200)}`, { cause: err });
    }
    const converted = convertSentencePiece({
      model,
      what: files.sentencePiece,
      ...(tokenizerConfig !== undefined ? { tokenizerConfig } : {}),
      ...(specialTokensMap !== undefined ? { specialTokensMap } : {}),
      ...(files.addedTokensJson !== undefined ? { addedTokensJson: await read(files.addedTokensJson, 'added_tokens.json') } : {}),
      ...(files.modelType !== undefined ? { modelType: files.modelType } : {}),
    });
    sources = { tokenizerJson: converted.tokenizerJson, tokenizerConfig: converted.tokenizerConfig };
  } else {
    throw new AttnscopeError('a tokenizer needs tokenizer.json or a SentencePiece model');
  }
  if (specialTokensMap !== undefined) sources.specialTokensMap = specialTokensMap;
  if (files.targetSpm !== undefined) {
    if (files.vocabJson === undefined) throw new AttnscopeError(`${files.targetSpm}: a target SentencePiece model needs vocab.json next to it`);
    let spm: Uint8Array;
    try {
      spm = await readFile(files.targetSpm);
    } catch (err) {
      throw new AttnscopeError(`cannot read target.spm at ${files.targetSpm}: ${sanitize((err as Error).message, 200)}`, { cause: err });
    }
    sources.target = { spm, vocabJson: await read(files.vocabJson, 'vocab.json') };
    if (files.targetVocabJson !== undefined) sources.target.targetVocabJson = await read(files.targetVocabJson, 'target_vocab.json');
  }
  if (files.tokenizerJson !== undefined || files.sentencePiece === undefined) return createTokenizer(sources);
  try {
    return createTokenizer(sources);
  } catch (err) {
    if (!(err instanceof AttnscopeError)) throw err;
    throw new AttnscopeError(`the tokenizer converted from ${files.sentencePiece}: ${err.message}`, { cause: err });
  }
}

/** Builds a tokenizer from the files' contents. */
export function createTokenizer(sources: TokenizerSources): AttnTokenizer {
  const info = readTokenizerJson(stripBom(sources.tokenizerJson));
  const config =
    sources.tokenizerConfig !== undefined
      ? parseJsonObject(stripBom(sources.tokenizerConfig), 'tokenizer_config.json')
      : undefined;
  const map =
    sources.specialTokensMap !== undefined
      ? parseJsonObject(stripBom(sources.specialTokensMap), 'special_tokens_map.json')
      : undefined;
  const settings = readTokenizerSettings(config, map);
  const prepared = prepareTokenizerJson(info, settings);
  // Values the Rust binding would panic on (aborting the process) are refused before it sees them.
  validateTokenizerJson(info, { postProcessor: prepared.template === undefined });
  let tokenizer: Tokenizer;
  try {
    tokenizer = Tokenizer.fromString(prepared.text);
  } catch (err) {
    throw new AttnscopeError(`cannot load tokenizer.json: ${sanitize((err as Error).message, 240)}`, { cause: err });
  }

  // Added tokens flagged special: what the Rust decoder skips with skip_special_tokens.
  const addedSpecialIds = new Set(info.addedTokens.filter((t) => t.special).map((t) => t.id));
  const named: Partial<Record<SpecialTokenRole, SpecialToken>> = {};
  for (const role of SPECIAL_TOKEN_ROLES) {
    const text = settings.roles[role];
    if (text !== undefined) named[role] = { text, id: tokenizer.tokenToId(text) };
  }
  const specialIds = new Set<number>(addedSpecialIds);
  for (const tok of Object.values(named)) if (tok.id !== null) specialIds.add(tok.id);
  for (const text of [...settings.additional, ...settings.decoderSpecials]) {
    const id = tokenizer.tokenToId(text);
    if (id !== null) specialIds.add(id);
  }

  return new HfTokenizer(tokenizer, {
    named,
    specialIds,
    addedSpecialIds,
    // transformers 5 skips the clean-up for BPE models (it would strip real spaces before punctuation).
    cleanUp: settings.cleanUpTokenizationSpaces && info.modelType !== 'BPE',
    ...(settings.modelMaxLength !== undefined ? { modelMaxLength: settings.modelMaxLength } : {}),
    ...(prepared.template ? { template: prepared.template } : {}),
    ...(sources.target ? { target: targetEncoder(sources.target, config, settings.roles) } : {}),
    ...languageInit(),
  });

  function languageInit(): { languages?: LanguageCodes } {
    if (prepared.template) return {};
    const candidates = [
      ...info.addedTokens.map((t) => ({ text: t.content, id: t.id })),
      ...settings.additional.map((text) => ({ text, id: tokenizer.tokenToId(text) })),
    ];
    const srcLang = typeof config?.['src_lang'] === 'string' ? config['src_lang'] : undefined;
    const languages = findLanguageCodes(info.postProcessor, candidates, srcLang);
    return languages ? { languages } : {};
  }
}

const stripBom = (text: string): string => (text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);

/** A possible vocabulary id (the binding takes u32). */
const isId = (id: number): boolean => Number.isInteger(id) && id >= 0 && id <= 0xffffffff;

interface HfTokenizerInit {
  /** Only the roles the tokenizer has (no undefined values): they become its own properties. */
  named: SpecialTokensByRole;
  specialIds: Set<number>;
  addedSpecialIds: Set<number>;
  cleanUp: boolean;
  modelMaxLength?: number;
  template?: TemplateFlags;
  target?: TargetEncoder;
  languages?: LanguageCodes;
}

/** The named special tokens of AttnTokenizer, one list of roles: set from `init.named` by the constructor. */
interface HfTokenizer extends SpecialTokensByRole {}

class HfTokenizer implements AttnTokenizer {
  readonly modelMaxLength?: number;
  readonly vocabSize: number;
  readonly specialIds: ReadonlySet<number>;
  readonly template?: Readonly<TemplateFlags>;
  readonly encodeTarget?: (text: string) => Promise<Token[]>;
  readonly languages?: LanguageCodes;
  readonly #tk: Tokenizer;
  readonly #decoder: Decoder | null;
  readonly #addedSpecialIds: ReadonlySet<number>;
  readonly #cleanUp: boolean;
  /** Encodings wait for each other: truncation is a setting of the shared tokenizer. */
  #queue: Promise<void> = Promise.resolve();

  constructor(tk: Tokenizer, init: HfTokenizerInit) {
    this.#tk = tk;
    this.#decoder = tk.getDecoder();
    Object.assign(this, init.named);
    if (init.modelMaxLength !== undefined) this.modelMaxLength = init.modelMaxLength;
    if (init.template) this.template = init.template;
    const target = init.target;
    if (target) this.encodeTarget = (text: string) => target.encode(text);
    if (init.languages) this.languages = init.languages;
    this.vocabSize = tk.getVocabSize(true);
    this.specialIds = init.specialIds;
    this.#addedSpecialIds = init.addedSpecialIds;
    this.#cleanUp = init.cleanUp;
  }

  async encode(text: string, pair?: string, options: EncodeOptions = {}): Promise<Token[]> {
    if (typeof text !== 'string') throw new AttnscopeError('the text to encode must be a string');
    // transformers drops a falsy text_pair: an empty pair means a single sequence.
    const hasPair = typeof pair === 'string' && pair.length > 0;
    const langs = this.languages;
    const wantLang = options.srcLang ?? langs?.source;
    // Checked before encoding: a wrong code is the user's error whatever the text.
    const langId = wantLang === undefined ? undefined : languageCodeId(langs, wantLang, '--src-lang', 'this tokenizer');
    // Truncation is a setting of the shared Rust tokenizer: encodings run one at a time.
    const run = this.#queue.then(async () => {
      if (options.maxLength !== undefined) this.#tk.setTruncation(options.maxLength, { strategy: 'LongestFirst' as TruncationStrategy });
      try {
        return hasPair ? await this.#tk.encode(text, pair) : await this.#tk.encode(text);
      } finally {
        if (options.maxLength !== undefined) this.#tk.disableTruncation();
      }
    });
    this.#queue = run.then(() => undefined, () => undefined);
    let enc: Encoding;
    try {
      enc = await run;
    } catch (err) {
      throw new AttnscopeError(`cannot tokenize the text: ${sanitize((err as Error).message, 240)}`, { cause: err });
    }
    const tokens = tokensOfEncoding(enc, text, hasPair ? pair : undefined, (id) => this.#tk.idToToken(id));
    if (langs && wantLang !== undefined && langId !== undefined) this.#setLanguage(tokens, langs, hasPair, wantLang, langId, options.srcLang !== undefined);
    return tokens;
  }

  /** Puts the source language code `code` where the template put the default one. */
  #setLanguage(tokens: Token[], langs: LanguageCodes, hasPair: boolean, code: string, id: number, asked: boolean): void {
    const place = hasPair ? langs.pair : langs.single;
    if (!place) {
      if (asked) throw new AttnscopeError(`--src-lang ${code}: this tokenizer adds no language code to a text pair`);
      return;
    }
    const i = codeIndex(place, tokens.length);
    const current = tokens[i];
    if (!current || ![...langs.ids.values()].includes(current.id)) {
      throw new AttnscopeError(`--src-lang ${code}: the tokenizer's post-processor did not add a language code where its template says`);
    }
    if (current.id !== id) tokens[i] = { ...current, id, text: this.#tk.idToToken(id) ?? code, special: true };
  }

  tokensFromIds(ids: readonly number[], typeIds?: readonly number[]): Token[] {
    if (typeIds !== undefined && typeIds.length !== ids.length) {
      throw new AttnscopeError(`got ${typeIds.length} token type ids for ${ids.length} token ids`);
    }
    return ids.map((id, i) => {
      if (!isId(id)) throw new AttnscopeError(`token id ${id} is not a valid token id`);
      const text = this.#tk.idToToken(id);
      if (text === null) {
        throw new AttnscopeError(`token id ${id} is not in the vocabulary (size ${this.vocabSize})`);
      }
      const segment = typeIds?.[i] ?? 0;
      if (!Number.isInteger(segment) || segment < 0) {
        throw new AttnscopeError(`token type id ${segment} is not a non-negative integer`);
      }
      return { id, text, start: 0, end: 0, special: this.specialIds.has(id), segment, word: null };
    });
  }

  decode(ids: readonly number[], skipSpecial = false): string {
    // What tokenizers' Tokenizer::decode does (unknown ids are dropped), synchronously.
    const tokens: string[] = [];
    for (const id of ids) {
      if (!isId(id)) continue;
      if (skipSpecial && this.#addedSpecialIds.has(id)) continue;
      const token = this.#tk.idToToken(id);
      if (token !== null) tokens.push(token);
    }
    const text = this.#decoder ? this.#decoder.decode(tokens) : tokens.join(' ');
    return this.#cleanUp ? cleanUpTokenization(text) : text;
  }

  idToToken(id: number): string | null {
    return isId(id) ? this.#tk.idToToken(id) : null;
  }

  tokenToId(text: string): number | null {
    return this.#tk.tokenToId(text);
  }
}
