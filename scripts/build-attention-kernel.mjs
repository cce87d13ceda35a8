#!/usr/bin/env node
/**
 * Compiles the attention-on-demand WebAssembly SIMD kernel (src/core/wasm/attention-kernel.as,
 * AssemblyScript) and writes its bytes, base64, into src/core/wasm/attention-kernel-wasm.ts, which
 * is committed: vitest, tsc and the esbuild bundles take the kernel from there, from a fresh clone,
 * without this step. Run it after editing attention-kernel.as; test/on-demand-kernel-build.test.ts
 * fails while the committed module is not this file's build.
 *
 *   node scripts/build-attention-kernel.mjs           (writes the module)
 *   node scripts/build-attention-kernel.mjs --check   (exit 1 if the committed module is stale)
 *
 * Compiled in memory (no files written), optimised for speed, SIMD on, no runtime (the kernel
 * allocates nothing), assertions off.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileAssemblyScript, kernelModuleSource, writeOrCheckKernel } from './wasm-build-common.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const dir = join(root, 'src', 'core', 'wasm');
const source = readFileSync(join(dir, 'attention-kernel.as'), 'utf8');

await writeOrCheckKernel({
  root,
  target: join(dir, 'attention-kernel-wasm.ts'),
  script: 'scripts/build-attention-kernel.mjs',
  sourceName: 'attention-kernel.as',
  compile: () =>
    compileAssemblyScript('attention-kernel', source, { optimizeLevel: 3, shrinkLevel: 0, runtime: 'stub', noAssert: true, enable: ['simd'], initialMemory: 1, exportRuntime: false }),
  moduleSource: (bytes) =>
    kernelModuleSource(
      { script: 'scripts/build-attention-kernel.mjs', sourceName: 'attention-kernel.as', test: 'test/on-demand-kernel-build.test.ts', description: 'attention-on-demand kernel', constant: 'ATTENTION_KERNEL_WASM' },
      bytes,
    ),
});
