/**
 * The committed WebAssembly of the head-metrics kernel (src/analysis/wasm/head-kernel-wasm.ts) is
 * the build of its AssemblyScript source (head-kernel.as): scripts/build-head-kernel.mjs --check
 * compiles the source again (in memory) and compares, as a real process.
 */
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

describe('head-metrics kernel build', () => {
  it('head-kernel-wasm.ts is the build of head-kernel.as (else: node scripts/build-head-kernel.mjs)', () => {
    const out = execFileSync(process.execPath, [join(root, 'scripts', 'build-head-kernel.mjs'), '--check'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(out).toBe('');
  });
});
