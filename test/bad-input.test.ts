/**
 * Regression tests for the bad input a fuzzing run found (issue 7, item 11): each crafted file
 * or argument used to abort the process (exit 134), crash it (139), hang, or end in an "internal
 * error … (please report this)". Each now gets exit code 2 and one clear line naming the file,
 * field and allowed range — run as a real `attnscope` process on copies of the fixtures.
 */
import { copyFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, runCli, type Run } from './helpers/cli.js';

const FIXTURES = join(ROOT, 'test', 'fixtures');
const scratch = mkdtempSync(join(tmpdir(), 'attnscope-bad-input-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

type Json = Record<string, unknown>;

/** A copy of fixture `name` under the scratch dir, config.json / tokenizer.json edited. */
function variant(label: string, name: string, edit: { config?: (c: Json) => void; tokenizer?: (t: Json) => void } = {}): string {
  const dir = join(scratch, label);
  cpSync(join(FIXTURES, name), dir, { recursive: true });
  for (const [file, fn] of [['config.json', edit.config], ['tokenizer.json', edit.tokenizer]] as const) {
    if (!fn) continue;
    const json = JSON.parse(readFileSync(join(dir, file), 'utf8')) as Json;
    fn(json);
    writeFileSync(join(dir, file), JSON.stringify(json));
  }
  return dir;
}

/** Splits a safetensors file into its parsed header and data section. */
function readSafetensors(path: string): { header: Json; data: Buffer } {
  const bytes = readFileSync(path);
  const n = Number(bytes.readBigUInt64LE(0));
  return { header: JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Json, data: bytes.subarray(8 + n) };
}

function writeSafetensors(path: string, headerText: string, data: Buffer): void {
  const header = Buffer.from(headerText, 'utf8');
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(header.length));
  writeFileSync(path, Buffer.concat([length, header, data]));
}

/** The bert fixture with its model.safetensors header replaced by `headerText` (4 data bytes). */
function bertWithHeader(label: string, headerText: string): string {
  const dir = variant(label, 'bert');
  writeSafetensors(join(dir, 'model.safetensors'), headerText, Buffer.alloc(4));
  return dir;
}

/** A fixture copy whose checkpoint lacks tensor `tensor`. */
function withoutTensor(label: string, name: string, tensor: string): string {
  const dir = variant(label, name);
  const file = join(dir, 'model.safetensors');
  const { header, data } = readSafetensors(file);
  expect(header[tensor]).toBeDefined();
  delete header[tensor];
  writeSafetensors(file, JSON.stringify(header), data);
  return dir;
}

const trace = (model: string, ...args: string[]): Run =>
  runCli(scratch, ['trace', model, ...(args.length > 0 ? args : ['--text', 'hello world']), '--out', join(scratch, 'out.json')], 60_000);

/** The user-error contract: exit 2, one line on stderr, no escape sequence, bounded, no internal error. */
function expectUserError(r: Run, ...parts: (string | RegExp)[]): void {
  expect(r.status, r.stderr).toBe(2);
  expect(r.stderr.endsWith('\n')).toBe(true);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  const line = lines[0]!;
  expect(line.startsWith('attnscope: ')).toBe(true);
  expect(line).not.toMatch(/internal error|please report/);
  // No raw control characters (terminal escapes, form feeds) and no runaway length.
  expect(line).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
  expect(line.length).toBeLessThan(700);
  for (const p of parts) expect(line).toMatch(p);
}

describe('tokenizer.json values that used to abort the process in the Rust binding', () => {
  it('a Precompiled normalizer with a corrupt precompiled_charsmap (one flipped character)', () => {
    // This flip makes a trie leaf point 33 MB past the charsmap's strings: the binding indexed it
    // and aborted (exit 134) on the first text that walked that path, e.g. '－' (U+FF0D).
    const dir = variant('t5-charsmap', 't5', {
      tokenizer: (t) => {
        const pre = ((t['normalizer'] as Json)['normalizers'] as Json[])[0]!;
        const s = pre['precompiled_charsmap'] as string;
        expect(s[219573]).toBe('O');
        pre['precompiled_charsmap'] = `${s.slice(0, 219573)}r${s.slice(219574)}`;
      },
    });
    expectUserError(trace(dir, '--text', 'a－b', '--decoder-text', 'hi'), 'tokenizer.json', 'precompiled_charsmap', /damaged/);
  });

  it('a precompiled_charsmap that is not a string (the binding panics on any charsmap it cannot read)', () => {
    const dir = variant('albert-charsmap-list', 'albert', {
      tokenizer: (t) => {
        const pre = ((t['normalizer'] as Json)['normalizers'] as Json[]).find((n) => n['type'] === 'Precompiled')!;
        pre['precompiled_charsmap'] = [pre['precompiled_charsmap']];
      },
    });
    expectUserError(trace(dir), 'tokenizer.json', 'precompiled_charsmap is [', 'not a base64 string');
  });

  it('a TemplateProcessing post-processor naming a special token it does not define', () => {
    const dir = variant('bert-template', 'bert', {
      tokenizer: (t) => {
        (((t['post_processor'] as Json)['single'] as Json[])[0]!['SpecialToken'] as Json)['id'] = '[NOPE]';
      },
    });
    expectUserError(trace(dir), 'tokenizer.json', 'post_processor.single', "'[NOPE]'", 'special_tokens');
  });

  it('a single template using sequence B', () => {
    const dir = variant('bert-template-b', 'bert', {
      tokenizer: (t) => {
        (((t['post_processor'] as Json)['single'] as Json[])[1]!['Sequence'] as Json)['id'] = 'B';
      },
    });
    expectUserError(trace(dir), 'tokenizer.json', 'post_processor.single', 'sequence B');
  });
});

describe('long inputs that used to crash (exit 139) or run out of memory', () => {
  it('16,000 ids with --truncate are cut to the model maximum', () => {
    const r = runCli(scratch, ['trace', join(FIXTURES, 'bert'), '--ids', Array(16_000).fill('5').join(','), '--truncate', '--out', join(scratch, 'long.json')], 60_000);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/error/);
    const written = JSON.parse(readFileSync(join(scratch, 'long.json'), 'utf8')) as { tokens: unknown[] };
    expect(written.tokens).toHaveLength(128);
  });

  it('T5 (no position limit) refuses, with dense attention, a text whose attention maps would not fit in memory (on demand goes further)', () => {
    const text = Array(16_000).fill('a').join(' ');
    expectUserError(trace(join(FIXTURES, 't5'), '--text', text, '--attention', 'dense'), /too long: 16001 (tokens|positions)/, /--attention on-demand/);
    expectUserError(trace(join(FIXTURES, 't5'), '--text', 'hi', '--decoder-text', text, '--attention', 'dense'), /decoder input too long/, /would not fit in 1 GiB/, /--truncate/);
  });
});

