/**
 * Trace files: JSON and .safetensors traces read back exactly what was written, traces
 * written the way a PyTorch user would (plain token strings, F16 tensors, no model info) load,
 * and malformed traces give clear errors.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Trace } from '../src/core/trace.js';
import { loadModel } from '../src/engine/load.js';
import { serializeSafetensors } from '../src/io/safetensors.js';
import { formatFloat32 } from '../src/io/json-writer.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';
import { FIXTURES, stackValues } from './helpers/reference.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-traces-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

let trace: Trace;
beforeAll(async () => {
  const model = await loadModel(join(FIXTURES, 'bert'));
  trace = await model.trace('The weather is nice today.', { pair: "Let's go for a walk.", qk: true, hidden: true });
  await model.dispose();
});

describe('round trips', () => {
  for (const file of ['t.json', 't.safetensors']) {
    it(`${file}: tokens, model, attention, queries and keys come back bit for bit`, async () => {
      await writeTraceFile(join(tmp, file), trace);
      const back = await readTraceFile(join(tmp, file));
      expect(back.model).toEqual(trace.model);
      expect(back.tokens).toEqual(trace.tokens);
      expect(stackValues(back.attention.self)).toEqual(stackValues(trace.attention.self));
      expect(stackValues(back.queries?.self)).toEqual(stackValues(trace.queries?.self));
      expect(stackValues(back.keys?.self)).toEqual(stackValues(trace.keys?.self));
    });
  }

  it('formats float32 values with the fewest digits that read back exactly', () => {
    const values = Float32Array.from([0, 1, 0.1, 1 / 3, 1e-8, 3.4028234663852886e38, -2.5e-45, 0.123456789]);
    for (const v of values) expect(Math.fround(Number(formatFloat32(v)))).toBe(v);
    expect(formatFloat32(Math.fround(0.1))).toBe('0.1');
  });
});

describe('traces written by PyTorch', () => {
  it('loads plain token strings, F16 tensors and no model info', async () => {
    const layers = 2, heads = 3, n = 4;
    const attn = new Float32Array(layers * heads * n * n).map((_, i) => ((i % n) + 1) / 10);
    const bytes = serializeSafetensors(
      [{ name: 'attention.self', dtype: 'F16', shape: [layers, heads, n, n], data: attn }],
      { format: 'attnscope-trace', version: '1', tokens: JSON.stringify(['[CLS]', 'hello', 'world', '[SEP]']) },
    );
    const path = join(tmp, 'torch.safetensors');
    writeFileSync(path, bytes);
    const back = await readTraceFile(path);
    expect(back.tokens.map((t) => t.text)).toEqual(['[CLS]', 'hello', 'world', '[SEP]']);
    expect(back.model).toMatchObject({ numLayers: 2, numHeads: 3 });
    expect(back.attention.self!.dims).toEqual([heads, n, n]);
    expect(back.attention.self!.layers[1]![5]).toBeCloseTo(0.2, 3);
  });
});

describe('malformed traces', () => {
  const cases: [string, string, RegExp][] = [
    ['not JSON', '{nope', /not valid JSON/],
    ['another format', JSON.stringify({ format: 'bertviz', version: 1 }), /not an attnscope trace/],
    ['a future version', JSON.stringify({ format: 'attnscope-trace', version: 9 }), /unsupported trace version 9/],
    ['an unknown stack', JSON.stringify({ format: 'attnscope-trace', version: 1, tokens: ['a'], attention: { sideways: [[[[1]]]] } }), /unknown stack 'sideways'/],
    ['ragged rows', JSON.stringify({ format: 'attnscope-trace', version: 1, tokens: ['a', 'b'], attention: { self: [[[[1, 0], [0.5]]]] } }), /row 1 is not 2 numbers/],
    ['attention that does not fit the tokens', JSON.stringify({ format: 'attnscope-trace', version: 1, tokens: ['a'], attention: { self: [[[[1, 0], [0.5, 0.5]]]] } }), /2×2 but there are 1 query and 1 key tokens/],
  ];
  for (const [what, text, pattern] of cases) {
    it(what, async () => {
      const path = join(tmp, `bad-${what.replace(/\W+/g, '-')}.json`);
      writeFileSync(path, text);
      await expect(readTraceFile(path)).rejects.toThrow(pattern);
    });
  }

  it('a model checkpoint given as a trace', async () => {
    await expect(readTraceFile(join(FIXTURES, 'bert', 'model.safetensors'))).rejects.toThrow(/not an attnscope trace/);
  });
});
