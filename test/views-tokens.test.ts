/**
 * Token display with small hand-made token lists: sentencepiece word starts and continuations,
 * byte-fallback and byte-level characters split over several tokens, and escaping of token text
 * in the SVG and HTML outputs. Expected characters are written from the UTF-8 definition
 * (e.g. U+00EF = 1100 0011 1010 1111 = C3 AF), not produced by the code under test.
 */
import { describe, expect, it } from 'vitest';
import { renderStandaloneHtml } from '../src/views/html/standalone.js';
import { renderSvg, VIEW_NAMES } from '../src/views/svg/index.js';
import { BYTE_TAIL_MARK, JOIN_MARK, displayStack, escapeHtml, prettifyTokens } from '../src/views/tokens.js';
import { handTrace } from './helpers/hand-trace.js';
import { findAll, parseXml, textOf } from './helpers/xml.js';

const seq = (texts: string[], special: number[] = []) => texts.map((text, i) => ({ text, special: special.includes(i), segment: 0 }));
const labels = (texts: string[], modelType = 'llama', special: number[] = []) => prettifyTokens(seq(texts, special), modelType).map((p) => p.label);

describe('sentencepiece word starts', () => {
  it('"▁g" "ir" "l" reads as one word: the pieces after the start are marked as joined', () => {
    expect(JOIN_MARK).toBe('·');
    expect(BYTE_TAIL_MARK).toBe('⋯');
    expect(labels(['<s>', '▁a', '▁little', '▁g', 'ir', 'l', '▁named'], 'llama', [0])).toEqual(['<s>', 'a', 'little', 'g', '·ir', '·l', 'named']);
    const p = prettifyTokens(seq(['▁g', 'ir', 'l']), 'llama');
    expect(p.map((t) => t.text)).toEqual([' g', 'ir', 'l']);
  });

  it('punctuation after a word, word starts, and the first token are shown plain', () => {
    expect(labels(['▁time', ',', '▁there', '.'])).toEqual(['time', ',', 'there', '.']);
    expect(labels(['Once', '▁upon'])).toEqual(['Once', 'upon']); // no word before the first token
    expect(labels(['▁x', '2', '3'])).toEqual(['x', '·2', '·3']);
  });

  it('a special token or a new segment ends the word', () => {
    const toks = [
      { text: '▁ab', special: false, segment: 0 },
      { text: '</s>', special: true, segment: 0 },
      { text: 'cd', special: false, segment: 1 },
      { text: 'ef', special: false, segment: 1 },
    ];
    expect(prettifyTokens(toks, 't5').map((t) => t.label)).toEqual(['ab', '</s>', 'cd', '·ef']);
  });

  it('scripts written without spaces are not marked', () => {
    // 日 U+65E5 = E6 97 A5, 本 U+672C = E6 9C AC
    expect(labels(['▁', '<0xE6>', '<0x97>', '<0xA5>', '<0xE6>', '<0x9C>', '<0xAC>'])).toEqual(['␣', '\u65E5', '⋯', '⋯', '\u672C', '⋯', '⋯']);
  });

  it('byte-level BPE: Ġ starts a word, a piece without it continues one; WordPiece keeps ##', () => {
    expect(labels(['Hello', 'Ġworld', 'Ġj', 'umps', ',', 'Ċ'], 'gpt2')).toEqual(['Hello', 'world', 'j', '·umps', ',', '⏎']);
    expect(labels(['[CLS]', 'un', '##able', 'it'], 'bert', [0])).toEqual(['[CLS]', 'un', '##able', 'it']);
  });
});

