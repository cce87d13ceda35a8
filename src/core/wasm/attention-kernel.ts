/**
 * The attention-on-demand WebAssembly SIMD kernel (attention-kernel.as, built into
 * attention-kernel-wasm.ts by scripts/build-attention-kernel.mjs): compiled once, one instance per
 * attention source (its memory holds the keys of the head last read, converted to float64 once,
 * and a chunk of rows), and the block computation on it.
 *
 * Compiled synchronously on first use (Node, and browsers: Chromium compiles modules of this size on
 * the main thread). Where WebAssembly is missing or refused (a Content-Security-Policy without
 * 'wasm-unsafe-eval', an engine without SIMD), `attentionKernelStatus().available` is false and
 * attention-on-demand.ts runs its JavaScript loops instead.
 *
 * Isomorphic (WebAssembly and atob exist in Node ≥ 16 and every browser we bundle for).
 */
import { ATTENTION_KERNEL_WASM } from './attention-kernel-wasm.js';

interface Exports {
  readonly memory: WebAssembly.Memory;
  heapBase(): number;
  rows(q: number, n: number, dp: number, keys: number, nk: number, i0: number, scale: number, causal: number, window: number, bias: number, s: number, out: number, c0: number, c1: number): void;
}

/** undefined: not tried yet; null: WebAssembly unavailable or refused here. */
let compiled: WebAssembly.Module | null | undefined;
let refusal = '';

function compiledKernel(): WebAssembly.Module | null {
  if (compiled !== undefined) return compiled;
  try {
    if (typeof WebAssembly === 'undefined') throw new Error('no WebAssembly in this engine');
    const bin = atob(ATTENTION_KERNEL_WASM);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    compiled = new WebAssembly.Module(bytes as BufferSource);
  } catch (e) {
    refusal = e instanceof Error ? e.message : String(e);
    compiled = null;
  }
  return compiled;
}

/** Whether the kernel runs here; otherwise why not (WebAssembly missing, or its compilation refused). */
export function attentionKernelStatus(): { available: boolean; reason: string } {
  return { available: compiledKernel() !== null, reason: refusal };
}

/** The bytes of output (and of bias rows) one chunk of rows may take in the kernel's memory. */
const CHUNK_BYTES = 4 << 20;

/** What a head's block needs from its source (one layer, the head's key head). */
export interface KernelHead {
  /** Query rows of the head: row i at queries[qa + i·headDim …]. */
  queries: Float32Array;
  qa: number;
  /** The key head's keys [numKeys, headDim], and a value naming them (layer and key head) for the cache. */
  keys: Float32Array;
  keysId: string;
  headDim: number;
  numKeys: number;
  scale: number;
  causal: boolean;
  /** 0: none. */
  window: number;
  /**
   * The head's bias, row i at bias[ba + i·bs …] (numKeys values): bs = numKeys for a dense
   * [numQueries, numKeys] bias, 0 for one row broadcast over the queries (ALiBi), −1 for a vector
   * over the offsets j − i (T5's relative buckets); or null.
   */
  bias: Float32Array | null;
  ba: number;
  bs: number;
}

/**
 * One attention source's kernel instance: `block(head, r0, r1, c0, c1)` writes rows [r0, r1) ×
 * columns [c0, c1) of the head's probabilities into a new Float32Array. Null where the kernel is
 * unavailable, or when its memory cannot hold one chunk.
 */
export class AttentionKernel {
  private readonly k: Exports;
  private keysId = '';
  private keysAt = 0;
  private top = 0;

  private constructor(k: Exports) {
    this.k = k;
  }

  static create(): AttentionKernel | null {
    const mod = compiledKernel();
    if (mod === null) return null;
    try {
      return new AttentionKernel(new WebAssembly.Instance(mod, {}).exports as unknown as Exports);
    } catch (e) {
      refusal = e instanceof Error ? e.message : String(e);
      compiled = null;
      return null;
    }
  }

  /** Grows the memory to `bytes` (views over the old buffer are stale after this). */
  private reserve(bytes: number): void {
    const need = bytes - this.k.memory.buffer.byteLength;
    if (need > 0) this.k.memory.grow(Math.ceil(need / 65536));
  }

  block(head: KernelHead, r0: number, r1: number, c0: number, c1: number): Float32Array {
    const { headDim: d, numKeys: nk } = head;
    const width = c1 - c0;
    const out = new Float32Array((r1 - r0) * width);
    if (width === 0 || r1 === r0) return out;
    const dp = d + (d % 2);
    const align = (x: number): number => (x + 15) & ~15;
    const base = align(this.k.heapBase());
    const keysBytes = nk * dp * 8;
    // Rows per chunk: a multiple of 4 whose output and bias rows fit CHUNK_BYTES.
    const perRow = 4 * (width + (head.bias ? nk : 0)) + dp * 8;
    const chunk = Math.max(4, Math.min(r1 - r0 + 3, Math.floor(CHUNK_BYTES / perRow)) & ~3);
    const keysAt = base;
    const sAt = align(keysAt + keysBytes + 16);
    const qAt = align(sAt + 4 * nk * 8 + 16);
    const biasAt = align(qAt + chunk * dp * 8 + 16);
    const outAt = align(biasAt + (head.bias ? chunk * nk * 4 : 0) + 16);
    const end = outAt + chunk * width * 4 + 16;
    if (end > this.k.memory.buffer.byteLength) {
      this.reserve(end);
      // The memory's size changed: the layout is the same, the cached keys stay valid.
    }
    const buffer = this.k.memory.buffer;
    if (this.keysId !== head.keysId || this.keysAt !== keysAt) {
      const kf = new Float64Array(buffer, keysAt, nk * dp);
      const src = head.keys;
      if (dp === d) for (let i = 0; i < nk * d; i++) kf[i] = src[i]!;
      else {
        for (let j = 0; j < nk; j++) {
          for (let t = 0; t < d; t++) kf[j * dp + t] = src[j * d + t]!;
          kf[j * dp + d] = 0;
        }
      }
      this.keysId = head.keysId;
      this.keysAt = keysAt;
    }
    const qf = new Float64Array(buffer, qAt, chunk * dp);
    const bf = head.bias ? new Float32Array(buffer, biasAt, chunk * nk) : null;
    const of = new Float32Array(buffer, outAt, chunk * width);
    const q = head.queries;
    for (let i0 = r0; i0 < r1; i0 += chunk) {
      const n = Math.min(chunk, r1 - i0);
      for (let r = 0; r < n; r++) {
        const from = head.qa + (i0 + r) * d;
        for (let t = 0; t < d; t++) qf[r * dp + t] = q[from + t]!;
        if (dp !== d) qf[r * dp + d] = 0;
      }
      if (bf) {
        const b = head.bias!;
        if (head.bs === nk) bf.set(b.subarray(head.ba + i0 * nk, head.ba + (i0 + n) * nk));
        else {
          for (let r = 0; r < n; r++) {
            const from = head.ba + (i0 + r) * head.bs;
            bf.set(b.subarray(from, from + nk), r * nk);
          }
        }
      }
      this.k.rows(qAt, n, dp, keysAt, nk, i0, head.scale, head.causal ? 1 : 0, head.window, bf ? biasAt : 0, sAt, outAt, c0, c1);
      out.set(n === chunk ? of : of.subarray(0, n * width), (i0 - r0) * width);
    }
    this.top = end;
    return out;
  }

  /** Bytes of the instance's memory (for tests and the bench). */
  get memoryBytes(): number {
    return Math.max(this.top, this.k.memory.buffer.byteLength);
  }
}
