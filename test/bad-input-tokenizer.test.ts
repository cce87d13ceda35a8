/**
 * The tokenizer.json checks that stand before the Rust binding, on their own: they accept the
 * real tokenizers of the fixtures (no false alarm), and refuse corrupt charsmaps and templates.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { precompiledCharsmapProblem, precompiledCharsmaps } from '../src/tokenizer/precompiled.js';
import { ROOT } from './helpers/cli.js';

const tokenizerJson = (name: string): Record<string, unknown> =>
  JSON.parse(readFileSync(join(ROOT, 'test', 'fixtures', name, 'tokenizer.json'), 'utf8')) as Record<string, unknown>;

describe('precompiled_charsmap check', () => {
  it("accepts T5's and ALBERT's real charsmaps", () => {
    for (const name of ['t5', 'albert']) {
      const maps = precompiledCharsmaps(tokenizerJson(name)['normalizer']);
      expect(maps).toHaveLength(1);
      expect(precompiledCharsmapProblem(maps[0] as string)).toBeNull();
    }
  });

  it('refuses truncated, non-base64 and out-of-range charsmaps', () => {
    const real = precompiledCharsmaps(tokenizerJson('t5')['normalizer'])[0] as string;
    expect(precompiledCharsmapProblem('not base64!')).toMatch(/not valid base64/);
    // Node decodes a non-canonical last symbol; the binding's base64 reader refuses (and panics).
    expect(precompiledCharsmapProblem('AAB=')).toMatch(/not valid base64/);
    expect(precompiledCharsmapProblem('AAA=')).toMatch(/too short/);
    // Keep the declared trie size but cut the data: the trie runs past the end.
    expect(precompiledCharsmapProblem(real.slice(0, 4000))).toMatch(/declares a \d+-byte trie/);
    // The flip of bad-input.test.ts: a leaf 33 MB past the strings.
    expect(precompiledCharsmapProblem(`${real.slice(0, 219573)}r${real.slice(219574)}`)).toMatch(/past its 60405 bytes of strings/);
  });
});
