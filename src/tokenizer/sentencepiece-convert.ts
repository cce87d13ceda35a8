/**
 * Builds a tokenizer.json from a checkpoint's SentencePiece model when the checkpoint ships none
 * (microsoft/deberta-v3-* has spm.model and tokenizer_config.json only), as transformers 4.40's
 * convert_slow_tokenizer.py builds the fast tokenizer from the slow one:
 *
 * - the model: Unigram over the proto's pieces and scores (BPE with merges regenerated from the
 *   vocabulary for Llama), with the converter's vocabulary changes (T5's `<extra_id_N>` pieces,
 *   XLM-R's fairseq layout `<s> <pad> </s> <unk>` + pieces[3:] + `<mask>`, mBART's language
 *   codes after it, Pegasus's offset of 103 reserved ids, ALBERT's −100 on pieces ending in
 *   digit + comma) and unknown id;
 * - the normalizer: the proto's precompiled charsmap and the converter's whitespace rules;
 * - Metaspace (▁, prefix space "always", or "first" for non-legacy T5/Llama);
 * - the post-processor template of the tokenizer class;
 * - then the added tokens, as PreTrainedTokenizerFast adds them after the conversion:
 *   tokenizer_config.json's added_tokens_decoder by id (or legacy added_tokens.json), then the
 *   special tokens not added yet. Ids are assigned as the `tokenizers` library assigns them (the
 *   vocabulary's id of the text, else the next free id).
 *
 * Tokenizer classes without a converter here are reported by name.
 */
import { AttnscopeError, quote } from '../core/errors.js';
import { precompiledCharsmapProblem } from './precompiled.js';
import { readSentencePieceModel, type SentencePieceModel } from './sentencepiece-model.js';
import { parseJsonObject, tokenText } from './special-tokens.js';

type Json = Record<string, unknown>;

/** The converters implemented, by transformers' slow tokenizer class. */
type ConverterName = 'DebertaV2' | 'T5' | 'XLMRoberta' | 'Albert' | 'Llama' | 'MBart' | 'MBart50' | 'Pegasus';

interface ConverterSpec {
  /** VOCAB_FILES_NAMES["vocab_file"] of the slow tokenizer. */
  file: string;
  /** Default special tokens of the tokenizer class (its __init__ signature). */
  defaults: Partial<Record<'bos' | 'eos' | 'unk' | 'sep' | 'pad' | 'cls' | 'mask', string>>;
}

const CONVERTERS: Record<ConverterName, ConverterSpec> = {
  DebertaV2: { file: 'spm.model', defaults: { bos: '[CLS]', eos: '[SEP]', unk: '[UNK]', sep: '[SEP]', pad: '[PAD]', cls: '[CLS]', mask: '[MASK]' } },
  T5: { file: 'spiece.model', defaults: { eos: '</s>', unk: '<unk>', pad: '<pad>' } },
  XLMRoberta: { file: 'sentencepiece.bpe.model', defaults: { bos: '<s>', eos: '</s>', sep: '</s>', cls: '<s>', unk: '<unk>', pad: '<pad>', mask: '<mask>' } },
  Albert: { file: 'spiece.model', defaults: { bos: '[CLS]', eos: '[SEP]', unk: '<unk>', sep: '[SEP]', pad: '<pad>', cls: '[CLS]', mask: '[MASK]' } },
  Llama: { file: 'tokenizer.model', defaults: { bos: '<s>', eos: '</s>', unk: '<unk>' } },
  MBart: { file: 'sentencepiece.bpe.model', defaults: { bos: '<s>', eos: '</s>', sep: '</s>', cls: '<s>', unk: '<unk>', pad: '<pad>', mask: '<mask>' } },
  MBart50: { file: 'sentencepiece.bpe.model', defaults: { eos: '</s>', sep: '</s>', cls: '<s>', unk: '<unk>', pad: '<pad>', mask: '<mask>' } },
  Pegasus: { file: 'spiece.model', defaults: { eos: '</s>', unk: '<unk>', pad: '<pad>', mask: '<mask_2>' } },
};

