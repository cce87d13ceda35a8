/**
 * JSON files of any size read in chunks (issue 13.5: "trace files of any size are … read in
 * chunks"). A JSON trace over ≈ 512 MB (a BERT-base trace at 512 tokens is ≈ 600 MB) cannot be one
 * V8 string; io/json-file.ts reads it a chunk at a time. Here the chunks are made tiny (1–40 bytes)
 * so every token, string and row crosses chunk boundaries, and the value is checked against V8's
 * own JSON.parse of the same text — on fast-check's arbitrary JSON, on a fixture's PyTorch reference file
 * and on malformed text (one clear error naming the file and the byte). The
 * whole path over the string limit (a real 600 MB trace file) runs in the deep suite
 * (test/trace-json-large.test.ts).
 */
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AttnscopeError } from '../src/core/errors.js';
import { readJsonFile } from '../src/io/json-file.js';

let tmp: string;
let n = 0;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'attnscope-json-chunks-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function fileWith(text: string | Buffer): Promise<string> {
  const path = join(tmp, `f${n++}.json`);
  await writeFile(path, text);
  return path;
}

describe('readJsonFile', () => {
  it('gives what JSON.parse gives, for any JSON text and any chunk size', async () => {
    await fc.assert(
      fc.asyncProperty(fc.jsonValue(), fc.integer({ min: 1, max: 40 }), fc.boolean(), async (value, chunk, pretty) => {
        const text = JSON.stringify(value, null, pretty ? 2 : undefined);
        const path = await fileWith(text);
        expect(await readJsonFile(path, chunk)).toStrictEqual(JSON.parse(text));
        await rm(path);
      }),
      { numRuns: 300 },
    );
  });

  it('reads rows of numbers, escapes and multi-byte UTF-8 across chunk boundaries', async () => {
    const text = '{"tokens":[{"text":"caf\\u00e9 ☕ 漢字 \\"q\\" \\\\ 😀","n":-0.5e-3}],"rows":[[1,2.5,-3e+2,0,true,null],[ 4 , 5 ],[]],"x":[],"o":{}}';
    const path = await fileWith(text);
    for (const chunk of [1, 2, 3, 5, 7, 64, 1 << 20]) expect(await readJsonFile(path, chunk)).toStrictEqual(JSON.parse(text));
  });

  it("reads a fixture's PyTorch reference (nested arrays of floats) as JSON.parse does, in 13-byte chunks", async () => {
    const dir = join(process.cwd(), 'test/fixtures');
    const traces: string[] = [];
    for (const d of await readdir(dir, { withFileTypes: true })) {
      if (!d.isDirectory()) continue;
      for (const f of await readdir(join(dir, d.name))) if (f === 'reference.json') traces.push(join(dir, d.name, f));
    }
    expect(traces.length).toBeGreaterThan(0);
    const path = traces[0]!;
    expect(await readJsonFile(path, 13)).toStrictEqual(JSON.parse(await readFile(path, 'utf8')));
  });

  it('keeps "__proto__" as an own key, as JSON.parse does (no prototype is set)', async () => {
    const text = '{"__proto__":{"polluted":1},"a":[{"__proto__":[1]}]}';
    const got = (await readJsonFile(await fileWith(text), 3)) as Record<string, unknown>;
    expect(got).toStrictEqual(JSON.parse(text));
    expect(Object.getPrototypeOf(got)).toBe(Object.prototype);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it('reads any depth (no recursion)', async () => {
    const depth = 100_000;
    const text = `${'['.repeat(depth)}"x"${']'.repeat(depth)}`;
    let v = (await readJsonFile(await fileWith(text), 4096)) as unknown;
    let d = 0;
    while (Array.isArray(v)) {
      v = v[0];
      d++;
    }
    expect([d, v]).toEqual([depth, 'x']);
  });

  it('rejects malformed text with one line naming the file and the byte', async () => {
    const cases: [string, RegExp][] = [
      ['{"a":1,}', /a key expected at byte 7\)/],
      ['[1,2', /unterminated array at byte 0\)/],
      ['[1,[2],]', /unexpected '\]' at byte 7\)/],
      ['{"a" 1}', /':' expected at byte 5\)/],
      ['"abc', /unterminated string at byte 0\)/],
      ['[1,2] 3', /text after the value at byte 6\)/],
      ['[tru]', /bad array at byte 0\)/],
      ['{"a":[1,2]', /unexpected end of file at byte 10\)/],
      ['', /no value at byte 0\)/],
      ['  \n ', /no value at byte 4\)/],
      ['{"a":nul}', /bad value at byte 5\)/],
    ];
    for (const [text, message] of cases) {
      expect(() => JSON.parse(text)).toThrow();
      const path = await fileWith(text);
      for (const chunk of [1, 3, 1024]) {
        const err = await readJsonFile(path, chunk).then(
          () => null,
          (e: unknown) => e,
        );
        expect(err, `${text} (chunks of ${chunk})`).toBeInstanceOf(AttnscopeError);
        expect((err as Error).message).toContain(`${path}: not valid JSON (`);
        expect((err as Error).message, text).toMatch(message);
        expect((err as Error).message).not.toContain('\n');
      }
    }
    await expect(readJsonFile(join(tmp, 'missing.json'))).rejects.toThrow(/missing\.json: no such file/);
  });
});
