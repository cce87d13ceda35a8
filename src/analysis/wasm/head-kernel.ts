/**
 * The head-metrics WebAssembly SIMD kernel (head-kernel.as, built into head-kernel-wasm.ts by
 * scripts/build-head-kernel.mjs): compiling it once, an instance per pass with a memory large enough
 * for the pass's arrays, and a bump layout of those arrays in that memory.
 *
 * Compiled synchronously on first use (Node, and browsers: Chromium compiles modules of this size
 * on the main thread). Where WebAssembly is missing or refused (a Content-Security-Policy without
 * 'wasm-unsafe-eval', an engine without SIMD), `headKernel` returns null and head-metrics.ts runs its
 * plain JavaScript loops instead.
 *
 * Isomorphic (WebAssembly and atob exist in Node ≥ 16 and every browser we bundle for).
 */
import { HEAD_KERNEL_WASM } from './head-kernel-wasm.js';

/** The kernel's exports (byte addresses into `memory`; see head-kernel.as for each function). */
export interface HeadKernelExports {
  readonly memory: WebAssembly.Memory;
  heapBase(): number;
  logArray(from: number, to: number, n: number): void;
  rowSums(w: number, supp: number, lo: number, hi: number, size: number, nq: number, nk: number, sums: number, counted: number): void;
  scanHead(args: number): number;
  putRow(w: number, supp: number, a: number, b: number, inv: number, scale: number, to: number): void;
  groupSums(w: number, lo: number, hi: number, size: number, counted: number, sums: number, nq: number, nk: number, groups: number, out: number): void;
  mixEntropy(x: number, y: number, a: number, b: number): number;
  mixRowEntropy(w: number, fw: number, supp: number, fsupp: number, a: number, b: number, inv: number, finv: number): number;
  rowEntropy(w: number, supp: number, a: number, b: number, inv: number): number;
  histogram(values: number, n: number, hist: number, bins: number): void;
  binRange(hist: number, out: number): void;
  selectRun(a: number, n: number, k: number): number;
  leastFrom(a: number, from: number, n: number): number;
  allEqual(a: number, n: number): number;
  gatherBins(values: number, bins: number, n: number, list: number, count: number, out: number, cursor: number): void;
  gatherRows(args: number, bins: number, list: number, count: number, out: number, cursor: number): void;
  fuseLayer(w: number, offs: number, count: number, size: number, how: number, out: number): void;
}

/** undefined: not tried yet; null: WebAssembly unavailable or refused here. */
let compiled: WebAssembly.Module | null | undefined;
/** Why the kernel is unavailable (for tests and the bench). */
let refusal = '';
/** An instance kept between passes while its memory is modest. */
let kept: HeadKernelExports | undefined;
/** Instances whose memory grew beyond this are dropped after their pass (the memory is then freed). */
const KEEP_BYTES = 64 << 20;

function kernelBytes(): Uint8Array {
  const bin = atob(HEAD_KERNEL_WASM);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function compiledKernel(): WebAssembly.Module | null {
  if (compiled !== undefined) return compiled;
  try {
    if (typeof WebAssembly === 'undefined') throw new Error('no WebAssembly in this engine');
    compiled = new WebAssembly.Module(kernelBytes() as BufferSource);
  } catch (e) {
    refusal = e instanceof Error ? e.message : String(e);
    compiled = null;
  }
  return compiled;
}

/** Whether the kernel runs here; otherwise why not (WebAssembly missing, or its compilation refused). */
export function headKernelStatus(): { available: boolean; reason: string } {
  return { available: compiledKernel() !== null, reason: refusal };
}

/** A bump layout of arrays in the kernel's memory: each array 16-byte aligned and followed by 32 bytes of padding (the kernel's four-key steps may read or write up to three elements past a row's end: 24 bytes of float64). */
export class KernelLayout {
  private top: number;
  constructor(base: number) {
    this.top = base;
  }
  /** The byte address of a new array of `bytes`. */
  take(bytes: number): number {
    const at = (this.top + 15) & ~15;
    this.top = at + bytes + 32;
    return at;
  }
  get end(): number {
    return this.top;
  }
}

/**
 * An instance of the kernel whose memory holds `plan(layout)`'s arrays (the plan takes its
 * addresses from the layout and returns nothing), or null where the kernel is unavailable. Call
 * `release` when the pass is over.
 */
export function headKernel(plan: (layout: KernelLayout) => void): { k: HeadKernelExports; release: () => void } | null {
  const mod = compiledKernel();
  if (mod === null) return null;
  let k = kept;
  kept = undefined;
  if (!k) {
    try {
      k = new WebAssembly.Instance(mod, {}).exports as unknown as HeadKernelExports;
    } catch (e) {
      refusal = e instanceof Error ? e.message : String(e);
      compiled = null;
      return null;
    }
  }
  const layout = new KernelLayout(k.heapBase());
  plan(layout);
  const need = layout.end - k.memory.buffer.byteLength;
  try {
    if (need > 0) k.memory.grow(Math.ceil(need / 65536));
  } catch {
    // No memory for this pass (the engine's limit): the JavaScript loops run it.
    return null;
  }
  const inst = k;
  return {
    k: inst,
    release: () => {
      if (inst.memory.buffer.byteLength <= KEEP_BYTES) kept = inst;
    },
  };
}