describe('characters split over byte tokens', () => {
  it('byte fallback: the character on its first byte, ⋯ on the others', () => {
    // ï U+00EF: 110 00011, 10 101111 → C3 AF
    const p = prettifyTokens(seq(['▁caf', '<0xC3>', '<0xAF>', '▁x']), 'llama');
    expect(p.map((t) => t.label)).toEqual(['caf', '·\u00EF', '⋯', 'x']);
    expect(p.map((t) => t.text)).toEqual([' caf', '\u00EF', '', ' x']);
    expect(p.map((t) => t.byteTail)).toEqual([false, false, true, false]);
  });

  it('a four-byte character (😀 U+1F600 = F0 9F 98 80) and a three-byte one (✓ U+2713 = E2 9C 93)', () => {
    expect(labels(['▁', '<0xF0>', '<0x9F>', '<0x98>', '<0x80>', '▁', '<0xE2>', '<0x9C>', '<0x93>'])).toEqual(['␣', '\u{1F600}', '⋯', '⋯', '⋯', '␣', '\u2713', '⋯', '⋯']);
  });

  it('one-byte tokens: newline and letters', () => {
    expect(labels(['▁a', '<0x0A>', '<0x41>'])).toEqual(['a', '⏎', 'A']);
  });

  it('bytes that form no character keep their spelling', () => {
    // a lead byte with its continuation missing (generation stopped), a stray continuation byte, an overlong form
    expect(labels(['▁x', '<0xE2>'])).toEqual(['x', '<0xE2>']);
    expect(labels(['▁x', '<0x80>', '▁y'])).toEqual(['x', '<0x80>', 'y']);
    expect(labels(['▁', '<0xC0>', '<0x80>'])).toEqual(['␣', '<0xC0>', '<0x80>']);
  });

  it('byte-level BPE pieces of one character (日 = æ Ĺ ¥ in GPT-2 spelling)', () => {
    const p = prettifyTokens(seq(['ĠæĹ', '¥', 'Ġa']), 'gpt2');
    expect(p.map((t) => t.text)).toEqual([' \u65E5', '', ' a']);
    expect(p.map((t) => t.label)).toEqual(['\u65E5', '⋯', 'a']);
  });

  it('letters that look like byte-level spellings are letters in other tokenizers (Maltese ġ, Polish ł)', () => {
    expect(labels(['▁Ħ', 'ġ', 'a', '▁ł', 'ódź'], 'llama')).toEqual(['Ħ', '·ġ', '·a', 'ł', '·ódź']);
    expect(labels(['[CLS]', 'łódź', '##ł'], 'bert', [0])).toEqual(['[CLS]', 'łódź', '##ł']);
  });

  it('display stacks carry the labels; merging sub-words joins the pieces into the word', () => {
    const trace = handTrace(['<s>', '▁little', '▁g', 'ir', 'l', '▁caf', '<0xC3>', '<0xA9>'], { special: [0] });
    const ds = displayStack(trace);
    expect(ds.queryTokens.map((t) => t.label)).toEqual(['<s>', 'little', 'g', '·ir', '·l', 'caf', '·\u00E9', '⋯']);
    expect(ds.queryTokens[3]!.raw).toBe('ir');
    const merged = displayStack(trace, 'self', { mergeSubwords: true });
    expect(merged.queryTokens.map((t) => t.label)).toEqual(['<s>', 'little', 'girl', 'caf\u00E9']);
  });
});

describe('token text is escaped in every output', () => {
  const nasty = ['<s>', '▁</text><b>', '▁a&b', '<0x3C>', '"q\'', '▁\u0007bell'];
  const trace = handTrace(nasty, { special: [0] });

  // Queries and keys for the neuron view: 2 heads × 6 positions × head dim 4.
  trace.queries = { self: { dims: [2, 6, 4], layers: trace.attention.self!.layers.map(() => new Float32Array(48).map((_, i) => (i % 7) / 7)) } };
  trace.keys = { self: { dims: [2, 6, 4], layers: trace.attention.self!.layers.map(() => new Float32Array(48).map((_, i) => (i % 5) / 5)) } };

  it.each(VIEW_NAMES)('%s view SVG is well-formed and shows the text as text', (view) => {
    const svg = renderSvg(view, trace);
    const root = parseXml(svg);
    expect(findAll(root, 'b')).toHaveLength(0);
    const all = textOf(root);
    // The model view draws no token labels; the clusters and types views draw heads, not tokens.
    if (view !== 'model' && view !== 'clusters' && view !== 'types') {
      for (const shown of ['</text><b>', 'a&b', '<', '"q\'', '␇bell']) expect(all).toContain(shown);
    }
  });

  it('escapeHtml: markup characters and characters XML forbids', () => {
    expect(escapeHtml('<a href="x">&\'</a>\u0001')).toBe('&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;\uFFFD');
  });

  it('standalone HTML keeps token text inside its JSON', async () => {
    const r = await renderStandaloneHtml(trace, { bundle: { js: 'void 0;', css: '' }, text: '</title><script>x</script>' });
    expect(r.html).not.toContain('<script>alert(1)');
    expect(r.html).not.toContain('</title><script>x');
    expect((r.html.match(/<script/g) ?? []).length).toBe(2 + (r.html.match(/attnscope-blob-/g) ?? []).length);
  });
});
