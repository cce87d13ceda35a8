/**
 * Text the tokenizer accepts is traced, whitespace included; only input that yields no tokens at
 * all is refused (with one line). GPT-2's byte-level tokens are checked against the byte → unicode
 * alphabet of its paper code (recomputed here) and the vocabulary of the fixture's tokenizer.json.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import { loadModel } from '../src/engine/load.js';
import { FIXTURES } from './helpers/reference.js';

/** GPT-2's bytes_to_unicode: printable bytes stand for themselves, the others for 256, 257, … in byte order. */
function byteToUnicode(byte: number): string {
  const printable = (b: number): boolean => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  if (printable(byte)) return String.fromCharCode(byte);
  let n = 0;
  for (let b = 0; b < byte; b++) if (!printable(b)) n++;
  return String.fromCharCode(256 + n);
}

function vocabOf(fixture: string): Record<string, number> {
  const json = JSON.parse(readFileSync(join(FIXTURES, fixture, 'tokenizer.json'), 'utf8')) as { model: { vocab: Record<string, number> } };
  return json.model.vocab;
}

describe('whitespace-only text', () => {
  it('gpt2: a tab is one token and three spaces are three, each traced with attention over them', async () => {
    const vocab = vocabOf('gpt2');
    const model = await loadModel(join(FIXTURES, 'gpt2'));
    try {
      for (const [text, pieces] of [['\t', [byteToUnicode(9)]], ['   ', [byteToUnicode(32), byteToUnicode(32), byteToUnicode(32)]]] as const) {
        const trace = await model.trace(text);
        expect(trace.tokens.map((t) => t.text)).toEqual(pieces);
        expect(trace.tokens.map((t) => t.id)).toEqual(pieces.map((p) => vocab[p]));
        const stack = trace.attention.self!;
        expect(stack.dims).toEqual([model.info.numHeads, pieces.length, pieces.length]);
        expect(stack.layers).toHaveLength(model.info.numLayers);
        // Causal attention: every query's row sums to 1.
        for (const layer of stack.layers) {
          for (let row = 0; row < layer.length / pieces.length; row++) {
            const sum = layer.subarray(row * pieces.length, (row + 1) * pieces.length).reduce((s, v) => s + v, 0);
            expect(sum).toBeCloseTo(1, 5);
          }
        }
      }
    } finally {
      await model.dispose();
    }
  });

  it('bert: spaces give [CLS] [SEP], traced', async () => {
    const vocab = vocabOf('bert');
    const model = await loadModel(join(FIXTURES, 'bert'));
    try {
      const trace = await model.trace('   ');
      expect(trace.tokens.map((t) => t.text)).toEqual(['[CLS]', '[SEP]']);
      expect(trace.tokens.map((t) => t.id)).toEqual([vocab['[CLS]'], vocab['[SEP]']]);
      expect(trace.attention.self!.dims).toEqual([model.info.numHeads, 2, 2]);
      expect(trace.attention.self!.layers).toHaveLength(model.info.numLayers);
    } finally {
      await model.dispose();
    }
  });

  it('a text that gives no tokens at all (gpt2 adds no specials to "") is refused in one line', async () => {
    const model = await loadModel(join(FIXTURES, 'gpt2'));
    try {
      for (const run of [() => model.trace(''), () => model.generate('', { maxNewTokens: 2 })]) {
        const err = await run().catch((e: unknown) => e);
        expect(err).toBeInstanceOf(AttnscopeError);
        expect((err as Error).message).toMatch(/^empty text: .*gives no tokens/);
        expect((err as Error).message).not.toContain('\n');
      }
    } finally {
      await model.dispose();
    }
  });
});
