/**
 * The library entry point (src/index.ts) carries the engine, the analyses and the views: a user
 * who imports only 'attnscope' can trace a checkpoint, recompute a head's scores, render every
 * view as SVG/PNG and write the standalone page.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as attnscope from '../src/index.js';
import { FIXTURES, readReference } from './helpers/reference.js';

describe('the library API', () => {
  let model: attnscope.Model;
  let trace: attnscope.Trace;
  beforeAll(async () => {
    model = await attnscope.loadModel(join(FIXTURES, 't5'), { graphCache: false });
    const input = readReference('t5').inputs[0]!;
    const decoderIds = input.decoder_input_ids as number[];
    trace = await model.trace(null, { ids: input.input_ids, decoderIds, qk: true });
  });
  afterAll(async () => {
    await model?.dispose();
  });

  it('recomputes a head from queries, keys and the recorded score terms (T5 position bias included)', () => {
    const terms = trace.scores?.encoder;
    expect(terms?.scale[0]).toBe(1);
    expect(terms?.positionBias?.kind).toBe('relative');
    const att = trace.attention.encoder!;
    const [, nq, nk] = att.dims;
    const s = attnscope.neuronScores(trace, { stack: 'encoder', layer: 1, head: 2, query: nq - 1 });
    const row = att.layers[1]!.subarray((2 * nq + nq - 1) * nk, (2 * nq + nq) * nk);
    for (let k = 0; k < nk; k++) expect(Math.abs(s.softmax[k]! - row[k]!)).toBeLessThan(2e-6);
  });

  it('renders every view as SVG, a PNG and the standalone page', async () => {
    for (const view of attnscope.VIEW_NAMES) {
      const svg = attnscope.renderSvg(view, trace, { stack: 'encoder', layer: 0, head: 0 });
      expect(svg.startsWith('<svg') || svg.startsWith('<?xml'), view).toBe(true);
    }
    const png = attnscope.svgToPng(attnscope.renderHeatmap(trace, { stack: 'cross', layer: 0, head: 1 }));
    expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const page = await attnscope.renderStandaloneHtml(trace, { bundle: await attnscope.loadViewBundle() });
    expect(page.html).toMatch(/^<!doctype html>/i);
    expect(page.bytes).toBe(Buffer.byteLength(page.html));
  });

  it('exports the layouts as data', () => {
    const layout = attnscope.heatmapLayout(trace, { stack: 'encoder', layer: 0, head: 0 });
    expect(layout.items.length).toBeGreaterThan(0);
  });
});
