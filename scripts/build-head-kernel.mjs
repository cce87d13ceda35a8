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
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { compileHeadKernel, headKernelModuleSource } from './head-kernel-compile.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const source = readFileSync(join(root, 'src', 'analysis', 'wasm', 'head-kernel.as'), 'utf8');
const target = join(root, 'src', 'analysis', 'wasm', 'head-kernel-wasm.ts');
const bytes = await compileHeadKernel(source);
const module = headKernelModuleSource(bytes);
if (process.argv.includes('--check')) {
  let current = '';
  try {
    current = readFileSync(target, 'utf8');
  } catch {
    // missing: stale
  }
  if (current !== module) {
    console.error('src/analysis/wasm/head-kernel-wasm.ts is not the build of head-kernel.as: run node scripts/build-head-kernel.mjs');
    process.exit(1);
  }
  console.error(`head-kernel-wasm.ts is up to date (${bytes.length} bytes of WebAssembly)`);
} else {
  writeFileSync(target, module);
  console.error(`wrote src/analysis/wasm/head-kernel-wasm.ts (${bytes.length} bytes of WebAssembly)`);
}
