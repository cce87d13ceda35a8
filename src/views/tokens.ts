/**
 * Token display utilities shared by every view (SVG exports and the interactive HTML app):
 * prettifying tokenizer markers, escaping, and the "display stack" — one attention stack of a
 * Trace after the display transforms (hide special tokens, merge sub-words into words).
 *
 * Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../core/errors.js';
import type { LayerStack, StackName, Token, Trace } from '../core/trace.js';
import { stepWindow } from './generation.js';

// --- escaping ------------------------------------------------------------------------------------

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/**
 * Characters XML 1.0 does not allow (C0 controls other than tab/LF/CR, U+FFFE/U+FFFF, lone
 * surrogates). They are replaced by U+FFFD so that SVG output stays well-formed.
 */
// eslint-disable-next-line no-control-regex
const XML_INVALID = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * Escapes text for HTML and XML (SVG) text content and attribute values (both quote kinds),
 * replacing characters XML cannot hold by U+FFFD.
 */
export function escapeHtml(text: string): string {
  return text.replace(XML_INVALID, '\uFFFD').replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

// --- prettifying ---------------------------------------------------------------------------------

/** Model types whose tokenizers are byte-level BPE (GPT-2 style `Ġ` = space, `Ċ` = newline). */
const BYTE_LEVEL_MODEL_TYPES = new Set([
  'gpt2', 'gpt_neo', 'gpt_neox', 'gptj', 'roberta', 'bart', 'mbart', 'longformer', 'deberta', 'qwen2', 'qwen3',
  'qwen2_moe', 'phi', 'phi3', 'opt', 'codegen', 'bloom', 'falcon', 'starcoder2', 'olmo', 'olmo2', 'mpt',
]);

/** GPT-2's bytes_to_unicode table inverted: the printable character each byte was mapped to → byte. */
const BYTE_OF_CHAR: Map<number, number> = (() => {
  const map = new Map<number, number>();
  const direct = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (direct(b)) map.set(b, b);
    else map.set(256 + n++, b);
  }
  return map;
})();

const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Decodes a byte-level BPE token to its text, or null if it is not (complete) byte-level UTF-8. */
function decodeByteLevel(text: string): string | null {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const b = BYTE_OF_CHAR.get(text.charCodeAt(i));
    if (b === undefined) return null;
    bytes[i] = b;
  }
  try {
    return UTF8.decode(bytes);
  } catch {
    return null; // a piece of a multi-byte character: keep the token's own spelling
  }
}

/** Visible stand-ins for whitespace and control characters inside a token. */
function visibleControls(text: string): string {
  let out = '';
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if (ch === '\n') out += '⏎';
    else if (ch === '\r') out += '␍';
    else if (ch === '\t') out += '⇥';
    else if (c < 0x20) out += String.fromCodePoint(0x2400 + c); // ␀ … ␟
    else if (c === 0x7f) out += '␡';
    else out += ch;
  }
  return out;
}

/** Decodes a run of sentencepiece byte-fallback tokens (`<0xE2><0x9C><0x93>`), or null. */
function decodeByteRun(run: string): string | null {
  const bytes = Uint8Array.from(run.slice(3, -1).split('><0x'), (h) => parseInt(h, 16));
  try {
    return UTF8.decode(bytes);
  } catch {
    return null; // a piece of a character: keep <0xNN>
  }
}

const BYTE_RUN = /(?:<0x[0-9A-Fa-f]{2}>)+/g;

export type ContinuationStyle = 'keep' | 'mark' | 'strip';

export interface PrettifyOptions {
  /**
   * WordPiece continuation pieces (`##ing`): shown as-is ('keep', the default), marked with a
   * leading `·` ('mark': `·ing`), or stripped ('strip': `ing`, used when pieces are joined).
   */
  continuation?: ContinuationStyle;
  /**
   * Whether the token is byte-level BPE (`Ġ` = space): true, false, or (undefined) guessed from
   * the model type and the token's characters. prettifyTokens decides it for a whole sequence.
   */
  byteLevel?: boolean;
}

