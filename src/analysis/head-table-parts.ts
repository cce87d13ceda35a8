/**
 * A head table computed in parts, one per range of layers, each part a plain message that another
 * thread can take (a Node worker thread, a page's Web Worker): `headTableParts` cuts a trace into
 * such messages (only the layers a part reads, copied into buffers of their own so they can be
 * transferred), `runHeadTablePart` computes one, and the tables of the parts, concatenated in
 * order, are the model's table (head-types.ts `headTable` with `layers`: a layer's values do not
 * depend on the range that holds it; every part reads the first layer for js_from_first).
 *
 * Isomorphic: the threads themselves are the caller's (src/runtime/head-table-threads.ts in Node,
 * web/metrics-worker.ts in the page).
 */
import type { ModelInfo, StackName, Token, Trace } from '../core/trace.js';
import { type HeadTableOptions, type HeadTableRow, headTable, headTableRanges } from './head-types.js';
import { defaultStack } from './head-metrics.js';

/** What a part's thread gets: the stack's layers it reads and the token data the table needs. */
export interface HeadTablePart {
  stack: StackName;
  dims: [number, number, number];
  /** Layer count of the stack. */
  numLayers: number;
  /** The layers the part reads (its range, and layer 0 when js_from_first is computed), and their data. */
  layerIndex: number[];
  layers: Float32Array[];
  tokens: Token[];
  decoderTokens?: Token[];
  /** The stack's masks (support of the rows): causal and sliding window per layer. */
  masks?: { causal: boolean; window: (number | null)[] };
  model: ModelInfo;
  /** The table's options (no functions), with the part's layer range. */
  options: PartOptions & { layers: { from: number; to: number } };
}

/** The table's options a part can carry (no functions: a part is a message). */
export type PartOptions = Omit<HeadTableOptions, 'onLayer' | 'beforeLayer' | 'layers'>;

/**
 * The trace cut into `parts` messages of nearly equal cost (headTableRanges; fewer when the stack
 * has fewer layers). Each message owns copies of its layers (transfer their buffers).
 */
export function headTableParts(trace: Trace, stackName: StackName | undefined, options: PartOptions, parts: number, copy = true): HeadTablePart[] {
  const stack = stackName ?? defaultStack(trace);
  const s = trace.attention[stack];
  if (!s) throw new Error(`the trace has no '${stack}' attention`);
  const wantJs = !options.omit?.includes('js_from_first');
  return headTableRanges(s.layers.length, parts, wantJs).map((range) => headTablePart(trace, stack, options, range, copy));
}

/**
 * The message of one layer range (its layers, and layer 0 when js_from_first is computed: copies,
 * or with `copy` false the trace's own arrays, for a caller that copies them one at a time).
 */
export function headTablePart(trace: Trace, stack: StackName, options: PartOptions, range: { from: number; to: number }, copy = true): HeadTablePart {
  const s = trace.attention[stack];
  if (!s) throw new Error(`the trace has no '${stack}' attention`);
  const wantJs = !options.omit?.includes('js_from_first');
  const terms = trace.scores?.[stack];
  const layerIndex: number[] = [];
  if (wantJs && range.from > 0) layerIndex.push(0);
  for (let l = range.from; l < range.to; l++) layerIndex.push(l);
  return {
    stack,
    dims: [...s.dims],
    numLayers: s.layers.length,
    layerIndex,
    layers: layerIndex.map((l) => (copy ? s.layers[l]!.slice() : s.layers[l]!)),
    tokens: trace.tokens,
    decoderTokens: trace.decoderTokens,
    masks: terms ? { causal: terms.causal, window: terms.window } : undefined,
    model: trace.model,
    options: { ...options, layers: range },
  };
}

/** The buffers of a part's layers (to transfer with it). */
export function headTablePartBuffers(part: HeadTablePart): ArrayBuffer[] {
  return part.layers.map((l) => l.buffer as ArrayBuffer);
}

/**
 * The head table of one part (the rows of its layer range), calling `onLayer` as each layer is done.
 * `ready(i)`, where given, is called before the table first reads the part's i-th layer (its data may
 * still be arriving: a caller that streams the layers in waits there until that one is in).
 */
export function runHeadTablePart(part: HeadTablePart, onLayer?: (rows: HeadTableRow[]) => void, ready?: (i: number) => void): HeadTableRow[] {
  const empty = new Float32Array(0);
  const layers: Float32Array[] = Array.from({ length: part.numLayers }, () => empty);
  const position = new Int32Array(part.numLayers).fill(-1);
  part.layerIndex.forEach((l, i) => {
    layers[l] = part.layers[i]!;
    position[l] = i;
  });
  // headTable calls beforeLayer(l) before it first reads layer l: the part's i-th layer.
  const beforeLayer = ready
    ? (l: number): void => {
        const i = position[l] ?? -1;
        if (i < 0) throw new Error(`head table part: layer ${l} is not among the part's layers (${part.layerIndex.join(', ')})`);
        ready(i);
      }
    : undefined;
  const trace: Trace = {
    model: part.model,
    tokens: part.tokens,
    decoderTokens: part.decoderTokens,
    attention: { [part.stack]: { dims: part.dims, layers } },
    scores: part.masks ? { [part.stack]: { scale: [], causal: part.masks.causal, window: part.masks.window } } : undefined,
  };
  return headTable(trace, part.stack, { ...part.options, onLayer, beforeLayer });
}
