/**
 * The standalone page's data packing (no browser needed): encodings round-trip, the precision
 * ladder, base64 and <script>-safe JSON, and the page's shape (one file, CSP, no outside URLs).
 */
import { inflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { syntheticTrace } from '../../bench/synthetic-trace.js';
import type { Trace } from '../../src/core/trace.js';
import {
  type PayloadHeader,
  attentionEncoding,
  decodeValues,
  encodeValues,
  fromBase64,
  placeTensor,
  qkEncoding,
  scriptJson,
  toBase64,
} from '../../src/views/html/payload.js';
import { renderStandaloneHtml } from '../../src/views/html/standalone.js';

const STUB = { js: 'document.body.dataset.stub="1"', css: 'body{margin:0}' };

/** Header and decoded tensors of a page, read the way the browser does. */
function readPage(html: string): { header: PayloadHeader; trace: Trace } {
  const header = JSON.parse(/<script type="application\/json" id="attnscope-header">(.*?)<\/script>/s.exec(html)![1]!) as PayloadHeader;
  const blob = (i: number) => fromBase64(new RegExp(`id="attnscope-blob-${i}">([^<]*)</script>`).exec(html)![1]!);
  const trace: Trace = { model: header.model, tokens: header.tokens, attention: {} };
  for (const t of header.tensors) {
    const layers = t.blobs.map((b) => decodeValues(new Uint8Array(inflateRawSync(blob(b))), t.encoding));
    placeTensor(trace, header, t, layers);
  }
  return { header, trace };
}

describe('encodings', () => {
  const values = Float32Array.from([0, 1, 0.5, 1e-7, 4.9e-6, 5e-6, 0.123456, 0.999999, 1 / 3]);
  it('f32 is bit-exact', () => {
    const enc = attentionEncoding('f32');
    expect(decodeValues(encodeValues(values, enc), enc)).toEqual(values);
  });
  it('attention to 5 decimals: exact zeros stay zero, tiny weights stay nonzero, the rest within half a unit', () => {
    const enc = attentionEncoding('fixed5');
    const out = decodeValues(encodeValues(values, enc), enc);
    expect(out[0]).toBe(0);
    expect(out[3]).toBeGreaterThan(0);
    expect(out[3]).toBeLessThan(0.5e-5);
    values.forEach((v, i) => expect(Math.abs(out[i]! - v)).toBeLessThanOrEqual(0.5e-5 + 1e-9));
    // Printed at 5 decimals, the decoded value is the trace's value rounded to 5 decimals.
    expect(out[6]!.toFixed(5)).toBe('0.12346');
    expect(out[1]).toBe(1);
  });
  it('signed fixed point (queries/keys) round-trips to the stored decimals', () => {
    const qk = Float32Array.from([-12.345678, 0, 3.14159, -0.004, 99.999, -250.5]);
    for (const level of ['fixed4', 'fixed3', 'fixed2'] as const) {
      const enc = qkEncoding(level, 250.5);
      const d = Number(level.slice(5));
      const out = decodeValues(encodeValues(qk, enc), enc);
      qk.forEach((v, i) => expect(Math.abs(out[i]! - v)).toBeLessThanOrEqual(0.5 * 10 ** -d + 1e-5));
    }
    const wide = qkEncoding('fixed4', 250.5);
    const narrow = qkEncoding('fixed2', 3);
    expect(wide.kind === 'fixed' && wide.bytes).toBe(3);
    expect(narrow.kind === 'fixed' && narrow.bytes).toBe(2);
  });
  it('base64 matches Node and ignores whitespace', () => {
    for (const n of [0, 1, 2, 3, 4, 5, 1000, 65537]) {
      const bytes = Uint8Array.from({ length: n }, (_, i) => (i * 7919) & 255);
      expect(toBase64(bytes)).toBe(Buffer.from(bytes).toString('base64'));
      expect(fromBase64(toBase64(bytes))).toEqual(bytes);
    }
    expect(fromBase64('aGVs\nbG8=')).toEqual(new TextEncoder().encode('hello'));
  });
  it('JSON inside <script> cannot close the element', () => {
    const s = scriptJson({ t: '</script><script>alert(1)</script>', u: '<!-- \u2028' });
    expect(s).not.toMatch(/[<>\u2028]/);
    expect(JSON.parse(s)).toEqual({ t: '</script><script>alert(1)</script>', u: '<!-- \u2028' });
  });
});

describe('standalone page', () => {
  it('is one file: CSP allowing only its own script, no outside URL, values exact when small', async () => {
    const trace = syntheticTrace({ layers: 2, heads: 3, tokens: 10, headDim: 8 });
    const r = await renderStandaloneHtml(trace, { bundle: STUB, text: 'a <b>' });
    expect(r.precision).toEqual({ attention: 'f32', qk: 'f32' });
    const hash = Buffer.from(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(STUB.js))).toString('base64');
    expect(r.html).toContain(`script-src 'sha256-${hash}'`);
    expect(r.html).toContain("default-src 'none'");
    expect(r.html).not.toMatch(/<(script|link|img|iframe)[^>]+(src|href)=/i);
    expect(r.html).not.toMatch(/https?:\/\//);
    expect(r.html).toContain('<title>attnscope · synthetic-bert-base-10 · “a &lt;b&gt;”</title>');
    const { header, trace: back } = readPage(r.html);
    expect(header.tokens).toEqual(trace.tokens);
    expect(back.attention.self!.layers).toEqual(trace.attention.self!.layers);
    expect(back.queries!.self!.layers).toEqual(trace.queries!.self!.layers);
    expect(back.keys!.self!.layers).toEqual(trace.keys!.self!.layers);
    expect(header.stacks.self!.bias).toBe(false);
    expect(header.stacks.self!.maxSoftmaxError!).toBeLessThan(1e-6);
  });

  it('steps down the precision ladder to fit the size limit, and --exact keeps everything', async () => {
    const trace = syntheticTrace({ layers: 4, heads: 4, tokens: 48, headDim: 32 });
    const exact = await renderStandaloneHtml(trace, { bundle: STUB, precision: 'exact', maxBytes: 1000 });
    expect(exact.precision).toEqual({ attention: 'f32', qk: 'f32' });
    const small = await renderStandaloneHtml(trace, { bundle: STUB, maxBytes: exact.bytes * 0.6 });
    expect(small.bytes).toBeLessThanOrEqual(exact.bytes * 0.6);
    expect(small.precision).not.toEqual({ attention: 'f32', qk: 'f32' });
    const { header, trace: back } = readPage(small.html);
    const aq = header.precision.attention === 'f32' ? 0 : 0.5 * 10 ** -Number(header.precision.attention.slice(5));
    const qq = header.precision.qk === 'f32' ? 0 : 0.5 * 10 ** -Number(header.precision.qk!.slice(5));
    trace.attention.self!.layers.forEach((l, i) => l.forEach((v, j) => expect(Math.abs(back.attention.self!.layers[i]![j]! - v)).toBeLessThanOrEqual(aq + 1e-7)));
    trace.queries!.self!.layers.forEach((l, i) => l.forEach((v, j) => expect(Math.abs(back.queries!.self!.layers[i]![j]! - v)).toBeLessThanOrEqual(qq + 1e-6)));
    // The facts about the stack come from the exact trace, not the rounded values.
    expect(header.stacks.self!.bias).toBe(false);
  });
});
