/**
 * Language codes of translation tokenizers (mBART, M2M100), as transformers uses them:
 * - the source language code the tokenizer adds (`A </s> en_XX` for mBART, `__en__ A </s>` for
 *   M2M100) is selectable (`srcLang`, CLI --src-lang). The expectation is built independently of
 *   our tokenizer: the fixture's PyTorch ids with the code token replaced by the other code's id,
 *   looked up by string in the checkpoint's tokenizer.json;
 * - generation with a target language (`tgtLang`, --tgt-lang) starts the decoder as transformers'
 *   generate does: M2M100 forces the code after decoder_start_token_id (forced_bos_token_id),
 *   mBART (cc25) starts the decoder with the code (decoder_start_token_id = the code); cached
 *   decoding equals an argmax loop over full re-runs of the non-cached graph;
 * - a code the tokenizer does not have is one line naming the option and the valid codes, and the
 *   CLI exits with a non-zero code.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import type { StackName } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { argmax } from '../src/generation/sampling.js';
import { runCli } from './helpers/cli.js';
import { FIXTURES, maxAbsDiff, readReference, stackValues } from './helpers/reference.js';

/** Id of an added token of the fixture's tokenizer.json, by its text (read here, not through our tokenizer). */
function addedTokenId(fixture: string, text: string): number {
  const json = JSON.parse(readFileSync(join(FIXTURES, fixture, 'tokenizer.json'), 'utf8')) as { added_tokens: { id: number; content: string }[] };
  const entry = json.added_tokens.find((t) => t.content === text);
  if (!entry) throw new Error(`${fixture}/tokenizer.json has no added token ${text}`);
  return entry.id;
}

function configValue(fixture: string, key: string): unknown {
  return (JSON.parse(readFileSync(join(FIXTURES, fixture, 'config.json'), 'utf8')) as Record<string, unknown>)[key];
}

interface Case {
  fixture: string;
  /** The source code the fixture's ids carry, and where: its token text and index (negative: from the end). */
  source: string;
  at: number;
  /** Another source code: as the option takes it, and its token text. */
  other: { code: string; token: string };
  /** The target language for generation: option value and token text. */
  target: { code: string; token: string };
  style: 'forced-bos' | 'decoder-start';
}

const CASES: Case[] = [
  { fixture: 'mbart', source: 'en_XX', at: -1, other: { code: 'de_DE', token: 'de_DE' }, target: { code: 'ro_RO', token: 'ro_RO' }, style: 'decoder-start' },
  { fixture: 'm2m100', source: '__en__', at: 0, other: { code: 'de', token: '__de__' }, target: { code: 'fr', token: '__fr__' }, style: 'forced-bos' },
];

const MAX_NEW = 6;

