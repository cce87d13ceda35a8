import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Tokenizer } from 'tokenizers';
import { describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import type { Token } from '../src/core/trace.js';
import { codePointToUtf16, createTokenizer, loadTokenizer, type AttnTokenizer } from '../src/tokenizer/index.js';
import { parseValue, replaceValues, scanTopLevel } from '../src/tokenizer/json-scan.js';
import { cleanUpTokenization } from '../src/tokenizer/special-tokens.js';

const FIXTURES = join(import.meta.dirname, 'fixtures');
const TOKENIZER_REFS = join(FIXTURES, 'tokenizers');

interface TokenizerCase {
  id: string;
  text: string;
  pair?: string;
  ids: number[];
  tokens: string[];
  offsets: [number, number][];
  word_ids: (number | null)[];
  type_ids: number[];
  special_tokens_mask: number[];
}

interface FixtureInput {
  id: string;
  text: string;
  text_pair?: string;
  input_ids: number[];
  tokens: string[];
  attention_mask: number[];
  token_type_ids?: number[];
  decoder_text?: string;
  decoder_input_ids?: number[];
  decoder_label_ids?: number[];
  decoder_tokens?: string[];
}

const readJson = <T>(path: string): T => JSON.parse(readFileSync(path, 'utf8')) as T;

/** The fields of a tokenizer reference case, computed from our tokens. */
function fieldsOf(tokens: Token[]) {
  return {
    ids: tokens.map((t) => t.id),
    tokens: tokens.map((t) => t.text),
    offsets: tokens.map((t) => [t.start, t.end]),
    word_ids: tokens.map((t) => t.word),
    type_ids: tokens.map((t) => t.segment),
    special_tokens_mask: tokens.map((t) => (t.special ? 1 : 0)),
  };
}

function expectCase(tokens: Token[], c: TokenizerCase): void {
  const got = fieldsOf(tokens);
  const label = `case ${c.id}`;
  expect(got.ids, `${label} ids`).toEqual(c.ids);
  expect(got.tokens, `${label} tokens`).toEqual(c.tokens);
  expect(got.offsets, `${label} offsets`).toEqual(c.offsets);
  expect(got.word_ids, `${label} word_ids`).toEqual(c.word_ids);
  expect(got.type_ids, `${label} type_ids`).toEqual(c.type_ids);
  expect(got.special_tokens_mask, `${label} special_tokens_mask`).toEqual(c.special_tokens_mask);
}

function fixtureFiles(dir: string) {
  const opt = (name: string) => (existsSync(join(dir, name)) ? join(dir, name) : undefined);
  const tokenizerConfig = opt('tokenizer_config.json');
  const specialTokensMap = opt('special_tokens_map.json');
  return {
    tokenizerJson: join(dir, 'tokenizer.json'),
    ...(tokenizerConfig ? { tokenizerConfig } : {}),
    ...(specialTokensMap ? { specialTokensMap } : {}),
  };
}

const sources = (dir: string) => ({
  tokenizerJson: readFileSync(join(dir, 'tokenizer.json'), 'utf8'),
  tokenizerConfig: readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'),
  specialTokensMap: readFileSync(join(dir, 'special_tokens_map.json'), 'utf8'),
});

describe('codePointToUtf16', () => {
  it('is the identity without astral characters', () => {
    const map = codePointToUtf16('Café 東京');
    expect([0, 3, 4, 7].map(map)).toEqual([0, 3, 4, 7]);
  });
  it('counts astral characters as two code units', () => {
    const text = 'a🙂b𝔘c';
    const map = codePointToUtf16(text);
    expect([0, 1, 2, 3, 4, 5].map(map)).toEqual([0, 1, 3, 4, 6, 7]);
    expect(map(5)).toBe(text.length);
  });
});

describe('top-level JSON scan', () => {
  const text = String.raw`{ "a" : {"x": "}\"{[", "y": [1, {"z": "\\"}]} , "b":null,"c" :-1.5e3, "d": "q\"}" }`;
  it('finds and parses the top-level values', () => {
    const scan = scanTopLevel(text, 'test.json');
    expect([...scan.spans.keys()]).toEqual(['a', 'b', 'c', 'd']);
    const whole = JSON.parse(text) as Record<string, unknown>;
    for (const key of ['a', 'b', 'c', 'd']) expect(parseValue(scan, key, 'test.json')).toEqual(whole[key]);
    expect(parseValue(scan, 'e', 'test.json')).toBeUndefined();
  });
  it('replaces and adds values', () => {
    const scan = scanTopLevel(text, 'test.json');
    const out = replaceValues(scan, new Map<string, unknown>([['b', { k: 1 }], ['a', null], ['e', [2]]]));
    expect(JSON.parse(out)).toEqual({ a: null, b: { k: 1 }, c: -1500, d: 'q"}', e: [2] });
    expect(JSON.parse(replaceValues(scanTopLevel('{}', 'x'), new Map([['k', 1]])))).toEqual({ k: 1 });
  });
  it('rejects what is not an object', () => {
    expect(() => scanTopLevel('[1]', 'x')).toThrow(AttnscopeError);
    expect(() => scanTopLevel('{"a": [1, 2}', 'x')).toThrow(AttnscopeError);
    expect(() => scanTopLevel('{"a": "open}', 'x')).toThrow(AttnscopeError);
  });
});

describe.each(['bert-base-uncased', 'gpt2'])('tokenizer reference %s', (name) => {
  const dir = join(TOKENIZER_REFS, name);
  const ref = readJson<{ offsets_unit: string; cases: TokenizerCase[] }>(join(dir, 'reference.json'));
  let tok: AttnTokenizer;

  it('loads', async () => {
    expect(ref.offsets_unit).toBe('utf16');
    expect(ref.cases.length).toBe(60);
    tok = await loadTokenizer({
      tokenizerJson: join(dir, 'tokenizer.json'),
      tokenizerConfig: join(dir, 'tokenizer_config.json'),
    });
  });

  it.each(ref.cases.map((c) => [c.id, c] as const))('case %s matches transformers on every field', async (_id, c) => {
    expectCase(await tok.encode(c.text, c.pair), c);
  });

  it('gives the ids back through tokensFromIds and type ids', () => {
    for (const c of ref.cases) {
      const tokens = tok.tokensFromIds(c.ids, c.type_ids);
      expect(tokens.map((t) => t.text)).toEqual(c.tokens);
      expect(tokens.map((t) => t.segment)).toEqual(c.type_ids);
      expect(tokens.every((t) => t.start === 0 && t.end === 0 && t.word === null)).toBe(true);
    }
  });
});

describe('gpt2 tokenizer.json in the Hub layout (ByteLevel post-processor, "a b" merges)', () => {
  it('gives the same fields on every reference case', async () => {
    const dir = join(TOKENIZER_REFS, 'gpt2');
    const json = readJson<Record<string, unknown> & { model: { merges: unknown[] } }>(join(dir, 'tokenizer.json'));
    json['post_processor'] = { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true };
    json.model.merges = json.model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : m));
    const tok = createTokenizer({
      tokenizerJson: JSON.stringify(json),
      tokenizerConfig: readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'),
    });
    const ref = readJson<{ cases: TokenizerCase[] }>(join(dir, 'reference.json'));
    for (const c of ref.cases) expectCase(await tok.encode(c.text, c.pair), c);
  });
});

