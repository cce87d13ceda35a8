/**
 * The binary stream of `attnscope serve` (src/server/protocol.ts): frames written and read back
 * whatever the chunk boundaries (one byte at a time, random cuts, all at once), float32 values bit
 * for bit, JSON frames as sent, 4-byte alignment of every frame; causal attention layers sent as
 * their lower triangle and read back bit for bit.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FrameReader, jsonFrame, layerFrame, type Frame } from '../src/server/protocol.js';

function stream(): { bytes: Uint8Array; layers: Float32Array[] } {
  const layers = [
    new Float32Array([0, 1, 0.5, -0, Number.MIN_VALUE, 3.4028234663852886e38, -1e-20]),
    new Float32Array(3001).map((_, i) => (i % 7) / 7),
    new Float32Array(0),
  ];
  const parts = [
    jsonFrame('progress', { stage: 'load', message: 'loading “x” <b>' }),
    ...layers.map((l, i) => layerFrame(i, 65535 - i, l)),
    jsonFrame('end', { loadMs: 1, runMs: 2, bytes: 3 }),
  ];
  for (const p of parts) expect(p.length % 4).toBe(0);
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return { bytes, layers };
}

function check(frames: Frame[], layers: Float32Array[]): void {
  expect(frames.map((f) => f.type)).toEqual(['progress', 'layer', 'layer', 'layer', 'end']);
  expect(frames[0]).toEqual({ type: 'progress', value: { stage: 'load', message: 'loading “x” <b>' } });
  layers.forEach((l, i) => {
    const f = frames[1 + i] as Extract<Frame, { type: 'layer' }>;
    expect(f.tensor).toBe(i);
    expect(f.layer).toBe(65535 - i);
    // Bit for bit (−0 and subnormals included).
    expect(new Uint32Array(f.values.buffer, f.values.byteOffset, f.values.length)).toEqual(new Uint32Array(l.buffer));
  });
  expect(frames[4]).toEqual({ type: 'end', value: { loadMs: 1, runMs: 2, bytes: 3 } });
}

describe('serve protocol: frames', () => {
  it('reads frames back from one chunk and from single bytes', () => {
    const { bytes, layers } = stream();
    const whole = new FrameReader();
    check(whole.push(bytes), layers);
    expect(whole.pending).toBe(0);
    const reader = new FrameReader();
    const frames: Frame[] = [];
    for (let i = 0; i < bytes.length; i++) frames.push(...reader.push(bytes.subarray(i, i + 1)));
    check(frames, layers);
    expect(reader.pending).toBe(0);
  });

  it('reads frames back whatever the chunk boundaries', () => {
    const { bytes, layers } = stream();
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: bytes.length - 1 }), { maxLength: 40 }), (cuts) => {
        const points = [0, ...cuts.sort((a, b) => a - b), bytes.length];
        const reader = new FrameReader();
        const frames: Frame[] = [];
        for (let i = 0; i + 1 < points.length; i++) frames.push(...reader.push(bytes.slice(points[i], points[i + 1])));
        check(frames, layers);
        expect(reader.pending).toBe(0);
      }),
      { numRuns: 50 },
    );
  });

  it('reports a stream cut off inside a frame as pending bytes', () => {
    const { bytes } = stream();
    const reader = new FrameReader();
    const frames = reader.push(bytes.subarray(0, bytes.length - 5));
    expect(frames.map((f) => f.type)).toEqual(['progress', 'layer', 'layer', 'layer']);
    expect(reader.pending).toBeGreaterThan(0);
  });

  it('sends a layer that is zero above the diagonal as its lower triangle, read back bit for bit at any chunk offset', () => {
    const d0 = 3;
    const n = 6;
    const at = (m: number, i: number, j: number) => (m * n + i) * n + j;
    // Lower triangles with exact zeros, −0, a subnormal and the largest float below the diagonal.
    const causal = new Float32Array(d0 * n * n);
    for (let m = 0; m < d0; m++) for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) causal[at(m, i, j)] = ((m + 1) * (i + 2) * (j + 3)) / 97;
    causal[at(1, 3, 0)] = 0;
    causal[at(1, 4, 2)] = -0;
    causal[at(2, 5, 5)] = Number.MIN_VALUE;
    causal[at(0, 5, 1)] = 3.4028234663852886e38;
    const negZeroAbove = causal.slice();
    negZeroAbove[at(2, 1, 4)] = -0;
    const oneAbove = causal.slice();
    oneAbove[at(0, 0, 5)] = 1e-30;
    const dims = [d0, n, n] as const;
    const lower = layerFrame(0, 7, causal, dims);
    const frames = [jsonFrame('progress', { stage: 'run', message: 'x' }), lower, layerFrame(1, 8, negZeroAbove, dims), layerFrame(2, 9, oneAbove, dims), layerFrame(3, 10, causal), layerFrame(4, 11, causal.subarray(0, 2 * n * n), [2, n * 2, n / 2])];
    // Encoding byte: 1 (lower triangle, d0·n(n+1)/2 values and two u32) only for the first.
    expect(frames.slice(1).map((f) => f[9])).toEqual([1, 0, 0, 0, 0]);
    expect(lower.length).toBe(8 + 4 + 8 + ((d0 * n * (n + 1)) / 2) * 4);
    const bytes = new Uint8Array(frames.reduce((k, f) => k + f.length, 0) + 1);
    let o = 1;
    for (const f of frames) {
      bytes.set(f, o);
      o += f.length;
    }
    const want = [causal, negZeroAbove, oneAbove, causal, causal.subarray(0, 2 * n * n)];
    const bits = (v: Float32Array) => [...new Uint32Array(v.buffer, v.byteOffset, v.length)];
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 2, max: bytes.length - 1 }), { maxLength: 12 }), (cuts) => {
        // Subarrays of one buffer starting at an odd offset: frames land at unaligned places.
        const points = [1, ...cuts.sort((a, b) => a - b), bytes.length];
        const reader = new FrameReader();
        const got: Frame[] = [];
        for (let i = 0; i + 1 < points.length; i++) got.push(...reader.push(bytes.subarray(points[i], points[i + 1])));
        const layers = got.filter((f): f is Extract<Frame, { type: 'layer' }> => f.type === 'layer');
        expect(layers.map((f) => [f.tensor, f.layer])).toEqual([[0, 7], [1, 8], [2, 9], [3, 10], [4, 11]]);
        layers.forEach((f, i) => expect(bits(f.values)).toEqual(bits(want[i]!)));
      }),
      { numRuns: 40 },
    );
  });

  it('refuses a tensor or layer index the frame cannot carry', () => {
    expect(() => layerFrame(256, 0, new Float32Array(1))).toThrow(/out of range/);
    expect(() => layerFrame(0, 65536, new Float32Array(1))).toThrow(/out of range/);
  });
});