describe('config.json sizes are checked before anything is built', () => {
  it('a billion layers (used to build for ever) on ALBERT and Llama', () => {
    for (const name of ['albert', 'llama']) {
      const dir = variant(`${name}-layers`, name, { config: (c) => (c['num_hidden_layers'] = 1_000_000_000) });
      expectUserError(trace(dir), `${name}-layers`, 'config.json', 'num_hidden_layers is 1000000000', 'allowed: an integer from 1 to 1024');
    }
    // ALBERT shares one layer's weights: no missing tensor would stop a million layers either.
    const dir = variant('albert-inner', 'albert', { config: (c) => Object.assign(c, { num_hidden_layers: 1000, inner_group_num: 1000 }) });
    expectUserError(trace(dir), 'num_hidden_layers × inner_group_num is 1000000', 'at most 1024');
  });

  it('zero layers, zero decoder layers, zero heads, a negative epsilon, a rotary base of 0', () => {
    const cases: [string, string, Json, string[], RegExp][] = [
      ['bert-zero', 'bert', { num_hidden_layers: 0 }, [], /num_hidden_layers is 0; allowed: an integer from 1 to 1024/],
      ['t5-zero-dec', 't5', { num_decoder_layers: 0 }, ['view'], /num_decoder_layers is 0; allowed/],
      ['gpt2-heads0', 'gpt2', { n_head: 0 }, [], /n_head is 0; allowed: an integer from 1 to 4096/],
      ['bert-eps', 'bert', { layer_norm_eps: -1 }, [], /layer_norm_eps is -1; allowed: a number from 0 to 1/],
      ['llama-theta', 'llama', { rope_theta: 0 }, [], /rope_theta is 0; allowed: a number above 0/],
      ['llama-scaling', 'llama', { rope_scaling: { rope_type: 'linear', factor: 0 } }, [], /rope_scaling\.factor is 0; allowed: a number above 0/],
      ['neox-theta', 'gpt_neox', { rope_theta: 0, rotary_emb_base: 0 }, [], /rope_theta is 0; allowed: a number above 0/],
      ['bert-width', 'bert', { hidden_size: -32 }, [], /hidden_size is -32; allowed/],
    ];
    for (const [label, name, patch, command, message] of cases) {
      const dir = variant(label, name, { config: (c) => Object.assign(c, patch) });
      const r =
        command[0] === 'view'
          ? runCli(scratch, ['view', dir, '--text', 'hello', '--out', join(scratch, 'out.html')], 60_000)
          : trace(dir);
      expectUserError(r, `${label}/config.json`, message);
    }
  });

  it('a null layer count, and more layers than the checkpoint has, name the field', () => {
    expectUserError(trace(variant('bart-dec-null', 'bart', { config: (c) => (c['decoder_layers'] = null) }), '--text', 'hi', '--decoder-text', 'x'), 'decoder_layers is null; allowed');
    expectUserError(
      trace(variant('bart-dec-3', 'bart', { config: (c) => (c['decoder_layers'] = 3) }), '--text', 'hi', '--decoder-text', 'x'),
      "no tensor 'model.decoder.layers.2.",
      'decoder_layers is 3',
    );
    expectUserError(
      trace(variant('bart-no-enc', 'bart', { config: (c) => delete c['encoder_layers'] }), '--text', 'hi', '--decoder-text', 'x'),
      'encoder_layers is absent (default 12)',
    );
  });

  it('n_head that does not divide n_embd', () => {
    const dir = variant('gpt2-heads3', 'gpt2', { config: (c) => (c['n_head'] = 3) });
    expectUserError(trace(dir), 'config.json', 'n_embd 32 is not a multiple of n_head 3');
  });

  it('a weight shape that contradicts the config', () => {
    const dir = variant('bert-hidden', 'bert', { config: (c) => (c['hidden_size'] = 64) });
    expectUserError(trace(dir), 'bert-hidden/config.json', 'hidden_size is 64', /'bert\.encoder\.layer\.0\.[\w.]+' has shape \[\d+, \d+\]/);
    // A block norm of the wrong size.
    const norm = variant('llama-width', 'llama', { config: (c) => (c['hidden_size'] = 48) });
    expectUserError(trace(norm), 'llama-width/config.json', 'hidden_size is 48', /has shape/);
  });
});

