/**
 * The model view's layout on small hand-made traces: the grid (one cell per chosen layer × head,
 * in order, not overlapping, inside the figure), hit-testing, each cell's strongest query → key
 * pairs (expected values worked out by hand from the weights the trace is made of), and the
 * SVG writer painting exactly that layout.
 */
import { unzlibSync } from 'fflate';
import { describe, expect, it } from 'vitest';
import { modelCellAt, modelViewLayout, strongestPairs } from '../src/views/layout/model-view.js';
import { renderModelView } from '../src/views/svg/model-view.js';
import { downsample, textWidth, wrapText } from '../src/views/layout/common.js';
import { handTrace } from './helpers/hand-trace.js';
import { findAll, parseXml } from './helpers/xml.js';

const TOKENS = ['<s>', '▁a', '▁g', 'ir', 'l'];

describe('model view layout', () => {
  const trace = handTrace(TOKENS, { special: [0], layers: 3, heads: 4 });

  it('one cell per layer × head, row-major, disjoint, inside the figure', () => {
    const L = modelViewLayout(trace, { layers: [0, 2], heads: [1, 3] });
    expect(L.cells.map((c) => [c.layer, c.head, c.row, c.col])).toEqual([
      [0, 1, 0, 0],
      [0, 3, 0, 1],
      [2, 1, 1, 0],
      [2, 3, 1, 1],
    ]);
    for (const a of L.cells) {
      expect(a.x + a.width).toBeLessThanOrEqual(L.width);
      expect(a.y + a.height).toBeLessThanOrEqual(L.height);
      expect(a.offset).toBe(a.head * 5 * 5);
      for (const b of L.cells) {
        if (a === b) continue;
        const apart = a.x + a.width <= b.x || b.x + b.width <= a.x || a.y + a.height <= b.y || b.y + b.height <= a.y;
        expect(apart).toBe(true);
      }
    }
    // Square matrices make square cells of the requested size.
    const big = modelViewLayout(trace, { cellSize: 50 });
    expect(big.cells[0]!.width).toBe(50);
    expect(big.cells[0]!.height).toBe(50);
    expect(big.cells).toHaveLength(12);
  });

  it('hit-testing finds the cell under a point and nothing in the gaps', () => {
    const L = modelViewLayout(trace);
    for (const c of L.cells) expect(modelCellAt(L, c.x + c.width / 2, c.y + c.height / 2)).toBe(c);
    const c = L.cells[0]!;
    expect(modelCellAt(L, c.x + c.width + L.grid.gap / 2, c.y + 1)).toBeNull();
    expect(modelCellAt(L, c.x - 5, c.y + 1)).toBeNull();
    expect(modelCellAt(L, c.x + 1, L.height + 10)).toBeNull();
  });

  it('fits the page: cells of 40 to 96 px per head row', () => {
    const narrow = modelViewLayout(handTrace(TOKENS, { layers: 1, heads: 16 }), { fitWidth: 500, frame: 'page' });
    expect(narrow.grid.cw).toBe(40);
    const wide = modelViewLayout(trace, { fitWidth: 3000, frame: 'page' });
    expect(wide.grid.cw).toBe(96);
    // The page frame has no title, generation lines or note.
    expect(wide.items.some((it) => it.className === 'view-title' || it.className === 'model-note')).toBe(false);
  });

  it("a cross-attention cell follows the matrix's shape within 2:1", () => {
    // 2 decoder queries × 8 encoder keys: twice as wide, half as high as a square cell.
    const t = handTrace(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'], { layers: 1, heads: 2 });
    const cross = { dims: [2, 2, 8] as const, layers: [new Float32Array(2 * 2 * 8).fill(0.125)] };
    const encdec = { ...t, decoderTokens: t.tokens.slice(0, 2), attention: { encoder: t.attention.self!, cross } };
    const L = modelViewLayout(encdec, { stack: 'cross', cellSize: 60 });
    expect([L.nq, L.nk]).toEqual([2, 8]);
    expect([L.grid.cw, L.grid.ch]).toEqual([120, 30]);
    expect(L.note).toContain('decoder tokens (queries) ↓ × encoder tokens (keys) → (2 × 8)');
  });

  it('each cell names its strongest pairs, skipping the first row of a causal matrix', () => {
    // Head 0 rows (k + 1 for k ≤ q): q1 = [1/3, 2/3], q2 = [1/6, 2/6, 3/6], q3 = [1/10 … 4/10], q4 = [1/15 … 5/15].
    const L = modelViewLayout(trace, { layers: [0], heads: [0] });
    const cell = L.cells[0]!;
    expect(cell.pairs.map((p) => [p.q, p.k])).toEqual([
      [1, 1],
      [2, 2],
      [3, 3],
    ]);
    expect(cell.pairs[0]!.value).toBeCloseTo(2 / 3, 6);
    expect(cell.pairs[1]!.value).toBeCloseTo(1 / 2, 6);
    expect(cell.pairs[2]!.value).toBeCloseTo(4 / 10, 6);
    expect(cell.tip.split('\n')).toEqual(['layer 0 · head 0', 'strongest query → key:', '1 “a” → 1 “a” 0.667', '2 “g” → 2 “g” 0.500', '3 “·ir” → 3 “·ir” 0.400']);
  });

  it('a bidirectional matrix keeps its first row', () => {
    const m = new Float32Array([0.9, 0.1, 0.3, 0.7]);
    expect(strongestPairs(m, 0, 2, 2, 2)).toEqual([
      { q: 0, k: 0, value: expect.closeTo(0.9, 6) },
      { q: 1, k: 1, value: expect.closeTo(0.7, 6) },
    ]);
    // Causal: the first row's forced 1 is left out.
    const c = new Float32Array([1, 0, 0.25, 0.75]);
    expect(strongestPairs(c, 0, 2, 2, 2)).toEqual([
      { q: 1, k: 1, value: 0.75 },
      { q: 1, k: 0, value: 0.25 },
    ]);
  });

  it('a long model name and long generation lines wrap inside the figure (an image has no tooltip)', () => {
    const name = `org/${'very-long-model-name-'.repeat(12)}final`;
    const t = handTrace(TOKENS, { name, layers: 1, heads: 2 });
    const L = modelViewLayout(t);
    const title = L.items.filter((it) => it.className === 'view-title');
    expect(title.length).toBeGreaterThan(1);
    for (const it of title) {
      if (it.kind !== 'text') throw new Error('title is text');
      expect(it.x + textWidth(it.text, it.size)).toBeLessThanOrEqual(L.width - 16 + 0.01);
    }
    // Every character of the title is shown, in order.
    expect(title.map((it) => (it.kind === 'text' ? it.text : '')).join('').replace(/ /g, '')).toBe(L.title.replace(/ /g, ''));
    // The grid starts below the title.
    expect(L.grid.y).toBeGreaterThan(Math.max(...title.map((it) => (it.kind === 'text' ? it.y : 0))));
    const svg = parseXml(renderModelView(t));
    expect(Number(svg.attrs.width)).toBe(Math.ceil(L.width));
  });
});

describe('model view SVG', () => {
  it('paints the layout: one image and one tooltip per cell, the marks of a generation step', () => {
    const trace = handTrace(['▁Once', '▁upon', '▁a', '▁g', 'ir', 'l'], {
      layers: 2,
      heads: 3,
      generatedFrom: 3,
      generation: { promptLength: 3, strategy: 'greedy', stoppedBy: 'length', steps: [{ id: 6, probability: 0.5 }, { id: 7, probability: 0.25 }, { id: 8, probability: 0.125 }] },
    });
    const L = modelViewLayout(trace, { step: 2 });
    const root = parseXml(renderModelView(trace, { step: 2 }));
    const cells = findAll(root, 'g').filter((g) => g.attrs.class === 'cell');
    expect(cells).toHaveLength(6);
    cells.forEach((g, i) => {
      const c = L.cells[i]!;
      expect([Number(g.attrs['data-layer']), Number(g.attrs['data-head'])]).toEqual([c.layer, c.head]);
      expect(findAll(g, 'title')[0]!.text).toBe(c.tip);
      expect(findAll(g, 'image')).toHaveLength(1);
      // Step 2: 5 queries, the newest (4) outlined; generated tokens start at 3 (dashed on both axes).
      expect(findAll(g, 'rect').filter((r) => r.attrs.class === 'newest-row').map((r) => r.attrs['data-q'])).toEqual(['4']);
      expect(findAll(g, 'line').filter((l) => l.attrs.class === 'prompt-boundary')).toHaveLength(2);
    });
    expect(L.nq).toBe(5);
  });
});

/** RGB pixels of a PNG data URI (8-bit RGB, filter 0 rows, as the SVG writer encodes them), read per the PNG specification. */
function pngPixels(uri: string): { width: number; height: number; at(x: number, y: number): [number, number, number] } {
  const bytes = Uint8Array.from(Buffer.from(uri.slice('data:image/png;base64,'.length), 'base64'));
  const v = new DataView(bytes.buffer);
  const width = v.getUint32(16);
  const height = v.getUint32(20);
  expect([bytes[24], bytes[25]]).toEqual([8, 2]); // 8 bits, RGB
  const idat: number[] = [];
  for (let o = 8; o < bytes.length; ) {
    const len = v.getUint32(o);
    if (String.fromCharCode(...bytes.subarray(o + 4, o + 8)) === 'IDAT') idat.push(...bytes.subarray(o + 8, o + 8 + len));
    o += 12 + len;
  }
  const raw = unzlibSync(Uint8Array.from(idat));
  const stride = width * 3 + 1;
  return {
    width,
    height,
    at: (x, y) => {
      expect(raw[y * stride]).toBe(0);
      const i = y * stride + 1 + x * 3;
      return [raw[i]!, raw[i + 1]!, raw[i + 2]!];
    },
  };
}

describe('masked entries', () => {
  it('are blank in every cell (the recorded causal mask), and rows with one possible key name no pair', () => {
    const t = handTrace(['▁a', '▁b', '▁c', '▁d'], { layers: 1, heads: 2 });
    t.scores = { self: { scale: [0.5], causal: true, window: [null] } };
    const L = modelViewLayout(t);
    const mask = L.cells[0]!.matrix.masked!;
    // Row q sees keys 0…q: masked above the diagonal.
    expect(Array.from(mask)).toEqual([0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
    expect(L.note).toContain('blank: masked');
    expect(L.cells[0]!.pairs.every((p) => p.q > 0)).toBe(true);
    const root = parseXml(renderModelView(t, { theme: 'light' }));
    const img = findAll(root, 'image')[0]!;
    const px = pngPixels(img.attrs.href!);
    expect([px.width, px.height]).toEqual([4, 4]);
    expect(px.at(3, 0)).toEqual([255, 255, 255]); // masked: the light background #ffffff
    expect(px.at(0, 3)).not.toEqual([255, 255, 255]);
  });
});

describe('wrapping figure text', () => {
  // textWidth: 'a'…'z' (except narrow and wide ones) are 0.62 em; at font size 10 a 10-letter word is 62 px.
  it('breaks between " · " parts first, then at spaces, then inside a word too long for a line', () => {
    expect(wrapText('aaaa · bbbb · cccc', 10, 1000)).toEqual(['aaaa · bbbb · cccc']);
    // "aaaa · bbbb" = 4 + 3 + 4 characters; the middle dot and spaces are 0.62 em too: 11 × 6.2 = 68.2 px.
    expect(wrapText('aaaa · bbbb · cccc', 10, 70)).toEqual(['aaaa · bbbb', 'cccc']);
    expect(wrapText('aaaa bbbb cccc', 10, 60)).toEqual(['aaaa bbbb', 'cccc']);
    expect(wrapText('aaaaaaaaaaaaaaaaaaaa', 10, 62)).toEqual(['aaaaaaaaaa', 'aaaaaaaaaa']);
    expect(wrapText('', 10, 50)).toEqual(['']);
  });

  it('a title as wide as the figure allows stays on one line', () => {
    const t = handTrace(TOKENS, { layers: 1, heads: 2 });
    const L = modelViewLayout(t);
    expect(L.items.filter((it) => it.className === 'view-title')).toHaveLength(1);
  });
});

describe('downsampling cells', () => {
  it('averages the unmasked entries a pixel covers; a pixel of masked entries only is blank', () => {
    // 4 × 4 values 0…15, masked above the diagonal, to 2 × 2 pixels:
    // (0,0): 0, 4, 5 → 3; (0,1): all masked; (1,0): 8, 9, 12, 13 → 10.5; (1,1): 10, 14, 15 → 13.
    const values = Float32Array.from({ length: 16 }, (_, i) => i);
    const masked = Uint8Array.from({ length: 16 }, (_, i) => (i % 4 > Math.floor(i / 4) ? 1 : 0));
    const d = downsample(values, 0, 4, 4, 2, 2, masked);
    expect([d.width, d.height]).toEqual([2, 2]);
    expect(Array.from(d.mean)).toEqual([3, 0, 10.5, 13]);
    expect(Array.from(d.blank)).toEqual([0, 1, 0, 0]);
    // Without a mask, at full size, the values themselves.
    expect(Array.from(downsample(values, 0, 4, 4, 10, 10).mean)).toEqual(Array.from(values));
  });
});
