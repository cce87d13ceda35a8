/**
 * Norm-based attention (Kobayashi et al. 2020, "Attention is Not Only a Weight") and ALTI
 * (Ferrando et al. 2022, "Measuring the Mixing of Contextual Information in the Transformer"):
 * pure functions of a Trace traced with `contributions` (Trace.contributions, see ContributionTaps).
 *
 * Notation, one layer of one stack: x_j the block input of token j, α^h_ij head h's attention of
 * query i on key j, f_h(x_j) = v_{j,h} · W_O[h] the transformed value vector (value bias
 * included; W_O[h] the headDim rows of the output projection head h's output goes through),
 * b_O the output projection's bias.
 *
 * Norm-based attention: ‖α^h_ij f_h(x_j)‖₂ per head, and ‖Σ_h α^h_ij f_h(x_j)‖₂ for the whole
 * multi-head attention (the "summed over heads" variant: the norm of the summed vectors, not the
 * sum of the norms).
 *
 * ALTI, per layer. The attention block's output y_i is decomposed into one term per input token,
 * T_i(x_j), plus terms that come from no token (biases):
 *
 *   post-LN blocks (BERT, RoBERTa, ELECTRA, DistilBERT, ALBERT, DeBERTa-v2, MPNet, OPT-350m): x̃_i = x_i + Σ_j Σ_h α^h_ij f_h(x_j) + b_O
 *     and y_i = LN(x̃_i) = γ ⊙ (x̃_i − μ(x̃_i)) / σ_i + β, σ_i = √(Var(x̃_i) + ε). LN's linear part
 *     L_i(z) = γ ⊙ (z − mean(z)) / σ_i (centering, gain, and the row's own σ_i, which is what
 *     makes it linear in z) is applied to each term:
 *       T_i(x_j) = L_i(Σ_h α^h_ij f_h(x_j) + [i = j] x_i),   y_i = Σ_j T_i(x_j) + L_i(b_O) + β.
 *     σ_i is the LayerNorm's own (biased variance plus ε), so Σ_j T_i(x_j) + L_i(b_O) + β equals
 *     the model's y_i exactly. (The authors' code divides by torch.std of x̃_i + ε, the unbiased
 *     standard deviation with ε added to the states: a factor √(n/(n−1)) off for hidden size n.)
 *
 *   pre-norm blocks (GPT-2, OPT, OLMo, StarCoder2, BLOOM, StableLM, GPT-NeoX, Phi, GPT-J, Cohere,
 *     Falcon's LayerNorm; Llama, Mistral, Mixtral, Qwen2, Qwen2-MoE, Gemma's RMSNorm): the norm sits
 *     before the attention and works on each token alone, y_i = x_i + Σ_j Σ_h α^h_ij f_h(x_j) + b_O
 *     with f_h(x_j) = (norm(x_j) · W_V + b_V)_h · W_O[h]. norm(x_j) depends on x_j only (its
 *     statistics are token j's own, and its β/weight are part of the same term), so it stays
 *     inside x_j's term unlinearised, as the value bias does in the post-LN case:
 *       T_i(x_j) = Σ_h α^h_ij f_h(x_j) + [i = j] x_i,   y_i = Σ_j T_i(x_j) + b_O.
 *     y_i is the residual stream after the attention (the next norm belongs to the MLP sublayer),
 *     and there is no L_i: nothing normalises the residual sum inside the attention block.
 *     (The residual term is what the block adds back, ContributionTaps.layerInput: x_i, or LN(x_i)
 *     for BLOOM with apply_residual_connection_post_layernorm.)
 *     Parallel blocks (GPT-NeoX with use_parallel_residual, Phi, GPT-J, Cohere, Falcon's parallel
 *     or new-architecture blocks, StableLM with use_parallel_residual) compute
 *     x + attn(norm(x)) + mlp(norm(x)): the MLP branch reads x_i alone and is not part of the
 *     mixing by attention, so the attention block's output is taken to be the residual stream
 *     y_i = x_i + Σ_j Σ_h α^h_ij f_h(x_j) + b_O (the recorded residual sum), not the layer output.
 *
 * Encoder-decoders (T5, mT5, UMT5's RMSNorm; BART, mBART, Marian, M2M100, Pegasus): the
 * encoder's and the decoder's self-attention stacks, each as above; cross attention is not
 * decomposed.
 *
 * Then, with d_ij = ‖y_i − T_i(x_j)‖₁ (Manhattan distance),
 *   c_ij = max(0, ‖y_i‖₁ − d_ij) / Σ_k max(0, ‖y_i‖₁ − d_ik):
 * the contribution of x_j to y_i, each row summing to 1 (a row whose every term is 0 stays 0).
 * Keys a causal or windowed mask hides from query i contribute T_i(x_j) = 0, so c_ij = 0.
 *
 * ALTI across layers: the per-layer matrices composed as attention rollout composes attention,
 * R_0 = C_0, R_l = C_l · R_{l−1} (no identity added: the residual is in C_l already). R_l[i, j]
 * is how much input token j contributes to token i's representation after layer l.
 */
