/**
 * Group word lists and counterfactual swaps for bias probes on any text, built from the shipped
 * data (pure functions over the files' text; src/bias/data-files.ts reads them):
 *
 * - gender: WinoBias' generalized_swaps.txt and extra_gendered_words.txt (male/female word pairs:
 *   he/she, actor/actress, ...), each word with its counterpart;
 * - occupation: WinoBias' male_occupations.txt and female_occupations.txt and WinoGender's 60
 *   occupations (no counterparts: an occupation is a group word, not swapped);
 * - the CrowS-Pairs bias types (race-color, nationality, religion, age, socioeconomic, ...): the
 *   words that differ between a pair's sent_more and sent_less (difflib 'replace' spans of one to
 *   three words each side, word level), counted over the dataset; a pair seen at least twice gives
 *   both words to the group and each as the other's counterpart ("black" ↔ "white"), function
 *   words left out. These lists are data-driven and noisy (CrowS-Pairs' own edits: "white" also
 *   appears opposite "jew"); pass your own words for a careful probe.
 *
 * Finding words in a text is word-level (letters, digits, apostrophes; case-insensitive; multi-word
 * entries matched as whole word sequences); tokens are then found through their character offsets.
 */
import { opcodes } from './sequence-matcher.js';
import type { CrowsPair } from './crows-pairs.js';

export interface GroupLexicon {
  name: string;
  /** Lower-case words (or space-separated phrases) of the group. */
  words: Set<string>;
  /** Counterfactual counterparts, lower case (word → the word it becomes in a swap). */
  swaps: Map<string, string>;
}

/** Pairs "a<whitespace>b" per line (tabs, spaces; trailing blanks ignored). */
function wordPairs(text: string): [string, string][] {
  return text.split(/\r?\n/).map((l) => l.trim().split(/\s+/)).filter((p) => p.length === 2 && p[0] !== '' && p[1] !== '').map((p) => [p[0]!.toLowerCase(), p[1]!.toLowerCase()] as [string, string]);
}

/** The gender lexicon from WinoBias' swap lists (both directions; the first listing of a word wins). */
export function genderLexicon(generalizedSwaps: string, extraGendered: string): GroupLexicon {
  const swaps = new Map<string, string>();
  // The pronouns first (counterfactual() re-chooses her → his/him and his → her/hers by context).
  const pronouns: [string, string][] = [['he', 'she'], ['him', 'her'], ['his', 'her'], ['hers', 'his'], ['himself', 'herself']];
  for (const [a, b] of [...pronouns, ...wordPairs(generalizedSwaps), ...wordPairs(extraGendered)]) {
    if (!swaps.has(a)) swaps.set(a, b);
    if (!swaps.has(b)) swaps.set(b, a);
  }
  return { name: 'gender', words: new Set(swaps.keys()), swaps };
}

/** One word or phrase per line. */
export function occupationLexicon(...lists: string[]): GroupLexicon {
  const words = new Set<string>();
  for (const list of lists) for (const l of list.split(/\r?\n/)) if (l.trim() !== '') words.add(l.trim().toLowerCase());
  return { name: 'occupation', words, swaps: new Map() };
}

const WORD = /[\p{L}\p{N}]+(?:['’][\p{L}]+)*/gu;

/** The words of a text with their character spans. */
export function wordsOf(text: string): { word: string; start: number; end: number }[] {
  return [...text.matchAll(WORD)].map((m) => ({ word: m[0], start: m.index!, end: m.index! + m[0].length }));
}

/** CrowS-Pairs' changed words per bias type: phrase pairs seen at least `minCount` times. */
export function crowsLexicons(pairs: readonly CrowsPair[], minCount = 2): GroupLexicon[] {
  const counts = new Map<string, Map<string, number>>();
  for (const p of pairs) {
    const a = wordsOf(p.sentMore).map((w) => w.word.toLowerCase());
    const b = wordsOf(p.sentLess).map((w) => w.word.toLowerCase());
    for (const [tag, i1, i2, j1, j2] of opcodes(a, b)) {
      if (tag !== 'replace' || i2 - i1 > 3 || j2 - j1 > 3) continue;
      const key = `${a.slice(i1, i2).join(' ')}\u0000${b.slice(j1, j2).join(' ')}`;
      const byType = counts.get(p.biasType) ?? new Map<string, number>();
      byType.set(key, (byType.get(key) ?? 0) + 1);
      counts.set(p.biasType, byType);
    }
  }
  return [...counts].map(([name, byType]) => {
    const words = new Set<string>();
    const swaps = new Map<string, string>();
    // Most frequent pairs first, so a word's counterpart is its most frequent one.
    for (const [key, n] of [...byType].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1))) {
      if (n < minCount) continue;
      const [a, b] = key.split('\u0000') as [string, string];
      // Function words ("with" ↔ "without") are edits, not group words.
      if ([a, b].some((x) => x.split(' ').every((w) => NOT_A_NOUN_PHRASE.has(w) || w === 'without'))) continue;
      words.add(a);
      words.add(b);
      if (!swaps.has(a)) swaps.set(a, b);
      if (!swaps.has(b)) swaps.set(b, a);
    }
    return { name, words, swaps };
  }).filter((l) => l.words.size > 0);
}

export interface GroupMention {
  group: string;
  /** The text as written. */
  text: string;
  start: number;
  end: number;
}

