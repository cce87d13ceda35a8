/**
 * Gradient-based attributions from gradients already computed (by the engine's backward pass, or
 * by PyTorch and stored in a trace file): pure functions of a Trace or of plain arrays, float64
 * accumulation, isomorphic (nothing from Node).
 *
 * Notation: T is the scalar target (Trace.attributions.target), α = A[l][h] a layer's attention
 * probabilities [heads, queries, keys] and ∇A = ∂T/∂α, with α treated as the input of
 * context = α·V (so entries the mask set to 0 may have a gradient; their α is 0).
 *
 * - **Attention × gradient** (per layer and head): α ⊙ ∂T/∂α. Summed over a head's queries and
 *   keys it equals ∂T/∂g of a gate g = 1 on the head's context (Σ_k α_qk ∂T/∂α_qk =
 *   Σ_k α_qk (∂T/∂ctx_q · v_k) = ∂T/∂ctx_q · ctx_q, summed over q), the head importance of
 *   Michel et al. 2019 before |·| and normalisation: `headAttentionGradient`. Per token, summed
 *   over layers, heads and queries (or one query row): `attentionGradientTokenScores`.
 * - **Gradient-weighted rollout** (Chefer, Gur & Wolf, "Generic Attention-model Explainability for
 *   Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021, eqs. 5–11; the gradient
 *   rule of "Transformer Interpretability Beyond Attention Visualization", CVPR 2021, without its
 *   LRP relevance): per layer Ā = mean over heads of (∇A ⊙ A)⁺ (only positive values kept);
 *   self-attention, starting from R = I: R ← R + Ā·R (eqs. 6–7). The relevance of input token j
 *   for the target at position P is R[P, j] (the identity's 1 on P included).
 *   Encoder-decoders (the paper's §3.3, as its DETR code runs it): the encoder's R_ee as above;
 *   decoder R_dd = I, R_de = 0 (decoder rows × encoder columns); in each decoder block, self
 *   attention Ā_dd: R_dd ← R_dd + Ā_dd·R_dd and R_de ← R_de + Ā_dd·R_de (both from the old
 *   values, eqs. 6–7), then cross attention Ā_de: R_de ← R_de + R̄_ddᵀ · Ā_de · R̄_ee (eq. 10,
 *   with the transpose as printed), where R̄ = (R − I) with each row divided by its sum, plus I
 *   (eqs. 8–9; a row of R − I summing to 0 is left as it is — PyTorch's code makes it NaN and
 *   zeroes the NaNs of the product). The rule R_ee ← R_ee + Ā_de·R_ed (eq. 11) adds nothing here:
 *   the encoder does not read the decoder, so R_ed stays 0. Encoder tokens' relevance for the
 *   target is R_de[P, j], decoder tokens' R_dd[P, j].
 * - **Token-level reductions** of a per-dimension attribution [positions, width]: the sum over the
 *   embedding (gradient × input, integrated gradients: then the scores add up to the attribution's
 *   total) or its L2 norm (gradient saliency).
 * - **Head importance** (Michel, Levy & Neubig 2019, "Are Sixteen Heads Really Better than One?"):
 *   I_h = mean over inputs of |∂T/∂g_h|, each layer divided by its L2 norm (their exponent 2).
 */
import { AttnscopeError } from '../core/errors.js';
import type { AttributionTarget, LayerStack, Matrix, StackMap, StackName, TokenAttribution, Trace } from '../core/trace.js';

/** Checks that a gradient stack has the attention's shape. */
function checkSameShape(attention: LayerStack, gradient: LayerStack, where: string): void {
  const a = attention.dims;
  const g = gradient.dims;
  if (attention.layers.length !== gradient.layers.length || a[0] !== g[0] || a[1] !== g[1] || a[2] !== g[2]) {
    throw new AttnscopeError(`${where}: the gradient is [${gradient.layers.length}, ${g.join(', ')}] but the attention is [${attention.layers.length}, ${a.join(', ')}] (layers, heads, queries, keys)`);
  }
}

/** α ⊙ ∂T/∂α for every layer and head (same layout as the attention). */
export function attentionTimesGradient(attention: LayerStack, gradient: LayerStack): LayerStack {
  checkSameShape(attention, gradient, 'attention × gradient');
  return {
    dims: attention.dims,
    layers: attention.layers.map((a, l) => {
      const g = gradient.layers[l]!;
      const out = new Float32Array(a.length);
      for (let i = 0; i < a.length; i++) out[i] = a[i]! * g[i]!;
      return out;
    }),
  };
}

