/**
 * Fuzzing tokenizer loading (src/tokenizer/load-tokenizer.ts) with mutated copies of the
 * fixtures' real tokenizer.json and tokenizer_config.json: corrupt Precompiled charsmaps,
 * templates naming tokens that do not exist, wrong types, nesting, hostile text. Each case runs
 * in a child process (the Rust binding can abort the whole process); every case must give
 * tokens or one clean AttnscopeError line, never a crash, a hang or another error.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, it } from 'vitest';
import { FIXTURES } from '../helpers/reference.js';
import { FuzzChild, type Outcome } from './child.js';
import { type Json, type JsonPath, checkUserMessage, fuzzParams, jsonMutations, jsonPaths, mutateJson, testTimeout } from './harness.js';

const MODELS = ['t5', 'albert', 'bert', 'gpt2', 'llama', 'bart', 'gemma'];
const BUDGET = 8_000;

interface Fixture {
  name: string;
  tokenizer: Json;
  config?: Json;
  specialTokensMap?: string;
}

const fixtures: Fixture[] = MODELS.map((name) => {
  const read = (file: string): string | undefined => {
    const path = join(FIXTURES, name, file);
    return existsSync(path) ? readFileSync(path, 'utf8') : undefined;
  };
  const config = read('tokenizer_config.json');
  return {
    name,
    tokenizer: JSON.parse(read('tokenizer.json')!) as Json,
    ...(config !== undefined ? { config: JSON.parse(config) as Json } : {}),
    ...(read('special_tokens_map.json') !== undefined ? { specialTokensMap: read('special_tokens_map.json')! } : {}),
  };
});

const TEXTS = ['Hello world, this is a test.', '\t', '   ', 'Ünïcödé 你好 🙂 <unk> [SEP] </s>', 'a'.repeat(300)];

/** Mutable places: the pipeline's settings, and only the first entries of vocabularies and merge lists. */
function tokenizerPaths(doc: Json): JsonPath[] {
  return jsonPaths(doc, 500_000).filter((p) => {
    const inTable = p[0] === 'model' && (p[1] === 'vocab' || p[1] === 'merges');
    if (inTable && p.length > 2) {
      const item = p[2]!;
      return typeof item === 'number' ? item < 3 : ['<unk>', '[UNK]', '[CLS]', '[SEP]', 'the', 'Ġthe', '▁'].includes(item);
    }
    return !(p[0] === 'added_tokens' && typeof p[1] === 'number' && p[1] > 3);
  });
}

/** Every Precompiled charsmap of the document, as paths. */
const charsmapPaths = (doc: Json): JsonPath[] => jsonPaths(doc, 500_000).filter((p) => p[p.length - 1] === 'precompiled_charsmap');

/** Flips bits of the (base64) charsmap at a path; the binding parsed such maps unchecked (native abort). */
function flipCharsmap(doc: Json, at: number, flips: [number, number][]): Json {
  const copy = structuredClone(doc);
  const paths = charsmapPaths(copy);
  if (paths.length === 0) return copy;
  const path = paths[at % paths.length]!;
  let parent = copy as Record<string | number, Json>;
  for (const k of path.slice(0, -1)) parent = parent[k] as Record<string | number, Json>;
  const key = path[path.length - 1]!;
  const bytes = Buffer.from(parent[key] as string, 'base64');
  for (const [i, bit] of flips) if (bytes.length > 0) bytes[i % bytes.length]! ^= 1 << bit;
  parent[key] = bytes.toString('base64');
  return copy;
}

/** Template special tokens renamed to ones the vocabulary lacks. */
function renameTemplateToken(doc: Json, at: number, name: string): Json {
  const copy = structuredClone(doc);
  const paths = jsonPaths(copy).filter((p) => p[0] === 'post_processor' && (p[p.length - 1] === 'id' || p[p.length - 2] === 'tokens'));
  if (paths.length === 0) return copy;
  const path = paths[at % paths.length]!;
  let parent = copy as Record<string | number, Json>;
  for (const k of path.slice(0, -1)) parent = parent[k] as Record<string | number, Json>;
  const key = path[path.length - 1]!;
  if (typeof parent[key] === 'string') parent[key] = name;
  else if (Array.isArray(parent[key])) parent[key] = [name];
  return copy;
}

const child = new FuzzChild();
afterAll(() => child.stop());

