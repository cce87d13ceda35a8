/**
 * Where the page's views read attention: one AttentionSource per (trace, stack), kept (an
 * on-demand source keeps scratch buffers). A dense trace reads its probabilities; a trace that
 * keeps queries, keys and score terms instead computes any block on demand
 * (src/core/attention-on-demand.ts). `registerSource` lets a loader supply another source. Views
 * call `isLongPage` to pick their long-input path (tiles, streamed thumbnails, top-k lines), which
 * reads attention a block at a time and never a whole layer.
 */
import { attentionSource, attentionStacks } from '../src/core/attention-on-demand.js';
import type { AttentionSource } from '../src/core/attention-source.js';
import type { StackName, Trace } from '../src/core/trace.js';
import { isLongSource } from '../src/views/layout/heatmap-tiles.js';
import { type DisplayToken, displayTokens, stackTokens } from '../src/views/tokens.js';

const sources = new WeakMap<Trace, Map<StackName, AttentionSource>>();
/** The dense stack each cached source was made over (a streamed trace replaces its stacks as layers arrive). */
const basis = new WeakMap<AttentionSource, unknown>();
const tokens = new WeakMap<Trace, Map<StackName, { query: DisplayToken[]; key: DisplayToken[] }>>();
/** The trace each source the page made reads (the long views' worker is sent its queries and keys). */
const traces = new WeakMap<AttentionSource, Trace>();

/** Gives a trace's stack its attention source (a loader of on-demand traces calls this before the views read it). */
export function registerSource(trace: Trace, source: AttentionSource): void {
  (sources.get(trace) ?? sources.set(trace, new Map()).get(trace)!).set(source.stack, source);
}

/** The attention source of a trace's stack: the registered one, else the trace's own (dense or on demand). */
export function pageSource(trace: Trace, stack: StackName): AttentionSource {
  const known = sources.get(trace)?.get(stack);
  if (known && (!basis.has(known) || basis.get(known) === trace.attention[stack])) return known;
  const source = attentionSource(trace, stack);
  basis.set(source, trace.attention[stack]);
  traces.set(source, trace);
  registerSource(trace, source);
  return source;
}

/** The trace a source made by `pageSource` reads (undefined for other sources). */
export function sourceTrace(source: AttentionSource): Trace | undefined {
  return traces.get(source);
}

/** The stacks with attention, dense or on demand. */
export function pageStacks(trace: Trace): StackName[] {
  const known = [...(sources.get(trace)?.keys() ?? [])];
  return (['self', 'encoder', 'decoder', 'cross'] as const).filter((s) => known.includes(s) || attentionStacks(trace).includes(s));
}

/** Whether a stack is read in blocks (long or on demand). */
export function isLongPage(trace: Trace, stack: StackName): boolean {
  try {
    return isLongSource(pageSource(trace, stack));
  } catch {
    return false;
  }
}

/** The stack's query and key tokens as the page labels them, without transforms (long inputs are shown token by token). */
export function pageTokens(trace: Trace, stack: StackName): { query: DisplayToken[]; key: DisplayToken[] } {
  const known = tokens.get(trace)?.get(stack);
  if (known) return known;
  const { queryTokens, keyTokens } = stackTokens(trace, stack);
  const query = displayTokens(queryTokens, trace.model.modelType);
  const key = keyTokens === queryTokens ? query : displayTokens(keyTokens, trace.model.modelType);
  const out = { query, key };
  (tokens.get(trace) ?? tokens.set(trace, new Map()).get(trace)!).set(stack, out);
  return out;
}

/**
 * The switch a view makes between its dense form (whole matrices) and its long form (blocks read
 * from the source: tiles, streamed thumbnails), shared by the heatmap and the model view. `form`
 * says which form the stack needs and, when it changed since the last call, lets the view swap its
 * elements first (`enter`).
 */
export class LongDenseHost {
  /** The form shown now (every view starts dense). */
  long = false;

  constructor(private readonly enter: (long: boolean) => void) {}

  /** True when the stack is read in blocks; calls `enter(long)` once per change of form. */
  form(trace: Trace, stack: StackName): boolean {
    const long = isLongPage(trace, stack);
    if (long !== this.long) {
      this.long = long;
      this.enter(long);
    }
    return long;
  }
}
