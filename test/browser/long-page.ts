/**
 * What the browser tests of long traces' pages share (long-views, long-worker): a weight computed
 * in float64 from the trace's queries and keys, independently of the page's kernel, and a hover
 * over one cell of the tiled heatmap that reads the weight the page shows there.
 */
import type { Page } from 'playwright-core';
import { expect } from 'vitest';
import type { Trace } from '../../src/core/trace.js';
import { numericData } from './harness.js';

/**
 * Weight of query i on key j in (layer, head) of a causal self-attention trace with per-layer
 * windows: softmax of q·k·scale over the visible keys, in float64 from the trace's float32 q and k.
 */
export function referenceWeight(t: Trace, layer: number, head: number, i: number, j: number): number {
  const N = t.tokens.length;
  const q = t.queries!.self!;
  const k = t.keys!.self!;
  const terms = t.scores!.self!;
  const d = q.dims[2];
  const window = terms.window[layer] ?? null;
  const lo = window === null ? 0 : Math.max(0, i - window + 1);
  if (j > i || j < lo) return 0;
  const Q = q.layers[layer]!;
  const K = k.layers[layer]!;
  const score = (jj: number) => {
    let s = 0;
    for (let x = 0; x < d; x++) s += Q[(head * N + i) * d + x]! * K[(head * N + jj) * d + x]!;
    return s * terms.scale[layer]!;
  };
  let m = -Infinity;
  for (let jj = lo; jj <= i; jj++) m = Math.max(m, score(jj));
  let den = 0;
  for (let jj = lo; jj <= i; jj++) den += Math.exp(score(jj) - m);
  return Math.exp(score(j) - m) / den;
}

const TILES = '[data-testid=heatmap-tiles]';

/** Moves the pointer over cell (q, k) of the tiled heatmap (it must be in view); the weight the readout shows. */
export async function hoverTileCell(page: Page, q: number, k: number): Promise<number> {
  const g = await numericData(page, TILES);
  await page.locator(TILES).hover({ position: { x: g.originX! + (k + 0.5 - g.viewX!) * g.scale!, y: g.originY! + (q + 0.5 - g.viewY!) * g.scale! }, force: true });
  await expect.poll(() => page.getAttribute('[data-testid=heatmap-readout]', 'data-q')).toBe(String(q));
  expect(await page.getAttribute('[data-testid=heatmap-readout]', 'data-k')).toBe(String(k));
  return Number(await page.getAttribute('[data-testid=heatmap-readout]', 'data-value'));
}
