/**
 * Word classes of tokens for the syntax / semantics / entity focus of head-types.ts: wink-nlp
 * (with its English lite web model) tags each word of each segment's text with a universal
 * part of speech and finds entities; each sub-word token takes the class of the word holding its
 * first non-space character, found through the token's character offsets (Token.start/end, into
 * its segment's text).
 *
 * - function word (WORD_FUNCTION): DET, ADP, AUX, CCONJ, SCONJ, PART, PRON;
 * - content word (WORD_CONTENT): NOUN, PROPN, VERB, ADJ, ADV, NUM;
 * - named entity (WORD_ENTITY): a proper noun (PROPN), or a word inside an entity wink-nlp
 *   finds other than a plain number, emoji or emoticon (its lite model has no person/place
 *   recogniser, so proper nouns stand for those).
 * Special tokens, punctuation and tokens without offsets get no class (0).
 *
 * Kept apart from head-types.ts so that what imports the head types does not load the 3.8 MB
 * language model; the model is loaded on first use. Isomorphic (wink-nlp is plain JavaScript).
 */
import winkNLP, { type ItemEntity, type ItemToken } from 'wink-nlp';
import model from 'wink-eng-lite-web-model';
import type { Token } from '../core/trace.js';
import { WORD_CONTENT, WORD_ENTITY, WORD_FUNCTION } from './head-types.js';

const FUNCTION_POS = new Set(['DET', 'ADP', 'AUX', 'CCONJ', 'SCONJ', 'PART', 'PRON']);
const CONTENT_POS = new Set(['NOUN', 'PROPN', 'VERB', 'ADJ', 'ADV', 'NUM']);
const NOT_NAMED = new Set(['CARDINAL', 'ORDINAL', 'EMOJI', 'EMOTICON']);

let nlp: ReturnType<typeof winkNLP> | undefined;

/** A word wink-nlp found: its character span in the text and its class bits. */
export interface TaggedWord {
  start: number;
  end: number;
  text: string;
  pos: string;
  classes: number;
}

/** The words of a text with their part of speech and class bits (WORD_FUNCTION | WORD_CONTENT | WORD_ENTITY). */
export function tagWords(text: string): TaggedWord[] {
  nlp ??= winkNLP(model);
  const its = nlp.its;
  const doc = nlp.readDoc(text);
  const words: TaggedWord[] = [];
  const index: number[] = []; // wink token index → words index (−1: not found in the text)
  let cursor = 0;
  doc.tokens().each((t: ItemToken) => {
    const value = t.out() as string;
    const at = text.indexOf(value, cursor);
    if (value === '' || at < 0) {
      index.push(-1);
      return;
    }
    cursor = at + value.length;
    const pos = t.out(its.pos) as string;
    const classes = (FUNCTION_POS.has(pos) ? WORD_FUNCTION : 0) | (CONTENT_POS.has(pos) ? WORD_CONTENT : 0) | (pos === 'PROPN' ? WORD_ENTITY : 0);
    index.push(words.length);
    words.push({ start: at, end: at + value.length, text: value, pos, classes });
  });
  doc.entities().each((e: ItemEntity) => {
    if (NOT_NAMED.has(e.out(its.type) as string)) return;
    const [from, to] = e.out(its.span) as unknown as [number, number];
    for (let i = from; i <= to; i++) {
      const w = index[i];
      if (w !== undefined && w >= 0) words[w]!.classes |= WORD_ENTITY;
    }
  });
  return words;
}

/**
 * Class bits per token: `segments[s]` is the text of segment s (the text, then the pair) that
 * the tokens' offsets point into.
 */
export function tokenWordClasses(tokens: readonly Token[], segments: readonly string[]): Uint8Array {
  const out = new Uint8Array(tokens.length);
  const perSegment = segments.map((text) => {
    const words = tagWords(text);
    // Class of each character (the word covering it), 0 between words.
    const chars = new Uint8Array(text.length);
    const inWord = new Uint8Array(text.length);
    for (const w of words) {
      chars.fill(w.classes, w.start, w.end);
      inWord.fill(1, w.start, w.end);
    }
    return { text, chars, inWord };
  });
  tokens.forEach((t, i) => {
    const seg = perSegment[t.segment];
    if (t.special || !seg || t.end <= t.start) return;
    for (let c = t.start; c < Math.min(t.end, seg.text.length); c++) {
      if (/\s/u.test(seg.text[c]!)) continue;
      out[i] = seg.inWord[c] ? seg.chars[c]! : 0;
      return;
    }
  });
  return out;
}
