/**
 * The fast JSON writer: every float32 reads back bit for bit through JSON.parse (random bit
 * patterns, edge values), in valid JSON however the chunks fall; its text is as short as
 * toPrecision's shortest round-tripping form (checked independently); a trace with a NaN or an
 * infinity is refused naming the element, and leaves no file, not even a temporary one.
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Trace } from '../src/core/trace.js';
import { JsonChunkWriter, formatFloat32 } from '../src/io/json-writer.js';
import { readTraceFile, writeTraceFile } from '../src/io/trace-file.js';

const tmp = mkdtempSync(join(tmpdir(), 'attnscope-json-writer-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Deterministic 32-bit patterns (xorshift). */
function randomBits(n: number, seed = 12345): Uint32Array {
  const out = new Uint32Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x >>> 0;
  }
  return out;
}

/** The fewest significant digits (1–9) whose toPrecision text reads back as `x`: an independent reference. */
function shortestLength(x: number): number {
  for (let n = 1; n <= 9; n++) if (Math.fround(Number(x.toPrecision(n))) === x) return n;
  return 9;
}

describe('float32 text', () => {
  it('reads back bit for bit: 200,000 random bit patterns and the edge values, in small chunks', () => {
    const bits = randomBits(200_000);
    const values = new Float32Array(bits.buffer).filter((v) => Number.isFinite(v));
    const edges = Float32Array.from([0, -0, 1, -1, 0.1, 1 / 3, 1e-45, -1e-45, 1.1754942e-38, 1.17549435e-38, 3.4028235e38, -3.4028235e38, 1e-7, 1e-6, 1e21, 1e22, 123456789, 0.5, 2 ** -24, 65504]);
    const all = new Float32Array(values.length + edges.length);
    all.set(values);
    all.set(edges, values.length);
    const w = new JsonChunkWriter(4096); // many chunk boundaries
    w.text('[');
    w.float32s(all, 0, all.length);
    w.text(']');
    const chunks = w.finish();
    expect(chunks.length).toBeGreaterThan(100);
    const text = Buffer.concat(chunks).toString('utf8');
    const back = JSON.parse(text) as number[];
    expect(back).toHaveLength(all.length);
    for (let i = 0; i < all.length; i++) {
      if (!Object.is(Math.fround(back[i]!), all[i])) throw new Error(`${all[i]} came back as ${back[i]}`);
    }
  });

  it('uses no more significant digits than needed, from 7 (fewer when trailing zeros drop)', () => {
    const values = new Float32Array(randomBits(20_000, 99).buffer).filter((v) => Number.isFinite(v) && v !== 0);
    let longer = 0;
    for (const v of values) {
      // Significant digits: no sign, exponent, point, leading zeros, or trailing zeros of a whole number.
      const mantissa = formatFloat32(v).replace(/^-/, '').replace(/e.*$/, '');
      const digits = (mantissa.includes('.') ? mantissa.replace('.', '') : mantissa.replace(/0+$/, '')).replace(/^0+/, '').length;
      const need = shortestLength(v);
      expect(digits).toBeLessThanOrEqual(Math.max(7, need));
      if (digits > need) longer++;
    }
    // Only values whose shortest form has fewer than 7 digits may come out longer.
    expect(longer / values.length).toBeLessThan(0.1);
    expect(formatFloat32(Math.fround(0.1))).toBe('0.1');
    expect(formatFloat32(0.5)).toBe('0.5');
    expect(formatFloat32(-0)).toBe('-0');
  });
});

function smallTrace(value: number): Trace {
  const layer = Float32Array.from([1, 0, 0.25, 0.75]);
  layer[3] = value;
  return {
    model: { name: 'tiny', modelType: 'bert', numLayers: 1, numHeads: 1, numKeyValueHeads: 1, headDim: 2 },
    tokens: ['a', 'b'].map((text, i) => ({ id: i, text, start: 0, end: 1, special: false, segment: 0, word: i })),
    attention: { self: { dims: [1, 2, 2], layers: [layer] } },
    lastHiddenState: { dims: [2, 3], data: Float32Array.from([1.5, -2.25, 3e-9, 0, 7, -1e30]) },
  };
}

describe('trace files', () => {
  it('writes every field: hidden states come back exactly', async () => {
    const path = join(tmp, 'hidden.json');
    const trace = smallTrace(0.75);
    await writeTraceFile(path, trace);
    const back = await readTraceFile(path);
    expect(back.lastHiddenState?.dims).toEqual([2, 3]);
    expect(Array.from(back.lastHiddenState!.data)).toEqual(Array.from(trace.lastHiddenState!.data));
    expect(JSON.parse(readFileSync(path, 'utf8')).attention.self).toEqual([[[[1, 0], [0.25, 0.75]]]]);
  });

  for (const value of [Number.NaN, Number.POSITIVE_INFINITY]) {
    it(`refuses ${value} naming the element, leaving no file behind`, async () => {
      const dir = mkdtempSync(join(tmp, 'bad-'));
      const path = join(dir, 'trace.json');
      await expect(writeTraceFile(path, smallTrace(value))).rejects.toThrow(
        new RegExp(`^${path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: attention\\.self: layer 0, \\[0, 1, 1\\] is ${value}, which JSON cannot hold \\(write a \\.safetensors trace to keep it\\)$`),
      );
      expect(existsSync(path)).toBe(false);
      expect(readdirSync(dir)).toEqual([]);
    });
  }
});