const CHECKPOINTS = readdirSync(FIXTURES).filter((d) => existsSync(join(FIXTURES, d, 'reference.json')));

describe.each(CHECKPOINTS)('checkpoint fixture %s', (name) => {
  const dir = join(FIXTURES, name);
  const ref = readJson<{ inputs: FixtureInput[] }>(join(dir, 'reference.json'));
  let tok: AttnTokenizer;
  let raw: Tokenizer;

  it('loads', async () => {
    tok = await loadTokenizer(fixtureFiles(dir));
    raw = Tokenizer.fromFile(join(dir, 'tokenizer.json'));
    expect(tok.vocabSize).toBe(raw.getVocabSize(true));
  });

  it.each(ref.inputs.map((inp) => [inp.id, inp] as const))('input %s encodes to the reference', async (_id, inp) => {
    const tokens = await tok.encode(inp.text, inp.text_pair);
    expect(tokens.map((t) => t.id)).toEqual(inp.input_ids);
    expect(tokens.map((t) => t.text)).toEqual(inp.tokens);
    expect(tokens.length).toBe(inp.attention_mask.length);
    if (inp.token_type_ids) expect(tokens.map((t) => t.segment)).toEqual(inp.token_type_ids);
    const hasPair = inp.text_pair !== undefined && inp.text_pair !== '';
    for (const t of tokens) {
      const source = t.segment === 1 && hasPair ? inp.text_pair! : inp.text;
      if (t.special) {
        expect([t.start, t.end, t.word]).toEqual([0, 0, null]);
        expect(tok.specialIds.has(t.id)).toBe(true);
      } else {
        expect(t.start).toBeGreaterThanOrEqual(0);
        expect(t.end).toBeGreaterThanOrEqual(t.start);
        expect(t.end).toBeLessThanOrEqual(source.length);
        expect(t.word).not.toBeNull();
      }
      expect(t.segment === 0 || (hasPair && t.segment === 1)).toBe(true);
    }
    // Same ids and the same segments when the ids are given directly.
    const fromIds = tok.tokensFromIds(inp.input_ids, inp.token_type_ids);
    expect(fromIds.map((t) => t.text)).toEqual(inp.tokens);
    if (inp.token_type_ids) expect(fromIds.map((t) => t.segment)).toEqual(inp.token_type_ids);
    for (let i = 0; i < tokens.length; i++) {
      if (tokens[i]!.special) expect(fromIds[i]!.special).toBe(true);
    }
  });

  it('decodes as the tokenizers decoder plus transformers clean-up', async () => {
    const config = readJson<{ clean_up_tokenization_spaces?: boolean }>(join(dir, 'tokenizer_config.json'));
    const modelType = readJson<{ model: { type: string } }>(join(dir, 'tokenizer.json')).model.type;
    const cleanUp = config.clean_up_tokenization_spaces === true && modelType !== 'BPE';
    for (const inp of ref.inputs) {
      for (const skip of [false, true]) {
        const expected = await raw.decode(inp.input_ids, skip);
        expect(tok.decode(inp.input_ids, skip)).toBe(cleanUp ? cleanUpTokenization(expected) : expected);
      }
    }
  });

  if (ref.inputs.some((inp) => inp.decoder_text !== undefined)) {
    it('labels are the tokenized decoder text; decoder inputs are them shifted right', async () => {
      const config = readJson<{ decoder_start_token_id: number }>(join(dir, 'config.json'));
      for (const inp of ref.inputs) {
        const labels = (await tok.encode(inp.decoder_text!)).map((t) => t.id);
        expect(labels).toEqual(inp.decoder_label_ids);
        expect(inp.decoder_input_ids).toEqual([config.decoder_start_token_id, ...labels.slice(0, -1)]);
        const decoderTokens = tok.tokensFromIds(inp.decoder_input_ids!);
        expect(decoderTokens.map((t) => t.text)).toEqual(inp.decoder_tokens);
        expect(decoderTokens[0]!.special).toBe(true);
      }
    });
  }
});