/** True if the token is a WordPiece continuation piece (`##ing`). */
export function isContinuationPiece(text: string): boolean {
  return text.length > 2 && text.startsWith('##');
}

/**
 * The readable text of a token: byte-level BPE (`Ġ` → space, `Ċ` → ⏎, multi-byte UTF-8 decoded),
 * sentencepiece (`▁` → space), byte fallback (`<0x0A>` → ⏎, `<0x41>` → A), WordPiece `##` per
 * `options.continuation`. Leading spaces are kept (they mark word starts); newlines, tabs and
 * control characters become visible symbols so a token is always one line. A token that is only
 * whitespace shows as `␣` (one per space).
 */
export function prettifyToken(text: string, modelType?: string, options: PrettifyOptions = {}): string {
  let out = text;
  const sentencepiece = text.includes('▁') || /<0x[0-9A-Fa-f]{2}>/.test(text);
  if (sentencepiece) {
    out = text.replace(BYTE_RUN, (run) => decodeByteRun(run) ?? run).replace(/▁/g, ' ');
  } else if (
    options.byteLevel ??
    ((modelType !== undefined && BYTE_LEVEL_MODEL_TYPES.has(modelType)) || /[\u0100-\u0143]/.test(text)) // Ġ, Ċ, ĉ ... only byte-level BPE produces these
  ) {
    out = decodeByteLevel(text) ?? text.replace(/Ġ/g, ' ').replace(/Ċ/g, '\n').replace(/ĉ/g, '\t');
  }
  if (isContinuationPiece(out)) {
    const style = options.continuation ?? 'keep';
    if (style === 'strip') out = out.slice(2);
    else if (style === 'mark') out = `·${out.slice(2)}`;
  }
  if (out.length > 0 && out.trim() === '' && !/[\n\r\t]/.test(out)) return '␣'.repeat(out.length);
  return visibleControls(out);
}

/** A display label: the prettified text without leading/trailing spaces (or `␣` if that is empty). */
export function tokenLabel(prettified: string): string {
  const t = prettified.trim();
  return t === '' ? (prettified === '' ? '∅' : '␣') : t;
}

// --- token sequences -------------------------------------------------------------------------------

/** The mark a label starts with when its token continues the previous token's word without a break (`▁g` `ir` `l` → `g` `·ir` `·l`). */
export const JOIN_MARK = '·';

/**
 * The label of a token that only carries the rest of a character shown on an earlier token
 * (`<0xC3>` `<0xAF>` → `ï` `⋯`): a midline ellipsis, which no period or middle dot is mistaken for.
 */
export const BYTE_TAIL_MARK = '⋯';

/**
 * Whether a sequence's tokenizer spells tokens as bytes (GPT-2 style byte-level BPE): a byte-level
 * model type, or a token with `Ġ` (space) or `Ċ` (newline) — and no sentencepiece `▁` (letters
 * such as Maltese ġ or Polish ł are not bytes in other tokenizers).
 */
function isByteLevelSequence(tokens: readonly Pick<Token, 'text' | 'special'>[], modelType: string | undefined): boolean {
  const words = tokens.filter((t) => !t.special);
  if (words.some((t) => t.text.includes('▁'))) return false;
  return (modelType !== undefined && BYTE_LEVEL_MODEL_TYPES.has(modelType)) || words.some((t) => /[ĠĊ]/.test(t.text));
}

function looksSentencepiece(text: string): boolean {
  return text.includes('▁') || /<0x[0-9A-Fa-f]{2}>/.test(text);
}

const ENCODER = new TextEncoder();

/**
 * The bytes a token spells when they may hold part of a character: sentencepiece pieces (`▁` as a
 * space, `<0xNN>` as the byte NN) and byte-level BPE tokens. Null for other tokens (plain text is
 * whole characters) and for byte-level spellings that do not map to bytes.
 */
