/** Controls several views share. */
import type { StackName } from '../../src/core/trace.js';
import { firstGeneratedBoundary } from '../../src/views/svg/common.js';
import type { DisplayStack } from '../../src/views/tokens.js';
import type { Ctx } from '../context.js';
import type { MatrixGridOptions } from '../matrix.js';
import { select } from '../dom.js';
import { stackAxes } from '../../src/views/layout/common.js';

export function layerSelect(ctx: Ctx, testid: string): HTMLLabelElement {
  const n = ctx.numLayers();
  return select(testid, 'layer', Array.from({ length: n }, (_, l) => ({ value: l, label: String(l) })), ctx.state.layer, (layer) => ctx.set({ layer }));
}

export function headSelect(ctx: Ctx, testid: string, value: number, onChange: (h: number) => void, label = 'head'): HTMLLabelElement {
  const n = ctx.numHeads();
  return select(testid, label, Array.from({ length: n }, (_, hd) => ({ value: hd, label: ctx.headLabel(hd) })), value, onChange);
}

/** Column / axis names: queries and keys, or decoder and encoder tokens for cross attention (layout/common's wording). */
export function stackHeaders(stack: StackName): [string, string] {
  const a = stackAxes(stack);
  return [a.query, a.key];
}

/**
 * What a MatrixGrid needs to know about a display stack's tokens, as the page shows them: labels
 * (prettified or raw), special and generated flags, generation marks, sentence segments and
 * token tooltips. Shared by the heatmap and the model view's opened cell.
 */
export function gridTokenOptions(ctx: Ctx, ds: DisplayStack): Pick<MatrixGridOptions, 'labels' | 'marks' | 'querySegments' | 'keySegments' | 'queryTips' | 'keyTips'> {
  return {
    labels: {
      query: ds.queryTokens.map((t) => ctx.label(t)),
      key: ds.keyTokens.map((t) => ctx.label(t)),
      querySpecial: ds.queryTokens.map((t) => t.special),
      keySpecial: ds.keyTokens.map((t) => t.special),
      queryGenerated: ds.queryTokens.map((t) => t.generated),
      keyGenerated: ds.keyTokens.map((t) => t.generated),
    },
    marks: { queryBoundary: firstGeneratedBoundary(ds.queryTokens), keyBoundary: firstGeneratedBoundary(ds.keyTokens), newest: ds.newest },
    querySegments: ds.queryTokens.map((t) => t.segment),
    keySegments: ds.keyTokens.map((t) => t.segment),
    queryTips: ds.queryTokens.map((t, i) => `query ${i}: ${ctx.tokenTip('query', t)}`),
    keyTips: ds.keyTokens.map((t, i) => `key ${i}: ${ctx.tokenTip('key', t)}`),
  };
}

/** A head as a figure names it, with the layer. */
export interface HeadRef {
  layer: number;
  head: number;
}

/**
 * Wires a figure of heads (elements carrying data-layer / data-head, e.g. the clusters scatter and
 * the head-type grid): a click opens that head's heatmap, moving over one reports it to `hover`
 * (null when the pointer leaves the heads).
 */
export function wireHeadPicks(ctx: Ctx, wrap: HTMLElement, hover: (head: HeadRef | null, e?: PointerEvent) => void): void {
  const headAt = (target: EventTarget | null): HeadRef | null => {
    const el = (target as Element | null)?.closest('[data-layer][data-head]');
    return el ? { layer: Number(el.getAttribute('data-layer')), head: Number(el.getAttribute('data-head')) } : null;
  };
  wrap.addEventListener('click', (e) => {
    const picked = headAt(e.target);
    if (picked) ctx.set({ view: 'heatmap', layer: picked.layer, heatmapMode: 'head', heatmapHead: picked.head });
  });
  wrap.addEventListener('pointermove', (e) => hover(headAt(e.target), e));
  wrap.addEventListener('pointerleave', () => hover(null));
}
