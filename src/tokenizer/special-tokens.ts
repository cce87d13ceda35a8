/**
 * Special tokens and tokenizer settings read from tokenizer_config.json and
 * special_tokens_map.json, as transformers reads them.
 */
import { AttnscopeError, sanitize } from '../core/errors.js';

export const SPECIAL_TOKEN_ROLES = ['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask'] as const;
export type SpecialTokenRole = (typeof SPECIAL_TOKEN_ROLES)[number];

/** A named special token: its text and its id (null when the vocabulary does not hold it). */
export interface SpecialToken {
  text: string;
  id: number | null;
}

/** What the tokenizer's configuration files say, before ids are looked up. */
export interface TokenizerSettings {
  /** Token text per role (`bos` → `<s>`, ...). */
  roles: Partial<Record<SpecialTokenRole, string>>;
  /** additional_special_tokens / extra_special_tokens. */
  additional: string[];
  /** Texts flagged special in tokenizer_config.json's added_tokens_decoder. */
  decoderSpecials: string[];
  /** tokenizer_class, e.g. `LlamaTokenizerFast`. */
  tokenizerClass?: string;
  /** add_bos_token / add_eos_token when tokenizer_config.json sets them. */
  addBosToken?: boolean;
  addEosToken?: boolean;
  /** model_max_length unless it is transformers' "unset" sentinel (int(1e30)). */
  modelMaxLength?: number;
  /** clean_up_tokenization_spaces (transformers 5 default: false). */
  cleanUpTokenizationSpaces: boolean;
}

type Json = Record<string, unknown>;

/** Parses a JSON file's text into an object, or throws an AttnscopeError naming the file. */
export function parseJsonObject(text: string, what: string): Json {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new AttnscopeError(`${what} is not valid JSON: ${sanitize((err as Error).message, 160)}`, { cause: err });
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new AttnscopeError(`${what} does not hold a JSON object`);
  }
  return value as Json;
}

/** Text of a special-token entry: a string, or an AddedToken object `{content, ...}`. */
export function tokenText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value !== null && typeof value === 'object' && typeof (value as Json)['content'] === 'string') {
    return (value as Json)['content'] as string;
  }
  return undefined;
}

function tokenList(value: unknown): string[] {
  if (Array.isArray(value)) return value.map(tokenText).filter((t): t is string => t !== undefined);
  // transformers 5 also allows extra_special_tokens as a {name: token} mapping.
  if (value !== null && typeof value === 'object') {
    return Object.values(value as Json)
      .map(tokenText)
      .filter((t): t is string => t !== undefined);
  }
  return [];
}

/** transformers' VERY_LARGE_INTEGER (int(1e30)) means "no limit". */
const UNSET_MAX_LENGTH = 1e29;

/**
 * Merges tokenizer_config.json and special_tokens_map.json (the latter wins for the special
 * tokens it names, as in `from_pretrained`).
 */
export function readTokenizerSettings(config: Json | undefined, specialTokensMap: Json | undefined): TokenizerSettings {
  const cfg = config ?? {};
  const roles: Partial<Record<SpecialTokenRole, string>> = {};
  for (const role of SPECIAL_TOKEN_ROLES) {
    const key = `${role}_token`;
    const text =
      specialTokensMap !== undefined && key in specialTokensMap ? tokenText(specialTokensMap[key]) : tokenText(cfg[key]);
    if (text !== undefined) roles[role] = text;
  }
  const additional = [
    ...new Set([
      ...tokenList(cfg['additional_special_tokens']),
      ...tokenList(cfg['extra_special_tokens']),
      ...tokenList(specialTokensMap?.['additional_special_tokens']),
      ...tokenList(specialTokensMap?.['extra_special_tokens']),
    ]),
  ];
  const decoderSpecials: string[] = [];
  const decoder = cfg['added_tokens_decoder'];
  if (decoder !== null && typeof decoder === 'object') {
    for (const entry of Object.values(decoder as Json)) {
      if (entry !== null && typeof entry === 'object' && (entry as Json)['special'] === true) {
        const text = tokenText(entry);
        if (text !== undefined) decoderSpecials.push(text);
      }
    }
  }
  const settings: TokenizerSettings = {
    roles,
    additional,
    decoderSpecials,
    cleanUpTokenizationSpaces: cfg['clean_up_tokenization_spaces'] === true,
  };
  if (typeof cfg['tokenizer_class'] === 'string') settings.tokenizerClass = cfg['tokenizer_class'];
  if (typeof cfg['add_bos_token'] === 'boolean') settings.addBosToken = cfg['add_bos_token'];
  if (typeof cfg['add_eos_token'] === 'boolean') settings.addEosToken = cfg['add_eos_token'];
  const max = cfg['model_max_length'];
  if (typeof max === 'number' && Number.isFinite(max) && max > 0 && max < UNSET_MAX_LENGTH) {
    settings.modelMaxLength = max;
  }
  return settings;
}

/**
 * transformers' `clean_up_tokenization` (applied by `decode` when clean_up_tokenization_spaces
 * is true): removes the space before punctuation and English contractions.
 */
export function cleanUpTokenization(text: string): string {
  return text
    .replaceAll(' .', '.')
    .replaceAll(' ?', '?')
    .replaceAll(' !', '!')
    .replaceAll(' ,', ',')
    .replaceAll(" ' ", "'")
    .replaceAll(" n't", "n't")
    .replaceAll(" 'm", "'m")
    .replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve")
    .replaceAll(" 're", "'re");
}
