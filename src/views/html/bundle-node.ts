/**
 * Node side of the standalone views: finds the browser client built by scripts/build-web.mjs
 * (dist/web/attnscope-view.{js,css}) from this module's location, in src/ or dist/src/.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { AttnscopeError } from '../../core/errors.js';
import type { ViewBundle } from './standalone.js';

const JS = 'attnscope-view.js';
const CSS = 'attnscope-view.css';

/** Directory holding the built client, or null. */
export function viewBundleDir(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    for (const candidate of [join(dir, 'dist', 'web'), join(dir, 'web')]) {
      if (existsSync(join(candidate, JS)) && existsSync(join(candidate, CSS))) return candidate;
    }
    dir = dirname(dir);
  }
  return null;
}

let cached: Promise<ViewBundle> | null = null;

/** The built browser client (read once per process). */
export function loadViewBundle(): Promise<ViewBundle> {
  cached ??= (async () => {
    const dir = viewBundleDir();
    if (!dir) throw new AttnscopeError(`the views' browser client (dist/web/${JS}) is missing: run 'npm run build'`);
    const [js, css] = await Promise.all([readFile(join(dir, JS), 'utf8'), readFile(join(dir, CSS), 'utf8')]);
    return { js, css };
  })();
  cached.catch(() => (cached = null));
  return cached;
}
