/**
 * Trace and checkpoint files of any size (issue 13.5): safetensors tensors are written and read in
 * pieces, never through one buffer of the whole tensor (V8 refuses typed arrays over 2^32 bytes, so
 * a 5.6 GB attention stack could not be saved). A real file over 4 GiB is too heavy for the test
 * suite: here the pieces are made tiny (8–24 bytes) so every tensor spans many of them, with odd
 * lengths that end mid-piece, and the bytes on disk are checked against the format written out by
 * hand in the test.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSafetensors, writeSafetensors, type SafetensorsTensorInput } from '../src/io/safetensors.js';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'attnscope-st-chunks-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** float32 → bfloat16 bits, round to nearest even (written here, independently of the writer). */
function bf16Bits(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0]!;
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

const values = (n: number, seed: number): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + seed) * (1 + i));

describe('safetensors in chunks', () => {
  const tensors: SafetensorsTensorInput[] = [
    { name: 'a', dtype: 'F32', shape: [3, 7], data: values(21, 1) },
    { name: 'b', dtype: 'BF16', shape: [5, 3], data: values(15, 2) },
    { name: 'c', dtype: 'F16', shape: [13], data: Uint16Array.from({ length: 13 }, (_, i) => 0x3c00 + i) },
    { name: 'd', dtype: 'F32', shape: [1], data: Float32Array.of(-2.5) },
  ];

  it('writes header then each tensor piece by piece, bytes as the format says', async () => {
    const path = join(tmp, 'small-pieces.safetensors');
    await writeSafetensors(path, tensors, { format: 'test' }, { chunkBytes: 8 });
    const bytes = new Uint8Array(await readFile(path));
    const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, { data_offsets: [number, number] }>;
    const data = bytes.subarray(8 + n);
    const at = (name: string) => data.subarray(...header[name]!.data_offsets);
    expect([...at('a')]).toEqual([...new Uint8Array(tensors[0]!.data.buffer)]);
    const b = new Uint16Array(at('b').slice().buffer);
    expect([...b]).toEqual([...values(15, 2)].map(bf16Bits));
    expect([...new Uint16Array(at('c').slice().buffer)]).toEqual(Array.from({ length: 13 }, (_, i) => 0x3c00 + i));
    expect(data.length).toBe(21 * 4 + 15 * 2 + 13 * 2 + 4);
  });

  it('reads tensors larger than a piece with positioned reads, equal to a whole read', async () => {
    const path = join(tmp, 'read-pieces.safetensors');
    await writeSafetensors(path, tensors, undefined, { chunkBytes: 24 });
    const whole = await openSafetensors(path);
    const pieces = await openSafetensors(path, path, { chunkBytes: 12 }); // rounded down to 8 bytes
    try {
      for (const t of tensors) {
        const w = await whole.get(t.name);
        const p = await pieces.get(t.name);
        expect(p.shape).toEqual([...t.shape]);
        expect([...p.data]).toEqual([...w.data]);
      }
      // Independent reference values: F32 as written, BF16 from the bits above, F16 1 + i/1024.
      expect([...(await pieces.get('a')).data]).toEqual([...values(21, 1)]);
      expect([...(await pieces.get('b')).data]).toEqual([...values(15, 2)].map((x) => new Float32Array(new Uint32Array([bf16Bits(x) << 16]).buffer)[0]));
      expect([...(await pieces.get('c')).data]).toEqual(Array.from({ length: 13 }, (_, i) => 1 + i / 1024));
    } finally {
      await whole.close();
      await pieces.close();
    }
  });

  it('rejects a piece size below 8 bytes in one line', async () => {
    await expect(writeSafetensors(join(tmp, 'x.safetensors'), tensors, undefined, { chunkBytes: 4 })).rejects.toThrow(/chunkBytes 4: allowed: an integer of at least 8/);
  });
});