describe('special tokens from tokenizer_config.json / special_tokens_map.json', () => {
  const load = (name: string) => loadTokenizer(fixtureFiles(join(FIXTURES, name)));

  it('bert', async () => {
    const tok = await load('bert');
    expect([tok.cls, tok.sep, tok.pad, tok.mask, tok.unk]).toEqual([
      { text: '[CLS]', id: 2 },
      { text: '[SEP]', id: 3 },
      { text: '[PAD]', id: 0 },
      { text: '[MASK]', id: 4 },
      { text: '[UNK]', id: 1 },
    ]);
    expect(tok.bos).toBeUndefined();
    expect(tok.eos).toBeUndefined();
    // model_max_length is transformers' "unset" sentinel (1e30).
    expect(tok.modelMaxLength).toBeUndefined();
    expect(tok.template).toBeUndefined();
  });

  it('gpt2 and qwen2', async () => {
    const gpt2 = await load('gpt2');
    expect([gpt2.bos, gpt2.eos, gpt2.unk]).toEqual(Array(3).fill({ text: '<|endoftext|>', id: 749 }));
    expect(gpt2.pad).toBeUndefined();
    const qwen2 = await load('qwen2');
    expect(qwen2.bos).toBeUndefined();
    expect(qwen2.eos).toEqual({ text: '<|endoftext|>', id: 744 });
    expect(qwen2.pad).toEqual({ text: '<|endoftext|>', id: 744 });
    // additional_special_tokens count as special ids.
    expect([744, 745, 746].every((id) => qwen2.specialIds.has(id))).toBe(true);
  });

  it('roberta (AddedToken objects in special_tokens_map.json)', async () => {
    const tok = await load('roberta');
    expect([tok.bos, tok.eos, tok.cls, tok.sep, tok.pad, tok.unk, tok.mask]).toEqual([
      { text: '<s>', id: 0 },
      { text: '</s>', id: 2 },
      { text: '<s>', id: 0 },
      { text: '</s>', id: 2 },
      { text: '<pad>', id: 1 },
      { text: '<unk>', id: 3 },
      { text: '<mask>', id: 740 },
    ]);
  });

  it('llama, t5, stories260k', async () => {
    const llama = await load('llama');
    expect([llama.bos, llama.eos, llama.unk]).toEqual([
      { text: '<s>', id: 1 },
      { text: '</s>', id: 2 },
      { text: '<unk>', id: 0 },
    ]);
    expect(llama.template).toEqual({ addBos: true, addEos: false });
    const t5 = await load('t5');
    expect([t5.eos, t5.pad, t5.unk]).toEqual([
      { text: '</s>', id: 1 },
      { text: '<pad>', id: 0 },
      { text: '<unk>', id: 2 },
    ]);
    expect(t5.specialIds.has(t5.tokenToId('<extra_id_0>')!)).toBe(true);
    expect((await load('stories260k')).modelMaxLength).toBe(512);
  });

  it('idToToken / tokenToId', async () => {
    const tok = await load('bert');
    expect(tok.idToToken(2)).toBe('[CLS]');
    expect(tok.tokenToId('[CLS]')).toBe(2);
    expect(tok.idToToken(1e9)).toBeNull();
    expect(tok.idToToken(1e12)).toBeNull();
    expect(tok.decode([1e12, 2.5, -1])).toBe('');
    expect(tok.idToToken(-1)).toBeNull();
    expect(tok.tokenToId('no-such-token-here')).toBeNull();
  });
});

