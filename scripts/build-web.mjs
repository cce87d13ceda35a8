#!/usr/bin/env node
/**
 * Builds the standalone views' browser client: type-checks web/ (esbuild does not), then bundles
 * web/main.ts into one minified IIFE and web/styles.css into one stylesheet under dist/web/.
 * `attnscope view` inlines both into every HTML file it writes. web/app/main.ts and web/app/app.css
 * become dist/web/attnscope-app.{js,css}, the page `attnscope serve` serves.
 *
 *   node scripts/build-web.mjs [--no-check]
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'web');
mkdirSync(out, { recursive: true });

if (!process.argv.includes('--no-check')) {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', join(root, 'web', 'tsconfig.json'), '--noEmit'], { stdio: 'inherit', cwd: root });
  } catch {
    console.error('build-web: web/ does not type-check (see above)');
    process.exit(1);
  }
}

const t0 = Date.now();
const common = { bundle: true, minify: true, legalComments: 'none', charset: 'utf8', logLevel: 'warning' };
const js = await build({
  ...common,
  entryPoints: [join(root, 'web', 'main.ts')],
  outfile: join(out, 'attnscope-view.js'),
  format: 'iife',
  platform: 'browser',
  // Browsers of the last few years: DecompressionStream('deflate-raw') is used where present, fflate otherwise.
  target: ['es2020', 'chrome90', 'firefox90', 'safari15'],
  metafile: true,
});
await build({ ...common, entryPoints: [join(root, 'web', 'styles.css')], outfile: join(out, 'attnscope-view.css') });
// The web app of `attnscope serve` (web/app/): the same views, fed by the server.
await build({ ...common, entryPoints: [join(root, 'web', 'app', 'main.ts')], outfile: join(out, 'attnscope-app.js'), format: 'iife', platform: 'browser', target: ['es2020', 'chrome90', 'firefox90', 'safari15'] });
await build({ ...common, entryPoints: [join(root, 'web', 'app', 'app.css')], outfile: join(out, 'attnscope-app.css') });
const bytes = Object.values(js.metafile.outputs).reduce((n, o) => n + o.bytes, 0);
console.error(`built dist/web/attnscope-view.js (${(bytes / 1024).toFixed(0)} KiB) and attnscope-view.css in ${Date.now() - t0} ms`);
