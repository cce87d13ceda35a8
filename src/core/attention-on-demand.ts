/**
 * Attention computed on demand from the queries and keys a trace keeps and the score terms the
 * model recorded (Trace.scores): for head h of layer l, query i and key j,
 *
 *   s[i, j] = (q_i · k_j) · scale[l] + bias[l][h, i, j]        (bias absent: 0)
 *   p[i, ·] = softmax over the keys that are not masked (causal: j ≤ i; window w: i − j < w)
 *
 * with masked cells exactly 0, as the model's own softmax makes them. The dot products, the scores
 * and the softmax are computed in float64 and rounded to float32 once, so a block differs from the
 * model's float32 attention by the model's own rounding (≤ ~1e-6 on every fixture).
 *
 * A block needs every unmasked score of its rows (the softmax normalises over the whole row) even
 * when only a few columns are asked for; rows are computed four at a time against two keys at a time
 * (the keys of the head converted to float64 once and kept while the same head is read) into
 * scratch buffers the source keeps.
 *
 * Two implementations of the same arithmetic: a WebAssembly SIMD kernel (core/wasm/attention-kernel.ts;
 * f64x2 lanes, exact products of the float32 values, float64 sums and exponentials, one rounding to
 * float32), used where WebAssembly runs, and these JavaScript loops where it does not (a page whose
 * Content-Security-Policy refuses WebAssembly). Both give the float64 softmax rounded to float32
 * (test/on-demand-kernel.test.ts).
 *
 * Isomorphic: imports nothing from Node.
 */
import { checkedAttentionSource, denseAttentionSource, type AttentionSource } from './attention-source.js';
import { AttnscopeError } from './errors.js';
import { biasRows, checkScoreBias } from './position-bias.js';
import type { LayerStack, ScoreTerms, StackName, Trace } from './trace.js';
import { AttentionKernel, attentionKernelStatus } from './wasm/attention-kernel.js';

/** Rows computed together (each key vector is read once per group). */
const GROUP = 4;

/**
 * Which implementation computes blocks: 'auto' (default) the WebAssembly kernel where it runs, else
 * JavaScript; 'wasm' the kernel (an error where it cannot run); 'js' the JavaScript loops.
 */
export type OnDemandKernel = 'auto' | 'wasm' | 'js';

export interface OnDemandOptions {
  kernel?: OnDemandKernel;
}

/** The kernel a source would use with `kernel` ('wasm' or 'js'), for readouts and benches. */
export function onDemandKernel(kernel: OnDemandKernel = 'auto'): 'wasm' | 'js' {
  if (kernel === 'js') return 'js';
  const status = attentionKernelStatus();
  if (status.available) return 'wasm';
  if (kernel === 'wasm') throw new AttnscopeError(`attention on demand: the WebAssembly kernel cannot run here (${status.reason}); use kernel 'auto' or 'js'`);
  return 'js';
}

/**
 * An AttentionSource that computes the probabilities of `stack` from its queries
 * [heads, queries, headDim], keys [kvHeads, keys, headDim] (grouped-query heads: query head h reads
 * key head ⌊h·kvHeads/heads⌋) and score terms. Nothing is precomputed: each `block` call computes
 * its rows. Throws one clear line when the shapes do not fit together.
 */
