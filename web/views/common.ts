/** Controls several views share. */
import type { StackName } from '../../src/core/trace.js';
import type { Ctx } from '../context.js';
import { select } from '../dom.js';
import { stackAxes } from '../../src/views/layout/common.js';

export function layerSelect(ctx: Ctx, testid: string): HTMLLabelElement {
  const n = ctx.numLayers();
  return select(testid, 'layer', Array.from({ length: n }, (_, l) => ({ value: l, label: String(l) })), ctx.state.layer, (layer) => ctx.set({ layer }));
}

export function headSelect(ctx: Ctx, testid: string, value: number, onChange: (h: number) => void, label = 'head'): HTMLLabelElement {
  const n = ctx.numHeads();
  return select(testid, label, Array.from({ length: n }, (_, hd) => ({ value: hd, label: String(hd) })), value, onChange);
}

/** Column / axis names: queries and keys, or decoder and encoder tokens for cross attention (layout/common's wording). */
export function stackHeaders(stack: StackName): [string, string] {
  const a = stackAxes(stack);
  return [a.query, a.key];
}