function spelledBytes(text: string, byteLevel: boolean): Uint8Array | null {
  if (looksSentencepiece(text)) {
    const parts: number[] = [];
    for (const piece of text.split(/(<0x[0-9A-Fa-f]{2}>)/)) {
      if (/^<0x[0-9A-Fa-f]{2}>$/.test(piece)) parts.push(parseInt(piece.slice(3, 5), 16));
      else if (piece) for (const b of ENCODER.encode(piece.replace(/▁/g, ' '))) parts.push(b);
    }
    return Uint8Array.from(parts);
  }
  if (!byteLevel) return null;
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const b = BYTE_OF_CHAR.get(text.charCodeAt(i));
    if (b === undefined) return null;
    bytes[i] = b;
  }
  return bytes;
}

/** Length of the UTF-8 sequence a lead byte starts (0: not a lead byte). */
function utf8Length(lead: number): number {
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) return 2;
  if (lead >= 0xe0 && lead <= 0xef) return 3;
  if (lead >= 0xf0 && lead <= 0xf4) return 4;
  return 0;
}

interface RunPiece {
  /** Characters whose first byte is in this token. */
  chars: string;
  /** The token holds bytes of a character begun by an earlier token. */
  tail: boolean;
  /** The token holds bytes that form no character with their neighbours. */
  invalid: boolean;
}

/**
 * Decodes consecutive tokens' bytes as one UTF-8 stream: each character goes to the token holding
 * its first byte. Bytes that form no valid character are flagged on the tokens holding them.
 */
function decodeRun(bytes: readonly Uint8Array[]): RunPiece[] {
  const all: number[] = [];
  const owner: number[] = [];
  bytes.forEach((b, t) => {
    for (const x of b) {
      all.push(x);
      owner.push(t);
    }
  });
  const out: RunPiece[] = bytes.map(() => ({ chars: '', tail: false, invalid: false }));
  for (let i = 0; i < all.length; ) {
    const n = utf8Length(all[i]!);
    let ch: string | null = null;
    if (n > 0 && i + n <= all.length) {
      try {
        ch = UTF8.decode(Uint8Array.from(all.slice(i, i + n)));
      } catch {
        ch = null;
      }
    }
    if (ch === null) {
      out[owner[i]!]!.invalid = true;
      i++;
      continue;
    }
    out[owner[i]!]!.chars += ch;
    for (let j = i + 1; j < i + n; j++) if (owner[j] !== owner[i]) out[owner[j]!]!.tail = true;
    i += n;
  }
  return out;
}

/** Whitespace-only text as `␣`s, controls as visible symbols (as prettifyToken finishes a token). */
function finishText(out: string): string {
  if (out.length > 0 && out.trim() === '' && !/[\n\r\t]/.test(out)) return '␣'.repeat(out.length);
  return visibleControls(out);
}

/** A prettified token of a sequence: its text, its label, and whether it only carries the rest of a character. */
export interface PrettyToken {
  /** As prettifyToken, but with characters that span tokens decoded ('' for a token holding only the rest of one). */
  text: string;
  /** What views print: the trimmed text, `·`-marked when the token continues the previous token's word (`⋯` for the rest of a character). */
  label: string;
  /** The token holds only bytes of a character shown on an earlier token. */
  byteTail: boolean;
}

/** Letters, digits and marks of scripts that separate words by spaces (not Han, kana or Thai, whose neighbours are not one word). */
const WORDLIKE = /[\p{L}\p{N}\p{M}]/u;
const UNSPACED = /[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}\p{Script=Thai}\p{Script=Lao}\p{Script=Khmer}\p{Script=Myanmar}]/u;
const wordlike = (ch: string | undefined): boolean => ch !== undefined && WORDLIKE.test(ch) && !UNSPACED.test(ch);

