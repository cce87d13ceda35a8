/**
 * The committed WebAssembly of the attention-on-demand kernel (src/core/wasm/attention-kernel-wasm.ts)
 * is the build of its AssemblyScript source (attention-kernel.as): scripts/build-attention-kernel.mjs
 * --check compiles the source again (in memory) and compares, as a real process.
 */
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

describe('attention kernel build', () => {
  it('attention-kernel-wasm.ts is the build of attention-kernel.as (else: node scripts/build-attention-kernel.mjs)', () => {
    const out = execFileSync(process.execPath, [join(root, 'scripts', 'build-attention-kernel.mjs'), '--check'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(out).toBe('');
  });
});
