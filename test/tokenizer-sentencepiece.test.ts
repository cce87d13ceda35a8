/**
 * Checkpoints without tokenizer.json (microsoft/deberta-v3-* ships spm.model and
 * tokenizer_config.json only): the tokenizer is built from the SentencePiece model as
 * transformers' convert_slow_tokenizer.py builds it. Each fixture below has a SentencePiece model
 * and a tokenizer.json that transformers 4.40 made from it; with tokenizer.json removed, the
 * tokenizer must encode every text (the fixture's inputs, the 60 cases of the real-tokenizer
 * references and some more hard strings, single and paired) to the same ids, token texts,
 * offsets, words, segments and special-token flags, decode alike, and give the fixture's input_ids.
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import type { Token } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import { createTokenizer, loadTokenizer, type AttnTokenizer } from '../src/tokenizer/load-tokenizer.js';
import { convertSentencePiece } from '../src/tokenizer/sentencepiece-convert.js';
import { fixtureFiles, restoreEnv, startFakeHub } from './helpers/fake-hub.js';
import { FIXTURES, readReference } from './helpers/reference.js';
import { sentencePieceProto } from './helpers/sentencepiece-proto.js';

const scratch = mkdtempSync(join(tmpdir(), 'attnscope-spm-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Fixture → its SentencePiece file (the slow tokenizer's vocab_file). */
const CASES: [fixture: string, model: string][] = [
  ['deberta-v2', 'spm.model'],
  ['xlm-roberta', 'sentencepiece.bpe.model'],
  ['t5', 'spiece.model'],
  ['mt5', 'spiece.model'],
  ['umt5', 'spiece.model'],
  ['albert', 'spiece.model'],
  ['llama', 'tokenizer.model'],
  ['mistral', 'tokenizer.model'],
  ['mbart', 'sentencepiece.bpe.model'],
  ['pegasus', 'spiece.model'],
];
const TOKENIZER_FILES = ['tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json'];

interface RefCase {
  text: string;
  pair?: string;
}
const realCases = (JSON.parse(readFileSync(join(FIXTURES, 'tokenizers', 'bert-base-uncased', 'reference.json'), 'utf8')) as { cases: RefCase[] }).cases;
const HARD: RefCase[] = [
  ...realCases.map((c) => (c.pair !== undefined ? { text: c.text, pair: c.pair } : { text: c.text })),
  { text: '   three leading, two trailing  ' },
  { text: 'a  b   c    d', pair: '  x  y  ' },
  { text: 'Ünïcödé àccents: ñ ç ø å ß Œ' },
  { text: '中文字符和日本語のテキスト、한국어' },
  { text: '🤖🧠 emoji 👩🏾‍🔬 sequences 🏳️‍🌈' },
  { text: '1, 2, 3, 10, 100,000 and 1,5 ² ³ ①,' },
  { text: 'unknown: \u{10FFFD} \u{E000} \u0378 ꙮ 𐍈' },
  { text: '<s> </s> <pad> <unk> <mask> [CLS] [SEP] [PAD] [UNK] [MASK]' },
  { text: "``double'' quotes" },
  { text: '\t\ttabs\t', pair: '\n' },
];

const read = (dir: string, name: string): string | undefined => (existsSync(join(dir, name)) ? readFileSync(join(dir, name), 'utf8') : undefined);

/** The tokenizer transformers saved (tokenizer.json), as attnscope loads it. */
function fromTokenizerJson(dir: string): AttnTokenizer {
  const config = read(dir, 'tokenizer_config.json');
  const map = read(dir, 'special_tokens_map.json');
  return createTokenizer({
    tokenizerJson: readFileSync(join(dir, 'tokenizer.json'), 'utf8'),
    ...(config !== undefined ? { tokenizerConfig: config } : {}),
    ...(map !== undefined ? { specialTokensMap: map } : {}),
  });
}

/** A copy of the checkpoint's tokenizer files without tokenizer.json. */
function withoutTokenizerJson(fixture: string, model: string): string {
  const dir = mkdtempSync(join(scratch, `${fixture}-`));
  for (const name of [model, 'config.json', ...TOKENIZER_FILES]) {
    if (existsSync(join(FIXTURES, fixture, name))) copyFileSync(join(FIXTURES, fixture, name), join(dir, name));
  }
  return dir;
}

async function fromSentencePiece(dir: string, model: string): Promise<AttnTokenizer> {
  const has = (name: string): string | undefined => (existsSync(join(dir, name)) ? join(dir, name) : undefined);
  const modelType = (JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { model_type: string }).model_type;
  return loadTokenizer({
    sentencePiece: join(dir, model),
    modelType,
    tokenizerConfig: has('tokenizer_config.json'),
    specialTokensMap: has('special_tokens_map.json'),
    addedTokensJson: has('added_tokens.json'),
  });
}