/** Every group word or phrase in `text` (longest match first at each word; no overlaps). */
export function findGroupWords(text: string, lexicons: readonly GroupLexicon[]): GroupMention[] {
  const words = wordsOf(text);
  const out: GroupMention[] = [];
  const longest = Math.max(1, ...lexicons.flatMap((l) => [...l.words].map((w) => w.split(' ').length)));
  for (let i = 0; i < words.length; i++) {
    let found: GroupMention | null = null;
    let used = 1;
    for (let n = Math.min(longest, words.length - i); n >= 1 && !found; n--) {
      const phrase = words.slice(i, i + n).map((w) => w.word.toLowerCase()).join(' ');
      const lex = lexicons.find((l) => l.words.has(phrase));
      if (lex) {
        found = { group: lex.name, text: text.slice(words[i]!.start, words[i + n - 1]!.end), start: words[i]!.start, end: words[i + n - 1]!.end };
        used = n;
      }
    }
    if (found) {
      out.push(found);
      i += used - 1;
    }
  }
  return out;
}

/** Token positions (non-special) overlapping the mentions' character spans. */
export function mentionTokens(tokens: readonly { start: number; end: number; special: boolean }[], mentions: readonly GroupMention[]): number[] {
  return tokens.flatMap((t, i) => (!t.special && mentions.some((m) => t.start < m.end && t.end > m.start) ? [i] : []));
}

/** Words after which "her" is the object pronoun (him), not the possessive (his): function words and punctuation. */
const NOT_A_NOUN_PHRASE = new Set([
  'a', 'an', 'the', 'this', 'that', 'these', 'those', 'to', 'and', 'or', 'but', 'nor', 'so', 'yet', 'for', 'of', 'in', 'on', 'at', 'by', 'with',
  'from', 'about', 'as', 'into', 'onto', 'over', 'under', 'up', 'down', 'out', 'off', 'than', 'then', 'when', 'while', 'if', 'because', 'since',
  'until', 'before', 'after', 'again', 'too', 'also', 'very', 'really', 'just', 'now', 'there', 'here', 'back', 'away', 'is', 'was', 'are', 'were',
  'be', 'been', 'has', 'had', 'have', 'will', 'would', 'can', 'could', 'should', 'may', 'might', 'must', 'not', 'what', 'how', 'why', 'who',
  'where', 'which', 'some', 'any', 'all', 'every', 'each', 'no', 'more', 'less', 'much', 'many', 'one', 'two', 'first', 'last', 'today',
  'yesterday', 'tomorrow', 'well', 'alone', 'anything', 'something', 'nothing', 'everything', 'her', 'his', 'him', 'my', 'your', 'our', 'their',
  'its', 'me', 'us', 'them', 'it', 'he', 'she', 'they', 'we', 'i', 'you',
]);

function matchCase(replacement: string, original: string): string {
  if (original.length > 1 && original === original.toUpperCase() && /\p{L}/u.test(original)) return replacement.toUpperCase();
  if (/^\p{Lu}/u.test(original)) return replacement[0]!.toUpperCase() + replacement.slice(1);
  return replacement;
}

/** "an" before a vowel sound, by the letter (with the usual exceptions: an hour/honest/heir, a uni-/one/eu-). */
export function articleFor(word: string): 'a' | 'an' {
  const w = word.toLowerCase();
  if (/^(hour|honest|honou?r|heir)/.test(w)) return 'an';
  if (/^(uni|use|usu|uti|one|once|eu|ewe|ufo)/.test(w)) return 'a';
  return /^[aeiou]/.test(w) ? 'an' : 'a';
}

export interface Counterfactual {
  text: string;
  /** What changed: [original, replacement] with the replacement's span in the new text. */
  changes: { from: string; to: string; start: number; end: number }[];
}

/**
 * The text with every swappable group word replaced by its counterpart (matching case), with
 * grammatical repairs: "her" becomes "his" before a noun phrase and "him" otherwise (its next word
 * a function word, punctuation or the end), "his" becomes "hers" where it stands alone; an article
 * "a"/"an" before a replaced word is re-chosen for the new word. Words of other groups are left.
 */
export function counterfactual(text: string, lexicons: readonly GroupLexicon[]): Counterfactual {
  const mentions = findGroupWords(text, lexicons);
  const words = wordsOf(text);
  const edits: { start: number; end: number; to: string; from: string }[] = [];
  for (const m of mentions) {
    const lex = lexicons.find((l) => l.name === m.group)!;
    const lower = m.text.toLowerCase();
    let to = lex.swaps.get(lower);
    if (to === undefined) continue;
    const wi = words.findIndex((w) => w.start === m.start);
    const next = words.find((w) => w.start >= m.end);
    const between = next ? text.slice(m.end, next.start) : text.slice(m.end);
    const nounFollows = next !== undefined && !/[.,;:!?)"”]/.test(between) && !NOT_A_NOUN_PHRASE.has(next.word.toLowerCase());
    if (lex.name === 'gender') {
      if (lower === 'her') to = nounFollows ? 'his' : 'him';
      else if (lower === 'his') to = nounFollows ? 'her' : 'hers';
      else if (lower === 'hers') to = 'his';
    }
    edits.push({ start: m.start, end: m.end, from: m.text, to: matchCase(to, m.text) });
    // a/an before the swapped word.
    const prev = wi > 0 ? words[wi - 1] : undefined;
    if (prev && /^(a|an)$/i.test(prev.word) && /^\s+$/.test(text.slice(prev.end, m.start))) {
      const article = articleFor(to);
      if (article !== prev.word.toLowerCase()) edits.push({ start: prev.start, end: prev.end, from: prev.word, to: matchCase(article, prev.word) });
    }
  }
  edits.sort((x, y) => x.start - y.start);
  let out = '';
  let last = 0;
  const changes: Counterfactual['changes'] = [];
  for (const e of edits) {
    out += text.slice(last, e.start);
    changes.push({ from: e.from, to: e.to, start: out.length, end: out.length + e.to.length });
    out += e.to;
    last = e.end;
  }
  out += text.slice(last);
  return { text: out, changes };
}
