/**
 * Fuzzing the SentencePiece conversion (src/tokenizer/sentencepiece-convert.ts): checkpoints
 * without tokenizer.json whose .model file is a mutated copy of a fixture's (bits flipped, bytes
 * set, inserted, deleted, the file cut short; aimed at the pieces or anywhere, which mostly means
 * the precompiled charsmap). Each case loads the checkpoint and traces a text in a child process
 * (the Rust binding can abort the whole process); every case must trace or fail with one clean
 * AttnscopeError line, never a crash, a hang or another error.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, it } from 'vitest';
import { convertSentencePiece } from '../../src/tokenizer/sentencepiece-convert.js';
import { readSentencePieceModel } from '../../src/tokenizer/sentencepiece-model.js';
import { FIXTURES } from '../helpers/reference.js';
import { sentencePieceProto } from '../helpers/sentencepiece-proto.js';
import { FuzzChild, type Outcome } from './child.js';
import { byteMutations, checkUserMessage, expectUserError, fuzzParams, mutateBytes, testTimeout } from './harness.js';

const BUDGET = 8_000;
const CASES: [fixture: string, model: string][] = [
  ['deberta-v2', 'spm.model'],
  ['xlm-roberta', 'sentencepiece.bpe.model'],
  ['albert', 'spiece.model'],
];
const scratch = mkdtempSync(join(tmpdir(), 'attnscope-fuzz-spm-'));
const child = new FuzzChild();
afterAll(async () => {
  await child.stop();
  rmSync(scratch, { recursive: true, force: true });
});

/** A copy of each checkpoint without tokenizer.json; the case writes its .model file. */
const dirs = CASES.map(([fixture, model]) => {
  const dir = join(scratch, fixture);
  mkdirSync(dir);
  for (const name of ['config.json', 'model.safetensors', 'tokenizer_config.json', 'special_tokens_map.json']) {
    copyFileSync(join(FIXTURES, fixture, name), join(dir, name));
  }
  return { dir, file: join(dir, model), original: readFileSync(join(FIXTURES, fixture, model)) };
});

describe('fuzz: SentencePiece models without tokenizer.json (in a child process)', () => {
  it('mutated .model files trace or fail with one clean line', { timeout: testTimeout(BUDGET) }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.nat(CASES.length - 1), fc.boolean(), byteMutations(4), async (which, head, mutations) => {
        const c = dirs[which]!;
        // The pieces come first: aim there half of the time (the charsmap is most of the file).
        writeFileSync(c.file, mutateBytes(c.original, mutations, head ? 4096 : undefined));
        const outcome = await child.run({ kind: 'model', dir: c.dir, text: 'Café naïve — 東京 🙂! The  cat.' }, 60_000);
        const what = `${CASES[which]![0]} ${JSON.stringify(mutations, (_, v: unknown) => (v instanceof Uint8Array ? [...v] : v))}`;
        if ('crashed' in outcome) throw new Error(`${what}: the process ${outcome.crashed}; stderr: ${outcome.stderr.slice(-1500)}`);
        if ('hung' in outcome) throw new Error(`${what}: no answer in ${outcome.hung} ms`);
        if (!outcome.ok) checkUserMessage(outcome.name, outcome.message);
      }),
      { ...fuzzParams(40, BUDGET, false), examples: [[0, true, [{ op: 'truncate', at: 2000 }]], [2, false, [{ op: 'flip', at: 9000, bit: 3 }]]] },
    );
  });
});

const CLASSES = ['DebertaV2Tokenizer', 'T5Tokenizer', 'XLMRobertaTokenizer', 'AlbertTokenizer', 'MBartTokenizer', 'MBart50Tokenizer', 'PegasusTokenizer', 'LlamaTokenizer'];
const base = readSentencePieceModel(readFileSync(join(FIXTURES, 'mt5', 'spiece.model')), 'spiece.model').pieces.slice(0, 120);
const TYPES: Record<string, number> = { normal: 1, unknown: 2, control: 3, user_defined: 4, unused: 5, byte: 6 };
const pieceText = fc.oneof(
  fc.string({ maxLength: 6 }),
  fc.constantFrom('', '▁', '▁▁', ' ', '<unk>', '<s>', '</s>', '[MASK]', '<0x41>', '<0xZZ>', '\u0000', 'é', '🙂', 'ab'),
);
const score = fc.oneof(fc.float({ noNaN: false }), fc.constantFrom(0, -1e30, 1e30, -0, 3.4e38));

describe('fuzz: SentencePiece models with odd pieces (conversion here, the binding in a child process)', () => {
  it('odd pieces, scores, types, unknown ids and model types convert and encode, or fail with one clean line', { timeout: testTimeout(BUDGET) }, async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.nat(CLASSES.length - 1),
        fc.integer({ min: 0, max: 9 }),
        fc.nat(130),
        fc.boolean(),
        fc.array(fc.tuple(fc.nat(), pieceText, score, fc.integer({ min: 1, max: 6 })), { minLength: 1, maxLength: 6 }),
        async (cls, odd, unkId, byteFallback, edits) => {
          const pieces: [string, number, number][] = base.map((p) => [p.piece, p.score, TYPES[p.type] ?? 1]);
          for (const [at, text, sc, type] of edits) pieces[at % pieces.length] = [text, sc, type];
          const tokenizerClass = CLASSES[cls]!;
          // Mostly the model type the class converts (BPE for Llama, unigram otherwise); now and then another.
          const modelType = odd === 0 ? 3 : odd === 1 ? (tokenizerClass === 'LlamaTokenizer' ? 1 : 2) : tokenizerClass === 'LlamaTokenizer' ? 2 : 1;
          let converted: ReturnType<typeof convertSentencePiece>;
          try {
            converted = convertSentencePiece({
              model: sentencePieceProto(pieces, { modelType, unkId, byteFallback }), what: 'x.model', tokenizerConfig: JSON.stringify({ tokenizer_class: tokenizerClass }),
            });
          } catch (err) {
            expectUserError(err);
            return;
          }
          const outcome: Outcome = await child.run(
            { kind: 'tokenizer', tokenizerJson: converted.tokenizerJson, tokenizerConfig: converted.tokenizerConfig, texts: ['Hello  world <s> [MASK]', '', ' é 🙂 ab\u0000'] },
            30_000,
          );
          const what = `${tokenizerClass} ${JSON.stringify(edits)}`;
          if ('crashed' in outcome) throw new Error(`${what}: the process ${outcome.crashed}; stderr: ${outcome.stderr.slice(-1500)}`);
          if ('hung' in outcome) throw new Error(`${what}: no answer in ${outcome.hung} ms`);
          if (!outcome.ok) checkUserMessage(outcome.name, outcome.message);
        },
      ),
      fuzzParams(80, BUDGET, false),
    );
  });
});