/** Fails (for fast-check) unless the case gave tokens or a clean AttnscopeError. */
function check(outcome: Outcome): void {
  if ('crashed' in outcome) throw new Error(`the tokenizer process ${outcome.crashed}; stderr: ${outcome.stderr.slice(-1500)}`);
  if ('hung' in outcome) throw new Error(`the tokenizer did not answer in ${outcome.hung} ms; stderr: ${outcome.stderr.slice(-1500)}`);
  if (outcome.stderr.trim() !== '') throw new Error(`printed on stderr: ${JSON.stringify(outcome.stderr.slice(0, 500))}`);
  if (!outcome.ok) {
    try {
      checkUserMessage(outcome.name, outcome.message);
    } catch (err) {
      throw new Error(`${(err as Error).message}${outcome.name === 'AttnscopeError' ? '' : `\n${outcome.stack ?? ''}`}`);
    }
  }
}

const runCase = async (tokenizer: Json | string, f: Fixture, config?: string, what = ''): Promise<void> => {
  try {
    check(await run(tokenizer, f, config));
  } catch (err) {
    throw new Error(`${f.name}${what ? ` (${what})` : ''}: ${(err as Error).message}`);
  }
};

const run = (tokenizer: Json | string, f: Fixture, config?: string): Promise<Outcome> =>
  child.run(
    {
      kind: 'tokenizer',
      tokenizerJson: typeof tokenizer === 'string' ? tokenizer : JSON.stringify(tokenizer),
      ...(config !== undefined ? { tokenizerConfig: config } : f.config !== undefined ? { tokenizerConfig: JSON.stringify(f.config) } : {}),
      ...(f.specialTokensMap !== undefined ? { specialTokensMap: f.specialTokensMap } : {}),
      texts: TEXTS,
    },
    30_000,
  );

describe('fuzz: tokenizer.json (in a child process)', () => {
  it('corrupt Precompiled charsmaps (T5, ALBERT)', { timeout: testTimeout(BUDGET) }, async () => {
    const withMaps = fixtures.filter((f) => charsmapPaths(f.tokenizer).length > 0);
    await fc.assert(
      fc.asyncProperty(
        fc.nat(withMaps.length - 1),
        fc.nat(),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 3 }),
        async (which, at, flips) => {
          const f = withMaps[which]!;
          await runCase(flipCharsmap(f.tokenizer, at, flips), f, undefined, `charsmap bits ${JSON.stringify(flips)} flipped`);
        },
      ),
      { ...fuzzParams(30, BUDGET, false), examples: [[0, 0, [[100, 0]]], [1, 0, [[7, 3]]]] },
    );
  });

  it('templates naming special tokens that do not exist', { timeout: testTimeout(BUDGET) }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat(fixtures.length - 1), fc.nat(), fc.constantFrom('[NOPE]', '', '<s>', 'x'.repeat(1000), '\u001b[2J', '\f'), async (which, at, name) => {
        const f = fixtures[which]!;
        await runCase(renameTemplateToken(f.tokenizer, at, name), f, undefined, `template token renamed ${JSON.stringify(name.slice(0, 20))}`);
      }),
      fuzzParams(30, BUDGET, false),
    );
  });

  it('mutated tokenizer.json settings', { timeout: testTimeout(BUDGET) }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat(fixtures.length - 1), jsonMutations, async (which, mutations) => {
        const f = fixtures[which]!;
        const log: string[] = [];
        const text = mutateJson(f.tokenizer, mutations, tokenizerPaths, log);
        await runCase(text, f, undefined, `tokenizer.json ${log.join('; ')}`);
      }),
      fuzzParams(50, BUDGET, false),
    );
  });

  it('mutated tokenizer_config.json', { timeout: testTimeout(BUDGET) }, async () => {
    const withConfig = fixtures.filter((f) => f.config !== undefined);
    await fc.assert(
      fc.asyncProperty(fc.nat(withConfig.length - 1), jsonMutations, async (which, mutations) => {
        const f = withConfig[which]!;
        const log: string[] = [];
        const text = mutateJson(f.config!, mutations, undefined, log);
        await runCase(f.tokenizer, f, text, `tokenizer_config.json ${log.join('; ')}`);
      }),
      fuzzParams(40, BUDGET, false),
    );
  });
});