import { AttnscopeError } from '../core/errors.js';
import type { ContributionTaps, LayerStack, Matrix, StackName, Trace } from '../core/trace.js';

/** The contributions taps and attention of a stack, checked to fit together. */
interface StackTaps {
  taps: ContributionTaps;
  attention: LayerStack;
  heads: number;
  queries: number;
  keys: number;
  hidden: number;
}

/** The stack to analyse: the given one, or the trace's only stack with contributions taps. */
function stackTaps(trace: Trace, stack?: StackName): StackTaps {
  const map = trace.contributions;
  if (!map || Object.keys(map).length === 0) {
    throw new AttnscopeError('the trace has no contributions taps (v·W_O, residual, layer norm), which trace files do not store: trace the model with `contributions: true` (attnscope flow --method norm|alti does)');
  }
  const name = stack ?? (Object.keys(map) as StackName[])[0]!;
  const taps = map[name];
  if (!taps && name === 'cross') throw new AttnscopeError(`cross attention is not decomposed (its keys are the encoder's tokens, not the stream it adds to): norm-based attention and ALTI cover the self-attention stacks (${Object.keys(map).join(', ')})`);
  if (!taps) throw new AttnscopeError(`the trace has no contributions taps for the '${name}' stack (it has ${Object.keys(map).join(', ')})`);
  const attention = trace.attention[name];
  if (!attention) throw new AttnscopeError(`the trace has no '${name}' attention, which norm-based attention and ALTI weigh the value vectors with`);
  const [heads, queries, keys] = attention.dims;
  const [tHeads, tKeys, hidden] = taps.transformedValues.dims;
  if (tHeads !== heads || tKeys !== keys || taps.transformedValues.layers.length !== attention.layers.length) {
    throw new AttnscopeError(`contributions taps of '${name}' ([${taps.transformedValues.layers.length}, ${tHeads}, ${tKeys}, ${hidden}]) do not fit its attention ([${attention.layers.length}, ${heads}, ${queries}, ${keys}])`);
  }
  return { taps, attention, heads, queries, keys, hidden };
}

function checkLayer(s: StackTaps, layer: number): void {
  const n = s.attention.layers.length;
  if (!Number.isInteger(layer) || layer < 0 || layer >= n) throw new AttnscopeError(`layer ${layer} is out of range; allowed: 0 to ${n - 1}`);
}

/**
 * Norm-based attention per head: [heads, queries, keys] per layer with
 * ‖α^h_ij f_h(x_j)‖₂ = α^h_ij ‖f_h(x_j)‖₂.
 */
