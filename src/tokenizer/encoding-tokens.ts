/** Conversion of a `tokenizers` Encoding into attnscope Tokens. */
import type { Encoding } from 'tokenizers';
import type { Token } from '../core/trace.js';
import { codePointToUtf16 } from './offsets.js';

/**
 * Converts an Encoding of `text` (and `pair`) into Tokens with UTF-16 offsets. Token texts are the
 * vocabulary's names of the ids (`convert_ids_to_tokens`): a Unigram model reports an unknown
 * piece by its surface text (`東京`), transformers by the unk token (`<unk>`).
 */
export function tokensOfEncoding(
  enc: Encoding,
  text: string,
  pair: string | undefined,
  idToToken: (id: number) => string | null,
): Token[] {
  const ids = enc.getIds();
  const tokens = enc.getTokens();
  const offsets = enc.getOffsets();
  const words = enc.getWordIds();
  const seqIds = enc.getSequenceIds();
  const typeIds = enc.getTypeIds();
  const specialMask = enc.getSpecialTokensMask();
  const toUtf16 = [codePointToUtf16(text), codePointToUtf16(pair ?? '')] as const;
  // Template specials take their type id as segment when the template marks the pair with
  // type ids (BERT, Llama); otherwise (RoBERTa, T5: all zeros) the segment of the text they follow.
  const typedPair = pair !== undefined && typeIds.some((t) => t > 0);
  let lastSeq = 0;
  const out: Token[] = new Array<Token>(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const seq = seqIds[i];
    const special = specialMask[i] === 1;
    let segment: number;
    let start = 0;
    let end = 0;
    if (seq === null || seq === undefined) {
      segment = typedPair ? Math.min(typeIds[i]!, 1) : lastSeq;
    } else {
      segment = seq;
      lastSeq = seq;
      const map = toUtf16[seq === 1 ? 1 : 0];
      const [s, e] = offsets[i]!;
      start = map(s!);
      end = map(e!);
    }
    const word = words[i];
    out[i] = {
      id: ids[i]!,
      text: idToToken(ids[i]!) ?? tokens[i]!,
      start,
      end,
      special,
      segment,
      word: special || word === null || word === undefined ? null : word,
    };
  }
  return out;
}
