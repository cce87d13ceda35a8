/**
 * Fuzzing config.json (src/models/config.ts, each architecture's describe and build, and the run):
 * the real fixture configs with one field changed to 0, negative, huge, fractional, a string, a
 * list, nesting, or removed. Each case loads the checkpoint and traces a short text in a child
 * process (onnxruntime is native code; a mis-sized graph must not crash or hang the test run).
 * Every case gives a trace or one clean AttnscopeError line that names the field.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, it } from 'vitest';
import { FIXTURES } from '../helpers/reference.js';
import { FuzzChild } from './child.js';
import { type Json, checkUserMessage, fuzzParams, nastyValue, testTimeout } from './harness.js';

const BUDGET = 10_000;

/** One fixture per architecture family and variant (encoder-decoders are traced with a decoder text). */
const MODELS: [string, boolean][] = [
  ['bert', false], ['distilbert', false], ['albert', false], ['electra', false], ['roberta', false], ['gpt2', false], ['gpt_neox', false],
  ['llama', false], ['gemma', false], ['mistral-window', false], ['qwen2', false], ['t5', true], ['bart', true],
];

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-fuzz-config-'));
const child = new FuzzChild();
afterAll(async () => {
  await child.stop();
  rmSync(tmp, { recursive: true, force: true });
});

/** A directory with the fixture's files (linked) and its config.json to be overwritten per case. */
const dirs = MODELS.map(([name]) => {
  const dir = join(tmp, name);
  mkdirSync(dir);
  for (const file of readdirSync(join(FIXTURES, name))) if (file !== 'config.json') symlinkSync(join(FIXTURES, name, file), join(dir, file));
  return dir;
});
const configs = MODELS.map(([name]) => JSON.parse(readFileSync(join(FIXTURES, name, 'config.json'), 'utf8')) as Record<string, Json>);

/** Size and structure fields of a config: its numbers, and the nested settings objects' numbers. */
function numericFields(config: Record<string, Json>): string[][] {
  const out: string[][] = [];
  for (const [key, value] of Object.entries(config)) {
    if (typeof value === 'number') out.push([key]);
    else if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value)) if (typeof v === 'number') out.push([key, k]);
    }
  }
  return out;
}
const fields = configs.map(numericFields);

/** Fields the library never reads (training settings): any value is fine there. */
const IGNORED = /dropout|drop$|pdrop|initializer|init_std|layerdrop|^summary_|pretraining_tp/;

const DEEP = '[' .repeat(10_000) + ']'.repeat(10_000);

const fieldChange = fc.record({
  model: fc.nat(MODELS.length - 1),
  field: fc.nat(),
  value: fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom<Json | 'deep' | 'delete'>(0, -1, -64, 1e9, 1_000_000_000, 2 ** 31, 2 ** 53, 1e300, 0.5, 1.5, 7.25, '12', 'x', null, true, [4], { n: 4 }, 'deep', 'delete') },
    { weight: 1, arbitrary: nastyValue as fc.Arbitrary<Json | 'deep' | 'delete'> },
  ),
});

describe('fuzz: config.json (in a child process)', () => {
  it('one changed numeric field: a trace, or one clean AttnscopeError line naming the field', { timeout: testTimeout(BUDGET) }, async () => {
    await fc.assert(
      fc.asyncProperty(fieldChange, async ({ model, field, value }) => {
        const path = fields[model]![field % fields[model]!.length]!;
        const config = structuredClone(configs[model]!);
        const parent = (path.length === 1 ? config : config[path[0]!]) as Record<string, Json>;
        const key = path[path.length - 1]!;
        if (value === 'delete') delete parent[key];
        else parent[key] = value === 'deep' ? '\u0000deep\u0000' : value;
        const text = JSON.stringify(config, null, 2).replace(JSON.stringify('\u0000deep\u0000'), DEEP);
        writeFileSync(join(dirs[model]!, 'config.json'), text);
        const [name, encdec] = MODELS[model]!;
        const outcome = await child.run({ kind: 'model', dir: dirs[model]!, text: 'The cat sat on the mat.', ...(encdec ? { decoderText: 'Le chat' } : {}) }, 30_000);
        const what = `${name} config.json with ${path.join('.')} = ${value === 'deep' ? '[[[…10,000 deep…]]]' : JSON.stringify(value)?.slice(0, 80)}`;
        if ('crashed' in outcome) throw new Error(`${what}: the process ${outcome.crashed}; stderr: ${outcome.stderr.slice(-1500)}`);
        if ('hung' in outcome) throw new Error(`${what}: no answer in ${outcome.hung} ms (hang); stderr: ${outcome.stderr.slice(-1500)}`);
        if (process.env.FUZZ_LOG) console.log(what, JSON.stringify(outcome).slice(0, 200));
        // Our message is the only output: no log lines from onnxruntime or the library on stderr.
        if (outcome.stderr.trim() !== '') throw new Error(`${what}: printed on stderr: ${JSON.stringify(outcome.stderr.slice(0, 500))}`);
        if ('ok' in outcome && outcome.ok) return;
        try {
          checkUserMessage(outcome.name, outcome.message, IGNORED.test(key) ? undefined : [key]);
        } catch (err) {
          throw new Error(`${what}: ${(err as Error).message}${outcome.name === 'AttnscopeError' ? '' : `\n${outcome.stack ?? ''}`}`);
        }
      }),
      fuzzParams(60, BUDGET, false),
    );
  });
});