/**
 * Σ over queries and keys of α ⊙ ∂T/∂α per layer and head, [layers, heads] (float64 sums): the
 * gradient of a gate on the head's context (see the file comment).
 */
export function headAttentionGradient(attention: LayerStack, gradient: LayerStack): Matrix {
  checkSameShape(attention, gradient, 'attention × gradient');
  const [heads, rows, cols] = attention.dims;
  const per = rows * cols;
  const layers = attention.layers.length;
  const data = new Float32Array(layers * heads);
  for (let l = 0; l < layers; l++) {
    const a = attention.layers[l]!;
    const g = gradient.layers[l]!;
    for (let h = 0; h < heads; h++) {
      let sum = 0;
      for (let i = h * per; i < (h + 1) * per; i++) sum += a[i]! * g[i]!;
      data[l * heads + h] = sum;
    }
  }
  return { dims: [layers, heads], data };
}

export interface TokenScoreOptions {
  /** Only this query row (e.g. the target position); default: every query. */
  query?: number;
  /** Layers summed, inclusive (default all). */
  startLayer?: number;
  endLayer?: number;
}

/** Checks an optional layer range against a layer count. */
function rangeOf(numLayers: number, start: number | undefined, end: number | undefined): [number, number] {
  const s = start ?? 0;
  const e = end ?? numLayers - 1;
  const ok = (v: number) => Number.isInteger(v) && v >= 0 && v < numLayers;
  if (!ok(s) || !ok(e) || e < s) throw new AttnscopeError(`layers ${s}–${e}: expected a range within 0–${numLayers - 1}`);
  return [s, e];
}

/**
 * Attention × gradient per key token: Σ over layers, heads and queries (or the one `query`) of
 * α ⊙ ∂T/∂α, float64 sums returned as float32.
 */
export function attentionGradientTokenScores(attention: LayerStack, gradient: LayerStack, options: TokenScoreOptions = {}): Float32Array {
  checkSameShape(attention, gradient, 'attention × gradient');
  const [heads, rows, cols] = attention.dims;
  const [s, e] = rangeOf(attention.layers.length, options.startLayer, options.endLayer);
  const q = options.query;
  if (q !== undefined && !(Number.isInteger(q) && q >= 0 && q < rows)) throw new AttnscopeError(`query ${q} is out of range (0–${rows - 1})`);
  const sums = new Float64Array(cols);
  for (let l = s; l <= e; l++) {
    const a = attention.layers[l]!;
    const g = gradient.layers[l]!;
    for (let h = 0; h < heads; h++) {
      for (let r = q ?? 0; r < (q === undefined ? rows : q + 1); r++) {
        const off = (h * rows + r) * cols;
        for (let k = 0; k < cols; k++) sums[k]! += a[off + k]! * g[off + k]!;
      }
    }
  }
  return Float32Array.from(sums);
}

/** Chefer et al.'s Ā of one layer: mean over heads of max(0, ∂T/∂α ⊙ α), [rows × cols] float64. */
export function gradientWeightedAttention(attention: Float32Array, gradient: Float32Array, heads: number, rows: number, cols: number): Float64Array {
  const per = rows * cols;
  if (attention.length !== heads * per || gradient.length !== heads * per) {
    throw new AttnscopeError(`gradient-weighted attention: expected ${heads} × ${rows} × ${cols} values, got ${attention.length} and ${gradient.length}`);
  }
  const out = new Float64Array(per);
  for (let h = 0; h < heads; h++) {
    const off = h * per;
    for (let i = 0; i < per; i++) {
      const v = attention[off + i]! * gradient[off + i]!;
      if (v > 0) out[i]! += v;
    }
  }
  for (let i = 0; i < per; i++) out[i]! /= heads;
  return out;
}

/** A (r × k) · B (k × c), row-major float64. */
function matmul(a: Float64Array, b: Float64Array, r: number, k: number, c: number): Float64Array {
  const out = new Float64Array(r * c);
  for (let i = 0; i < r; i++) {
    for (let t = 0; t < k; t++) {
      const v = a[i * k + t]!;
      if (v === 0) continue;
      const bo = t * c;
      const oo = i * c;
      for (let j = 0; j < c; j++) out[oo + j]! += v * b[bo + j]!;
    }
  }
  return out;
}

function identity(n: number): Float64Array {
  const m = new Float64Array(n * n);
  for (let i = 0; i < n; i++) m[i * n + i] = 1;
  return m;
}

/**
 * Chefer et al.'s normalisation of a self-relevance matrix (eqs. 8–9): R − I, each row divided by
 * its sum, plus I. A row of R − I summing to 0 is left as it is.
 */