/**
 * Prettifies the tokens of one sequence, reading them together:
 *
 * - Characters split over several tokens — sentencepiece byte fallback (`<0xC3>` `<0xAF>`) or
 *   byte-level BPE pieces — are decoded: the character is shown on the token holding its first
 *   byte, and each following token that holds only the rest of it is labelled `⋯`. Bytes that
 *   form no character keep their own spelling (`<0xC3>`).
 * - With tokenizers that mark word starts (`▁`, `Ġ`), a token that continues a word — no marker,
 *   a letter or digit right after the previous token's letter or digit — is labelled with a
 *   leading `·` (`▁g` `ir` `l` → `g` `·ir` `·l`), so that a word split into pieces does not read
 *   as several words. Word starts and punctuation are shown plain; WordPiece keeps its `##`.
 *
 * Special tokens break runs and are prettified alone.
 */
export function prettifyTokens(tokens: readonly Pick<Token, 'text' | 'special' | 'segment'>[], modelType?: string): PrettyToken[] {
  const byteLevel = isByteLevelSequence(tokens, modelType);
  const out: PrettyToken[] = tokens.map((t) => {
    const text = prettifyToken(t.text, modelType, t.special ? {} : { byteLevel });
    return { text, label: tokenLabel(text), byteTail: false };
  });
  // Runs of consecutive non-special tokens of one segment that spell bytes.
  const spelled = tokens.map((t) => (t.special ? null : spelledBytes(t.text, byteLevel)));
  for (let i = 0; i < tokens.length; ) {
    if (!spelled[i]) {
      i++;
      continue;
    }
    let j = i + 1;
    while (j < tokens.length && spelled[j] && tokens[j]!.segment === tokens[i]!.segment) j++;
    const pieces = decodeRun(spelled.slice(i, j) as Uint8Array[]);
    pieces.forEach((p, n) => {
      if (p.invalid) return; // keeps the token's own spelling
      if (p.chars === '' && p.tail) {
        out[i + n] = { text: '', label: BYTE_TAIL_MARK, byteTail: true };
        return;
      }
      let text = p.chars;
      // WordPiece continuation markers are not bytes: keep prettifyToken's reading of them.
      if (isContinuationPiece(text)) return;
      text = finishText(text);
      out[i + n] = { text, label: tokenLabel(text), byteTail: false };
    });
    i = j;
  }
  // Word continuations, for tokenizers that mark word starts.
  const marksWords = (modelType !== undefined && BYTE_LEVEL_MODEL_TYPES.has(modelType)) || tokens.some((t) => !t.special && /^[▁Ġ]/.test(t.text));
  if (marksWords) {
    let prev: string | null = null;
    tokens.forEach((t, i) => {
      const p = out[i]!;
      if (t.special || (i > 0 && tokens[i - 1]!.segment !== t.segment)) {
        prev = null;
        if (t.special) return;
      }
      if (p.byteTail) return;
      if (prev !== null && wordlike([...prev].at(-1)) && wordlike([...p.text][0]) && !isContinuationPiece(t.text)) {
        out[i] = { ...p, label: `${JOIN_MARK}${p.label}` };
      }
      prev = p.text;
    });
  }
  return out;
}

// --- display stacks ------------------------------------------------------------------------------

export interface DisplayToken {
  /** Prettified text (may start with a space marking a word start). */
  text: string;
  /** What views print: `text` trimmed (never empty). Not escaped: escape with escapeHtml. */
  label: string;
  /** The raw token texts joined (for tooltips). */
  raw: string;
  /** Positions of the trace's tokens this display token stands for (more than one once merged). */
  positions: number[];
  special: boolean;
  segment: number;
  /** Word index within the segment (inferred from markers when the trace has none), or null. */
  word: number | null;
  /** Generation traces: the token (or one of its merged pieces) was generated by the model. */
  generated: boolean;
}