const T5_FAMILY = new Set(['t5', 'mt5', 'umt5']);

for (const [fixture, model] of CASES) {
  describe(`${fixture}: ${model} without tokenizer.json`, () => {
    const ref = readReference(fixture);
    const expected = fromTokenizerJson(join(FIXTURES, fixture));
    const built = fromSentencePiece(withoutTokenizerJson(fixture, model), model);

    it('gives the fixture input ids', async () => {
      const tok = await built;
      for (const input of ref.inputs) {
        const tokens = await tok.encode(input.text, input.text_pair);
        expect(tokens.map((t) => t.id), input.id).toEqual(input.input_ids);
        expect(tokens.map((t) => t.text), input.id).toEqual(input.tokens);
        if (input.token_type_ids) expect(tokens.map((t) => t.segment), input.id).toEqual(input.token_type_ids);
      }
    });

    it('encodes every text as the tokenizer.json transformers made', async () => {
      const tok = await built;
      const cases: RefCase[] = [...ref.inputs.map((i) => ({ text: i.text, ...(i.text_pair ? { pair: i.text_pair } : {}) })), ...HARD];
      for (const c of cases) {
        for (const pair of c.pair !== undefined ? [c.pair] : [undefined, 'A second, shorter text.']) {
          const want: Token[] = await expected.encode(c.text, pair);
          const got: Token[] = await tok.encode(c.text, pair);
          expect(got, JSON.stringify([c.text, pair])).toEqual(want);
          const ids = want.map((t) => t.id);
          expect(tok.decode(ids)).toBe(expected.decode(ids));
          expect(tok.decode(ids, true)).toBe(expected.decode(ids, true));
        }
      }
    });

    it("builds transformers' model: vocabulary, scores, unknown id (and BPE merges)", () => {
      const dir = join(FIXTURES, fixture);
      const modelType = (JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as { model_type: string }).model_type;
      const config = read(dir, 'tokenizer_config.json');
      const built = JSON.parse(convertSentencePiece({ model: readFileSync(join(dir, model)), what: model, modelType, ...(config !== undefined ? { tokenizerConfig: config } : {}) }).tokenizerJson) as { model: Record<string, unknown> };
      const saved = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')) as { model: Record<string, unknown> };
      const pairs = (merges: unknown): string[] => (merges as (string | string[])[]).map((m) => (typeof m === 'string' ? m : m.join(' ')));
      if (saved.model['type'] === 'BPE') {
        expect(built.model['vocab']).toEqual(saved.model['vocab']);
        expect(pairs(built.model['merges'])).toEqual(pairs(saved.model['merges']));
      } else {
        // The saved deberta-v2 vocabulary also lists the added [MASK] (id 450) after the pieces.
        const vocab = saved.model['vocab'] as [string, number][];
        expect(built.model['vocab']).toEqual(fixture === 'deberta-v2' ? vocab.slice(0, -1) : vocab);
        expect(built.model['unk_id']).toBe(saved.model['unk_id']);
      }
    });

    it('has the same vocabulary and special tokens', async () => {
      const tok = await built;
      expect(tok.vocabSize).toBe(expected.vocabSize);
      expect([...tok.specialIds].sort((a, b) => a - b)).toEqual([...expected.specialIds].sort((a, b) => a - b));
      for (const role of ['bos', 'eos', 'unk', 'sep', 'pad', 'cls', 'mask'] as const) expect(tok[role], role).toEqual(expected[role]);
      for (let id = 0; id < expected.vocabSize; id++) expect(tok.idToToken(id)).toBe(expected.idToToken(id));
    });

    if (fixture === 'mbart') {
      it('puts the language code asked for where the template puts en_XX', async () => {
        const tok = await built;
        expect(tok.languages?.source).toBe(expected.languages?.source);
        for (const srcLang of ['ro_RO', 'zh_CN']) {
          const got = await tok.encode('The black cat.', undefined, { srcLang });
          expect(got).toEqual(await expected.encode('The black cat.', undefined, { srcLang }));
          expect(got.at(-1)?.text).toBe(srcLang);
        }
      });
    }

    if (T5_FAMILY.has(fixture)) {
      // tokenizer_config.json's added_tokens_decoder gives the sentinels lstrip and rstrip, and
      // transformers applies it when it builds the tokenizer from spiece.model (this fixture's
      // tokenizer.json was saved without them): the sentinel takes the spaces around it.
      it('gives <extra_id_N> the spaces around it, as tokenizer_config.json says', async () => {
        const tok = await built;
        const text = 'a <extra_id_0> b';
        const tokens = await tok.encode(text);
        const sentinel = tokens.find((t) => t.text === '<extra_id_0>')!;
        expect([sentinel.id, sentinel.start, sentinel.end]).toEqual([expected.tokenToId('<extra_id_0>'), 1, 15]);
        expect(text.slice(sentinel.start, sentinel.end)).toBe(' <extra_id_0> ');
      });
    }
  });
}

