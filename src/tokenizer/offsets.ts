/**
 * Offset conversion. The `tokenizers` binding reports character offsets in Unicode code points
 * (Rust `encode_char_offsets`, like Python); attnscope uses JavaScript string indices (UTF-16
 * code units), so every astral character (🙂, 𝔘, ...) counts 2.
 */

/** Maps a code-point index of `text` to its UTF-16 index (`text.length` past the end). */
export type CodePointToUtf16 = (codePoint: number) => number;

const identity: CodePointToUtf16 = (i) => i;

/** Builds the code point → UTF-16 index map of `text` (identity when it has no surrogate pairs). */
export function codePointToUtf16(text: string): CodePointToUtf16 {
  if (!/[\uD800-\uDBFF][\uDC00-\uDFFF]/.test(text)) return identity;
  // utf16[cp] = UTF-16 index where code point cp starts; one extra entry for the end.
  const utf16: number[] = [];
  let i = 0;
  while (i < text.length) {
    utf16.push(i);
    const c = text.charCodeAt(i);
    const astral =
      c >= 0xd800 && c <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00;
    i += astral ? 2 : 1;
  }
  utf16.push(text.length);
  const last = utf16.length - 1;
  return (cp) => utf16[cp < 0 ? 0 : cp > last ? last : cp]!;
}
