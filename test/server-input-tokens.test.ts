/**
 * The token checks of the server's trace and analysis requests (src/server/request-checks.ts
 * checkInputTokens) on real fixtures: a BERT (encoder, 128 positions) and a BART (encoder-decoder).
 * Token counts come from the fixtures' reference.json (Hugging Face's tokenizers), the position
 * bound from config.json: the limit is the smaller of the server's and the model's, a refusal
 * names its field, its status and which limit it hit.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadModel } from '../src/engine/load.js';
import type { Model } from '../src/engine/model.js';
import { checkInputTokens, RequestError } from '../src/server/request-checks.js';
import { FIXTURES } from './helpers/reference.js';

interface Ref {
  inputs: { text: string; input_ids: number[]; decoder_text?: string; decoder_label_ids?: number[] }[];
}
const ref = (name: string) => JSON.parse(readFileSync(join(FIXTURES, name, 'reference.json'), 'utf8')) as Ref;
const positions = (name: string) => (JSON.parse(readFileSync(join(FIXTURES, name, 'config.json'), 'utf8')) as { max_position_embeddings: number }).max_position_embeddings;

async function refusal(p: Promise<unknown>): Promise<{ status: number; field: string | undefined; message: string }> {
  const e = await p.then(
    () => null,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(RequestError);
  const r = e as RequestError;
  return { status: r.status, field: r.field, message: r.message };
}

let bert: Model;
let bart: Model;
beforeAll(async () => {
  [bert, bart] = await Promise.all([loadModel(join(FIXTURES, 'bert'), { graphCache: false }), loadModel(join(FIXTURES, 'bart'), { graphCache: false })]);
});

describe('checkInputTokens', () => {
  it("takes a text up to the server's limit and gives its tokens; one token more is a 413 naming --max-tokens", async () => {
    const { text, input_ids: ids } = ref('bert').inputs[0]!;
    const ok = await checkInputTokens(bert, { text }, ids.length);
    expect(ok.tokens.map((t) => t.id)).toEqual(ids);
    expect(ok.max).toBe(ids.length);
    expect(ok.decoderPositions).toBeUndefined();
    expect(await refusal(checkInputTokens(bert, { text }, ids.length - 1))).toEqual({
      status: 413,
      field: 'text',
      message: `text: ${ids.length} tokens; at most ${ids.length - 1} allowed (the server's --max-tokens)`,
    });
  });

  it("bounds a text by the model's positions when they are fewer than the server's limit", async () => {
    const max = positions('bert');
    const r = await refusal(checkInputTokens(bert, { text: 'word '.repeat(max) }, 10 * max));
    expect(r.status).toBe(413);
    expect(r.field).toBe('text');
    expect(r.message).toMatch(new RegExp(`^text: \\d+ tokens; at most ${max} allowed \\(the model's ${max} positions\\)$`));
    const pair = await refusal(checkInputTokens(bert, { text: 'word '.repeat(max / 2), textPair: 'word '.repeat(max / 2) }, 10 * max));
    expect(pair.field).toBe('textPair');
    expect(pair.message).toMatch(/^text, textPair: \d+ tokens; at most \d+ allowed/);
  });

  it('refuses a decoder text for a model that is not an encoder-decoder, and a text pair for one that is', async () => {
    expect(await refusal(checkInputTokens(bert, { text: 'hi', decoderText: 'there' }, 100))).toEqual({
      status: 400,
      field: 'decoderText',
      message: `decoderText: ${bert.name} is not an encoder-decoder model (leave decoderText out)`,
    });
    expect(await refusal(checkInputTokens(bart, { text: 'hi', textPair: 'there' }, 100))).toEqual({
      status: 400,
      field: 'textPair',
      message: `textPair: does not apply to an encoder-decoder model (${bart.name})`,
    });
  });

  it("counts the decoder's start token against the limit (BART: the target text is tokenized as a source text is)", async () => {
    const { text: long, input_ids: longIds, decoder_text: short, decoder_label_ids: shortIds } = ref('bart').inputs[0]!;
    expect(shortIds!.length).toBeLessThan(longIds.length);
    // The short text as the encoder's input, the long one as the decoder's: it needs its tokens + 1 positions.
    const ok = await checkInputTokens(bart, { text: short!, decoderText: long }, longIds.length + 1);
    expect(ok.tokens.map((t) => t.id)).toEqual(shortIds);
    expect(ok.decoderPositions).toBe(longIds.length + 1);
    expect(await refusal(checkInputTokens(bart, { text: short!, decoderText: long }, longIds.length))).toEqual({
      status: 413,
      field: 'decoderText',
      message: `decoderText: ${longIds.length} tokens; at most ${longIds.length - 1} allowed (the server's --max-tokens)`,
    });
  });
});