/**
 * One attention stack prepared for display. `layers[l]` is row-major [heads][queries][keys]
 * with `queryTokens.length` rows and `keyTokens.length` columns. Without transforms the arrays are
 * the trace's own (no copy): treat them as read-only.
 */
export interface DisplayStack {
  stack: StackName;
  numHeads: number;
  queryTokens: DisplayToken[];
  keyTokens: DisplayToken[];
  layers: Float32Array[];
  /** Whether special tokens were hidden and sub-words merged (weights are not renormalised). */
  hiddenSpecial: boolean;
  mergedSubwords: boolean;
  /** Generation traces: the step shown (null: the whole sequence). */
  step: number | null;
  /** At a step: the query index of the newest token (null when it is hidden, or for the encoder). */
  newest: number | null;
}

export interface DisplayOptions {
  /** Drop the rows and columns of special tokens ([CLS], <s>, ...). */
  hideSpecial?: boolean;
  /** Merge sub-word tokens into words: sum over key pieces, mean over query pieces. */
  mergeSubwords?: boolean;
  /** Only these layers are materialised (others are empty arrays); default all. */
  layers?: readonly number[];
  /**
   * Generation traces: the sequence as it was at generated token `step` (0 = the prompt alone):
   * the first promptLength + step queries (and keys, except cross attention's encoder keys).
   */
  step?: number;
}

/** The stacks a trace holds, in canonical order. */
export function traceStacks(trace: Trace): StackName[] {
  return (['self', 'encoder', 'decoder', 'cross'] as const).filter((s) => trace.attention[s] !== undefined);
}

/** The stack views show by default: `self`, or `encoder` for encoder-decoder traces. */
export function defaultStack(trace: Trace): StackName {
  const s = traceStacks(trace)[0];
  if (!s) throw new AttnscopeError('trace holds no attention');
  return s;
}

/** A stack of the trace, with a clear error naming the ones it has. */
export function requireStack(trace: Trace, stack: StackName, what: 'attention' | 'queries' | 'keys' = 'attention'): LayerStack {
  const map = trace[what];
  const s = map?.[stack];
  if (!s) {
    if (what !== 'attention' && !map) throw new AttnscopeError(`trace has no ${what} (trace with --qk)`);
    const have = Object.keys(map ?? {}).join(', ') || 'none';
    throw new AttnscopeError(`trace has no ${what} for stack '${stack}' (it has: ${have})`);
  }
  return s;
}

/** Query and key tokens of a stack: cross attention reads decoder queries against encoder keys. */
export function stackTokens(trace: Trace, stack: StackName): { queryTokens: Token[]; keyTokens: Token[] } {
  if (stack === 'self' || stack === 'encoder') return { queryTokens: trace.tokens, keyTokens: trace.tokens };
  const dec = trace.decoderTokens;
  if (!dec) throw new AttnscopeError(`stack '${stack}' needs decoder tokens, which the trace does not have`);
  return stack === 'decoder' ? { queryTokens: dec, keyTokens: dec } : { queryTokens: dec, keyTokens: trace.tokens };
}

/**
 * Word indices for tokens that have none (e.g. a trace written with plain-string tokens): from
 * the markers, `##` continues a word (WordPiece), a leading space / `Ġ` / `▁` starts one (BPE,
 * sentencepiece). Tokens that already carry a word index keep it.
 */