export function queryKeyAttentionSource(stack: StackName, queries: LayerStack, keys: LayerStack, terms: ScoreTerms, options: OnDemandOptions = {}): AttentionSource {
  const [numHeads, numQueries, headDim] = queries.dims;
  const [kvHeads, numKeys, keyDim] = keys.dims;
  const numLayers = queries.layers.length;
  const where = `'${stack}' stack`;
  if (keys.layers.length !== numLayers) throw new AttnscopeError(`${where}: ${numLayers} layers of queries but ${keys.layers.length} of keys`);
  if (keyDim !== headDim || kvHeads < 1 || numHeads % kvHeads !== 0) {
    throw new AttnscopeError(`${where}: queries [${queries.dims.join(', ')}] and keys [${keys.dims.join(', ')}] do not fit (same head size; heads a multiple of key heads)`);
  }
  if (terms.scale.length !== numLayers || terms.window.length !== numLayers) {
    throw new AttnscopeError(`${where}: score terms have ${terms.scale.length} scales and ${terms.window.length} windows for ${numLayers} layers`);
  }
  // The bias: dense, one row broadcast over the queries (ALiBi) or a vector over j − i (T5), read as rows.
  checkScoreBias(terms, numLayers, numHeads, numQueries, numKeys, where);
  for (let l = 0; l < numLayers; l++) {
    const q = queries.layers[l]!;
    const k = keys.layers[l]!;
    if (q.length !== numHeads * numQueries * headDim || k.length !== kvHeads * numKeys * headDim) {
      throw new AttnscopeError(`${where}: layer ${l}'s queries or keys have ${q.length} / ${k.length} values, not [${queries.dims.join(', ')}] / [${keys.dims.join(', ')}]`);
    }
    const w = terms.window[l];
    if (w !== null && w !== undefined && !(Number.isInteger(w) && w >= 1)) throw new AttnscopeError(`${where}: layer ${l}'s sliding window ${String(w)} is not a positive integer`);
  }
  const causal = terms.causal;
  const kernelKind = options.kernel ?? 'auto';
  if (kernelKind !== 'auto' && kernelKind !== 'wasm' && kernelKind !== 'js') throw new AttnscopeError(`attention on demand: kernel '${String(kernelKind)}' is not one of auto, wasm, js`);
  // The WebAssembly kernel's instance, made on the first block (null: the JavaScript loops).
  let kernel: AttentionKernel | null | undefined;
  const kernelOf = (): AttentionKernel | null => {
    if (kernel === undefined) kernel = onDemandKernel(kernelKind) === 'wasm' ? AttentionKernel.create() : null;
    if (kernel === null && kernelKind === 'wasm') throw new AttnscopeError(`attention on demand: the WebAssembly kernel cannot run here (${attentionKernelStatus().reason})`);
    return kernel;
  };
  // Scores of a group of rows, each over every key (GROUP × numKeys).
  let scratch = new Float64Array(0);
  // A group's query rows, interleaved (qi[GROUP·t + r]).
  const qi = new Float64Array(GROUP * headDim);
  // The keys of the last (layer, key head) read, as float64 (no conversion in the inner loop).
  let cached = { layer: -1, kvHead: -1, keys: new Float64Array(0) };
  const keysAsFloat64 = (layer: number, kvHead: number): Float64Array => {
    if (cached.layer !== layer || cached.kvHead !== kvHead) {
      const from = kvHead * numKeys * headDim;
      cached = { layer, kvHead, keys: Float64Array.from(keys.layers[layer]!.subarray(from, from + numKeys * headDim)) };
    }
    return cached.keys;
  };

  return checkedAttentionSource({ stack, numLayers, numHeads, numQueries, numKeys, onDemand: true }, (layer, head, r0, r1, c0, c1) => {
    const width = c1 - c0;
    if (width === 0 || r1 === r0) return new Float32Array((r1 - r0) * width);
    const wasm = kernelOf();
    if (wasm) {
      const kvHead = Math.floor((head * kvHeads) / numHeads);
      const br = biasRows(terms, layer, head, numQueries, numKeys);
      return wasm.block(
        {
          queries: queries.layers[layer]!,
          qa: head * numQueries * headDim,
          keys: keys.layers[layer]!.subarray(kvHead * numKeys * headDim, (kvHead + 1) * numKeys * headDim),
          keysId: `${layer}:${kvHead}`,
          headDim,
          numKeys,
          scale: terms.scale[layer]!,
          causal,
          window: terms.window[layer] ?? 0,
          bias: br ? br.data : null,
          ba: br ? br.base : 0,
          bs: br ? br.stride : numKeys,
        },
        r0, r1, c0, c1,
      );
    }
    const out = new Float32Array((r1 - r0) * width);
    if (scratch.length < GROUP * numKeys) scratch = new Float64Array(GROUP * numKeys);
    const s = scratch;
    const q = queries.layers[layer]!;
    const scale = terms.scale[layer]!;
    const window = terms.window[layer] ?? null;
    const br = biasRows(terms, layer, head, numQueries, numKeys);
    const b = br ? br.data : null;
    const bBase = br ? br.base : 0;
    const bStride = br ? br.stride : 0;
    const kvHead = Math.floor((head * kvHeads) / numHeads);
    const kf = keysAsFloat64(layer, kvHead);
    // Keys row i sees: [lo(i), hi(i)).
    const lo = (i: number): number => (window === null ? 0 : Math.max(0, i - window + 1));
    const hi = (i: number): number => (causal ? Math.min(numKeys, i + 1) : numKeys);
    for (let i0 = r0; i0 < r1; i0 += GROUP) {
      const n = Math.min(GROUP, r1 - i0);
      // lo and hi grow with i: the group's union of keys is [lo(i0), hi(last row)).
      const jLo = lo(i0);
      const jHi = hi(i0 + n - 1);
      const qa = (head * numQueries + i0) * headDim;
      if (n === GROUP) {
        for (let r = 0; r < GROUP; r++) for (let t = 0; t < headDim; t++) qi[t * GROUP + r] = q[qa + r * headDim + t]!;
        dots4(qi, headDim, kf, jLo, jHi, s, numKeys);
      } else {
        for (let r = 0; r < n; r++) dots1(q, qa + r * headDim, headDim, kf, jLo, jHi, s, r * numKeys);
      }
      for (let r = 0; r < n; r++) {
        const i = i0 + r;
        const a = lo(i);
        const e = hi(i);
        if (e <= a) continue;
        const row = r * numKeys;
        const bRow = bBase + i * bStride;
        let max = Number.NEGATIVE_INFINITY;
        for (let j = a; j < e; j++) {
          const v = b === null ? s[row + j]! * scale : s[row + j]! * scale + b[bRow + j]!;
          s[row + j] = v;
          if (v > max) max = v;
        }
        let sum = 0;
        for (let j = a; j < e; j++) {
          const x = Math.exp(s[row + j]! - max);
          s[row + j] = x;
          sum += x;
        }
        const inv = 1 / sum;
        const from = Math.max(a, c0);
        const to = Math.min(e, c1);
        const o = (i - r0) * width - c0;
        for (let j = from; j < to; j++) out[o + j] = s[row + j]! * inv;
      }
    }
    return out;
  });
}

