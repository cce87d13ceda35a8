/**
 * What only Marian (MarianMTModel) needs beyond the shared encoder-decoder fixture match
 * (test/fixtures-encdec.test.ts): decoder text goes through the TARGET tokenizer (target.spm,
 * pieces mapped to ids by vocab.json, `</s>` appended) and is shifted right behind
 * decoder_start_token_id (the pad token), as transformers' MarianTokenizer(text_target=...) and
 * shift_tokens_right do; and greedy translation with the key/value cache equals greedy decoding
 * that re-runs the full (non-cached) graph for every token, with transformers' generation rules
 * from generation_config.json (pad as decoder start, stop at </s>, </s> forced at the length limit).
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { argmax } from '../src/generation/sampling.js';
import type { AttnTokenizer } from '../src/tokenizer/load-tokenizer.js';
import { encDecTraceDiffs, expectDiffsWithin } from './helpers/encdec.js';
import { FIXTURES, readReference } from './helpers/reference.js';

const ref = readReference('marian');
const generationConfig = { decoder_start_token_id: 450, eos_token_id: 0, forced_eos_token_id: 0 };
/** HF's default max_length (20) minus the start token: what generate() runs to when the fixture's config sets no max_length. */
const MAX_NEW = 19;

describe('marian fixture', () => {
  let model: Model<AttnTokenizer>;
  beforeAll(async () => {
    model = await loadModel(join(FIXTURES, 'marian'));
  });
  afterAll(async () => {
    await model?.dispose();
  });

  it('starts the decoder and stops it as generation_config.json says (pad start, </s> end, </s> forced at the length limit)', () => {
    expect(model.generationConfig).toMatchObject(generationConfig);
    expect(model.decoderStartId).toBe(450);
    expect(model.forcedEosId).toBe(0);
    expect(model.tokenizer?.idToToken(450)).toBe('<pad>');
    expect([...model.eosIds()]).toEqual([0]);
  });

  for (const input of ref.inputs) {
    const decoderText = input.decoder_text as string;
    const labels = input.decoder_label_ids as number[];
    const decoderIds = input.decoder_input_ids as number[];
    const decoderTokens = input.decoder_tokens as string[];

    it(`input '${input.id}': the decoder text through target.spm and vocab.json gives transformers' label ids`, async () => {
      const target = await model.tokenizer!.encodeTarget!(decoderText);
      expect(target.map((t) => t.id)).toEqual(labels);
      // The pieces as the slow tokenizer names them (decoder_tokens: the shifted input, start token first).
      expect(target.map((t) => t.text)).toEqual([...decoderTokens.slice(1), '</s>']);
      expect(target[target.length - 1]).toMatchObject({ text: '</s>', special: true });
      // Offsets point into the decoder text.
      for (const t of target.slice(0, -1)) expect(decoderText.slice(t.start, t.end).replace(/^ /, '')).toBe(t.text.replace(/^▁/, ''));
    });

    it(`input '${input.id}': decoderText is shifted right behind the pad start token`, async () => {
      expect(decoderIds).toEqual([450, ...labels.slice(0, -1)]);
      const trace = await model.trace(input.text, { decoderText });
      expect(trace.tokens.map((t) => t.id)).toEqual(input.input_ids);
      expect(trace.decoderTokens?.map((t) => t.id)).toEqual(decoderIds);
      expect(trace.decoderTokens?.map((t) => t.text)).toEqual(decoderTokens);
    });

    it(`input '${input.id}': greedy translation with the cache equals greedy full re-runs (ids, attention, q/k)`, async () => {
      const gen = await model.generate(null, { ids: input.input_ids, maxNewTokens: MAX_NEW, qk: true });
      const chain = [model.decoderStartId];
      for (let i = 0; i < MAX_NEW; i++) {
        const full = await model.trace(null, { ids: input.input_ids, decoderIds: chain, logits: true });
        const vocab = full.logits!.dims[1]!;
        // transformers' ForcedEOSTokenLogitsProcessor: the last token the length limit allows is forced_eos_token_id (0).
        chain.push(i === MAX_NEW - 1 ? 0 : argmax(full.logits!.data.subarray(full.logits!.data.length - vocab)));
        if (chain[chain.length - 1] === 0) break;
      }
      expect(gen.decoderTokens?.map((t) => t.id)).toEqual(chain);
      expect(gen.decoderTokens?.[gen.decoderTokens.length - 1]?.id).toBe(0);
      expect(gen.generation?.stoppedBy).toBe(chain.length - 1 < MAX_NEW ? 'eos' : 'length');
      const full = await model.trace(null, { ids: input.input_ids, decoderIds: chain, qk: true });
      expectDiffsWithin(encDecTraceDiffs(gen, full));
    });
  }

  it('a leading >>lang<< code stays one token, looked up in vocab.json (unknown here: <unk>)', async () => {
    const target = await model.tokenizer!.encodeTarget!('>>de<< The cat.');
    expect(target[0]).toMatchObject({ text: '>>de<<', id: 1, start: 0, end: 6 });
    expect(target.slice(1).map((t) => t.id)).toEqual((await model.tokenizer!.encodeTarget!('The cat.')).map((t) => t.id));
  });

  it('a damaged target.spm, or a vocab.json without </s>, is one error naming the file', async () => {
    const scratch = mkdtempSync(join(tmpdir(), 'attnscope-marian-'));
    try {
      const dir = join(scratch, 'marian');
      cpSync(join(FIXTURES, 'marian'), dir, { recursive: true });
      writeFileSync(join(dir, 'target.spm'), readFileSync(join(FIXTURES, 'marian', 'target.spm')).subarray(0, 100));
      await expect(loadModel(dir, { graphCache: false })).rejects.toThrow(AttnscopeError);
      await expect(loadModel(dir, { graphCache: false })).rejects.toThrow(/target\.spm/);
      cpSync(join(FIXTURES, 'marian', 'target.spm'), join(dir, 'target.spm'));
      const vocab = JSON.parse(readFileSync(join(dir, 'vocab.json'), 'utf8')) as Record<string, number>;
      delete vocab['</s>'];
      writeFileSync(join(dir, 'vocab.json'), JSON.stringify(vocab));
      await expect(loadModel(dir, { graphCache: false })).rejects.toThrow(/vocab\.json has no <\/s> token/);
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  });

  it('without tokenizer.json (as the Hub has opus-mt checkpoints): source.spm and vocab.json give the same tokens, decoder ids and text', async () => {
    const scratch = mkdtempSync(join(tmpdir(), 'attnscope-marian-'));
    try {
      const dir = join(scratch, 'marian');
      cpSync(join(FIXTURES, 'marian'), dir, { recursive: true });
      rmSync(join(dir, 'tokenizer.json'));
      const bare = await loadModel(dir, { graphCache: false });
      try {
        for (const input of ref.inputs) {
          const tokens = await bare.tokenize(input.text);
          expect(tokens.map((t) => t.id)).toEqual(input.input_ids);
          expect(tokens.map((t) => t.text)).toEqual(input.tokens);
          // Offsets, words and special flags as the hand-written tokenizer.json gives them.
          expect(tokens).toEqual(await model.tokenize(input.text));
          expect(bare.tokenizer!.decode(input.input_ids, true)).toBe(model.tokenizer!.decode(input.input_ids, true));
          const trace = await bare.trace(input.text, { decoderText: input.decoder_text as string });
          expect(trace.decoderTokens?.map((t) => t.id)).toEqual(input.decoder_input_ids);
        }
        expect(await bare.tokenize('A text', 'and a pair')).toEqual(await model.tokenize('A text', 'and a pair'));
      } finally {
        await bare.dispose();
      }
    } finally {
      rmSync(scratch, { recursive: true, force: true });
    }
  });
});