export function normAttentionPerHead(trace: Trace, stack?: StackName): LayerStack {
  const s = stackTaps(trace, stack);
  const { heads, queries, keys, hidden } = s;
  const layers = s.attention.layers.map((alpha, l) => {
    const f = s.taps.transformedValues.layers[l]!;
    const out = new Float32Array(heads * queries * keys);
    const norms = new Float64Array(keys);
    for (let h = 0; h < heads; h++) {
      for (let j = 0; j < keys; j++) {
        let sq = 0;
        const base = (h * keys + j) * hidden;
        for (let d = 0; d < hidden; d++) sq += f[base + d]! * f[base + d]!;
        norms[j] = Math.sqrt(sq);
      }
      for (let i = 0; i < queries; i++) {
        const row = (h * queries + i) * keys;
        for (let j = 0; j < keys; j++) out[row + j] = alpha[row + j]! * norms[j]!;
      }
    }
    return out;
  });
  return { dims: [heads, queries, keys], layers };
}

/**
 * Norm-based attention of the whole multi-head attention of one layer (or of the heads in
 * `only`): [queries, keys] with ‖Σ_h α^h_ij f_h(x_j)‖₂, from each key's Gram matrix of its head vectors
 * (‖Σ_h a_h f_h‖² = Σ_{h,h'} a_h a_h' ⟨f_h, f_h'⟩), in float64.
 */
export function normAttentionLayer(trace: Trace, layer: number, stack?: StackName, only?: readonly number[]): Matrix {
  const s = stackTaps(trace, stack);
  checkLayer(s, layer);
  const { heads, queries, keys, hidden } = s;
  const chosen = new Set(only ?? Array.from({ length: heads }, (_, h) => h));
  for (const h of chosen) {
    if (!Number.isInteger(h) || h < 0 || h >= heads) throw new AttnscopeError(`head ${h} is out of range; allowed: 0 to ${heads - 1}`);
  }
  const alpha = s.attention.layers[layer]!;
  const f = s.taps.transformedValues.layers[layer]!;
  const gram = new Float64Array(keys * heads * heads);
  for (let j = 0; j < keys; j++) {
    for (let h = 0; h < heads; h++) {
      const a = (h * keys + j) * hidden;
      for (let h2 = h; h2 < heads; h2++) {
        const b = (h2 * keys + j) * hidden;
        let dot = 0;
        for (let d = 0; d < hidden; d++) dot += f[a + d]! * f[b + d]!;
        gram[(j * heads + h) * heads + h2] = dot;
        gram[(j * heads + h2) * heads + h] = dot;
      }
    }
  }
  const out = new Float32Array(queries * keys);
  const w = new Float64Array(heads);
  for (let i = 0; i < queries; i++) {
    for (let j = 0; j < keys; j++) {
      let any = false;
      for (let h = 0; h < heads; h++) {
        w[h] = chosen.has(h) ? alpha[(h * queries + i) * keys + j]! : 0;
        if (w[h] !== 0) any = true;
      }
      if (!any) continue;
      let sq = 0;
      const g = j * heads * heads;
      for (let h = 0; h < heads; h++) {
        if (w[h] === 0) continue;
        let inner = 0;
        for (let h2 = 0; h2 < heads; h2++) inner += w[h2]! * gram[g + h * heads + h2]!;
        sq += w[h]! * inner;
      }
      out[i * keys + j] = Math.sqrt(Math.max(0, sq));
    }
  }
  return { dims: [queries, keys], data: out };
}

/** normAttentionLayer for every layer. */
export function normAttention(trace: Trace, stack?: StackName): Matrix[] {
  const s = stackTaps(trace, stack);
  return s.attention.layers.map((_, l) => normAttentionLayer(trace, l, stack));
}

/**
 * ALTI's token-to-token contributions of one layer: [queries, keys], c_ij as defined at the top
 * of this file (rows sum to 1). Self-attention only (queries and keys are the same tokens: the
 * residual adds x_i to T_i(x_i)).
 */