/** mBART's (cc25) language codes, appended to the vocabulary in this order (FAIRSEQ_LANGUAGE_CODES). */
const MBART_LANGUAGES = [
  'ar_AR', 'cs_CZ', 'de_DE', 'en_XX', 'es_XX', 'et_EE', 'fi_FI', 'fr_XX', 'gu_IN', 'hi_IN', 'it_IT', 'ja_XX', 'kk_KZ',
  'ko_KR', 'lt_LT', 'lv_LV', 'my_MM', 'ne_NP', 'nl_XX', 'ro_RO', 'ru_RU', 'si_LK', 'tr_TR', 'vi_VN', 'zh_CN',
];
/** mBART-50's: cc25's, then 27 more. */
const MBART50_LANGUAGES = [
  ...MBART_LANGUAGES,
  'af_ZA', 'az_AZ', 'bn_IN', 'fa_IR', 'he_IL', 'hr_HR', 'id_ID', 'ka_GE', 'km_KH', 'mk_MK', 'ml_IN', 'mn_MN', 'mr_IN', 'pl_PL',
  'ps_AF', 'pt_XX', 'sv_SE', 'sw_KE', 'ta_IN', 'te_IN', 'th_TH', 'tl_XX', 'uk_UA', 'ur_PK', 'xh_ZA', 'gl_ES', 'sl_SI',
];

/** tokenizer_class (without Fast) → converter, as SLOW_TO_FAST_CONVERTERS maps them. */
const BY_CLASS: Record<string, ConverterName> = {
  DebertaV2Tokenizer: 'DebertaV2',
  T5Tokenizer: 'T5',
  MT5Tokenizer: 'T5',
  XLMRobertaTokenizer: 'XLMRoberta',
  AlbertTokenizer: 'Albert',
  LlamaTokenizer: 'Llama',
  MBartTokenizer: 'MBart',
  MBart50Tokenizer: 'MBart50',
  PegasusTokenizer: 'Pegasus',
};

/** config.json model_type → tokenizer class, for a tokenizer_config.json that names none (TOKENIZER_MAPPING). */
const BY_MODEL_TYPE: Record<string, string> = {
  'deberta-v2': 'DebertaV2Tokenizer',
  t5: 'T5Tokenizer',
  mt5: 'MT5Tokenizer',
  umt5: 'T5Tokenizer',
  'xlm-roberta': 'XLMRobertaTokenizer',
  albert: 'AlbertTokenizer',
  llama: 'LlamaTokenizer',
  mistral: 'LlamaTokenizer',
  mixtral: 'LlamaTokenizer',
  mbart: 'MBartTokenizer',
  pegasus: 'PegasusTokenizer',
};

/** The tokenizer class transformers would use: tokenizer_config.json's, else the model type's. */
function tokenizerClassOf(config: Json | undefined, modelType: string | undefined): string | undefined {
  const named = config?.['tokenizer_class'];
  if (typeof named === 'string') return named.replace(/Fast$/, '');
  return modelType !== undefined ? BY_MODEL_TYPE[modelType] : undefined;
}

function converterOf(tokenizerClass: string | undefined): ConverterName | undefined {
  return tokenizerClass !== undefined && Object.hasOwn(BY_CLASS, tokenizerClass) ? BY_CLASS[tokenizerClass] : undefined;
}

/**
 * The SentencePiece file a checkpoint without tokenizer.json is converted from (`spm.model`,
 * `spiece.model`, `sentencepiece.bpe.model`, `tokenizer.model`), or undefined when its tokenizer
 * class has no converter here. `configText` is tokenizer_config.json's text, if there is one.
 */
export function sentencePieceFileName(configText: string | undefined, modelType: string | undefined): string | undefined {
  const config = configText !== undefined ? parseJsonObject(stripBom(configText), 'tokenizer_config.json') : undefined;
  const converter = converterOf(tokenizerClassOf(config, modelType));
  return converter ? CONVERTERS[converter].file : undefined;
}

export interface SentencePieceConversion {
  /** The tokenizer.json text. */
  tokenizerJson: string;
  /** tokenizer_config.json with the class's default special tokens and tokenizer_class filled in. */
  tokenizerConfig: string;
}

export interface SentencePieceSources {
  /** The .model file's bytes, and its name for errors. */
  model: Uint8Array;
  what: string;
  tokenizerConfig?: string;
  specialTokensMap?: string;
  /** Legacy added_tokens.json ({text: id}), used when tokenizer_config.json has no added_tokens_decoder. */
  addedTokensJson?: string;
  /** config.json's model_type. */
  modelType?: string;
}

interface AddedToken {
  content: string;
  single_word: boolean;
  lstrip: boolean;
  rstrip: boolean;
  normalized: boolean;
  special: boolean;
}

