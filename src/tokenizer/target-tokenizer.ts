/**
 * The target side of tokenizers that encode decoder text with their own SentencePiece model
 * (MarianTokenizer: `target.spm`, pieces mapped to ids through `vocab.json`, or
 * `target_vocab.json` with `separate_vocabs`). transformers 4.40 has only the slow tokenizer for
 * it: `text_target` goes through the target model's `encode(text, out_type=str)`, each piece is
 * looked up in the vocabulary (unknown pieces → `<unk>`), a leading `>>lang<<` code is kept as one
 * token, and `</s>` is appended.
 *
 * The SentencePiece unigram model is rebuilt as a `tokenizers` Unigram over the .spm's pieces and
 * scores, with its normalizer (precompiled charsmap, then SentencePiece's whitespace clean-up:
 * leading/trailing spaces dropped, runs collapsed) and Metaspace (▁, the dummy prefix when the
 * model adds one); control pieces (`</s>`, `<s>`) are split off the text as special tokens, as
 * the slow tokenizer splits its special tokens.
 */
import { Tokenizer } from 'tokenizers';
import { AttnscopeError, sanitize } from '../core/errors.js';
import type { Token } from '../core/trace.js';
import { tokensOfEncoding } from './encoding-tokens.js';
import { precompiledCharsmapProblem } from './precompiled.js';
import { readSentencePieceModel, type SentencePieceModel } from './sentencepiece-model.js';
import { parseJsonObject, type SpecialTokenRole } from './special-tokens.js';

export interface TargetEncoder {
  /** Tokens of a decoder (target) text, `</s>` appended, with ids of the model's vocabulary. */
  encode(text: string): Promise<Token[]>;
}

/** The tokenizer.json (as an object) that runs `spm` as SentencePiece does. */
function sentencePieceTokenizerJson(spm: SentencePieceModel, what: string): Record<string, unknown> {
  if (spm.modelType !== 'unigram') throw new AttnscopeError(`${what}: a '${spm.modelType}' SentencePiece model; only unigram target models are supported`);
  const unkId = spm.pieces.findIndex((p) => p.type === 'unknown');
  if (unkId < 0) throw new AttnscopeError(`${what}: the SentencePiece model has no unknown piece`);
  const n = spm.normalizer;
  const normalizers: Record<string, unknown>[] = [];
  if (n.precompiledCharsmap.length > 0) {
    const base64 = Buffer.from(n.precompiledCharsmap).toString('base64');
    const problem = precompiledCharsmapProblem(base64);
    if (problem) throw new AttnscopeError(`${what}: the normalizer's precompiled_charsmap ${problem}`);
    normalizers.push({ type: 'Precompiled', precompiled_charsmap: base64 });
  }
  if (n.removeExtraWhitespaces) {
    normalizers.push({ type: 'Strip', strip_left: true, strip_right: true });
    normalizers.push({ type: 'Replace', pattern: { Regex: ' {2,}' }, content: ' ' });
  }
  const metaspace = { type: 'Metaspace', replacement: '▁', prepend_scheme: n.addDummyPrefix ? 'always' : 'never', split: true };
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: spm.pieces.flatMap((p, id) => p.type === 'control' ? [{
      id, content: p.piece, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
    }] : []),
    normalizer: normalizers.length > 0 ? { type: 'Sequence', normalizers } : null,
    pre_tokenizer: metaspace,
    post_processor: null,
    decoder: metaspace,
    model: { type: 'Unigram', unk_id: unkId, vocab: spm.pieces.map((p) => [p.piece, p.score]), byte_fallback: spm.byteFallback },
  };
}

/**
 * A target-side encoder: `spm` gives the pieces, `vocab` (piece → id) their ids, `eos` is
 * appended; `unk` is the id of pieces the vocabulary lacks. `what` names the .spm file in errors.
 */
