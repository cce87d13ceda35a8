/**
 * Word- and sentence-level summaries of any token × token matrix (one head's attention, a mean
 * over heads, rollout, ...), and the alignment of two tokenisations of one text through its words.
 *
 * Units. A unit is a set of token positions shown as one row/column:
 * - words (`wordUnits`): the tokens that share `Token.word` within their segment, in order of first
 *   appearance; every special token ([CLS], <s>, ...) is a unit of its own, as is a non-special
 *   token without a word index. (Word indices are the tokenizer's: a SentencePiece tokenizer without
 *   a pre-tokenizer may put a whole text in one word; `textWordUnits` groups by the text instead.)
 * - sentences (`sentenceUnits`): sentence boundaries from `Intl.Segmenter` with granularity
 *   'sentence' (Unicode UAX #29, built into Node and browsers) on each segment's text; a token
 *   belongs to the sentence holding its first non-space character; specials are units of their own.
 *
 * Word rule (`groupMatrix`, BertViz / Attention Atlas style). For query unit U and key unit V:
 *   W[U][V] = combine_query over i ∈ U of ( combine_key over j ∈ V of A[i][j] )
 * with combine_key = sum (default: the attention a query token pays to the whole word) and
 * combine_query = mean (default: averaged over the word's query tokens). With these defaults a
 * row-stochastic A gives a row-stochastic W (every word row still sums to 1); with
 * combine_query = sum the matrix total is preserved. Each side can instead be mean, sum or max.
 *
 * Sentence rule (`blockMatrix`): for sentences S_a, S_b the block A[S_a, S_b] is summarised by
 * - 'mean' (Attention Atlas's inter-sentence attention): the mean of the block's |S_a|·|S_b| weights, or
 *   of those the model could attend when a mask is given (causal/window: see blockMatrix);
 * - 'max': the block's largest weight;
 * - 'share': the word rule's defaults (mean over S_a's queries of their summed weight on S_b), so
 *   each row sums to 1.
 * `drillBlock` returns the token-level block behind one cell.
 *
 * Accumulation in float64; results are Float32Array. Isomorphic: imports nothing from Node.
 */
import { AttnscopeError } from '../core/errors.js';
import type { StackName, Token, Trace } from '../core/trace.js';
import { aggregateHeads, headMatrix, maskedEntries } from './aggregate.js';

/** One row/column of a word- or sentence-level matrix. */
export interface Unit {
  /** Token positions, ascending. */
  tokens: number[];
  /** Shown text: the covered text when known, else the tokens' texts joined (markers Ġ ▁ ## dropped). */
  label: string;
  special: boolean;
  segment: number;
  /** Character span in its segment's text (0, 0 for specials). */
  start: number;
  end: number;
}

export type CombineRule = 'mean' | 'sum' | 'max';

export interface GroupRules {
  /** How a unit's query tokens (rows) combine: default 'mean'. */
  query?: CombineRule;
  /** How a unit's key tokens (columns) combine: default 'sum'. */
  key?: CombineRule;
}

export type BlockRule = 'mean' | 'max' | 'share';

const COMBINE: readonly CombineRule[] = ['mean', 'sum', 'max'];
const BLOCK: readonly BlockRule[] = ['mean', 'max', 'share'];

function checkRule<T extends string>(value: T, allowed: readonly T[], what: string): T {
  if (!allowed.includes(value)) throw new AttnscopeError(`${what}: unknown rule '${value}' (expected ${allowed.join(', ')})`);
  return value;
}

