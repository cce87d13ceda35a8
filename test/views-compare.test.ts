/**
 * The comparison figure and page without a browser: the page stores the top pairs' matrices
 * exactly (decoded here with zlib and compared with the traces' own attention), stops at its size
 * budget (always keeping the top pair), and token text that tries to inject markup is escaped in
 * the SVG and in the page's JSON.
 */
import { deflateRawSync, inflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { compareTraces } from '../src/analysis/compare.js';
import type { Trace } from '../src/core/trace.js';
import { type ComparePayload, renderComparePage } from '../src/views/html/compare-page.js';
import { decodeValues, fromBase64 } from '../src/views/html/payload.js';
import { renderComparisonSvg } from '../src/views/svg/diff-heatmap.js';
import { syntheticTrace } from '../bench/synthetic-trace.js';

const BUNDLE = { js: 'document.body.dataset.ready = "true";', css: 'body{}' };

function pair(): [Trace, Trace] {
  const a = syntheticTrace({ layers: 2, heads: 3, tokens: 7, qk: false, pair: false, seed: 1 });
  const b = syntheticTrace({ layers: 2, heads: 3, tokens: 7, qk: false, pair: false, seed: 2 });
  return [a, b];
}

function header(html: string): ComparePayload {
  const m = /<script type="application\/json" id="attnscope-compare">([\s\S]*?)<\/script>/.exec(html);
  return JSON.parse(m![1]!) as ComparePayload;
}

function blob(html: string, i: number): Uint8Array {
  const m = new RegExp(`<script type="application/octet-stream" id="attnscope-blob-${i}">([^<]*)</script>`).exec(html);
  return inflateRawSync(fromBase64(m![1]!));
}

describe('comparison page and figure', () => {
  it('stores the ranked pairs exactly, within the size budget', async () => {
    const [a, b] = pair();
    const c = compareTraces(a, b);
    const page = await renderComparePage(c, { bundle: BUNDLE, nameA: 'A', nameB: 'B', deflate: (d) => deflateRawSync(d) });
    expect(page.stored).toBe(6);
    const h = header(page.html);
    expect(h.ranking.map((r) => [r.layer, r.head])).toEqual(c.ranking.map((r) => [r.layer, r.head]));
    const n = 7;
    for (let i = 0; i < 6; i++) {
      const r = h.ranking[i]!;
      const va = decodeValues(blob(page.html, 2 * i), { kind: 'f32' });
      const vb = decodeValues(blob(page.html, 2 * i + 1), { kind: 'f32' });
      expect(Array.from(va)).toEqual(Array.from(a.attention.self!.layers[r.layer]!.subarray(r.head! * n * n, (r.head! + 1) * n * n)));
      expect(Array.from(vb)).toEqual(Array.from(b.attention.self!.layers[r.layerB]!.subarray(r.headB! * n * n, (r.headB! + 1) * n * n)));
    }
    const small = await renderComparePage(c, { bundle: BUNDLE, nameA: 'A', nameB: 'B', maxBytes: 1 });
    expect(small.stored).toBe(1);
    expect(header(small.html).stored).toBe(1);
    expect(small.html).not.toContain('attnscope-blob-2"');
  });

  it('escapes token text in the SVG and in the page', async () => {
    const [a, b] = pair();
    a.tokens[2]!.text = '<img src=x onerror=alert(1)>';
    b.tokens[3]!.text = '</script><script>alert(2)</script>';
    const c = compareTraces(a, b, { align: 'positions' });
    const svg = renderComparisonSvg(c, { nameA: '<b>A</b>', nameB: 'B & co' });
    expect(svg).not.toContain('<img');
    expect(svg).not.toContain('<script');
    expect(svg).toContain('&lt;img src=x onerror=alert(1)&gt;');
    expect(svg).toContain('B &amp; co');
    const page = await renderComparePage(c, { bundle: BUNDLE, nameA: '<b>A</b>', nameB: 'B', title: '<i>t</i>' });
    expect(page.html).not.toContain('</script><script>alert(2)');
    expect(page.html).toContain('<title>&lt;i&gt;t&lt;/i&gt;</title>');
    expect(header(page.html).rowsB[3]!.label).toBe('</script><script>alert(2)</script>');
  });
});