const stripBom = (text: string): string => (text.charCodeAt(0) === 0xfeff ? text.slice(1) : text);

const bool = (value: unknown, fallback: boolean): boolean => (typeof value === 'boolean' ? value : fallback);

/** Python's str.isdigit for one character: Unicode Numeric_Type Decimal or Digit. */
function isDigit(ch: string): boolean {
  if (/^\p{Nd}$/u.test(ch)) return true;
  const c = ch.codePointAt(0)!;
  // Numeric_Type=Digit (superscripts, subscripts, circled and parenthesized digits, ...).
  const ranges: [number, number][] = [
    [0xb2, 0xb3], [0xb9, 0xb9], [0x1369, 0x1371], [0x19da, 0x19da], [0x2070, 0x2070], [0x2074, 0x2079],
    [0x2080, 0x2089], [0x2460, 0x2468], [0x2474, 0x247c], [0x2488, 0x2490], [0x24ea, 0x24ea], [0x24f5, 0x24fd],
    [0x24ff, 0x24ff], [0x2776, 0x277e], [0x2780, 0x2788], [0x278a, 0x2792], [0x10a40, 0x10a43], [0x10e60, 0x10e68],
    [0x11052, 0x1105a], [0x1f100, 0x1f10a],
  ];
  return ranges.some(([a, b]) => c >= a && c <= b);
}

/** AlbertConverter's check_number_comma: false for pieces like "1," (they get score − 100). */
function checkNumberComma(piece: string): boolean {
  const chars = Array.from(piece);
  return chars.length < 2 || chars[chars.length - 1] !== ',' || !isDigit(chars[chars.length - 2]!);
}

/** SentencePieceExtractor.extract (transformers 4.40): BPE merges from the vocabulary, by score. */
function bpeMerges(spm: SentencePieceModel, vocabScores: readonly [string, number][]): [string, string][] {
  const vocab = new Map<string, number>();
  spm.pieces.forEach((p, i) => vocab.set(p.piece, i));
  const scores = new Map<string, number>();
  for (const [piece, score] of vocabScores) scores.set(piece, score);
  const merges: { l: string; r: string; score: number }[] = [];
  for (const [merge, score] of scores) {
    const chars = Array.from(merge);
    const local: { l: string; r: string; score: number }[] = [];
    for (let i = 1; i < chars.length; i++) {
      const l = chars.slice(0, i).join('');
      const r = chars.slice(i).join('');
      if (vocab.has(l) && vocab.has(r)) local.push({ l, r, score });
    }
    local.sort((a, b) => vocab.get(a.l)! - vocab.get(b.l)! || vocab.get(a.r)! - vocab.get(b.r)!);
    merges.push(...local);
  }
  merges.sort((a, b) => b.score - a.score);
  return merges.map((m) => [m.l, m.r]);
}

const metaspace = (prependScheme: string, split: boolean): Json => ({ type: 'Metaspace', replacement: '▁', prepend_scheme: prependScheme, split });
const replaceRegex = (pattern: string, content: string): Json => ({ type: 'Replace', pattern: { Regex: pattern }, content });
const replaceString = (pattern: string, content: string): Json => ({ type: 'Replace', pattern: { String: pattern }, content });

/** One part of a template: `$A`/`$B` or a special token's text, with its type id. */
type Part = [name: string, typeId: number];

/** TemplateProcessing of the two templates; `idOf` gives each special token's id. */
function template(single: Part[], pair: Part[], idOf: (text: string) => number): Json {
  const parse = (t: Part[]): Json[] =>
    t.map(([name, typeId]) => (name === '$A' || name === '$B' ? { Sequence: { id: name.slice(1), type_id: typeId } } : { SpecialToken: { id: name, type_id: typeId } }));
  const special: Json = {};
  for (const [name] of [...single, ...pair]) {
    if (name !== '$A' && name !== '$B') special[name] = { id: name, ids: [idOf(name)], tokens: [name] };
  }
  return { type: 'TemplateProcessing', single: parse(single), pair: parse(pair), special_tokens: special };
}