export function altiLayer(trace: Trace, layer: number, stack?: StackName): Matrix {
  const s = stackTaps(trace, stack);
  checkLayer(s, layer);
  const { heads, queries: n, keys, hidden: D, taps } = s;
  if (keys !== n) throw new AttnscopeError(`ALTI needs self-attention (as many queries as keys); this stack has ${n} queries and ${keys} keys`);
  const alpha = s.attention.layers[layer]!;
  const f = taps.transformedValues.layers[layer]!;
  const x = taps.layerInput[layer]!.data;
  const sum = taps.residualSum[layer]!.data;
  const ln = taps.norm === 'post' ? taps.layerNorm?.[layer] : undefined;
  if (taps.norm === 'post' && !ln) throw new AttnscopeError(`layer ${layer}: a post-LN trace without its LayerNorm parameters`);

  // The terms T_i(x_j) are built from per-(key, head) vectors that do not depend on i:
  // post-LN: γ ⊙ (f_h(x_j) − mean) and γ ⊙ (x_j − mean), divided by σ_i later; pre-norm: as tapped.
  // Stored [key][head][hidden], so one key's vectors are contiguous and stay in cache while a block
  // of queries uses them (the pass over all of them per query is what costs).
  const g = new Float32Array(n * heads * D);
  const gx = new Float64Array(n * D);
  const transform = (src: Float32Array, offset: number, dst: Float32Array | Float64Array, at: number): void => {
    let mean = 0;
    if (ln) {
      for (let d = 0; d < D; d++) mean += src[offset + d]!;
      mean /= D;
    }
    for (let d = 0; d < D; d++) dst[at + d] = ln ? ln.weight[d]! * (src[offset + d]! - mean) : src[offset + d]!;
  };
  for (let j = 0; j < n; j++) for (let h = 0; h < heads; h++) transform(f, (h * n + j) * D, g, (j * heads + h) * D);
  for (let j = 0; j < n; j++) transform(x, j * D, gx, j * D);

  const out = new Float32Array(n * n);
  const BLOCK = 16;
  // Per query of the block: y_i divided by the LayerNorm's 1/σ_i (so the terms compare unscaled) and ‖y_i‖₁.
  const yb = new Float64Array(BLOCK * D);
  const yNorms = new Float64Array(BLOCK);
  const t0 = new Float64Array(D);
  const t1 = new Float64Array(D);
  const t2 = new Float64Array(D);
  const t3 = new Float64Array(D);
  const raw = new Float64Array(BLOCK * n);
  for (let i0 = 0; i0 < n; i0 += BLOCK) {
    const i1 = Math.min(n, i0 + BLOCK);
    for (let i = i0; i < i1; i++) {
      // y_i: the block's output (the LayerNorm of the residual sum, or the residual sum).
      const at = (i - i0) * D;
      let scale = 1;
      if (ln) {
        let mean = 0;
        for (let d = 0; d < D; d++) mean += sum[i * D + d]!;
        mean /= D;
        let variance = 0;
        for (let d = 0; d < D; d++) variance += (sum[i * D + d]! - mean) ** 2;
        variance /= D;
        scale = 1 / Math.sqrt(variance + ln.eps);
        for (let d = 0; d < D; d++) yb[at + d] = ln.weight[d]! * (sum[i * D + d]! - mean) + ln.bias[d]! / scale;
      } else {
        for (let d = 0; d < D; d++) yb[at + d] = sum[i * D + d]!;
      }
      let norm = 0;
      for (let d = 0; d < D; d++) norm += Math.abs(yb[at + d]!);
      yNorms[i - i0] = norm;
    }
    // Four queries at a time: each key vector read once serves the four terms T_i(x_j).
    for (let q0 = i0; q0 < i1; q0 += 4) {
      const count = Math.min(4, i1 - q0);
      for (let j = 0; j < n; j++) {
        t0.fill(0);
        t1.fill(0);
        t2.fill(0);
        t3.fill(0);
        let any = j >= q0 && j < q0 + count;
        for (let h = 0; h < heads; h++) {
          const row = (h * n + q0) * n + j;
          const a0 = alpha[row]!;
          const a1 = count > 1 ? alpha[row + n]! : 0;
          const a2 = count > 2 ? alpha[row + 2 * n]! : 0;
          const a3 = count > 3 ? alpha[row + 3 * n]! : 0;
          if (a0 === 0 && a1 === 0 && a2 === 0 && a3 === 0) continue;
          any = true;
          const base = (j * heads + h) * D;
          for (let d = 0; d < D; d++) {
            const v = g[base + d]!;
            t0[d] += a0 * v;
            t1[d] += a1 * v;
            t2[d] += a2 * v;
            t3[d] += a3 * v;
          }
        }
        for (let k = 0; k < count; k++) {
          const i = q0 + k;
          const r = (i - i0) * n + j;
          // No attention and not the residual: T_i(x_j) = 0, so ‖y_i − T_i(x_j)‖₁ = ‖y_i‖₁.
          if (!any) {
            raw[r] = 0;
            continue;
          }
          const t = k === 0 ? t0 : k === 1 ? t1 : k === 2 ? t2 : t3;
          if (j === i) for (let d = 0; d < D; d++) t[d] += gx[j * D + d]!;
          const at = (i - i0) * D;
          let dist = 0;
          for (let d = 0; d < D; d++) dist += Math.abs(yb[at + d]! - t[d]!);
          // ‖y_i‖₁ − ‖y_i − T_i(x_j)‖₁, both in units of σ_i.
          raw[r] = Math.max(0, yNorms[i - i0]! - dist);
        }
      }
    }
    for (let i = i0; i < i1; i++) {
      let total = 0;
      for (let j = 0; j < n; j++) total += raw[(i - i0) * n + j]!;
      if (total > 0) for (let j = 0; j < n; j++) out[i * n + j] = raw[(i - i0) * n + j]! / total;
    }
  }
  return { dims: [n, n], data: out };
}