describe('ids beyond the embedding tables, absurd options', () => {
  it('a tokenizer id beyond vocab_size', () => {
    const dir = variant('bert-vocab', 'bert', { config: (c) => (c['vocab_size'] = 50) });
    expectUserError(trace(dir), /token id \d+ is outside bert-vocab's vocab_size of 50/, 'config.json', 'allowed: 0 to 49');
  });

  it('--type-ids beyond type_vocab_size', () => {
    expectUserError(trace(join(FIXTURES, 'bert'), '--ids', '2,3,4', '--type-ids', '0,1,5'), 'token type id 5', 'type_vocab_size of 2', 'allowed: 0 to 1');
  });

  it("an id within type_vocab_size but beyond the checkpoint's smaller table: no ANSI log line from onnxruntime before ours", () => {
    const dir = variant('bert-types5', 'bert', { config: (c) => (c['type_vocab_size'] = 5) });
    expectUserError(trace(dir, '--ids', '2,3,4', '--type-ids', '0,1,4'), 'beyond a table of the checkpoint', 'smaller than its config.json says');
  });

  it('a key/value head count the projection weights do not split into', () => {
    const dir = variant('llama-kv', 'llama', { config: (c) => (c['num_key_value_heads'] = 1) });
    expectUserError(trace(dir), 'llama-kv/config.json', "'model.layers.0.self_attn.k_proj.weight' has shape [16, 32]", 'need 8 rows', 'num_key_value_heads');
    // T5 without d_kv: the default head size (64) does not fit the checkpoint's projections.
    const t5 = variant('t5-no-dkv', 't5', { config: (c) => delete c['d_kv'] });
    expectUserError(trace(t5, '--text', 'hi', '--decoder-text', 'x'), 't5-no-dkv/config.json', 'need 256 rows', 'd_kv');
  });

  it('--threads 999999999', () => {
    expectUserError(trace(join(FIXTURES, 'bert'), '--text', 'hello', '--threads', '999999999'), '--threads', '999999999');
  });
});

describe('safetensors headers that used to overflow the stack or reach the terminal raw', () => {
  const deep = `${'['.repeat(10_000)}1${']'.repeat(10_000)}`;

  it('shape and data_offsets nested 10,000 deep', () => {
    expectUserError(trace(bertWithHeader('deep-shape', `{"w":{"dtype":"F32","shape":${deep},"data_offsets":[0,4]}}`)), 'model.safetensors', "tensor 'w' has an invalid shape", 'allowed');
    expectUserError(trace(bertWithHeader('deep-offsets', `{"w":{"dtype":"F32","shape":[1],"data_offsets":${deep}}}`)), 'model.safetensors', 'invalid data_offsets', 'allowed');
  });

  it('a 2,000-character shape is cut', () => {
    const r = trace(bertWithHeader('long-shape', `{"w":{"dtype":"F32","shape":[${Array(1000).fill('-1').join(',')}],"data_offsets":[0,4]}}`));
    expectUserError(r, 'invalid shape', '…');
  });

  it('terminal escape sequences and form feeds in names are escaped', () => {
    const r = trace(bertWithHeader('escapes', '{"w\\u001b]0;pwned\\u0007\\u001b[2J\\f":{"dtype":"X\\u001b[31m","shape":[1],"data_offsets":[0,4]}}'));
    expectUserError(r, String.raw`'w\x1b]0;pwned\x07\x1b[2J\x0c'`, String.raw`unknown dtype 'X\x1b[31m'`);
  });
});

describe('checkpoints missing a bias their config says exists (used to run with zeros)', () => {
  it("GPT-2's c_attn.bias", () => {
    expectUserError(trace(withoutTensor('gpt2-no-bias', 'gpt2', 'transformer.h.0.attn.c_attn.bias')), "'transformer.h.0.attn.c_attn.bias'", 'damaged or incomplete');
  });

  it("BERT's embeddings LayerNorm bias", () => {
    expectUserError(trace(withoutTensor('bert-no-bias', 'bert', 'bert.embeddings.LayerNorm.bias')), "'bert.embeddings.LayerNorm.bias'");
  });
});

describe('trace files whose attention is not a probability', () => {
  it('open with one warning line naming the file, stack and first bad value', () => {
    const path = join(scratch, 'odd-trace.safetensors');
    copyFileSync(join(FIXTURES, 'traces', 't5-encdec.safetensors'), path);
    const { header, data } = readSafetensors(path);
    const [begin] = (header['attention.encoder'] as { data_offsets: [number, number] }).data_offsets;
    data.writeFloatLE(Number.NaN, begin + 4 * 3); // layer 0, head 0, row 0, column 3
    data.writeFloatLE(-0.5, begin + 4 * 100);
    data.writeFloatLE(2, begin + 4 * 200);
    writeSafetensors(path, JSON.stringify(header), data);
    const r = runCli(scratch, ['export', path, '--view', 'heatmap', '--layer', '0', '--head', '0', '--out', join(scratch, 'odd.svg')], 60_000);
    expect(r.status, r.stderr).toBe(0);
    const warnings = r.stderr.split('\n').filter((l) => l.includes('warning'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('odd-trace.safetensors');
    expect(warnings[0]).toContain('attention.encoder holds 1 NaN, 1 negative, 1 above 1 values');
    expect(warnings[0]).toContain('first: layer 0, head 0, row 0, column 3');
  });
});