export function createTargetEncoder(spm: SentencePieceModel, vocab: ReadonlyMap<string, number>, eos: Token, unk: number, what: string): TargetEncoder {
  let tk: Tokenizer;
  try {
    tk = Tokenizer.fromString(JSON.stringify(sentencePieceTokenizerJson(spm, what)));
  } catch (err) {
    if (err instanceof AttnscopeError) throw err;
    throw new AttnscopeError(`${what}: cannot build its tokenizer: ${sanitize((err as Error).message, 240)}`, { cause: err });
  }
  const idOf = (piece: string): number => vocab.get(piece) ?? unk;
  return {
    async encode(text: string): Promise<Token[]> {
      if (typeof text !== 'string') throw new AttnscopeError('the decoder text to encode must be a string');
      // remove_language_code: a leading `>>xx<<` is one token, looked up as it is.
      const end = text.startsWith('>>') ? text.indexOf('<<') : -1;
      const code: Token[] = end >= 0 ? [{ id: idOf(text.slice(0, end + 2)), text: text.slice(0, end + 2), start: 0, end: end + 2, special: false, segment: 0, word: 0 }] : [];
      const rest = end >= 0 ? text.slice(end + 2) : text;
      let pieces: Token[] = [];
      if (rest.length > 0) {
        try {
          const enc = await tk.encode(rest, null, { addSpecialTokens: false });
          pieces = tokensOfEncoding(enc, rest, undefined, (id) => tk.idToToken(id));
        } catch (err) {
          throw new AttnscopeError(`cannot tokenize the decoder text: ${sanitize((err as Error).message, 240)}`, { cause: err });
        }
      }
      const shift = text.length - rest.length;
      const mapped = pieces.map((t) => ({ ...t, id: idOf(t.text), start: t.start + shift, end: t.end + shift, word: t.word === null ? null : t.word + code.length }));
      return [...code, ...mapped, { ...eos, start: 0, end: 0, special: true, segment: 0, word: null }];
    },
  };
}

/**
 * A separate target (decoder) side, as MarianTokenizer has: `target.spm`, and the pieces' ids
 * in `vocab.json` (or `target_vocab.json` when tokenizer_config.json sets `separate_vocabs`).
 */
export interface TargetSideSources {
  spm: Uint8Array;
  vocabJson: string;
  targetVocabJson?: string;
}

/** A vocab.json (piece → id) as a map; `what` names the file in errors. */
export function readVocabJson(text: string, what: string): Map<string, number> {
  const raw = parseJsonObject(text.charCodeAt(0) === 0xfeff ? text.slice(1) : text, what);
  const vocab = new Map<string, number>();
  for (const [piece, id] of Object.entries(raw)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 0xffffffff) {
      throw new AttnscopeError(`${what}: the id of ${JSON.stringify(piece.slice(0, 40))} is not a token id`);
    }
    vocab.set(piece, id);
  }
  return vocab;
}

/** The encoder of one side: `spm`'s pieces, ids from `vocab`, its `</s>` appended. */
export function sentencePieceVocabEncoder(
  spm: Uint8Array, spmName: string, vocab: ReadonlyMap<string, number>, vocabName: string, roles: Partial<Record<SpecialTokenRole, string>>,
): TargetEncoder {
  const eosText = roles.eos ?? '</s>';
  const unkText = roles.unk ?? '<unk>';
  const eos = vocab.get(eosText);
  const unk = vocab.get(unkText);
  if (eos === undefined || unk === undefined) throw new AttnscopeError(`${vocabName} has no ${eos === undefined ? eosText : unkText} token`);
  const model = readSentencePieceModel(spm, spmName);
  return createTargetEncoder(model, vocab, { id: eos, text: eosText, start: 0, end: 0, special: true, segment: 0, word: null }, unk, spmName);
}

/** The target-side encoder of `target`: pieces of target.spm, ids of the (target) vocabulary. */
export function targetEncoder(
  target: TargetSideSources, config: Readonly<Record<string, unknown>> | undefined, roles: Partial<Record<SpecialTokenRole, string>>,
): TargetEncoder {
  const separate = config?.separate_vocabs === true;
  if (separate && target.targetVocabJson === undefined) {
    throw new AttnscopeError('tokenizer_config.json sets separate_vocabs but there is no target_vocab.json');
  }
  const what = separate ? 'target_vocab.json' : 'vocab.json';
  const vocab = readVocabJson(separate ? target.targetVocabJson! : target.vocabJson, what);
  return sentencePieceVocabEncoder(target.spm, 'target.spm', vocab, what, roles);
}