/** One query row (float32, at q[qa…]) against keys [jLo, jHi) of kf (float64, row j at j·d): s[row + j]. */
function dots1(q: Float32Array, qa: number, d: number, kf: Float64Array, jLo: number, jHi: number, s: Float64Array, row: number): void {
  const d4 = d - (d % 4);
  for (let j = jLo; j < jHi; j++) {
    const kb = j * d;
    let a0 = 0;
    let a1 = 0;
    let a2 = 0;
    let a3 = 0;
    let t = 0;
    for (; t < d4; t += 4) {
      a0 += q[qa + t]! * kf[kb + t]!;
      a1 += q[qa + t + 1]! * kf[kb + t + 1]!;
      a2 += q[qa + t + 2]! * kf[kb + t + 2]!;
      a3 += q[qa + t + 3]! * kf[kb + t + 3]!;
    }
    for (; t < d; t++) a0 += q[qa + t]! * kf[kb + t]!;
    s[row + j] = a0 + a1 + (a2 + a3);
  }
}

/**
 * Four query rows, interleaved in qi (qi[4t + r] = q_r[t], float64), against keys [jLo, jHi) of kf,
 * two keys per pass (six loads for eight products): rows 0–3 of s (stride `stride`).
 */
function dots4(qi: Float64Array, d: number, kf: Float64Array, jLo: number, jHi: number, s: Float64Array, stride: number): void {
  const s1 = stride;
  const s2 = 2 * stride;
  const s3 = 3 * stride;
  let j = jLo;
  for (; j + 1 < jHi; j += 2) {
    const kb = j * d;
    const kc = kb + d;
    let a0 = 0;
    let a1 = 0;
    let a2 = 0;
    let a3 = 0;
    let b0 = 0;
    let b1 = 0;
    let b2 = 0;
    let b3 = 0;
    for (let t = 0, p = 0; t < d; t++, p += 4) {
      const x = kf[kb + t]!;
      const y = kf[kc + t]!;
      const u0 = qi[p]!;
      const u1 = qi[p + 1]!;
      const u2 = qi[p + 2]!;
      const u3 = qi[p + 3]!;
      a0 += u0 * x;
      a1 += u1 * x;
      a2 += u2 * x;
      a3 += u3 * x;
      b0 += u0 * y;
      b1 += u1 * y;
      b2 += u2 * y;
      b3 += u3 * y;
    }
    s[j] = a0;
    s[s1 + j] = a1;
    s[s2 + j] = a2;
    s[s3 + j] = a3;
    s[j + 1] = b0;
    s[s1 + j + 1] = b1;
    s[s2 + j + 1] = b2;
    s[s3 + j + 1] = b3;
  }
  if (j < jHi) {
    const kb = j * d;
    let a0 = 0;
    let a1 = 0;
    let a2 = 0;
    let a3 = 0;
    for (let t = 0, p = 0; t < d; t++, p += 4) {
      const x = kf[kb + t]!;
      a0 += qi[p]! * x;
      a1 += qi[p + 1]! * x;
      a2 += qi[p + 2]! * x;
      a3 += qi[p + 3]! * x;
    }
    s[j] = a0;
    s[s1 + j] = a1;
    s[s2 + j] = a2;
    s[s3 + j] = a3;
  }
}