for (const c of CASES) {
  describe(`language codes: ${c.fixture}`, () => {
    const ref = readReference(c.fixture);
    let model: Model;
    beforeAll(async () => {
      model = await loadModel(join(FIXTURES, c.fixture), { graphCache: false });
    });
    afterAll(async () => {
      await model?.dispose();
    });

    it(`${c.fixture}: --src-lang ${c.other.code} puts ${c.other.token} where the tokenizer put ${c.source}`, async () => {
      const sourceId = addedTokenId(c.fixture, c.source);
      const otherId = addedTokenId(c.fixture, c.other.token);
      for (const input of ref.inputs) {
        const at = c.at < 0 ? input.input_ids.length + c.at : c.at;
        expect(input.tokens[at], `${input.id}: the fixture's code`).toBe(c.source);
        expect(input.input_ids[at]).toBe(sourceId);
        const want = input.input_ids.map((id, i) => (i === at ? otherId : id));
        const trace = await model.trace(input.text, { srcLang: c.other.code, decoderIds: [2] });
        expect(trace.tokens.map((t) => t.id), input.id).toEqual(want);
        expect(trace.tokens[at]!.text).toBe(c.other.token);
        expect(trace.tokens[at]!.special).toBe(true);
        // The default (tokenizer_config.json's src_lang) and naming it explicitly give the fixture's ids.
        const plain = await model.trace(input.text, { decoderIds: [2] });
        expect(plain.tokens.map((t) => t.id)).toEqual(input.input_ids);
      }
      const named = await model.tokenize(ref.inputs[0]!.text, undefined, undefined, c.source);
      expect(named.map((t) => t.id)).toEqual(ref.inputs[0]!.input_ids);
    });

    it(`${c.fixture}: the tokenizer lists its language codes`, () => {
      const langs = model.tokenizer!.languages!;
      expect(langs.targetStyle).toBe(c.style);
      expect(langs.ids.get(c.other.code)).toBe(addedTokenId(c.fixture, c.other.token));
      // Every added token shaped like the convention is a code (25 mBART codes, 100 M2M100 codes).
      const json = JSON.parse(readFileSync(join(FIXTURES, c.fixture, 'tokenizer.json'), 'utf8')) as { added_tokens: { content: string }[] };
      const shape = c.fixture === 'mbart' ? /^[a-z]{2}_[A-Z]{2}$/ : /^__[a-z]+__$/;
      expect(langs.codes.length).toBe(json.added_tokens.filter((t) => shape.test(t.content)).length);
    });

    it(`${c.fixture}: --tgt-lang ${c.target.code} starts the decoder as transformers' generate does; cached = full re-runs`, async () => {
      const input = ref.inputs[0]!;
      const targetId = addedTokenId(c.fixture, c.target.token);
      const start = configValue(c.fixture, 'decoder_start_token_id') as number;
      const prompt = c.style === 'forced-bos' ? [start, targetId] : [targetId];
      const gen = await model.generate(input.text, { maxNewTokens: MAX_NEW, tgtLang: c.target.code, qk: true });
      const ids = gen.decoderTokens!.map((t) => t.id);
      expect(ids.slice(0, prompt.length)).toEqual(prompt);
      expect(gen.decoderTokens!.slice(0, prompt.length).every((t) => !t.generated)).toBe(true);
      // The forced token counts toward the new tokens, as transformers' max_new_tokens does.
      if (gen.generation!.stoppedBy === 'length') expect(ids.length).toBe(1 + MAX_NEW);
      // Greedy choices equal an argmax loop re-running the full (non-cached) graph.
      const eos = model.eosIds();
      const chain = [...prompt];
      while (chain.length < 1 + MAX_NEW) {
        const full = await model.trace(null, { ids: input.input_ids, decoderIds: chain, logits: true });
        const vocab = full.logits!.dims[1]!;
        const id = argmax(full.logits!.data.subarray(full.logits!.data.length - vocab));
        chain.push(id);
        if (eos.has(id)) break;
      }
      expect(ids).toEqual(chain);
      // Attention, queries and keys of every stack equal one full trace of the final ids.
      const full = await model.trace(null, { ids: input.input_ids, decoderIds: ids, qk: true });
      for (const stack of ['encoder', 'decoder', 'cross'] as StackName[]) {
        expect(gen.attention[stack]?.dims, stack).toEqual(full.attention[stack]?.dims);
        expect(maxAbsDiff(stackValues(gen.attention[stack]), stackValues(full.attention[stack])), stack).toBeLessThanOrEqual(1e-5);
        expect(maxAbsDiff(stackValues(gen.keys?.[stack]), stackValues(full.keys?.[stack])), stack).toBeLessThanOrEqual(1e-4);
      }
    });

    it(`${c.fixture}: a decoder text with --tgt-lang is encoded with the target code`, async () => {
      const targetId = addedTokenId(c.fixture, c.target.token);
      const text = ref.inputs[0]!.decoder_text as string;
      const labels = (ref.inputs[0]!.decoder_label_ids as number[]).map((id) => (id === addedTokenId(c.fixture, c.source) ? targetId : id));
      const start = configValue(c.fixture, 'decoder_start_token_id') as number;
      const trace = await model.trace(ref.inputs[0]!.text, { decoderText: text, tgtLang: c.target.code });
      expect(trace.decoderTokens!.map((t) => t.id)).toEqual([start, ...labels.slice(0, -1)]);
    });

    it(`${c.fixture}: an unknown code is one line naming the option and the valid codes`, async () => {
      const input = ref.inputs[0]!;
      const src = await model.trace(input.text, { srcLang: 'xx_YY', decoderIds: [2] }).then(() => null, (e: unknown) => e);
      expect(src).toBeInstanceOf(AttnscopeError);
      const message = (src as Error).message;
      expect(message).not.toContain('\n');
      expect(message).toContain("--src-lang 'xx_YY'");
      expect(message).toContain(c.other.code);
      const tgt = await model.generate(input.text, { maxNewTokens: 2, tgtLang: 'zz' }).then(() => null, (e: unknown) => e);
      expect(tgt).toBeInstanceOf(AttnscopeError);
      expect((tgt as Error).message).toContain("--tgt-lang 'zz'");
    });
  });
}

describe('language codes: models without them', () => {
  it('a tokenizer without language codes says so for --src-lang and --tgt-lang', async () => {
    const model = await loadModel(join(FIXTURES, 'bart'), { graphCache: false });
    try {
      await expect(model.trace('Hello', { srcLang: 'en_XX', decoderIds: [2] })).rejects.toThrow(/--src-lang en_XX: .*has no language codes/);
      await expect(model.generate('Hello', { maxNewTokens: 2, tgtLang: 'fr' })).rejects.toThrow(/--tgt-lang fr: .*has no language codes/);
    } finally {
      await model.dispose();
    }
  });
});

describe('language codes on the command line', () => {
  let scratch: string;
  beforeAll(() => {
    scratch = mkdtempSync(join(tmpdir(), 'attnscope-lang-'));
  });
  afterAll(() => {
    rmSync(scratch, { recursive: true, force: true });
  });

  it('trace --src-lang with a code the tokenizer lacks: one clear line, non-zero exit', () => {
    const r = runCli(scratch, ['trace', join(FIXTURES, 'mbart'), '--text', 'The cat.', '--decoder-ids', '2', '--src-lang', 'xx']);
    expect(r.status).not.toBe(0);
    expect(r.status).not.toBeNull();
    const lines = r.stderr.trim().split('\n');
    expect(lines, r.stderr).toHaveLength(1);
    expect(lines[0]).toMatch(/--src-lang 'xx' is not a language code/);
    expect(lines[0]).toContain('en_XX');
    expect(r.stdout).toBe('');
  });

  it('generate --src-lang de --tgt-lang fr on m2m100 starts the decoder with __fr__ and encodes __de__', () => {
    const out = join(scratch, 'm2m.json');
    const r = runCli(scratch, ['generate', join(FIXTURES, 'm2m100'), '--text', 'The cat.', '--src-lang', 'de', '--tgt-lang', 'fr', '--max-new-tokens', '3', '--out', out]);
    expect(r.status, r.stderr).toBe(0);
    const trace = JSON.parse(readFileSync(out, 'utf8')) as { tokens: { id: number }[]; decoderTokens: { id: number }[] };
    expect(trace.tokens[0]!.id).toBe(addedTokenId('m2m100', '__de__'));
    expect(trace.decoderTokens.slice(0, 2).map((t) => t.id)).toEqual([configValue('m2m100', 'decoder_start_token_id'), addedTokenId('m2m100', '__fr__')]);
    expect(trace.decoderTokens).toHaveLength(4);
  });
});