export function inferWords(tokens: readonly Token[]): (number | null)[] {
  if (tokens.every((t) => t.special || t.word !== null)) return tokens.map((t) => (t.special ? null : t.word));
  const wordPiece = tokens.some((t) => isContinuationPiece(t.text));
  const out: (number | null)[] = [];
  let word = -1;
  let segment = -1;
  let prevSpecial = true;
  for (const t of tokens) {
    if (t.special) {
      out.push(null);
      prevSpecial = true;
      continue;
    }
    if (t.segment !== segment) {
      segment = t.segment;
      word = -1;
      prevSpecial = true;
    }
    if (t.word !== null) {
      out.push(t.word);
      word = t.word;
      prevSpecial = false;
      continue;
    }
    const starts = wordPiece ? !isContinuationPiece(t.text) : /^[\sĠ▁Ċ]/.test(t.text) || /^<0x(0A|20|09)>$/.test(t.text);
    if (prevSpecial || starts || word < 0) word++;
    out.push(word);
    prevSpecial = false;
  }
  return out;
}

/**
 * Whether a token looks like a template special token (`<s>`, `</s>`, `<pad>`, `[CLS]`,
 * `<|endoftext|>`). Used only for tokens from outside producers (id -1, plain strings), which
 * do not say which tokens are special.
 */
export function looksSpecial(text: string): boolean {
  return /^(<\/?[A-Za-z_]+>|\[[A-Z]+\]|<\|[^|]*\|>|<extra_id_\d+>)$/.test(text) && !/^<0x[0-9A-Fa-f]{2}>$/.test(text);
}

/** Display tokens of trace tokens, no transform (labels prettified for the model type). */
export function displayTokens(tokens: readonly Token[], modelType: string | undefined): DisplayToken[] {
  const marked = tokens.map((t) => (t.id < 0 && !t.special && looksSpecial(t.text) ? { ...t, special: true, word: null } : t));
  const words = inferWords(marked);
  const pretty = prettifyTokens(marked, modelType);
  return marked.map((t, i) => {
    const { text, label } = pretty[i]!;
    return { text, label, raw: t.text, positions: [i], special: t.special, segment: t.segment, word: words[i] ?? null, generated: t.generated === true };
  });
}

/** The display stack of a trace's stack with no transform applied (shares the trace's arrays). */
export function rawDisplayStack(trace: Trace, stack: StackName = defaultStack(trace)): DisplayStack {
  const s = requireStack(trace, stack);
  const { queryTokens, keyTokens } = stackTokens(trace, stack);
  return {
    stack,
    numHeads: s.dims[0],
    queryTokens: displayTokens(queryTokens, trace.model.modelType),
    keyTokens: displayTokens(keyTokens, trace.model.modelType),
    layers: s.layers.slice(),
    hiddenSpecial: false,
    mergedSubwords: false,
    step: null,
    newest: null,
  };
}

/**
 * The first `nq` queries and `nk` keys of a display stack (copies of the layers in `only`, or of
 * every layer). Views of a generation step use it on the raw stack: each kept row is exactly the
 * row the model computed then, since a causal row has no weight on later keys.
 */
export function cutDisplayStack(ds: DisplayStack, nq: number, nk: number, only?: ReadonlySet<number>): DisplayStack {
  const oldQ = ds.queryTokens.length;
  const oldK = ds.keyTokens.length;
  if (nq === oldQ && nk === oldK) return ds;
  const layers = ds.layers.map((layer, l) => {
    if ((only && !only.has(l)) || layer.length === 0) return new Float32Array(0);
    const out = new Float32Array(ds.numHeads * nq * nk);
    for (let h = 0; h < ds.numHeads; h++) {
      for (let q = 0; q < nq; q++) out.set(layer.subarray((h * oldQ + q) * oldK, (h * oldQ + q) * oldK + nk), (h * nq + q) * nk);
    }
    return out;
  });
  return { ...ds, queryTokens: ds.queryTokens.slice(0, nq), keyTokens: ds.keyTokens.slice(0, nk), layers };
}

type Reduce = 'sum' | 'mean';

/**
 * Regroups a display stack: new query i = reduce over old queries `queryGroups[i]`, new key j =
 * reduce over old keys `keyGroups[j]`. Only layers in `only` (if given) are computed.
 */