/** True when the trace can give `stack`'s attention: its probabilities, or queries, keys and score terms. */
export function hasAttentionSource(trace: Trace, stack: StackName): boolean {
  return trace.attention[stack] !== undefined || (trace.queries?.[stack] !== undefined && trace.keys?.[stack] !== undefined && trace.scores?.[stack] !== undefined);
}

/** The stacks whose attention the trace can give, in the order self, encoder, decoder, cross. */
export function attentionStacks(trace: Trace): StackName[] {
  return (['self', 'encoder', 'decoder', 'cross'] as const).filter((s) => hasAttentionSource(trace, s));
}

/**
 * The attention of one stack of a trace: the dense probabilities when the trace holds them,
 * otherwise computed on demand from its queries, keys and score terms. One clear line when it
 * has neither.
 */
export function attentionSource(trace: Trace, stack: StackName, options: OnDemandOptions = {}): AttentionSource {
  const dense = trace.attention[stack];
  if (dense) return denseAttentionSource(stack, dense);
  const q = trace.queries?.[stack];
  const k = trace.keys?.[stack];
  const terms = trace.scores?.[stack];
  if (q && k && terms) return queryKeyAttentionSource(stack, q, k, terms, options);
  const has = attentionStacks(trace);
  throw new AttnscopeError(
    `the trace has no '${stack}' attention (neither probabilities nor queries, keys and score terms)${has.length > 0 ? `; it has: ${has.join(', ')}` : ''}`,
  );
}

/** What `withAttentionLayers` lets the computed layers of one trace hold at most (float32 bytes). */
export const LAYERS_ON_DEMAND_BUDGET_BYTES = 2 ** 30;

/** The bytes held so far by the computed layers of one trace (shared by its stacks). */
interface LayerBudget {
  held: number;
  readonly limit: number;
}

const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(bytes < 2 ** 30 ? 2 : 1)} GiB`;

/**
 * A LayerStack over an AttentionSource whose layers (every head) are computed the first time they
 * are read and then kept, so code written for dense traces (views, analyses) works on a trace kept
 * as queries and keys while holding only the layers it reads. A layer that would bring what the
 * trace holds over the budget is refused in one line.
 */
export function layersOnDemand(source: AttentionSource, budget: LayerBudget = { held: 0, limit: LAYERS_ON_DEMAND_BUDGET_BYTES }): LayerStack {
  const { numLayers, numHeads, numQueries, numKeys } = source;
  const per = numQueries * numKeys;
  const layers: Float32Array[] = new Array<Float32Array>(numLayers);
  const compute = (l: number): Float32Array => {
    const bytes = numHeads * per * 4;
    if (budget.held + bytes > budget.limit) {
      throw new AttnscopeError(
        `layer ${l} of the '${source.stack}' attention (${numHeads} heads × ${numQueries} × ${numKeys}, ${gib(bytes)}) would bring the attention computed on demand to more than ${gib(budget.limit)}; this view reads whole layers: use a shorter input, or a view that reads blocks (attnscope view: the heatmap)`,
      );
    }
    const out = new Float32Array(numHeads * per);
    for (let h = 0; h < numHeads; h++) out.set(source.block(l, h, 0, numQueries, 0, numKeys), h * per);
    budget.held += bytes;
    return out;
  };
  for (let l = 0; l < numLayers; l++) {
    Object.defineProperty(layers, l, {
      enumerable: true,
      configurable: true,
      get(): Float32Array {
        const value = compute(l);
        Object.defineProperty(layers, l, { value, enumerable: true, writable: false, configurable: false });
        return value;
      },
    });
  }
  return { dims: [numHeads, numQueries, numKeys], layers };
}

/**
 * The trace with every stack it keeps as queries and keys given `attention` layers computed on first
 * read (layersOnDemand; all stacks share `budgetBytes`). A trace with dense attention comes back as it is.
 */
export function withAttentionLayers(trace: Trace, budgetBytes = LAYERS_ON_DEMAND_BUDGET_BYTES): Trace {
  const lazy = attentionStacks(trace).filter((s) => !trace.attention[s]);
  if (lazy.length === 0) return trace;
  const budget: LayerBudget = { held: 0, limit: budgetBytes };
  const attention = { ...trace.attention };
  for (const stack of lazy) attention[stack] = layersOnDemand(attentionSource(trace, stack), budget);
  return { ...trace, attention };
}