export function normalizeSelfRelevance(r: Float64Array, n: number): Float64Array {
  const out = Float64Array.from(r);
  for (let i = 0; i < n; i++) {
    out[i * n + i]! -= 1;
    let sum = 0;
    for (let j = 0; j < n; j++) sum += out[i * n + j]!;
    if (sum !== 0) for (let j = 0; j < n; j++) out[i * n + j]! /= sum;
    out[i * n + i]! += 1;
  }
  return out;
}

/**
 * Gradient-weighted rollout of one self-attention stack: R = I, then R ← R + Ā_l·R for layers
 * start … end (float64). Row i of R: the relevance of each input token for position i.
 */
export function gradientRollout(attention: LayerStack, gradient: LayerStack, options: { startLayer?: number; endLayer?: number } = {}): Float64Array {
  checkSameShape(attention, gradient, 'gradient rollout');
  const [heads, rows, cols] = attention.dims;
  if (rows !== cols) throw new AttnscopeError(`gradient rollout: a self-attention stack has as many queries as keys (got ${rows} × ${cols})`);
  const [s, e] = rangeOf(attention.layers.length, options.startLayer, options.endLayer);
  let r: Float64Array = identity(rows);
  for (let l = s; l <= e; l++) {
    const a = gradientWeightedAttention(attention.layers[l]!, gradient.layers[l]!, heads, rows, cols);
    const add = matmul(a, r, rows, rows, rows);
    for (let i = 0; i < r.length; i++) add[i]! += r[i]!;
    r = add;
  }
  return r;
}

/**
 * Row `position` of gradientRollout's R without the whole matrix: R = (I + Ā_e)…(I + Ā_s), so its
 * row p is e_pᵀ(I + Ā_e)…(I + Ā_s), a row vector taken through the layers from the last down:
 * v ← v + v·Ā_l. O(layers · n²) instead of O(layers · n³) (512 tokens: milliseconds, not seconds);
 * the same sums in another order (float64).
 */
export function gradientRolloutRow(attention: LayerStack, gradient: LayerStack, position: number, options: { startLayer?: number; endLayer?: number } = {}): Float64Array {
  checkSameShape(attention, gradient, 'gradient rollout');
  const [heads, rows, cols] = attention.dims;
  if (rows !== cols) throw new AttnscopeError(`gradient rollout: a self-attention stack has as many queries as keys (got ${rows} × ${cols})`);
  if (!(Number.isInteger(position) && position >= 0 && position < rows)) throw new AttnscopeError(`gradient rollout: position ${position} is out of range (0–${rows - 1})`);
  const [s, e] = rangeOf(attention.layers.length, options.startLayer, options.endLayer);
  let v = new Float64Array(rows);
  v[position] = 1;
  for (let l = e; l >= s; l--) {
    const a = gradientWeightedAttention(attention.layers[l]!, gradient.layers[l]!, heads, rows, cols);
    const next = Float64Array.from(v);
    for (let i = 0; i < rows; i++) {
      const vi = v[i]!;
      if (vi === 0) continue;
      const o = i * cols;
      for (let j = 0; j < cols; j++) next[j]! += vi * a[o + j]!;
    }
    v = next;
  }
  return v;
}

/** The relevance matrices of an encoder-decoder (see the file comment). */
export interface EncoderDecoderRelevance {
  /** R_ee [encoder × encoder]. */
  encoder: Float64Array;
  /** R_dd [decoder × decoder]. */
  decoder: Float64Array;
  /** R_de [decoder × encoder]: encoder tokens' relevance for each decoder position. */
  cross: Float64Array;
  encoderLength: number;
  decoderLength: number;
}

