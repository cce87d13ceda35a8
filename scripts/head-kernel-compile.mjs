/**
 * The head-metrics kernel's compilation, shared by scripts/build-head-kernel.mjs and the test that
 * checks the committed module is up to date: AssemblyScript's compiler (npm assemblyscript) on the
 * source text, in memory (no files written), optimised for speed, SIMD on, no runtime (the kernel
 * allocates nothing), assertions off.
 */
import { compileAssemblyScript, kernelModuleSource } from './wasm-build-common.mjs';

/** The WebAssembly bytes of the kernel's AssemblyScript source. */
export async function compileHeadKernel(source) {
  return compileAssemblyScript('head-kernel', source, { optimizeLevel: 3, shrinkLevel: 0, runtime: 'stub', noAssert: true, enable: ['simd'], initialMemory: 1, exportRuntime: false });
}

/** The generated TypeScript module holding the bytes (base64, in lines of 100 characters). */
export function headKernelModuleSource(bytes) {
  return kernelModuleSource(
    { script: 'scripts/build-head-kernel.mjs', sourceName: 'head-kernel.as', test: 'test/analysis-head-kernel-build.test.ts', description: 'head-metrics kernel', constant: 'HEAD_KERNEL_WASM' },
    bytes,
  );
}