describe('encoding rules', () => {
  it('an empty pair is a single sequence (transformers drops a falsy text_pair)', async () => {
    for (const name of ['bert', 'roberta', 'llama', 't5']) {
      const tok = await loadTokenizer(fixtureFiles(join(FIXTURES, name)));
      expect(await tok.encode('Hello there', '')).toEqual(await tok.encode('Hello there'));
    }
  });

  it('a typed special-token string is an added token, not a template special', async () => {
    const tok = await loadTokenizer(fixtureFiles(join(TOKENIZER_REFS, 'bert-base-uncased')));
    const tokens = await tok.encode('a [MASK] b');
    const mask = tokens.find((t) => t.text === '[MASK]')!;
    expect(mask).toEqual({ id: 103, text: '[MASK]', start: 2, end: 8, special: false, segment: 0, word: 1 });
    expect(tok.tokensFromIds([103])[0]!.special).toBe(true);
  });

  it('segments of a pair without type ids (T5: "A </s> B </s>") follow the text', async () => {
    const tok = await loadTokenizer(fixtureFiles(join(FIXTURES, 't5')));
    const tokens = await tok.encode('a b', 'c');
    expect(tokens.map((t) => [t.text, t.segment, t.special])).toEqual([
      ['▁a', 0, false],
      ['▁b', 0, false],
      ['</s>', 0, true],
      ['▁c', 1, false],
      ['</s>', 1, true],
    ]);
    expect(tokens.map((t) => [t.start, t.end, t.word])).toEqual([
      [0, 1, 0],
      [1, 3, 1],
      [0, 0, null],
      [0, 1, 0],
      [0, 0, null],
    ]);
  });

  it('segments of a RoBERTa pair ("<s> A </s></s> B </s>", all type ids 0)', async () => {
    const tok = await loadTokenizer(fixtureFiles(join(FIXTURES, 'roberta')));
    const tokens = await tok.encode('a b', 'c');
    expect(tokens.map((t) => [t.text, t.segment, t.special, t.start, t.end, t.word])).toEqual([
      ['<s>', 0, true, 0, 0, null],
      ['a', 0, false, 0, 1, 0],
      ['Ġb', 0, false, 2, 3, 1],
      ['</s>', 0, true, 0, 0, null],
      ['</s>', 0, true, 0, 0, null],
      ['c', 1, false, 0, 1, 0],
      ['</s>', 1, true, 0, 0, null],
    ]);
  });

  it('add_bos_token / add_eos_token in tokenizer_config.json rebuild the template (Llama)', async () => {
    const dir = join(FIXTURES, 'llama');
    const base = sources(dir);
    const config = JSON.parse(base.tokenizerConfig) as Record<string, unknown>;
    const withEos = createTokenizer({ ...base, tokenizerConfig: JSON.stringify({ ...config, add_eos_token: true }) });
    expect(withEos.template).toEqual({ addBos: true, addEos: true });
    const single = await withEos.encode('Hi');
    const plain = await (await loadTokenizer(fixtureFiles(dir))).encode('Hi');
    expect(single.map((t) => t.id)).toEqual([...plain.map((t) => t.id), 2]);
    expect(single[0]!.id).toBe(1);
    const pair = await withEos.encode('Hi', 'Yo');
    const specials = pair.filter((t) => t.special).map((t) => [t.text, t.segment]);
    expect(specials).toEqual([
      ['<s>', 0],
      ['</s>', 0],
      ['<s>', 1],
      ['</s>', 1],
    ]);
    const secondBos = pair.findIndex((t, i) => i > 0 && t.text === '<s>');
    expect(pair.map((t) => t.segment)).toEqual(pair.map((_t, i) => (i < secondBos ? 0 : 1)));

    const noBos = createTokenizer({ ...base, tokenizerConfig: JSON.stringify({ ...config, add_bos_token: false }) });
    expect((await noBos.encode('Hi')).some((t) => t.special)).toBe(false);

    // The Llama class adds BOS by default even when tokenizer_config.json does not say so.
    const { add_bos_token: _b, add_eos_token: _e, ...bare } = config;
    const byDefault = createTokenizer({ ...base, tokenizerConfig: JSON.stringify(bare) });
    expect(byDefault.template).toEqual({ addBos: true, addEos: false });
    expect((await byDefault.encode('Hi'))[0]!.id).toBe(1);
  });

  it('keeps ByteLevel offset trimming when the template is rebuilt (gpt_neox)', async () => {
    const dir = join(FIXTURES, 'gpt_neox');
    const tok = await loadTokenizer(fixtureFiles(dir));
    expect(tok.template).toEqual({ addBos: false, addEos: false });
    const raw = await Tokenizer.fromFile(join(dir, 'tokenizer.json')).encode('The cat  sat');
    const tokens = await tok.encode('The cat  sat');
    expect(tokens.map((t) => [t.start, t.end])).toEqual(raw.getOffsets());
  });

  it('ignores truncation and padding stored in tokenizer.json', async () => {
    const dir = join(TOKENIZER_REFS, 'bert-base-uncased');
    const json = readJson<Record<string, unknown>>(join(dir, 'tokenizer.json'));
    json['truncation'] = { direction: 'Right', max_length: 4, strategy: 'LongestFirst', stride: 0 };
    json['padding'] = {
      strategy: { Fixed: 32 },
      direction: 'Right',
      pad_to_multiple_of: null,
      pad_id: 0,
      pad_type_id: 0,
      pad_token: '[PAD]',
    };
    const tok = createTokenizer({ tokenizerJson: JSON.stringify(json) });
    const ref = readJson<{ cases: TokenizerCase[] }>(join(dir, 'reference.json'));
    const c = ref.cases.find((x) => x.ids.length > 8)!;
    expectCase(await tok.encode(c.text, c.pair), c);
  });
});

