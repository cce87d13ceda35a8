/**
 * SentencePiece ModelProto files written by hand for the tokenizer tests (protobuf wire format):
 * the pieces (field 1: text, score, type) and a TrainerSpec (field 2: model_type, unk_id, and
 * byte_fallback when given).
 */

/** A protobuf varint. */
function varint(n: number): number[] {
  const out: number[] = [];
  for (; n >= 0x80; n = Math.floor(n / 0x80)) out.push((n % 0x80) | 0x80);
  return [...out, n];
}

/** A length-delimited field. */
const message = (field: number, body: number[]): number[] => [...varint(field * 8 + 2), ...varint(body.length), ...body];

/**
 * A ModelProto from pieces [text, score, type]; `modelType` 1 is unigram, 2 BPE; `byteFallback`
 * is written only when given.
 */
export function sentencePieceProto(pieces: readonly (readonly [string, number, number])[], options: { modelType?: number; unkId: number; byteFallback?: boolean }): Buffer {
  const out: number[] = [];
  for (const [text, score, type] of pieces) {
    const f = Buffer.alloc(4);
    f.writeFloatLE(score);
    out.push(...message(1, [...message(1, [...Buffer.from(text, 'utf8')]), 0x15, ...f, 0x18, type]));
  }
  const fallback = options.byteFallback === undefined ? [] : [...varint(35 * 8), options.byteFallback ? 1 : 0];
  out.push(...message(2, [0x18, options.modelType ?? 1, ...varint(40 * 8), ...varint(options.unkId), ...fallback]));
  return Buffer.from(out);
}