/** Chefer et al.'s encoder-decoder rules over all layers (float64; see the file comment). */
export function encoderDecoderGradientRollout(attention: StackMap, gradient: StackMap): EncoderDecoderRelevance {
  const need = (map: StackMap, name: StackName, what: string): LayerStack => {
    const s = map[name];
    if (!s) throw new AttnscopeError(`gradient rollout: the ${what} has no '${name}' stack (an encoder-decoder needs encoder, decoder and cross)`);
    return s;
  };
  const enc = need(attention, 'encoder', 'attention');
  const dec = need(attention, 'decoder', 'attention');
  const cross = need(attention, 'cross', 'attention');
  const gDec = need(gradient, 'decoder', 'attention gradient');
  const gCross = need(gradient, 'cross', 'attention gradient');
  checkSameShape(dec, gDec, 'gradient rollout (decoder)');
  checkSameShape(cross, gCross, 'gradient rollout (cross)');
  const n = enc.dims[1];
  const m = dec.dims[1];
  if (cross.dims[1] !== m || cross.dims[2] !== n) throw new AttnscopeError(`gradient rollout: cross attention is ${cross.dims[1]} × ${cross.dims[2]}, expected ${m} decoder × ${n} encoder positions`);
  if (cross.layers.length !== dec.layers.length) throw new AttnscopeError(`gradient rollout: ${dec.layers.length} decoder layers but ${cross.layers.length} cross-attention layers`);
  const ree = gradientRollout(enc, need(gradient, 'encoder', 'attention gradient'));
  const reeNorm = normalizeSelfRelevance(ree, n);
  let rdd: Float64Array = identity(m);
  let rde: Float64Array = new Float64Array(m * n);
  for (let l = 0; l < dec.layers.length; l++) {
    const self = gradientWeightedAttention(dec.layers[l]!, gDec.layers[l]!, dec.dims[0], m, m);
    const addDd = matmul(self, rdd, m, m, m);
    const addDe = matmul(self, rde, m, m, n);
    for (let i = 0; i < rdd.length; i++) addDd[i]! += rdd[i]!;
    for (let i = 0; i < rde.length; i++) addDe[i]! += rde[i]!;
    rdd = addDd;
    rde = addDe;
    const ca = gradientWeightedAttention(cross.layers[l]!, gCross.layers[l]!, cross.dims[0], m, n);
    const norm = normalizeSelfRelevance(rdd, m);
    const normT = new Float64Array(m * m);
    for (let i = 0; i < m; i++) for (let j = 0; j < m; j++) normT[i * m + j] = norm[j * m + i]!;
    const add = matmul(normT, matmul(ca, reeNorm, m, n, n), m, m, n);
    for (let i = 0; i < rde.length; i++) rde[i]! += add[i]!;
  }
  return { encoder: ree, decoder: rdd, cross: rde, encoderLength: n, decoderLength: m };
}

/** Row `row` of a row-major matrix with `cols` columns, as float32. */
function rowOf(m: Float64Array, row: number, cols: number): Float32Array {
  return Float32Array.from(m.subarray(row * cols, (row + 1) * cols));
}

export type HiddenReduction = 'sum' | 'l2';
export const HIDDEN_REDUCTIONS: readonly HiddenReduction[] = ['sum', 'l2'];

/** One score per position of a [positions, width] attribution: its sum or L2 norm over the width (float64). */
export function reduceHidden(m: Matrix, how: HiddenReduction): Float32Array {
  const [rows, cols] = m.dims;
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let c = 0; c < cols; c++) {
      const v = m.data[r * cols + c]!;
      acc += how === 'sum' ? v : v * v;
    }
    out[r] = how === 'sum' ? acc : Math.sqrt(acc);
  }
  return out;
}

/** Gradient × input per position: Σ_d E·∂T/∂E (the gradient and the embeddings both [positions, width]). */
export function gradientTimesInput(gradient: Matrix, input: Matrix): Float32Array {
  if (gradient.dims[0] !== input.dims[0] || gradient.dims[1] !== input.dims[1]) {
    throw new AttnscopeError(`gradient × input: the gradient is ${gradient.dims.join(' × ')} but the embeddings are ${input.dims.join(' × ')}`);
  }
  const [rows, cols] = gradient.dims;
  const out = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let c = 0; c < cols; c++) acc += gradient.data[r * cols + c]! * input.data[r * cols + c]!;
    out[r] = acc;
  }
  return out;
}

export interface MichelOptions {
  /** Per-layer normalisation exponent p: each layer divided by (Σ_h I_h^p)^(1/p) (default 2; 0: none). */
  exponent?: number;
  /** Then min-max scale all heads to [0, 1] (Michel et al.'s global normalisation; default false). */
  global?: boolean;
}

/**
 * Michel et al.'s head importance from gate gradients ∂T/∂g ([layers, heads], one per input):
 * the mean of |∂T/∂g| over inputs, each layer divided by its L^p norm (a layer of zeros stays 0).
 */