describe('errors', () => {
  it('tokensFromIds rejects unknown ids and mismatched type ids', async () => {
    const tok = await loadTokenizer(fixtureFiles(join(FIXTURES, 'bert')));
    expect(() => tok.tokensFromIds([2, 1e7])).toThrow(AttnscopeError);
    expect(() => tok.tokensFromIds([2, 1e12])).toThrow(AttnscopeError);
    expect(() => tok.tokensFromIds([2, 1.5])).toThrow(AttnscopeError);
    expect(() => tok.tokensFromIds([2, 3], [0])).toThrow(AttnscopeError);
    expect(tok.tokensFromIds([])).toEqual([]);
  });

  it('missing or corrupt files are AttnscopeErrors', async () => {
    await expect(loadTokenizer({ tokenizerJson: join(FIXTURES, 'no-such-dir', 'tokenizer.json') })).rejects.toThrow(
      AttnscopeError,
    );
    expect(() => createTokenizer({ tokenizerJson: '{not json' })).toThrow(AttnscopeError);
    expect(() => createTokenizer({ tokenizerJson: '[]' })).toThrow(AttnscopeError);
    expect(() => createTokenizer({ tokenizerJson: '{"model": {"type": "Nope"}}' })).toThrow(AttnscopeError);
  });
});
