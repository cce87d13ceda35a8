#!/usr/bin/env node
/**
 * Compiles the head-metrics WebAssembly SIMD kernel (src/analysis/wasm/head-kernel.as,
 * AssemblyScript) and writes its bytes, base64, into src/analysis/wasm/head-kernel-wasm.ts, which
 * is committed: vitest (which runs the sources), tsc and the esbuild bundles all take the kernel
 * from there, from a fresh clone, without this step. Run it after editing head-kernel.as;
 * test/analysis-head-kernel-build.test.ts fails while the committed module is not this file's build.
 *
 *   node scripts/build-head-kernel.mjs           (writes the module)
 *   node scripts/build-head-kernel.mjs --check   (exit 1 if the committed module is stale)
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileHeadKernel, headKernelModuleSource } from './head-kernel-compile.mjs';
import { writeOrCheckKernel } from './wasm-build-common.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = readFileSync(join(root, 'src', 'analysis', 'wasm', 'head-kernel.as'), 'utf8');
await writeOrCheckKernel({
  root,
  target: join(root, 'src', 'analysis', 'wasm', 'head-kernel-wasm.ts'),
  script: 'scripts/build-head-kernel.mjs',
  sourceName: 'head-kernel.as',
  compile: () => compileHeadKernel(source),
  moduleSource: headKernelModuleSource,
});