/** Converts the SentencePiece model as transformers does for the checkpoint's tokenizer class. */
export function convertSentencePiece(sources: SentencePieceSources): SentencePieceConversion {
  const { what } = sources;
  const config = sources.tokenizerConfig !== undefined ? parseJsonObject(stripBom(sources.tokenizerConfig), 'tokenizer_config.json') : {};
  const map = sources.specialTokensMap !== undefined ? parseJsonObject(stripBom(sources.specialTokensMap), 'special_tokens_map.json') : undefined;
  const tokenizerClass = tokenizerClassOf(config, sources.modelType);
  const name = converterOf(tokenizerClass);
  if (name === undefined) {
    throw new AttnscopeError(
      `${what}: no tokenizer.json, and ${tokenizerClass === undefined ? 'the tokenizer class is not known' : `the tokenizer class ${quote(tokenizerClass, 60)}`} is not converted from SentencePiece ` +
        `(converted: ${Object.keys(BY_CLASS).join(', ')})`,
    );
  }
  const spm = readSentencePieceModel(sources.model, what);
  const n = spm.pieces.length;
  const notFinite = spm.pieces.findIndex((p) => !Number.isFinite(p.score));
  if (notFinite >= 0) throw new AttnscopeError(`${what}: piece ${notFinite} has the score ${spm.pieces[notFinite]!.score} (a finite number is needed)`);
  const spec = CONVERTERS[name];

  // Special tokens: the files' (special_tokens_map.json wins), else the class's defaults.
  const roleText = (role: keyof ConverterSpec['defaults']): string | undefined => {
    const key = `${role}_token`;
    if (map !== undefined && key in map) return tokenText(map[key]);
    if (key in config) return tokenText(config[key]);
    return spec.defaults[role];
  };
  const filledConfig: Json = { ...config, tokenizer_class: config['tokenizer_class'] ?? `${tokenizerClass}Fast` };
  for (const role of Object.keys(spec.defaults) as (keyof ConverterSpec['defaults'])[]) {
    const key = `${role}_token`;
    if (!(key in config) && !(map !== undefined && key in map)) filledConfig[key] = spec.defaults[role];
  }
  const extraIds = typeof config['extra_ids'] === 'number' && Number.isInteger(config['extra_ids']) && config['extra_ids'] >= 0 ? config['extra_ids'] : 100;
  if (extraIds > 10000) throw new AttnscopeError(`tokenizer_config.json: extra_ids ${extraIds} is out of range (0 to 10000)`);
  const additionalGiven = 'additional_special_tokens' in config || (map !== undefined && 'additional_special_tokens' in map);
  if (name === 'T5' && !additionalGiven && extraIds > 0) {
    filledConfig['additional_special_tokens'] = Array.from({ length: extraIds }, (_, i) => `<extra_id_${i}>`);
  }
  // Pegasus: offset pieces before the model's (pad, eos, mask_token_sent, mask, <unk_2>...).
  const offset = typeof config['offset'] === 'number' && Number.isInteger(config['offset']) && config['offset'] >= 2 ? config['offset'] : 103;
  if (offset > 10000) throw new AttnscopeError(`tokenizer_config.json: offset ${offset} is out of range (2 to 10000)`);
  const maskSent = 'mask_token_sent' in config ? tokenText(config['mask_token_sent']) : '<mask_1>';
  if (name === 'Pegasus' && !additionalGiven) {
    filledConfig['additional_special_tokens'] = [...(maskSent !== undefined ? [maskSent] : []), ...Array.from({ length: offset - 2 }, (_, i) => `<unk_${i + 2}>`)];
  }
  const languages = name === 'MBart' ? MBART_LANGUAGES : MBART50_LANGUAGES;
  if (name === 'MBart' || name === 'MBart50') {
    // MBartTokenizerFast: the language codes, then the checkpoint's other additional tokens;
    // MBart50TokenizerFast: the checkpoint's, then the codes it lacks.
    const given = (map !== undefined && 'additional_special_tokens' in map ? map : config)['additional_special_tokens'];
    const list = Array.isArray(given) ? given.map(tokenText).filter((t): t is string => t !== undefined) : [];
    filledConfig['additional_special_tokens'] =
      name === 'MBart' ? [...languages, ...list.filter((t) => !languages.includes(t))] : [...list, ...languages.filter((t) => !list.includes(t))];
  }

  // transformers' _get_prepend_scheme: "first" only for classes with a legacy attribute set false.
  const hasLegacy = name === 'T5' || name === 'Llama';
  const legacy = !hasLegacy || config['legacy'] !== false;
  // Only T5Tokenizer and LlamaTokenizer have an add_prefix_space attribute; the converter's default is true.
  const addPrefixSpace = hasLegacy ? bool(config['add_prefix_space'], true) : true;
  const prependScheme = addPrefixSpace ? (legacy ? 'always' : 'first') : 'never';

  // Vocabulary and unknown id.
  let vocab: [string, number][] = spm.pieces.map((p) => [p.piece, p.score]);
  let unkId = spm.unkId;
  if (name === 'T5') {
    for (let i = extraIds - 1; i >= 0; i--) vocab.push([`<extra_id_${i}>`, 0]);
  } else if (name === 'XLMRoberta') {
    vocab = [['<s>', 0], ['<pad>', 0], ['</s>', 0], ['<unk>', 0], ...vocab.slice(3), ['<mask>', 0]];
    unkId = 3;
  } else if (name === 'Albert') {
    vocab = vocab.map(([piece, score]) => [piece, checkNumberComma(piece) ? score : score - 100]);
  } else if (name === 'Llama') {
    unkId = 0;
  } else if (name === 'MBart' || name === 'MBart50') {
    vocab = [['<s>', 0], ['<pad>', 0], ['</s>', 0], ['<unk>', 0], ...vocab.slice(3), ...languages.map((c): [string, number] => [c, 0]), ['<mask>', 0]];
    unkId = 3;
  } else if (name === 'Pegasus') {
    const mask = roleText('mask');
    vocab = [
      [roleText('pad') ?? '<pad>', 0], [roleText('eos') ?? '</s>', 0],
      ...(maskSent !== undefined ? [[maskSent, 0] as [string, number]] : []),
      ...(mask !== undefined ? [[mask, 0] as [string, number]] : []),
      ...Array.from({ length: offset - 2 }, (_, i): [string, number] => [`<unk_${i + 2}>`, -100]),
      ...vocab.slice(2),
    ];
    unkId = spm.unkId + offset;
  }
  if (unkId >= vocab.length) throw new AttnscopeError(`${what}: the unknown piece's id ${unkId} is past the ${n} pieces`);

  // Normalizer.
  const charsmap = spm.normalizer.precompiledCharsmap;
  let precompiled: Json | undefined;
  if (charsmap.length > 0) {
    const base64 = Buffer.from(charsmap).toString('base64');
    const problem = precompiledCharsmapProblem(base64);
    if (problem) throw new AttnscopeError(`${what}: the normalizer's precompiled_charsmap ${problem} (the file is damaged)`);
    precompiled = { type: 'Precompiled', precompiled_charsmap: base64 };
  }
  const withCharsmap = (list: Json[]): Json[] => (precompiled ? [...list, precompiled] : list);
  let normalizer: Json | null;
  if (name === 'DebertaV2') {
    const list: Json[] = bool(config['do_lower_case'], false) ? [{ type: 'Lowercase' }] : [];
    list.push({ type: 'Strip', strip_left: true, strip_right: true });
    normalizer = { type: 'Sequence', normalizers: [...withCharsmap(list), replaceRegex(' {2,}', ' ')] };
  } else if (name === 'Albert') {
    const list: Json[] = [replaceString('``', '"'), replaceString("''", '"')];
    if (!bool(config['keep_accents'], false)) list.push({ type: 'NFKD' }, { type: 'StripAccents' });
    if (bool(config['do_lower_case'], true)) list.push({ type: 'Lowercase' });
    normalizer = { type: 'Sequence', normalizers: [...withCharsmap(list), replaceRegex(' {2,}', ' ')] };
  } else if (name === 'Llama') {
    normalizer = legacy
      ? { type: 'Sequence', normalizers: [...(addPrefixSpace ? [{ type: 'Prepend', prepend: '▁' }] : []), replaceString(' ', '▁')] }
      : null;
  } else {
    normalizer = {
      type: 'Sequence',
      normalizers: [...withCharsmap([]), { type: 'Strip', strip_left: false, strip_right: true }, replaceRegex(' {2,}', '▁')],
    };
  }

  // Pre-tokenizer and decoder.
  let preTokenizer: Json | null = metaspace(prependScheme, true);
  let decoder: Json = metaspace(prependScheme, true);
  if (name === 'Pegasus') {
    preTokenizer = { type: 'Sequence', pretokenizers: [{ type: 'WhitespaceSplit' }, metaspace(prependScheme, true)] };
  } else if (name === 'DebertaV2') {
    const punct = bool(config['split_by_punct'], false) ? [{ type: 'Punctuation', behavior: 'Isolated' }] : [];
    preTokenizer = { type: 'Sequence', pretokenizers: [...punct, metaspace(prependScheme, true)] };
  } else if (name === 'Llama') {
    preTokenizer = legacy ? null : metaspace(prependScheme, false);
    decoder = {
      type: 'Sequence',
      decoders: [
        replaceString('▁', ' '), { type: 'ByteFallback' }, { type: 'Fuse' },
        ...(addPrefixSpace ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    };
  }

  // The model.
  let model: Json;
  const modelIds = new Map<string, number>();
  if (name === 'Llama') {
    if (spm.modelType !== 'bpe') throw new AttnscopeError(`${what}: a '${spm.modelType}' SentencePiece model; LlamaTokenizer is converted from BPE models only`);
    vocab.forEach(([piece], i) => modelIds.set(piece, i));
    model = {
      type: 'BPE', dropout: null, unk_token: spm.unkPiece, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false,
      vocab: Object.fromEntries(modelIds), merges: bpeMerges(spm, vocab),
    };
  } else {
    if (spm.modelType !== 'unigram') {
      throw new AttnscopeError(`${what}: a '${spm.modelType}' SentencePiece model; ${tokenizerClass} is converted from unigram models only`);
    }
    // Unigram's token → id map: the last of equal pieces wins.
    vocab.forEach(([piece], i) => modelIds.set(piece, i));
    model = { type: 'Unigram', unk_id: unkId, vocab, byte_fallback: false };
  }

  // Added tokens, in the order the library adds them; ids as it assigns them.
  const added: (AddedToken & { id: number })[] = [];
  const addedIds = new Map<string, number>();
  // The model's get_vocab_size: BPE counts its vocabulary map, Unigram its piece list.
  const vocabSize = name === 'Llama' ? modelIds.size : vocab.length;
  let maxAdded = -1;
  const add = (token: AddedToken): void => {
    if (token.content === '' || addedIds.has(token.content)) return;
    let id = modelIds.get(token.content);
    if (id === undefined) id = maxAdded >= vocabSize ? maxAdded + 1 : vocabSize;
    maxAdded = Math.max(maxAdded, id);
    addedIds.set(token.content, id);
    added.push({ ...token, id });
  };
  const plain = (content: string, special: boolean): AddedToken => ({
    content, single_word: false, lstrip: false, rstrip: false, normalized: !special, special,
  });
  if (name === 'Llama') for (let i = 0; i < Math.min(3, n); i++) add(plain(spm.pieces[i]!.piece, true));

  // PegasusTokenizerFast drops added_tokens_decoder: its tokens are in the vocabulary.
  const decoderEntries = name === 'Pegasus' ? [] : readAddedTokensDecoder(config, sources.addedTokensJson, (text) => specialTexts().includes(text));
  for (const token of decoderEntries) add(token);
  // The special tokens not added yet (all_special_tokens_extended), as the fast tokenizer's
  // __init__ wraps them (XLM-R and ALBERT: mask with lstrip; DeBERTa's slow tokenizer: unk normalized).
  for (const role of ['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask'] as const) {
    const text = roleText(role);
    if (text === undefined) continue;
    const token = plain(text, true);
    if (role === 'mask' && (name === 'XLMRoberta' || name === 'Albert' || name === 'MBart' || name === 'MBart50')) token.lstrip = true;
    // An AddedToken object in the files keeps its flags.
    const key = `${role}_token`;
    const given = map !== undefined && key in map ? map[key] : config[key];
    if (given !== null && typeof given === 'object') {
      const o = given as Json;
      Object.assign(token, { single_word: bool(o['single_word'], false), lstrip: bool(o['lstrip'], false), rstrip: bool(o['rstrip'], false), normalized: bool(o['normalized'], false) });
    }
    add(token);
  }
  for (const text of additionalTexts()) {
    const token = plain(text, true);
    if (name === 'T5' && /^<extra_id_\d+>$/.test(text)) Object.assign(token, { lstrip: true, rstrip: true });
    add(token);
  }

  function additionalTexts(): string[] {
    const list = (map !== undefined && 'additional_special_tokens' in map ? map : filledConfig)['additional_special_tokens'];
    return Array.isArray(list) ? list.map(tokenText).filter((t): t is string => t !== undefined) : [];
  }
  function specialTexts(): string[] {
    return [...(['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask'] as const).map(roleText).filter((t): t is string => t !== undefined), ...additionalTexts()];
  }

  // Post-processor (Llama's is made from add_bos/add_eos by the loader, as LlamaTokenizerFast does).
  const idOf = (text: string): number => addedIds.get(text) ?? modelIds.get(text) ?? unkId;
  let postProcessor: Json | null = null;
  if (name === 'DebertaV2' || name === 'Albert') {
    postProcessor = template([['[CLS]', 0], ['$A', 0], ['[SEP]', 0]], [['[CLS]', 0], ['$A', 0], ['[SEP]', 0], ['$B', 1], ['[SEP]', 1]], idOf);
  } else if (name === 'XLMRoberta') {
    postProcessor = template([['<s>', 0], ['$A', 0], ['</s>', 0]], [['<s>', 0], ['$A', 0], ['</s>', 0], ['</s>', 0], ['$B', 0], ['</s>', 0]], idOf);
  } else if (name === 'T5') {
    postProcessor = template([['$A', 0], ['</s>', 0]], [['$A', 0], ['</s>', 0], ['$B', 0], ['</s>', 0]], idOf);
  } else if (name === 'Pegasus') {
    const eos = roleText('eos') ?? '</s>';
    postProcessor = template([['$A', 0], [eos, 0]], [['$A', 0], ['$B', 0], [eos, 0]], idOf);
  } else if (name === 'MBart' || name === 'MBart50') {
    // set_src_lang_special_tokens: cc25 ends with </s> and the source language code, mBART-50
    // starts with the code and ends with </s>.
    const eos = roleText('eos') ?? '</s>';
    const src = typeof config['src_lang'] === 'string' ? config['src_lang'] : 'en_XX';
    if (!addedIds.has(src) && !modelIds.has(src)) throw new AttnscopeError(`tokenizer_config.json: src_lang ${quote(src, 40)} is not a language code of the tokenizer`);
    postProcessor = name === 'MBart'
      ? template([['$A', 0], [eos, 0], [src, 0]], [['$A', 0], ['$B', 0], [eos, 0], [src, 0]], idOf)
      : template([[src, 0], ['$A', 0], [eos, 0]], [[src, 0], ['$A', 0], ['$B', 0], [eos, 0]], idOf);
  }

  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added.map(({ id, ...t }) => ({ id, ...t })),
    normalizer,
    pre_tokenizer: preTokenizer,
    post_processor: postProcessor,
    decoder,
    model,
  };
  return { tokenizerJson: JSON.stringify(json), tokenizerConfig: JSON.stringify(filledConfig) };
}

/**
 * tokenizer_config.json's added_tokens_decoder sorted by id, or (older checkpoints) added_tokens.json's
 * {text: id} entries, special when the text is a special token (then not normalized).
 */
function readAddedTokensDecoder(config: Json, addedTokensJson: string | undefined, isSpecial: (text: string) => boolean): AddedToken[] {
  const decoder = config['added_tokens_decoder'];
  const entries: [number, AddedToken][] = [];
  if (decoder !== null && typeof decoder === 'object' && !Array.isArray(decoder)) {
    for (const [key, raw] of Object.entries(decoder as Json)) {
      const id = Number(key);
      const content = tokenText(raw);
      if (!Number.isInteger(id) || id < 0 || content === undefined) {
        throw new AttnscopeError(`tokenizer_config.json: added_tokens_decoder[${quote(key)}] is not an added token with a numeric id`);
      }
      const o = (typeof raw === 'object' && raw !== null ? raw : {}) as Json;
      // The fast tokenizer adds a token whose text is a special token with add_special_tokens.
      const special = bool(o['special'], false) || isSpecial(content);
      entries.push([id, {
        content, single_word: bool(o['single_word'], false), lstrip: bool(o['lstrip'], false), rstrip: bool(o['rstrip'], false),
        normalized: bool(o['normalized'], !special), special,
      }]);
    }
  } else if (addedTokensJson !== undefined) {
    for (const [content, id] of Object.entries(parseJsonObject(stripBom(addedTokensJson), 'added_tokens.json'))) {
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) throw new AttnscopeError(`added_tokens.json: the id of ${quote(content, 40)} is not a token id`);
      const special = isSpecial(content);
      entries.push([id, { content, single_word: false, lstrip: false, rstrip: false, normalized: !special, special }]);
    }
  }
  return entries.sort((a, b) => a[0] - b[0]).map(([, t]) => t);
}
