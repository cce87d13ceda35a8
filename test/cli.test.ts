/**
 * The `attnscope trace` command end to end, run as a real process: the trace it writes (JSON
 * and .safetensors) against PyTorch's reference, and a one-line error with a non-zero exit for
 * every kind of bad input.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { zipSync } from 'fflate';
import { afterAll, describe, expect, it } from 'vitest';
import { readTraceFile } from '../src/io/trace-file.js';
import { runCli, type Run } from './helpers/cli.js';
import { FIXTURES, flat, maxAbsDiff, readReference, stackValues } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-cli-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function attnscope(...args: string[]): Run {
  return runCli(tmp, args, 60_000);
}

/** A user error: non-zero exit, exactly one line on stderr, no stack trace. */
function expectCleanError(run: Run, pattern: RegExp): void {
  expect(run.status, run.stderr).not.toBe(0);
  expect(run.status).not.toBeNull(); // not killed by the timeout: no hang
  const lines = run.stderr.trim().split('\n');
  expect(lines, run.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^attnscope: /);
  expect(lines[0]).toMatch(pattern);
  expect(run.stderr).not.toMatch(/\n\s+at /);
}

/** A copy of a fixture directory we may corrupt. */
function fixtureCopy(name: string): string {
  const dir = mkdtempSync(join(tmp, `${name}-`));
  cpSync(join(FIXTURES, name), dir, { recursive: true });
  return dir;
}