/** Token text without the tokenizers' word markers (Ġ, ▁, ##), for labels. */
export function bareTokenText(text: string): string {
  return text.replace(/^(Ġ|▁|##)/, '').replace(/Ġ|▁/g, ' ');
}

function unitLabel(tokens: readonly Token[], positions: readonly number[], text: string | undefined, start: number, end: number): string {
  if (text !== undefined && end > start && end <= text.length) return text.slice(start, end).trim();
  return positions.map((p) => bareTokenText(tokens[p]!.text)).join('').trim();
}

function spanOf(tokens: readonly Token[], positions: readonly number[]): { start: number; end: number } {
  let start = Infinity;
  let end = 0;
  for (const p of positions) {
    const t = tokens[p]!;
    if (t.special || t.end <= t.start) continue;
    start = Math.min(start, t.start);
    end = Math.max(end, t.end);
  }
  return start === Infinity ? { start: 0, end: 0 } : { start, end };
}

function makeUnits(tokens: readonly Token[], groups: number[][], texts?: readonly (string | undefined)[]): Unit[] {
  return groups.map((positions) => {
    const first = tokens[positions[0]!]!;
    const { start, end } = spanOf(tokens, positions);
    const special = positions.every((p) => tokens[p]!.special);
    return {
      tokens: positions,
      label: special ? positions.map((p) => tokens[p]!.text).join('') : unitLabel(tokens, positions, texts?.[first.segment], start, end),
      special,
      segment: first.segment,
      start,
      end,
    };
  });
}

/**
 * Word units of a token list (see the file comment): tokens sharing `word` within a segment,
 * specials and word-less tokens alone. `texts[segment]` (optional) gives labels from the text.
 */
export function wordUnits(tokens: readonly Token[], texts?: readonly (string | undefined)[]): Unit[] {
  return makeUnits(tokens, groupTokens(tokens, (t) => (t.special || t.word === null ? null : `${t.segment}:${t.word}`)), texts);
}

/**
 * Token positions grouped by `keyOf` (null: a group of its own), the groups in the order of their
 * first token.
 */
function groupTokens(tokens: readonly Token[], keyOf: (t: Token) => string | null): number[][] {
  const groups: number[][] = [];
  const byKey = new Map<string, number[]>();
  tokens.forEach((t, i) => {
    const key = keyOf(t);
    if (key === null) {
      groups.push([i]);
      return;
    }
    let g = byKey.get(key);
    if (!g) {
      g = [];
      byKey.set(key, g);
      groups.push(g);
    }
    g.push(i);
  });
  return groups;
}

/** Sentence spans of a text ([start, end) per sentence, trailing spaces included), by Intl.Segmenter. */
export function sentenceSpans(text: string, locale = 'en'): { start: number; end: number }[] {
  const seg = new Intl.Segmenter(locale, { granularity: 'sentence' });
  const out: { start: number; end: number }[] = [];
  for (const s of seg.segment(text)) out.push({ start: s.index, end: s.index + s.segment.length });
  return out;
}

/** Word spans of a text: every non-space segment of Intl.Segmenter's 'word' granularity (words, numbers, each punctuation mark). */
export function wordSpans(text: string, locale = 'en'): { start: number; end: number }[] {
  const seg = new Intl.Segmenter(locale, { granularity: 'word' });
  const out: { start: number; end: number }[] = [];
  for (const s of seg.segment(text)) if (/\S/.test(s.segment)) out.push({ start: s.index, end: s.index + s.segment.length });
  return out;
}

/** The first non-space character of a token's span in `text` (its start when none). */
function anchorChar(t: Token, text: string): number {
  for (let c = t.start; c < Math.min(t.end, text.length); c++) if (/\S/.test(text[c]!)) return c;
  return t.start;
}

function checkOffsets(tokens: readonly Token[], texts: readonly (string | undefined)[], what: string): void {
  tokens.forEach((t, i) => {
    if (t.special) return;
    const text = texts[t.segment];
    if (text === undefined) throw new AttnscopeError(`${what}: no text for segment ${t.segment} (token ${i})`);
    if (t.end > text.length) throw new AttnscopeError(`${what}: token ${i} ('${t.text}') ends at character ${t.end}, beyond the text's ${text.length} characters: is it the text the trace was made from?`);
  });
}

function spanContaining(spans: readonly { start: number; end: number }[], c: number): { start: number; end: number } | undefined {
  return spans.find((s) => c >= s.start && c < s.end);
}

/**
 * Sentence units: each segment's text split by Intl.Segmenter (granularity 'sentence'); a token
 * belongs to the sentence holding its first non-space character; specials are units of their own.
 * `texts[segment]` is the text of each segment (sentence A, and B for pairs).
 */
export function sentenceUnits(tokens: readonly Token[], texts: readonly string[], locale = 'en'): Unit[] {
  checkOffsets(tokens, texts, 'sentences');
  const spans = texts.map((t) => sentenceSpans(t, locale));
  const groups = groupTokens(tokens, (t) => {
    if (t.special) return null;
    const c = anchorChar(t, texts[t.segment]!);
    const ss = spans[t.segment]!;
    let s = ss.findIndex((sp) => c >= sp.start && c < sp.end);
    if (s < 0) s = ss.length - 1;
    return `${t.segment}:${s}`;
  });
  const units = makeUnits(tokens, groups, texts);
  // Sentence labels: the whole sentence's text.
  for (const u of units) {
    if (u.special) continue;
    const text = texts[u.segment]!;
    // By the first token's first non-space character (the one that placed it): a leading space
    // belongs to the sentence before.
    const anchor = anchorChar(tokens[u.tokens[0]!]!, text);
    const sp = spanContaining(spans[u.segment]!, anchor) ?? spans[u.segment]!.find((s) => anchor < s.end);
    if (sp) u.label = text.slice(sp.start, sp.end).trim();
  }
  return units;
}

/**
 * Word units from the text itself (Intl.Segmenter words, see `wordSpans`), for tokenizers whose
 * word indices do not split words (SentencePiece without a pre-tokenizer). A token belongs to every
 * word its non-space characters touch; words touched by one token are merged into one unit, so
 * that every unit is a union of whole tokens. Specials are units of their own. Single-segment
 * token lists; `text` is the traced text.
 */
export function textWordUnits(tokens: readonly Token[], text: string, locale = 'en'): Unit[] {
  return alignedUnits([tokens], text, locale)[0]!;
}

/**
 * Aligns several tokenisations of one text through its words: the coarsest units that are unions
 * of whole tokens in every tokenisation (words of the text merged wherever a token of any
 * tokenisation spans more than one). Returns, per tokenisation, the units in text order (the same
 * character spans for all, in the same order); specials are left out (they have no text), as are
 * words that some tokenisation does not cover (e.g. characters dropped as unknown).
 */
export function alignedUnits(tokenLists: readonly (readonly Token[])[], text: string, locale = 'en'): Unit[][] {
  for (const [n, tokens] of tokenLists.entries()) {
    checkOffsets(tokens, [text], `alignment (tokenisation ${n + 1})`);
    if (tokens.some((t) => !t.special && t.segment !== 0)) throw new AttnscopeError('alignment through words needs single-text traces (no sentence pair)');
  }
  const words = wordSpans(text, locale);
  const wordAt = new Int32Array(text.length + 1).fill(-1);
  words.forEach((w, i) => {
    for (let c = w.start; c < w.end; c++) wordAt[c] = i;
  });
  // Union-find over words.
  const parent = words.map((_, i) => i);
  const find = (i: number): number => {
    while (parent[i] !== i) i = parent[i] = parent[parent[i]!]!;
    return i;
  };
  const tokenWords = tokenLists.map((tokens) =>
    tokens.map((t) => {
      if (t.special) return [] as number[];
      const ws = new Set<number>();
      for (let c = t.start; c < t.end; c++) if (wordAt[c]! >= 0 && /\S/.test(text[c]!)) ws.add(wordAt[c]!);
      return [...ws];
    }),
  );
  for (const list of tokenWords) {
    for (const ws of list) for (let k = 1; k < ws.length; k++) parent[find(ws[k]!)] = find(ws[0]!);
  }
  // Groups of words (by root) in text order; each tokenisation's tokens per group.
  const rootOrder: number[] = [];
  const seen = new Set<number>();
  words.forEach((_, i) => {
    const r = find(i);
    if (!seen.has(r)) {
      seen.add(r);
      rootOrder.push(r);
    }
  });
  const members = tokenWords.map((list) => {
    const m = new Map<number, number[]>();
    list.forEach((ws, p) => {
      if (ws.length === 0) return;
      const r = find(ws[0]!);
      let g = m.get(r);
      if (!g) m.set(r, (g = []));
      g.push(p);
    });
    return m;
  });
  const kept = rootOrder.filter((r) => members.every((m) => m.has(r)));
  return tokenLists.map((tokens, n) =>
    kept.map((r) => {
      const positions = members[n]!.get(r)!;
      let start = Infinity;
      let end = 0;
      words.forEach((w, i) => {
        if (find(i) !== r) return;
        start = Math.min(start, w.start);
        end = Math.max(end, w.end);
      });
      return { tokens: positions, label: text.slice(start, end), special: false, segment: 0, start, end };
    }),
  );
}

/**
 * A `nq × nk` token matrix (row-major from `offset`) summarised to `rows.length × cols.length`
 * units by the word rule (see the file comment). Tokens in no unit are left out.
 */
export function groupMatrix(
  m: ArrayLike<number>,
  nq: number,
  nk: number,
  rows: readonly Pick<Unit, 'tokens'>[],
  cols: readonly Pick<Unit, 'tokens'>[],
  rules: GroupRules = {},
  offset = 0,
): Float32Array {
  const qr = checkRule(rules.query ?? 'mean', COMBINE, 'query rule');
  const kr = checkRule(rules.key ?? 'sum', COMBINE, 'key rule');
  const R = rows.length;
  const C = cols.length;
  checkUnits(rows, nq, 'query');
  checkUnits(cols, nk, 'key');
  const out = new Float32Array(R * C);
  const inner = new Float64Array(C);
  const acc = new Float64Array(C);
  // Key rules sum and mean: one pass over each row through a key → unit index (keys in no unit: −1).
  const keyUnit = new Int32Array(nk).fill(-1);
  const keyCount = new Float64Array(C);
  cols.forEach((u, v) => {
    for (const j of u.tokens) keyUnit[j] = v;
    keyCount[v] = u.tokens.length;
  });
  const oneUnitPerKey = cols.reduce((n, u) => n + u.tokens.length, 0) === keyUnit.reduce((n, v) => n + (v >= 0 ? 1 : 0), 0);
  const fast = kr !== 'max' && oneUnitPerKey;
  for (let u = 0; u < R; u++) {
    const qs = rows[u]!.tokens;
    acc.fill(qr === 'max' ? -Infinity : 0);
    for (const i of qs) {
      const base = offset + i * nk;
      if (fast) {
        inner.fill(0);
        for (let j = 0; j < nk; j++) {
          const v = keyUnit[j]!;
          if (v >= 0) inner[v]! += m[base + j]!;
        }
        if (kr === 'mean') for (let v = 0; v < C; v++) inner[v]! /= keyCount[v]!;
      } else for (let v = 0; v < C; v++) {
        const ks = cols[v]!.tokens;
        let s = kr === 'max' ? -Infinity : 0;
        for (const j of ks) {
          const x = m[base + j]!;
          if (kr === 'max') {
            if (x > s) s = x;
          } else s += x;
        }
        inner[v] = kr === 'mean' ? s / ks.length : s;
      }
      for (let v = 0; v < C; v++) {
        if (qr === 'max') {
          if (inner[v]! > acc[v]!) acc[v] = inner[v]!;
        } else acc[v]! += inner[v]!;
      }
    }
    for (let v = 0; v < C; v++) out[u * C + v] = qr === 'mean' ? acc[v]! / qs.length : acc[v]!;
  }
  return out;
}

function checkUnits(units: readonly Pick<Unit, 'tokens'>[], n: number, what: string): void {
  for (const u of units) {
    if (u.tokens.length === 0) throw new AttnscopeError(`${what} unit with no tokens`);
    for (const p of u.tokens) if (!Number.isInteger(p) || p < 0 || p >= n) throw new AttnscopeError(`${what} unit token ${p} is out of range (0–${n - 1})`);
  }
}

/**
 * A token matrix summarised per pair of units by a block rule (see the file comment): 'mean'
 * (Attention Atlas's inter-sentence attention), 'max', or 'share' (the word rule's defaults).
 * With `masked` ([nq·nk], 1 where the model could not attend: causal or window masks, see
 * maskedEntries) the mean is over the block's attendable entries only, so a decoder's diagonal
 * blocks are not halved by the zeros above their diagonal; a fully masked block is 0.
 */
export function blockMatrix(
  m: ArrayLike<number>,
  nq: number,
  nk: number,
  rows: readonly Pick<Unit, 'tokens'>[],
  cols: readonly Pick<Unit, 'tokens'>[],
  rule: BlockRule = 'mean',
  offset = 0,
  masked: ArrayLike<number> | null = null,
): Float32Array {
  checkRule(rule, BLOCK, 'sentence rule');
  if (rule === 'share') return groupMatrix(m, nq, nk, rows, cols, { query: 'mean', key: 'sum' }, offset);
  if (rule === 'max') return groupMatrix(m, nq, nk, rows, cols, { query: 'max', key: 'max' }, offset);
  if (!masked) return groupMatrix(m, nq, nk, rows, cols, { query: 'mean', key: 'mean' }, offset);
  const sums = groupMatrix(m, nq, nk, rows, cols, { query: 'sum', key: 'sum' }, offset);
  const open = new Float32Array(nq * nk);
  for (let i = 0; i < open.length; i++) open[i] = masked[i] === 1 ? 0 : 1;
  const counts = groupMatrix(open, nq, nk, rows, cols, { query: 'sum', key: 'sum' });
  return sums.map((v, i) => (counts[i]! > 0 ? v / counts[i]! : 0));
}

/** The token-level block behind cell (row unit, col unit): its positions and weights (row-major). */
export function drillBlock(
  m: ArrayLike<number>,
  nk: number,
  row: Pick<Unit, 'tokens'>,
  col: Pick<Unit, 'tokens'>,
  offset = 0,
): { rows: number[]; cols: number[]; values: Float32Array } {
  const values = new Float32Array(row.tokens.length * col.tokens.length);
  row.tokens.forEach((i, a) => col.tokens.forEach((j, b) => (values[a * col.tokens.length + b] = m[offset + i * nk + j]!)));
  return { rows: [...row.tokens], cols: [...col.tokens], values };
}

/** The query and key tokens of a stack: decoder tokens for 'decoder', decoder × encoder for 'cross'. */
export function stackTokens(trace: Trace, stack: StackName): { queries: readonly Token[]; keys: readonly Token[] } {
  const s = trace.attention[stack];
  if (!s) throw new AttnscopeError(`the trace has no '${stack}' attention`);
  const dec = trace.decoderTokens ?? trace.tokens;
  const queries = stack === 'decoder' || stack === 'cross' ? dec : trace.tokens;
  const keys = stack === 'decoder' ? dec : trace.tokens;
  if (queries.length !== s.dims[1] || keys.length !== s.dims[2]) {
    throw new AttnscopeError(`the '${stack}' attention is ${s.dims[1]} × ${s.dims[2]} but the trace has ${queries.length} × ${keys.length} tokens`);
  }
  return { queries, keys };
}

/** One matrix of a trace: a head, or the mean / max over the layer's heads. */
export function traceMatrix(trace: Trace, stack: StackName, layer: number, head: number | 'mean' | 'max'): Float32Array {
  const s = trace.attention[stack];
  if (!s) throw new AttnscopeError(`the trace has no '${stack}' attention`);
  const [heads, nq, nk] = s.dims;
  if (!Number.isInteger(layer) || layer < 0 || layer >= s.layers.length) throw new AttnscopeError(`layer ${layer} is out of range (0–${s.layers.length - 1})`);
  if (typeof head === 'number') {
    if (!Number.isInteger(head) || head < 0 || head >= heads) throw new AttnscopeError(`head ${head} is out of range (0–${heads - 1})`);
    return headMatrix(s.layers[layer]!, head, nq, nk);
  }
  return aggregateHeads(s.layers[layer]!, heads, nq, nk, head);
}

export interface UnitMatrix {
  rows: Unit[];
  cols: Unit[];
  /** rows.length × cols.length, row-major. */
  values: Float32Array;
}

export interface WordAttentionOptions extends GroupRules {
  stack?: StackName;
  layer: number;
  head: number | 'mean' | 'max';
  /** Texts of the segments (labels from the text; optional). */
  texts?: readonly (string | undefined)[];
}

/** A layer's head (or mean/max over heads) summarised per word by the word rule. */
export function wordAttention(trace: Trace, o: WordAttentionOptions): UnitMatrix {
  const stack = o.stack ?? (trace.attention.self ? 'self' : 'encoder');
  const { queries, keys } = stackTokens(trace, stack);
  const m = traceMatrix(trace, stack, o.layer, o.head);
  const rows = wordUnits(queries, o.texts);
  const cols = queries === keys ? rows : wordUnits(keys, o.texts);
  return { rows, cols, values: groupMatrix(m, queries.length, keys.length, rows, cols, o) };
}

export interface SentenceAttentionOptions {
  stack?: 'self' | 'encoder' | 'decoder';
  layer: number;
  head: number | 'mean' | 'max';
  /** The text of each segment (sentence A, and B for pairs). */
  texts: readonly string[];
  rule?: BlockRule;
  locale?: string;
}

/** Inter-sentence attention of a layer's head (or mean/max over heads): one row and column per sentence (specials alone). */
export function sentenceAttention(trace: Trace, o: SentenceAttentionOptions): UnitMatrix {
  const stack = o.stack ?? (trace.attention.self ? 'self' : 'encoder');
  const { queries, keys } = stackTokens(trace, stack);
  const m = traceMatrix(trace, stack, o.layer, o.head);
  const units = sentenceUnits(queries, o.texts, o.locale);
  return { rows: units, cols: units, values: blockMatrix(m, queries.length, keys.length, units, units, o.rule ?? 'mean', 0, maskedEntries(trace, stack, o.layer)) };
}
