/**
 * MarianTokenizer for checkpoints without a tokenizer.json (the Hub's Helsinki-NLP/opus-mt-*
 * ship only source.spm, target.spm and vocab.json, since transformers has no fast Marian
 * tokenizer): the text through source.spm, each piece looked up in vocab.json (unknown pieces →
 * `<unk>`), a leading `>>lang<<` code kept as one token, `</s>` appended — the slow tokenizer's
 * `_tokenize` and `build_inputs_with_special_tokens`. Decoding joins the pieces with ▁ as a space
 * and special tokens set apart by spaces, as its `convert_tokens_to_string` does.
 */
import { readFile } from 'node:fs/promises';
import { AttnscopeError, sanitize } from '../core/errors.js';
import type { Token } from '../core/trace.js';
import type { AttnTokenizer, EncodeOptions } from './load-tokenizer.js';
import { cleanUpTokenization, parseJsonObject, readTokenizerSettings, type SpecialToken, type TokenizerSettings } from './special-tokens.js';
import { readVocabJson, sentencePieceVocabEncoder, targetEncoder, type TargetEncoder } from './target-tokenizer.js';

/** Paths of a Marian checkpoint's tokenizer files when it has no tokenizer.json. */
export interface SentencePieceVocabFiles {
  sourceSpm: string;
  vocabJson: string;
  targetSpm?: string;
  targetVocabJson?: string;
  tokenizerConfig?: string;
  specialTokensMap?: string;
}

async function readBytes(path: string, what: string): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new AttnscopeError(`cannot read ${what} at ${path}: ${sanitize((err as Error).message, 200)}`, { cause: err });
  }
}

/** MarianTokenizer from source.spm + vocab.json (and target.spm for decoder text), as the slow tokenizer encodes. */
export async function loadSentencePieceVocabTokenizer(files: SentencePieceVocabFiles): Promise<SentencePieceVocabTokenizer> {
  const text = async (path: string | undefined, what: string): Promise<string | undefined> =>
    path === undefined ? undefined : new TextDecoder().decode(await readBytes(path, what));
  const json = async (path: string | undefined, what: string) => {
    const t = await text(path, what);
    return t === undefined ? undefined : parseJsonObject(t.charCodeAt(0) === 0xfeff ? t.slice(1) : t, what);
  };
  const config = await json(files.tokenizerConfig, 'tokenizer_config.json');
  const settings = readTokenizerSettings(config, await json(files.specialTokensMap, 'special_tokens_map.json'));
  const vocabText = (await text(files.vocabJson, 'vocab.json'))!;
  const vocab = readVocabJson(vocabText, 'vocab.json');
  const source = sentencePieceVocabEncoder(await readBytes(files.sourceSpm, 'source.spm'), 'source.spm', vocab, 'vocab.json', settings.roles);
  let target: TargetEncoder | undefined;
  if (files.targetSpm !== undefined) {
    const targetVocabJson = await text(files.targetVocabJson, 'target_vocab.json');
    target = targetEncoder({ spm: await readBytes(files.targetSpm, 'target.spm'), vocabJson: vocabText, ...(targetVocabJson !== undefined ? { targetVocabJson } : {}) }, config, settings.roles);
  }
  return new SentencePieceVocabTokenizer({ source, vocab, settings, ...(target ? { target } : {}) });
}

export interface SentencePieceVocabParts {
  /** The source side: source.spm's pieces with vocab.json ids, `</s>` appended. */
  source: TargetEncoder;
  /** vocab.json: piece → id. */
  vocab: ReadonlyMap<string, number>;
  settings: TokenizerSettings;
  /** The target side (target.spm), when the checkpoint has one. */
  target?: TargetEncoder;
}

export class SentencePieceVocabTokenizer implements AttnTokenizer {
  readonly eos?: SpecialToken;
  readonly unk?: SpecialToken;
  readonly pad?: SpecialToken;
  readonly modelMaxLength?: number;
  readonly vocabSize: number;
  readonly specialIds: ReadonlySet<number>;
  readonly encodeTarget?: (text: string) => Promise<Token[]>;
  readonly #source: TargetEncoder;
  readonly #tokens: Map<number, string>;
  readonly #ids: ReadonlyMap<string, number>;
  readonly #cleanUp: boolean;