function safetensorsWithHeader(header: object, dataBytes: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

describe('attnscope trace writes traces that match PyTorch', () => {
  const ref = readReference('bert');
  const pair = ref.inputs.find((i) => i.text_pair)!;

  it('JSON to stdout, from --text and --pair', () => {
    const run = attnscope('trace', join(FIXTURES, 'bert'), '--text', pair.text, '--pair', pair.text_pair!, '--qk');
    expect(run.status, run.stderr).toBe(0);
    const json = JSON.parse(run.stdout) as Record<string, unknown> & {
      tokens: { id: number; segment: number }[];
      attention: { self: number[][][][] };
      queries: { self: number[][][][] };
      keys: { self: number[][][][] };
      model: Record<string, unknown>;
    };
    expect(json.format).toBe('attnscope-trace');
    expect(json.version).toBe(1);
    expect(json.model).toMatchObject({ modelType: 'bert', numLayers: 2, numHeads: 4, numKeyValueHeads: 4, headDim: 8 });
    expect(json.tokens.map((t) => t.id)).toEqual(pair.input_ids);
    expect(json.tokens.map((t) => t.segment)).toEqual(pair.token_type_ids);
    expect(maxAbsDiff(flat(json.attention.self), flat(pair.attentions!))).toBeLessThanOrEqual(1e-5);
    expect(maxAbsDiff(flat(json.queries.self), flat(pair.queries!))).toBeLessThanOrEqual(1e-4);
    expect(maxAbsDiff(flat(json.keys.self), flat(pair.keys!))).toBeLessThanOrEqual(1e-4);
  });

  it('.safetensors with --ids and --type-ids, read back', async () => {
    const out = join(tmp, 'pair.safetensors');
    const run = attnscope('trace', join(FIXTURES, 'bert'), '--ids', pair.input_ids.join(','), '--type-ids', pair.token_type_ids!.join(','), '--qk', '--out', out);
    expect(run.status, run.stderr).toBe(0);
    const trace = await readTraceFile(out);
    expect(trace.tokens.map((t) => t.id)).toEqual(pair.input_ids);
    expect(maxAbsDiff(stackValues(trace.attention.self), flat(pair.attentions!))).toBeLessThanOrEqual(1e-5);
    expect(maxAbsDiff(stackValues(trace.keys?.self), flat(pair.keys!))).toBeLessThanOrEqual(1e-4);
    expect(readdirSync(tmp).filter((f) => f.includes('.tmp'))).toEqual([]);
  });

  it('GQA keys keep numKeyValueHeads heads (llama)', async () => {
    const llama = readReference('llama');
    const input = llama.inputs[0]!;
    const out = join(tmp, 'llama.json');
    const run = attnscope('trace', join(FIXTURES, 'llama'), '--text', input.text, '--qk', '--out', out);
    expect(run.status, run.stderr).toBe(0);
    const trace = await readTraceFile(out);
    expect(trace.model.numKeyValueHeads).toBe(2);
    expect(trace.keys?.self?.dims[0]).toBe(2);
    expect(maxAbsDiff(stackValues(trace.attention.self), flat(input.attentions!))).toBeLessThanOrEqual(1e-5);
    expect(maxAbsDiff(stackValues(trace.keys?.self), flat(input.keys!))).toBeLessThanOrEqual(1e-4);
  });

  it('runs the embedded default model when no model is named', () => {
    const ref260k = readReference('stories260k');
    const input = ref260k.inputs[0]!;
    const run = attnscope('trace', '--text', input.text);
    expect(run.status, run.stderr).toBe(0);
    const json = JSON.parse(run.stdout) as { model: { name: string; modelType: string }; tokens: { id: number }[]; attention: { self: number[][][][] } };
    expect(json.model.modelType).toBe('llama');
    expect(json.tokens.map((t) => t.id)).toEqual(input.input_ids);
    expect(maxAbsDiff(flat(json.attention.self), flat(input.attentions!))).toBeLessThanOrEqual(1e-5);
  });

  it('--truncate on a pair shortens the longer sentence first, as transformers does', () => {
    const run = attnscope('trace', join(FIXTURES, 'bert'), '--text', 'The cat sat.', '--pair', 'word '.repeat(300), '--truncate');
    expect(run.status, run.stderr).toBe(0);
    const json = JSON.parse(run.stdout) as { tokens: { text: string; segment: number }[] };
    expect(json.tokens).toHaveLength(128);
    const a = json.tokens.filter((t) => t.segment === 0).map((t) => t.text);
    expect(a.slice(0, 2)).toEqual(['[CLS]', 'the']);
    expect(a.at(-1)).toBe('[SEP]'); // sentence A kept whole
    expect(json.tokens.at(-1)!.text).toBe('[SEP]');
  });

  it('--truncate cuts an input longer than the maximum positions', () => {
    const run = attnscope('trace', join(FIXTURES, 'bert'), '--text', 'word '.repeat(300), '--truncate');
    expect(run.status, run.stderr).toBe(0);
    const json = JSON.parse(run.stdout) as { tokens: { text: string }[] };
    expect(json.tokens).toHaveLength(128);
    expect(json.tokens.at(-1)!.text).toBe('[SEP]');
  });
});

describe('attnscope trace: bad input gives one clear line and a non-zero exit', () => {
  it('a path that does not exist', () => {
    expectCleanError(attnscope('trace', './no/such/model', '--text', 'hi'), /no such file or directory/);
  });

  it('a directory without config.json', () => {
    const dir = join(tmp, 'empty-dir');
    mkdirSync(dir, { recursive: true });
    expectCleanError(attnscope('trace', dir, '--text', 'hi'), /not a model directory \(no config\.json\)/);
  });

  it('an unsupported model_type, listing the supported ones', () => {
    const dir = fixtureCopy('bert');
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, model_type: 'mamba' }));
    expectCleanError(attnscope('trace', dir, '--text', 'hi'), /unsupported model_type 'mamba' \(supported: .*bert.*gpt2.*llama/);
  });

  it('an unsupported variant of a supported family names the closest supported model_type', () => {
    const dir = fixtureCopy('llama');
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, model_type: 'llama4' }));
    expectCleanError(attnscope('trace', dir, '--text', 'hi'), /unsupported model_type 'llama4'; the closest supported is 'llama'.*see 'attnscope models'/);
  });

  it('attnscope models lists every family with its model_types', () => {
    const run = attnscope('models');
    expect(run.status, run.stderr).toBe(0);
    const lines = run.stdout.trim().split('\n');
    expect(lines).toContain('bert: bert, roberta, xlm-roberta, camembert, electra');
    expect(lines.some((l) => /^llama: llama, mistral, qwen2, gemma/.test(l))).toBe(true);
    expect(lines.some((l) => /^t5: t5, mt5, umt5/.test(l))).toBe(true);
  });

  const corrupt: [string, (file: string) => void, RegExp][] = [
    ['a truncated safetensors file', (f) => writeFileSync(f, readFileSync(f).subarray(0, 5000)), /model\.safetensors/],
    ['a header length past the end of the file', (f) => {
      const bytes = readFileSync(f);
      bytes.writeBigUInt64LE(BigInt(bytes.length * 2), 0);
      writeFileSync(f, bytes);
    }, /model\.safetensors: .*header/i],
    ['tensor offsets out of range', (f) => writeFileSync(f, safetensorsWithHeader({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [4], data_offsets: [16, 64] } }, 16)), /model\.safetensors: .*'b'.*(range|past|end)/i],
    ['an unknown dtype', (f) => writeFileSync(f, safetensorsWithHeader({ a: { dtype: 'Q4', shape: [4], data_offsets: [0, 16] } }, 16)), /model\.safetensors: tensor 'a' has unknown dtype 'Q4'/],
    ['overlapping tensors', (f) => writeFileSync(f, safetensorsWithHeader({ a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } }, 24)), /model\.safetensors: .*overlap/i],
  ];
  for (const [what, damage, pattern] of corrupt) {
    it(what, () => {
      const dir = fixtureCopy('bert');
      damage(join(dir, 'model.safetensors'));
      expectCleanError(attnscope('trace', dir, '--text', 'hi'), pattern);
    });
  }

  it('a pickle that calls something other than tensor rebuilding', () => {
    const dir = fixtureCopy('gpt2-bin');
    const marker = join(tmp, 'pwned');
    // PROTO 2, GLOBAL os.system, MARK, BINUNICODE cmd, TUPLE, REDUCE, STOP
    const cmd = new TextEncoder().encode(`touch ${marker}`);
    const len = new Uint8Array(new Uint32Array([cmd.length]).buffer);
    const pickle = Uint8Array.from([0x80, 2, 0x63, ...new TextEncoder().encode('os\nsystem\n'), 0x28, 0x58, ...len, ...cmd, 0x74, 0x52, 0x2e]);
    writeFileSync(join(dir, 'pytorch_model.bin'), zipSync({ 'archive/data.pkl': [pickle, { level: 0 }], 'archive/version': [new TextEncoder().encode('3\n'), { level: 0 }] }));
    expectCleanError(attnscope('trace', dir, '--text', 'hi'), /refusing to load pickle global 'os\.system' \(only tensor rebuilding is allowed\)/);
    expect(existsSync(marker)).toBe(false);
  });

  it('an input longer than the maximum positions', () => {
    expectCleanError(attnscope('trace', join(FIXTURES, 'bert'), '--text', 'word '.repeat(300)), /text too long: \d+ tokens, but .* accepts at most 128 \(use --truncate/);
  });

  it('ids past the maximum positions', () => {
    expectCleanError(attnscope('trace', join(FIXTURES, 'gpt2'), '--ids', Array.from({ length: 200 }, () => 5).join(',')), /too long: 200 tokens/);
  });

  it('a text that gives no tokens (whitespace that gives tokens is traced: test/text-input.test.ts)', () => {
    expectCleanError(attnscope('trace', join(FIXTURES, 'gpt2'), '--text', ''), /empty text/);
  });

  it('token ids that are not integers, or outside the vocabulary', () => {
    expectCleanError(attnscope('trace', join(FIXTURES, 'bert'), '--ids', '1,x,3'), /--ids: 'x' is not an integer/);
    expectCleanError(attnscope('trace', join(FIXTURES, 'bert'), '--ids', '1,99999'), /99999/);
  });

  it('an unknown option or command', () => {
    expectCleanError(attnscope('trace', '--txet', 'hi'), /--txet/);
    expectCleanError(attnscope('frobnicate'), /unknown command 'frobnicate'/);
  });

  it('a Hub id not in the cache while offline', () => {
    expectCleanError(attnscope('trace', 'some-org/some-model', '--text', 'hi'), /some-org\/some-model.*HF_HUB_OFFLINE/);
  });
});