function regroup(
  ds: DisplayStack,
  queryGroups: number[][],
  keyGroups: number[][],
  queryReduce: Reduce,
  keyReduce: Reduce,
  makeToken: (old: DisplayToken[], group: number[]) => DisplayToken,
  only?: ReadonlySet<number>,
): DisplayStack {
  const oldQ = ds.queryTokens.length;
  const oldK = ds.keyTokens.length;
  const nq = queryGroups.length;
  const nk = keyGroups.length;
  const layers = ds.layers.map((layer, l) => {
    if ((only && !only.has(l)) || layer.length === 0) return new Float32Array(0);
    const out = new Float32Array(ds.numHeads * nq * nk);
    const row = new Float64Array(nk);
    for (let h = 0; h < ds.numHeads; h++) {
      for (let qi = 0; qi < nq; qi++) {
        row.fill(0);
        const qg = queryGroups[qi]!;
        for (const q of qg) {
          const base = (h * oldQ + q) * oldK;
          for (let kj = 0; kj < nk; kj++) {
            const kg = keyGroups[kj]!;
            let s = 0;
            for (const k of kg) s += layer[base + k]!;
            row[kj]! += keyReduce === 'mean' ? s / kg.length : s;
          }
        }
        const scale = queryReduce === 'mean' ? 1 / qg.length : 1;
        const dst = (h * nq + qi) * nk;
        for (let kj = 0; kj < nk; kj++) out[dst + kj] = row[kj]! * scale;
      }
    }
    return out;
  });
  return {
    ...ds,
    queryTokens: queryGroups.map((g) => makeToken(ds.queryTokens, g)),
    keyTokens: keyGroups.map((g) => makeToken(ds.keyTokens, g)),
    layers,
  };
}

/** Drops the rows and columns of special tokens. Weights are kept as they are (not renormalised). */
export function hideSpecialTokens(ds: DisplayStack, only?: ReadonlySet<number>): DisplayStack {
  const keep = (tokens: DisplayToken[]) => tokens.flatMap((t, i) => (t.special ? [] : [[i]]));
  const qg = keep(ds.queryTokens);
  const kg = keep(ds.keyTokens);
  if (qg.length === 0 || kg.length === 0) throw new AttnscopeError('hiding special tokens leaves no tokens to show');
  const out = regroup(ds, qg, kg, 'sum', 'sum', (old, g) => old[g[0]!]!, only);
  return { ...out, hiddenSpecial: true };
}

/** True if a raw token text starts a word by its own marker (sentencepiece `▁`, byte-level `Ġ`, a space). */
function startsWordByMarker(raw: string): boolean {
  return /^[▁Ġ\s]/.test(raw);
}

/**
 * Groups consecutive tokens of the same segment and word; special tokens stay alone. A token
 * whose own marker says it starts a word (`▁`, `Ġ`) starts a new group even if the tokenizer gave
 * it the same word index (sentencepiece tokenizers such as Llama's report one word per text).
 */
function wordGroups(tokens: DisplayToken[]): number[][] {
  const groups: number[][] = [];
  let prev: DisplayToken | undefined;
  tokens.forEach((t, i) => {
    if (
      prev && !t.special && !prev.special && t.word !== null && t.word === prev.word && t.segment === prev.segment &&
      !startsWordByMarker(t.raw)
    ) {
      groups[groups.length - 1]!.push(i);
    } else {
      groups.push([i]);
    }
    prev = t;
  });
  return groups;
}

function mergedToken(modelType: string | undefined) {
  return (old: DisplayToken[], group: number[]): DisplayToken => {
    if (group.length === 1) return old[group[0]!]!;
    const parts = group.map((i) => old[i]!);
    // Byte-level and sentencepiece pieces are joined before decoding (a character may span pieces);
    // WordPiece continuation pieces lose their `##`.
    const wordPiece = parts.some((p, n) => n > 0 && isContinuationPiece(p.raw));
    const text = wordPiece
      ? parts.map((p, n) => (n > 0 ? prettifyToken(p.raw, modelType, { continuation: 'strip' }) : p.text)).join('')
      : prettifyToken(parts.map((p) => p.raw).join(''), modelType);
    return {
      text,
      label: tokenLabel(text),
      raw: parts.map((p) => p.raw).join(' '),
      positions: parts.flatMap((p) => p.positions),
      special: false,
      segment: parts[0]!.segment,
      word: parts[0]!.word,
      generated: parts.some((p) => p.generated),
    };
  };
}