/** altiLayer for every layer. */
export function alti(trace: Trace, stack?: StackName): Matrix[] {
  const s = stackTaps(trace, stack);
  return s.attention.layers.map((_, l) => altiLayer(trace, l, stack));
}

/**
 * Rollout-style composition of per-layer token-to-token matrices (ALTI's aggregation across
 * layers): R_0 = C_0, R_l = C_l · R_{l−1}, in float64. `result[l]` covers layers 0 … l.
 */
export function composeLayers(layers: readonly Matrix[]): Matrix[] {
  const out: Matrix[] = [];
  let prev: Float64Array | null = null;
  for (const [l, m] of layers.entries()) {
    const [n, cols] = m.dims;
    if (n !== cols) throw new AttnscopeError(`layer ${l}: a ${n}×${cols} matrix cannot be composed (square token-to-token matrices only)`);
    if (out.length > 0 && out[0]!.dims[0] !== n) throw new AttnscopeError(`layer ${l} is ${n}×${n} but layer 0 is ${out[0]!.dims[0]}×${out[0]!.dims[0]}`);
    const next = new Float64Array(n * n);
    if (!prev) {
      for (let k = 0; k < n * n; k++) next[k] = m.data[k]!;
    } else {
      for (let i = 0; i < n; i++) {
        for (let k = 0; k < n; k++) {
          const c = m.data[i * n + k]!;
          if (c === 0) continue;
          const row = k * n;
          for (let j = 0; j < n; j++) next[i * n + j] += c * prev[row + j]!;
        }
      }
    }
    prev = next;
    out.push({ dims: [n, n], data: Float32Array.from(next) });
  }
  return out;
}

/**
 * ALTI aggregated across layers: the per-layer contributions of layers start … end (default
 * all) composed; `result[k]` is layer start's input → layer (start + k)'s output.
 */
export function altiRollout(trace: Trace, options: { stack?: StackName; startLayer?: number; endLayer?: number } = {}): Matrix[] {
  const s = stackTaps(trace, options.stack);
  const last = s.attention.layers.length - 1;
  const start = options.startLayer ?? 0;
  const end = options.endLayer ?? last;
  checkLayer(s, start);
  checkLayer(s, end);
  if (start > end) throw new AttnscopeError(`start layer ${start} is after end layer ${end}`);
  const layers: Matrix[] = [];
  for (let l = start; l <= end; l++) layers.push(altiLayer(trace, l, options.stack));
  return composeLayers(layers);
}