  constructor(parts: SentencePieceVocabParts) {
    this.#source = parts.source;
    this.#ids = parts.vocab;
    this.#tokens = new Map([...parts.vocab].map(([piece, id]) => [id, piece]));
    this.vocabSize = this.#tokens.size;
    const named = (text: string | undefined): SpecialToken | undefined => (text === undefined ? undefined : { text, id: parts.vocab.get(text) ?? null });
    const { eos, unk, pad } = parts.settings.roles;
    const e = named(eos ?? '</s>');
    const u = named(unk ?? '<unk>');
    const p = named(pad ?? '<pad>');
    if (e) this.eos = e;
    if (u) this.unk = u;
    if (p) this.pad = p;
    const special = new Set<number>();
    for (const t of [e, u, p]) if (t?.id !== null && t?.id !== undefined) special.add(t.id);
    for (const text of parts.settings.additional) {
      const id = parts.vocab.get(text);
      if (id !== undefined) special.add(id);
    }
    this.specialIds = special;
    this.#cleanUp = parts.settings.cleanUpTokenizationSpaces;
    if (parts.settings.modelMaxLength !== undefined) this.modelMaxLength = parts.settings.modelMaxLength;
    const target = parts.target;
    if (target) this.encodeTarget = (text: string) => target.encode(text);
  }

  async encode(text: string, pair?: string, options: EncodeOptions = {}): Promise<Token[]> {
    if (typeof text !== 'string') throw new AttnscopeError('the text to encode must be a string');
    const withEos = await this.#source.encode(text);
    const eos = withEos[withEos.length - 1]!;
    let a = withEos.slice(0, -1);
    // A pair: A B </s> (build_inputs_with_special_tokens), B's tokens segment 1 with offsets into B.
    let b = typeof pair === 'string' && pair.length > 0 ? (await this.#source.encode(pair)).slice(0, -1).map((t) => ({ ...t, segment: 1 })) : [];
    const max = options.maxLength;
    if (max !== undefined) {
      // truncation='longest_first': one token at a time from the longer sequence, </s> kept.
      while (a.length + b.length + 1 > max && a.length + b.length > 0) {
        if (b.length > a.length) b = b.slice(0, -1);
        else a = a.slice(0, -1);
      }
    }
    // The closing </s> belongs to the segment it follows (as tokenizer.json's template gives it).
    return [...a, ...b, { ...eos, segment: b.length > 0 ? 1 : 0 }];
  }

  tokensFromIds(ids: readonly number[], typeIds?: readonly number[]): Token[] {
    if (typeIds !== undefined && typeIds.length !== ids.length) {
      throw new AttnscopeError(`got ${typeIds.length} token type ids for ${ids.length} token ids`);
    }
    return ids.map((id, i) => {
      const text = this.#tokens.get(id);
      if (text === undefined) throw new AttnscopeError(`token id ${id} is not in the vocabulary (vocab.json, ${this.vocabSize} tokens)`);
      return { id, text, start: 0, end: 0, special: this.specialIds.has(id), segment: typeIds?.[i] ?? 0, word: null };
    });
  }

  decode(ids: readonly number[], skipSpecial = false): string {
    let out = '';
    let pieces = '';
    const flush = (): void => {
      out += pieces.replaceAll('▁', ' ').replace(/^ /, '');
      pieces = '';
    };
    for (const id of ids) {
      const token = this.#tokens.get(id);
      if (token === undefined) continue;
      if (this.specialIds.has(id)) {
        if (skipSpecial) continue;
        flush();
        out += `${token} `;
      } else {
        pieces += token;
      }
    }
    flush();
    const text = out.trim();
    return this.#cleanUp ? cleanUpTokenization(text) : text;
  }

  idToToken(id: number): string | null {
    return this.#tokens.get(id) ?? null;
  }

  tokenToId(text: string): number | null {
    return this.#ids.get(text) ?? null;
  }
}