/**
 * Merges sub-word tokens into words using the tokens' word indices: a word's attention to a key
 * word is the SUM over the key's pieces (rows still sum to 1), averaged (MEAN) over the query's pieces.
 */
export function mergeSubwords(ds: DisplayStack, modelType?: string, only?: ReadonlySet<number>): DisplayStack {
  const out = regroup(ds, wordGroups(ds.queryTokens), wordGroups(ds.keyTokens), 'mean', 'sum', mergedToken(modelType), only);
  return { ...out, mergedSubwords: true };
}

/**
 * The display stack every view draws: the trace's stack, optionally without special tokens and
 * with sub-words merged into words.
 */
export function displayStack(trace: Trace, stack: StackName = defaultStack(trace), options: DisplayOptions = {}): DisplayStack {
  let ds = rawDisplayStack(trace, stack);
  const only = options.layers ? new Set(options.layers) : undefined;
  let newestPosition: number | null = null;
  if (options.step !== undefined) {
    const w = stepWindow(trace, stack, options.step);
    ds = { ...cutDisplayStack(ds, w.queries, w.keys, only), step: options.step };
    newestPosition = w.newest;
  }
  if (options.hideSpecial) ds = hideSpecialTokens(ds, only);
  if (options.mergeSubwords) ds = mergeSubwords(ds, trace.model.modelType, only);
  if (newestPosition !== null) {
    const i = ds.queryTokens.findIndex((t) => t.positions.includes(newestPosition));
    ds = { ...ds, newest: i < 0 ? null : i };
  }
  return ds;
}

/** Weight at (layer, head, query, key) of a display stack. */
export function displayWeight(ds: DisplayStack, layer: number, head: number, q: number, k: number): number {
  const nq = ds.queryTokens.length;
  const nk = ds.keyTokens.length;
  return ds.layers[layer]![(head * nq + q) * nk + k]!;
}

// --- sentence-pair filters -----------------------------------------------------------------------

/** Sentence-pair filter: all edges, or only those from segment A/B queries to A/B keys. */
export type PairFilter = 'all' | 'A→B' | 'B→A' | 'A→A' | 'B→B';
export const PAIR_FILTERS: readonly PairFilter[] = ['all', 'A→B', 'B→A', 'A→A', 'B→B'];

/** Accepts `AB`, `a->b`, `A→B`, `all`... */
export function parsePairFilter(value: string): PairFilter {
  const v = value.trim().toUpperCase().replace(/->|→|2|_|-/g, '');
  if (v === 'ALL' || v === '') return 'all';
  const f = (['A→B', 'B→A', 'A→A', 'B→B'] as const).find((p) => p.replace('→', '') === v);
  if (!f) throw new AttnscopeError(`unknown sentence-pair filter '${value}' (expected ${PAIR_FILTERS.join(', ')})`);
  return f;
}

/** Whether an edge from query segment `qs` to key segment `ks` passes the filter. */
export function pairFilterAccepts(filter: PairFilter, qs: number, ks: number): boolean {
  if (filter === 'all') return true;
  const want = (c: string) => (c === 'A' ? 0 : 1);
  return qs === want(filter[0]!) && ks === want(filter[2]!);
}

/** True if the tokens hold a sentence pair (some token in segment 1). */
export function hasPair(tokens: readonly { segment: number }[]): boolean {
  return tokens.some((t) => t.segment === 1);
}