describe('the loader', () => {
  it('traces a DeBERTa checkpoint without tokenizer.json from text', async () => {
    const dir = withoutTokenizerJson('deberta-v2', 'spm.model');
    copyFileSync(join(FIXTURES, 'deberta-v2', 'model.safetensors'), join(dir, 'model.safetensors'));
    const m = await loadModel(dir, { graphCache: false });
    try {
      for (const input of readReference('deberta-v2').inputs) {
        const tokens = await m.tokenize(input.text, input.text_pair);
        expect(tokens.map((t) => t.id)).toEqual(input.input_ids);
      }
    } finally {
      await m.dispose();
    }
  });

  it('downloads spm.model from the Hub for a model id without tokenizer.json', async () => {
    const files = await fixtureFiles(join(FIXTURES, 'deberta-v2'));
    files.delete('tokenizer.json');
    const hub = await startFakeHub({ 'test-org/deberta-v3-tiny': { files } });
    const saved = { ...process.env };
    process.env.HF_ENDPOINT = hub.url;
    process.env.HF_HUB_CACHE = join(scratch, 'hub');
    delete process.env.HF_HUB_OFFLINE;
    delete process.env.HF_TOKEN;
    try {
      const m = await loadModel('test-org/deberta-v3-tiny', { graphCache: false });
      try {
        const input = readReference('deberta-v2').inputs[0]!;
        expect((await m.tokenize(input.text, input.text_pair)).map((t) => t.id)).toEqual(input.input_ids);
      } finally {
        await m.dispose();
      }
      expect(hub.requests.some((r) => r.path.endsWith('/spm.model'))).toBe(true);
    } finally {
      restoreEnv(saved);
      await hub.close();
    }
  });

  it('a DeBERTa-v3 layout (tokenizer_config.json without special tokens or added_tokens_decoder) gets the class defaults', async () => {
    // microsoft/deberta-v3-base: {"do_lower_case": false, "vocab_type": "spm"}, added_tokens.json {"[MASK]": 128000}.
    const dir = mkdtempSync(join(scratch, 'v3-'));
    copyFileSync(join(FIXTURES, 'deberta-v2', 'spm.model'), join(dir, 'spm.model'));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ do_lower_case: false, vocab_type: 'spm' }));
    writeFileSync(join(dir, 'added_tokens.json'), JSON.stringify({ '[MASK]': 450 }));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'deberta-v2' }));
    const tok = await fromSentencePiece(dir, 'spm.model');
    const expected = fromTokenizerJson(join(FIXTURES, 'deberta-v2'));
    for (const c of HARD) expect(await tok.encode(c.text, c.pair)).toEqual(await expected.encode(c.text, c.pair));
    expect([tok.cls, tok.sep, tok.mask, tok.pad, tok.unk]).toEqual([expected.cls, expected.sep, expected.mask, expected.pad, expected.unk]);
    // [CLS] x [SEP] by hand: ids 1 and 2 of spm.model, [MASK] = 450.
    const ids = (await tok.encode('[MASK]')).map((t) => t.id);
    expect(ids).toEqual([1, 450, 2]);
  });

  it('a damaged SentencePiece model is one line naming the file', async () => {
    const dir = withoutTokenizerJson('deberta-v2', 'spm.model');
    const good = readFileSync(join(dir, 'spm.model'));
    const file = join(dir, 'spm.model');
    const damaged: Buffer[] = [
      Buffer.from('this is not a sentencepiece model at all, just text\n'),
      good.subarray(0, Math.floor(good.length / 2) + 1),
      Buffer.alloc(0),
    ];
    // One piece "a" whose score is NaN: ModelProto.pieces (field 1) { piece (1) "a", score (2, float) }.
    const nan = Buffer.alloc(4);
    nan.writeFloatLE(NaN);
    const inner = [0x0a, 1, 0x61, 0x15, ...nan];
    damaged.push(Buffer.from([0x0a, inner.length, ...inner]));
    // The precompiled charsmap's trie size made larger than the data.
    const charsmapAt = good.indexOf(Buffer.from('nmt_nfkc')) + 'nmt_nfkc'.length;
    const corrupt = Buffer.from(good);
    // NormalizerSpec field 2 (precompiled_charsmap): tag 0x12, varint length, then the u32 trie size.
    let p = charsmapAt;
    expect(corrupt[p]).toBe(0x12);
    p++;
    while (corrupt[p]! & 0x80) p++;
    p++;
    corrupt.writeUInt32LE(0x7ffffff0, p);
    damaged.push(corrupt);
    for (const bytes of damaged) {
      writeFileSync(file, bytes);
      const err = await fromSentencePiece(dir, 'spm.model').then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(AttnscopeError);
      const message = (err as Error).message;
      expect(message).toContain(file);
      expect(message).not.toContain('\n');
    }
  });

  it("ALBERT lowers pieces ending in a digit and a comma by 100 (check_number_comma)", async () => {
    // pieces: controls, unknown (unk_id 1), then ▁ 1 , x ٣ and the merged "▁1," "x," "▁٣," with high scores.
    const pieces: [string, number, number][] = [
      ['<pad>', 0, 3], ['<unk>', 0, 2], ['[CLS]', 0, 3], ['[SEP]', 0, 3], ['[MASK]', 0, 3],
      ['▁', -1, 1], ['1', -2, 1], [',', -2, 1], ['x', -2, 1], ['٣', -2, 1], ['▁1,', -0.1, 1], ['x,', -0.1, 1], ['▁٣,', -0.1, 1],
    ];
    const dir = mkdtempSync(join(scratch, 'albert-'));
    writeFileSync(join(dir, 'spiece.model'), sentencePieceProto(pieces, { unkId: 1 }));
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ tokenizer_class: 'AlbertTokenizer' }));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ model_type: 'albert' }));
    const tok = await fromSentencePiece(dir, 'spiece.model');
    // "▁1," and "▁٣," end in digit + comma: −100.1 loses to ▁ 1 , (−5); "x," keeps its −0.1.
    expect((await tok.encode('1, X, ٣,')).map((t) => t.text)).toEqual(['[CLS]', '▁', '1', ',', '▁', 'x,', '▁', '٣', ',', '[SEP]']);
  });

  it('DeBERTa with split_by_punct splits punctuation off before the pieces, each with ▁', async () => {
    const dir = withoutTokenizerJson('deberta-v2', 'spm.model');
    const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    const texts = async (): Promise<string> => (await (await fromSentencePiece(dir, 'spm.model')).encode('a,b')).slice(1, -1).map((t) => t.text).join('');
    expect(await texts()).toBe('▁a,b');
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, split_by_punct: true }));
    expect(await texts()).toBe('▁a▁,▁b');
  });

  it('T5 with legacy false prepends ▁ only at the start of the text (prepend_scheme "first")', async () => {
    const dir = withoutTokenizerJson('t5', 'spiece.model');
    const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    const after = async (): Promise<string> => {
      const tokens = await (await fromSentencePiece(dir, 'spiece.model')).encode('Hello<extra_id_0>world');
      return tokens[tokens.findIndex((t) => t.text === '<extra_id_0>') + 1]!.text;
    };
    expect((await after()).startsWith('▁')).toBe(true);
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, legacy: false }));
    expect((await after()).startsWith('▁')).toBe(false);
  });

  it('mBART-50: 52 language codes after the pieces, <mask> last, the source code first and </s> last', async () => {
    const dir = withoutTokenizerJson('mbart', 'sentencepiece.bpe.model');
    const config = JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, tokenizer_class: 'MBart50Tokenizer', added_tokens_decoder: undefined }));
    const tok = await fromSentencePiece(dir, 'sentencepiece.bpe.model');
    const cc25 = fromTokenizerJson(join(FIXTURES, 'mbart'));
    // The fairseq layout is cc25's: the same ids up to the 25 cc25 codes (451..475); then
    // mBART-50's 27 more (476..502) and <mask> at 503 (the fixture's spm has 450 pieces).
    expect(tok.vocabSize).toBe(504);
    expect([tok.tokenToId('en_XX'), tok.tokenToId('zh_CN'), tok.tokenToId('af_ZA'), tok.tokenToId('sl_SI'), tok.mask?.id]).toEqual([454, 475, 476, 502, 503]);
    const text = 'The black cat sat on the mat.';
    const pieces = (await cc25.encode(text)).slice(0, -2);
    const got = await tok.encode(text);
    expect(got.map((t) => t.id)).toEqual([454, ...pieces.map((t) => t.id), 2]);
    expect(got.slice(1, -1)).toEqual(pieces);
    expect((await tok.encode(text, undefined, { srcLang: 'fr_XX' }))[0]).toMatchObject({ id: 458, text: 'fr_XX', special: true });
  });

  it('a tokenizer class without a converter is named', async () => {
    const dir = withoutTokenizerJson('deberta-v2', 'spm.model');
    writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ tokenizer_class: 'CamembertTokenizer' }));
    const err = await fromSentencePiece(dir, 'spm.model').then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(AttnscopeError);
    expect((err as Error).message).toMatch(/the tokenizer class 'CamembertTokenizer' is not converted from SentencePiece \(converted: DebertaV2Tokenizer, /);
  });
});