export function michelHeadImportance(gateGradients: Matrix | readonly Matrix[], options: MichelOptions = {}): Matrix {
  const list = Array.isArray(gateGradients) ? (gateGradients as readonly Matrix[]) : [gateGradients as Matrix];
  if (list.length === 0) throw new AttnscopeError('head importance: no gate gradients');
  const [layers, heads] = list[0]!.dims;
  const acc = new Float64Array(layers * heads);
  for (const g of list) {
    if (g.dims[0] !== layers || g.dims[1] !== heads) throw new AttnscopeError(`head importance: gate gradients of different shapes (${g.dims.join(' × ')} and ${layers} × ${heads})`);
    for (let i = 0; i < acc.length; i++) acc[i]! += Math.abs(g.data[i]!) / list.length;
  }
  const p = options.exponent ?? 2;
  if (!(p >= 0) || !Number.isFinite(p)) throw new AttnscopeError(`head importance: the exponent must be a number ≥ 0, got ${p}`);
  if (p > 0) {
    for (let l = 0; l < layers; l++) {
      let norm = 0;
      for (let h = 0; h < heads; h++) norm += acc[l * heads + h]! ** p;
      norm **= 1 / p;
      if (norm > 0) for (let h = 0; h < heads; h++) acc[l * heads + h]! /= norm;
    }
  }
  if (options.global) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of acc) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    for (let i = 0; i < acc.length; i++) acc[i] = hi > lo ? (acc[i]! - lo) / (hi - lo) : 0;
  }
  return { dims: [layers, heads], data: Float32Array.from(acc) };
}

/** The stack whose positions a target indexes (the decoder's for encoder-decoders). */
function targetStack(trace: Trace, target: AttributionTarget): StackName {
  if (target.stack) return target.stack;
  return trace.attention.self ? 'self' : trace.attention.decoder ? 'decoder' : 'encoder';
}

/**
 * The token-level scores that follow from a trace's attention gradients (Trace.attributions.
 * attentionGrad) for its target: 'attentionXGradient' (α ⊙ ∂T/∂α summed over layers, heads and
 * queries, per key token of the self stack, or of the encoder through the cross attention for
 * encoder-decoders) and 'gradientRollout' (Chefer et al.: the target's row of R, or of R_de and
 * R_dd for encoder-decoders, named 'gradientRollout' and 'gradientRolloutDecoder').
 */
export function attentionAttributions(trace: Trace): Record<string, TokenAttribution> {
  const attr = trace.attributions;
  if (!attr?.attentionGrad) throw new AttnscopeError('attention attributions: the trace holds no attention gradients (attributions.attentionGrad)');
  const grads = attr.attentionGrad;
  const stack = targetStack(trace, attr.target);
  const p = attr.target.position;
  const out: Record<string, TokenAttribution> = {};
  if (trace.attention.encoder && trace.attention.decoder && trace.attention.cross) {
    const rel = encoderDecoderGradientRollout(trace.attention, grads);
    if (!(Number.isInteger(p) && p >= 0 && p < rel.decoderLength)) throw new AttnscopeError(`attention attributions: target position ${p} is out of range (0–${rel.decoderLength - 1} decoder positions)`);
    out.attentionXGradient = { method: 'attentionXGradient', tokens: 'tokens', scores: sumStacks([[trace.attention.encoder, grads.encoder], [trace.attention.cross, grads.cross]]) };
    out.attentionXGradientDecoder = { method: 'attentionXGradient', tokens: 'decoderTokens', scores: sumStacks([[trace.attention.decoder, grads.decoder]]) };
    out.gradientRollout = { method: 'gradientRollout', tokens: 'tokens', scores: rowOf(rel.cross, p, rel.encoderLength) };
    out.gradientRolloutDecoder = { method: 'gradientRollout', tokens: 'decoderTokens', scores: rowOf(rel.decoder, p, rel.decoderLength) };
    return out;
  }
  const att = trace.attention[stack];
  const grad = grads[stack];
  if (!att || !grad) throw new AttnscopeError(`attention attributions: the trace has no '${stack}' attention${att ? ' gradient' : ''}`);
  const n = att.dims[1];
  if (!(Number.isInteger(p) && p >= 0 && p < n)) throw new AttnscopeError(`attention attributions: target position ${p} is out of range (0–${n - 1})`);
  out.attentionXGradient = { method: 'attentionXGradient', tokens: 'tokens', scores: attentionGradientTokenScores(att, grad) };
  out.gradientRollout = { method: 'gradientRollout', tokens: 'tokens', scores: Float32Array.from(gradientRolloutRow(att, grad, p)) };
  return out;
}

/** Σ of attentionGradientTokenScores over stacks that share their key tokens. */
function sumStacks(pairs: readonly [LayerStack | undefined, LayerStack | undefined][]): Float32Array {
  let out: Float64Array | null = null;
  for (const [a, g] of pairs) {
    if (!a || !g) throw new AttnscopeError('attention attributions: a stack or its gradient is missing');
    const s = attentionGradientTokenScores(a, g);
    out ??= new Float64Array(s.length);
    for (let i = 0; i < s.length; i++) out[i]! += s[i]!;
  }
  return Float32Array.from(out ?? []);
}
